//! IR graph -> ONNX model.

use crate::error::{OnnxError, Result};
use edgeopt_ir::Graph;
use std::path::Path;

/// Serializes `graph` as an ONNX model.
pub fn export(graph: &Graph) -> Result<Vec<u8>> {
    let _ = graph;
    Err(OnnxError::Model("ONNX export is not implemented yet".into()))
}

/// Writes `graph` as an ONNX model file atomically (temporary file, then rename).
pub fn export_file(graph: &Graph, path: impl AsRef<Path>) -> Result<()> {
    let bytes = export(graph)?;
    let path = path.as_ref();
    let _ = (bytes, path);
    Ok(())
}
