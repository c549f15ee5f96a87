//! AVX2 kernels for CPUs without VNNI (e.g. AMD Zen 2): an implicit i16 GEMM on
//! `vpmaddwd` with the output stage fused in its epilogue, and a depthwise convolution
//! built the same way.
//!
//! Why `vpmaddwd`: without VNNI the only exact 8-bit dot product on AVX2 is the i16 one
//! (`vpmaddubsw` adds two u8 x i8 products in a *saturating* i16, which an 8-bit
//! activation minus its zero point times a full-range weight can overflow). Both
//! operands are widened to i16: activations once, when the input is copied into a
//! spatially padded buffer of `x - zp` (padding is 0, so every tap is in bounds and no
//! im2col is needed: a GEMM row is `taps` runs read in place, see [`Indirection`]);
//! weights stay i8 in memory (half the bytes to stream) and are sign-extended by
//! `vpmovsxbw` as they are loaded. Each `vpmaddwd` multiplies one broadcast pair of
//! activations (two adjacent k) with the pairs of 8 output channels: 16 MACs, the
//! instruction's full rate.
//!
//! Exactness: the i32 sums wrap exactly like the reference's (only the order
//! differs), and the epilogue ([`requant8`]) evaluates [`Wide::apply`] lane by lane.
//! AVX2 has no 64-bit arithmetic shift, so the 64-bit value `y` is biased by `2^63`
//! (folded into the `add` constant: `y + 2^63` is in `[0, 2^64)`), shifted logically,
//! and the bias's image `2^(63 - sh)` is subtracted from the low 32 bits (folded into
//! the per-channel `post` addend together with the output zero point).

use super::avx512::{DwGeom, Indirection};
use super::gemm::NR;
use super::requant::Wide;
use super::{Aligned, Isa};
use crate::kernels::quantized::common::{OutputStage, Rounding};
use std::arch::x86_64::*;

/// Blocks of 16 output channels per weight group: a tile spans at most this many.
pub const GROUP: usize = 4;

/// Weights `[n, k]` as i8 pairs for [`igemm`]: blocks of 16 output channels, inside a
/// block pair rows `[k/2][16][2]` (k padded to even with zeros, n to a multiple of
/// 16). Blocks are grouped by [`GROUP`], each group `[k/2][blocks][16][2]`, so a tile
/// over several blocks of a group reads one sequential stream (fully-connected
/// layers stream their weights from L2).
#[derive(Debug, Clone)]
pub struct PackedPairs {
    pub n: usize,
    pub k: usize,
    /// k rounded up to a pair count.
    pub k2: usize,
    pub nblk: usize,
    data: Vec<i8>,
    bias: Vec<i32>,
}

/// Bytes of one pair row of one block (16 channels x 2).
const PAIR_ROW: usize = NR * 2;

impl PackedPairs {
    /// `w` is row-major `[n, k]` (zero points subtracted), `bias` has `n` entries.
    /// `None` when a weight does not fit in i8.
    pub fn new(w: &[i16], n: usize, k: usize, bias: &[i32]) -> Option<PackedPairs> {
        assert_eq!(w.len(), n * k, "weights are [n, k]");
        assert_eq!(bias.len(), n, "one bias per output channel");
        let k2 = k.div_ceil(2);
        let nblk = n.div_ceil(NR);
        let mut data = vec![0i8; nblk * k2 * PAIR_ROW];
        for ch in 0..n {
            let (blk, j) = (ch / NR, ch % NR);
            let (gi, jb) = (blk / GROUP, blk % GROUP);
            let gsize = (nblk - gi * GROUP).min(GROUP);
            let base = gi * GROUP * k2 * PAIR_ROW;
            for kk in 0..k {
                let v = i8::try_from(w[ch * k + kk]).ok()?;
                data[base + ((kk / 2) * gsize + jb) * PAIR_ROW + j * 2 + kk % 2] = v;
            }
        }
        let mut b = vec![0i32; nblk * NR];
        b[..n].copy_from_slice(bias);
        Some(PackedPairs {
            n,
            k,
            k2,
            nblk,
            data,
            bias: b,
        })
    }

    /// Row stride (in i16 elements) A must have at least (k rounded up to even).
    pub fn k_pad(&self) -> usize {
        self.k2 * 2
    }
}

/// Per-channel constants of 8 channels for [`requant8`] (see the module doc): the
/// even/odd split of [`Wide`]'s 64-bit constants, `add` biased by `2^63`, and `post`
/// = output zero point minus `2^(63 - sh)` (mod 2^32).
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Block8 {
    m: [i32; 8],
    /// `m_odd[2j] = m[2j + 1]` (`vpmuldq` multiplies the even lanes).
    m_odd: [i32; 8],
    left: [u32; 8],
    post: [i32; 8],
    add_e: [i64; 4],
    add_o: [i64; 4],
    sh_e: [u64; 4],
    sh_o: [u64; 4],
    /// `add - corr`: the addend of a product below `-2^30` (ties-away).
    addc_e: [i64; 4],
    addc_o: [i64; 4],
    /// High-dword mode ([`Wide8::hi32`]): `sh - 32` per channel.
    sh32: [u32; 8],
}

/// An [`OutputStage`] in the one-step form of [`Wide`], laid out for 256-bit lanes.
///
/// When every channel shifts by at least 32 (`hi32`, the usual case: a real
/// multiplier below 1/2), the shift is done in two steps: the high dword of the 64-bit
/// `y` is `floor(y / 2^32)` (it fits in 32 bits, `|y| < 2^63`), and one 32-bit
/// arithmetic shift of all 8 lanes by `sh - 32` finishes it (`floor` of nested power-
/// of-two divisions composes). That replaces two 64-bit variable shifts, which Zen 2
/// issues at half rate, by one, and needs no `2^63` bias (`add` and `post` are then
/// the plain values).
#[derive(Debug, Clone)]
pub struct Wide8 {
    n: usize,
    blocks: Vec<Block8>,
    any_left: bool,
    away: bool,
    hi32: bool,
    /// Whether any channel's `post` addend is nonzero (usually the output zero point
    /// is folded into `add`, and the addition is skipped).
    any_post: bool,
    min: i32,
    max: i32,
}

impl Wide8 {
    /// `None` when the stage has no one-step form ([`Wide::new`]).
    pub fn new(stage: &OutputStage) -> Option<Wide8> {
        Some(Wide8::from_wide(&Wide::new(stage)?))
    }

    /// The same constants as `w`, relaid for 256-bit lanes.
    pub fn from_wide(w: &Wide) -> Wide8 {
        let n = w.channels();
        // Whole 16-channel blocks (two of these each): the GEMM requantizes 16 at a time.
        let mut blocks = vec![Block8::default(); n.div_ceil(16) * 2];
        let sh_of = |c: usize| {
            let (b16, j) = (&w.blocks[c / 16], c % 16);
            if j % 2 == 0 {
                b16.sh_e[j / 2]
            } else {
                b16.sh_o[j / 2]
            }
        };
        let hi32 = (0..n).all(|c| sh_of(c) >= 32);
        for c in 0..n {
            let (b16, j) = (&w.blocks[c / 16], c % 16);
            let (add, sh, corr) = if j % 2 == 0 {
                (b16.add_e[j / 2], b16.sh_e[j / 2], b16.corr_e[j / 2])
            } else {
                (b16.add_o[j / 2], b16.sh_o[j / 2], b16.corr_o[j / 2])
            };
            debug_assert!((1..=63).contains(&sh));
            let b = &mut blocks[c / 8];
            let (l, h) = (c % 8, c % 8 / 2);
            b.m[l] = b16.m[j];
            b.left[l] = b16.left[j];
            let add = if hi32 {
                b.sh32[l] = sh as u32 - 32;
                b.post[l] = w.zp_post;
                add
            } else {
                b.post[l] = w.zp_post.wrapping_sub((1u64 << (63 - sh)) as u32 as i32);
                add.wrapping_add(i64::MIN)
            };
            if l % 2 == 0 {
                (b.add_e[h], b.sh_e[h], b.addc_e[h]) = (add, sh, add.wrapping_sub(corr));
            } else {
                b.m_odd[l - 1] = b16.m[j];
                (b.add_o[h], b.sh_o[h], b.addc_o[h]) = (add, sh, add.wrapping_sub(corr));
            }
        }
        let any_post = blocks.iter().any(|b| b.post.iter().any(|&p| p != 0));
        Wide8 {
            n,
            blocks,
            any_post,
            any_left: w.any_left,
            away: w.away,
            hi32,
            min: w.min,
            max: w.max,
        }
    }

    pub fn channels(&self) -> usize {
        self.n
    }

    /// Scalar evaluation of what [`requant8`] computes (tests).
    pub fn apply(&self, acc: i32, c: usize) -> i32 {
        let b = &self.blocks[c / 8];
        let (l, h) = (c % 8, c % 8 / 2);
        let p = acc.wrapping_shl(b.left[l]) as i64 * b.m[l] as i64;
        let (add, sh, addc) = if l % 2 == 0 {
            (b.add_e[h], b.sh_e[h], b.addc_e[h])
        } else {
            (b.add_o[h], b.sh_o[h], b.addc_o[h])
        };
        let y = if self.away && p < -(1i64 << 30) {
            p.wrapping_add(addc)
        } else {
            p.wrapping_add(add)
        };
        let v = if self.hi32 {
            ((y >> 32) as i32) >> b.sh32[l]
        } else {
            ((y as u64) >> sh) as u32 as i32
        };
        v.wrapping_add(b.post[l]).clamp(self.min, self.max)
    }
}

/// The output stage's flags, each a step of the epilogue that runs or not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flags {
    left: bool,
    away: bool,
    hi32: bool,
    post: bool,
    signed: bool,
    /// Whether each clamp bound is inside the output type's range: the final 16 -> 8
    /// bit pack saturates to the type's range, so a bound equal to the type's own
    /// (no fused activation, or ReLU's upper bound) needs no instruction.
    clamp_lo: bool,
    clamp_hi: bool,
}

impl Wide8 {
    /// The flags of this stage with an i8 (`signed`) or u8 output.
    fn flags(&self, signed: bool) -> Flags {
        let (tmin, tmax) = if signed { (-128, 127) } else { (0, 255) };
        Flags {
            left: self.any_left,
            away: self.away,
            hi32: self.hi32,
            post: self.any_post,
            signed,
            clamp_lo: self.min > tmin,
            clamp_hi: self.max < tmax,
        }
    }

    /// `Some(away)` when the stage (output i8 when `signed`) runs as an [`Int8Stage`].
    pub(crate) fn int8_stage(&self, signed: bool) -> Option<bool> {
        let f = self.flags(signed);
        if Int8Stage::<true>::admits(&f) {
            Some(true)
        } else if Int8Stage::<false>::admits(&f) {
            Some(false)
        } else {
            None
        }
    }
}

/// Which steps of the epilogue a kernel instance decides at compile time. Each flag
/// of [`Epi`] is a branch in the epilogue of every 8 outputs; fixing them for the
/// stage almost every int8 TFLite layer has ([`Int8Stage`]) folds those branches away
/// and frees the registers the run-time flags occupy (measured on Zen 2: DS-CNN 77.4
/// -> 73.2 µs, ResNet-8 212.6 -> 202.9 µs). Other stages run [`AnyStage`].
pub(crate) trait EpiKind {
    /// `Some(v)`: the flag is `v` in every stage this kind runs; `None`: read it from
    /// the [`Epi`].
    const LEFT: Option<bool>;
    const AWAY: Option<bool>;
    const HI32: Option<bool>;
    const POST: Option<bool>;
    const SIGNED: Option<bool>;
    const CLAMP_LO: Option<bool>;
    const CLAMP_HI: Option<bool>;

    /// Whether this kind runs a stage with flags `f`.
    fn admits(f: &Flags) -> bool {
        let fits = |fixed: Option<bool>, v: bool| fixed.is_none_or(|k| k == v);
        fits(Self::LEFT, f.left)
            && fits(Self::AWAY, f.away)
            && fits(Self::HI32, f.hi32)
            && fits(Self::POST, f.post)
            && fits(Self::SIGNED, f.signed)
            && fits(Self::CLAMP_LO, f.clamp_lo)
            && fits(Self::CLAMP_HI, f.clamp_hi)
    }
}

/// Every flag read at run time.
pub(crate) struct AnyStage;

impl EpiKind for AnyStage {
    const LEFT: Option<bool> = None;
    const AWAY: Option<bool> = None;
    const HI32: Option<bool> = None;
    const POST: Option<bool> = None;
    const SIGNED: Option<bool> = None;
    const CLAMP_LO: Option<bool> = None;
    const CLAMP_HI: Option<bool> = None;
}

/// i8 output, no left shift, every real multiplier below 1/2 (`hi32`), the output
/// zero point folded into the addend, no clamp bound inside the type's range (no fused
/// activation, or a ReLU at the zero point -128); `AWAY`: whether the ties-away
/// correction runs (a fused ReLU hides it).
pub(crate) struct Int8Stage<const AWAY: bool>;

impl<const AWAY: bool> EpiKind for Int8Stage<AWAY> {
    const LEFT: Option<bool> = Some(false);
    const AWAY: Option<bool> = Some(AWAY);
    const HI32: Option<bool> = Some(true);
    const POST: Option<bool> = Some(false);
    const SIGNED: Option<bool> = Some(true);
    const CLAMP_LO: Option<bool> = Some(false);
    const CLAMP_HI: Option<bool> = Some(false);
}

/// Evaluates `$body` with the type `$K` naming the [`EpiKind`] that runs the stage
/// `$rq` (a `&Wide8`) with output signedness `$signed`.
macro_rules! with_epi_kind {
    ($rq:expr, $signed:expr, $K:ident => $body:expr) => {
        match $rq.int8_stage($signed) {
            Some(true) => {
                type $K = $crate::kernels::fast::avx2::Int8Stage<true>;
                $body
            }
            Some(false) => {
                type $K = $crate::kernels::fast::avx2::Int8Stage<false>;
                $body
            }
            None => {
                type $K = $crate::kernels::fast::avx2::AnyStage;
                $body
            }
        }
    };
}
pub(crate) use with_epi_kind;

/// Layer-wide constants of the epilogue, for the kernels compiled for `K`.
#[derive(Clone, Copy)]
struct Epi<K> {
    f: Flags,
    /// The clamp bounds as i16 (the clamp runs after the i32 -> i16 pack).
    lo: __m256i,
    hi: __m256i,
    /// `-2^30` in every 64-bit lane: `p < -2^30` selects the ties-away correction.
    thr: __m256i,
    /// Puts the four dwords holding 4 + 4 + 4 + 4 output bytes in order.
    order: __m256i,
    kind: std::marker::PhantomData<K>,
}

impl<K: EpiKind> Epi<K> {
    #[target_feature(enable = "avx2")]
    unsafe fn new(rq: &Wide8, signed: bool) -> Epi<K> {
        let f = rq.flags(signed);
        assert!(
            K::admits(&f),
            "the kernel's compile-time output stage differs from the layer's"
        );
        Epi {
            f,
            lo: _mm256_set1_epi16(rq.min.clamp(-32768, 32767) as i16),
            hi: _mm256_set1_epi16(rq.max.clamp(-32768, 32767) as i16),
            thr: _mm256_set1_epi64x(-(1i64 << 30)),
            order: _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
            kind: std::marker::PhantomData,
        }
    }

    // The flags, constants where `K` fixes them.
    #[inline(always)]
    fn left(&self) -> bool {
        K::LEFT.unwrap_or(self.f.left)
    }
    #[inline(always)]
    fn away(&self) -> bool {
        K::AWAY.unwrap_or(self.f.away)
    }
    #[inline(always)]
    fn hi32(&self) -> bool {
        K::HI32.unwrap_or(self.f.hi32)
    }
    #[inline(always)]
    fn post(&self) -> bool {
        K::POST.unwrap_or(self.f.post)
    }
    #[inline(always)]
    fn signed(&self) -> bool {
        K::SIGNED.unwrap_or(self.f.signed)
    }
    #[inline(always)]
    fn clamp_lo(&self) -> bool {
        K::CLAMP_LO.unwrap_or(self.f.clamp_lo)
    }
    #[inline(always)]
    fn clamp_hi(&self) -> bool {
        K::CLAMP_HI.unwrap_or(self.f.clamp_hi)
    }
}

#[inline(always)]
unsafe fn ld<E>(v: &E) -> __m256i {
    // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
    // `#[target_feature(enable = "avx2")]` kernels, which run only under `Isa::Avx2`);
    // every `ld` argument is a 32-byte field of a `#[repr(C, align(32))]` block
    // (`Block8`), so the aligned load is in bounds and aligned.
    unsafe { _mm256_load_si256(v as *const E as *const __m256i) }
}

/// The output stage of 8 channels ([`Wide8::apply`] lane by lane) before the clamp,
/// which [`clamp16`] applies after narrowing to i16.
///
/// Instruction choices (each measured on Zen 2, 1000 blocks in a stream): the odd
/// lanes reach `vpmuldq` through `vpshufd` rather than a 64-bit shift (5.5 instead of
/// 6.3 cycles per block: the shift pipe is the busy one); the ties-away correction
/// selects between two addends (`vpblendvb`) instead of masking and subtracting one.
#[inline(always)]
unsafe fn requant8<K: EpiKind>(acc: __m256i, b: &Block8, e: &Epi<K>) -> __m256i {
    // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
    // `#[target_feature(enable = "avx2")]` kernels, which run only under `Isa::Avx2`);
    // the constant loads go through `ld` on the 32-byte-aligned fields of `b`; the rest
    // is register arithmetic.
    unsafe {
        let x = if e.left() {
            _mm256_sllv_epi32(acc, ld(&b.left))
        } else {
            acc
        };
        let pe = _mm256_mul_epi32(x, ld(&b.m));
        let po = _mm256_mul_epi32(_mm256_shuffle_epi32::<0b11_11_01_01>(x), ld(&b.m_odd));
        let (ye, yo) = if e.away() {
            let ke = _mm256_cmpgt_epi64(e.thr, pe);
            let ko = _mm256_cmpgt_epi64(e.thr, po);
            (
                _mm256_add_epi64(pe, _mm256_blendv_epi8(ld(&b.add_e), ld(&b.addc_e), ke)),
                _mm256_add_epi64(po, _mm256_blendv_epi8(ld(&b.add_o), ld(&b.addc_o), ko)),
            )
        } else {
            (
                _mm256_add_epi64(pe, ld(&b.add_e)),
                _mm256_add_epi64(po, ld(&b.add_o)),
            )
        };
        let v = if e.hi32() {
            // High dwords (the odd ones are in place), then one 32-bit arithmetic shift.
            let hi = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(ye), yo);
            _mm256_srav_epi32(hi, ld(&b.sh32))
        } else {
            let ve = _mm256_srlv_epi64(ye, ld(&b.sh_e));
            let vo = _mm256_srlv_epi64(yo, ld(&b.sh_o));
            _mm256_blend_epi32::<0b1010_1010>(ve, _mm256_slli_epi64::<32>(vo))
        };
        if e.post() {
            _mm256_add_epi32(v, ld(&b.post))
        } else {
            v
        }
    }
}

/// Two blocks of [`requant8`] values narrowed to i16 (`vpackssdw` order: the 128-bit
/// lanes of `v0` and `v1` interleaved) and clamped. Saturating to i16 first changes
/// nothing: the clamp bounds are 8-bit values, inside i16.
#[inline(always)]
unsafe fn clamp16<K: EpiKind>(v0: __m256i, v1: __m256i, e: &Epi<K>) -> __m256i {
    // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
    // `#[target_feature(enable = "avx2")]` kernels, which run only under `Isa::Avx2`);
    // register arithmetic only.
    unsafe {
        let w = _mm256_packs_epi32(v0, v1);
        let w = if e.clamp_lo() {
            _mm256_max_epi16(w, e.lo)
        } else {
            w
        };
        if e.clamp_hi() {
            _mm256_min_epi16(w, e.hi)
        } else {
            w
        }
    }
}

/// 16 outputs (channels 0-7 in `v0`, 8-15 in `v1`) clamped, as 16 bytes in order.
/// The values are within the 8-bit type after the clamp, so the packs only narrow.
#[inline(always)]
unsafe fn to_bytes<K: EpiKind>(v0: __m256i, v1: __m256i, e: &Epi<K>) -> __m128i {
    // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
    // `#[target_feature(enable = "avx2")]` kernels, which run only under `Isa::Avx2`);
    // register arithmetic only.
    unsafe {
        let w = clamp16(v0, v1, e);
        let b = if e.signed() {
            _mm256_packs_epi16(w, w)
        } else {
            _mm256_packus_epi16(w, w)
        };
        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(b, e.order))
    }
}

/// 16 outputs whose channels are split across 128-bit lanes as the depthwise
/// accumulators hold them (`v0`: channels 0-3 | 8-11, `v1`: 4-7 | 12-15), clamped, as
/// 16 bytes in order: the i32 -> i16 pack interleaves the lanes back into order.
#[inline(always)]
unsafe fn to_bytes_lanes<K: EpiKind>(v0: __m256i, v1: __m256i, e: &Epi<K>) -> __m128i {
    // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
    // `#[target_feature(enable = "avx2")]` kernels, which run only under `Isa::Avx2`);
    // register arithmetic only.
    unsafe {
        let w = clamp16(v0, v1, e);
        let b = if e.signed() {
            _mm256_packs_epi16(w, w)
        } else {
            _mm256_packus_epi16(w, w)
        };
        _mm_unpacklo_epi64(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b))
    }
}

/// Stores the first `valid` (capped at 16) bytes of `v` at `p`.
#[inline(always)]
unsafe fn store16(p: *mut u8, v: __m128i, valid: usize) {
    // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
    // `#[target_feature(enable = "avx2")]` kernels, which run only under `Isa::Avx2`);
    // `p` has room for `min(valid, 16)` bytes (the callers' contract): a full 16-byte
    // store only when `valid >= 16`, otherwise `valid` bytes copied from a local
    // buffer.
    unsafe {
        if valid >= 16 {
            _mm_storeu_si128(p as *mut __m128i, v);
        } else {
            let mut tmp = [0u8; 16];
            _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, v);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), p, valid);
        }
    }
}

/// An output stage ready to run on 16 channels at a time, for kernels of other
/// modules that produce their i32 accumulators in AVX2 registers.
/// `K`: the flags the instance fixes ([`with_epi_kind`] picks it).
pub(crate) struct Stage<'a, K> {
    rq: &'a Wide8,
    e: Epi<K>,
}

impl<'a, K: EpiKind> Stage<'a, K> {
    /// # Safety
    /// The CPU must support AVX2.
    ///
    /// # Panics
    /// When `K` fixes a flag to another value than the stage's.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn new(rq: &'a Wide8, signed: bool) -> Stage<'a, K> {
        // SAFETY: this constructor is `#[target_feature(enable = "avx2")]` and its
        // contract is that the CPU has AVX2; `Epi::new` needs nothing else.
        unsafe {
            Stage {
                rq,
                e: Epi::new(rq, signed),
            }
        }
    }

    /// Requantizes channels `16 * blk ..` (accumulators `a0`: the first 8, `a1`: the
    /// next 8) and stores the first `valid` (capped at 16) bytes at `dst`.
    ///
    /// # Safety
    /// AVX2; `blk` is a block of the stage; `dst` has room for `min(valid, 16)` bytes.
    #[inline(always)]
    pub(crate) unsafe fn store16(
        &self,
        blk: usize,
        a0: __m256i,
        a1: __m256i,
        dst: *mut u8,
        valid: usize,
    ) {
        // SAFETY: AVX2 and a `dst` with room for `min(valid, 16)` bytes are this
        // function's documented contract; `blk` is a block of the stage, so `2 * blk +
        // 1 < rq.blocks.len()` and both `Block8` reads are in bounds.
        unsafe {
            debug_assert!(2 * blk + 1 < self.rq.blocks.len());
            let b = self.rq.blocks.as_ptr().add(2 * blk);
            let v0 = requant8(a0, &*b, &self.e);
            let v1 = requant8(a1, &*b.add(1), &self.e);
            store16(dst, to_bytes(v0, v1, &self.e), valid);
        }
    }
}

/// The depthwise kernel's output stage: its constants are laid out in the
/// accumulators' lane order ([`dw_channel`]), so no lane permute is needed.
struct LaneStage<'a, K>(Stage<'a, K>);

impl<K: EpiKind> LaneStage<'_, K> {
    #[inline(always)]
    unsafe fn store16(&self, blk: usize, lo: __m256i, hi: __m256i, dst: *mut u8, valid: usize) {
        // SAFETY: as for `Stage::store16`, which this forwards to: AVX2, `blk` a block
        // of the stage (both `Block8` reads in bounds) and room for `min(valid, 16)`
        // bytes at `dst` are the callers' contract.
        unsafe {
            let (rq, e) = (self.0.rq, &self.0.e);
            debug_assert!(2 * blk + 1 < rq.blocks.len());
            let b = rq.blocks.as_ptr().add(2 * blk);
            let v0 = requant8(lo, &*b, e);
            let v1 = requant8(hi, &*b.add(1), e);
            store16(dst, to_bytes_lanes(v0, v1, e), valid);
        }
    }
}

/// `y[r, c] = stage(bias[c] + Σ_k A[r, k] · W[c, k])` for every row of `ind` and
/// channel `c < w.n`; row `r` of A is the concatenation of `ind.taps` runs of
/// `w.k_pad() / taps` i16 values at element offsets `offs[r * taps + t]` of `x`. Rows
/// of `y` are `ldy` bytes apart; `signed` says whether the output bytes are i8.
#[allow(clippy::too_many_arguments)]
pub fn igemm(
    isa: Isa,
    x: &[i16],
    ind: &Indirection,
    w: &PackedPairs,
    rq: &Wide8,
    signed: bool,
    y: &mut [u8],
    ldy: usize,
) {
    assert!(isa.is_avx2(), "the AVX2 GEMM needs AVX2");
    let rows = ind.rows;
    if rows == 0 {
        return;
    }
    let kp = ind.run_units(w.k2, 2, x.len());
    assert!(rq.channels() == w.n && rq.blocks.len() >= w.nblk * 2);
    assert!(w.data.len() == w.nblk * w.k2 * PAIR_ROW && w.bias.len() == w.nblk * NR);
    ind.check_out(w.n, ldy, y.len());
    let g = Gemm {
        x: x.as_ptr(),
        offs: ind.offs.as_ptr(),
        rows,
        taps: ind.taps,
        kp,
        w: w.data.as_ptr(),
        k2: w.k2,
        nblk: w.nblk,
        bias: w.bias.as_ptr(),
        rq: rq.blocks.as_ptr(),
        n: w.n,
        y: y.as_mut_ptr(),
        ldy,
    };
    // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2; every pointer stays within
    // the bounds asserted above (rows read `kp` pairs per tap at offsets <= max_off,
    // weights `k2` pair rows per block, outputs `n` bytes per row).
    unsafe { with_epi_kind!(rq, signed, K => igemm_impl::<K>(&g, rq, signed)) }
}

/// Raw operands of one GEMM call (checked by [`igemm`]).
struct Gemm {
    x: *const i16,
    offs: *const u32,
    rows: usize,
    taps: usize,
    /// Pairs per tap run.
    kp: usize,
    w: *const i8,
    k2: usize,
    nblk: usize,
    bias: *const i32,
    rq: *const Block8,
    n: usize,
    y: *mut u8,
    ldy: usize,
}

#[target_feature(enable = "avx2")]
unsafe fn igemm_impl<K: EpiKind>(g: &Gemm, rq: &Wide8, signed: bool) {
    // SAFETY: the CPU has AVX2 (`igemm` calls this only under `Isa::Avx2`), and `igemm`
    // asserted the bounds of every raw pointer in `g` (rows read `kp` pairs per tap at
    // offsets <= the largest offset, weights `k2` pair rows per block, outputs `n`
    // bytes per row), which the tiles below stay within.
    unsafe {
        let e = Epi::<K>::new(rq, signed);
        // Few rows (fully-connected layers): one row against several blocks, so there are
        // enough independent accumulator chains; otherwise 4 rows x 1 block (the weights
        // of a block stay in L1 while the rows stream).
        let small = g.rows <= 3;
        let mut b0 = 0;
        while b0 < g.nblk {
            let left = g.nblk - b0;
            if small && left >= 4 {
                for r in 0..g.rows {
                    tile::<K, 1, 4>(g, &e, r, 1, b0);
                }
                b0 += 4;
            } else if small && left >= 2 {
                for r in 0..g.rows {
                    tile::<K, 1, 2>(g, &e, r, 1, b0);
                }
                b0 += 2;
            } else {
                let mut r = 0;
                while r + 4 <= g.rows {
                    tile::<K, 4, 1>(g, &e, r, 4, b0);
                    r += 4;
                }
                match g.rows - r {
                    0 => {}
                    1 => tile::<K, 1, 1>(g, &e, r, 1, b0),
                    2 => tile::<K, 2, 1>(g, &e, r, 2, b0),
                    rem => tile::<K, 4, 1>(g, &e, r, rem, b0),
                }
                b0 += 1;
            }
        }
    }
}

/// `R` rows (`valid` of them stored; the others recompute the last row) x `NB`
/// blocks of 16 channels starting at block `b0` (all in one group).
#[inline(always)]
unsafe fn tile<K: EpiKind, const R: usize, const NB: usize>(
    g: &Gemm,
    e: &Epi<K>,
    r0: usize,
    valid: usize,
    b0: usize,
) {
    // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
    // `#[target_feature(enable = "avx2")]` kernels, which run only under `Isa::Avx2`);
    // `r0 + R` rows (the ones past `valid` recompute the last valid row) and blocks `b0
    // .. b0 + NB` are inside the operands `igemm` checked, so every load and the
    // `valid` row stores are in bounds.
    unsafe {
        let zero = _mm256_setzero_si256();
        let mut acc = [[[zero; 2]; NB]; R];
        for j in 0..NB {
            let bias = g.bias.add((b0 + j) * NR);
            let lo = _mm256_loadu_si256(bias as *const __m256i);
            let hi = _mm256_loadu_si256(bias.add(8) as *const __m256i);
            for row in acc.iter_mut() {
                row[j] = [lo, hi];
            }
        }
        let (gi, j0) = (b0 / GROUP, b0 % GROUP);
        debug_assert!(j0 + NB <= GROUP);
        let ps = (g.nblk - gi * GROUP).min(GROUP) * PAIR_ROW;
        let wbase = g.w.add(gi * GROUP * g.k2 * PAIR_ROW + j0 * PAIR_ROW);
        // Each row's tap offsets, found once per tile (rows past the last repeat it).
        let offs: [*const u32; R] =
            std::array::from_fn(|i| g.offs.add((r0 + i).min(g.rows - 1) * g.taps));
        let mut ap = [std::ptr::null::<i16>(); R];
        let mut k = 0;
        for t in 0..g.taps {
            for (p, o) in ap.iter_mut().zip(&offs) {
                *p = g.x.add(*o.add(t) as usize);
            }
            let mut wq = wbase.add(k * ps);
            for q in 0..g.kp {
                let mut wv = [[zero; 2]; NB];
                for (j, v) in wv.iter_mut().enumerate() {
                    let p = wq.add(j * PAIR_ROW);
                    v[0] = _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i));
                    v[1] = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(16) as *const __m128i));
                }
                for i in 0..R {
                    let a = _mm256_set1_epi32((ap[i].add(2 * q) as *const i32).read_unaligned());
                    for j in 0..NB {
                        for h in 0..2 {
                            acc[i][j][h] =
                                _mm256_add_epi32(acc[i][j][h], _mm256_madd_epi16(a, wv[j][h]));
                        }
                    }
                }
                wq = wq.add(ps);
            }
            k += g.kp;
        }
        for (i, row) in acc.iter().enumerate().take(valid) {
            let yr = g.y.add((r0 + i) * g.ldy);
            for (j, a) in row.iter().enumerate() {
                let blk = b0 + j;
                let v0 = requant8(a[0], &*g.rq.add(2 * blk), e);
                let v1 = requant8(a[1], &*g.rq.add(2 * blk + 1), e);
                store16(yr.add(blk * NR), to_bytes(v0, v1, e), g.n - blk * NR);
            }
        }
    }
}

/// Depthwise convolution (channel multiplier 1) with the output stage fused.
///
/// The input, minus its zero point, is an i16 buffer padded in space (borders 0, so
/// every tap is in bounds) and in channels (whole 16-channel blocks) ([`DwGeom`]).
/// Two taps share one `vpmaddwd`: the 16 channels of tap `t0` and of tap `t1`
/// interleaved by `vpunpcklwd`/`vpunpckhwd` are pairs `(x_t0, x_t1)` per channel, and
/// the weights are stored interleaved the same way, so an instruction does 16 MACs
/// (an odd last tap pairs with itself and a zero weight). The unpacks work within
/// 128-bit lanes, so the accumulators hold channels `0-3, 8-11` (`lo`) and `4-7,
/// 12-15` (`hi`); the bias is stored in that order and two lane permutes restore
/// channel order before the output stage. A step keeps [`DW_P`] output pixels of one
/// block in registers and loads each tap pair's weights once for all of them.
#[derive(Debug, Clone)]
pub struct Depthwise2 {
    pub c: usize,
    nblk: usize,
    taps: usize,
    /// Per tap pair and block: 16 i16 for the `lo` accumulator, then 16 for `hi`.
    w: Aligned<i16>,
    /// Per block: 8 i32 of `lo` then 8 of `hi`, in the accumulators' channel order.
    bias: Vec<i32>,
    rq: Wide8,
    /// A 3x3 stride-1 undilated kernel whose taps are paired as [`ROWS3_ORDER`]:
    /// the kernel then shares each loaded and interleaved column between the
    /// neighbouring output pixels of a row ([`rows3_step`]).
    pub rows3: bool,
}

/// Tap order of a [`Depthwise2::rows3`] kernel (taps `ky * 3 + kx`): the first two
/// kernel rows paired vertically, column by column, then `(2,0)-(2,1)` and `(2,2)`.
pub const ROWS3_ORDER: [usize; 9] = [0, 3, 1, 4, 2, 5, 6, 7, 8];

/// Output pixels per depthwise step.
const DW_P: usize = 4;

/// Channel (within a block of 16) of lane `l` of the `lo` (`hi = false`) or `hi`
/// accumulator, and of i32 lane `l` of their `vpmaddwd` operands.
fn dw_channel(hi: bool, l: usize) -> usize {
    (l / 4) * 8 + usize::from(hi) * 4 + l % 4
}

impl Depthwise2 {
    /// `wt` is `[taps, c]` (zero points subtracted), `bias` has `c` entries; `None`
    /// when the stage has no one-step form. `rows3`: the kernel is 3x3, stride 1,
    /// undilated (its taps are then stored in [`ROWS3_ORDER`], and the geometry's tap
    /// offsets must be permuted the same way).
    pub fn new(
        wt: &[i16],
        taps: usize,
        c: usize,
        bias: &[i32],
        stage: &OutputStage,
        rows3: bool,
    ) -> Option<Depthwise2> {
        assert!(wt.len() == taps * c && bias.len() == c);
        assert!(!rows3 || taps == 9, "a 3x3 kernel has 9 taps");
        let permuted: Vec<i16>;
        let wt = if rows3 {
            permuted = ROWS3_ORDER
                .iter()
                .flat_map(|&t| wt[t * c..][..c].iter().copied())
                .collect();
            &permuted[..]
        } else {
            wt
        };
        let nblk = c.div_ceil(NR);
        // The stage is permuted within blocks of NR channels below, so a rounding that
        // changes with the channel (LiteRT's depthwise: ties up below a multiple of 8)
        // keeps its meaning only at a block boundary; one inside a block (24 of 25
        // channels) has no permuted form here: the generic kernel runs it.
        let rounding = match stage.rounding {
            Rounding::TiesUpBelow(n) if n >= c => Rounding::TiesUp,
            Rounding::TiesUpBelow(n) if n % NR == 0 => Rounding::TiesUpBelow(n),
            Rounding::TiesUpBelow(_) => return None,
            r @ (Rounding::TiesAway | Rounding::TiesUp | Rounding::Single) => r,
        };
        // The stage in the accumulators' channel order (padding lanes repeat
        // channel 0; they are never stored).
        let order: Vec<usize> = (0..nblk * NR)
            .map(|q| {
                let ch = (q / NR) * NR + dw_channel(q % NR >= 8, q % 8);
                if ch < c {
                    ch
                } else {
                    0
                }
            })
            .collect();
        let rq = Wide8::new(&OutputStage {
            multiplier: order.iter().map(|&ch| stage.multiplier[ch]).collect(),
            shift: order.iter().map(|&ch| stage.shift[ch]).collect(),
            rounding,
            ..stage.clone()
        })?;
        let pairs = taps.div_ceil(2);
        let mut aligned = Aligned::zeroed(pairs * nblk * 32);
        let w = aligned.as_mut_slice();
        let mut b = vec![0i32; nblk * 16];
        for blk in 0..nblk {
            for (h, hi) in [false, true].into_iter().enumerate() {
                for l in 0..8 {
                    let ch = blk * NR + dw_channel(hi, l);
                    if ch >= c {
                        continue;
                    }
                    b[blk * 16 + h * 8 + l] = bias[ch];
                    for t in 0..taps {
                        let at = ((t / 2) * nblk + blk) * 32 + h * 16 + 2 * l + t % 2;
                        w[at] = wt[t * c + ch];
                    }
                }
            }
        }
        Some(Depthwise2 {
            c,
            nblk,
            taps,
            w: aligned,
            bias: b,
            rq,
            rows3,
        })
    }

    /// Channels of the padded input buffer.
    pub fn cpad(&self) -> usize {
        self.nblk * NR
    }
}

/// `xp` is the padded input of `geo` ([`DwGeom::fill_i16`]); `y` the 8-bit output
/// (NHWC, `dw.c` channels) as bytes, i8 when `signed`.
pub fn depthwise(isa: Isa, geo: &DwGeom, xp: &[i16], dw: &Depthwise2, signed: bool, y: &mut [u8]) {
    assert!(isa.is_avx2(), "needs AVX2");
    assert_eq!(xp.len(), geo.len(), "padded input size");
    assert_eq!(geo.cpad, dw.cpad(), "channel blocks");
    assert_eq!(geo.toff.len(), dw.taps, "taps");
    let pixels = geo.base.len();
    assert_eq!(y.len(), pixels * dw.c, "output size");
    if pixels == 0 || dw.taps == 0 {
        return;
    }
    let reach = geo.base.iter().max().copied().unwrap_or(0)
        + geo.toff.iter().max().copied().unwrap_or(0)
        + geo.cpad;
    assert!(reach <= xp.len(), "windows inside the padded input");
    // SAFETY: AVX2 proven by `isa`; every load is a whole block of a window inside the
    // padded input (checked above); stores are limited to `c` channels per pixel.
    unsafe { with_epi_kind!(dw.rq, signed, K => depthwise_impl::<K>(geo, xp, dw, signed, y)) }
}

#[target_feature(enable = "avx2")]
unsafe fn depthwise_impl<K: EpiKind>(
    geo: &DwGeom,
    xp: &[i16],
    dw: &Depthwise2,
    signed: bool,
    y: &mut [u8],
) {
    // SAFETY: the CPU has AVX2 (`depthwise` calls this only under `Isa::Avx2`), and
    // `depthwise` asserted that every window of the padded input `xp` is in bounds;
    // weights are read per block of `dw.w` and outputs stored for the `c` channels of
    // each pixel of `y`.
    unsafe {
        let st = LaneStage(Stage::<K>::new(&dw.rq, signed));
        let wbase = dw.w.as_slice().as_ptr();
        let pixels = geo.base.len();
        let pairs = dw.taps.div_ceil(2);
        let c = dw.c;
        if dw.rows3 {
            return rows3_impl(geo, xp, dw, &st, y);
        }
        for blk in 0..dw.nblk {
            let bias_lo = _mm256_loadu_si256(dw.bias.as_ptr().add(blk * 16) as *const __m256i);
            let bias_hi = _mm256_loadu_si256(dw.bias.as_ptr().add(blk * 16 + 8) as *const __m256i);
            let x0 = xp.as_ptr().add(blk * NR);
            let mut p0 = 0;
            while p0 < pixels {
                let xs: [*const i16; DW_P] =
                    std::array::from_fn(|i| x0.add(geo.base[(p0 + i).min(pixels - 1)]));
                let mut acc = [[bias_lo, bias_hi]; DW_P];
                for pr in 0..pairs {
                    let wp = wbase.add((pr * dw.nblk + blk) * 32);
                    let wl = _mm256_loadu_si256(wp as *const __m256i);
                    let wh = _mm256_loadu_si256(wp.add(16) as *const __m256i);
                    let o0 = geo.toff[2 * pr];
                    let o1 = geo.toff[(2 * pr + 1).min(dw.taps - 1)];
                    for i in 0..DW_P {
                        let a = _mm256_loadu_si256(xs[i].add(o0) as *const __m256i);
                        let b = _mm256_loadu_si256(xs[i].add(o1) as *const __m256i);
                        let lo = _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), wl);
                        let hi = _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), wh);
                        acc[i][0] = _mm256_add_epi32(acc[i][0], lo);
                        acc[i][1] = _mm256_add_epi32(acc[i][1], hi);
                    }
                }
                for (i, [lo, hi]) in acc.into_iter().enumerate().take(pixels - p0) {
                    let dst = y.as_mut_ptr().add((p0 + i) * c + blk * NR);
                    st.store16(blk, lo, hi, dst, c - blk * NR);
                }
                p0 += DW_P;
            }
        }
    }
}

/// The depthwise kernel of a [`Depthwise2::rows3`] layer: output pixels a row at a
/// time, up to 4 per step. Each input column of the first two kernel rows is loaded
/// and interleaved once per step and serves the up-to-3 pixels whose window covers
/// it (the current kernel reloads and re-interleaves it for each). Same products and
/// sums as the general loop, in another order.
#[target_feature(enable = "avx2")]
unsafe fn rows3_impl<K: EpiKind>(
    geo: &DwGeom,
    xp: &[i16],
    dw: &Depthwise2,
    st: &LaneStage<K>,
    y: &mut [u8],
) {
    // SAFETY: the CPU has AVX2 (called from `depthwise_impl`, itself AVX2-only); the
    // windows of the rows read are inside `xp` (asserted by `depthwise`), and stores
    // cover the `c` channels of each output pixel of `y`.
    unsafe {
        let (images, out_h, out_w) = geo.rows;
        debug_assert_eq!(images * out_h * out_w, geo.base.len());
        let c = dw.c;
        for blk in 0..dw.nblk {
            let bias = [
                _mm256_loadu_si256(dw.bias.as_ptr().add(blk * 16) as *const __m256i),
                _mm256_loadu_si256(dw.bias.as_ptr().add(blk * 16 + 8) as *const __m256i),
            ];
            let w: [*const i16; 5] =
                std::array::from_fn(|pr| dw.w.as_slice().as_ptr().add((pr * dw.nblk + blk) * 32));
            let g = Rows3 {
                wp: geo.wp,
                cpad: geo.cpad,
                w,
                bias,
            };
            for row in 0..images * out_h {
                let p0 = row * out_w;
                let mut ox = 0;
                while ox < out_w {
                    let p = p0 + ox;
                    let x = xp.as_ptr().add(geo.base[p] + blk * NR);
                    let dst = y.as_mut_ptr().add(p * c + blk * NR);
                    let n = c - blk * NR;
                    match out_w - ox {
                        1 => g.store(st, blk, &g.step::<1>(x), dst, c, n),
                        2 => g.store(st, blk, &g.step::<2>(x), dst, c, n),
                        3 => g.store(st, blk, &g.step::<3>(x), dst, c, n),
                        _ => g.store(st, blk, &g.step::<4>(x), dst, c, n),
                    }
                    ox += 4;
                }
            }
        }
    }
}

/// An unaligned 32-byte load (a function, not a closure: closures do not inherit
/// the caller's target features, and the intrinsic would become a call).
#[inline(always)]
unsafe fn ldu(p: *const i16) -> __m256i {
    // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
    // `#[target_feature(enable = "avx2")]` kernels, which run only under `Isa::Avx2`);
    // `p` points to 16 readable i16 values (the callers load whole blocks of the padded
    // input, checked by `depthwise`).
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// One block's constants for [`rows3_impl`].
struct Rows3 {
    wp: usize,
    cpad: usize,
    /// Weights of the five tap pairs ([`ROWS3_ORDER`]): 16 i16 `lo`, then 16 `hi`.
    w: [*const i16; 5],
    bias: [__m256i; 2],
}

impl Rows3 {
    /// `P` neighbouring output pixels of one row, from the window origin `x` of the
    /// first (already offset to the block).
    #[inline(always)]
    unsafe fn step<const P: usize>(&self, x: *const i16) -> [[__m256i; 2]; P] {
        // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
        // `#[target_feature(enable = "avx2")]` kernels, which run only under
        // `Isa::Avx2`); `x` is a window origin inside the padded input and the `P + 2`
        // columns of the 3 kernel rows it reads are inside it (`rows3_impl` walks only
        // windows `depthwise` checked).
        unsafe {
            let (col, r1, r2) = (self.cpad, self.wp * self.cpad, 2 * self.wp * self.cpad);
            let mut acc = [self.bias; P];
            // Kernel rows 0 and 1: column j interleaved once, used by pixels j - kx.
            for j in 0..P + 2 {
                let (a, b) = (ldu(x.add(j * col)), ldu(x.add(r1 + j * col)));
                let (lo, hi) = (_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b));
                for kx in 0..3 {
                    if j >= kx && j - kx < P {
                        let (a, w) = (&mut acc[j - kx], self.w[kx]);
                        a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(lo, ldu(w)));
                        a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(hi, ldu(w.add(16))));
                    }
                }
            }
            // Kernel row 2: (2,0)-(2,1) as a pair, (2,2) with a zero weight.
            let row = x.add(r2);
            let mut prev = ldu(row);
            for (i, a) in acc.iter_mut().enumerate() {
                let next = ldu(row.add((i + 1) * col));
                let last = ldu(row.add((i + 2) * col));
                let (w3, w4) = (self.w[3], self.w[4]);
                let h = (
                    _mm256_unpacklo_epi16(prev, next),
                    _mm256_unpackhi_epi16(prev, next),
                );
                let s = (
                    _mm256_unpacklo_epi16(last, last),
                    _mm256_unpackhi_epi16(last, last),
                );
                a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(h.0, ldu(w3)));
                a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(h.1, ldu(w3.add(16))));
                a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(s.0, ldu(w4)));
                a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(s.1, ldu(w4.add(16))));
                prev = next;
            }
            acc
        }
    }

    /// Requantizes and stores `P` pixels' 16 channels (`n` of them valid), pixels
    /// `c` bytes apart from `dst`.
    #[inline(always)]
    unsafe fn store<K: EpiKind, const P: usize>(
        &self,
        st: &LaneStage<K>,
        blk: usize,
        acc: &[[__m256i; 2]; P],
        dst: *mut u8,
        c: usize,
        n: usize,
    ) {
        // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
        // `#[target_feature(enable = "avx2")]` kernels, which run only under
        // `Isa::Avx2`); `dst` has room for `P` pixels `c` bytes apart of `n` valid
        // channels each (the caller stores inside `y`), as `Stage::store16` requires.
        unsafe {
            for (i, a) in acc.iter().enumerate() {
                st.store16(blk, a[0], a[1], dst.add(i * c), n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quantized::common::Rounding;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random_stage(r: &mut StdRng, n: usize, rounding: Rounding) -> OutputStage {
        let multiplier = (0..n)
            .map(|_| match r.gen_range(0..10) {
                0 => i32::MAX,
                1 => 1 << 30,
                _ => r.gen_range(1 << 30..i32::MAX),
            })
            .collect();
        let shift = (0..n)
            .map(|_| match r.gen_range(0..10) {
                0 => r.gen_range(-40..40),
                _ => r.gen_range(-14..3),
            })
            .collect();
        let (lo, hi) = if r.gen_bool(0.5) {
            (-128, 127)
        } else {
            (0, 255)
        };
        let (out_zp, min, max) = match r.gen_range(0..4) {
            // No fused activation.
            0 => (r.gen_range(lo..=hi), lo, hi),
            // A ReLU whose zero is the type's lowest value.
            1 => (lo, lo, hi),
            _ => (
                r.gen_range(lo..=hi),
                lo + r.gen_range(0..20),
                hi - r.gen_range(0..20),
            ),
        };
        OutputStage {
            multiplier,
            shift,
            out_zp,
            min,
            max,
            rounding,
        }
    }

    fn random_acc(r: &mut StdRng) -> i32 {
        match r.gen_range(0..6) {
            0 => i32::MIN,
            1 => i32::MAX,
            2 => r.gen(),
            _ => r.gen_range(-100_000..100_000),
        }
    }

    /// The biased 256-bit layout computes the reference output stage, scalar and
    /// vectorized, including the extremes of i32 and of the shifts.
    #[test]
    fn requant8_matches_output_stage() {
        let Some(isa) = Isa::avx2() else {
            eprintln!("skipped: no AVX2");
            return;
        };
        let _ = isa;
        let mut r = StdRng::seed_from_u64(11);
        // Stages run by AnyStage, Int8Stage<false>, Int8Stage<true>.
        let mut kinds = [0; 3];
        for case in 0..2000 {
            let n = r.gen_range(1..40);
            let rounding = [
                Rounding::TiesAway,
                Rounding::TiesUp,
                Rounding::Single,
                Rounding::litert_depthwise(n),
            ][case % 4];
            let mut stage = random_stage(&mut r, n, rounding);
            if case % 2 == 0 {
                // Every real multiplier below 1/2: the high-dword mode of `Wide8`.
                for s in &mut stage.shift {
                    *s = r.gen_range(-31..=-1);
                }
            }
            let w = Wide8::new(&stage).expect("no i32::MIN multiplier");
            assert_eq!(w.hi32, case % 2 == 0 || stage.shift.iter().all(|&s| s < 0));
            let signed = stage.min < 0;
            for _ in 0..4 {
                let acc: Vec<i32> = (0..w.blocks.len() * 8)
                    .map(|_| random_acc(&mut r))
                    .collect();
                for (c, &a) in acc.iter().enumerate().take(n) {
                    assert_eq!(w.apply(a, c), stage.apply(a, c), "{stage:?} acc {a} c {c}");
                }
                // SAFETY: AVX2 checked above; loads of whole blocks.
                // Through the bytes the kernels store: requant8, the i16 clamp, packs,
                // compiled for the stage's kind as the kernels are.
                let got = unsafe { with_epi_kind!(w, signed, K => stored::<K>(&w, signed, &acc)) };
                kinds[match w.int8_stage(signed) {
                    None => 0,
                    Some(away) => 1 + usize::from(away),
                }] += 1;
                for c in 0..n {
                    assert_eq!(
                        got[c],
                        stage.apply(acc[c], c),
                        "{stage:?} acc {} c {c}",
                        acc[c]
                    );
                }
            }
        }
        assert!(
            kinds.iter().all(|&k| k >= 20),
            "every kind exercised: {kinds:?}"
        );
    }

    /// The bytes the kernels store for the accumulators `acc` (whole blocks of `w`).
    #[target_feature(enable = "avx2")]
    unsafe fn stored<K: EpiKind>(w: &Wide8, signed: bool, acc: &[i32]) -> Vec<i32> {
        // SAFETY: the tests call this only when the CPU has AVX2 (this function's
        // target feature); `acc` holds 16 accumulators per pair of blocks of `w` ("whole
        // blocks"), so each 8-lane load of pair `p` reads inside `acc`, and `out` has
        // as many bytes as `acc` has values, so each 16-byte store is inside it.
        let e = unsafe { Epi::<K>::new(w, signed) };
        let mut out = vec![0u8; acc.len()];
        for (p, pair) in w.blocks.chunks_exact(2).enumerate() {
            // SAFETY: AVX2 as above; pair `p`'s accumulators `16p .. 16p + 16` are inside
            // `acc`, its 16 bytes inside `out`.
            unsafe {
                let at = |i: usize| {
                    _mm256_loadu_si256(acc.as_ptr().add(16 * p + 8 * i) as *const __m256i)
                };
                let v0 = requant8(at(0), &pair[0], &e);
                let v1 = requant8(at(1), &pair[1], &e);
                let bytes = to_bytes(v0, v1, &e);
                _mm_storeu_si128(out.as_mut_ptr().add(16 * p) as *mut __m128i, bytes);
            }
        }
        out.iter()
            .map(|&b| if signed { b as i8 as i32 } else { b as i32 })
            .collect()
    }
}
