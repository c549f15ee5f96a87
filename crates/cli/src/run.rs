//! `edgeopt run`: a model on .npy inputs, outputs to .npy, any batch, in the model's
//! own dtypes.

use anyhow::{bail, Context, Result};
use edgeopt_ir::{Graph, Tensor};
use edgeopt_runtime::ExecOptions;
use std::path::PathBuf;

/// Where each written output goes: `(graph output index, file)`.
pub type OutputPlan = Vec<(usize, PathBuf)>;

/// Resolves the `-o` arguments against the graph's outputs:
/// - one argument naming a directory (existing, or written with a trailing `/`): every
///   output, as `<dir>/<output name>.npy` (characters other than letters, digits, `-`,
///   `_` and `.` become `_`);
/// - `NAME=FILE`: the output called NAME;
/// - plain files: the graph's outputs in order, the first `k` of them for `k` files
///   (a subset is fine; more files than outputs is an error).
pub fn plan_outputs(graph: &Graph, outputs: &[PathBuf]) -> Result<OutputPlan> {
    if let [one] = outputs {
        let text = one.to_string_lossy();
        if one.is_dir() || text.ends_with('/') || text.ends_with(std::path::MAIN_SEPARATOR) {
            return Ok(graph
                .outputs
                .iter()
                .enumerate()
                .map(|(k, &id)| {
                    (
                        k,
                        one.join(format!("{}.npy", file_stem(&graph.values[id].name))),
                    )
                })
                .collect());
        }
    }
    let mut plan = Vec::with_capacity(outputs.len());
    let mut positional = 0usize;
    for p in outputs {
        let text = p.to_string_lossy();
        let named = text.split_once('=').and_then(|(name, file)| {
            let k = graph
                .outputs
                .iter()
                .position(|&id| graph.values[id].name == name)?;
            Some((k, PathBuf::from(file)))
        });
        match named {
            Some(entry) => plan.push(entry),
            None => {
                if positional >= graph.outputs.len() {
                    bail!(
                        "the model has {} output(s) ({}), {} -o given",
                        graph.outputs.len(),
                        names(graph, &graph.outputs),
                        outputs.len()
                    );
                }
                plan.push((positional, p.clone()));
                positional += 1;
            }
        }
    }
    for (i, (k, _)) in plan.iter().enumerate() {
        if plan[..i].iter().any(|(j, _)| j == k) {
            bail!(
                "output '{}' is named by more than one -o",
                graph.values[graph.outputs[*k]].name
            );
        }
    }
    Ok(plan)
}

fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "output".to_string()
    } else {
        s
    }
}

/// Runs `graph` on the arrays in `inputs` (one file per graph input, in order) and
/// writes the outputs `plan` names ([`plan_outputs`]). A batch of `N` samples given to a
/// model declared for batch 1 runs sample by sample and the outputs are stacked.
/// Nothing is written unless the whole run succeeds, and each file is written
/// atomically. With `arena`, every activation lives in one buffer laid out by the
/// static memory planner. Returns every output of the graph.
pub fn run_files(
    graph: &Graph,
    inputs: &[PathBuf],
    plan: &OutputPlan,
    arena: bool,
    opts: ExecOptions,
) -> Result<Vec<Tensor>> {
    if inputs.len() != graph.inputs.len() {
        bail!(
            "the model has {} input(s) ({}), {} --input given",
            graph.inputs.len(),
            names(graph, &graph.inputs),
            inputs.len()
        );
    }
    let tensors = inputs
        .iter()
        .map(|p| edgeopt_npy::read(p).with_context(|| format!("cannot read input {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let results = if arena {
        edgeopt_runtime::executor::per_sample_with(graph, &tensors, |x| {
            edgeopt_runtime::arena::run_in_arena(graph, x, opts)
        })
    } else {
        edgeopt_runtime::run_per_sample(graph, &tensors, opts)
    }
    .context("inference failed")?;
    for (k, p) in plan {
        edgeopt_npy::write(p, &results[*k])
            .with_context(|| format!("cannot write {}", p.display()))?;
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
