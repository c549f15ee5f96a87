//! Folding the shape arithmetic of a dynamic batch into constants.
//!
//! Converters write a dynamic batch as arithmetic on shapes: the TFLite converter's
//! `SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE` (the shape input computed from the
//! batch) and `FILL` of a batch-sized initial RNN state; PyTorch's exporter the same
//! with `Shape -> Gather -> Concat`. edgeopt runs that arithmetic once the batch is
//! bound, but not every runtime that loads a written file can: TensorFlow Lite
//! Micro's EXPAND_DIMS takes no int32 and its FILL needs constant dims (the corpus'
//! Keras DS-CNN and unrolled GRU failed there), and the FILL became a run-time ONNX
//! Expand. [`fold_batch_shape_arithmetic`] (called by both writers) rewrites the
//! graph so that none of it remains, while the batch stays dynamic where it was:
//!
//! - a `Reshape` whose shape input is a function of the batch alone gets a constant
//!   shape: the same constant when it does not depend on the batch, else the one
//!   entry that grows with the batch (proportionally; every other entry fixed and
//!   positive) becomes -1, which RESHAPE resolves to exactly that entry;
//! - a `Fill` whose dims are a function of the batch alone gets constant dims: the
//!   same constant when they do not depend on the batch, else the batch-1 dims (the
//!   one entry that equals the batch becomes 1) — only when every value computed from
//!   it is proven unchanged: each consumer is element-wise with broadcasting, works
//!   row by row (FULLY_CONNECTED, MatMul, Softmax off the batch axis) or only moves
//!   data, and every such value that shrinks (size 1 where it had the batch) is only
//!   broadcast back by a later element-wise op, never a graph output or read by
//!   anything else (a Shape, a reduction, a Reshape...). A filled tensor is the same
//!   along every axis, so it equals its batch-1 slice broadcast, and each op above
//!   keeps that property; then every element-wise op that broadcasts it back computes
//!   the original values.
//!
//! "A function of the batch alone": every dynamic dimension of the graph inputs is
//! the leading one, with one symbol (a graph with another dynamic dimension, or two
//! batch symbols, is left alone), and the
//! IR's shape rules know the value (it is computed from shapes and constants only,
//! not from data) once the batch is bound. The function is sampled at
//! [`BATCHES`]; converters write affine arithmetic of the batch (products and
//! slices of shapes), for which these samples decide "constant" and "proportional".
//! The rewritten graph is checked once more at every sample: every node infers and
//! every graph output keeps its shape; otherwise nothing is rewritten.

use crate::dtype::DType;
use crate::graph::{Dim, Graph, Node, ValueId};
use crate::op::Op;
use crate::shape::{bind_input_shapes, infer_graph, infer_node_declared, InputFact, OutputFact};
use crate::tensor::{Tensor, TensorData};
use std::collections::{BTreeSet, HashMap};

/// Batch sizes at which the shape arithmetic is evaluated (the first must be 1).
pub const BATCHES: [usize; 4] = [1, 2, 3, 8];

/// Facts of every value at each sampled batch.
type Facts = Vec<Vec<Option<OutputFact>>>;

/// One constant that replaces a computed input of a node.
struct Edit {
    node: usize,
    input: usize,
    data: Tensor,
}

/// The graph with the batch's shape arithmetic folded (see the module docs), or
/// `None` when there is nothing to fold or the graph cannot be analysed (its shapes
/// do not infer at the sampled batches); callers then use the graph as it is.
pub fn fold_batch_shape_arithmetic(graph: &Graph) -> Option<Graph> {
    // The one batch symbol (`bind_input_shapes` binds every leading one alike).
    let mut batch: Option<&str> = None;
    for &i in &graph.inputs {
        let shape = graph.values.get(i)?.shape.as_ref()?;
        for (k, d) in shape.iter().enumerate() {
            match (d, k) {
                (Dim::Fixed(_), _) => {}
                (Dim::Sym(s), 0) if batch.is_none_or(|b| b == s) => batch = Some(s),
                // Two batch symbols may differ at run time; another dynamic dimension
                // is bound to 1 by `bind_input_shapes`, so a value computed from it
                // would look batch-independent here: nothing is folded.
                (Dim::Sym(_), _) => return None,
            }
        }
    }
    let dynamic = batch.is_some();
    let samples: &[usize] = if dynamic { &BATCHES } else { &BATCHES[..1] };
    let facts: Facts = samples
        .iter()
        .map(|&b| infer_graph(graph, &bind_input_shapes(graph, b).ok()?).ok())
        .collect::<Option<_>>()?;
    // The value of a computed (non-constant) integer input at every sample.
    let series = |id: ValueId| -> Option<Vec<Vec<i64>>> {
        if graph.values.get(id)?.data.is_some() {
            return None;
        }
        facts
            .iter()
            .map(|f| {
                let t = f.get(id)?.as_ref()?.value.as_ref()?;
                (t.dtype().is_integer() && t.shape.len() == 1).then(|| t.to_i64_vec())
            })
            .collect()
    };

    let mut edits = Vec::new();
    let mut fills: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut shrunk: HashMap<ValueId, BTreeSet<usize>> = HashMap::new();
    for (ni, n) in graph.nodes.iter().enumerate() {
        if let (Op::Reshape { .. }, Some(s)) = (&n.op, n.input(1)) {
            let Some(ser) = series(s) else { continue };
            if let Some(target) = reshape_target(&ser, samples) {
                // A constant Reshape target is i64 in the IR (ONNX's type; the TFLite
                // writer narrows it).
                edits.push(Edit {
                    node: ni,
                    input: 1,
                    data: int_tensor(DType::I64, target)?,
                });
            }
        } else if let (Op::Fill, Some(d)) = (&n.op, n.input(0)) {
            let Some(ser) = series(d) else { continue };
            let dtype = graph.values[d].dtype;
            match varying(&ser) {
                Some(v) if v.is_empty() => {}
                Some(v)
                    if v.len() == 1
                        && ser.iter().zip(samples).all(|(s, &b)| s[v[0]] == b as i64) =>
                {
                    // The batch-1 dims, if nothing downstream can tell.
                    let Ok(dims1) = ser[0].iter().map(|&x| usize::try_from(x)).collect() else {
                        continue;
                    };
                    let mut trial = fills.clone();
                    trial.push((ni, dims1));
                    let Some(s) = broadcast_closure(graph, &facts, &trial) else {
                        continue;
                    };
                    fills = trial;
                    shrunk = s;
                }
                _ => continue,
            }
            edits.push(Edit {
                node: ni,
                input: 0,
                data: int_tensor(dtype, ser[0].clone())?,
            });
        }
    }
    if edits.is_empty() {
        return None;
    }

    let mut g = graph.clone();
    for e in edits {
        let old = g.nodes[e.node].input(e.input)?;
        let name = g.fresh_name(&format!("{}_const", g.values[old].name));
        let id = g.add_const(name, e.data);
        g.nodes[e.node].inputs[e.input] = Some(id);
    }
    for (v, axes) in &shrunk {
        if let Some(shape) = g.values[*v].shape.as_mut() {
            for &a in axes {
                if let Some(d) = shape.get_mut(a) {
                    *d = Dim::Fixed(1);
                }
            }
        }
    }
    g.remove_dead_nodes();
    // The rewritten graph infers at every sample and its outputs keep their shapes.
    let outputs_of = |g: &Graph, f: &[Option<OutputFact>]| -> Option<Vec<Vec<usize>>> {
        g.outputs
            .iter()
            .map(|&o| Some(f.get(o)?.as_ref()?.shape.clone()))
            .collect()
    };
    for (k, &b) in samples.iter().enumerate() {
        let after = infer_graph(&g, &bind_input_shapes(&g, b).ok()?).ok()?;
        if outputs_of(&g, &after)? != outputs_of(graph, &facts[k])? {
            return None;
        }
    }
    g.validate().ok()?;
    Some(g)
}

/// Indices of the entries that differ between samples (`None`: lengths differ).
fn varying(ser: &[Vec<i64>]) -> Option<Vec<usize>> {
    let first = ser.first()?;
    if ser.iter().any(|s| s.len() != first.len()) {
        return None;
    }
    Some(
        (0..first.len())
            .filter(|&i| ser.iter().any(|s| s[i] != first[i]))
            .collect(),
    )
}

/// The constant shape for a Reshape whose shape input takes the values `ser` at the
/// batches `samples`: unchanged if it never varies; with -1 at the one entry that
/// varies in proportion to the batch when every other entry is fixed and positive
/// (then -1 resolves to exactly that entry at any batch the model accepts, since the
/// shape's product is the input's size); `None` otherwise.
pub(crate) fn reshape_target(ser: &[Vec<i64>], samples: &[usize]) -> Option<Vec<i64>> {
    let v = varying(ser)?;
    let first = ser.first()?;
    match v.as_slice() {
        [] => Some(first.clone()),
        [i] => {
            let proportional = first[*i] >= 1
                && ser
                    .iter()
                    .zip(samples)
                    .all(|(s, &b)| Some(s[*i]) == first[*i].checked_mul(b as i64));
            let others_fixed = first.iter().enumerate().all(|(k, &d)| k == *i || d >= 1);
            (proportional && others_fixed).then(|| {
                let mut t = first.clone();
                t[*i] = -1;
                t
            })
        }
        _ => None,
    }
}

/// How the values an op computes relate to an input that is the same along some
/// axes (a broadcast of its slice there).
enum Rule {
    /// Each output element combines the inputs' elements at the same (broadcast)
    /// index: an input that is the same along an axis may be given as its slice.
    Elementwise,
    /// Each output row depends on the same row of input 0 only, along every axis but
    /// the listed ones of input 0 (FULLY_CONNECTED's and MatMul's contracted axis,
    /// Softmax's axis); the other inputs must be unaffected.
    RowWise(Vec<usize>),
    /// Output elements are input elements picked by index (no arithmetic).
    Movement,
    /// Anything else: refuse.
    Refuse,
}

fn rule(g: &Graph, n: &Node, ins: &[Option<InputFact>]) -> Rule {
    let rank0 = ins.first().copied().flatten().map_or(0, |f| f.shape.len());
    let last = rank0.checked_sub(1).into_iter().collect::<Vec<_>>();
    // Per-axis quantization parameters along an axis that could shrink: refuse.
    let per_tensor = |ids: &[Option<ValueId>]| {
        ids.iter()
            .flatten()
            .all(|&v| g.values[v].quant.as_ref().is_none_or(|q| q.axis.is_none()))
    };
    let scalar_input = |k: usize| {
        ins.get(k)
            .copied()
            .flatten()
            .is_some_and(|f| f.shape.iter().product::<usize>() == 1)
    };
    match &n.op {
        Op::Binary { .. }
        | Op::Compare(_)
        | Op::Where
        | Op::Unary(_)
        | Op::Clip { .. }
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::Cast { .. } => Rule::Elementwise,
        Op::Quantize | Op::Dequantize => {
            let mut ids = n.inputs.clone();
            ids.extend(n.outputs.iter().map(|&o| Some(o)));
            if per_tensor(&ids) {
                Rule::Elementwise
            } else {
                Rule::Refuse
            }
        }
        Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } => {
            if scalar_input(1) && (n.input(2).is_none() || scalar_input(2)) {
                Rule::Elementwise
            } else {
                Rule::Refuse
            }
        }
        Op::FullyConnected { .. } | Op::MatMul => Rule::RowWise(last),
        Op::Softmax { axis, .. } | Op::LogSoftmax { axis } => {
            match crate::shape::norm_axis(*axis, rank0) {
                Ok(a) => Rule::RowWise(vec![a]),
                Err(_) => Rule::Refuse,
            }
        }
        Op::Identity
        | Op::Transpose { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Concat { .. }
        | Op::StridedSlice(_)
        | Op::Slice { .. }
        | Op::Split { .. } => Rule::Movement,
        Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::Gemm { .. }
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::GlobalAveragePool
        | Op::BatchNorm { .. }
        | Op::LayerNorm { .. }
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Tile { .. }
        | Op::Fill
        | Op::Gather { .. }
        | Op::Pad { .. }
        | Op::Lstm { .. }
        | Op::TopK { .. }
        | Op::Gru { .. }
        | Op::Reduce { .. }
        | Op::Resize(_)
        | Op::Shape
        | Op::QLinearConv(_)
        | Op::QLinearMatMul
        | Op::ConvInteger(_)
        | Op::MatMulInteger => Rule::Refuse,
    }
}

/// Axes where `new` is 1 and `old` is not, if `new` has `old`'s rank and differs
/// from it only there (it broadcasts back to `old`); `None` otherwise.
fn shrunk_axes(old: &[usize], new: &[usize]) -> Option<Vec<usize>> {
    if old.len() != new.len() {
        return None;
    }
    let mut axes = Vec::new();
    for (a, (&o, &n)) in old.iter().zip(new).enumerate() {
        if o != n {
            if n != 1 {
                return None;
            }
            axes.push(a);
        }
    }
    Some(axes)
}

/// With the Fill nodes of `fills` producing their batch-1 dims, the values whose
/// shapes change and the axes where they shrink to 1 — if every such value is only
/// read by ops that keep the graph's results (see the module docs) and none is a
/// graph output; `None` otherwise.
fn broadcast_closure(
    g: &Graph,
    facts: &Facts,
    fills: &[(usize, Vec<usize>)],
) -> Option<HashMap<ValueId, BTreeSet<usize>>> {
    let mut all: HashMap<ValueId, BTreeSet<usize>> = HashMap::new();
    // Batch 1 (sample 0) changes nothing; every other sample is checked.
    for f in facts.iter().skip(1) {
        let mut sub: HashMap<ValueId, OutputFact> = HashMap::new();
        for (ni, n) in g.nodes.iter().enumerate() {
            let fill = fills.iter().find(|(k, _)| *k == ni);
            let touched = n.present_inputs().any(|i| sub.contains_key(&i));
            if fill.is_none() && !touched {
                continue;
            }
            let ins: Vec<Option<InputFact>> = n
                .inputs
                .iter()
                .map(|x| {
                    x.and_then(|id| {
                        let fact = sub.get(&id).or(f.get(id)?.as_ref())?;
                        Some(InputFact {
                            dtype: fact.dtype,
                            shape: &fact.shape,
                            value: g.values[id].data.as_ref().or(fact.value.as_ref()),
                        })
                    })
                })
                .collect();
            let outs: Vec<OutputFact> = if let Some((_, dims)) = fill {
                let o = n.outputs.first()?;
                vec![OutputFact {
                    dtype: f.get(*o)?.as_ref()?.dtype,
                    shape: dims.clone(),
                    value: None,
                }]
            } else {
                let shrunk_in = |k: usize| -> Option<Vec<usize>> {
                    let id = n.input(k)?;
                    let s = sub.get(&id)?;
                    shrunk_axes(&f.get(id)?.as_ref()?.shape, &s.shape)
                };
                match rule(g, n, &ins) {
                    Rule::Elementwise | Rule::Movement => {}
                    Rule::RowWise(fixed) => {
                        let others = n.present_inputs().skip(1).any(|i| sub.contains_key(&i));
                        let bad = shrunk_in(0).is_none_or(|a| a.iter().any(|x| fixed.contains(x)));
                        if others || bad {
                            return None;
                        }
                    }
                    Rule::Refuse => return None,
                }
                let declared: Vec<Option<DType>> =
                    n.outputs.iter().map(|&o| Some(g.values[o].dtype)).collect();
                infer_node_declared(n, &ins, &declared).ok()?
            };
            for (&o, out) in n.outputs.iter().zip(outs) {
                let old = &f.get(o)?.as_ref()?.shape;
                if *old == out.shape {
                    continue;
                }
                let axes = shrunk_axes(old, &out.shape)?;
                if g.outputs.contains(&o) {
                    return None;
                }
                all.entry(o).or_default().extend(axes);
                sub.insert(o, out);
            }
        }
    }
    Some(all)
}

fn int_tensor(dtype: DType, v: Vec<i64>) -> Option<Tensor> {
    let shape = vec![v.len()];
    let data = match dtype {
        DType::I64 => TensorData::I64(v),
        DType::I32 => TensorData::I32(
            v.into_iter()
                .map(i32::try_from)
                .collect::<Result<_, _>>()
                .ok()?,
        ),
        DType::I8
        | DType::U8
        | DType::I16
        | DType::U16
        | DType::I4
        | DType::U4
        | DType::F32
        | DType::F16
        | DType::Bool => return None,
    };
    Tensor::new(shape, data).ok()
}
