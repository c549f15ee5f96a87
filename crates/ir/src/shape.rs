//! Shape (and dtype) inference: one rule per op, used by importers (to annotate),
//! by the executor (to size outputs) and by the memory planner and profiler.
//!
//! Rules work on concrete shapes. Dynamic dimensions of graph inputs (the batch) are
//! bound first with [`bind_input_shapes`].

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::{Dim, Graph, Node};
use crate::tensor::Tensor;

pub use crate::shape_rules::{
    bcast_strides, broadcast, conv_geometry, conv_transpose_geometry, full_perm, join_layout,
    matmul_shape, norm_axis, pad_shape, pool_geometry, reduce_axes, reshape_shape, resize_geometry,
    slice_geometry, split_layout, strided_slice_plan, tile_source_index, window, ConvGeometry,
    SliceGeometry, SlicePlan, Window, MAX_TENSOR_BYTES,
};

/// What inference knows about one input of a node.
#[derive(Debug, Clone, Copy)]
pub struct InputFact<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    /// Contents, when the input is a constant (needed by e.g. Reshape's shape input).
    pub value: Option<&'a Tensor>,
}

/// Inferred type of one output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFact {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Contents when they are known without running the model: constants, and small
    /// integer shape arithmetic (Shape -> Gather -> Concat -> Reshape chains as PyTorch
    /// exports them), so that Reshape targets computed from shapes can be resolved.
    pub value: Option<Tensor>,
}

/// Concrete shapes of the graph inputs: declared shapes with every dynamic dimension
/// bound to `batch` if it is the leading dimension and to 1 otherwise.
pub fn bind_input_shapes(graph: &Graph, batch: usize) -> Result<Vec<Vec<usize>>> {
    graph
        .inputs
        .iter()
        .map(|&i| {
            let v = &graph.values[i];
            let shape = v.shape.as_ref().ok_or_else(|| {
                IrError::Tensor(v.name.clone(), "graph input has no declared shape".into())
            })?;
            Ok(shape
                .iter()
                .enumerate()
                .map(|(k, d)| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Sym(_) if k == 0 => batch,
                    Dim::Sym(_) => 1,
                })
                .collect())
        })
        .collect()
}

/// Infers the outputs of one node from its inputs. Errors name the node.
///
/// Ops whose output dtype is not a function of their inputs (TFLite QUANTIZE) need the
/// declared output dtypes: use [`infer_node_declared`] for them.
pub fn infer_node(node: &Node, inputs: &[Option<InputFact>]) -> Result<Vec<OutputFact>> {
    infer_node_declared(node, inputs, &[])
}

/// [`infer_node`] with the declared dtypes of the node's outputs (in output order),
/// which rules use only where the dtype cannot be derived from the inputs.
pub fn infer_node_declared(
    node: &Node,
    inputs: &[Option<InputFact>],
    declared: &[Option<DType>],
) -> Result<Vec<OutputFact>> {
    crate::shape_rules::infer(node, inputs, declared).map_err(|msg| node.error(msg))
}

/// Infers every value's concrete dtype and shape for the given input shapes.
/// Returns one entry per value (constants included); `None` for values no node produces.
pub fn infer_graph(graph: &Graph, input_shapes: &[Vec<usize>]) -> Result<Vec<Option<OutputFact>>> {
    if input_shapes.len() != graph.inputs.len() {
        return Err(IrError::Invalid(format!(
            "graph has {} inputs, {} shapes given",
            graph.inputs.len(),
            input_shapes.len()
        )));
    }
    let mut facts: Vec<Option<OutputFact>> = vec![None; graph.values.len()];
    for (v, f) in graph.values.iter().zip(facts.iter_mut()) {
        if let Some(t) = &v.data {
            *f = Some(OutputFact {
                dtype: t.dtype(),
                shape: t.shape.clone(),
                value: None, // read from the graph directly, see InputFact below
            });
        }
    }
    for (&i, s) in graph.inputs.iter().zip(input_shapes) {
        if i >= facts.len() {
            return Err(IrError::Invalid(format!("graph input id {i} out of range")));
        }
        facts[i] = Some(OutputFact {
            dtype: graph.values[i].dtype,
            shape: s.clone(),
            value: None,
        });
    }
    for node in &graph.nodes {
        let ins: Vec<Option<InputFact>> = node
            .inputs
            .iter()
            .map(|x| {
                x.and_then(|id| {
                    facts.get(id)?.as_ref().map(|f| InputFact {
                        dtype: f.dtype,
                        shape: &f.shape,
                        value: graph.values[id].data.as_ref().or(f.value.as_ref()),
                    })
                })
            })
            .collect();
        for (k, x) in node.inputs.iter().enumerate() {
            if let Some(id) = x {
                if ins[k].is_none() {
                    let name = graph.values.get(*id).map_or("?", |v| v.name.as_str());
                    return Err(node.error(format!("input '{name}' has no known shape")));
                }
            }
        }
        let declared: Vec<Option<DType>> = node
            .outputs
            .iter()
            .map(|&o| graph.values.get(o).map(|v| v.dtype))
            .collect();
        let outs = infer_node_declared(node, &ins, &declared)?;
        if outs.len() < node.outputs.len() {
            return Err(node.error(format!(
                "op yields {} outputs, node declares {}",
                outs.len(),
                node.outputs.len()
            )));
        }
        for (&o, f) in node.outputs.iter().zip(outs) {
            let slot = facts
                .get_mut(o)
                .ok_or_else(|| node.error(format!("output id {o} out of range")))?;
            *slot = Some(f);
        }
    }
    Ok(facts)
}

/// Runs [`infer_graph`] at batch 1 and writes the inferred dtypes into the graph and
/// shapes into values that have none declared (importers call this once).
pub fn annotate(graph: &mut Graph) -> Result<()> {
    let shapes = bind_input_shapes(graph, 1)?;
    let facts = infer_graph(graph, &shapes)?;
    for (v, f) in graph.values.iter_mut().zip(facts) {
        if let Some(f) = f {
            if v.data.is_none() {
                v.dtype = f.dtype;
                if v.shape.is_none() {
                    v.shape = Some(f.shape.into_iter().map(Dim::Fixed).collect());
                }
            }
        }
    }
    Ok(())
}

/// A value's inferred dtype and declared-form shape, where inference knows them.
pub type Declared = Option<(DType, Vec<Dim>)>;

/// What [`reannotate`] would write: for every computed value (not a constant, not a
/// graph input, produced by a node), its inferred dtype and shape, with the leading
/// dimension symbolic where the first graph input's batch is symbolic and the value's
/// leading dimension carries that batch (inferred at batch 1 and 2). `None` elsewhere.
pub fn infer_declarations(graph: &Graph) -> Result<Vec<Declared>> {
    let s1 = bind_input_shapes(graph, 1)?;
    let f1 = infer_graph(graph, &s1)?;
    let s2 = bind_input_shapes(graph, 2)?;
    // Batch 2 may be impossible (a Reshape to a fixed size): then shapes stay fixed.
    let f2 = infer_graph(graph, &s2).ok();
    let sym = graph.inputs.first().and_then(|&i| {
        graph
            .values
            .get(i)?
            .shape
            .as_ref()
            .and_then(|s| s.first().cloned())
            .filter(|d| d.fixed().is_none())
    });
    let mut out = vec![None; graph.values.len()];
    for (i, v) in graph.values.iter().enumerate() {
        if v.data.is_some() || graph.inputs.contains(&i) {
            continue;
        }
        let Some(f) = &f1[i] else { continue };
        let mut shape: Vec<Dim> = f.shape.iter().map(|&d| Dim::Fixed(d)).collect();
        if let (Some(sym), Some(Some(g2))) = (&sym, f2.as_ref().map(|f| &f[i])) {
            if !shape.is_empty() && g2.shape.len() == f.shape.len() && g2.shape[0] == 2 * f.shape[0]
            {
                shape[0] = sym.clone();
            }
        }
        out[i] = Some((f.dtype, shape));
    }
    Ok(out)
}

/// Re-derives the dtype and shape of every computed value (after a rewrite changed
/// layouts or ops), as [`infer_declarations`] says. Constants and graph inputs keep
/// theirs. On error the graph is unchanged.
pub fn reannotate(graph: &mut Graph) -> Result<()> {
    let decl = infer_declarations(graph)?;
    for (v, d) in graph.values.iter_mut().zip(decl) {
        if let Some((dtype, shape)) = d {
            v.dtype = dtype;
            v.shape = Some(shape);
        }
    }
    Ok(())
}
