//! Helpers shared by the quantization passes: the graph edits (dead-code elimination
//! with id compaction, fresh value names, shape re-annotation) are ir's, named here
//! for the passes that call them; and a float executor that keeps every intermediate
//! value (for calibration and per-layer reports).

use crate::{CompressError, Result};
use edgeopt_ir::{Graph, Tensor};
use edgeopt_runtime::kernels::{eval_node, NodeCtx};
use edgeopt_runtime::ExecOptions;

/// A value name not used in `graph`, derived from `base` ([`Graph::fresh_name`]).
pub fn fresh_name(graph: &Graph, base: &str) -> String {
    graph.fresh_name(base)
}

/// Removes nodes none of whose outputs are (transitively) needed for the graph
/// outputs, and values no remaining node or graph input/output refers to; value ids
/// are renumbered (order kept). This is ir's one dead-code elimination
/// ([`Graph::remove_dead_nodes`], which [`edgeopt_ir::Patch::apply`] also runs).
pub fn compact(graph: &mut Graph) {
    graph.remove_dead_nodes();
}

/// Re-derives the shapes of every computed value (after a rewrite changed layouts or
/// ops). Leading dimensions stay symbolic where the graph input's batch is symbolic
/// and the value's leading dimension carries that batch (inferred at batch 1 and 2):
/// [`edgeopt_ir::shape::reannotate`], what a [`edgeopt_ir::Patch`] with
/// [`edgeopt_ir::Shapes::Reinfer`] does.
pub fn reannotate(graph: &mut Graph) -> Result<()> {
    Ok(edgeopt_ir::shape::reannotate(graph)?)
}

/// Runs `graph` on one set of inputs and returns every value (inputs, constants are
/// `None`, computed values `Some`), indexed by value id.
pub fn run_all(graph: &Graph, inputs: &[Tensor], opts: ExecOptions) -> Result<Vec<Option<Tensor>>> {
    edgeopt_runtime::executor::check_inputs(graph, inputs)?;
    let mut slots: Vec<Option<Tensor>> = vec![None; graph.values.len()];
    for (&id, t) in graph.inputs.iter().zip(inputs) {
        slots[id] = Some(t.clone());
    }
    for node in &graph.nodes {
        let outs = {
            let ins: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|x| x.and_then(|id| slots[id].as_ref().or(graph.values[id].data.as_ref())))
                .collect();
            for (k, x) in node.inputs.iter().enumerate() {
                if let (Some(id), None) = (x, ins[k]) {
                    return Err(CompressError::Invalid(format!(
                        "node '{}': input '{}' has no value",
                        node.name, graph.values[*id].name
                    )));
                }
            }
            eval_node(&NodeCtx::new(graph, node, opts), &ins)?
        };
        for (&o, t) in node.outputs.iter().zip(outs) {
            slots[o] = Some(t);
        }
    }
    Ok(slots)
}

/// Signal-to-quantization-noise ratio in dB of `approx` against `reference`
/// (infinite when equal; `-inf`-safe for a zero reference).
pub fn sqnr_db(reference: &[f32], approx: &[f32]) -> f64 {
    let (mut s, mut e) = (0f64, 0f64);
    for (&r, &a) in reference.iter().zip(approx) {
        s += (r as f64) * (r as f64);
        e += ((r - a) as f64) * ((r - a) as f64);
    }
    if e == 0.0 {
        return f64::INFINITY;
    }
    if s == 0.0 {
        return f64::NEG_INFINITY;
    }
    10.0 * (s / e).log10()
}

/// Real values of a tensor: dequantized with `quant` when it is an integer tensor.
pub fn dequantized(t: &Tensor, quant: Option<&edgeopt_ir::QuantParams>) -> Vec<f32> {
    match quant {
        Some(q) if t.dtype().is_integer() && q.is_per_tensor() => {
            let (s, z) = q.channel(0);
            (0..t.len())
                .map(|i| (t.data.get_f64(i) - z as f64) as f32 * s)
                .collect()
        }
        _ => t.to_f32_vec(),
    }
}
