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

/// TFLite BATCH_MATMUL on 8-bit tensors (no adjoints): a `[..., M, K]` times b
/// `[..., K, N]` with numpy broadcasting of the batch dimensions; per output element
/// acc = Σ (a - a_zp)(b - b_zp), then FULLY_CONNECTED's output stage with multiplier
/// `a_scale * b_scale / y_scale` (both operands per tensor). The rounding follows the
/// FULLY_CONNECTED of the same numerics: LiteRT's builtin kernel runs both through
/// ruy's output stage, TFLite Micro both through its reference one.
pub fn batch_matmul<T: QInt>(
    ctx: &NodeCtx,
    num: super::Numerics,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let a = input(ctx, inputs, 0)?;
    let b = input(ctx, inputs, 1)?;
    let aq = per_tensor(ctx, ctx.in_quant(0), "lhs")?;
    let bq = per_tensor(ctx, ctx.in_quant(1), "rhs")?;
    let yq = per_tensor(ctx, ctx.out_quant(0), "output")?;
    if a.rank() < 2 || b.rank() < 2 {
        return Err(ctx.error(format!(
            "BATCH_MATMUL needs operands of rank >= 2, got {:?} and {:?}",
            a.shape, b.shape
        )));
    }
    let (m, k) = (a.shape[a.rank() - 2], a.shape[a.rank() - 1]);
    let (k2, n) = (b.shape[b.rank() - 2], b.shape[b.rank() - 1]);
    if k != k2 {
        return Err(ctx.error(format!(
            "BATCH_MATMUL inner dimensions differ: {:?} x {:?}",
            a.shape, b.shape
        )));
    }
    // Broadcast batch dimensions (right-aligned).
    let (ab, bb) = (&a.shape[..a.rank() - 2], &b.shape[..b.rank() - 2]);
    let r = ab.len().max(bb.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        std::iter::repeat_n(1, r - s.len())
            .chain(s.iter().copied())
            .collect()
    };
    let (ab, bb) = (pad(ab), pad(bb));
    let mut batch = Vec::with_capacity(r);
    for (&p, &q) in ab.iter().zip(&bb) {
        if p != q && p != 1 && q != 1 {
            return Err(ctx.error(format!(
                "BATCH_MATMUL batch dimensions do not broadcast: {:?} x {:?}",
                a.shape, b.shape
            )));
        }
        batch.push(p.max(q));
    }
    let nb: usize = batch.iter().product();
    let av = offset_i16(data::<T>(ctx, a, "lhs")?, aq.zp);
    let bv = offset_i16(data::<T>(ctx, b, "rhs")?, bq.zp);
    // b transposed per batch so each output is a contiguous dot product.
    let nbb: usize = bb.iter().product();
    let mut bt = vec![0i16; bv.len()];
    for p in 0..nbb {
        let (src, dst) = (
            &bv[p * k * n..(p + 1) * k * n],
            &mut bt[p * k * n..(p + 1) * k * n],
        );
        for i in 0..k {
            for j in 0..n {
                dst[j * k + i] = src[i * n + j];
            }
        }
    }
    // Flat index of a batch coordinate in an operand with broadcast dims.
    let flat = |dims: &[usize], mut idx: usize| -> usize {
        let mut f = 0;
        let mut stride = 1;
        for d in (0..r).rev() {
            let c = idx % batch[d];
            idx /= batch[d];
            if dims[d] != 1 {
                f += c * stride;
            }
            stride *= dims[d];
        }
        f
    };
    let mut acc = vec![0i32; nb * m * n];
    for p in 0..nb {
        let (pa, pb) = (flat(&ab, p), flat(&bb, p));
        let am = &av[pa * m * k..(pa + 1) * m * k];
        let bm = &bt[pb * k * n..(pb + 1) * k * n];
        for i in 0..m {
            for j in 0..n {
                acc[(p * m + i) * n + j] =
                    dot_i16(&am[i * k..(i + 1) * k], &bm[j * k..(j + 1) * k]);
            }
        }
    }
    let stage = OutputStage::new(
        aq.scale,
        &[bq.scale],
        yq,
        activation_range::<T>(Activation::None, yq),
    )
    .with_rounding(match num {
        super::Numerics::LiteRt => Rounding::TiesAway,
        super::Numerics::Reference => Rounding::Single,
        super::Numerics::Tflm => Rounding::TiesAway,
    });
    let out: Vec<T> = acc
        .iter()
        .map(|&v| T::from_i32(stage.apply(v, 0)))
        .collect();
    let shape = batch.into_iter().chain([m, n]).collect();
    Ok(vec![make(shape, out)])
}
