//! Reference kernels: float and plain (non-quantized) integer semantics.

use super::NodeCtx;
use crate::error::Result;
use edgeopt_ir::Tensor;

pub fn eval(ctx: &NodeCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let _ = inputs;
    Err(ctx.error("no reference kernel yet"))
}
