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
use edgeopt_ir::{DType, Graph, Node, ValueId, Work};

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
        let work = node_work(node, &facts);
        layers.push(LayerProfile {
            name: node.name.clone(),
            op: node.op.name(),
            output_shapes,
            output_dtypes,
            params,
            macs: work.macs,
            elem_ops: work.elem_ops,
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

/// The work of one node for the inferred shapes (the rule is [`Op::work`]).
fn node_work(node: &Node, facts: &[Option<OutputFact>]) -> Work {
    let shape_of = |id: ValueId| facts.get(id)?.as_ref().map(|f| f.shape.as_slice());
    let inputs: Vec<Option<&[usize]>> = node.inputs.iter().map(|i| i.and_then(shape_of)).collect();
    let outputs: Vec<Option<&[usize]>> = node.outputs.iter().map(|&o| shape_of(o)).collect();
    node.op.work(&inputs, &outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeopt_ir::{
        Activation, AutoPad, BinaryKind, ConvAttrs, Dim, Layout, Op, Tensor, UnaryKind, ValueId,
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
        let macs: Vec<u64> = g.nodes.iter().map(|n| node_work(n, &f).macs).collect();
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
        let elem: Vec<u64> = g.nodes.iter().map(|n| node_work(n, &f).elem_ops).collect();
        assert_eq!(elem, vec![0, 512, 0, 512, 0, 0]);
    }
}
