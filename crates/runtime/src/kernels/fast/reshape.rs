//! Reshape-like ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity) on 8-bit tensors
//! whose output shape is known statically but for at most one dimension (a symbolic
//! batch, inferred from the element count): the bytes are copied into the output
//! buffer kept from the previous run, so a steady-state run allocates nothing and
//! skips the reference path's shape inference (a reshape between the pooling and the
//! classifier cost as much as the classifier itself).

use super::{out_buffer, Prepared};
use crate::error::Result;
use crate::kernels::quantized::common::{input, QInt};
use crate::kernels::NodeCtx;
use edgeopt_ir::Tensor;
use std::marker::PhantomData;

pub struct ReshapeKernel<T> {
    /// The output shape; `shape[free]` is recomputed from the input's size.
    shape: Vec<usize>,
    free: Option<usize>,
    _t: PhantomData<T>,
}

impl<T: QInt> ReshapeKernel<T> {
    /// `None` when the output shape is not fully static (the reference kernel, which
    /// infers it per run, then runs).
    pub fn new(ctx: &NodeCtx) -> Option<Self> {
        let &[o] = ctx.node.outputs.as_slice() else {
            return None;
        };
        let dims = ctx.graph.values[o].shape.as_ref()?;
        let shape: Vec<usize> = dims.iter().map(|d| d.fixed().unwrap_or(0)).collect();
        let mut free = dims.iter().enumerate().filter(|(_, d)| d.fixed().is_none());
        let first = free.next().map(|(i, _)| i);
        if free.next().is_some() {
            return None;
        }
        Some(ReshapeKernel {
            shape,
            free: first,
            _t: PhantomData,
        })
    }
}

impl<T: QInt> Prepared for ReshapeKernel<T> {
    fn run(
        &mut self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let x = input(ctx, inputs, 0)?;
        let xs = T::slice(x)
            .ok_or_else(|| ctx.error(format!("input must be {}, got {}", T::DTYPE, x.dtype())))?;
        if let Some(f) = self.free {
            let rest: usize = (self.shape.iter().enumerate())
                .filter(|&(i, _)| i != f)
                .map(|(_, &d)| d)
                .product();
            self.shape[f] = xs.len().checked_div(rest).unwrap_or(0);
        }
        let n: usize = self.shape.iter().product();
        if xs.len() != n {
            return Err(ctx.error(format!("cannot reshape {:?} to {:?}", x.shape, self.shape)));
        }
        out_buffer::<T>(out, &self.shape, n).copy_from_slice(xs);
        Ok(())
    }
}
