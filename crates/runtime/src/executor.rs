//! The plain executor: runs a graph node by node, freeing each intermediate after its
//! last use, on any batch size.

use crate::error::{Result, RuntimeError};
use crate::kernels::{eval_node, NodeCtx};
use edgeopt_ir::{Graph, Tensor};

/// Checks that `inputs` fit the graph's declared inputs (count, dtype, fixed dims).
pub fn check_inputs(graph: &Graph, inputs: &[Tensor]) -> Result<()> {
    if inputs.len() != graph.inputs.len() {
        return Err(RuntimeError::Input(format!(
            "model has {} inputs, {} given",
            graph.inputs.len(),
            inputs.len()
        )));
    }
    for (&id, t) in graph.inputs.iter().zip(inputs) {
        let v = &graph.values[id];
        if t.dtype() != v.dtype {
            return Err(RuntimeError::Input(format!(
                "input '{}' is {}, got {}",
                v.name,
                v.dtype,
                t.dtype()
            )));
        }
        if let Some(shape) = &v.shape {
            let ok = shape.len() == t.shape.len()
                && shape
                    .iter()
                    .zip(&t.shape)
                    .all(|(d, &n)| d.fixed().is_none_or(|f| f == n));
            if !ok {
                let want: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                return Err(RuntimeError::Input(format!(
                    "input '{}' has shape [{}], got {:?}",
                    v.name,
                    want.join(", "),
                    t.shape
                )));
            }
        }
    }
    Ok(())
}

/// Runs `graph` on `inputs` (one per graph input, in order) and returns its outputs.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    check_inputs(graph, inputs)?;
    let nv = graph.values.len();
    // Remaining number of reads per value, so intermediates are dropped early.
    let mut reads = vec![0usize; nv];
    for n in &graph.nodes {
        for i in n.present_inputs() {
            reads[i] += 1;
        }
    }
    for &o in &graph.outputs {
        reads[o] += 1; // graph outputs are never freed
    }
    let mut slots: Vec<Option<Tensor>> = vec![None; nv];
    for (&id, t) in graph.inputs.iter().zip(inputs) {
        slots[id] = Some(t.clone());
    }
    for node in &graph.nodes {
        let outs = {
            let ins: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|x| x.map(|id| slots[id].as_ref().or(graph.values[id].data.as_ref())))
                .map(|x| x.flatten())
                .collect();
            for (k, x) in node.inputs.iter().enumerate() {
                if let (Some(id), None) = (x, ins[k]) {
                    return Err(NodeCtx::new(graph, node)
                        .error(format!("input '{}' has no value", graph.values[*id].name)));
                }
            }
            eval_node(&NodeCtx::new(graph, node), &ins)?
        };
        if outs.len() < node.outputs.len() {
            return Err(NodeCtx::new(graph, node).error("kernel returned too few outputs"));
        }
        for (&o, t) in node.outputs.iter().zip(outs) {
            slots[o] = Some(t);
        }
        for i in node.present_inputs() {
            reads[i] -= 1;
            if reads[i] == 0 && graph.values[i].data.is_none() {
                slots[i] = None;
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|&o| {
            slots[o]
                .take()
                .or_else(|| graph.values[o].data.clone())
                .ok_or_else(|| {
                    RuntimeError::Input(format!(
                        "output '{}' was not computed",
                        graph.values[o].name
                    ))
                })
        })
        .collect()
}
