//! Fast TFLite AVERAGE_POOL_2D / MAX_POOL_2D on 8-bit NHWC tensors: the reference
//! loops (`quantized::pool`), compiled for the instruction set and writing into the
//! reused output buffer, and on AVX2 a dedicated average pool ([`avg_pool_avx2`]).
//! Anything unusual (a window entirely in the padding, other layouts) goes to the
//! reference kernel, which reports it.

use super::{out_buffer, Isa, Prepared};
use crate::error::Result;
use crate::kernels::quantized::common::{activation_range, input, per_tensor, QInt};
use crate::kernels::quantized::conv::{window_axes, Axis};
use crate::kernels::quantized::pool::{pool_windows, tflite_pool};
use crate::kernels::NodeCtx;
use edgeopt_ir::{Layout, PoolAttrs, Tensor};
use std::marker::PhantomData;

pub struct PoolKernel<T> {
    attrs: PoolAttrs,
    is_max: bool,
    isa: Isa,
    min: i32,
    max: i32,
    geom: Option<(Vec<usize>, Axis, Axis)>,
    acc: Vec<i32>,
    _t: PhantomData<T>,
}

impl<T: QInt> PoolKernel<T> {
    pub fn new(ctx: &NodeCtx, a: &PoolAttrs, is_max: bool, isa: Isa) -> Option<Self> {
        if a.layout != Layout::Nhwc || a.dilations.iter().any(|&d| d != 1) {
            return None;
        }
        let qx = per_tensor(ctx, ctx.in_quant(0), "input").ok()?;
        let qy = per_tensor(ctx, ctx.out_quant(0), "output").ok()?;
        if qx != qy {
            return None;
        }
        let (min, max) = activation_range::<T>(a.activation, qy);
        Some(PoolKernel {
            attrs: a.clone(),
            is_max,
            isa,
            min,
            max,
            geom: None,
            acc: Vec::new(),
            _t: PhantomData,
        })
    }

    fn reference(
        &self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let mut r = tflite_pool::<T>(ctx, &self.attrs, self.is_max, inputs)?;
        *out = Some(r.remove(0));
        Ok(())
    }
}

impl<T: QInt> Prepared for PoolKernel<T> {
    fn run(
        &mut self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let x = input(ctx, inputs, 0)?;
        let Some(xv) = T::slice(x).filter(|_| x.shape.len() == 4) else {
            return self.reference(ctx, inputs, out);
        };
        let (ay, ax) = match &self.geom {
            Some((s, ay, ax)) if *s == x.shape => (*ay, *ax),
            _ => {
                let a = &self.attrs;
                let axes = window_axes(
                    ctx,
                    &x.shape[1..3],
                    &a.kernel_shape,
                    &a.strides,
                    &a.dilations,
                    &a.pads,
                    a.auto_pad,
                    a.ceil_mode,
                )?;
                // A window entirely in the padding is an error the reference reports.
                let empty = |ax: &Axis| {
                    (0..ax.output).any(|o| {
                        let s = (o * ax.stride) as isize - ax.pad_begin as isize;
                        s + ax.kernel as isize <= 0 || s >= ax.input as isize
                    })
                };
                if empty(&axes[0]) || empty(&axes[1]) {
                    return self.reference(ctx, inputs, out);
                }
                self.geom = Some((x.shape.clone(), axes[0], axes[1]));
                (axes[0], axes[1])
            }
        };
        let (n, c) = (x.shape[0], x.shape[3]);
        let shape = [n, ay.output, ax.output, c];
        let y = out_buffer::<T>(out, &shape, n * ay.output * ax.output * c);
        #[cfg(target_arch = "x86_64")]
        if !self.is_max && self.isa.is_avx2() && ay.kernel * ax.kernel <= avg_window_limit::<T>() {
            // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2; the geometry
            // comes from `x`'s shape and `y` was sized for it.
            unsafe { avg_pool_avx2((self.min, self.max), &x.shape, ay, ax, xv, y) };
            return Ok(());
        }
        self.acc.resize(c, 0);
        pool(
            self.isa,
            self.is_max,
            (self.min, self.max),
            &x.shape,
            ay,
            ax,
            xv,
            &mut self.acc,
            y,
        );
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn pool<T: QInt>(
    isa: Isa,
    is_max: bool,
    range: (i32, i32),
    xs: &[usize],
    ay: Axis,
    ax: Axis,
    xv: &[T],
    acc: &mut [i32],
    y: &mut [T],
) {
    // The reference loop itself; windows entirely in the padding were sent to the
    // reference kernel when the geometry was prepared, so the result is always true.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body<T: QInt>(
        is_max: bool,
        range: (i32, i32),
        xs: &[usize],
        ay: Axis,
        ax: Axis,
        xv: &[T],
        acc: &mut [i32],
        y: &mut [T],
    ) {
        pool_windows(is_max, range, xs, ay, ax, xv, acc, y);
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2<T: QInt>(
        is_max: bool,
        range: (i32, i32),
        xs: &[usize],
        ay: Axis,
        ax: Axis,
        xv: &[T],
        acc: &mut [i32],
        y: &mut [T],
    ) {
        body(is_max, range, xs, ay, ax, xv, acc, y)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
        return unsafe { avx2(is_max, range, xs, ay, ax, xv, acc, y) };
    }
    let _ = isa;
    body(is_max, range, xs, ay, ax, xv, acc, y)
}

/// Largest window [`avg_pool_avx2`] sums in i16 lanes without overflow: 256 values of
/// i8 (`256 * -128 = -32768`), 128 of u8 (`128 * 255 = 32640`).
#[cfg(target_arch = "x86_64")]
fn avg_window_limit<T: QInt>() -> usize {
    if T::MIN < 0 {
        256
    } else {
        128
    }
}

/// TFLite's average pool of an 8-bit NHWC tensor (the `quantized::pool` formula:
/// the sum of the in-bounds window, `rounding_div_away` by their count, clamped),
/// 16 channels per register: the window is summed in i16 lanes (exact up to
/// [`avg_window_limit`] values), and the rounding division is done in f64, which is
/// exact here: for `|a| < 2^31` and a count below `2^22` a quotient that is not an
/// integer is at least `1/count` from one, far more than the division's rounding
/// error (`2^-22`), so truncating it gives the integer division's result. The last
/// `c % 16` channels take the scalar formula.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avg_pool_avx2<T: QInt>(
    (min, max): (i32, i32),
    xs: &[usize],
    ay: Axis,
    ax: Axis,
    xv: &[T],
    y: &mut [T],
) {
    // SAFETY: the CPU has AVX2 (the caller checked `Isa::Avx2`); `xv` and `y` hold the
    // whole input and output (asserted above), window rows and columns are clamped to
    // the image, and the 16-channel loads and stores stop at `c / 16 * 16` channels of
    // each pixel.
    unsafe {
        use crate::kernels::quantized::fixedpoint::rounding_div_away;
        use std::arch::x86_64::*;
        debug_assert_eq!(std::mem::size_of::<T>(), 1, "8-bit values");
        let (n, h, w, c) = (xs[0], xs[1], xs[2], xs[3]);
        assert!(xv.len() >= n * h * w * c && y.len() >= n * ay.output * ax.output * c);
        let signed = T::MIN < 0;
        let (lo, hi) = (_mm256_set1_epi32(min), _mm256_set1_epi32(max));
        let full = c / 16 * 16;
        let mut out = y.as_mut_ptr();
        for b in 0..n {
            for oy in 0..ay.output {
                let y0 = (oy * ay.stride) as isize - ay.pad_begin as isize;
                let (row0, row1) = (
                    y0.max(0) as usize,
                    (y0 + ay.kernel as isize).clamp(0, h as isize) as usize,
                );
                for ox in 0..ax.output {
                    let x0 = (ox * ax.stride) as isize - ax.pad_begin as isize;
                    let (col0, col1) = (
                        x0.max(0) as usize,
                        (x0 + ax.kernel as isize).clamp(0, w as isize) as usize,
                    );
                    // Windows entirely in the padding went to the reference kernel.
                    let count = ((row1 - row0) * (col1 - col0)) as i32;
                    let div = _mm256_set1_pd(count as f64);
                    let half = _mm256_set1_epi32(count / 2);
                    let first = xv.as_ptr().add((b * h * w) * c);
                    let win = Window {
                        first,
                        w,
                        c,
                        rows: (row0, row1),
                        cols: (col0, col1),
                    };
                    let mut sums = [_mm256_setzero_si256(); 4];
                    for c0 in (0..full).step_by(16) {
                        // Four vectors' sums at a time (independent add chains).
                        let j = c0 / 16 % 4;
                        if j == 0 {
                            sums = match (full - c0) / 16 {
                                1 => pad4(win.sum::<1>(c0, signed)),
                                2 => pad4(win.sum::<2>(c0, signed)),
                                3 => pad4(win.sum::<3>(c0, signed)),
                                _ => win.sum::<4>(c0, signed),
                            };
                        }
                        let acc = sums[j];
                        let mut q = [_mm_setzero_si128(); 4];
                        for (i, part) in [
                            _mm256_castsi256_si128(acc),
                            _mm256_extracti128_si256::<1>(acc),
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            let a = _mm256_cvtepi16_epi32(part);
                            // `rounding_div_away`: add half the count away from zero.
                            let num = _mm256_add_epi32(a, _mm256_sign_epi32(half, a));
                            q[2 * i] = _mm256_cvttpd_epi32(_mm256_div_pd(
                                _mm256_cvtepi32_pd(_mm256_castsi256_si128(num)),
                                div,
                            ));
                            q[2 * i + 1] = _mm256_cvttpd_epi32(_mm256_div_pd(
                                _mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(num)),
                                div,
                            ));
                        }
                        let v0 = _mm256_setr_m128i(q[0], q[1]);
                        let v1 = _mm256_setr_m128i(q[2], q[3]);
                        let v0 = _mm256_min_epi32(_mm256_max_epi32(v0, lo), hi);
                        let v1 = _mm256_min_epi32(_mm256_max_epi32(v1, lo), hi);
                        // In range already, so the packs only narrow; the permute undoes
                        // the lane interleave of the 32 -> 16 pack.
                        let w16 =
                            _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(v0, v1));
                        let (l, u) = (
                            _mm256_castsi256_si128(w16),
                            _mm256_extracti128_si256::<1>(w16),
                        );
                        let bytes = if signed {
                            _mm_packs_epi16(l, u)
                        } else {
                            _mm_packus_epi16(l, u)
                        };
                        _mm_storeu_si128(out.add(c0) as *mut __m128i, bytes);
                    }
                    for ch in full..c {
                        let mut a = 0i32;
                        for iy in row0..row1 {
                            for ix in col0..col1 {
                                a += xv[((b * h + iy) * w + ix) * c + ch].to_i32();
                            }
                        }
                        *out.add(ch) = T::from_i32(rounding_div_away(a, count).clamp(min, max));
                    }
                    out = out.add(c);
                }
            }
        }
    }
}

/// One pooling window of an NHWC image starting at `first`.
#[cfg(target_arch = "x86_64")]
struct Window<T> {
    first: *const T,
    w: usize,
    c: usize,
    rows: (usize, usize),
    cols: (usize, usize),
}

#[cfg(target_arch = "x86_64")]
impl<T: QInt> Window<T> {
    /// The window's sums of channels `c0 .. c0 + 16 * N` (8-bit values widened to
    /// i16), `N` independent accumulators.
    #[inline(always)]
    unsafe fn sum<const N: usize>(
        &self,
        c0: usize,
        signed: bool,
    ) -> [std::arch::x86_64::__m256i; N] {
        // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
        // `#[target_feature(enable = "avx2")]` kernels, which run only under
        // `Isa::Avx2`); the window's rows and columns are clamped to the image and `c0
        // + 16 * N <= c`, so every 16-byte load from `first` is inside the input.
        unsafe {
            use std::arch::x86_64::*;
            let mut acc = [_mm256_setzero_si256(); N];
            for iy in self.rows.0..self.rows.1 {
                for ix in self.cols.0..self.cols.1 {
                    let p = self.first.add((iy * self.w + ix) * self.c + c0);
                    for (j, a) in acc.iter_mut().enumerate() {
                        let v = _mm_loadu_si128(p.add(16 * j) as *const __m128i);
                        let v = if signed {
                            _mm256_cvtepi8_epi16(v)
                        } else {
                            _mm256_cvtepu8_epi16(v)
                        };
                        *a = _mm256_add_epi16(*a, v);
                    }
                }
            }
            acc
        }
    }
}

/// `v` in the first `N` of four slots.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn pad4<const N: usize>(v: [std::arch::x86_64::__m256i; N]) -> [std::arch::x86_64::__m256i; 4] {
    // SAFETY: an all-zero bit pattern is a valid __m256i.
    let mut out = [unsafe { std::mem::zeroed() }; 4];
    out[..N].copy_from_slice(&v);
    out
}
