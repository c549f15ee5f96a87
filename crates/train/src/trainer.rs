//! The training loop: epochs of shuffled, augmented batches; loss + extra hook losses;
//! backward; clipped, scheduled optimizer step; validation, early stopping with
//! best-weights restore; atomic per-epoch checkpoints and resume.

use crate::checkpoint::{Checkpoint, Header};
use crate::data::{Augment, Dataset, Loader, Normalize, Targets};
use crate::dyn_tensor::{DynTensor, Result};
use crate::loss;
use crate::model::{Mode, Model};
use crate::optim::{OptimConfig, Optimizer, Schedule};
use crate::TrainError;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What the model is trained to do.
pub enum Objective {
    /// Cross-entropy on class labels, with label smoothing.
    Classification { label_smoothing: f32 },
    /// Mean squared error against float targets (or the input itself when the
    /// dataset's targets are the inputs, for autoencoders).
    Regression,
    /// Knowledge distillation from a teacher model (run in eval mode, no gradients).
    Distillation {
        teacher: Box<Model>,
        temperature: f32,
        alpha: f32,
    },
}

impl Objective {
    fn is_classification(&self) -> bool {
        !matches!(self, Objective::Regression)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optim: OptimConfig,
    pub schedule: Schedule,
    pub seed: u64,
    /// Early stopping: stop after this many epochs without validation improvement
    /// (and restore the best weights). Needs a validation set.
    pub patience: Option<usize>,
    pub augment: Augment,
    /// Stop each epoch after this many batches (quick runs / CI subsampling).
    pub max_batches: Option<usize>,
    /// Batches assembled ahead by the loader thread (no effect on results, so not
    /// part of the checkpoint fingerprint).
    #[serde(skip)]
    pub prefetch: usize,
    /// Show a progress bar (loss, accuracy, samples/s, ETA) on stderr.
    #[serde(skip)]
    pub progress: bool,
    /// Per-epoch checkpoint file; with `resume`, continue from it if it exists.
    #[serde(skip)]
    pub checkpoint: Option<PathBuf>,
    #[serde(skip)]
    pub resume: bool,
    /// Return after this many epochs in this call (time slicing; with a checkpoint
    /// a later call with `resume` continues). Not part of the configuration
    /// fingerprint.
    #[serde(skip)]
    pub stop_after: Option<usize>,
}

impl TrainConfig {
    /// SGD + momentum 0.9, cosine schedule, batch 64: a sane default for small CNNs.
    pub fn new(epochs: usize, lr: f32) -> Self {
        TrainConfig {
            epochs,
            batch_size: 64,
            optim: OptimConfig {
                kind: crate::optim::OptimizerKind::Sgd {
                    momentum: 0.9,
                    nesterov: false,
                },
                weight_decay: 5e-4,
                clip_norm: None,
                clip_value: None,
            },
            schedule: Schedule {
                kind: crate::optim::ScheduleKind::Cosine { min_lr: 0.0 },
                base_lr: lr,
                warmup_steps: 0,
            },
            seed: 0,
            patience: None,
            augment: Augment::default(),
            max_batches: None,
            prefetch: 2,
            progress: false,
            checkpoint: None,
            resume: false,
            stop_after: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f32,
    pub train_loss: f32,
    pub train_accuracy: Option<f32>,
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    pub seconds: f32,
    pub samples_per_sec: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainReport {
    pub epochs: Vec<EpochLog>,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    pub resumed_from: Option<usize>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Eval {
    pub loss: f32,
    /// Top-1 accuracy (classification only).
    pub accuracy: Option<f32>,
    pub samples: usize,
}

/// The training output as `[N, K]` (flattening trailing dims).
fn as_2d(t: DynTensor) -> Result<Tensor<2>> {
    let d = t.dims();
    let n = d.first().copied().unwrap_or(1);
    let rest: usize = d.iter().skip(1).product();
    t.reshape(&[n, rest])?.r2()
}

fn targets_tensor(y: &Targets, n: usize, device: &burn::tensor::Device) -> Result<Tensor<2>> {
    match y {
        Targets::Values { data, dim } => Ok(Tensor::from_data(
            TensorData::new(data.clone(), [n, *dim]),
            device,
        )),
        _ => Err(TrainError::Config(
            "regression needs float targets, the dataset has class labels".into(),
        )),
    }
}

/// Task loss of one batch.
fn batch_loss(
    objective: &Objective,
    out: Tensor<2>,
    y: &Targets,
    x_for_teacher: Option<&DynTensor>,
) -> Result<Tensor<1>> {
    match (objective, y) {
        (Objective::Classification { label_smoothing }, Targets::Classes(c)) => {
            loss::cross_entropy(out, c, *label_smoothing)
        }
        (Objective::Regression, y) => {
            let n = out.dims()[0];
            let t = targets_tensor(y, n, &out.device())?;
            loss::mse(out, t)
        }
        (
            Objective::Distillation {
                teacher,
                temperature,
                alpha,
            },
            Targets::Classes(c),
        ) => {
            let x = x_for_teacher
                .ok_or_else(|| TrainError::Config("distillation needs the batch input".into()))?
                .clone()
                .inner();
            let t = teacher.forward(vec![x], Mode::Eval, false)?;
            let tl = as_2d(t.outputs[0].clone())?;
            let tl = Tensor::from_data(tl.into_data(), &out.device());
            loss::distillation(out, tl, c, *temperature, *alpha)
        }
        _ => Err(TrainError::Config(
            "classification objectives need class labels".into(),
        )),
    }
}

/// Loss and accuracy of `model` on `data` in eval mode.
pub fn evaluate(
    model: &Model,
    objective: &Objective,
    data: &Dataset,
    norm: &Normalize,
    batch: usize,
) -> Result<Eval> {
    let d = Arc::new(data.clone());
    let loader = Loader::new(d, batch, norm.clone(), Augment::default(), None, false, 2);
    let (mut loss_sum, mut correct, mut n) = (0f64, 0usize, 0usize);
    for b in loader {
        let bs = b.shape[0];
        let x = DynTensor::from_vec(b.x, &b.shape, model.device())?;
        let out = model.forward(vec![x.clone()], Mode::Eval, false)?;
        let logits = as_2d(out.outputs[0].clone())?;
        if let (true, Targets::Classes(c)) = (objective.is_classification(), &b.y) {
            let v = DynTensor::R2(logits.clone()).to_vec()?;
            correct += loss::correct(&v, logits.dims()[1], c);
        }
        let l: f32 = batch_loss(objective, logits, &b.y, Some(&x))?.into_scalar::<f32>();
        loss_sum += l as f64 * bs as f64;
        n += bs;
    }
    if n == 0 {
        return Err(TrainError::Data("evaluation set is empty".into()));
    }
    Ok(Eval {
        loss: (loss_sum / n as f64) as f32,
        accuracy: objective
            .is_classification()
            .then(|| correct as f32 / n as f32),
        samples: n,
    })
}

/// Runs the model over `data` in eval mode and returns the flattened outputs
/// (`[N, K]` row-major) for every sample.
pub fn predict(model: &Model, data: &Dataset, norm: &Normalize, batch: usize) -> Result<Vec<f32>> {
    let loader = Loader::new(
        Arc::new(data.clone()),
        batch,
        norm.clone(),
        Augment::default(),
        None,
        false,
        2,
    );
    let mut all = Vec::new();
    for b in loader {
        let x = DynTensor::from_vec(b.x, &b.shape, model.device())?;
        let out = model.forward(vec![x], Mode::Eval, false)?;
        all.extend(out.outputs[0].to_vec()?);
    }
    Ok(all)
}

/// Everything checkpointed besides tensors.
struct Progress {
    epoch: usize,
    step: usize,
    best: Option<f32>,
    best_epoch: Option<usize>,
    bad: usize,
    history: Vec<EpochLog>,
}

fn save_checkpoint(
    path: &std::path::Path,
    model: &Model,
    opt: &Optimizer,
    best: &Option<Vec<DynTensor>>,
    p: &Progress,
    fingerprint: &str,
) -> Result<()> {
    let mut named: Vec<(String, &DynTensor)> = Vec::new();
    for (i, pi) in model.params.iter().enumerate() {
        named.push((format!("param:{}", pi.name), model.param(i)));
        if let Some(m) = &opt.m1[i] {
            named.push((format!("m1:{}", pi.name), m));
        }
        if let Some(m) = &opt.m2[i] {
            named.push((format!("m2:{}", pi.name), m));
        }
        if let Some(b) = best {
            named.push((format!("best:{}", pi.name), &b[i]));
        }
    }
    let header = Header {
        epoch: p.epoch,
        step: p.step,
        opt_steps: opt.steps,
        best_metric: p.best,
        best_epoch: p.best_epoch,
        bad_epochs: p.bad,
        fingerprint: fingerprint.to_string(),
        act_ranges: model
            .act_ranges
            .iter()
            .map(|(&k, &(a, b))| (k, a, b))
            .collect(),
        history: serde_json::to_string(&p.history).unwrap_or_default(),
        entries: vec![],
    };
    Checkpoint::new(header, named)?.save(path)
}

/// Trains `model` in place. `val` drives early stopping and best-weights restore.
pub fn fit(
    model: &mut Model,
    objective: &Objective,
    train: &Dataset,
    val: Option<&Dataset>,
    norm: &Normalize,
    cfg: &TrainConfig,
) -> Result<TrainReport> {
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(TrainError::Config(
            "epochs and batch size must be > 0".into(),
        ));
    }
    if train.is_empty() {
        return Err(TrainError::Data("training set is empty".into()));
    }
    if cfg.patience.is_some() && val.is_none() {
        return Err(TrainError::Config(
            "early stopping needs a validation set".into(),
        ));
    }
    model.check_hooks()?;
    model.apply_masks()?;
    let mut opt = Optimizer::new(cfg.optim, model.params.len())?;
    let train_arc = Arc::new(train.clone());
    let full_batches = {
        let b = train.len().div_ceil(cfg.batch_size);
        // drop_last removes a short tail batch
        let b = if !train.len().is_multiple_of(cfg.batch_size) && b > 1 {
            b - 1
        } else {
            b
        };
        cfg.max_batches.map_or(b, |m| m.min(b))
    };
    let total_steps = full_batches * cfg.epochs;
    let fingerprint = serde_json::to_string(cfg).unwrap_or_default();
    let mut p = Progress {
        epoch: 0,
        step: 0,
        best: None,
        best_epoch: None,
        bad: 0,
        history: Vec::new(),
    };
    let mut best_params: Option<Vec<DynTensor>> = None;
    let mut resumed_from = None;
    if let (Some(path), true) = (&cfg.checkpoint, cfg.resume) {
        if path.exists() {
            let ck = Checkpoint::load(path)?;
            if ck.header.fingerprint != fingerprint {
                return Err(TrainError::Checkpoint {
                    path: path.display().to_string(),
                    msg: "was written with a different training configuration".into(),
                });
            }
            let dev = model.device().clone();
            let mut best = Vec::new();
            for i in 0..model.params.len() {
                let name = model.params[i].name.clone();
                let t = ck.tensor(&format!("param:{name}"), &dev)?.ok_or_else(|| {
                    TrainError::Checkpoint {
                        path: path.display().to_string(),
                        msg: format!("has no parameter '{name}'"),
                    }
                })?;
                model.set_param(i, t)?;
                opt.m1[i] = ck.tensor(&format!("m1:{name}"), &dev)?;
                opt.m2[i] = ck.tensor(&format!("m2:{name}"), &dev)?;
                if let Some(b) = ck.tensor(&format!("best:{name}"), &dev)? {
                    best.push(b);
                }
            }
            if best.len() == model.params.len() {
                best_params = Some(best);
            }
            opt.steps = ck.header.opt_steps;
            model.act_ranges = ck
                .header
                .act_ranges
                .iter()
                .map(|&(k, a, b)| (k, (a, b)))
                .collect();
            p = Progress {
                epoch: ck.header.epoch,
                step: ck.header.step,
                best: ck.header.best_metric,
                best_epoch: ck.header.best_epoch,
                bad: ck.header.bad_epochs,
                history: serde_json::from_str(&ck.header.history).unwrap_or_default(),
            };
            resumed_from = Some(p.epoch);
        }
    }
    let ad = model.device().clone().autodiff();
    let mut stopped_early = false;
    let mut ran = 0;
    while p.epoch < cfg.epochs {
        if cfg.stop_after.is_some_and(|n| ran >= n) {
            break;
        }
        ran += 1;
        if let (Some(pat), true) = (cfg.patience, p.bad > 0) {
            if p.bad >= pat {
                stopped_early = true;
                break;
            }
        }
        let epoch = p.epoch;
        let t0 = Instant::now();
        let seed = cfg
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(epoch as u64 + 1);
        let loader = Loader::new(
            train_arc.clone(),
            cfg.batch_size,
            norm.clone(),
            cfg.augment.clone(),
            Some(seed),
            true,
            cfg.prefetch,
        );
        let bar = if cfg.progress {
            let b = indicatif::ProgressBar::new(full_batches as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
            Some(b)
        } else {
            None
        };
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut lr = cfg.schedule.base_lr;
        for (bi, b) in loader.enumerate() {
            if bi >= full_batches {
                break;
            }
            lr = cfg.schedule.lr(p.step, total_steps, full_batches);
            let bs = b.shape[0];
            let x = DynTensor::from_vec(b.x, &b.shape, &ad)?;
            let mut out = model.forward(vec![x.clone()], Mode::Train, true)?;
            let logits = as_2d(out.outputs[0].clone())?;
            let mut l = batch_loss(objective, logits.clone(), &b.y, Some(&x))?;
            if let Some(extra) = out.extra_loss(&model.hooks)? {
                l = l + extra;
            }
            let grads = l.backward();
            let lv: f32 = l.inner().into_scalar::<f32>();
            if !lv.is_finite() {
                return Err(TrainError::Config(format!(
                    "loss became {lv} at epoch {} step {bi} (lower the learning rate)",
                    epoch + 1
                )));
            }
            let g: Vec<Option<DynTensor>> = out
                .leaves
                .iter()
                .map(|leaf| leaf.as_ref().and_then(|t| t.grad(&grads)))
                .collect();
            model.commit(&mut out);
            opt.step(model, g, lr)?;
            if let (true, Targets::Classes(c)) = (objective.is_classification(), &b.y) {
                let v = DynTensor::R2(logits.inner()).to_vec()?;
                correct += loss::correct(&v, v.len() / bs, c);
            }
            loss_sum += lv as f64 * bs as f64;
            seen += bs;
            p.step += 1;
            if let Some(bar) = &bar {
                let rate = seen as f32 / t0.elapsed().as_secs_f32().max(1e-6);
                let acc = if objective.is_classification() {
                    format!(" acc {:.2}%", 100.0 * correct as f32 / seen as f32)
                } else {
                    String::new()
                };
                bar.set_message(format!(
                    "loss {:.4}{acc} {rate:.0} samples/s",
                    loss_sum / seen as f64
                ));
                bar.inc(1);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let secs = t0.elapsed().as_secs_f32();
        let v = match val {
            Some(v) => Some(evaluate(
                model,
                objective,
                v,
                norm,
                cfg.batch_size.max(256),
            )?),
            None => None,
        };
        let log = EpochLog {
            epoch: epoch + 1,
            lr,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_accuracy: objective
                .is_classification()
                .then(|| correct as f32 / seen.max(1) as f32),
            val_loss: v.map(|e| e.loss),
            val_accuracy: v.and_then(|e| e.accuracy),
            seconds: secs,
            samples_per_sec: seen as f32 / secs.max(1e-6),
        };
        if cfg.progress {
            eprintln!("{}", format_log(&log));
        }
        if let Some(e) = v {
            // Higher accuracy is better; for regression, lower loss.
            let metric = e.accuracy.unwrap_or(-e.loss);
            if p.best.is_none_or(|b| metric > b) {
                p.best = Some(metric);
                p.best_epoch = Some(epoch + 1);
                p.bad = 0;
                if cfg.patience.is_some() {
                    best_params = Some(
                        (0..model.params.len())
                            .map(|i| model.param(i).clone())
                            .collect(),
                    );
                }
            } else {
                p.bad += 1;
            }
        }
        p.history.push(log);
        p.epoch += 1;
        if let Some(path) = &cfg.checkpoint {
            save_checkpoint(path, model, &opt, &best_params, &p, &fingerprint)?;
        }
    }
    let finished = stopped_early || p.epoch >= cfg.epochs;
    if let (Some(best), Some(_), true) = (&best_params, cfg.patience, finished) {
        for (i, t) in best.iter().enumerate() {
            model.set_param(i, t.clone())?;
        }
    }
    Ok(TrainReport {
        epochs: p.history,
        best_epoch: p.best_epoch,
        stopped_early,
        resumed_from,
    })
}

/// One line per epoch for logs and the CLI.
pub fn format_log(l: &EpochLog) -> String {
    let mut s = format!(
        "epoch {:>3}  lr {:.2e}  loss {:.4}",
        l.epoch, l.lr, l.train_loss
    );
    if let Some(a) = l.train_accuracy {
        s += &format!("  acc {:.2}%", 100.0 * a);
    }
    if let Some(vl) = l.val_loss {
        s += &format!("  val_loss {vl:.4}");
    }
    if let Some(va) = l.val_accuracy {
        s += &format!("  val_acc {:.2}%", 100.0 * va);
    }
    s += &format!("  {:.1}s  {:.0} samples/s", l.seconds, l.samples_per_sec);
    s
}

/// Per-channel mean absolute activation (channel axis 1) of the named values over
/// `data`, in eval mode: the statistic activation-based pruning ranks channels by.
/// Returns one vector per name, in the order given.
pub fn channel_activation_means(
    model: &mut Model,
    data: &Dataset,
    norm: &Normalize,
    batch: usize,
    names: &[&str],
) -> Result<Vec<Vec<f32>>> {
    let saved = std::mem::take(&mut model.hooks.taps);
    for n in names {
        model.hooks.taps.insert(n.to_string());
    }
    let run = (|| {
        model.check_hooks()?;
        let loader = Loader::new(
            Arc::new(data.clone()),
            batch,
            norm.clone(),
            Augment::default(),
            None,
            false,
            2,
        );
        let mut sums: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        let mut counts = vec![0usize; names.len()];
        for b in loader {
            let x = DynTensor::from_vec(b.x, &b.shape, model.device())?;
            let out = model.forward(vec![x], Mode::Eval, false)?;
            for (k, n) in names.iter().enumerate() {
                let t = out
                    .taps
                    .get(*n)
                    .ok_or_else(|| TrainError::Config(format!("no activation '{n}'")))?;
                let d = t.dims();
                if d.len() < 2 {
                    return Err(TrainError::Config(format!("'{n}' has no channel axis")));
                }
                let c = d[1];
                let inner: usize = d[2..].iter().product();
                let v = t.to_vec()?;
                if sums[k].is_empty() {
                    sums[k] = vec![0.0; c];
                }
                for (i, x) in v.iter().enumerate() {
                    sums[k][(i / inner) % c] += x.abs() as f64;
                }
                counts[k] += d[0] * inner;
            }
        }
        Ok(sums
            .into_iter()
            .zip(counts)
            .map(|(s, n)| {
                s.into_iter()
                    .map(|x| (x / n.max(1) as f64) as f32)
                    .collect()
            })
            .collect())
    })();
    model.hooks.taps = saved;
    run
}
