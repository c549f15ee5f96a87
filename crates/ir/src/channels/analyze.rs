//! The analysis: one rule per op (exhaustive over [`Op`]) that unions channel atoms,
//! then the checks that block what the rules could not vouch for, then grouping.

use super::{ChannelAnalysis, ChannelGroup, Role, Space};
use crate::error::Result;
use crate::graph::{Graph, Node, ValueId};
use crate::op::{BinaryKind, ConvAttrs, Layout, Op, UnaryKind};
use crate::shape::slice_geometry;
use crate::shape::{bind_input_shapes, full_perm, infer_graph, norm_axis, reduce_axes};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Largest tensor whose reshape mapping is verified element by element (4 Mi
/// elements: about 20 ms; every reshape of the test models is below 30 k).
const MAX_VERIFY: usize = 1 << 22;

/// Analyses the channel dependencies of `graph` (shapes inferred at batch 1).
pub fn analyze(graph: &Graph) -> Result<ChannelAnalysis> {
    graph.validate()?;
    let input_shapes = bind_input_shapes(graph, 1)?;
    let facts = infer_graph(graph, &input_shapes)?;
    let shapes: Vec<Option<Vec<usize>>> = facts
        .into_iter()
        .zip(&graph.values)
        .map(|(f, v)| match (&v.data, f) {
            (Some(t), _) => Some(t.shape.clone()),
            (None, Some(f)) => Some(f.shape),
            (None, None) => None,
        })
        .collect();
    let mut b = Builder {
        g: graph,
        shapes,
        producers: graph.producers(),
        consumers: graph.consumers(),
        spaces: Vec::new(),
        offsets: Vec::new(),
        act: vec![None; graph.values.len()],
        params: HashMap::new(),
        parent: Vec::new(),
        blocked: HashMap::new(),
        nonzero: HashMap::new(),
        param_users: HashMap::new(),
    };
    for (ni, node) in graph.nodes.iter().enumerate() {
        let taken = b.rule(ni, node);
        for (k, inp) in node.inputs.iter().enumerate() {
            if let Some(v) = *inp {
                if b.act[v].is_some() && !taken.contains(&k) {
                    b.block_value(
                        v,
                        format!(
                            "{} reads these channels (input {k}) in a way the analysis does not map",
                            label(node)
                        ),
                    );
                }
            }
        }
    }
    b.finish_checks();
    Ok(b.group())
}

pub(super) fn label(node: &Node) -> String {
    format!("{} '{}'", node.op.name(), node.name)
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Row-major index of `coords` over `dims`.
fn lin(coords: impl Iterator<Item = usize>, dims: &[usize]) -> usize {
    coords.zip(dims).fold(0, |acc, (c, &d)| acc * d + c)
}

/// Coordinates of row-major index `i` over `dims`.
fn unlin(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut c = vec![0; dims.len()];
    for k in (0..dims.len()).rev() {
        let d = dims[k].max(1);
        c[k] = i % d;
        i /= d;
    }
    c
}

/// The element mapping of a reshape (Reshape, Flatten, Squeeze, Unsqueeze) restricted
/// to channels: the channels live on `in_axes` of `in_shape`; returns the output axes
/// that carry them and, for each output atom (row-major over those axes), the input
/// atom it comes from. An input channel `c` on axis `a` is the digit `(flat / s_a) %
/// d_a` of the flat row-major index; an output axis carries channels iff its digit
/// range overlaps a channel digit range. The mapping is then checked on every element
/// (an output axis that mixes channel and non-channel digits in a way that is not a
/// function of the output atom is refused).
pub(super) fn reshape_map(
    in_shape: &[usize],
    in_axes: &[usize],
    out_shape: &[usize],
) -> std::result::Result<(Vec<usize>, Vec<usize>), String> {
    let numel: usize = in_shape.iter().product();
    if numel != out_shape.iter().product::<usize>() {
        return Err(format!(
            "reshape {in_shape:?} -> {out_shape:?} changes the element count"
        ));
    }
    let ist = strides(in_shape);
    let ost = strides(out_shape);
    let in_dims: Vec<usize> = in_axes.iter().map(|&a| in_shape[a]).collect();
    let ranges: Vec<(usize, usize)> = in_axes
        .iter()
        .filter(|&&a| in_shape[a] > 1)
        .map(|&a| (ist[a], ist[a] * in_shape[a]))
        .collect();
    let out_axes: Vec<usize> = (0..out_shape.len())
        .filter(|&b| {
            out_shape[b] > 1
                && ranges
                    .iter()
                    .any(|&(lo, hi)| lo < ost[b] * out_shape[b] && ost[b] < hi)
        })
        .collect();
    if out_axes.is_empty() {
        return Err(format!(
            "reshape {in_shape:?} -> {out_shape:?} leaves no axis for the channels"
        ));
    }
    if numel > MAX_VERIFY {
        return Err(format!(
            "reshape of {numel} elements is too large to verify its channel mapping"
        ));
    }
    let out_dims: Vec<usize> = out_axes.iter().map(|&b| out_shape[b]).collect();
    let in_atom = |f: usize| {
        lin(
            in_axes.iter().map(|&a| (f / ist[a]) % in_shape[a]),
            &in_dims,
        )
    };
    let n_out: usize = out_dims.iter().product();
    let map: Vec<usize> = (0..n_out)
        .map(|o| {
            let c = unlin(o, &out_dims);
            in_atom(out_axes.iter().zip(&c).map(|(&b, &x)| x * ost[b]).sum())
        })
        .collect();
    for f in 0..numel {
        let o = lin(
            out_axes.iter().map(|&b| (f / ost[b]) % out_shape[b]),
            &out_dims,
        );
        if map[o] != in_atom(f) {
            return Err(format!(
                "reshape {in_shape:?} -> {out_shape:?} mixes the channels (axes {in_axes:?}) \
                 with other axes"
            ));
        }
    }
    Ok((out_axes, map))
}

/// Whether an op maps zero to zero (given its producing parameters zeroed): `None`
/// when it does, else why not.
fn unary_zero(k: UnaryKind) -> Option<&'static str> {
    match k {
        UnaryKind::Relu
        | UnaryKind::Relu6
        | UnaryKind::Tanh
        | UnaryKind::HardSwish
        | UnaryKind::Neg
        | UnaryKind::Abs
        | UnaryKind::Sqrt
        | UnaryKind::Floor
        | UnaryKind::Ceil
        | UnaryKind::Erf
        | UnaryKind::Gelu => None,
        UnaryKind::Sigmoid => Some("Sigmoid(0) = 0.5"),
        UnaryKind::Exp => Some("Exp(0) = 1"),
        UnaryKind::Log => Some("Log(0) = -inf"),
        UnaryKind::Reciprocal => Some("1 / 0"),
        UnaryKind::Not => Some("Not(0) = 1"),
    }
}

struct Builder<'g> {
    g: &'g Graph,
    shapes: Vec<Option<Vec<usize>>>,
    producers: Vec<Option<usize>>,
    consumers: Vec<Vec<usize>>,
    spaces: Vec<Space>,
    /// First atom of each space.
    offsets: Vec<usize>,
    /// The activation space of each value.
    act: Vec<Option<usize>>,
    /// Parameter spaces by (constant, axis).
    params: HashMap<(ValueId, usize), usize>,
    /// Union-find over atoms.
    parent: Vec<usize>,
    /// Atoms that may not be removed, with the first reason.
    blocked: HashMap<usize, String>,
    /// Atoms whose producer does not map zero to zero.
    nonzero: HashMap<usize, String>,
    /// Nodes that registered a use of a constant (or of a weight-chain value).
    param_users: HashMap<ValueId, HashSet<usize>>,
}

type Taken = Vec<usize>;

impl Builder<'_> {
    fn shape(&self, v: ValueId) -> Option<&[usize]> {
        self.shapes.get(v)?.as_deref()
    }

    fn add_space(&mut self, value: ValueId, axes: Vec<usize>, role: Role) -> Option<usize> {
        let shape = self.shape(value)?;
        if axes.iter().any(|&a| a >= shape.len()) {
            return None;
        }
        let dims: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
        let n: usize = dims.iter().product();
        let off = self.parent.len();
        self.parent.extend(off..off + n);
        self.offsets.push(off);
        self.spaces.push(Space {
            value,
            axes,
            dims,
            role,
        });
        Some(self.spaces.len() - 1)
    }

    /// The activation space of a node output (created once).
    fn new_act(&mut self, v: ValueId, axes: Vec<usize>) -> Option<usize> {
        if let Some(s) = self.act[v] {
            return Some(s);
        }
        let s = self.add_space(v, axes, Role::Activation)?;
        self.act[v] = Some(s);
        Some(s)
    }

    fn atom(&self, s: usize, i: usize) -> usize {
        self.offsets[s] + i
    }

    fn find(&mut self, mut a: usize) -> usize {
        while self.parent[a] != a {
            self.parent[a] = self.parent[self.parent[a]];
            a = self.parent[a];
        }
        a
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The smaller id is the root: components stay ordered by first atom.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi] = lo;
        }
    }

    fn block_range(&mut self, s: usize, lo: usize, hi: usize, reason: &str) {
        for i in lo..hi {
            let a = self.atom(s, i);
            self.blocked.entry(a).or_insert_with(|| reason.to_string());
        }
    }

    fn block(&mut self, s: usize, reason: impl Into<String>) {
        let n = self.spaces[s].len();
        self.block_range(s, 0, n, &reason.into());
    }

    fn block_value(&mut self, v: ValueId, reason: impl Into<String>) {
        if let Some(s) = self.act[v] {
            self.block(s, reason);
        }
    }

    fn not_zero(&mut self, s: usize, reason: impl Into<String>) {
        let reason = reason.into();
        for i in 0..self.spaces[s].len() {
            let a = self.atom(s, i);
            self.nonzero.entry(a).or_insert_with(|| reason.clone());
        }
    }

    /// Unions two spaces atom by atom (equal sizes), else blocks both.
    fn link(&mut self, a: usize, b: usize) {
        let (na, nb) = (self.spaces[a].len(), self.spaces[b].len());
        if na != nb {
            let msg = format!(
                "'{}' has {na} channels where '{}' has {nb}",
                self.g.values[self.spaces[a].value].name, self.g.values[self.spaces[b].value].name
            );
            self.block(a, msg.clone());
            self.block(b, msg);
            return;
        }
        for i in 0..na {
            let (x, y) = (self.atom(a, i), self.atom(b, i));
            self.union(x, y);
        }
    }

    /// Follows a parameter operand back to its constant through `Dequantize`,
    /// `DequantizeLinear` and `Transpose`, registering the parameter spaces to slice
    /// (the constant on the corresponding axis, and a per-axis scale / zero point on
    /// that axis). Every space returned has one atom per channel.
    fn resolve(
        &mut self,
        user: usize,
        v: ValueId,
        axis: usize,
        role: Role,
    ) -> std::result::Result<Vec<usize>, String> {
        let (mut v, mut axis, mut user) = (v, axis, user);
        let mut out = Vec::new();
        loop {
            let val = &self.g.values[v];
            if val.is_const() {
                out.push(self.param(user, v, axis, role)?);
                return Ok(out);
            }
            let Some(p) = self.producers[v] else {
                return Err(format!(
                    "'{}' is neither a constant nor computed from one",
                    val.name
                ));
            };
            if self.consumers[v].len() != 1 {
                return Err(format!(
                    "'{}' (parameters) is also read by other nodes",
                    val.name
                ));
            }
            self.param_users.entry(v).or_default().insert(user);
            let pn = &self.g.nodes[p];
            let x = pn
                .input(0)
                .ok_or_else(|| format!("{} has no input", label(pn)))?;
            match &pn.op {
                Op::Dequantize => {}
                Op::DequantizeLinear {
                    axis: qa,
                    block_size,
                } => {
                    let rank = self.shape(x).map_or(0, <[usize]>::len);
                    let qa = norm_axis(*qa, rank)?;
                    for k in [1, 2] {
                        let Some(sv) = pn.input(k) else { continue };
                        let n: usize = self.shape(sv).map_or(1, |s| s.iter().product());
                        if n <= 1 {
                            continue;
                        }
                        if *block_size != 0 {
                            return Err(format!("{} has block-wise scales", label(pn)));
                        }
                        if qa == axis {
                            if !self.g.values[sv].is_const() {
                                return Err(format!("{} has computed scales", label(pn)));
                            }
                            out.push(self.param(p, sv, 0, Role::QuantParam)?);
                        }
                    }
                }
                Op::Transpose { perm } => {
                    let rank = self.shape(x).map_or(0, <[usize]>::len);
                    let perm = full_perm(perm, rank)?;
                    axis = *perm
                        .get(axis)
                        .ok_or_else(|| format!("{}: axis out of range", label(pn)))?;
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
                | Op::QLinearConv(_)
                | Op::QLinearMatMul
                | Op::ConvInteger(_)
                | Op::MatMulInteger
                | Op::Quantize => {
                    return Err(format!(
                        "parameters '{}' are computed by {}",
                        self.g.values[v].name,
                        label(pn)
                    ))
                }
            }
            v = x;
            user = p;
        }
    }

    fn param(
        &mut self,
        user: usize,
        v: ValueId,
        axis: usize,
        role: Role,
    ) -> std::result::Result<usize, String> {
        self.param_users.entry(v).or_default().insert(user);
        if let Some(&s) = self.params.get(&(v, axis)) {
            if role == Role::Producer {
                self.spaces[s].role = Role::Producer;
            }
            return Ok(s);
        }
        let s = self
            .add_space(v, vec![axis], role)
            .ok_or_else(|| format!("constant '{}' has no axis {axis}", self.g.values[v].name))?;
        self.params.insert((v, axis), s);
        Ok(s)
    }

    /// One rule per op; returns the inputs whose channels the rule mapped (any other
    /// input that carries channels is blocked by the caller).
    fn rule(&mut self, ni: usize, node: &Node) -> Taken {
        match &node.op {
            Op::Conv(a) => self.conv(ni, node, a),
            Op::FullyConnected { .. } => {
                let (Some(x), Some(w)) = (node.input(0), node.input(1)) else {
                    return vec![];
                };
                let xr = self.shape(x).map_or(0, <[usize]>::len);
                self.dense(
                    ni,
                    node,
                    x,
                    xr.saturating_sub(1),
                    w,
                    1,
                    0,
                    node.input(2),
                    false,
                )
            }
            Op::Gemm {
                trans_a, trans_b, ..
            } => {
                let (Some(a), Some(b)) = (node.input(0), node.input(1)) else {
                    return vec![];
                };
                let (b_in, b_out) = if *trans_b { (1, 0) } else { (0, 1) };
                self.dense(
                    ni,
                    node,
                    a,
                    if *trans_a { 0 } else { 1 },
                    b,
                    b_in,
                    b_out,
                    node.input(2),
                    true,
                )
            }
            Op::MatMul => {
                let (Some(a), Some(b)) = (node.input(0), node.input(1)) else {
                    return vec![];
                };
                if self.shape(b).map_or(0, <[usize]>::len) != 2 {
                    return vec![];
                }
                let ar = self.shape(a).map_or(0, <[usize]>::len);
                self.dense(ni, node, a, ar.saturating_sub(1), b, 0, 1, None, false)
            }
            Op::Binary { kind, .. } => self.elementwise(ni, node, *kind),
            Op::Unary(k) => self.pass(node, unary_zero(*k).map(String::from)),
            Op::Clip { min, max } => {
                let z = (min.unwrap_or(f32::NEG_INFINITY) > 0.0
                    || max.unwrap_or(f32::INFINITY) < 0.0)
                    .then(|| "Clip excludes 0".to_string());
                self.pass(node, z)
            }
            Op::LeakyRelu { .. } | Op::Identity | Op::Cast { .. } => self.pass(node, None),
            Op::Quantize | Op::Dequantize => self.pass(node, None),
            Op::HardSigmoid { beta, .. } => {
                let z = (*beta > 0.0).then(|| format!("HardSigmoid(0) = {beta}"));
                self.pass(node, z)
            }
            Op::Softmax { .. } | Op::LogSoftmax { .. } => {
                self.pass(node, Some("softmax of zeros is not zero".into()))
            }
            Op::MaxPool(p) | Op::AveragePool(p) => {
                let rank = node
                    .input(0)
                    .and_then(|x| self.shape(x))
                    .map_or(0, <[usize]>::len);
                let c = match p.layout {
                    Layout::Nchw => 1,
                    Layout::Nhwc => rank.saturating_sub(1),
                };
                self.pass_if(node, |sp, _, _| sp.axes == [c])
            }
            Op::GlobalAveragePool => self.pass_if(node, |sp, _, _| sp.axes == [1]),
            Op::BatchNorm { .. } => self.batchnorm(ni, node),
            Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => self.reshape(node),
            Op::Reshape { .. } => {
                let target_known = node.input(1).is_some_and(|s| self.g.values[s].is_const());
                if !target_known {
                    if let Some(x) = node.input(0) {
                        self.block_value(
                            x,
                            format!("{}: target shape computed at run time", label(node)),
                        );
                    }
                    return vec![0];
                }
                self.reshape(node)
            }
            Op::Transpose { perm } => self.transpose(node, perm),
            Op::Concat { axis, .. } => self.concat(node, *axis),
            Op::Split { axis, .. } => self.split(node, *axis),
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            } => self.slice(node, starts, ends, axes, steps),
            Op::Pad { mode, pads, value } => {
                let z = (matches!(mode, crate::op::PadMode::Constant) && *value != 0.0)
                    .then(|| format!("padding with {value}"));
                let pads = pads.clone();
                let t = self.pass_if(node, move |sp, _, _| {
                    let r = pads.len() / 2;
                    sp.axes
                        .iter()
                        .all(|&a| a < r && pads[a] == 0 && pads[a + r] == 0)
                });
                self.mark_out_nonzero(node, z);
                t
            }
            Op::Tile { repeats } => {
                let repeats = repeats.clone();
                self.pass_if(node, move |sp, _, _| {
                    sp.axes.iter().all(|&a| repeats.get(a) == Some(&1))
                })
            }
            Op::Resize(_) => self.pass_if(node, |sp, xs, ys| {
                xs.len() == ys.len() && sp.axes.iter().all(|&a| xs[a] == ys[a])
            }),
            Op::Reduce {
                axes,
                keepdims,
                noop_with_empty_axes,
                ..
            } => self.reduce(node, axes.as_deref(), *keepdims, *noop_with_empty_axes),
            Op::QuantizeLinear {
                axis, block_size, ..
            }
            | Op::DequantizeLinear { axis, block_size } => self.qdq(ni, node, *axis, *block_size),
            // Ops the analysis does not map: whatever channels they read are blocked
            // by the caller (nothing taken), their outputs carry no channels.
            Op::ConvTranspose(_)
            | Op::Compare(_)
            | Op::Where
            | Op::LayerNorm { .. }
            | Op::StridedSlice(_)
            | Op::Fill
            | Op::Gather { .. }
            | Op::Lstm { .. }
            | Op::TopK { .. }
            | Op::Gru { .. }
            | Op::Shape
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger => vec![],
        }
    }

    fn mark_out_nonzero(&mut self, node: &Node, reason: Option<String>) {
        if let (Some(r), Some(&y)) = (reason, node.outputs.first()) {
            if let Some(s) = self.act[y] {
                self.not_zero(s, format!("{}: {r}", label(node)));
            }
        }
    }

    /// Output 0 carries input 0's channels on the same axes, atom for atom.
    fn pass(&mut self, node: &Node, zero: Option<String>) -> Taken {
        let t = self.pass_if(node, |_, _, _| true);
        self.mark_out_nonzero(node, zero);
        t
    }

    /// [`Self::pass`] when `ok(space, input shape, output shape)` holds and the output
    /// has the channel axes with the same sizes; otherwise the input is blocked.
    fn pass_if(&mut self, node: &Node, ok: impl Fn(&Space, &[usize], &[usize]) -> bool) -> Taken {
        let (Some(x), Some(&y)) = (node.input(0), node.outputs.first()) else {
            return vec![];
        };
        let Some(s) = self.act[x] else {
            return vec![0];
        };
        let (Some(xs), Some(ys)) = (self.shape(x), self.shape(y)) else {
            return vec![];
        };
        let sp = &self.spaces[s];
        let same = sp
            .axes
            .iter()
            .zip(&sp.dims)
            .all(|(&a, &d)| ys.get(a) == Some(&d));
        if !same || !ok(sp, xs, ys) {
            return vec![];
        }
        let axes = sp.axes.clone();
        if let Some(o) = self.new_act(y, axes) {
            self.link(o, s);
        }
        vec![0]
    }

    fn conv(&mut self, ni: usize, node: &Node, a: &ConvAttrs) -> Taken {
        let (Some(x), Some(w), Some(&y)) = (node.input(0), node.input(1), node.outputs.first())
        else {
            return vec![];
        };
        let (Some(xs), Some(ws)) = (self.shape(x), self.shape(w)) else {
            return vec![];
        };
        let (c_axis, w_in) = match a.layout {
            Layout::Nchw => (1, 1),
            Layout::Nhwc => (xs.len().saturating_sub(1), ws.len().saturating_sub(1)),
        };
        let (c_in, g) = (xs.get(c_axis).copied().unwrap_or(0), a.group.max(1));
        let m = ws.first().copied().unwrap_or(0);
        let depthwise = g > 1 && g == c_in;
        let Some(ys) = self.new_act(y, vec![c_axis]) else {
            return vec![];
        };
        if self.spaces[ys].len() != m || (depthwise && m % c_in != 0) {
            self.block(
                ys,
                format!("{}: weights do not match the output", label(node)),
            );
            self.block_value(
                x,
                format!("{}: weights do not match the input", label(node)),
            );
            return vec![0];
        }
        if g > 1 && !depthwise {
            let msg = format!(
                "{}: grouped convolution ({g} groups of {} channels): removal would have \
                 to keep the groups equal (not supported)",
                label(node),
                c_in / g
            );
            self.block(ys, msg.clone());
            self.block_value(x, msg);
            return vec![0];
        }
        match self.resolve(ni, w, 0, Role::Producer) {
            Ok(ps) => ps.into_iter().for_each(|p| self.link(ys, p)),
            Err(e) => self.block(ys, format!("{}: {e}", label(node))),
        }
        if let Some(b) = node.input(2) {
            match self.resolve(ni, b, 0, Role::Producer) {
                Ok(ps) => ps.into_iter().for_each(|p| self.link(ys, p)),
                Err(e) => self.block(ys, format!("{}: {e}", label(node))),
            }
        }
        match self.act[x] {
            Some(xsp) if self.spaces[xsp].axes != [c_axis] => {
                let msg = format!(
                    "{} reads channels on axis {c_axis}, they are on axes {:?}",
                    label(node),
                    self.spaces[xsp].axes
                );
                self.block(xsp, msg);
            }
            Some(xsp) if depthwise => {
                // Output channel m reads input channel m / mult (ONNX group semantics;
                // the IR keeps TFLite depthwise weights as [C*mult, kh, kw, 1]).
                let mult = m / c_in.max(1);
                for c in 0..c_in {
                    for j in 0..mult {
                        let (p, q) = (self.atom(xsp, c), self.atom(ys, c * mult + j));
                        self.union(p, q);
                    }
                }
            }
            Some(xsp) => match self.resolve(ni, w, w_in, Role::Consumer) {
                Ok(ps) => ps.into_iter().for_each(|p| self.link(xsp, p)),
                Err(e) => self.block(xsp, format!("{}: {e}", label(node))),
            },
            None if depthwise => self.block(
                ys,
                format!(
                    "{}: depthwise input channels come from a tensor the analysis does not track",
                    label(node)
                ),
            ),
            None => {}
        }
        vec![0]
    }

    /// Conv-like ops over a matrix: `x`'s channels on `x_axis` are read by `w`'s
    /// `w_in` axis; `w`'s `w_out` axis (and the bias) produce the output's last axis.
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &mut self,
        ni: usize,
        node: &Node,
        x: ValueId,
        x_axis: usize,
        w: ValueId,
        w_in: usize,
        w_out: usize,
        bias: Option<ValueId>,
        broadcast_bias: bool,
    ) -> Taken {
        let Some(&y) = node.outputs.first() else {
            return vec![];
        };
        let outs = match self.resolve(ni, w, w_out, Role::Producer) {
            Ok(o) => o,
            Err(e) => {
                self.block_value(x, format!("{}: {e}", label(node)));
                return vec![0];
            }
        };
        let yr = self.shape(y).map_or(0, <[usize]>::len);
        let Some(ys) = self.new_act(y, vec![yr.saturating_sub(1)]) else {
            return vec![];
        };
        let n = self.spaces[ys].len();
        for p in outs {
            self.link(ys, p);
        }
        if let Some(b) = bias {
            let bs = self.shape(b).map(<[usize]>::to_vec).unwrap_or_default();
            match bs.last() {
                Some(&d) if d == n && n > 1 => {
                    match self.resolve(ni, b, bs.len() - 1, Role::Producer) {
                        Ok(ps) => ps.into_iter().for_each(|p| self.link(ys, p)),
                        Err(e) => self.block(ys, format!("{}: {e}", label(node))),
                    }
                }
                _ if broadcast_bias => {
                    self.param_users.entry(b).or_default().insert(ni);
                    self.not_zero(ys, format!("{}: broadcast bias", label(node)));
                }
                _ => self.block(
                    ys,
                    format!("{}: bias does not match the outputs", label(node)),
                ),
            }
        }
        match self.act[x] {
            Some(xs) if self.spaces[xs].axes != [x_axis] => {
                let msg = format!("{} reads features on axis {x_axis}", label(node));
                self.block(xs, msg);
            }
            Some(xs) => match self.resolve(ni, w, w_in, Role::Consumer) {
                Ok(ps) => ps.into_iter().for_each(|p| self.link(xs, p)),
                Err(e) => self.block(xs, format!("{}: {e}", label(node))),
            },
            None => {}
        }
        vec![0]
    }

    fn batchnorm(&mut self, ni: usize, node: &Node) -> Taken {
        let (Some(x), Some(&y)) = (node.input(0), node.outputs.first()) else {
            return vec![];
        };
        let Some(xs) = self.act[x] else {
            return vec![0];
        };
        if self.spaces[xs].axes != [1] {
            return vec![];
        }
        let Some(ys) = self.new_act(y, vec![1]) else {
            return vec![];
        };
        self.link(ys, xs);
        for k in 1..5 {
            let Some(p) = node.input(k) else { continue };
            match self.resolve(ni, p, 0, Role::Producer) {
                Ok(ps) => ps.into_iter().for_each(|q| self.link(ys, q)),
                Err(e) => self.block(ys, format!("{}: {e}", label(node))),
            }
        }
        vec![0]
    }

    fn elementwise(&mut self, ni: usize, node: &Node, kind: BinaryKind) -> Taken {
        let Some(&y) = node.outputs.first() else {
            return vec![];
        };
        let Some(yshape) = self.shape(y).map(<[usize]>::to_vec) else {
            return vec![];
        };
        let r = yshape.len();
        let mut axes: Option<Vec<usize>> = None;
        let mut spaced = Vec::new();
        for (k, inp) in node.inputs.iter().enumerate() {
            let Some(v) = *inp else { continue };
            let Some(s) = self.act[v] else { continue };
            let shift = r - self.shape(v).map_or(r, <[usize]>::len).min(r);
            let sp = &self.spaces[s];
            let a: Vec<usize> = sp.axes.iter().map(|&x| x + shift).collect();
            let fits = a
                .iter()
                .zip(&sp.dims)
                .all(|(&x, &d)| yshape.get(x) == Some(&d));
            match &axes {
                _ if !fits => return vec![],
                None => axes = Some(a),
                Some(prev) if *prev != a => return vec![],
                Some(_) => {}
            }
            spaced.push((k, s));
        }
        let Some(axes) = axes else {
            return vec![];
        };
        let Some(ys) = self.new_act(y, axes.clone()) else {
            return vec![];
        };
        for &(_, s) in &spaced {
            self.link(ys, s);
        }
        let role = match kind {
            BinaryKind::Add | BinaryKind::Sub | BinaryKind::Max | BinaryKind::Min => Role::Producer,
            BinaryKind::Mul | BinaryKind::Div | BinaryKind::Pow => Role::Operand,
        };
        let mut zero_ok = true;
        for (k, inp) in node.inputs.iter().enumerate() {
            let Some(v) = *inp else { continue };
            if spaced.iter().any(|&(j, _)| j == k) {
                continue;
            }
            let vs = self.shape(v).map(<[usize]>::to_vec).unwrap_or_default();
            let shift = r.saturating_sub(vs.len());
            let dim_at = |x: usize| if x < shift { 1 } else { vs[x - shift] };
            let broadcast = axes.iter().all(|&x| dim_at(x) == 1);
            if broadcast {
                // Broadcast along the channels: Add / Sub / Max / Min of a nonzero
                // operand (or a divisor) make a removed channel nonzero.
                let harmless = match kind {
                    BinaryKind::Mul => true,
                    BinaryKind::Div => k == 1,
                    BinaryKind::Add
                    | BinaryKind::Sub
                    | BinaryKind::Max
                    | BinaryKind::Min
                    | BinaryKind::Pow => false,
                };
                zero_ok &= harmless;
                if self.g.values[v].is_const() {
                    self.param_users.entry(v).or_default().insert(ni);
                }
                continue;
            }
            let res = if axes.len() == 1 && axes[0] >= shift {
                self.resolve(ni, v, axes[0] - shift, role)
            } else {
                Err(format!(
                    "operand '{}' carries channels the analysis does not track",
                    self.g.values[v].name
                ))
            };
            match res {
                Ok(ps) => ps.into_iter().for_each(|p| self.link(ys, p)),
                Err(e) => self.block(ys, format!("{}: {e}", label(node))),
            }
            zero_ok &= match kind {
                BinaryKind::Add
                | BinaryKind::Sub
                | BinaryKind::Max
                | BinaryKind::Min
                | BinaryKind::Mul => true,
                BinaryKind::Div => k == 1,
                BinaryKind::Pow => false,
            };
        }
        if kind == BinaryKind::Pow {
            zero_ok = false;
        }
        if !zero_ok {
            self.not_zero(ys, format!("{}: not zero for zero channels", label(node)));
        }
        spaced.into_iter().map(|(k, _)| k).collect()
    }

    fn reshape(&mut self, node: &Node) -> Taken {
        let (Some(x), Some(&y)) = (node.input(0), node.outputs.first()) else {
            return vec![];
        };
        let Some(s) = self.act[x] else {
            return vec![0];
        };
        let (Some(xs), Some(ys)) = (self.shape(x), self.shape(y)) else {
            return vec![];
        };
        match reshape_map(xs, &self.spaces[s].axes, ys) {
            Ok((axes, map)) => {
                if let Some(o) = self.new_act(y, axes) {
                    for (i, &src) in map.iter().enumerate() {
                        let (p, q) = (self.atom(o, i), self.atom(s, src));
                        self.union(p, q);
                    }
                }
            }
            Err(e) => self.block(s, format!("{}: {e}", label(node))),
        }
        vec![0]
    }

    fn transpose(&mut self, node: &Node, perm: &[usize]) -> Taken {
        let (Some(x), Some(&y)) = (node.input(0), node.outputs.first()) else {
            return vec![];
        };
        let Some(s) = self.act[x] else {
            return vec![0];
        };
        let rank = self.shape(x).map_or(0, <[usize]>::len);
        let Ok(perm) = full_perm(perm, rank) else {
            return vec![];
        };
        let in_axes = self.spaces[s].axes.clone();
        let in_dims = self.spaces[s].dims.clone();
        let out_axes: Vec<usize> = (0..rank).filter(|&j| in_axes.contains(&perm[j])).collect();
        let Some(o) = self.new_act(y, out_axes.clone()) else {
            return vec![];
        };
        let out_dims = self.spaces[o].dims.clone();
        for i in 0..self.spaces[o].len() {
            let oc = unlin(i, &out_dims);
            let mut ic = vec![0; in_axes.len()];
            for (j, &b) in out_axes.iter().enumerate() {
                if let Some(p) = in_axes.iter().position(|&a| a == perm[b]) {
                    ic[p] = oc[j];
                }
            }
            let (p, q) = (self.atom(o, i), self.atom(s, lin(ic.into_iter(), &in_dims)));
            self.union(p, q);
        }
        vec![0]
    }

    fn concat(&mut self, node: &Node, axis: i64) -> Taken {
        let Some(&y) = node.outputs.first() else {
            return vec![];
        };
        let Some(yshape) = self.shape(y).map(<[usize]>::to_vec) else {
            return vec![];
        };
        let Ok(ax) = norm_axis(axis, yshape.len()) else {
            return vec![];
        };
        let spaced: Vec<(usize, usize)> = node
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(k, v)| Some((k, self.act[(*v)?]?)))
            .collect();
        let Some(&(_, first)) = spaced.first() else {
            return vec![];
        };
        let axes = self.spaces[first].axes.clone();
        if spaced.iter().any(|&(_, s)| self.spaces[s].axes != axes) {
            return vec![];
        }
        if axes.contains(&ax) {
            // Along the channels: input k is the range [offset_k, offset_k + C_k).
            if axes != [ax] {
                return vec![];
            }
            let Some(ys) = self.new_act(y, vec![ax]) else {
                return vec![];
            };
            let mut off = 0;
            for (k, inp) in node.inputs.iter().enumerate() {
                let Some(v) = *inp else { continue };
                let d = self.shape(v).map_or(0, |s| s.get(ax).copied().unwrap_or(0));
                match spaced.iter().find(|&&(j, _)| j == k) {
                    Some(&(_, s)) => {
                        for c in 0..d.min(self.spaces[s].len()) {
                            let (p, q) = (self.atom(ys, off + c), self.atom(s, c));
                            self.union(p, q);
                        }
                    }
                    None => {
                        let msg = format!(
                            "{}: input '{}' is not tracked",
                            label(node),
                            self.g.values[v].name
                        );
                        self.block_range(ys, off, off + d, &msg);
                    }
                }
                off += d;
            }
        } else {
            // Along another axis: the inputs' channels are the same channels.
            let Some(ys) = self.new_act(y, axes.clone()) else {
                return vec![];
            };
            for &(_, s) in &spaced {
                self.link(ys, s);
            }
            for inp in node.inputs.iter().flatten() {
                if self.act[*inp].is_none() {
                    let msg = format!(
                        "{}: input '{}' is not tracked",
                        label(node),
                        self.g.values[*inp].name
                    );
                    self.block(ys, msg);
                }
            }
        }
        spaced.into_iter().map(|(k, _)| k).collect()
    }

    fn split(&mut self, node: &Node, axis: i64) -> Taken {
        let Some(x) = node.input(0) else {
            return vec![];
        };
        let Some(s) = self.act[x] else {
            return vec![0];
        };
        let rank = self.shape(x).map_or(0, <[usize]>::len);
        let Ok(ax) = norm_axis(axis, rank) else {
            return vec![];
        };
        let axes = self.spaces[s].axes.clone();
        if axes.contains(&ax) && axes != [ax] {
            return vec![];
        }
        let mut off = 0;
        for &out in &node.outputs {
            let Some(o) = self.new_act(out, axes.clone()) else {
                return vec![];
            };
            if axes == [ax] {
                for c in 0..self.spaces[o].len() {
                    let (p, q) = (self.atom(o, c), self.atom(s, off + c));
                    self.union(p, q);
                }
                off += self.spaces[o].len();
            } else {
                self.link(o, s);
            }
        }
        vec![0]
    }

    fn slice(
        &mut self,
        node: &Node,
        starts: &[i64],
        ends: &[i64],
        axes: &[i64],
        steps: &[i64],
    ) -> Taken {
        let (Some(x), Some(&y)) = (node.input(0), node.outputs.first()) else {
            return vec![];
        };
        let Some(s) = self.act[x] else {
            return vec![0];
        };
        let Some(xs) = self.shape(x).map(<[usize]>::to_vec) else {
            return vec![];
        };
        let Ok(geo) = slice_geometry(&xs, starts, ends, axes, steps) else {
            return vec![];
        };
        let sp_axes = self.spaces[s].axes.clone();
        let cut: Vec<usize> = sp_axes
            .iter()
            .copied()
            .filter(|&a| geo.begin[a] != 0 || geo.step[a] != 1 || geo.count[a] != xs[a])
            .collect();
        match cut.as_slice() {
            [] => {
                if let Some(o) = self.new_act(y, sp_axes) {
                    self.link(o, s);
                }
            }
            [a] if sp_axes.len() == 1 && geo.step[*a] == 1 => {
                let a = *a;
                let Some(o) = self.new_act(y, vec![a]) else {
                    return vec![];
                };
                let begin = geo.begin[a] as usize;
                for j in 0..geo.count[a] {
                    let (p, q) = (self.atom(o, j), self.atom(s, begin + j));
                    self.union(p, q);
                }
            }
            _ => {
                self.block(
                    s,
                    format!(
                        "{}: strided or multi-axis slice of the channels",
                        label(node)
                    ),
                );
            }
        }
        vec![0]
    }

    fn reduce(&mut self, node: &Node, axes: Option<&[i64]>, keepdims: bool, noop: bool) -> Taken {
        let (Some(x), Some(&y)) = (node.input(0), node.outputs.first()) else {
            return vec![];
        };
        let Some(s) = self.act[x] else {
            return vec![0];
        };
        let rank = self.shape(x).map_or(0, <[usize]>::len);
        let Ok(rax) = reduce_axes(rank, axes, noop) else {
            return vec![];
        };
        let sp_axes = self.spaces[s].axes.clone();
        if sp_axes.iter().any(|a| rax.contains(a)) {
            self.block(s, format!("{} reduces over the channels", label(node)));
            return vec![0];
        }
        let out_axes: Vec<usize> = sp_axes
            .iter()
            .map(|&a| {
                if keepdims {
                    a
                } else {
                    a - rax.iter().filter(|&&r| r < a).count()
                }
            })
            .collect();
        if let Some(o) = self.new_act(y, out_axes) {
            self.link(o, s);
        }
        vec![0]
    }

    fn qdq(&mut self, ni: usize, node: &Node, axis: i64, block_size: i64) -> Taken {
        let (Some(x), Some(&y)) = (node.input(0), node.outputs.first()) else {
            return vec![];
        };
        let Some(s) = self.act[x] else {
            return vec![0];
        };
        let rank = self.shape(x).map_or(0, <[usize]>::len);
        let Ok(qa) = norm_axis(axis, rank) else {
            return vec![];
        };
        let sp_axes = self.spaces[s].axes.clone();
        let Some(o) = self.new_act(y, sp_axes.clone()) else {
            return vec![];
        };
        self.link(o, s);
        for k in [1, 2] {
            let Some(p) = node.input(k) else { continue };
            let n: usize = self.shape(p).map_or(1, |s| s.iter().product());
            if n <= 1 {
                self.param_users.entry(p).or_default().insert(ni);
                continue;
            }
            if block_size != 0 || sp_axes != [qa] {
                self.block(o, format!("{}: per-axis parameters", label(node)));
                continue;
            }
            match self.resolve(ni, p, 0, Role::QuantParam) {
                Ok(ps) => ps.into_iter().for_each(|q| self.link(o, q)),
                Err(e) => self.block(o, format!("{}: {e}", label(node))),
            }
        }
        vec![0]
    }

    /// Blocks what the rules could not vouch for; couples multi-axis spaces.
    fn finish_checks(&mut self) {
        for &o in &self.g.outputs {
            let msg = format!("graph output '{}'", self.g.values[o].name);
            self.block_value(o, msg);
        }
        // A constant with a parameter space must be read only by the nodes that
        // registered it (a weight also read by, say, a Gather would keep its shape).
        let mut keys: Vec<(ValueId, usize)> = self.params.keys().copied().collect();
        keys.sort_unstable();
        for (v, axis) in keys {
            let s = self.params[&(v, axis)];
            let users = self.param_users.get(&v).cloned().unwrap_or_default();
            if let Some(&n) = self.consumers[v].iter().find(|n| !users.contains(n)) {
                let msg = format!(
                    "constant '{}' is also read by {}",
                    self.g.values[v].name,
                    label(&self.g.nodes[n])
                );
                self.block(s, msg);
            }
            if self.g.outputs.contains(&v) {
                let msg = format!("constant '{}' is a graph output", self.g.values[v].name);
                self.block(s, msg);
            }
            if let Some(q) = &self.g.values[v].quant {
                if q.block_size.is_some() && q.axis != Some(axis) && q.scale.len() > 1 {
                    let msg = format!(
                        "'{}' has group-wise scales along the pruned axis",
                        self.g.values[v].name
                    );
                    self.block(s, msg);
                }
            }
        }
        for s in 0..self.spaces.len() {
            let sp = &self.spaces[s];
            if sp.role != Role::Activation {
                continue;
            }
            if let Some(q) = &self.g.values[sp.value].quant {
                if let Some(qa) = q.axis {
                    if q.scale.len() > 1 && sp.axes.contains(&qa) && sp.axes.len() > 1 {
                        let msg = format!(
                            "'{}' has per-axis quantization on a multi-axis channel space",
                            self.g.values[sp.value].name
                        );
                        self.block(s, msg);
                    }
                }
            }
            // Multi-axis spaces shrink as products: couple along all axes but the
            // largest (ties: the last), so removals are whole lines along it.
            let dims = self.spaces[s].dims.clone();
            if dims.iter().filter(|&&d| d > 1).count() > 1 {
                let free = (0..dims.len()).rev().max_by_key(|&k| dims[k]).unwrap_or(0);
                for i in 0..self.spaces[s].len() {
                    let c = unlin(i, &dims);
                    let base = c[free] * dims[free + 1..].iter().product::<usize>();
                    let (p, q) = (self.atom(s, i), self.atom(s, base));
                    self.union(p, q);
                }
            }
        }
    }

    fn space_of_atom(&self, a: usize) -> usize {
        self.offsets.partition_point(|&o| o <= a) - 1
    }

    fn group(mut self) -> ChannelAnalysis {
        let n = self.parent.len();
        let mut comps: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for a in 0..n {
            let r = self.find(a);
            comps.entry(r).or_default().push(a);
        }
        // Components in order of their first atom (roots are the smallest atom).
        let mut groups: Vec<ChannelGroup> = Vec::new();
        let mut index: HashMap<(Vec<usize>, bool), usize> = HashMap::new();
        let mut local: Vec<HashMap<usize, usize>> = Vec::new();
        for (_, atoms) in comps {
            let mut sids: Vec<usize> = atoms.iter().map(|&a| self.space_of_atom(a)).collect();
            sids.sort_unstable();
            sids.dedup();
            let mut reasons: Vec<String> = Vec::new();
            for a in &atoms {
                if let Some(r) = self.blocked.get(a) {
                    if !reasons.contains(r) {
                        reasons.push(r.clone());
                    }
                }
            }
            if reasons.is_empty() && !sids.iter().any(|&s| self.spaces[s].role == Role::Producer) {
                reasons.push("no constant produces these channels".into());
            }
            let nonzero = atoms.iter().find_map(|a| self.nonzero.get(a).cloned());
            let key = (sids.clone(), !reasons.is_empty());
            let gi = *index.entry(key).or_insert_with(|| {
                groups.push(ChannelGroup {
                    spaces: sids.iter().map(|&s| self.spaces[s].clone()).collect(),
                    channels: Vec::new(),
                    blocked: Vec::new(),
                    not_zero_exact: None,
                });
                local.push(sids.iter().enumerate().map(|(i, &s)| (s, i)).collect());
                groups.len() - 1
            });
            let grp = &mut groups[gi];
            for r in reasons {
                if !grp.blocked.contains(&r) && grp.blocked.len() < 6 {
                    grp.blocked.push(r);
                }
            }
            if grp.not_zero_exact.is_none() {
                grp.not_zero_exact = nonzero;
            }
            let chan = atoms
                .iter()
                .map(|&a| {
                    let s = self.space_of_atom(a);
                    (local[gi][&s], a - self.offsets[s])
                })
                .collect();
            grp.channels.push(chan);
        }
        ChannelAnalysis { groups }
    }
}
