//! Quantization of float graphs to TFLite-style integer graphs.
//!
//! The flow (each step a function over IR, so the CLI, mixed precision and QAT reuse it):
//! 1. **prepare**: a float graph → an equivalent float graph in the form integer
//!    inference needs: BatchNorm folded into the preceding conv/gemm, activations fused
//!    into their producer, NHWC layout for conv/pool (TFLite semantics, so the integer
//!    kernels, the TFLite exporter and the C code generator see one form).
//! 2. **calibrate**: run the prepared float graph on calibration samples and record
//!    each activation's range ([`QuantPlan::ranges`]) by one [`CalibMethod`].
//! 3. **plan**: choose each weight's [`WeightSpec`] (uniform, or per layer by
//!    sensitivity under a byte budget — mixed precision).
//! 4. **apply**: prepared float graph + [`QuantPlan`] → integer graph: int8/int16
//!    activations with per-tensor asymmetric parameters, weights symmetric per output
//!    channel at the planned bit width, int32 biases with scale = input × weight scale.
//! 5. optionally **QAT**: fine-tune the prepared float graph with fake quantization that
//!    emulates the plan exactly, then apply again.
//!
//! The types below are the contract between those steps.

pub mod apply;
pub mod calibrate;
pub mod edge;
pub mod equalize;
pub mod mixed;
pub mod prepare;
pub mod ptq;
pub mod qat;
pub mod report;
pub mod unroll;
pub mod util;
pub mod weights;

pub use apply::{apply, weight_size, DEFAULT_WEIGHT};
pub use calibrate::{observe, ranges, Observed};
pub use prepare::{prepare, weighted_nodes};

use edgeopt_ir::QuantParams;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How one weight tensor is stored and multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WeightFormat {
    /// Symmetric narrow range [-127, 127].
    Int8,
    /// Symmetric narrow range [-7, 7], stored two per byte in exports.
    Int4,
    /// {-1, 0, +1} × per-channel scale.
    Ternary,
    /// {-1, +1} × per-channel scale.
    Binary,
    /// IEEE half precision, dequantized to f32 at load (TFLite's fp16 scheme).
    Fp16,
    /// Left in f32 (e.g. a layer mixed precision keeps at full precision).
    Float,
}

impl WeightFormat {
    /// Storage bits per weight, for size budgets (ternary packs four per byte).
    pub fn bits(self) -> u32 {
        match self {
            WeightFormat::Int8 => 8,
            WeightFormat::Int4 => 4,
            WeightFormat::Ternary => 2,
            WeightFormat::Binary => 1,
            WeightFormat::Fp16 => 16,
            WeightFormat::Float => 32,
        }
    }

    /// Largest magnitude of the symmetric integer grid (None for float formats).
    pub fn qmax(self) -> Option<i32> {
        match self {
            WeightFormat::Int8 => Some(127),
            WeightFormat::Int4 => Some(7),
            WeightFormat::Ternary | WeightFormat::Binary => Some(1),
            WeightFormat::Fp16 | WeightFormat::Float => None,
        }
    }
}

/// Which elements share one weight scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Granularity {
    Tensor,
    /// One scale per output channel (TFLite's per-axis quantization).
    Channel,
    /// One scale per block of N consecutive input elements within an output channel.
    Group(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightSpec {
    pub format: WeightFormat,
    pub granularity: Granularity,
}

/// The integer type of activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivationFormat {
    /// Asymmetric int8 (TFLite int8 spec).
    Int8,
    /// Symmetric int16 (TFLite 16x8 scheme: int16 activations, int8 weights).
    Int16,
    /// Half-precision float activations (no integer kernels).
    Fp16,
    /// f32 activations (for fp16 weights: TFLite's float16 quantization, weights stored
    /// as f16 and dequantized at load).
    Float,
}

/// How calibration turns observed activations into a range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum CalibMethod {
    /// Observed min and max over all samples.
    MinMax,
    /// Clip to this percentile of |x| (e.g. 99.99) of the observed distribution.
    Percentile(f32),
    /// Minimize the KL divergence between the float and quantized histograms (TensorRT).
    Entropy,
    /// Minimize the mean squared quantization error over the histogram.
    Mse,
}

/// The complete quantization decision for one prepared float graph: enough to build
/// the integer graph, or to emulate it with fake quantization during training.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantPlan {
    /// `None` only while a plan is being built.
    pub activations: Option<ActivationFormat>,
    /// Keyed by the name of the constant weight value (input 1 of Conv /
    /// FullyConnected / Gemm / MatMul) in the prepared graph.
    pub weights: BTreeMap<String, WeightSpec>,
    /// Real range `(min, max)` per activation value name (graph inputs and node
    /// outputs that are quantized). Always contains 0 (see [`activation_params`]).
    pub ranges: BTreeMap<String, (f32, f32)>,
    /// Explicit per-channel (or single per-tensor) scales of symmetric integer weights
    /// (int8/int4), keyed like `weights`: the step sizes QAT learned (LSQ). `apply`
    /// then rounds the weights with these scales instead of choosing its own, so the
    /// integer graph is exactly what training saw. Absent: the quantizer's own rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weight_scales: BTreeMap<String, Vec<f32>>,
}

/// TFLite's asymmetric activation parameters for a real range: the range is widened to
/// contain 0, scale = (max − min) / (qmax − qmin), and the zero point is rounded and
/// clamped so that real 0 is exactly representable ("nudging", as TFLite's converter
/// and TF's FakeQuant do).
pub fn activation_params(range: (f32, f32), qmin: i64, qmax: i64) -> QuantParams {
    let (scale, zp) = edgeopt_ir::quant::activation_params(range, qmin, qmax);
    QuantParams::per_tensor(scale, zp)
}

impl CalibMethod {
    /// Whether the method needs activation histograms (a second calibration pass).
    pub fn needs_histograms(self) -> bool {
        !matches!(self, CalibMethod::MinMax)
    }
}

impl ActivationFormat {
    /// Number of integer levels (for MSE calibration); 256 for float formats.
    pub fn levels(self) -> usize {
        match self {
            ActivationFormat::Int16 => 65536,
            _ => 256,
        }
    }
}

impl QuantPlan {
    /// Every Conv / FullyConnected weight of `prepared` at `spec`, activations `act`,
    /// ranges from calibration.
    pub fn uniform(
        prepared: &edgeopt_ir::Graph,
        spec: WeightSpec,
        act: ActivationFormat,
        ranges: BTreeMap<String, (f32, f32)>,
    ) -> QuantPlan {
        let weights = weighted_nodes(prepared)
            .into_iter()
            .map(|(_, w)| (prepared.values[w].name.clone(), spec))
            .collect();
        QuantPlan {
            activations: Some(act),
            weights,
            ranges,
            weight_scales: BTreeMap::new(),
        }
    }
}

/// Real range `(min, max)` per activation value name.
pub type Ranges = BTreeMap<String, (f32, f32)>;

/// Calibrates `prepared` on `samples` (each one set of graph inputs) by `method`.
pub fn calibrate(
    prepared: &edgeopt_ir::Graph,
    samples: &[Vec<edgeopt_ir::Tensor>],
    method: CalibMethod,
    act: ActivationFormat,
) -> crate::Result<(Ranges, Observed)> {
    let obs = observe(prepared, samples, method.needs_histograms())?;
    Ok((ranges(&obs, method, act.levels())?, obs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_params_represent_zero_exactly() {
        for &(lo, hi) in &[(-1.0f32, 3.0f32), (0.0, 6.0), (-2.5, -0.5), (0.3, 0.9)] {
            let q = activation_params((lo, hi), -128, 127);
            let zp = q.zero_point[0];
            assert!((-128..=127).contains(&zp));
            // Real 0 maps to the zero point exactly.
            let back = (zp - zp) as f32 * q.scale[0];
            assert_eq!(back, 0.0);
            assert!(q.scale[0] > 0.0);
            // The widened range fits within the grid (up to rounding of the zero point).
            let lo_q = (lo.min(0.0) / q.scale[0]).round() as i64 + zp;
            let hi_q = (hi.max(0.0) / q.scale[0]).round() as i64 + zp;
            assert!(lo_q >= -129 && hi_q <= 128, "{lo}..{hi}: {lo_q}..{hi_q}");
        }
    }
}
