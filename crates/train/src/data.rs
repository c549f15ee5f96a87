//! Datasets: loaders (npy, npy.gz, idx, idx.gz, csv, csv.gz), layout matching to a
//! model's input, normalization, augmentation, seeded shuffling, background prefetch.
//!
//! Samples are kept in their stored element type (u8 images stay u8, 4x smaller) and
//! converted per batch: augmentation on raw values, then normalization, then noise.
//! Every random choice of a batch comes from an RNG seeded by (seed, epoch, batch),
//! so a run is reproducible whatever the prefetch thread's timing.

use crate::TrainError;
use edgeopt_ir::{Tensor, TensorData};
use flate2::read::GzDecoder;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

pub type Result<T> = std::result::Result<T, TrainError>;

fn derr(msg: impl Into<String>) -> TrainError {
    TrainError::Data(msg.into())
}

/// Largest array a loader accepts (elements), against header-driven allocation bombs.
pub const MAX_ELEMENTS: usize = 1 << 31;

#[derive(Debug, Clone)]
pub enum Samples {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl Samples {
    fn len(&self) -> usize {
        match self {
            Samples::U8(v) => v.len(),
            Samples::F32(v) => v.len(),
        }
    }
    fn get(&self, i: usize) -> f32 {
        match self {
            Samples::U8(v) => v[i] as f32,
            Samples::F32(v) => v[i],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Class indices.
    Classes(Vec<u32>),
    /// Regression / reconstruction targets, `dim` values per sample.
    Values { data: Vec<f32>, dim: usize },
    /// The (normalized, un-noised) input itself: autoencoders. Batches carry it as
    /// `Values`.
    Input,
}

/// A labelled dataset in a model's input layout.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub x: Samples,
    /// Shape of one sample (no batch), as the model takes it.
    pub shape: Vec<usize>,
    /// Axis of `shape` holding channels (normalization per channel, augmentation).
    pub channel_axis: Option<usize>,
    pub y: Targets,
}

impl Dataset {
    pub fn len(&self) -> usize {
        match &self.y {
            Targets::Classes(c) => c.len(),
            Targets::Values { data, dim } => data.len() / (*dim).max(1),
            Targets::Input => self.x.len() / self.sample_len().max(1),
        }
    }

    /// Makes the targets the inputs themselves (autoencoder training).
    pub fn reconstruct(mut self) -> Dataset {
        self.y = Targets::Input;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of classes (max label + 1), for classification targets.
    pub fn classes(&self) -> Option<usize> {
        match &self.y {
            Targets::Classes(c) => Some(c.iter().map(|&l| l as usize + 1).max().unwrap_or(0)),
            _ => None,
        }
    }

    /// Builds a dataset from an input array `[N, ...]` and labels `[N]` (integer =
    /// classes) or targets `[N, ...]` (float = values), matching the sample layout to
    /// `model_shape` (the model input without batch): identical, HWC -> CHW, or a
    /// reshape with the same element count (e.g. MNIST `[28, 28]` -> `[1, 28, 28]`).
    pub fn from_arrays(x: Tensor, y: Tensor, model_shape: &[usize]) -> Result<Dataset> {
        if x.shape.is_empty() {
            return Err(derr("input array has no sample dimension"));
        }
        let n = x.shape[0];
        let file_shape = x.shape[1..].to_vec();
        let y_t = match &y.data {
            TensorData::F32(v) if y.shape.len() >= 2 || y.shape.first() != Some(&n) => {
                Targets::Values {
                    data: v.clone(),
                    dim: y.len() / n.max(1),
                }
            }
            TensorData::F32(v) => Targets::Values {
                data: v.clone(),
                dim: 1,
            },
            _ => {
                if y.shape.first() != Some(&n) || y.len() != n {
                    return Err(derr(format!(
                        "labels {:?} do not match {n} samples",
                        y.shape
                    )));
                }
                let mut c = Vec::with_capacity(n);
                for i in 0..n {
                    let l = y.data.get_i64(i);
                    if !(0..=u32::MAX as i64).contains(&l) {
                        return Err(derr(format!("label {l} at row {i} is negative or huge")));
                    }
                    c.push(l as u32);
                }
                Targets::Classes(c)
            }
        };
        if let Targets::Values { data, dim } = &y_t {
            if data.len() != dim * n {
                return Err(derr(format!("targets {:?} for {n} samples", y.shape)));
            }
        }
        let samples = match x.data {
            TensorData::U8(v) => Samples::U8(v),
            TensorData::F32(v) => Samples::F32(v),
            d => {
                let t = Tensor {
                    shape: x.shape.clone(),
                    data: d,
                };
                Samples::F32(t.to_f32_vec())
            }
        };
        let per: usize = file_shape.iter().product();
        let want: usize = model_shape.iter().product();
        if per != want {
            return Err(derr(format!(
                "samples of shape {file_shape:?} do not fit the model input {model_shape:?}"
            )));
        }
        let (samples, channel_axis) = if file_shape == model_shape {
            // Rank-3 samples: channels first unless the last dim looks like channels
            // (a TFLite-style NHWC model input such as [32, 32, 3]).
            // Rank-1 samples (tabular features, spectra): each feature is its own
            // "channel", normalized separately.
            let ca = match model_shape.len() {
                3 if model_shape[2] <= 4 && model_shape[0] > 4 => Some(2),
                1..=3 => Some(0),
                _ => None,
            };
            (samples, ca)
        } else if file_shape.len() == 3
            && model_shape.len() == 3
            && file_shape[2] == model_shape[0]
            && file_shape[0] == model_shape[1]
            && file_shape[1] == model_shape[2]
        {
            (hwc_to_chw(samples, n, &file_shape), Some(0))
        } else {
            (
                samples,
                if model_shape.len() <= 3 {
                    Some(0)
                } else {
                    None
                },
            )
        };
        let d = Dataset {
            x: samples,
            shape: model_shape.to_vec(),
            channel_axis,
            y: y_t,
        };
        if d.x.len() != n * want {
            return Err(derr("input array is truncated"));
        }
        Ok(d)
    }

    /// Rows `idx` as a new dataset.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let per = self.sample_len();
        let x = match &self.x {
            Samples::U8(v) => Samples::U8(
                idx.iter()
                    .flat_map(|&i| &v[i * per..(i + 1) * per])
                    .copied()
                    .collect(),
            ),
            Samples::F32(v) => Samples::F32(
                idx.iter()
                    .flat_map(|&i| &v[i * per..(i + 1) * per])
                    .copied()
                    .collect(),
            ),
        };
        let y = match &self.y {
            Targets::Classes(c) => Targets::Classes(idx.iter().map(|&i| c[i]).collect()),
            Targets::Values { data, dim } => Targets::Values {
                data: idx
                    .iter()
                    .flat_map(|&i| &data[i * dim..(i + 1) * dim])
                    .copied()
                    .collect(),
                dim: *dim,
            },
            Targets::Input => Targets::Input,
        };
        Dataset {
            x,
            shape: self.shape.clone(),
            channel_axis: self.channel_axis,
            y,
        }
    }

    /// A seeded random split into (train, validation) with `frac` of the rows in
    /// validation.
    pub fn split(&self, frac: f32, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..1.0).contains(&frac) {
            return Err(TrainError::Config(format!(
                "validation fraction {frac} not in [0, 1)"
            )));
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5EED_5B17));
        let nv = ((self.len() as f32) * frac).round() as usize;
        let (v, t) = idx.split_at(nv);
        let (mut v, mut t) = (v.to_vec(), t.to_vec());
        v.sort_unstable();
        t.sort_unstable();
        Ok((self.subset(&t), self.subset(&v)))
    }

    /// The first `n` rows in a seeded random order (CI subsampling).
    pub fn sample(&self, n: usize, seed: u64) -> Dataset {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut StdRng::seed_from_u64(seed));
        idx.truncate(n.min(self.len()));
        idx.sort_unstable();
        self.subset(&idx)
    }
}

fn hwc_to_chw(s: Samples, n: usize, hwc: &[usize]) -> Samples {
    let (h, w, c) = (hwc[0], hwc[1], hwc[2]);
    let per = h * w * c;
    let map = |i: usize| {
        // destination index i (c, y, x) <- source (y, x, c)
        let (ch, rest) = (i / (h * w), i % (h * w));
        rest * c + ch
    };
    match s {
        Samples::U8(v) => Samples::U8(
            (0..n * per)
                .map(|i| v[(i / per) * per + map(i % per)])
                .collect(),
        ),
        Samples::F32(v) => Samples::F32(
            (0..n * per)
                .map(|i| v[(i / per) * per + map(i % per)])
                .collect(),
        ),
    }
}

/// Per-channel affine normalization `((x * scale) - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalize {
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    pub fn identity() -> Self {
        Normalize {
            scale: 1.0,
            mean: vec![0.0],
            std: vec![1.0],
        }
    }

    /// Per-channel mean/std of `d` after multiplying by `scale` (a subsample of at
    /// most 10,000 rows is enough for the statistics and keeps it fast).
    pub fn fit(d: &Dataset, scale: f32) -> Normalize {
        let (cax, nc) = match d.channel_axis {
            Some(a) => (Some(a), d.shape[a]),
            None => (None, 1),
        };
        let per = d.sample_len();
        let rows = d.len().min(10_000);
        let mut sum = vec![0f64; nc];
        let mut sq = vec![0f64; nc];
        let mut cnt = vec![0u64; nc];
        for r in 0..rows {
            for j in 0..per {
                let c = cax.map_or(0, |a| channel_of(j, &d.shape, a));
                let v = (d.x.get(r * per + j) * scale) as f64;
                sum[c] += v;
                sq[c] += v * v;
                cnt[c] += 1;
            }
        }
        let mean: Vec<f32> = (0..nc)
            .map(|c| (sum[c] / cnt[c].max(1) as f64) as f32)
            .collect();
        let std: Vec<f32> = (0..nc)
            .map(|c| {
                let m = sum[c] / cnt[c].max(1) as f64;
                let var = sq[c] / cnt[c].max(1) as f64 - m * m;
                // Constant features keep their scale (scikit-learn's rule), instead
                // of being blown up by a near-zero deviation.
                let sd = var.max(0.0).sqrt() as f32;
                if sd < 1e-6 {
                    1.0
                } else {
                    sd
                }
            })
            .collect();
        Normalize { scale, mean, std }
    }
}

/// Channel of flat index `j` of a sample with `shape`, channel axis `a`.
fn channel_of(j: usize, shape: &[usize], a: usize) -> usize {
    let inner: usize = shape[a + 1..].iter().product();
    (j / inner) % shape[a]
}

/// Augmentation applied to training batches only.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Images: zero-pad by this many pixels, then crop back at a random offset.
    pub crop_pad: usize,
    /// Images: flip left-right with probability 1/2.
    pub hflip: bool,
    /// Signals `[C, L]`: circular shift by up to this many samples either way.
    pub time_shift: usize,
    /// Gaussian noise (std in normalized units) added after normalization.
    pub noise_std: f32,
}

impl Augment {
    pub fn is_none(&self) -> bool {
        self.crop_pad == 0 && !self.hflip && self.time_shift == 0 && self.noise_std == 0.0
    }
}

/// One assembled batch.
pub struct Batch {
    pub x: Vec<f32>,
    /// `[n, *sample shape]`.
    pub shape: Vec<usize>,
    pub y: Targets,
}

/// Writes sample `row` of `d` into `out` (raw values), augmented if `rng` is given.
fn fill_sample(d: &Dataset, row: usize, aug: &Augment, rng: Option<&mut StdRng>, out: &mut [f32]) {
    let per = d.sample_len();
    let base = row * per;
    let Some(rng) = rng else {
        for (j, o) in out.iter_mut().enumerate() {
            *o = d.x.get(base + j);
        }
        return;
    };
    let s = &d.shape;
    if s.len() == 3 && (aug.crop_pad > 0 || aug.hflip) {
        // Image: find (H, W) axes from the channel axis.
        let ca = d.channel_axis.unwrap_or(0);
        let (h, w, c) = if ca == 0 {
            (s[1], s[2], s[0])
        } else {
            (s[0], s[1], s[2])
        };
        let p = aug.crop_pad as isize;
        let dy = if p > 0 { rng.gen_range(-p..=p) } else { 0 };
        let dx = if p > 0 { rng.gen_range(-p..=p) } else { 0 };
        let flip = aug.hflip && rng.gen_bool(0.5);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let sx = if flip { w - 1 - x } else { x } as isize + dx;
                    let sy = y as isize + dy;
                    let v = if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                        0.0
                    } else {
                        let (sy, sx) = (sy as usize, sx as usize);
                        let si = if ca == 0 {
                            (ch * h + sy) * w + sx
                        } else {
                            (sy * w + sx) * c + ch
                        };
                        d.x.get(base + si)
                    };
                    let di = if ca == 0 {
                        (ch * h + y) * w + x
                    } else {
                        (y * w + x) * c + ch
                    };
                    out[di] = v;
                }
            }
        }
    } else if s.len() == 2 && aug.time_shift > 0 {
        let (c, l) = (s[0], s[1]);
        let t = aug.time_shift.min(l) as isize;
        let shift = rng.gen_range(-t..=t);
        for ch in 0..c {
            for i in 0..l {
                let src = (i as isize - shift).rem_euclid(l as isize) as usize;
                out[ch * l + i] = d.x.get(base + ch * l + src);
            }
        }
    } else {
        for (j, o) in out.iter_mut().enumerate() {
            *o = d.x.get(base + j);
        }
    }
}

/// Box-Muller standard normal.
pub fn gauss(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// Assembles rows `idx` into a batch. `aug_seed` enables augmentation.
pub fn make_batch(
    d: &Dataset,
    idx: &[usize],
    norm: &Normalize,
    aug: &Augment,
    aug_seed: Option<u64>,
) -> Batch {
    let per = d.sample_len();
    let mut x = vec![0f32; idx.len() * per];
    let mut rng = aug_seed.map(StdRng::seed_from_u64);
    let mut clean = Vec::new();
    for (k, &row) in idx.iter().enumerate() {
        let out = &mut x[k * per..(k + 1) * per];
        fill_sample(d, row, aug, rng.as_mut(), out);
        for (j, v) in out.iter_mut().enumerate() {
            let c = d.channel_axis.map_or(0, |a| channel_of(j, &d.shape, a));
            let (m, s) = (
                norm.mean[c.min(norm.mean.len() - 1)],
                norm.std[c.min(norm.std.len() - 1)],
            );
            *v = (*v * norm.scale - m) / s;
        }
        if d.y == Targets::Input {
            clean.extend_from_slice(out);
        }
        if let Some(r) = rng.as_mut() {
            if aug.noise_std > 0.0 {
                for v in out.iter_mut() {
                    *v += aug.noise_std * gauss(r);
                }
            }
        }
    }
    let y = match &d.y {
        Targets::Classes(c) => Targets::Classes(idx.iter().map(|&i| c[i]).collect()),
        Targets::Values { data, dim } => Targets::Values {
            data: idx
                .iter()
                .flat_map(|&i| &data[i * dim..(i + 1) * dim])
                .copied()
                .collect(),
            dim: *dim,
        },
        Targets::Input => Targets::Values {
            data: clean,
            dim: per,
        },
    };
    let mut shape = vec![idx.len()];
    shape.extend(&d.shape);
    Batch { x, shape, y }
}

/// A stream of batches assembled on a background thread (`prefetch` batches ahead).
pub struct Loader {
    rx: Receiver<Batch>,
    handle: Option<std::thread::JoinHandle<()>>,
    pub batches: usize,
}

impl Loader {
    /// Batches of one epoch. With `shuffle_seed` the order is a permutation seeded by
    /// it (and augmentation is on); otherwise rows come in order, unaugmented.
    pub fn new(
        d: Arc<Dataset>,
        batch: usize,
        norm: Normalize,
        aug: Augment,
        shuffle_seed: Option<u64>,
        drop_last: bool,
        prefetch: usize,
    ) -> Loader {
        let mut order: Vec<usize> = (0..d.len()).collect();
        if let Some(s) = shuffle_seed {
            order.shuffle(&mut StdRng::seed_from_u64(s));
        }
        let batch = batch.max(1);
        let mut chunks: Vec<Vec<usize>> = order.chunks(batch).map(|c| c.to_vec()).collect();
        // A last batch of one breaks batch statistics; drop short tails when asked.
        if drop_last && chunks.last().is_some_and(|c| c.len() < batch) && chunks.len() > 1 {
            chunks.pop();
        }
        let batches = chunks.len();
        let (tx, rx) = sync_channel(prefetch.max(1));
        let handle = std::thread::spawn(move || {
            for (b, idx) in chunks.into_iter().enumerate() {
                let seed = shuffle_seed.map(|s| s.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b as u64);
                let aug_ref = if seed.is_some() {
                    &aug
                } else {
                    &Augment::default()
                };
                let bt = make_batch(&d, &idx, &norm, aug_ref, seed);
                if tx.send(bt).is_err() {
                    return; // consumer stopped early
                }
            }
        });
        Loader {
            rx,
            handle: Some(handle),
            batches,
        }
    }
}

impl Iterator for Loader {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the producer, then wait for it.
        let (_, dummy) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, dummy));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------
// File formats
// ---------------------------------------------------------------------------------

fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let io = |e: std::io::Error| derr(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(io)?;
    let f = std::fs::File::open(path).map_err(io)?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(BufReader::new(GzDecoder::new(BufReader::new(f))))
    } else {
        Box::new(BufReader::new(f))
    })
}

/// Reads an IDX file (MNIST's format), gzipped or not.
pub fn read_idx(path: &Path) -> Result<Tensor> {
    let name = path.display().to_string();
    let mut r = open_maybe_gz(path)?;
    let mut head = [0u8; 4];
    r.read_exact(&mut head)
        .map_err(|e| derr(format!("{name}: {e}")))?;
    if head[0] != 0 || head[1] != 0 {
        return Err(derr(format!("{name}: not an IDX file (bad magic)")));
    }
    let (dtype_bytes, kind) = match head[2] {
        0x08 => (1, "u8"),
        0x09 => (1, "i8"),
        0x0B => (2, "i16"),
        0x0C => (4, "i32"),
        0x0D => (4, "f32"),
        0x0E => (8, "f64"),
        t => return Err(derr(format!("{name}: unknown IDX type 0x{t:02x}"))),
    };
    let nd = head[3] as usize;
    if nd == 0 || nd > 8 {
        return Err(derr(format!("{name}: {nd} dimensions")));
    }
    let mut shape = Vec::with_capacity(nd);
    for _ in 0..nd {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)
            .map_err(|e| derr(format!("{name}: {e}")))?;
        shape.push(u32::from_be_bytes(b) as usize);
    }
    let n = edgeopt_ir::checked_numel(&shape).map_err(|e| derr(format!("{name}: {e}")))?;
    if n > MAX_ELEMENTS {
        return Err(derr(format!("{name}: {n} elements is too many")));
    }
    // Read through a limit: a lying header fails with "truncated" instead of allocating.
    let want = n * dtype_bytes;
    let mut bytes = Vec::new();
    r.take(want as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| derr(format!("{name}: {e}")))?;
    if bytes.len() != want {
        return Err(derr(format!(
            "{name}: truncated: header promises {want} bytes, got {}",
            bytes.len()
        )));
    }
    let data = match kind {
        "u8" => TensorData::U8(bytes),
        "i8" => TensorData::I8(bytes.into_iter().map(|b| b as i8).collect()),
        "i16" => TensorData::I16(
            bytes
                .chunks(2)
                .map(|c| i16::from_be_bytes([c[0], c[1]]))
                .collect(),
        ),
        "i32" => TensorData::I32(
            bytes
                .chunks(4)
                .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "f32" => TensorData::F32(
            bytes
                .chunks(4)
                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        _ => TensorData::F32(
            bytes
                .chunks(8)
                .map(|c| f64::from_be_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
    };
    Tensor::new(shape, data).map_err(TrainError::Ir)
}

/// A numeric CSV table: optional header, one row per sample. Columns in `drop` (by
/// header name or 0-based index) are skipped; `label` (name or index, `None` = last
/// column) becomes the label vector. Returns (features `[N, F]` f32, labels `[N]` i64).
pub fn read_csv(path: &Path, label: Option<&str>, drop: &[String]) -> Result<(Tensor, Tensor)> {
    let name = path.display().to_string();
    let r = BufReader::new(open_maybe_gz(path)?);
    let mut header: Option<Vec<String>> = None;
    let mut rows: Vec<Vec<f32>> = Vec::new();
    let mut ncols = 0;
    for (ln, line) in r.lines().enumerate() {
        let line = line.map_err(|e| derr(format!("{name}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if ln == 0 && cells.iter().any(|c| c.parse::<f64>().is_err()) {
            header = Some(cells.iter().map(|s| s.to_string()).collect());
            ncols = cells.len();
            continue;
        }
        if ncols == 0 {
            ncols = cells.len();
        }
        if cells.len() != ncols {
            return Err(derr(format!(
                "{name}:{}: {} columns, expected {ncols}",
                ln + 1,
                cells.len()
            )));
        }
        rows.push(
            cells
                .iter()
                .map(|c| c.parse::<f32>().unwrap_or(f32::NAN))
                .collect(),
        );
        if rows.len() * ncols > MAX_ELEMENTS {
            return Err(derr(format!("{name}: too large")));
        }
    }
    let col = |key: &str| -> Result<usize> {
        if let Some(h) = &header {
            if let Some(i) = h.iter().position(|c| c == key) {
                return Ok(i);
            }
        }
        key.parse::<usize>()
            .ok()
            .filter(|&i| i < ncols)
            .ok_or_else(|| derr(format!("{name}: no column '{key}'")))
    };
    let lab = match label {
        Some(l) => col(l)?,
        None => ncols
            .checked_sub(1)
            .ok_or_else(|| derr(format!("{name}: empty")))?,
    };
    let mut skip = vec![false; ncols];
    skip[lab] = true;
    for d in drop {
        skip[col(d)?] = true;
    }
    let keep: Vec<usize> = (0..ncols).filter(|&c| !skip[c]).collect();
    let mut x = Vec::with_capacity(rows.len() * keep.len());
    let mut y = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        for &c in &keep {
            if row[c].is_nan() {
                let cname = header.as_ref().map_or(c.to_string(), |h| h[c].clone());
                return Err(derr(format!(
                    "{name}: row {} column '{cname}' is not numeric (drop it with --csv-drop)",
                    i + 1
                )));
            }
            x.push(row[c]);
        }
        let l = row[lab];
        if !l.is_finite() || l < 0.0 || l.fract() != 0.0 {
            return Err(derr(format!(
                "{name}: row {}: label {l} is not a class index",
                i + 1
            )));
        }
        y.push(l as i64);
    }
    let n = rows.len();
    Ok((
        Tensor::from_f32(vec![n, keep.len()], x)?,
        Tensor::from_i64(vec![n], y)?,
    ))
}

/// Reads an array file by extension: `.npy`, `.npy.gz`, `-ubyte`/`.idx` (optionally
/// `.gz`).
pub fn read_array(path: &Path) -> Result<Tensor> {
    let s = path.to_string_lossy();
    let base = s.strip_suffix(".gz").unwrap_or(&s);
    if base.ends_with(".npy") {
        edgeopt_npy::read(path).map_err(|e| derr(e.to_string()))
    } else if base.ends_with("-ubyte") || base.ends_with(".idx") {
        read_idx(path)
    } else {
        Err(derr(format!(
            "{s}: unknown array format (expected .npy, .npy.gz, .idx, -ubyte[.gz])"
        )))
    }
}

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

/// Train and test files of a dataset folder laid out like `../shared/data`:
/// `train_x.npy[.gz]` / `train_y.npy` (also in a `train*/` subfolder, e.g.
/// cifar10/train20k) and `test_x.npy[.gz]` / `test_y.npy`; or MNIST-style IDX files.
#[derive(Debug, Clone)]
pub struct DatasetFiles {
    pub train: Option<(PathBuf, PathBuf)>,
    pub test: Option<(PathBuf, PathBuf)>,
}

pub fn find_dataset(dir: &Path) -> Result<DatasetFiles> {
    if !dir.is_dir() {
        return Err(derr(format!("{} is not a directory", dir.display())));
    }
    let pair = |d: &Path, p: &str| -> Option<(PathBuf, PathBuf)> {
        let x = first_existing(d, &[&format!("{p}_x.npy"), &format!("{p}_x.npy.gz")])?;
        let y = first_existing(d, &[&format!("{p}_y.npy"), &format!("{p}_y.npy.gz")])?;
        Some((x, y))
    };
    let mut train = pair(dir, "train");
    if train.is_none() {
        let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("train"))
            })
            .collect();
        subs.sort();
        train = subs.iter().find_map(|s| pair(s, "train"));
    }
    let idx = dir.join("idx");
    let idx_pair = |x: &str, y: &str| -> Option<(PathBuf, PathBuf)> {
        let x = first_existing(&idx, &[x, &format!("{x}.gz")])?;
        let y = first_existing(&idx, &[y, &format!("{y}.gz")])?;
        Some((x, y))
    };
    if train.is_none() {
        train = idx_pair("train-images-idx3-ubyte", "train-labels-idx1-ubyte");
    }
    let test =
        pair(dir, "test").or_else(|| idx_pair("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"));
    if train.is_none() && test.is_none() {
        return Err(derr(format!(
            "{}: no train_x/train_y or test_x/test_y arrays found",
            dir.display()
        )));
    }
    Ok(DatasetFiles { train, test })
}

/// Loads a (x, y) pair of array files into a dataset for `model_shape`.
pub fn load_pair(x: &Path, y: &Path, model_shape: &[usize]) -> Result<Dataset> {
    let xt = read_array(x)?;
    let yt = read_array(y)?;
    if xt.shape.first() != yt.shape.first() {
        return Err(derr(format!(
            "{} has {:?} rows but {} has {:?}",
            x.display(),
            xt.shape.first(),
            y.display(),
            yt.shape.first()
        )));
    }
    Dataset::from_arrays(xt, yt, model_shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(shape: &[usize], n: usize) -> Dataset {
        let per: usize = shape.iter().product();
        let x = Tensor::new(
            [&[n][..], shape].concat(),
            TensorData::U8((0..n * per).map(|i| (i % 251) as u8).collect()),
        )
        .unwrap();
        let y = Tensor::new(
            vec![n],
            TensorData::U8((0..n).map(|i| (i % 3) as u8).collect()),
        )
        .unwrap();
        Dataset::from_arrays(x, y, shape).unwrap()
    }

    #[test]
    fn hwc_is_transposed_to_chw() {
        let x = Tensor::new(vec![1, 2, 2, 3], TensorData::U8((0..12).collect())).unwrap();
        let y = Tensor::new(vec![1], TensorData::U8(vec![0])).unwrap();
        let d = Dataset::from_arrays(x, y, &[3, 2, 2]).unwrap();
        match d.x {
            Samples::U8(v) => assert_eq!(v, vec![0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]),
            _ => panic!(),
        }
    }

    #[test]
    fn batches_are_deterministic_and_complete() {
        let d = Arc::new(tiny(&[1, 4, 4], 10));
        let aug = Augment {
            crop_pad: 1,
            hflip: true,
            ..Default::default()
        };
        let run = || {
            Loader::new(
                d.clone(),
                4,
                Normalize::identity(),
                aug.clone(),
                Some(3),
                false,
                2,
            )
            .map(|b| (b.x, b.y))
            .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a.len(), 3);
        assert_eq!(a, run());
        let total: usize = a
            .iter()
            .map(|(_, y)| match y {
                Targets::Classes(c) => c.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn split_partitions_rows() {
        let d = tiny(&[2, 3], 20);
        let (t, v) = d.split(0.25, 1).unwrap();
        assert_eq!((t.len(), v.len()), (15, 5));
    }

    #[test]
    fn idx_roundtrip_and_truncation() {
        let dir = std::env::temp_dir().join(format!("edgeopt-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a-idx3-ubyte");
        let mut b = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend([1, 2, 3, 4, 5, 6]);
        std::fs::write(&p, &b).unwrap();
        let t = read_idx(&p).unwrap();
        assert_eq!(t.shape, vec![2, 3]);
        // A header claiming a huge array fails without allocating it.
        let mut bad = vec![0, 0, 8, 2, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 3];
        bad.extend([1, 2]);
        std::fs::write(&p, &bad).unwrap();
        assert!(read_idx(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn normalize_fits_per_channel() {
        let d = tiny(&[3, 2, 2], 4);
        let n = Normalize::fit(&d, 1.0);
        assert_eq!(n.mean.len(), 3);
        let b = make_batch(&d, &[0, 1, 2, 3], &n, &Augment::default(), None);
        let m: f32 = b.x.iter().sum::<f32>() / b.x.len() as f32;
        assert!(m.abs() < 1e-4, "{m}");
    }
}
