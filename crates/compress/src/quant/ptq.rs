//! The whole post-training quantization flow as one call (what `edgeopt quantize`
//! runs, as the recipe of [`PtqOptions::recipe`]): prepare → [cross-layer equalization] → calibrate → plan (uniform, or mixed
//! precision under a byte budget) → [bias correction] → apply, with the optional
//! per-layer report.

use super::mixed::{MixedOptions, MixedResult};
use super::report::Report;
use super::{ActivationFormat, CalibMethod, QuantPlan, WeightSpec};
use crate::pass::{Budget, Context, PassError, Registry};
use crate::{CompressError, Result};
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

/// Runs the flow on `graph` with calibration `samples` (each one set of graph inputs):
/// the passes of [`PtqOptions::recipe`] through [`crate::pass::run`], so `edgeopt
/// quantize` and `edgeopt apply` with the same recipe are one code path.
pub fn run(graph: &Graph, samples: &[Vec<Tensor>], opts: &PtqOptions) -> Result<PtqResult> {
    let passes = opts
        .recipe()
        .build(&Registry::builtin())
        .map_err(PassError::into_compress)?;
    let mut ctx = Context::new().with_calibration(samples);
    ctx.exec = opts.exec;
    let r = crate::pass::run(graph.clone(), &passes, &Budget::default(), &mut ctx)
        .map_err(PassError::into_compress)?;
    let q = ctx.quant;
    let missing =
        |what: &str| CompressError::Invalid(format!("internal: the PTQ recipe left no {what}"));
    Ok(PtqResult {
        prepared: q.prepared.ok_or_else(|| missing("prepared graph"))?,
        plan: q.plan.ok_or_else(|| missing("plan"))?,
        quantized: r.graph,
        mixed: q.mixed,
        report: q.report,
    })
}
