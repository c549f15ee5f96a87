//! `edgeopt apply RECIPE MODEL -o OUT`: runs a recipe (a TOML or JSON list of passes,
//! see `edgeopt_compress::pass`) on a model, checks the budget after every step and
//! writes the result as .tflite or .onnx by the extension, atomically (nothing is
//! written when any step or limit fails).
//!
//! Data flags are `quantize`'s: `--calib` (one per model input) with the same
//! preprocessing (`--scale/--mean/--std/--layout`, `--calib-names/--calib-select`,
//! `--calib-limit`), so a recipe of `quantize`'s passes reproduces its output byte for
//! byte. `--eval-data/--eval-labels` give the evaluator: the score after every step
//! that can change the model's function, and `--max-accuracy-drop`.

use crate::eval::{evaluate, DataLayout, EvalConfig};
use crate::quantize::{export, load_calibration, OnnxActivationsArg, QuantizeArgs};
use crate::{load_model, NumericsArg};
use anyhow::{anyhow, bail, Context as _, Result};
use edgeopt_compress::pass::{
    self, budget::parse_bytes, Budget, Context, Evaluator, Metrics, Progress, Recipe, Registry,
    StepReport,
};
use edgeopt_ir::{Graph, Tensor};
use edgeopt_runtime::ExecOptions;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// Recipe file (.toml or .json): `[[pass]]` tables with a `name` and parameters,
    /// optionally a `[budget]` (ram, flash, latency_ms, energy_mj, accuracy_drop).
    pub recipe: PathBuf,
    /// Model (.onnx or .tflite).
    pub model: PathBuf,
    /// Output model (.onnx: QDQ for quantized graphs; .tflite).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Calibration samples, [N, ...] (.npy or .npy.gz), one per model input (as for
    /// quantize).
    #[arg(long, num_args = 1)]
    pub calib: Vec<PathBuf>,
    #[arg(long, requires = "calib_select")]
    pub calib_names: Option<PathBuf>,
    #[arg(long, requires = "calib_names")]
    pub calib_select: Option<PathBuf>,
    #[arg(long)]
    pub calib_limit: Option<usize>,
    /// Held-out samples and labels: the evaluator of the run.
    #[arg(long, requires = "eval_labels")]
    pub eval_data: Option<PathBuf>,
    #[arg(long)]
    pub eval_labels: Option<PathBuf>,
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Preprocessing of every data file (as for quantize and eval).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f32,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0",
        allow_negative_numbers = true
    )]
    pub mean: Vec<f32>,
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub std: Vec<f32>,
    #[arg(long, default_value_t = DataLayout::Nhwc, value_parser = crate::layout_parser())]
    pub layout: DataLayout,
    /// Integer arithmetic of every run (calibration does not depend on it; sensitivity,
    /// reports and evaluation do). Default: tflm when the recipe has an `integer-io`
    /// step (a microcontroller model, as `quantize --io int8`), litert otherwise.
    #[arg(long, value_enum)]
    pub numerics: Option<NumericsArg>,
    /// The target device (built-in name or a .toml path): in the context of every pass,
    /// and its RAM and flash are limits unless the recipe or a flag sets them.
    #[arg(long)]
    pub device: Option<String>,
    /// Budget limits, overriding the recipe's: bytes ("256KiB", "1MiB" or a number).
    #[arg(long)]
    pub max_ram: Option<String>,
    #[arg(long)]
    pub max_flash: Option<String>,
    /// Latency and energy limits need a cost estimator (not yet available here: an
    /// error says so).
    #[arg(long)]
    pub max_latency_ms: Option<f64>,
    #[arg(long)]
    pub max_energy_mj: Option<f64>,
    /// Top-1 points the result may lose against the input model (needs --eval-data).
    #[arg(long, requires = "eval_data")]
    pub max_accuracy_drop: Option<f64>,
    /// How an .onnx output stores int8 activations (as for quantize).
    #[arg(long, value_enum, default_value_t = OnnxActivationsArg::Uint8)]
    pub onnx_activations: OnnxActivationsArg,
    /// Seed of every random choice a pass makes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the summary (every step's report and metrics) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `edgeopt apply` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ApplySummary {
    pub recipe: String,
    pub model: String,
    pub output: String,
    pub budget: Budget,
    pub input: Metrics,
    pub steps: Vec<StepReport>,
}

/// The dataset evaluator behind `--eval-data` (top-1 accuracy in percent).
struct DatasetEvaluator {
    x: Tensor,
    y: Tensor,
    cfg: EvalConfig,
}

impl Evaluator for DatasetEvaluator {
    fn evaluate(&self, graph: &Graph, exec: ExecOptions) -> std::result::Result<f64, String> {
        let cfg = EvalConfig {
            exec,
            ..self.cfg.clone()
        };
        evaluate(graph, "", &self.x, &self.y, &cfg)
            .map(|r| r.accuracy)
            .map_err(|e| format!("{e:#}"))
    }
    fn metric(&self) -> &str {
        "top-1 %"
    }
}

impl ApplyArgs {
    /// The same data flags as `quantize` arguments (to share its loaders).
    fn quantize_args(&self, numerics: NumericsArg) -> QuantizeArgs {
        // QuantizeArgs requires a --calib; without one none is read (see apply_command).
        let first = self
            .calib
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from("no-calibration.npy"));
        QuantizeArgs {
            calib: self.calib.clone(),
            calib_names: self.calib_names.clone(),
            calib_select: self.calib_select.clone(),
            calib_limit: self.calib_limit,
            eval_data: self.eval_data.clone(),
            eval_labels: self.eval_labels.clone(),
            eval_limit: self.eval_limit,
            scale: self.scale,
            mean: self.mean.clone(),
            std: self.std.clone(),
            layout: self.layout,
            numerics: Some(numerics),
            ..QuantizeArgs::new(self.model.clone(), first)
        }
    }

    /// Flag limits (those given) over the recipe's over the device's.
    fn budget(&self, recipe: &Budget, device: Option<&edgeopt_device::Device>) -> Result<Budget> {
        let bytes = |s: &Option<String>, flag: &str| -> Result<Option<u64>> {
            s.as_deref()
                .map(|s| parse_bytes(s).map_err(|e| anyhow!("--{flag}: {e}")))
                .transpose()
        };
        let flags = Budget {
            ram: bytes(&self.max_ram, "max-ram")?,
            flash: bytes(&self.max_flash, "max-flash")?,
            latency_ms: self.max_latency_ms,
            energy_mj: self.max_energy_mj,
            accuracy_drop: self.max_accuracy_drop,
        };
        let base = device.map(Budget::from_device).unwrap_or_default();
        Ok(base.overridden_by(recipe).overridden_by(&flags))
    }
}

/// The whole command: returns the summary; writes `-o` only when every step and
/// every limit passed.
pub fn apply_command(args: &ApplyArgs, progress: bool) -> Result<ApplySummary> {
    if !matches!(
        args.output.extension().and_then(|e| e.to_str()),
        Some("onnx" | "tflite")
    ) {
        bail!("-o must end in .onnx or .tflite: {}", args.output.display());
    }
    let recipe = Recipe::load(&args.recipe)?;
    let passes = recipe.build(&Registry::builtin())?;
    let device = args
        .device
        .as_deref()
        .map(edgeopt_device::resolve)
        .transpose()
        .context("--device")?;
    let budget = args.budget(&recipe.budget, device.as_ref())?;
    let numerics =
        args.numerics
            .unwrap_or(if recipe.passes.iter().any(|p| p.name == "integer-io") {
                NumericsArg::Tflm
            } else {
                NumericsArg::Litert
            });
    let graph = load_model(&args.model)?;
    let qargs = args.quantize_args(numerics);
    let samples = if args.calib.is_empty() {
        Vec::new()
    } else {
        load_calibration(&qargs, &graph)?
    };
    let evaluator = match (&args.eval_data, &args.eval_labels) {
        (Some(d), Some(l)) => Some(DatasetEvaluator {
            x: edgeopt_npy::read(d).with_context(|| format!("cannot read {}", d.display()))?,
            y: edgeopt_npy::read(l).with_context(|| format!("cannot read {}", l.display()))?,
            cfg: EvalConfig {
                limit: args.eval_limit,
                ..qargs.eval_config()
            },
        }),
        _ => None,
    };
    let mut ctx = Context::new().with_calibration(&samples);
    ctx.exec = numerics.options();
    ctx.seed = args.seed;
    ctx.device = device.as_ref();
    ctx.evaluator = evaluator.as_ref().map(|e| e as &dyn Evaluator);
    ctx.measure = true;
    if progress {
        ctx.progress = Some(Box::new(|p: &Progress| {
            if let Progress::Started { step, total, pass } = p {
                eprintln!("[{}/{total}] {pass}", step + 1);
            }
        }));
    }
    let r = pass::run(graph, &passes, &budget, &mut ctx).with_context(|| {
        format!(
            "{} on {}: nothing written",
            args.recipe.display(),
            args.model.display()
        )
    })?;
    export(&r.graph, &args.output, args.onnx_activations)?;
    Ok(ApplySummary {
        recipe: args.recipe.display().to_string(),
        model: args.model.display().to_string(),
        output: args.output.display().to_string(),
        budget,
        input: r.input,
        steps: r.steps,
    })
}

fn fmt_metrics(m: &Metrics) -> String {
    let mut parts = Vec::new();
    if let Some(r) = m.ram {
        parts.push(format!("RAM {r} B"));
    }
    if let Some(f) = m.flash {
        parts.push(format!("flash {f} B"));
    }
    if let Some(l) = m.latency_ms {
        parts.push(format!("{l:.3} ms"));
    }
    if let Some(e) = m.energy_mj {
        parts.push(format!("{e:.4} mJ"));
    }
    if let Some(s) = m.score {
        parts.push(format!("top-1 {s:.2}%"));
    }
    parts.join(", ")
}

/// One line per step, for the terminal.
pub fn render_summary(s: &ApplySummary) -> String {
    let mut out = format!("{}: {}\n", s.model, fmt_metrics(&s.input));
    for st in &s.steps {
        out.push_str(&format!(
            "{:>3}  {:<18} {:<9} {}\n",
            st.step + 1,
            st.pass,
            if st.changed { "changed" } else { "-" },
            fmt_metrics(&st.metrics)
        ));
    }
    out.push_str(&format!("wrote {}\n", s.output));
    out
}

/// Parses `edgeopt apply` arguments alone (the defaults of [`ApplyArgs::new`]).
#[derive(clap::Parser)]
struct ApplyCli {
    #[command(flatten)]
    args: ApplyArgs,
}

impl ApplyArgs {
    /// `edgeopt apply RECIPE MODEL -o OUTPUT` with every other option at its
    /// command-line default (for tests, which then set fields).
    pub fn new(
        recipe: impl Into<PathBuf>,
        model: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
    ) -> Self {
        use clap::Parser;
        let argv = [
            std::ffi::OsString::from("apply"),
            recipe.into().into_os_string(),
            model.into().into_os_string(),
            "-o".into(),
            output.into().into_os_string(),
        ];
        ApplyCli::try_parse_from(argv)
            .expect("a recipe, a model and -o are all apply requires")
            .args
    }
}
