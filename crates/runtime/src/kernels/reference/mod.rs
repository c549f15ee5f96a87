//! Reference kernels: float and plain (non-quantized) integer semantics.
//!
//! Output shapes come from the IR's shape rules ([`edgeopt_ir::shape::infer_node_declared`]),
//! so each op's geometry lives in one place. Float ops compute in f32; f16 inputs are
//! widened to f32 and the outputs rounded back. Data movement (reshape, transpose,
//! gather, pad, concat, ...) works on every dtype. Ops that only make sense on quantized
//! tensors belong to [`super::quantized`] and are rejected here with a clear error.

mod cast;
mod conv;
mod elementwise;
mod matmul;
mod movement;
mod norm;
mod pool;
mod reduce;
mod resize;
mod rnn;
mod softmax;
pub(crate) mod util;

pub use conv::{conv_f32, conv_naive};

use super::NodeCtx;
use crate::error::Result;
use edgeopt_ir::shape::{infer_node_declared, InputFact, OutputFact};
use edgeopt_ir::{DType, Op, Tensor};
use util::KResult;

pub fn eval(ctx: &NodeCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let facts: Vec<Option<InputFact>> = inputs
        .iter()
        .map(|t| {
            t.map(|t| InputFact {
                dtype: t.dtype(),
                shape: &t.shape,
                value: Some(t),
            })
        })
        .collect();
    let declared: Vec<Option<DType>> = (0..ctx.node.outputs.len())
        .map(|i| ctx.out_dtype(i))
        .collect();
    let outs = infer_node_declared(ctx.node, &facts, &declared)?;
    // Small integer results (shape arithmetic) are already computed by the rules.
    if !outs.is_empty() && outs.iter().all(|o| o.value.is_some()) {
        return Ok(outs.into_iter().filter_map(|o| o.value).collect());
    }
    let op = &ctx.node.op;
    let r = if computes_in_f32(op) && inputs.iter().flatten().any(|t| t.dtype() == DType::F16) {
        let wide: Vec<Option<Tensor>> = inputs.iter().map(|t| t.map(util::upcast)).collect();
        let refs: Vec<Option<&Tensor>> = wide.iter().map(|t| t.as_ref()).collect();
        let wide_outs: Vec<OutputFact> = outs
            .iter()
            .map(|o| OutputFact {
                dtype: if o.dtype == DType::F16 {
                    DType::F32
                } else {
                    o.dtype
                },
                shape: o.shape.clone(),
                value: None,
            })
            .collect();
        eval_op(op, &refs, &wide_outs, ctx.numerics()).map(|ts| {
            ts.into_iter()
                .zip(&outs)
                .map(|(t, o)| {
                    if o.dtype == DType::F16 {
                        util::downcast(t)
                    } else {
                        t
                    }
                })
                .collect()
        })
    } else {
        eval_op(op, inputs, &outs, ctx.numerics())
    };
    r.map_err(|m| ctx.error(m))
}

/// Ops computed in f32 arithmetic (everything but data movement and casts).
fn computes_in_f32(op: &Op) -> bool {
    !matches!(
        op,
        Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Concat { .. }
            | Op::Gather { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            // Compares and moves elements of any dtype.
            | Op::TopK { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Pad { .. }
            | Op::Identity
            | Op::Shape
            | Op::Cast { .. }
            | Op::Where
            // Dequantize of f16 is the widening itself (below).
            | Op::Dequantize
    )
}

fn req<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> KResult<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is missing"))
}

/// `numerics`: where the float arithmetic of an op follows TensorFlow Lite Micro's
/// reference kernels under `Numerics::Tflm` (float MEAN / SUM accumulate in f32).
fn eval_op(
    op: &Op,
    inputs: &[Option<&Tensor>],
    outs: &[OutputFact],
    numerics: crate::kernels::quantized::Numerics,
) -> KResult<Vec<Tensor>> {
    let out = &outs[0];
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Conv(a) => one(conv::conv(a, req(inputs, 0)?, req(inputs, 1)?, inputs.get(2).copied().flatten(), out)?),
        Op::ConvTranspose(a) => one(conv::conv_transpose(
            a,
            req(inputs, 0)?,
            req(inputs, 1)?,
            inputs.get(2).copied().flatten(),
            out,
        )?),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => one(matmul::gemm_op(
            req(inputs, 0)?,
            req(inputs, 1)?,
            inputs.get(2).copied().flatten(),
            *alpha,
            *beta,
            *trans_a,
            *trans_b,
            out,
        )?),
        Op::MatMul => one(matmul::matmul(req(inputs, 0)?, req(inputs, 1)?, out)?),
        Op::FullyConnected { activation, .. } => one(matmul::fully_connected(
            req(inputs, 0)?,
            req(inputs, 1)?,
            inputs.get(2).copied().flatten(),
            *activation,
            out,
        )?),
        Op::Binary { kind, activation } => one(elementwise::binary(*kind, *activation, req(inputs, 0)?, req(inputs, 1)?, out)?),
        Op::Compare(k) => one(elementwise::compare(*k, req(inputs, 0)?, req(inputs, 1)?, out)?),
        Op::Where => one(elementwise::where_op(req(inputs, 0)?, req(inputs, 1)?, req(inputs, 2)?, out)?),
        Op::Unary(k) => one(elementwise::unary(*k, req(inputs, 0)?)?),
        Op::Clip { min, max } => one(elementwise::clip(req(inputs, 0)?, *min, *max)?),
        Op::LeakyRelu { alpha } => {
            let a = *alpha;
            one(elementwise::map_f32(req(inputs, 0)?, |x| if x < 0.0 { a * x } else { x })?)
        }
        Op::HardSigmoid { alpha, beta } => {
            let (a, b) = (*alpha, *beta);
            one(elementwise::map_f32(req(inputs, 0)?, |x| (a * x + b).clamp(0.0, 1.0))?)
        }
        Op::Softmax { axis, beta } => one(softmax::softmax(req(inputs, 0)?, *axis, *beta, false)?),
        Op::LogSoftmax { axis } => one(softmax::softmax(req(inputs, 0)?, *axis, 1.0, true)?),
        Op::MaxPool(p) => one(pool::max_pool(p, req(inputs, 0)?, out)?),
        Op::AveragePool(p) => one(pool::avg_pool(p, req(inputs, 0)?, out)?),
        Op::GlobalAveragePool => one(pool::global_avg_pool(req(inputs, 0)?, out)?),
        Op::BatchNorm { epsilon } => one(norm::batch_norm(inputs, *epsilon)?),
        Op::LayerNorm { axis, epsilon } => one(norm::layer_norm(inputs, *axis, *epsilon)?),
        Op::Lstm {
            hidden_size,
            direction,
            batch_first,
            clip,
            input_forget,
        } => {
            let a = rnn::RnnAttrs {
                hidden: *hidden_size,
                direction: *direction,
                batch_first: *batch_first,
                clip: *clip,
                input_forget: *input_forget,
                linear_before_reset: false,
            };
            rnn::lstm(&a, inputs, outs)
        }
        Op::Gru {
            hidden_size,
            direction,
            batch_first,
            clip,
            linear_before_reset,
        } => {
            let a = rnn::RnnAttrs {
                hidden: *hidden_size,
                direction: *direction,
                batch_first: *batch_first,
                clip: *clip,
                input_forget: false,
                linear_before_reset: *linear_before_reset,
            };
            rnn::gru(&a, inputs, outs)
        }
        Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity => one(movement::reshape(req(inputs, 0)?, out)?),
        Op::Transpose { perm } => one(movement::transpose(req(inputs, 0)?, perm, out)?),
        Op::Concat { axis, activation } => one(movement::concat(inputs, *axis, *activation, out)?),
        Op::StridedSlice(a) => one(movement::strided_slice(req(inputs, 0)?, a, out)?),
        Op::Tile { .. } => one(movement::tile(req(inputs, 0)?, out)?),
        Op::Fill => one(movement::fill(req(inputs, 1)?, out)?),
        Op::Gather { axis } => one(movement::gather(req(inputs, 0)?, req(inputs, 1)?, *axis, out)?),
        Op::Split { axis, split } => movement::split(req(inputs, 0)?, *axis, split, outs),
        Op::TopK { axis, k, largest } => movement::top_k(req(inputs, 0)?, *axis, *k, *largest, outs),
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => one(movement::slice(req(inputs, 0)?, starts, ends, axes, steps, out)?),
        Op::Pad { mode, pads, value } => one(movement::pad(req(inputs, 0)?, *mode, pads, *value, out)?),
        Op::Shape => one(movement::shape(req(inputs, 0)?)),
        Op::Reduce {
            kind,
            axes,
            noop_with_empty_axes,
            ..
        } => one(reduce::reduce(
            *kind,
            req(inputs, 0)?,
            axes.as_deref(),
            *noop_with_empty_axes,
            numerics == crate::kernels::quantized::Numerics::Tflm,
            out,
        )?),
        Op::Resize(a) => one(resize::resize(a, req(inputs, 0)?, out)?),
        Op::Cast { to } => one(cast::cast(req(inputs, 0)?, *to)?),
        // TFLite's fp16 weight scheme: a FLOAT16 constant feeding DEQUANTIZE, which is
        // an exact widening to f32 (no quantization parameters involved).
        Op::Dequantize if req(inputs, 0)?.dtype() == DType::F16 => {
            one(cast::cast(req(inputs, 0)?, DType::F32)?)
        }
        Op::QuantizeLinear { .. }
        | Op::DequantizeLinear { .. }
        | Op::QLinearConv(_)
        | Op::QLinearMatMul
        | Op::ConvInteger(_)
        | Op::MatMulInteger
        | Op::Quantize
        | Op::Dequantize => Err(format!(
            "{} is an integer/quantized op: it runs in the quantized kernels, which did not accept these inputs ({})",
            op.name(),
            inputs
                .iter()
                .map(|t| t.map_or("-".to_string(), |t| format!("{}{:?}", t.dtype(), t.shape)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests;
