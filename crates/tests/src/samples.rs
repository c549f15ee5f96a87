//! Real inputs for the three MLPerf Tiny int8 models (verification support for the
//! tests and the bench; reads `../shared/data` in place). Built as
//! `crates/tests/tests/tflite_int8_bitexact.rs` builds them:
//! - IC: CIFAR-10 test images quantized with the model's input parameters (scale 1,
//!   zero point -128: pixel - 128); the 200 MLPerf perf samples are found through
//!   `perf_samples_idxs.npy` (canonical test_batch indices) and
//!   `cifar10/canonical_test_index_anchors.csv` (canonical index -> row of test_x.npy);
//! - AD: the 40 log-mel slices of the public AD sample, quantized;
//! - KWS: MFCC features of Speech Commands test clips (see [`kws_features`]), quantized.

use edgeopt_ir::{Graph, TensorData};
use std::path::Path;

pub const IC: &str =
    "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet_quant.tflite";
pub const KWS: &str =
    "mlperf-tiny/benchmark/training/keyword_spotting/trained_models/kws_ref_model.tflite";
pub const AD: &str =
    "mlperf-tiny/benchmark/training/anomaly_detection/trained_models/ad01_int8.tflite";
const AD_SAMPLE: &str = "mlperf-tiny/benchmark/reference_submissions/anomaly_detection/datasets/dcase01/normal_id_01_00000000_hist_librosa.bin";
const PERF_IDXS: &str = "mlperf-tiny/benchmark/training/image_classification/perf_samples_idxs.npy";

type Res<T> = Result<T, String>;

/// Scale and zero point of the graph's first input.
pub fn input_params(g: &Graph) -> Res<(f32, i32)> {
    let q = g.values[g.inputs[0]]
        .quant
        .as_ref()
        .ok_or("model input has no quantization parameters")?;
    Ok((
        q.scale[0],
        q.zero_point.first().copied().unwrap_or(0) as i32,
    ))
}

/// TFLite's float -> int8 quantization: round half away from zero, then clamp.
pub fn quantize(x: f32, scale: f32, zp: i32) -> i8 {
    ((x / scale).round() as i64 + zp as i64).clamp(-128, 127) as i8
}

/// Rows of cifar10/test_x.npy of the 200 MLPerf perf samples, in perf-file order.
pub fn ic_perf_rows(data: &Path) -> Res<Vec<usize>> {
    let idx = edgeopt_npy::read(&data.join(PERF_IDXS)).map_err(|e| format!("{PERF_IDXS}: {e}"))?;
    let csv_path = data.join("cifar10/canonical_test_index_anchors.csv");
    let csv =
        std::fs::read_to_string(&csv_path).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    let mut map = std::collections::HashMap::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() >= 3 {
            if let (Ok(c), Ok(r)) = (f[1].parse::<i64>(), f[2].parse::<usize>()) {
                map.insert(c, r);
            }
        }
    }
    idx.to_i64_vec()
        .iter()
        .map(|c| {
            map.get(c)
                .copied()
                .ok_or(format!("perf index {c} has no anchor row"))
        })
        .collect()
}

/// CIFAR-10 labels (class-sorted order of test_y.npy).
pub fn cifar_labels(data: &Path) -> Res<Vec<usize>> {
    let y = edgeopt_npy::read(&data.join("cifar10/test_y.npy")).map_err(|e| e.to_string())?;
    Ok(y.to_i64_vec().into_iter().map(|v| v as usize).collect())
}

/// IC model inputs for the given rows of test_x.npy, back to back (int8 bytes).
pub fn ic_inputs(data: &Path, g: &Graph, rows: &[usize]) -> Res<Vec<u8>> {
    let (scale, zp) = input_params(g)?;
    let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).map_err(|e| e.to_string())?;
    let TensorData::U8(px) = &x.data else {
        return Err("CIFAR-10 test_x is not u8".into());
    };
    let per: usize = x.shape[1..].iter().product();
    let mut out = Vec::with_capacity(rows.len() * per);
    for &r in rows {
        let s = px
            .get(r * per..(r + 1) * per)
            .ok_or(format!("row {r} out of range"))?;
        out.extend(s.iter().map(|&p| quantize(p as f32, scale, zp) as u8));
    }
    Ok(out)
}

/// The 40 AD slices of the public sample, back to back.
pub fn ad_inputs(data: &Path, g: &Graph) -> Res<Vec<u8>> {
    let (scale, zp) = input_params(g)?;
    let bytes = std::fs::read(data.join(AD_SAMPLE)).map_err(|e| format!("{AD_SAMPLE}: {e}"))?;
    if bytes.len() != 40 * 640 * 4 {
        return Err("AD sample is not float32 (40, 640)".into());
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| quantize(f32::from_le_bytes([b[0], b[1], b[2], b[3]]), scale, zp) as u8)
        .collect())
}

/// MFCC features of one 1 s, 16 kHz clip as the MLPerf Tiny KWS reference computes
/// them (tf.signal in `keyword_spotting/get_dataset.py`): 30 ms Hann frames every 20 ms
/// (480/320 samples, 49 frames), 512-point FFT magnitude, 40 mel bins 20..4000 Hz
/// (HTK mel scale, triangular, tf.signal.linear_to_mel_weight_matrix), log(x + 1e-6),
/// orthonormal-scaled DCT-II (tf.signal.mfccs_from_log_mel_spectrograms), first 10.
/// Computed here in f64 without TensorFlow, so values are close to but not bit-equal
/// with TF's; they are real speech features for exercising the model.
pub fn kws_features(pcm: &[i16]) -> Vec<f32> {
    const FRAME: usize = 480;
    const STEP: usize = 320;
    const FFT: usize = 512;
    const BINS: usize = FFT / 2 + 1;
    const MELS: usize = 40;
    const COEFFS: usize = 10;
    let frames = if pcm.len() >= FRAME {
        1 + (pcm.len() - FRAME) / STEP
    } else {
        0
    };
    let x: Vec<f64> = pcm.iter().map(|&s| s as f64 / 32768.0).collect();
    // Periodic Hann window (tf.signal.hann_window default).
    let win: Vec<f64> = (0..FRAME)
        .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / FRAME as f64).cos())
        .collect();
    // Mel weights: HTK mel, band edges spaced evenly in mel between 20 and 4000 Hz,
    // the DC bin excluded, as linear_to_mel_weight_matrix does.
    let mel = |f: f64| 1127.0 * (1.0 + f / 700.0).ln();
    let (lo, hi) = (mel(20.0), mel(4000.0));
    let edges: Vec<f64> = (0..MELS + 2)
        .map(|i| lo + (hi - lo) * i as f64 / (MELS + 1) as f64)
        .collect();
    let mut weights = vec![0f64; BINS * MELS];
    for b in 1..BINS {
        let m = mel(8000.0 * b as f64 / (BINS - 1) as f64);
        for k in 0..MELS {
            let (l, c, r) = (edges[k], edges[k + 1], edges[k + 2]);
            let lower = (m - l) / (c - l);
            let upper = (r - m) / (r - c);
            weights[b * MELS + k] = lower.min(upper).max(0.0);
        }
    }
    let mut out = Vec::with_capacity(frames * COEFFS);
    let (cos_t, sin_t): (Vec<f64>, Vec<f64>) = (0..FFT)
        .map(|i| {
            let a = 2.0 * std::f64::consts::PI * i as f64 / FFT as f64;
            (a.cos(), a.sin())
        })
        .unzip();
    for f in 0..frames {
        let frame: Vec<f64> = (0..FRAME).map(|n| x[f * STEP + n] * win[n]).collect();
        let mut logmel = [0f64; MELS];
        let mut mags = vec![0f64; BINS];
        for (b, mag) in mags.iter_mut().enumerate() {
            let (mut re, mut im) = (0.0, 0.0);
            for (n, &v) in frame.iter().enumerate() {
                let i = (b * n) % FFT;
                re += v * cos_t[i];
                im -= v * sin_t[i];
            }
            *mag = (re * re + im * im).sqrt();
        }
        for (k, lm) in logmel.iter_mut().enumerate() {
            let s: f64 = (0..BINS).map(|b| mags[b] * weights[b * MELS + k]).sum();
            *lm = (s + 1e-6).ln();
        }
        // tf.signal.mfccs_from_log_mel_spectrograms: DCT-II * rsqrt(2 * N).
        for c in 0..COEFFS {
            let s: f64 = (0..MELS)
                .map(|k| {
                    logmel[k]
                        * (std::f64::consts::PI * (k as f64 + 0.5) * c as f64 / MELS as f64).cos()
                })
                .sum();
            out.push((2.0 * s / (2.0 * MELS as f64).sqrt()) as f32);
        }
    }
    out
}

/// KWS model inputs for the first `per_class` clips of each of the 12 classes of the
/// Speech Commands test subset, back to back, with their labels.
pub fn kws_inputs(data: &Path, g: &Graph, per_class: usize) -> Res<(Vec<u8>, Vec<usize>)> {
    let (scale, zp) = input_params(g)?;
    let dir = data.join("speech-commands-v2-test-subset");
    let audio = edgeopt_npy::read(&dir.join("audio_int16_16k.npy")).map_err(|e| e.to_string())?;
    let labels = edgeopt_npy::read(&dir.join("labels.npy")).map_err(|e| e.to_string())?;
    let TensorData::I16(pcm) = &audio.data else {
        return Err("audio is not int16".into());
    };
    let labels: Vec<usize> = labels
        .to_i64_vec()
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let len = audio.shape[1];
    let mut taken = [0usize; 12];
    let (mut out, mut ys) = (Vec::new(), Vec::new());
    for (i, &y) in labels.iter().enumerate() {
        if y >= 12 || taken[y] >= per_class {
            continue;
        }
        taken[y] += 1;
        let feats = kws_features(&pcm[i * len..(i + 1) * len]);
        out.extend(feats.iter().map(|&v| quantize(v, scale, zp) as u8));
        ys.push(y);
    }
    Ok((out, ys))
}
