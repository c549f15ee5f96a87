//! Graph rewrites: a [`Patch`] records edits against a graph, then [`Patch::apply`]
//! makes them all at once, drops what became dead, re-infers shapes and validates.
//!
//! Model: tract's `ModelPatch` (a rewrite is a small set of new nodes plus how they
//! connect to the graph: taps on existing values, and "shunts" that make every
//! consumer of an old value read a new one). Differences: the patch does not hold a
//! model of its own — fresh values and nodes get patch-local ids that continue the
//! graph's numbering ([`ValId`] / [`NodeId`] past the graph's last), existing values
//! are tapped by their id directly, and apply also removes nodes, drops dead code and
//! checks the result (tract leaves those to separate passes).
//!
//! What a patch can say:
//! - fresh values ([`Patch::add_value`], [`Patch::add_const`]) with names unique in
//!   the graph and the patch ([`Patch::fresh_name`]);
//! - new nodes: placed right after the producers of their inputs
//!   ([`Patch::add_node`]), or before a given node ([`Patch::insert_before`]), or in
//!   place of removed ones ([`Patch::replace`]);
//! - removals ([`Patch::remove_node`]; [`Patch::bypass`] for a chain whose output
//!   becomes its input);
//! - [`Patch::rewire`]: every consumer of a value in the graph — graph outputs
//!   included, the patch's own nodes excluded — reads another one instead;
//!   [`Patch::set_input`] for one input slot;
//! - [`Patch::set_const`]: a value becomes a constant (its producer must go).
//!
//! A new node may produce a removed node's output value: the value keeps its id,
//! name and declared shape (a graph output keeps its name), and the check compares
//! that shape with what the new node computes.
//!
//! On apply: nodes are laid out (originals in their order, each new node at its
//! place); if that order is not topological, the nodes are sorted with the fewest
//! moves (a node runs as soon as its inputs exist, earlier ones first); dead nodes and
//! unreferenced values go ([`Graph::remove_dead_nodes`], the one dead-code
//! elimination); shapes are re-inferred ([`Shapes`]); and the graph is validated
//! ([`Graph::validate`]). Any failure is an error naming the node or value, and leaves
//! the graph as it was.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::{fresh_name_in, Dim, Graph, Node, Value, ValueId};
use crate::ids::{NodeId, ValId};
use crate::op::Op;
use crate::shape::Declared;
use crate::tensor::Tensor;
use std::collections::HashSet;

/// What [`Patch::apply`] does with dtypes and shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shapes {
    /// Infer every value (at batch 1, and 2 for a symbolic batch); values that
    /// declare no shape get the inferred one; a declared dtype or fixed dimension that
    /// differs from the inferred one is an error.
    #[default]
    Check,
    /// Re-derive the dtype and shape of every computed value
    /// ([`reannotate`](crate::shape::reannotate)).
    Reinfer,
    /// No inference (ops without a usable shape rule here): structure only.
    Keep,
}

/// Whether [`Patch::apply`] drops nodes no graph output needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadNodes {
    #[default]
    Drop,
    /// Keep them (only values nothing refers to go).
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before original node `anchor` (or where it was, if the patch removes it);
    /// nodes at one anchor are laid out by `seq`, the order they were placed in.
    Before { anchor: usize, seq: usize },
    /// Right after the producers of its inputs.
    Auto,
}

/// Edits against one graph, applied at once by [`Patch::apply`].
#[derive(Debug, Clone)]
pub struct Patch {
    base_values: usize,
    base_nodes: usize,
    taken: HashSet<String>,
    fresh: Vec<Value>,
    added: Vec<(Node, Place)>,
    removed: HashSet<usize>,
    rewires: Vec<(ValueId, ValueId)>,
    input_edits: Vec<(usize, usize, Option<ValueId>)>,
    consts: Vec<(ValueId, Tensor)>,
    shapes: Shapes,
    dead: DeadNodes,
    seq: usize,
}

/// Where the patch's ids ended up: graph ids after apply (`None`: dropped as dead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    values: Vec<Option<ValueId>>,
    nodes: Vec<Option<usize>>,
}

impl Applied {
    /// The graph value that a value of the graph before apply, or a fresh value of the
    /// patch, is now.
    pub fn value(&self, v: ValId) -> Option<ValId> {
        self.values.get(v.0).copied().flatten().map(ValId)
    }

    /// The graph node that an original node, or a node the patch added, is now.
    pub fn node(&self, n: NodeId) -> Option<NodeId> {
        self.nodes.get(n.0).copied().flatten().map(NodeId)
    }
}

impl Patch {
    /// An empty patch against `graph` (its ids and names as they are now).
    pub fn new(graph: &Graph) -> Patch {
        Patch {
            base_values: graph.values.len(),
            base_nodes: graph.nodes.len(),
            taken: graph.values.iter().map(|v| v.name.clone()).collect(),
            fresh: Vec::new(),
            added: Vec::new(),
            removed: HashSet::new(),
            rewires: Vec::new(),
            input_edits: Vec::new(),
            consts: Vec::new(),
            shapes: Shapes::default(),
            dead: DeadNodes::default(),
            seq: 0,
        }
    }

    /// Sets what apply does with shapes (default [`Shapes::Check`]).
    pub fn with_shapes(mut self, s: Shapes) -> Patch {
        self.shapes = s;
        self
    }

    /// Sets whether apply drops dead nodes (default [`DeadNodes::Drop`]).
    pub fn with_dead_nodes(mut self, d: DeadNodes) -> Patch {
        self.dead = d;
        self
    }

    /// True if the patch changes nothing (apply still compacts and validates).
    pub fn is_empty(&self) -> bool {
        self.fresh.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.rewires.is_empty()
            && self.input_edits.is_empty()
            && self.consts.is_empty()
    }

    /// A value name free in the graph and the patch, derived from `base` as
    /// [`Graph::fresh_name`] does; reserved from now on.
    pub fn fresh_name(&mut self, base: &str) -> String {
        let name = fresh_name_in(|n| self.taken.contains(n), base);
        self.taken.insert(name.clone());
        name
    }

    /// A fresh non-constant value named after `base`; `shape: None` lets apply infer it.
    pub fn add_value(&mut self, base: &str, dtype: DType, shape: Option<Vec<Dim>>) -> ValId {
        let name = self.fresh_name(base);
        self.fresh.push(Value {
            name,
            dtype,
            shape,
            quant: None,
            data: None,
        });
        ValId(self.base_values + self.fresh.len() - 1)
    }

    /// A fresh constant named after `base`.
    pub fn add_const(&mut self, base: &str, t: Tensor) -> ValId {
        let name = self.fresh_name(base);
        self.fresh.push(Value {
            name,
            dtype: t.dtype(),
            shape: Some(t.shape.iter().map(|&d| Dim::Fixed(d)).collect()),
            quant: None,
            data: Some(t),
        });
        ValId(self.base_values + self.fresh.len() - 1)
    }

    /// Mutable access to a fresh value of the patch (to set its quantization
    /// parameters, say); `None` for the graph's values or an unknown id.
    pub fn fresh_value_mut(&mut self, v: ValId) -> Option<&mut Value> {
        v.0.checked_sub(self.base_values)
            .and_then(|k| self.fresh.get_mut(k))
    }

    fn check_value(&self, v: ValId, what: &str) -> Result<()> {
        if v.0 < self.base_values + self.fresh.len() {
            Ok(())
        } else {
            Err(IrError::Invalid(format!(
                "patch: {what} {v} does not exist (graph has {} values, patch added {})",
                self.base_values,
                self.fresh.len()
            )))
        }
    }

    fn check_node(&self, n: NodeId, what: &str) -> Result<()> {
        if n.0 < self.base_nodes + self.added.len() {
            Ok(())
        } else {
            Err(IrError::Invalid(format!(
                "patch: {what} {n} does not exist (graph has {} nodes, patch added {})",
                self.base_nodes,
                self.added.len()
            )))
        }
    }

    fn check_original(&self, n: NodeId, what: &str) -> Result<()> {
        if n.0 < self.base_nodes {
            Ok(())
        } else {
            Err(IrError::Invalid(format!(
                "patch: {what} {n} is not a node of the graph (it has {})",
                self.base_nodes
            )))
        }
    }

    fn push_node(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[Option<ValId>],
        outputs: &[ValId],
        place: Place,
    ) -> Result<NodeId> {
        for v in inputs.iter().flatten() {
            self.check_value(*v, &format!("input of new node '{name}':"))?;
        }
        for v in outputs {
            self.check_value(*v, &format!("output of new node '{name}':"))?;
        }
        let node = Node {
            name: name.to_string(),
            op,
            inputs: inputs.iter().map(|x| x.map(|v| v.0)).collect(),
            outputs: outputs.iter().map(|v| v.0).collect(),
        };
        self.added.push((node, place));
        Ok(NodeId(self.base_nodes + self.added.len() - 1))
    }

    /// A new node, placed right after the producers of its inputs. Its outputs are
    /// fresh values, or outputs of nodes the patch removes.
    pub fn add_node(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[Option<ValId>],
        outputs: &[ValId],
    ) -> Result<NodeId> {
        self.push_node(name, op, inputs, outputs, Place::Auto)
    }

    /// A new node, placed just before the graph's node `anchor` (where it was, if
    /// the patch removes it).
    pub fn insert_before(
        &mut self,
        anchor: NodeId,
        name: &str,
        op: Op,
        inputs: &[Option<ValId>],
        outputs: &[ValId],
    ) -> Result<NodeId> {
        self.check_original(anchor, "anchor")?;
        self.seq += 1;
        let place = Place::Before {
            anchor: anchor.0,
            seq: self.seq,
        };
        self.push_node(name, op, inputs, outputs, place)
    }

    /// Removes a node (of the graph, or one the patch added). Whatever still reads
    /// its outputs at apply must have been rewired, or be dead, or apply fails.
    pub fn remove_node(&mut self, n: NodeId) -> Result<()> {
        self.check_node(n, "removed node")?;
        self.removed.insert(n.0);
        Ok(())
    }

    /// Removes the graph's nodes `old` and puts the patch's nodes `new` (in this
    /// order) where the last of `old` was. The new nodes produce the old outputs
    /// themselves (same values: ids, names and declared shapes stay) or the old
    /// outputs are [`rewire`](Patch::rewire)d.
    pub fn replace(&mut self, old: &[NodeId], new: &[NodeId]) -> Result<()> {
        for &n in old {
            self.check_original(n, "replaced node")?;
        }
        let Some(last) = old.iter().map(|n| n.0).max() else {
            return Err(IrError::Invalid(
                "patch: replace needs at least one node to replace".into(),
            ));
        };
        for &n in new {
            self.check_node(n, "replacement node")?;
            if n.0 < self.base_nodes {
                return Err(IrError::Invalid(format!(
                    "patch: replacement {n} is a node of the graph, not one the patch added"
                )));
            }
        }
        for &n in old {
            self.removed.insert(n.0);
        }
        for &n in new {
            self.seq += 1;
            self.added[n.0 - self.base_nodes].1 = Place::Before {
                anchor: last,
                seq: self.seq,
            };
        }
        Ok(())
    }

    /// Removes a chain of the graph's nodes, first to last, each reading the previous
    /// one's only output as its input 0, and makes every reader of the last one's
    /// output read the first one's input 0 instead (an Identity, a Dropout, a
    /// Quantize / Dequantize pair that cancels).
    pub fn bypass(&mut self, graph: &Graph, chain: &[NodeId]) -> Result<()> {
        if graph.nodes.len() != self.base_nodes {
            return Err(IrError::Invalid(
                "patch: bypass given another graph than the patch's".into(),
            ));
        }
        for &n in chain {
            self.check_original(n, "bypassed node")?;
        }
        let (Some(first), Some(last)) = (chain.first(), chain.last()) else {
            return Err(IrError::Invalid("patch: bypass of an empty chain".into()));
        };
        for w in chain.windows(2) {
            let (a, b) = (&graph.nodes[w[0].0], &graph.nodes[w[1].0]);
            if a.outputs.len() != 1 || b.input(0) != Some(a.outputs[0]) {
                return Err(b.error(format!(
                    "bypass: does not read the only output of '{}' as its input 0",
                    a.name
                )));
            }
        }
        let first = &graph.nodes[first.0];
        let last = &graph.nodes[last.0];
        let src = first
            .input(0)
            .ok_or_else(|| first.error("bypass: the chain's first node has no input 0"))?;
        if last.outputs.len() != 1 {
            return Err(last.error("bypass: the chain's last node must have one output"));
        }
        for &n in chain {
            self.removed.insert(n.0);
        }
        self.rewires.push((last.outputs[0], src));
        Ok(())
    }

    /// Every reader of `from` in the graph — nodes the patch keeps, and the graph
    /// outputs — reads `to` instead. Nodes the patch adds read what they were given.
    /// Rewires apply in order (`a -> b` then `b -> c` sends `a`'s readers to `c`).
    pub fn rewire(&mut self, from: ValId, to: ValId) -> Result<()> {
        self.check_value(from, "rewired value")?;
        self.check_value(to, "rewire target")?;
        self.rewires.push((from.0, to.0));
        Ok(())
    }

    /// Input `slot` of `node` (of the graph or the patch) reads `v` (`None`: absent
    /// optional input). Applied after the rewires.
    pub fn set_input(&mut self, node: NodeId, slot: usize, v: Option<ValId>) -> Result<()> {
        self.check_node(node, "node")?;
        if let Some(v) = v {
            self.check_value(v, "new input")?;
        }
        self.input_edits.push((node.0, slot, v.map(|v| v.0)));
        Ok(())
    }

    /// The value `v` becomes a constant holding `t` (dtype and shape from `t`); its
    /// producer, if any, must be removed by the patch.
    pub fn set_const(&mut self, v: ValId, t: Tensor) -> Result<()> {
        self.check_value(v, "value made constant")?;
        self.consts.push((v.0, t));
        Ok(())
    }

    /// Makes the edits, drops dead nodes and unused values, re-infers shapes and
    /// validates. On error the graph is left as it was.
    pub fn apply(self, g: &mut Graph) -> Result<Applied> {
        if g.values.len() != self.base_values || g.nodes.len() != self.base_nodes {
            return Err(IrError::Invalid(format!(
                "patch built against a graph of {} values and {} nodes, applied to one of {} and {}",
                self.base_values,
                self.base_nodes,
                g.values.len(),
                g.nodes.len()
            )));
        }
        let base_values = self.base_values;
        let nodes = g.nodes.clone();
        let outputs = g.outputs.clone();
        let consts: Vec<(ValueId, Value)> = self
            .consts
            .iter()
            .filter(|(v, _)| *v < base_values)
            .map(|(v, _)| (*v, g.values[*v].clone()))
            .collect();
        self.apply_inner(g).inspect_err(|_| {
            g.values.truncate(base_values);
            g.nodes = nodes;
            g.outputs = outputs;
            for (v, old) in consts {
                g.values[v] = old;
            }
        })
    }

    fn apply_inner(self, g: &mut Graph) -> Result<Applied> {
        let Patch {
            base_nodes,
            fresh,
            added,
            removed,
            rewires,
            input_edits,
            consts,
            shapes,
            dead,
            ..
        } = self;
        // For messages: the removed producer of each value.
        let mut removed_producer: Vec<Option<&str>> = vec![None; g.values.len() + fresh.len()];
        let original = std::mem::take(&mut g.nodes);
        for &i in &removed {
            if let Some(n) = original.get(i) {
                for &o in &n.outputs {
                    if let Some(p) = removed_producer.get_mut(o) {
                        *p = Some(n.name.as_str());
                    }
                }
            }
        }
        g.values.extend(fresh);
        for (v, t) in consts {
            let val = &mut g.values[v];
            val.dtype = t.dtype();
            val.shape = Some(t.shape.iter().map(|&d| Dim::Fixed(d)).collect());
            val.data = Some(t);
        }
        let rewire = |x: ValueId| {
            rewires
                .iter()
                .fold(x, |x, &(f, t)| if x == f { t } else { x })
        };

        // Every node by patch id (None: removed): originals rewired, new ones as given.
        let mut nodes: Vec<Option<Node>> = Vec::with_capacity(base_nodes + added.len());
        for (i, n) in original.iter().enumerate() {
            if removed.contains(&i) {
                nodes.push(None);
                continue;
            }
            let mut n = n.clone();
            for x in n.inputs.iter_mut().flatten() {
                *x = rewire(*x);
            }
            nodes.push(Some(n));
        }
        let mut places = Vec::with_capacity(added.len());
        for (k, (n, place)) in added.into_iter().enumerate() {
            places.push(place);
            nodes.push((!removed.contains(&(base_nodes + k))).then_some(n));
        }
        for (node, slot, v) in input_edits {
            let Some(n) = nodes[node].as_mut() else {
                return Err(IrError::Invalid(format!(
                    "patch: set_input on node #{node}, which the patch removes"
                )));
            };
            if slot >= n.inputs.len() {
                n.inputs.resize(slot + 1, None);
            }
            n.inputs[slot] = v;
        }
        g.outputs = g.outputs.iter().map(|&o| rewire(o)).collect();

        // Layout: originals in order, each preceded by the new nodes anchored there;
        // then each automatically placed node right after its inputs' producers
        // (after those placed there before it).
        let mut order: Vec<usize> = Vec::with_capacity(nodes.len());
        for i in 0..base_nodes {
            let mut here: Vec<(usize, usize)> = places
                .iter()
                .enumerate()
                .filter_map(|(k, p)| match *p {
                    Place::Before { anchor, seq } if anchor == i => Some((seq, base_nodes + k)),
                    Place::Before { .. } | Place::Auto => None,
                })
                .filter(|&(_, id)| nodes[id].is_some())
                .collect();
            here.sort_unstable();
            order.extend(here.into_iter().map(|(_, id)| id));
            if nodes[i].is_some() {
                order.push(i);
            }
        }
        let mut autos = HashSet::new();
        for (k, p) in places.iter().enumerate() {
            let id = base_nodes + k;
            let (Place::Auto, Some(n)) = (p, &nodes[id]) else {
                continue;
            };
            let after = n
                .present_inputs()
                .filter_map(|v| {
                    order
                        .iter()
                        .rposition(|&j| nodes[j].as_ref().is_some_and(|m| m.outputs.contains(&v)))
                })
                .max();
            let mut pos = after.map_or(0, |p| p + 1);
            while pos < order.len() && autos.contains(&order[pos]) {
                pos += 1;
            }
            order.insert(pos, id);
            autos.insert(id);
        }
        let mut laid: Vec<(usize, Node)> = Vec::with_capacity(order.len());
        for id in order {
            if let Some(n) = nodes[id].take() {
                laid.push((id, n));
            }
        }

        // Dead nodes go (the one liveness rule, order-independent), then the rest is
        // checked for dangling inputs and sorted if the layout is not topological.
        let (mut ids, new_nodes): (Vec<usize>, Vec<Node>) = laid.into_iter().unzip();
        g.nodes = new_nodes;
        if dead == DeadNodes::Drop {
            let live = g.live_nodes();
            let mut k = 0;
            ids.retain(|_| {
                k += 1;
                live[k - 1]
            });
            let mut k = 0;
            g.nodes.retain(|_| {
                k += 1;
                live[k - 1]
            });
        }
        check_dangling(g, &removed_producer)?;
        let perm = topological_order(g)?;
        if perm.iter().enumerate().any(|(i, &p)| i != p) {
            let mut slots: Vec<Option<Node>> =
                std::mem::take(&mut g.nodes).into_iter().map(Some).collect();
            g.nodes = perm
                .iter()
                .map(|&p| slots[p].take().expect("a permutation"))
                .collect();
            ids = perm.iter().map(|&p| ids[p]).collect();
        }

        // Shapes are computed before anything irreversible; then validation.
        let decl = match shapes {
            Shapes::Keep => None,
            Shapes::Reinfer => Some(crate::shape::infer_declarations(g)?),
            Shapes::Check => Some(check_declarations(g)?),
        };
        g.validate()?;
        if let Some(decl) = decl {
            for (v, d) in g.values.iter_mut().zip(decl) {
                if let Some((dtype, shape)) = d {
                    v.dtype = dtype;
                    v.shape = Some(shape);
                }
            }
        }
        let values = g.remove_unused_values();
        let mut node_map = vec![None; base_nodes + places.len()];
        for (new, &id) in ids.iter().enumerate() {
            node_map[id] = Some(new);
        }
        Ok(Applied {
            values,
            nodes: node_map,
        })
    }
}

/// Every node input and graph output must be a graph input, a constant or some
/// node's output; the error names the reader and, when the patch removed the
/// producer, that producer.
fn check_dangling(g: &Graph, removed_producer: &[Option<&str>]) -> Result<()> {
    let nv = g.values.len();
    let mut available = vec![false; nv];
    for &i in &g.inputs {
        if let Some(a) = available.get_mut(i) {
            *a = true;
        }
    }
    for (a, v) in available.iter_mut().zip(&g.values) {
        *a |= v.is_const();
    }
    for n in &g.nodes {
        for &o in &n.outputs {
            if o >= nv {
                return Err(n.error(format!("output id {o} out of range")));
            }
            available[o] = true;
        }
    }
    let why = |v: ValueId| match removed_producer.get(v).copied().flatten() {
        Some(p) => format!(
            "'{}', whose producer '{p}' the patch removes (rewire its readers)",
            g.values[v].name
        ),
        None => format!("'{}', which no node produces", g.values[v].name),
    };
    for n in &g.nodes {
        for i in n.present_inputs() {
            if i >= nv {
                return Err(n.error(format!("input id {i} out of range")));
            }
            if !available[i] {
                return Err(n.error(format!("reads {}", why(i))));
            }
        }
    }
    for &o in &g.outputs {
        if o >= nv {
            return Err(IrError::Invalid(format!(
                "graph output id {o} out of range"
            )));
        }
        if !available[o] {
            return Err(IrError::Invalid(format!("graph output {}", why(o))));
        }
    }
    Ok(())
}

/// A topological order of `g.nodes` (indices) that moves as little as possible:
/// among the nodes whose inputs exist, the earliest goes first, so a topological
/// list comes back unchanged. Inputs must all be produced (see [`check_dangling`]);
/// what is left over is a cycle, reported naming one of its nodes.
fn topological_order(g: &Graph) -> Result<Vec<usize>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let nv = g.values.len();
    let mut producer: Vec<Option<usize>> = vec![None; nv];
    for (ni, n) in g.nodes.iter().enumerate() {
        for &o in &n.outputs {
            producer[o] = Some(ni);
        }
    }
    let mut waiting = vec![0usize; g.nodes.len()];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); g.nodes.len()];
    for (ni, n) in g.nodes.iter().enumerate() {
        let mut deps: Vec<usize> = n.present_inputs().filter_map(|i| producer[i]).collect();
        deps.sort_unstable();
        deps.dedup();
        waiting[ni] = deps.len();
        for d in deps {
            readers[d].push(ni);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..g.nodes.len())
        .filter(|&i| waiting[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(g.nodes.len());
    while let Some(Reverse(n)) = ready.pop() {
        order.push(n);
        for &r in &readers[n] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push(Reverse(r));
            }
        }
    }
    if order.len() < g.nodes.len() {
        let stuck = (0..g.nodes.len())
            .find(|&i| waiting[i] > 0)
            .expect("some node waits");
        return Err(g.nodes[stuck].error(
            "the patched graph has a cycle through this node (it reads, transitively, its own output)",
        ));
    }
    Ok(order)
}

/// [`Shapes::Check`]: what to write (inferred declarations of values that have no
/// shape), after comparing every declared dtype and fixed dimension with inference.
fn check_declarations(g: &Graph) -> Result<Vec<Declared>> {
    let mut decl = crate::shape::infer_declarations(g)?;
    let producers = g.producers();
    for (i, d) in decl.iter_mut().enumerate() {
        let Some((dtype, shape)) = d else { continue };
        let v = &g.values[i];
        let fail = |msg: String| match producers[i] {
            Some(p) => g.nodes[p].error(msg),
            None => IrError::Tensor(v.name.clone(), msg),
        };
        if v.dtype != *dtype {
            return Err(fail(format!(
                "output '{}' is declared {} but computes {}",
                v.name, v.dtype, dtype
            )));
        }
        let Some(declared) = &v.shape else { continue };
        let agrees = declared.len() == shape.len()
            && declared
                .iter()
                .zip(shape.iter())
                .all(|(a, b)| match (a, b) {
                    (Dim::Fixed(a), Dim::Fixed(b)) => a == b,
                    (Dim::Sym(_), _) | (_, Dim::Sym(_)) => true,
                });
        if !agrees {
            return Err(fail(format!(
                "output '{}' is declared [{}] but computes [{}]",
                v.name,
                dims(declared),
                dims(shape)
            )));
        }
        *d = None;
    }
    Ok(decl)
}

fn dims(s: &[Dim]) -> String {
    s.iter().map(Dim::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
