//! Errors of the IR: every message names the node or tensor and the problem.

use crate::dtype::DType;

#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("tensor '{0}': {1}")]
    Tensor(String, String),
    #[error("expected {expected} data, got {got}")]
    DType { expected: String, got: DType },
    #[error("invalid graph: {0}")]
    Invalid(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

pub type Result<T, E = IrError> = std::result::Result<T, E>;
