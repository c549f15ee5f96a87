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
use std::arch::x86_64::*;

/// Where the rows of an implicit GEMM's A matrix are: row `r` is the concatenation of
/// `taps` runs starting at byte offsets `offs[r * taps + t]` of the activation buffer.
#[derive(Debug, Clone)]
pub struct Indirection {
    pub rows: usize,
    pub taps: usize,
    offs: Vec<u32>,
    max_off: usize,
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
    assert!(ind.taps > 0 && w.k4 % ind.taps == 0, "taps must split K");
    let kq = w.k4 / ind.taps;
    assert!(ind.max_off + kq * 4 <= x.len(), "A out of bounds");
    assert!(rq.channels() == w.n && rq.blocks.len() == w.nblk);
    assert!(w.data.len() == w.nblk * w.k4 * NR * 4 && w.bias.len() == w.nblk * NR);
    assert!(ldy >= w.n && y.len() >= (rows - 1) * ldy + w.n, "y too short");
    let g = Gemm {
        x: x.as_ptr(),
        offs: ind.offs.as_ptr(),
        rows,
        taps: ind.taps,
        kq,
        w: w.data.as_ptr(),
        blk_len: w.k4 * NR * 4,
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
    w: *const i8,
    blk_len: usize,
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
    _mm512_load_si512(v as *const E as *const _)
}

/// The output stage of 16 channels (one [`Block16`]): [`Wide::apply`] lane by lane,
/// clamped to the activation range (so the low byte of each lane is the result).
#[inline(always)]
pub(crate) unsafe fn requant16(acc: __m512i, b: &Block16, e: &Epi) -> __m512i {
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
    _mm512_min_epi32(_mm512_max_epi32(v, e.lo), e.hi)
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
        match nb {
            8 => rows_of::<8, 3>(g, &e, b0),
            4 => rows_of::<4, 4>(g, &e, b0),
            2 => rows_of::<2, 8>(g, &e, b0),
            _ => rows_of::<1, 12>(g, &e, b0),
        }
        b0 += nb;
    }
}

/// All rows for blocks `b0 .. b0 + NB`: tiles of `MR` rows, then one smaller tile for
/// the remainder (rows past the end recompute the last row and are not stored).
#[inline(always)]
unsafe fn rows_of<const NB: usize, const MR: usize>(g: &Gemm, e: &Epi, b0: usize) {
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

/// A tile of `MR / 2` rows (for remainders), instantiated per `MR`.
#[inline(always)]
unsafe fn tile_half<const MR: usize, const NB: usize>(
    g: &Gemm,
    e: &Epi,
    r0: usize,
    valid: usize,
    b0: usize,
) {
    match MR {
        12 => tile::<6, NB>(g, e, r0, valid, b0),
        8 => tile::<4, NB>(g, e, r0, valid, b0),
        4 => tile::<2, NB>(g, e, r0, valid, b0),
        _ => tile::<MR, NB>(g, e, r0, valid, b0),
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
    let mut acc = [[_mm512_setzero_si512(); NB]; R];
    for j in 0..NB {
        let b = _mm512_loadu_si512(g.bias.add((b0 + j) * NR) as *const _);
        for row in acc.iter_mut() {
            row[j] = b;
        }
    }
    let wbase = g.w.add(b0 * g.blk_len);
    let mut ap = [std::ptr::null::<u8>(); R];
    let mut k = 0;
    for t in 0..g.taps {
        for (i, p) in ap.iter_mut().enumerate() {
            let row = (r0 + i).min(g.rows - 1);
            *p = g.x.add(*g.offs.add(row * g.taps + t) as usize);
        }
        let wt = wbase.add(k * 64);
        for q in 0..g.kq {
            let mut wv = [_mm512_setzero_si512(); NB];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(wt.add(j * g.blk_len + q * 64) as *const _);
            }
            for i in 0..R {
                let a = _mm512_set1_epi32((ap[i].add(4 * q) as *const i32).read_unaligned());
                for j in 0..NB {
                    acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], a, wv[j]);
                }
            }
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
                _mm512_cvtepi32_epi8(v),
            );
        }
    }
}
