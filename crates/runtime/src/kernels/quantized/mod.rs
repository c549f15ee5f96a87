//! Integer kernels for quantized tensors (TFLite int8 spec) and ONNX integer ops.

use super::NodeCtx;
use crate::error::Result;
use edgeopt_ir::Tensor;

/// Runs the node if it is a quantized case this module owns; `None` otherwise.
pub fn try_eval(ctx: &NodeCtx, inputs: &[Option<&Tensor>]) -> Option<Result<Vec<Tensor>>> {
    let _ = (ctx, inputs);
    None
}
