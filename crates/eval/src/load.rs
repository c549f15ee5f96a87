//! Labelled array datasets from files.

use anyhow::{Context, Result};
use edgeopt_ir::Tensor;
use std::path::Path;

/// An array file (.npy or .npy.gz).
pub fn read_array(path: &Path) -> Result<Tensor> {
    Ok(edgeopt_npy::read(path)?)
}

/// Samples `[N, ...]` and their labels (`[N]`, `[N, 1]` or one-hot `[N, C]`) from two
/// array files, as `edgeopt eval --data --labels` reads them.
pub fn labelled(data: &Path, labels: &Path) -> Result<(Tensor, Tensor)> {
    let x = read_array(data).with_context(|| format!("cannot read data {}", data.display()))?;
    let y =
        read_array(labels).with_context(|| format!("cannot read labels {}", labels.display()))?;
    Ok((x, y))
}
