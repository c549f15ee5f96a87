//! Fast TFLite SOFTMAX on 8-bit tensors (last axis) with LiteRT's arithmetic
//! (`Numerics::LiteRt`: a 256-entry float table of exp values, a float sum, float
//! rescaling, as `quantized::activation::softmax`). The reference kernel rebuilds the
//! table (256 `expf`) on every call; here it is built once at preparation, with the
//! very same expression, so every value is identical and the per-row loop is the
//! reference's. Anything else (TFLite's fixed-point arithmetic, other axes, errors)
//! goes to the reference kernel. Both use the same helpers
//! (`litert_softmax_table`, `litert_softmax_rows`).

use super::{out_buffer, Prepared};
use crate::error::Result;
use crate::kernels::quantized::activation::{
    litert_softmax_rows, litert_softmax_table, softmax as reference,
};
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
        Some(SoftmaxKernel {
            axis,
            beta,
            table: Box::new(litert_softmax_table(qx.scale, beta)),
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
        litert_softmax_rows(&self.table, xv, depth, self.out_scale, self.out_zp, y);
        Ok(())
    }
}
