//! Quantization math with one home: the weight quantizers (integer grids, ternary,
//! binary) and the asymmetric activation parameters. Post-training quantization
//! (compress) and quantization-aware training's fake quantizers (train) both call
//! these, so the integer graph holds exactly the values training saw.

/// Smallest usable scale: an all-zero or denormal-tiny block still needs a positive
/// scale.
pub const MIN_SCALE: f32 = 1e-12;

/// The grid of one block of weights that shares a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightGrid {
    /// Symmetric integers in `[-qmax, qmax]`, scale `max|w| / qmax`.
    Int { qmax: i32 },
    /// Symmetric integers with the clipping chosen to minimize the squared error
    /// (a grid search over 51 clippings of the max, 100% down to 50%): few levels
    /// (int4's 15) cannot cover outliers.
    IntClipped { qmax: i32 },
    /// `{-a, 0, +a}` (TWN): threshold `0.7·mean|w|`, `a` = mean magnitude of the
    /// weights above it.
    Ternary,
    /// `{-a, +a}` (XNOR-Net): `a = mean|w|`, the L2-optimal scale for `sign(w)`;
    /// `w >= 0` maps to `+a`.
    Binary,
}

/// Codes `clamp(round(w / s), -qmax, qmax)`; rounding is `f32::round` (half away from
/// zero), as TFLite's converter.
pub fn round_codes(w: &[f32], s: f32, qmax: i32) -> impl Iterator<Item = i32> + '_ {
    let q = qmax as f32;
    w.iter().map(move |&v| (v / s).round().clamp(-q, q) as i32)
}

fn sq_err(w: &[f32], s: f32, qmax: i32) -> f64 {
    w.iter()
        .zip(round_codes(w, s, qmax))
        .map(|(&v, c)| {
            let d = (v - c as f32 * s) as f64;
            d * d
        })
        .sum()
}

/// The scale and codes of one block of finite weights on `grid` (the caller rejects
/// NaN and infinity). An all-zero block gets scale 1 and zero codes.
///
/// The dequantized block `code · scale` is a fixed point of the quantizer: its largest
/// magnitude lands exactly on `qmax` (so its max-abs scale, and the first clipping
/// candidate, is the grid's own) and a ternary or binary block's nonzero magnitudes all
/// equal `a`. Sums run in f64: blocks can hold hundreds of thousands of weights.
pub fn quantize_block(w: &[f32], grid: WeightGrid) -> (f32, Vec<i32>) {
    let absmax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    if absmax == 0.0 {
        return (1.0, vec![0; w.len()]);
    }
    let mean_abs = || w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len() as f64;
    match grid {
        WeightGrid::Int { qmax } => {
            let s = (absmax / qmax as f32).max(MIN_SCALE);
            (s, round_codes(w, s, qmax).collect())
        }
        WeightGrid::IntClipped { qmax } => {
            let mut best = (f64::INFINITY, absmax / qmax as f32);
            for k in 0..=50 {
                let s = (absmax * (1.0 - 0.01 * k as f32) / qmax as f32).max(MIN_SCALE);
                let e = sq_err(w, s, qmax);
                if e < best.0 {
                    best = (e, s);
                }
            }
            (best.1, round_codes(w, best.1, qmax).collect())
        }
        WeightGrid::Ternary => {
            let t = (0.7 * mean_abs()) as f32;
            let (mut sum, mut kept) = (0f64, 0usize);
            for v in w.iter().filter(|v| v.abs() > t) {
                sum += v.abs() as f64;
                kept += 1;
            }
            // Nothing above the threshold cannot happen for a nonzero block (its max
            // exceeds 0.7 of its mean); absmax keeps the scale positive regardless.
            let a = if kept == 0 {
                absmax
            } else {
                (sum / kept as f64) as f32
            };
            let codes = w
                .iter()
                .map(|&v| {
                    if v > t {
                        1
                    } else if v < -t {
                        -1
                    } else {
                        0
                    }
                })
                .collect();
            (a.max(MIN_SCALE), codes)
        }
        WeightGrid::Binary => {
            let a = (mean_abs() as f32).max(MIN_SCALE);
            (a, w.iter().map(|&v| if v < 0.0 { -1 } else { 1 }).collect())
        }
    }
}

/// TFLite's asymmetric activation parameters on the grid `[qmin, qmax]`: `(scale,
/// zero_point)`. The range is widened to contain 0 and the zero point is nudged
/// (rounded, clamped) so that real 0 is exact; f32 scale, f64 zero-point rounding.
pub fn activation_params(range: (f32, f32), qmin: i64, qmax: i64) -> (f32, i64) {
    let lo = range.0.min(0.0);
    let hi = range.1.max(0.0);
    // A constant-zero tensor still needs a positive scale.
    let span = (hi - lo).max(f32::MIN_POSITIVE * 1e6);
    let scale = span / (qmax - qmin) as f32;
    let zp = (qmin as f64 - lo as f64 / scale as f64).round() as i64;
    (scale, zp.clamp(qmin, qmax))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dequantized(w: &[f32], grid: WeightGrid) -> Vec<f32> {
        let (s, q) = quantize_block(w, grid);
        q.iter().map(|&c| c as f32 * s).collect()
    }

    #[test]
    fn every_grid_is_a_fixed_point() {
        let w: Vec<f32> = (0..257)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        for grid in [
            WeightGrid::Int { qmax: 127 },
            WeightGrid::IntClipped { qmax: 7 },
            WeightGrid::Ternary,
            WeightGrid::Binary,
        ] {
            let once = dequantized(&w, grid);
            assert_eq!(dequantized(&once, grid), once, "{grid:?}");
        }
    }

    #[test]
    fn zero_block_and_ternary_codes() {
        assert_eq!(
            quantize_block(&[0.0; 4], WeightGrid::Ternary),
            (1.0, vec![0; 4])
        );
        // mean|w| = 0.5, threshold 0.35: 0.1 and -0.2 drop, a = mean(0.9, 0.8) = 0.85.
        let (a, q) = quantize_block(&[0.9, -0.8, 0.1, -0.2], WeightGrid::Ternary);
        assert_eq!(q, vec![1, -1, 0, 0]);
        assert!((a - 0.85).abs() < 1e-6);
    }

    #[test]
    fn activation_params_represent_zero_exactly() {
        for &(lo, hi) in &[(-1.0f32, 3.0f32), (0.0, 6.0), (-2.5, -0.5), (0.3, 0.9)] {
            let (s, zp) = activation_params((lo, hi), -128, 127);
            assert!((-128..=127).contains(&zp));
            assert!(s > 0.0);
        }
    }
}
