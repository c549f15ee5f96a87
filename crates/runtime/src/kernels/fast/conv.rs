//! Fast TFLite CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED on 8-bit activations.
//!
//! Same inputs, checks and output stage as `quantized::conv::tflite_conv` and
//! `quantized::fc::tflite_fc`; the accumulation is an im2col + packed GEMM
//! ([`super::gemm`]) for ordinary convolutions and fully-connected layers, and a
//! channel-vectorized direct loop for depthwise ones. Preparation returns `None`
//! whenever something is off (non-constant weights, grouped non-depthwise conv,
//! invalid parameters): the node then goes to the reference kernel, which reports the
//! error, so the fast path never changes what is accepted.

use super::gemm::{gemm, PackedW};
use super::requant::Requant;
use super::{out_buffer, weight_dtype_ok, Isa, Prepared};
use crate::error::Result;
use crate::kernels::quantized::common::{
    activation_range, per_channel, per_tensor, Affine, OutputStage, QInt, Rounding,
};
use crate::kernels::quantized::conv::{bias_i32, conv_geom, weights_i16, ConvGeom};
use crate::kernels::quantized::Numerics;
use crate::kernels::NodeCtx;
use edgeopt_ir::{Activation, ConvAttrs, Layout, Tensor};
use std::marker::PhantomData;

/// Constant weights and bias of a node (inputs 1 and 2), `None` if not constant.
fn const_weights<'t>(
    ctx: &NodeCtx,
    consts: &[Option<&'t Tensor>],
) -> Option<(&'t Tensor, Option<&'t Tensor>)> {
    let w = consts.get(1).copied().flatten()?;
    if !weight_dtype_ok(w) {
        return None;
    }
    let b = match ctx.node.input(2) {
        Some(_) => Some(consts.get(2).copied().flatten()?),
        None => None,
    };
    Some((w, b))
}

enum ConvImpl {
    Gemm(PackedW),
    /// Weights `[kh*kw, M]` (a tap's channels contiguous) and bias.
    Depthwise { wt: Vec<i16>, bias: Vec<i32> },
}

pub struct ConvKernel<T> {
    attrs: ConvAttrs,
    w_shape: Vec<usize>,
    isa: Isa,
    xq: Affine,
    imp: ConvImpl,
    requant: Requant,
    /// Geometry of the last input shape.
    geom: Option<(Vec<usize>, ConvGeom)>,
    a: Vec<i16>,
    acc: Vec<i32>,
    _t: PhantomData<T>,
}

impl<T: QInt> ConvKernel<T> {
    pub fn new(
        ctx: &NodeCtx,
        a: &ConvAttrs,
        consts: &[Option<&Tensor>],
        num: Numerics,
        isa: Isa,
    ) -> Option<Self> {
        if a.layout != Layout::Nhwc || std::mem::size_of::<T>() != 1 {
            return None;
        }
        let (w, b) = const_weights(ctx, consts)?;
        let rank = w.shape.len();
        if !(rank == 3 || rank == 4) {
            return None;
        }
        let m = w.shape[0];
        let cg = w.shape[rank - 1];
        if m == 0 || cg == 0 {
            return None;
        }
        let group = a.group.max(1);
        let depthwise = cg == 1 && group > 1;
        if group > 1 && !depthwise {
            return None;
        }
        let xq = per_tensor(ctx, ctx.in_quant(0), "input").ok()?;
        let yq = per_tensor(ctx, ctx.out_quant(0), "output").ok()?;
        let (wscales, wzps) = per_channel(ctx, ctx.in_quant(1), m, "weights").ok()?;
        let wo = weights_i16(ctx, w, &wzps).ok()?;
        let bias = bias_i32(ctx, b, m).ok()?;
        let rounding = if num == Numerics::LiteRt && !depthwise {
            Rounding::TiesUp
        } else {
            Rounding::TiesAway
        };
        let stage = OutputStage::new(
            xq.scale,
            &wscales,
            yq,
            activation_range::<T>(a.activation, yq),
        )
        .with_rounding(rounding);
        let k = wo.len() / m.max(1);
        let imp = if depthwise {
            let taps = k; // [M, kh, kw, 1]
            let mut wt = vec![0i16; taps * m];
            for oc in 0..m {
                for t in 0..taps {
                    wt[t * m + oc] = wo[oc * taps + t];
                }
            }
            ConvImpl::Depthwise { wt, bias }
        } else {
            ConvImpl::Gemm(PackedW::new(&wo, m, k, &bias))
        };
        Some(ConvKernel {
            attrs: a.clone(),
            w_shape: w.shape.clone(),
            isa,
            xq,
            imp,
            requant: Requant::new(&stage),
            geom: None,
            a: Vec::new(),
            acc: Vec::new(),
            _t: PhantomData,
        })
    }
}

impl<T: QInt> Prepared for ConvKernel<T> {
    fn run(
        &mut self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let x = crate::kernels::quantized::common::input(ctx, inputs, 0)?;
        let xs = T::slice(x)
            .ok_or_else(|| ctx.error(format!("input must be {}, got {}", T::DTYPE, x.dtype())))?;
        let g = match &self.geom {
            Some((s, g)) if *s == x.shape => *g,
            _ => {
                let g = conv_geom(ctx, &self.attrs, &x.shape, &self.w_shape)?;
                if g.m != self.requant.channels() {
                    return Err(ctx.error("weights changed since preparation"));
                }
                self.geom = Some((x.shape.clone(), g));
                g
            }
        };
        let m = g.m;
        let shape: Vec<usize> = if x.shape.len() == 4 {
            vec![g.n, g.h.output, g.w.output, m]
        } else {
            vec![g.n, g.w.output, m]
        };
        let pixels = g.out_pixels();
        let y = out_buffer::<T>(out, &shape, pixels * m);
        let isa = self.isa;
        match &self.imp {
            ConvImpl::Gemm(pw) => {
                let lda = pw.k_pad();
                let direct = g.h.kernel == 1
                    && g.w.kernel == 1
                    && g.h.stride == 1
                    && g.w.stride == 1
                    && g.h.pad_begin == 0
                    && g.w.pad_begin == 0
                    && g.h.output == g.h.input
                    && g.w.output == g.w.input;
                self.a.resize(pixels * lda, 0);
                if direct && lda == g.c {
                    offset(isa, xs, self.xq.zp, &mut self.a);
                } else {
                    im2col(isa, &g, xs, self.xq.zp, &mut self.a, lda);
                }
                let ldc = pw.n_pad();
                self.acc.resize(pixels * ldc, 0);
                gemm(isa, &self.a, lda, pixels, pw, &mut self.acc, ldc);
                for (row, yr) in self.acc.chunks_exact(ldc).zip(y.chunks_exact_mut(m)) {
                    self.requant.row(isa, row, yr);
                }
            }
            ConvImpl::Depthwise { wt, bias } => {
                self.a.resize(xs.len(), 0);
                offset(isa, xs, self.xq.zp, &mut self.a);
                self.acc.resize(2 * m, 0);
                depthwise(isa, &g, &self.a, wt, bias, &self.requant, &mut self.acc, y);
            }
        }
        Ok(())
    }
}

/// `dst[i] = src[i] - zp` as i16.
pub fn offset<T: QInt>(isa: Isa, src: &[T], zp: i32, dst: &mut [i16]) {
    #[inline(always)]
    fn body<T: QInt>(src: &[T], zp: i32, dst: &mut [i16]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = (s.to_i32() - zp) as i16;
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<T: QInt>(src: &[T], zp: i32, dst: &mut [i16]) {
        body(src, zp, dst)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
        return unsafe { avx2(src, zp, dst) };
    }
    let _ = isa;
    body(src, zp, dst)
}

/// Patches of every output pixel, `(ky, kx, c)` order, zero point subtracted, padding
/// positions 0, each row `lda` long (trailing columns 0). Group count must be 1.
pub fn im2col<T: QInt>(isa: Isa, g: &ConvGeom, x: &[T], zp: i32, a: &mut [i16], lda: usize) {
    #[inline(always)]
    fn body<T: QInt>(g: &ConvGeom, x: &[T], zp: i32, a: &mut [i16], lda: usize) {
        let (ih, iw, c) = (g.h.input as isize, g.w.input as isize, g.c);
        let (oh, ow) = (g.h.output, g.w.output);
        let k_len = g.h.kernel * g.w.kernel * c;
        let mut rows = a.chunks_exact_mut(lda);
        for n in 0..g.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let row = rows.next().expect("a holds one row per pixel");
                    let mut k = 0;
                    for ky in 0..g.h.kernel {
                        let iy =
                            (oy * g.h.stride + ky * g.h.dilation) as isize - g.h.pad_begin as isize;
                        for kx in 0..g.w.kernel {
                            let ix = (ox * g.w.stride + kx * g.w.dilation) as isize
                                - g.w.pad_begin as isize;
                            let dst = &mut row[k..k + c];
                            if iy >= 0 && iy < ih && ix >= 0 && ix < iw {
                                let base =
                                    ((n * g.h.input + iy as usize) * g.w.input + ix as usize) * c;
                                for (d, s) in dst.iter_mut().zip(&x[base..base + c]) {
                                    *d = (s.to_i32() - zp) as i16;
                                }
                            } else {
                                dst.fill(0);
                            }
                            k += c;
                        }
                    }
                    row[k_len..].fill(0);
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<T: QInt>(g: &ConvGeom, x: &[T], zp: i32, a: &mut [i16], lda: usize) {
        body(g, x, zp, a, lda)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
        return unsafe { avx2(g, x, zp, a, lda) };
    }
    let _ = isa;
    body(g, x, zp, a, lda)
}

/// Depthwise convolution with fused requantization, one output pixel at a time.
/// `x` is the zero-point-subtracted input, `wt` the weights `[kh*kw, M]`, `acc` a
/// scratch of at least `2*M` i32.
#[allow(clippy::too_many_arguments)]
pub fn depthwise<T: QInt>(
    isa: Isa,
    g: &ConvGeom,
    x: &[i16],
    wt: &[i16],
    bias: &[i32],
    rq: &Requant,
    acc: &mut [i32],
    y: &mut [T],
) {
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body<T: QInt>(
        isa: Isa,
        g: &ConvGeom,
        x: &[i16],
        wt: &[i16],
        bias: &[i32],
        rq: &Requant,
        acc: &mut [i32],
        y: &mut [T],
    ) {
        let (kh, kw, m, c) = (g.h.kernel, g.w.kernel, g.m, g.c);
        let mult = g.mg();
        let (ih, iw) = (g.h.input as isize, g.w.input as isize);
        let (oh, ow) = (g.h.output, g.w.output);
        let (out, xrow) = acc.split_at_mut(m);
        let xrow = &mut xrow[..m];
        let mut yrows = y.chunks_exact_mut(m);
        for n in 0..g.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    out.copy_from_slice(bias);
                    for ky in 0..kh {
                        let iy =
                            (oy * g.h.stride + ky * g.h.dilation) as isize - g.h.pad_begin as isize;
                        if iy < 0 || iy >= ih {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * g.w.stride + kx * g.w.dilation) as isize
                                - g.w.pad_begin as isize;
                            if ix < 0 || ix >= iw {
                                continue;
                            }
                            let base = ((n * g.h.input + iy as usize) * g.w.input + ix as usize) * c;
                            let xs = &x[base..base + c];
                            let t = ky * kw + kx;
                            let ws = &wt[t * m..(t + 1) * m];
                            if mult == 1 {
                                for ((o, &xv), &wv) in out.iter_mut().zip(xs).zip(ws) {
                                    *o = o.wrapping_add(xv as i32 * wv as i32);
                                }
                            } else {
                                for (ch, &xv) in xs.iter().enumerate() {
                                    for e in &mut xrow[ch * mult..(ch + 1) * mult] {
                                        *e = xv as i32;
                                    }
                                }
                                for ((o, &xv), &wv) in out.iter_mut().zip(&*xrow).zip(ws) {
                                    *o = o.wrapping_add(xv * wv as i32);
                                }
                            }
                        }
                    }
                    let yr = yrows.next().expect("one output row per pixel");
                    rq.row(isa, out, yr);
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2<T: QInt>(
        isa: Isa,
        g: &ConvGeom,
        x: &[i16],
        wt: &[i16],
        bias: &[i32],
        rq: &Requant,
        acc: &mut [i32],
        y: &mut [T],
    ) {
        body(isa, g, x, wt, bias, rq, acc, y)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
        return unsafe { avx2(isa, g, x, wt, bias, rq, acc, y) };
    }
    body(isa, g, x, wt, bias, rq, acc, y)
}

pub struct FcKernel<T> {
    keep_num_dims: bool,
    isa: Isa,
    xq: Affine,
    packed: PackedW,
    requant: Requant,
    a: Vec<i16>,
    acc: Vec<i32>,
    _t: PhantomData<T>,
}

impl<T: QInt> FcKernel<T> {
    pub fn new(
        ctx: &NodeCtx,
        activation: Activation,
        keep_num_dims: bool,
        consts: &[Option<&Tensor>],
        num: Numerics,
        isa: Isa,
    ) -> Option<Self> {
        if std::mem::size_of::<T>() != 1 {
            return None;
        }
        let (w, b) = const_weights(ctx, consts)?;
        if w.shape.len() != 2 || w.shape[1] == 0 {
            return None;
        }
        let (nout, k) = (w.shape[0], w.shape[1]);
        if nout == 0 {
            return None;
        }
        let xq = per_tensor(ctx, ctx.in_quant(0), "input").ok()?;
        let yq = per_tensor(ctx, ctx.out_quant(0), "output").ok()?;
        let (wscales, wzps) = per_channel(ctx, ctx.in_quant(1), nout, "weights").ok()?;
        let wo = weights_i16(ctx, w, &wzps).ok()?;
        let bias = bias_i32(ctx, b, nout).ok()?;
        let stage = OutputStage::new(
            xq.scale,
            &wscales,
            yq,
            activation_range::<T>(activation, yq),
        )
        .with_rounding(match num {
            Numerics::LiteRt => Rounding::TiesUp,
            Numerics::Reference => Rounding::Single,
        });
        Some(FcKernel {
            keep_num_dims,
            isa,
            xq,
            packed: PackedW::new(&wo, nout, k, &bias),
            requant: Requant::new(&stage),
            a: Vec::new(),
            acc: Vec::new(),
            _t: PhantomData,
        })
    }
}

impl<T: QInt> Prepared for FcKernel<T> {
    fn run(
        &mut self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let x = crate::kernels::quantized::common::input(ctx, inputs, 0)?;
        let (nout, k) = (self.packed.n, self.packed.k);
        if x.len() % k != 0 {
            return Err(ctx.error(format!(
                "input {:?} does not split into rows of {k}",
                x.shape
            )));
        }
        let xs = T::slice(x)
            .ok_or_else(|| ctx.error(format!("input must be {}, got {}", T::DTYPE, x.dtype())))?;
        let rows = x.len() / k;
        let isa = self.isa;
        let lda = self.packed.k_pad();
        self.a.resize(rows * lda, 0);
        if lda == k {
            offset(isa, xs, self.xq.zp, &mut self.a);
        } else {
            for (src, dst) in xs.chunks_exact(k).zip(self.a.chunks_exact_mut(lda)) {
                offset(isa, src, self.xq.zp, &mut dst[..k]);
                dst[k..].fill(0);
            }
        }
        let ldc = self.packed.n_pad();
        self.acc.resize(rows * ldc, 0);
        gemm(isa, &self.a, lda, rows, &self.packed, &mut self.acc, ldc);
        let shape = if self.keep_num_dims && !x.shape.is_empty() {
            let mut s = x.shape.clone();
            *s.last_mut().expect("non-empty") = nout;
            s
        } else {
            vec![rows, nout]
        };
        let y = out_buffer::<T>(out, &shape, rows * nout);
        for (row, yr) in self.acc.chunks_exact(ldc).zip(y.chunks_exact_mut(nout.max(1))) {
            self.requant.row(isa, row, yr);
        }
        Ok(())
    }
}
