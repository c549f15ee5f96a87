//! Conversions between float and quantized values: TFLite QUANTIZE / DEQUANTIZE and
//! ONNX QuantizeLinear / DequantizeLinear (per tensor, per axis, blocked).

use super::super::NodeCtx;
use super::common::*;
use super::fixedpoint::*;
use crate::error::Result;
use edgeopt_ir::{DType, Tensor, TensorData};

/// Requantizes `v` from `qx` to `qy` (TFLite `Requantize`: fixed-point multiplier
/// `in_scale / out_scale` computed in double precision).
pub fn requantize_values<I: QInt, O: QInt>(v: &[I], qx: Affine, qy: Affine) -> Vec<O> {
    let (m, s) = quantize_multiplier(qx.scale as f64 / qy.scale as f64);
    v.iter()
        .map(|e| {
            let r = multiply_by_quantized_multiplier(e.to_i32() - qx.zp, m, s) + qy.zp;
            O::from_i32(r.clamp(O::MIN, O::MAX))
        })
        .collect()
}

/// For a tensor of `shape` quantized along `axis` (None = per tensor), the channel of
/// each element is `(i / inner) % dim`.
fn channel_layout(shape: &[usize], axis: Option<usize>) -> (usize, usize) {
    match axis {
        Some(a) if a < shape.len() => (shape[a + 1..].iter().product(), shape[a]),
        _ => (1, 1),
    }
}

/// TFLite QUANTIZE: float -> quantized (`round(x / scale) + zp`, ties away from zero, in
/// f32 as `AffineQuantize` does), or quantized -> quantized (requantization).
pub fn tflite_quantize(ctx: &NodeCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let out_dtype = ctx
        .out_dtype(0)
        .ok_or_else(|| ctx.error("missing output"))?;
    let oq = ctx
        .out_quant(0)
        .ok_or_else(|| ctx.error("output has no quantization parameters"))?;
    match &x.data {
        TensorData::F32(v) => {
            let (inner, dim) = channel_layout(&x.shape, oq.axis.filter(|_| oq.scale.len() > 1));
            let mut params = Vec::with_capacity(dim);
            for c in 0..dim {
                let (s, z) = oq.channel(c);
                if !(s.is_finite() && s > 0.0) {
                    return Err(ctx.error(format!("invalid output scale {s}")));
                }
                params.push((s, z as i32));
            }
            let q = |i: usize, val: f32, lo: i32, hi: i32| -> i32 {
                let (s, z) = params[(i / inner) % dim];
                ((val / s).round() as i32).saturating_add(z).clamp(lo, hi)
            };
            let out = match out_dtype {
                DType::I8 => TensorData::I8(
                    v.iter()
                        .enumerate()
                        .map(|(i, &e)| q(i, e, -128, 127) as i8)
                        .collect(),
                ),
                DType::U8 => TensorData::U8(
                    v.iter()
                        .enumerate()
                        .map(|(i, &e)| q(i, e, 0, 255) as u8)
                        .collect(),
                ),
                DType::I16 => TensorData::I16(
                    v.iter()
                        .enumerate()
                        .map(|(i, &e)| q(i, e, -32768, 32767) as i16)
                        .collect(),
                ),
                d => return Err(ctx.error(format!("cannot quantize to {d}"))),
            };
            Ok(vec![Tensor::new(x.shape.clone(), out)?])
        }
        _ => {
            let qx = per_tensor(ctx, ctx.in_quant(0), "input")?;
            let qy = per_tensor(ctx, Some(oq), "output")?;
            macro_rules! from {
                ($it:ty) => {{
                    let v = data::<$it>(ctx, x, "input")?;
                    match out_dtype {
                        DType::I8 => make(x.shape.clone(), requantize_values::<$it, i8>(v, qx, qy)),
                        DType::U8 => make(x.shape.clone(), requantize_values::<$it, u8>(v, qx, qy)),
                        DType::I16 => {
                            make(x.shape.clone(), requantize_values::<$it, i16>(v, qx, qy))
                        }
                        d => return Err(ctx.error(format!("cannot requantize to {d}"))),
                    }
                }};
            }
            let t = match x.dtype() {
                DType::I8 => from!(i8),
                DType::U8 => from!(u8),
                DType::I16 => from!(i16),
                d => return Err(ctx.error(format!("cannot requantize from {d}"))),
            };
            Ok(vec![t])
        }
    }
}

/// TFLite DEQUANTIZE of quantized data: `scale * (q - zp)` (double product rounded to f32,
/// which equals the f32 product since both factors are exact).
pub fn tflite_dequantize(
    ctx: &NodeCtx,
    num: super::Numerics,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let q = ctx
        .in_quant(0)
        .ok_or_else(|| ctx.error("input has no quantization parameters"))?;
    let (inner, dim) = channel_layout(&x.shape, q.axis.filter(|_| q.scale.len() > 1));
    if dim > 1 && q.scale.len() != dim {
        return Err(ctx.error("per-axis scales do not match the quantized axis"));
    }
    let params: Vec<(f64, i64)> = (0..dim)
        .map(|c| {
            let (s, z) = q.channel(c);
            (s as f64, z)
        })
        .collect();
    // LiteRT's builtin int8/uint8 DEQUANTIZE runs blocks of 8 elements as a float
    // multiply-add `q * scale + (-zp * scale)` (its NEON path, emulated on x86) and the
    // tail of fewer than 8 in the double-precision reference form (found by comparing
    // its outputs with each formula: this split matched every element of a
    // transformer's float islands and outputs, the reference form alone differed in
    // the last bit of 112 of 384). TFLite Micro's is the reference form throughout.
    let litert_f32 = num == super::Numerics::LiteRt
        && dim == 1
        && matches!(x.dtype(), edgeopt_ir::DType::I8 | edgeopt_ir::DType::U8);
    let out: Vec<f32> = if litert_f32 {
        let (s, z) = q.channel(0);
        let zs = -(z as f32 * s);
        let blocks = x.len() / 8 * 8;
        (0..x.len())
            .map(|i| {
                let v = x.data.get_i64(i);
                if i < blocks {
                    v as f32 * s + zs
                } else {
                    (s as f64 * (v - z) as f64) as f32
                }
            })
            .collect()
    } else {
        (0..x.len())
            .map(|i| {
                let (s, z) = params[(i / inner) % dim];
                (s * (x.data.get_i64(i) - z) as f64) as f32
            })
            .collect()
    };
    Ok(vec![Tensor::from_f32(x.shape.clone(), out)?])
}

/// Scale/zero-point index of each element for ONNX per-axis or blocked quantization.
struct OnnxLayout {
    inner: usize,
    dim: usize,
    block: usize,
    scale_dim: usize,
    per_tensor: bool,
    blocked: bool,
}

impl OnnxLayout {
    fn new(
        ctx: &NodeCtx,
        x_shape: &[usize],
        scale_shape: &[usize],
        axis: i64,
        block_size: i64,
    ) -> Result<OnnxLayout> {
        let scale_n: usize = scale_shape.iter().product();
        if scale_shape.is_empty() || (scale_n == 1 && block_size <= 0) {
            return Ok(OnnxLayout {
                inner: 1,
                dim: 1,
                block: 1,
                scale_dim: 1,
                per_tensor: true,
                blocked: false,
            });
        }
        let r = x_shape.len();
        let ax = norm_axis(ctx, axis, r)?;
        let dim = x_shape[ax];
        if block_size > 0 {
            // Blocked: scale has x's shape with dim `ax` = ceil(dim / block_size).
            let b = block_size as usize;
            if scale_shape.len() != r
                || scale_shape[ax] != dim.div_ceil(b)
                || (0..r).any(|d| d != ax && scale_shape[d] != x_shape[d])
            {
                return Err(ctx.error(format!(
                    "blocked scale shape {scale_shape:?} does not fit input {x_shape:?} (axis {ax}, block {b})"
                )));
            }
            return Ok(OnnxLayout {
                inner: x_shape[ax + 1..].iter().product(),
                dim,
                block: b,
                scale_dim: scale_shape[ax],
                per_tensor: false,
                blocked: true,
            });
        }
        if scale_shape.len() != 1 || scale_shape[0] != dim {
            return Err(ctx.error(format!(
                "per-axis scale of shape {scale_shape:?} does not match input dim {dim} on axis {ax}"
            )));
        }
        Ok(OnnxLayout {
            inner: x_shape[ax + 1..].iter().product(),
            dim,
            block: 1,
            scale_dim: dim,
            per_tensor: false,
            blocked: false,
        })
    }

    /// Index into the (flattened) scale tensor for element `i` of x.
    #[inline]
    fn index(&self, i: usize) -> usize {
        if self.per_tensor {
            return 0;
        }
        let c = (i / self.inner) % self.dim;
        if !self.blocked {
            return c;
        }
        let outer = i / (self.inner * self.dim);
        (outer * self.scale_dim + c / self.block) * self.inner + i % self.inner
    }
}

fn scale_values(ctx: &NodeCtx, t: &Tensor) -> Result<Vec<f32>> {
    match &t.data {
        TensorData::F32(v) => Ok(v.clone()),
        TensorData::F16(v) => Ok(v.iter().map(|h| h.to_f32()).collect()),
        d => Err(ctx.error(format!("scale must be float, got {}", d.dtype()))),
    }
}

/// ONNX QuantizeLinear: `saturate(round_half_even(x / scale) + zp)`, the division in
/// f32 (the input's precision), as the ONNX reference implementation does.
pub fn quantize_linear(
    ctx: &NodeCtx,
    axis: i64,
    block_size: i64,
    output_dtype: DType,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let s = input(ctx, inputs, 1)?;
    let zp = inputs.get(2).copied().flatten();
    let dtype = zp.map(|z| z.dtype()).unwrap_or(output_dtype);
    let (lo, hi) = match dtype {
        DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::I4 | DType::U4 | DType::I32 => {
            dtype.int_range().unwrap()
        }
        d => return Err(ctx.error(format!("QuantizeLinear to {d} is not supported"))),
    };
    let layout = OnnxLayout::new(ctx, &x.shape, &s.shape, axis, block_size)?;
    let scales = scale_values(ctx, s)?;
    let zps: Vec<i64> = match zp {
        Some(z) => {
            if z.len() != scales.len() {
                return Err(ctx.error("zero point and scale differ in size"));
            }
            z.to_i64_vec()
        }
        None => vec![0; scales.len()],
    };
    let xf: Vec<f32> = match &x.data {
        TensorData::F32(v) => v.clone(),
        TensorData::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
        TensorData::I32(v) => v.iter().map(|&e| e as f32).collect(),
        d => {
            return Err(ctx.error(format!(
                "QuantizeLinear input must be float, got {}",
                d.dtype()
            )))
        }
    };
    let f16_input = x.dtype() == DType::F16;
    let vals: Vec<i64> = xf
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = layout.index(i);
            let mut q = v / scales[k];
            if f16_input {
                // The reference divides in float16.
                q = half::f16::from_f32(q).to_f32();
            }
            let r = q.round_ties_even() as f64 + zps[k] as f64;
            r.clamp(lo as f64, hi as f64) as i64
        })
        .collect();
    let data = match dtype {
        DType::I8 => TensorData::I8(vals.iter().map(|&v| v as i8).collect()),
        DType::U8 => TensorData::U8(vals.iter().map(|&v| v as u8).collect()),
        DType::I16 => TensorData::I16(vals.iter().map(|&v| v as i16).collect()),
        DType::U16 => TensorData::U16(vals.iter().map(|&v| v as u16).collect()),
        DType::I32 => TensorData::I32(vals.iter().map(|&v| v as i32).collect()),
        DType::I4 => TensorData::I4(vals.iter().map(|&v| v as i8).collect()),
        DType::U4 => TensorData::U4(vals.iter().map(|&v| v as u8).collect()),
        _ => unreachable!(),
    };
    Ok(vec![Tensor::new(x.shape.clone(), data)?])
}

/// ONNX DequantizeLinear: `(x - zp) * scale`, output in the scale's float type.
pub fn dequantize_linear(
    ctx: &NodeCtx,
    axis: i64,
    block_size: i64,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let s = input(ctx, inputs, 1)?;
    let zp = inputs.get(2).copied().flatten();
    if !x.dtype().is_integer() {
        return Err(ctx.error(format!(
            "DequantizeLinear of {} is not supported",
            x.dtype()
        )));
    }
    let layout = OnnxLayout::new(ctx, &x.shape, &s.shape, axis, block_size)?;
    let scales = scale_values(ctx, s)?;
    let zps: Vec<i64> = match zp {
        Some(z) => {
            if z.len() != scales.len() {
                return Err(ctx.error("zero point and scale differ in size"));
            }
            z.to_i64_vec()
        }
        None => vec![0; scales.len()],
    };
    let out: Vec<f32> = (0..x.len())
        .map(|i| {
            let k = layout.index(i);
            (x.data.get_i64(i) as f32 - zps[k] as f32) * scales[k]
        })
        .collect();
    let data = if s.dtype() == DType::F16 {
        TensorData::F16(out.iter().map(|&v| half::f16::from_f32(v)).collect())
    } else {
        TensorData::F32(out)
    };
    Ok(vec![Tensor::new(x.shape.clone(), data)?])
}
