//! Integer kernels for quantized tensors (TFLite int8 spec) and ONNX integer ops.
//!
//! A node is claimed here when it is an ONNX integer op (QuantizeLinear, QLinearConv,
//! ...), a TFLite QUANTIZE/DEQUANTIZE of quantized data, or an op whose activation
//! input is an integer tensor (i8/u8/i16) carrying quantization parameters, or a
//! TFLite hybrid op (float input, int8 weights, `hybrid` set: [`hybrid`]) under
//! LiteRT's numerics. Pure data
//! movement (Reshape, Squeeze, ...) on quantized tensors with unchanged parameters is
//! left to the reference kernels, which are dtype-generic.
//!
//! Layout: `fixedpoint` (gemmlowp/TFLite fixed-point helpers), `common` (quant params,
//! output stages), one file per op family. Accumulation (`conv::accumulate_nhwc`, the
//! FC dot loop) is separate from requantization (`common::OutputStage`) so faster
//! accumulation kernels can be dropped in and stay bit-exact.

pub mod activation;
pub mod blockwise;
pub mod common;
pub mod conv;
pub mod elementwise;
pub mod fc;
pub mod fixedpoint;
pub mod hybrid;
pub mod int16;
pub mod movement;
pub mod onnx;
pub mod pool;
pub mod quantize;
pub mod reduce;

use super::NodeCtx;
use crate::error::Result;
use common::is_qint;
use edgeopt_ir::{DType, Op, ReduceKind, Tensor, UnaryKind};

/// Which integer arithmetic to reproduce where TFLite's kernels disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numerics {
    /// LiteRT's builtin CPU kernels (the `ai-edge-litert` interpreter without the
    /// XNNPACK delegate): e.g. the int8 softmax uses a float exp table.
    LiteRt,
    /// LiteRT's reference kernels (`BUILTIN_REF`): fixed-point everywhere.
    Reference,
    /// TensorFlow Lite Micro's kernels (and CMSIS-NN's, which match them): the
    /// reference arithmetic, except FULLY_CONNECTED requantizes with two roundings
    /// (`MultiplyByQuantizedMultiplier`) where LiteRT's reference kernel rounds once,
    /// and RELU / RELU6 derive their parameters as TFLM's Prepare does
    /// ([`activation::tflm_relu_table`], [`activation::tflm_relu6_table`]). What the
    /// generated C computes. TFLM has no hybrid kernels (it refuses float ops with
    /// int8 weights), so hybrid ops run in float here; the other two follow LiteRT's
    /// hybrid arithmetic ([`hybrid`]), which its builtin and reference kernels share.
    Tflm,
}

/// Calls `$f::<T>` with T the activation type of input 0.
macro_rules! by_type {
    ($dt:expr, $ctx:expr, $f:ident ( $($arg:expr),* )) => {
        match $dt {
            DType::I8 => $f::<i8>($($arg),*),
            DType::U8 => $f::<u8>($($arg),*),
            DType::I16 => $f::<i16>($($arg),*),
            d => Err($ctx.error(format!("no quantized kernel for {d}"))),
        }
    };
}

/// Runs the node if it is a quantized case this module owns; `None` otherwise (the
/// reference kernels run it). One exhaustive match: a new op states here whether it
/// has an integer kernel.
pub fn try_eval(ctx: &NodeCtx, inputs: &[Option<&Tensor>]) -> Option<Result<Vec<Tensor>>> {
    let op = &ctx.node.op;
    let num = ctx.numerics();
    // TFLite-style arithmetic on quantized input 0: `f` gets its type. A float input
    // to a hybrid op (float activations, int8 weights) runs LiteRT's hybrid
    // arithmetic, builtin and reference kernels alike; TFLite Micro has no hybrid
    // kernels (it refuses such models), so under its numerics they run in float like
    // the generated C.
    let on_quantized = |f: &dyn Fn(DType) -> Option<Result<Vec<Tensor>>>| {
        let x = inputs.first().copied().flatten()?;
        if let (Some(h), DType::F32, false) = (op.hybrid(), x.dtype(), num == Numerics::Tflm) {
            return Some(hybrid::eval(ctx, h, inputs));
        }
        (is_qint(x.dtype()) && ctx.in_quant(0).is_some())
            .then(|| f(x.dtype()))
            .flatten()
    };
    let kernel = |f: &dyn Fn(DType) -> Result<Vec<Tensor>>| on_quantized(&|dt| Some(f(dt)));
    match op {
        // ONNX integer ops are always ours.
        Op::QuantizeLinear {
            axis,
            block_size,
            output_dtype,
            ..
        } => Some(quantize::quantize_linear(
            ctx,
            *axis,
            *block_size,
            *output_dtype,
            inputs,
        )),
        Op::DequantizeLinear { axis, block_size } => {
            Some(quantize::dequantize_linear(ctx, *axis, *block_size, inputs))
        }
        Op::QLinearConv(a) => Some(onnx::qlinear_conv(ctx, a, inputs)),
        Op::QLinearMatMul => Some(onnx::qlinear_matmul(ctx, inputs)),
        Op::ConvInteger(a) => Some(onnx::conv_integer(ctx, a, inputs)),
        Op::MatMulInteger => Some(onnx::matmul_integer(ctx, inputs)),
        Op::Quantize => {
            inputs.first().copied().flatten()?;
            // Float input needs only the output's params; quantized input needs both.
            ctx.out_quant(0)
                .is_some()
                .then(|| quantize::tflite_quantize(ctx, num, inputs))
        }
        Op::Dequantize => {
            let x = inputs.first().copied().flatten()?;
            (is_qint(x.dtype()) && ctx.in_quant(0).is_some())
                .then(|| quantize::tflite_dequantize(ctx, num, inputs))
        }
        Op::Conv(a) => kernel(&|dt| by_type!(dt, ctx, tflite_conv_dispatch(ctx, a, inputs))),
        Op::FullyConnected {
            activation,
            keep_num_dims,
            ..
        } => kernel(&|dt| {
            by_type!(
                dt,
                ctx,
                fc_dispatch(ctx, *activation, *keep_num_dims, inputs)
            )
        }),
        Op::Binary { kind, activation } => {
            kernel(&|dt| by_type!(dt, ctx, binary_dispatch(ctx, *kind, *activation, inputs)))
        }
        Op::MatMul => on_quantized(&|dt| {
            ctx.in_quant(1).is_some().then(|| match dt {
                DType::I8 => fc::batch_matmul::<i8>(ctx, num, inputs),
                d => Err(ctx.error(format!("no quantized BATCH_MATMUL kernel for {d}"))),
            })
        }),
        Op::AveragePool(a) => kernel(&|dt| by_type!(dt, ctx, pool_dispatch(ctx, a, false, inputs))),
        Op::MaxPool(a) => kernel(&|dt| by_type!(dt, ctx, pool_dispatch(ctx, a, true, inputs))),
        Op::Softmax { axis, beta } => {
            kernel(&|dt| by_type!(dt, ctx, softmax_dispatch(ctx, *axis, *beta, num, inputs)))
        }
        Op::Unary(k) => kernel(&|dt| match k {
            UnaryKind::Sigmoid | UnaryKind::Tanh | UnaryKind::Gelu => {
                by_type!(dt, ctx, lut_dispatch(ctx, *k, inputs))
            }
            UnaryKind::Relu => by_type!(dt, ctx, relu_dispatch(ctx, 0.0, None, inputs)),
            UnaryKind::Relu6 => by_type!(dt, ctx, relu_dispatch(ctx, 0.0, Some(6.0), inputs)),
            UnaryKind::HardSwish => by_type!(dt, ctx, hswish_dispatch(ctx, inputs)),
            k => Err(ctx.error(format!("quantized {k:?} is not supported"))),
        }),
        Op::LeakyRelu { alpha } => {
            kernel(&|dt| by_type!(dt, ctx, leaky_dispatch(ctx, *alpha, inputs)))
        }
        // Clip(0, 6) / Clip(0, inf) on quantized data are TFLite's RELU6 / RELU; other
        // clips run in the reference kernels.
        Op::Clip { min, max } => on_quantized(&|dt| {
            min.is_some_and(|m| m == 0.0)
                .then(|| by_type!(dt, ctx, relu_dispatch(ctx, 0.0, *max, inputs)))
        }),
        Op::Pad { mode, pads, value } => {
            kernel(&|dt| by_type!(dt, ctx, pad_dispatch(ctx, *mode, pads, *value, inputs)))
        }
        Op::Concat { axis, activation } => {
            kernel(&|dt| by_type!(dt, ctx, concat_dispatch(ctx, *axis, *activation, inputs)))
        }
        Op::Transpose { perm } => {
            kernel(&|dt| by_type!(dt, ctx, transpose_dispatch(ctx, perm, inputs)))
        }
        Op::Resize(a) => kernel(&|dt| by_type!(dt, ctx, resize_dispatch(ctx, a, inputs))),
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::StridedSlice(_)
        | Op::Tile { .. }
        | Op::Identity => on_quantized(&|dt| {
            // Data movement stays with the reference kernels unless the parameters change.
            if ctx.in_quant(0) == ctx.out_quant(0) || ctx.out_quant(0).is_none() {
                return None;
            }
            Some(super::reference::eval(ctx, inputs).and_then(|mut outs| {
                let t = outs.remove(0);
                let t = by_type!(dt, ctx, requant_dispatch(ctx, t))?;
                Ok(vec![t])
            }))
        }),
        Op::LogSoftmax { .. } => {
            kernel(&|_| Err(ctx.error("quantized LogSoftmax is not supported yet")))
        }
        Op::Reduce {
            kind: ReduceKind::Mean,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => kernel(&|dt| {
            by_type!(
                dt,
                ctx,
                mean_dispatch(
                    ctx,
                    axes.as_deref(),
                    *keepdims,
                    *noop_with_empty_axes,
                    num,
                    inputs
                )
            )
        }),
        Op::Reduce { kind, .. } => {
            kernel(&|_| Err(ctx.error(format!("quantized Reduce{kind:?} is not supported yet"))))
        }
        // Ops that read a quantized tensor but are not arithmetic on it (shape
        // queries, gathers, casts, comparisons, ...) or have no integer kernel yet run
        // in the reference kernels.
        Op::ConvTranspose(_)
        | Op::Gemm { .. }
        | Op::Compare(_)
        | Op::Where
        | Op::HardSigmoid { .. }
        | Op::GlobalAveragePool
        | Op::BatchNorm { .. }
        | Op::LayerNorm { .. }
        | Op::Fill
        | Op::Gather { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Lstm { .. }
        | Op::TopK { .. }
        | Op::Gru { .. }
        | Op::Shape
        | Op::Cast { .. } => on_quantized(&|_| None),
    }
}

// Thin generic adapters so `by_type!` can name one function per op.
fn tflite_conv_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    a: &edgeopt_ir::ConvAttrs,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    if T::DTYPE == DType::I16 {
        return int16::conv(ctx, a, inputs);
    }
    conv::tflite_conv::<T>(ctx, a, ctx.numerics(), inputs)
}
fn fc_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    act: edgeopt_ir::Activation,
    keep: bool,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    if T::DTYPE == DType::I16 {
        return int16::fully_connected(ctx, act, keep, inputs);
    }
    fc::tflite_fc::<T>(ctx, act, keep, ctx.numerics(), inputs)
}
fn binary_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    k: edgeopt_ir::BinaryKind,
    act: edgeopt_ir::Activation,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    if T::DTYPE == DType::I16
        && k == edgeopt_ir::BinaryKind::Add
        && ctx.numerics() == Numerics::LiteRt
    {
        if let Some(r) = int16::add_litert(ctx, act, inputs) {
            return r;
        }
    }
    elementwise::tflite_binary::<T>(ctx, k, act, inputs)
}
fn pool_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    a: &edgeopt_ir::PoolAttrs,
    is_max: bool,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    pool::tflite_pool::<T>(ctx, a, is_max, inputs)
}
fn softmax_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    axis: i64,
    beta: f32,
    num: Numerics,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    if T::DTYPE == DType::I16 {
        return int16::softmax(ctx, axis, beta, inputs);
    }
    activation::softmax::<T>(ctx, axis, beta, num, inputs)
}
fn lut_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    k: UnaryKind,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    activation::lut_activation::<T>(ctx, k, inputs)
}
fn relu_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    lo: f32,
    hi: Option<f32>,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    activation::relu_x::<T>(ctx, lo, hi, ctx.numerics(), inputs)
}
fn leaky_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    alpha: f32,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    activation::leaky_relu::<T>(ctx, alpha, inputs)
}
fn hswish_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    activation::hard_swish::<T>(ctx, inputs)
}
fn pad_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    mode: edgeopt_ir::PadMode,
    pads: &[i64],
    value: f32,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    movement::pad::<T>(ctx, mode, pads, value, inputs)
}
fn concat_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    axis: i64,
    act: edgeopt_ir::Activation,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    movement::concat::<T>(ctx, axis, act, inputs)
}
fn transpose_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    perm: &[usize],
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    movement::transpose::<T>(ctx, perm, inputs)
}
fn resize_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    a: &edgeopt_ir::ResizeAttrs,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    match a.mode {
        edgeopt_ir::ResizeMode::Linear => movement::resize_bilinear::<T>(ctx, a, inputs),
        _ => movement::resize_nearest::<T>(ctx, a, inputs),
    }
}
fn mean_dispatch<T: common::QInt>(
    ctx: &NodeCtx,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop: bool,
    num: Numerics,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    reduce::mean::<T>(ctx, axes, keepdims, noop, num, inputs)
}
fn requant_dispatch<T: common::QInt>(ctx: &NodeCtx, t: Tensor) -> Result<Tensor> {
    movement::requantize_if_needed::<T>(ctx, t)
}
