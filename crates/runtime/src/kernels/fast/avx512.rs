//! AVX-512 (F/BW/VL/VNNI) kernels: an implicit u8 x i8 GEMM on 512-bit `vpdpbusd`
//! with the output stage fused in its epilogue.
//!
//! GEMM: the weights are [`PackedW8`] (16 output channels per block, `[k/4][16][4]`
//! bytes, so one quad row of a block is one 64-byte register); the activations are u8
//! (`x - T::MIN`, the zero-point correction folded into the bias, see [`PackedW8`]).
//! Row `r` of A is not stored: it is the concatenation of `taps` runs of `kq` quads
//! read at `x + offs[r * taps + t]` ([`Indirection`]), so a convolution whose input
//! channels are a multiple of 4 reads its input in place (one run per kernel tap;
//! padding taps point at a row of zero-point bytes), and anything else reads rows of
//! an im2col buffer (`taps = 1`). A micro-kernel keeps `R x NB` accumulators of 16
//! channels in registers, broadcasting one quad of each row against `NB` weight
//! registers, and never stores an i32: the epilogue ([`requant16`]) evaluates the
//! output stage in the one-step 64-bit form of [`Wide`] and stores 16 bytes per row and
//! block (masked for a partial last block).
//!
//! Exactness: the accumulation is the same wrapping i32 sum as the reference's (in
//! another order); the epilogue is [`Wide::apply`] lane by lane (`vpmuldq` gives the
//! exact 64-bit products, `vpsravq` the arithmetic shifts), which the tests of
//! `requant.rs` check against the reference output stage.

use super::gemm::{PackedW8, NR};
use super::requant::{Block16, Wide};
use super::Isa;
use crate::kernels::quantized::common::{OutputStage, QInt};
use crate::kernels::quantized::conv::{Axis, ConvGeom};
use std::arch::x86_64::*;

/// Where the rows of an implicit GEMM's A matrix are: row `r` is the concatenation of
/// `taps` runs starting at byte offsets `offs[r * taps + t]` of the activation buffer.
#[derive(Debug, Clone)]
pub struct Indirection {
    pub rows: usize,
    pub taps: usize,
    pub(crate) offs: Vec<u32>,
    pub(crate) max_off: usize,
}

impl Indirection {
    /// `None` when an offset does not fit in 32 bits (the caller then uses another
    /// kernel).
    pub fn new(rows: usize, taps: usize, offs: Vec<usize>) -> Option<Indirection> {
        assert_eq!(offs.len(), rows * taps, "one offset per row and tap");
        let max_off = offs.iter().copied().max().unwrap_or(0);
        u32::try_from(max_off).ok()?;
        Some(Indirection {
            rows,
            taps,
            offs: offs.into_iter().map(|o| o as u32).collect(),
            max_off,
        })
    }

    /// Plain rows `lda` bytes apart (an im2col buffer or a row-major matrix).
    pub fn strided(rows: usize, lda: usize) -> Option<Indirection> {
        Indirection::new(rows, 1, (0..rows).map(|r| r * lda).collect())
    }

    /// The length of each of a row's `taps` runs, in units of `unit` elements, for
    /// rows `k_units` units long. Checks that the taps split the row and that every
    /// run lies inside the `x_len` elements of A.
    pub(crate) fn run_units(&self, k_units: usize, unit: usize, x_len: usize) -> usize {
        assert!(
            self.taps > 0 && k_units.is_multiple_of(self.taps),
            "taps must split K"
        );
        let run = k_units / self.taps;
        assert!(self.max_off + run * unit <= x_len, "A out of bounds");
        run
    }

    /// Checks that `y_len` bytes hold this many output rows of `n` bytes, `ldy` apart.
    pub(crate) fn check_out(&self, n: usize, ldy: usize, y_len: usize) {
        assert!(
            ldy >= n && y_len >= (self.rows - 1) * ldy + n,
            "y too short"
        );
    }
}

/// `y[r, c] = stage(bias[c] + Σ_k A[r, k] · W[c, k])` for every row of `ind` and
/// channel `c < w.n`; rows of `y` are `ldy` bytes apart. `y` holds `T` values as bytes
/// (the clamp of `rq` keeps them in `T`'s range, so the low byte is the value).
pub fn igemm(
    isa: Isa,
    x: &[u8],
    ind: &Indirection,
    w: &PackedW8,
    rq: &Wide,
    y: &mut [u8],
    ldy: usize,
) {
    assert!(isa.is_avx512(), "the AVX-512 GEMM needs AVX-512");
    let rows = ind.rows;
    if rows == 0 {
        return;
    }
    let kq = ind.run_units(w.k4, 4, x.len());
    assert!(rq.channels() == w.n && rq.blocks.len() == w.nblk);
    assert!(w.data.len() == w.nblk * w.k4 * NR * 4 && w.bias.len() == w.nblk * NR);
    assert!(
        w.grouped,
        "weights in the grouped layout (`PackedW8::group8`)"
    );
    ind.check_out(w.n, ldy, y.len());
    let g = Gemm {
        x: x.as_ptr(),
        offs: ind.offs.as_ptr(),
        rows,
        taps: ind.taps,
        kq,
        w: w.data.as_ptr(),
        k4: w.k4,
        nblk: w.nblk,
        bias: w.bias.as_ptr(),
        rq: rq.blocks.as_ptr(),
        n: w.n,
        y: y.as_mut_ptr(),
        ldy,
    };
    // SAFETY: `Isa::Avx512` exists only when the CPU has AVX-512 F/BW/VL/VNNI; every
    // pointer stays within the bounds asserted above (rows read `kq * 4` bytes per
    // tap at offsets <= max_off, weights `k4` quads per block, outputs `n` bytes per
    // row through masked stores).
    unsafe { igemm_impl(&g, rq, w.nblk) }
}

/// Raw operands of one GEMM call (checked by [`igemm`]).
struct Gemm {
    x: *const u8,
    offs: *const u32,
    rows: usize,
    taps: usize,
    kq: usize,
    /// Weights in the grouped layout of [`PackedW8::group8`].
    w: *const i8,
    k4: usize,
    nblk: usize,
    bias: *const i32,
    rq: *const Block16,
    n: usize,
    y: *mut u8,
    ldy: usize,
}

/// Layer-wide constants of the epilogue.
#[derive(Clone, Copy)]
pub(crate) struct Epi {
    any_left: bool,
    away: bool,
    post: bool,
    /// The lower clamp is not a no-op (`min > i32::MIN`).
    clamp_lo: bool,
    /// How [`to_bytes`] narrows: 1 = signed saturation (the upper clamp is 127),
    /// 2 = unsigned saturation (255, with `min >= 0`), 0 = clamp then truncate.
    narrow: u8,
    zp: __m512i,
    lo: __m512i,
    hi: __m512i,
    /// `-2^30` in every 64-bit lane: `p < -2^30` selects the ties-away correction.
    thr: __m512i,
    /// Interleaves the even-channel results (low dwords of `a`) with the odd ones.
    idx: __m512i,
}

impl Epi {
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn new(rq: &Wide) -> Epi {
        Epi {
            any_left: rq.any_left,
            away: rq.away,
            post: rq.zp_post != 0,
            clamp_lo: rq.min > i32::MIN,
            narrow: match (rq.min, rq.max) {
                (lo, 127) if lo >= -128 => 1,
                (lo, 255) if lo >= 0 => 2,
                _ => 0,
            },
            zp: _mm512_set1_epi32(rq.zp_post),
            lo: _mm512_set1_epi32(rq.min),
            hi: _mm512_set1_epi32(rq.max),
            thr: _mm512_set1_epi64(-(1i64 << 30)),
            idx: _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
        }
    }
}

#[inline(always)]
unsafe fn ld<E>(v: &E) -> __m512i {
    // SAFETY: the CPU has AVX-512 F/BW/VL/VNNI (this function is only inlined into the
    // `#[target_feature]` AVX-512 kernels, which run only under `Isa::Avx512`); every
    // `ld` argument is a 64-byte field of a `#[repr(C, align(64))]` `Block16`, so the
    // aligned load is in bounds and aligned.
    unsafe { _mm512_load_si512(v as *const E as *const _) }
}

/// The output stage of 16 channels (one [`Block16`]): [`Wide::apply`] lane by lane,
/// up to the lower clamp; [`to_bytes`] applies the upper one while narrowing.
#[inline(always)]
pub(crate) unsafe fn requant16(acc: __m512i, b: &Block16, e: &Epi) -> __m512i {
    // SAFETY: the CPU has AVX-512 F/BW/VL/VNNI (this function is only inlined into the
    // `#[target_feature]` AVX-512 kernels, which run only under `Isa::Avx512`);
    // constants come through `ld` on the aligned fields of `b`; the rest is register
    // arithmetic.
    unsafe {
        let x = if e.any_left {
            _mm512_sllv_epi32(acc, ld(&b.left))
        } else {
            acc
        };
        let pe = _mm512_mul_epi32(x, ld(&b.m));
        let po = _mm512_mul_epi32(_mm512_srli_epi64::<32>(x), ld(&b.m_odd));
        let mut ye = _mm512_add_epi64(pe, ld(&b.add_e));
        let mut yo = _mm512_add_epi64(po, ld(&b.add_o));
        if e.away {
            let ke = _mm512_cmplt_epi64_mask(pe, e.thr);
            let ko = _mm512_cmplt_epi64_mask(po, e.thr);
            ye = _mm512_mask_sub_epi64(ye, ke, ye, ld(&b.corr_e));
            yo = _mm512_mask_sub_epi64(yo, ko, yo, ld(&b.corr_o));
        }
        let ve = _mm512_srav_epi64(ye, ld(&b.sh_e));
        let vo = _mm512_srav_epi64(yo, ld(&b.sh_o));
        let mut v = _mm512_permutex2var_epi32(ve, e.idx, vo);
        if e.post {
            v = _mm512_add_epi32(v, e.zp);
        }
        if e.clamp_lo {
            v = _mm512_max_epi32(v, e.lo);
        }
        v
    }
}

/// The 16 bytes of a [`requant16`] result: the upper clamp is the saturation of the
/// narrowing when it is 127 (signed) or 255 (unsigned, values already >= 0), an
/// explicit `min` otherwise. Either way each byte is the clamped value.
#[inline(always)]
pub(crate) unsafe fn to_bytes(v: __m512i, e: &Epi) -> __m128i {
    // SAFETY: the CPU has AVX-512 F/BW/VL/VNNI (this function is only inlined into the
    // `#[target_feature]` AVX-512 kernels, which run only under `Isa::Avx512`);
    // register arithmetic only.
    unsafe {
        match e.narrow {
            1 => _mm512_cvtsepi32_epi8(v),
            2 => _mm512_cvtusepi32_epi8(v),
            _ => _mm512_cvtepi32_epi8(_mm512_min_epi32(v, e.hi)),
        }
    }
}

/// Byte-store mask of the first `valid` (capped at 16) lanes.
#[inline(always)]
pub(crate) fn lane_mask(valid: usize) -> __mmask16 {
    if valid >= 16 {
        0xFFFF
    } else {
        ((1u32 << valid) - 1) as __mmask16
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn igemm_impl(g: &Gemm, rq: &Wide, nblk: usize) {
    // SAFETY: the CPU has AVX-512 F/BW/VL/VNNI (`igemm` calls this only under
    // `Isa::Avx512`), and `igemm` asserted the bounds of every raw pointer in `g`; the
    // tiles stay within them.
    unsafe {
        let e = Epi::new(rq);
        // Few rows (fully-connected layers): wide tiles, so enough independent
        // accumulator chains hide the `vpdpbusd` latency.
        let small = g.rows <= 3;
        let mut b0 = 0;
        while b0 < nblk {
            let left = nblk - b0;
            let nb = if small && left >= 8 {
                8
            } else if left >= 4 {
                4
            } else if left >= 2 {
                2
            } else {
                1
            };
            debug_assert_eq!(b0 % nb, 0, "a tile's blocks share a group of 8");
            match nb {
                8 => rows_of::<8, 3>(g, &e, b0),
                4 => rows_of::<4, 4>(g, &e, b0),
                2 => rows_of::<2, 8>(g, &e, b0),
                _ => rows_of::<1, 12>(g, &e, b0),
            }
            b0 += nb;
        }
    }
}

/// All rows for blocks `b0 .. b0 + NB`: tiles of `MR` rows, then one smaller tile for
/// the remainder (rows past the end recompute the last row and are not stored).
#[inline(always)]
unsafe fn rows_of<const NB: usize, const MR: usize>(g: &Gemm, e: &Epi, b0: usize) {
    // SAFETY: the CPU has AVX-512 F/BW/VL/VNNI (this function is only inlined into the
    // `#[target_feature]` AVX-512 kernels, which run only under `Isa::Avx512`); rows `0
    // .. g.rows` and blocks `b0 .. b0 + NB` are inside the operands `igemm` checked.
    unsafe {
        let mut r = 0;
        while r + MR <= g.rows {
            tile::<MR, NB>(g, e, r, MR, b0);
            r += MR;
        }
        let rem = g.rows - r;
        match rem {
            0 => {}
            1 => tile::<1, NB>(g, e, r, 1, b0),
            2 => tile::<2, NB>(g, e, r, 2, b0),
            _ if rem <= MR / 2 => tile_half::<MR, NB>(g, e, r, rem, b0),
            _ => tile::<MR, NB>(g, e, r, rem, b0),
        }
    }
}

/// A tile of `MR / 2` rows (for remainders), instantiated per `MR`.
#[inline(always)]
unsafe fn tile_half<const MR: usize, const NB: usize>(
    g: &Gemm,
    e: &Epi,
    r0: usize,
    valid: usize,
    b0: usize,
) {
    // SAFETY: the CPU has AVX-512 F/BW/VL/VNNI (this function is only inlined into the
    // `#[target_feature]` AVX-512 kernels, which run only under `Isa::Avx512`); the
    // tile it picks has the same bounds as this one.
    unsafe {
        match MR {
            16 => tile::<8, NB>(g, e, r0, valid, b0),
            12 => tile::<6, NB>(g, e, r0, valid, b0),
            8 => tile::<4, NB>(g, e, r0, valid, b0),
            6 => tile::<3, NB>(g, e, r0, valid, b0),
            4 => tile::<2, NB>(g, e, r0, valid, b0),
            _ => tile::<MR, NB>(g, e, r0, valid, b0),
        }
    }
}

/// `R` rows (`valid` of them stored) x `NB` blocks of 16 channels.
#[inline(always)]
unsafe fn tile<const R: usize, const NB: usize>(
    g: &Gemm,
    e: &Epi,
    r0: usize,
    valid: usize,
    b0: usize,
) {
    // SAFETY: the CPU has AVX-512 F/BW/VL/VNNI (this function is only inlined into the
    // `#[target_feature]` AVX-512 kernels, which run only under `Isa::Avx512`); rows
    // `r0 .. r0 + R` (those past `valid` recompute the last valid row, not stored) and
    // blocks `b0 .. b0 + NB` are inside the operands `igemm` checked.
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); NB]; R];
        for j in 0..NB {
            let b = _mm512_loadu_si512(g.bias.add((b0 + j) * NR) as *const _);
            for row in acc.iter_mut() {
                row[j] = b;
            }
        }
        // Blocks b0 .. b0 + NB lie in one group of 8 (NB divides 8 and b0 is a multiple
        // of NB): block b0 + j, quad k is at `wbase + k * qs + j * 64`.
        let (gi, j0) = (b0 / 8, b0 % 8);
        let qs = (g.nblk - gi * 8).min(8) * NR * 4;
        let wbase = g.w.add(gi * 8 * g.k4 * NR * 4 + j0 * NR * 4);
        let mut ap = [std::ptr::null::<u8>(); R];
        let mut k = 0;
        for t in 0..g.taps {
            for (i, p) in ap.iter_mut().enumerate() {
                let row = (r0 + i).min(g.rows - 1);
                *p = g.x.add(*g.offs.add(row * g.taps + t) as usize);
            }
            // Running pointers (constant displacements inside a step) keep the loop's
            // address arithmetic in registers.
            let mut wq = wbase.add(k * qs);
            for q in 0..g.kq {
                let mut wv = [_mm512_setzero_si512(); NB];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(wq.add(j * NR * 4) as *const _);
                }
                for i in 0..R {
                    let a = _mm512_set1_epi32((ap[i].add(4 * q) as *const i32).read_unaligned());
                    for j in 0..NB {
                        acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], a, wv[j]);
                    }
                }
                wq = wq.add(qs);
            }
            k += g.kq;
        }
        for (i, row) in acc.iter().enumerate().take(valid) {
            let yr = g.y.add((r0 + i) * g.ldy);
            for (j, &a) in row.iter().enumerate() {
                let blk = b0 + j;
                let v = requant16(a, &*g.rq.add(blk), e);
                _mm_mask_storeu_epi8(
                    yr.add(blk * NR) as *mut i8,
                    lane_mask(g.n - blk * NR),
                    to_bytes(v, e),
                );
            }
        }
    }
}

/// TFLite ADD / SUB / MUL of two 8-bit tensors of the same shape, 16 elements per
/// step, every fixed-point rescale in the one-step form of [`Wide`] (one "channel"
/// repeated over the 16 lanes, so [`requant16`] evaluates it):
/// - add/sub: `x1 = (a - za) << 20`, `raw = s1(x1) ± s2(x2)`, `y = so(raw)` where
///   `s1`, `s2` are `MultiplyByQuantizedMultiplierSmallerThanOneExp` (ties away, no
///   left shift, no clamp) and `so` the same plus zero point and clamp;
/// - mul: `y = so((a - za) · (b - zb))`, `so` with its left shift.
#[derive(Debug, Clone)]
pub struct BinaryWide {
    pub za: i32,
    pub zb: i32,
    /// `Some((s1, s2, sub))` for add/sub, `None` for mul.
    pub addsub: Option<(Wide, Wide, bool)>,
    pub so: Wide,
    pub left_shift: u32,
    /// Per add/sub input: `Some(s)` when its rescale is exactly `x >> s` on the
    /// shifted inputs (see [`exact_rescale`]), which skips the 64-bit arithmetic.
    pub exact: [Option<u32>; 2],
}

/// The input rescale of an 8-bit add, `RoundingDivideByPOT(srdhm(x, m), r)` on
/// `x = d << left_shift`, is the exact shift `x >> (1 + r)` when `m = 2^30` (a real
/// multiplier of exactly 1/2, which the input with the larger scale always has) and
/// `1 + r <= left_shift`: `srdhm(d·2^L, 2^30) = d·2^(L-1)` with no rounding, and
/// dividing that by `2^r <= 2^(L-1)` is exact too. `(m, shift)` as from
/// `quantize_multiplier_smaller_than_one_exp` (a positive shift is ignored, as there).
pub fn exact_rescale((m, shift): (i32, i32), left_shift: u32) -> Option<u32> {
    let r = (-shift).max(0) as u32;
    (m == 1 << 30 && r < left_shift).then_some(1 + r)
}

/// `y = op(a, b)` elementwise (see [`BinaryWide`]); `signed` says whether the bytes
/// are i8 (else u8).
pub fn binary(isa: Isa, op: &BinaryWide, signed: bool, a: &[u8], b: &[u8], y: &mut [u8]) {
    assert!(isa.is_avx512(), "needs AVX-512");
    assert!(a.len() == y.len() && b.len() == y.len(), "same shapes");
    for w in op
        .addsub
        .iter()
        .flat_map(|(s1, s2, _)| [s1, s2])
        .chain([&op.so])
    {
        assert!(!w.blocks.is_empty(), "one block of constants");
    }
    // SAFETY: `Isa::Avx512` exists only when the CPU has AVX-512 F/BW/VL/VNNI; loads
    // and stores are masked to the slices' common length.
    unsafe { binary_impl(op, signed, a, b, y) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn binary_impl(op: &BinaryWide, signed: bool, a: &[u8], b: &[u8], y: &mut [u8]) {
    // SAFETY: the CPU has AVX-512 F/BW/VL/VNNI (the caller checked `Isa::Avx512`);
    // every load and store is masked to the lanes below `y.len()`, and `a` and `b` are
    // at least as long as `y` (asserted by the caller).
    unsafe {
        let load = |p: &[u8], i: usize, k: __mmask16| {
            let v = _mm_maskz_loadu_epi8(k, p.as_ptr().add(i) as *const i8);
            if signed {
                _mm512_cvtepi8_epi32(v)
            } else {
                _mm512_cvtepu8_epi32(v)
            }
        };
        let (za, zb) = (_mm512_set1_epi32(op.za), _mm512_set1_epi32(op.zb));
        let eo = Epi::new(&op.so);
        let bo = &op.so.blocks[0];
        let n = y.len();
        let mut i = 0;
        match &op.addsub {
            Some((s1, s2, sub)) => {
                let (e1, e2) = (Epi::new(s1), Epi::new(s2));
                let (b1, b2) = (&s1.blocks[0], &s2.blocks[0]);
                let sh = _mm_cvtsi32_si128(op.left_shift as i32);
                while i < n {
                    let k = lane_mask(n - i);
                    let x1 = _mm512_sll_epi32(_mm512_sub_epi32(load(a, i, k), za), sh);
                    let x2 = _mm512_sll_epi32(_mm512_sub_epi32(load(b, i, k), zb), sh);
                    let r1 = match op.exact[0] {
                        Some(s) => _mm512_sra_epi32(x1, _mm_cvtsi32_si128(s as i32)),
                        None => requant16(x1, b1, &e1),
                    };
                    let r2 = match op.exact[1] {
                        Some(s) => _mm512_sra_epi32(x2, _mm_cvtsi32_si128(s as i32)),
                        None => requant16(x2, b2, &e2),
                    };
                    let raw = if *sub {
                        _mm512_sub_epi32(r1, r2)
                    } else {
                        _mm512_add_epi32(r1, r2)
                    };
                    let v = requant16(raw, bo, &eo);
                    _mm_mask_storeu_epi8(y.as_mut_ptr().add(i) as *mut i8, k, to_bytes(v, &eo));
                    i += 16;
                }
            }
            None => {
                while i < n {
                    let k = lane_mask(n - i);
                    let p = _mm512_mullo_epi32(
                        _mm512_sub_epi32(load(a, i, k), za),
                        _mm512_sub_epi32(load(b, i, k), zb),
                    );
                    let v = requant16(p, bo, &eo);
                    _mm_mask_storeu_epi8(y.as_mut_ptr().add(i) as *mut i8, k, to_bytes(v, &eo));
                    i += 16;
                }
            }
        }
    }
}

/// Depthwise convolution (channel multiplier 1) with the output stage fused.
///
/// The input is widened to i32 (`x - zp`) into a buffer padded in space (borders 0,
/// i.e. the zero point, so every tap is in bounds) and in channels (to whole 16-lane
/// blocks); weights are `[tap][16·nblk]` i32 with the high 16 bits 0, so one
/// `vpdpwssd` (i16 pairs, the input read straight from memory) accumulates a tap of
/// 16 channels exactly. A step keeps
/// [`DW_P`] output pixels of one block in registers (independent accumulator chains
/// hide the instruction latency) and loads each tap's weights once for all of them.
#[derive(Debug, Clone)]
pub struct DepthwiseWide {
    pub c: usize,
    nblk: usize,
    taps: usize,
    w: Vec<i32>,
    bias: Vec<i32>,
    pub rq: Wide,
}

/// Output pixels per depthwise step.
const DW_P: usize = 10;

impl DepthwiseWide {
    /// `wt` is `[taps, c]` (zero points subtracted, each fits in i16), `bias` has `c`
    /// entries; `None` when the stage has no one-step form.
    pub fn new(
        wt: &[i16],
        taps: usize,
        c: usize,
        bias: &[i32],
        stage: &OutputStage,
    ) -> Option<Self> {
        assert!(wt.len() == taps * c && bias.len() == c);
        let rq = Wide::new(stage)?;
        let nblk = c.div_ceil(NR);
        let mut w = vec![0i32; taps * nblk * NR];
        for t in 0..taps {
            for ch in 0..c {
                // The weight in the low 16 bits, 0 above: `vpdpwssd` multiplies the
                // high half of the input dword by 0.
                w[t * nblk * NR + ch] = wt[t * c + ch] as u16 as i32;
            }
        }
        let mut b = vec![0i32; nblk * NR];
        b[..c].copy_from_slice(bias);
        Some(DepthwiseWide {
            c,
            nblk,
            taps,
            w,
            bias: b,
            rq,
        })
    }

    /// Channels of the padded input buffer.
    pub(crate) fn cpad(&self) -> usize {
        self.nblk * NR
    }
}

/// Padded extent of a spatial axis so that every window is inside: the leading
/// padding, and the input or whatever the last window reaches beyond it.
/// Returns `(pad_begin, padded length)`.
pub fn padded_extent(a: &Axis) -> (usize, usize) {
    let last = if a.output == 0 {
        0
    } else {
        (a.output - 1) * a.stride + (a.kernel - 1) * a.dilation
    };
    (a.pad_begin, (a.pad_begin + a.input).max(last + 1))
}

/// The padded input layout of one geometry for a depthwise kernel ([`DepthwiseWide`],
/// [`super::avx2::Depthwise2`]): where each output pixel's window starts and where
/// each tap is relative to it, in elements of a buffer of `cpad` channels per pixel.
#[derive(Debug, Clone)]
pub struct DwGeom {
    hp: usize,
    pub(crate) wp: usize,
    pt: usize,
    pl: usize,
    pub(crate) cpad: usize,
    pub(crate) base: Vec<usize>,
    pub(crate) toff: Vec<usize>,
    /// Images, output rows and output columns (`base` is in that order).
    pub(crate) rows: (usize, usize, usize),
    len: usize,
}

impl DwGeom {
    pub fn new(g: &ConvGeom, cpad: usize) -> DwGeom {
        let ((pt, hp), (pl, wp)) = (padded_extent(&g.h), padded_extent(&g.w));
        let mut base = Vec::with_capacity(g.out_pixels());
        for n in 0..g.n {
            for oy in 0..g.h.output {
                for ox in 0..g.w.output {
                    base.push(((n * hp + oy * g.h.stride) * wp + ox * g.w.stride) * cpad);
                }
            }
        }
        let mut toff = Vec::with_capacity(g.h.kernel * g.w.kernel);
        for ky in 0..g.h.kernel {
            for kx in 0..g.w.kernel {
                toff.push((ky * g.h.dilation * wp + kx * g.w.dilation) * cpad);
            }
        }
        DwGeom {
            hp,
            wp,
            pt,
            pl,
            cpad,
            base,
            toff,
            rows: (g.n, g.h.output, g.w.output),
            len: g.n * hp * wp * cpad,
        }
    }

    /// Elements (i32) of the padded buffer.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes `x - zp` (NHWC, `g.c` channels) into the interior of `xp` (whose padding
    /// is already 0).
    pub fn fill<T: QInt>(&self, isa: Isa, g: &ConvGeom, x: &[T], zp: i32, xp: &mut [i32]) {
        assert!(isa.is_avx512(), "needs AVX-512");
        assert_eq!(xp.len(), self.len);
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn body<T: QInt>(d: &DwGeom, g: &ConvGeom, x: &[T], zp: i32, xp: &mut [i32]) {
            let (h, w, c) = (g.h.input, g.w.input, g.c);
            for n in 0..g.n {
                for iy in 0..h {
                    let src = &x[(n * h + iy) * w * c..][..w * c];
                    let row = ((n * d.hp + iy + d.pt) * d.wp + d.pl) * d.cpad;
                    let dst = &mut xp[row..][..w * d.cpad];
                    if c == d.cpad {
                        // Whole rows at once (vectorizes).
                        for (o, s) in dst.iter_mut().zip(src) {
                            *o = s.to_i32() - zp;
                        }
                        continue;
                    }
                    for (s, o) in src.chunks_exact(c).zip(dst.chunks_exact_mut(d.cpad)) {
                        for (o, s) in o.iter_mut().zip(s) {
                            *o = s.to_i32() - zp;
                        }
                    }
                }
            }
        }
        // SAFETY: AVX-512 proven by `isa`.
        unsafe { body(self, g, x, zp, xp) }
    }

    /// Writes `x - zp` (NHWC, `g.c` channels) as i16 into the interior of `xp` (whose
    /// padding is already 0), for the AVX2 depthwise kernel.
    pub fn fill_i16<T: QInt>(&self, isa: Isa, g: &ConvGeom, x: &[T], zp: i32, xp: &mut [i16]) {
        assert!(isa.is_avx2(), "needs AVX2");
        assert_eq!(xp.len(), self.len);
        let (h, w, c) = (g.h.input, g.w.input, g.c);
        for n in 0..g.n {
            for iy in 0..h {
                let src = &x[(n * h + iy) * w * c..][..w * c];
                let row = ((n * self.hp + iy + self.pt) * self.wp + self.pl) * self.cpad;
                let dst = &mut xp[row..][..w * self.cpad];
                if c == self.cpad {
                    super::conv::offset(isa, src, zp, dst);
                    continue;
                }
                for (s, o) in src.chunks_exact(c).zip(dst.chunks_exact_mut(self.cpad)) {
                    super::conv::offset(isa, s, zp, &mut o[..c]);
                }
            }
        }
    }
}

/// `xp` is the padded input of `geo` ([`DwGeom::fill`]); `y` the 8-bit output (NHWC,
/// `dw.c` channels) as bytes.
pub fn depthwise(isa: Isa, geo: &DwGeom, xp: &[i32], dw: &DepthwiseWide, y: &mut [u8]) {
    assert!(isa.is_avx512(), "needs AVX-512");
    assert_eq!(xp.len(), geo.len, "padded input size");
    assert_eq!(geo.cpad, dw.cpad(), "channel blocks");
    assert_eq!(geo.toff.len(), dw.taps, "taps");
    let pixels = geo.base.len();
    assert_eq!(y.len(), pixels * dw.c, "output size");
    if pixels == 0 {
        return;
    }
    let reach = geo.base.iter().max().copied().unwrap_or(0)
        + geo.toff.iter().max().copied().unwrap_or(0)
        + geo.cpad;
    assert!(reach <= xp.len(), "windows inside the padded input");
    // SAFETY: AVX-512 proven by `isa`; every load is a whole block of a window
    // inside the padded input (checked above), stores are masked to `c` channels.
    unsafe { depthwise_impl(geo, xp, dw, y) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn depthwise_impl(geo: &DwGeom, xp: &[i32], dw: &DepthwiseWide, y: &mut [u8]) {
    // SAFETY: the CPU has AVX-512 F/BW/VL/VNNI (`depthwise` calls this only under
    // `Isa::Avx512`); every load is a whole block of a window inside the padded input
    // (asserted by the caller), and stores are masked to the `c` channels of each
    // pixel.
    unsafe {
        let e = Epi::new(&dw.rq);
        let pixels = geo.base.len();
        let (c, cpad) = (dw.c, geo.cpad);
        for blk in 0..dw.nblk {
            let mask = lane_mask(c - blk * NR);
            let bias = _mm512_loadu_si512(dw.bias.as_ptr().add(blk * NR) as *const _);
            let rq = &dw.rq.blocks[blk];
            let x0 = xp.as_ptr().add(blk * NR);
            let mut p0 = 0;
            while p0 < pixels {
                let xs: [*const i32; DW_P] =
                    std::array::from_fn(|i| x0.add(geo.base[(p0 + i).min(pixels - 1)]));
                let mut acc = [bias; DW_P];
                for (t, &off) in geo.toff.iter().enumerate() {
                    let wv = _mm512_loadu_si512(dw.w.as_ptr().add(t * cpad + blk * NR) as *const _);
                    for i in 0..DW_P {
                        let xv = _mm512_loadu_si512(xs[i].add(off) as *const _);
                        acc[i] = _mm512_dpwssd_epi32(acc[i], wv, xv);
                    }
                }
                for (i, &a) in acc.iter().enumerate().take(pixels - p0) {
                    let v = requant16(a, rq, &e);
                    _mm_mask_storeu_epi8(
                        y.as_mut_ptr().add((p0 + i) * c + blk * NR) as *mut i8,
                        mask,
                        to_bytes(v, &e),
                    );
                }
                p0 += DW_P;
            }
        }
    }
}
