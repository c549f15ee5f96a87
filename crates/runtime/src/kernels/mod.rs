//! Kernels, dispatched per node.
//!
//! - [`reference`]: plain, obviously-correct kernels for every op on float tensors and
//!   for non-quantized integer tensors (data movement, integer arithmetic).
//! - [`quantized`]: integer kernels for quantized tensors, following the TFLite int8
//!   specification bit-exactly, plus the ONNX integer ops (QLinearConv, ...).
//!
//! - [`fast`]: the same integer arithmetic as `quantized` for the ops that dominate
//!   int8 models (conv, depthwise, fully-connected, add/mul, pooling), SIMD and
//!   pre-packed, bit-exact with `quantized`.
//!
//! A node goes to `fast` when one of its kernels applies (unless [`fast::Kernels`]
//! says reference only), else to `quantized` when that module claims it (its tensors
//! carry quant params), otherwise to `reference`.

pub mod fast;
pub mod quantized;
pub mod reference;

use crate::error::{Result, RuntimeError};
use crate::options::ExecOptions;
use edgeopt_ir::{DType, Graph, Node, QuantParams, Tensor};

/// What a kernel may know about the node it runs: attributes, and the declared
/// dtype/quant params of its input and output values.
/// The execution options ride along, so a kernel knows which numerics to follow.
pub struct NodeCtx<'a> {
    pub graph: &'a Graph,
    pub node: &'a Node,
    pub opts: ExecOptions,
}

impl<'a> NodeCtx<'a> {
    pub fn new(graph: &'a Graph, node: &'a Node, opts: ExecOptions) -> Self {
        NodeCtx { graph, node, opts }
    }

    /// The integer arithmetic this node follows.
    pub fn numerics(&self) -> quantized::Numerics {
        self.opts.numerics
    }

    /// Quant params of input `i` (None if absent or not quantized).
    pub fn in_quant(&self, i: usize) -> Option<&'a QuantParams> {
        self.graph.values[self.node.input(i)?].quant.as_ref()
    }

    /// Quant params of output `i`.
    pub fn out_quant(&self, i: usize) -> Option<&'a QuantParams> {
        self.graph.values[*self.node.outputs.get(i)?].quant.as_ref()
    }

    /// Declared dtype of output `i`.
    pub fn out_dtype(&self, i: usize) -> Option<DType> {
        Some(self.graph.values[*self.node.outputs.get(i)?].dtype)
    }

    /// An error that names this node.
    pub fn error(&self, msg: impl Into<String>) -> RuntimeError {
        RuntimeError::Node {
            node: self.node.name.clone(),
            op: self.node.op.name().to_string(),
            msg: msg.into(),
        }
    }
}

/// Runs one node on its inputs (`None` = absent optional input) and returns its outputs,
/// on the kernels and numerics of `ctx.opts`.
pub fn eval_node(ctx: &NodeCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    if let fast::Kernels::Fast(isa) = ctx.opts.kernels {
        if let Some(r) = fast::eval_once(ctx, inputs, isa) {
            return r;
        }
    }
    if let Some(r) = quantized::try_eval(ctx, inputs) {
        return r;
    }
    reference::eval(ctx, inputs)
}
