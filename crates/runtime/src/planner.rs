//! Static memory planner: every activation of a graph gets a fixed offset in one
//! arena, for concrete input shapes.
//!
//! The plan is what a microcontroller build needs: one `static uint8_t arena[N]`
//! with `N = arena_bytes`, and for every tensor an offset into it. Constants (weights,
//! biases, folded shapes) are not in the arena: they live in flash.
//!
//! How it works:
//! 1. Shapes and dtypes of every value come from shape inference
//!    ([`edgeopt_ir::shape::infer_graph`]); a value's size is
//!    [`DType::storage_bytes`] of its element count (4-bit types packed).
//! 2. Liveness: node `k` runs at step `k`. A value lives from the step of the node that
//!    produces it (graph inputs: step 0) to the step of its last consumer (graph
//!    outputs: step `nodes.len()`, i.e. until the caller reads them).
//! 3. Values are grouped into *buffers*, one per distinct piece of memory:
//!    - aliasing: the output of a reshape-like op ([`Op::is_reshape_like`]) is the
//!      same bytes as its input, so it joins the input's buffer; the buffer then lives
//!      until the last use of either;
//!    - in place: the output of an element-wise op (output element `i` depends only on
//!      element `i` of the reused operand) may take that operand's buffer when the
//!      operand dies at this node and has the output's shape and byte size.
//! 4. Buffers are placed greedily, largest first, each at the lowest 16-byte-aligned
//!    offset that does not overlap any already-placed buffer whose lifetime intersects
//!    its own (the strategy of TensorFlow Lite Micro's `GreedyMemoryPlanner`).
//!
//! Values computed from constants only (the `DequantizeLinear` of int8 weights in ONNX
//! QDQ models) are, by default, treated as constants too: computed once and kept with
//! the weights, as a deployment folds them ([`PlanOptions::fold_constants`]).
//!
//! Two lifetimes that touch at a step conflict: a node's inputs and outputs are live
//! together while it runs, so an output never lands on an input except through the
//! explicit in-place rule above. [`MemoryPlan::check`] verifies the result.
//!
//! Kernel-internal scratch (im2col buffers, accumulators) is not part of the plan; see
//! [`crate::arena`].

use crate::error::{Result, RuntimeError};
use edgeopt_ir::shape::{bind_input_shapes, infer_graph, OutputFact};
use edgeopt_ir::{checked_numel, DType, Graph, IrError, Node, Op, ValueId};

/// Offset alignment of every buffer in the arena (bytes). 16 fits SIMD loads on
/// Cortex-M and x86 and is what TFLite Micro uses.
pub const ALIGN: usize = 16;

/// Inclusive range of node steps during which a value (or buffer) must be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lifetime {
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    /// Whether the two ranges share at least one step.
    pub fn intersects(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    fn merge(&mut self, other: &Lifetime) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// How a value came to share another value's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sharing {
    /// Output of a reshape-like op: the same bytes as the input.
    Alias,
    /// Output of an element-wise op written over an operand that dies at that node.
    InPlace,
}

/// One piece of arena memory, shared by one or more values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    pub offset: usize,
    pub size: usize,
    /// Union of the lifetimes of its values.
    pub lifetime: Lifetime,
    /// Values stored in it, in order of production.
    pub values: Vec<ValueId>,
}

/// Which rules the planner may apply (all on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    pub alias_reshapes: bool,
    pub in_place: bool,
    /// Treat values computed from constants only (e.g. the `DequantizeLinear` of int8
    /// weights in ONNX QDQ models) as constants: computed once before inference and
    /// kept with the weights, not in the arena. A deployment folds them at build time.
    pub fold_constants: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            alias_reshapes: true,
            in_place: true,
            fold_constants: true,
        }
    }
}

/// A static memory plan for one set of input shapes. Vectors are indexed by value id.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// Bytes of the one arena (end of the highest buffer).
    pub arena_bytes: usize,
    /// Offset of each activation in the arena; `None` for constants and values the
    /// graph never computes.
    pub offsets: Vec<Option<usize>>,
    /// Bytes of each activation (0 when not in the arena).
    pub sizes: Vec<usize>,
    /// Liveness of each activation on its own (before buffer sharing).
    pub lifetimes: Vec<Option<Lifetime>>,
    /// Buffer index of each activation (into `buffers`).
    pub buffer_of: Vec<Option<usize>>,
    /// Set when the value shares the buffer of an earlier value: which one and why.
    pub shared_with: Vec<Option<(ValueId, Sharing)>>,
    pub buffers: Vec<Buffer>,
    /// Inferred shape and dtype of every value the plan covers (constants too).
    pub shapes: Vec<Option<Vec<usize>>>,
    pub dtypes: Vec<Option<DType>>,
    /// Shapes of the graph inputs this plan was made for.
    pub input_shapes: Vec<Vec<usize>>,
    /// Sum of the bytes of every activation, each in its own memory (no reuse).
    pub naive_bytes: usize,
    /// Values computed from constants only (see [`PlanOptions::fold_constants`]):
    /// outside the arena, computed once.
    pub folded: Vec<bool>,
    /// Bytes of the folded values.
    pub folded_bytes: usize,
    /// Number of node steps (`graph.nodes.len()`); graph outputs live until it.
    pub steps: usize,
}

/// Plans the graph for inputs of the given shapes.
pub fn plan(graph: &Graph, input_shapes: &[Vec<usize>]) -> Result<MemoryPlan> {
    plan_with(graph, input_shapes, PlanOptions::default())
}

/// Plans the graph with its declared input shapes, dynamic leading dims bound to `batch`.
pub fn plan_for_batch(graph: &Graph, batch: usize) -> Result<MemoryPlan> {
    let shapes = bind_input_shapes(graph, batch)?;
    plan(graph, &shapes)
}

/// [`plan`] with explicit options.
pub fn plan_with(
    graph: &Graph,
    input_shapes: &[Vec<usize>],
    options: PlanOptions,
) -> Result<MemoryPlan> {
    let facts = infer_graph(graph, input_shapes)?;
    plan_from_facts(graph, &facts, options)
}

fn ir_err(name: &str, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Ir(IrError::Tensor(name.to_string(), msg.into()))
}

/// Bytes of `shape` elements of `dtype`, or an error if that overflows `usize`.
pub fn tensor_bytes(dtype: DType, shape: &[usize]) -> edgeopt_ir::Result<usize> {
    let n = checked_numel(shape)?;
    n.checked_mul(dtype.bits())
        .map(|bits| bits.div_ceil(8))
        .ok_or_else(|| IrError::Invalid(format!("tensor of shape {shape:?} overflows")))
}

fn align_up(x: usize) -> Option<usize> {
    x.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

/// Builds the plan from inferred facts (one per value, as `infer_graph` returns).
pub fn plan_from_facts(
    graph: &Graph,
    facts: &[Option<OutputFact>],
    options: PlanOptions,
) -> Result<MemoryPlan> {
    let nv = graph.values.len();
    if facts.len() != nv {
        return Err(RuntimeError::Ir(IrError::Invalid(format!(
            "{} facts for {nv} values",
            facts.len()
        ))));
    }
    let steps = graph.nodes.len();
    let shapes: Vec<Option<Vec<usize>>> = facts
        .iter()
        .map(|f| f.as_ref().map(|f| f.shape.clone()))
        .collect();
    let dtypes: Vec<Option<DType>> = facts.iter().map(|f| f.as_ref().map(|f| f.dtype)).collect();

    // Values that depend on constants only (a node with at least one input, all of
    // them constant or themselves folded), and the Shape of a value whose shape is
    // fixed at this batch (the shape arithmetic of a dynamic-batch conversion).
    let mut folded = vec![false; nv];
    let mut folded_bytes = 0usize;
    if options.fold_constants {
        for n in &graph.nodes {
            let mut ins = n.present_inputs().peekable();
            let known_shape = matches!(n.op, Op::Shape)
                && n.input(0).is_some_and(|x| x < nv && facts[x].is_some());
            let from_consts = known_shape
                || ins.peek().is_some()
                    && ins.all(|i| i < nv && (graph.values[i].is_const() || folded[i]));
            if from_consts {
                for &o in &n.outputs {
                    if o < nv && !graph.values[o].is_const() && !folded[o] {
                        folded[o] = true;
                        let f = facts[o]
                            .as_ref()
                            .ok_or_else(|| ir_err(&graph.values[o].name, "no inferred shape"))?;
                        folded_bytes =
                            folded_bytes
                                .checked_add(tensor_bytes(f.dtype, &f.shape)?)
                                .ok_or_else(|| ir_err(&graph.values[o].name, "size overflows"))?;
                    }
                }
            }
        }
    }

    // Which values are activations (in the arena) and their sizes.
    let mut in_arena = vec![false; nv];
    for &i in &graph.inputs {
        if i < nv && !graph.values[i].is_const() {
            in_arena[i] = true;
        }
    }
    for n in &graph.nodes {
        for &o in &n.outputs {
            if o < nv && !graph.values[o].is_const() && !folded[o] {
                in_arena[o] = true;
            }
        }
    }
    let mut sizes = vec![0usize; nv];
    let mut naive_bytes = 0usize;
    for v in 0..nv {
        if !in_arena[v] {
            continue;
        }
        let name = &graph.values[v].name;
        let f = facts[v]
            .as_ref()
            .ok_or_else(|| ir_err(name, "no inferred shape"))?;
        sizes[v] = tensor_bytes(f.dtype, &f.shape)?;
        naive_bytes = naive_bytes
            .checked_add(sizes[v])
            .ok_or_else(|| ir_err(name, "total activation size overflows"))?;
    }

    // Liveness of each value on its own.
    let mut lifetimes: Vec<Option<Lifetime>> = vec![None; nv];
    for &i in &graph.inputs {
        if in_arena[i] {
            lifetimes[i] = Some(Lifetime { first: 0, last: 0 });
        }
    }
    for (k, n) in graph.nodes.iter().enumerate() {
        for &o in &n.outputs {
            if o < nv && in_arena[o] && lifetimes[o].is_none() {
                lifetimes[o] = Some(Lifetime { first: k, last: k });
            }
        }
    }
    for (k, n) in graph.nodes.iter().enumerate() {
        for i in n.present_inputs() {
            if let Some(l) = lifetimes.get_mut(i).and_then(|l| l.as_mut()) {
                l.last = l.last.max(k);
            }
        }
    }
    for &o in &graph.outputs {
        if let Some(l) = lifetimes.get_mut(o).and_then(|l| l.as_mut()) {
            l.last = steps;
        }
    }

    // Group values into buffers, in execution order.
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut buffer_of: Vec<Option<usize>> = vec![None; nv];
    let mut shared_with: Vec<Option<(ValueId, Sharing)>> = vec![None; nv];
    let new_buffer = |v: ValueId, buffers: &mut Vec<Buffer>, buffer_of: &mut Vec<Option<usize>>| {
        buffers.push(Buffer {
            offset: 0,
            size: sizes[v],
            lifetime: lifetimes[v].expect("arena value has a lifetime"),
            values: vec![v],
        });
        buffer_of[v] = Some(buffers.len() - 1);
    };
    for &i in &graph.inputs {
        if in_arena[i] && buffer_of[i].is_none() {
            new_buffer(i, &mut buffers, &mut buffer_of);
        }
    }
    for (k, node) in graph.nodes.iter().enumerate() {
        for (slot, &o) in node.outputs.iter().enumerate() {
            if o >= nv || !in_arena[o] || buffer_of[o].is_some() {
                continue;
            }
            let shared = if slot == 0 {
                share_candidate(node, k, o, options, &sizes, &shapes, &buffer_of, &buffers)
            } else {
                None
            };
            match shared {
                Some((src, how)) => {
                    let b = buffer_of[src].expect("candidate has a buffer");
                    let life = lifetimes[o].expect("output has a lifetime");
                    buffers[b].lifetime.merge(&life);
                    buffers[b].size = buffers[b].size.max(sizes[o]);
                    buffers[b].values.push(o);
                    buffer_of[o] = Some(b);
                    shared_with[o] = Some((src, how));
                }
                None => new_buffer(o, &mut buffers, &mut buffer_of),
            }
        }
    }

    let arena_bytes = place(&mut buffers)?;
    let offsets = buffer_of
        .iter()
        .map(|b| b.map(|b| buffers[b].offset))
        .collect();
    let input_shapes = graph
        .inputs
        .iter()
        .map(|&i| shapes.get(i).cloned().flatten().unwrap_or_default())
        .collect();
    let plan = MemoryPlan {
        arena_bytes,
        offsets,
        sizes,
        lifetimes,
        buffer_of,
        shared_with,
        buffers,
        shapes,
        dtypes,
        input_shapes,
        naive_bytes,
        folded,
        folded_bytes,
        steps,
    };
    debug_assert!(
        plan.check().is_ok(),
        "memory plan is invalid: {:?}",
        plan.check()
    );
    Ok(plan)
}

/// The earlier value whose buffer output `o` (output 0 of node `k`) may share.
#[allow(clippy::too_many_arguments)]
fn share_candidate(
    node: &Node,
    k: usize,
    o: ValueId,
    options: PlanOptions,
    sizes: &[usize],
    shapes: &[Option<Vec<usize>>],
    buffer_of: &[Option<usize>],
    buffers: &[Buffer],
) -> Option<(ValueId, Sharing)> {
    if options.alias_reshapes && node.op.is_reshape_like() {
        // Same bytes, new shape: no copy, whatever the lifetimes.
        let x = node.input(0)?;
        if buffer_of.get(x).copied().flatten().is_some() && sizes[x] == sizes[o] {
            return Some((x, Sharing::Alias));
        }
        return None;
    }
    if !options.in_place {
        return None;
    }
    for &j in node.op.in_place_inputs() {
        let Some(x) = node.input(j) else { continue };
        let Some(b) = buffer_of.get(x).copied().flatten() else {
            continue; // constant
        };
        // Not broadcast and the same byte size: element i overwrites element i.
        if shapes[x] != shapes[o] || sizes[x] != sizes[o] || sizes[o] == 0 {
            continue;
        }
        // Every value in that buffer must be dead after this node. Values that join
        // the buffer later can only do so by reading it at a later node, which would
        // make its last use later than `k`, so this test is final.
        if buffers[b].lifetime.last != k {
            continue;
        }
        // No other operand may read the same memory: a real in-place kernel would see
        // it change under its feet (the same value read twice, `x + x`, is fine).
        let other_reader = node
            .present_inputs()
            .any(|i| i != x && buffer_of.get(i).copied().flatten() == Some(b));
        if other_reader {
            continue;
        }
        return Some((x, Sharing::InPlace));
    }
    None
}

/// Greedy placement, largest buffer first; returns the arena size.
fn place(buffers: &mut [Buffer]) -> Result<usize> {
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by(|&a, &b| {
        buffers[b]
            .size
            .cmp(&buffers[a].size)
            .then(buffers[a].lifetime.first.cmp(&buffers[b].lifetime.first))
            .then(a.cmp(&b))
    });
    let overflow = || RuntimeError::Ir(IrError::Invalid("arena size overflows".into()));
    // (offset, end, lifetime) of placed, non-empty buffers.
    let mut placed: Vec<(usize, usize, Lifetime)> = Vec::with_capacity(buffers.len());
    let mut arena = 0usize;
    for &bi in &order {
        let size = buffers[bi].size;
        let life = buffers[bi].lifetime;
        if size == 0 {
            buffers[bi].offset = 0;
            continue;
        }
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(_, _, l)| l.intersects(&life))
            .map(|&(s, e, _)| (s, e))
            .collect();
        conflicts.sort_unstable();
        let mut offset = 0usize;
        for (start, end) in conflicts {
            let fits = offset.checked_add(size).ok_or_else(overflow)? <= start;
            if fits {
                break;
            }
            offset = offset.max(align_up(end).ok_or_else(overflow)?);
        }
        let end = offset.checked_add(size).ok_or_else(overflow)?;
        buffers[bi].offset = offset;
        placed.push((offset, end, life));
        arena = arena.max(end);
    }
    Ok(arena)
}

impl MemoryPlan {
    /// Verifies the plan: every activation has an aligned slot inside the arena, no two
    /// buffers with intersecting lifetimes overlap, and values sharing a buffer are
    /// never live at once unless one aliases or is computed in place over the other.
    /// Returns a description of the first problem found.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (bi, b) in self.buffers.iter().enumerate() {
            if b.size > 0 && b.offset % ALIGN != 0 {
                return Err(format!("buffer {bi} at unaligned offset {}", b.offset));
            }
            let end = b.offset.checked_add(b.size).ok_or("buffer end overflows")?;
            if end > self.arena_bytes {
                return Err(format!(
                    "buffer {bi} [{}, {end}) exceeds the arena of {} bytes",
                    b.offset, self.arena_bytes
                ));
            }
            for &v in &b.values {
                let life = self.lifetimes[v].ok_or(format!("value {v} has no lifetime"))?;
                if life.first < b.lifetime.first || life.last > b.lifetime.last {
                    return Err(format!("value {v} outlives its buffer {bi}"));
                }
                if self.sizes[v] > b.size || self.offsets[v] != Some(b.offset) {
                    return Err(format!("value {v} does not fit its buffer {bi}"));
                }
            }
        }
        // Pairwise: O(n^2), fine for the few hundred buffers of an edge model.
        for (i, a) in self.buffers.iter().enumerate() {
            for (j, b) in self.buffers.iter().enumerate().skip(i + 1) {
                if a.size == 0 || b.size == 0 || !a.lifetime.intersects(&b.lifetime) {
                    continue;
                }
                if a.offset < b.offset + b.size && b.offset < a.offset + a.size {
                    return Err(format!(
                        "buffers {i} [{}, {}) and {j} [{}, {}) overlap while both live \
                         (steps {:?} and {:?})",
                        a.offset,
                        a.offset + a.size,
                        b.offset,
                        b.offset + b.size,
                        a.lifetime,
                        b.lifetime
                    ));
                }
            }
        }
        // Within a buffer, a value that takes the memory in place may start only at
        // the step where the previous occupant dies.
        for (v, s) in self.shared_with.iter().enumerate() {
            if let Some((src, Sharing::InPlace)) = s {
                let (Some(lv), Some(b)) = (self.lifetimes[v], self.buffer_of[v]) else {
                    return Err(format!("value {v} shares memory but has no slot"));
                };
                for &other in &self.buffers[b].values {
                    if other == v || self.lifetimes[other].is_none() {
                        continue;
                    }
                    let lo = self.lifetimes[other].unwrap_or(lv);
                    let earlier = lo.first < lv.first || (lo.first == lv.first && other == *src);
                    if earlier && lo.last > lv.first {
                        return Err(format!(
                            "value {v} overwrites value {other} in place while it is still \
                             read at step {}",
                            lo.last
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Activation values in the arena.
    pub fn arena_values(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.offsets
            .iter()
            .enumerate()
            .filter_map(|(v, o)| o.map(|_| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeopt_ir::{Activation, BinaryKind, Dim, Tensor, UnaryKind};

    /// Facts from the declared shapes (hand-built graphs declare every shape), so the
    /// planner is tested independently of the shape rules.
    fn declared_facts(g: &Graph) -> Vec<Option<OutputFact>> {
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

    fn fixed(s: &[usize]) -> Option<Vec<Dim>> {
        Some(s.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    fn f32_value(g: &mut Graph, name: &str, s: &[usize]) -> ValueId {
        g.add_value(name, DType::F32, fixed(s))
    }

    /// x -> Relu -> a -> Relu -> b; c = a + b (a residual); d = Reshape(c); e = Relu(d).
    fn chain() -> Graph {
        let mut g = Graph::new("chain");
        let x = f32_value(&mut g, "x", &[1, 8, 8, 4]);
        let a = f32_value(&mut g, "a", &[1, 8, 8, 4]);
        let b = f32_value(&mut g, "b", &[1, 8, 8, 4]);
        let c = f32_value(&mut g, "c", &[1, 8, 8, 4]);
        let d = f32_value(&mut g, "d", &[1, 256]);
        let shape = g.add_const("shape", Tensor::from_i64(vec![2], vec![1, 256]).unwrap());
        let e = f32_value(&mut g, "e", &[1, 256]);
        g.inputs = vec![x];
        g.add_node("r1", Op::Unary(UnaryKind::Relu), vec![Some(x)], vec![a]);
        g.add_node("r2", Op::Unary(UnaryKind::Relu), vec![Some(a)], vec![b]);
        g.add_node(
            "add",
            Op::Binary {
                kind: BinaryKind::Add,
                activation: Activation::None,
            },
            vec![Some(a), Some(b)],
            vec![c],
        );
        g.add_node(
            "flat",
            Op::Reshape { allowzero: false },
            vec![Some(c), Some(shape)],
            vec![d],
        );
        g.add_node("r3", Op::Unary(UnaryKind::Relu), vec![Some(d)], vec![e]);
        g.outputs = vec![e];
        g
    }

    #[test]
    fn chain_reuses_memory() {
        let g = chain();
        let p = plan_from_facts(&g, &declared_facts(&g), PlanOptions::default()).unwrap();
        p.check().unwrap();
        assert_eq!(p.naive_bytes, 6 * 1024);
        // x dies at r1: a takes it in place. b cannot (a is still read by add), add
        // writes over a (dies there), the reshape aliases, the last relu is in place.
        assert_eq!(p.shared_with[1], Some((0, Sharing::InPlace)));
        assert_eq!(p.shared_with[2], None);
        assert!(p.shared_with[3].is_some());
        assert_eq!(p.shared_with[4], Some((3, Sharing::Alias)));
        assert_eq!(p.shared_with[6], Some((4, Sharing::InPlace)));
        assert_eq!(p.arena_bytes, 2048);
        assert_eq!(p.offsets[5], None, "constants are not in the arena");

        let none = PlanOptions {
            alias_reshapes: false,
            in_place: false,
            fold_constants: false,
        };
        let q = plan_from_facts(&g, &declared_facts(&g), none).unwrap();
        q.check().unwrap();
        assert!(q.shared_with.iter().all(|s| s.is_none()));
        // Without sharing, an input and an output of one node are never together.
        assert!(q.arena_bytes >= 2048);
        for n in &g.nodes {
            for i in n.present_inputs().filter(|&i| q.offsets[i].is_some()) {
                assert_ne!(q.offsets[i], q.offsets[n.outputs[0]]);
            }
        }
    }

    #[test]
    fn broadcast_operand_is_not_reused() {
        let mut g = Graph::new("bcast");
        let x = f32_value(&mut g, "x", &[1, 4]);
        let y = f32_value(&mut g, "y", &[3, 4]);
        let z = f32_value(&mut g, "z", &[3, 4]);
        g.inputs = vec![x, y];
        g.add_node(
            "mul",
            Op::Binary {
                kind: BinaryKind::Mul,
                activation: Activation::None,
            },
            vec![Some(x), Some(y)],
            vec![z],
        );
        g.outputs = vec![z];
        let p = plan_from_facts(&g, &declared_facts(&g), PlanOptions::default()).unwrap();
        p.check().unwrap();
        // x is broadcast, y has the output's shape: z goes over y.
        assert_eq!(p.shared_with[z], Some((y, Sharing::InPlace)));
        assert_eq!(p.arena_bytes, 48 + 16);
    }

    #[test]
    fn graph_output_is_never_overwritten() {
        let mut g = Graph::new("out");
        let x = f32_value(&mut g, "x", &[5]);
        let a = f32_value(&mut g, "a", &[5]);
        let b = f32_value(&mut g, "b", &[5]);
        g.inputs = vec![x];
        g.add_node("r1", Op::Unary(UnaryKind::Relu), vec![Some(x)], vec![a]);
        g.add_node("r2", Op::Unary(UnaryKind::Neg), vec![Some(a)], vec![b]);
        g.outputs = vec![a, b];
        let p = plan_from_facts(&g, &declared_facts(&g), PlanOptions::default()).unwrap();
        p.check().unwrap();
        assert_eq!(p.shared_with[b], None);
        assert_ne!(p.offsets[a], p.offsets[b]);
        // 20 bytes each, the second at the next 16-byte boundary.
        assert_eq!(p.arena_bytes, 32 + 20);
    }

    #[test]
    fn greedy_fills_gaps() {
        // Three buffers: big (steps 0..1), small (steps 1..2), big2 (steps 2..3):
        // big and big2 never live together, so they share offset 0.
        let mut g = Graph::new("gaps");
        let x = f32_value(&mut g, "x", &[64]);
        let s = f32_value(&mut g, "s", &[4]);
        let y = f32_value(&mut g, "y", &[64]);
        let z = f32_value(&mut g, "z", &[4]);
        g.inputs = vec![x];
        g.add_node(
            "mean",
            Op::Reduce {
                kind: edgeopt_ir::ReduceKind::Mean,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
            vec![Some(x)],
            vec![s],
        );
        g.add_node(
            "pad",
            Op::Pad {
                mode: edgeopt_ir::PadMode::Constant,
                pads: vec![0, 60],
                value: 0.0,
            },
            vec![Some(s)],
            vec![y],
        );
        g.add_node(
            "mean2",
            Op::Reduce {
                kind: edgeopt_ir::ReduceKind::Mean,
                axes: None,
                keepdims: true,
                noop_with_empty_axes: false,
            },
            vec![Some(y)],
            vec![z],
        );
        g.outputs = vec![z];
        let p = plan_from_facts(&g, &declared_facts(&g), PlanOptions::default()).unwrap();
        p.check().unwrap();
        assert_eq!(p.offsets[x], Some(0));
        assert_eq!(p.offsets[y], Some(0));
        assert_eq!(p.arena_bytes, 256 + 16);
    }

    #[test]
    fn check_catches_overlap() {
        let g = chain();
        let mut p = plan_from_facts(&g, &declared_facts(&g), PlanOptions::default()).unwrap();
        // Move b onto a's buffer: they are live together (add reads both).
        let (ba, bb) = (p.buffer_of[1].unwrap(), p.buffer_of[2].unwrap());
        p.buffers[bb].offset = p.buffers[ba].offset;
        p.offsets[2] = p.offsets[1];
        assert!(p.check().unwrap_err().contains("overlap"));
    }

    #[test]
    fn values_from_constants_are_folded() {
        // y = x * Dequantize(w_i8): the dequantized weights are not an activation.
        let mut g = Graph::new("qdq");
        let x = f32_value(&mut g, "x", &[4]);
        let w = g.add_const(
            "w",
            Tensor::new(vec![4], edgeopt_ir::TensorData::I8(vec![1, 2, 3, 4])).unwrap(),
        );
        let s = g.add_const("s", Tensor::scalar_f32(0.5));
        let wf = f32_value(&mut g, "wf", &[4]);
        let y = f32_value(&mut g, "y", &[4]);
        g.inputs = vec![x];
        g.add_node(
            "dq",
            Op::DequantizeLinear {
                axis: 1,
                block_size: 0,
            },
            vec![Some(w), Some(s), None],
            vec![wf],
        );
        g.add_node(
            "mul",
            Op::Binary {
                kind: BinaryKind::Mul,
                activation: Activation::None,
            },
            vec![Some(x), Some(wf)],
            vec![y],
        );
        g.outputs = vec![y];
        let p = plan_from_facts(&g, &declared_facts(&g), PlanOptions::default()).unwrap();
        p.check().unwrap();
        assert!(p.folded[wf]);
        assert_eq!(p.offsets[wf], None);
        assert_eq!(p.folded_bytes, 16);
        assert_eq!(p.naive_bytes, 32);
        assert_eq!(p.arena_bytes, 16, "y is computed in place over x");
        let unfolded = PlanOptions {
            fold_constants: false,
            ..Default::default()
        };
        let q = plan_from_facts(&g, &declared_facts(&g), unfolded).unwrap();
        assert_eq!(q.naive_bytes, 48);
        assert!(q.offsets[wf].is_some());
    }

    #[test]
    fn i4_sizes_are_packed() {
        assert_eq!(tensor_bytes(DType::I4, &[3, 3]).unwrap(), 5);
        assert_eq!(tensor_bytes(DType::F32, &[2, 3]).unwrap(), 24);
        assert!(tensor_bytes(DType::F32, &[usize::MAX, 2]).is_err());
        assert!(tensor_bytes(DType::F32, &[usize::MAX / 2]).is_err());
    }
}
