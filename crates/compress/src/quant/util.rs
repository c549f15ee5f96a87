//! Graph-editing helpers shared by the quantization passes: dead-code elimination
//! with id compaction, fresh value names, shape re-annotation, and a float executor
//! that keeps every intermediate value (for calibration and per-layer reports).

use crate::{CompressError, Result};
use edgeopt_ir::{Dim, Graph, Tensor, ValueId};
use edgeopt_runtime::kernels::{eval_node, NodeCtx};
use edgeopt_runtime::ExecOptions;
use std::collections::HashSet;

/// A value name not used in `graph`, derived from `base`.
pub fn fresh_name(graph: &Graph, base: &str) -> String {
    let names: HashSet<&str> = graph.values.iter().map(|v| v.name.as_str()).collect();
    if !names.contains(base) {
        return base.to_string();
    }
    (1..)
        .map(|k| format!("{base}_{k}"))
        .find(|n| !names.contains(n.as_str()))
        .expect("some suffix is free")
}

/// Removes nodes none of whose outputs are (transitively) needed for the graph
/// outputs, and values no remaining node or graph input/output refers to; value ids
/// are renumbered (order kept).
pub fn compact(graph: &mut Graph) {
    let nv = graph.values.len();
    let mut needed = vec![false; nv];
    for &o in &graph.outputs {
        needed[o] = true;
    }
    let mut keep_node = vec![false; graph.nodes.len()];
    for (ni, n) in graph.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|&o| needed[o]) {
            keep_node[ni] = true;
            for i in n.present_inputs() {
                needed[i] = true;
            }
        }
    }
    let mut k = 0;
    graph.nodes.retain(|_| {
        k += 1;
        keep_node[k - 1]
    });
    let mut used = vec![false; nv];
    for &i in graph.inputs.iter().chain(&graph.outputs) {
        used[i] = true;
    }
    for n in &graph.nodes {
        for i in n.present_inputs().chain(n.outputs.iter().copied()) {
            used[i] = true;
        }
    }
    let mut remap = vec![usize::MAX; nv];
    let mut values = Vec::with_capacity(nv);
    for (i, v) in std::mem::take(&mut graph.values).into_iter().enumerate() {
        if used[i] {
            remap[i] = values.len();
            values.push(v);
        }
    }
    graph.values = values;
    for id in graph.inputs.iter_mut().chain(graph.outputs.iter_mut()) {
        *id = remap[*id];
    }
    for n in &mut graph.nodes {
        for x in n.inputs.iter_mut().flatten() {
            *x = remap[*x];
        }
        for o in &mut n.outputs {
            *o = remap[*o];
        }
    }
}

/// Re-derives the shapes of every computed value (after a rewrite changed layouts or
/// ops). Leading dimensions stay symbolic where the graph input's batch is symbolic
/// and the value's leading dimension carries that batch (inferred at batch 1 and 2).
pub fn reannotate(graph: &mut Graph) -> Result<()> {
    let s1 = edgeopt_ir::shape::bind_input_shapes(graph, 1)?;
    let f1 = edgeopt_ir::shape::infer_graph(graph, &s1)?;
    let s2 = edgeopt_ir::shape::bind_input_shapes(graph, 2)?;
    // Batch 2 may be impossible (a Reshape to a fixed size): then shapes stay fixed.
    let f2 = edgeopt_ir::shape::infer_graph(graph, &s2).ok();
    let sym = graph.inputs.first().and_then(|&i| {
        graph.values[i]
            .shape
            .as_ref()
            .and_then(|s| s.first().cloned())
            .filter(|d| d.fixed().is_none())
    });
    let inputs: HashSet<ValueId> = graph.inputs.iter().copied().collect();
    for (i, v) in graph.values.iter_mut().enumerate() {
        if v.data.is_some() || inputs.contains(&i) {
            continue;
        }
        let Some(f) = &f1[i] else { continue };
        v.dtype = f.dtype;
        let mut shape: Vec<Dim> = f.shape.iter().map(|&d| Dim::Fixed(d)).collect();
        if let (Some(sym), Some(Some(g2))) = (&sym, f2.as_ref().map(|f| &f[i])) {
            if !shape.is_empty() && g2.shape.len() == f.shape.len() && g2.shape[0] == 2 * f.shape[0]
            {
                shape[0] = sym.clone();
            }
        }
        v.shape = Some(shape);
    }
    Ok(())
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
