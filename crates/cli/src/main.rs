//! The `edgeopt` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use edgeopt_cli::bench::{bench, BenchConfig};
use edgeopt_cli::inspect::{inspect, render};
use edgeopt_cli::{load_model, run, NumericsArg};
use edgeopt_eval::{evaluate, DataLayout, EvalConfig, InputQuant};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "edgeopt",
    version,
    about = "Make trained neural networks fit, and run fast, on IoT devices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The built-in end-to-end demo: generates a seeded vibration dataset for
    /// machine-fault classification, trains a 1-D CNN, evaluates it, prints its
    /// params / MACs / arena and writes the ONNX. No arguments, no download.
    Demo(edgeopt_cli::train::DemoArgs),
    /// Train a zoo architecture (or fine-tune an imported model) on a dataset.
    Train(Box<edgeopt_cli::train::TrainArgs>),
    /// Per-layer table: op, output shape, params, MACs, weight and activation bytes;
    /// totals; peak arena of the static memory plan vs the naive sum of activations.
    Inspect {
        /// Model file (.onnx or .tflite).
        model: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Batch size bound to a dynamic leading input dimension.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Check the arena and weights against a device and estimate latency, energy, RAM
        /// and flash per layer (the cost model): a built-in name (see devices/) or a path
        /// to a device file (.toml).
        #[arg(long, value_name = "NAME|PATH")]
        device: Option<String>,
    },
    /// Top-1 accuracy on a labelled dataset of .npy arrays.
    Eval {
        /// Model file (.onnx or .tflite).
        model: PathBuf,
        /// Samples, [N, ...] (.npy or .npy.gz).
        #[arg(long)]
        data: PathBuf,
        /// Class labels, [N] (or one-hot [N, C]).
        #[arg(long)]
        labels: PathBuf,
        /// Multiply the raw values by this first.
        #[arg(long, default_value_t = 1.0)]
        scale: f32,
        /// Subtracted after scaling: one value or one per channel (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "0",
            allow_negative_numbers = true
        )]
        mean: Vec<f32>,
        /// Divides after the mean: one value or one per channel (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        std: Vec<f32>,
        /// Layout of the data; it is transposed if the model wants the other one.
        #[arg(long, default_value_t = DataLayout::Nhwc, value_parser = edgeopt_cli::layout_parser())]
        layout: DataLayout,
        /// Quantize the preprocessed values with the model input's quantization
        /// parameters (the default when the input is quantized).
        #[arg(long, conflicts_with = "no_input_quant")]
        input_quant: bool,
        /// Feed the preprocessed values to an integer input as they are (rounded).
        #[arg(long)]
        no_input_quant: bool,
        /// Evaluate only N samples, spread evenly over the data (sorted data sets stay
        /// balanced).
        #[arg(long)]
        limit: Option<usize>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Integer arithmetic to reproduce: litert (LiteRT's builtin kernels) or tflm
        /// (TensorFlow Lite Micro, i.e. the microcontroller and `compile`'s C).
        #[arg(long, value_enum, default_value_t = NumericsArg::Litert)]
        numerics: NumericsArg,
        /// Also report top-K accuracy (the label among the K largest outputs).
        #[arg(long, value_name = "K")]
        top_k: Option<usize>,
        /// Also report the accuracy of every class.
        #[arg(long)]
        per_class: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the model on .npy inputs and write its outputs as .npy (any batch: a batch of
    /// N given to a batch-1 model runs sample by sample; arrays in the model's own
    /// dtypes).
    Run {
        /// Model file (.onnx or .tflite).
        model: PathBuf,
        /// One per model input, in order.
        #[arg(long = "input", short = 'i', required = true)]
        inputs: Vec<PathBuf>,
        /// Where outputs go: files for the model's outputs in order (the first k for k
        /// files), `NAME=FILE` for the output called NAME, or one directory for all of
        /// them (`DIR/<output name>.npy`).
        #[arg(short = 'o', long = "output", required = true)]
        outputs: Vec<PathBuf>,
        /// Run inside one buffer laid out by the static memory planner (same outputs).
        #[arg(long)]
        arena: bool,
        /// Integer arithmetic to reproduce: litert (LiteRT's builtin kernels) or tflm
        /// (TensorFlow Lite Micro, i.e. the microcontroller and `compile`'s C).
        #[arg(long, value_enum, default_value_t = NumericsArg::Litert)]
        numerics: NumericsArg,
    },
    /// Self-contained C for a microcontroller (model.h, model.c, int8 kernels): reports
    /// flash and RAM against the target and refuses a model that does not fit.
    Compile(edgeopt_cli::compile::CompileArgs),
    /// Post-training quantization (int8/int4/ternary/binary/fp16 weights, min-max /
    /// percentile / entropy / MSE calibration, mixed precision under --budget), written
    /// as ONNX (QDQ) or TFLite; --report shows per-layer SQNR and ranges.
    Quantize(Box<edgeopt_cli::quantize::QuantizeArgs>),
    /// Run a recipe (a TOML or JSON list of passes with parameters and an optional
    /// budget) on a model; the budget is checked after every step; writes .onnx or
    /// .tflite by the extension, nothing when a step or a limit fails.
    Apply(Box<edgeopt_cli::apply::ApplyArgs>),
    /// Batch-1 latency: warm-up, then median and p90 over timed runs.
    Bench {
        /// Model file (.onnx or .tflite).
        model: PathBuf,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Seed of the random input.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also time every layer (mean over a second series of runs).
        #[arg(long)]
        per_layer: bool,
        /// Integer arithmetic: litert (LiteRT's builtin kernels) or tflm (TensorFlow
        /// Lite Micro's).
        #[arg(long, value_enum, default_value_t = NumericsArg::Litert)]
        numerics: NumericsArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn model_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Writes the result to stdout. A closed pipe (`edgeopt inspect m.onnx | head`) is not
/// an error: the reader has what it wanted.
fn emit(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v).context("cannot serialize the result")?;
    emit(&format!("{s}\n"))
}

fn main_inner(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => edgeopt_cli::train::demo_command(&args)?,
        Command::Train(args) => edgeopt_cli::train::train_command(&args)?,
        Command::Inspect {
            model,
            json,
            batch,
            device,
        } => {
            if batch == 0 {
                anyhow::bail!("--batch must be at least 1");
            }
            // The device first: a bad device file fails before the model is read.
            let device = device
                .map(|d| {
                    let from = if edgeopt_device::is_path(&d) {
                        d.clone()
                    } else {
                        "built-in".to_string()
                    };
                    edgeopt_device::resolve(&d).map(|dev| (dev, from))
                })
                .transpose()?;
            let g = load_model(&model)?;
            let mut report = inspect(&g, &model_name(&model), batch)?;
            if let Some((dev, from)) = &device {
                edgeopt_cli::inspect::check_device(&mut report, dev, from);
                edgeopt_cli::inspect::add_cost(&mut report, &g, dev);
            }
            if json {
                print_json(&report)?;
            } else {
                emit(&render(&report))?;
            }
        }
        Command::Eval {
            model,
            data,
            labels,
            scale,
            mean,
            std,
            layout,
            input_quant,
            no_input_quant,
            limit,
            threads,
            numerics,
            top_k,
            per_class,
            json,
        } => {
            let g = load_model(&model)?;
            let (x, y) = edgeopt_eval::load::labelled(&data, &labels)?;
            let cfg = EvalConfig {
                scale,
                mean,
                std,
                layout,
                input_quant: if input_quant {
                    InputQuant::On
                } else if no_input_quant {
                    InputQuant::Off
                } else {
                    InputQuant::Auto
                },
                limit,
                threads,
                progress: std::io::stderr().is_terminal(),
                exec: numerics.options(),
                top_k,
                per_class,
                ..EvalConfig::default()
            };
            let r = evaluate(&g, &model_name(&model), &x, &y, &cfg)?;
            if json {
                print_json(&r)?;
            } else {
                emit(&format!(
                    "{}: top-1 accuracy {:.2}% ({} / {}) in {:.1} s ({:.0} samples/s, {} threads; input: {})\n",
                    r.model,
                    r.accuracy,
                    r.correct,
                    r.samples,
                    r.seconds,
                    r.samples_per_second,
                    r.threads,
                    r.preprocessing
                ))?;
                emit(&edgeopt_cli::render_eval_extras(&r))?;
            }
        }
        Command::Run {
            model,
            inputs,
            outputs,
            arena,
            numerics,
        } => {
            let g = load_model(&model)?;
            let plan = run::plan_outputs(&g, &outputs)?;
            let results = run::run_files(&g, &inputs, &plan, arena, numerics.options())?;
            for (k, p) in &plan {
                let t = &results[*k];
                let _ = writeln!(
                    std::io::stderr(),
                    "wrote {} {} {:?}",
                    p.display(),
                    t.dtype(),
                    t.shape
                );
            }
        }
        Command::Quantize(args) => {
            let s = edgeopt_cli::quantize::quantize_command(&args)?;
            if args.json {
                print_json(&s)?;
            } else {
                emit(&edgeopt_cli::quantize::render_summary(&s))?;
            }
        }
        Command::Apply(args) => {
            let s = edgeopt_cli::apply::apply_command(&args, !args.json)?;
            if args.json {
                print_json(&s)?;
            } else {
                emit(&edgeopt_cli::apply::render_summary(&s))?;
            }
        }
        Command::Compile(args) => {
            let fp = edgeopt_cli::compile::compile_command(&args)?;
            if args.json {
                print_json(&fp)?;
            }
        }
        Command::Bench {
            model,
            threads,
            warmup,
            runs,
            seed,
            per_layer,
            numerics,
            json,
        } => {
            let g = load_model(&model)?;
            let cfg = BenchConfig {
                threads,
                warmup,
                runs,
                seed,
                per_layer,
                exec: numerics.options(),
            };
            let r = bench(&g, &model_name(&model), &cfg)?;
            if json {
                print_json(&r)?;
            } else {
                emit(&format!(
                    "{}: batch-1 latency median {:.3} ms, p90 {:.3} ms (mean {:.3}, min {:.3}, max {:.3}; {} runs after {} warm-up, {} thread{})\n",
                    r.model,
                    r.median_ms,
                    r.p90_ms,
                    r.mean_ms,
                    r.min_ms,
                    r.max_ms,
                    r.runs,
                    r.warmup,
                    r.threads,
                    if r.threads == 1 { "" } else { "s" }
                ))?;
                if let Some(layers) = &r.layers {
                    let total: f64 = layers.iter().map(|l| l.mean_ms).sum();
                    let mut t = format!(
                        "{:>4}  {:<36} {:<16} {:>10} {:>6}\n",
                        "#", "layer", "op", "mean ms", "share"
                    );
                    for (i, l) in layers.iter().enumerate() {
                        let share = if total > 0.0 {
                            100.0 * l.mean_ms / total
                        } else {
                            0.0
                        };
                        t += &format!(
                            "{i:>4}  {:<36} {:<16} {:>10.4} {share:>5.1}%\n",
                            l.name, l.op, l.mean_ms
                        );
                    }
                    emit(&t)?;
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match main_inner(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
