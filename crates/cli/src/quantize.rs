//! `edgeopt quantize`: post-training quantization (optionally mixed precision, bias
//! correction, cross-layer equalization, QAT) of a float model, written as ONNX (QDQ)
//! or TFLite, with an optional per-layer report.
//!
//! Calibration data is an .npy array of samples preprocessed exactly as `eval` does
//! (`--scale/--mean/--std/--layout`), optionally restricted to named rows
//! (`--calib-names` gives one name per row, `--calib-select` the names to use: the
//! MLPerf Tiny calibration list matches CIFAR-10 files that way).

use crate::load_model;
use anyhow::{anyhow, bail, Context, Result};
use edgeopt_compress::quant::ptq::{self, PtqOptions, PtqResult};
use edgeopt_compress::quant::qat::{self, QatConfig, QatData};
use edgeopt_compress::quant::report::render;
use edgeopt_compress::quant::{
    weight_size, ActivationFormat, CalibMethod, Granularity, WeightFormat, WeightSpec,
};
use edgeopt_eval::{evaluate, prepare, prepare_input, DataLayout, EvalConfig, EvalReport};
use edgeopt_ir::{Graph, Tensor};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    Minmax,
    Percentile,
    Entropy,
    Mse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsArg {
    Int8,
    Int4,
    Ternary,
    Binary,
    Fp16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ActivationsArg {
    Int8,
    Int16,
    Fp16,
}

/// The model edge of the written model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoArg {
    /// Float inputs and outputs, quantized and dequantized inside the model (the TFLite
    /// converter's default; `compile` emits those steps in C).
    Float,
    /// Integer inputs and outputs carrying their quantization parameters (the TFLite
    /// converter's inference_input_type / inference_output_type = int8): the caller
    /// quantizes samples itself and the device holds no float buffer.
    Int8,
}

/// Storage type of int8 activations in an ONNX (QDQ) output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnnxActivationsArg {
    /// uint8 (zero point + 128, same values): onnxruntime's x86 integer kernels.
    Uint8,
    /// int8 as quantized (Arm onnxruntime builds run int8 x int8 natively).
    /// onnxruntime 1.32 on x86 rejects int8 activations next to int4 weights (opset
    /// 21): its int8-to-uint8 rewrite leaves `output_dtype` INT8 on a uint8 zero point.
    Int8,
}

#[derive(Debug, Clone, clap::Args)]
pub struct QuantizeArgs {
    /// Float model (.onnx or .tflite).
    pub model: PathBuf,
    /// Calibration samples, [N, ...] (.npy or .npy.gz); a model with several inputs
    /// takes one --calib per input, in the model's input order, with N rows each.
    #[arg(long, required = true, num_args = 1)]
    pub calib: Vec<PathBuf>,
    /// One name per row of --calib (e.g. cifar10/test_filenames.txt).
    #[arg(long, requires = "calib_select")]
    pub calib_names: Option<PathBuf>,
    /// The names of the rows to calibrate on, one per line.
    #[arg(long, requires = "calib_names")]
    pub calib_select: Option<PathBuf>,
    /// Use at most this many calibration samples (the first ones).
    #[arg(long)]
    pub calib_limit: Option<usize>,
    #[arg(long, value_enum, default_value_t = MethodArg::Minmax)]
    pub method: MethodArg,
    /// Percentile for --method percentile.
    #[arg(long, default_value_t = 99.999)]
    pub percentile: f32,
    #[arg(long, value_enum, default_value_t = WeightsArg::Int8)]
    pub weights: WeightsArg,
    /// Activation type (default int8; fp32 with --weights fp16).
    #[arg(long, value_enum)]
    pub activations: Option<ActivationsArg>,
    /// tensor, channel, or group:N (one scale per N consecutive weights of each output
    /// channel, for conv and FC layers with more than N weights per channel; .onnx only).
    #[arg(long, default_value = "channel")]
    pub granularity: String,
    /// Mixed precision: weight bytes allowed (layers get int8, int4 or ternary by
    /// sensitivity).
    #[arg(long)]
    pub budget: Option<usize>,
    /// Correct the bias for the mean output shift of weight quantization.
    #[arg(long)]
    pub bias_correction: bool,
    /// Cross-layer equalization (depthwise-separable networks).
    #[arg(long)]
    pub equalize: bool,
    /// Quantization-aware training epochs after PTQ (needs --train).
    #[arg(long, requires = "train")]
    pub qat: Option<usize>,
    /// Training data for --qat: an .npy of samples; labels from --train-labels.
    #[arg(long)]
    pub train: Option<PathBuf>,
    #[arg(long)]
    pub train_labels: Option<PathBuf>,
    /// QAT on images: random 4-pixel-pad crops and left-right flips (helps CIFAR-like
    /// photos, not digits or spectrograms).
    #[arg(long, requires = "qat")]
    pub qat_augment: bool,
    /// Print the per-layer report (SQNR, ranges, chosen bits); also written as JSON
    /// next to the output (OUT.report.json).
    #[arg(long)]
    pub report: bool,
    /// Evaluate float and quantized models on these samples (with --eval-labels).
    #[arg(long, requires = "eval_labels")]
    pub eval_data: Option<PathBuf>,
    #[arg(long)]
    pub eval_labels: Option<PathBuf>,
    /// Evaluate only this many samples, spread evenly over --eval-data.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Preprocessing of every data file given here (--calib, --eval-data, --train
    /// alike, so give them all in the same raw form, e.g. uint8 pixels with --scale
    /// 0.0039216): multiply raw values by this first; then --mean, --std as for eval.
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
    /// Output model (.onnx: QDQ; .tflite).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Model inputs and outputs: float (default, as the TFLite converter writes) or
    /// int8 (what a microcontroller wants: no float buffer, no conversion on device).
    #[arg(long, value_enum, default_value_t = IoArg::Float)]
    pub io: IoArg,
    /// Integer arithmetic of every run of the quantized model (--eval-data, --report,
    /// --budget's sensitivities): litert (LiteRT's builtin kernels, for a .tflite run
    /// on a phone or board) or tflm (TensorFlow Lite Micro: the microcontroller,
    /// `edgeopt compile`'s target). Default: tflm with --io int8 (a microcontroller
    /// model), litert otherwise.
    #[arg(long, value_enum)]
    pub numerics: Option<crate::NumericsArg>,
    /// Refuse the result (exit non-zero, write nothing) when the quantized top-1
    /// accuracy on --eval-data is more than this many points below the float model's.
    #[arg(long, requires = "eval_data")]
    pub max_accuracy_drop: Option<f64>,
    /// How an .onnx output stores int8 activations.
    #[arg(long, value_enum, default_value_t = OnnxActivationsArg::Uint8)]
    pub onnx_activations: OnnxActivationsArg,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `edgeopt quantize` prints.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeSummary {
    pub model: String,
    pub calibration_samples: usize,
    pub method: String,
    pub weights: String,
    pub activations: String,
    pub weight_bytes: usize,
    pub int8_weight_bytes: usize,
    pub float_accuracy: Option<f64>,
    pub quantized_accuracy: Option<f64>,
    /// Accuracy of the written file as edgeopt runs it after reading it back: for
    /// ONNX that is the QDQ semantics (float ops between DequantizeLinear and
    /// QuantizeLinear, what onnxruntime computes), for TFLite the integer kernels.
    pub exported_accuracy: Option<f64>,
    pub eval_samples: Option<usize>,
    pub output: Option<String>,
    pub report: Option<String>,
}

pub fn parse_granularity(s: &str) -> Result<Granularity> {
    match s {
        "tensor" => Ok(Granularity::Tensor),
        "channel" => Ok(Granularity::Channel),
        _ => match s.strip_prefix("group:").map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => Ok(Granularity::Group(n)),
            _ => bail!("--granularity must be tensor, channel or group:N (N > 0), got '{s}'"),
        },
    }
}

/// Parses `edgeopt quantize` arguments alone (the defaults of [`QuantizeArgs::new`]).
#[derive(clap::Parser)]
struct QuantizeCli {
    #[command(flatten)]
    args: QuantizeArgs,
}

impl QuantizeArgs {
    /// The arguments of `edgeopt quantize MODEL --calib CALIB` with every other
    /// option at its command-line default (for library callers and tests, which then
    /// change fields with struct update syntax).
    pub fn new(model: impl Into<PathBuf>, calib: impl Into<PathBuf>) -> Self {
        use clap::Parser;
        let (model, calib) = (model.into(), calib.into());
        let argv = [
            std::ffi::OsString::from("quantize"),
            model.into_os_string(),
            "--calib".into(),
            calib.into_os_string(),
        ];
        QuantizeCli::try_parse_from(argv)
            .expect("a model and --calib are all quantize requires")
            .args
    }

    /// `--numerics`, or its default for `--io`.
    pub fn numerics(&self) -> crate::NumericsArg {
        self.numerics.unwrap_or(match self.io {
            IoArg::Int8 => crate::NumericsArg::Tflm,
            IoArg::Float => crate::NumericsArg::Litert,
        })
    }

    pub fn eval_config(&self) -> EvalConfig {
        EvalConfig {
            scale: self.scale,
            mean: self.mean.clone(),
            std: self.std.clone(),
            layout: self.layout,
            exec: self.numerics().options(),
            ..EvalConfig::default()
        }
    }

    pub fn options(&self) -> Result<PtqOptions> {
        let method = match self.method {
            MethodArg::Minmax => CalibMethod::MinMax,
            MethodArg::Percentile => {
                if !(self.percentile > 50.0 && self.percentile <= 100.0) {
                    bail!("--percentile must be in (50, 100]");
                }
                CalibMethod::Percentile(self.percentile)
            }
            MethodArg::Entropy => CalibMethod::Entropy,
            MethodArg::Mse => CalibMethod::Mse,
        };
        let format = match self.weights {
            WeightsArg::Int8 => WeightFormat::Int8,
            WeightsArg::Int4 => WeightFormat::Int4,
            WeightsArg::Ternary => WeightFormat::Ternary,
            WeightsArg::Binary => WeightFormat::Binary,
            WeightsArg::Fp16 => WeightFormat::Fp16,
        };
        let activations = match (self.activations, format) {
            (None, WeightFormat::Fp16) => ActivationFormat::Float,
            (None, _) | (Some(ActivationsArg::Int8), _) => ActivationFormat::Int8,
            (Some(ActivationsArg::Int16), _) => ActivationFormat::Int16,
            (Some(ActivationsArg::Fp16), _) => ActivationFormat::Fp16,
        };
        if activations == ActivationFormat::Fp16 && format != WeightFormat::Fp16 {
            bail!("--activations fp16 needs --weights fp16");
        }
        let granularity = parse_granularity(&self.granularity)?;
        if self.budget.is_some() && self.weights != WeightsArg::Int8 {
            bail!("--budget chooses the weight formats itself; do not combine it with --weights");
        }
        Ok(PtqOptions {
            method,
            weights: WeightSpec {
                format,
                granularity,
            },
            activations,
            budget: self.budget,
            bias_correction: self.bias_correction,
            equalize: self.equalize,
            report: self.report,
            exec: self.numerics().options(),
            ..PtqOptions::default()
        })
    }
}

fn read_lines(p: &Path) -> Result<Vec<String>> {
    let s = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(s.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Row indices of `select` names in `names` (every selected name must exist).
pub fn select_rows(names: &[String], select: &[String]) -> Result<Vec<usize>> {
    let index: std::collections::HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    select
        .iter()
        .map(|s| {
            index
                .get(s.as_str())
                .copied()
                .ok_or_else(|| anyhow!("calibration sample '{s}' is not in the names list"))
        })
        .collect()
}

/// The model inputs for rows `rows` of `data`, preprocessed as eval does (one sample
/// per set of inputs, batch 1).
pub fn calibration_samples(
    graph: &Graph,
    data: &Tensor,
    rows: &[usize],
    cfg: &EvalConfig,
) -> Result<Vec<Vec<Tensor>>> {
    rows.iter()
        .map(|&i| Ok(vec![prepare(graph, data, i..i + 1, cfg)?]))
        .collect()
}

/// [`calibration_samples`] of a model with one data array per input (`data[k]` for
/// graph input `k`, the same rows of each).
pub fn calibration_samples_multi(
    graph: &Graph,
    data: &[Tensor],
    rows: &[usize],
    cfg: &EvalConfig,
) -> Result<Vec<Vec<Tensor>>> {
    rows.iter()
        .map(|&i| {
            data.iter()
                .enumerate()
                .map(|(k, d)| {
                    prepare_input(graph, k, d, i..i + 1, cfg).with_context(|| {
                        format!("input {k} ('{}')", graph.values[graph.inputs[k]].name)
                    })
                })
                .collect()
        })
        .collect()
}

/// Loads `--calib` and picks the rows to use.
pub fn load_calibration(args: &QuantizeArgs, graph: &Graph) -> Result<Vec<Vec<Tensor>>> {
    if args.calib.len() != graph.inputs.len() {
        bail!(
            "the model has {} input(s), {} --calib given (one calibration file per input, \
             in the model's input order)",
            graph.inputs.len(),
            args.calib.len()
        );
    }
    let arrays = args
        .calib
        .iter()
        .map(|p| {
            edgeopt_npy::read(p)
                .with_context(|| format!("cannot read calibration data {}", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let n = arrays[0].shape.first().copied().unwrap_or(0);
    if let Some((p, a)) = args
        .calib
        .iter()
        .zip(&arrays)
        .find(|(_, a)| a.shape.first().copied().unwrap_or(0) != n)
    {
        bail!(
            "{} has {} samples, the first --calib {n}: every input needs the same rows",
            p.display(),
            a.shape.first().copied().unwrap_or(0)
        );
    }
    let mut rows: Vec<usize> = match (&args.calib_names, &args.calib_select) {
        (Some(names), Some(select)) => {
            let names = read_lines(names)?;
            if names.len() != n {
                bail!("--calib-names has {} names for {n} samples", names.len());
            }
            select_rows(&names, &read_lines(select)?)?
        }
        _ => (0..n).collect(),
    };
    if let Some(l) = args.calib_limit {
        rows.truncate(l);
    }
    if rows.is_empty() {
        bail!("no calibration samples");
    }
    let samples = if arrays.len() == 1 {
        calibration_samples(graph, &arrays[0], &rows, &args.eval_config())?
    } else {
        calibration_samples_multi(graph, &arrays, &rows, &args.eval_config())?
    };
    check_calibration(&samples)?;
    Ok(samples)
}

/// Calibration data that would silently ruin the model is refused: a NaN or an
/// infinity (every range it touches becomes meaningless), or one value everywhere
/// (all-zero or blank samples: every activation range collapses to a point and the
/// scales to ~1e-35).
pub fn check_calibration(samples: &[Vec<Tensor>]) -> Result<()> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, sample) in samples.iter().enumerate() {
        for t in sample {
            if !t.dtype().is_float() {
                continue;
            }
            for v in t.to_f32_vec() {
                if !v.is_finite() {
                    bail!("calibration sample {i} holds {v}: calibration data must be finite");
                }
                lo = lo.min(v as f64);
                hi = hi.max(v as f64);
            }
        }
    }
    if lo == hi {
        bail!(
            "every calibration value is {lo}: constant samples give no activation ranges \
             (is --calib the right file, and --scale/--mean/--std right for it?)"
        );
    }
    Ok(())
}

fn eval_on(graph: &Graph, name: &str, args: &QuantizeArgs) -> Result<Option<EvalReport>> {
    let (Some(d), Some(l)) = (&args.eval_data, &args.eval_labels) else {
        return Ok(None);
    };
    let x = edgeopt_npy::read(d).with_context(|| format!("cannot read {}", d.display()))?;
    let y = edgeopt_npy::read(l).with_context(|| format!("cannot read {}", l.display()))?;
    let cfg = EvalConfig {
        limit: args.eval_limit,
        ..args.eval_config()
    };
    Ok(Some(evaluate(graph, name, &x, &y, &cfg)?))
}

/// Writes `graph` to `path` by its extension (each exporter writes atomically).
pub fn export(graph: &Graph, path: &Path, onnx: OnnxActivationsArg) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("onnx") => {
            let opts = edgeopt_onnx::ExportOptions {
                uint8_activations: onnx == OnnxActivationsArg::Uint8,
            };
            edgeopt_onnx::export_file_with(graph, path, &opts)
                .with_context(|| format!("cannot write {}", path.display()))
        }
        Some("tflite") => edgeopt_tflite::export_file(graph, path)
            .with_context(|| format!("cannot write {}", path.display())),
        _ => bail!("-o must end in .onnx or .tflite: {}", path.display()),
    }
}

/// Runs QAT when asked: fine-tunes the prepared graph with fake quantization that
/// emulates the PTQ plan exactly (initialized from it), then re-applies the plan.
fn maybe_qat(args: &QuantizeArgs, r: &mut PtqResult, samples: &[Vec<Tensor>]) -> Result<()> {
    let Some(epochs) = args.qat else {
        return Ok(());
    };
    let train = args
        .train
        .as_ref()
        .ok_or_else(|| anyhow!("--qat needs --train DATA"))?;
    let data = if train.is_dir() {
        QatData::Dir(train.clone())
    } else {
        let labels = args.train_labels.as_ref().ok_or_else(|| {
            anyhow!(
                "--train {} is a file: give its labels with --train-labels",
                train.display()
            )
        })?;
        let input = r
            .prepared
            .inputs
            .first()
            .map(|&v| &r.prepared.values[v])
            .ok_or_else(|| anyhow!("the model has no input"))?;
        // The batch dimension may be symbolic; one sample's dims must be known.
        let sample: Vec<usize> = input
            .shape
            .as_ref()
            .filter(|s| !s.is_empty())
            .and_then(|s| s[1..].iter().map(|d| d.fixed()).collect::<Option<_>>())
            .ok_or_else(|| anyhow!("--qat needs a model input whose sample dims are fixed"))?;
        QatData::Loaded(
            edgeopt_train::data::load_pair(train, labels, &sample)
                .with_context(|| format!("cannot load --train {}", train.display()))?,
        )
    };
    // The recipe measured in bench/results/qat-*.md for the plan's weight formats
    // (int8/int4: LSQ learned scales + distillation from the float model when the
    // data has class labels; ternary/binary: plain QAT at a larger step).
    let data = qat::load_train_data(&r.prepared, data)?;
    let classification = data.classes().is_some();
    let mut cfg = QatConfig::recommended(epochs, QatData::Loaded(data), &r.plan, classification);
    if args.qat_augment {
        cfg.augment = edgeopt_train::data::Augment {
            crop_pad: 4,
            hflip: true,
            ..cfg.augment
        };
    }
    cfg.progress = true;
    let (tuned, plan) = qat::fine_tune(&r.prepared, &r.plan, &cfg)?;
    r.quantized = edgeopt_compress::quant::apply(&tuned, &plan)?;
    // The report describes the model that is written, measured against the float
    // model it came from (QAT snaps the tuned weights onto their grid, so against the
    // tuned weights every weight SQNR would read "exact").
    if r.report.is_some() {
        r.report = Some(edgeopt_compress::quant::report::build(
            &r.prepared,
            &r.quantized,
            &plan,
            samples,
            r.mixed.as_ref(),
            args.numerics().options(),
        )?);
    }
    r.prepared = tuned;
    r.plan = plan;
    Ok(())
}

/// The whole command; returns the summary (and prints the report when asked).
pub fn quantize_command(args: &QuantizeArgs) -> Result<QuantizeSummary> {
    if args.output.is_none() && args.eval_data.is_none() && !args.report {
        bail!("nothing to do: give -o OUT.onnx|OUT.tflite, --eval-data or --report");
    }
    if let Some(o) = &args.output {
        if !matches!(
            o.extension().and_then(|e| e.to_str()),
            Some("onnx" | "tflite")
        ) {
            bail!("-o must end in .onnx or .tflite: {}", o.display());
        }
    }
    let opts = args.options()?;
    let tflite_out = args
        .output
        .as_ref()
        .is_some_and(|o| o.extension().is_some_and(|e| e == "tflite"));
    if let (true, Granularity::Group(n)) = (tflite_out, opts.weights.granularity) {
        bail!(
            "--granularity group:{n}: TFLite's CONV_2D and FULLY_CONNECTED take one weight \
             scale per channel, so group-wise scales have no TFLite form; write .onnx or use \
             --granularity channel"
        );
    }
    let graph = load_model(&args.model)?;
    let samples = load_calibration(args, &graph)?;
    let mut r = ptq::run(&graph, &samples, &opts)?;
    maybe_qat(args, &mut r, &samples)?;
    if args.io == IoArg::Int8 {
        edgeopt_compress::quant::edge::integer_io(&mut r.quantized, true).context("--io int8")?;
    }
    let name = args
        .model
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let float_eval = eval_on(&graph, &name, args)?;
    let q_eval = eval_on(&r.quantized, &format!("{name} (quantized)"), args)?;
    if let (Some(f), Some(q)) = (&float_eval, &q_eval) {
        let drop = f.accuracy - q.accuracy;
        if let Some(max) = args.max_accuracy_drop {
            if drop > max {
                bail!(
                    "quantized top-1 {:.2}% is {drop:.2} points below the float model's \
                     {:.2}% (--max-accuracy-drop {max}); nothing written",
                    q.accuracy,
                    f.accuracy
                );
            }
        } else if drop > 5.0 {
            eprintln!(
                "warning: quantized top-1 {:.2}% is {drop:.2} points below the float model's \
                 {:.2}%: check that --calib holds samples like --eval-data (same range and \
                 layout) and the preprocessing flags",
                q.accuracy, f.accuracy
            );
        }
    }
    let mut exported_eval = None;
    if let Some(o) = &args.output {
        export(&r.quantized, o, args.onnx_activations)?;
        if q_eval.is_some() {
            let written =
                load_model(o).with_context(|| format!("cannot read back {}", o.display()))?;
            let label = format!("{} (as written)", o.display());
            exported_eval = eval_on(&written, &label, args)?;
        }
    }
    let mut report_path = None;
    if let Some(rep) = &r.report {
        eprint!("{}", render(rep));
        if let Some(o) = &args.output {
            let p = o.with_extension("report.json");
            let s = serde_json::to_string_pretty(rep)?;
            edgeopt_npy::write_atomic(&p, s.as_bytes())
                .with_context(|| format!("cannot write {}", p.display()))?;
            report_path = Some(p.display().to_string());
        }
    }
    let int8 = {
        let mut p = r.plan.clone();
        for s in p.weights.values_mut() {
            s.format = WeightFormat::Int8;
        }
        weight_size(&r.prepared, &p)
    };
    Ok(QuantizeSummary {
        model: name,
        calibration_samples: samples.len(),
        method: format!("{:?}", opts.method).to_lowercase(),
        weights: if opts.budget.is_some() {
            "mixed".into()
        } else {
            format!("{:?}", opts.weights.format).to_lowercase()
        },
        activations: format!("{:?}", opts.activations).to_lowercase(),
        weight_bytes: weight_size(&r.prepared, &r.plan),
        int8_weight_bytes: int8,
        float_accuracy: float_eval.as_ref().map(|e| e.accuracy),
        quantized_accuracy: q_eval.as_ref().map(|e| e.accuracy),
        exported_accuracy: exported_eval.as_ref().map(|e| e.accuracy),
        eval_samples: q_eval.as_ref().map(|e| e.samples),
        output: args.output.as_ref().map(|p| p.display().to_string()),
        report: report_path,
    })
}

/// One line per figure, for the terminal.
pub fn render_summary(s: &QuantizeSummary) -> String {
    let mut out = format!(
        "{}: {} weights, {} activations, {} calibration ({} samples); weights {} B (int8: {} B)\n",
        s.model,
        s.weights,
        s.activations,
        s.method,
        s.calibration_samples,
        s.weight_bytes,
        s.int8_weight_bytes
    );
    if let (Some(f), Some(q), Some(n)) = (s.float_accuracy, s.quantized_accuracy, s.eval_samples) {
        out.push_str(&format!(
            "top-1 accuracy on {n} samples: float {f:.2}%, quantized {q:.2}%\n"
        ));
    }
    if let Some(o) = &s.output {
        out.push_str(&format!("wrote {o}\n"));
        if let Some(e) = s.exported_accuracy {
            out.push_str(&format!(
                "top-1 accuracy of {o} as read back (its own format's arithmetic): {e:.2}%\n"
            ));
        }
    }
    if let Some(r) = &s.report {
        out.push_str(&format!("wrote {r}\n"));
    }
    out
}
