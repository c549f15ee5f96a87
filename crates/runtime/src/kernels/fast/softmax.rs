//! Fast TFLite SOFTMAX on 8-bit tensors (last axis) with LiteRT's arithmetic
//! (`Numerics::LiteRt`: a 256-entry float table of exp values, a float sum, float
//! rescaling, as `quantized::activation::softmax`). The reference kernel rebuilds the
//! table (256 `expf`) on every call; here it is built once at preparation, with the
//! very same expression, so every value is identical and the per-row loop is the
//! reference's. Anything else (TFLite's fixed-point arithmetic, other axes, errors)
//! goes to the reference kernel.

use super::{out_buffer, Prepared};
use crate::error::Result;
use crate::kernels::quantized::activation::softmax as reference;
use crate::kernels::quantized::common::{input, norm_axis, per_tensor, QInt};
use crate::kernels::quantized::Numerics;
use crate::kernels::NodeCtx;
use edgeopt_ir::{DType, Tensor};
use std::marker::PhantomData;

pub struct SoftmaxKernel<T> {
    axis: i64,
    beta: f32,
    table: Box<[f32; 256]>,
    out_scale: f32,
    out_zp: i32,
    _t: PhantomData<T>,
}

impl<T: QInt> SoftmaxKernel<T> {
    pub fn new(ctx: &NodeCtx, axis: i64, beta: f32, num: Numerics) -> Option<Self> {
        if num != Numerics::LiteRt || !matches!(T::DTYPE, DType::I8 | DType::U8) {
            return None;
        }
        let qx = per_tensor(ctx, ctx.in_quant(0), "input").ok()?;
        let qy = per_tensor(ctx, ctx.out_quant(0), "output").ok()?;
        // PopulateSoftmaxLookupTable, exactly as the reference computes it.
        let scale = -qx.scale * beta;
        let mut table = Box::new([0f32; 256]);
        for val in 0..=255i32 {
            table[(255 - val) as usize] = (scale * val as f32).exp();
        }
        Some(SoftmaxKernel {
            axis,
            beta,
            table,
            out_scale: qy.scale,
            out_zp: qy.zp,
            _t: PhantomData,
        })
    }
}

impl<T: QInt> Prepared for SoftmaxKernel<T> {
    fn run(
        &mut self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let x = input(ctx, inputs, 0)?;
        let rank = x.shape.len();
        let last = rank > 0 && norm_axis(ctx, self.axis, rank).ok() == Some(rank - 1);
        let (Some(xv), true) = (T::slice(x), last) else {
            let mut r = reference::<T>(ctx, self.axis, self.beta, Numerics::LiteRt, inputs)?;
            *out = Some(r.remove(0));
            return Ok(());
        };
        let depth = x.shape[rank - 1];
        let y = out_buffer::<T>(out, &x.shape, xv.len());
        if depth == 0 {
            return Ok(());
        }
        let table = &*self.table;
        for (row, orow) in xv.chunks_exact(depth).zip(y.chunks_exact_mut(depth)) {
            let max_val = row.iter().map(|v| v.to_i32()).fold(T::MIN, i32::max);
            let base = 255 - max_val;
            let mut sum_exp = 0f32;
            for v in row {
                sum_exp += table[(base + v.to_i32()) as usize];
            }
            let inv_sum_exp = 1.0f32 / (sum_exp * self.out_scale);
            for (o, v) in orow.iter_mut().zip(row) {
                let prob = table[(base + v.to_i32()) as usize] * inv_sum_exp;
                // QuantizeSoftmaxOutput: uint8 on x86 uses +0.5 and truncation,
                // other types std::round.
                let q = if T::DTYPE == DType::U8 {
                    (prob + 0.5) as i32
                } else {
                    prob.round() as i32 + self.out_zp
                };
                *o = T::from_i32(q.clamp(T::MIN, T::MAX));
            }
        }
        Ok(())
    }
}
