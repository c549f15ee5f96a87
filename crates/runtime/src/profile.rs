//! Per-layer profile of a graph for concrete input shapes: output shapes, parameters,
//! multiply-accumulates, weight bytes (flash) and activation bytes (RAM), with the
//! peak arena from the memory planner.
//!
//! Counting rules:
//! - params: elements of the constant inputs of a node; a constant shared by several
//!   nodes counts once, at its first user. So do weight bytes (storage bytes, 4-bit
//!   packed).
//! - MACs: convolutions `out_elems × (C_in/group) × kernel_elems` (depthwise is the
//!   `group == C_in` case); transposed convolutions `in_elems × (C_out/group) ×
//!   kernel_elems`; Gemm/MatMul/FullyConnected `M × N × K` (per batch). Bias additions
//!   and element-wise ops count no MACs; their element work is in `elem_ops`.
//! - activation bytes: the bytes of the node's outputs.
//! - nodes that compute from constants only (the `DequantizeLinear` of int8 weights in
//!   QDQ models) are marked `folded`: a deployment computes them at build time, so the
//!   run-time totals (MACs, element ops, activations) leave them out.

use crate::error::Result;
use crate::planner::{plan_from_facts, tensor_bytes, PlanOptions};
use edgeopt_ir::shape::{bind_input_shapes, infer_graph, OutputFact};
use edgeopt_ir::{DType, Graph, Node, Op};

/// Profile of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerProfile {
    pub name: String,
    pub op: &'static str,
    pub output_shapes: Vec<Vec<usize>>,
    pub output_dtypes: Vec<DType>,
    pub params: u64,
    pub macs: u64,
    /// Element operations of ops that do no MACs (one per output element of
    /// element-wise ops, pooling windows, reductions); 0 for data movement.
    pub elem_ops: u64,
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    /// Computed from constants only: folded before inference (see
    /// [`crate::planner::PlanOptions::fold_constants`]); its MACs, element ops and
    /// output bytes are left out of the run-time totals.
    pub folded: bool,
}

/// Profile of a whole graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProfile {
    pub input_shapes: Vec<Vec<usize>>,
    pub layers: Vec<LayerProfile>,
    pub total_params: u64,
    pub total_macs: u64,
    pub total_elem_ops: u64,
    pub total_weight_bytes: u64,
    /// Sum of the layers' output bytes (graph inputs excluded).
    pub total_activation_bytes: u64,
    /// Bytes of the graph inputs.
    pub input_bytes: u64,
    /// Peak arena from the memory planner.
    pub peak_arena_bytes: u64,
    /// Every activation (inputs included) in its own memory, no reuse.
    pub naive_activation_bytes: u64,
    /// Bytes of the values folded from constants (kept beside the weights).
    pub folded_bytes: u64,
}

/// Profiles the graph for its declared inputs, dynamic leading dims bound to `batch`.
pub fn profile_batch(graph: &Graph, batch: usize) -> Result<ModelProfile> {
    let shapes = bind_input_shapes(graph, batch)?;
    profile(graph, &shapes)
}

/// Profiles the graph for inputs of the given shapes.
pub fn profile(graph: &Graph, input_shapes: &[Vec<usize>]) -> Result<ModelProfile> {
    let facts = infer_graph(graph, input_shapes)?;
    let plan = plan_from_facts(graph, &facts, PlanOptions::default())?;
    let mut counted = vec![false; graph.values.len()];
    let mut layers = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let mut params = 0u64;
        let mut weight_bytes = 0u64;
        for i in node.present_inputs() {
            if let Some(t) = graph.const_data(i) {
                if !counted[i] {
                    counted[i] = true;
                    params += t.len() as u64;
                    weight_bytes += t.storage_bytes() as u64;
                }
            }
        }
        let mut output_shapes = Vec::new();
        let mut output_dtypes = Vec::new();
        let mut activation_bytes = 0u64;
        for &o in &node.outputs {
            if let Some(f) = facts.get(o).and_then(|f| f.as_ref()) {
                activation_bytes += tensor_bytes(f.dtype, &f.shape)? as u64;
                output_shapes.push(f.shape.clone());
                output_dtypes.push(f.dtype);
            }
        }
        let folded = !node.outputs.is_empty()
            && node
                .outputs
                .iter()
                .all(|&o| plan.folded.get(o) == Some(&true));
        layers.push(LayerProfile {
            name: node.name.clone(),
            op: node.op.name(),
            output_shapes,
            output_dtypes,
            params,
            macs: node_macs(node, &facts),
            elem_ops: node_elem_ops(node, &facts),
            weight_bytes,
            activation_bytes,
            folded,
        });
    }
    let mut input_bytes = 0u64;
    for &i in &graph.inputs {
        if let Some(f) = facts.get(i).and_then(|f| f.as_ref()) {
            input_bytes += tensor_bytes(f.dtype, &f.shape)? as u64;
        }
    }
    // Run-time totals leave out what is folded at build time.
    let run_time = || layers.iter().filter(|l| !l.folded);
    Ok(ModelProfile {
        input_shapes: input_shapes.to_vec(),
        total_params: layers.iter().map(|l| l.params).sum(),
        total_macs: run_time().map(|l| l.macs).fold(0, u64::saturating_add),
        total_elem_ops: run_time().map(|l| l.elem_ops).fold(0, u64::saturating_add),
        total_weight_bytes: layers.iter().map(|l| l.weight_bytes).sum(),
        total_activation_bytes: run_time().map(|l| l.activation_bytes).sum(),
        folded_bytes: plan.folded_bytes as u64,
        layers,
        input_bytes,
        peak_arena_bytes: plan.arena_bytes as u64,
        naive_activation_bytes: plan.naive_bytes as u64,
    })
}

fn numel(s: &[usize]) -> u64 {
    s.iter()
        .map(|&d| d as u64)
        .fold(1u64, |a, d| a.saturating_mul(d))
}

/// Multiply-accumulates of one node (0 for ops without a weight product).
pub fn node_macs(node: &Node, facts: &[Option<OutputFact>]) -> u64 {
    let shape = |i: usize| -> Option<&[usize]> {
        let id = node.input(i)?;
        facts.get(id)?.as_ref().map(|f| f.shape.as_slice())
    };
    let out = || -> Option<&[usize]> {
        let id = *node.outputs.first()?;
        facts.get(id)?.as_ref().map(|f| f.shape.as_slice())
    };
    // Weights are [M, ...] in both layouts (NCHW: [M, C/g, *k]; NHWC: [M, *k, C/g]),
    // so (C_in/group) × kernel_elems is the product of all but the first dimension.
    let conv = |w: usize| -> Option<u64> {
        let w = shape(w)?;
        Some(numel(out()?).saturating_mul(numel(w.get(1..)?)))
    };
    // Matrix products: each output element is a K-long dot product.
    let matmul =
        |k: Option<usize>| -> Option<u64> { Some(numel(out()?).saturating_mul(k? as u64)) };
    let r = match &node.op {
        Op::Conv(_) => conv(1),
        Op::ConvInteger(_) => conv(1),
        Op::QLinearConv(_) => conv(3),
        Op::ConvTranspose(_) => {
            // Every input element is scattered into (C_out/group) × kernel outputs.
            let (x, w) = (shape(0), shape(1));
            x.zip(w)
                .and_then(|(x, w)| Some(numel(x).saturating_mul(numel(w.get(1..)?))))
        }
        Op::Gemm { trans_a, .. } => {
            let a = shape(0);
            matmul(
                a.and_then(|a| if *trans_a { a.first() } else { a.get(1) })
                    .copied(),
            )
        }
        Op::MatMul | Op::MatMulInteger => matmul(shape(0).and_then(|a| a.last()).copied()),
        Op::QLinearMatMul => matmul(shape(0).and_then(|a| a.last()).copied()),
        Op::FullyConnected { .. } => matmul(shape(1).and_then(|w| w.get(1)).copied()),
        Op::Lstm { hidden_size, .. } | Op::Gru { hidden_size, .. } => {
            // Every step of every direction multiplies [I + H] by the gate rows (4H for
            // LSTM, 3H for GRU); y holds one H-vector per step and direction.
            let gates = if matches!(node.op, Op::Lstm { .. }) {
                4
            } else {
                3
            };
            let (y, w) = (out(), shape(1));
            y.zip(w).and_then(|(y, w)| {
                let k = *w.get(2)? as u64 + *hidden_size as u64;
                Some(numel(y).saturating_mul(gates).saturating_mul(k))
            })
        }
        _ => None,
    };
    r.unwrap_or(0)
}

/// Element operations of ops without MACs (see [`LayerProfile::elem_ops`]).
fn node_elem_ops(node: &Node, facts: &[Option<OutputFact>]) -> u64 {
    let out = node
        .outputs
        .first()
        .and_then(|&o| facts.get(o)?.as_ref())
        .map(|f| numel(&f.shape))
        .unwrap_or(0);
    let input0 = node
        .input(0)
        .and_then(|i| facts.get(i)?.as_ref())
        .map(|f| numel(&f.shape))
        .unwrap_or(0);
    match &node.op {
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
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeopt_ir::{
        Activation, AutoPad, BinaryKind, ConvAttrs, Dim, Layout, Tensor, UnaryKind, ValueId,
    };

    fn fixed(s: &[usize]) -> Option<Vec<Dim>> {
        Some(s.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    fn facts(g: &Graph) -> Vec<Option<OutputFact>> {
        g.values
            .iter()
            .map(|v| {
                Some(OutputFact {
                    dtype: v.dtype,
                    shape: v.fixed_shape()?,
                    value: None,
                })
            })
            .collect()
    }

    fn conv(group: usize) -> Op {
        Op::Conv(ConvAttrs {
            layout: Layout::Nchw,
            kernel_shape: vec![],
            strides: vec![],
            dilations: vec![],
            pads: vec![1, 1, 1, 1],
            auto_pad: AutoPad::NotSet,
            group,
            activation: Activation::None,
            hybrid: None,
        })
    }

    /// Conv(3->8, 3x3) -> Relu -> depthwise Conv(8, 3x3) -> Add(shared bias) ->
    /// Reshape -> FullyConnected(512 -> 10).
    fn net() -> (Graph, ValueId) {
        let mut g = Graph::new("net");
        let x = g.add_value("x", DType::F32, fixed(&[1, 3, 8, 8]));
        let w1 = g.add_const("w1", Tensor::zeros(DType::F32, vec![8, 3, 3, 3]).unwrap());
        let b = g.add_const("b", Tensor::zeros(DType::F32, vec![8]).unwrap());
        let a = g.add_value("a", DType::F32, fixed(&[1, 8, 8, 8]));
        let r = g.add_value("r", DType::F32, fixed(&[1, 8, 8, 8]));
        let wd = g.add_const("wd", Tensor::zeros(DType::F32, vec![8, 1, 3, 3]).unwrap());
        let d = g.add_value("d", DType::F32, fixed(&[1, 8, 8, 8]));
        let s = g.add_value("s", DType::F32, fixed(&[1, 8, 8, 8]));
        let shape = g.add_const("shape", Tensor::from_i64(vec![2], vec![1, 512]).unwrap());
        let f = g.add_value("f", DType::F32, fixed(&[1, 512]));
        let wf = g.add_const("wf", Tensor::zeros(DType::I4, vec![10, 512]).unwrap());
        let y = g.add_value("y", DType::F32, fixed(&[1, 10]));
        g.inputs = vec![x];
        g.add_node("conv", conv(1), vec![Some(x), Some(w1), Some(b)], vec![a]);
        g.add_node("relu", Op::Unary(UnaryKind::Relu), vec![Some(a)], vec![r]);
        g.add_node("dw", conv(8), vec![Some(r), Some(wd), Some(b)], vec![d]);
        g.add_node(
            "add",
            Op::Binary {
                kind: BinaryKind::Add,
                activation: Activation::None,
            },
            vec![Some(d), Some(r)],
            vec![s],
        );
        g.add_node(
            "flat",
            Op::Reshape { allowzero: false },
            vec![Some(s), Some(shape)],
            vec![f],
        );
        g.add_node(
            "fc",
            Op::FullyConnected {
                activation: Activation::None,
                keep_num_dims: false,
                hybrid: None,
            },
            vec![Some(f), Some(wf), None],
            vec![y],
        );
        g.outputs = vec![y];
        (g, y)
    }

    #[test]
    fn macs_params_bytes() {
        let (g, _) = net();
        let f = facts(&g);
        let macs: Vec<u64> = g.nodes.iter().map(|n| node_macs(n, &f)).collect();
        // conv: 512 outputs x 3 x 9; depthwise: 512 x 1 x 9; fc: 10 x 512.
        assert_eq!(macs, vec![512 * 27, 0, 512 * 9, 0, 0, 5120]);
    }

    #[test]
    fn profile_from_declared_facts() {
        // `profile` needs shape inference; check the pieces it adds on declared facts.
        let (g, _) = net();
        let f = facts(&g);
        let plan = plan_from_facts(&g, &f, PlanOptions::default()).unwrap();
        plan.check().unwrap();
        // x 768 + a,r,d,s 2048 each + f 2048 + y 40.
        assert_eq!(plan.naive_bytes, 768 + 5 * 2048 + 40);
        assert!(plan.arena_bytes < plan.naive_bytes);
        assert_eq!(g.param_count(), 216 + 8 + 72 + 2 + 5120);
        let elem: Vec<u64> = g.nodes.iter().map(|n| node_elem_ops(n, &f)).collect();
        assert_eq!(elem, vec![0, 512, 0, 512, 0, 0]);
    }
}
