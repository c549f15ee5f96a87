//! Quantized activations: SOFTMAX, LOGISTIC, TANH (lookup tables), RELU/RELU6 (ReluX
//! requantization), LEAKY_RELU (two requantizations), HARD_SWISH (fixed point).

use super::super::NodeCtx;
use super::common::*;
use super::fixedpoint::*;
use super::Numerics;
use crate::error::Result;
use edgeopt_ir::{Tensor, UnaryKind};

/// LiteRT's softmax exp table (`optimized_ops::PopulateSoftmaxLookupTable`):
/// `table[255 - v] = exp(-in_scale * beta * v)`.
pub fn litert_softmax_table(in_scale: f32, beta: f32) -> [f32; 256] {
    let scale = -in_scale * beta;
    let mut table = [0f32; 256];
    for val in 0..=255i32 {
        table[(255 - val) as usize] = (scale * val as f32).exp();
    }
    table
}

/// LiteRT's softmax (float table path) of the rows of `depth` values of `xv` into
/// `out`, with a table from [`litert_softmax_table`]. `depth > 0`.
pub fn litert_softmax_rows<T: QInt>(
    table: &[f32; 256],
    xv: &[T],
    depth: usize,
    out_scale: f32,
    out_zp: i32,
    out: &mut [T],
) {
    for (row, orow) in xv.chunks_exact(depth).zip(out.chunks_exact_mut(depth)) {
        let max_val = row.iter().map(|v| v.to_i32()).fold(T::MIN, i32::max);
        let base = 255 - max_val;
        let mut sum_exp = 0f32;
        for v in row {
            sum_exp += table[(base + v.to_i32()) as usize];
        }
        let inv_sum_exp = 1.0f32 / (sum_exp * out_scale);
        for (o, v) in orow.iter_mut().zip(row) {
            let prob = table[(base + v.to_i32()) as usize] * inv_sum_exp;
            // QuantizeSoftmaxOutput: uint8 on x86 uses +0.5 and truncation,
            // other types std::round.
            let q = if T::DTYPE == edgeopt_ir::DType::U8 {
                (prob + 0.5) as i32
            } else {
                prob.round() as i32 + out_zp
            };
            *o = T::from_i32(q.clamp(T::MIN, T::MAX));
        }
    }
}
/// Input and per-tensor input/output parameters of a quantized SOFTMAX, which the
/// integer kernels support over the last axis only.
pub fn softmax_operands<'t>(
    ctx: &NodeCtx,
    axis: i64,
    inputs: &[Option<&'t Tensor>],
) -> Result<(&'t Tensor, Affine, Affine)> {
    let x = input(ctx, inputs, 0)?;
    let rank = x.shape.len();
    if rank == 0 || norm_axis(ctx, axis, rank)? != rank - 1 {
        return Err(ctx.error("quantized softmax supports only the last axis"));
    }
    let qx = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    Ok((x, qx, qy))
}

/// SOFTMAX over the last axis. `Numerics::Reference` is TFLite's reference kernel
/// (gemmlowp fixed-point exp and reciprocal); `Numerics::LiteRt` is the builtin
/// optimized kernel LiteRT runs on x86: a 256-entry float table of exp values,
/// a float sum, and float rescaling.
pub fn softmax<T: QInt>(
    ctx: &NodeCtx,
    axis: i64,
    beta: f32,
    num: Numerics,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let (x, qx, qy) = softmax_operands(ctx, axis, inputs)?;
    let rank = x.shape.len();
    let xv = data::<T>(ctx, x, "input")?;
    let depth = x.shape[rank - 1];
    let mut out = vec![T::from_i32(0); xv.len()];
    if depth == 0 {
        return Ok(vec![make(x.shape.clone(), out)]);
    }
    if T::DTYPE == edgeopt_ir::DType::I16 {
        return Err(ctx.error("int16 softmax is not supported yet"));
    }
    match num {
        Numerics::LiteRt => {
            let table = litert_softmax_table(qx.scale, beta);
            litert_softmax_rows(&table, xv, depth, qy.scale, qy.zp, &mut out);
        }
        Numerics::Reference | Numerics::Tflm => {
            const SCALED_DIFF_INTEGER_BITS: i32 = 5;
            const ACCUMULATION_INTEGER_BITS: i32 = 12;
            let max_real = ((1i64 << 31) - 1) as f64;
            let real =
                (beta as f64 * qx.scale as f64 * (1i64 << (31 - SCALED_DIFF_INTEGER_BITS)) as f64)
                    .min(max_real);
            let (input_multiplier, input_left_shift) = quantize_multiplier(real);
            let diff_min = -calculate_input_radius(SCALED_DIFF_INTEGER_BITS, input_left_shift, 31);
            let out_bits = (std::mem::size_of::<T>() * 8) as i32;
            for (row, orow) in xv.chunks_exact(depth).zip(out.chunks_exact_mut(depth)) {
                let max_in_row = row.iter().map(|v| v.to_i32()).fold(T::MIN, i32::max);
                let exp_of = |v: i32| -> Option<i32> {
                    let diff = v - max_in_row;
                    (diff >= diff_min).then(|| {
                        let rescaled = multiply_by_quantized_multiplier_greater_than_one(
                            diff,
                            input_multiplier,
                            input_left_shift,
                        );
                        exp_on_negative_values(rescaled, SCALED_DIFF_INTEGER_BITS)
                    })
                };
                let mut sum_of_exps: i32 = 0;
                for v in row {
                    if let Some(e) = exp_of(v.to_i32()) {
                        sum_of_exps = sum_of_exps
                            .wrapping_add(rounding_divide_by_pot(e, ACCUMULATION_INTEGER_BITS));
                    }
                }
                let (shifted_scale, num_bits_over_unit) =
                    get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS);
                for (o, v) in orow.iter_mut().zip(row) {
                    *o = match exp_of(v.to_i32()) {
                        Some(e) => {
                            let unsat = rounding_divide_by_pot(
                                srdhm(shifted_scale, e),
                                (num_bits_over_unit + 31 - out_bits).clamp(0, 31),
                            );
                            T::from_i32((unsat + T::MIN).clamp(T::MIN, T::MAX))
                        }
                        None => T::from_i32(T::MIN),
                    };
                }
            }
        }
    }
    Ok(vec![make(x.shape.clone(), out)])
}

/// TFLite `PopulateLookupTable` / `LUTPopulate` for 8-bit types: every input value is
/// dequantized, transformed in float, and requantized with `round` (ties away).
fn lut_8bit<T: QInt>(qx: Affine, qy: Affine, f: impl Fn(f32) -> f32) -> [i32; 256] {
    let inverse_scale = 1.0f32 / qy.scale;
    let mut table = [0i32; 256];
    for val in T::MIN..=T::MAX {
        let dequantized = qx.scale * (val - qx.zp) as f32;
        let transformed = f(dequantized);
        let rescaled = (transformed * inverse_scale).round();
        let quantized = (rescaled + qy.zp as f32) as i32;
        table[(val - T::MIN) as usize] = quantized.clamp(T::MIN, T::MAX);
    }
    table
}

/// LOGISTIC / TANH on 8-bit tensors (both the reference and optimized TFLite kernels
/// use the same float-built lookup table).
pub fn lut_activation<T: QInt>(
    ctx: &NodeCtx,
    kind: UnaryKind,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let qx = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    if T::DTYPE == edgeopt_ir::DType::I16 {
        return Err(ctx.error("int16 logistic/tanh are not supported yet"));
    }
    let table = match kind {
        UnaryKind::Sigmoid => lut_8bit::<T>(qx, qy, |v| 1.0f32 / (1.0f32 + (-v).exp())),
        UnaryKind::Tanh => lut_8bit::<T>(qx, qy, |v| v.tanh()),
        // LiteRT's GeluTransform: `0.5f * x * erfc(x * -M_SQRT1_2)` in float (erfc
        // taken in double and rounded once, as a correctly rounded erfcf would).
        UnaryKind::Gelu => lut_8bit::<T>(qx, qy, |v| {
            let z = v * -std::f32::consts::FRAC_1_SQRT_2;
            let erfc = (1.0 - crate::kernels::reference::util::erf(z as f64)) as f32;
            0.5f32 * v * erfc
        }),
        _ => return Err(ctx.error(format!("no lookup table for {kind:?}"))),
    };
    let xv = data::<T>(ctx, x, "input")?;
    let out = xv
        .iter()
        .map(|v| T::from_i32(table[(v.to_i32() - T::MIN) as usize]))
        .collect();
    Ok(vec![make(x.shape.clone(), out)])
}

/// RELU / RELU6 (`QuantizedReluX`): requantize with `input_scale / output_scale`
/// (a float division, as in TFLite's ReluPrepare) and clamp to the activation range.
/// Under [`Numerics::Tflm`] on int8: TFLM's tables ([`tflm_relu_table`],
/// [`tflm_relu6_table`]).
pub fn relu_x<T: QInt>(
    ctx: &NodeCtx,
    act_min: f32,
    act_max: Option<f32>,
    num: Numerics,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let qx = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    if num == Numerics::Tflm && T::DTYPE == edgeopt_ir::DType::I8 && act_min == 0.0 {
        let table = match act_max {
            None => tflm_relu_table(qx, qy),
            Some(6.0) => tflm_relu6_table(qx),
            Some(_) => return Err(ctx.error("TFLM has no RELU with this upper bound")),
        };
        let xv = data::<T>(ctx, x, "input")?;
        let out = xv
            .iter()
            .map(|v| T::from_i32(table[(v.to_i32() + 128) as usize] as i32))
            .collect();
        return Ok(vec![make(x.shape.clone(), out)]);
    }
    let (m, s) = quantize_multiplier((qx.scale / qy.scale) as f64);
    let qmin = T::MIN.max(qy.zp + (act_min / qy.scale).round() as i32);
    let qmax = match act_max {
        None => T::MAX,
        Some(a) => T::MAX.min(qy.zp + (a / qy.scale).round() as i32),
    };
    let xv = data::<T>(ctx, x, "input")?;
    let out = xv
        .iter()
        .map(|v| {
            let r = qy.zp + multiply_by_quantized_multiplier(v.to_i32() - qx.zp, m, s);
            T::from_i32(r.clamp(qmin, qmax))
        })
        .collect();
    Ok(vec![make(x.shape.clone(), out)])
}

/// RELU (TFLM `CalculateReluOpData`): requantize by `in_scale / out_scale` computed in
/// double, then clamp to [out_zp, 127]. LiteRT divides the two f32 scales in float
/// before widening; the rounded quotient gives another Q31 multiplier, and for about 1
/// scale pair in 1500 (random pairs, measured) another table.
pub fn tflm_relu_table(qx: Affine, qy: Affine) -> Vec<i8> {
    let (m, s) = quantize_multiplier(qx.scale as f64 / qy.scale as f64);
    // act_min = 0: zp + round(0 / scale).
    let lo = qy.zp.max(-128);
    (-128..=127i32)
        .map(|v| {
            let r = qy.zp + multiply_by_quantized_multiplier(v - qx.zp, m, s);
            r.clamp(lo, 127) as i8
        })
        .collect()
}

/// RELU6 (TFLM `Relu6Prepare` / `Relu6Quantized`): the input integers clamped to
/// [in_zp, six] with six = FloatToQuantizedType(6, in_scale, in_zp), i.e. in the
/// input's quantization; the output's parameters are not read (no requantization).
/// LiteRT requantizes to the output's parameters, so the two differ whenever input and
/// output parameters differ (0 to 8 of 1024 outputs equal in the test's sweep); with
/// equal parameters they agree.
pub fn tflm_relu6_table(qx: Affine) -> Vec<i8> {
    let six = (round_away_f32(6.0f32 / qx.scale) as i32 + qx.zp).clamp(-128, 127);
    let zero = qx.zp;
    (-128..=127i32)
        .map(|v| {
            let c = if v > six {
                six
            } else if v < zero {
                zero
            } else {
                v
            };
            c as i8
        })
        .collect()
}

/// TFLite `DownScaleInt32ToInt16Multiplier`.
fn downscale_multiplier(m: i32) -> i16 {
    const ROUNDING: i32 = 1 << 15;
    if m >= i32::MAX - ROUNDING {
        return i16::MAX;
    }
    ((m + ROUNDING) >> 16) as i16
}

/// Non-rounding `SaturatingDoublingHighMul` of TFLite's hard_swish.h.
fn saturating_doubling_high_mul_i16(a: i16, b: i16) -> i16 {
    if a == b && a == i16::MIN {
        return i16::MAX;
    }
    ((a as i32 * b as i32) / (1 << 15)) as i16
}

/// gemmlowp saturating `ShiftLeft` on i16.
fn shift_left_sat_i16(a: i16, offset: i32) -> i16 {
    let wide = (a as i32) * (1i32 << offset);
    wide.clamp(i16::MIN as i32, i16::MAX as i32) as i16
}

/// LEAKY_RELU on 8-bit tensors (TFLite `reference_ops::QuantizeLeakyRelu`, which
/// LiteRT's builtin kernel runs for 8-bit data and TFLM runs too): `x - zp_in`
/// requantized by `in_scale / out_scale` when non-negative, by `in_scale * alpha /
/// out_scale` when negative (both quotients in f32 as the kernels' Prepare computes
/// them, then `QuantizeMultiplier`), plus the output zero point, clamped.
pub fn leaky_relu<T: QInt>(
    ctx: &NodeCtx,
    alpha: f32,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    if T::DTYPE == edgeopt_ir::DType::I16 {
        // LiteRT's int16 kernel is an AVX2 one with its own rounding (not reproduced).
        return Err(ctx.error("quantized int16 LeakyRelu is not supported"));
    }
    let x = input(ctx, inputs, 0)?;
    let qx = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    if !alpha.is_finite() {
        return Err(ctx.error(format!("LeakyRelu alpha {alpha} is not finite")));
    }
    let identity = quantize_multiplier((qx.scale / qy.scale) as f64);
    let negative = quantize_multiplier((qx.scale * alpha / qy.scale) as f64);
    let out = data::<T>(ctx, x, "input")?
        .iter()
        .map(|v| {
            let d = v.to_i32() - qx.zp;
            let (m, s) = if d >= 0 { identity } else { negative };
            let r = qy.zp + multiply_by_quantized_multiplier(d, m, s);
            T::from_i32(r.clamp(T::MIN, T::MAX))
        })
        .collect();
    Ok(vec![make(x.shape.clone(), out)])
}

/// HARD_SWISH on 8-bit tensors (TFLite `reference_ops::HardSwish`, fixed point).
pub fn hard_swish<T: QInt>(ctx: &NodeCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let qx = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    if T::DTYPE == edgeopt_ir::DType::I16 {
        return Err(ctx.error("int16 hard-swish is not supported"));
    }
    let hires_input_scale = (1.0f32 / 128.0f32) * qx.scale;
    let reluish_scale = 3.0f32 / 32768.0f32;
    let (om32, out_exp) = quantize_multiplier((hires_input_scale / qy.scale) as f64);
    let out_mult = downscale_multiplier(om32);
    if out_exp > 0 {
        return Err(ctx.error("hard-swish output multiplier exponent must be <= 0"));
    }
    let (rm32, reluish_exp) = quantize_multiplier((hires_input_scale / reluish_scale) as f64);
    let reluish_mult = downscale_multiplier(rm32);
    let xv = data::<T>(ctx, x, "input")?;
    let out = xv
        .iter()
        .map(|v| {
            let input_value = (v.to_i32() - qx.zp) as i16;
            let hires = input_value.wrapping_mul(1 << 7);
            let preshift_out = srdhm_i16(hires, out_mult);
            let mut reluish = hires;
            if reluish_exp > 0 {
                reluish = shift_left_sat_i16(reluish, reluish_exp - 1);
            }
            reluish = srdhm_i16(reluish, reluish_mult);
            if reluish_exp > 0 {
                reluish = shift_left_sat_i16(reluish, 1);
            }
            if reluish_exp < 0 {
                reluish = rounding_divide_by_pot_i16(reluish, (-reluish_exp).min(31));
            }
            let reluish = ((reluish as i32 + (1 << 15)) >> 1) as i16;
            let preshift = saturating_doubling_high_mul_i16(reluish, preshift_out);
            let mut o = rounding_divide_by_pot_i16(preshift, (-out_exp).min(31)) as i32;
            o += qy.zp;
            T::from_i32(o.clamp(T::MIN, T::MAX))
        })
        .collect();
    Ok(vec![make(x.shape.clone(), out)])
}

#[cfg(test)]
mod tflm_tests {
    use super::*;

    #[test]
    fn relu6_ignores_output_params_and_clamps_in_input_units() {
        let qx = Affine {
            scale: 0.05,
            zp: -2,
        };
        let t = tflm_relu6_table(qx);
        // six = round(6 / 0.05) - 2 = 118.
        assert_eq!(t[0], -2);
        assert_eq!(t[(-2 + 128) as usize], -2);
        assert_eq!(t[(50 + 128) as usize], 50);
        assert_eq!(t[(118 + 128) as usize], 118);
        assert_eq!(t[255], 118);
    }

    #[test]
    fn relu_divides_the_scales_in_double() {
        // in / out in f32 is 2.4569...f32, whose Q31 multiplier maps input 118 to 14;
        // the double quotient's (TFLM's; codegen_ops_vs_tflm.rs) maps it to 15.
        let qx = Affine {
            scale: 0.024_050_42,
            zp: 60,
        };
        let qy = Affine {
            scale: 0.009_788_942_5,
            zp: -128,
        };
        assert_eq!(tflm_relu_table(qx, qy)[(118 + 128) as usize], 15);
        let (m, s) = quantize_multiplier((qx.scale / qy.scale) as f64);
        assert_eq!(multiply_by_quantized_multiplier(118 - 60, m, s) - 128, 14);
    }

    #[test]
    fn relu_with_equal_params_is_a_clamp_at_the_zero_point() {
        let q = Affine {
            scale: 0.0233,
            zp: 17,
        };
        let t = tflm_relu_table(q, q);
        for (i, &y) in t.iter().enumerate() {
            let x = i as i32 - 128;
            assert_eq!(y as i32, x.max(17));
        }
    }
}
