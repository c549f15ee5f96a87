//! Lowering: an IR graph becomes a model that burn can differentiate.
//!
//! The lowered model is an interpreter over burn tensors rather than a fixed
//! `#[derive(Module)]` struct: the IR is a DAG (residual adds, concats, several
//! outputs) whose ops and ranks are data, so each node is evaluated with the matching
//! burn op at run time and burn's autodiff records the tape. Parameters are the
//! graph's float constants in trainable slots (conv/dense weights and biases, BN
//! scale/shift, bias vectors added after a matmul); BN running statistics are buffers;
//! every other constant is frozen data.
//!
//! Layouts: ONNX graphs are NCHW. TFLite graphs (`Layout::Nhwc`) are lowered by
//! permuting to channels-first around each spatial op (conv, pool) and permuting the
//! weights `[M, *k, C/g] -> [M, C/g, *k]`, so gradients land on the weights in their
//! IR layout and write-back is a plain copy.

use crate::dyn_tensor::{norm_axis, DynTensor, Result};
use crate::hooks::{range_of, Hooks, LossCtx};
use crate::TrainError;
use burn::tensor::module::{
    avg_pool1d, avg_pool2d, batch_norm, batch_norm_train, conv1d, conv2d, max_pool1d, max_pool2d,
};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode as BurnPad};
use burn::tensor::{Device, Tensor};
use edgeopt_ir::{
    Activation, AutoPad, BinaryKind, ConvAttrs, DType, DeadNodes, Graph, Layout, NodeId, Op,
    PadMode, Patch, PoolAttrs, ReduceKind, Shapes, UnaryKind, ValId, ValueId,
};
use std::collections::{BTreeMap, HashMap};

/// Train (batch statistics, observers update) or eval (running statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// What a parameter is, so optimizers and compression passes can treat roles apart
/// (no weight decay on biases and BN; per-channel quantization axis; pruning targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// Conv / dense weight; `out_axis` is its output-channel axis.
    Weight {
        out_axis: usize,
    },
    Bias,
    BnScale,
    BnShift,
    /// BatchNorm running mean / variance: updated in train mode, never by gradients.
    BnMean,
    BnVar,
    /// A trainable tensor no node reads, used by a hook (e.g. a learned quantization
    /// step, [`crate::hooks::LearnedStep`]); added by [`Model::add_aux_param`].
    Aux,
}

impl ParamRole {
    pub fn is_buffer(self) -> bool {
        matches!(self, ParamRole::BnMean | ParamRole::BnVar)
    }
}

#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub name: String,
    pub value: ValueId,
    pub shape: Vec<usize>,
    pub role: ParamRole,
}

/// Momentum of BN running statistics (PyTorch's default: new = 0.9 old + 0.1 batch).
pub const BN_MOMENTUM: f32 = 0.1;
/// Momentum of the activation-range observers of fake-quant.
pub const OBSERVER_MOMENTUM: f32 = 0.01;

/// A lowered graph with its current parameter values.
pub struct Model {
    graph: Graph,
    /// Per node: resolved data the op needs from constants (Reshape targets...).
    resolved: Vec<Resolved>,
    pub params: Vec<ParamInfo>,
    /// Current values (non-autodiff), indexed like `params`.
    state: Vec<DynTensor>,
    param_of: HashMap<ValueId, usize>,
    consts: HashMap<ValueId, DynTensor>,
    /// Remaining reads of each value (to free intermediates early).
    reads: Vec<usize>,
    device: Device,
    pub hooks: Hooks,
    /// Observed (min, max) of fake-quantized activations, by value id.
    pub act_ranges: BTreeMap<ValueId, (f32, f32)>,
    /// Per graph output: the value training uses (the logits under a final Softmax).
    train_outputs: Vec<ValueId>,
    /// BN layers kept in eval mode while training (fine-tuning with frozen stats).
    pub bn_frozen: bool,
}

#[derive(Debug, Clone, Default)]
struct Resolved {
    reshape: Option<Vec<i64>>,
    squeeze: Option<Vec<usize>>,
}

/// Everything one forward pass produced.
pub struct ForwardOut {
    /// The training outputs (pre-softmax logits when the graph ends in Softmax).
    pub outputs: Vec<DynTensor>,
    pub taps: BTreeMap<String, DynTensor>,
    /// Effective parameters (masked, fake-quantized) by name, for extra losses.
    pub params: BTreeMap<String, DynTensor>,
    /// Leaves created for the trainable parameters (grad lookup), indexed like params.
    pub leaves: Vec<Option<DynTensor>>,
    updates: Vec<StateUpdate>,
}

enum StateUpdate {
    Buffer(usize, Box<DynTensor>),
    ActRange(ValueId, (f32, f32)),
}

impl ForwardOut {
    /// Sum of all extra loss terms registered in the hooks (None when there are none).
    pub fn extra_loss(&self, hooks: &Hooks) -> Result<Option<Tensor<1>>> {
        let ctx = LossCtx {
            params: &self.params,
            taps: &self.taps,
            outputs: &self.outputs,
        };
        let mut total: Option<Tensor<1>> = None;
        for term in &hooks.extra_losses {
            let l = term.compute(&ctx)?;
            total = Some(match total {
                Some(t) => t + l,
                None => l,
            });
        }
        Ok(total)
    }
}

fn err(node: &edgeopt_ir::Node, msg: impl std::fmt::Display) -> TrainError {
    TrainError::Lowering(format!("node '{}' ({}): {msg}", node.name, node.op.name()))
}

/// Whether the lowering supports `op` (the trainable subset plus shape plumbing).
pub fn supported(op: &Op) -> bool {
    match op {
        Op::Conv(_)
        | Op::Gemm { .. }
        | Op::MatMul
        | Op::FullyConnected { .. }
        | Op::Clip { .. }
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::GlobalAveragePool
        | Op::BatchNorm { .. }
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Concat { .. }
        | Op::Identity => true,
        Op::Binary { kind, .. } => !matches!(kind, BinaryKind::Pow),
        Op::Unary(k) => !matches!(k, UnaryKind::Floor | UnaryKind::Ceil | UnaryKind::Not),
        Op::Pad { mode, .. } => !matches!(mode, PadMode::Wrap),
        Op::Reduce { kind, .. } => !matches!(kind, ReduceKind::Prod),
        Op::ConvTranspose(_)
        | Op::Compare(_)
        | Op::Where
        | Op::LayerNorm { .. }
        | Op::StridedSlice(_)
        | Op::Tile { .. }
        | Op::Fill
        | Op::Gather { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Lstm { .. }
        | Op::TopK { .. }
        | Op::Gru { .. }
        | Op::Resize(_)
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
    }
}

/// Evaluates, with edgeopt's reference kernels, every node whose inputs are all
/// constants (e.g. DequantizeLinear of int8 weights in hybrid models, weight
/// transposes) and replaces it by its outputs as constants. Returns how many nodes
/// were folded. Float results become ordinary (trainable) weights.
pub fn fold_constants(graph: &mut Graph) -> Result<usize> {
    // One patch: each folded node removed, its outputs made constants; then the
    // values nothing reads any more (int8 weights, their scales) go. Dead nodes and
    // declared shapes stay as they are (training lowers every node it is given).
    let mut patch = Patch::new(graph)
        .with_dead_nodes(DeadNodes::Keep)
        .with_shapes(Shapes::Keep);
    // Outputs folded so far: a node reading them folds too (chains of constant ops).
    let mut folded: HashMap<ValueId, edgeopt_ir::Tensor> = HashMap::new();
    let mut n_folded = 0;
    for (ni, node) in graph.nodes.iter().enumerate() {
        let data = |v: ValueId| graph.values[v].data.as_ref().or_else(|| folded.get(&v));
        let all_const = node.present_inputs().all(|v| data(v).is_some())
            && node.present_inputs().next().is_some()
            && !node.outputs.iter().any(|o| graph.outputs.contains(o));
        if !all_const {
            continue;
        }
        let ins: Vec<Option<&edgeopt_ir::Tensor>> =
            node.inputs.iter().map(|x| x.and_then(data)).collect();
        let outs = edgeopt_runtime::kernels::eval_node(
            &edgeopt_runtime::kernels::NodeCtx::new(
                graph,
                node,
                edgeopt_runtime::ExecOptions::default(),
            ),
            &ins,
        )
        .map_err(|e| err(node, format!("constant folding: {e}")))?;
        patch.remove_node(NodeId(ni)).map_err(TrainError::Ir)?;
        folded.extend(node.outputs.iter().copied().zip(outs));
        n_folded += 1;
    }
    for (o, t) in folded {
        patch.set_const(ValId(o), t).map_err(TrainError::Ir)?;
    }
    if n_folded > 0 {
        patch.apply(graph).map_err(TrainError::Ir)?;
    }
    // A hybrid op (LiteRT's on-the-fly input quantization, `edgeopt_ir::Hybrid`) whose
    // dequantized weights were just folded reads plain f32 weights now: a float op,
    // as training computes it.
    let values = &graph.values;
    for n in graph.nodes.iter_mut() {
        let w_const = n.input(1).is_some_and(|w| values[w].data.is_some());
        if let (true, Some(h)) = (w_const, n.op.hybrid_mut()) {
            *h = None;
        }
    }
    Ok(n_folded)
}

/// Drops values nothing refers to any more (the folded nodes' former inputs, such as
/// int8 weights and their scales) and renumbers the rest: the value half of ir's one
/// compaction ([`Graph::remove_unused_values`]; dead nodes stay, as training lowers
/// every node it is given).
pub(crate) fn compact(graph: &mut Graph) {
    graph.remove_unused_values();
}

impl Model {
    /// Lowers `graph` onto `device` (the plain device; training moves to its autodiff
    /// decorator), after [`fold_constants`]. Fails, naming the node, on ops outside the trainable subset,
    /// non-float activations, or constants it cannot resolve.
    pub fn new(mut graph: Graph, device: &Device) -> Result<Model> {
        graph.validate().map_err(TrainError::Ir)?;
        fold_constants(&mut graph)?;
        for &i in &graph.inputs {
            if graph.values[i].dtype != DType::F32 {
                return Err(TrainError::Lowering(format!(
                    "input '{}' is {}; training needs float inputs",
                    graph.values[i].name, graph.values[i].dtype
                )));
            }
        }
        let producers = graph.producers();
        let is_linear_out = |v: ValueId| -> bool {
            producers[v].is_some_and(|p| {
                matches!(
                    graph.nodes[p].op,
                    Op::Conv(_) | Op::Gemm { .. } | Op::MatMul | Op::FullyConnected { .. }
                )
            })
        };
        let float_const = |v: ValueId| -> bool {
            graph.values[v]
                .data
                .as_ref()
                .is_some_and(|t| t.dtype() == DType::F32)
        };
        let mut roles: Vec<(ValueId, ParamRole)> = Vec::new();
        let mut resolved = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            if !supported(&node.op) {
                return Err(err(node, "not in the trainable subset"));
            }
            let slot = |i: usize| node.input(i).filter(|&v| float_const(v));
            let mut add = |v: Option<ValueId>, r: ParamRole| {
                if let Some(v) = v {
                    roles.push((v, r));
                }
            };
            match &node.op {
                Op::Conv(_) | Op::FullyConnected { .. } => {
                    add(slot(1), ParamRole::Weight { out_axis: 0 });
                    add(slot(2), ParamRole::Bias);
                }
                Op::Gemm { trans_b, .. } => {
                    add(
                        slot(1),
                        ParamRole::Weight {
                            out_axis: if *trans_b { 0 } else { 1 },
                        },
                    );
                    add(slot(2), ParamRole::Bias);
                }
                Op::MatMul => {
                    if let Some(v) = slot(1) {
                        let r = graph.values[v].data.as_ref().map_or(2, |t| t.rank());
                        add(
                            Some(v),
                            ParamRole::Weight {
                                out_axis: r.saturating_sub(1),
                            },
                        );
                    }
                }
                Op::BatchNorm { .. } => {
                    add(slot(1), ParamRole::BnScale);
                    add(slot(2), ParamRole::BnShift);
                    add(slot(3), ParamRole::BnMean);
                    add(slot(4), ParamRole::BnVar);
                }
                Op::Binary {
                    kind: BinaryKind::Add,
                    ..
                } => {
                    // Bias added after a matmul/conv (how tf2onnx and PyTorch export
                    // dense layers): a trainable bias. Other constant operands
                    // (normalization constants...) stay frozen.
                    for (c, o) in [(0, 1), (1, 0)] {
                        if let (Some(cv), Some(ov)) = (slot(c), node.input(o)) {
                            let numel = graph.values[cv].data.as_ref().map_or(0, |t| t.len());
                            if numel > 1 && is_linear_out(ov) {
                                add(Some(cv), ParamRole::Bias);
                            }
                        }
                    }
                }
                Op::ConvTranspose(_)
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
                | Op::Dequantize => {}
            }
            let mut r = Resolved::default();
            match &node.op {
                Op::Reshape { .. } => {
                    let s = node
                        .input(1)
                        .ok_or_else(|| err(node, "missing shape input"))?;
                    let t = graph.values[s].data.as_ref().ok_or_else(|| {
                        err(
                            node,
                            "shape is computed at run time; fold it to a constant first",
                        )
                    })?;
                    r.reshape = Some(t.to_i64_vec());
                }
                Op::Squeeze { axes } if axes.is_empty() => {
                    // Resolve "all size-1 dims" from the declared shape, so a batch of
                    // one is not squeezed away at run time.
                    let x = node.input(0).ok_or_else(|| err(node, "missing input"))?;
                    let shape = graph.values[x]
                        .shape
                        .as_ref()
                        .ok_or_else(|| err(node, "Squeeze without axes needs a known shape"))?;
                    r.squeeze = Some(
                        shape
                            .iter()
                            .enumerate()
                            .filter(|(_, d)| d.fixed() == Some(1))
                            .map(|(i, _)| i)
                            .collect(),
                    );
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
                | Op::Dequantize => {}
            }
            resolved.push(r);
        }
        let mut params = Vec::new();
        let mut state = Vec::new();
        let mut param_of = HashMap::new();
        for (v, role) in roles {
            if param_of.contains_key(&v) {
                continue;
            }
            let val = &graph.values[v];
            let t = val.data.as_ref().expect("float const");
            param_of.insert(v, params.len());
            params.push(ParamInfo {
                name: val.name.clone(),
                value: v,
                shape: t.shape.clone(),
                role,
            });
            state.push(DynTensor::from_ir(t, device)?);
        }
        let mut consts = HashMap::new();
        for node in &graph.nodes {
            for v in node.present_inputs() {
                if param_of.contains_key(&v) || consts.contains_key(&v) {
                    continue;
                }
                if let Some(t) = &graph.values[v].data {
                    // Integer constants are attributes (shapes, axes) read above.
                    if t.dtype().is_float() {
                        consts.insert(v, DynTensor::from_ir(t, device)?);
                    }
                }
            }
        }
        let mut reads = vec![0usize; graph.values.len()];
        for n in &graph.nodes {
            for i in n.present_inputs() {
                reads[i] += 1;
            }
        }
        let train_outputs = graph
            .outputs
            .iter()
            .map(|&o| match producers[o] {
                Some(p) if matches!(graph.nodes[p].op, Op::Softmax { .. }) => {
                    graph.nodes[p].input(0).unwrap_or(o)
                }
                _ => o,
            })
            .collect();
        Ok(Model {
            graph,
            resolved,
            params,
            state,
            param_of,
            consts,
            reads,
            device: device.clone(),
            hooks: Hooks::default(),
            act_ranges: BTreeMap::new(),
            train_outputs,
            bn_frozen: false,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Input shape (without batch) of graph input `i`, from its declared shape.
    pub fn input_shape(&self, i: usize) -> Option<Vec<usize>> {
        let v = &self.graph.values[*self.graph.inputs.get(i)?];
        let s = v.shape.as_ref()?;
        s.iter().skip(1).map(|d| d.fixed()).collect()
    }

    /// Whether the graph's output `i` is a Softmax (training then uses its input).
    pub fn output_is_softmax(&self, i: usize) -> bool {
        self.graph.outputs.get(i) != self.train_outputs.get(i)
    }

    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }

    /// Current value of parameter `i` (plain device).
    pub fn param(&self, i: usize) -> &DynTensor {
        &self.state[i]
    }

    pub fn set_param(&mut self, i: usize, t: DynTensor) -> Result<()> {
        if t.dims() != self.params[i].shape {
            return Err(TrainError::Config(format!(
                "parameter '{}' has shape {:?}, got {:?}",
                self.params[i].name,
                self.params[i].shape,
                t.dims()
            )));
        }
        self.state[i] = t;
        Ok(())
    }

    /// Adds a trainable tensor that no node reads (a hook uses it, e.g. a learned
    /// quantization step). It is stored as a constant value appended to the graph, so
    /// the optimizer, checkpoints and [`Model::to_graph`] treat it like any parameter;
    /// value ids of the source graph are unchanged (strip the appended values with
    /// `graph.values.truncate(n)` if the exported graph must not carry them).
    pub fn add_aux_param(&mut self, name: &str, t: edgeopt_ir::Tensor) -> Result<usize> {
        if self.graph.find_value(name).is_some() {
            return Err(TrainError::Config(format!(
                "auxiliary parameter '{name}' clashes with a graph value"
            )));
        }
        if t.dtype() != DType::F32 {
            return Err(TrainError::Config(format!(
                "auxiliary parameter '{name}' must be f32"
            )));
        }
        let state = DynTensor::from_ir(&t, &self.device)?;
        let shape = t.shape.clone();
        let v = self.graph.add_const(name, t);
        self.reads.push(0);
        self.param_of.insert(v, self.params.len());
        self.params.push(ParamInfo {
            name: name.to_string(),
            value: v,
            shape,
            role: ParamRole::Aux,
        });
        self.state.push(state);
        Ok(self.params.len() - 1)
    }

    /// Whether parameter `i` receives gradients (not a buffer, not frozen).
    pub fn trainable(&self, i: usize) -> bool {
        !self.params[i].role.is_buffer() && !self.hooks.frozen.contains(&self.params[i].name)
    }

    /// Number of trainable scalars.
    pub fn trainable_count(&self) -> usize {
        (0..self.params.len())
            .filter(|&i| self.trainable(i))
            .map(|i| self.params[i].shape.iter().product::<usize>())
            .sum()
    }

    /// Checks hook keys against the model (a typo in a parameter name is an error,
    /// not a silently ignored hook) and mask shapes.
    pub fn check_hooks(&self) -> Result<()> {
        let pnames: std::collections::BTreeSet<&str> =
            self.params.iter().map(|p| p.name.as_str()).collect();
        for n in self
            .hooks
            .frozen
            .iter()
            .chain(self.hooks.masks.keys())
            .chain(self.hooks.weight_quant.keys())
        {
            if !pnames.contains(n.as_str()) {
                return Err(TrainError::Config(format!(
                    "hook names unknown parameter '{n}'"
                )));
            }
        }
        for (n, ls) in &self.hooks.learned_steps {
            let (Some(w), Some(u)) = (self.param_index(n), self.param_index(&ls.param)) else {
                return Err(TrainError::Config(format!(
                    "learned step: unknown parameter '{n}' or '{}'",
                    ls.param
                )));
            };
            let (ws, us) = (&self.params[w].shape, &self.params[u].shape);
            let fits = us.len() == ws.len()
                && us.iter().zip(ws).all(|(&a, &b)| a == 1 || a == b)
                && ls.init.shape == *us;
            if !fits || self.hooks.weight_quant.contains_key(n) || !(1..=32767).contains(&ls.qmax) {
                return Err(TrainError::Config(format!(
                    "learned step of '{n}': step shape {us:?} (init {:?}) does not broadcast \
                     to {ws:?}, qmax {} not in 1..=32767, or the weight also has a \
                     fake-quant hook",
                    ls.init.shape, ls.qmax
                )));
            }
        }
        for (n, m) in &self.hooks.masks {
            let i = self.param_index(n).expect("checked");
            if m.shape != self.params[i].shape {
                return Err(TrainError::Config(format!(
                    "mask for '{n}' has shape {:?}, parameter {:?}",
                    m.shape, self.params[i].shape
                )));
            }
        }
        for n in self.hooks.act_quant.keys().chain(self.hooks.taps.iter()) {
            if self.graph.find_value(n).is_none() {
                return Err(TrainError::Config(format!(
                    "hook names unknown value '{n}'"
                )));
            }
        }
        Ok(())
    }

    /// Re-applies masks to the stored parameters (after an optimizer step or when
    /// masks are first installed), so pruned weights are exactly zero.
    pub fn apply_masks(&mut self) -> Result<()> {
        for (name, m) in &self.hooks.masks {
            let i = self
                .param_index(name)
                .ok_or_else(|| TrainError::Config(format!("mask for unknown '{name}'")))?;
            let mt = DynTensor::from_ir(m, &self.device)?;
            self.state[i] = self.state[i].clone().mul(mt)?;
        }
        Ok(())
    }

    /// Runs the graph. `autodiff` puts trainable parameters on the autodiff device as
    /// gradient-requiring leaves (`inputs` must then be autodiff tensors too).
    pub fn forward(
        &self,
        inputs: Vec<DynTensor>,
        mode: Mode,
        autodiff: bool,
    ) -> Result<ForwardOut> {
        if inputs.len() != self.graph.inputs.len() {
            return Err(TrainError::Config(format!(
                "model has {} inputs, {} given",
                self.graph.inputs.len(),
                inputs.len()
            )));
        }
        let nv = self.graph.values.len();
        let mut slots: Vec<Option<DynTensor>> = vec![None; nv];
        let mut reads = self.reads.clone();
        for (&id, t) in self.graph.inputs.iter().zip(inputs) {
            let t = self.quant_act(id, t, mode)?;
            slots[id] = Some(t.0);
        }
        // Parameters: leaves, then masked and fake-quantized effective values.
        let mut leaves = vec![None; self.params.len()];
        let mut eff: Vec<DynTensor> = Vec::with_capacity(self.params.len());
        let mut named = BTreeMap::new();
        for (i, p) in self.params.iter().enumerate() {
            let mut t = self.state[i].clone();
            if autodiff {
                t = t.autodiff();
                if self.trainable(i) {
                    t = t.require_grad();
                    leaves[i] = Some(t.clone());
                }
            }
            if let Some(m) = self.hooks.masks.get(&p.name) {
                let mut mt = DynTensor::from_ir(m, &self.device)?;
                if autodiff {
                    mt = mt.autodiff();
                }
                t = t.mul(mt)?;
            }
            if let Some(fq) = self.hooks.weight_quant.get(&p.name) {
                t = fq.apply(t, None)?;
            }
            eff.push(t);
        }
        // Learned steps read another parameter's leaf: applied once all leaves exist.
        for (name, ls) in &self.hooks.learned_steps {
            let (Some(w), Some(u)) = (self.param_index(name), self.param_index(&ls.param)) else {
                return Err(TrainError::Config(format!(
                    "learned step: unknown parameter '{name}' or '{}'",
                    ls.param
                )));
            };
            eff[w] = ls.apply(eff[w].clone(), eff[u].clone())?;
        }
        if !self.hooks.extra_losses.is_empty() {
            for (p, t) in self.params.iter().zip(&eff) {
                named.insert(p.name.clone(), t.clone());
            }
        }
        let mut updates = Vec::new();
        let mut taps = BTreeMap::new();
        let want: Vec<ValueId> = self.train_outputs.clone();
        for &o in &want {
            reads[o] += 1;
        }
        let tap_ids: Vec<ValueId> = self
            .hooks
            .taps
            .iter()
            .filter_map(|n| self.graph.find_value(n))
            .collect();
        for &t in &tap_ids {
            reads[t] += 1;
        }
        for (ni, node) in self.graph.nodes.iter().enumerate() {
            let mut ins: Vec<Option<DynTensor>> = Vec::with_capacity(node.inputs.len());
            for x in &node.inputs {
                ins.push(match x {
                    None => None,
                    Some(id) => {
                        if let Some(t) = &slots[*id] {
                            Some(t.clone())
                        } else if let Some(&pi) = self.param_of.get(id) {
                            Some(eff[pi].clone())
                        } else {
                            self.consts.get(id).map(|c| {
                                if autodiff {
                                    c.clone().autodiff()
                                } else {
                                    c.clone()
                                }
                            })
                        }
                    }
                });
            }
            let y = self
                .eval_node(ni, &ins, mode, &mut updates)
                .map_err(|e| match e {
                    TrainError::Lowering(m) if !m.starts_with("node '") => err(node, m),
                    e => e,
                })?;
            for x in node.present_inputs() {
                reads[x] = reads[x].saturating_sub(1);
                if reads[x] == 0 {
                    slots[x] = None;
                }
            }
            let out = node.outputs[0];
            let (y, upd) = self.quant_act(out, y, mode)?;
            if let Some(u) = upd {
                updates.push(u);
            }
            slots[out] = Some(y);
        }
        for &t in &tap_ids {
            if let Some(v) = &slots[t] {
                taps.insert(self.graph.values[t].name.clone(), v.clone());
            }
        }
        let outputs = want
            .iter()
            .map(|&o| {
                slots[o].clone().ok_or_else(|| {
                    TrainError::Lowering(format!(
                        "output '{}' was not computed",
                        self.graph.values[o].name
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ForwardOut {
            outputs,
            taps,
            params: named,
            leaves,
            updates,
        })
    }

    /// Fake-quantizes activation `id` if a hook asks for it; in train mode also
    /// returns the observer update.
    fn quant_act(
        &self,
        id: ValueId,
        x: DynTensor,
        mode: Mode,
    ) -> Result<(DynTensor, Option<StateUpdate>)> {
        let name = &self.graph.values[id].name;
        let Some(fq) = self.hooks.act_quant.get(name) else {
            return Ok((x, None));
        };
        if fq.range.is_some() {
            return Ok((fq.apply(x, None)?, None));
        }
        let prev = self.act_ranges.get(&id).copied();
        let (range, upd) = match mode {
            Mode::Train => {
                let (lo, hi) = range_of(&x)?;
                let r = match prev {
                    Some((a, b)) => (
                        a + OBSERVER_MOMENTUM * (lo - a),
                        b + OBSERVER_MOMENTUM * (hi - b),
                    ),
                    None => (lo, hi),
                };
                (r, Some(StateUpdate::ActRange(id, r)))
            }
            Mode::Eval => (prev.unwrap_or(range_of(&x)?), None),
        };
        Ok((fq.apply(x, Some(range))?, upd))
    }

    /// Applies the buffer and observer updates of a train-mode forward pass.
    pub fn commit(&mut self, out: &mut ForwardOut) {
        for u in out.updates.drain(..) {
            match u {
                StateUpdate::Buffer(i, t) => self.state[i] = *t,
                StateUpdate::ActRange(id, r) => {
                    self.act_ranges.insert(id, r);
                }
            }
        }
    }

    /// Writes the current parameters into a copy of the source graph.
    pub fn to_graph(&self) -> Result<Graph> {
        let mut g = self.graph.clone();
        for (i, p) in self.params.iter().enumerate() {
            let t = self.state[i].to_ir()?;
            g.values[p.value].data = Some(t);
        }
        Ok(g)
    }

    /// Replaces the source graph's weights in place (keeps the lowered model usable).
    pub fn sync_graph(&mut self) -> Result<()> {
        self.graph = self.to_graph()?;
        Ok(())
    }

    fn eval_node(
        &self,
        ni: usize,
        ins: &[Option<DynTensor>],
        mode: Mode,
        updates: &mut Vec<StateUpdate>,
    ) -> Result<DynTensor> {
        let node = &self.graph.nodes[ni];
        let input = |i: usize| -> Result<DynTensor> {
            ins.get(i)
                .cloned()
                .flatten()
                .ok_or_else(|| err(node, format!("input {i} is missing")))
        };
        let y = match &node.op {
            Op::Conv(a) => {
                let b = ins.get(2).cloned().flatten();
                let y = conv(input(0)?, input(1)?, b, a)?;
                activation(y, a.activation)
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let mut a = input(0)?.r2()?;
                let mut b = input(1)?.r2()?;
                if *trans_a {
                    a = a.transpose();
                }
                if *trans_b {
                    b = b.transpose();
                }
                if a.dims()[1] != b.dims()[0] {
                    return Err(err(
                        node,
                        format!("inner dims {:?} x {:?}", a.dims(), b.dims()),
                    ));
                }
                let mut y = DynTensor::R2(a.matmul(b));
                if *alpha != 1.0 {
                    y = y.mul_scalar(*alpha);
                }
                if let Some(c) = ins.get(2).cloned().flatten() {
                    let c = if *beta != 1.0 { c.mul_scalar(*beta) } else { c };
                    y = y.add(c)?;
                }
                y
            }
            Op::MatMul => matmul(input(0)?, input(1)?)?,
            Op::FullyConnected {
                activation: act,
                keep_num_dims,
                ..
            } => {
                let x = input(0)?;
                let w = input(1)?.r2()?;
                let [n, k] = w.dims();
                let xd = x.dims();
                if k == 0 || n == 0 || !x.numel().is_multiple_of(k) {
                    return Err(err(node, format!("input {xd:?} not divisible by K={k}")));
                }
                let rows = x.numel() / k;
                let x2 = x.reshape(&[rows, k])?.r2()?;
                let mut y = DynTensor::R2(x2.matmul(w.transpose()));
                if let Some(b) = ins.get(2).cloned().flatten() {
                    y = y.add(b)?;
                }
                if *keep_num_dims {
                    let mut s = xd.clone();
                    *s.last_mut().expect("rank >= 1") = n;
                    y = y.reshape(&s)?;
                }
                activation(y, *act)
            }
            Op::Binary {
                kind,
                activation: act,
            } => {
                let (a, b) = (input(0)?, input(1)?);
                let y = match kind {
                    BinaryKind::Add => a.add(b)?,
                    BinaryKind::Sub => a.sub(b)?,
                    BinaryKind::Mul => a.mul(b)?,
                    BinaryKind::Div => a.div(b)?,
                    BinaryKind::Max => a.max_pair(b)?,
                    BinaryKind::Min => a.min_pair(b)?,
                    BinaryKind::Pow => return Err(err(node, "Pow is not trainable here")),
                };
                activation(y, *act)
            }
            Op::Unary(k) => {
                let x = input(0)?;
                match k {
                    UnaryKind::Relu => x.relu(),
                    UnaryKind::Relu6 => x.clamp(Some(0.0), Some(6.0)),
                    UnaryKind::Sigmoid => x.sigmoid(),
                    UnaryKind::Tanh => x.tanh(),
                    UnaryKind::HardSwish => x.hard_swish(),
                    UnaryKind::Exp => x.exp(),
                    UnaryKind::Log => x.log(),
                    UnaryKind::Neg => x.neg(),
                    UnaryKind::Abs => x.abs(),
                    UnaryKind::Sqrt => x.sqrt(),
                    UnaryKind::Reciprocal => x.recip(),
                    _ => return Err(err(node, "not differentiable")),
                }
            }
            Op::Clip { min, max } => input(0)?.clamp(*min, *max),
            Op::LeakyRelu { alpha } => input(0)?.leaky_relu(*alpha),
            Op::HardSigmoid { alpha, beta } => input(0)?.hard_sigmoid(*alpha, *beta),
            Op::Softmax { axis, beta } => {
                let x = input(0)?;
                let ax = norm_axis(*axis, x.rank())?;
                let x = if *beta != 1.0 { x.mul_scalar(*beta) } else { x };
                x.softmax(ax)
            }
            Op::LogSoftmax { axis } => {
                let x = input(0)?;
                let ax = norm_axis(*axis, x.rank())?;
                x.log_softmax(ax)
            }
            Op::MaxPool(p) => {
                let y = pool(input(0)?, p, true)?;
                activation(y, p.activation)
            }
            Op::AveragePool(p) => {
                let y = pool(input(0)?, p, false)?;
                activation(y, p.activation)
            }
            Op::GlobalAveragePool => {
                let mut x = input(0)?;
                for ax in 2..x.rank() {
                    x = x.mean_dim(ax);
                }
                x
            }
            Op::BatchNorm { epsilon } => {
                let x = input(0)?;
                let (gamma, beta) = (input(1)?.r1()?, input(2)?.r1()?);
                let (mean, var) = (input(3)?.r1()?, input(4)?.r1()?);
                let train = mode == Mode::Train && !self.bn_frozen;
                if train {
                    let dims = x.dims();
                    // Elements per channel, for the unbiased running variance.
                    let per_channel = (x.numel() / dims[1].max(1)).max(2) as f32;
                    let (y, bm, bv) = bn_train(x, gamma, beta, *epsilon as f64)?;
                    for (slot, batch, unbias) in
                        [(3, bm, 1.0), (4, bv, per_channel / (per_channel - 1.0))]
                    {
                        let id = node.input(slot).ok_or_else(|| err(node, "missing stats"))?;
                        if let Some(&pi) = self.param_of.get(&id) {
                            let old = self.state[pi].clone().r1()?;
                            let b = batch.clone().inner().mul_scalar(unbias);
                            let new = old.mul_scalar(1.0 - BN_MOMENTUM) + b.mul_scalar(BN_MOMENTUM);
                            updates.push(StateUpdate::Buffer(pi, Box::new(DynTensor::R1(new))));
                        }
                    }
                    y
                } else {
                    bn_eval(x, gamma, beta, mean, var, *epsilon as f64)?
                }
            }
            Op::Flatten { axis } => {
                let x = input(0)?;
                let d = x.dims();
                let a = if *axis < 0 {
                    *axis + d.len() as i64
                } else {
                    *axis
                };
                if a < 0 || a as usize > d.len() {
                    return Err(err(node, format!("axis {axis} for rank {}", d.len())));
                }
                let a = a as usize;
                let outer: usize = d[..a].iter().product();
                let inner: usize = d[a..].iter().product();
                x.reshape(&[outer, inner])?
            }
            Op::Reshape { allowzero } => {
                let x = input(0)?;
                let target = self.resolved[ni]
                    .reshape
                    .as_ref()
                    .ok_or_else(|| err(node, "unresolved shape"))?;
                let s = reshape_target(&x.dims(), target, *allowzero).map_err(|m| err(node, m))?;
                x.reshape(&s)?
            }
            Op::Transpose { perm } => {
                let x = input(0)?;
                let p: Vec<usize> = if perm.is_empty() {
                    (0..x.rank()).rev().collect()
                } else {
                    perm.clone()
                };
                x.permute(&p)?
            }
            Op::Squeeze { axes } => {
                let x = input(0)?;
                let d = x.dims();
                let ax: Vec<usize> = match &self.resolved[ni].squeeze {
                    Some(a) => a.clone(),
                    None => axes
                        .iter()
                        .map(|&a| norm_axis(a, d.len()))
                        .collect::<Result<_>>()?,
                };
                let s: Vec<usize> = d
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !ax.contains(i))
                    .map(|(_, &n)| n)
                    .collect();
                if ax.iter().any(|&a| d.get(a) != Some(&1)) {
                    return Err(err(node, format!("cannot squeeze axes {ax:?} of {d:?}")));
                }
                x.reshape(&s)?
            }
            Op::Unsqueeze { axes } => {
                let x = input(0)?;
                let mut s = x.dims();
                let r = s.len() + axes.len();
                let mut ax: Vec<usize> = axes
                    .iter()
                    .map(|&a| norm_axis(a, r))
                    .collect::<Result<_>>()?;
                ax.sort_unstable();
                for a in ax {
                    s.insert(a, 1);
                }
                x.reshape(&s)?
            }
            Op::Concat {
                axis,
                activation: act,
            } => {
                let parts: Vec<DynTensor> = ins.iter().flatten().cloned().collect();
                let r = parts.first().map_or(1, |p| p.rank());
                let ax = norm_axis(*axis, r)?;
                activation(DynTensor::cat(parts, ax)?, *act)
            }
            Op::Pad {
                mode: pm,
                pads,
                value,
            } => pad(input(0)?, *pm, pads, *value)?,
            Op::Reduce {
                kind,
                axes,
                keepdims,
                noop_with_empty_axes,
            } => {
                let mut x = input(0)?;
                let d = x.dims();
                let ax: Vec<usize> = match axes {
                    Some(a) if !a.is_empty() => a
                        .iter()
                        .map(|&a| norm_axis(a, d.len()))
                        .collect::<Result<_>>()?,
                    _ if *noop_with_empty_axes => return Ok(x),
                    _ => (0..d.len()).collect(),
                };
                for &a in &ax {
                    x = match kind {
                        ReduceKind::Mean => x.mean_dim(a),
                        ReduceKind::Sum => x.sum_dim(a),
                        ReduceKind::Max => x.max_dim(a),
                        ReduceKind::Min => x.min_dim(a),
                        ReduceKind::Prod => return Err(err(node, "ReduceProd unsupported")),
                    };
                }
                if !*keepdims {
                    let s: Vec<usize> = d
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !ax.contains(i))
                        .map(|(_, &n)| n)
                        .collect();
                    x = x.reshape(&s)?;
                }
                x
            }
            Op::Identity => input(0)?,
            Op::ConvTranspose(_)
            | Op::Compare(_)
            | Op::Where
            | Op::LayerNorm { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Gather { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Lstm { .. }
            | Op::TopK { .. }
            | Op::Gru { .. }
            | Op::Resize(_)
            | Op::Shape
            | Op::Cast { .. }
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger
            | Op::Quantize
            | Op::Dequantize => return Err(err(node, "not in the trainable subset")),
        };
        Ok(y)
    }
}

fn activation(y: DynTensor, a: Activation) -> DynTensor {
    match a {
        Activation::None => y,
        Activation::Relu => y.relu(),
        Activation::Relu6 => y.clamp(Some(0.0), Some(6.0)),
        Activation::ReluN1To1 => y.clamp(Some(-1.0), Some(1.0)),
    }
}

/// ONNX Reshape target: 0 copies the input dim (unless allowzero), -1 is inferred.
pub fn reshape_target(
    input: &[usize],
    target: &[i64],
    allowzero: bool,
) -> std::result::Result<Vec<usize>, String> {
    let n: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *input
                    .get(i)
                    .ok_or_else(|| format!("0 at {i} beyond input rank {}", input.len()))?,
            ),
            t if t >= 0 => out.push(t as usize),
            _ => return Err(format!("bad reshape target {target:?}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        out[i] = n / known;
    } else if known != n {
        return Err(format!("cannot reshape {input:?} to {target:?}"));
    }
    Ok(out)
}

/// Permutation taking channels-last `[N, *s, C]` to channels-first `[N, C, *s]`.
fn to_cf(rank: usize) -> Vec<usize> {
    let mut p = vec![0, rank - 1];
    p.extend(1..rank - 1);
    p
}

/// Inverse of [`to_cf`].
fn to_cl(rank: usize) -> Vec<usize> {
    let mut p = vec![0];
    p.extend(2..rank);
    p.push(1);
    p
}

/// (begin, end) padding per spatial dim from ONNX attributes and the actual sizes.
fn spatial_pads(
    auto_pad: AutoPad,
    pads: &[usize],
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
) -> Result<Vec<(usize, usize)>> {
    let nd = input.len();
    Ok(match auto_pad {
        AutoPad::NotSet => {
            if pads.is_empty() {
                vec![(0, 0); nd]
            } else if pads.len() == 2 * nd {
                (0..nd).map(|i| (pads[i], pads[i + nd])).collect()
            } else {
                return Err(TrainError::Lowering(format!(
                    "pads {pads:?} do not match {nd} spatial dims"
                )));
            }
        }
        AutoPad::Valid => vec![(0, 0); nd],
        AutoPad::SameUpper | AutoPad::SameLower => (0..nd)
            .map(|i| {
                let out = input[i].div_ceil(strides[i]);
                let eff_k = (kernel[i] - 1) * dilations[i] + 1;
                let total = ((out - 1) * strides[i] + eff_k).saturating_sub(input[i]);
                let small = total / 2;
                if auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            })
            .collect(),
    })
}

/// The (dilated) window must fit the padded input, or burn's kernels assert.
fn check_window(
    input: &[usize],
    k: &[usize],
    dil: &[usize],
    pads: &[(usize, usize)],
) -> Result<()> {
    for i in 0..input.len() {
        let eff = (k[i] - 1) * dil[i] + 1;
        if input[i] + pads[i].0 + pads[i].1 < eff {
            return Err(TrainError::Lowering(format!(
                "window {eff} larger than padded input {} on spatial axis {i}",
                input[i] + pads[i].0 + pads[i].1
            )));
        }
    }
    Ok(())
}

fn or_ones(v: &[usize], nd: usize) -> Vec<usize> {
    if v.is_empty() {
        vec![1; nd]
    } else {
        v.to_vec()
    }
}

fn conv(x: DynTensor, w: DynTensor, b: Option<DynTensor>, a: &ConvAttrs) -> Result<DynTensor> {
    let r = x.rank();
    if !(3..=4).contains(&r) || w.rank() != r {
        return Err(TrainError::Lowering(format!(
            "conv of input {:?} with weights {:?}: only 1-D and 2-D convs are lowered",
            x.dims(),
            w.dims()
        )));
    }
    let nhwc = a.layout == Layout::Nhwc;
    let (x, w) = if nhwc {
        (x.permute(&to_cf(r))?, w.permute(&to_cf(r))?)
    } else {
        (x, w)
    };
    let (xd, wd) = (x.dims(), w.dims());
    let nd = r - 2;
    let group = a.group.max(1);
    if wd[1] * group != xd[1] || wd[0] % group != 0 {
        return Err(TrainError::Lowering(format!(
            "conv weights {wd:?} (group {group}) do not fit input {xd:?}"
        )));
    }
    let strides = or_ones(&a.strides, nd);
    let dil = or_ones(&a.dilations, nd);
    if strides.len() != nd || dil.len() != nd {
        return Err(TrainError::Lowering(
            "conv strides/dilations rank mismatch".into(),
        ));
    }
    // burn asserts on these; a malformed model must be an error instead.
    if strides.contains(&0) || dil.contains(&0) || wd.contains(&0) || xd.contains(&0) {
        return Err(TrainError::Lowering(format!(
            "conv with a zero stride, dilation or dimension (input {xd:?}, weights {wd:?})"
        )));
    }
    let pads = spatial_pads(a.auto_pad, &a.pads, &xd[2..], &wd[2..], &strides, &dil)?;
    check_window(&xd[2..], &wd[2..], &dil, &pads)?;
    let b = b.map(|b| b.r1()).transpose()?;
    let y = if nd == 1 {
        let o = ConvOptions::new_with_padding([strides[0]], [pads[0]], [dil[0]], group);
        DynTensor::R3(conv1d(x.r3()?, w.r3()?, b, o))
    } else {
        let o = ConvOptions::new_with_padding(
            [strides[0], strides[1]],
            [pads[0], pads[1]],
            [dil[0], dil[1]],
            group,
        );
        DynTensor::R4(conv2d(x.r4()?, w.r4()?, b, o))
    };
    if nhwc {
        y.permute(&to_cl(r))
    } else {
        Ok(y)
    }
}

fn pool(x: DynTensor, p: &PoolAttrs, max: bool) -> Result<DynTensor> {
    let r = x.rank();
    if !(3..=4).contains(&r) {
        return Err(TrainError::Lowering(format!(
            "pool of rank {r}: only 1-D and 2-D pools are lowered"
        )));
    }
    let nhwc = p.layout == Layout::Nhwc;
    let x = if nhwc { x.permute(&to_cf(r))? } else { x };
    let xd = x.dims();
    let nd = r - 2;
    if p.kernel_shape.len() != nd {
        return Err(TrainError::Lowering(format!(
            "pool kernel {:?} for {nd} spatial dims",
            p.kernel_shape
        )));
    }
    let strides = or_ones(&p.strides, nd);
    let dil = or_ones(&p.dilations, nd);
    if strides.len() != nd
        || dil.len() != nd
        || strides.contains(&0)
        || dil.contains(&0)
        || p.kernel_shape.contains(&0)
        || xd.contains(&0)
    {
        return Err(TrainError::Lowering(format!(
            "pool kernel {:?} strides {strides:?} dilations {dil:?} on input {xd:?}",
            p.kernel_shape
        )));
    }
    if !max && dil.iter().any(|&d| d != 1) {
        return Err(TrainError::Lowering("dilated average pooling".into()));
    }
    let pads = spatial_pads(
        p.auto_pad,
        &p.pads,
        &xd[2..],
        &p.kernel_shape,
        &strides,
        &dil,
    )?;
    // TFLite's SAME average pool never counts padding; ONNX says so by attribute.
    let include = p.count_include_pad;
    let k = &p.kernel_shape;
    if max
        && k == &strides
        && dil.iter().all(|&d| d == 1)
        && pads.iter().all(|&(a, b)| a == 0 && b == 0)
        && !p.ceil_mode
    {
        // Non-overlapping windows (the common 2x2/2 case): a reshape and max over the
        // window axes. Same result; burn's generic pooling kernel is several times
        // slower here and dominated the training profile.
        let y = max_pool_tiled(x, k)?;
        return if nhwc { y.permute(&to_cl(r)) } else { Ok(y) };
    }
    let y = match (nd, max) {
        (1, true) => DynTensor::R3(max_pool1d(
            x.r3()?,
            MaxPoolOptions::new([k[0]])
                .with_stride([strides[0]])
                .with_padding_pairs([pads[0]])
                .with_dilation([dil[0]])
                .with_ceil_mode(p.ceil_mode),
        )),
        (2, true) => DynTensor::R4(max_pool2d(
            x.r4()?,
            MaxPoolOptions::new([k[0], k[1]])
                .with_stride([strides[0], strides[1]])
                .with_padding_pairs([pads[0], pads[1]])
                .with_dilation([dil[0], dil[1]])
                .with_ceil_mode(p.ceil_mode),
        )),
        (1, false) => DynTensor::R3(avg_pool1d(
            x.r3()?,
            AvgPoolOptions::new([k[0]])
                .with_stride([strides[0]])
                .with_padding_pairs([pads[0]])
                .with_count_include_pad(include)
                .with_ceil_mode(p.ceil_mode),
        )),
        _ => DynTensor::R4(avg_pool2d(
            x.r4()?,
            AvgPoolOptions::new([k[0], k[1]])
                .with_stride([strides[0], strides[1]])
                .with_padding_pairs([pads[0], pads[1]])
                .with_count_include_pad(include)
                .with_ceil_mode(p.ceil_mode),
        )),
    };
    if nhwc {
        y.permute(&to_cl(r))
    } else {
        Ok(y)
    }
}

/// Max pooling with kernel == stride, no padding (floor mode) over `[N, C, *s]`.
fn max_pool_tiled(x: DynTensor, k: &[usize]) -> Result<DynTensor> {
    let d = x.dims();
    let nd = d.len() - 2;
    let mut x = x;
    // Drop the tail that floor mode ignores.
    for i in 0..nd {
        let keep = d[2 + i] / k[i] * k[i];
        if keep == 0 {
            return Err(TrainError::Lowering(format!(
                "pool kernel {k:?} larger than input {d:?}"
            )));
        }
        if keep != d[2 + i] {
            x = x.narrow(2 + i, 0, keep);
        }
    }
    let mut split = vec![d[0], d[1]];
    let mut out = vec![d[0], d[1]];
    for i in 0..nd {
        split.push(d[2 + i] / k[i]);
        split.push(k[i]);
        out.push(d[2 + i] / k[i]);
    }
    let mut y = x.reshape(&split)?;
    for i in 0..nd {
        y = y.max_dim(3 + 2 * i);
    }
    y.reshape(&out)
}

fn matmul(a: DynTensor, b: DynTensor) -> Result<DynTensor> {
    if a.rank() < 2 || b.rank() < 2 {
        return Err(TrainError::Lowering(
            "MatMul with a 1-D operand is not lowered".into(),
        ));
    }
    let r = a.rank().max(b.rank());
    let (a, b) = (a.lift(r)?, b.lift(r)?);
    let (ad, bd) = (a.dims(), b.dims());
    if ad[r - 1] != bd[r - 2] {
        return Err(TrainError::Lowering(format!("MatMul of {ad:?} and {bd:?}")));
    }
    // Broadcast the batch dimensions explicitly.
    let mut batch = Vec::with_capacity(r - 2);
    for i in 0..r - 2 {
        if ad[i] != bd[i] && ad[i] != 1 && bd[i] != 1 {
            return Err(TrainError::Lowering(format!("MatMul of {ad:?} and {bd:?}")));
        }
        batch.push(ad[i].max(bd[i]));
    }
    let mut sa = batch.clone();
    sa.extend(&ad[r - 2..]);
    let mut sb = batch;
    sb.extend(&bd[r - 2..]);
    let (a, b) = (a.expand(&sa)?, b.expand(&sb)?);
    Ok(match (a, b) {
        (DynTensor::R2(x), DynTensor::R2(y)) => DynTensor::R2(x.matmul(y)),
        (DynTensor::R3(x), DynTensor::R3(y)) => DynTensor::R3(x.matmul(y)),
        (DynTensor::R4(x), DynTensor::R4(y)) => DynTensor::R4(x.matmul(y)),
        (DynTensor::R5(x), DynTensor::R5(y)) => DynTensor::R5(x.matmul(y)),
        (DynTensor::R6(x), DynTensor::R6(y)) => DynTensor::R6(x.matmul(y)),
        _ => unreachable!("aligned ranks"),
    })
}

fn pad(x: DynTensor, mode: PadMode, pads: &[i64], value: f32) -> Result<DynTensor> {
    let r = x.rank();
    if pads.len() != 2 * r {
        return Err(TrainError::Lowering(format!("pads {pads:?} for rank {r}")));
    }
    let pos: Vec<(usize, usize)> = (0..r)
        .map(|i| (pads[i].max(0) as usize, pads[i + r].max(0) as usize))
        .collect();
    let m = match mode {
        PadMode::Constant => BurnPad::Constant(value),
        PadMode::Reflect => BurnPad::Reflect,
        PadMode::Edge => BurnPad::Edge,
        PadMode::Wrap => return Err(TrainError::Lowering("wrap padding".into())),
    };
    let d = x.dims();
    for (i, &(b, e)) in pos.iter().enumerate() {
        let bad = match mode {
            PadMode::Reflect => b.max(e) >= d[i],
            PadMode::Edge => (b + e > 0) && d[i] == 0,
            _ => false,
        };
        if bad {
            return Err(TrainError::Lowering(format!(
                "{mode:?} padding {b}+{e} of an axis of length {}",
                d[i]
            )));
        }
    }
    let mut y = if pos.iter().any(|&(a, b)| a + b > 0) {
        x.pad(&pos, m)
    } else {
        x
    };
    // Negative pads crop.
    for i in 0..r {
        let (b, e) = ((-pads[i]).max(0) as usize, (-pads[i + r]).max(0) as usize);
        if b + e > 0 {
            let len = y.dims()[i];
            if b + e > len {
                return Err(TrainError::Lowering(format!(
                    "crop {b}+{e} of length {len}"
                )));
            }
            y = y.narrow(i, b, len - b - e);
        }
    }
    Ok(y)
}

macro_rules! bn_ranks {
    ($x:expr, $t:ident => $body:expr) => {
        match $x {
            DynTensor::R2($t) => $body,
            DynTensor::R3($t) => $body,
            DynTensor::R4($t) => $body,
            DynTensor::R5($t) => $body,
            o => {
                return Err(TrainError::Lowering(format!(
                    "BatchNorm of rank {}",
                    o.rank()
                )))
            }
        }
    };
}

fn bn_eval(
    x: DynTensor,
    g: Tensor<1>,
    b: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    eps: f64,
) -> Result<DynTensor> {
    check_bn(&x, &g)?;
    Ok(match x {
        DynTensor::R2(t) => DynTensor::R2(batch_norm(t, g, b, m, v, eps)),
        DynTensor::R3(t) => DynTensor::R3(batch_norm(t, g, b, m, v, eps)),
        DynTensor::R4(t) => DynTensor::R4(batch_norm(t, g, b, m, v, eps)),
        DynTensor::R5(t) => DynTensor::R5(batch_norm(t, g, b, m, v, eps)),
        o => bn_ranks!(o, _t => unreachable!()),
    })
}

fn check_bn(x: &DynTensor, g: &Tensor<1>) -> Result<()> {
    let d = x.dims();
    if d.len() < 2 || d[1] != g.dims()[0] {
        return Err(TrainError::Lowering(format!(
            "BatchNorm of {d:?} with {} channels",
            g.dims()[0]
        )));
    }
    Ok(())
}

fn bn_train(
    x: DynTensor,
    g: Tensor<1>,
    b: Tensor<1>,
    eps: f64,
) -> Result<(DynTensor, Tensor<1>, Tensor<1>)> {
    check_bn(&x, &g)?;
    Ok(match x {
        DynTensor::R2(t) => {
            let o = batch_norm_train(t, g, b, eps);
            (DynTensor::R2(o.output), o.mean, o.variance)
        }
        DynTensor::R3(t) => {
            let o = batch_norm_train(t, g, b, eps);
            (DynTensor::R3(o.output), o.mean, o.variance)
        }
        DynTensor::R4(t) => {
            let o = batch_norm_train(t, g, b, eps);
            (DynTensor::R4(o.output), o.mean, o.variance)
        }
        DynTensor::R5(t) => {
            let o = batch_norm_train(t, g, b, eps);
            (DynTensor::R5(o.output), o.mean, o.variance)
        }
        o => bn_ranks!(o, _t => unreachable!()),
    })
}
