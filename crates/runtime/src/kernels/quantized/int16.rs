//! TFLite's "16x8" integer kernels: int16 activations (symmetric, zero point 0), int8
//! weights (symmetric, per output channel), int64 bias.
//!
//! What differs from the int8 kernels, following TFLite's `reference_integer_ops`
//! (which LiteRT's builtin CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED run whenever
//! the bias is int64, the converter's default for 16x8):
//! - products `x * w` are accumulated in 64 bits together with the int64 bias (no
//!   input offset: TFLite requires zero points of 0 and ignores them in these kernels);
//! - convolutions requantize by the 64-bit `MultiplyByQuantizedMultiplier`: the
//!   31-bit multiplier is first reduced to 15 bits (rounded), then the product is
//!   shifted right once with round-half-up ([`requantize_i64`]); FULLY_CONNECTED
//!   requantizes in double precision (see [`fully_connected`]);
//! - ADD (same shapes) follows LiteRT's optimized int16 kernel, whose vector loop
//!   rounds once per input ([`add_litert`]), only under `Numerics::LiteRt` (QUANTIZE
//!   float -> int16: `quantize::tflite_quantize`, as for 8 bits);
//! - SOFTMAX uses two 513-entry int16 lookup tables (exp on [-10, 0] and 1/(1+x) on
//!   [0, 1]) with linear interpolation, as TFLite's `SoftmaxInt16`.
//!
//! Every rule here was checked against LiteRT 2.3's builtin kernels value for value
//! (crates/tests/tests/quant_int16.rs: ResNet-8, DS-CNN, the AD autoencoder).
//! SUB, broadcasting ADD (general rescaling, `left_shift` 15), MUL, pooling, RELU,
//! DEQUANTIZE and the reshape family need no 16-bit specific code: the generic kernels
//! of this module follow TFLite's int16 paths for them (SUB, MUL and broadcasting ADD
//! are not exercised by those models). LOGISTIC / TANH / HARD_SWISH on int16 are not
//! implemented (an error names the node); PTQ keeps those nodes in float.

use super::super::NodeCtx;
use super::common::*;
use super::conv::{conv_geom, ConvGeom};
use super::fixedpoint::{multiply_by_quantized_multiplier, quantize_multiplier, srdhm};
use crate::error::Result;
use edgeopt_ir::{Activation, ConvAttrs, Layout, Tensor, TensorData};

/// TFLite `MultiplyByQuantizedMultiplier(int64_t x, int32_t multiplier, int shift)`:
/// the multiplier reduced to Q15 (saturating at 0x7fff), one rounding right shift by
/// `15 - shift`. The result is truncated to 32 bits as TFLite's `static_cast` does
/// (the callers clamp it to the output range afterwards).
#[inline(always)]
pub fn requantize_i64(x: i64, multiplier: i32, shift: i32) -> i32 {
    let reduced = if multiplier < 0x7fff_0000 {
        (multiplier + (1 << 15)) >> 16
    } else {
        0x7fff
    } as i64;
    // shift is in [-31, 7] for any multiplier QuantizeMultiplier produces from a
    // finite positive scale; clamping keeps a hostile scale from panicking the shift.
    let total = (15 - shift).clamp(1, 62);
    (x.wrapping_mul(reduced).wrapping_add(1i64 << (total - 1)) >> total) as i32
}

/// Per-output-channel fixed-point multipliers and the clamp range of a 16x8 op.
struct Stage16 {
    multiplier: Vec<i32>,
    shift: Vec<i32>,
    min: i32,
    max: i32,
}

impl Stage16 {
    fn new(in_scale: f32, w_scales: &[f32], out: Affine, act: Activation) -> Stage16 {
        let (multiplier, shift) = w_scales
            .iter()
            .map(|&ws| quantize_multiplier(in_scale as f64 * ws as f64 / out.scale as f64))
            .unzip();
        let (min, max) = activation_range::<i16>(act, out);
        Stage16 {
            multiplier,
            shift,
            min,
            max,
        }
    }

    #[inline(always)]
    fn apply(&self, acc: i64, c: usize) -> i16 {
        requantize_i64(acc, self.multiplier[c], self.shift[c]).clamp(self.min, self.max) as i16
    }
}

/// Input, output and weight parameters of a 16x8 conv / fully-connected node, checked
/// as TFLite's Prepare does (zero points 0).
fn params16(ctx: &NodeCtx, channels: usize) -> Result<(Affine, Affine, Vec<f32>)> {
    let xq = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let yq = per_tensor(ctx, ctx.out_quant(0), "output")?;
    if xq.zp != 0 || yq.zp != 0 {
        return Err(ctx.error(format!(
            "int16 activations must be symmetric (zero point 0), got input {} and output {}",
            xq.zp, yq.zp
        )));
    }
    let (ws, wzps) = per_channel(ctx, ctx.in_quant(1), channels, "weights")?;
    if wzps.iter().any(|&z| z != 0) {
        return Err(ctx.error("16x8 weights must be symmetric (zero point 0)"));
    }
    Ok((xq, yq, ws))
}

/// Weight codes as i32 (int8, or int4 / ternary / binary codes stored in i8 or i4).
fn weight_codes(ctx: &NodeCtx, w: &Tensor) -> Result<Vec<i32>> {
    match &w.data {
        TensorData::I8(v) | TensorData::I4(v) => Ok(v.iter().map(|&x| x as i32).collect()),
        d => Err(ctx.error(format!(
            "16x8 weights must be int8 (or int4), got {}",
            d.dtype()
        ))),
    }
}

/// Bias as i64 (TFLite's 16x8 bias is int64; an int32 bias is widened). Absent: zeros.
fn bias_i64(ctx: &NodeCtx, b: Option<&Tensor>, m: usize) -> Result<Vec<i64>> {
    let Some(t) = b else { return Ok(vec![0; m]) };
    if t.len() != m {
        return Err(ctx.error(format!(
            "bias has {} elements for {m} output channels",
            t.len()
        )));
    }
    match &t.data {
        TensorData::I64(v) => Ok(v.clone()),
        TensorData::I32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
        d => Err(ctx.error(format!(
            "16x8 bias must be int64 (or int32), got {}",
            d.dtype()
        ))),
    }
}

fn input_i16<'t>(ctx: &NodeCtx, x: &'t Tensor) -> Result<&'t [i16]> {
    data::<i16>(ctx, x, "input")
}

/// CONV_2D / DEPTHWISE_CONV_2D (any group count) with int16 input and output, NHWC,
/// weights `[M, kh, kw, C/g]`: TFLite `reference_integer_ops::ConvPerChannel` /
/// `DepthwiseConvPerChannel` for int16.
pub fn conv(ctx: &NodeCtx, a: &ConvAttrs, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let w = input(ctx, inputs, 1)?;
    if a.layout != Layout::Nhwc {
        return Err(ctx.error("quantized Conv on NCHW tensors: use QLinearConv or QDQ"));
    }
    let g = conv_geom(ctx, a, &x.shape, &w.shape)?;
    let (xq, yq, wscales) = params16(ctx, g.m)?;
    let xs = input_i16(ctx, x)?;
    let wc = weight_codes(ctx, w)?;
    if wc.len() != g.m * g.k_len() || xs.len() != g.n * g.h.input * g.w.input * g.c {
        return Err(ctx.error("input or weights do not match the convolution geometry"));
    }
    let bias = bias_i64(ctx, inputs.get(2).copied().flatten(), g.m)?;
    let stage = Stage16::new(xq.scale, &wscales, yq, a.activation);
    let total = numel(ctx, &[g.out_pixels(), g.m])?;
    let mut out = vec![0i16; total];
    accumulate(&g, xs, &wc, &bias, &stage, &mut out);
    let shape = if x.shape.len() == 4 {
        vec![g.n, g.h.output, g.w.output, g.m]
    } else {
        vec![g.n, g.w.output, g.m]
    };
    Ok(vec![make(shape, out)])
}

/// The window loop: for each output pixel and group, gathers the receptive field
/// (padding contributes nothing, as TFLite skips out-of-image taps) and takes 64-bit
/// dot products with each output channel's weights.
fn accumulate(g: &ConvGeom, x: &[i16], w: &[i32], bias: &[i64], st: &Stage16, out: &mut [i16]) {
    let (cg, mg, k_len) = (g.cg(), g.mg(), g.k_len());
    let (ih, iw) = (g.h.input as isize, g.w.input as isize);
    let mut patch = vec![0i32; k_len];
    let mut pix = 0;
    for n in 0..g.n {
        for oy in 0..g.h.output {
            for ox in 0..g.w.output {
                let orow = &mut out[pix * g.m..(pix + 1) * g.m];
                pix += 1;
                for grp in 0..g.group {
                    let c0 = grp * cg;
                    let mut k = 0;
                    for ky in 0..g.h.kernel {
                        let iy =
                            (oy * g.h.stride + ky * g.h.dilation) as isize - g.h.pad_begin as isize;
                        for kx in 0..g.w.kernel {
                            let ix = (ox * g.w.stride + kx * g.w.dilation) as isize
                                - g.w.pad_begin as isize;
                            let dst = &mut patch[k..k + cg];
                            if iy >= 0 && iy < ih && ix >= 0 && ix < iw {
                                let base =
                                    ((n * g.h.input + iy as usize) * g.w.input + ix as usize) * g.c
                                        + c0;
                                for (d, &v) in dst.iter_mut().zip(&x[base..base + cg]) {
                                    *d = v as i32;
                                }
                            } else {
                                dst.fill(0);
                            }
                            k += cg;
                        }
                    }
                    for oc in grp * mg..(grp + 1) * mg {
                        let ws = &w[oc * k_len..(oc + 1) * k_len];
                        // |x * w| < 2^22, so i32 partial sums over 256 taps cannot
                        // overflow; the total is exact in i64 whatever the order.
                        let mut acc = bias[oc];
                        for (pc, wc) in patch.chunks(256).zip(ws.chunks(256)) {
                            acc += pc.iter().zip(wc).map(|(&a, &b)| a * b).sum::<i32>() as i64;
                        }
                        orow[oc] = st.apply(acc, oc);
                    }
                }
            }
        }
    }
}

/// FULLY_CONNECTED with int16 input and output: TFLite `FullyConnected(PerChannel)`
/// with `BiasType = int64_t`.
pub fn fully_connected(
    ctx: &NodeCtx,
    activation: Activation,
    keep_num_dims: bool,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let w = input(ctx, inputs, 1)?;
    let super::fc::FcDims { nout, k, rows } = super::fc::fc_dims(ctx, x, w)?;
    let (xq, yq, wscales) = params16(ctx, nout)?;
    let xs = input_i16(ctx, x)?;
    let wc = weight_codes(ctx, w)?;
    let bias = bias_i64(ctx, inputs.get(2).copied().flatten(), nout)?;
    // Requantization in double precision (TFLite's FullyConnected(PerChannel) variant
    // that takes the float scales "to avoid loss of precision"): LiteRT 2.3 runs it for
    // int16 input with int64 bias. The 64-bit fixed-point rule of the convolutions
    // (reduced Q15 multiplier) disagrees with LiteRT here on about 1 value in 7;
    // this rule agrees on all 3,340 values checked (ResNet-8's classifier).
    let eff: Vec<f64> = wscales
        .iter()
        .map(|&ws| xq.scale as f64 * ws as f64 / yq.scale as f64)
        .collect();
    let (min, max) = activation_range::<i16>(activation, yq);
    let mut out = vec![0i16; numel(ctx, &[rows, nout])?];
    for (xr, orow) in xs.chunks_exact(k).zip(out.chunks_exact_mut(nout.max(1))) {
        for (o, y) in orow.iter_mut().enumerate() {
            let wr = &wc[o * k..(o + 1) * k];
            let acc = xr
                .iter()
                .zip(wr)
                .fold(bias[o], |s, (&a, &b)| s + (a as i32 * b) as i64);
            // C `round` (ties away from zero); `as` saturates where C would be UB.
            let v = (acc as f64 * eff[o]).round() as i32;
            *y = v.clamp(min, max) as i16;
        }
    }
    let shape = super::fc::fc_out_shape(&x.shape, rows, nout, keep_num_dims);
    Ok(vec![make(shape, out)])
}

/// One input's rescaling in the vector loop of TFLite's
/// `optimized_integer_ops::AddElementwiseInt16` (its NEON code): shift by the
/// combined exponent `15 + input_shift` (a right shift, if negative, truncates), then
/// one `SaturatingRoundingDoublingHighMul`. The scalar loop shifts by 15, multiplies
/// and then divides by `2^-input_shift` with a second rounding.
#[inline(always)]
fn add16_vector_rescale(x: i32, multiplier: i32, combined_shift: i32) -> i32 {
    let shifted = if combined_shift >= 0 {
        x.checked_shl(combined_shift as u32).unwrap_or(0)
    } else {
        x >> (-combined_shift).min(31)
    };
    srdhm(shifted, multiplier)
}

/// ADD of two int16 tensors of the same shape as LiteRT's builtin kernel computes it
/// (`optimized_integer_ops::AddElementwiseInt16`): blocks of 16 elements go through
/// the vector arithmetic ([`add16_vector_rescale`]: one rounding per input instead of
/// two), the tail through the scalar reference arithmetic. The two differ by one LSB
/// on rare ties. Established by comparing with LiteRT 2.3 layer by layer on the int16
/// ResNet-8 (its x86 build runs this NEON formula, not the AVX2 one: truncating AVX2
/// products disagree on other ties). `None` when the shapes differ (LiteRT broadcasts
/// with the reference kernel).
pub fn add_litert(
    ctx: &NodeCtx,
    activation: Activation,
    inputs: &[Option<&Tensor>],
) -> Option<Result<Vec<Tensor>>> {
    let a = inputs.first().copied().flatten()?;
    let b = inputs.get(1).copied().flatten()?;
    if a.shape != b.shape {
        return None;
    }
    Some(add_litert_same_shape(ctx, activation, a, b))
}

fn add_litert_same_shape(
    ctx: &NodeCtx,
    activation: Activation,
    a: &Tensor,
    b: &Tensor,
) -> Result<Vec<Tensor>> {
    use super::fixedpoint::{
        multiply_by_quantized_multiplier_smaller_than_one_exp as mbqm_exp,
        quantize_multiplier_smaller_than_one_exp as qm_exp,
    };
    let qa = per_tensor(ctx, ctx.in_quant(0), "input 0")?;
    let qb = per_tensor(ctx, ctx.in_quant(1), "input 1")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    if qa.zp != 0 || qb.zp != 0 || qy.zp != 0 {
        return Err(ctx.error("int16 ADD needs zero points of 0"));
    }
    let (min, max) = activation_range::<i16>(activation, qy);
    let av = data::<i16>(ctx, a, "input 0")?;
    let bv = data::<i16>(ctx, b, "input 1")?;
    // TFLite add.cc Prepare, general int16 path (left_shift 15); the products are
    // formed in f32 where TFLite's are (`2 * max(scale)`, `(1 << 15) * scale`).
    const LEFT_SHIFT: i32 = 15;
    let twice_max = (2.0f32 * qa.scale.max(qb.scale)) as f64;
    let (m1, s1) = qm_exp(qa.scale as f64 / twice_max);
    let (m2, s2) = qm_exp(qb.scale as f64 / twice_max);
    let (mo, so) = qm_exp(twice_max / (((1i32 << LEFT_SHIFT) as f32) * qy.scale) as f64);
    let n = av.len();
    let vectorized = n - n % 16;
    let mut out = vec![0i16; n];
    for (i, o) in out.iter_mut().enumerate() {
        let (x1, x2) = (av[i] as i32, bv[i] as i32);
        let raw = if i < vectorized {
            let y1 = add16_vector_rescale(x1, m1, LEFT_SHIFT + s1);
            let y2 = add16_vector_rescale(x2, m2, LEFT_SHIFT + s2);
            mbqm_exp(y1.wrapping_add(y2), mo, so)
        } else {
            let y1 = mbqm_exp(x1 << LEFT_SHIFT, m1, s1);
            let y2 = mbqm_exp(x2 << LEFT_SHIFT, m2, s2);
            mbqm_exp(y1 + y2, mo, so)
        };
        *o = raw.clamp(min, max) as i16;
    }
    Ok(vec![make(a.shape.clone(), out)])
}

/// Entries of TFLite's int16 lookup tables: 512 intervals plus the end point.
const LUT_SIZE: usize = 513;

/// TFLite `LUTPopulate<int16_t>` (the double-precision `LUTPopulateInt16`): samples
/// `f` at 513 points of the input grid `[input_scale * (-32768 - izp),
/// input_scale * (32767 - izp)]`, in units of the output grid, each interval's start
/// value biased by half the midpoint error of linear interpolation.
fn lut_populate(
    input_scale: f64,
    izp: i32,
    output_scale: f64,
    ozp: i32,
    f: impl Fn(f64) -> f64,
) -> [i16; LUT_SIZE] {
    let input_min = input_scale * (i16::MIN as i32 - izp) as f64;
    let input_max = input_scale * (i16::MAX as i32 - izp) as f64;
    let output_min = output_scale * (i16::MIN as i32 - ozp) as f64;
    let output_max = output_scale * (i16::MAX as i32 - ozp) as f64;
    let steps = (LUT_SIZE - 1) as f64;
    let step = (input_max - input_min) / steps;
    let half_step = step / 2.0;
    let inv = 65536.0 / (output_max - output_min);
    let clamp = |v: f64| v.clamp(i16::MIN as f64, i16::MAX as f64) as i16;
    let mut lut = [0i16; LUT_SIZE];
    for (i, e) in lut.iter_mut().take(LUT_SIZE - 1).enumerate() {
        let x = input_min + i as f64 * step;
        let val = f(x);
        let val_mid = f(x + half_step);
        let val_next = f(input_min + (i + 1) as f64 * step);
        let sample = (val * inv).round();
        let mid_interp = ((val_next * inv + (val * inv).round()) / 2.0).round();
        let mid = (val_mid * inv).round();
        let bias = ((mid_interp - mid) / 2.0).round();
        *e = clamp(sample - bias);
    }
    lut[LUT_SIZE - 1] = clamp((f(input_max) * inv).round());
    lut
}

/// TFLite `LUTLookup` for int16: the table entry of the upper 9 bits, plus the slope
/// to the next entry times the lower 7 bits (rounded).
#[inline(always)]
fn lut_lookup(value: i16, lut: &[i16; LUT_SIZE]) -> i16 {
    let index = (256 + (value as i32 >> 7)) as usize;
    let offset = (value & 0x7f) as i32;
    let base = lut[index];
    let slope = lut[index + 1].wrapping_sub(base) as i32;
    let delta = (slope * offset + 64) >> 7;
    (base as i32 + delta) as i16
}

/// SOFTMAX on int16 (TFLite `SoftmaxInt16`; the input and output zero points must be
/// 0 and the output scale 1/32768). The difference to the row maximum is rescaled so
/// that [-65535, 0] covers [-10, 0], exp comes from the table, the row sum's
/// reciprocal from the 1/(1+x) table after normalizing the sum to [1, 2).
pub fn softmax(
    ctx: &NodeCtx,
    axis: i64,
    beta: f32,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let (x, qx, qy) = super::activation::softmax_operands(ctx, axis, inputs)?;
    let rank = x.shape.len();
    if qx.zp != 0 || qy.zp != 0 {
        return Err(ctx.error("int16 softmax needs zero points of 0"));
    }
    if (qy.scale - 1.0 / 32768.0).abs() > 0.001 / 32768.0 {
        return Err(ctx.error(format!(
            "int16 softmax output scale must be 1/32768, got {}",
            qy.scale
        )));
    }
    let xv = input_i16(ctx, x)?;
    let depth = x.shape[rank - 1];
    let mut out = vec![0i16; xv.len()];
    if depth == 0 {
        return Ok(vec![make(x.shape.clone(), out)]);
    }
    let range = (i16::MAX as i32 - i16::MIN as i32) as f64;
    let exp_lut = lut_populate(10.0 / range, i16::MAX as i32, 2.0 / range, 0, f64::exp);
    let recip_lut = lut_populate(1.0 / range, i16::MIN as i32, 2.0 / range, 0, |v| {
        1.0 / (1.0 + v)
    });
    // Scale so that a difference of -65535 maps to -10.0.
    let (mult, shift) = quantize_multiplier(qx.scale as f64 * beta as f64 / (10.0 / 65535.0));
    for (row, orow) in xv.chunks_exact(depth).zip(out.chunks_exact_mut(depth)) {
        let max_in_row = row.iter().copied().max().unwrap_or(i16::MIN) as i32;
        let mut sum: i32 = 0;
        for (o, &v) in orow.iter_mut().zip(row) {
            let scaled = multiply_by_quantized_multiplier(v as i32 - max_in_row, mult, shift);
            let sym = (scaled + 32767).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            *o = lut_lookup(sym, &exp_lut);
            sum = sum.wrapping_add(*o as i32);
        }
        // The maximum contributes exp(0) ~ 32767, so the sum is positive.
        let headroom_plus_one = (sum as u32).leading_zeros().clamp(1, 31) as i32;
        let shifted_sum = (((sum as i64) << (headroom_plus_one - 1)) + (1 << 13)) >> 14;
        let sym_sum = (shifted_sum as i32 - ((1 << 15) + (1 << 16)))
            .clamp(i16::MIN as i32, i16::MAX as i32) as i16;
        let recip = lut_lookup(sym_sum, &recip_lut) as i64;
        let right_shift = 31 - headroom_plus_one;
        let round = 1i64 << (right_shift - 1).max(0);
        for o in orow.iter_mut() {
            let r = ((*o as i64 * recip + round) >> right_shift) as i32;
            *o = r.clamp(0, i16::MAX as i32) as i16;
        }
    }
    Ok(vec![make(x.shape.clone(), out)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requantize_i64_matches_the_tflite_formula() {
        // 0.5 as a Q31 multiplier with shift 0: reduced to 16384, shift by 15.
        let (m, s) = quantize_multiplier(0.5);
        assert_eq!(requantize_i64(1000, m, s), 500);
        assert_eq!(requantize_i64(1001, m, s), 501); // 500.5 rounds up
        assert_eq!(requantize_i64(-1001, m, s), -500); // -500.5 rounds up too
                                                       // Multipliers at the top of the range saturate to 0x7fff.
        assert_eq!(
            requantize_i64(1 << 20, i32::MAX, 0),
            ((((1i64 << 20) * 0x7fff) + (1 << 14)) >> 15) as i32
        );
    }

    #[test]
    fn exp_table_spans_exp_minus_ten_to_one() {
        let range = 65535.0;
        let lut = lut_populate(10.0 / range, 32767, 2.0 / range, 0, f64::exp);
        // exp(0) = 1.0 is the top of the symmetric [-1, 1] output grid.
        assert_eq!(lut[LUT_SIZE - 1], 32767);
        assert!(
            lut[0] >= 0 && lut[0] <= 2,
            "exp(-10) * 32768 ~ 1.5: {}",
            lut[0]
        );
        assert!(lut.windows(2).all(|w| w[0] <= w[1]), "exp is increasing");
        // Interpolated lookups stay within a few LSB of exp: the error is at most
        // one 128th of an interval's rise (about 5 LSB at the top, where the last
        // input, 32767, stops 1/128 short of the final table entry).
        for v in [-32768i32, -20000, -1, 0, 12345, 32767] {
            let x = (v - 32767) as f64 * 10.0 / range;
            let want = x.exp() * 32768.0;
            let got = lut_lookup(v as i16, &lut) as f64;
            assert!((got - want).abs() <= 7.0, "exp({x}): {got} vs {want}");
        }
    }
}
