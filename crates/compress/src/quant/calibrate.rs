//! **calibrate**: run the prepared float graph on calibration samples and turn each
//! activation's observed values into a real range by one [`CalibMethod`].
//!
//! Two passes over the samples: the first records min/max per value (all min-max
//! needs); the others build a 2048-bin histogram per value over its observed
//! [min, max] from which percentile, entropy (TensorRT's KL method) and MSE choose a
//! clipping range. Samples run in parallel (rayon); statistics are merged in sample
//! order, so the result does not depend on the thread count.

use super::util::run_all;
use super::CalibMethod;
use crate::{CompressError, Result};
use edgeopt_ir::{DType, Graph, Tensor};
use edgeopt_runtime::ExecOptions;
use rayon::prelude::*;
use std::collections::BTreeMap;

pub const BINS: usize = 2048;

/// Per-value statistics over all calibration samples.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Value name → (min, max).
    pub minmax: BTreeMap<String, (f32, f32)>,
    /// Value name → histogram of `BINS` bins over the value's (min, max) (empty when
    /// only min-max was requested).
    pub hist: BTreeMap<String, Vec<f64>>,
    /// Value name → per-channel (last axis) mean, for bias correction.
    pub channel_mean: BTreeMap<String, Vec<f64>>,
    pub samples: usize,
}

/// Which values calibration tracks: graph inputs and f32 outputs of nodes.
fn tracked(g: &Graph) -> Vec<usize> {
    let mut ids: Vec<usize> = g
        .inputs
        .iter()
        .copied()
        .filter(|&i| g.values[i].dtype == DType::F32)
        .collect();
    for n in &g.nodes {
        for &o in &n.outputs {
            if g.values[o].dtype == DType::F32 && !ids.contains(&o) {
                ids.push(o);
            }
        }
    }
    ids
}

/// Runs the samples (each one set of graph inputs) and records statistics;
/// `histograms` enables the second pass.
pub fn observe(g: &Graph, samples: &[Vec<Tensor>], histograms: bool) -> Result<Observed> {
    if samples.is_empty() {
        return Err(CompressError::Invalid(
            "calibration needs at least one sample".into(),
        ));
    }
    let ids = tracked(g);
    // Pass 1: min/max and channel sums.
    type Stats = (Vec<(f32, f32)>, Vec<Vec<f64>>);
    let per_sample: Vec<Result<Stats>> = samples
        .par_iter()
        .map(|s| {
            // A float graph: the options (numerics) do not change its values.
            let vals = run_all(g, s, ExecOptions::default())?;
            let mut mm = Vec::with_capacity(ids.len());
            let mut cm = Vec::with_capacity(ids.len());
            for &id in &ids {
                let t = vals[id].as_ref().ok_or_else(|| {
                    CompressError::Invalid(format!(
                        "value '{}' was not computed",
                        g.values[id].name
                    ))
                })?;
                let v = t.as_f32()?;
                let (lo, hi) = v
                    .iter()
                    .filter(|x| x.is_finite())
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                        (a.min(x), b.max(x))
                    });
                mm.push((lo, hi));
                let c = t.shape.last().copied().unwrap_or(1).max(1);
                let mut sums = vec![0f64; c];
                for (i, &x) in v.iter().enumerate() {
                    sums[i % c] += x as f64;
                }
                let per = (v.len() / c).max(1) as f64;
                cm.push(sums.into_iter().map(|s| s / per).collect());
            }
            Ok((mm, cm))
        })
        .collect();
    let mut minmax = vec![(f32::INFINITY, f32::NEG_INFINITY); ids.len()];
    let mut cmean: Vec<Vec<f64>> = vec![Vec::new(); ids.len()];
    for r in per_sample {
        let (mm, cm) = r?;
        for (k, ((lo, hi), c)) in mm.into_iter().zip(cm).enumerate() {
            minmax[k].0 = minmax[k].0.min(lo);
            minmax[k].1 = minmax[k].1.max(hi);
            if cmean[k].len() != c.len() {
                cmean[k] = vec![0.0; c.len()];
            }
            for (a, b) in cmean[k].iter_mut().zip(c) {
                *a += b / samples.len() as f64;
            }
        }
    }
    for mm in &mut minmax {
        if !mm.0.is_finite() || !mm.1.is_finite() {
            *mm = (0.0, 0.0);
        }
    }
    let mut obs = Observed {
        samples: samples.len(),
        ..Default::default()
    };
    for (k, &id) in ids.iter().enumerate() {
        let name = g.values[id].name.clone();
        obs.minmax.insert(name.clone(), minmax[k]);
        obs.channel_mean.insert(name, std::mem::take(&mut cmean[k]));
    }
    if !histograms {
        return Ok(obs);
    }
    // Pass 2: histograms over the observed ranges.
    let per_sample: Vec<Result<Vec<Vec<f64>>>> = samples
        .par_iter()
        .map(|s| {
            let vals = run_all(g, s, ExecOptions::default())?;
            let mut hs = Vec::with_capacity(ids.len());
            for (k, &id) in ids.iter().enumerate() {
                let v = vals[id].as_ref().expect("computed in pass 1").as_f32()?;
                let (lo, hi) = minmax[k];
                let mut h = vec![0f64; BINS];
                let w = (hi - lo) as f64;
                if w > 0.0 {
                    for &x in v.iter().filter(|x| x.is_finite()) {
                        let b = (((x - lo) as f64 / w) * BINS as f64) as usize;
                        h[b.min(BINS - 1)] += 1.0;
                    }
                } else {
                    h[0] += v.len() as f64;
                }
                hs.push(h);
            }
            Ok(hs)
        })
        .collect();
    let mut hist = vec![vec![0f64; BINS]; ids.len()];
    for r in per_sample {
        for (acc, h) in hist.iter_mut().zip(r?) {
            for (a, b) in acc.iter_mut().zip(h) {
                *a += b;
            }
        }
    }
    for (k, &id) in ids.iter().enumerate() {
        obs.hist
            .insert(g.values[id].name.clone(), std::mem::take(&mut hist[k]));
    }
    Ok(obs)
}

/// The range each value gets under `method`. Ranges always contain 0.
pub fn ranges(
    obs: &Observed,
    method: CalibMethod,
    levels: usize,
) -> Result<BTreeMap<String, (f32, f32)>> {
    let mut out = BTreeMap::new();
    for (name, &(lo, hi)) in &obs.minmax {
        let r = match method {
            CalibMethod::MinMax => (lo, hi),
            _ => {
                let h = obs.hist.get(name).ok_or_else(|| {
                    CompressError::Invalid(format!(
                        "no histogram for '{name}' (observe with histograms)"
                    ))
                })?;
                match method {
                    CalibMethod::Percentile(p) => percentile_range(h, lo, hi, p),
                    CalibMethod::Entropy => entropy_range(h, lo, hi),
                    CalibMethod::Mse => mse_range(h, lo, hi, levels),
                    CalibMethod::MinMax => unreachable!(),
                }
            }
        };
        out.insert(name.clone(), (r.0.min(0.0), r.1.max(0.0)));
    }
    Ok(out)
}

fn bin_center(lo: f32, hi: f32, b: usize) -> f64 {
    lo as f64 + (b as f64 + 0.5) * (hi - lo) as f64 / BINS as f64
}

/// Two-sided percentile: `p` percent of the mass below `hi` and above `lo` (with the
/// lower tail clipped only for tensors that have one).
fn percentile_range(h: &[f64], lo: f32, hi: f32, p: f32) -> (f32, f32) {
    let total: f64 = h.iter().sum();
    if total == 0.0 || hi <= lo {
        return (lo, hi);
    }
    let tail = total * (1.0 - (p as f64 / 100.0).clamp(0.0, 1.0));
    let w = (hi - lo) / BINS as f32;
    let mut acc = 0.0;
    let mut top = BINS;
    while top > 1 && acc + h[top - 1] <= tail {
        acc += h[top - 1];
        top -= 1;
    }
    let mut acc = 0.0;
    let mut bot = 0;
    while bot + 1 < top && acc + h[bot] <= tail {
        acc += h[bot];
        bot += 1;
    }
    let new_hi = lo + top as f32 * w;
    let new_lo = lo + bot as f32 * w;
    // Only shrink the negative side if the tensor has one.
    (
        if lo < 0.0 { new_lo.min(0.0) } else { lo },
        new_hi.max(0.0).min(hi),
    )
}

/// The histogram of |x| (BINS bins over [0, max(|lo|, |hi|)]) folded from the signed one.
fn abs_hist(h: &[f64], lo: f32, hi: f32) -> (Vec<f64>, f32) {
    let m = lo.abs().max(hi.abs());
    let mut a = vec![0f64; BINS];
    if m == 0.0 {
        return (a, 0.0);
    }
    for (b, &c) in h.iter().enumerate() {
        let x = bin_center(lo, hi, b).abs();
        let k = ((x / m as f64) * BINS as f64) as usize;
        a[k.min(BINS - 1)] += c;
    }
    (a, m)
}

/// TensorRT's entropy calibration on |x|: the threshold whose clipped, 128-level
/// quantized distribution has the smallest KL divergence from the observed one.
fn entropy_range(h: &[f64], lo: f32, hi: f32) -> (f32, f32) {
    let (mut a, m) = abs_hist(h, lo, hi);
    if m == 0.0 {
        return (lo, hi);
    }
    // ReLU outputs put a large share of exact zeros in bin 0; zero is represented
    // exactly whatever the threshold, and that spike otherwise dominates the
    // divergence and drives the threshold far too low.
    if lo >= 0.0 {
        a[0] = 0.0;
    }
    // Non-negative tensors use all 256 levels on one side.
    let nq = if lo >= 0.0 { 255 } else { 128 };
    let mut best = (f64::INFINITY, BINS);
    for i in (nq..=BINS).step_by(16) {
        let kl = kl_for_threshold(&a, i, nq);
        if kl < best.0 {
            best = (kl, i);
        }
    }
    let t = best.1 as f32 * m / BINS as f32;
    (lo.max(-t), hi.min(t))
}

fn kl_for_threshold(a: &[f64], i: usize, nq: usize) -> f64 {
    let mut p: Vec<f64> = a[..i].to_vec();
    let outliers: f64 = a[i..].iter().sum();
    p[i - 1] += outliers;
    // Quantize the first i bins into nq levels, then expand back over non-empty bins.
    let mut q = vec![0f64; i];
    let per = i as f64 / nq as f64;
    for j in 0..nq {
        let start = (j as f64 * per) as usize;
        let end = (((j + 1) as f64 * per) as usize).min(i).max(start + 1);
        let sum: f64 = a[start..end].iter().sum();
        let nonzero = a[start..end].iter().filter(|&&c| c > 0.0).count();
        if nonzero > 0 {
            for k in start..end {
                if a[k] > 0.0 {
                    q[k] = sum / nonzero as f64;
                }
            }
        }
    }
    let ps: f64 = p.iter().sum();
    let qs: f64 = q.iter().sum();
    if ps == 0.0 || qs == 0.0 {
        return f64::INFINITY;
    }
    let mut kl = 0.0;
    for k in 0..i {
        if p[k] > 0.0 {
            let pk = p[k] / ps;
            let qk = if q[k] > 0.0 { q[k] / qs } else { 1e-12 };
            kl += pk * (pk / qk).ln();
        }
    }
    kl
}

/// The clipping range (a shrink of the observed one) minimizing the histogram's
/// expected squared error after asymmetric quantization to `levels` levels.
fn mse_range(h: &[f64], lo: f32, hi: f32, levels: usize) -> (f32, f32) {
    if hi <= lo {
        return (lo, hi);
    }
    let lo0 = lo.min(0.0) as f64;
    let hi0 = hi.max(0.0) as f64;
    // The two ends are clipped independently (a ReLU-free tensor may have one long tail).
    let steps: Vec<f64> = (0..=40).map(|k| 1.0 - k as f64 * 0.02).collect();
    let mut best = (f64::INFINITY, (lo, hi));
    for &al in &steps {
        if lo0 == 0.0 && al != 1.0 {
            continue;
        }
        for &ah in &steps {
            let (a, b) = (lo0 * al, hi0 * ah);
            let scale = (b - a) / (levels - 1) as f64;
            if scale <= 0.0 {
                continue;
            }
            let zp = (-a / scale).round();
            let mut err = 0.0;
            for (k, &c) in h.iter().enumerate() {
                if c == 0.0 {
                    continue;
                }
                let x = bin_center(lo, hi, k);
                let q = ((x / scale).round() + zp).clamp(0.0, (levels - 1) as f64);
                let d = x - (q - zp) * scale;
                err += c * d * d;
            }
            if err < best.0 {
                best = (err, (a as f32, b as f32));
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian_hist(lo: f32, hi: f32, outlier: bool) -> Vec<f64> {
        let mut h = vec![0.0; BINS];
        for (b, c) in h.iter_mut().enumerate() {
            let x = bin_center(lo, hi, b);
            *c = (1e6 * (-x * x / 2.0).exp()).floor();
        }
        if outlier {
            h[BINS - 1] += 1.0;
        }
        h
    }

    #[test]
    fn clipping_methods_shrink_outlier_ranges() {
        // N(0,1) observed over [-4, 20] because of one outlier at 20.
        let h = gaussian_hist(-4.0, 20.0, true);
        for (name, r) in [
            ("percentile", percentile_range(&h, -4.0, 20.0, 99.99)),
            ("entropy", entropy_range(&h, -4.0, 20.0)),
            ("mse", mse_range(&h, -4.0, 20.0, 256)),
        ] {
            assert!(r.1 < 10.0, "{name}: {r:?}");
            assert!(r.0 <= 0.0 && r.1 > 1.0, "{name}: {r:?}");
        }
    }
}
