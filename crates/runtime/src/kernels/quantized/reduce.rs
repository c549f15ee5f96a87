//! MEAN on quantized tensors, bit-exact with the two code paths of TFLite's
//! `reduce.cc` that an int8 MEAN can take:
//!
//! - the generic `QuantizedMeanOrSum` (any axes): the integer sum of `x - zp_in` is
//!   rescaled by `scale_in / scale_out` with the `1 / count` folded into the
//!   multiplier (`(m << s) / count`, `s = min(floor(log2 count), 32, 31 + shift)`);
//! - LiteRT's optimized int8 `Mean` for 4-D inputs averaged over axes {1, 2} with
//!   `keep_dims` (Keras `GlobalAveragePooling2D(keepdims=True)`), used under
//!   [`Numerics::LiteRt`]: the raw sum is multiplied by `scale_in / (count * scale_out)`
//!   and a rounded zero-point term is added. Its vector loop (16 channels at a time)
//!   rounds the multiplication differently from the scalar tail; both are reproduced,
//!   see [`mean4d_vector_lane`].
//!
//! Reference numerics (TFLite Micro) always take the generic path.

use super::super::NodeCtx;
use super::common::*;
use super::fixedpoint::{multiply_by_quantized_multiplier, quantize_multiplier};
use super::Numerics;
use crate::error::Result;
use edgeopt_ir::shape::reduce_axes;
use edgeopt_ir::Tensor;

/// MEAN of a quantized tensor over `axes` (output quant params from the node).
pub fn mean<T: QInt>(
    ctx: &NodeCtx,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
    num: Numerics,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let xs = data::<T>(ctx, x, "input")?;
    let qx = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    let red = reduce_axes(x.rank(), axes, noop_with_empty_axes).map_err(|e| ctx.error(e))?;
    let kept: Vec<usize> = (0..x.rank())
        .map(|i| if red.contains(&i) { 1 } else { x.shape[i] })
        .collect();
    let out_shape: Vec<usize> = if keepdims {
        kept.clone()
    } else {
        (0..x.rank())
            .filter(|i| !red.contains(i))
            .map(|i| x.shape[i])
            .collect()
    };
    let m = numel(ctx, &kept)?;
    let count: usize = red.iter().map(|&a| x.shape[a]).product();
    if count == 0 || m == 0 {
        return Ok(vec![make::<T>(out_shape, vec![T::from_i32(0); m])]);
    }
    let hw = x.rank() == 4 && keepdims && red == [1, 2] && T::DTYPE == edgeopt_ir::DType::I8;
    let y = if hw && num == Numerics::LiteRt {
        mean_hw_litert::<T>(xs, &x.shape, qx, qy)
    } else {
        mean_generic::<T>(xs, &x.shape, &kept, count, qx, qy)
    };
    Ok(vec![make::<T>(out_shape, y)])
}

/// TFLite `QuantizedMeanOrSum` (mean): sums in i32 (wrapping as the C++ does for
/// absurd sizes), one fixed-point rescale per output.
fn mean_generic<T: QInt>(
    xs: &[T],
    shape: &[usize],
    kept: &[usize],
    count: usize,
    qx: Affine,
    qy: Affine,
) -> Vec<T> {
    let m: usize = kept.iter().product();
    let mut sum = vec![0i32; m];
    // Walk the input once; `slot` follows the output position of each element.
    let r = shape.len();
    let mut ost = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        ost[i] = ost[i + 1] * kept[i + 1];
    }
    let mut pos = vec![0usize; r];
    for &v in xs {
        let slot: usize = (0..r)
            .map(|d| if kept[d] == 1 { 0 } else { pos[d] * ost[d] })
            .sum();
        sum[slot] = sum[slot].wrapping_add(v.to_i32());
        for d in (0..r).rev() {
            pos[d] += 1;
            if pos[d] < shape[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    let (mult, shift) = mean_multiplier(qx, qy, count);
    let zp_sum = (qx.zp as i64).wrapping_mul(count as i64);
    sum.into_iter()
        .map(|acc| {
            let shifted = (acc as i64).wrapping_sub(zp_sum) as i32;
            let v = multiply_by_quantized_multiplier(shifted, mult, shift) + qy.zp;
            T::from_i32(v.clamp(T::MIN, T::MAX))
        })
        .collect()
}

/// The requantization of `QuantizedMeanOrSum` (mean) for `count` summed elements:
/// `scale_in / scale_out` as a Q31 multiplier and shift, with `1 / count` folded into
/// the multiplier (`(m << s) / count`, keeping `shift - s >= -31` and `s <= 32`). The
/// generated C's MEAN (crates/codegen) takes its parameters from here.
pub fn mean_multiplier(qx: Affine, qy: Affine, count: usize) -> (i32, i32) {
    let (mult, shift) = quantize_multiplier(qx.scale as f64 / qy.scale as f64);
    let n = count.max(1) as i64;
    let s = (63 - (n as u64).leading_zeros() as i32)
        .min(32)
        .min(31 + shift);
    ((((mult as i64) << s) / n) as i32, shift - s)
}

/// LiteRT's optimized int8 `Mean` over H and W of an NHWC tensor.
fn mean_hw_litert<T: QInt>(xs: &[T], shape: &[usize], qx: Affine, qy: Affine) -> Vec<T> {
    let (n, h, w, c) = (shape[0], shape[1], shape[2], shape[3]);
    let count = (h * w) as f32;
    // The zero-point term is computed in float and rounded half away from zero.
    let t = qx.zp as f32 * qx.scale / qy.scale;
    let t = if t > 0.0 { t + 0.5 } else { t - 0.5 };
    let bias = qy.zp - t as i32;
    let real = qx.scale / (count * qy.scale);
    let (mult, shift) = quantize_multiplier(real as f64);
    let mut out = Vec::with_capacity(n * c);
    for b in 0..n {
        for ch in 0..c {
            let mut acc = 0i32;
            for p in 0..h * w {
                acc = acc.wrapping_add(xs[(b * h * w + p) * c + ch].to_i32());
            }
            // Channels in whole groups of 16 from 0 go through the vector loop.
            let scaled = if ch < c - c % 16 {
                mean4d_vector_lane(acc, mult, shift)
            } else {
                multiply_by_quantized_multiplier(acc, mult, shift)
            };
            let v = scaled.wrapping_add(bias);
            out.push(T::from_i32(v.clamp(T::MIN, T::MAX)));
        }
    }
    out
}

/// One lane of LiteRT's vector `MultiplyByQuantizedMultiplier4Rows` as the x86 build
/// computes it: the left part of the shift first, a rounding doubling high multiply
/// (`(2ab + 2^31) >> 32`), then a rounding right shift (ties toward +inf) by the right
/// part. Why not the scalar formula: it rounds ties away from zero and in two steps
/// differently; measured against `ai-edge-litert` 2.3 (exporter corpus DS-CNN-like
/// GlobalAveragePooling, 1024 outputs, and `tflite_int8_mean_resize` with gains below
/// and above 1) this lane formula matches every value, the scalar one misses 480 of
/// the 1024.
fn mean4d_vector_lane(x: i32, mult: i32, shift: i32) -> i32 {
    let (left, right) = (shift.max(0), (-shift).max(0));
    let a = ((x as i64) << left.min(31)).clamp(i32::MIN as i64, i32::MAX as i64);
    let hi = ((2 * a * mult as i64 + (1i64 << 31)) >> 32).clamp(i32::MIN as i64, i32::MAX as i64);
    if right == 0 {
        return hi as i32;
    }
    let r = right.min(31);
    ((hi + (1i64 << (r - 1))) >> r) as i32
}
