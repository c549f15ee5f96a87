//! ONNX import and export for edgeopt.
//!
//! - [`import`] / [`import_file`]: an ONNX model (opsets 10 to 22) to an IR [`Graph`];
//!   [`import_file`] also reads weights stored in external files next to the model.
//!   Constant inputs that the IR keeps as attributes are folded; shape-only
//!   subgraphs are folded to constants when the shapes they read are static.
//! - [`export`] / [`export_file`]: an IR graph to an ONNX model that onnxruntime runs.
//! - [`read_tensor_proto`]: a serialized `TensorProto` (the backend test data files).
//!
//! Malformed input is an error, never a panic: every allocation is bounded by the
//! size of the data actually present in the file.

mod attrs;
mod error;
mod export;
mod fold;
mod import;
mod ops;
mod tensor;

/// The ONNX protobuf messages, generated from the vendored `proto/onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use edgeopt_ir::Graph;
pub use error::{OnnxError, Result};
pub use export::{export, export_file, export_file_with, export_with, ExportOptions};
pub use import::{
    constant_operand_inputs, import, import_file, import_with, ImportOptions, MAX_OPSET, MIN_OPSET,
};
pub use tensor::{
    dtype_from_onnx, dtype_to_onnx, read_external, read_tensor_proto, tensor_from_proto,
    tensor_from_proto_in, tensor_to_proto,
};
