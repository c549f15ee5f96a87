//! Training checkpoints: parameters, optimizer moments and progress in one file,
//! written atomically (temporary file, fsync, rename) so a crash never leaves a torn
//! checkpoint, and read back to resume.
//!
//! Format: `EDGEOPT-CKPT\x01`, a u64 little-endian header length, a JSON header
//! ([`Header`]), then the f32 little-endian data of every tensor in header order.

use crate::dyn_tensor::DynTensor;
use crate::TrainError;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: &[u8; 13] = b"EDGEOPT-CKPT\x01";
/// Upper bound on the JSON header (names and shapes only).
const MAX_HEADER: u64 = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
}

/// Progress and configuration fingerprint stored with the tensors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps completed.
    pub step: usize,
    pub opt_steps: u64,
    pub best_metric: Option<f32>,
    pub best_epoch: Option<usize>,
    pub bad_epochs: usize,
    /// The training configuration as JSON; resuming with a different one is refused.
    pub fingerprint: String,
    pub act_ranges: Vec<(usize, f32, f32)>,
    /// Per-epoch logs so far, as JSON.
    pub history: String,
    pub entries: Vec<Entry>,
}

/// A checkpoint in memory: header plus tensors (`param:<name>`, `m1:<name>`,
/// `m2:<name>`, `best:<name>`).
pub struct Checkpoint {
    pub header: Header,
    pub tensors: Vec<Vec<f32>>,
}

fn cerr(path: &Path, msg: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

impl Checkpoint {
    pub fn new(
        mut header: Header,
        named: Vec<(String, &DynTensor)>,
    ) -> Result<Checkpoint, TrainError> {
        header.entries.clear();
        let mut tensors = Vec::with_capacity(named.len());
        for (name, t) in named {
            header.entries.push(Entry {
                name,
                shape: t.dims(),
            });
            tensors.push(t.to_vec()?);
        }
        Ok(Checkpoint { header, tensors })
    }

    pub fn get(&self, name: &str) -> Option<(&Entry, &[f32])> {
        let i = self.header.entries.iter().position(|e| e.name == name)?;
        Some((&self.header.entries[i], &self.tensors[i]))
    }

    pub fn tensor(&self, name: &str, device: &Device) -> Result<Option<DynTensor>, TrainError> {
        match self.get(name) {
            None => Ok(None),
            Some((e, v)) => Ok(Some(DynTensor::from_vec(v.to_vec(), &e.shape, device)?)),
        }
    }

    /// Writes atomically: `path.tmp`, fsync, rename over `path`.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let header = serde_json::to_vec(&self.header).map_err(|e| cerr(path, e.to_string()))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        {
            let f = std::fs::File::create(&tmp).map_err(|e| cerr(&tmp, e.to_string()))?;
            let mut w = std::io::BufWriter::new(f);
            let io = |e: std::io::Error| cerr(&tmp, e.to_string());
            w.write_all(MAGIC).map_err(io)?;
            w.write_all(&(header.len() as u64).to_le_bytes())
                .map_err(io)?;
            w.write_all(&header).map_err(io)?;
            for t in &self.tensors {
                let mut buf = Vec::with_capacity(t.len() * 4);
                for v in t {
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                w.write_all(&buf).map_err(io)?;
            }
            let f = w.into_inner().map_err(|e| cerr(&tmp, e.to_string()))?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(|e| cerr(path, e.to_string()))?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Checkpoint, TrainError> {
        let io = |e: std::io::Error| cerr(path, e.to_string());
        let f = std::fs::File::open(path).map_err(io)?;
        let file_len = f.metadata().map_err(io)?.len();
        let mut r = std::io::BufReader::new(f);
        let mut magic = [0u8; 13];
        r.read_exact(&mut magic).map_err(io)?;
        if &magic != MAGIC {
            return Err(cerr(path, "not an edgeopt checkpoint"));
        }
        let mut len = [0u8; 8];
        r.read_exact(&mut len).map_err(io)?;
        let hlen = u64::from_le_bytes(len);
        if hlen > MAX_HEADER || hlen > file_len {
            return Err(cerr(path, format!("header length {hlen} is implausible")));
        }
        let mut hbuf = vec![0u8; hlen as usize];
        r.read_exact(&mut hbuf).map_err(io)?;
        let header: Header =
            serde_json::from_slice(&hbuf).map_err(|e| cerr(path, format!("header: {e}")))?;
        // Check the total size against the file before allocating anything.
        let mut need = 0u64;
        for e in &header.entries {
            let n = e
                .shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                .ok_or_else(|| cerr(path, "shape overflows"))?;
            need = need.saturating_add(n.saturating_mul(4));
        }
        if need != file_len - 21 - hlen {
            return Err(cerr(
                path,
                format!(
                    "data size {} does not match the header ({need})",
                    file_len - 21 - hlen
                ),
            ));
        }
        let mut tensors = Vec::with_capacity(header.entries.len());
        for e in &header.entries {
            let n: usize = e.shape.iter().product();
            let mut b = vec![0u8; n * 4];
            r.read_exact(&mut b).map_err(io)?;
            tensors.push(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            );
        }
        Ok(Checkpoint { header, tensors })
    }
}
