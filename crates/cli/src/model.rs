//! Loading a model file into the IR, by extension.

use anyhow::{bail, Context, Result};
use edgeopt_ir::{Graph, Source};
use std::path::Path;

/// Model file formats edgeopt reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Onnx,
    Tflite,
}

impl Format {
    /// The format named by the file's extension (case-insensitive).
    pub fn of(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "onnx" => Ok(Format::Onnx),
            "tflite" => Ok(Format::Tflite),
            "" => bail!(
                "{}: no file extension; expected a .onnx or .tflite model",
                path.display()
            ),
            other => bail!(
                "{}: unknown model format '.{other}'; expected .onnx or .tflite",
                path.display()
            ),
        }
    }
}

/// Reads a `.onnx` or `.tflite` model and checks the resulting graph.
pub fn load_model(path: &Path) -> Result<Graph> {
    if path.is_dir() {
        bail!(
            "{}: is a directory; give a .onnx or .tflite model file",
            path.display()
        );
    }
    let format = Format::of(path)?;
    if !path.is_file() {
        bail!("{}: no such model file", path.display());
    }
    // A model under the other format's extension (a renamed or mis-saved file): say
    // what it is instead of a decoder error. TFLite files carry "TFL3" at byte 4.
    let mut head = [0u8; 8];
    let is_tflite = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|_| &head[4..8] == b"TFL3");
    if format == Format::Onnx && is_tflite {
        bail!(
            "{}: this is a TFLite model (file identifier TFL3) under a .onnx name; \
             rename it to .tflite",
            path.display()
        );
    }
    let graph = match format {
        Format::Onnx => edgeopt_onnx::import_file(path)
            .with_context(|| format!("cannot load ONNX model {}", path.display()))?,
        Format::Tflite => edgeopt_tflite::import_file(path)
            .with_context(|| format!("cannot load TFLite model {}", path.display()))?,
    };
    graph
        .validate()
        .with_context(|| format!("{}: imported graph is invalid", path.display()))?;
    Ok(graph)
}

/// One line describing where the graph came from, e.g. `tflite v3` or `onnx opset 13`.
pub fn describe_source(graph: &Graph) -> String {
    match &graph.source {
        Source::Built => "built".into(),
        Source::Onnx { opset, producer } if producer.is_empty() => format!("onnx opset {opset}"),
        Source::Onnx { opset, producer } => format!("onnx opset {opset}, from {producer}"),
        Source::Tflite { version } => format!("tflite v{version}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_by_extension() {
        assert_eq!(Format::of(Path::new("a/b.ONNX")).unwrap(), Format::Onnx);
        assert_eq!(Format::of(Path::new("m.tflite")).unwrap(), Format::Tflite);
        let e = Format::of(Path::new("m.pb")).unwrap_err().to_string();
        assert!(e.contains("unknown model format '.pb'"), "{e}");
        assert!(Format::of(Path::new("model")).is_err());
    }
}
