//! LiteRT's hybrid (dynamic-range) kernels: a float CONV_2D / DEPTHWISE_CONV_2D /
//! FULLY_CONNECTED whose weights are int8 (or int4) constants, marked in the IR by
//! [`edgeopt_ir::Hybrid`] on the op, the weights reaching it through a `Dequantize`.
//!
//! LiteRT does not dequantize the weights (the IR's float semantics); per group of
//! input elements (an FC row, a conv sample, or a space-to-batch phase of it) it
//! quantizes the float input to int8 on the fly, accumulates `w * (q - zp)` in i32
//! and scales the sum back to float:
//! - symmetric (`tensor_utils::SymmetricQuantizeFloats`): scale `max|x| / 127`,
//!   `q = round(x * 127 / max|x|)` in [-127, 127];
//! - asymmetric (`AsymmetricQuantizeFloats`): scale `(max(0, x) - min(0, x)) / 255`
//!   computed in double, a nudged zero point, `q = round(zp + x / scale)` in
//!   [-128, 127].
//!
//! The float epilogues follow each LiteRT kernel's order of operations (they differ in
//! where the weight scale is multiplied in), so outputs agree to the last bit or so:
//! - FULLY_CONNECTED (`EvalHybridDense`, `MatrixBatchVectorMultiplyAccumulate`):
//!   `bias + acc * (s_x * s_w)`;
//! - CONV_2D, one weight scale (`HybridConv`, symmetric): `acc * (s_x * s_w) + bias`;
//! - CONV_2D, per-channel scales or groups (`HybridConvPerChannel`, asymmetric):
//!   `acc * (s_w[o] * s_x) + bias`;
//! - DEPTHWISE_CONV_2D (`DepthwiseConvHybridPerChannel`, asymmetric):
//!   `(acc * s_x) * s_w[o] + bias`.
//!
//! Padding contributes nothing in every kernel (LiteRT pads with the zero point or
//! skips the taps), as in the float convolution. The fused activation clamps the float
//! result. Weight zero points must be 0 (LiteRT ignores them).
//!
//! Dropping every hybrid attribute gives the float semantics; no fast kernel runs
//! these nodes (their input is float), so this reference is the only implementation.

use super::super::NodeCtx;
use super::common::input;
use super::conv::{accumulate_nhwc, conv_geom, dot_i16};
use super::fc::{fc_dims, fc_out_shape, FcDims};
use crate::error::Result;
use edgeopt_ir::{Activation, ConvAttrs, Hybrid, Layout, Op, Tensor, TensorData};

/// Per-group input quantization: `q - zp` as i16, with the group's scale.
struct QuantInput {
    /// `q - zp` per element (fits: int8 minus an int8 zero point).
    values: Vec<i16>,
    /// Per group: the input scale.
    scales: Vec<f32>,
}

/// One group's quantization parameters from its min and max: `(scale, zero point,
/// 1 / scale as the kernels multiply by it)`, with LiteRT's arithmetic.
fn group_params(asymmetric: bool, min: f32, max: f32) -> (f32, i32, f32) {
    if asymmetric {
        // AsymmetricQuantizeFloats: the range always holds 0, computed in double.
        let rmin = min.min(0.0) as f64;
        let rmax = max.max(0.0) as f64;
        if rmin == rmax {
            return (1.0, 0, 1.0);
        }
        let (qmin, qmax) = (-128.0f64, 127.0f64);
        let scale = (rmax - rmin) / (qmax - qmin);
        let zp_from_min = qmin - rmin / scale;
        let zp_from_max = qmax - rmax / scale;
        let err_min = qmin.abs() + (rmin / scale).abs();
        let err_max = qmax.abs() + (rmax / scale).abs();
        let zp = if err_min < err_max {
            zp_from_min
        } else {
            zp_from_max
        };
        let nudged = if zp <= qmin {
            -128
        } else if zp >= qmax {
            127
        } else {
            zp.round() as i32
        };
        let s = scale as f32;
        (s, nudged, 1.0 / s)
    } else {
        // SymmetricQuantizeFloats: scale range / 127, inverse 127 / range (in float).
        let range = min.abs().max(max.abs());
        if range == 0.0 {
            return (1.0, 0, 0.0);
        }
        (range / 127.0, 0, 127.0 / range)
    }
}

/// Quantizes `x` with `groups` groups, `group_of(i)` giving element `i`'s group.
fn quantize_groups(
    asymmetric: bool,
    x: &[f32],
    groups: usize,
    group_of: impl Fn(usize) -> usize,
) -> QuantInput {
    let mut mins = vec![f32::INFINITY; groups];
    let mut maxs = vec![f32::NEG_INFINITY; groups];
    for (i, &v) in x.iter().enumerate() {
        let g = group_of(i);
        mins[g] = mins[g].min(v);
        maxs[g] = maxs[g].max(v);
    }
    let mut scales = Vec::with_capacity(groups);
    let mut zero_points = Vec::with_capacity(groups);
    let mut invs = Vec::with_capacity(groups);
    for g in 0..groups {
        // An empty group (no elements) is never read.
        let (lo, hi) = if mins[g] <= maxs[g] {
            (mins[g], maxs[g])
        } else {
            (0.0, 0.0)
        };
        let (s, zp, inv) = group_params(asymmetric, lo, hi);
        scales.push(s);
        zero_points.push(zp);
        invs.push(inv);
    }
    let values = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let g = group_of(i);
            let q = if asymmetric {
                // round(zp + x * inv), clamped to [-128, 127].
                ((zero_points[g] as f32 + v * invs[g]).round() as i32).clamp(-128, 127)
            } else {
                ((v * invs[g]).round() as i32).clamp(-127, 127)
            };
            (q - zero_points[g]) as i16
        })
        .collect();
    QuantInput { values, scales }
}

/// The int8 weights behind a hybrid op's weight operand (input 1 is the output of a
/// `Dequantize` of a constant) and their per-output-channel scales (`m` channels; one
/// scale is broadcast).
fn hybrid_weights(ctx: &NodeCtx, m: usize) -> Result<(Vec<i16>, Vec<f32>)> {
    let g = ctx.graph;
    let w = ctx
        .node
        .input(1)
        .ok_or_else(|| ctx.error("hybrid op without weights"))?;
    let q = g
        .nodes
        .iter()
        .find(|n| n.outputs.contains(&w))
        .filter(|n| n.op == Op::Dequantize)
        .and_then(|n| n.input(0))
        .ok_or_else(|| {
            ctx.error(
                "hybrid op (int8 weights, float input) needs its weights as a Dequantize \
                 of an int8 constant",
            )
        })?;
    let v = &g.values[q];
    let (Some(t), Some(qp)) = (v.data.as_ref(), v.quant.as_ref()) else {
        return Err(ctx.error(format!(
            "hybrid weights '{}' must be a quantized constant",
            v.name
        )));
    };
    let values: Vec<i16> = match &t.data {
        TensorData::I8(d) | TensorData::I4(d) => d.iter().map(|&e| e as i16).collect(),
        d => {
            return Err(ctx.error(format!(
                "hybrid weights '{}' must be int8 or int4, got {}",
                v.name,
                d.dtype()
            )))
        }
    };
    if qp.block_size.is_some() {
        return Err(ctx.error("hybrid weights quantized block-wise are not supported"));
    }
    if qp.zero_point.iter().any(|&z| z != 0) {
        return Err(
            ctx.error("hybrid weights need zero points of 0 (LiteRT's hybrid kernels ignore them)")
        );
    }
    let n = qp.scale.len();
    if n != 1 && (n != m || qp.axis.unwrap_or(0) != 0) {
        return Err(ctx.error(format!(
            "hybrid weights have {n} scales (axis {:?}) for {m} output channels",
            qp.axis
        )));
    }
    let scales: Vec<f32> = (0..m)
        .map(|c| qp.scale[if n == 1 { 0 } else { c }])
        .collect();
    if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(ctx.error("hybrid weights have an invalid scale"));
    }
    if m == 0 || !values.len().is_multiple_of(m) {
        return Err(ctx.error("hybrid weights do not split into output channels"));
    }
    Ok((values, scales))
}

fn f32_data<'t>(ctx: &NodeCtx, t: &'t Tensor, what: &str) -> Result<&'t [f32]> {
    match &t.data {
        TensorData::F32(v) => Ok(v),
        d => Err(ctx.error(format!("hybrid {what} must be f32, got {}", d.dtype()))),
    }
}

/// Float bias `[m]` (absent: zeros).
fn bias_f32(ctx: &NodeCtx, inputs: &[Option<&Tensor>], m: usize) -> Result<Vec<f32>> {
    match inputs.get(2).copied().flatten() {
        None => Ok(vec![0.0; m]),
        Some(b) => {
            let v = f32_data(ctx, b, "bias")?;
            if v.len() != m {
                return Err(ctx.error(format!(
                    "bias has {} elements for {m} output channels",
                    v.len()
                )));
            }
            Ok(v.to_vec())
        }
    }
}

/// The fused activation on a float result (`ActivationFunctionWithMinMax`).
fn activate(act: Activation, v: f32) -> f32 {
    match act {
        Activation::None => v,
        Activation::Relu => v.max(0.0),
        Activation::Relu6 => v.clamp(0.0, 6.0),
        Activation::ReluN1To1 => v.clamp(-1.0, 1.0),
    }
}

/// Runs a node whose op carries `h` (a `Conv` or `FullyConnected` with float input).
pub fn eval(ctx: &NodeCtx, h: Hybrid, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    if let Op::Conv(a) = &ctx.node.op {
        return conv(ctx, a, h, inputs);
    }
    if let Op::FullyConnected {
        activation,
        keep_num_dims,
        ..
    } = &ctx.node.op
    {
        return fully_connected(ctx, h, *activation, *keep_num_dims, inputs);
    }
    Err(ctx.error(format!("{} has no hybrid kernel", ctx.node.op.name())))
}

/// Hybrid FULLY_CONNECTED: x `[..., K]` f32, weights `[N, K]` int8 -> f32 `[rows, N]`
/// (or `[..., N]` with `keep_num_dims`); each row of x is quantized on its own.
pub fn fully_connected(
    ctx: &NodeCtx,
    h: Hybrid,
    activation: Activation,
    keep_num_dims: bool,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let w = input(ctx, inputs, 1)?;
    let FcDims { nout, k, rows } = fc_dims(ctx, x, w)?;
    let (wq, wscales) = hybrid_weights(ctx, nout)?;
    if wq.len() != nout * k {
        return Err(ctx.error("hybrid weights do not match the dequantized weights' shape"));
    }
    let xs = f32_data(ctx, x, "input")?;
    let bias = bias_f32(ctx, inputs, nout)?;
    let qx = quantize_groups(h.asymmetric, xs, rows, |i| i / k);
    let mut y = Vec::with_capacity(rows * nout);
    for r in 0..rows {
        let xr = &qx.values[r * k..(r + 1) * k];
        let s_x = qx.scales[r];
        for o in 0..nout {
            let acc = dot_i16(xr, &wq[o * k..(o + 1) * k]);
            // One rounded product s_x * s_w, as LiteRT (for one weight scale it folds
            // the product into the row's scale first: the same float).
            y.push(activate(
                activation,
                bias[o] + acc as f32 * (wscales[o] * s_x),
            ));
        }
    }
    let shape = fc_out_shape(&x.shape, rows, nout, keep_num_dims);
    Ok(vec![
        Tensor::new(shape, TensorData::F32(y)).map_err(|e| ctx.error(e.to_string()))?
    ])
}

/// Hybrid CONV_2D / DEPTHWISE_CONV_2D (NHWC; depthwise as `group = C`, weights
/// `[C*mult, kh, kw, 1]`).
pub fn conv(
    ctx: &NodeCtx,
    a: &ConvAttrs,
    h: Hybrid,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    if a.layout != Layout::Nhwc {
        return Err(ctx.error("hybrid convolution must be NHWC (TFLite)"));
    }
    let x = input(ctx, inputs, 0)?;
    let w = input(ctx, inputs, 1)?;
    let g = conv_geom(ctx, a, &x.shape, &w.shape)?;
    let (wq, wscales) = hybrid_weights(ctx, g.m)?;
    if wq.len() != w.len() {
        return Err(ctx.error("hybrid weights do not match the dequantized weights' shape"));
    }
    let xs = f32_data(ctx, x, "input")?;
    let bias = bias_f32(ctx, inputs, g.m)?;
    let [ph, pw] = h.phases;
    let [oh_off, ow_off] = h.phase_offset;
    if ph == 0 || pw == 0 {
        return Err(ctx.error("hybrid conv with an empty phase block"));
    }
    if (ph > 1 || pw > 1) && (g.h.stride != 1 || g.w.stride != 1) {
        return Err(ctx.error("hybrid conv phases need stride 1"));
    }
    if g.h.dilation % ph != 0 || g.w.dilation % pw != 0 {
        return Err(ctx.error(format!(
            "hybrid conv phases {:?} do not divide the dilations [{}, {}]",
            h.phases, g.h.dilation, g.w.dilation
        )));
    }
    let (ih, iw, c) = (g.h.input, g.w.input, g.c);
    let per_sample = ih * iw * c;
    if xs.len() != g.n * per_sample {
        return Err(ctx.error("input data does not match its shape"));
    }
    let phases = ph * pw;
    // Group of input element i (NHWC): its sample and its space-to-batch phase.
    let group_of = |i: usize| {
        let n = i / per_sample;
        let pix = (i % per_sample) / c;
        let (y, xx) = (pix / iw, pix % iw);
        n * phases + ((y + oh_off) % ph) * pw + (xx + ow_off) % pw
    };
    let qx = quantize_groups(h.asymmetric, xs, g.n * phases, group_of);
    let acc = accumulate_nhwc(&g, &qx.values, &wq, &vec![0; g.m]);
    let (oh, ow, m) = (g.h.output, g.w.output, g.m);
    let depthwise = g.cg() == 1 && g.group > 1;
    // Phase of an output coordinate: every tap it reads lies in that phase.
    let out_phase = |o: usize, pad: usize, off: usize, p: usize| -> usize {
        ((o + off) as isize - pad as isize).rem_euclid(p as isize) as usize
    };
    let mut y = Vec::with_capacity(acc.len());
    for (pix, row) in acc.chunks_exact(m.max(1)).enumerate() {
        let n = pix / (oh * ow);
        let (oy, ox) = ((pix / ow) % oh, pix % ow);
        let grp = n * phases
            + out_phase(oy, g.h.pad_begin, oh_off, ph) * pw
            + out_phase(ox, g.w.pad_begin, ow_off, pw);
        let s_x = qx.scales[grp];
        for (o, &v) in row.iter().enumerate() {
            let v = v as f32;
            let r = if depthwise {
                v * s_x * wscales[o] + bias[o]
            } else {
                v * (wscales[o] * s_x) + bias[o]
            };
            y.push(activate(a.activation, r));
        }
    }
    let shape = if x.shape.len() == 4 {
        vec![g.n, oh, ow, m]
    } else {
        vec![g.n, ow, m]
    };
    Ok(vec![
        Tensor::new(shape, TensorData::F32(y)).map_err(|e| ctx.error(e.to_string()))?
    ])
}
