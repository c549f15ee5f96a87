//! Passes and recipes: every compression step is a [`Pass`] (`ir → ir` plus a report),
//! passes compose into a [`Recipe`] (a TOML or JSON list of pass names with their
//! parameters), and [`run`] applies a recipe step by step, checking a [`Budget`] after
//! each step.
//!
//! Borrowed shapes: tract's optimizer is a list of named passes over one model type
//! (`TypedPass`), run in order; NNCF's algorithms declare what they need (statistics,
//! data) and a pipeline runs them in sequence over one model. Here:
//!
//! - a pass has a name, serde parameters and `apply(graph, &mut Context)`; it says
//!   what data it needs ([`Needs`]) so a recipe missing calibration data is refused
//!   before any work, and whether it keeps the model's function ([`Pass::exact`]: a
//!   layout change or a BatchNorm fold does, quantization does not), so the accuracy
//!   budget is only re-measured where the function can have changed;
//! - state that passes hand to each other (calibrated ranges, the quantization plan)
//!   lives in the [`Context`] ([`QuantState`]), like NNCF's collected statistics;
//! - the [`Registry`] maps pass names to constructors and describes each pass's
//!   parameters ([`ParamSpec`]) — the search space `optimize` will read; a new pass
//!   (pruning, factorization, clustering) adds one `register` line;
//! - errors tell "this pass does not apply here" from "the model is invalid" from an
//!   internal bug ([`PassError`]); a pass that panics or returns an invalid graph is
//!   the latter.

pub mod budget;
pub mod quant;
pub mod recipe;
pub mod registry;
mod run;

pub use budget::{Budget, Limit, Metrics, Violation};
pub use recipe::{PassSpec, Recipe};
pub use registry::{ParamKind, ParamSpec, PassInfo, Registry};
pub use run::{run, RunResult, StepReport};

use crate::quant::mixed::MixedResult;
use crate::quant::report::Report;
use crate::quant::{ActivationFormat, Observed, QuantPlan, Ranges};
use crate::CompressError;
use edgeopt_device::Device;
use edgeopt_ir::{Graph, Tensor};
use edgeopt_runtime::ExecOptions;

/// One compression step `ir → ir`.
pub trait Pass: Send + Sync {
    /// The registry name (`fold-bn`, `calibrate`, ...).
    fn name(&self) -> &str;
    /// The parameters it was built with, as they would be written in a recipe (every
    /// default filled in).
    fn params(&self) -> serde_json::Value;
    /// What the pass reads from the context besides the graph.
    fn needs(&self) -> Needs {
        Needs::default()
    }
    /// Whether the output computes the same function as the input (up to float
    /// rounding): layout changes, folds and fusions. The pipeline does not re-measure
    /// accuracy after such a step.
    fn exact(&self) -> bool {
        false
    }
    /// Runs the pass. `graph` is valid (checked before the first step and after every
    /// step); the output must be too.
    fn apply(&self, graph: Graph, ctx: &mut Context<'_>) -> Result<PassOutput, PassError>;
}

/// What a pass returns: the new graph and what it did (serde, shown by `edgeopt
/// apply --json` and kept in the run's [`StepReport`]).
#[derive(Debug, Clone)]
pub struct PassOutput {
    pub graph: Graph,
    pub report: serde_json::Value,
}

impl PassOutput {
    pub fn new(graph: Graph, report: serde_json::Value) -> PassOutput {
        PassOutput { graph, report }
    }
}

/// The data a pass reads from the [`Context`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub calibration: bool,
    pub training: bool,
    pub evaluator: bool,
}

/// Scores a model on held-out data (top-1 accuracy in percent, or any metric where
/// higher is better). The evaluator owns its data and preprocessing: the CLI builds
/// one from `--eval-data`/`--eval-labels`, tests from arrays. A trait object so that
/// where the dataset evaluator lives (CLI today) does not matter to passes.
pub trait Evaluator: Send + Sync {
    /// The score of `graph` run with `exec`.
    fn evaluate(&self, graph: &Graph, exec: ExecOptions) -> Result<f64, String>;
    /// What the score is, for messages (e.g. "top-1 %").
    fn metric(&self) -> &str {
        "score"
    }
}

/// Estimated latency and energy of one inference of a model on a device (the cost
/// model, crate `edgeopt-search`, implements it; this crate does not depend on it).
pub trait CostEstimator: Send + Sync {
    fn estimate(&self, graph: &Graph, device: Option<&Device>) -> Result<CostEstimate, String>;
}

/// What a [`CostEstimator`] predicts; `None` where it cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CostEstimate {
    pub latency_ms: Option<f64>,
    pub energy_mj: Option<f64>,
}

/// Where a run is, for progress callbacks.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Step `step` (0-based) of `total` is starting.
    Started {
        step: usize,
        total: usize,
        pass: String,
    },
    /// Step `step` finished (budget checked).
    Finished {
        step: usize,
        total: usize,
        pass: String,
    },
}

/// A progress callback.
pub type ProgressFn<'a> = Box<dyn FnMut(&Progress) + 'a>;

/// Everything a pass may read besides the graph, and the state passes hand on.
pub struct Context<'a> {
    /// Calibration samples, each one set of graph inputs (preprocessed).
    pub calibration: &'a [Vec<Tensor>],
    /// Training data (QAT, fine-tuning after pruning).
    pub training: Option<crate::quant::qat::QatData>,
    /// Held-out evaluation (its data inside): accuracy budget, accuracy-driven passes.
    pub evaluator: Option<&'a dyn Evaluator>,
    /// Latency and energy estimates; required by a latency or energy budget.
    pub estimator: Option<&'a dyn CostEstimator>,
    /// The target device (budgets default to its RAM and flash where asked).
    pub device: Option<&'a Device>,
    /// Seed of every random choice a pass makes.
    pub seed: u64,
    /// How graphs are run when a pass or the pipeline measures them.
    pub exec: ExecOptions,
    /// Measure RAM, flash, latency, energy and the score after every step even where
    /// the budget does not limit them (for reports; off for the one-call flows).
    pub measure: bool,
    /// Called at the start and end of every step.
    pub progress: Option<ProgressFn<'a>>,
    /// State handed from pass to pass (calibration → plan → quantize).
    pub quant: QuantState,
}

impl<'a> Context<'a> {
    /// A context with no data, no evaluator, no device, seed 0, default numerics.
    pub fn new() -> Context<'a> {
        Context {
            calibration: &[],
            training: None,
            evaluator: None,
            estimator: None,
            device: None,
            seed: 0,
            exec: ExecOptions::default(),
            measure: false,
            progress: None,
            quant: QuantState::default(),
        }
    }

    /// The same context with calibration samples.
    pub fn with_calibration(mut self, samples: &'a [Vec<Tensor>]) -> Context<'a> {
        self.calibration = samples;
        self
    }
}

impl Default for Context<'_> {
    fn default() -> Self {
        Context::new()
    }
}

/// What the quantization passes hand each other.
#[derive(Debug, Clone, Default)]
pub struct QuantState {
    /// From `calibrate`: the activation format the ranges were chosen for.
    pub activations: Option<ActivationFormat>,
    pub ranges: Option<Ranges>,
    pub observed: Option<Observed>,
    /// From `plan`.
    pub plan: Option<QuantPlan>,
    pub mixed: Option<MixedResult>,
    /// From `quantize`: the float graph it quantized (reports and QAT start from it).
    pub prepared: Option<Graph>,
    /// From `report`.
    pub report: Option<Report>,
}

/// Why a pass or a run failed. The first three say whose problem it is: the pass's
/// scope, the model, or edgeopt.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The pass cannot handle this node or this model (a limitation, not a fault of
    /// the model): e.g. integer I/O asked of a model whose input feeds float ops.
    #[error("pass '{pass}' does not apply{}: {reason}", at(node))]
    NotApplicable {
        pass: String,
        node: Option<String>,
        reason: String,
        #[source]
        cause: Option<Box<CompressError>>,
    },
    /// The model itself is malformed (fails validation, inconsistent shapes or
    /// constants).
    #[error("invalid model{}: {reason}", during(pass))]
    InvalidModel {
        pass: Option<String>,
        reason: String,
        #[source]
        cause: Option<Box<CompressError>>,
    },
    /// A bug in edgeopt: a pass panicked, or produced a graph that fails validation
    /// from a valid one.
    #[error("internal error in pass '{pass}' (a bug in edgeopt; please report it with the model): {reason}")]
    Internal {
        pass: String,
        reason: String,
        #[source]
        cause: Option<Box<CompressError>>,
    },
    /// The recipe or the run's setup is wrong: an unknown pass or parameter, a
    /// parameter out of range, a pass before the one it depends on, data a pass needs
    /// that was not given, a budget nothing can measure.
    #[error("{0}")]
    Recipe(String),
    /// A budget limit was exceeded after a step.
    #[error("{0}")]
    Budget(Box<Violation>),
}

fn at(node: &Option<String>) -> String {
    node.as_ref()
        .map(|n| format!(" to node '{n}'"))
        .unwrap_or_default()
}

fn during(pass: &Option<String>) -> String {
    pass.as_ref()
        .map(|p| format!(" (found by pass '{p}')"))
        .unwrap_or_default()
}

impl PassError {
    /// Classifies an error a pass's implementation returned. `Unsupported` is a
    /// limitation of the pass; `Invalid`, ir and runtime errors are the model's (the
    /// input was validated, so an inconsistency the pass trips on is in the model's
    /// constants or attributes); a training-engine error is the model's too (it
    /// lowers what it cannot train with a message).
    pub fn from_compress(pass: &str, e: CompressError) -> PassError {
        match e {
            CompressError::Unsupported(reason) => PassError::NotApplicable {
                pass: pass.to_string(),
                node: None,
                cause: Some(Box::new(CompressError::Unsupported(reason.clone()))),
                reason,
            },
            e @ (CompressError::Invalid(_)
            | CompressError::Ir(_)
            | CompressError::Runtime(_)
            | CompressError::Train(_)) => PassError::InvalidModel {
                pass: Some(pass.to_string()),
                reason: e.to_string(),
                cause: Some(Box::new(e)),
            },
        }
    }

    /// A pass-scope limitation at `node`.
    pub fn not_applicable(pass: &str, node: Option<&str>, reason: impl Into<String>) -> Self {
        PassError::NotApplicable {
            pass: pass.to_string(),
            node: node.map(str::to_string),
            reason: reason.into(),
            cause: None,
        }
    }

    /// Back to a [`CompressError`] for callers of the one-call flows
    /// ([`crate::quant::ptq::run`]): the pass's own error when there was one.
    pub fn into_compress(self) -> CompressError {
        match self {
            PassError::NotApplicable { cause: Some(c), .. }
            | PassError::InvalidModel { cause: Some(c), .. }
            | PassError::Internal { cause: Some(c), .. } => *c,
            e @ PassError::NotApplicable { .. } => CompressError::Unsupported(e.to_string()),
            e @ (PassError::InvalidModel { .. }
            | PassError::Internal { .. }
            | PassError::Recipe(_)
            | PassError::Budget(_)) => CompressError::Invalid(e.to_string()),
        }
    }
}

/// `Result<T, CompressError>` → `Result<T, PassError>` inside pass `pass`.
pub(crate) trait InPass<T> {
    fn in_pass(self, pass: &str) -> Result<T, PassError>;
}

impl<T> InPass<T> for crate::Result<T> {
    fn in_pass(self, pass: &str) -> Result<T, PassError> {
        self.map_err(|e| PassError::from_compress(pass, e))
    }
}
