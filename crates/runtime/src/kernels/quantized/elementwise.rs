//! TFLite ADD / SUB / MUL on quantized tensors, with numpy broadcasting.

use super::super::NodeCtx;
use super::common::*;
use super::fixedpoint::*;
use crate::error::Result;
use edgeopt_ir::{Activation, BinaryKind, Tensor};

/// Numpy broadcast of two shapes.
pub fn broadcast_shape(ctx: &NodeCtx, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(ctx.error(format!("shapes {a:?} and {b:?} do not broadcast")));
        };
    }
    Ok(out)
}

/// Strides of `shape` aligned to `out` (0 on broadcast dimensions).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let mut strides = vec![0; r];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let oi = i + r - shape.len();
        strides[oi] = if shape[i] == 1 { 0 } else { s };
        s *= shape[i];
    }
    strides
}

/// Calls `f(out_index, a_index, b_index)` for every output element, in order.
pub fn for_each_broadcast(
    a: &[usize],
    b: &[usize],
    out: &[usize],
    mut f: impl FnMut(usize, usize, usize),
) {
    let n: usize = out.iter().product();
    if n == 0 {
        return;
    }
    if a == out && b == out {
        for i in 0..n {
            f(i, i, i);
        }
        return;
    }
    let sa = broadcast_strides(a, out);
    let sb = broadcast_strides(b, out);
    let r = out.len();
    let mut idx = vec![0usize; r];
    let (mut ia, mut ib) = (0usize, 0usize);
    for i in 0..n {
        f(i, ia, ib);
        // Increment the multi-index (odometer), updating the input offsets.
        let mut d = r;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            ia += sa[d];
            ib += sb[d];
            if idx[d] < out[d] {
                break;
            }
            ia -= sa[d] * out[d];
            ib -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
}

/// Add/Sub (TFLite `PrepareGeneralSubOp`/add.cc, 8-bit general path) and Mul.
pub fn tflite_binary<T: QInt>(
    ctx: &NodeCtx,
    kind: BinaryKind,
    activation: Activation,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let a = input(ctx, inputs, 0)?;
    let b = input(ctx, inputs, 1)?;
    let qa = per_tensor(ctx, ctx.in_quant(0), "input 0")?;
    let qb = per_tensor(ctx, ctx.in_quant(1), "input 1")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    let (min, max) = activation_range::<T>(activation, qy);
    let av = data::<T>(ctx, a, "input 0")?;
    let bv = data::<T>(ctx, b, "input 1")?;
    let shape = broadcast_shape(ctx, &a.shape, &b.shape)?;
    let n = numel(ctx, &shape)?;
    let mut out = vec![T::from_i32(0); n];
    match kind {
        BinaryKind::Add | BinaryKind::Sub => {
            // int16 uses left_shift 15 so that 65535 << 15 still fits in 32 bits.
            let left_shift = if T::DTYPE == edgeopt_ir::DType::I16 {
                15
            } else {
                20
            };
            let twice_max = (2.0f32 * qa.scale.max(qb.scale)) as f64;
            let (m1, s1) = quantize_multiplier_smaller_than_one_exp(qa.scale as f64 / twice_max);
            let (m2, s2) = quantize_multiplier_smaller_than_one_exp(qb.scale as f64 / twice_max);
            let (mo, so) = quantize_multiplier_smaller_than_one_exp(
                twice_max / (((1i32 << left_shift) as f32) * qy.scale) as f64,
            );
            let sub = kind == BinaryKind::Sub;
            for_each_broadcast(&a.shape, &b.shape, &shape, |i, ia, ib| {
                let x1 = (av[ia].to_i32() - qa.zp) * (1 << left_shift);
                let x2 = (bv[ib].to_i32() - qb.zp) * (1 << left_shift);
                let y1 = multiply_by_quantized_multiplier_smaller_than_one_exp(x1, m1, s1);
                let y2 = multiply_by_quantized_multiplier_smaller_than_one_exp(x2, m2, s2);
                let raw = if sub { y1 - y2 } else { y1 + y2 };
                let v = multiply_by_quantized_multiplier_smaller_than_one_exp(raw, mo, so) + qy.zp;
                out[i] = T::from_i32(v.clamp(min, max));
            });
        }
        BinaryKind::Mul => {
            let (m, s) = quantize_multiplier(qa.scale as f64 * qb.scale as f64 / qy.scale as f64);
            for_each_broadcast(&a.shape, &b.shape, &shape, |i, ia, ib| {
                let p = (av[ia].to_i32() - qa.zp) * (bv[ib].to_i32() - qb.zp);
                let v = qy.zp + multiply_by_quantized_multiplier(p, m, s);
                out[i] = T::from_i32(v.clamp(min, max));
            });
        }
        BinaryKind::Max | BinaryKind::Min => {
            // TFLite MAXIMUM/MINIMUM require identical quant params: a raw comparison.
            if qa != qy || qb != qy {
                return Err(
                    ctx.error("quantized Max/Min need identical input and output quantization")
                );
            }
            let is_max = kind == BinaryKind::Max;
            for_each_broadcast(&a.shape, &b.shape, &shape, |i, ia, ib| {
                let (x, y) = (av[ia].to_i32(), bv[ib].to_i32());
                let v = if is_max { x.max(y) } else { x.min(y) };
                out[i] = T::from_i32(v.clamp(min, max));
            });
        }
        BinaryKind::Div | BinaryKind::Pow => {
            return Err(ctx.error(format!("quantized {kind:?} is not supported")));
        }
    }
    Ok(vec![make(shape, out)])
}
