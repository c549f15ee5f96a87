//! Weight quantizers: symmetric integer grids (int8, int4) with the clipping scale
//! chosen per channel, ternary (TWN thresholding) and binary (XNOR-Net scaling).
//!
//! Channels are slices along axis 0 (output channels of Conv / FullyConnected
//! weights in the IR, depthwise included, see `edgeopt_ir::Layout`).

use super::{Granularity, WeightFormat, WeightSpec};
use crate::{CompressError, Result};
use edgeopt_ir::quant::{self, WeightGrid};

/// Quantized weights: integer codes (one per element, in `[-qmax, qmax]`) and one scale
/// per channel (or one for the whole tensor, or with `block` one per block of that many
/// consecutive elements of each channel, channel-major).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeights {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    /// Group size of group-wise scales (`None`: per channel or per tensor).
    pub block: Option<usize>,
}

impl QuantizedWeights {
    /// The real values the codes stand for.
    pub fn dequantize(&self, channels: usize) -> Vec<f32> {
        let channels = match self.block {
            // Group-wise scales always come with the real channel count.
            Some(_) => channels.max(1),
            None if self.scales.len() == 1 => 1,
            None => channels.max(1),
        };
        let per = (self.codes.len() / channels).max(1);
        let blocks = self.block.map_or(1, |b| per.div_ceil(b.max(1)));
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let s = if self.scales.len() == 1 {
                    self.scales[0]
                } else {
                    let (c, j) = (i / per, i % per);
                    self.scales[c * blocks + self.block.map_or(0, |b| j / b.max(1))]
                };
                q as f32 * s
            })
            .collect()
    }
}

/// Quantizes `w` (axis 0 has `channels` slices) by `spec`.
pub fn quantize(w: &[f32], channels: usize, spec: WeightSpec) -> Result<QuantizedWeights> {
    if channels == 0 || !w.len().is_multiple_of(channels) {
        return Err(CompressError::Invalid(format!(
            "{} weights do not split into {channels} channels",
            w.len()
        )));
    }
    let per = w.len() / channels;
    let (groups, block): (Vec<&[f32]>, Option<usize>) = match spec.granularity {
        Granularity::Channel => (w.chunks(per).collect(), None),
        Granularity::Tensor => (vec![w], None),
        Granularity::Group(0) => {
            return Err(CompressError::Invalid("group size must be > 0".into()))
        }
        // A channel no longer than one group is simply per channel.
        Granularity::Group(n) if n >= per => (w.chunks(per).collect(), None),
        // Blocks never straddle two channels: each channel is cut on its own.
        Granularity::Group(n) => (w.chunks(per).flat_map(|c| c.chunks(n)).collect(), Some(n)),
    };
    let mut codes = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(groups.len());
    for g in groups {
        let (s, q) = quantize_group(g, spec.format)?;
        scales.push(s);
        codes.extend(q);
    }
    Ok(QuantizedWeights {
        codes,
        scales,
        block,
    })
}

/// [`quantize`], or with given `scales` (one per channel, or one for the tensor) when
/// the plan fixes them (QAT's learned steps, `QuantPlan::weight_scales`): codes
/// `clamp(round(w / s), -qmax, qmax)`. Only int8 and int4 take explicit scales.
pub fn quantize_planned(
    w: &[f32],
    channels: usize,
    spec: WeightSpec,
    scales: Option<&[f32]>,
) -> Result<QuantizedWeights> {
    let Some(scales) = scales else {
        return quantize(w, channels, spec);
    };
    let qmax = match spec.format {
        WeightFormat::Int8 | WeightFormat::Int4 => spec.format.qmax().unwrap_or(127),
        f => {
            return Err(CompressError::Invalid(format!(
                "explicit weight scales are for int8/int4 weights, not {f:?}"
            )))
        }
    };
    let groups = match spec.granularity {
        Granularity::Channel => channels,
        Granularity::Tensor => 1,
        Granularity::Group(n) => {
            return Err(CompressError::Unsupported(format!(
                "explicit (learned) weight scales are per channel or per tensor, not group:{n}"
            )))
        }
    };
    if channels == 0 || !w.len().is_multiple_of(channels) || scales.len() != groups {
        return Err(CompressError::Invalid(format!(
            "{} weights, {channels} channels: {} explicit scales for {groups} groups",
            w.len(),
            scales.len()
        )));
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(CompressError::Invalid(
            "weights contain NaN or infinity".into(),
        ));
    }
    if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(CompressError::Invalid(
            "explicit weight scales must be finite and > 0".into(),
        ));
    }
    let per = w.len() / groups;
    let mut codes = Vec::with_capacity(w.len());
    for (g, &s) in w.chunks(per.max(1)).zip(scales) {
        codes.extend(round_codes(g, s, qmax));
    }
    Ok(QuantizedWeights {
        codes,
        scales: scales.to_vec(),
        block: None,
    })
}

fn round_codes(g: &[f32], s: f32, qmax: i32) -> Vec<i8> {
    // qmax <= 127 for every format here, so the codes fit.
    quant::round_codes(g, s, qmax).map(|c| c as i8).collect()
}

/// One block on its format's grid (the math is `edgeopt_ir::quant`, shared with QAT's
/// fake quantizers).
fn quantize_group(g: &[f32], format: WeightFormat) -> Result<(f32, Vec<i8>)> {
    if g.iter().any(|v| !v.is_finite()) {
        return Err(CompressError::Invalid(
            "weights contain NaN or infinity".into(),
        ));
    }
    let grid = match format {
        WeightFormat::Int8 => WeightGrid::Int { qmax: 127 },
        WeightFormat::Int4 => WeightGrid::IntClipped { qmax: 7 },
        WeightFormat::Ternary => WeightGrid::Ternary,
        WeightFormat::Binary => WeightGrid::Binary,
        WeightFormat::Fp16 | WeightFormat::Float => {
            return Err(CompressError::Invalid(format!(
                "{format:?} weights are not an integer format"
            )))
        }
    };
    let (s, q) = quant::quantize_block(g, grid);
    Ok((s, q.into_iter().map(|c| c as i8).collect()))
}

/// Bytes of a weight tensor of `n` elements in `format` (ternary packs four per byte).
pub fn weight_bytes(n: usize, format: WeightFormat) -> usize {
    (n * format.bits() as usize).div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(format: WeightFormat) -> WeightSpec {
        WeightSpec {
            format,
            granularity: Granularity::Channel,
        }
    }

    #[test]
    fn int8_is_symmetric_per_channel() {
        let w = vec![0.5, -1.0, 0.25, 2.0, -0.5, 1.0];
        let q = quantize(&w, 2, spec(WeightFormat::Int8)).unwrap();
        assert_eq!(q.scales, vec![1.0 / 127.0, 2.0 / 127.0]);
        assert_eq!(q.codes, vec![64, -127, 32, 127, -32, 64]);
    }

    #[test]
    fn ternary_and_binary_codes() {
        let w = vec![0.9, -0.8, 0.05, -0.02, 1.1, -1.0];
        let t = quantize(&w, 1, spec(WeightFormat::Ternary)).unwrap();
        assert_eq!(t.codes, vec![1, -1, 0, 0, 1, -1]);
        assert!((t.scales[0] - 0.95).abs() < 1e-6);
        let b = quantize(&w, 1, spec(WeightFormat::Binary)).unwrap();
        assert_eq!(b.codes, vec![1, -1, 1, -1, 1, -1]);
    }

    #[test]
    fn int4_error_not_worse_than_plain_max_scaling() {
        let w: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let q = quantize(&w, 1, spec(WeightFormat::Int4)).unwrap();
        assert!(q.codes.iter().all(|&c| (-7..=7).contains(&c)));
        let absmax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let plain = round_codes(&w, absmax / 7.0, 7);
        let sq_err = |w: &[f32], q: &[i8], s: f32| -> f64 {
            w.iter()
                .zip(q)
                .map(|(&v, &c)| ((v - c as f32 * s) as f64).powi(2))
                .sum()
        };
        assert!(sq_err(&w, &q.codes, q.scales[0]) <= sq_err(&w, &plain, absmax / 7.0));
    }

    #[test]
    fn group_scales_are_per_block_of_each_channel() {
        // 2 channels of 10 weights, groups of 4: blocks 4 + 4 + 2 per channel.
        let w: Vec<f32> = (0..20)
            .map(|i| (i as f32 - 9.5) * if i % 10 < 4 { 0.1 } else { 1.0 })
            .collect();
        let g = WeightSpec {
            format: WeightFormat::Int4,
            granularity: Granularity::Group(4),
        };
        let q = quantize(&w, 2, g).unwrap();
        assert_eq!((q.scales.len(), q.block), (6, Some(4)));
        // Each block's scale follows its own magnitude: the small first block of a
        // channel gets a smaller step than its per-channel scale would be.
        let pc = quantize(&w, 2, spec(WeightFormat::Int4)).unwrap();
        assert!(q.scales[0] < pc.scales[0] && q.scales[3] < pc.scales[1]);
        let (dg, dc) = (q.dequantize(2), pc.dequantize(2));
        let err = |d: &[f32]| w.iter().zip(d).map(|(a, b)| (a - b).powi(2)).sum::<f32>();
        assert!(err(&dg) < err(&dc));
        // A group as long as the channel is per channel.
        let whole = quantize(
            &w,
            2,
            WeightSpec {
                granularity: Granularity::Group(10),
                ..g
            },
        )
        .unwrap();
        assert_eq!(whole, pc);
        assert!(quantize(
            &w,
            2,
            WeightSpec {
                granularity: Granularity::Group(0),
                ..g
            }
        )
        .is_err());
    }
    #[test]
    fn explicit_scales_round_and_clamp() {
        let w = vec![0.26, -0.74, 2.0, 0.1, -0.05, 0.0];
        let q = quantize_planned(&w, 2, spec(WeightFormat::Int4), Some(&[0.25, 0.05])).unwrap();
        // 2.0 / 0.25 = 8 clamps to 7; -0.05 / 0.05 = -1.
        assert_eq!(q.codes, vec![1, -3, 7, 2, -1, 0]);
        assert_eq!(q.scales, vec![0.25, 0.05]);
        // Without scales: the format's own rule.
        assert_eq!(
            quantize_planned(&w, 2, spec(WeightFormat::Int8), None).unwrap(),
            quantize(&w, 2, spec(WeightFormat::Int8)).unwrap()
        );
        for (scales, format) in [
            (&[0.25][..], WeightFormat::Int4),
            (&[0.25, 0.0][..], WeightFormat::Int4),
            (&[0.25, f32::NAN][..], WeightFormat::Int8),
            (&[0.25, 0.05][..], WeightFormat::Ternary),
        ] {
            assert!(quantize_planned(&w, 2, spec(format), Some(scales)).is_err());
        }
    }
}
