//! Compression passes: `ir → ir`, composable into a recipe (see DESIGN.md).
//!
//! - [`pass`]: the `Pass` trait, its context, recipes, budgets and the registry.
//! - [`quant`]: quantization — graph preparation (BatchNorm folding, activation fusion,
//!   NHWC layout), calibration, post-training quantization to TFLite-style integer
//!   graphs, low bit widths, mixed precision, quantization-aware training.

pub mod pass;
pub mod quant;

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// The graph has a shape or op the pass cannot handle; the message names the node.
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ir(#[from] edgeopt_ir::IrError),
    #[error(transparent)]
    Runtime(#[from] edgeopt_runtime::RuntimeError),
    #[error(transparent)]
    Train(#[from] edgeopt_train::TrainError),
}

pub type Result<T> = std::result::Result<T, CompressError>;
