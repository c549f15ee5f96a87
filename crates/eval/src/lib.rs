//! The dataset evaluator, below the CLI: `edgeopt eval`, `quantize` (calibration
//! samples, accuracy before and after), `train` (the exported model on the executor)
//! and every later pass call it, so a sample is prepared, run and scored one way.
//!
//! - [`load`]: labelled arrays from .npy files.
//! - Preprocessing ([`prepare`], [`prepare_input`]): each sample goes through
//!   `x_float = (x * scale - mean[c]) / std[c]` (per channel `c` of the data's layout),
//!   a layout change if the data and the model disagree (NHWC data into an NCHW model
//!   is transposed, and the reverse), then, when the model's input is quantized,
//!   quantization with the input's own scale and zero point (TFLite rounds half away
//!   from zero, ONNX QuantizeLinear half to even).
//! - Runs ([`evaluate`], [`evaluate_reconstruction`]): batches of
//!   [`EvalConfig::batch`] samples (1 by default; more only for a model whose batch
//!   dimension is not fixed), in parallel on a thread pool the caller owns or sizes
//!   ([`EvalConfig::pool`], [`EvalConfig::threads`]; never rayon's process-global
//!   pool). The result does not depend on the number of threads.
//! - [`metrics`]: top-1 / top-k, per-class accuracy, mean squared reconstruction
//!   error and ROC AUC (autoencoders used as anomaly detectors).

pub mod load;
pub mod metrics;

use anyhow::{anyhow, bail, Context, Result};
use edgeopt_ir::{DType, Dim, Graph, Op, QuantParams, Source, Tensor, TensorData, ValueId};
use edgeopt_runtime::ExecOptions;
use half::f16;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

pub use metrics::{argmax, labels_of};

/// Memory order of image data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataLayout {
    Nhwc,
    Nchw,
}

impl DataLayout {
    /// The names [`DataLayout::from_str`] accepts, in declaration order (what a
    /// command line lists as possible values).
    pub const NAMES: [&'static str; 2] = ["nhwc", "nchw"];

    pub fn name(self) -> &'static str {
        match self {
            DataLayout::Nhwc => "nhwc",
            DataLayout::Nchw => "nchw",
        }
    }
}

impl std::fmt::Display for DataLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DataLayout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "nhwc" => Ok(DataLayout::Nhwc),
            "nchw" => Ok(DataLayout::Nchw),
            _ => Err(format!("unknown layout '{s}' (expected nhwc or nchw)")),
        }
    }
}

/// Whether to quantize the preprocessed float values for the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputQuant {
    /// When the model input is an integer tensor with quantization parameters.
    Auto,
    /// Always (error if the input has no quantization parameters).
    On,
    /// Never: values are rounded and saturated into the input's dtype as they are.
    Off,
}

#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub scale: f32,
    /// One value, or one per channel.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub layout: DataLayout,
    pub input_quant: InputQuant,
    /// Evaluate only this many samples, spread evenly over the data (rows
    /// `i * len / limit`): data sets stored sorted by class (the CIFAR-10 test file)
    /// stay balanced, where the first rows would be one or two classes.
    pub limit: Option<usize>,
    /// Threads of the pool built for this evaluation (None: all cores); ignored when
    /// [`EvalConfig::pool`] is given.
    pub threads: Option<usize>,
    /// Run on this pool (a session's), instead of building one.
    pub pool: Option<Arc<rayon::ThreadPool>>,
    /// Samples per run. Values above 1 apply to models whose batch dimension is not
    /// fixed (a model declaring batch 1 runs sample by sample). Batch 1 is the
    /// default: it is how a device runs the model.
    pub batch: usize,
    /// Also count the samples whose label is among the `k` largest outputs.
    pub top_k: Option<usize>,
    /// Also report the accuracy of every class.
    pub per_class: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Numerics and kernels of the runs.
    pub exec: ExecOptions,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            scale: 1.0,
            mean: vec![0.0],
            std: vec![1.0],
            layout: DataLayout::Nhwc,
            input_quant: InputQuant::Auto,
            limit: None,
            threads: None,
            pool: None,
            batch: 1,
            top_k: None,
            per_class: false,
            progress: false,
            exec: ExecOptions::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub samples: usize,
    pub correct: usize,
    /// Percent.
    pub accuracy: f64,
    pub seconds: f64,
    pub samples_per_second: f64,
    pub threads: usize,
    /// How the data was fed: e.g. "transpose NHWC->NCHW, quantize scale 1 zp -128 to i8".
    pub preprocessing: String,
    /// Percent of samples whose label is among the [`EvalConfig::top_k`] largest
    /// outputs (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<TopK>,
    /// Accuracy per class, by class index (empty unless [`EvalConfig::per_class`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_class: Vec<metrics::ClassAccuracy>,
    /// Predicted class of every evaluated sample (with a limit, of rows
    /// `i * len / limit`).
    #[serde(skip)]
    pub predictions: Vec<usize>,
}

/// Top-k accuracy.
#[derive(Debug, Clone, Serialize)]
pub struct TopK {
    pub k: usize,
    pub correct: usize,
    /// Percent.
    pub accuracy: f64,
}

/// How one sample of the data becomes the model's input.
#[derive(Debug, Clone)]
struct Prep {
    /// Sample shape in the data.
    sample_shape: Vec<usize>,
    /// Model input shape for one sample (leading batch of 1 included).
    input_shape: Vec<usize>,
    /// Data sample axes -> model axes (None: same order, reshaped if needed).
    perm: Option<Vec<usize>>,
    /// Size of the data's channel axis and the stride between its elements.
    channels: usize,
    channel_stride: usize,
    scale: f32,
    mean: Vec<f32>,
    std: Vec<f32>,
    dtype: DType,
    quant: Option<(f32, i64)>,
    half_even: bool,
    /// The model declares its batch dimension (as 1): batches hold one sample.
    fixed_batch: bool,
    description: String,
}

/// Quantization parameters of the graph input: its own, or those of the
/// DequantizeLinear that reads it (ONNX QDQ models carry them there), looking through
/// layout ops in between (tf2onnx puts a Transpose to NCHW first).
pub fn input_quant_params(graph: &Graph, input: ValueId) -> Option<QuantParams> {
    if let Some(q) = &graph.values[input].quant {
        return Some(q.clone());
    }
    let mut frontier = vec![input];
    // Bounded walk: each step moves to a node later in topological order.
    for _ in 0..8 {
        let mut next = Vec::new();
        for n in &graph.nodes {
            let Some(x) = n.input(0) else { continue };
            if !frontier.contains(&x) {
                continue;
            }
            match &n.op {
                Op::DequantizeLinear { .. } => {
                    let scale = graph.const_data(n.input(1)?)?.to_f32_vec();
                    let zp = match n.input(2) {
                        Some(z) => graph.const_data(z)?.to_i64_vec(),
                        None => vec![0],
                    };
                    return (scale.len() == 1).then(|| {
                        QuantParams::per_tensor(scale[0], zp.first().copied().unwrap_or(0))
                    });
                }
                op if op.is_reshape_like() || matches!(op, Op::Transpose { .. }) => {
                    next.extend(n.outputs.iter().copied());
                }
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
                | Op::Softmax { .. }
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
                | Op::QLinearConv(_)
                | Op::QLinearMatMul
                | Op::ConvInteger(_)
                | Op::MatMulInteger
                | Op::Quantize
                | Op::Dequantize => {}
            }
        }
        if next.is_empty() {
            return None;
        }
        frontier = next;
    }
    None
}

fn perm_apply(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    perm.iter().map(|&p| shape[p]).collect()
}

impl Prep {
    fn new(graph: &Graph, data_shape: &[usize], cfg: &EvalConfig) -> Result<Prep> {
        if graph.inputs.len() != 1 {
            bail!(
                "eval needs a model with one input, this one has {}",
                graph.inputs.len()
            );
        }
        Prep::for_input(graph, 0, data_shape, cfg)
    }

    /// The preprocessing of data for graph input `k`.
    fn for_input(graph: &Graph, k: usize, data_shape: &[usize], cfg: &EvalConfig) -> Result<Prep> {
        if graph.outputs.is_empty() {
            bail!("the model has no output");
        }
        let id = *graph
            .inputs
            .get(k)
            .ok_or_else(|| anyhow!("the model has no input {k}"))?;
        let v = &graph.values[id];
        let declared = v
            .shape
            .as_ref()
            .ok_or_else(|| anyhow!("model input '{}' has no declared shape", v.name))?;
        if declared.is_empty() {
            bail!(
                "model input '{}' is a scalar; eval needs a batch dimension",
                v.name
            );
        }
        if let Dim::Fixed(b) = declared[0] {
            if b != 1 {
                bail!(
                    "model input '{}' has a fixed batch of {b}; eval runs batch 1",
                    v.name
                );
            }
        }
        let sample_shape = data_shape.get(1..).unwrap_or_default().to_vec();
        let rest = &declared[1..];
        // Does a data sample of shape `s` fit the model's per-sample dims?
        let fits = |s: &[usize]| {
            s.len() == rest.len()
                && rest
                    .iter()
                    .zip(s)
                    .all(|(d, &n)| d.fixed().is_none_or(|f| f == n))
        };
        // Image data of rank 3 may need a layout change; the model's layout is what its
        // declared shape accepts: try the data's own order first unless the model is
        // known to want the other one (TFLite: NHWC; ONNX without a leading Transpose:
        // NCHW), for shapes such as 3x3x3 that fit both.
        let (to_other, other_name): (Vec<usize>, &str) = match cfg.layout {
            DataLayout::Nhwc => (vec![2, 0, 1], "NHWC->NCHW"),
            DataLayout::Nchw => (vec![1, 2, 0], "NCHW->NHWC"),
        };
        let model_wants_other = sample_shape.len() == 3 && {
            let model_layout = model_input_layout(graph, id);
            model_layout.is_some_and(|l| l != cfg.layout)
        };
        let mut description = Vec::new();
        let perm = if sample_shape.len() == 3
            && model_wants_other
            && fits(&perm_apply(&sample_shape, &to_other))
        {
            Some(to_other.clone())
        } else if fits(&sample_shape) {
            None
        } else if sample_shape.len() == 3 && fits(&perm_apply(&sample_shape, &to_other)) {
            Some(to_other.clone())
        } else {
            None
        };
        let model_sample: Vec<usize> = match &perm {
            Some(p) => {
                description.push(format!("transpose {other_name}"));
                perm_apply(&sample_shape, p)
            }
            None if fits(&sample_shape) => sample_shape.clone(),
            None => {
                // Same elements, other rank (e.g. 28x28 images into a [1,784] model).
                let n: usize = sample_shape.iter().product();
                let fixed: Option<Vec<usize>> = rest.iter().map(|d| d.fixed()).collect();
                match fixed {
                    Some(f) if f.iter().product::<usize>() == n && f.len() != sample_shape.len() => {
                        description.push(format!("reshape to {f:?}"));
                        f
                    }
                    _ => bail!(
                        "data samples of shape {sample_shape:?} do not fit the model input '{}' [{}]",
                        v.name,
                        declared.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                    ),
                }
            }
        };
        let mut input_shape = vec![1];
        input_shape.extend(model_sample);

        // Channel axis of the data for mean/std.
        let (channels, channel_stride) = if sample_shape.is_empty() {
            (1, 1)
        } else {
            match cfg.layout {
                DataLayout::Nhwc => (*sample_shape.last().unwrap_or(&1), 1),
                DataLayout::Nchw => (sample_shape[0], sample_shape[1..].iter().product()),
            }
        };
        for (what, v) in [("--mean", &cfg.mean), ("--std", &cfg.std)] {
            if v.len() != 1 && v.len() != channels {
                bail!(
                    "{what} has {} values; give 1 or one per channel ({channels})",
                    v.len()
                );
            }
        }
        if cfg.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            bail!("--std values must be finite and non-zero");
        }
        if cfg.scale != 1.0
            || cfg.mean.iter().any(|&m| m != 0.0)
            || cfg.std.iter().any(|&s| s != 1.0)
        {
            description.push(format!(
                "x*{} - mean {:?} / std {:?}",
                cfg.scale, cfg.mean, cfg.std
            ));
        }

        let dtype = v.dtype;
        let params = input_quant_params(graph, id);
        let quant = match (cfg.input_quant, dtype.is_integer(), &params) {
            (InputQuant::Off, _, _) => None,
            (_, true, Some(q)) => {
                if !q.is_per_tensor() {
                    bail!("model input '{}' is quantized per channel; eval supports per-tensor input quantization", v.name);
                }
                let (s, z) = q.channel(0);
                if !(s > 0.0 && s.is_finite()) {
                    bail!(
                        "model input '{}' has an invalid quantization scale {s}",
                        v.name
                    );
                }
                description.push(format!("quantize scale {s} zp {z} to {dtype}"));
                Some((s, z))
            }
            (InputQuant::On, _, _) => bail!(
                "--input-quant: model input '{}' ({dtype}) has no quantization parameters",
                v.name
            ),
            (InputQuant::Auto, _, _) => None,
        };
        if quant.is_none() && dtype != DType::F32 {
            description.push(format!("cast to {dtype}"));
        }
        Ok(Prep {
            sample_shape,
            input_shape,
            perm,
            channels,
            channel_stride,
            scale: cfg.scale,
            mean: cfg.mean.clone(),
            std: cfg.std.clone(),
            dtype,
            quant,
            half_even: matches!(graph.source, Source::Onnx { .. }),
            fixed_batch: matches!(declared[0], Dim::Fixed(_)),
            description: if description.is_empty() {
                "as is".into()
            } else {
                description.join(", ")
            },
        })
    }

    /// The model input for sample `i` of `data`.
    fn sample(&self, data: &TensorData, i: usize) -> Result<Tensor> {
        self.to_input(self.floats(data, i))
    }

    /// Sample `i` of `data` preprocessed to floats in the model's layout, before any
    /// input quantization (what an autoencoder reconstructs).
    fn floats(&self, data: &TensorData, i: usize) -> Vec<f32> {
        let n: usize = self.sample_shape.iter().product();
        let base = i * n;
        let x: Vec<f32> = (0..n)
            .map(|k| {
                let c = (k / self.channel_stride) % self.channels;
                let m = self.mean[if self.mean.len() == 1 { 0 } else { c }];
                let s = self.std[if self.std.len() == 1 { 0 } else { c }];
                (data.get_f64(base + k) as f32 * self.scale - m) / s
            })
            .collect();
        match &self.perm {
            Some(p) => transpose(&x, &self.sample_shape, p),
            None => x,
        }
    }

    /// The model input (batch 1) holding the preprocessed sample `x`.
    fn to_input(&self, x: Vec<f32>) -> Result<Tensor> {
        let out = match (self.dtype, self.quant) {
            (DType::F32, _) => TensorData::F32(x),
            (DType::F16, _) => TensorData::F16(x.into_iter().map(f16::from_f32).collect()),
            (dt, q) => {
                let (lo, hi) = dt
                    .int_range()
                    .ok_or_else(|| anyhow!("model input dtype {dt} is not supported by eval"))?;
                let round = |v: f32| -> f64 {
                    if self.half_even {
                        (v as f64).round_ties_even()
                    } else {
                        (v as f64).round()
                    }
                };
                let ints: Vec<i64> = x
                    .into_iter()
                    .map(|v| {
                        let r = match q {
                            Some((s, z)) => round(v / s) + z as f64,
                            None => round(v),
                        };
                        r.clamp(lo as f64, hi as f64) as i64
                    })
                    .collect();
                int_data(dt, ints)?
            }
        };
        Ok(Tensor::new(self.input_shape.clone(), out)?)
    }
}

/// The layout the model's 4-D input is in, when the graph tells: TFLite models are
/// NHWC; an ONNX input read by a `Transpose` to NCHW is NHWC; an ONNX input read by a
/// convolution or pooling directly uses that op's layout.
fn model_input_layout(graph: &Graph, input: ValueId) -> Option<DataLayout> {
    if matches!(graph.source, Source::Tflite { .. }) {
        return Some(DataLayout::Nhwc);
    }
    for n in &graph.nodes {
        if n.input(0) != Some(input) {
            continue;
        }
        let layout = match &n.op {
            Op::Transpose { perm } if perm == &[0, 3, 1, 2] => return Some(DataLayout::Nhwc),
            Op::Conv(a) | Op::QLinearConv(a) | Op::ConvInteger(a) => a.layout,
            Op::MaxPool(p) | Op::AveragePool(p) => p.layout,
            Op::ConvTranspose(_)
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
            | Op::QLinearMatMul
            | Op::MatMulInteger
            | Op::Quantize
            | Op::Dequantize => continue,
        };
        return Some(match layout {
            edgeopt_ir::Layout::Nchw => DataLayout::Nchw,
            edgeopt_ir::Layout::Nhwc => DataLayout::Nhwc,
        });
    }
    None
}

fn transpose(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let out_shape = perm_apply(shape, perm);
    let rank = shape.len();
    let mut in_strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        in_strides[a] = in_strides[a + 1] * shape[a + 1];
    }
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut out = Vec::with_capacity(x.len());
    let mut idx = vec![0usize; rank];
    for _ in 0..x.len() {
        let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(x[off]);
        for a in (0..rank).rev() {
            idx[a] += 1;
            if idx[a] < out_shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// Integer tensor data of `dt` from values already in its range.
pub fn int_data(dt: DType, v: Vec<i64>) -> Result<TensorData> {
    Ok(match dt {
        DType::I8 => TensorData::I8(v.into_iter().map(|x| x as i8).collect()),
        DType::U8 => TensorData::U8(v.into_iter().map(|x| x as u8).collect()),
        DType::I16 => TensorData::I16(v.into_iter().map(|x| x as i16).collect()),
        DType::U16 => TensorData::U16(v.into_iter().map(|x| x as u16).collect()),
        DType::I32 => TensorData::I32(v.into_iter().map(|x| x as i32).collect()),
        DType::I64 => TensorData::I64(v),
        DType::I4 => TensorData::I4(v.into_iter().map(|x| x as i8).collect()),
        DType::U4 => TensorData::U4(v.into_iter().map(|x| x as u8).collect()),
        other => bail!("model input dtype {other} is not supported by eval"),
    })
}

/// The model input for samples `samples` of `data`, preprocessed as [`evaluate`] does,
/// stacked into one batch.
pub fn prepare(
    graph: &Graph,
    data: &Tensor,
    samples: std::ops::Range<usize>,
    cfg: &EvalConfig,
) -> Result<Tensor> {
    if graph.inputs.len() != 1 {
        bail!(
            "eval needs a model with one input, this one has {}",
            graph.inputs.len()
        );
    }
    prepare_input(graph, 0, data, samples, cfg)
}

/// [`prepare`] for graph input `k` of a model with several inputs.
pub fn prepare_input(
    graph: &Graph,
    k: usize,
    data: &Tensor,
    samples: std::ops::Range<usize>,
    cfg: &EvalConfig,
) -> Result<Tensor> {
    let n_data = data.shape.first().copied().unwrap_or(0);
    if samples.start >= samples.end || samples.end > n_data {
        bail!("samples {samples:?} out of range for {n_data} samples");
    }
    let prep = Prep::for_input(graph, k, &data.shape, cfg)?;
    let rows: Vec<usize> = samples.collect();
    prep.batch_input(&data.data, &rows)
}

/// Concatenates batch-1 inputs of one dtype along the batch axis.
fn stack(parts: impl IntoIterator<Item = Result<Tensor>>) -> Result<Tensor> {
    let mut parts = parts.into_iter();
    let first = parts
        .next()
        .ok_or_else(|| anyhow!("no samples to stack"))??;
    let mut shape = first.shape.clone();
    let mut all = first.data;
    let mut count = 1;
    for t in parts {
        let t = t?;
        count += 1;
        match (&mut all, t.data) {
            (TensorData::F32(a), TensorData::F32(b)) => a.extend(b),
            (TensorData::F16(a), TensorData::F16(b)) => a.extend(b),
            (TensorData::I8(a), TensorData::I8(b)) | (TensorData::I4(a), TensorData::I4(b)) => {
                a.extend(b)
            }
            (TensorData::U8(a), TensorData::U8(b)) | (TensorData::U4(a), TensorData::U4(b)) => {
                a.extend(b)
            }
            (TensorData::I16(a), TensorData::I16(b)) => a.extend(b),
            (TensorData::U16(a), TensorData::U16(b)) => a.extend(b),
            (TensorData::I32(a), TensorData::I32(b)) => a.extend(b),
            (TensorData::I64(a), TensorData::I64(b)) => a.extend(b),
            _ => bail!("samples prepared with different dtypes"),
        }
    }
    shape[0] = count;
    Ok(Tensor::new(shape, all)?)
}

impl Prep {
    /// The model input holding rows `rows` of `data`, stacked into one batch.
    fn batch_input(&self, data: &TensorData, rows: &[usize]) -> Result<Tensor> {
        stack(rows.iter().map(|&i| self.sample(data, i)))
    }
}

/// The pool an evaluation runs on: the caller's, or one of `cfg.threads` threads
/// built for it (rayon's process-global pool is never touched).
pub fn thread_pool(cfg: &EvalConfig) -> Result<Arc<rayon::ThreadPool>> {
    if let Some(p) = &cfg.pool {
        return Ok(p.clone());
    }
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(t) = cfg.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        builder = builder.num_threads(t);
    }
    Ok(Arc::new(
        builder.build().context("cannot start the thread pool")?,
    ))
}

/// Element range of sample `j` in an output of a batch of `b` samples.
fn sample_range(t: &Tensor, b: usize, j: usize) -> Result<std::ops::Range<usize>> {
    if b == 1 {
        return Ok(0..t.len());
    }
    if t.shape.first() != Some(&b) {
        bail!(
            "an output of a batch of {b} samples has shape {:?}; run with batch 1",
            t.shape
        );
    }
    let per = t.len() / b;
    Ok(j * per..(j + 1) * per)
}

/// What the evaluation loop hands back: one result per evaluated row, in row order.
struct Runs<T> {
    results: Vec<T>,
    seconds: f64,
    threads: usize,
}

/// Runs `graph` on rows `rows` of `data` in batches (in parallel over batches) and
/// turns each sample's outputs into a result with `score(outputs, batch size, index in
/// the batch, row)`.
fn run_rows<T: Send>(
    graph: &Graph,
    prep: &Prep,
    data: &Tensor,
    rows: &[usize],
    model_name: &str,
    cfg: &EvalConfig,
    score: impl Fn(&[Tensor], usize, usize, usize) -> Result<T> + Sync,
) -> Result<Runs<T>> {
    let pool = thread_pool(cfg)?;
    let batch = if prep.fixed_batch {
        1
    } else {
        cfg.batch.max(1)
    };
    let bar = if cfg.progress {
        let b = ProgressBar::new(rows.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_message(format!("eval {model_name}"));
        b
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let results: Vec<Vec<T>> = pool.install(|| {
        rows.par_chunks(batch)
            .map(|chunk| -> Result<Vec<T>> {
                let x = prep.batch_input(&data.data, chunk)?;
                let outs = edgeopt_runtime::run_with(graph, &[x], cfg.exec).with_context(|| {
                    if chunk.len() == 1 {
                        format!("inference failed on sample {}", chunk[0])
                    } else {
                        format!("inference failed on samples {chunk:?}")
                    }
                })?;
                bar.inc(chunk.len() as u64);
                chunk
                    .iter()
                    .enumerate()
                    .map(|(j, &r)| score(&outs, chunk.len(), j, r))
                    .collect()
            })
            .collect::<Result<Vec<Vec<T>>>>()
    })?;
    bar.finish_and_clear();
    Ok(Runs {
        results: results.into_iter().flatten().collect(),
        seconds: start.elapsed().as_secs_f64(),
        threads: pool.current_num_threads(),
    })
}

/// The rows evaluated: all of them, or `limit` spread evenly (`i * len / limit`).
fn eval_rows(n_data: usize, limit: Option<usize>) -> Result<Vec<usize>> {
    let n = limit.map_or(n_data, |l| l.min(n_data));
    if n == 0 {
        bail!("no samples to evaluate");
    }
    Ok((0..n).map(|i| i * n_data / n).collect())
}

/// Top-1 accuracy of `graph` on `data` (`[N, ...]`) against `labels` (and top-k and
/// per-class accuracy when `cfg` asks).
pub fn evaluate(
    graph: &Graph,
    model_name: &str,
    data: &Tensor,
    labels: &Tensor,
    cfg: &EvalConfig,
) -> Result<EvalReport> {
    if data.shape.is_empty() {
        bail!("data must have a leading sample dimension, got a scalar");
    }
    let labels = labels_of(labels)?;
    let n_data = data.shape[0];
    if labels.len() != n_data {
        bail!("{n_data} samples but {} labels", labels.len());
    }
    if cfg.top_k == Some(0) {
        bail!("top-k needs k >= 1");
    }
    let rows = eval_rows(n_data, cfg.limit)?;
    let n = rows.len();
    let prep = Prep::new(graph, &data.shape, cfg)?;
    // Per sample: the predicted class and the label's rank among the outputs.
    let runs = run_rows(
        graph,
        &prep,
        data,
        &rows,
        model_name,
        cfg,
        |outs, b, j, r| {
            let range = sample_range(&outs[0], b, j)?;
            let rank = match cfg.top_k {
                Some(_) => metrics::rank_of(&outs[0], range.clone(), labels[r]),
                None => 0,
            };
            Ok((metrics::argmax_in(&outs[0], range), rank))
        },
    )?;
    let predictions: Vec<usize> = runs.results.iter().map(|&(p, _)| p).collect();
    let row_labels: Vec<usize> = rows.iter().map(|&r| labels[r]).collect();
    let correct = predictions
        .iter()
        .zip(&row_labels)
        .filter(|&(p, l)| p == l)
        .count();
    let top_k = cfg.top_k.map(|k| {
        let correct = runs.results.iter().filter(|&&(_, rank)| rank < k).count();
        TopK {
            k,
            correct,
            accuracy: 100.0 * correct as f64 / n as f64,
        }
    });
    let per_class = if cfg.per_class {
        metrics::per_class(&predictions, &row_labels)
    } else {
        Vec::new()
    };
    Ok(EvalReport {
        model: model_name.to_string(),
        samples: n,
        correct,
        accuracy: 100.0 * correct as f64 / n as f64,
        seconds: runs.seconds,
        samples_per_second: n as f64 / runs.seconds.max(1e-9),
        threads: runs.threads,
        preprocessing: prep.description.clone(),
        top_k,
        per_class,
        predictions,
    })
}

/// How well an autoencoder reconstructs its input, and, with normal / anomalous
/// labels, how well its reconstruction error separates them.
#[derive(Debug, Clone, Serialize)]
pub struct ReconstructionReport {
    pub model: String,
    pub samples: usize,
    /// Mean over samples of the mean squared error between the preprocessed input
    /// (floats, before input quantization) and the dequantized output.
    pub mse: f64,
    /// ROC AUC of the per-sample error as an anomaly score (labels: 0 normal, anything
    /// else anomalous); absent without labels or when one of the two kinds is missing.
    pub auc: Option<f64>,
    pub seconds: f64,
    pub threads: usize,
    pub preprocessing: String,
    /// Error of every evaluated sample.
    #[serde(skip)]
    pub errors: Vec<f64>,
}

/// Reconstruction error of `graph` (an autoencoder: first output as many values as the
/// input) on `data`, with ROC AUC when `labels` tell normal (0) from anomalous samples.
pub fn evaluate_reconstruction(
    graph: &Graph,
    model_name: &str,
    data: &Tensor,
    labels: Option<&Tensor>,
    cfg: &EvalConfig,
) -> Result<ReconstructionReport> {
    if data.shape.is_empty() {
        bail!("data must have a leading sample dimension, got a scalar");
    }
    let n_data = data.shape[0];
    let labels = labels.map(labels_of).transpose()?;
    if let Some(l) = &labels {
        if l.len() != n_data {
            bail!("{n_data} samples but {} labels", l.len());
        }
    }
    let rows = eval_rows(n_data, cfg.limit)?;
    let prep = Prep::new(graph, &data.shape, cfg)?;
    let out = graph.outputs[0];
    let out_q = match (
        &graph.values[out].quant,
        graph.values[out].dtype.is_integer(),
    ) {
        (Some(q), true) if q.is_per_tensor() => Some(q.channel(0)),
        (Some(_), true) => bail!("per-channel quantized outputs are not supported"),
        _ => None,
    };
    let runs = run_rows(
        graph,
        &prep,
        data,
        &rows,
        model_name,
        cfg,
        |outs, b, j, r| {
            let x = prep.floats(&data.data, r);
            let range = sample_range(&outs[0], b, j)?;
            if range.len() != x.len() {
                bail!(
                    "the model's output has {} values per sample, its input {}: not an autoencoder",
                    range.len(),
                    x.len()
                );
            }
            let y = range.map(|k| {
                let v = outs[0].data.get_f64(k);
                match out_q {
                    Some((s, z)) => (v - z as f64) * s as f64,
                    None => v,
                }
            });
            Ok(metrics::mse(x.iter().map(|&v| v as f64), y))
        },
    )?;
    let errors = runs.results;
    let auc = labels.and_then(|l| {
        let anomalous: Vec<bool> = rows.iter().map(|&r| l[r] != 0).collect();
        metrics::roc_auc(&errors, &anomalous)
    });
    Ok(ReconstructionReport {
        model: model_name.to_string(),
        samples: rows.len(),
        mse: errors.iter().sum::<f64>() / errors.len() as f64,
        auc,
        seconds: runs.seconds,
        threads: runs.threads,
        preprocessing: prep.description.clone(),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_hwc_to_chw() {
        // 2x2 image, 3 channels: HWC -> CHW.
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let y = transpose(&x, &[2, 2, 3], &[2, 0, 1]);
        assert_eq!(y, vec![0., 3., 6., 9., 1., 4., 7., 10., 2., 5., 8., 11.]);
    }

    #[test]
    fn limit_spreads_over_sorted_data() {
        // Identity "model": the prediction is the argmax of the input itself. Ten
        // one-hot samples sorted by class; labels equal to the class except the last
        // five. With a limit of 5 the rows 0, 2, 4, 6, 8 are evaluated (3 right, not
        // the 5 of the first five rows).
        let mut g = edgeopt_ir::Graph::default();
        let shape = vec![edgeopt_ir::Dim::Fixed(1), edgeopt_ir::Dim::Fixed(10)];
        let x = g.add_value("x", edgeopt_ir::DType::F32, Some(shape));
        g.inputs.push(x);
        g.outputs.push(x);
        let mut v = vec![0f32; 100];
        for i in 0..10 {
            v[i * 10 + i] = 1.0;
        }
        let data = Tensor::from_f32(vec![10, 10], v).unwrap();
        let labels: Vec<i64> = (0..10).map(|i| if i < 5 { i } else { 0 }).collect();
        let labels = Tensor::from_i64(vec![10], labels).unwrap();
        let cfg = EvalConfig {
            limit: Some(5),
            threads: Some(1),
            ..EvalConfig::default()
        };
        let r = evaluate(&g, "identity", &data, &labels, &cfg).unwrap();
        assert_eq!((r.samples, r.correct), (5, 3));
        assert_eq!(r.predictions, vec![0, 2, 4, 6, 8]);
    }

    #[test]
    fn batches_and_threads_do_not_change_results() {
        // Identity model with a symbolic batch: batches of 3 over 10 samples (the last
        // batch short), one or two threads, a caller's pool: the same predictions,
        // top-2 and per-class counts.
        let mut g = edgeopt_ir::Graph::default();
        let shape = vec![edgeopt_ir::Dim::Sym("n".into()), edgeopt_ir::Dim::Fixed(4)];
        let x = g.add_value("x", edgeopt_ir::DType::F32, Some(shape));
        g.inputs.push(x);
        g.outputs.push(x);
        let v: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32).collect();
        let data = Tensor::from_f32(vec![10, 4], v).unwrap();
        let labels = Tensor::from_i64(vec![10], (0..10).map(|i| i % 4).collect()).unwrap();
        let base = EvalConfig {
            threads: Some(1),
            top_k: Some(2),
            per_class: true,
            ..EvalConfig::default()
        };
        let want = evaluate(&g, "id", &data, &labels, &base).unwrap();
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap(),
        );
        for cfg in [
            EvalConfig {
                batch: 3,
                ..base.clone()
            },
            EvalConfig {
                threads: Some(2),
                batch: 4,
                ..base.clone()
            },
            EvalConfig {
                pool: Some(pool.clone()),
                ..base.clone()
            },
        ] {
            let r = evaluate(&g, "id", &data, &labels, &cfg).unwrap();
            assert_eq!(r.predictions, want.predictions);
            assert_eq!(
                r.top_k.as_ref().unwrap().correct,
                want.top_k.as_ref().unwrap().correct
            );
            assert_eq!(r.per_class, want.per_class);
        }
        assert_eq!(
            evaluate(
                &g,
                "id",
                &data,
                &labels,
                &EvalConfig {
                    pool: Some(pool),
                    ..base
                }
            )
            .unwrap()
            .threads,
            2
        );
        // Top-2 counts at least what top-1 does, and each class adds up.
        let k = want.top_k.unwrap();
        assert!(k.correct >= want.correct);
        assert_eq!(
            want.per_class.iter().map(|c| c.correct).sum::<usize>(),
            want.correct
        );
        // The serialized report of a plain eval has no top-k / per-class fields.
        let plain = evaluate(&g, "id", &data, &labels, &EvalConfig::default()).unwrap();
        let json = serde_json::to_string(&plain).unwrap();
        assert!(
            !json.contains("top_k") && !json.contains("per_class"),
            "{json}"
        );
    }

    #[test]
    fn reconstruction_error_and_auc() {
        // out = 2 * x: a sample's error is mean(x^2); samples with larger values are
        // "anomalous", so the AUC is 1. A fixed-batch quantized output is dequantized.
        let mut g = Graph::new("ae");
        let dims = vec![Dim::Sym("n".into()), Dim::Fixed(3)];
        let x = g.add_value("x", DType::F32, Some(dims));
        let two = g.add_const("two", Tensor::scalar_f32(2.0));
        let y = g.add_value("y", DType::F32, None);
        g.add_node(
            "mul",
            Op::Binary {
                kind: edgeopt_ir::BinaryKind::Mul,
                activation: edgeopt_ir::Activation::None,
            },
            vec![Some(x), Some(two)],
            vec![y],
        );
        g.inputs = vec![x];
        g.outputs = vec![y];
        let data = Tensor::from_f32(
            vec![4, 3],
            vec![0., 1., 0., 3., 3., 3., 1., 1., 0., 2., 4., 4.],
        )
        .unwrap();
        let labels = Tensor::from_i64(vec![4], vec![0, 1, 0, 1]).unwrap();
        let cfg = EvalConfig {
            threads: Some(1),
            batch: 2,
            ..EvalConfig::default()
        };
        let r = evaluate_reconstruction(&g, "ae", &data, Some(&labels), &cfg).unwrap();
        let want: Vec<f64> = [1.0, 27.0, 2.0, 36.0].iter().map(|s| s / 3.0).collect();
        assert_eq!(r.errors, want);
        assert_eq!(r.auc, Some(1.0));
        assert_eq!(r.mse, want.iter().sum::<f64>() / 4.0);
        // Without labels, no AUC; a classifier-shaped output is refused.
        assert_eq!(
            evaluate_reconstruction(&g, "ae", &data, None, &cfg)
                .unwrap()
                .auc,
            None
        );
        let wide = Tensor::from_f32(vec![2, 2], vec![0.; 4]).unwrap();
        assert!(evaluate_reconstruction(&g, "ae", &wide, None, &cfg).is_err());
    }

    fn graph_with_input(
        dtype: DType,
        shape: Vec<Dim>,
        quant: Option<QuantParams>,
        source: Source,
    ) -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_value("x", dtype, Some(shape));
        g.values[x].quant = quant;
        let y = g.add_value("y", dtype, None);
        g.add_node("id", Op::Identity, vec![Some(x)], vec![y]);
        g.inputs = vec![x];
        g.outputs = vec![y];
        g.source = source;
        g
    }

    #[test]
    fn prep_quantizes_pixels_like_the_int8_resnet() {
        // int8 input with scale 1, zp -128: pixel p becomes p - 128.
        let dims = vec![
            Dim::Sym("n".into()),
            Dim::Fixed(2),
            Dim::Fixed(2),
            Dim::Fixed(3),
        ];
        let g = graph_with_input(
            DType::I8,
            dims,
            Some(QuantParams::per_tensor(1.0, -128)),
            Source::Tflite { version: 3 },
        );
        let cfg = EvalConfig::default();
        let p = Prep::new(&g, &[5, 2, 2, 3], &cfg).unwrap();
        assert!(p.perm.is_none());
        let data = TensorData::U8((0..60).map(|v| (v * 4) as u8).collect());
        let t = p.sample(&data, 1).unwrap();
        assert_eq!(t.shape, vec![1, 2, 2, 3]);
        let want: Vec<i8> = (12..24).map(|v| ((v * 4) as i64 - 128) as i8).collect();
        assert_eq!(t.as_i8().unwrap(), want.as_slice());
    }

    #[test]
    fn quant_params_found_behind_a_transpose() {
        // tf2onnx int8 models: input -> Transpose -> DequantizeLinear(scale, zp).
        let mut g = Graph::new("qdq");
        let dims = vec![
            Dim::Sym("n".into()),
            Dim::Fixed(2),
            Dim::Fixed(2),
            Dim::Fixed(3),
        ];
        let x = g.add_value("x", DType::I8, Some(dims));
        let t = g.add_value("t", DType::I8, None);
        let s = g.add_const("s", Tensor::scalar_f32(0.5));
        let z = g.add_const("z", Tensor::new(vec![], TensorData::I8(vec![-3])).unwrap());
        let y = g.add_value("y", DType::F32, None);
        g.add_node(
            "tr",
            Op::Transpose {
                perm: vec![0, 3, 1, 2],
            },
            vec![Some(x)],
            vec![t],
        );
        g.add_node(
            "dq",
            Op::DequantizeLinear {
                axis: 1,
                block_size: 0,
            },
            vec![Some(t), Some(s), Some(z)],
            vec![y],
        );
        g.inputs = vec![x];
        g.outputs = vec![y];
        g.source = Source::Onnx {
            opset: 13,
            producer: String::new(),
        };
        assert_eq!(
            input_quant_params(&g, x),
            Some(QuantParams::per_tensor(0.5, -3))
        );
        // The data is NHWC like the model input: no transpose here, and ONNX rounds
        // half to even: 2.5 / 0.5 = 5 -> 5 - 3 = 2; 0.25 / 0.5 = 0.5 -> 0 - 3.
        let p = Prep::new(&g, &[1, 2, 2, 3], &EvalConfig::default()).unwrap();
        assert!(p.perm.is_none());
        let mut d = vec![0.0f32; 12];
        d[0] = 2.5;
        d[1] = 0.25;
        let t = p.sample(&TensorData::F32(d), 0).unwrap();
        assert_eq!(&t.as_i8().unwrap()[..3], &[2, -3, -3]);
    }

    #[test]
    fn prep_transposes_and_normalizes() {
        let dims = vec![
            Dim::Sym("n".into()),
            Dim::Fixed(3),
            Dim::Fixed(2),
            Dim::Fixed(2),
        ];
        let g = graph_with_input(DType::F32, dims, None, Source::Built);
        let cfg = EvalConfig {
            scale: 0.5,
            mean: vec![0.0, 1.0, 2.0],
            std: vec![1.0, 2.0, 4.0],
            ..Default::default()
        };
        let p = Prep::new(&g, &[1, 2, 2, 3], &cfg).unwrap();
        assert_eq!(p.perm, Some(vec![2, 0, 1]));
        let data = TensorData::U8((0..12).collect());
        let t = p.sample(&data, 0).unwrap();
        assert_eq!(t.shape, vec![1, 3, 2, 2]);
        let x = t.as_f32().unwrap();
        // channel 1 (G) of pixel 0 is data[1] = 1: (0.5 - 1) / 2.
        assert_eq!(x[4], -0.25);
        // channel 2 of pixel 3 is data[11] = 11: (5.5 - 2) / 4.
        assert_eq!(x[11], 0.875);
        // Wrong sizes are errors, not panics.
        assert!(Prep::new(&g, &[1, 5, 5, 3], &cfg).is_err());
        let bad = EvalConfig {
            mean: vec![1.0, 2.0],
            ..Default::default()
        };
        assert!(Prep::new(&g, &[1, 2, 2, 3], &bad).is_err());
    }
}
