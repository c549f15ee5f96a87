//! Shared plumbing of the quantized kernels: quant-param access, integer element
//! types, output stages (accumulator -> quantized value) and fused activation ranges.

use super::super::NodeCtx;
use super::fixedpoint::{multiply_by_quantized_multiplier, quantize_multiplier, srdhm};
use crate::error::{Result, RuntimeError};
use edgeopt_ir::{Activation, DType, QuantParams, Tensor, TensorData};

/// Per-tensor affine parameters as the kernels use them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub scale: f32,
    pub zp: i32,
}

/// Quantized integer element types the TFLite kernels run on.
pub trait QInt: Copy + Send + Sync + 'static {
    const MIN: i32;
    const MAX: i32;
    const DTYPE: DType;
    fn to_i32(self) -> i32;
    /// `v` must already be within `[MIN, MAX]`.
    fn from_i32(v: i32) -> Self;
    fn slice(t: &Tensor) -> Option<&[Self]>;
    fn into_data(v: Vec<Self>) -> TensorData;
    /// The vector of `d` when it holds `Self` (lets kernels reuse an output buffer).
    fn vec_mut(d: &mut TensorData) -> Option<&mut Vec<Self>>;
}

macro_rules! qint {
    ($t:ty, $variant:ident, $dt:ident) => {
        impl QInt for $t {
            const MIN: i32 = <$t>::MIN as i32;
            const MAX: i32 = <$t>::MAX as i32;
            const DTYPE: DType = DType::$dt;
            #[inline(always)]
            fn to_i32(self) -> i32 {
                self as i32
            }
            #[inline(always)]
            fn from_i32(v: i32) -> Self {
                v as $t
            }
            fn slice(t: &Tensor) -> Option<&[Self]> {
                match &t.data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_data(v: Vec<Self>) -> TensorData {
                TensorData::$variant(v)
            }
            fn vec_mut(d: &mut TensorData) -> Option<&mut Vec<Self>> {
                match d {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
qint!(i8, I8, I8);
qint!(u8, U8, U8);
qint!(i16, I16, I16);

/// Whether `d` is an activation type of the TFLite quantized kernels.
pub fn is_qint(d: DType) -> bool {
    matches!(d, DType::I8 | DType::U8 | DType::I16)
}

/// Input `i`, which must be present.
pub fn input<'t>(ctx: &NodeCtx, inputs: &[Option<&'t Tensor>], i: usize) -> Result<&'t Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| ctx.error(format!("missing input {i}")))
}

/// Integer data of `t` as `T`.
pub fn data<'t, T: QInt>(ctx: &NodeCtx, t: &'t Tensor, what: &str) -> Result<&'t [T]> {
    T::slice(t).ok_or_else(|| ctx.error(format!("{what} must be {}, got {}", T::DTYPE, t.dtype())))
}

/// Per-tensor params from optional quant params; errors when absent or per-axis.
pub fn per_tensor(ctx: &NodeCtx, q: Option<&QuantParams>, what: &str) -> Result<Affine> {
    let q = q.ok_or_else(|| ctx.error(format!("{what} has no quantization parameters")))?;
    if q.scale.len() != 1 && !q.scale.iter().all(|&s| s == q.scale[0]) {
        return Err(ctx.error(format!("{what} must be quantized per tensor")));
    }
    let scale = *q
        .scale
        .first()
        .ok_or_else(|| ctx.error(format!("{what} has an empty scale")))?;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(ctx.error(format!("{what} has invalid scale {scale}")));
    }
    let zp = q.zero_point.first().copied().unwrap_or(0);
    let zp =
        i32::try_from(zp).map_err(|_| ctx.error(format!("{what} zero point {zp} out of range")))?;
    Ok(Affine { scale, zp })
}

/// Per-channel scales and zero points of a weight tensor with `channels` output
/// channels (a single pair is broadcast).
pub fn per_channel(
    ctx: &NodeCtx,
    q: Option<&QuantParams>,
    channels: usize,
    what: &str,
) -> Result<(Vec<f32>, Vec<i32>)> {
    let q = q.ok_or_else(|| ctx.error(format!("{what} has no quantization parameters")))?;
    if q.block_size.is_some() {
        // Callers that reach here (e.g. the fast kernels) have no block-wise path.
        return Err(ctx.error(format!("{what} are quantized block-wise")));
    }
    let n = q.scale.len();
    if n != 1 && n != channels {
        return Err(ctx.error(format!(
            "{what} has {n} scales for {channels} output channels"
        )));
    }
    let mut scales = Vec::with_capacity(channels);
    let mut zps = Vec::with_capacity(channels);
    for c in 0..channels {
        let (s, z) = q.channel(if n == 1 { 0 } else { c });
        if !(s.is_finite() && s > 0.0) {
            return Err(ctx.error(format!("{what} has invalid scale {s} (channel {c})")));
        }
        let z = i32::try_from(z)
            .map_err(|_| ctx.error(format!("{what} zero point {z} out of range")))?;
        scales.push(s);
        zps.push(z);
    }
    Ok((scales, zps))
}

/// TFLite `CalculateActivationRangeQuantized`: the clamp range of a fused activation
/// in the output's quantized domain.
pub fn activation_range<T: QInt>(act: Activation, out: Affine) -> (i32, i32) {
    let q = |f: f32| out.zp + (f / out.scale).round() as i32;
    let (qmin, qmax) = (T::MIN, T::MAX);
    match act {
        Activation::None => (qmin, qmax),
        Activation::Relu => (qmin.max(q(0.0)), qmax),
        Activation::Relu6 => (qmin.max(q(0.0)), qmax.min(q(6.0))),
        Activation::ReluN1To1 => (qmin.max(q(-1.0)), qmax.min(q(1.0))),
    }
}

/// How the final right shift of the fixed-point requantization rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// TFLite's `MultiplyByQuantizedMultiplier`: `RoundingDivideByPOT`, ties away
    /// from zero (reference kernels, depthwise conv, add, ...).
    TiesAway,
    /// ruy's `RoundingRightShift` after the same doubling high multiply: ties round
    /// up (toward +inf). LiteRT's builtin CONV_2D and FULLY_CONNECTED go through ruy.
    TiesUp,
    /// One rounding of the exact product, `(x * m + 2^(30 - shift)) >> (31 - shift)`
    /// (TFLite's `TFLITE_SINGLE_ROUNDING` formula): what LiteRT's reference
    /// FULLY_CONNECTED produces.
    Single,
    /// `TiesUp` for the channels below the bound, `TiesAway` for the others: LiteRT's
    /// optimized int8 DEPTHWISE_CONV_2D (`optimized_ops::Quantize` after
    /// `DepthwiseConvGeneral`, NEON intrinsics, NEON_2_SSE on x86) requantizes whole
    /// blocks of 8 channels in vector lanes (`vqrdmulhq_s32`, then the rounding shift
    /// `vrshlq_s32`: ties up) and the remaining `channels % 8` one by one with
    /// `MultiplyByQuantizedMultiplier` (ties away).
    TiesUpBelow(usize),
}

impl Rounding {
    /// LiteRT's depthwise output rounding over `channels` output channels.
    pub fn litert_depthwise(channels: usize) -> Rounding {
        Rounding::TiesUpBelow(channels / 8 * 8)
    }

    /// Whether channel `c` rounds ties up (`TiesUp`, or `TiesUpBelow` below its bound).
    #[inline(always)]
    pub fn ties_up(self, c: usize) -> bool {
        match self {
            Rounding::TiesUp => true,
            Rounding::TiesUpBelow(n) => c < n,
            Rounding::TiesAway | Rounding::Single => false,
        }
    }
}

/// Accumulator -> quantized output, per output channel: fixed-point requantization
/// (multiplier and shift), output offset, and the (fused activation) clamp.
#[derive(Debug, Clone)]
pub struct OutputStage {
    pub multiplier: Vec<i32>,
    pub shift: Vec<i32>,
    pub out_zp: i32,
    pub min: i32,
    pub max: i32,
    pub rounding: Rounding,
}

impl OutputStage {
    /// From per-channel real multipliers `in_scale * w_scale[c] / out_scale`, computed
    /// in double precision as TFLite's `PopulateConvolutionQuantizationParams` does.
    pub fn new(in_scale: f32, w_scales: &[f32], out: Affine, range: (i32, i32)) -> OutputStage {
        let (multiplier, shift) = w_scales
            .iter()
            .map(|&ws| quantize_multiplier(in_scale as f64 * ws as f64 / out.scale as f64))
            .unzip();
        OutputStage {
            multiplier,
            shift,
            out_zp: out.zp,
            min: range.0,
            max: range.1,
            rounding: Rounding::TiesAway,
        }
    }

    pub fn with_rounding(mut self, r: Rounding) -> OutputStage {
        self.rounding = r;
        self
    }

    #[inline(always)]
    pub fn apply(&self, acc: i32, c: usize) -> i32 {
        let (m, shift) = (self.multiplier[c], self.shift[c]);
        let ties_up = match self.rounding {
            Rounding::TiesAway | Rounding::TiesUp | Rounding::TiesUpBelow(_) => {
                self.rounding.ties_up(c)
            }
            Rounding::Single => {
                let total = (31 - shift).clamp(1, 62);
                let v = ((acc as i64 * m as i64 + (1i64 << (total - 1))) >> total) as i32;
                return (v + self.out_zp).clamp(self.min, self.max);
            }
        };
        let v = if ties_up {
            let left = shift.max(0);
            let right = (-shift).clamp(0, 31);
            let hi = srdhm(acc.wrapping_mul(1i32.wrapping_shl(left as u32)), m) as i64;
            if right == 0 {
                hi as i32
            } else {
                ((hi + (1i64 << (right - 1))) >> right) as i32
            }
        } else {
            multiply_by_quantized_multiplier(acc, m, shift)
        };
        (v + self.out_zp).clamp(self.min, self.max)
    }
}

/// An error for an unsupported combination, naming the node.
pub fn unsupported(ctx: &NodeCtx, msg: impl Into<String>) -> RuntimeError {
    ctx.error(msg)
}

/// Output tensor from raw quantized values.
pub fn make<T: QInt>(shape: Vec<usize>, v: Vec<T>) -> Tensor {
    debug_assert_eq!(shape.iter().product::<usize>(), v.len());
    Tensor {
        shape,
        data: T::into_data(v),
    }
}

/// Checked element count for an output shape (errors rather than overflowing).
pub fn numel(ctx: &NodeCtx, shape: &[usize]) -> Result<usize> {
    edgeopt_ir::checked_numel(shape).map_err(|e| ctx.error(e.to_string()))
}

/// Normalizes a possibly negative axis against `rank`.
pub fn norm_axis(ctx: &NodeCtx, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(ctx.error(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}
