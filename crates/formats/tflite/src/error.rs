//! Import errors. Every message says where in the model the problem is (operator
//! index and TFLite op name, tensor index and name) so a bad file can be diagnosed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TfliteError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not a well-formed TFLite flatbuffer (bad offset, length, vtable,
    /// unknown enum tag, invalid UTF-8...).
    #[error("malformed TFLite flatbuffer: {0}")]
    Flatbuffer(String),
    /// Well-formed flatbuffer, but the model breaks a TFLite rule (index out of
    /// range, buffer size that does not match the shape, absurd dimensions...).
    #[error("invalid TFLite model: {0}")]
    Invalid(String),
    /// A valid model using something edgeopt does not import (op, dtype, sparsity...).
    #[error("unsupported TFLite model: {0}")]
    Unsupported(String),
    /// The graph built from the model failed the IR's checks.
    #[error("imported graph is invalid: {0}")]
    Ir(#[from] edgeopt_ir::IrError),
}

impl From<planus::Error> for TfliteError {
    fn from(e: planus::Error) -> Self {
        TfliteError::Flatbuffer(e.to_string())
    }
}

impl TfliteError {
    /// The same error with `ctx` prepended to its message (e.g. "operator #3 (CONV_2D)").
    pub(crate) fn context(self, ctx: &str) -> TfliteError {
        match self {
            TfliteError::Flatbuffer(m) => TfliteError::Flatbuffer(format!("{ctx}: {m}")),
            TfliteError::Invalid(m) => TfliteError::Invalid(format!("{ctx}: {m}")),
            TfliteError::Unsupported(m) => TfliteError::Unsupported(format!("{ctx}: {m}")),
            e => e,
        }
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> TfliteError {
    TfliteError::Invalid(msg.into())
}

pub(crate) fn unsupported(msg: impl Into<String>) -> TfliteError {
    TfliteError::Unsupported(msg.into())
}
