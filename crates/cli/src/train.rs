//! `edgeopt train` and `edgeopt demo`: argument structs (clap) and entry points over
//! the training engine (`edgeopt-train`); the exported model is checked on the
//! executor through the evaluator (`edgeopt-eval`).

use anyhow::{bail, Context};
use edgeopt_eval::{self as eval, DataLayout, EvalConfig};
use edgeopt_ir::{Graph, Tensor, TensorData};
use edgeopt_train::data::{self, Augment, Dataset, Normalize};
use edgeopt_train::model::Model;
use edgeopt_train::normalization::{embed_normalization, strip_embedded_normalization};
use edgeopt_train::optim::{OptimConfig, OptimizerKind, Schedule, ScheduleKind};
use edgeopt_train::trainer::{self, Eval, Objective, TrainConfig, TrainReport};
use edgeopt_train::{with_threads, TrainError};
use edgeopt_zoo::{ArchSpec, BuildOptions};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Model-zoo architecture: lenet300100, lenet5, resnet8, dscnn, mobilenetv1, cnn1d,
    /// autoencoder.
    #[arg(long)]
    pub arch: Option<String>,
    /// Architecture parameters, `key=value` comma-separated, lists with `:`
    /// (e.g. `widths=16:32:64,blocks=2,kernel=5`).
    #[arg(long, default_value = "")]
    pub arch_args: String,
    /// Start from this model (.onnx or .tflite): fine-tune it, or, with --arch, copy
    /// its weights into the architecture by parameter name.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Dataset folder with train_x/train_y and test_x/test_y arrays (.npy, .npy.gz)
    /// or MNIST-style idx files.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Explicit training inputs / labels (.npy, .npy.gz, idx[.gz]) or a .csv[.gz].
    #[arg(long)]
    pub train_x: Option<PathBuf>,
    /// Training labels: integer class indices, or float regression targets.
    #[arg(long)]
    pub train_y: Option<PathBuf>,
    /// Test inputs, evaluated after training.
    #[arg(long)]
    pub test_x: Option<PathBuf>,
    /// Test labels.
    #[arg(long)]
    pub test_y: Option<PathBuf>,
    /// CSV label column (name or index; default: the last column).
    #[arg(long)]
    pub label_col: Option<String>,
    /// CSV columns to ignore (names or indices, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub csv_drop: Vec<String>,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Samples per optimizer step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Base learning rate (default: 0.05 for SGD, 0.002 for AdamW).
    #[arg(long)]
    pub lr: Option<f32>,
    /// sgd (momentum) or adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay on conv/dense weights (L2 for SGD, decoupled for AdamW).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f32,
    /// cosine, step or constant.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Step schedule: decay every N epochs by --step-gamma.
    #[arg(long, default_value_t = 10)]
    pub step_every: usize,
    #[arg(long, default_value_t = 0.1)]
    pub step_gamma: f32,
    /// Linear learning-rate warm-up, in epochs (fractions allowed).
    #[arg(long, default_value_t = 0.0)]
    pub warmup_epochs: f32,
    /// Label smoothing of the cross-entropy (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// Clip the global gradient norm to this value.
    #[arg(long)]
    pub clip_norm: Option<f32>,
    /// Fraction of the training set held out for validation.
    #[arg(long, default_value_t = 0.0)]
    pub val_split: f32,
    /// Early stopping patience in epochs (needs --val-split).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Augmentations, comma-separated: crop[=pad], flip, shift[=samples], noise[=std].
    #[arg(long, value_delimiter = ',')]
    pub augment: Vec<String>,
    /// Input normalization: auto (the one embedded in an --init model exported by
    /// edgeopt, else standard), standard (per-channel mean/std of x/255 for u8 data, of
    /// x otherwise), unit (x/255), raw, or scale=S,mean=M1:M2..,std=S1:S2...
    #[arg(long, default_value = "auto")]
    pub normalize: String,
    /// Keep the normalization out of the exported model (by default it is embedded as
    /// Mul/Add nodes so the model takes raw inputs).
    #[arg(long)]
    pub no_embed_normalization: bool,
    /// Knowledge distillation from this teacher model (.onnx/.tflite).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Distillation temperature.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f32,
    /// Weight of the soft (teacher) loss; 1 - alpha weighs the hard labels.
    #[arg(long, default_value_t = 0.9)]
    pub alpha: f32,
    /// Train to reconstruct the input (autoencoders; labels are ignored).
    #[arg(long)]
    pub reconstruct: bool,
    /// Keep BatchNorm statistics fixed while training (fine-tuning).
    #[arg(long)]
    pub freeze_bn: bool,
    /// Train on a seeded random subset of this many samples.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Stop every epoch after this many batches.
    #[arg(long)]
    pub max_batches: Option<usize>,
    /// Seed of initialization, shuffling, augmentation and splits.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Checkpoint file written after every epoch (atomically).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue from --checkpoint if it exists.
    #[arg(long)]
    pub resume: bool,
    /// Write the training report (per-epoch logs, test metrics) as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
    /// Output model (.onnx).
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    // Defaults are also spelled out in `Default` below (used by tests).
    /// Where to write the trained model.
    #[arg(short, long, default_value = "edgeopt-demo.onnx")]
    pub output: PathBuf,
    /// Seed of the generated data, initialization and training.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Training epochs.
    #[arg(long, default_value_t = 8)]
    pub epochs: usize,
    /// Training windows per class (validation and test add 25% and 50% of it).
    #[arg(long, default_value_t = 600)]
    pub per_class: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            output: PathBuf::from("edgeopt-demo.onnx"),
            seed: 42,
            epochs: 8,
            per_class: 600,
            threads: None,
            quiet: true,
        }
    }
}

/// Imports .onnx or .tflite (and checks the graph), as every command does.
pub fn import_model(path: &Path) -> anyhow::Result<Graph> {
    crate::load_model(path)
}

/// Copies constants of `src` into same-named, same-shaped constants of `dst`.
fn copy_weights(dst: &mut Graph, src: &Graph) -> anyhow::Result<usize> {
    let idx = src.name_index();
    let mut n = 0;
    for v in dst.values.iter_mut() {
        if let (Some(d), Some(&si)) = (&v.data, idx.get(v.name.as_str())) {
            if let Some(s) = &src.values[si].data {
                if s.shape != d.shape {
                    bail!(
                        "--init: '{}' has shape {:?}, the architecture {:?}",
                        v.name,
                        s.shape,
                        d.shape
                    );
                }
                v.data = Some(Tensor::from_f32(s.shape.clone(), s.to_f32_vec())?);
                n += 1;
            }
        }
    }
    if n == 0 {
        bail!("--init shares no parameter names with the architecture");
    }
    Ok(n)
}

fn parse_list(s: &str) -> anyhow::Result<Vec<f32>> {
    s.split(':')
        .map(|x| {
            x.trim()
                .parse::<f32>()
                .with_context(|| format!("'{x}' is not a number"))
        })
        .collect()
}

/// Parses --normalize for a dataset.
pub fn normalization(spec: &str, d: &Dataset) -> anyhow::Result<Normalize> {
    let u8_data = matches!(d.x, data::Samples::U8(_));
    let unit = if u8_data { 1.0 / 255.0 } else { 1.0 };
    Ok(match spec {
        "standard" => Normalize::fit(d, unit),
        "unit" => Normalize {
            scale: unit,
            ..Normalize::identity()
        },
        "raw" | "none" => Normalize::identity(),
        s => {
            let mut n = Normalize::identity();
            for part in s.split(',') {
                let (k, v) = part
                    .split_once('=')
                    .with_context(|| format!("--normalize: '{part}'"))?;
                match k.trim() {
                    "scale" => n.scale = v.trim().parse()?,
                    "mean" => n.mean = parse_list(v)?,
                    "std" => n.std = parse_list(v)?,
                    k => bail!("--normalize: unknown key '{k}'"),
                }
            }
            if n.std.iter().any(|&s| s <= 0.0) {
                bail!("--normalize: std must be > 0");
            }
            n
        }
    })
}

fn parse_augment(items: &[String]) -> anyhow::Result<Augment> {
    let mut a = Augment::default();
    for it in items.iter().filter(|s| !s.trim().is_empty()) {
        let (k, v) = it
            .split_once('=')
            .map_or((it.as_str(), None), |(k, v)| (k, Some(v)));
        match k.trim() {
            "crop" => a.crop_pad = v.map_or(Ok(4), |v| v.parse())?,
            "flip" => a.hflip = true,
            "shift" => a.time_shift = v.map_or(Ok(32), |v| v.parse())?,
            "noise" => a.noise_std = v.map_or(Ok(0.05), |v| v.parse())?,
            k => bail!("--augment: unknown '{k}' (crop, flip, shift, noise)"),
        }
    }
    Ok(a)
}

fn fmt_eval(e: &Eval) -> String {
    match e.accuracy {
        Some(a) => format!(
            "loss {:.4}, accuracy {:.2}% ({} samples)",
            e.loss,
            100.0 * a,
            e.samples
        ),
        None => format!("loss {:.5} ({} samples)", e.loss, e.samples),
    }
}

/// Loads train (and optional test) data for a model input shape.
fn load_data(a: &TrainArgs, shape: &[usize]) -> anyhow::Result<(Dataset, Option<Dataset>)> {
    let load = |x: &Path, y: Option<&PathBuf>| -> anyhow::Result<Dataset> {
        let s = x.to_string_lossy();
        if s.ends_with(".csv") || s.ends_with(".csv.gz") {
            let (xt, yt) = data::read_csv(x, a.label_col.as_deref(), &a.csv_drop)?;
            return Ok(Dataset::from_arrays(xt, yt, shape)?);
        }
        if a.reconstruct && y.is_none() {
            // Autoencoders need no labels: targets are the inputs.
            let xt = data::read_array(x)?;
            let n = xt.shape.first().copied().unwrap_or(0);
            let yt = Tensor::new(vec![n], edgeopt_ir::TensorData::U8(vec![0; n]))?;
            return Ok(Dataset::from_arrays(xt, yt, shape)?);
        }
        let y = y.with_context(|| {
            format!(
                "{}: labels file missing (--train-y / --test-y)",
                x.display()
            )
        })?;
        Ok(data::load_pair(x, y, shape)?)
    };
    let (mut train, mut test) = (None, None);
    if let Some(dir) = &a.dataset {
        let f = data::find_dataset(dir)?;
        if let Some((x, y)) = &f.train {
            train = Some(data::load_pair(x, y, shape)?);
        }
        if let Some((x, y)) = &f.test {
            test = Some(data::load_pair(x, y, shape)?);
        }
    }
    if let Some(x) = &a.train_x {
        train = Some(load(x, a.train_y.as_ref())?);
    }
    if let Some(x) = &a.test_x {
        test = Some(load(x, a.test_y.as_ref())?);
    }
    let train = train.context("no training data: give --dataset DIR or --train-x/--train-y")?;
    Ok((train, test))
}

/// `edgeopt train`, on a pool of `--threads` threads.
pub fn train_command(a: &TrainArgs) -> anyhow::Result<()> {
    with_threads(a.threads, || train_inner(a))?
}

fn train_inner(a: &TrainArgs) -> anyhow::Result<()> {
    // Models exported by edgeopt carry their input normalization; training works on
    // normalized data, so it is stripped here (and reused, and re-embedded on export).
    let mut embedded = None;
    let graph = match (&a.arch, &a.init) {
        (Some(arch), init) => {
            let spec = ArchSpec::parse(arch, &a.arch_args)?;
            let mut g = spec.build(BuildOptions {
                seed: a.seed,
                softmax: false,
            })?;
            if let Some(p) = init {
                let mut src = import_model(p)?;
                embedded = strip_embedded_normalization(&mut src);
                let n = copy_weights(&mut g, &src)?;
                if !a.quiet {
                    eprintln!("initialized {n} parameters from {}", p.display());
                }
            }
            g
        }
        (None, Some(p)) => {
            let mut g = import_model(p)?;
            embedded = strip_embedded_normalization(&mut g);
            g
        }
        (None, None) => bail!("give --arch (model zoo) or --init (a model to fine-tune)"),
    };
    let device = edgeopt_train::cpu();
    let mut model = Model::new(graph, &device)?;
    model.bn_frozen = a.freeze_bn;
    let shape = model
        .input_shape(0)
        .context("the model input needs a fixed shape (besides the batch)")?;
    let (mut train, mut test) = load_data(a, &shape)?;
    if a.reconstruct {
        train = train.reconstruct();
        test = test.map(Dataset::reconstruct);
    }
    if let Some(n) = a.max_train {
        train = train.sample(n, a.seed);
    }
    let norm = match (a.normalize.as_str(), embedded) {
        // Weights trained on a normalization keep it.
        ("auto", Some(n)) => n,
        ("auto", None) => normalization("standard", &train)?,
        (spec, _) => normalization(spec, &train)?,
    };
    let (train, val) = if a.val_split > 0.0 {
        let (t, v) = train.split(a.val_split, a.seed)?;
        (t, Some(v))
    } else {
        (train, None)
    };
    let classifier = matches!(train.y, data::Targets::Classes(_));
    let objective = match (&a.teacher, classifier) {
        (Some(t), true) => {
            let tg = import_model(t)?;
            Objective::Distillation {
                teacher: Box::new(Model::new(tg, &device)?),
                temperature: a.temperature,
                alpha: a.alpha,
            }
        }
        (Some(_), false) => bail!("--teacher needs class labels"),
        (None, true) => Objective::Classification {
            label_smoothing: a.label_smoothing,
        },
        (None, false) => Objective::Regression,
    };
    let kind = match a.optimizer.as_str() {
        "sgd" => OptimizerKind::Sgd {
            momentum: a.momentum,
            nesterov: a.nesterov,
        },
        "adamw" | "adam" => OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        o => bail!("--optimizer {o}: expected sgd or adamw"),
    };
    let lr =
        a.lr.unwrap_or(if matches!(kind, OptimizerKind::Sgd { .. }) {
            0.05
        } else {
            2e-3
        });
    let steps_per_epoch = (train.len() / a.batch_size.max(1)).max(1);
    let steps_per_epoch = a
        .max_batches
        .map_or(steps_per_epoch, |m| m.min(steps_per_epoch));
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        optim: OptimConfig {
            kind,
            weight_decay: a.weight_decay,
            clip_norm: a.clip_norm,
            clip_value: None,
        },
        schedule: Schedule {
            kind: match a.schedule.as_str() {
                "cosine" => ScheduleKind::Cosine { min_lr: 0.0 },
                "step" => ScheduleKind::Step {
                    every: a.step_every,
                    gamma: a.step_gamma,
                },
                "constant" => ScheduleKind::Constant,
                s => bail!("--schedule {s}: expected cosine, step or constant"),
            },
            base_lr: lr,
            warmup_steps: (a.warmup_epochs * steps_per_epoch as f32).round() as usize,
        },
        seed: a.seed,
        patience: a.patience,
        augment: parse_augment(&a.augment)?,
        max_batches: a.max_batches,
        prefetch: 2,
        progress: !a.quiet,
        checkpoint: a.checkpoint.clone(),
        resume: a.resume,
        stop_after: None,
    };
    if !a.quiet {
        eprintln!(
            "training {} ({} trainable parameters) on {} samples{}",
            model.graph().name,
            model.trainable_count(),
            train.len(),
            val.as_ref()
                .map_or(String::new(), |v| format!(", validating on {}", v.len()))
        );
    }
    let report = trainer::fit(&mut model, &objective, &train, val.as_ref(), &norm, &cfg)?;
    let test_eval = match &test {
        Some(t) => {
            let e = trainer::evaluate(&model, &objective, t, &norm, 256)?;
            println!("test: {}", fmt_eval(&e));
            Some(e)
        }
        None => None,
    };
    let mut out = model.to_graph()?;
    if !a.no_embed_normalization {
        embed_normalization(&mut out, &norm, train.channel_axis)?;
    }
    edgeopt_onnx::export_file(&out, &a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    println!("wrote {}", a.output.display());
    if let Some(p) = &a.report {
        write_report(p, &report, test_eval.as_ref())?;
    }
    Ok(())
}

fn write_report(p: &Path, r: &TrainReport, test: Option<&Eval>) -> anyhow::Result<()> {
    let v = serde_json::json!({ "train": r, "test": test });
    std::fs::write(p, serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

/// Result of [`run_demo`].
pub struct DemoResult {
    pub test: Eval,
    pub report: TrainReport,
    pub graph: Graph,
    /// Accuracy of the exported graph run by edgeopt's own executor on the test split.
    pub runtime_accuracy: Option<f32>,
    pub seconds: f32,
}

/// The demo pipeline without printing (tests call this).
pub fn run_demo(a: &DemoArgs) -> Result<DemoResult, TrainError> {
    use edgeopt_train::vibration::{generate, VibrationConfig, AXES, CLASSES, LEN};
    let t0 = std::time::Instant::now();
    let pc = a.per_class.max(4);
    // Three independent generator streams: train, validation, held-out test.
    let train = generate(VibrationConfig {
        per_class: pc,
        seed: a.seed,
    });
    let val = generate(VibrationConfig {
        per_class: (pc / 4).max(1),
        seed: a.seed.wrapping_add(1),
    });
    let test = generate(VibrationConfig {
        per_class: (pc / 2).max(1),
        seed: a.seed.wrapping_add(2),
    });
    let spec = ArchSpec::Cnn1d(edgeopt_zoo::Cnn1dConfig {
        channels: AXES,
        length: LEN,
        widths: vec![16, 32, 32],
        kernel: 7,
        expansion: 1,
        classes: CLASSES.len(),
    });
    let graph = spec
        .build(BuildOptions {
            seed: a.seed,
            softmax: false,
        })
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let mut model = Model::new(graph, &edgeopt_train::cpu())?;
    let norm = Normalize::fit(&train, 1.0);
    let mut cfg = TrainConfig::new(a.epochs, 3e-3);
    cfg.optim = OptimConfig {
        kind: OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        weight_decay: 1e-4,
        clip_norm: Some(5.0),
        clip_value: None,
    };
    cfg.schedule.warmup_steps = (train.len() / cfg.batch_size).min(50);
    cfg.seed = a.seed;
    cfg.augment = Augment {
        time_shift: 64,
        noise_std: 0.05,
        ..Augment::default()
    };
    cfg.progress = !a.quiet;
    let objective = Objective::Classification {
        label_smoothing: 0.05,
    };
    let report = trainer::fit(&mut model, &objective, &train, Some(&val), &norm, &cfg)?;
    let test_eval = trainer::evaluate(&model, &objective, &test, &norm, 256)?;
    let mut graph = model.to_graph()?;
    embed_normalization(&mut graph, &norm, Some(0))
        .map_err(|e| TrainError::Config(e.to_string()))?;
    // Cross-check: the exported graph on edgeopt's executor (raw inputs).
    let runtime_accuracy = runtime_accuracy(&graph, &test).ok();
    Ok(DemoResult {
        test: test_eval,
        report,
        graph,
        runtime_accuracy,
        seconds: t0.elapsed().as_secs_f32(),
    })
}

/// Top-1 accuracy of `graph` on `d` (raw inputs) with edgeopt's reference executor
/// (LiteRT numerics), through the evaluator: batches of 256 on the current pool's
/// thread count.
pub fn runtime_accuracy(graph: &Graph, d: &Dataset) -> anyhow::Result<f32> {
    let data::Targets::Classes(labels) = &d.y else {
        bail!("needs class labels");
    };
    let mut shape = vec![d.len()];
    shape.extend(&d.shape);
    let x = match &d.x {
        data::Samples::U8(v) => Tensor::new(shape, TensorData::U8(v.clone()))?,
        data::Samples::F32(v) => Tensor::from_f32(shape, v.clone())?,
    };
    let y = Tensor::from_i64(
        vec![labels.len()],
        labels.iter().map(|&l| l as i64).collect(),
    )?;
    let cfg = EvalConfig {
        // The samples are in the model's layout already.
        layout: if d.shape.len() == 3 && d.channel_axis == Some(0) {
            DataLayout::Nchw
        } else {
            DataLayout::Nhwc
        },
        batch: 256,
        threads: Some(rayon::current_num_threads()),
        ..EvalConfig::default()
    };
    let r = eval::evaluate(graph, &graph.name, &x, &y, &cfg)?;
    Ok(r.correct as f32 / d.len().max(1) as f32)
}

/// `edgeopt demo`, on a pool of `--threads` threads.
pub fn demo_command(a: &DemoArgs) -> anyhow::Result<()> {
    with_threads(a.threads, || demo_inner(a))?
}

fn demo_inner(a: &DemoArgs) -> anyhow::Result<()> {
    if !a.quiet {
        eprintln!(
            "edgeopt demo: machine-fault classification from tri-axial vibration windows\n\
             classes: {}; {} training windows per class (seed {})",
            edgeopt_train::vibration::CLASSES.join(", "),
            a.per_class,
            a.seed
        );
    }
    let r = run_demo(a)?;
    println!("held-out test: {}", fmt_eval(&r.test));
    if let Some(acc) = r.runtime_accuracy {
        println!(
            "exported model on edgeopt's executor: accuracy {:.2}%",
            100.0 * acc
        );
    }
    match edgeopt_runtime::profile::profile_batch(&r.graph, 1) {
        Ok(p) => {
            println!(
                "model: {} parameters ({:.1} KiB as f32), {} MACs per window",
                p.total_params,
                p.total_weight_bytes as f64 / 1024.0,
                p.total_macs
            );
            match edgeopt_runtime::planner::plan_for_batch(&r.graph, 1) {
                Ok(plan) => println!(
                    "tensor arena (f32, batch 1): {:.1} KiB (naive {:.1} KiB)",
                    plan.arena_bytes as f64 / 1024.0,
                    plan.naive_bytes as f64 / 1024.0
                ),
                Err(e) => println!("tensor arena: unavailable ({e})"),
            }
        }
        Err(e) => println!(
            "profile unavailable: {e} ({} parameters)",
            r.graph.param_count()
        ),
    }
    edgeopt_onnx::export_file(&r.graph, &a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    println!("wrote {} in {:.1} s total", a.output.display(), r.seconds);
    Ok(())
}

#[derive(clap::Parser)]
struct TrainArgsParser {
    #[command(flatten)]
    args: TrainArgs,
}

/// Parses `edgeopt train` arguments (without the program and subcommand names), for
/// tests and for other components that drive training by its CLI arguments.
pub fn parse_train_args<I, S>(args: I) -> anyhow::Result<TrainArgs>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    let it =
        std::iter::once(std::ffi::OsString::from("train")).chain(args.into_iter().map(Into::into));
    Ok(TrainArgsParser::try_parse_from(it)?.args)
}
