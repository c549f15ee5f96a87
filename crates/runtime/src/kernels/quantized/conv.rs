//! Integer convolution: the accumulation core (NHWC, grouped, depthwise) shared by the
//! TFLite int8 CONV_2D / DEPTHWISE_CONV_2D kernels and the ONNX integer convolutions.
//!
//! The core works on zero-point-subtracted i16 operands and produces i32 accumulators
//! (bias included); each caller then applies its own output stage (TFLite fixed-point
//! requantization, ONNX float requantization, or none for ConvInteger). Keeping the
//! accumulation separate is what lets a later SIMD kernel replace it bit-exactly: i32
//! sums of products are exact, so any summation order gives the same result.

use super::super::NodeCtx;
use super::common::*;
use crate::error::Result;
use edgeopt_ir::{AutoPad, ConvAttrs, Layout, Tensor};

/// One spatial axis of a convolution or pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    pub input: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: usize,
    pub output: usize,
}

/// Output size and leading padding of each spatial axis, following ONNX (and TFLite's
/// SAME/VALID, which map to SameUpper/Valid).
#[allow(clippy::too_many_arguments)]
pub fn window_axes(
    ctx: &NodeCtx,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
    auto_pad: AutoPad,
    ceil_mode: bool,
) -> Result<Vec<Axis>> {
    let n = input.len();
    if kernel.len() != n {
        return Err(ctx.error(format!(
            "kernel has {} spatial dims, input has {n}",
            kernel.len()
        )));
    }
    let get = |v: &[usize], i: usize, what: &str| -> Result<usize> {
        if v.is_empty() {
            return Ok(1);
        }
        let x = *v.get(i).ok_or_else(|| {
            ctx.error(format!(
                "{what} has {} entries for {n} spatial dims",
                v.len()
            ))
        })?;
        if x == 0 {
            return Err(ctx.error(format!("{what} must be positive")));
        }
        Ok(x)
    };
    if !pads.is_empty() && pads.len() != 2 * n {
        return Err(ctx.error(format!(
            "pads has {} entries for {n} spatial dims",
            pads.len()
        )));
    }
    let mut axes = Vec::with_capacity(n);
    for i in 0..n {
        let (inp, k) = (input[i], kernel[i]);
        let stride = get(strides, i, "strides")?;
        let dilation = get(dilations, i, "dilations")?;
        if k == 0 {
            return Err(ctx.error("kernel size must be positive"));
        }
        let eff = (k - 1)
            .checked_mul(dilation)
            .and_then(|v| v.checked_add(1))
            .ok_or_else(|| ctx.error("kernel extent overflows"))?;
        let (pad_begin, output) = match auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = inp.div_ceil(stride);
                let total = ((out.saturating_sub(1)) * stride + eff).saturating_sub(inp);
                let begin = if auto_pad == AutoPad::SameUpper {
                    total / 2
                } else {
                    total - total / 2
                };
                (begin, out)
            }
            AutoPad::Valid => {
                if inp < eff {
                    return Err(
                        ctx.error(format!("input size {inp} smaller than kernel extent {eff}"))
                    );
                }
                (0, (inp - eff) / stride + 1)
            }
            AutoPad::NotSet => {
                let (pb, pe) = if pads.is_empty() {
                    (0, 0)
                } else {
                    (pads[i], pads[i + n])
                };
                let padded = inp + pb + pe;
                if padded < eff {
                    return Err(ctx.error(format!(
                        "padded input size {padded} smaller than kernel extent {eff}"
                    )));
                }
                let mut out = if ceil_mode {
                    (padded - eff).div_ceil(stride) + 1
                } else {
                    (padded - eff) / stride + 1
                };
                // ONNX: with ceil_mode, a last window starting in the end padding is dropped.
                if ceil_mode && (out - 1) * stride >= inp + pb {
                    out -= 1;
                }
                (pb, out)
            }
        };
        axes.push(Axis {
            input: inp,
            kernel: k,
            stride,
            dilation,
            pad_begin,
            output,
        });
    }
    Ok(axes)
}

/// Geometry of a 2-D NHWC convolution (1-D convs use `h = 1`).
#[derive(Debug, Clone, Copy)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub m: usize,
    pub group: usize,
    pub h: Axis,
    pub w: Axis,
}

impl ConvGeom {
    pub fn cg(&self) -> usize {
        self.c / self.group
    }
    pub fn mg(&self) -> usize {
        self.m / self.group
    }
    pub fn k_len(&self) -> usize {
        self.h.kernel * self.w.kernel * self.cg()
    }
    pub fn out_pixels(&self) -> usize {
        self.n * self.h.output * self.w.output
    }
}

/// Builds the geometry from the node's attributes. `x_shape` is NHWC (or NCHW when
/// `layout` says so), weights are `[M, kh, kw, C/g]` for NHWC and `[M, C/g, kh, kw]`
/// for NCHW.
pub fn conv_geom(
    ctx: &NodeCtx,
    a: &ConvAttrs,
    x_shape: &[usize],
    w_shape: &[usize],
) -> Result<ConvGeom> {
    let rank = x_shape.len();
    if !(rank == 3 || rank == 4) || w_shape.len() != rank {
        return Err(ctx.error(format!(
            "integer conv supports 1-D and 2-D inputs; got input {x_shape:?}, weights {w_shape:?}"
        )));
    }
    let (n, c, spatial): (usize, usize, Vec<usize>) = match a.layout {
        Layout::Nhwc => (x_shape[0], x_shape[rank - 1], x_shape[1..rank - 1].to_vec()),
        Layout::Nchw => (x_shape[0], x_shape[1], x_shape[2..].to_vec()),
    };
    let (m, wcg, kernel): (usize, usize, Vec<usize>) = match a.layout {
        Layout::Nhwc => (w_shape[0], w_shape[rank - 1], w_shape[1..rank - 1].to_vec()),
        Layout::Nchw => (w_shape[0], w_shape[1], w_shape[2..].to_vec()),
    };
    if !a.kernel_shape.is_empty() && a.kernel_shape != kernel {
        return Err(ctx.error(format!(
            "kernel_shape {:?} differs from the weights' {kernel:?}",
            a.kernel_shape
        )));
    }
    let group = a.group.max(1);
    if c % group != 0 || m % group != 0 || c / group != wcg {
        return Err(ctx.error(format!(
            "channels {c}, output channels {m}, group {group} and weights {w_shape:?} disagree"
        )));
    }
    let axes = window_axes(
        ctx,
        &spatial,
        &kernel,
        &a.strides,
        &a.dilations,
        &a.pads,
        a.auto_pad,
        false,
    )?;
    let one = Axis {
        input: 1,
        kernel: 1,
        stride: 1,
        dilation: 1,
        pad_begin: 0,
        output: 1,
    };
    let (h, w) = if axes.len() == 1 {
        (one, axes[0])
    } else {
        (axes[0], axes[1])
    };
    Ok(ConvGeom {
        n,
        c,
        m,
        group,
        h,
        w,
    })
}

#[inline(always)]
pub fn dot_i16(a: &[i16], b: &[i16]) -> i32 {
    a.iter()
        .zip(b)
        .fold(0i32, |s, (&x, &y)| s.wrapping_add(x as i32 * y as i32))
}

/// i32 accumulators `[N, OH, OW, M]` = bias + sum over the window of `x * w`, with `x`
/// NHWC (zero point already subtracted, so padding contributes 0) and `w`
/// `[M, kh, kw, C/g]` (zero point subtracted).
pub fn accumulate_nhwc(g: &ConvGeom, x: &[i16], w: &[i16], bias: &[i32]) -> Vec<i32> {
    let (cg, mg, k_len) = (g.cg(), g.mg(), g.k_len());
    let (oh, ow) = (g.h.output, g.w.output);
    let mut acc = vec![0i32; g.out_pixels() * g.m];
    if cg == 1 && g.group > 1 {
        depthwise(g, x, w, bias, &mut acc);
        return acc;
    }
    let mut patch = vec![0i16; k_len];
    for n in 0..g.n {
        for oy in 0..oh {
            for ox in 0..ow {
                let pix = (n * oh + oy) * ow + ox;
                let out = &mut acc[pix * g.m..(pix + 1) * g.m];
                for grp in 0..g.group {
                    fill_patch(g, x, n, oy, ox, grp * cg, cg, &mut patch);
                    for oc in grp * mg..(grp + 1) * mg {
                        out[oc] = bias[oc]
                            .wrapping_add(dot_i16(&patch, &w[oc * k_len..(oc + 1) * k_len]));
                    }
                }
            }
        }
    }
    acc
}

/// Gathers the receptive field of output pixel (n, oy, ox), channels `c0..c0+cg`,
/// in (ky, kx, c) order; positions in the padding are 0.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn fill_patch(
    g: &ConvGeom,
    x: &[i16],
    n: usize,
    oy: usize,
    ox: usize,
    c0: usize,
    cg: usize,
    patch: &mut [i16],
) {
    let (ih, iw) = (g.h.input as isize, g.w.input as isize);
    let mut k = 0;
    for ky in 0..g.h.kernel {
        let iy = (oy * g.h.stride + ky * g.h.dilation) as isize - g.h.pad_begin as isize;
        for kx in 0..g.w.kernel {
            let ix = (ox * g.w.stride + kx * g.w.dilation) as isize - g.w.pad_begin as isize;
            let dst = &mut patch[k..k + cg];
            if iy >= 0 && iy < ih && ix >= 0 && ix < iw {
                let base = ((n * g.h.input + iy as usize) * g.w.input + ix as usize) * g.c + c0;
                dst.copy_from_slice(&x[base..base + cg]);
            } else {
                dst.fill(0);
            }
            k += cg;
        }
    }
}

/// Depthwise (one input channel per group): output channel `oc = c * mult + j` reads
/// input channel `c`. Loops run over channels innermost so they vectorize.
fn depthwise(g: &ConvGeom, x: &[i16], w: &[i16], bias: &[i32], acc: &mut [i32]) {
    let (kh, kw, m) = (g.h.kernel, g.w.kernel, g.m);
    let mult = g.mg();
    // Weights [M, kh, kw, 1] -> [kh, kw, M] so a tap's weights are contiguous.
    let mut wt = vec![0i16; kh * kw * m];
    for oc in 0..m {
        for t in 0..kh * kw {
            wt[t * m + oc] = w[oc * kh * kw + t];
        }
    }
    let (ih, iw) = (g.h.input as isize, g.w.input as isize);
    let (oh, ow) = (g.h.output, g.w.output);
    let mut xrow = vec![0i16; m];
    for n in 0..g.n {
        for oy in 0..oh {
            for ox in 0..ow {
                let pix = (n * oh + oy) * ow + ox;
                let out = &mut acc[pix * m..(pix + 1) * m];
                out.copy_from_slice(bias);
                for ky in 0..kh {
                    let iy =
                        (oy * g.h.stride + ky * g.h.dilation) as isize - g.h.pad_begin as isize;
                    if iy < 0 || iy >= ih {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix =
                            (ox * g.w.stride + kx * g.w.dilation) as isize - g.w.pad_begin as isize;
                        if ix < 0 || ix >= iw {
                            continue;
                        }
                        let base = ((n * g.h.input + iy as usize) * g.w.input + ix as usize) * g.c;
                        let xs = &x[base..base + g.c];
                        let ws = &wt[(ky * kw + kx) * m..(ky * kw + kx + 1) * m];
                        if mult == 1 {
                            for ((o, &xv), &wv) in out.iter_mut().zip(xs).zip(ws) {
                                *o = o.wrapping_add(xv as i32 * wv as i32);
                            }
                        } else {
                            for (c, &xv) in xs.iter().enumerate() {
                                xrow[c * mult..(c + 1) * mult].fill(xv);
                            }
                            for ((o, &xv), &wv) in out.iter_mut().zip(&xrow).zip(ws) {
                                *o = o.wrapping_add(xv as i32 * wv as i32);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Converts quantized data to zero-point-subtracted i16 (fits: 8-bit minus an 8-bit
/// zero point). `zp_of(i)` gives the zero point of element `i`.
pub fn offset_i16<T: QInt>(v: &[T], zp: i32) -> Vec<i16> {
    v.iter().map(|&e| (e.to_i32() - zp) as i16).collect()
}

/// Weights `[M, ...]` with a per-output-channel zero point subtracted, as i16.
pub fn weights_i16(ctx: &NodeCtx, w: &Tensor, zps: &[i32]) -> Result<Vec<i16>> {
    let m = zps.len();
    let per = w.len().checked_div(m).unwrap_or(0);
    if per * m != w.len() {
        return Err(ctx.error("weights do not split into output channels"));
    }
    let conv = |get: &dyn Fn(usize) -> i32| -> Result<Vec<i16>> {
        let mut out = Vec::with_capacity(w.len());
        for (oc, &zp) in zps.iter().enumerate() {
            for i in oc * per..(oc + 1) * per {
                let v = get(i) - zp;
                out.push(
                    i16::try_from(v)
                        .map_err(|_| ctx.error("weight minus zero point exceeds 16 bits"))?,
                );
            }
        }
        Ok(out)
    };
    match &w.data {
        edgeopt_ir::TensorData::I8(v) => conv(&|i| v[i] as i32),
        edgeopt_ir::TensorData::U8(v) => conv(&|i| v[i] as i32),
        edgeopt_ir::TensorData::I4(v) => conv(&|i| v[i] as i32),
        edgeopt_ir::TensorData::U4(v) => conv(&|i| v[i] as i32),
        d => Err(ctx.error(format!(
            "integer conv weights must be 8-bit, got {}",
            d.dtype()
        ))),
    }
}

/// Bias as i32 (absent: zeros).
pub fn bias_i32(ctx: &NodeCtx, b: Option<&Tensor>, m: usize) -> Result<Vec<i32>> {
    match b {
        None => Ok(vec![0; m]),
        Some(t) => {
            if t.len() != m {
                return Err(ctx.error(format!(
                    "bias has {} elements for {m} output channels",
                    t.len()
                )));
            }
            match &t.data {
                edgeopt_ir::TensorData::I32(v) => Ok(v.clone()),
                edgeopt_ir::TensorData::I64(v) => v
                    .iter()
                    .map(|&x| i32::try_from(x).map_err(|_| ctx.error("bias value exceeds 32 bits")))
                    .collect(),
                d => Err(ctx.error(format!("integer conv bias must be i32, got {}", d.dtype()))),
            }
        }
    }
}

/// NCHW activations -> NHWC.
pub fn nchw_to_nhwc<E: Copy + Default>(v: &[E], n: usize, c: usize, hw: usize) -> Vec<E> {
    let mut out = vec![E::default(); v.len()];
    for b in 0..n {
        for ch in 0..c {
            let src = &v[(b * c + ch) * hw..(b * c + ch + 1) * hw];
            for (p, &e) in src.iter().enumerate() {
                out[(b * hw + p) * c + ch] = e;
            }
        }
    }
    out
}

/// NHWC -> NCHW.
pub fn nhwc_to_nchw<E: Copy + Default>(v: &[E], n: usize, c: usize, hw: usize) -> Vec<E> {
    let mut out = vec![E::default(); v.len()];
    for b in 0..n {
        for p in 0..hw {
            for ch in 0..c {
                out[(b * c + ch) * hw + p] = v[(b * hw + p) * c + ch];
            }
        }
    }
    out
}

/// The TFLite int8/uint8 CONV_2D and DEPTHWISE_CONV_2D kernel (`Layout::Nhwc`,
/// per-channel or per-tensor weights, i32 bias, fixed-point requantization).
pub fn tflite_conv<T: QInt>(
    ctx: &NodeCtx,
    a: &ConvAttrs,
    num: super::Numerics,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    if super::blockwise::has_block_weights(ctx) {
        return super::blockwise::conv::<T>(ctx, a, inputs);
    }
    let x = input(ctx, inputs, 0)?;
    let w = input(ctx, inputs, 1)?;
    if a.layout != Layout::Nhwc {
        return Err(ctx.error("quantized Conv on NCHW tensors: use QLinearConv or QDQ"));
    }
    let g = conv_geom(ctx, a, &x.shape, &w.shape)?;
    let xq = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let yq = per_tensor(ctx, ctx.out_quant(0), "output")?;
    let (wscales, wzps) = per_channel(ctx, ctx.in_quant(1), g.m, "weights")?;
    let xs = data::<T>(ctx, x, "input")?;
    let xo = offset_i16(xs, xq.zp);
    let wo = weights_i16(ctx, w, &wzps)?;
    let bias = bias_i32(ctx, inputs.get(2).copied().flatten(), g.m)?;
    let acc = accumulate_nhwc(&g, &xo, &wo, &bias);
    let stage = OutputStage::new(
        xq.scale,
        &wscales,
        yq,
        activation_range::<T>(a.activation, yq),
    );
    let depthwise = g.cg() == 1 && g.group > 1;
    let stage = stage.with_rounding(output_rounding::<T>(num, depthwise, g.m));
    let m = g.m;
    let out = requantize_rows::<T>(&acc, m, &stage);
    let shape = if x.shape.len() == 4 {
        vec![g.n, g.h.output, g.w.output, m]
    } else {
        vec![g.n, g.w.output, m]
    };
    Ok(vec![make(shape, out)])
}

/// The output rounding of the TFLite CONV_2D / DEPTHWISE_CONV_2D kernels (`m` output
/// channels) under `num`: LiteRT's builtin CONV_2D runs through ruy (ties-up final
/// shift); its optimized int8 depthwise kernel rounds ties up in whole blocks of 8
/// channels and away from zero in the rest ([`Rounding::TiesUpBelow`]: measured on
/// 80 random depthwise models, 14 differed by 1 LSB from LiteRT with ties away
/// everywhere, none with this); its uint8 depthwise kernel and TFLite's reference
/// kernels (TFLM's too) use `MultiplyByQuantizedMultiplier` (ties away).
pub fn output_rounding<T: QInt>(num: super::Numerics, depthwise: bool, m: usize) -> Rounding {
    match num {
        super::Numerics::LiteRt if !depthwise => Rounding::TiesUp,
        super::Numerics::LiteRt if T::DTYPE == edgeopt_ir::DType::I8 => {
            Rounding::litert_depthwise(m)
        }
        super::Numerics::LiteRt | super::Numerics::Reference | super::Numerics::Tflm => {
            Rounding::TiesAway
        }
    }
}

/// Applies a per-channel output stage to `[pixels, m]` accumulators.
pub fn requantize_rows<T: QInt>(acc: &[i32], m: usize, stage: &OutputStage) -> Vec<T> {
    let mut out = Vec::with_capacity(acc.len());
    for row in acc.chunks_exact(m.max(1)) {
        out.extend(
            row.iter()
                .enumerate()
                .map(|(c, &v)| T::from_i32(stage.apply(v, c))),
        );
    }
    out
}
