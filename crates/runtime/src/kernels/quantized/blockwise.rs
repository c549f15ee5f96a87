//! Conv and FullyConnected with group-wise (block-wise) weight scales
//! (`QuantParams::block_size`, what `edgeopt quantize --granularity group:N` writes).
//!
//! TFLite has no such kernel: its integer conv needs one weight scale per output
//! channel so that one fixed-point multiplier requantizes the whole accumulator. With
//! one scale per block of N weights, each block's integer dot product (i32, exact) is
//! scaled by its own `input_scale * block_scale`; the blocks are summed in f64 in block
//! order, the float bias is added, and the result is rounded (half away from zero) to
//! the output's grid and clamped to the fused activation's range. The MACs stay
//! integer; only one multiply-add per block and output is in floating point (the way
//! group-quantized int4 kernels work, e.g. llama.cpp's Q4 x Q8 dot products).
//!
//! Blocks run along each output channel's weights in storage order: `(ky, kx, c)` of
//! `[M, kh, kw, C]` conv weights, which is the im2col order of the patch, and `k` of
//! `[N, K]` FC weights. Weight zero points must be 0 (symmetric weights).

use super::super::NodeCtx;
use super::common::*;
use super::conv::{conv_geom, dot_i16, fill_patch, offset_i16, weights_i16};
use super::fc::{fc_dims, fc_out_shape, FcDims};
use crate::error::Result;
use edgeopt_ir::{Activation, ConvAttrs, Layout, QuantParams, Tensor};

/// Per-block scales of `[m, per]` weights, validated.
struct Blocks {
    size: usize,
    per_channel: usize,
    scales: Vec<f64>,
}

fn blocks(ctx: &NodeCtx, q: Option<&QuantParams>, m: usize, per: usize) -> Result<Blocks> {
    let q = q.ok_or_else(|| ctx.error("weights have no quantization parameters"))?;
    let size = q
        .block_size
        .filter(|&b| b > 0)
        .ok_or_else(|| ctx.error("weights are not quantized block-wise"))?;
    if q.axis != Some(0) {
        return Err(ctx.error("block-wise weights must be blocked per output channel (axis 0)"));
    }
    let per_channel = per.div_ceil(size);
    if q.scale.len() != m * per_channel {
        return Err(ctx.error(format!(
            "weights have {} scales for {m} channels x {per_channel} blocks of {size}",
            q.scale.len()
        )));
    }
    if q.zero_point.iter().any(|&z| z != 0) {
        return Err(ctx.error("block-wise weights must be symmetric (zero point 0)"));
    }
    if let Some(s) = q.scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(ctx.error(format!("weights have invalid block scale {s}")));
    }
    Ok(Blocks {
        size,
        per_channel,
        scales: q.scale.iter().map(|&s| s as f64).collect(),
    })
}

/// Float bias (absent: zeros).
fn float_bias(ctx: &NodeCtx, b: Option<&Tensor>, m: usize) -> Result<Vec<f64>> {
    let Some(b) = b else {
        return Ok(vec![0.0; m]);
    };
    if b.len() != m {
        return Err(ctx.error(format!("bias has {} elements for {m} outputs", b.len())));
    }
    if !b.dtype().is_float() {
        return Err(ctx.error(format!(
            "block-wise conv/FC takes a float bias, got {}",
            b.dtype()
        )));
    }
    Ok(b.to_f32_vec().into_iter().map(f64::from).collect())
}

/// One output value: Σ_b (x_scale · s_b) · dot_b + bias, on the output grid.
struct Output {
    x_scale: f64,
    y: Affine,
    range: (i32, i32),
}

impl Output {
    fn value(&self, blocks: &Blocks, oc: usize, patch: &[i16], w: &[i16], bias: f64) -> i32 {
        let scales = &blocks.scales[oc * blocks.per_channel..(oc + 1) * blocks.per_channel];
        let mut real = 0f64;
        for ((xb, wb), &s) in patch
            .chunks(blocks.size)
            .zip(w.chunks(blocks.size))
            .zip(scales)
        {
            real += dot_i16(xb, wb) as f64 * s;
        }
        let real = real * self.x_scale + bias;
        let q = (real / self.y.scale as f64).round() + self.y.zp as f64;
        (q.clamp(self.range.0 as f64, self.range.1 as f64)) as i32
    }
}

fn output<T: QInt>(ctx: &NodeCtx, act: Activation) -> Result<(Affine, Output)> {
    let xq = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let yq = per_tensor(ctx, ctx.out_quant(0), "output")?;
    Ok((
        xq,
        Output {
            x_scale: xq.scale as f64,
            y: yq,
            range: activation_range::<T>(act, yq),
        },
    ))
}

/// NHWC conv (group 1) with block-wise weights `[M, kh, kw, C]`.
pub fn conv<T: QInt>(
    ctx: &NodeCtx,
    a: &ConvAttrs,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let w = input(ctx, inputs, 1)?;
    if a.layout != Layout::Nhwc {
        return Err(ctx.error("block-wise quantized Conv needs NHWC tensors"));
    }
    let g = conv_geom(ctx, a, &x.shape, &w.shape)?;
    if g.group != 1 {
        return Err(ctx.error(
            "block-wise weights are for ordinary convs; grouped/depthwise convs take per-channel scales",
        ));
    }
    let k = g.k_len();
    let bl = blocks(ctx, ctx.in_quant(1), g.m, k)?;
    let (xq, out) = output::<T>(ctx, a.activation)?;
    let xo = offset_i16(data::<T>(ctx, x, "input")?, xq.zp);
    let wo = weights_i16(ctx, w, &vec![0; g.m])?;
    let bias = float_bias(ctx, inputs.get(2).copied().flatten(), g.m)?;
    let (oh, ow) = (g.h.output, g.w.output);
    let mut res = Vec::with_capacity(g.out_pixels() * g.m);
    let mut patch = vec![0i16; k];
    for n in 0..g.n {
        for oy in 0..oh {
            for ox in 0..ow {
                fill_patch(&g, &xo, n, oy, ox, 0, g.c, &mut patch);
                for oc in 0..g.m {
                    let v = out.value(&bl, oc, &patch, &wo[oc * k..(oc + 1) * k], bias[oc]);
                    res.push(T::from_i32(v));
                }
            }
        }
    }
    let shape = if x.shape.len() == 4 {
        vec![g.n, oh, ow, g.m]
    } else {
        vec![g.n, ow, g.m]
    };
    Ok(vec![make(shape, res)])
}

/// FullyConnected with block-wise weights `[N, K]`: x `[..., K]` -> `[rows, N]` (or
/// `[..., N]` with `keep_num_dims`).
pub fn fully_connected<T: QInt>(
    ctx: &NodeCtx,
    activation: Activation,
    keep_num_dims: bool,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let w = input(ctx, inputs, 1)?;
    let FcDims { nout, k, rows } = fc_dims(ctx, x, w)?;
    let bl = blocks(ctx, ctx.in_quant(1), nout, k)?;
    let (xq, out) = output::<T>(ctx, activation)?;
    let xo = offset_i16(data::<T>(ctx, x, "input")?, xq.zp);
    let wo = weights_i16(ctx, w, &vec![0; nout])?;
    let bias = float_bias(ctx, inputs.get(2).copied().flatten(), nout)?;
    let mut res = Vec::with_capacity(rows * nout);
    for xr in xo.chunks_exact(k) {
        for o in 0..nout {
            let v = out.value(&bl, o, xr, &wo[o * k..(o + 1) * k], bias[o]);
            res.push(T::from_i32(v));
        }
    }
    Ok(vec![make(
        fc_out_shape(&x.shape, rows, nout, keep_num_dims),
        res,
    )])
}

/// Whether input 1 (the weights) of the node is quantized block-wise.
pub fn has_block_weights(ctx: &NodeCtx) -> bool {
    ctx.in_quant(1).is_some_and(|q| q.block_size.is_some())
}
