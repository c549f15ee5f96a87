//! The graph: nodes over named values (tensors).

use crate::dtype::{DType, QuantParams};
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};

/// How a compaction renumbered nodes and values: old index -> new, `None` if dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Renumbering {
    pub nodes: Vec<Option<usize>>,
    pub values: Vec<Option<ValueId>>,
}

/// `base` if it is not `taken`, else the first free `base_1`, `base_2`, ...
pub(crate) fn fresh_name_in(taken: impl Fn(&str) -> bool, base: &str) -> String {
    if !taken(base) {
        return base.to_string();
    }
    let mut k = 1usize;
    loop {
        let n = format!("{base}_{k}");
        if !taken(&n) {
            return n;
        }
        k += 1;
    }
}

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(usize),
    /// Named or unnamed dynamic dimension (e.g. the batch), bound at run time.
    Sym(String),
}

impl Dim {
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(d) => Some(*d),
            Dim::Sym(_) => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(d) => write!(f, "{d}"),
            Dim::Sym(s) if s.is_empty() => f.write_str("?"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A named tensor of the graph: a graph input, an intermediate, an output, or a
/// constant (`data` is set).
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub name: String,
    pub dtype: DType,
    /// Declared or inferred shape; `None` while unknown.
    pub shape: Option<Vec<Dim>>,
    pub quant: Option<QuantParams>,
    /// Constant contents (weights, biases, folded shapes).
    pub data: Option<Tensor>,
}

impl Value {
    pub fn is_const(&self) -> bool {
        self.data.is_some()
    }

    /// The shape if every dimension is fixed.
    pub fn fixed_shape(&self) -> Option<Vec<usize>> {
        if let Some(t) = &self.data {
            return Some(t.shape.clone());
        }
        self.shape.as_ref()?.iter().map(Dim::fixed).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// Inputs in the op's order; `None` is an absent optional input.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

impl Node {
    /// The `i`-th input if present.
    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    /// Present inputs, in order.
    pub fn present_inputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs.iter().filter_map(|x| *x)
    }

    pub fn error(&self, msg: impl Into<String>) -> IrError {
        IrError::Node {
            node: self.name.clone(),
            op: self.op.name().to_string(),
            msg: msg.into(),
        }
    }
}

/// Where a graph came from (kept for export and for messages).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Source {
    #[default]
    Built,
    Onnx {
        opset: i64,
        producer: String,
    },
    Tflite {
        version: u32,
    },
}

/// A model: values, nodes in topological order, graph inputs and outputs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub source: Source,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a non-constant value and returns its id.
    pub fn add_value(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: Option<Vec<Dim>>,
    ) -> ValueId {
        self.values.push(Value {
            name: name.into(),
            dtype,
            shape,
            quant: None,
            data: None,
        });
        self.values.len() - 1
    }

    /// Adds a constant value and returns its id.
    pub fn add_const(&mut self, name: impl Into<String>, t: Tensor) -> ValueId {
        self.values.push(Value {
            name: name.into(),
            dtype: t.dtype(),
            shape: Some(t.shape.iter().map(|&d| Dim::Fixed(d)).collect()),
            quant: None,
            data: Some(t),
        });
        self.values.len() - 1
    }

    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<ValueId>,
    ) -> usize {
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            outputs,
        });
        self.nodes.len() - 1
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id]
    }

    /// Constant contents of a value, if it is a constant.
    pub fn const_data(&self, id: ValueId) -> Option<&Tensor> {
        self.values.get(id)?.data.as_ref()
    }

    /// Name → id map (built on demand; names are unique in a valid graph).
    pub fn name_index(&self) -> HashMap<&str, ValueId> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.as_str(), i))
            .collect()
    }

    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }

    /// For each value, the node that produces it (None for inputs and constants).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (ni, n) in self.nodes.iter().enumerate() {
            for &o in &n.outputs {
                if o < p.len() {
                    p[o] = Some(ni);
                }
            }
        }
        p
    }

    /// For each value, the nodes that read it.
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut c = vec![Vec::new(); self.values.len()];
        for (ni, n) in self.nodes.iter().enumerate() {
            for i in n.present_inputs() {
                if i < c.len() && !c[i].contains(&ni) {
                    c[i].push(ni);
                }
            }
        }
        c
    }

    /// Checks structural invariants: ids in range, unique names, each value produced
    /// at most once, nodes in topological order, graph outputs produced or given.
    /// Errors name the node or value at fault.
    pub fn validate(&self) -> Result<()> {
        let nv = self.values.len();
        let mut seen = HashMap::new();
        for (i, v) in self.values.iter().enumerate() {
            if let Some(prev) = seen.insert(v.name.as_str(), i) {
                return Err(IrError::Tensor(
                    v.name.clone(),
                    format!("name used by values {prev} and {i}"),
                ));
            }
            if let (Some(t), Some(shape)) = (&v.data, &v.shape) {
                let declared: Vec<Dim> = t.shape.iter().map(|&d| Dim::Fixed(d)).collect();
                if &declared != shape {
                    return Err(IrError::Tensor(
                        v.name.clone(),
                        "declared shape differs from its constant data".into(),
                    ));
                }
            }
            if let Some(t) = &v.data {
                if t.dtype() != v.dtype {
                    return Err(IrError::Tensor(
                        v.name.clone(),
                        format!("declared {} but holds {} data", v.dtype, t.dtype()),
                    ));
                }
            }
        }
        let mut available = vec![false; nv];
        for &i in &self.inputs {
            if i >= nv {
                return Err(IrError::Invalid(format!("graph input id {i} out of range")));
            }
            available[i] = true;
        }
        for (i, v) in self.values.iter().enumerate() {
            if v.is_const() {
                available[i] = true;
            }
        }
        for n in &self.nodes {
            for i in n.present_inputs() {
                if i >= nv {
                    return Err(n.error(format!("input id {i} out of range")));
                }
                if !available[i] {
                    return Err(n.error(format!(
                        "input '{}' is not produced before this node",
                        self.values[i].name
                    )));
                }
            }
            for &o in &n.outputs {
                if o >= nv {
                    return Err(n.error(format!("output id {o} out of range")));
                }
                if available[o] {
                    return Err(n.error(format!(
                        "output '{}' is already produced elsewhere",
                        self.values[o].name
                    )));
                }
                available[o] = true;
            }
        }
        for &o in &self.outputs {
            if o >= nv {
                return Err(IrError::Invalid(format!(
                    "graph output id {o} out of range"
                )));
            }
            if !available[o] {
                return Err(IrError::Tensor(
                    self.values[o].name.clone(),
                    "graph output is never produced".into(),
                ));
            }
        }
        Ok(())
    }

    /// Reorders nodes topologically (stable), failing on cycles or missing inputs.
    pub fn sort_topologically(&mut self) -> Result<()> {
        let nv = self.values.len();
        let mut available = vec![false; nv];
        for &i in &self.inputs {
            if i < nv {
                available[i] = true;
            }
        }
        for (i, v) in self.values.iter().enumerate() {
            if v.is_const() {
                available[i] = true;
            }
        }
        let mut remaining: Vec<Node> = std::mem::take(&mut self.nodes);
        let mut sorted = Vec::with_capacity(remaining.len());
        while !remaining.is_empty() {
            let before = remaining.len();
            let mut rest = Vec::new();
            for n in remaining {
                if n.present_inputs().all(|i| i < nv && available[i]) {
                    for &o in &n.outputs {
                        if o < nv {
                            available[o] = true;
                        }
                    }
                    sorted.push(n);
                } else {
                    rest.push(n);
                }
            }
            if rest.len() == before {
                let n = &rest[0];
                let missing: Vec<String> = n
                    .present_inputs()
                    .filter(|&i| i >= nv || !available[i])
                    .map(|i| {
                        self.values
                            .get(i)
                            .map(|v| v.name.clone())
                            .unwrap_or_else(|| format!("#{i}"))
                    })
                    .collect();
                let err = n.error(format!(
                    "inputs {missing:?} are never produced (cycle or dangling reference)"
                ));
                self.nodes = sorted;
                self.nodes.extend(rest);
                return Err(err);
            }
            remaining = rest;
        }
        self.nodes = sorted;
        Ok(())
    }

    /// A value name not used in the graph, derived from `base`: `base` itself when it
    /// is free, else `base_1`, `base_2`, ...
    pub fn fresh_name(&self, base: &str) -> String {
        let names: HashSet<&str> = self.values.iter().map(|v| v.name.as_str()).collect();
        fresh_name_in(|n| names.contains(n), base)
    }

    /// Which nodes are live: some output is (transitively) needed for a graph output.
    /// Independent of the node order (a patch asks before it sorts); out-of-range ids
    /// count as not needed (never a panic on a malformed graph).
    pub fn live_nodes(&self) -> Vec<bool> {
        let nv = self.values.len();
        let mut producers: Vec<Vec<usize>> = vec![Vec::new(); nv];
        for (ni, n) in self.nodes.iter().enumerate() {
            for &o in &n.outputs {
                if let Some(p) = producers.get_mut(o) {
                    p.push(ni);
                }
            }
        }
        let mut needed = vec![false; nv];
        let mut live = vec![false; self.nodes.len()];
        let mut stack: Vec<ValueId> = self.outputs.iter().copied().filter(|&o| o < nv).collect();
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut needed[v], true) {
                continue;
            }
            for &ni in &producers[v] {
                if !std::mem::replace(&mut live[ni], true) {
                    stack.extend(self.nodes[ni].present_inputs().filter(|&i| i < nv));
                }
            }
        }
        live
    }

    /// Removes the nodes none of whose outputs is (transitively) needed for a graph
    /// output, then the values no node, graph input or output refers to; value ids
    /// are renumbered in their order. The one dead-code elimination of the workspace
    /// (compress's and train's compactions and [`Patch`](crate::patch::Patch) call it).
    pub fn remove_dead_nodes(&mut self) -> Renumbering {
        let live = self.live_nodes();
        let mut nodes = vec![None; self.nodes.len()];
        let mut k = 0;
        for (slot, &l) in nodes.iter_mut().zip(&live) {
            if l {
                *slot = Some(k);
                k += 1;
            }
        }
        let mut i = 0;
        self.nodes.retain(|_| {
            i += 1;
            live[i - 1]
        });
        let values = self.remove_unused_values();
        Renumbering { nodes, values }
    }

    /// Removes the values no node, graph input or output refers to (dead nodes stay)
    /// and renumbers the rest in their order; returns old id -> new id. Out-of-range
    /// references are left pointing nowhere (`usize::MAX`), for `validate` to report.
    pub fn remove_unused_values(&mut self) -> Vec<Option<ValueId>> {
        let nv = self.values.len();
        let mut used = vec![false; nv];
        let refs = self.inputs.iter().chain(&self.outputs).copied();
        let refs = refs.chain(
            self.nodes
                .iter()
                .flat_map(|n| n.present_inputs().chain(n.outputs.iter().copied())),
        );
        for i in refs.collect::<Vec<_>>() {
            if let Some(u) = used.get_mut(i) {
                *u = true;
            }
        }
        let mut remap = vec![None; nv];
        let mut values = Vec::with_capacity(nv);
        for (i, v) in std::mem::take(&mut self.values).into_iter().enumerate() {
            if used[i] {
                remap[i] = Some(values.len());
                values.push(v);
            }
        }
        self.values = values;
        let map = |x: &mut ValueId| *x = remap.get(*x).copied().flatten().unwrap_or(usize::MAX);
        self.inputs.iter_mut().for_each(map);
        self.outputs.iter_mut().for_each(map);
        for n in &mut self.nodes {
            n.inputs.iter_mut().flatten().for_each(map);
            n.outputs.iter_mut().for_each(map);
        }
        remap
    }

    /// Number of elements in all constants (the model's parameter count).
    pub fn param_count(&self) -> usize {
        self.values
            .iter()
            .filter_map(|v| v.data.as_ref())
            .map(|t| t.len())
            .sum()
    }
}
