//! i16 x i16 -> i32 matrix product with packed weights: `C[r, n] = bias[n] + Σ_k
//! A[r, k] * W[n, k]`, the core of convolution (after im2col) and fully-connected.
//!
//! Operands are zero-point-subtracted 8-bit (or 4-bit) values widened to i16, so every
//! product fits in 17 bits and `vpmaddwd` (which adds two adjacent products into i32)
//! never saturates; accumulation wraps in i32 exactly as the reference's
//! `wrapping_add` does, so the result is the reference's, bit for bit.
//!
//! Layout: W is packed once into blocks of [`NR`] = 16 output channels; inside a block,
//! for every pair of k, the 16 channels' two values are adjacent
//! (`[block][k/2][channel][2]`), so one 32-byte load gives 8 channels' pairs and a
//! broadcast of A's pair `(a[2p], a[2p+1])` multiplies all 8 at once. The micro-kernel
//! computes 4 rows x 16 channels (8 accumulators) per step. K is padded to even with
//! zeros, N to a multiple of 16.

use super::Isa;

/// Output channels per packed block.
pub const NR: usize = 16;
/// Rows per micro-kernel step.
pub const MR: usize = 4;

/// Weights `[n, k]` packed for [`gemm`], with the bias padded alongside.
#[derive(Debug, Clone)]
pub struct PackedW {
    pub n: usize,
    pub k: usize,
    /// k rounded up to a pair count.
    pub k2: usize,
    pub nblk: usize,
    data: Vec<i16>,
    bias: Vec<i32>,
}

impl PackedW {
    /// `w` is row-major `[n, k]` (zero points already subtracted), `bias` has `n` entries.
    pub fn new(w: &[i16], n: usize, k: usize, bias: &[i32]) -> PackedW {
        assert_eq!(w.len(), n * k, "weights are [n, k]");
        assert_eq!(bias.len(), n, "one bias per output channel");
        let k2 = k.div_ceil(2);
        let nblk = n.div_ceil(NR);
        let mut data = vec![0i16; nblk * k2 * NR * 2];
        for ch in 0..n {
            let (blk, j) = (ch / NR, ch % NR);
            for kk in 0..k {
                data[blk * k2 * NR * 2 + (kk / 2) * NR * 2 + j * 2 + kk % 2] = w[ch * k + kk];
            }
        }
        let mut b = vec![0i32; nblk * NR];
        b[..n].copy_from_slice(bias);
        PackedW {
            n,
            k,
            k2,
            nblk,
            data,
            bias: b,
        }
    }

    /// Columns of C the product writes (n rounded up to [`NR`]).
    pub fn n_pad(&self) -> usize {
        self.nblk * NR
    }

    /// Row stride A must have at least (k rounded up to even).
    pub fn k_pad(&self) -> usize {
        self.k2 * 2
    }
}

/// `C[r, 0..n_pad] = bias + A[r] · Wᵀ` for `rows` rows. `A` rows are `lda` apart
/// (`lda >= w.k_pad()`, the padding column of an odd k must be 0); `C` rows are `ldc`
/// apart (`ldc >= w.n_pad()`).
pub fn gemm(isa: Isa, a: &[i16], lda: usize, rows: usize, w: &PackedW, c: &mut [i32], ldc: usize) {
    if rows == 0 {
        return;
    }
    assert!(lda >= w.k_pad() && ldc >= w.n_pad());
    assert!(a.len() >= (rows - 1) * lda + w.k_pad(), "A too short");
    assert!(c.len() >= (rows - 1) * ldc + w.n_pad(), "C too short");
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2; bounds asserted above.
        unsafe { avx2::gemm(a, lda, rows, w, c, ldc) };
        return;
    }
    let _ = isa;
    gemm_portable(a, lda, rows, w, c, ldc);
}

fn gemm_portable(a: &[i16], lda: usize, rows: usize, w: &PackedW, c: &mut [i32], ldc: usize) {
    let blk_len = w.k2 * NR * 2;
    for blk in 0..w.nblk {
        let wb = &w.data[blk * blk_len..(blk + 1) * blk_len];
        for r in 0..rows {
            let ar = &a[r * lda..r * lda + w.k2 * 2];
            let mut acc = [0i32; NR];
            acc.copy_from_slice(&w.bias[blk * NR..(blk + 1) * NR]);
            for (ap, wp) in ar.chunks_exact(2).zip(wb.chunks_exact(NR * 2)) {
                let (a0, a1) = (ap[0] as i32, ap[1] as i32);
                for (s, wj) in acc.iter_mut().zip(wp.chunks_exact(2)) {
                    *s = s
                        .wrapping_add(a0 * wj[0] as i32)
                        .wrapping_add(a1 * wj[1] as i32);
                }
            }
            c[r * ldc + blk * NR..r * ldc + (blk + 1) * NR].copy_from_slice(&acc);
        }
    }
}

/// Weights `[n, k]` as i8 for the u8 x i8 GEMM ([`gemm_u8`], AVX-VNNI `vpdpbusd`):
/// blocks of 16 channels, `[block][k/4][channel][4]`.
///
/// The activations are fed as u8 `xu = x - zp + zu` (for i8 data `zu = zp + 128`, i.e.
/// `x ^ 0x80`), so `Σ (x - zp)·w = Σ xu·w - zu·Σ w`: the second term is folded into the
/// bias here. All of it is exact modulo 2^32, like the reference's wrapping sums.
#[derive(Debug, Clone)]
pub struct PackedW8 {
    pub n: usize,
    pub k: usize,
    /// k rounded up to a quad count.
    pub k4: usize,
    pub nblk: usize,
    /// The u8 value that stands for a zero activation (padding).
    pub zu: u8,
    pub(crate) data: Vec<i8>,
    pub(crate) bias: Vec<i32>,
    /// `data` is in the grouped layout of [`PackedW8::group8`].
    pub(crate) grouped: bool,
}

impl PackedW8 {
    /// `None` when a weight (zero point subtracted) does not fit in i8.
    pub fn new(w: &[i16], n: usize, k: usize, bias: &[i32], zu: u8) -> Option<PackedW8> {
        assert_eq!(w.len(), n * k, "weights are [n, k]");
        assert_eq!(bias.len(), n, "one bias per output channel");
        let k4 = k.div_ceil(4);
        let nblk = n.div_ceil(NR);
        let mut data = vec![0i8; nblk * k4 * NR * 4];
        let mut b = vec![0i32; nblk * NR];
        for ch in 0..n {
            let (blk, j) = (ch / NR, ch % NR);
            let mut sum = 0i32;
            for kk in 0..k {
                let v = i8::try_from(w[ch * k + kk]).ok()?;
                sum = sum.wrapping_add(v as i32);
                data[blk * k4 * NR * 4 + (kk / 4) * NR * 4 + j * 4 + kk % 4] = v;
            }
            b[ch] = bias[ch].wrapping_sub((zu as i32).wrapping_mul(sum));
        }
        Some(PackedW8 {
            n,
            k,
            k4,
            nblk,
            zu,
            data,
            bias: b,
            grouped: false,
        })
    }

    /// Re-lays the weights out for the AVX-512 GEMM: blocks in groups of 8 (the
    /// last group may be smaller), each group `[k/4][block][16][4]`, so a tile over
    /// several blocks reads one sequential stream (what the hardware prefetcher
    /// follows best when the weights come from L2, as in fully-connected layers).
    pub fn group8(mut self) -> PackedW8 {
        if self.grouped {
            return self;
        }
        let q = NR * 4;
        let mut data = vec![0i8; self.data.len()];
        for blk in 0..self.nblk {
            let (gi, j) = (blk / 8, blk % 8);
            let gsize = (self.nblk - gi * 8).min(8);
            for kq in 0..self.k4 {
                let src = (blk * self.k4 + kq) * q;
                let dst = gi * 8 * self.k4 * q + (kq * gsize + j) * q;
                data[dst..dst + q].copy_from_slice(&self.data[src..src + q]);
            }
        }
        self.data = data;
        self.grouped = true;
        self
    }

    pub fn n_pad(&self) -> usize {
        self.nblk * NR
    }

    /// Row stride A must have at least (k rounded up to a multiple of 4).
    pub fn k_pad(&self) -> usize {
        self.k4 * 4
    }
}

/// [`gemm`] on u8 activations and [`PackedW8`] weights; needs AVX-VNNI (`isa`
/// proves it). The padding columns of A may hold anything (their weights are 0).
pub fn gemm_u8(
    isa: Isa,
    a: &[u8],
    lda: usize,
    rows: usize,
    w: &PackedW8,
    c: &mut [i32],
    ldc: usize,
) {
    if rows == 0 {
        return;
    }
    assert!(isa.is_vnni(), "the u8 GEMM needs AVX-VNNI");
    assert!(!w.grouped, "block layout");
    assert!(lda >= w.k_pad() && ldc >= w.n_pad());
    assert!(a.len() >= (rows - 1) * lda + w.k_pad(), "A too short");
    assert!(c.len() >= (rows - 1) * ldc + w.n_pad(), "C too short");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `Isa::AvxVnni` exists only when the CPU has AVX2 and AVX-VNNI; bounds
    // asserted above.
    unsafe {
        vnni::gemm(a, lda, rows, w, c, ldc)
    };
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{PackedW8, MR, NR};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and AVX-VNNI; bounds as in [`super::gemm_u8`].
    #[target_feature(enable = "avx2,avxvnni")]
    pub unsafe fn gemm(a: &[u8], lda: usize, rows: usize, w: &PackedW8, c: &mut [i32], ldc: usize) {
        // SAFETY: the CPU has AVX2 and AVX-VNNI and the operands satisfy
        // `super::gemm_u8`'s bounds (this function's contract), so each block's weights
        // and bias and every tile's rows of `a` and `c` are in bounds.
        unsafe {
            let blk_len = w.k4 * NR * 4;
            for blk in 0..w.nblk {
                let wb = w.data.as_ptr().add(blk * blk_len);
                let bias = w.bias.as_ptr().add(blk * NR);
                let mut r = 0;
                while r + MR <= rows {
                    tile::<MR>(
                        a.as_ptr().add(r * lda),
                        lda,
                        w.k4,
                        wb,
                        bias,
                        c.as_mut_ptr().add(r * ldc + blk * NR),
                        ldc,
                    );
                    r += MR;
                }
                while r < rows {
                    tile::<1>(
                        a.as_ptr().add(r * lda),
                        lda,
                        w.k4,
                        wb,
                        bias,
                        c.as_mut_ptr().add(r * ldc + blk * NR),
                        ldc,
                    );
                    r += 1;
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn tile<const R: usize>(
        a: *const u8,
        lda: usize,
        k4: usize,
        wb: *const i8,
        bias: *const i32,
        c: *mut i32,
        ldc: usize,
    ) {
        // SAFETY: AVX2/AVX-VNNI (inlined into `gemm`, whose contract it is); `a` has
        // `R` rows of `4 * k4` bytes `lda` apart, `wb` `k4` quad rows of the block,
        // `bias` 16 values and `c` `R` rows of 16 `ldc` apart, as `gemm` passes them.
        unsafe {
            let b0 = _mm256_loadu_si256(bias as *const __m256i);
            let b1 = _mm256_loadu_si256(bias.add(8) as *const __m256i);
            let mut acc0 = [b0; R];
            let mut acc1 = [b1; R];
            for q in 0..k4 {
                let w0 = _mm256_loadu_si256(wb.add(q * NR * 4) as *const __m256i);
                let w1 = _mm256_loadu_si256(wb.add(q * NR * 4 + 32) as *const __m256i);
                for i in 0..R {
                    let quad = (a.add(i * lda + 4 * q) as *const i32).read_unaligned();
                    let av = _mm256_set1_epi32(quad);
                    acc0[i] = _mm256_dpbusd_avx_epi32(acc0[i], av, w0);
                    acc1[i] = _mm256_dpbusd_avx_epi32(acc1[i], av, w1);
                }
            }
            for i in 0..R {
                _mm256_storeu_si256(c.add(i * ldc) as *mut __m256i, acc0[i]);
                _mm256_storeu_si256(c.add(i * ldc + 8) as *mut __m256i, acc1[i]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{PackedW, MR, NR};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2; `a`, `c` must satisfy [`super::gemm`]'s bounds.
    #[target_feature(enable = "avx2")]
    pub unsafe fn gemm(a: &[i16], lda: usize, rows: usize, w: &PackedW, c: &mut [i32], ldc: usize) {
        // SAFETY: the CPU has AVX2 and `a`, `c` satisfy `super::gemm`'s bounds (this
        // function's contract), so each block's weights and bias and every tile's rows
        // are in bounds.
        unsafe {
            let blk_len = w.k2 * NR * 2;
            for blk in 0..w.nblk {
                let wb = w.data.as_ptr().add(blk * blk_len);
                let bias = w.bias.as_ptr().add(blk * NR);
                let mut r = 0;
                while r + MR <= rows {
                    tile::<MR>(
                        a.as_ptr().add(r * lda),
                        lda,
                        w.k2,
                        wb,
                        bias,
                        c.as_mut_ptr().add(r * ldc + blk * NR),
                        ldc,
                    );
                    r += MR;
                }
                while r < rows {
                    tile::<1>(
                        a.as_ptr().add(r * lda),
                        lda,
                        w.k2,
                        wb,
                        bias,
                        c.as_mut_ptr().add(r * ldc + blk * NR),
                        ldc,
                    );
                    r += 1;
                }
            }
        }
    }

    /// R rows x 16 channels, `c = bias + a · w` (pairs of `a` against the pair rows
    /// of one packed block `wb`). Accumulators stay in registers (R <= 5: 10 of
    /// them). Also the Winograd kernel's micro-kernel.
    ///
    /// # Safety
    /// AVX2 (inlined into `target_feature` callers); `a` has `R` rows of `2 * k2`
    /// values `lda` apart, `wb` `k2` pair rows, `bias` 16 values, `c` `R` rows of 16
    /// `ldc` apart.
    #[inline(always)]
    pub(crate) unsafe fn tile<const R: usize>(
        a: *const i16,
        lda: usize,
        k2: usize,
        wb: *const i16,
        bias: *const i32,
        c: *mut i32,
        ldc: usize,
    ) {
        // SAFETY: AVX2 and the pointer extents in this function's `# Safety` section
        // are its callers' contract, and the loads and stores below touch exactly
        // those.
        unsafe {
            let b0 = _mm256_loadu_si256(bias as *const __m256i);
            let b1 = _mm256_loadu_si256(bias.add(8) as *const __m256i);
            let mut acc0 = [b0; R];
            let mut acc1 = [b1; R];
            for p in 0..k2 {
                let w0 = _mm256_loadu_si256(wb.add(p * NR * 2) as *const __m256i);
                let w1 = _mm256_loadu_si256(wb.add(p * NR * 2 + 16) as *const __m256i);
                for i in 0..R {
                    let pair = (a.add(i * lda + 2 * p) as *const i32).read_unaligned();
                    let av = _mm256_set1_epi32(pair);
                    acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(av, w0));
                    acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(av, w1));
                }
            }
            for i in 0..R {
                _mm256_storeu_si256(c.add(i * ldc) as *mut __m256i, acc0[i]);
                _mm256_storeu_si256(c.add(i * ldc + 8) as *mut __m256i, acc1[i]);
            }
        }
    }
}
