//! Integer-exact Winograd F(2x2, 3x3) convolution: NHWC CONV_2D with a 3x3 kernel,
//! stride 1, dilation 1, group 1, any padding, the same outputs as
//! `quantized::conv::tflite_conv` bit for bit, with 2.25x fewer multiplies than a
//! direct (im2col) GEMM: 16 products per 2x2 output tile and channel pair instead of 36.
//!
//! # Why it is exact
//!
//! Let `d = x - zp` (padding positions are `d = 0`, `|d| <= 255` for 8-bit
//! activations) and `g` the 3x3 weights of one (output, input) channel pair with the
//! weight zero point subtracted. The textbook F(2, 3) uses `G` with entries `1/2`;
//! scaling it by 2 keeps everything integer:
//!
//! ```text
//! Bᵀ = [1  0 -1  0]    G' = 2G = [2  0  0]    Aᵀ = [1  1  1  0]
//!      [0  1  1  0]              [1  1  1]         [0  1 -1 -1]
//!      [0 -1  1  0]              [1 -1  1]
//!      [0  1  0 -1]              [0  0  2]
//! ```
//!
//! In 1-D `Aᵀ[(G'g) ⊙ (Bᵀd)] = 2·(d ⋆ g)` (the 2 outputs of a 4-input tile); in 2-D
//! the scale applies on both axes, so for one 2x2 output tile
//! `Aᵀ [Σ_c U_c ⊙ V_c] A = 4·y` with `U_c = G' g_c G'ᵀ`, `V_c = Bᵀ d_c B` and `y` the
//! exact direct convolution sum (bias excluded). This is an identity of integer
//! polynomials, so it holds in any ring, in particular modulo 2^32 (wrapping i32).
//!
//! Bounds: a row of `Bᵀ` has two entries ±1, so `|V| <= 4·255 = 1020`; the rows of
//! `G'` have absolute sums 2, 3, 3, 2, so `|U| <= 9·max|g|`. Both are i16 (checked for
//! `U` when packing), and a `vpmaddwd` pair sum `2·1020·32767` cannot reach 2^31, so
//! the SIMD products are exact too. Every sum afterwards wraps in i32, which gives
//! `4y mod 2^32`. The true `|4y| <= 4·9c·255·max|g|`; when that is below 2^31 the
//! wrapped value *is* `4y` (what [`Winograd::new`] checks, returning `None`
//! otherwise), `4y` is a multiple of 4, and the arithmetic shift `>> 2` gives `y`
//! exactly. The reference accumulator is `bias.wrapping_add(y)` (its wrapping dot
//! product equals the true `y` under the same bound), so the bias is added after the
//! shift and the output stage ([`Requant`], the reference's formulas) sees the
//! reference's integers.
//!
//! # Layout
//!
//! - The input, minus its zero point, is copied once per run into an i16 buffer padded
//!   so that every 4x4 tile of the output grid (rounded up to even) is in bounds;
//!   channels are padded to a multiple of 16 (one AVX2 register of i16), padding 0.
//! - The image is processed in bands of tile rows so the
//!   transformed input `V[ξ][tile][channel]` and the products `M[ξ][tile][m]` stay in
//!   L1 ([`BAND_BYTES`]).
//! - Input transform: adds and subtracts only, 16 channels at a time.
//! - 16 GEMMs (one per position ξ of the 4x4 tile): `M_ξ = V_ξ · U_ξ`, with `U_ξ`
//!   packed once as `[ξ][block of 16 m][c/2][16][2]` (channel pairs adjacent, as in
//!   [`super::gemm::PackedW`]): a broadcast input-channel pair times one 32-byte load
//!   is a `vpmaddwd` for 8 output channels. The AVX2 micro-kernel computes 6 tiles x
//!   16 output channels (12 accumulators) per step; no bias (it comes after the
//!   output transform).
//! - Output transform `Aᵀ M A`, `bias + (· >> 2)`, then the output stage per pixel;
//!   partial tiles (odd output sizes) are computed whole and only their valid pixels
//!   stored.

use super::gemm::NR;
use super::requant::Requant;
use super::Isa;
use crate::kernels::quantized::common::{OutputStage, QInt};
use crate::kernels::quantized::conv::ConvGeom;

/// Positions of a 4x4 transformed tile (one GEMM each).
const XI: usize = 16;
/// Channels per vector of the input transform (one AVX2 register of i16); the padded
/// input and `V` have their channels padded to a multiple of it.
const CV: usize = 16;
/// Bytes of `V` and `M` per band (whole tile rows, at least one): about an L1 data
/// cache, measured best on Zen 2 for the ResNet-8 layers (larger bands were up to
/// 1.7x slower).
const BAND_BYTES: usize = 24 << 10;

/// `G' = 2G` of the module doc.
const G2: [[i32; 3]; 4] = [[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]];

/// A prepared Winograd F(2x2, 3x3) convolution: transformed, packed weights, bias,
/// output stage and scratch buffers (kept between runs).
pub struct Winograd {
    m: usize,
    c: usize,
    /// `c` rounded up to [`CV`]: channel stride of the padded input and of `V`.
    cq: usize,
    /// `m` rounded up to [`NR`]: channel stride of `M` (the GEMM's output).
    mp: usize,
    /// `U_ξ` for ξ = 0..16, `[ξ][m block][c2][NR][2]`.
    u: Vec<i16>,
    /// Input-channel pairs (`c` rounded up to even, halved).
    c2: usize,
    /// Blocks of [`NR`] output channels.
    nblk: usize,
    /// Bias padded to `mp`.
    bias: Vec<i32>,
    requant: Requant,
    /// The output stage in the 256-bit one-step form: with AVX2 it is fused into the
    /// output transform (no i32 round trip through memory).
    #[cfg(target_arch = "x86_64")]
    wide8: Option<super::avx2::Wide8>,
    /// Zero-point-subtracted, padded input `[n, hp, wp, cq]`.
    xp: Vec<i16>,
    /// Geometry `xp` was laid out for: (n, h, w, pad top, pad left, hp, wp).
    xp_key: Option<[usize; 7]>,
    /// `V[ξ][tile][cq]` of one band.
    v: Vec<i16>,
    /// `M[ξ][tile][mp]` of one band.
    mb: Vec<i32>,
    /// Accumulators of one output tile: `[4 pixels][mp]`.
    acc: Vec<i32>,
}

impl Winograd {
    /// `w`: weights `[m, 3, 3, c]` (OHWI, the NHWC conv layout), zero point subtracted,
    /// as i16. `bias`: m entries. `stage`: the layer's output stage. `None` when the
    /// exactness bound fails (or `m`, `c` is 0).
    pub fn new(
        isa: Isa,
        w: &[i16],
        m: usize,
        c: usize,
        bias: &[i32],
        stage: &OutputStage,
    ) -> Option<Winograd> {
        // The layout does not depend on the instruction set; `run` takes it again.
        let _ = isa;
        assert_eq!(w.len(), m * 9 * c, "weights are [m, 3, 3, c]");
        assert_eq!(bias.len(), m, "one bias per output channel");
        assert_eq!(stage.multiplier.len(), m, "one output stage per channel");
        if m == 0 || c == 0 {
            return None;
        }
        let max_g = w.iter().map(|&v| (v as i64).abs()).max().unwrap_or(0);
        // |4y| <= 4 · 9c · 255 · max|g| must stay below 2^31 (module doc).
        if 36 * c as i64 * 255 * max_g >= 1i64 << 31 {
            return None;
        }
        let (c2, nblk) = (c.div_ceil(2), m.div_ceil(NR));
        let xi_len = nblk * c2 * NR * 2;
        let mut u = vec![0i16; XI * xi_len];
        for (a, ga) in G2.iter().enumerate() {
            for (b, gb) in G2.iter().enumerate() {
                for o in 0..m {
                    for ci in 0..c {
                        let g = |k: usize, l: usize| w[((o * 3 + k) * 3 + l) * c + ci] as i32;
                        // U[a][b] = Σ_kl G'[a][k] g[k][l] G'[b][l] (no overflow: |g| < 2^15).
                        let s: i32 = (0..3)
                            .map(|k| (0..3).map(|l| ga[k] * g(k, l) * gb[l]).sum::<i32>())
                            .sum();
                        // |U| <= 9·max|g|: i16 unless the weights are far beyond 8 bits.
                        let at = (a * 4 + b) * xi_len
                            + (o / NR) * c2 * NR * 2
                            + (ci / 2) * NR * 2
                            + (o % NR) * 2
                            + ci % 2;
                        u[at] = i16::try_from(s).ok()?;
                    }
                }
            }
        }
        let mp = m.next_multiple_of(NR);
        let mut bp = vec![0i32; mp];
        bp[..m].copy_from_slice(bias);
        Some(Winograd {
            m,
            c,
            cq: c.next_multiple_of(CV),
            mp,
            u,
            c2,
            nblk,
            bias: bp,
            requant: Requant::new(stage),
            #[cfg(target_arch = "x86_64")]
            wide8: super::avx2::Wide8::new(stage),
            xp: Vec::new(),
            xp_key: None,
            v: Vec::new(),
            mb: Vec::new(),
            acc: vec![0; 4 * mp],
        })
    }

    /// Whether the geometry is one this kernel computes: 2-D 3x3, stride 1,
    /// dilation 1, group 1 (any padding, batch, channels).
    pub fn applies(g: &ConvGeom) -> bool {
        let ax = |a: &crate::kernels::quantized::conv::Axis| {
            a.kernel == 3 && a.stride == 1 && a.dilation == 1
        };
        g.group == 1 && ax(&g.h) && ax(&g.w)
    }

    /// `x`: NHWC input `[g.n, g.h.input, g.w.input, c]` with zero point `zp` (8-bit,
    /// `zp` within `T`'s range so that `|x - zp| <= 255`); `y`: NHWC output
    /// `[g.n, g.h.output, g.w.output, m]`.
    pub fn run<T: QInt>(&mut self, isa: Isa, g: &ConvGeom, x: &[T], zp: i32, y: &mut [T]) {
        assert!(
            Self::applies(g),
            "Winograd F(2x2, 3x3) needs 3x3 / stride 1"
        );
        assert!(
            std::mem::size_of::<T>() == 1 && (T::MIN..=T::MAX).contains(&zp),
            "8-bit activations with an in-range zero point (|x - zp| <= 255)"
        );
        assert!(
            g.c == self.c && g.m == self.m,
            "channels differ from preparation"
        );
        let (oh, ow) = (g.h.output, g.w.output);
        assert_eq!(x.len(), g.n * g.h.input * g.w.input * g.c, "input size");
        assert_eq!(y.len(), g.n * oh * ow * g.m, "output size");
        if y.is_empty() {
            return;
        }
        let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
        let (hp, wp) = (2 * th + 2, 2 * tw + 2);
        self.pad_input(isa, g, hp, wp, x, zp);
        let (cq, mp) = (self.cq, self.mp);
        let tile_bytes = XI * (cq * 2 + mp * 4);
        let band_rows = (BAND_BYTES / (tile_bytes * tw)).clamp(1, th);
        let band_tiles = band_rows * tw;
        self.v.resize(XI * band_tiles * cq, 0);
        self.mb.resize(XI * band_tiles * mp, 0);
        for n in 0..g.n {
            let img = &self.xp[n * hp * wp * cq..(n + 1) * hp * wp * cq];
            let yimg = &mut y[n * oh * ow * g.m..(n + 1) * oh * ow * g.m];
            for ty0 in (0..th).step_by(band_rows) {
                let rows = band_rows.min(th - ty0);
                let nt = rows * tw;
                input_transform(isa, img, wp, cq, ty0, rows, tw, band_tiles, &mut self.v);
                products(
                    isa,
                    &self.v,
                    cq,
                    band_tiles,
                    nt,
                    &self.u,
                    self.c2,
                    self.nblk,
                    &mut self.mb,
                    mp,
                );
                #[cfg(target_arch = "x86_64")]
                if let (Some(w8), true) = (&self.wide8, isa.is_avx2()) {
                    let out = avx2::Band {
                        ty0,
                        tiles: nt,
                        tw,
                        oh,
                        ow,
                        m: g.m,
                    };
                    avx2::output_fused(&self.mb, band_tiles, mp, &self.bias, w8, &out, yimg);
                    continue;
                }
                for t in 0..nt {
                    let (ty, tx) = (ty0 + t / tw, t % tw);
                    output_transform(
                        isa,
                        &self.mb[t * mp..],
                        band_tiles * mp,
                        mp,
                        &self.bias,
                        &mut self.acc,
                    );
                    for p in 0..4 {
                        let (oy, ox) = (2 * ty + p / 2, 2 * tx + p % 2);
                        if oy < oh && ox < ow {
                            let pix = oy * ow + ox;
                            self.requant.row(
                                isa,
                                &self.acc[p * mp..(p + 1) * mp],
                                &mut yimg[pix * g.m..(pix + 1) * g.m],
                            );
                        }
                    }
                }
            }
        }
    }

    /// Writes `x - zp` into the interior of the padded buffer. The borders (and the
    /// padding channels) are zeroed when the geometry changes and never written
    /// otherwise, so they stay 0.
    fn pad_input<T: QInt>(
        &mut self,
        isa: Isa,
        g: &ConvGeom,
        hp: usize,
        wp: usize,
        x: &[T],
        zp: i32,
    ) {
        let (h, w, c, cq) = (g.h.input, g.w.input, g.c, self.cq);
        let (pt, pl) = (g.h.pad_begin, g.w.pad_begin);
        let key = [g.n, h, w, pt, pl, hp, wp];
        if self.xp_key != Some(key) {
            self.xp.clear();
            self.xp.resize(g.n * hp * wp * cq, 0);
            self.xp_key = Some(key);
        }
        // Input columns that land in the buffer: px = ix + pl < wp.
        let ix_end = w.min(wp.saturating_sub(pl));
        if ix_end == 0 {
            return;
        }
        for n in 0..g.n {
            for iy in 0..h {
                let py = iy + pt;
                if py >= hp {
                    break;
                }
                let src = &x[((n * h + iy) * w) * c..][..ix_end * c];
                let dst = &mut self.xp[((n * hp + py) * wp + pl) * cq..][..ix_end * cq];
                offset_row(isa, src, c, zp, dst, cq);
            }
        }
    }
}

/// `M_ξ[tile] = V_ξ[tile] · U_ξ` for the first `nt` tiles of the band, all ξ.
#[allow(clippy::too_many_arguments)]
fn products(
    isa: Isa,
    v: &[i16],
    cq: usize,
    band: usize,
    nt: usize,
    u: &[i16],
    c2: usize,
    nblk: usize,
    mb: &mut [i32],
    mp: usize,
) {
    assert!(2 * c2 <= cq && nblk * NR == mp && nt <= band);
    assert!(v.len() >= XI * band * cq && mb.len() >= XI * band * mp);
    assert_eq!(u.len(), XI * nblk * c2 * NR * 2);
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2; bounds asserted
        // above.
        unsafe { avx2::products(v, cq, band, nt, u, c2, nblk, mb, mp) };
        return;
    }
    let _ = isa;
    let blk_len = c2 * NR * 2;
    for xi in 0..XI {
        for blk in 0..nblk {
            let wb = &u[(xi * nblk + blk) * blk_len..][..blk_len];
            for t in 0..nt {
                let a = &v[(xi * band + t) * cq..][..2 * c2];
                let mut acc = [0i32; NR];
                for (ap, wp) in a.chunks_exact(2).zip(wb.chunks_exact(NR * 2)) {
                    let (a0, a1) = (ap[0] as i32, ap[1] as i32);
                    for (s, wj) in acc.iter_mut().zip(wp.chunks_exact(2)) {
                        *s = s
                            .wrapping_add(a0 * wj[0] as i32)
                            .wrapping_add(a1 * wj[1] as i32);
                    }
                }
                mb[(xi * band + t) * mp + blk * NR..][..NR].copy_from_slice(&acc);
            }
        }
    }
}

/// `dst[pixel][ch] = src[pixel][ch] - zp` for `ch < c` (pixel strides `c` and `cq`).
fn offset_row<T: QInt>(isa: Isa, src: &[T], c: usize, zp: i32, dst: &mut [i16], cq: usize) {
    #[inline(always)]
    fn body<T: QInt>(src: &[T], c: usize, zp: i32, dst: &mut [i16], cq: usize) {
        for (s, d) in src.chunks_exact(c).zip(dst.chunks_exact_mut(cq)) {
            for (d, s) in d.iter_mut().zip(s) {
                *d = (s.to_i32() - zp) as i16;
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<T: QInt>(src: &[T], c: usize, zp: i32, dst: &mut [i16], cq: usize) {
        body(src, c, zp, dst, cq)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
        return unsafe { avx2(src, c, zp, dst, cq) };
    }
    let _ = isa;
    body(src, c, zp, dst, cq)
}

/// `V = Bᵀ d B` for the tiles of tile rows `ty0..ty0 + rows` (all `tw` columns) of one
/// padded image `img` (`[hp, wp, cq]`), into `v[ξ][tile][cq]` (`band` tiles per ξ).
#[allow(clippy::too_many_arguments)]
fn input_transform(
    isa: Isa,
    img: &[i16],
    wp: usize,
    cq: usize,
    ty0: usize,
    rows: usize,
    tw: usize,
    band: usize,
    v: &mut [i16],
) {
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body(
        img: &[i16],
        wp: usize,
        cq: usize,
        ty0: usize,
        rows: usize,
        tw: usize,
        band: usize,
        v: &mut [i16],
    ) {
        let row = wp * cq;
        for t in 0..rows * tw {
            let (ty, tx) = (ty0 + t / tw, t % tw);
            let base = 2 * ty * row + 2 * tx * cq;
            for c0 in (0..cq).step_by(CV) {
                let mut d = [[[0i16; CV]; 4]; 4];
                for (i, di) in d.iter_mut().enumerate() {
                    for (j, dij) in di.iter_mut().enumerate() {
                        let at = base + i * row + j * cq + c0;
                        dij.copy_from_slice(&img[at..at + CV]);
                    }
                }
                // Bᵀ d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3 (|.| <= 510).
                let mut r = [[[0i16; CV]; 4]; 4];
                for j in 0..4 {
                    for l in 0..CV {
                        let (d0, d1, d2, d3) = (d[0][j][l], d[1][j][l], d[2][j][l], d[3][j][l]);
                        r[0][j][l] = d0 - d2;
                        r[1][j][l] = d1 + d2;
                        r[2][j][l] = d2 - d1;
                        r[3][j][l] = d1 - d3;
                    }
                }
                // (Bᵀ d) B: the same combination of columns (|.| <= 1020).
                for (i, ri) in r.iter().enumerate() {
                    let mut out = [[0i16; CV]; 4];
                    for l in 0..CV {
                        let (a0, a1, a2, a3) = (ri[0][l], ri[1][l], ri[2][l], ri[3][l]);
                        out[0][l] = a0 - a2;
                        out[1][l] = a1 + a2;
                        out[2][l] = a2 - a1;
                        out[3][l] = a1 - a3;
                    }
                    for (j, o) in out.iter().enumerate() {
                        let at = ((i * 4 + j) * band + t) * cq + c0;
                        v[at..at + CV].copy_from_slice(o);
                    }
                }
            }
        }
    }
    // Every tile's 4x4 window lies in the rows 0..2·(ty0 + rows) + 2 of the image,
    // and every tile's V within `v` (what the AVX2 body relies on).
    assert!(cq.is_multiple_of(CV) && img.len() >= (2 * (ty0 + rows) + 2) * wp * cq);
    assert!(wp >= 2 * tw + 2 && v.len() >= (XI - 1) * band * cq + rows * tw * cq);
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2; bounds asserted above.
        return unsafe { avx2::input_transform(img, wp, cq, ty0, rows, tw, band, v) };
    }
    let _ = isa;
    body(img, wp, cq, ty0, rows, tw, band, v)
}

/// One tile's `Aᵀ M A`, then `bias + (· >> 2)`: `m[ξ * stride + ch]` for the 16 ξ,
/// into `acc[pixel][mp]` (pixels of the 2x2 tile in row-major order). Wrapping i32
/// throughout (module doc: the result is exact).
fn output_transform(isa: Isa, m: &[i32], stride: usize, mp: usize, bias: &[i32], acc: &mut [i32]) {
    /// Channels per step: two AVX2 registers of i32.
    const CH: usize = 16;
    #[inline(always)]
    fn body(m: &[i32], stride: usize, mp: usize, bias: &[i32], acc: &mut [i32]) {
        for c0 in (0..mp).step_by(CH) {
            let mut s = [[0i32; CH]; XI];
            for (xi, sx) in s.iter_mut().enumerate() {
                sx.copy_from_slice(&m[xi * stride + c0..][..CH]);
            }
            // Aᵀ M: rows M0 + M1 + M2 and M1 - M2 - M3, for each of the 4 columns.
            let mut r = [[[0i32; CH]; 4]; 2];
            for j in 0..4 {
                for l in 0..CH {
                    let (m0, m1, m2, m3) = (s[j][l], s[4 + j][l], s[8 + j][l], s[12 + j][l]);
                    r[0][j][l] = m0.wrapping_add(m1).wrapping_add(m2);
                    r[1][j][l] = m1.wrapping_sub(m2).wrapping_sub(m3);
                }
            }
            let b = &bias[c0..c0 + CH];
            for (i, ri) in r.iter().enumerate() {
                let (o0, rest) = acc[(2 * i) * mp..].split_at_mut(mp);
                let o0 = &mut o0[c0..c0 + CH];
                let o1 = &mut rest[c0..c0 + CH];
                for l in 0..CH {
                    let (a0, a1, a2, a3) = (ri[0][l], ri[1][l], ri[2][l], ri[3][l]);
                    let y0 = a0.wrapping_add(a1).wrapping_add(a2);
                    let y1 = a1.wrapping_sub(a2).wrapping_sub(a3);
                    // 4y is exact (module doc): the shift divides exactly.
                    o0[l] = b[l].wrapping_add(y0 >> 2);
                    o1[l] = b[l].wrapping_add(y1 >> 2);
                }
            }
        }
    }
    assert!(mp.is_multiple_of(CH) && bias.len() >= mp && acc.len() >= 4 * mp);
    assert!(m.len() >= (XI - 1) * stride + mp);
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2; bounds asserted above.
        return unsafe { avx2::output_transform(m, stride, mp, bias, acc) };
    }
    let _ = isa;
    body(m, stride, mp, bias, acc)
}

/// The transforms with AVX2 intrinsics: the same adds and subtracts as the portable
/// bodies, whole registers at a time (16 channels of i16 in, 8 channels of i32 out).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{CV, NR, XI};
    use crate::kernels::fast::avx2::{with_epi_kind, EpiKind, Stage, Wide8};
    use crate::kernels::quantized::common::QInt;
    use std::arch::x86_64::*;

    /// Tiles per micro-kernel step (12 accumulators, 2 weight registers, 1 broadcast).
    const MR: usize = 6;

    /// # Safety
    /// AVX2; the bounds asserted by [`super::products`].
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn products(
        v: &[i16],
        cq: usize,
        band: usize,
        nt: usize,
        u: &[i16],
        c2: usize,
        nblk: usize,
        mb: &mut [i32],
        mp: usize,
    ) {
        // SAFETY: the CPU has AVX2 and the operands satisfy the bounds
        // `super::products` asserts (this function's contract), so every tile's rows of
        // `v`, block of `u` and rows of `mb` are in bounds.
        unsafe {
            let blk_len = c2 * NR * 2;
            for xi in 0..XI {
                for blk in 0..nblk {
                    let wb = u.as_ptr().add((xi * nblk + blk) * blk_len);
                    let a = v.as_ptr().add(xi * band * cq);
                    let c = mb.as_mut_ptr().add(xi * band * mp + blk * NR);
                    let mut t = 0;
                    while t + MR <= nt {
                        tile::<MR>(a.add(t * cq), cq, c2, wb, c.add(t * mp), mp);
                        t += MR;
                    }
                    let (a, c) = (a.add(t * cq), c.add(t * mp));
                    match nt - t {
                        0 => {}
                        1 => tile::<1>(a, cq, c2, wb, c, mp),
                        2 => tile::<2>(a, cq, c2, wb, c, mp),
                        3 => tile::<3>(a, cq, c2, wb, c, mp),
                        4 => tile::<4>(a, cq, c2, wb, c, mp),
                        _ => tile::<5>(a, cq, c2, wb, c, mp),
                    }
                }
            }
        }
    }

    /// R tiles x 16 output channels: the i16 GEMM's micro-kernel with no bias.
    #[inline(always)]
    unsafe fn tile<const R: usize>(
        a: *const i16,
        lda: usize,
        c2: usize,
        wb: *const i16,
        c: *mut i32,
        ldc: usize,
    ) {
        // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
        // `#[target_feature(enable = "avx2")]` kernels, which run only under
        // `Isa::Avx2`); the pointer extents are those of `gemm::avx2::tile`'s contract,
        // which `products` passes on, with a 16-value zero bias.
        unsafe {
            static NO_BIAS: [i32; NR] = [0; NR];
            crate::kernels::fast::gemm::avx2::tile::<R>(a, lda, c2, wb, NO_BIAS.as_ptr(), c, ldc)
        }
    }

    /// # Safety
    /// AVX2; the bounds asserted by [`super::input_transform`].
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn input_transform(
        img: &[i16],
        wp: usize,
        cq: usize,
        ty0: usize,
        rows: usize,
        tw: usize,
        band: usize,
        v: &mut [i16],
    ) {
        // SAFETY: the CPU has AVX2 and the operands satisfy the bounds
        // `super::input_transform` asserts (this function's contract), so every 4x4
        // input tile read from `img` and every value written to `v` is in bounds.
        unsafe {
            let row = wp * cq;
            let vs = band * cq;
            for t in 0..rows * tw {
                let (ty, tx) = (ty0 + t / tw, t % tw);
                for c0 in (0..cq).step_by(CV) {
                    let p = img.as_ptr().add(2 * ty * row + 2 * tx * cq + c0);
                    let ld = |i: usize, j: usize| {
                        _mm256_loadu_si256(p.add(i * row + j * cq) as *const __m256i)
                    };
                    // Bᵀ d, one column j at a time (indexing keeps the formula readable).
                    let mut r = [[_mm256_setzero_si256(); 4]; 4];
                    #[allow(clippy::needless_range_loop)]
                    for j in 0..4 {
                        let (d0, d1, d2, d3) = (ld(0, j), ld(1, j), ld(2, j), ld(3, j));
                        r[0][j] = _mm256_sub_epi16(d0, d2);
                        r[1][j] = _mm256_add_epi16(d1, d2);
                        r[2][j] = _mm256_sub_epi16(d2, d1);
                        r[3][j] = _mm256_sub_epi16(d1, d3);
                    }
                    let q = v.as_mut_ptr().add(t * cq + c0);
                    for (i, [a0, a1, a2, a3]) in r.into_iter().enumerate() {
                        let st = |j: usize, x: __m256i| {
                            _mm256_storeu_si256(q.add((i * 4 + j) * vs) as *mut __m256i, x)
                        };
                        st(0, _mm256_sub_epi16(a0, a2));
                        st(1, _mm256_add_epi16(a1, a2));
                        st(2, _mm256_sub_epi16(a2, a1));
                        st(3, _mm256_sub_epi16(a1, a3));
                    }
                }
            }
        }
    }

    /// The output tiles of one band: tile rows `ty0..`, `tw` tiles per row, `tiles`
    /// of them, in an image of `oh x ow` pixels of `m` channels.
    pub struct Band {
        pub ty0: usize,
        pub tiles: usize,
        pub tw: usize,
        pub oh: usize,
        pub ow: usize,
        pub m: usize,
    }

    /// The output transform of a band's tiles ([`transform8`]) with the output stage
    /// fused, written into the image `y` (NHWC, 8-bit).
    pub fn output_fused<T: QInt>(
        mb: &[i32],
        band: usize,
        mp: usize,
        bias: &[i32],
        rq: &Wide8,
        out: &Band,
        y: &mut [T],
    ) {
        assert!(mp.is_multiple_of(NR) && bias.len() >= mp && rq.channels() == out.m);
        assert!(out.tiles <= band && mb.len() >= XI * band * mp);
        if out.tiles == 0 {
            return;
        }
        assert_eq!(y.len(), out.oh * out.ow * out.m, "output image");
        assert!((out.ty0 + (out.tiles - 1) / out.tw) * 2 < out.oh && out.tw * 2 >= out.ow);
        // SAFETY: the caller's isa is AVX2 (`Wide8` is only built and used under it);
        // tile `t` reads its 16 products at `t * mp + ξ * band * mp` (< mb.len()), and
        // writes only pixels inside the image (checked per pixel).
        unsafe {
            let signed = T::MIN < 0;
            let y = super::super::bytes_mut(y);
            with_epi_kind!(rq, signed, K => output_fused_impl::<K>(
                mb, band, mp, bias, rq, out, y, signed
            ))
        }
    }

    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn output_fused_impl<K: EpiKind>(
        mb: &[i32],
        band: usize,
        mp: usize,
        bias: &[i32],
        rq: &Wide8,
        out: &Band,
        y: &mut [u8],
        signed: bool,
    ) {
        // SAFETY: the CPU has AVX2 (the caller's isa, under which `Wide8` is built);
        // `mb` holds `band * mp` values per position, `bias` one per channel, and
        // outputs are written only at pixels of the band inside the image (null rows
        // skipped), `c` channels each.
        unsafe {
            let st = Stage::<K>::new(rq, signed);
            let stride = band * mp;
            for t in 0..out.tiles {
                let (ty, tx) = (out.ty0 + t / out.tw, t % out.tw);
                // Output rows of the tile's 4 pixels (null: outside the image).
                let ys: [*mut u8; 4] = std::array::from_fn(|p| {
                    let (oy, ox) = (2 * ty + p / 2, 2 * tx + p % 2);
                    if oy < out.oh && ox < out.ow {
                        y.as_mut_ptr().add((oy * out.ow + ox) * out.m)
                    } else {
                        std::ptr::null_mut()
                    }
                });
                let m = &mb[t * mp..];
                for c0 in (0..mp).step_by(NR) {
                    // Pixel p of the tile, channels c0.. (h = 0) and c0 + 8.. (h = 1).
                    let lo = transform8(m, stride, bias, c0);
                    let hi = transform8(m, stride, bias, c0 + 8);
                    for p in 0..4 {
                        if !ys[p].is_null() {
                            st.store16(c0 / NR, lo[p], hi[p], ys[p].add(c0), out.m - c0);
                        }
                    }
                }
            }
        }
    }

    /// `bias + (Aᵀ M A >> 2)` for channels `c0 .. c0 + 8` of one tile: the 4 pixels
    /// (row-major) of its 2x2 output.
    #[inline(always)]
    unsafe fn transform8(m: &[i32], stride: usize, bias: &[i32], c0: usize) -> [__m256i; 4] {
        // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
        // `#[target_feature(enable = "avx2")]` kernels, which run only under
        // `Isa::Avx2`); `m` holds 16 positions `stride` apart of at least `c0 + 8`
        // values and `bias` at least `c0 + 8` values (the caller walks `c0` in steps of
        // 8 below the padded channel count).
        unsafe {
            let p = m.as_ptr().add(c0);
            let ld = |xi: usize| _mm256_loadu_si256(p.add(xi * stride) as *const __m256i);
            let mut r = [[_mm256_setzero_si256(); 4]; 2];
            let [r0, r1] = &mut r;
            for (j, (r0, r1)) in r0.iter_mut().zip(r1.iter_mut()).enumerate() {
                let (m0, m1, m2, m3) = (ld(j), ld(4 + j), ld(8 + j), ld(12 + j));
                *r0 = _mm256_add_epi32(_mm256_add_epi32(m0, m1), m2);
                *r1 = _mm256_sub_epi32(_mm256_sub_epi32(m1, m2), m3);
            }
            let b = _mm256_loadu_si256(bias.as_ptr().add(c0) as *const __m256i);
            let mut y = [_mm256_setzero_si256(); 4];
            for (i, [a0, a1, a2, a3]) in r.into_iter().enumerate() {
                let y0 = _mm256_add_epi32(_mm256_add_epi32(a0, a1), a2);
                let y1 = _mm256_sub_epi32(_mm256_sub_epi32(a1, a2), a3);
                // 4y is exact (module doc): the shift divides exactly.
                y[2 * i] = _mm256_add_epi32(b, _mm256_srai_epi32::<2>(y0));
                y[2 * i + 1] = _mm256_add_epi32(b, _mm256_srai_epi32::<2>(y1));
            }
            y
        }
    }

    /// # Safety
    /// AVX2; the bounds asserted by [`super::output_transform`].
    #[target_feature(enable = "avx2")]
    pub unsafe fn output_transform(
        m: &[i32],
        stride: usize,
        mp: usize,
        bias: &[i32],
        acc: &mut [i32],
    ) {
        // SAFETY: the CPU has AVX2 and the operands satisfy the bounds
        // `super::output_transform` asserts (this function's contract): every 8-channel
        // load from `m` and store to `acc` is in bounds.
        unsafe {
            for c0 in (0..mp).step_by(8) {
                let p = m.as_ptr().add(c0);
                let ld = |xi: usize| _mm256_loadu_si256(p.add(xi * stride) as *const __m256i);
                let mut s = [_mm256_setzero_si256(); XI];
                for (xi, sx) in s.iter_mut().enumerate() {
                    *sx = ld(xi);
                }
                // Aᵀ M, column by column.
                let mut r = [[_mm256_setzero_si256(); 4]; 2];
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (s[j], s[4 + j], s[8 + j], s[12 + j]);
                    r[0][j] = _mm256_add_epi32(_mm256_add_epi32(m0, m1), m2);
                    r[1][j] = _mm256_sub_epi32(_mm256_sub_epi32(m1, m2), m3);
                }
                let b = _mm256_loadu_si256(bias.as_ptr().add(c0) as *const __m256i);
                let o = acc.as_mut_ptr().add(c0);
                for (i, [a0, a1, a2, a3]) in r.into_iter().enumerate() {
                    let y0 = _mm256_add_epi32(_mm256_add_epi32(a0, a1), a2);
                    let y1 = _mm256_sub_epi32(_mm256_sub_epi32(a1, a2), a3);
                    // 4y is exact (module doc): the shift divides exactly.
                    let y0 = _mm256_add_epi32(b, _mm256_srai_epi32::<2>(y0));
                    let y1 = _mm256_add_epi32(b, _mm256_srai_epi32::<2>(y1));
                    _mm256_storeu_si256(o.add(2 * i * mp) as *mut __m256i, y0);
                    _mm256_storeu_si256(o.add((2 * i + 1) * mp) as *mut __m256i, y1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Winograd == `tflite_conv`, bit for bit, on random single-node graphs (sizes
    //! down to 1x1 with padding, every padding mode, batch 1-2, i8/u8 activations and
    //! weights, per-tensor/per-channel scales, fused activations, biases up to the
    //! full i32 range), both arithmetics, every instruction set of this CPU. The
    //! numerics are passed to `tflite_conv` directly and carried by the node context.

    use super::*;
    use crate::kernels::fast::conv::ConvKernel;
    use crate::kernels::fast::Prepared;
    use crate::kernels::quantized::common::{activation_range, per_channel, per_tensor, Rounding};
    use crate::kernels::quantized::conv::{bias_i32, conv_geom, tflite_conv, weights_i16};
    use crate::kernels::quantized::Numerics;
    use crate::kernels::NodeCtx;
    use edgeopt_ir::{
        Activation, AutoPad, ConvAttrs, DType, Dim, Graph, Layout, Op, QuantParams, Tensor,
        TensorData,
    };
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    struct Layer {
        g: Graph,
        x: Tensor,
        attrs: ConvAttrs,
    }

    #[derive(Clone, Copy)]
    enum WKind {
        /// i8, the full range [-128, 127].
        I8Full,
        /// i8 symmetric [-127, 127].
        I8Sym,
        /// u8 with (per-channel) zero points: |w - zp| up to 255.
        U8,
        I4,
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        r: &mut StdRng,
        dt: DType,
        xshape: [usize; 4],
        m: usize,
        auto_pad: AutoPad,
        pads: Vec<usize>,
        wkind: WKind,
        activation: Activation,
        bias_range: Option<i64>,
    ) -> Layer {
        let c = xshape[3];
        let nw = m * 9 * c;
        let wdata = match wkind {
            WKind::I8Full => TensorData::I8((0..nw).map(|_| r.gen()).collect()),
            WKind::I8Sym => TensorData::I8((0..nw).map(|_| r.gen_range(-127..=127)).collect()),
            WKind::U8 => TensorData::U8((0..nw).map(|_| r.gen()).collect()),
            WKind::I4 => TensorData::I4((0..nw).map(|_| r.gen_range(-8..=7)).collect()),
        };
        let per_ch = r.gen_bool(0.6);
        let nq = if per_ch { m } else { 1 };
        let scales: Vec<f32> = (0..nq).map(|_| r.gen_range(0.002f32..0.05)).collect();
        let zps: Vec<i64> = (0..nq)
            .map(|_| match wkind {
                WKind::U8 => r.gen_range(0..=255),
                _ => 0,
            })
            .collect();
        let wq = if per_ch {
            QuantParams::per_axis(scales.clone(), zps, 0)
        } else {
            QuantParams::per_tensor(scales[0], zps[0])
        };
        let in_scale = r.gen_range(0.005f32..0.1);
        // Real multipliers in·w/out from 2^-14 to 2^1, as in `fast::tests`.
        let out_scale = in_scale * scales[0] / 2f32.powf(r.gen_range(-14.0f32..1.0));
        let zp = |r: &mut StdRng| -> i64 {
            match dt {
                DType::I8 => r.gen_range(-128..=127),
                _ => r.gen_range(0..=255),
            }
        };
        let nx: usize = xshape.iter().product();
        let xdata = match dt {
            DType::I8 => TensorData::I8((0..nx).map(|_| r.gen()).collect()),
            _ => TensorData::U8((0..nx).map(|_| r.gen()).collect()),
        };
        let x = Tensor::new(xshape.to_vec(), xdata).unwrap();
        let mut g = Graph::new("conv3x3");
        let xi = g.add_value(
            "x",
            dt,
            Some(xshape.iter().map(|&d| Dim::Fixed(d)).collect()),
        );
        g.values[xi].quant = Some(QuantParams::per_tensor(in_scale, zp(r)));
        let wi = g.add_const("w", Tensor::new(vec![m, 3, 3, c], wdata).unwrap());
        g.values[wi].quant = Some(wq);
        let bi = bias_range.map(|b| {
            let v = (0..m).map(|_| r.gen_range(-b..=b) as i32).collect();
            g.add_const("b", Tensor::new(vec![m], TensorData::I32(v)).unwrap())
        });
        let yi = g.add_value("y", dt, None);
        g.values[yi].quant = Some(QuantParams::per_tensor(out_scale, zp(r)));
        let attrs = ConvAttrs {
            layout: Layout::Nhwc,
            kernel_shape: vec![],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads,
            auto_pad,
            group: 1,
            activation,
            hybrid: None,
        };
        g.add_node(
            "conv",
            Op::Conv(attrs.clone()),
            vec![Some(xi), Some(wi), bi],
            vec![yi],
        );
        g.inputs = vec![xi];
        g.outputs = vec![yi];
        Layer { g, x, attrs }
    }

    fn random_layer(seed: u64) -> Layer {
        let r = &mut StdRng::seed_from_u64(seed);
        let dt = if r.gen_bool(0.6) {
            DType::I8
        } else {
            DType::U8
        };
        let (n, c, m) = (r.gen_range(1..=2), r.gen_range(1..70), r.gen_range(1..70));
        let (mut h, mut w) = (r.gen_range(1..=20), r.gen_range(1..=20));
        let auto_pad = [
            AutoPad::NotSet,
            AutoPad::SameUpper,
            AutoPad::SameLower,
            AutoPad::Valid,
        ][r.gen_range(0..4)];
        let mut pads = vec![];
        match auto_pad {
            AutoPad::NotSet => {
                pads = (0..4).map(|_| r.gen_range(0..=3)).collect();
                // The padded extent must hold the kernel.
                for a in 0..2 {
                    while [h, w][a] + pads[a] + pads[a + 2] < 3 {
                        pads[a + 2] += 1;
                    }
                }
            }
            AutoPad::Valid => {
                h = h.max(3);
                w = w.max(3);
            }
            _ => {}
        }
        let wkind = [WKind::I8Full, WKind::I8Sym, WKind::U8, WKind::I4][r.gen_range(0..4)];
        let act = [
            Activation::None,
            Activation::Relu,
            Activation::Relu6,
            Activation::ReluN1To1,
        ][r.gen_range(0..4)];
        let bias = [None, Some(20000), Some(i32::MAX as i64)][r.gen_range(0..3)];
        layer(r, dt, [n, h, w, c], m, auto_pad, pads, wkind, act, bias)
    }

    /// What the conv kernel's preparation would build: geometry, the Winograd kernel,
    /// the input zero point.
    fn prepare(l: &Layer, num: Numerics, isa: Isa) -> (ConvGeom, Option<Winograd>, i32) {
        let node = &l.g.nodes[0];
        let ctx = NodeCtx::new(&l.g, node, crate::ExecOptions::numerics(num));
        let cst = |i: usize| {
            node.inputs
                .get(i)
                .copied()
                .flatten()
                .map(|id| l.g.values[id].data.as_ref().unwrap())
        };
        let w = cst(1).unwrap();
        let g = conv_geom(&ctx, &l.attrs, &l.x.shape, &w.shape).unwrap();
        let xq = per_tensor(&ctx, ctx.in_quant(0), "input").unwrap();
        let yq = per_tensor(&ctx, ctx.out_quant(0), "output").unwrap();
        let (wscales, wzps) = per_channel(&ctx, ctx.in_quant(1), g.m, "weights").unwrap();
        let wo = weights_i16(&ctx, w, &wzps).unwrap();
        let bias = bias_i32(&ctx, cst(2), g.m).unwrap();
        let range = match l.x.dtype() {
            DType::I8 => activation_range::<i8>(l.attrs.activation, yq),
            _ => activation_range::<u8>(l.attrs.activation, yq),
        };
        let rounding = match num {
            Numerics::LiteRt => Rounding::TiesUp,
            _ => Rounding::TiesAway,
        };
        let stage = OutputStage::new(xq.scale, &wscales, yq, range).with_rounding(rounding);
        let k = Winograd::new(isa, &wo, g.m, g.c, &bias, &stage);
        (g, k, xq.zp)
    }

    fn run_layer<T: QInt>(l: &Layer, num: Numerics, isa: Isa, runs: usize) -> Vec<i32> {
        let (g, k, zp) = prepare(l, num, isa);
        assert!(Winograd::applies(&g));
        let mut k = k.expect("the exactness bound holds for these sizes");
        let x = T::slice(&l.x).unwrap();
        let mut y = vec![T::from_i32(0); g.out_pixels() * g.m];
        for _ in 0..runs {
            k.run(isa, &g, x, zp, &mut y);
        }
        y.iter().map(|v| v.to_i32()).collect()
    }

    fn reference(l: &Layer, num: Numerics) -> Vec<i32> {
        let node = &l.g.nodes[0];
        let ctx = NodeCtx::new(&l.g, node, crate::ExecOptions::numerics(num));
        let ins: Vec<Option<&Tensor>> = node
            .inputs
            .iter()
            .map(|i| i.map(|id| l.g.values[id].data.as_ref().unwrap_or(&l.x)))
            .collect();
        let y = match l.x.dtype() {
            DType::I8 => tflite_conv::<i8>(&ctx, &l.attrs, num, &ins),
            _ => tflite_conv::<u8>(&ctx, &l.attrs, num, &ins),
        };
        match &y.unwrap()[0].data {
            TensorData::I8(v) => v.iter().map(|&e| e as i32).collect(),
            TensorData::U8(v) => v.iter().map(|&e| e as i32).collect(),
            d => panic!("unexpected output {:?}", d.dtype()),
        }
    }

    fn check(l: &Layer, what: &str) {
        for num in [Numerics::LiteRt, Numerics::Reference] {
            let want = reference(l, num);
            for isa in Isa::available() {
                // Twice: the second run reuses the padded buffer's zero borders.
                let got = match l.x.dtype() {
                    DType::I8 => run_layer::<i8>(l, num, isa, 2),
                    _ => run_layer::<u8>(l, num, isa, 2),
                };
                assert!(
                    got == want,
                    "{what}: {num:?} {} x {:?} attrs {:?}",
                    isa.name(),
                    l.x.shape,
                    l.attrs
                );
            }
        }
    }

    #[test]
    fn winograd_matches_tflite_conv_random() {
        for seed in 0..400 {
            check(&random_layer(seed), &format!("seed {seed}"));
        }
    }

    /// The ResNet-8 shapes (several bands of tile rows), batch 2, SAME padding.
    #[test]
    fn winograd_matches_tflite_conv_resnet_shapes() {
        let r = &mut StdRng::seed_from_u64(7);
        for (hw, c) in [(32, 16), (16, 32), (8, 64), (15, 24)] {
            for dt in [DType::I8, DType::U8] {
                let l = layer(
                    r,
                    dt,
                    [2, hw, hw, c],
                    c,
                    AutoPad::SameUpper,
                    vec![],
                    WKind::I8Full,
                    Activation::Relu,
                    Some(20000),
                );
                check(&l, &format!("{hw}x{hw}x{c}"));
            }
        }
    }

    /// Reusing one kernel across input shapes (the padded buffer is re-laid out).
    #[test]
    fn winograd_changes_geometry() {
        let r = &mut StdRng::seed_from_u64(11);
        let isa = Isa::detect();
        let mk = |r: &mut StdRng, h, w| {
            let mut l = layer(
                r,
                DType::I8,
                [1, h, w, 5],
                7,
                AutoPad::SameUpper,
                vec![],
                WKind::I8Sym,
                Activation::None,
                None,
            );
            // Same weights and quantization for both shapes.
            l.g.values[1].data =
                Some(Tensor::new(vec![7, 3, 3, 5], TensorData::I8(vec![3; 315])).unwrap());
            l
        };
        let (a, b) = (mk(r, 9, 6), mk(r, 4, 11));
        let (_, k, _) = prepare(&a, Numerics::LiteRt, isa);
        let mut k = k.unwrap();
        for l in [&a, &b, &a] {
            let (g, _, zp) = prepare(l, Numerics::LiteRt, isa);
            let mut y = vec![0i8; g.out_pixels() * g.m];
            k.run(isa, &g, i8::slice(&l.x).unwrap(), zp, &mut y);
            let got: Vec<i32> = y.iter().map(|&v| v as i32).collect();
            // The stages differ between `a` and `b` (random scales): compare with the
            // reference only for the layer the kernel was prepared from.
            if std::ptr::eq(l, &a) {
                assert_eq!(got, reference(l, Numerics::LiteRt));
            }
        }
    }

    #[test]
    fn new_checks_the_exactness_bound() {
        let stage = |m: usize| {
            OutputStage::new(
                0.1,
                &vec![0.01; m],
                crate::kernels::quantized::common::Affine { scale: 0.1, zp: 0 },
                (-128, 127),
            )
        };
        let isa = Isa::PORTABLE;
        // |w - zp| = 255 (u8 weights): 36·c·255·255 < 2^31 up to c = 917.
        for (c, ok) in [(917, true), (918, false)] {
            let w = vec![255i16; 9 * c];
            assert_eq!(
                Winograd::new(isa, &w, 1, c, &[0], &stage(1)).is_some(),
                ok,
                "c = {c}"
            );
            let w = vec![-255i16; 9 * c];
            assert_eq!(
                Winograd::new(isa, &w, 1, c, &[0], &stage(1)).is_some(),
                ok,
                "c = {c}"
            );
        }
        // Transformed weights beyond i16 (|U| up to 9·4000).
        assert!(Winograd::new(isa, &[4000; 9], 1, 1, &[0], &stage(1)).is_none());
        assert!(Winograd::new(isa, &[3000; 9], 1, 1, &[0], &stage(1)).is_some());
        assert!(Winograd::new(isa, &[], 0, 1, &[], &stage(0)).is_none());
    }

    #[test]
    fn applies_only_to_3x3_stride_1() {
        let ax = |kernel, stride, dilation| crate::kernels::quantized::conv::Axis {
            input: 8,
            kernel,
            stride,
            dilation,
            pad_begin: 1,
            output: 8,
        };
        let geom = |h, w, group| ConvGeom {
            n: 1,
            c: 4,
            m: 4,
            group,
            h,
            w,
        };
        assert!(Winograd::applies(&geom(ax(3, 1, 1), ax(3, 1, 1), 1)));
        assert!(!Winograd::applies(&geom(ax(3, 1, 1), ax(3, 1, 1), 2)));
        assert!(!Winograd::applies(&geom(ax(3, 2, 1), ax(3, 1, 1), 1)));
        assert!(!Winograd::applies(&geom(ax(3, 1, 1), ax(3, 1, 2), 1)));
        assert!(!Winograd::applies(&geom(ax(1, 1, 1), ax(3, 1, 1), 1)));
        assert!(!Winograd::applies(&geom(ax(3, 1, 1), ax(5, 1, 1), 1)));
    }

    /// Microseconds per run (median) of the ResNet-8 3x3 layers: Winograd vs the
    /// existing fast conv kernel, on the best instruction set of this CPU.
    /// `cargo test -p edgeopt-runtime --release winograd_bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn winograd_bench() {
        let isa = Isa::detect();
        let r = &mut StdRng::seed_from_u64(1);
        let median = |f: &mut dyn FnMut()| {
            for _ in 0..50 {
                f();
            }
            let mut t: Vec<f64> = (0..1001)
                .map(|_| {
                    let s = std::time::Instant::now();
                    f();
                    s.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            t.sort_by(|a, b| a.partial_cmp(b).unwrap());
            t[t.len() / 2]
        };
        for (hw, c) in [(32, 16), (16, 32), (8, 64)] {
            let l = layer(
                r,
                DType::I8,
                [1, hw, hw, c],
                c,
                AutoPad::SameUpper,
                vec![],
                WKind::I8Sym,
                Activation::Relu,
                Some(20000),
            );
            let node = &l.g.nodes[0];
            let ctx = NodeCtx::new(&l.g, node, crate::ExecOptions::default());
            let ins: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|i| i.map(|id| l.g.values[id].data.as_ref().unwrap_or(&l.x)))
                .collect();
            let consts: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|i| i.and_then(|id| l.g.values[id].data.as_ref()))
                .collect();
            let mut ck =
                ConvKernel::<i8>::new(&ctx, &l.attrs, &consts, Numerics::LiteRt, isa).unwrap();
            let mut out = None;
            let t_gemm = median(&mut || ck.run(&ctx, &ins, &mut out).unwrap());
            let (g, k, zp) = prepare(&l, Numerics::LiteRt, isa);
            let mut k = k.unwrap();
            let x = i8::slice(&l.x).unwrap();
            let mut y = vec![0i8; g.out_pixels() * g.m];
            let t_wino = median(&mut || k.run(isa, &g, x, zp, &mut y));
            assert_eq!(out.unwrap().data, TensorData::I8(y), "same outputs");
            println!(
                "{hw}x{hw}x{c} -> {c} ({}): direct GEMM {t_gemm:.1} us, Winograd {t_wino:.1} us ({:.2}x)",
                isa.name(),
                t_gemm / t_wino
            );
        }
    }
}
