//! `edgeopt run`: a model on .npy inputs, outputs to .npy, any batch, in the model's
//! own dtypes.

use anyhow::{bail, Context, Result};
use edgeopt_ir::{Graph, Tensor};
use std::path::PathBuf;

/// Runs `graph` on the arrays in `inputs` (one file per graph input, in order) and
/// writes its outputs to `outputs` (one file per graph output). Nothing is written
/// unless the whole run succeeds, and each file is written atomically. With `arena`,
/// every activation lives in one buffer laid out by the static memory planner.
pub fn run_files(
    graph: &Graph,
    inputs: &[PathBuf],
    outputs: &[PathBuf],
    arena: bool,
) -> Result<Vec<Tensor>> {
    if inputs.len() != graph.inputs.len() {
        bail!(
            "the model has {} input(s) ({}), {} --input given",
            graph.inputs.len(),
            names(graph, &graph.inputs),
            inputs.len()
        );
    }
    if outputs.len() != graph.outputs.len() {
        bail!(
            "the model has {} output(s) ({}), {} -o given",
            graph.outputs.len(),
            names(graph, &graph.outputs),
            outputs.len()
        );
    }
    let tensors = inputs
        .iter()
        .map(|p| edgeopt_npy::read(p).with_context(|| format!("cannot read input {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let results = if arena {
        edgeopt_runtime::arena::run_in_arena(graph, &tensors)
    } else {
        edgeopt_runtime::run(graph, &tensors)
    }
    .context("inference failed")?;
    for (t, p) in results.iter().zip(outputs) {
        edgeopt_npy::write(p, t).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(results)
}

fn names(graph: &Graph, ids: &[usize]) -> String {
    ids.iter()
        .map(|&i| {
            let v = &graph.values[i];
            let shape = v
                .shape
                .as_ref()
                .map(|s| {
                    let d: Vec<String> = s.iter().map(|d| d.to_string()).collect();
                    format!("[{}]", d.join(","))
                })
                .unwrap_or_else(|| "[?]".into());
            format!("'{}' {} {shape}", v.name, v.dtype)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
