//! An op's facets that every consumer needs to agree on, in one place beside its shape
//! rule (`shape_rules`): the work it does (multiply-accumulates and element operations,
//! which the profile, `inspect` and the cost model count) and which operands its
//! output may overwrite in place (which the memory planner uses).
//!
//! Every match here is exhaustive: a new op does not compile until it says what it
//! costs and whether it runs in place.

use crate::{Activation, Op};

/// Work of one node for concrete shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Work {
    /// Multiply-accumulates of the weight product: convolutions `out_elems ×
    /// (C_in/group) × kernel_elems` (depthwise is the `group == C_in` case);
    /// transposed convolutions `in_elems × (C_out/group) × kernel_elems`;
    /// Gemm/MatMul/FullyConnected `M × N × K` (per batch); LSTM/GRU the gate products
    /// of every step. Bias additions count none.
    pub macs: u64,
    /// Element operations of ops without MACs: one per output element of element-wise
    /// ops, one per window element of pooling, one per input element of reductions;
    /// 0 for data movement.
    pub elem_ops: u64,
}

fn numel(s: &[usize]) -> u64 {
    s.iter()
        .map(|&d| d as u64)
        .fold(1u64, |a, d| a.saturating_mul(d))
}

impl Op {
    /// The work of this op for input and output shapes (`None`: unknown or absent);
    /// what cannot be determined from the shapes counts 0.
    pub fn work(&self, inputs: &[Option<&[usize]>], outputs: &[Option<&[usize]>]) -> Work {
        Work {
            macs: self.macs(inputs, outputs).unwrap_or(0),
            elem_ops: self.elem_ops(inputs, outputs),
        }
    }

    fn macs(&self, inputs: &[Option<&[usize]>], outputs: &[Option<&[usize]>]) -> Option<u64> {
        let shape = |i: usize| inputs.get(i).copied().flatten();
        let out = || outputs.first().copied().flatten();
        // Weights are [M, ...] in both layouts (NCHW: [M, C/g, *k]; NHWC: [M, *k, C/g]),
        // so (C_in/group) × kernel_elems is the product of all but the first dimension.
        let conv = |w: usize| -> Option<u64> {
            Some(numel(out()?).saturating_mul(numel(shape(w)?.get(1..)?)))
        };
        // Matrix products: each output element is a K-long dot product.
        let matmul =
            |k: Option<usize>| -> Option<u64> { Some(numel(out()?).saturating_mul(k? as u64)) };
        let rnn = |hidden_size: usize, gates: u64| -> Option<u64> {
            // Every step of every direction multiplies [I + H] by the gate rows (4H for
            // LSTM, 3H for GRU); y holds one H-vector per step and direction.
            let k = *shape(1)?.get(2)? as u64 + hidden_size as u64;
            Some(numel(out()?).saturating_mul(gates).saturating_mul(k))
        };
        match self {
            Op::Conv(_) | Op::ConvInteger(_) => conv(1),
            Op::QLinearConv(_) => conv(3),
            Op::ConvTranspose(_) => {
                // Every input element is scattered into (C_out/group) × kernel outputs.
                Some(numel(shape(0)?).saturating_mul(numel(shape(1)?.get(1..)?)))
            }
            Op::Gemm { trans_a, .. } => {
                let a = shape(0)?;
                matmul(if *trans_a { a.first() } else { a.get(1) }.copied())
            }
            Op::MatMul | Op::MatMulInteger | Op::QLinearMatMul => matmul(shape(0)?.last().copied()),
            Op::FullyConnected { .. } => matmul(shape(1)?.get(1).copied()),
            Op::Lstm { hidden_size, .. } => rnn(*hidden_size, 4),
            Op::Gru { hidden_size, .. } => rnn(*hidden_size, 3),
            Op::Binary { .. }
            | Op::Compare(_)
            | Op::Where
            | Op::Unary(_)
            | Op::Clip { .. }
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::GlobalAveragePool
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Concat { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Gather { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::TopK { .. }
            | Op::Reduce { .. }
            | Op::Resize(_)
            | Op::Identity
            | Op::Shape
            | Op::Cast { .. }
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::Quantize
            | Op::Dequantize => None,
        }
    }

    fn elem_ops(&self, inputs: &[Option<&[usize]>], outputs: &[Option<&[usize]>]) -> u64 {
        let out = outputs.first().copied().flatten().map_or(0, numel);
        let input0 = inputs.first().copied().flatten().map_or(0, numel);
        match self {
            Op::Binary { .. }
            | Op::Compare(_)
            | Op::Where
            | Op::Unary(_)
            | Op::Clip { .. }
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Resize(_)
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::Quantize
            | Op::Dequantize
            | Op::Cast { .. } => out,
            Op::MaxPool(p) | Op::AveragePool(p) => {
                out.saturating_mul(p.kernel_shape.iter().map(|&k| k as u64).product::<u64>())
            }
            // Every input element is read once.
            Op::GlobalAveragePool | Op::Reduce { .. } | Op::TopK { .. } => input0,
            // MAC ops count their work in `macs`.
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::FullyConnected { .. }
            | Op::Lstm { .. }
            | Op::Gru { .. }
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger => 0,
            // Data movement.
            Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Concat { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Gather { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Identity
            | Op::Shape => 0,
        }
    }

    /// Operands whose buffer output 0 may take over in place: output element `i` is
    /// computed from element `i` of that operand only, so a kernel can overwrite the
    /// operand as it goes. The planner still checks that the shapes match (a broadcast
    /// operand is not taken over).
    pub fn in_place_inputs(&self) -> &'static [usize] {
        match self {
            Op::Unary(_)
            | Op::Clip { .. }
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::Cast { .. }
            | Op::Quantize
            | Op::Dequantize
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            // BatchNorm's per-channel statistics are constants; x is read element-wise.
            | Op::BatchNorm { .. } => &[0],
            // Either operand, if it is not broadcast.
            Op::Binary { .. } | Op::Compare(_) => &[0, 1],
            // Where reads three operands per element but its condition is bool-typed:
            // kept out, as before this table moved here.
            Op::Where => &[],
            // Windows, rows and whole-tensor ops read neighbours of element i.
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::FullyConnected { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::GlobalAveragePool
            | Op::LayerNorm { .. }
            | Op::Lstm { .. }
            | Op::Gru { .. }
            | Op::TopK { .. }
            | Op::Reduce { .. }
            | Op::Resize(_)
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger => &[],
            // Data movement: reshapes are aliased by the planner itself (not copies);
            // the rest move elements to other positions.
            Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Concat { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Gather { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Identity
            | Op::Shape => &[],
        }
    }
    /// The activation fused into this op's output (TFLite's fused_activation_function),
    /// `None` for ops that cannot carry one. QLinearConv and ConvInteger carry
    /// ConvAttrs but no activation in ONNX.
    pub fn fused_activation(&self) -> Option<Activation> {
        match self {
            Op::Conv(c) => Some(c.activation),
            Op::FullyConnected { activation, .. }
            | Op::Binary { activation, .. }
            | Op::Concat { activation, .. } => Some(*activation),
            Op::MaxPool(p) | Op::AveragePool(p) => Some(p.activation),
            Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::Compare(_)
            | Op::Where
            | Op::Unary(_)
            | Op::Clip { .. }
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::GlobalAveragePool
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Gather { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Lstm { .. }
            | Op::TopK { .. }
            | Op::Gru { .. }
            | Op::Reduce { .. }
            | Op::Resize(_)
            | Op::Identity
            | Op::Shape
            | Op::Cast { .. }
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger
            | Op::Quantize
            | Op::Dequantize => None,
        }
    }

    /// The fused activation to change in place (see [`Op::fused_activation`]).
    pub fn fused_activation_mut(&mut self) -> Option<&mut Activation> {
        match self {
            Op::Conv(c) => Some(&mut c.activation),
            Op::FullyConnected { activation, .. }
            | Op::Binary { activation, .. }
            | Op::Concat { activation, .. } => Some(activation),
            Op::MaxPool(p) | Op::AveragePool(p) => Some(&mut p.activation),
            Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::Compare(_)
            | Op::Where
            | Op::Unary(_)
            | Op::Clip { .. }
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::GlobalAveragePool
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Gather { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Lstm { .. }
            | Op::TopK { .. }
            | Op::Gru { .. }
            | Op::Reduce { .. }
            | Op::Resize(_)
            | Op::Identity
            | Op::Shape
            | Op::Cast { .. }
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger
            | Op::Quantize
            | Op::Dequantize => None,
        }
    }
}
