//! **prepare**: a float graph → an equivalent float graph in the form the integer
//! kernels (and the TFLite exporter and C generator) want:
//!
//! 1. constant `Dequantize` / `DequantizeLinear` of constant weights (hybrid and fp16
//!    models) folded into f32 constants;
//! 2. BatchNorm folded into the preceding Conv / FullyConnected;
//! 3. Gemm / MatMul with constant weights → FullyConnected (bias from Gemm's C or a
//!    following Add of a constant); a mean over the plane of a 4-D tensor (axes 1, 2)
//!    → an NHWC average pool (+ Reshape), and over axes 2, 3 → GlobalAveragePool;
//! 4. NCHW → NHWC: each value is tracked in its original ("first") form and/or a
//!    channel-last form; layout-sensitive ops (Conv, pools, GlobalAveragePool) read and
//!    produce the channel-last form, elementwise ops (Relu, Add with constants
//!    permuted, Concat with the axis remapped, Pad) follow whichever form their inputs
//!    have, everything else reads the original form. Transposes are materialized only
//!    where a form is missing, so the tf2onnx pair (NHWC input → Transpose → NCHW) and
//!    its inverse cancel, and a Transpose that moves no data (around 1×1 spatial
//!    dims, before a Flatten) becomes a Reshape;
//! 5. Relu / Relu6 / Clip(0, 6) / Clip(-1, 1) fused into the producer's `activation`;
//! 6. 1-D convs and pools lifted to 2-D ones over a unit height (between Reshapes).
//!
//! Every step keeps the float outputs equal up to float rounding (tested on real data).

use super::util::{compact, fresh_name, reannotate};
use crate::{CompressError, Result};
use edgeopt_ir::shape::{bind_input_shapes, infer_graph};
use edgeopt_ir::{
    Activation, AutoPad, BinaryKind, ConvAttrs, DType, Graph, Layout, Node, Op, PoolAttrs,
    ReduceKind, Tensor, TensorData, UnaryKind, ValueId,
};
use edgeopt_runtime::kernels::{eval_node, NodeCtx};
use edgeopt_runtime::ExecOptions;

/// The preparation steps, in the order [`prepare`] runs them. Each is also a pass of
/// its own ([`crate::pass::quant`]), so a recipe can run them one by one (and a later
/// pass, pruning say, can sit between them); [`prepare`] is exactly their sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Constant `Dequantize` of weights (hybrid / fp16 models) and constant subgraphs
    /// folded into f32 constants, LSTMs unrolled, PyTorch's erf GELU fused.
    Canonicalize,
    /// BatchNorm folded into the preceding Conv / FullyConnected.
    FoldBatchNorm,
    /// Gemm / MatMul with constant weights → FullyConnected; a mean over the plane →
    /// an average pool.
    ToFullyConnected,
    /// NCHW → NHWC for layout-sensitive ops (transposes only where a form is missing).
    ToNhwc,
    /// Relu / Relu6 / Clip fused into the producer's `activation`.
    FuseActivations,
    /// 1-D convs and pools lifted to 2-D; back-to-back Reshapes merged.
    Lift1d,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Canonicalize,
        Step::FoldBatchNorm,
        Step::ToFullyConnected,
        Step::ToNhwc,
        Step::FuseActivations,
        Step::Lift1d,
    ];

    /// Runs this step on `g`, then drops dead nodes and re-derives the shapes.
    pub fn run(self, g: Graph) -> Result<Graph> {
        let mut g = g;
        match self {
            Step::Canonicalize => {
                fold_const_dequantize(&mut g)?;
                // Subgraphs of constants (TorchScript exports compute the attention
                // scale as Sqrt / Div / Cast of constants) become constants: otherwise
                // each would be quantized as an activation and written as float
                // operators.
                edgeopt_train::model::fold_constants(&mut g)?;
                super::unroll::unroll_lstm(&mut g)?;
                fuse_gelu(&mut g);
                compact(&mut g);
            }
            Step::FoldBatchNorm => {
                fold_batchnorm(&mut g)?;
                compact(&mut g);
            }
            Step::ToFullyConnected => {
                mean_to_pool(&mut g)?;
                to_fully_connected(&mut g)?;
                compact(&mut g);
            }
            Step::ToNhwc => {
                g = to_nhwc(&g)?;
                compact(&mut g);
            }
            Step::FuseActivations => {
                fuse_activations(&mut g);
                compact(&mut g);
            }
            Step::Lift1d => {
                lift_1d(&mut g)?;
                compact(&mut g);
                merge_reshapes(&mut g);
                compact(&mut g);
            }
        }
        reannotate(&mut g)?;
        Ok(g)
    }
}

/// Runs all preparation steps; the result is validated and re-annotated.
pub fn prepare(graph: &Graph) -> Result<Graph> {
    let mut g = graph.clone();
    g.validate()?;
    for step in Step::ALL {
        g = step.run(g)?;
    }
    g.validate()?;
    Ok(g)
}

/// Whether `axes` (negative counted from the end) are exactly the spatial axes
/// `2..rank` of an NCHW tensor, each once.
fn reduces_spatial(axes: &[i64], rank: usize) -> bool {
    let mut norm: Vec<usize> = axes
        .iter()
        .filter_map(|&a| {
            let a = if a < 0 { a + rank as i64 } else { a };
            usize::try_from(a).ok().filter(|&a| a < rank)
        })
        .collect();
    norm.sort_unstable();
    norm.len() == axes.len() && norm == (2..rank).collect::<Vec<_>>()
}

/// Number of nodes reading each value, plus one if it is a graph output.
fn use_counts(g: &Graph) -> Vec<usize> {
    let mut c = vec![0usize; g.values.len()];
    for n in &g.nodes {
        for i in n.present_inputs() {
            c[i] += 1;
        }
    }
    for &o in &g.outputs {
        c[o] += 1;
    }
    c
}

fn f32_const(g: &Graph, id: Option<ValueId>) -> Option<&[f32]> {
    g.const_data(id?)?.as_f32().ok()
}

/// Replaces `Dequantize(const)` / `DequantizeLinear(const, const, [const])` by an f32
/// constant, so later passes see plain float weights.
///
/// Hybrid ops (LiteRT's dynamic-range arithmetic, see [`edgeopt_ir::Hybrid`]) become
/// plain float ops: quantization starts from the float semantics of the dequantized
/// weights, and their weights are f32 constants from here on.
fn fold_const_dequantize(g: &mut Graph) -> Result<()> {
    for n in &mut g.nodes {
        if let Some(h) = n.op.hybrid_mut() {
            *h = None;
        }
    }
    let mut remove = Vec::new();
    for ni in 0..g.nodes.len() {
        let n = &g.nodes[ni];
        let foldable = matches!(n.op, Op::Dequantize)
            || matches!(n.op, Op::DequantizeLinear { block_size, .. } if block_size == 0);
        let consts: Option<Vec<Option<&Tensor>>> = n
            .inputs
            .iter()
            .map(|x| match x {
                Some(id) => g.const_data(*id).map(Some),
                None => Some(None),
            })
            .collect();
        let Some(consts) = consts.filter(|c| foldable && c.first().is_some_and(Option::is_some))
        else {
            continue;
        };
        // The runtime's own kernel: one definition of dequantization, with its checks
        // (a per-axis scale shorter than the axis is an error here as at run time).
        let real = eval_node(&NodeCtx::new(g, n, ExecOptions::default()), &consts)?.remove(0);
        let out = n.outputs[0];
        let v = &mut g.values[out];
        v.dtype = real.dtype();
        v.quant = None;
        v.data = Some(real);
        remove.push(ni);
    }
    let mut k = 0;
    g.nodes.retain(|_| {
        k += 1;
        !remove.contains(&(k - 1))
    });
    Ok(())
}

/// The scalar of a one-element f32 constant.
fn scalar(g: &Graph, id: Option<ValueId>) -> Option<f32> {
    match f32_const(g, id)? {
        [v] => Some(*v),
        _ => None,
    }
}

/// GELU as PyTorch exports it, `x * 0.5 * (1 + erf(x / sqrt 2))` (Div by sqrt 2 or
/// Mul by its inverse; the 0.5 applied last, to x first or to the erf term first) →
/// one `Gelu`. Why: TFLite
/// has no ERF but a GELU builtin whose int8 kernel is a lookup table (LiteRT), so the
/// fused op quantizes as one int8 op instead of a float island of five.
fn fuse_gelu(g: &mut Graph) {
    let uses = use_counts(g);
    let producers = g.producers();
    let consumers = g.consumers();
    let close = |v: Option<f32>, want: f32| v.is_some_and(|v| (v - want).abs() <= 1e-4 * want);
    let binary = |ni: usize, kind: BinaryKind| -> Option<(ValueId, ValueId)> {
        match &g.nodes[ni].op {
            Op::Binary {
                kind: k,
                activation: Activation::None,
            } if *k == kind => Some((g.nodes[ni].input(0)?, g.nodes[ni].input(1)?)),
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::FullyConnected { .. }
            | Op::Binary { .. }
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
    };
    // The other operand of a commutative binary node, given one.
    let other = |(a, b): (ValueId, ValueId), v: ValueId| {
        if a == v {
            Some(b)
        } else if b == v {
            Some(a)
        } else {
            None
        }
    };
    let only_reader = |v: ValueId| -> Option<usize> {
        match consumers[v].as_slice() {
            [c] if uses[v] == 1 => Some(*c),
            _ => None,
        }
    };
    let mut fused = Vec::new();
    for (ei, e) in g.nodes.iter().enumerate() {
        if e.op != Op::Unary(UnaryKind::Erf) {
            continue;
        }
        let (Some(z), Some(&eo)) = (e.input(0), e.outputs.first()) else {
            continue;
        };
        // z = x / sqrt 2, or x * (1 / sqrt 2).
        let Some(zi) = producers[z].filter(|_| uses[z] == 1) else {
            continue;
        };
        let x = if let Some((a, b)) = binary(zi, BinaryKind::Div) {
            close(scalar(g, Some(b)), std::f32::consts::SQRT_2).then_some(a)
        } else if let Some(ops) = binary(zi, BinaryKind::Mul) {
            [ops.0, ops.1].into_iter().find(|&v| {
                other(ops, v)
                    .is_some_and(|c| close(scalar(g, Some(c)), std::f32::consts::FRAC_1_SQRT_2))
            })
        } else {
            None
        };
        let Some(x) = x.filter(|&x| g.values[x].data.is_none()) else {
            continue;
        };
        // 1 + erf(z).
        let Some(ai) = only_reader(eo) else { continue };
        let Some(one) = binary(ai, BinaryKind::Add).and_then(|ops| other(ops, eo)) else {
            continue;
        };
        if !close(scalar(g, Some(one)), 1.0) {
            continue;
        }
        let ao = g.nodes[ai].outputs[0];
        let Some(mi) = only_reader(ao) else { continue };
        let Some(m_other) = binary(mi, BinaryKind::Mul).and_then(|ops| other(ops, ao)) else {
            continue;
        };
        let mo = g.nodes[mi].outputs[0];
        let last = if m_other == x {
            // (x * (1 + erf)) * 0.5
            let Some(hi) = only_reader(mo) else { continue };
            let half = binary(hi, BinaryKind::Mul).and_then(|ops| other(ops, mo));
            if !close(scalar(g, half), 0.5) {
                continue;
            }
            hi
        } else if close(scalar(g, Some(m_other)), 0.5) {
            // x * (0.5 * (1 + erf)) (PyTorch's dynamo exporter)
            let Some(li) = only_reader(mo) else { continue };
            if binary(li, BinaryKind::Mul).and_then(|ops| other(ops, mo)) != Some(x) {
                continue;
            }
            li
        } else {
            // (x * 0.5) * (1 + erf)
            let Some(pi) = producers[m_other].filter(|_| uses[m_other] == 1) else {
                continue;
            };
            let half = binary(pi, BinaryKind::Mul).and_then(|ops| other(ops, x));
            if !close(scalar(g, half), 0.5) {
                continue;
            }
            mi
        };
        fused.push((ei, last, x));
    }
    for (_, last, x) in fused {
        let n = &mut g.nodes[last];
        n.op = Op::Unary(UnaryKind::Gelu);
        n.inputs = vec![Some(x)];
    }
}

/// Folds `BatchNorm(Conv(x))` (and after FullyConnected) into the producer's weights
/// and bias when the producer's output has no other reader.
fn fold_batchnorm(g: &mut Graph) -> Result<()> {
    let uses = use_counts(g);
    let producers = g.producers();
    let mut removed = Vec::new();
    for bi in 0..g.nodes.len() {
        let Op::BatchNorm { epsilon } = g.nodes[bi].op else {
            continue;
        };
        let bn = g.nodes[bi].clone();
        let Some(x) = bn.input(0) else { continue };
        let Some(pi) = producers[x] else { continue };
        if uses[x] != 1 {
            continue;
        }
        let p = &g.nodes[pi];
        let channel_axis_ok = matches!(&p.op, Op::Conv(a) if a.layout == Layout::Nchw && a.activation == Activation::None)
            || matches!(&p.op, Op::FullyConnected { activation, .. } if *activation == Activation::None);
        if !channel_axis_ok {
            continue;
        }
        let (Some(gamma), Some(beta), Some(mean), Some(var)) = (
            f32_const(g, bn.input(1)),
            f32_const(g, bn.input(2)),
            f32_const(g, bn.input(3)),
            f32_const(g, bn.input(4)),
        ) else {
            continue;
        };
        let Some(w) = p.input(1).and_then(|w| g.const_data(w)) else {
            continue;
        };
        let m = w.shape[0];
        if gamma.len() != m || beta.len() != m || mean.len() != m || var.len() != m {
            continue;
        }
        let Ok(wv) = w.as_f32() else { continue };
        let per = wv.len() / m.max(1);
        let mul: Vec<f32> = (0..m)
            .map(|c| gamma[c] / (var[c] + epsilon).sqrt())
            .collect();
        let new_w: Vec<f32> = wv
            .iter()
            .enumerate()
            .map(|(i, &v)| v * mul[i / per])
            .collect();
        let old_b: Vec<f32> = match f32_const(g, p.input(2)) {
            Some(b) if b.len() == m => b.to_vec(),
            Some(_) => continue,
            None => vec![0.0; m],
        };
        let new_b: Vec<f32> = (0..m)
            .map(|c| (old_b[c] - mean[c]) * mul[c] + beta[c])
            .collect();
        let wshape = w.shape.clone();
        let p_name = p.name.clone();
        let wname = fresh_name(g, &format!("{p_name}_w_bn"));
        let bname = fresh_name(g, &format!("{p_name}_b_bn"));
        let wid = g.add_const(wname, Tensor::from_f32(wshape, new_w)?);
        let bid = g.add_const(bname, Tensor::from_f32(vec![m], new_b)?);
        let p = &mut g.nodes[pi];
        p.inputs.resize(3, None);
        p.inputs[1] = Some(wid);
        p.inputs[2] = Some(bid);
        // The producer now writes the BatchNorm's output directly.
        p.outputs[0] = bn.outputs[0];
        removed.push(bi);
    }
    let mut k = 0;
    g.nodes.retain(|_| {
        k += 1;
        !removed.contains(&(k - 1))
    });
    Ok(())
}

/// A float mean over axes 1 and 2 of a 4-D tensor (Keras GlobalAveragePooling2D as the
/// TFLite converter writes it: MEAN axes [1, 2]; axis 1 of a 3-D one for the 1-D
/// pooling) → an NHWC AveragePool whose window is
/// the whole plane, followed by a Reshape when the axes are dropped. The two compute
/// the same per-(n, c) average whatever the tensor means, and the pool has integer
/// kernels in the runtime, the TFLite writer and the C generator.
fn mean_to_pool(g: &mut Graph) -> Result<()> {
    let shapes = bind_input_shapes(g, 1)?;
    let facts = infer_graph(g, &shapes)?;
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for n in std::mem::take(&mut g.nodes) {
        let Op::Reduce {
            kind: ReduceKind::Mean,
            axes: Some(axes),
            keepdims,
            ..
        } = &n.op
        else {
            nodes.push(n);
            continue;
        };
        let x = n.input(0);
        let xs = x.and_then(|x| facts[x].as_ref()).map(|f| f.shape.clone());
        let f32_in = x.is_some_and(|x| g.values[x].dtype == DType::F32);
        // The axes between the batch and the last one: [1, 2] of a 4-D tensor, [1] of
        // a 3-D one (Keras GlobalAveragePooling1D).
        let plane = |rank: usize| {
            let mut a: Vec<i64> = axes
                .iter()
                .map(|&a| if a < 0 { a + rank as i64 } else { a })
                .collect();
            a.sort_unstable();
            a == (1..rank as i64 - 1).collect::<Vec<_>>()
        };
        let (Some(xs), true, [y]) = (xs, f32_in, n.outputs.as_slice()) else {
            nodes.push(n);
            continue;
        };
        let r = xs.len();
        if !matches!(r, 3 | 4) || !plane(r) || xs[1..r - 1].contains(&0) {
            nodes.push(n);
            continue;
        }
        let y = *y;
        let p = whole_plane_pool(xs[1..r - 1].to_vec());
        if *keepdims {
            nodes.push(Node {
                op: Op::AveragePool(p),
                inputs: vec![x],
                ..n
            });
            continue;
        }
        let pooled_name = fresh_name(g, &format!("{}_pooled", g.values[y].name));
        let pooled = g.add_value(pooled_name, DType::F32, None);
        let shape_name = fresh_name(g, &format!("{}_shape", g.values[y].name));
        // -1 for the batch: the graph may be run at any batch (shapes were inferred
        // at batch 1).
        let target = Tensor::from_i64(vec![2], vec![-1, xs[r - 1] as i64])?;
        let shape = g.add_const(shape_name, target);
        nodes.push(Node {
            name: format!("{}_pool", n.name),
            op: Op::AveragePool(p),
            inputs: vec![x],
            outputs: vec![pooled],
        });
        nodes.push(Node {
            name: n.name.clone(),
            op: Op::Reshape { allowzero: false },
            inputs: vec![Some(pooled), Some(shape)],
            outputs: vec![y],
        });
    }
    g.nodes = nodes;
    Ok(())
}

/// 1-D NHWC convolutions and pools (`[N, W, C]`, after [`to_nhwc`]) → their 2-D form
/// on `[N, 1, W, C]` between two Reshapes: kernel `[1, k]`, stride `[1, s]`, dilation
/// `[1, d]`, padding only along W, conv weights `[M, k, C/g]` → `[M, 1, k, C/g]`. The
/// arithmetic is the same element for element; what changes is that TFLite (whose
/// convolutions and pools are 2-D), the C generator and the 2-D fast kernels take it.
/// Back-to-back 1-D layers leave Reshape pairs that [`merge_reshapes`] collapses.
fn lift_1d(g: &mut Graph) -> Result<()> {
    let shapes = bind_input_shapes(g, 1)?;
    let facts = infer_graph(g, &shapes)?;
    let fact = |id: ValueId| facts.get(id).cloned().flatten().map(|f| f.shape);
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for mut n in std::mem::take(&mut g.nodes) {
        let (Some(x), &[y]) = (n.input(0), n.outputs.as_slice()) else {
            nodes.push(n);
            continue;
        };
        let (Some(xs), Some(ys)) = (fact(x), fact(y)) else {
            nodes.push(n);
            continue;
        };
        let is_1d = xs.len() == 3 && ys.len() == 3;
        let w1d = n
            .input(1)
            .filter(|&w| g.values[w].data.as_ref().is_some_and(|t| t.rank() == 3));
        let lifted = match &mut n.op {
            Op::Conv(a) if is_1d && a.layout == Layout::Nhwc && w1d.is_some() => {
                let w = w1d.expect("checked");
                let wt = g.values[w].data.clone().expect("checked");
                let (m, k, cg) = (wt.shape[0], wt.shape[1], wt.shape[2]);
                let name = fresh_name(g, &format!("{}_2d", g.values[w].name));
                let w2 = g.add_const(name, wt.reshaped(vec![m, 1, k, cg])?);
                g.values[w2].quant = g.values[w].quant.clone();
                n.inputs[1] = Some(w2);
                lift_conv_attrs(a, k);
                true
            }
            Op::MaxPool(p) | Op::AveragePool(p) if is_1d && p.layout == Layout::Nhwc => {
                lift_pool_attrs(p);
                true
            }
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::FullyConnected { .. }
            | Op::Binary { .. }
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
            | Op::Dequantize => false,
        };
        if !lifted {
            nodes.push(n);
            continue;
        }
        let x2 = push_reshape(g, &mut nodes, x, &[-1, 1, xs[1] as i64, xs[2] as i64], "2d");
        let y2_name = fresh_name(g, &format!("{}_2d", g.values[y].name));
        let y2 = g.add_value(y2_name, g.values[y].dtype, None);
        n.inputs[0] = Some(x2);
        n.outputs = vec![y2];
        let name = n.name.clone();
        nodes.push(n);
        let shape_name = fresh_name(g, &format!("{name}_1d_shape"));
        let shape = g.add_const(
            shape_name,
            Tensor::from_i64(vec![3], vec![-1, ys[1] as i64, ys[2] as i64])?,
        );
        nodes.push(Node {
            name: format!("{name}_1d"),
            op: Op::Reshape { allowzero: false },
            inputs: vec![Some(y2), Some(shape)],
            outputs: vec![y],
        });
    }
    g.nodes = nodes;
    Ok(())
}

/// A Reshape of `x` to `shape` (ONNX rules: one -1 is inferred) appended to `nodes`;
/// returns the new value.
fn push_reshape(
    g: &mut Graph,
    nodes: &mut Vec<Node>,
    x: ValueId,
    shape: &[i64],
    tag: &str,
) -> ValueId {
    let base = format!("{}_{tag}", g.values[x].name);
    let out = g.add_value(fresh_name(g, &base), g.values[x].dtype, None);
    let sname = fresh_name(g, &format!("{base}_shape"));
    let target =
        Tensor::from_i64(vec![shape.len()], shape.to_vec()).expect("a shape is a valid i64 vector");
    let sid = g.add_const(sname, target);
    nodes.push(Node {
        name: g.values[out].name.clone(),
        op: Op::Reshape { allowzero: false },
        inputs: vec![Some(x), Some(sid)],
        outputs: vec![out],
    });
    out
}

/// 1-D geometry → 2-D with a unit leading spatial axis (ONNX pads: begins, ends).
fn lift_geometry(
    kernel: &mut Vec<usize>,
    strides: &mut Vec<usize>,
    dilations: &mut Vec<usize>,
    pads: &mut Vec<usize>,
) {
    let one = |v: &[usize]| v.first().copied().unwrap_or(1);
    if !kernel.is_empty() {
        *kernel = vec![1, kernel[0]];
    }
    *strides = vec![1, one(strides)];
    *dilations = vec![1, one(dilations)];
    if !pads.is_empty() {
        let (b, e) = (pads[0], pads.get(1).copied().unwrap_or(0));
        *pads = vec![0, b, 0, e];
    }
}

fn lift_conv_attrs(a: &mut ConvAttrs, k: usize) {
    if a.kernel_shape.is_empty() {
        a.kernel_shape = vec![k];
    }
    lift_geometry(
        &mut a.kernel_shape,
        &mut a.strides,
        &mut a.dilations,
        &mut a.pads,
    );
}

fn lift_pool_attrs(p: &mut PoolAttrs) {
    lift_geometry(
        &mut p.kernel_shape,
        &mut p.strides,
        &mut p.dilations,
        &mut p.pads,
    );
}

/// An NHWC average pool whose window is the whole `spatial` plane (a global average).
fn whole_plane_pool(spatial: Vec<usize>) -> PoolAttrs {
    PoolAttrs {
        layout: Layout::Nhwc,
        strides: vec![1; spatial.len()],
        kernel_shape: spatial,
        dilations: vec![],
        pads: vec![],
        auto_pad: AutoPad::Valid,
        ceil_mode: false,
        count_include_pad: false,
        activation: Activation::None,
    }
}

/// Gemm / MatMul with constant 2-D weights and a 2-D input → FullyConnected.
fn to_fully_connected(g: &mut Graph) -> Result<()> {
    let shapes = bind_input_shapes(g, 1)?;
    let facts = infer_graph(g, &shapes)?;
    for ni in 0..g.nodes.len() {
        let n = g.nodes[ni].clone();
        let (trans_b, alpha, beta, c) = match n.op {
            Op::Gemm {
                alpha,
                beta,
                trans_a: false,
                trans_b,
            } => (trans_b, alpha, beta, n.input(2)),
            Op::MatMul => (false, 1.0, 0.0, None),
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::FullyConnected { .. }
            | Op::Binary { .. }
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
            | Op::Dequantize => continue,
        };
        let Some(a) = n.input(0) else { continue };
        let a_rank = facts[a].as_ref().map(|f| f.shape.len());
        // A MatMul of a `[..., K]` activation by constant `[K, N]` weights (PyTorch's
        // Linear on a sequence) is FULLY_CONNECTED with `keep_num_dims`, as the TFLite
        // converter writes it; Gemm takes 2-D operands only.
        let keep_num_dims = match (a_rank, &n.op) {
            (Some(2), _) => false,
            (Some(r), Op::MatMul) if r > 2 => true,
            _ => continue,
        };
        let Some(b) = n.input(1).and_then(|b| g.const_data(b)) else {
            continue;
        };
        let (Ok(bv), [r, cdim]) = (b.as_f32(), b.shape.as_slice()) else {
            continue;
        };
        let (r, cdim) = (*r, *cdim);
        // FullyConnected wants [N, K].
        let (nout, k) = if trans_b { (r, cdim) } else { (cdim, r) };
        let w: Vec<f32> = if trans_b {
            bv.iter().map(|v| v * alpha).collect()
        } else {
            (0..nout)
                .flat_map(|o| (0..k).map(move |i| (o, i)))
                .map(|(o, i)| bv[i * cdim + o] * alpha)
                .collect()
        };
        let bias: Option<Vec<f32>> = match c {
            None => None,
            Some(c) => match g.const_data(c) {
                Some(t) if t.dtype() == DType::F32 && t.len() == nout => {
                    Some(t.to_f32_vec().into_iter().map(|v| v * beta).collect())
                }
                Some(t) if t.dtype() == DType::F32 && t.len() == 1 => {
                    Some(vec![t.to_f32_vec()[0] * beta; nout])
                }
                _ => continue,
            },
        };
        let wid = g.add_const(
            fresh_name(g, &format!("{}_weights", n.name)),
            Tensor::from_f32(vec![nout, k], w)?,
        );
        let bid = match bias {
            Some(b) => Some(g.add_const(
                fresh_name(g, &format!("{}_bias", n.name)),
                Tensor::from_f32(vec![nout], b)?,
            )),
            None => None,
        };
        let node = &mut g.nodes[ni];
        node.op = Op::FullyConnected {
            activation: Activation::None,
            keep_num_dims,
            hybrid: None,
        };
        node.inputs = vec![Some(a), Some(wid), bid];
    }
    // A following Add of a constant [N] vector becomes the FC's bias.
    let uses = use_counts(g);
    let producers = g.producers();
    let mut removed = Vec::new();
    for ai in 0..g.nodes.len() {
        let n = &g.nodes[ai];
        let Op::Binary {
            kind: BinaryKind::Add,
            activation: Activation::None,
        } = n.op
        else {
            continue;
        };
        let (Some(x), Some(y)) = (n.input(0), n.input(1)) else {
            continue;
        };
        let (act, cst) = if g.const_data(y).is_some() {
            (x, y)
        } else {
            (y, x)
        };
        let Some(pi) = producers[act] else { continue };
        if uses[act] != 1 || !matches!(g.nodes[pi].op, Op::FullyConnected { .. }) {
            continue;
        }
        let p = &g.nodes[pi];
        let Some(w) = p.input(1).and_then(|w| g.const_data(w)) else {
            continue;
        };
        let nout = w.shape[0];
        let Some(cv) = g.const_data(cst).filter(|t| t.dtype() == DType::F32) else {
            continue;
        };
        if cv.len() != nout || cv.shape.iter().rev().skip(1).any(|&d| d != 1) {
            continue;
        }
        let mut b = f32_const(g, p.input(2)).map_or(vec![0.0; nout], |b| b.to_vec());
        for (bb, c) in b.iter_mut().zip(cv.to_f32_vec()) {
            *bb += c;
        }
        let out = n.outputs[0];
        let pname = p.name.clone();
        let bid = g.add_const(
            fresh_name(g, &format!("{pname}_bias")),
            Tensor::from_f32(vec![nout], b)?,
        );
        let p = &mut g.nodes[pi];
        p.inputs.resize(3, None);
        p.inputs[2] = Some(bid);
        p.outputs[0] = out;
        removed.push(ai);
    }
    let mut k = 0;
    g.nodes.retain(|_| {
        k += 1;
        !removed.contains(&(k - 1))
    });
    Ok(())
}

/// perm taking the original channel-first order to channel-last: [0, 2, .., r-1, 1].
fn to_last(r: usize) -> Vec<usize> {
    let mut p = vec![0];
    p.extend(2..r);
    p.push(1);
    p
}

/// Inverse of [`to_last`]: [0, r-1, 1, .., r-2].
fn to_first(r: usize) -> Vec<usize> {
    let mut p = vec![0, r - 1];
    p.extend(1..r - 1);
    p
}

fn permute<E: Copy>(v: &[E], shape: &[usize], perm: &[usize]) -> Vec<E> {
    let rank = shape.len();
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut in_strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        in_strides[a] = in_strides[a + 1] * shape[a + 1];
    }
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut out = Vec::with_capacity(v.len());
    let mut idx = vec![0usize; rank];
    for _ in 0..v.len() {
        let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(v[off]);
        for a in (0..rank).rev() {
            idx[a] += 1;
            if idx[a] < out_shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// An f32 tensor permuted by `perm`.
pub(crate) fn permute_tensor(t: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(permute(v, &t.shape, perm)),
        TensorData::I8(v) => TensorData::I8(permute(v, &t.shape, perm)),
        TensorData::I32(v) => TensorData::I32(permute(v, &t.shape, perm)),
        TensorData::I64(v) => TensorData::I64(permute(v, &t.shape, perm)),
        d => {
            return Err(CompressError::Unsupported(format!(
                "cannot permute a {} constant",
                d.dtype()
            )))
        }
    };
    Ok(Tensor::new(shape, data)?)
}

/// The two forms a value may be held in during the layout conversion.
#[derive(Default, Clone, Copy)]
struct Forms {
    first: Option<ValueId>,
    last: Option<ValueId>,
}

struct Layouter<'a> {
    old: &'a Graph,
    g: Graph,
    forms: Vec<Forms>,
    rank: Vec<Option<usize>>,
    shape: Vec<Option<Vec<usize>>>,
}

impl Layouter<'_> {
    fn push_transpose(&mut self, x: ValueId, perm: Vec<usize>, name: &str) -> ValueId {
        let out_name = fresh_name(&self.g, name);
        let dtype = self.g.values[x].dtype;
        let out = self.g.add_value(out_name.clone(), dtype, None);
        self.g
            .add_node(out_name, Op::Transpose { perm }, vec![Some(x)], vec![out]);
        out
    }

    /// Id holding `v` in its original layout, materializing a Transpose if needed.
    fn first(&mut self, v: ValueId) -> ValueId {
        let f = self.forms[v];
        if let Some(id) = f.first {
            return id;
        }
        let last = f.last.expect("a value has at least one form");
        let r = self.rank[v].expect("a channel-last value has a known rank");
        let name = format!("{}_to_first", self.old.values[v].name);
        let id = self.push_transpose(last, to_first(r), &name);
        self.forms[v].first = Some(id);
        id
    }

    /// Id holding `v` channel-last, materializing a Transpose if needed.
    fn last(&mut self, v: ValueId) -> Result<ValueId> {
        let f = self.forms[v];
        if let Some(id) = f.last {
            return Ok(id);
        }
        let first = f.first.expect("a value has at least one form");
        let r = self.rank[v].ok_or_else(|| {
            CompressError::Unsupported(format!(
                "value '{}' has no known rank",
                self.old.values[v].name
            ))
        })?;
        let id = if let Some(t) = self.old.values[v].data.clone() {
            let name = fresh_name(&self.g, &format!("{}_nhwc", self.old.values[v].name));
            self.g.add_const(name, permute_tensor(&t, &to_last(r))?)
        } else {
            let name = format!("{}_to_last", self.old.values[v].name);
            self.push_transpose(first, to_last(r), &name)
        };
        self.forms[v].last = Some(id);
        Ok(id)
    }

    fn has_last_only(&self, v: ValueId) -> bool {
        self.forms[v].last.is_some() && self.forms[v].first.is_none()
    }

    /// Emits `node` with inputs in the original form.
    fn keep(&mut self, n: &Node) {
        let inputs: Vec<Option<ValueId>> =
            n.inputs.iter().map(|x| x.map(|v| self.first(v))).collect();
        self.g
            .add_node(n.name.clone(), n.op.clone(), inputs, n.outputs.clone());
        for &o in &n.outputs {
            self.forms[o].first = Some(o);
        }
    }

    /// Emits `node` (already converted) reading `inputs`, its output 0 channel-last.
    fn emit_last(&mut self, n: &Node, op: Op, inputs: Vec<Option<ValueId>>) {
        self.g
            .add_node(n.name.clone(), op, inputs, n.outputs.clone());
        for &o in &n.outputs {
            self.forms[o].last = Some(o);
        }
    }

    /// A constant operand of an elementwise op broadcast against a rank-`r` activation,
    /// brought to channel-last order (numpy broadcasting aligns trailing dims).
    fn const_last(&mut self, v: ValueId, r: usize) -> Result<Option<ValueId>> {
        let t = self.old.values[v].data.clone().expect("constant");
        if t.len() == 1 {
            return Ok(Some(v));
        }
        if t.rank() > r {
            return Ok(None);
        }
        let mut shape = vec![1usize; r - t.rank()];
        shape.extend(&t.shape);
        let t = t.reshaped(shape)?;
        let p = permute_tensor(&t, &to_last(r))?;
        let name = fresh_name(&self.g, &format!("{}_nhwc", self.old.values[v].name));
        Ok(Some(self.g.add_const(name, p)))
    }

    fn convert(&mut self, n: &Node) -> Result<()> {
        let x = n.input(0);
        let rank_x = x.and_then(|x| self.rank[x]);
        match &n.op {
            // tf2onnx's NHWC → NCHW at the input: the output's channel-last form is the
            // input itself.
            Op::Transpose { perm } if rank_x.is_some_and(|r| r >= 3 && *perm == to_first(r)) => {
                let x = x.expect("checked");
                let src = self.first(x);
                self.forms[n.outputs[0]].last = Some(src);
            }
            Op::Transpose { perm } if rank_x.is_some_and(|r| r >= 3 && *perm == to_last(r)) => {
                let x = x.expect("checked");
                let src = self.last(x)?;
                self.forms[n.outputs[0]].first = Some(src);
            }
            Op::Conv(a)
                if a.layout == Layout::Nchw
                    && matches!(rank_x, Some(3 | 4))
                    && n.input(1)
                        .is_some_and(|w| self.old.values[w].data.is_some()) =>
            {
                let r = rank_x.expect("checked");
                let w = n.input(1).expect("checked");
                let wt = self.old.values[w].data.clone().expect("checked");
                let wl = permute_tensor(&wt, &to_last(r))?;
                let wname = fresh_name(&self.g, &format!("{}_ohwi", self.old.values[w].name));
                let wid = self.g.add_const(wname, wl);
                let xl = self.last(x.expect("conv has an input"))?;
                let mut inputs = n.inputs.clone();
                inputs[0] = Some(xl);
                inputs[1] = Some(wid);
                if let Some(b) = n.input(2) {
                    inputs[2] = Some(self.first(b));
                }
                let mut a2: ConvAttrs = a.clone();
                a2.layout = Layout::Nhwc;
                if a2.kernel_shape.is_empty() {
                    a2.kernel_shape = wt.shape[2..].to_vec();
                }
                self.emit_last(n, Op::Conv(a2), inputs);
            }
            Op::MaxPool(p) | Op::AveragePool(p)
                if p.layout == Layout::Nchw && matches!(rank_x, Some(3 | 4)) =>
            {
                let xl = self.last(x.expect("pool has an input"))?;
                let mut p2: PoolAttrs = p.clone();
                p2.layout = Layout::Nhwc;
                let op = if matches!(n.op, Op::MaxPool(_)) {
                    Op::MaxPool(p2)
                } else {
                    Op::AveragePool(p2)
                };
                self.emit_last(n, op, vec![Some(xl)]);
            }
            // A mean over every spatial axis that keeps them (how torch's dynamo
            // exporter writes adaptive_avg_pool2d(x, 1): ReduceMean axes [-1, -2]) is
            // a global average pool, and runs on the integer pool kernel as one.
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: Some(axes),
                keepdims: true,
                ..
            } if rank_x.is_some_and(|r| matches!(r, 3 | 4) && reduces_spatial(axes, r)) => {
                let mut gap = n.clone();
                gap.op = Op::GlobalAveragePool;
                return self.convert(&gap);
            }
            Op::GlobalAveragePool if matches!(rank_x, Some(3 | 4)) => {
                let xv = x.expect("pool has an input");
                let Some(shape) = self.shape[xv].clone() else {
                    self.keep(n);
                    return Ok(());
                };
                let xl = self.last(xv)?;
                let p = whole_plane_pool(shape[2..].to_vec());
                self.emit_last(n, Op::AveragePool(p), vec![Some(xl)]);
            }
            Op::Unary(_)
            | Op::Clip { .. }
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::Identity
                if x.is_some_and(|x| self.has_last_only(x)) =>
            {
                let xl = self.last(x.expect("checked"))?;
                self.emit_last(n, n.op.clone(), vec![Some(xl)]);
            }
            Op::Binary { .. } => {
                let out_rank = self.rank[n.outputs[0]];
                let acts: Vec<ValueId> = n
                    .present_inputs()
                    .filter(|&v| self.old.values[v].data.is_none())
                    .collect();
                let any_last = acts.iter().any(|&v| self.has_last_only(v));
                let all_full_rank = acts.iter().all(|&v| self.rank[v] == out_rank);
                match out_rank {
                    Some(r) if any_last && all_full_rank && r >= 3 => {
                        let mut inputs = Vec::new();
                        for v in n.inputs.iter() {
                            let Some(v) = *v else {
                                inputs.push(None);
                                continue;
                            };
                            if self.old.values[v].data.is_some() {
                                match self.const_last(v, r)? {
                                    Some(c) => inputs.push(Some(c)),
                                    None => {
                                        self.keep(n);
                                        return Ok(());
                                    }
                                }
                            } else {
                                inputs.push(Some(self.last(v)?));
                            }
                        }
                        self.emit_last(n, n.op.clone(), inputs);
                    }
                    _ => self.keep(n),
                }
            }
            Op::Concat { axis, activation } => {
                let r = self.rank[n.outputs[0]];
                let ins: Vec<ValueId> = n.present_inputs().collect();
                let any_last = ins.iter().any(|&v| self.has_last_only(v));
                let consts = ins.iter().any(|&v| self.old.values[v].data.is_some());
                match r {
                    Some(r) if any_last && !consts && r >= 3 => {
                        let a = if *axis < 0 { *axis + r as i64 } else { *axis } as usize;
                        let new_axis = to_last(r).iter().position(|&p| p == a).unwrap_or(a);
                        let mut inputs = Vec::new();
                        for v in ins {
                            inputs.push(Some(self.last(v)?));
                        }
                        let op = Op::Concat {
                            axis: new_axis as i64,
                            activation: *activation,
                        };
                        self.emit_last(n, op, inputs);
                    }
                    _ => self.keep(n),
                }
            }
            Op::Pad { mode, pads, value }
                if x.is_some_and(|x| self.has_last_only(x))
                    && rank_x.is_some_and(|r| pads.len() == 2 * r) =>
            {
                let r = rank_x.expect("checked");
                let perm = to_last(r);
                let mut p2 = Vec::with_capacity(2 * r);
                for half in 0..2 {
                    for &a in &perm {
                        p2.push(pads[half * r + a]);
                    }
                }
                let xl = self.last(x.expect("checked"))?;
                let op = Op::Pad {
                    mode: *mode,
                    pads: p2,
                    value: *value,
                };
                self.emit_last(n, op, vec![Some(xl)]);
            }
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::FullyConnected { .. }
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
            | Op::Dequantize => self.keep(n),
        }
        Ok(())
    }
}

/// Converts NCHW convolutions and pools to NHWC (see the module doc).
fn to_nhwc(old: &Graph) -> Result<Graph> {
    let shapes = bind_input_shapes(old, 1)?;
    let facts = infer_graph(old, &shapes)?;
    let mut shape: Vec<Option<Vec<usize>>> = facts
        .iter()
        .map(|f| f.as_ref().map(|f| f.shape.clone()))
        .collect();
    for (i, v) in old.values.iter().enumerate() {
        if let Some(t) = &v.data {
            shape[i] = Some(t.shape.clone());
        }
    }
    let rank = shape.iter().map(|s| s.as_ref().map(|s| s.len())).collect();
    let mut g = old.clone();
    g.nodes.clear();
    let mut forms = vec![Forms::default(); old.values.len()];
    for (i, v) in old.values.iter().enumerate() {
        if v.data.is_some() {
            forms[i].first = Some(i);
        }
    }
    for &i in &old.inputs {
        forms[i].first = Some(i);
    }
    let mut l = Layouter {
        old,
        g,
        forms,
        rank,
        shape,
    };
    for n in &old.nodes {
        l.convert(n)?;
    }
    // Graph outputs in their original layout, under their original names.
    let mut outputs = Vec::new();
    for &o in &old.outputs {
        let id = l.first(o);
        if id != o {
            let name = old.values[o].name.clone();
            let tmp = fresh_name(&l.g, &format!("{name}_nhwc"));
            l.g.values[o].name = tmp;
            l.g.values[id].name = name;
        }
        outputs.push(id);
    }
    l.g.outputs = outputs;
    // Transposes that move no data become Reshapes (and the shape is left symbolic
    // in the batch: 0 copies the input's dimension).
    let shapes_now = {
        let mut g2 = l.g.clone();
        compact(&mut g2);
        g2
    };
    let mut g = shapes_now;
    let s = bind_input_shapes(&g, 1)?;
    let f = infer_graph(&g, &s)?;
    for ni in 0..g.nodes.len() {
        let Op::Transpose { perm } = &g.nodes[ni].op else {
            continue;
        };
        let x = g.nodes[ni].inputs[0].expect("transpose input");
        let Some(xs) = f[x].as_ref().map(|f| f.shape.clone()) else {
            continue;
        };
        if perm.first() != Some(&0) {
            continue;
        }
        let moved: Vec<usize> = perm
            .iter()
            .copied()
            .filter(|&p| xs[p] != 1 && p != 0)
            .collect();
        if moved.windows(2).all(|w| w[0] < w[1]) {
            let mut target: Vec<i64> = perm.iter().map(|&p| xs[p] as i64).collect();
            target[0] = 0;
            let name = fresh_name(&g, &format!("{}_shape", g.nodes[ni].name));
            let rank = target.len();
            let sid = g.add_const(name, Tensor::from_i64(vec![rank], target)?);
            let node = &mut g.nodes[ni];
            node.op = Op::Reshape { allowzero: false };
            node.inputs.push(Some(sid));
        }
    }
    Ok(g)
}

/// `Reshape(Reshape(x, a), b)` → `Reshape(x, b)` when the middle value has no other
/// reader and `b` has no 0 entries (which would copy from the middle shape).
fn merge_reshapes(g: &mut Graph) {
    let uses = use_counts(g);
    let producers = g.producers();
    for ni in 0..g.nodes.len() {
        let n = &g.nodes[ni];
        if !matches!(n.op, Op::Reshape { allowzero: false } | Op::Flatten { .. }) {
            continue;
        }
        if let Op::Reshape { .. } = n.op {
            let ok = n
                .input(1)
                .and_then(|s| g.const_data(s))
                .is_some_and(|t| t.to_i64_vec().iter().all(|&d| d != 0));
            if !ok {
                continue;
            }
        }
        let Some(x) = n.input(0) else { continue };
        let Some(pi) = producers[x] else { continue };
        if uses[x] != 1 || !matches!(g.nodes[pi].op, Op::Reshape { .. }) {
            continue;
        }
        let src = g.nodes[pi].inputs[0];
        g.nodes[ni].inputs[0] = src;
    }
}

/// Fuses a Relu-like node into its producer when the producer supports a fused
/// activation and its output has no other reader.
fn fuse_activations(g: &mut Graph) {
    let uses = use_counts(g);
    let producers = g.producers();
    let mut removed = Vec::new();
    for ni in 0..g.nodes.len() {
        let n = &g.nodes[ni];
        let act = match &n.op {
            Op::Unary(UnaryKind::Relu) => Activation::Relu,
            Op::Unary(UnaryKind::Relu6) => Activation::Relu6,
            Op::Clip {
                min: Some(lo),
                max: None,
            } if *lo == 0.0 => Activation::Relu,
            Op::Clip {
                min: Some(lo),
                max: Some(hi),
            } if *lo == 0.0 && *hi == 6.0 => Activation::Relu6,
            Op::Clip {
                min: Some(lo),
                max: Some(hi),
            } if *lo == -1.0 && *hi == 1.0 => Activation::ReluN1To1,
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::FullyConnected { .. }
            | Op::Binary { .. }
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
            | Op::Dequantize => continue,
        };
        let Some(x) = n.input(0) else { continue };
        let Some(pi) = producers[x] else { continue };
        if uses[x] != 1 || removed.contains(&pi) {
            continue;
        }
        let out = n.outputs[0];
        let slot: Option<&mut Activation> = match &mut g.nodes[pi].op {
            Op::Conv(a) => Some(&mut a.activation),
            Op::FullyConnected { activation, .. } => Some(activation),
            Op::Binary {
                kind: BinaryKind::Add | BinaryKind::Sub | BinaryKind::Mul,
                activation,
            } => Some(activation),
            Op::MaxPool(p) | Op::AveragePool(p) => Some(&mut p.activation),
            Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::Binary { .. }
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
            | Op::Concat { .. }
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
        };
        match slot {
            Some(a) if *a == Activation::None => *a = act,
            _ => continue,
        }
        g.nodes[pi].outputs[0] = out;
        removed.push(ni);
    }
    let mut k = 0;
    g.nodes.retain(|_| {
        k += 1;
        !removed.contains(&(k - 1))
    });
}

/// Weighted nodes of a prepared graph: (node index, weight value id), for Conv and
/// FullyConnected with constant f32 weights.
pub fn weighted_nodes(g: &Graph) -> Vec<(usize, ValueId)> {
    g.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, Op::Conv(_) | Op::FullyConnected { .. }))
        .filter_map(|(i, n)| {
            let w = n.input(1)?;
            (g.values[w].data.as_ref()?.dtype() == DType::F32).then_some((i, w))
        })
        .collect()
}

/// Pool attributes for a NHWC pool over the whole spatial extent (used by tests).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms_are_inverse() {
        for r in 3..6 {
            let a = to_last(r);
            let b = to_first(r);
            let comp: Vec<usize> = (0..r).map(|i| a[b[i]]).collect();
            assert_eq!(comp, (0..r).collect::<Vec<_>>());
        }
        assert_eq!(to_last(4), vec![0, 2, 3, 1]);
        assert_eq!(to_first(4), vec![0, 3, 1, 2]);
    }

    /// A per-axis DequantizeLinear of constant weights whose scale is shorter than the
    /// axis: an error naming the node (it used to index past the scales and panic).
    #[test]
    fn short_per_axis_scale_is_an_error() {
        let mut g = Graph::new("short_scale");
        let x = g.add_value(
            "x",
            DType::F32,
            Some(vec![edgeopt_ir::Dim::Fixed(1), edgeopt_ir::Dim::Fixed(3)]),
        );
        g.inputs.push(x);
        let wq = g.add_const(
            "wq",
            Tensor::new(vec![4, 3], TensorData::I8(vec![1; 12])).unwrap(),
        );
        let s = g.add_const("s", Tensor::from_f32(vec![2], vec![0.5, 0.25]).unwrap());
        let w = g.add_value("w", DType::F32, None);
        g.add_node(
            "dq",
            Op::DequantizeLinear {
                axis: 0,
                block_size: 0,
            },
            vec![Some(wq), Some(s)],
            vec![w],
        );
        let y = g.add_value("y", DType::F32, None);
        g.add_node("mm", Op::MatMul, vec![Some(x), Some(w)], vec![y]);
        g.outputs.push(y);
        let err = fold_const_dequantize(&mut g).expect_err("short scale");
        assert!(err.to_string().contains("dq"), "{err}");
    }

    #[test]
    fn permute_matches_definition() {
        let t = Tensor::from_f32(vec![1, 2, 3, 2], (0..12).map(|v| v as f32).collect()).unwrap();
        let p = permute_tensor(&t, &[0, 2, 3, 1]).unwrap();
        assert_eq!(p.shape, vec![1, 3, 2, 2]);
        // out[0,h,w,c] = in[0,c,h,w]
        let v = p.as_f32().unwrap();
        for c in 0..2 {
            for h in 0..3 {
                for w in 0..2 {
                    assert_eq!(v[(h * 2 + w) * 2 + c], (c * 6 + h * 2 + w) as f32);
                }
            }
        }
    }
}
