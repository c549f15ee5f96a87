//! Run-time errors: every message names the node and the problem.

use edgeopt_ir::IrError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
