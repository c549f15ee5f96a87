//! The whole post-training quantization flow as one call (what `edgeopt quantize`
//! runs): prepare → [cross-layer equalization] → calibrate → plan (uniform, or mixed
//! precision under a byte budget) → [bias correction] → apply, with the optional
//! per-layer report.

use super::mixed::{self, MixedOptions, MixedResult};
use super::report::{self, Report};
use super::{
    apply, calibrate, equalize, prepare, ActivationFormat, CalibMethod, QuantPlan, WeightSpec,
};
use crate::Result;
use edgeopt_ir::{Graph, Tensor};
use edgeopt_runtime::ExecOptions;

#[derive(Debug, Clone)]
pub struct PtqOptions {
    pub method: CalibMethod,
    pub weights: WeightSpec,
    pub activations: ActivationFormat,
    /// Mixed precision: the weight byte budget (None: uniform `weights`).
    pub budget: Option<usize>,
    pub mixed: MixedOptions,
    pub bias_correction: bool,
    pub equalize: bool,
    pub report: bool,
    /// How the quantized graph runs when it is measured (mixed precision's
    /// sensitivities, the report): the numerics it is quantized for.
    pub exec: ExecOptions,
}

impl Default for PtqOptions {
    fn default() -> Self {
        PtqOptions {
            method: CalibMethod::MinMax,
            weights: super::DEFAULT_WEIGHT,
            activations: ActivationFormat::Int8,
            budget: None,
            mixed: MixedOptions::default(),
            bias_correction: false,
            equalize: false,
            report: false,
            exec: ExecOptions::default(),
        }
    }
}

/// Everything the flow produced.
#[derive(Debug, Clone)]
pub struct PtqResult {
    /// The prepared float graph (after equalization and bias correction: QAT starts
    /// from it).
    pub prepared: Graph,
    pub plan: QuantPlan,
    pub quantized: Graph,
    pub mixed: Option<MixedResult>,
    pub report: Option<Report>,
}

/// Runs the flow on `graph` with calibration `samples` (each one set of graph inputs).
pub fn run(graph: &Graph, samples: &[Vec<Tensor>], opts: &PtqOptions) -> Result<PtqResult> {
    let mut prepared = prepare(graph)?;
    if opts.equalize {
        equalize::cross_layer_equalize(&mut prepared)?;
    }
    let (ranges, obs) = calibrate(&prepared, samples, opts.method, opts.activations)?;
    let integer = matches!(
        opts.activations,
        ActivationFormat::Int8 | ActivationFormat::Int16
    );
    let (plan, mixed) = match opts.budget {
        Some(budget) => {
            let base =
                QuantPlan::uniform(&prepared, super::DEFAULT_WEIGHT, opts.activations, ranges);
            let m = mixed::allocate(&prepared, &base, samples, budget, &opts.mixed, opts.exec)?;
            (m.plan.clone(), Some(m))
        }
        None => (
            QuantPlan::uniform(&prepared, opts.weights, opts.activations, ranges),
            None,
        ),
    };
    if opts.bias_correction && integer {
        equalize::correct_bias(&mut prepared, &plan, &obs)?;
    }
    let quantized = apply(&prepared, &plan)?;
    let report = if opts.report {
        Some(report::build(
            &prepared,
            &quantized,
            &plan,
            samples,
            mixed.as_ref(),
            opts.exec,
        )?)
    } else {
        None
    };
    Ok(PtqResult {
        prepared,
        plan,
        quantized,
        mixed,
        report,
    })
}
