//! ONNX model -> IR graph.
//!
//! The importer walks the ONNX nodes in topological order. Each node is either folded
//! (all its inputs are constants, or it is a `Shape` of a value whose shape is static)
//! into constant values, or converted into one or more IR nodes (`ops.rs`).
//!
//! Static shapes are tracked with the IR's own shape rules run under two different
//! bindings of the dynamic dimensions (A and B): a dimension (or a shape-arithmetic
//! value) that comes out equal in both does not depend on the dynamic dimensions and
//! may be folded; one that differs stays a node that the runtime evaluates.

use crate::attrs::{NodeView, MAX_GEOMETRY};
use crate::error::{tensor_err, OnnxError, Result};
use crate::fold;
use crate::ops;
use crate::proto::{type_proto, ModelProto, NodeProto, ValueInfoProto};
use crate::tensor::{dtype_from_onnx, tensor_from_proto_in};
use edgeopt_ir::shape::{infer_node, InputFact, OutputFact};
use edgeopt_ir::{DType, Dim, Graph, Op, Source, Tensor, ValueId};
use prost::Message;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Oldest and newest `ai.onnx` opset the importer accepts.
pub const MIN_OPSET: i64 = 10;
pub const MAX_OPSET: i64 = 22;

/// Values the dynamic dimensions are bound to in the two static-shape analyses. Any
/// value > 1 works; distinct primes make accidental equality unlikely.
const BIND_A: usize = 3;
const BIND_B: usize = 5;

/// Whether the final graph is annotated by `edgeopt_ir::shape::annotate`. Failures are
/// tolerated (the importer's own dtype rules stay) so that an incomplete or failing
/// shape rule elsewhere never blocks loading a model.
const ANNOTATE: bool = true;

/// Reads an ONNX model file and imports it.
pub fn import_file(path: impl AsRef<Path>) -> Result<Graph> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| OnnxError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    // External data files are named relative to the model's folder.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let opts = ImportOptions {
        model_dir: Some(dir),
        ..ImportOptions::default()
    };
    import_with(&bytes, &opts)
}

/// Imports a serialized ONNX `ModelProto`.
pub fn import(bytes: &[u8]) -> Result<Graph> {
    import_with(bytes, &ImportOptions::default())
}

/// Options of [`import_with`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Graph inputs to freeze: each named input becomes a constant with this value
    /// (dtype and rank must match its declaration). Needed when a model takes an
    /// operand the IR keeps as an attribute (Pad's pads, Resize's scales, axes...) as
    /// a graph input; see [`constant_operand_inputs`].
    pub constant_inputs: Vec<(String, Tensor)>,
    /// Folder the model file is in: tensors stored in external files (the default of
    /// PyTorch's dynamo exporter, `<model>.onnx.data`) are read from there, and only
    /// from there. `None` (a model given as bytes) makes external tensors an error.
    pub model_dir: Option<PathBuf>,
}

/// Imports a serialized ONNX `ModelProto` with options.
pub fn import_with(bytes: &[u8], opts: &ImportOptions) -> Result<Graph> {
    let model = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode(e.to_string()))?;
    import_model(&model, bytes.len(), opts)
}

/// Operands that the IR folds into attributes: (op type, input positions).
const ATTRIBUTE_OPERANDS: &[(&str, &[usize])] = &[
    ("Pad", &[1, 2, 3]),
    ("Squeeze", &[1]),
    ("Unsqueeze", &[1]),
    ("ReduceMean", &[1]),
    ("ReduceSum", &[1]),
    ("ReduceMax", &[1]),
    ("ReduceMin", &[1]),
    ("ReduceProd", &[1]),
    ("Resize", &[1, 2, 3]),
];

/// Graph inputs (position among the model's non-initializer inputs, name) that feed
/// operands the IR keeps as attributes, so must be constants at import: bind them with
/// [`ImportOptions::constant_inputs`]. (The ONNX backend tests pass e.g. Pad's pads
/// this way.)
pub fn constant_operand_inputs(bytes: &[u8]) -> Result<Vec<(usize, String)>> {
    let model = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode(e.to_string()))?;
    let Some(gp) = &model.graph else {
        return Ok(Vec::new());
    };
    let inits: std::collections::HashSet<&str> = gp
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let inputs: Vec<&str> = gp
        .input
        .iter()
        .filter_map(|v| v.name.as_deref())
        .filter(|n| !inits.contains(n))
        .collect();
    let mut out = Vec::new();
    for n in &gp.node {
        let op = n.op_type.as_deref().unwrap_or("");
        let Some((_, pos)) = ATTRIBUTE_OPERANDS.iter().find(|(o, _)| *o == op) else {
            continue;
        };
        for &k in *pos {
            let Some(name) = n.input.get(k) else { continue };
            if let Some(i) = inputs.iter().position(|x| x == name) {
                if !out.iter().any(|(j, _)| *j == i) {
                    out.push((i, name.clone()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The `ai.onnx` opset a model imports.
fn model_opset(model: &ModelProto) -> Result<i64> {
    let mut opset = None;
    for o in &model.opset_import {
        match o.domain.as_deref().unwrap_or("") {
            "" | "ai.onnx" => opset = Some(o.version.unwrap_or(0)),
            _ => {} // other domains only matter if a node uses them (reported per node)
        }
    }
    let opset =
        opset.ok_or_else(|| OnnxError::Model("the model imports no ai.onnx opset".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(OnnxError::Model(format!(
            "ai.onnx opset {opset} is not supported (supported: {MIN_OPSET} to {MAX_OPSET})"
        )));
    }
    Ok(opset)
}

pub(crate) fn import_model(
    model: &ModelProto,
    file_len: usize,
    opts: &ImportOptions,
) -> Result<Graph> {
    let opset = model_opset(model)?;
    let gp = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Model("the model has no graph".into()))?;
    let mut g = Graph::new(gp.name.clone().unwrap_or_default());
    g.source = Source::Onnx {
        opset,
        producer: model.producer_name.clone().unwrap_or_default(),
    };
    if !gp.sparse_initializer.is_empty() {
        return Err(OnnxError::Model(
            "sparse initializers are not supported".into(),
        ));
    }
    let mut im = Importer {
        g,
        names: HashMap::new(),
        opset,
        facts_a: Vec::new(),
        facts_b: Vec::new(),
        // Folded constants may take at most this many bytes in total, so that a
        // hostile shape chain cannot make us allocate without bound.
        fold_budget: file_len.saturating_mul(2).saturating_add(1 << 20),
        fresh: 0,
        model_dir: opts.model_dir.clone(),
    };
    for t in &gp.initializer {
        let name = t.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(tensor_err("", "initializer without a name"));
        }
        let tensor = tensor_from_proto_in(t, opts.model_dir.as_deref())?;
        if t.data_location == Some(1) {
            // Weights read from an external file count like weights in the model file.
            let bytes = tensor.len().saturating_mul(16);
            im.fold_budget = im.fold_budget.saturating_add(bytes);
        }
        im.add_const(&name, tensor)?;
    }
    for vi in &gp.input {
        let name = vi.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(OnnxError::Model("graph input without a name".into()));
        }
        if im.names.contains_key(name) {
            // An initializer listed as an input (IR version < 4 style, or an
            // overridable default): it is a constant of the model.
            continue;
        }
        let (dtype, shape) = value_type(vi)?;
        if let Some((_, t)) = opts.constant_inputs.iter().find(|(n, _)| n == name) {
            let rank_ok = shape.as_ref().is_none_or(|s| s.len() == t.rank());
            if t.dtype() != dtype || !rank_ok {
                return Err(tensor_err(
                    name,
                    format!(
                        "declared {dtype} {shape:?}, the value given is {} {:?}",
                        t.dtype(),
                        t.shape
                    ),
                ));
            }
            im.add_const(name, t.clone())?;
            continue;
        }
        let shape = shape.ok_or_else(|| {
            tensor_err(
                name,
                "graph input has no shape (a rank is needed to run it)",
            )
        })?;
        let id = im.new_value(name, dtype, Some(shape))?;
        im.g.inputs.push(id);
    }
    im.bind_inputs();

    // List every op we cannot import in one error before converting anything.
    let mut unsupported = BTreeSet::new();
    for (ni, np) in gp.node.iter().enumerate() {
        let v = NodeView::new(np, ni);
        match np.domain.as_deref().unwrap_or("") {
            "" | "ai.onnx" => {
                if !ops::is_known(v.op_type) {
                    unsupported.insert(v.op_type.to_string());
                }
            }
            d => {
                unsupported.insert(format!("{d}.{}", v.op_type));
            }
        }
    }
    if !unsupported.is_empty() {
        let list: Vec<String> = unsupported.into_iter().collect();
        return Err(OnnxError::UnsupportedOps(list.join(", ")));
    }
    let order = topo_order(&gp.node, &im.names)?;
    for &ni in &order {
        let Some(np) = gp.node.get(ni) else { continue };
        im.node(&NodeView::new(np, ni))?;
    }

    for vi in &gp.output {
        let name = vi.name.as_deref().unwrap_or("");
        let id = *im.names.get(name).ok_or_else(|| {
            tensor_err(
                name,
                "graph output is not produced by any node or initializer",
            )
        })?;
        let (dtype, shape) = value_type(vi)?;
        let v = &mut im.g.values[id];
        if v.dtype != dtype {
            return Err(tensor_err(
                name,
                format!("graph output is declared {dtype} but computes {}", v.dtype),
            ));
        }
        if v.data.is_none() && !im.g.inputs.contains(&id) {
            if let Some(s) = shape {
                v.shape = Some(s);
            }
        }
        im.g.outputs.push(id);
    }
    let mut g = im.g;
    if ANNOTATE {
        // annotate() infers every value before writing any, so on failure the graph
        // is unchanged and keeps the importer's own dtypes. A panicking shape rule must
        // not take the import down either.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            edgeopt_ir::shape::annotate(&mut g)
        }));
        if r.is_err() {
            return Err(OnnxError::Model(
                "shape inference failed with an internal error (a panic in a shape rule)".into(),
            ));
        }
    }
    g.validate()?;
    Ok(g)
}

/// Declared element type and shape of a graph input or output.
fn value_type(vi: &ValueInfoProto) -> Result<(DType, Option<Vec<Dim>>)> {
    let name = vi.name.as_deref().unwrap_or("");
    let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tt)) => tt,
        Some(_) => {
            return Err(tensor_err(
                name,
                "only tensor-typed graph inputs/outputs are supported",
            ))
        }
        None => return Err(tensor_err(name, "has no type")),
    };
    let dtype = dtype_from_onnx(tt.elem_type.unwrap_or(0)).map_err(|m| tensor_err(name, m))?;
    let shape = match &tt.shape {
        None => None,
        Some(s) => {
            let mut dims = Vec::with_capacity(s.dim.len());
            for d in &s.dim {
                use crate::proto::tensor_shape_proto::dimension::Value as DV;
                dims.push(match &d.value {
                    Some(DV::DimValue(x)) if (0..=MAX_GEOMETRY).contains(x) => {
                        Dim::Fixed(*x as usize)
                    }
                    Some(DV::DimValue(x)) => {
                        return Err(tensor_err(name, format!("invalid dimension {x}")))
                    }
                    Some(DV::DimParam(p)) => Dim::Sym(p.clone()),
                    None => Dim::Sym(String::new()),
                });
            }
            Some(dims)
        }
    };
    Ok((dtype, shape))
}

/// Topological order of the ONNX nodes (Kahn's algorithm; ONNX requires sorted nodes
/// but not every producer complies). Inputs that nothing produces are left for the
/// per-node check, which names them.
fn topo_order(nodes: &[NodeProto], known: &HashMap<String, ValueId>) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if known.contains_key(o.as_str()) || producer.insert(o.as_str(), i).is_some() {
                let v = NodeView::new(n, i);
                return Err(v.err(format!("output '{o}' is produced more than once")));
            }
        }
    }
    let mut indeg = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(inp.as_str()) {
                indeg[i] += 1;
                users[p].push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| indeg[i] == 0).rev().collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &u in users[i].iter().rev() {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.push(u);
            }
        }
    }
    if order.len() != nodes.len() {
        let stuck = (0..nodes.len()).find(|&i| indeg[i] > 0).unwrap_or(0);
        let v = NodeView::new(&nodes[stuck], stuck);
        return Err(v.err("the graph has a cycle through this node"));
    }
    Ok(order)
}

/// Import state: the graph being built, ONNX name -> value, and the static-shape facts.
pub(crate) struct Importer {
    pub g: Graph,
    pub names: HashMap<String, ValueId>,
    pub opset: i64,
    facts_a: Vec<Option<OutputFact>>,
    facts_b: Vec<Option<OutputFact>>,
    fold_budget: usize,
    fresh: usize,
    /// Where external tensor data is read from (see [`ImportOptions::model_dir`]).
    model_dir: Option<PathBuf>,
}

impl Importer {
    fn push_facts(&mut self) {
        self.facts_a.resize(self.g.values.len(), None);
        self.facts_b.resize(self.g.values.len(), None);
    }

    fn claim_name(&self, name: &str) -> Result<()> {
        if self.names.contains_key(name) {
            return Err(tensor_err(name, "name is defined more than once"));
        }
        Ok(())
    }

    pub fn add_const(&mut self, name: &str, t: Tensor) -> Result<ValueId> {
        self.claim_name(name)?;
        let id = self.g.add_const(name, t);
        self.names.insert(name.to_string(), id);
        self.push_facts();
        Ok(id)
    }

    pub fn new_value(
        &mut self,
        name: &str,
        dtype: DType,
        shape: Option<Vec<Dim>>,
    ) -> Result<ValueId> {
        self.claim_name(name)?;
        let id = self.g.add_value(name, dtype, shape);
        self.names.insert(name.to_string(), id);
        self.push_facts();
        Ok(id)
    }

    /// A value with a fresh name derived from `base` (for values the importer inserts).
    pub fn fresh_value(&mut self, base: &str, dtype: DType) -> Result<ValueId> {
        let name = self.fresh_name(base);
        self.new_value(&name, dtype, None)
    }

    pub fn fresh_const(&mut self, base: &str, t: Tensor) -> Result<ValueId> {
        let name = self.fresh_name(base);
        self.add_const(&name, t)
    }

    fn fresh_name(&mut self, base: &str) -> String {
        loop {
            self.fresh += 1;
            let name = format!("{base}__{}", self.fresh);
            if !self.names.contains_key(&name) {
                return name;
            }
        }
    }

    pub fn dtype(&self, id: ValueId) -> DType {
        self.g.values[id].dtype
    }

    pub fn const_of(&self, id: ValueId) -> Option<&Tensor> {
        self.g.values.get(id)?.data.as_ref()
    }

    /// Shape of a value as far as it is static: fixed dims where both analyses (or the
    /// declaration) agree, `Sym` where they differ. `None` if the rank is unknown.
    pub fn static_shape(&self, id: ValueId) -> Option<Vec<Dim>> {
        let v = self.g.values.get(id)?;
        if let Some(t) = &v.data {
            return Some(t.shape.iter().map(|&d| Dim::Fixed(d)).collect());
        }
        if let (Some(Some(a)), Some(Some(b))) = (self.facts_a.get(id), self.facts_b.get(id)) {
            if a.shape.len() == b.shape.len() {
                return Some(
                    a.shape
                        .iter()
                        .zip(&b.shape)
                        .map(|(&x, &y)| {
                            if x == y {
                                Dim::Fixed(x)
                            } else {
                                Dim::Sym(String::new())
                            }
                        })
                        .collect(),
                );
            }
        }
        v.shape.clone()
    }

    /// The full shape if it is static.
    pub fn fixed_shape(&self, id: ValueId) -> Option<Vec<usize>> {
        self.static_shape(id)?.iter().map(Dim::fixed).collect()
    }

    pub fn rank(&self, id: ValueId) -> Option<usize> {
        self.static_shape(id).map(|s| s.len())
    }

    /// Concrete shapes of the graph inputs under both bindings.
    fn bind_inputs(&mut self) {
        for k in 0..self.g.inputs.len() {
            let id = self.g.inputs[k];
            let v = &self.g.values[id];
            let Some(shape) = &v.shape else { continue };
            let bind = |b: usize| -> Vec<usize> {
                shape
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n,
                        Dim::Sym(_) => b,
                    })
                    .collect()
            };
            let dtype = v.dtype;
            let (a, b) = (bind(BIND_A), bind(BIND_B));
            self.facts_a[id] = Some(OutputFact {
                dtype,
                shape: a,
                value: None,
            });
            self.facts_b[id] = Some(OutputFact {
                dtype,
                shape: b,
                value: None,
            });
        }
    }

    /// Charges `t` against the folding budget.
    pub fn charge(&mut self, v: &NodeView, t: &Tensor) -> Result<()> {
        let bytes = t.len().saturating_mul(8);
        if bytes > self.fold_budget {
            return Err(v.err(format!(
                "folding this node would create a constant of shape {:?}, larger than the file allows",
                t.shape
            )));
        }
        self.fold_budget -= bytes;
        Ok(())
    }

    /// Resolves the node's inputs to value ids (`None` for absent optional inputs).
    fn inputs(&self, v: &NodeView) -> Result<Vec<Option<ValueId>>> {
        v.node
            .input
            .iter()
            .map(|n| {
                if n.is_empty() {
                    Ok(None)
                } else {
                    self.names
                        .get(n.as_str())
                        .copied()
                        .map(Some)
                        .ok_or_else(|| {
                            v.err(format!(
                            "input '{n}' is not produced by any node, initializer or graph input"
                        ))
                        })
                }
            })
            .collect()
    }

    /// Imports one node: folds it or converts it.
    fn node(&mut self, v: &NodeView) -> Result<()> {
        let ins = self.inputs(v)?;
        if v.present_outputs() == 0 {
            return Ok(()); // nothing reads it
        }
        // A Constant whose tensor lives in an external file, like an initializer.
        if v.op_type == "Constant" {
            if let Some(t) = v.t("value")?.filter(|t| t.data_location == Some(1)) {
                let t = tensor_from_proto_in(t, self.model_dir.as_deref())?;
                self.fold_budget = self.fold_budget.saturating_add(t.len().saturating_mul(16));
                return self.bind_folded(v, vec![t]);
            }
        }
        // Fold when every input is constant (or for Shape, when the shape is static).
        // CastLike only needs the dtype of its second input.
        let like = match (v.op_type, ins.get(1)) {
            ("CastLike", Some(Some(id))) => Some(Tensor::zeros(self.dtype(*id), vec![0])?),
            _ => None,
        };
        let consts: Vec<Option<&Tensor>> = ins
            .iter()
            .enumerate()
            .map(|(k, x)| match (&like, k) {
                (Some(t), 1) => Some(t),
                _ => x.and_then(|id| self.const_of(id)),
            })
            .collect();
        let all_const = ins
            .iter()
            .zip(&consts)
            .all(|(i, c)| i.is_none() || c.is_some());
        let static_in = match (v.op_type, ins.first()) {
            ("Shape" | "Size", Some(Some(id))) => self.fixed_shape(*id),
            _ => None,
        };
        if all_const || static_in.is_some() {
            if let Some(r) = fold::eval(v, &consts, static_in.as_deref(), self.opset) {
                let outs = r?;
                return self.bind_folded(v, outs);
            }
        }
        // Shape arithmetic on values known under both bindings (e.g. Gather of the
        // Shape of an input with a dynamic batch): equal results do not depend on the
        // dynamic dimensions and are folded; different ones stay nodes, but their
        // per-binding values feed the analysis of the nodes that read them.
        let per_binding = [
            self.eval_bound(v, &ins, true),
            self.eval_bound(v, &ins, false),
        ];
        if let [Some(a), Some(b)] = &per_binding {
            if a == b {
                return self.bind_folded(v, a.clone());
            }
        }
        let first_new = self.g.nodes.len();
        ops::convert(self, v, &ins)?;
        self.analyse(first_new);
        if let [Some(a), Some(b)] = per_binding {
            // Only when the node became exactly one IR node with the same outputs.
            if self.g.nodes.len() == first_new + 1 {
                let outs = self.g.nodes[first_new].outputs.clone();
                for ((&o, ta), tb) in outs.iter().zip(a).zip(b) {
                    for (facts, t) in [(&mut self.facts_a, ta), (&mut self.facts_b, tb)] {
                        if let Some(Some(f)) = facts.get_mut(o) {
                            if f.value.is_none() && f.shape == t.shape && f.dtype == t.dtype() {
                                f.value = Some(t);
                            }
                        } else if let Some(slot) = facts.get_mut(o) {
                            *slot = Some(OutputFact {
                                dtype: t.dtype(),
                                shape: t.shape.clone(),
                                value: Some(t),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Evaluates `v` with the values its inputs take under binding A (`a`) or B, when
    /// they are all known and small (shape arithmetic).
    fn eval_bound(&self, v: &NodeView, ins: &[Option<ValueId>], a: bool) -> Option<Vec<Tensor>> {
        const SMALL: usize = 1024;
        let facts = if a { &self.facts_a } else { &self.facts_b };
        let shape_op = matches!(v.op_type, "Shape" | "Size");
        let mut vals = Vec::with_capacity(ins.len());
        let mut static_shape = None;
        for (k, x) in ins.iter().enumerate() {
            let Some(id) = x else {
                vals.push(None);
                continue;
            };
            if let Some(t) = self.const_of(*id) {
                vals.push(Some(t));
                continue;
            }
            let f = facts.get(*id)?.as_ref()?;
            if shape_op && k == 0 {
                static_shape = Some(f.shape.as_slice());
                vals.push(None);
                continue;
            }
            let t = f.value.as_ref().filter(|t| t.len() <= SMALL)?;
            vals.push(Some(t));
        }
        if shape_op && static_shape.is_none() {
            return None;
        }
        let outs = fold::eval(v, &vals, static_shape, self.opset)?.ok()?;
        outs.iter().all(|t| t.len() <= SMALL).then_some(outs)
    }

    /// Binds the node's outputs to folded constants.
    fn bind_folded(&mut self, v: &NodeView, outs: Vec<Tensor>) -> Result<()> {
        let mut outs = outs.into_iter();
        for name in &v.node.output {
            let t = outs
                .next()
                .ok_or_else(|| v.err("internal: folding produced too few outputs"))?;
            if name.is_empty() {
                continue;
            }
            self.charge(v, &t)?;
            self.add_const(name, t)?;
        }
        Ok(())
    }

    /// Runs the shape rules on the IR nodes added since `first`, under both bindings,
    /// and folds integer outputs whose values the rules know and agree on (shape
    /// arithmetic that does not depend on the dynamic dimensions).
    fn analyse(&mut self, first: usize) {
        self.push_facts();
        let mut k = first;
        while k < self.g.nodes.len() {
            let node = &self.g.nodes[k];
            let run = |facts: &Vec<Option<OutputFact>>| -> Option<Vec<OutputFact>> {
                let mut ins = Vec::with_capacity(node.inputs.len());
                for x in &node.inputs {
                    ins.push(match x {
                        None => None,
                        Some(id) => {
                            let value = self.g.values.get(*id)?;
                            if let Some(t) = &value.data {
                                Some(InputFact {
                                    dtype: t.dtype(),
                                    shape: &t.shape,
                                    value: Some(t),
                                })
                            } else {
                                let f = facts.get(*id)?.as_ref()?;
                                Some(InputFact {
                                    dtype: f.dtype,
                                    shape: &f.shape,
                                    value: f.value.as_ref(),
                                })
                            }
                        }
                    });
                }
                // A rule that panics must not take the import down with it.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| infer_node(node, &ins)))
                    .ok()?
                    .ok()
            };
            let (a, b) = (run(&self.facts_a), run(&self.facts_b));
            let foldable = matches!(
                node.op,
                Op::Shape
                    | Op::Gather { .. }
                    | Op::Concat { .. }
                    | Op::Unsqueeze { .. }
                    | Op::Squeeze { .. }
                    | Op::Cast { .. }
                    | Op::Binary { .. }
                    | Op::Reshape { .. }
                    | Op::Identity
                    | Op::Flatten { .. }
                    | Op::Slice { .. }
            );
            let mut folded = false;
            if let (Some(a), Some(b)) = (&a, &b) {
                let same: Option<Vec<Tensor>> = node
                    .outputs
                    .iter()
                    .enumerate()
                    .map(|(i, _)| {
                        match (
                            a.get(i).and_then(|f| f.value.as_ref()),
                            b.get(i).and_then(|f| f.value.as_ref()),
                        ) {
                            (Some(x), Some(y))
                                if x == y
                                    && matches!(x.dtype(), DType::I64 | DType::I32)
                                    && x.len() <= 64 =>
                            {
                                Some(x.clone())
                            }
                            _ => None,
                        }
                    })
                    .collect();
                if let (true, Some(vals)) = (foldable, same) {
                    // Turn the outputs into constants and drop the node.
                    let node = self.g.nodes.remove(k);
                    for (&o, t) in node.outputs.iter().zip(vals) {
                        let v = &mut self.g.values[o];
                        v.dtype = t.dtype();
                        v.shape = Some(t.shape.iter().map(|&d| Dim::Fixed(d)).collect());
                        v.data = Some(t);
                    }
                    folded = true;
                }
            }
            if !folded {
                let outs = self.g.nodes[k].outputs.clone();
                for (i, &o) in outs.iter().enumerate() {
                    self.facts_a[o] = a.as_ref().and_then(|f| f.get(i).cloned());
                    self.facts_b[o] = b.as_ref().and_then(|f| f.get(i).cloned());
                }
                k += 1;
            }
        }
    }
}
