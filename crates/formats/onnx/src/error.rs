//! Errors of the ONNX reader and writer: each names the node (name and op type), the
//! tensor or the file at fault, and the problem.

use edgeopt_ir::IrError;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid ONNX protobuf: {0}")]
    Decode(String),
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("tensor '{0}': {1}")]
    Tensor(String, String),
    /// Every op type of the model that the importer does not know, in one message.
    #[error("unsupported ONNX ops: {0}")]
    UnsupportedOps(String),
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Ir(#[from] IrError),
}

pub type Result<T, E = OnnxError> = std::result::Result<T, E>;

pub(crate) fn tensor_err(name: &str, msg: impl Into<String>) -> OnnxError {
    OnnxError::Tensor(name.to_string(), msg.into())
}
