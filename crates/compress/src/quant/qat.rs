//! Quantization-aware training (QAT): fine-tune a prepared float graph while its
//! forward pass sees exactly what the integer graph of a [`QuantPlan`] will compute.
//!
//! [`fine_tune`] lowers the prepared graph to the training engine, installs
//! fake-quant hooks with the straight-through estimator that emulate the plan:
//! - weights: each planned weight on its grid with the integer graph's arithmetic
//!   ([`edgeopt_train::hooks::quantize_weights`]: symmetric narrow range per output
//!   channel for int8 (max-abs scale) and int4 (`WeightFormat::qmax`, clipping scale
//!   searched for least squared error, as `apply`), TWN ternary, mean-abs binary; per
//!   tensor, per channel or per group as planned);
//! - activations: every value of [`QuantPlan::ranges`] at its range, with TFLite's
//!   nudged asymmetric int8 parameters ([`super::activation_params`]'s arithmetic) or
//!   symmetric int16; the ranges start from the PTQ calibration and either stay fixed
//!   ([`RangeMode::Fixed`]) or follow an exponential moving average of the batch ranges
//!   ([`RangeMode::Ema`]);
//!
//! then trains and returns the float graph with the new weights and the plan with the
//! (possibly refined) ranges, ready for `apply`.
//!
//! The returned weights are snapped onto their grid ([`QatConfig::snap_weights`]): the
//! snapped tensor is a fixed point of the weight quantizer, so `apply` reproduces the
//! fake-quant weights whether it uses the max-abs, clipping-search, TWN or mean-abs
//! rule,
//! and the fake-quant accuracy predicts the integer accuracy up to activation
//! requantization rounding (at most one step per layer).
//!
//! With [`QatConfig::learn_scales`], int8/int4 weight scales are learned instead (LSQ,
//! Esser et al. 2020, [`edgeopt_train::hooks::LearnedStep`]): each channel's step
//! starts at the PTQ scale and is trained with the weights; the learned steps are
//! written into [`QuantPlan::weight_scales`] and the weights snapped onto them, so
//! `apply` builds exactly the integer weights training saw.
//!
//! fp16 weights are not fake-quantized while training (the half-precision rounding
//! error, 2^-11 relative, is far below the optimizer's noise) but are rounded to f16
//! when written back, so the stored weights are exactly representable.

use super::{ActivationFormat, Granularity, QuantPlan, WeightFormat, WeightSpec};
use crate::{CompressError, Result};
use edgeopt_ir::{DType, Graph, Layout, Op, UnaryKind};
use edgeopt_train::data::{find_dataset, load_pair, Augment, Dataset, Normalize};
use edgeopt_train::hooks::{quantize_weights, FakeQuant, LearnedStep, WeightGrid};
use edgeopt_train::optim::OptimizerKind;
use edgeopt_train::trainer::{fit, Objective, TrainConfig, TrainReport};
use edgeopt_train::{Model, ParamRole};
use std::path::PathBuf;

/// How activation ranges behave during QAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeMode {
    /// The plan's (calibrated) ranges, unchanged: the integer graph gets exactly the
    /// parameters training saw.
    Fixed,
    /// Start from the plan's ranges and track an exponential moving average of each
    /// batch's min/max (momentum `edgeopt_train::model::OBSERVER_MOMENTUM`); the
    /// final averages are written back into the plan (int8 activations only).
    Ema,
}

/// The optimizer of the fine-tuning run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QatOptimizer {
    Sgd { momentum: f32 },
    AdamW,
}

/// Knowledge distillation from the float model (Hinton et al. 2015): the loss is
/// `alpha * T^2 * KL(p_float(T) || p_quant(T)) + (1 - alpha) * CE(labels)`. The teacher
/// is the prepared float graph QAT starts from, run without fake quantization on the
/// same (augmented) batch: its soft targets carry far more information per image than
/// the label, which is what lets a few epochs of QAT recover int4's loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distill {
    pub temperature: f32,
    pub alpha: f32,
}

/// Where the training data comes from.
#[derive(Debug, Clone)]
pub enum QatData {
    /// A dataset folder (`train_x`/`train_y` arrays, a `train*/` subfolder, or MNIST
    /// idx files), loaded for the graph's input shape.
    Dir(PathBuf),
    /// An already loaded dataset.
    Loaded(Dataset),
}

#[derive(Debug, Clone)]
pub struct QatConfig {
    pub epochs: usize,
    /// Base learning rate (cosine decay to 0 over the run).
    pub lr: f32,
    pub optimizer: QatOptimizer,
    /// Weight decay on conv/dense weights (decoupled for AdamW).
    pub weight_decay: f32,
    pub batch_size: usize,
    pub data: QatData,
    /// Normalization between the dataset and the graph input. A prepared graph takes
    /// the integer graph's own input, so this is usually the identity (raw values).
    pub normalize: Normalize,
    pub augment: Augment,
    pub ranges: RangeMode,
    /// Linear learning-rate warm-up over this many optimizer steps (then cosine).
    pub warmup_steps: usize,
    /// Distill from the float model (classification only); `None`: labels only.
    pub distill: Option<Distill>,
    /// Learn the int8/int4 weight scales (LSQ) and export them into the plan's
    /// `weight_scales`; otherwise each step re-derives them by the PTQ rule.
    pub learn_scales: bool,
    /// Write the weights back on their quantization grid (see the module doc).
    pub snap_weights: bool,
    pub seed: u64,
    /// Worker threads of the training backend: a pool built for this run (None: the
    /// caller's current pool).
    pub threads: Option<usize>,
    pub progress: bool,
    /// Stop each epoch after this many batches (quick runs).
    pub max_batches: Option<usize>,
}

impl QatConfig {
    /// AdamW at `lr` with cosine decay, batch 64, no weight decay, fixed ranges,
    /// snapped weights, no augmentation: a short fine-tune that starts from a trained
    /// model and should not move far from it.
    pub fn new(epochs: usize, lr: f32, data: QatData) -> Self {
        QatConfig {
            epochs,
            lr,
            optimizer: QatOptimizer::AdamW,
            weight_decay: 0.0,
            batch_size: 64,
            data,
            normalize: Normalize::identity(),
            augment: Augment::default(),
            ranges: RangeMode::Fixed,
            warmup_steps: 0,
            distill: None,
            learn_scales: false,
            snap_weights: true,
            seed: 0,
            threads: None,
            progress: false,
            max_batches: None,
        }
    }

    /// The recipe measured in bench/results/qat-*.md for `plan`'s weight formats:
    /// - int8/int4 weights: learned scales (LSQ), distillation from the float model
    ///   (T = 4, alpha = 0.9; only when `classification`, i.e. the training data has
    ///   class labels), AdamW 2e-4 with 30 warm-up steps then cosine. On the MLPerf
    ///   ResNet-8 at int4 this took 3 epochs of QAT from 74.6% (PTQ) to ≥ 85%, where
    ///   plain QAT at 1e-4 reached 82.8%.
    /// - ternary/binary weights present: plain QAT (the TWN / mean-abs rules each
    ///   step), AdamW 1e-3 cosine: those weights move far from the float ones.
    ///
    /// Augmentation is left to the caller (it depends on the data: crop + flip suit
    /// CIFAR-like images, not digits or signals).
    pub fn recommended(
        epochs: usize,
        data: QatData,
        plan: &QuantPlan,
        classification: bool,
    ) -> Self {
        let low_bit = plan
            .weights
            .values()
            .any(|w| matches!(w.format, WeightFormat::Ternary | WeightFormat::Binary));
        if low_bit {
            return QatConfig::new(epochs, 1e-3, data);
        }
        let mut c = QatConfig::new(epochs, 2e-4, data);
        c.learn_scales = true;
        c.warmup_steps = 30;
        c.distill = classification.then_some(Distill {
            temperature: 4.0,
            alpha: 0.9,
        });
        c
    }
}

/// The training grid of a weight format (`None`: not fake-quantized).
fn grid_of(format: WeightFormat) -> Option<WeightGrid> {
    match format {
        // The same rules as `apply` (weights.rs): max-abs for int8, the clipping
        // search for int4, so QAT starts exactly at the PTQ weights.
        WeightFormat::Int8 => Some(WeightGrid::Int { qmax: 127 }),
        WeightFormat::Int4 => Some(WeightGrid::IntClipped { qmax: 7 }),
        WeightFormat::Ternary => Some(WeightGrid::Ternary),
        WeightFormat::Binary => Some(WeightGrid::Binary),
        WeightFormat::Fp16 | WeightFormat::Float => None,
    }
}

/// The weight's output-channel axis in the lowered model.
fn weight_axis(model: &Model, name: &str) -> Result<usize> {
    let i = model.param_index(name).ok_or_else(|| {
        CompressError::Unsupported(format!(
            "QAT: planned weight '{name}' is not a trainable float constant of the graph"
        ))
    })?;
    match model.params[i].role {
        ParamRole::Weight { out_axis } => Ok(out_axis),
        r => Err(CompressError::Unsupported(format!(
            "QAT: planned weight '{name}' is a {r:?} parameter, not a conv/dense weight"
        ))),
    }
}

/// `(channel axis, group)` of a spec for a weight whose output axis is `axis`.
fn blocks(spec: &WeightSpec, axis: usize) -> (Option<usize>, Option<usize>) {
    match spec.granularity {
        Granularity::Tensor => (None, None),
        Granularity::Channel => (Some(axis), None),
        Granularity::Group(n) => (Some(axis), Some(n)),
    }
}

/// Name of the LSQ step multiplier of weight `name` (an auxiliary model parameter).
fn step_param_name(name: &str) -> String {
    format!("{name}::lsq_step")
}

/// Installs an LSQ hook on weight `name`: steps from the plan's `weight_scales` when
/// it has them, else the PTQ scales of `apply`'s quantizer (so training starts at the
/// PTQ weights).
fn install_learned_step(
    model: &mut Model,
    plan: &QuantPlan,
    name: &str,
    spec: &WeightSpec,
    axis: usize,
) -> Result<()> {
    let qmax = spec.format.qmax().unwrap_or(127);
    let i = model.param_index(name).expect("checked by weight_axis");
    let t = model.param(i).to_ir()?;
    let shape = t.shape.clone();
    if let Granularity::Group(g) = spec.granularity {
        return Err(CompressError::Unsupported(format!(
            "QAT: learned scales are per channel or per tensor, not group:{g} ('{name}')"
        )));
    }
    if axis != 0 || shape.is_empty() {
        return Err(CompressError::Unsupported(format!(
            "QAT: learned scales need the output channels on axis 0 ('{name}')"
        )));
    }
    let channels = shape[0];
    let scales = match plan.weight_scales.get(name) {
        Some(s) => s.clone(),
        None => super::weights::quantize(&t.to_f32_vec(), channels, *spec)?.scales,
    };
    let mut sshape = vec![1usize; shape.len()];
    if spec.granularity == Granularity::Channel {
        sshape[0] = channels;
    }
    let n: usize = sshape.iter().product();
    if scales.len() != n || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(CompressError::Invalid(format!(
            "QAT: weight '{name}' needs {n} positive scales, has {:?}",
            scales.len()
        )));
    }
    let per = t.len() / n;
    let pname = step_param_name(name);
    model.add_aux_param(
        &pname,
        edgeopt_ir::Tensor::from_f32(sshape.clone(), vec![1.0; n])?,
    )?;
    model.hooks.learn_step(
        name.to_string(),
        LearnedStep {
            param: pname,
            init: edgeopt_ir::Tensor::from_f32(sshape, scales)?,
            qmax,
            // LSQ's gradient scale 1/sqrt(N * Qp), N = weights per step.
            grad_scale: 1.0 / ((per * qmax as usize) as f32).sqrt(),
        },
    );
    Ok(())
}

/// Lowers `prepared` and installs the fake-quant hooks that emulate `plan`. The model
/// evaluates (Eval mode) the fake-quant accuracy of the plan, and trains with the STE.
/// Weights with explicit scales in the plan (learned by QAT) are quantized with them.
pub fn qat_model(prepared: &Graph, plan: &QuantPlan, ranges: RangeMode) -> Result<Model> {
    qat_model_with(prepared, plan, ranges, false)
}

/// [`qat_model`]; with `learn_scales`, every int8/int4 weight gets a learned step
/// (LSQ) starting at its plan or PTQ scale.
pub fn qat_model_with(
    prepared: &Graph,
    plan: &QuantPlan,
    ranges: RangeMode,
    learn_scales: bool,
) -> Result<Model> {
    let act = plan
        .activations
        .ok_or_else(|| CompressError::Invalid("QAT: the plan has no activation format".into()))?;
    let mut model = Model::new(prepared.clone(), &edgeopt_train::cpu())?;
    for name in plan.weight_scales.keys() {
        if !plan.weights.contains_key(name) {
            return Err(CompressError::Invalid(format!(
                "QAT: plan has scales for '{name}' but no weight spec"
            )));
        }
    }
    for (name, spec) in &plan.weights {
        let axis = weight_axis(&model, name)?;
        if let Granularity::Group(0) = spec.granularity {
            return Err(CompressError::Invalid(format!(
                "QAT: weight '{name}' has group size 0"
            )));
        }
        let int = matches!(spec.format, WeightFormat::Int8 | WeightFormat::Int4);
        if int && (learn_scales || plan.weight_scales.contains_key(name)) {
            install_learned_step(&mut model, plan, name, spec, axis)?;
            continue;
        }
        if let Some(grid) = grid_of(spec.format) {
            let (ax, group) = blocks(spec, axis);
            model
                .hooks
                .quantize_weight(name.clone(), FakeQuant::weights(grid, ax, group));
        }
    }
    for (name, (lo, hi), own) in effective_ranges(model.graph(), plan, act)? {
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(CompressError::Invalid(format!(
                "QAT: range of '{name}' is ({lo}, {hi})"
            )));
        }
        let id = model.graph().find_value(&name).ok_or_else(|| {
            CompressError::Invalid(format!("QAT: plan range for unknown value '{name}'"))
        })?;
        let ema = ranges == RangeMode::Ema && own;
        if ranges == RangeMode::Ema && !own {
            // Inherited parameters would follow their input's moving range; the
            // refined plan re-derives them in `apply`, so they are not emulated here.
            continue;
        }
        let fq = match act {
            ActivationFormat::Int8 => FakeQuant {
                range: (!ema).then_some((lo, hi)),
                ..FakeQuant::int8_activations()
            },
            // TFLite 16x8: symmetric int16, zero point 0, scale max|x| / 32767.
            ActivationFormat::Int16 => FakeQuant {
                bits: 16,
                symmetric: true,
                range: Some((lo, hi)),
                ..FakeQuant::int8_activations()
            },
            ActivationFormat::Fp16 | ActivationFormat::Float => continue,
        };
        if fq.range.is_none() {
            // The EMA observer starts at the calibrated range.
            model.act_ranges.insert(id, (lo, hi));
        }
        model.hooks.quantize_activation(name.clone(), fq);
    }
    model.check_hooks()?;
    Ok(model)
}

/// `(value name, range, whether the range is the plan's own)`.
type EffectiveRange = (String, (f32, f32), bool);

/// The range each activation is quantized at in the integer graph, by value name, with
/// whether it is the plan's own range (`true`) or implied by the op. Mirrors `apply`'s
/// parameter rules: pools (NHWC), pad, transpose and reshape-like ops carry their
/// input's parameters (their integer kernels require it); softmax and sigmoid outputs
/// have TFLite's fixed 1/256 (int8) or 1/32768 (int16) scale, tanh 1/128 or 1/32768.
/// The fixed ones are written as the range whose nudged parameters are exactly those.
fn effective_ranges(
    g: &Graph,
    plan: &QuantPlan,
    act: ActivationFormat,
) -> Result<Vec<EffectiveRange>> {
    let mut eff: Vec<Option<((f32, f32), bool)>> = vec![None; g.values.len()];
    for (name, &r) in &plan.ranges {
        let id = g.find_value(name).ok_or_else(|| {
            CompressError::Invalid(format!("QAT: plan range for unknown value '{name}'"))
        })?;
        eff[id] = Some((r, true));
    }
    let wide = act == ActivationFormat::Int16;
    for n in &g.nodes {
        let inherits = match &n.op {
            Op::MaxPool(p) | Op::AveragePool(p) => p.layout == Layout::Nhwc,
            Op::Pad { .. } | Op::Transpose { .. } => true,
            op @ (Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::FullyConnected { .. }
            | Op::Binary { .. }
            | Op::Compare(_)
            | Op::Where
            | Op::Unary(_)
            | Op::Clip { .. }
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::GlobalAveragePool
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Concat { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Gather { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Lstm { .. }
            | Op::TopK { .. }
            | Op::Gru { .. }
            | Op::Reduce { .. }
            | Op::Resize(_)
            | Op::Identity
            | Op::Shape
            | Op::Cast { .. }
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger
            | Op::Quantize
            | Op::Dequantize) => op.is_reshape_like(),
        };
        let fixed = match &n.op {
            Op::Softmax { .. } | Op::Unary(UnaryKind::Sigmoid) if wide => {
                Some((0.0, 32767.0 / 32768.0))
            }
            Op::Softmax { .. } | Op::Unary(UnaryKind::Sigmoid) => Some((0.0, 255.0 / 256.0)),
            Op::Unary(UnaryKind::Tanh) if wide => Some((-32767.0 / 32768.0, 32767.0 / 32768.0)),
            Op::Unary(UnaryKind::Tanh) => Some((-1.0, 127.0 / 128.0)),
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::FullyConnected { .. }
            | Op::Binary { .. }
            | Op::Compare(_)
            | Op::Where
            | Op::Unary(_)
            | Op::Clip { .. }
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::LogSoftmax { .. }
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::GlobalAveragePool
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Concat { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Gather { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Lstm { .. }
            | Op::TopK { .. }
            | Op::Gru { .. }
            | Op::Reduce { .. }
            | Op::Resize(_)
            | Op::Identity
            | Op::Shape
            | Op::Cast { .. }
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger
            | Op::Quantize
            | Op::Dequantize => None,
        };
        let input = n.input(0).and_then(|x| eff[x]);
        for &o in &n.outputs {
            if g.values[o].dtype != DType::F32 {
                continue;
            }
            match (inherits, input, fixed) {
                (true, Some((r, _)), _) => eff[o] = Some((r, false)),
                (_, _, Some(r)) => eff[o] = Some((r, false)),
                _ => {}
            }
        }
    }
    Ok(eff
        .into_iter()
        .enumerate()
        .filter_map(|(id, e)| e.map(|(r, own)| (g.values[id].name.clone(), r, own)))
        .collect())
}

/// Loads the training set of `cfg` for `model`'s input.
fn load_train(model: &Model, data: &QatData) -> Result<Dataset> {
    match data {
        QatData::Loaded(d) => Ok(d.clone()),
        QatData::Dir(dir) => {
            let shape = model.input_shape(0).ok_or_else(|| {
                CompressError::Unsupported(
                    "QAT: the graph input needs a fixed shape (besides the batch) to load data"
                        .into(),
                )
            })?;
            let files = find_dataset(dir)?;
            let (x, y) = files.train.ok_or_else(|| {
                CompressError::Invalid(format!("QAT: {} has no training arrays", dir.display()))
            })?;
            Ok(load_pair(&x, &y, &shape)?)
        }
    }
}

/// Loads `data` for `prepared`'s input (a no-op for [`QatData::Loaded`]), e.g. to see
/// whether it has class labels before choosing [`QatConfig::recommended`].
pub fn load_train_data(prepared: &Graph, data: QatData) -> Result<Dataset> {
    match data {
        QatData::Loaded(d) => Ok(d),
        dir => load_train(&Model::new(prepared.clone(), &edgeopt_train::cpu())?, &dir),
    }
}

/// Fine-tunes `prepared` with fake quantization emulating `plan` and returns the float
/// graph with the trained weights and the plan with its final ranges (see the module
/// doc). Quantize the result with `apply`.
pub fn fine_tune(
    prepared: &Graph,
    plan: &QuantPlan,
    cfg: &QatConfig,
) -> Result<(Graph, QuantPlan)> {
    fine_tune_with_report(prepared, plan, cfg).map(|(g, p, _)| (g, p))
}

/// [`fine_tune`], also returning the training log.
pub fn fine_tune_with_report(
    prepared: &Graph,
    plan: &QuantPlan,
    cfg: &QatConfig,
) -> Result<(Graph, QuantPlan, TrainReport)> {
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(CompressError::Invalid(
            "QAT: epochs and batch size must be > 0".into(),
        ));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(CompressError::Invalid(format!(
            "QAT: learning rate {} must be > 0",
            cfg.lr
        )));
    }
    edgeopt_train::with_threads(cfg.threads, || fine_tune_on_pool(prepared, plan, cfg))?
}

fn fine_tune_on_pool(
    prepared: &Graph,
    plan: &QuantPlan,
    cfg: &QatConfig,
) -> Result<(Graph, QuantPlan, TrainReport)> {
    let mut model = qat_model_with(prepared, plan, cfg.ranges, cfg.learn_scales)?;
    let train = load_train(&model, &cfg.data)?;
    let objective = match (train.classes(), cfg.distill) {
        (Some(_), Some(d)) => Objective::Distillation {
            teacher: Box::new(Model::new(prepared.clone(), &edgeopt_train::cpu())?),
            temperature: d.temperature,
            alpha: d.alpha,
        },
        (None, Some(_)) => {
            return Err(CompressError::Invalid(
                "QAT: distillation needs a classification dataset".into(),
            ))
        }
        (Some(_), None) => Objective::Classification {
            label_smoothing: 0.0,
        },
        (None, None) => Objective::Regression,
    };
    let mut tc = TrainConfig::new(cfg.epochs, cfg.lr);
    tc.batch_size = cfg.batch_size;
    tc.seed = cfg.seed;
    tc.augment = cfg.augment.clone();
    tc.progress = cfg.progress;
    tc.max_batches = cfg.max_batches;
    tc.schedule.warmup_steps = cfg.warmup_steps;
    tc.optim.weight_decay = cfg.weight_decay;
    tc.optim.kind = match cfg.optimizer {
        QatOptimizer::Sgd { momentum } => OptimizerKind::Sgd {
            momentum,
            nesterov: false,
        },
        QatOptimizer::AdamW => OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    };
    let report = fit(&mut model, &objective, &train, None, &cfg.normalize, &tc)?;
    let mut graph = model.to_graph()?;
    let mut out = plan.clone();
    if cfg.ranges == RangeMode::Ema {
        for (name, r) in out.ranges.iter_mut() {
            let Some(id) = model.graph().find_value(name) else {
                continue;
            };
            if let Some(&(lo, hi)) = model.act_ranges.get(&id) {
                // The plan's ranges always contain 0 (activation_params widens anyway).
                *r = (lo.min(0.0), hi.max(0.0));
            }
        }
    }
    // Learned steps → the plan's explicit scales (their multipliers are auxiliary
    // values appended to the graph: dropped from the returned graph).
    let mut first_aux = None;
    for (name, ls) in &model.hooks.learned_steps {
        let i = model
            .param_index(&ls.param)
            .ok_or_else(|| CompressError::Invalid(format!("QAT: step of '{name}' vanished")))?;
        let steps = ls.steps(&model.param(i).to_vec()?)?;
        if steps.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(CompressError::Invalid(format!(
                "QAT: the learned step of '{name}' became non-positive (lower the learning rate)"
            )));
        }
        out.weight_scales.insert(name.clone(), steps);
        let v = model.params[i].value;
        first_aux = Some(first_aux.map_or(v, |f: usize| f.min(v)));
    }
    if let Some(k) = first_aux {
        graph.values.truncate(k);
    }
    if cfg.snap_weights {
        snap_weights(&mut graph, &model, &out)?;
    }
    Ok((graph, out, report))
}

/// Replaces each planned weight of `graph` by its quantized value (fp16: rounded to
/// half precision).
fn snap_weights(graph: &mut Graph, model: &Model, plan: &QuantPlan) -> Result<()> {
    for (name, spec) in &plan.weights {
        let axis = weight_axis(model, name)?;
        let v = graph.find_value(name).ok_or_else(|| {
            CompressError::Invalid(format!("QAT: weight '{name}' vanished from the graph"))
        })?;
        let t = graph.values[v]
            .data
            .as_ref()
            .ok_or_else(|| CompressError::Invalid(format!("QAT: weight '{name}' has no data")))?;
        let w = t.to_f32_vec();
        if let Some(scales) = plan.weight_scales.get(name) {
            // The same arithmetic as the LSQ hook: clamp(round(w / s)) * s.
            let qw = super::weights::quantize_planned(&w, t.shape[0], *spec, Some(scales))?;
            let q = qw.dequantize(if scales.len() == 1 { 1 } else { t.shape[0] });
            let shape = t.shape.clone();
            graph.values[v].data = Some(edgeopt_ir::Tensor::from_f32(shape, q)?);
            continue;
        }
        let q = match (grid_of(spec.format), spec.format) {
            (Some(grid), _) => {
                let (ax, group) = blocks(spec, axis);
                quantize_weights(&w, &t.shape, grid, ax, group)?
            }
            (None, WeightFormat::Fp16) => {
                w.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
            }
            (None, _) => continue,
        };
        let shape = t.shape.clone();
        graph.values[v].data = Some(edgeopt_ir::Tensor::from_f32(shape, q)?);
    }
    Ok(())
}
