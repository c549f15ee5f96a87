//! **Mixed precision**: per-layer sensitivity, then a bit allocation under a byte
//! budget.
//!
//! Sensitivity of layer L to format f: the output SQNR (dB) of the integer model on
//! calibration samples with only L's weights in f (all others int8), against the
//! float model. The output compared is the graph's first output, or the logits when
//! that output is a Softmax (softmax saturates and hides errors). Treating the
//! quantization noise of layers as additive (the usual assumption of HAWQ-style
//! allocation), the added noise power of L in f is `P·10^(−SQNR/10) − noise(all int8)`
//! and the allocation minimizes the summed added noise subject to the weight bytes
//! ≤ budget: a multiple-choice knapsack, solved exactly by dynamic programming over
//! bytes.

use super::apply::apply;
use super::prepare::weighted_nodes;
use super::util::{dequantized, run_all, sqnr_db};
use super::weights::weight_bytes;
use super::{QuantPlan, WeightFormat, WeightSpec};
use crate::{CompressError, Result};
use edgeopt_ir::{Graph, Op, Tensor, ValueId};
use edgeopt_runtime::ExecOptions;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct MixedOptions {
    /// Formats a layer may get (int8 is always allowed).
    pub candidates: Vec<WeightFormat>,
    /// Calibration samples used to measure sensitivity (the first N).
    pub samples: usize,
}

impl Default for MixedOptions {
    fn default() -> Self {
        MixedOptions {
            candidates: vec![
                WeightFormat::Int8,
                WeightFormat::Int4,
                WeightFormat::Ternary,
            ],
            samples: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerChoice {
    pub node: String,
    pub weight: String,
    pub params: usize,
    /// Format name → output SQNR (dB) with only this layer in that format.
    pub sensitivity_db: BTreeMap<String, f64>,
    pub chosen: WeightFormat,
    pub bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixedResult {
    pub budget: usize,
    pub int8_bytes: usize,
    pub total_bytes: usize,
    /// Output SQNR (dB) with every layer int8.
    pub int8_sqnr_db: f64,
    /// Output SQNR (dB) of the chosen allocation (measured, not predicted).
    pub sqnr_db: f64,
    pub layers: Vec<LayerChoice>,
    #[serde(skip)]
    pub plan: QuantPlan,
}

/// The value whose SQNR measures output quality (see the module doc).
pub fn target_value(g: &Graph) -> Option<ValueId> {
    let out = *g.outputs.first()?;
    for n in &g.nodes {
        if n.outputs.contains(&out) {
            if let Op::Softmax { .. } = n.op {
                return n.input(0);
            }
        }
    }
    Some(out)
}

/// Float reference values of the target on each sample.
pub(crate) fn float_targets(prepared: &Graph, samples: &[Vec<Tensor>]) -> Result<Vec<Vec<f32>>> {
    let t = target_value(prepared)
        .ok_or_else(|| CompressError::Invalid("graph has no output".into()))?;
    samples
        .par_iter()
        .map(|s| {
            // The float graph: the options (numerics) do not change its values.
            let v = run_all(prepared, s, ExecOptions::default())?;
            Ok(v[t].as_ref().map(|t| t.to_f32_vec()).unwrap_or_default())
        })
        .collect()
}

/// Output SQNR of `plan` on `samples` against the float `reference`.
pub(crate) fn plan_sqnr(
    prepared: &Graph,
    plan: &QuantPlan,
    samples: &[Vec<Tensor>],
    reference: &[Vec<f32>],
    exec: ExecOptions,
) -> Result<f64> {
    let q = apply(prepared, plan)?;
    let name = &prepared.values[target_value(prepared).expect("checked by float_targets")].name;
    let tid = q.find_value(name).ok_or_else(|| {
        CompressError::Invalid(format!("'{name}' is missing in the quantized graph"))
    })?;
    let outs: Vec<Vec<f32>> = samples
        .par_iter()
        .map(|s| -> Result<Vec<f32>> {
            let v = run_all(&q, s, exec)?;
            let t = v[tid]
                .as_ref()
                .ok_or_else(|| CompressError::Invalid(format!("'{name}' was not computed")))?;
            Ok(dequantized(t, q.values[tid].quant.as_ref()))
        })
        .collect::<Result<_>>()?;
    let r: Vec<f32> = reference.iter().flatten().copied().collect();
    let a: Vec<f32> = outs.into_iter().flatten().collect();
    Ok(sqnr_db(&r, &a))
}

fn fmt_name(f: WeightFormat) -> String {
    format!("{f:?}").to_lowercase()
}

/// Measures sensitivities and allocates formats under `budget` bytes of weights.
pub fn allocate(
    prepared: &Graph,
    base: &QuantPlan,
    samples: &[Vec<Tensor>],
    budget: usize,
    opts: &MixedOptions,
    exec: ExecOptions,
) -> Result<MixedResult> {
    let samples = &samples[..opts
        .samples
        .clamp(1, samples.len().max(1))
        .min(samples.len())];
    if samples.is_empty() {
        return Err(CompressError::Invalid(
            "mixed precision needs calibration samples".into(),
        ));
    }
    let reference = float_targets(prepared, samples)?;
    let power: f64 = {
        let all: Vec<f64> = reference
            .iter()
            .flatten()
            .map(|&v| (v as f64) * (v as f64))
            .collect();
        all.iter().sum::<f64>() / all.len().max(1) as f64
    };
    let noise = |db: f64| power * 10f64.powf(-db / 10.0);
    let spec = |f: WeightFormat| WeightSpec {
        format: f,
        granularity: super::Granularity::Channel,
    };
    let mut plan0 = base.clone();
    for s in plan0.weights.values_mut() {
        *s = spec(WeightFormat::Int8);
    }
    let base_db = plan_sqnr(prepared, &plan0, samples, &reference, exec)?;
    let base_noise = noise(base_db);
    let mut cands: Vec<WeightFormat> = opts.candidates.clone();
    if !cands.contains(&WeightFormat::Int8) {
        cands.insert(0, WeightFormat::Int8);
    }
    let layers: Vec<(usize, ValueId)> = weighted_nodes(prepared);
    // Per layer: (format, bytes, added noise).
    let mut options: Vec<Vec<(WeightFormat, usize, f64)>> = Vec::new();
    let mut choices = Vec::new();
    for &(ni, w) in &layers {
        let wname = prepared.values[w].name.clone();
        let n = prepared.values[w].data.as_ref().map_or(0, |t| t.len());
        let mut sens = BTreeMap::new();
        let mut opt = Vec::new();
        for &f in &cands {
            let db = if f == WeightFormat::Int8 {
                base_db
            } else {
                let mut p = plan0.clone();
                p.weights.insert(wname.clone(), spec(f));
                plan_sqnr(prepared, &p, samples, &reference, exec)?
            };
            sens.insert(fmt_name(f), db);
            opt.push((f, weight_bytes(n, f), (noise(db) - base_noise).max(0.0)));
        }
        options.push(opt);
        choices.push(LayerChoice {
            node: prepared.nodes[ni].name.clone(),
            weight: wname,
            params: n,
            sensitivity_db: sens,
            chosen: WeightFormat::Int8,
            bytes: weight_bytes(n, WeightFormat::Int8),
        });
    }
    let int8_bytes: usize = choices.iter().map(|c| c.bytes).sum();
    let min_bytes: usize = options
        .iter()
        .map(|o| o.iter().map(|x| x.1).min().unwrap_or(0))
        .sum();
    if budget < min_bytes {
        return Err(CompressError::Invalid(format!(
            "budget {budget} B is below the smallest allocation ({min_bytes} B with the candidates {:?})",
            cands
        )));
    }
    let pick = knapsack(&options, budget);
    let mut plan = plan0.clone();
    let mut total = 0;
    for (k, &j) in pick.iter().enumerate() {
        let (f, b, _) = options[k][j];
        choices[k].chosen = f;
        choices[k].bytes = b;
        total += b;
        plan.weights.insert(choices[k].weight.clone(), spec(f));
    }
    let sqnr = plan_sqnr(prepared, &plan, samples, &reference, exec)?;
    Ok(MixedResult {
        budget,
        int8_bytes,
        total_bytes: total,
        int8_sqnr_db: base_db,
        sqnr_db: sqnr,
        layers: choices,
        plan,
    })
}

/// Multiple-choice knapsack: one option per layer, Σ bytes ≤ budget, minimal Σ cost.
/// Bytes are counted in units so the table stays small (≤ ~20k columns).
fn knapsack(options: &[Vec<(WeightFormat, usize, f64)>], budget: usize) -> Vec<usize> {
    let max_total: usize = options
        .iter()
        .map(|o| o.iter().map(|x| x.1).max().unwrap_or(0))
        .sum();
    let cap = budget.min(max_total);
    let unit = (cap / 20_000).max(1);
    // Round sizes up so the allocation never exceeds the budget.
    let cols = cap / unit;
    let inf = f64::INFINITY;
    let mut best = vec![inf; cols + 1];
    best[0] = 0.0;
    let mut from: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut cur = best.clone();
    let mut first = true;
    for opts in options {
        let mut next = vec![inf; cols + 1];
        let mut back = vec![(usize::MAX, 0usize); cols + 1];
        for (b, &c) in cur.iter().enumerate() {
            if c == inf {
                continue;
            }
            for (j, &(_, bytes, cost)) in opts.iter().enumerate() {
                let nb = b + bytes.div_ceil(unit);
                if nb <= cols && c + cost < next[nb] {
                    next[nb] = c + cost;
                    back[nb] = (j, b);
                }
            }
        }
        from.push(back);
        cur = next;
        first = false;
    }
    let _ = first;
    let best = cur
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_finite())
        .min_by(|x, y| x.1.total_cmp(y.1).then(x.0.cmp(&y.0)));
    let Some((mut b, _)) = best else {
        // Sizes are rounded up to whole units, so a budget within a few units of the
        // smallest allocation can leave the table empty although that allocation
        // fits (the caller checked it in bytes): take it, the smallest option of each
        // layer (the cheapest in noise among equally small ones).
        return options
            .iter()
            .map(|o| {
                (0..o.len())
                    .min_by(|&i, &j| o[i].1.cmp(&o[j].1).then(o[i].2.total_cmp(&o[j].2)))
                    .unwrap_or(0)
            })
            .collect();
    };
    let mut pick = vec![0; options.len()];
    for k in (0..options.len()).rev() {
        let (j, prev) = from[k][b];
        pick[k] = j;
        b = prev;
    }
    pick
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knapsack_picks_cheapest_noise_within_budget() {
        use WeightFormat::*;
        // Layer 0 is sensitive, layer 1 is not: under a budget that allows lowering
        // only one, lower layer 1.
        let opts = vec![
            vec![(Int8, 100, 0.0), (Int4, 50, 10.0)],
            vec![(Int8, 100, 0.0), (Int4, 50, 0.1)],
        ];
        assert_eq!(knapsack(&opts, 150), vec![0, 1]);
        assert_eq!(knapsack(&opts, 200), vec![0, 0]);
        assert_eq!(knapsack(&opts, 100), vec![1, 1]);
    }

    #[test]
    fn knapsack_at_exactly_the_smallest_allocation() {
        use WeightFormat::*;
        // Large layers make the byte unit > 1, and rounding every size up used to
        // leave no feasible column at a budget equal to the smallest allocation.
        let opts: Vec<_> = (0..7)
            .map(|k| vec![(Int8, 30_001 + k, 0.0), (Int4, 15_001 + k, 1.0)])
            .collect();
        let min: usize = opts.iter().map(|o| o[1].1).sum();
        assert_eq!(knapsack(&opts, min), vec![1; 7]);
        let pick = knapsack(&opts, min + 15_010);
        let bytes: usize = pick.iter().zip(&opts).map(|(&j, o)| o[j].1).sum();
        assert!(bytes <= min + 15_010);
    }
}
