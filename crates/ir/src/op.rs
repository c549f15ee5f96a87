//! The closed set of operators, with typed attributes.
//!
//! Semantics follow ONNX unless the variant says otherwise. Whether an op runs in float
//! or in integer arithmetic is decided by the dtypes and quantization parameters of its
//! tensors, not by the op: a `Conv` whose input, weights and output are i8 with quant
//! params (bias i32) is the TFLite int8 convolution (fixed-point requantization, see
//! DESIGN.md), the same `Conv` on f32 tensors is the float one. Attributes that ONNX
//! passes as constant inputs (Clip bounds, Squeeze axes, Pad pads, Resize scales...) are
//! folded into attributes by the importers; tensors that may be computed at run time
//! (Reshape's shape) stay inputs.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};

/// Where the channel dimension sits in activations of spatial ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Layout {
    /// ONNX: activations `[N, C, *spatial]`; conv weights `[M, C/group, *kernel]`.
    Nchw,
    /// TFLite: activations `[N, *spatial, C]`; conv weights `[M, *kernel, C/group]`
    /// (depthwise weights are stored `[C*mult, *kernel, 1]` with `group = C`).
    Nhwc,
}

/// Activation fused into the producing op (TFLite's `fused_activation_function`).
/// In integer kernels it narrows the output clamp range, as TFLite does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Activation {
    #[default]
    None,
    Relu,
    Relu6,
    ReluN1To1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AutoPad {
    /// Explicit `pads`.
    #[default]
    NotSet,
    /// Output = ceil(input / stride); extra padding at the end (TFLite `SAME`).
    SameUpper,
    /// Output = ceil(input / stride); extra padding at the beginning.
    SameLower,
    /// No padding (TFLite `VALID`).
    Valid,
}

/// Convolution geometry, for any number of spatial dimensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvAttrs {
    pub layout: Layout,
    /// Spatial kernel size; empty means "take it from the weights".
    pub kernel_shape: Vec<usize>,
    /// Per spatial dim; empty means all 1.
    pub strides: Vec<usize>,
    /// Per spatial dim; empty means all 1.
    pub dilations: Vec<usize>,
    /// ONNX order `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`; empty means zeros.
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
    pub group: usize,
    pub activation: Activation,
    /// LiteRT's dynamic-range execution (see [`Hybrid`]); `None` for every conv that is
    /// not a TFLite hybrid one.
    #[serde(default)]
    pub hybrid: Option<Hybrid>,
}

/// How LiteRT's builtin kernels run a float `Conv` / `FullyConnected` whose weight
/// operand is a `Dequantize` of an int8 (or int4) constant: a TFLite "hybrid" operator,
/// what the converter's dynamic-range quantization writes (float activations, int8
/// weights). LiteRT does not dequantize the weights: it quantizes the float input to
/// int8 on the fly, one scale (and zero point) per group of input elements, multiplies
/// in integers and scales the i32 sums back to float (`tensor_utils::
/// {Symmetric,Asymmetric}QuantizeFloats`, `MatrixBatchVectorMultiplyAccumulate`,
/// `optimized_ops::HybridConv[PerChannel]`, `DepthwiseConvHybridPerChannel`). That
/// differs from the float semantics (input times dequantized weights) by the input's
/// quantization error: up to 3.4e-2 of the output range on a DS-CNN.
///
/// The IR keeps the float semantics visible (the `Dequantize` node stays, every pass
/// sees float weights); this attribute only says how LiteRT rounds. The runtime
/// follows it under LiteRT's numerics (builtin and reference kernels alike compute
/// hybrid); TensorFlow Lite Micro has no hybrid kernels (it refuses such models), so
/// under its numerics, and in the generated C, the op runs in float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hybrid {
    /// Asymmetric input quantization: per group, scale `(max(0, x) - min(0, x)) / 255`
    /// and a zero point, values in [-128, 127]. Otherwise symmetric: scale
    /// `max|x| / 127`, values in [-127, 127]. LiteRT picks asymmetric for
    /// FULLY_CONNECTED with `asymmetric_quantize_inputs`, for every DEPTHWISE_CONV_2D,
    /// and for a CONV_2D with per-channel weight scales (not all equal) or groups.
    pub asymmetric: bool,
    /// The groups: a `FullyConnected` quantizes each row of its `[rows, K]` input; a
    /// `Conv` each batch sample, split further into `phases[0] x phases[1]` phases when
    /// the conv is a dilated convolution folded from the converter's
    /// SPACE_TO_BATCH_ND chain (LiteRT ran the conv on the phases as separate batch
    /// entries): input row `y`, column `x` belong to phase `((y + phase_offset[0]) %
    /// phases[0], (x + phase_offset[1]) % phases[1])`. `[1, 1]` otherwise.
    pub phases: [usize; 2],
    /// Added to input coordinates before taking the phase: the SPACE_TO_BATCH_ND's
    /// leading padding.
    pub phase_offset: [usize; 2],
}

impl Hybrid {
    /// Groups of whole samples (or rows), no phases.
    pub fn new(asymmetric: bool) -> Hybrid {
        Hybrid {
            asymmetric,
            phases: [1, 1],
            phase_offset: [0, 0],
        }
    }
}

/// Transposed convolution (ONNX ConvTranspose; weights `[C, M/group, *kernel]`, NCHW).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvTransposeAttrs {
    pub conv: ConvAttrs,
    pub output_padding: Vec<usize>,
    /// Explicit output spatial shape; when set, pads are derived from it.
    pub output_shape: Option<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolAttrs {
    pub layout: Layout,
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
    /// AveragePool only: divide by the full window including padding.
    pub count_include_pad: bool,
    pub activation: Activation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareKind {
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnaryKind {
    Relu,
    /// min(max(x, 0), 6) (TFLite RELU6).
    Relu6,
    Sigmoid,
    Tanh,
    HardSwish,
    Exp,
    Log,
    Neg,
    Abs,
    Sqrt,
    Reciprocal,
    Floor,
    Ceil,
    Not,
    /// The Gauss error function (GELU in transformers is `0.5 x (1 + erf(x / sqrt 2))`).
    Erf,
    /// GELU, exact form `0.5 x (1 + erf(x / sqrt 2))` (ONNX Gelu, TFLite GELU with
    /// `approximate = false`).
    Gelu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CoordTransform {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
    /// TFLite RESIZE_NEAREST_NEIGHBOR with `half_pixel_centers` (ONNX `tf_half_pixel_for_nn`).
    TfHalfPixelForNn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AspectRatioPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coord: CoordTransform,
    pub nearest_mode: NearestMode,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub antialias: bool,
    pub keep_aspect_ratio_policy: AspectRatioPolicy,
    /// Axes that `scales`/`sizes`/`roi` refer to; `None` = all axes.
    pub axes: Option<Vec<i64>>,
    /// Exactly one of `scales` and `sizes` is set (folded from constant inputs).
    pub scales: Option<Vec<f32>>,
    pub sizes: Option<Vec<usize>>,
    /// Only for `TfCropAndResize`: `[starts..., ends...]` in normalized coordinates.
    pub roi: Option<Vec<f32>>,
}

/// Which way a recurrent layer runs over the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RnnDirection {
    Forward,
    Reverse,
    /// Forward and reverse, with their own weights; outputs stacked on the direction axis.
    Bidirectional,
}

impl RnnDirection {
    pub fn count(self) -> usize {
        match self {
            RnnDirection::Bidirectional => 2,
            _ => 1,
        }
    }
}

/// TFLite STRIDED_SLICE with constant `begin`/`end`/`strides` (one entry per sliced
/// dimension, masks as bit sets over those entries). The masks are kept as TFLite
/// writes them and resolved against the input shape by
/// [`crate::shape::strided_slice_plan`], the one home of their semantics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StridedSliceAttrs {
    pub begin: Vec<i64>,
    pub end: Vec<i64>,
    pub strides: Vec<i64>,
    pub begin_mask: u32,
    pub end_mask: u32,
    pub ellipsis_mask: u32,
    pub new_axis_mask: u32,
    pub shrink_axis_mask: u32,
    /// `end` is relative to `begin` (`end[i] = begin[i] + end[i]`).
    pub offset: bool,
}

/// One operator. Inputs and outputs are listed per variant as `inputs -> outputs`;
/// `[x]` marks an optional input (absent = `None` in `Node::inputs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// x, w, [b] -> y. Float, or TFLite int8 when tensors are quantized (b is i32).
    Conv(ConvAttrs),
    /// x, w, [b] -> y.
    ConvTranspose(ConvTransposeAttrs),
    /// a, b, [c] -> y = alpha * A' * B' + beta * C.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    /// a, b -> y (numpy matmul, batched with broadcasting).
    MatMul,
    /// TFLite FULLY_CONNECTED: x `[..., K]`, w `[N, K]`, [b `[N]`] -> y `[rows, N]`
    /// (or `[..., N]` with `keep_num_dims`), rows = numel(x) / K.
    FullyConnected {
        activation: Activation,
        keep_num_dims: bool,
        /// LiteRT's dynamic-range execution (see [`Hybrid`]); never has phases.
        #[serde(default)]
        hybrid: Option<Hybrid>,
    },
    /// a, b -> y with numpy broadcasting.
    Binary {
        kind: BinaryKind,
        activation: Activation,
    },
    /// a, b -> bool y with broadcasting.
    Compare(CompareKind),
    /// cond, a, b -> y.
    Where,
    /// x -> y.
    Unary(UnaryKind),
    /// x -> y = clamp(x, min, max); bounds folded from ONNX inputs (None = unbounded).
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    LeakyRelu {
        alpha: f32,
    },
    /// y = max(0, min(1, alpha * x + beta)).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// x -> y. `beta` scales logits (TFLite), 1.0 for ONNX.
    Softmax {
        axis: i64,
        beta: f32,
    },
    LogSoftmax {
        axis: i64,
    },
    MaxPool(PoolAttrs),
    AveragePool(PoolAttrs),
    /// x `[N, C, *spatial]` -> `[N, C, 1, ...]`.
    GlobalAveragePool,
    /// x, scale, bias, mean, var -> y (inference form, channel axis 1).
    BatchNorm {
        epsilon: f32,
    },
    /// x, scale, [bias] -> y (ONNX LayerNormalization): each slice over the axes
    /// `axis..rank` is normalized to zero mean and unit variance (`1 / sqrt(var +
    /// epsilon)`, biased variance), then multiplied by `scale` and shifted by `bias`,
    /// both broadcast to `shape[axis..]`.
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    Flatten {
        axis: i64,
    },
    /// data, shape (i64) -> y.
    Reshape {
        allowzero: bool,
    },
    /// Empty `perm` reverses the axes.
    Transpose {
        perm: Vec<usize>,
    },
    /// Empty `axes` removes every dimension of size 1.
    Squeeze {
        axes: Vec<i64>,
    },
    Unsqueeze {
        axes: Vec<i64>,
    },
    /// x0, x1, ... -> y.
    Concat {
        axis: i64,
        activation: Activation,
    },
    /// x -> y: TFLite STRIDED_SLICE (data movement on any dtype; quantized tensors keep
    /// their parameters).
    StridedSlice(StridedSliceAttrs),
    /// x -> y with axis `i` repeated `repeats[i]` times (ONNX Tile / TFLite TILE with
    /// constant multiples).
    Tile {
        repeats: Vec<usize>,
    },
    /// dims (1-D integer), value (one element) -> y of shape `dims` filled with `value`
    /// (TFLite FILL; `dims` may be computed at run time, e.g. from a dynamic batch).
    Fill,
    /// data, indices -> y.
    Gather {
        axis: i64,
    },
    /// x -> y0, y1, ...: consecutive pieces of x along `axis`, `split[i]` wide
    /// (ONNX Split; TFLite SPLIT / SPLIT_V).
    Split {
        axis: i64,
        split: Vec<usize>,
    },
    /// x -> y (ONNX Slice, constant operands folded): along `axes[i]`, elements
    /// `starts[i], starts[i] + steps[i], ...` up to but excluding `ends[i]`; negative
    /// starts/ends count from the end and out-of-range ones are clamped as in ONNX.
    /// The four lists have the same length; axes not listed are kept whole.
    Slice {
        starts: Vec<i64>,
        ends: Vec<i64>,
        axes: Vec<i64>,
        steps: Vec<i64>,
    },
    /// `pads` over all axes in ONNX order `[begins..., ends...]` (negative crops);
    /// `value` is the real pad value (quantized tensors pad with its quantized form).
    Pad {
        mode: PadMode,
        pads: Vec<i64>,
        value: f32,
    },
    /// ONNX LSTM with the default activations (sigmoid for the gates, tanh for the
    /// cell and hidden state): x, w `[dirs, 4H, I]`, r `[dirs, 4H, H]`, [b `[dirs, 8H]`],
    /// [sequence_lens `[batch]`], [initial_h], [initial_c], [p `[dirs, 3H]`] -> y, y_h,
    /// y_c. Gate order i, o, f, c (peepholes i, o, f). With `batch_first` (ONNX
    /// `layout = 1`) x is `[batch, seq, I]`, y `[batch, seq, dirs, H]` and the states
    /// `[batch, dirs, H]`; otherwise x is `[seq, batch, I]`, y `[seq, dirs, batch, H]`
    /// and the states `[dirs, batch, H]`. `clip` bounds the gate pre-activations;
    /// `input_forget` couples the forget gate to the input gate (f = 1 - i).
    Lstm {
        hidden_size: usize,
        direction: RnnDirection,
        batch_first: bool,
        clip: Option<f32>,
        input_forget: bool,
    },
    /// x -> values, indices (i64): the `k` largest (or smallest) elements along `axis`,
    /// best first; equal elements keep their original order (ONNX TopK, `k` folded from
    /// its constant input; unsorted output is also returned sorted).
    TopK {
        axis: i64,
        k: usize,
        largest: bool,
    },
    /// ONNX GRU with the default activations (sigmoid gates, tanh candidate): x, w
    /// `[dirs, 3H, I]`, r `[dirs, 3H, H]`, [b `[dirs, 6H]`], [sequence_lens],
    /// [initial_h] -> y, y_h; gate order z, r, h; layouts as [`Op::Lstm`]. With
    /// `linear_before_reset` (PyTorch's form) the reset gate multiplies the recurrent
    /// product `H R_h + Rb_h` instead of the state before it.
    Gru {
        hidden_size: usize,
        direction: RnnDirection,
        batch_first: bool,
        clip: Option<f32>,
        linear_before_reset: bool,
    },
    /// `axes == None` reduces all axes (unless `noop_with_empty_axes`).
    Reduce {
        kind: ReduceKind,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    Resize(ResizeAttrs),
    Identity,
    /// x -> i64 shape (kept only when it cannot be folded).
    Shape,
    Cast {
        to: DType,
    },
    /// ONNX QuantizeLinear: x, y_scale, [y_zero_point] -> y (round half to even).
    QuantizeLinear {
        axis: i64,
        block_size: i64,
        saturate: bool,
        output_dtype: DType,
    },
    /// ONNX DequantizeLinear: x, x_scale, [x_zero_point] -> y.
    DequantizeLinear {
        axis: i64,
        block_size: i64,
    },
    /// x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, [b] -> y.
    QLinearConv(ConvAttrs),
    /// a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp -> y.
    QLinearMatMul,
    /// x, w, [x_zp], [w_zp] -> i32 y.
    ConvInteger(ConvAttrs),
    /// a, b, [a_zp], [b_zp] -> i32 y.
    MatMulInteger,
    /// TFLite QUANTIZE: x (float, or quantized with other params) -> y, using the
    /// quant params of the input and output tensors.
    Quantize,
    /// TFLite DEQUANTIZE: quantized or f16 x -> f32 y, using the input's quant params.
    Dequantize,
}

impl Op {
    /// Short name for messages and profiles (ONNX-style).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::FullyConnected { .. } => "FullyConnected",
            Op::Binary { kind, .. } => match kind {
                BinaryKind::Add => "Add",
                BinaryKind::Sub => "Sub",
                BinaryKind::Mul => "Mul",
                BinaryKind::Div => "Div",
                BinaryKind::Max => "Max",
                BinaryKind::Min => "Min",
                BinaryKind::Pow => "Pow",
            },
            Op::Compare(k) => match k {
                CompareKind::Equal => "Equal",
                CompareKind::Less => "Less",
                CompareKind::LessOrEqual => "LessOrEqual",
                CompareKind::Greater => "Greater",
                CompareKind::GreaterOrEqual => "GreaterOrEqual",
            },
            Op::Where => "Where",
            Op::Unary(k) => match k {
                UnaryKind::Relu => "Relu",
                UnaryKind::Relu6 => "Relu6",
                UnaryKind::Sigmoid => "Sigmoid",
                UnaryKind::Tanh => "Tanh",
                UnaryKind::HardSwish => "HardSwish",
                UnaryKind::Exp => "Exp",
                UnaryKind::Log => "Log",
                UnaryKind::Neg => "Neg",
                UnaryKind::Abs => "Abs",
                UnaryKind::Sqrt => "Sqrt",
                UnaryKind::Reciprocal => "Reciprocal",
                UnaryKind::Floor => "Floor",
                UnaryKind::Ceil => "Ceil",
                UnaryKind::Not => "Not",
                UnaryKind::Erf => "Erf",
                UnaryKind::Gelu => "Gelu",
            },
            Op::Clip { .. } => "Clip",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::HardSigmoid { .. } => "HardSigmoid",
            Op::Softmax { .. } => "Softmax",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool(_) => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Squeeze { .. } => "Squeeze",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Concat { .. } => "Concat",
            Op::StridedSlice(_) => "StridedSlice",
            Op::Tile { .. } => "Tile",
            Op::Fill => "Fill",
            Op::Gather { .. } => "Gather",
            Op::Lstm { .. } => "LSTM",
            Op::Gru { .. } => "GRU",
            Op::TopK { .. } => "TopK",
            Op::Split { .. } => "Split",
            Op::Slice { .. } => "Slice",
            Op::Pad { .. } => "Pad",
            Op::Reduce { kind, .. } => match kind {
                ReduceKind::Mean => "ReduceMean",
                ReduceKind::Sum => "ReduceSum",
                ReduceKind::Max => "ReduceMax",
                ReduceKind::Min => "ReduceMin",
                ReduceKind::Prod => "ReduceProd",
            },
            Op::Resize(_) => "Resize",
            Op::Identity => "Identity",
            Op::Shape => "Shape",
            Op::Cast { .. } => "Cast",
            Op::QuantizeLinear { .. } => "QuantizeLinear",
            Op::DequantizeLinear { .. } => "DequantizeLinear",
            Op::QLinearConv(_) => "QLinearConv",
            Op::QLinearMatMul => "QLinearMatMul",
            Op::ConvInteger(_) => "ConvInteger",
            Op::MatMulInteger => "MatMulInteger",
            Op::Quantize => "Quantize",
            Op::Dequantize => "Dequantize",
        }
    }

    /// The op's LiteRT hybrid attribute ([`Hybrid`]), for the ops that have one
    /// (`Conv`, `FullyConnected`): a place to read, set or clear it.
    pub fn hybrid_mut(&mut self) -> Option<&mut Option<Hybrid>> {
        match self {
            Op::Conv(a) => Some(&mut a.hybrid),
            Op::FullyConnected { hybrid, .. } => Some(hybrid),
            Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
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
            | Op::Lstm { .. }
            | Op::Gru { .. }
            | Op::TopK { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
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
        }
    }

    /// The op's hybrid attribute, if it has one and it is set.
    pub fn hybrid(&self) -> Option<Hybrid> {
        match self {
            Op::Conv(a) => a.hybrid,
            Op::FullyConnected { hybrid, .. } => *hybrid,
            Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
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
            | Op::Lstm { .. }
            | Op::Gru { .. }
            | Op::TopK { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
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
        }
    }

    /// Ops whose output is a pure re-interpretation of input 0's bytes (same data,
    /// new shape): the memory planner may alias them.
    pub fn is_reshape_like(&self) -> bool {
        matches!(
            self,
            Op::Reshape { .. }
                | Op::Flatten { .. }
                | Op::Squeeze { .. }
                | Op::Unsqueeze { .. }
                | Op::Identity
        )
    }
}
