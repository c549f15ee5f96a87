//! Removing channels: slice every constant of the groups on its axis, fix the
//! attributes that count channels (depthwise group counts, split sizes, slice bounds,
//! reshape targets), re-infer shapes and validate.

use super::analyze::{label, reshape_map};
use super::{ChannelGroup, Role, Space};
use crate::dtype::QuantParams;
use crate::error::{IrError, Result};
use crate::graph::{Dim, Graph, ValueId};
use crate::op::{Layout, Op};
use crate::shape::{bind_input_shapes, infer_graph, norm_axis, slice_geometry};
use crate::tensor::{Tensor, TensorData};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Removes the channels of `group` not listed in `keep` (indices into
/// `group.channels`). The group must come from [`super::analyze`] of this graph and be
/// prunable; `keep` must not be empty.
pub fn prune_channels(graph: &Graph, group: &ChannelGroup, keep: &[usize]) -> Result<Graph> {
    prune_groups(graph, &[(group, keep)])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Act(ValueId),
    Param(ValueId, usize),
}

fn key(s: &Space) -> Key {
    match s.role {
        Role::Activation => Key::Act(s.value),
        Role::Producer | Role::Consumer | Role::Operand | Role::QuantParam => {
            Key::Param(s.value, s.axes[0])
        }
    }
}

/// What survives of an activation's channels.
struct ActKept {
    axes: Vec<usize>,
    /// Kept atoms, ascending (row-major over the old dims).
    atoms: Vec<usize>,
    /// Kept coordinates per axis (the kept atoms are their product).
    coords: Vec<Vec<usize>>,
}

/// Removes channels of several groups of one analysis at once (`(group, keep)`
/// pairs): the same as pruning them one by one with a fresh analysis in between.
pub fn prune_groups(graph: &Graph, plan: &[(&ChannelGroup, &[usize])]) -> Result<Graph> {
    graph.validate()?;
    let old_facts = infer_graph(graph, &bind_input_shapes(graph, 1)?)?;
    let old_shape = |v: ValueId| -> Option<Vec<usize>> {
        graph.values[v]
            .data
            .as_ref()
            .map(|t| t.shape.clone())
            .or_else(|| old_facts.get(v)?.as_ref().map(|f| f.shape.clone()))
    };
    let mut removed: BTreeMap<Key, (Space, BTreeSet<usize>)> = BTreeMap::new();
    for (group, keep) in plan {
        if !group.is_prunable() {
            return Err(IrError::Unsupported(format!(
                "channel group is not prunable: {}",
                group.blocked.join("; ")
            )));
        }
        let keep: BTreeSet<usize> = keep.iter().copied().collect();
        if keep.is_empty() {
            return Err(IrError::Invalid(
                "keep at least one channel of the group".into(),
            ));
        }
        if let Some(&k) = keep.iter().find(|&&k| k >= group.len()) {
            return Err(IrError::Invalid(format!(
                "channel {k} out of range: the group has {}",
                group.len()
            )));
        }
        for s in &group.spaces {
            let shape = (s.value < graph.values.len())
                .then(|| old_shape(s.value))
                .flatten();
            let fits = shape.as_ref().is_some_and(|sh| {
                s.axes
                    .iter()
                    .zip(&s.dims)
                    .all(|(&a, &d)| sh.get(a) == Some(&d))
            });
            if !fits {
                return Err(IrError::Invalid(format!(
                    "the channel group does not belong to this graph (value #{} has shape {shape:?}, \
                     the group expects {:?} on axes {:?})",
                    s.value, s.dims, s.axes
                )));
            }
        }
        for (ci, chan) in group.channels.iter().enumerate() {
            if keep.contains(&ci) {
                continue;
            }
            for &(si, atom) in chan {
                let s = &group.spaces[si];
                removed
                    .entry(key(s))
                    .or_insert_with(|| (s.clone(), BTreeSet::new()))
                    .1
                    .insert(atom);
            }
        }
    }

    let mut g = graph.clone();
    let mut acts: HashMap<ValueId, ActKept> = HashMap::new();
    for (k, (space, gone)) in &removed {
        let kept: Vec<usize> = (0..space.len()).filter(|i| !gone.contains(i)).collect();
        let name = graph.values[space.value].name.clone();
        if kept.is_empty() {
            return Err(IrError::Tensor(
                name,
                "pruning would remove every one of its channels".into(),
            ));
        }
        match *k {
            Key::Act(v) => {
                let mut coords: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); space.axes.len()];
                for &a in &kept {
                    for (c, x) in coords.iter_mut().zip(unlin(a, &space.dims)) {
                        c.insert(x);
                    }
                }
                let coords: Vec<Vec<usize>> = coords
                    .into_iter()
                    .map(|c| c.into_iter().collect())
                    .collect();
                if coords.iter().map(Vec::len).product::<usize>() != kept.len() {
                    return Err(IrError::Tensor(
                        name,
                        "internal: the kept channels are not a product over the channel axes"
                            .into(),
                    ));
                }
                if space.axes.len() == 1 {
                    if let Some(q) = g.values[v].quant.take() {
                        g.values[v].quant =
                            Some(slice_quant(&q, space.axes[0], space.dims[0], &kept, &name)?);
                    }
                }
                acts.insert(
                    v,
                    ActKept {
                        axes: space.axes.clone(),
                        atoms: kept,
                        coords,
                    },
                );
            }
            Key::Param(v, axis) => {
                let val = &mut g.values[v];
                let t = val.data.as_ref().ok_or_else(|| {
                    IrError::Tensor(name.clone(), "internal: parameter is not a constant".into())
                })?;
                let nt = take_axis(t, axis, &kept)?;
                if let Some(q) = val.quant.take() {
                    val.quant = Some(slice_quant(&q, axis, t.shape[axis], &kept, &name)?);
                }
                val.shape = Some(nt.shape.iter().map(|&d| Dim::Fixed(d)).collect());
                val.data = Some(nt);
            }
        }
    }

    fix_attributes(&mut g, graph, &acts, &old_shape)?;

    // Re-infer: declared fixed dims follow the new shapes, symbolic ones stay.
    let facts = infer_graph(&g, &bind_input_shapes(&g, 1)?)?;
    for (v, f) in g.values.iter_mut().zip(&facts) {
        let (Some(f), None) = (f, &v.data) else {
            continue;
        };
        match &mut v.shape {
            Some(s) if s.len() == f.shape.len() => {
                for (d, &n) in s.iter_mut().zip(&f.shape) {
                    if let Dim::Fixed(x) = d {
                        *x = n;
                    }
                }
            }
            Some(s) => *s = f.shape.iter().map(|&d| Dim::Fixed(d)).collect(),
            None => {}
        }
    }
    verify_reshapes(&g, graph, &acts, &old_shape, &facts)?;
    g.validate()?;
    Ok(g)
}

fn unlin(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut c = vec![0; dims.len()];
    for k in (0..dims.len()).rev() {
        let d = dims[k].max(1);
        c[k] = i % d;
        i /= d;
    }
    c
}

fn fix_attributes(
    g: &mut Graph,
    old: &Graph,
    acts: &HashMap<ValueId, ActKept>,
    old_shape: &dyn Fn(ValueId) -> Option<Vec<usize>>,
) -> Result<()> {
    let consumers = old.consumers();
    let kept_on = |v: ValueId, axis: usize| -> Option<usize> {
        let k = acts.get(&v)?;
        let i = k.axes.iter().position(|&a| a == axis)?;
        Some(k.coords[i].len())
    };
    let mut names: HashSet<String> = g.values.iter().map(|v| v.name.clone()).collect();
    for ni in 0..g.nodes.len() {
        let node = g.nodes[ni].clone();
        let x = node.input(0);
        match &node.op {
            Op::Conv(a) => {
                let (Some(x), Some(xs)) = (x, x.and_then(old_shape)) else {
                    continue;
                };
                let c_axis = match a.layout {
                    Layout::Nchw => 1,
                    Layout::Nhwc => xs.len().saturating_sub(1),
                };
                if a.group > 1 && Some(&a.group) == xs.get(c_axis) {
                    if let Some(c) = kept_on(x, c_axis) {
                        let Op::Conv(a) = &mut g.nodes[ni].op else {
                            unreachable!("matched above")
                        };
                        a.group = c;
                    }
                }
            }
            Op::Split { axis, split } => {
                let Some(xs) = x.and_then(old_shape) else {
                    continue;
                };
                let ax = norm_axis(*axis, xs.len()).map_err(|e| node.error(e))?;
                let mut new = split.clone();
                for (k, &o) in node.outputs.iter().enumerate() {
                    if let (Some(c), Some(slot)) = (kept_on(o, ax), new.get_mut(k)) {
                        *slot = c;
                    }
                }
                if let Op::Split { split, .. } = &mut g.nodes[ni].op {
                    *split = new;
                }
            }
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            } => {
                let (Some(x), Some(xs)) = (x, x.and_then(old_shape)) else {
                    continue;
                };
                let Some(k) = acts.get(&x) else { continue };
                if k.axes.len() != 1 {
                    continue;
                }
                let ca = k.axes[0];
                let geo =
                    slice_geometry(&xs, starts, ends, axes, steps).map_err(|e| node.error(e))?;
                let list: Vec<i64> = if axes.is_empty() {
                    (0..starts.len() as i64).collect()
                } else {
                    axes.clone()
                };
                let (mut s2, mut e2, mut st2) = (starts.clone(), ends.clone(), steps.clone());
                if st2.is_empty() {
                    st2 = vec![1; starts.len()];
                }
                for (i, &a) in list.iter().enumerate() {
                    if norm_axis(a, xs.len()).map_err(|e| node.error(e))? != ca {
                        continue;
                    }
                    let (b, n) = (geo.begin[ca] as usize, geo.count[ca]);
                    let nb = k.atoms.partition_point(|&c| c < b);
                    let ne = k.atoms.partition_point(|&c| c < b + n);
                    s2[i] = nb as i64;
                    e2[i] = ne as i64;
                    st2[i] = 1;
                }
                if let Op::Slice {
                    starts,
                    ends,
                    steps,
                    ..
                } = &mut g.nodes[ni].op
                {
                    *starts = s2;
                    *ends = e2;
                    *steps = st2;
                }
            }
            Op::Reshape { .. } => {
                let (Some(&y), Some(sv)) = (node.outputs.first(), node.input(1)) else {
                    continue;
                };
                let Some(k) = acts.get(&y) else { continue };
                let Some(t) = old.values[sv].data.as_ref() else {
                    return Err(node.error("internal: reshape target is not a constant"));
                };
                let mut target = t.to_i64_vec();
                for (i, &a) in k.axes.iter().enumerate() {
                    let slot = target
                        .get_mut(a)
                        .ok_or_else(|| node.error("internal: target shorter than the output"))?;
                    *slot = k.coords[i].len() as i64;
                }
                let data = match t.dtype() {
                    crate::DType::I64 => TensorData::I64(target),
                    crate::DType::I32 => {
                        TensorData::I32(target.into_iter().map(|d| d as i32).collect())
                    }
                    d => return Err(node.error(format!("reshape target of type {d}"))),
                };
                let nt = Tensor::new(t.shape.clone(), data)?;
                if consumers[sv].len() == 1 {
                    g.values[sv].data = Some(nt);
                } else {
                    let base = format!("{}_pruned", old.values[sv].name);
                    let mut name = base.clone();
                    let mut i = 1;
                    while names.contains(&name) {
                        name = format!("{base}{i}");
                        i += 1;
                    }
                    names.insert(name.clone());
                    let id = g.add_const(name, nt);
                    g.nodes[ni].inputs[1] = Some(id);
                }
            }
            Op::Squeeze { axes } if axes.is_empty() => {
                let (Some(x), Some(xs)) = (x, x.and_then(old_shape)) else {
                    continue;
                };
                if !acts.contains_key(&x) {
                    continue;
                }
                let explicit: Vec<i64> = (0..xs.len())
                    .filter(|&a| xs[a] == 1)
                    .map(|a| a as i64)
                    .collect();
                if let Op::Squeeze { axes } = &mut g.nodes[ni].op {
                    *axes = explicit;
                }
            }
            Op::Squeeze { .. }
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
            | Op::Unsqueeze { .. }
            | Op::Concat { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Gather { .. }
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
    }
    Ok(())
}

/// Checks that every reshape-like node still maps each kept channel to where the
/// original mapped it (the new target was derived from kept counts; this is the proof).
fn verify_reshapes(
    g: &Graph,
    old: &Graph,
    acts: &HashMap<ValueId, ActKept>,
    old_shape: &dyn Fn(ValueId) -> Option<Vec<usize>>,
    facts: &[Option<crate::shape::OutputFact>],
) -> Result<()> {
    for (ni, node) in g.nodes.iter().enumerate() {
        let reshape_like = matches!(
            node.op,
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. }
        );
        if !reshape_like {
            continue;
        }
        let (Some(x), Some(&y)) = (node.input(0), node.outputs.first()) else {
            continue;
        };
        let Some(kin) = acts.get(&x) else { continue };
        let (Some(xs0), Some(ys0)) = (old_shape(x), old_shape(y)) else {
            continue;
        };
        let fail = |m: String| IrError::Node {
            node: old.nodes[ni].name.clone(),
            op: node.op.name().into(),
            msg: format!("internal: {m}"),
        };
        let (out_axes, old_map) = reshape_map(&xs0, &kin.axes, &ys0).map_err(fail)?;
        let new_in = facts[x].as_ref().map(|f| f.shape.clone());
        let new_out = facts[y].as_ref().map(|f| f.shape.clone());
        let (Some(xs1), Some(ys1)) = (new_in, new_out) else {
            return Err(fail("no shape after pruning".into()));
        };
        let kout: Vec<usize> = match acts.get(&y) {
            Some(k) if k.axes == out_axes => k.atoms.clone(),
            Some(_) => return Err(fail("output channel axes changed".into())),
            None => (0..old_map.len()).collect(),
        };
        let in_dims1: Vec<usize> = kin.axes.iter().map(|&a| xs1[a]).collect();
        let out_dims1: Vec<usize> = out_axes.iter().map(|&b| ys1[b]).collect();
        let st = |s: &[usize]| {
            let mut v = vec![1; s.len()];
            for i in (0..s.len().saturating_sub(1)).rev() {
                v[i] = v[i + 1] * s[i + 1];
            }
            v
        };
        let (ist, ost) = (st(&xs1), st(&ys1));
        let numel: usize = xs1.iter().product();
        for f in 0..numel {
            let i1 = kin
                .axes
                .iter()
                .zip(&in_dims1)
                .fold(0, |acc, (&a, &d)| acc * d + (f / ist[a]) % xs1[a]);
            let o1 = out_axes
                .iter()
                .zip(&out_dims1)
                .fold(0, |acc, (&b, &d)| acc * d + (f / ost[b]) % ys1[b]);
            let (Some(&ko), Some(&ki)) = (kout.get(o1), kin.atoms.get(i1)) else {
                return Err(fail("channel index out of range after pruning".into()));
            };
            if old_map[ko] != ki {
                return Err(fail(format!(
                    "{} maps kept channel {ki} elsewhere after pruning",
                    label(node)
                )));
            }
        }
    }
    Ok(())
}

/// Elements of `t` whose index on `axis` is in `keep` (ascending), same rank.
fn take_axis(t: &Tensor, axis: usize, keep: &[usize]) -> Result<Tensor> {
    if axis >= t.rank() || keep.iter().any(|&k| k >= t.shape[axis]) {
        return Err(IrError::Invalid(format!(
            "cannot take {keep:?} on axis {axis} of shape {:?}",
            t.shape
        )));
    }
    let d = t.shape[axis];
    let outer: usize = t.shape[..axis].iter().product();
    let inner: usize = t.shape[axis + 1..].iter().product();
    let mut idx = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &k in keep {
            let base = (o * d + k) * inner;
            idx.extend(base..base + inner);
        }
    }
    let mut shape = t.shape.clone();
    shape[axis] = keep.len();
    Tensor::new(shape, gather(&t.data, &idx))
}

fn gather(d: &TensorData, idx: &[usize]) -> TensorData {
    fn pick<T: Copy>(v: &[T], idx: &[usize]) -> Vec<T> {
        idx.iter().map(|&i| v[i]).collect()
    }
    match d {
        TensorData::F32(v) => TensorData::F32(pick(v, idx)),
        TensorData::F16(v) => TensorData::F16(pick(v, idx)),
        TensorData::I8(v) => TensorData::I8(pick(v, idx)),
        TensorData::U8(v) => TensorData::U8(pick(v, idx)),
        TensorData::I16(v) => TensorData::I16(pick(v, idx)),
        TensorData::U16(v) => TensorData::U16(pick(v, idx)),
        TensorData::I32(v) => TensorData::I32(pick(v, idx)),
        TensorData::I64(v) => TensorData::I64(pick(v, idx)),
        TensorData::Bool(v) => TensorData::Bool(pick(v, idx)),
        TensorData::I4(v) => TensorData::I4(pick(v, idx)),
        TensorData::U4(v) => TensorData::U4(pick(v, idx)),
    }
}

/// Per-axis quantization parameters follow the slices they describe (block-wise ones
/// block by block); per-tensor ones and those of another axis stay.
fn slice_quant(
    q: &QuantParams,
    axis: usize,
    dim: usize,
    keep: &[usize],
    name: &str,
) -> Result<QuantParams> {
    if q.axis != Some(axis) || q.scale.len() <= 1 {
        return Ok(q.clone());
    }
    if dim == 0 || !q.scale.len().is_multiple_of(dim) {
        return Err(IrError::Tensor(
            name.into(),
            format!("{} scales for {dim} channels", q.scale.len()),
        ));
    }
    let blocks = q.scale.len() / dim;
    let pick = |v: &[i64]| -> Vec<i64> {
        keep.iter()
            .flat_map(|&c| v[c * blocks..(c + 1) * blocks].iter().copied())
            .collect()
    };
    let scale: Vec<f32> = keep
        .iter()
        .flat_map(|&c| q.scale[c * blocks..(c + 1) * blocks].iter().copied())
        .collect();
    let zero_point = if q.zero_point.len() == q.scale.len() {
        pick(&q.zero_point)
    } else {
        q.zero_point.clone()
    };
    Ok(QuantParams {
        scale,
        zero_point,
        axis: q.axis,
        block_size: q.block_size,
    })
}

/// The original graph with the [`Role::Producer`] parameters of the channels in
/// `remove` set to (quantized) zero: where the group is zero-exact
/// ([`ChannelGroup::not_zero_exact`] is `None`), its outputs equal those of the graph
/// pruned to the other channels, up to float summation order.
pub fn zero_channels(graph: &Graph, group: &ChannelGroup, remove: &[usize]) -> Result<Graph> {
    let mut g = graph.clone();
    for &ci in remove {
        let chan = group.channels.get(ci).ok_or_else(|| {
            IrError::Invalid(format!(
                "channel {ci} out of range: the group has {}",
                group.len()
            ))
        })?;
        for &(si, atom) in chan {
            let s = &group.spaces[si];
            if s.role != Role::Producer {
                continue;
            }
            let val = &mut g.values[s.value];
            let quant = val.quant.clone();
            let t = val.data.as_mut().ok_or_else(|| {
                IrError::Tensor(val.name.clone(), "parameter is not a constant".into())
            })?;
            let axis = s.axes[0];
            if axis >= t.rank() || atom >= t.shape[axis] {
                return Err(IrError::Invalid(format!(
                    "the channel group does not belong to this graph ('{}')",
                    val.name
                )));
            }
            let d = t.shape[axis];
            let inner: usize = t.shape[axis + 1..].iter().product();
            let outer: usize = t.shape[..axis].iter().product();
            let strides = {
                let mut v = vec![1usize; t.rank()];
                for i in (0..t.rank().saturating_sub(1)).rev() {
                    v[i] = v[i + 1] * t.shape[i + 1];
                }
                v
            };
            for o in 0..outer {
                for i in 0..inner {
                    let flat = (o * d + atom) * inner + i;
                    let zp = match &quant {
                        Some(q) => match q.axis {
                            Some(qa) if q.zero_point.len() > 1 && qa < t.shape.len() => {
                                let c = (flat / strides[qa]) % t.shape[qa];
                                q.zero_point.get(c).copied().unwrap_or(0)
                            }
                            Some(_) | None => q.zero_point.first().copied().unwrap_or(0),
                        },
                        None => 0,
                    };
                    set_zero(&mut t.data, flat, zp);
                }
            }
        }
    }
    Ok(g)
}

fn set_zero(d: &mut TensorData, i: usize, zp: i64) {
    match d {
        TensorData::F32(v) => v[i] = 0.0,
        TensorData::F16(v) => v[i] = half::f16::ZERO,
        TensorData::I8(v) | TensorData::I4(v) => v[i] = zp as i8,
        TensorData::U8(v) | TensorData::U4(v) => v[i] = zp as u8,
        TensorData::I16(v) => v[i] = zp as i16,
        TensorData::U16(v) => v[i] = zp as u16,
        TensorData::I32(v) => v[i] = zp as i32,
        TensorData::I64(v) => v[i] = zp,
        TensorData::Bool(v) => v[i] = false,
    }
}
