//! `--report`: per-layer quantization error so that an accuracy drop can be traced
//! to its layer. For every quantized activation: its calibrated range, scale and
//! zero point, and the SQNR (dB) of the integer model's value (dequantized) against
//! the float model's on calibration samples (errors accumulate along the graph, so a
//! sudden drop marks the culprit); for every weighted layer: weight format and the
//! SQNR of its quantized weights alone.

use super::apply::DEFAULT_WEIGHT;
use super::mixed::MixedResult;
use super::prepare::weighted_nodes;
use super::util::{dequantized, run_all, sqnr_db};
use super::{QuantPlan, WeightFormat};
use crate::Result;
use edgeopt_ir::{Graph, Tensor};
use edgeopt_runtime::ExecOptions;
use rayon::prelude::*;
use serde::Serialize;

/// Samples used for the activation SQNRs (the first N calibration samples).
pub const REPORT_SAMPLES: usize = 32;

#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    pub node: String,
    pub op: String,
    pub output: String,
    pub range: Option<(f32, f32)>,
    pub scale: Option<f32>,
    pub zero_point: Option<i64>,
    /// SQNR (dB) of the output activation, integer model vs float model.
    pub activation_sqnr_db: Option<f64>,
    pub weight_format: Option<WeightFormat>,
    /// SQNR (dB) of the quantized weights vs the float weights.
    pub weight_sqnr_db: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub samples: usize,
    pub layers: Vec<LayerRow>,
    pub mixed: Option<MixedResult>,
}

pub fn build(
    prepared: &Graph,
    quantized: &Graph,
    plan: &QuantPlan,
    samples: &[Vec<Tensor>],
    mixed: Option<&MixedResult>,
    exec: ExecOptions,
) -> Result<Report> {
    let samples = &samples[..samples.len().min(REPORT_SAMPLES)];
    // (float values, integer values) per sample, indexed by value id.
    type Run = (Vec<Option<Tensor>>, Vec<Option<Tensor>>);
    let runs: Vec<Run> = samples
        .par_iter()
        .map(|s| Ok((run_all(prepared, s, exec)?, run_all(quantized, s, exec)?)))
        .collect::<Result<_>>()?;
    let weighted: std::collections::HashMap<usize, usize> =
        weighted_nodes(prepared).into_iter().collect();
    let mut layers = Vec::new();
    for (ni, n) in prepared.nodes.iter().enumerate() {
        let Some(&o) = n.outputs.first() else {
            continue;
        };
        let oname = &prepared.values[o].name;
        let qid = quantized.find_value(oname);
        let quant = qid.and_then(|q| quantized.values[q].quant.clone());
        let act_sqnr = qid.map(|q| {
            let mut r = Vec::new();
            let mut a = Vec::new();
            for (fv, qv) in &runs {
                if let (Some(f), Some(t)) = (&fv[o], &qv[q]) {
                    r.extend(f.to_f32_vec());
                    a.extend(dequantized(t, quantized.values[q].quant.as_ref()));
                }
            }
            sqnr_db(&r, &a)
        });
        let (wf, wsq) = match weighted.get(&ni) {
            Some(&w) => {
                let spec = plan
                    .weights
                    .get(&prepared.values[w].name)
                    .copied()
                    .unwrap_or(DEFAULT_WEIGHT);
                let t = prepared.values[w].data.as_ref().expect("const");
                let v = t.as_f32()?;
                let sq = match spec.format {
                    WeightFormat::Float => f64::INFINITY,
                    WeightFormat::Fp16 => {
                        let h: Vec<f32> =
                            v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
                        sqnr_db(v, &h)
                    }
                    _ => {
                        let m = t.shape[0];
                        let scales = plan.weight_scales.get(&prepared.values[w].name);
                        let q = super::weights::quantize_planned(
                            v,
                            m,
                            spec,
                            scales.map(Vec::as_slice),
                        )?;
                        sqnr_db(v, &q.dequantize(if q.scales.len() == 1 { 1 } else { m }))
                    }
                };
                (Some(spec.format), Some(sq))
            }
            None => (None, None),
        };
        layers.push(LayerRow {
            node: n.name.clone(),
            op: n.op.name().to_string(),
            output: oname.clone(),
            range: plan.ranges.get(oname).copied(),
            scale: quant.as_ref().map(|q| q.scale[0]),
            zero_point: quant.as_ref().map(|q| q.zero_point[0]),
            activation_sqnr_db: act_sqnr,
            weight_format: wf,
            weight_sqnr_db: wsq,
        });
    }
    Ok(Report {
        samples: samples.len(),
        layers,
        mixed: mixed.cloned(),
    })
}

fn db(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_infinite() && x > 0.0 => "exact".into(),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

/// The report as a text table.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "per-layer quantization error ({} calibration samples; SQNR in dB, higher is better)\n",
        r.samples
    );
    s.push_str(&format!(
        "{:>3}  {:<34} {:<15} {:>21} {:>11} {:>5} {:>9} {:>8} {:>9}\n",
        "#", "node", "op", "range", "scale", "zp", "act SQNR", "weights", "w SQNR"
    ));
    for (i, l) in r.layers.iter().enumerate() {
        let name: String = if l.node.chars().count() > 34 {
            format!("{}…", l.node.chars().take(33).collect::<String>())
        } else {
            l.node.clone()
        };
        s.push_str(&format!(
            "{:>3}  {:<34} {:<15} {:>21} {:>11} {:>5} {:>9} {:>8} {:>9}\n",
            i,
            name,
            l.op,
            l.range
                .map_or("-".into(), |(a, b)| format!("[{a:.3}, {b:.3}]")),
            l.scale.map_or("-".into(), |v| format!("{v:.3e}")),
            l.zero_point.map_or("-".into(), |v| v.to_string()),
            db(l.activation_sqnr_db),
            l.weight_format
                .map_or("-".into(), |f| format!("{f:?}").to_lowercase()),
            db(l.weight_sqnr_db),
        ));
    }
    if let Some(m) = &r.mixed {
        s.push_str(&format!(
            "\nmixed precision: {} B of weights (budget {} B, int8 {} B); output SQNR {:.1} dB (all int8: {:.1} dB)\n",
            m.total_bytes, m.budget, m.int8_bytes, m.sqnr_db, m.int8_sqnr_db
        ));
        let fmts: Vec<String> = m
            .layers
            .first()
            .map(|l| l.sensitivity_db.keys().cloned().collect())
            .unwrap_or_default();
        s.push_str(&format!("{:<34} {:>7} {:>8}", "layer", "params", "chosen"));
        for f in &fmts {
            s.push_str(&format!(" {:>10}", format!("{f} dB")));
        }
        s.push('\n');
        for l in &m.layers {
            let name: String = l.node.chars().take(34).collect();
            s.push_str(&format!(
                "{:<34} {:>7} {:>8}",
                name,
                l.params,
                format!("{:?}", l.chosen).to_lowercase()
            ));
            for f in &fmts {
                s.push_str(&format!(" {:>10}", db(l.sensitivity_db.get(f).copied())));
            }
            s.push('\n');
        }
    }
    s
}
