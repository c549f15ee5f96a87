//! TFLite FULLY_CONNECTED on quantized tensors (per-tensor or per-channel weights).

use super::super::NodeCtx;
use super::common::*;
use super::conv::{bias_i32, dot_i16, offset_i16, requantize_rows, weights_i16};
use crate::error::Result;
use edgeopt_ir::{Activation, Tensor};

/// x `[..., K]`, w `[N, K]`, optional i32 bias `[N]` -> `[rows, N]` (or `[..., N]` with
/// `keep_num_dims`): acc = bias + Σ (x - x_zp)(w - w_zp), then the fixed-point output
/// stage with multiplier `x_scale * w_scale / y_scale` (per output channel when the
/// weights are per-channel).
pub fn tflite_fc<T: QInt>(
    ctx: &NodeCtx,
    activation: Activation,
    keep_num_dims: bool,
    num: super::Numerics,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    if super::blockwise::has_block_weights(ctx) {
        return super::blockwise::fully_connected::<T>(ctx, activation, keep_num_dims, inputs);
    }
    let x = input(ctx, inputs, 0)?;
    let w = input(ctx, inputs, 1)?;
    let FcDims { nout, k, rows } = fc_dims(ctx, x, w)?;
    let xq = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let yq = per_tensor(ctx, ctx.out_quant(0), "output")?;
    let (wscales, wzps) = per_channel(ctx, ctx.in_quant(1), nout, "weights")?;
    let xo = offset_i16(data::<T>(ctx, x, "input")?, xq.zp);
    let wo = weights_i16(ctx, w, &wzps)?;
    let bias = bias_i32(ctx, inputs.get(2).copied().flatten(), nout)?;
    let mut acc = vec![0i32; rows * nout];
    for (r, out) in acc.chunks_exact_mut(nout.max(1)).enumerate() {
        let xr = &xo[r * k..(r + 1) * k];
        for (o, a) in out.iter_mut().enumerate() {
            *a = bias[o].wrapping_add(dot_i16(xr, &wo[o * k..(o + 1) * k]));
        }
    }
    let stage = OutputStage::new(
        xq.scale,
        &wscales,
        yq,
        activation_range::<T>(activation, yq),
    );
    // LiteRT's builtin FULLY_CONNECTED runs through ruy (ties-up final shift); its
    // reference kernel rounds once (found by comparing with LiteRT layer by layer).
    let stage = stage.with_rounding(match num {
        super::Numerics::LiteRt => Rounding::TiesUp,
        super::Numerics::Reference => Rounding::Single,
        super::Numerics::Tflm => Rounding::TiesAway,
    });
    let out = requantize_rows::<T>(&acc, nout, &stage);
    Ok(vec![make(
        fc_out_shape(&x.shape, rows, nout, keep_num_dims),
        out,
    )])
}

/// Sizes of a FULLY_CONNECTED: weights `[nout, k]`, input `rows` rows of `k`.
pub struct FcDims {
    pub nout: usize,
    pub k: usize,
    pub rows: usize,
}

/// Checks FULLY_CONNECTED operand shapes: weights `[N, K]`, input a whole number of
/// rows of K.
pub fn fc_dims(ctx: &NodeCtx, x: &Tensor, w: &Tensor) -> Result<FcDims> {
    if w.shape.len() != 2 {
        return Err(ctx.error(format!("weights must be [N, K], got {:?}", w.shape)));
    }
    let (nout, k) = (w.shape[0], w.shape[1]);
    if k == 0 || !x.len().is_multiple_of(k) {
        return Err(ctx.error(format!(
            "input {:?} does not split into rows of {k}",
            x.shape
        )));
    }
    Ok(FcDims {
        nout,
        k,
        rows: x.len() / k,
    })
}

/// Output shape: `[rows, nout]`, or the input's shape with its last dim replaced
/// (`keep_num_dims`).
pub fn fc_out_shape(
    x_shape: &[usize],
    rows: usize,
    nout: usize,
    keep_num_dims: bool,
) -> Vec<usize> {
    match x_shape.split_last() {
        Some((_, lead)) if keep_num_dims => lead.iter().copied().chain([nout]).collect(),
        _ => vec![rows, nout],
    }
}
