//! Hook points the compression work uses without touching any op's lowering.
//!
//! - **frozen parameters**: excluded from gradients and updates ([`Hooks::freeze`]).
//! - **masks** (pruning): a 0/1 tensor per parameter; the forward pass uses
//!   `w * mask` (so masked weights get zero gradient) and the optimizer re-applies the
//!   mask after each update, so pruned weights stay exactly zero.
//! - **fake-quant** on weights (per parameter) and activations (per value), with a
//!   straight-through estimator: `x + (q(x) - x).detach()`.
//! - **learned step sizes** (LSQ, Esser et al. 2020) for symmetric integer weights: the
//!   step is a trainable parameter of its own ([`Hooks::learn_step`]).
//! - **extra loss terms**: any [`LossTerm`] added to the task loss (regularization,
//!   distillation on features, sparsity penalties).
//! - **activation taps**: named values returned from every forward pass (distillation,
//!   activation-based pruning, statistics).

use crate::dyn_tensor::{DynTensor, Result};
use crate::TrainError;
use burn::tensor::Tensor;
use edgeopt_ir::quant;
use std::collections::{BTreeMap, BTreeSet};

/// Fake quantization of a tensor to a `bits`-bit integer grid.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuant {
    pub bits: u32,
    /// Symmetric (zero point 0, range ±max|x|), as TFLite int8 weights; otherwise
    /// asymmetric (min..max, with 0 exactly representable), as int8 activations.
    pub symmetric: bool,
    /// One scale per slice along this axis (per-channel weights); `None` = per tensor.
    pub channel_axis: Option<usize>,
    /// Fixed real range `(min, max)`; `None` = observed: the current tensor's range for
    /// weights, an exponential moving average of batch ranges for activations.
    pub range: Option<(f32, f32)>,
    /// Weights only: quantize on this exact grid, computed on the host with the same
    /// arithmetic as the integer graph's weight quantizer ([`quantize_weights`]);
    /// `bits` and `symmetric` are then ignored. `None` = the `bits`-bit grid above.
    pub grid: Option<WeightGrid>,
    /// With `grid`: one scale per block of this many consecutive elements of a channel
    /// (in storage order); `None` = one scale per channel (or per tensor).
    pub group: Option<usize>,
}

/// Weight grids for quantization-aware training: the grids PTQ writes the integer
/// graph with (one definition, `edgeopt_ir::quant`), so the integer graph reproduces
/// QAT's weights exactly.
pub use edgeopt_ir::quant::WeightGrid;

/// Quantizes `data` (shape `shape`) onto `grid` and returns the dequantized values.
/// `axis` = the output-channel axis (one scale per channel; `None` = one per tensor);
/// `group` splits each channel's elements, in storage order, into blocks of that many
/// consecutive elements with their own scale (the last block may be shorter).
///
/// Rounding is `f32::round` (half away from zero), as TFLite's converter. The result
/// is a fixed point of the quantizer: quantizing it again gives it back (the largest
/// magnitude of an int block lands exactly on `qmax`, so its max-abs scale, and the
/// first candidate of the clipping search, is the grid's own; a ternary or binary block's
/// nonzero magnitudes all equal `a`), so weights written back on this grid are
/// reproduced exactly by any max-abs, TWN or mean-abs weight quantizer.
pub fn quantize_weights(
    data: &[f32],
    shape: &[usize],
    grid: WeightGrid,
    axis: Option<usize>,
    group: Option<usize>,
) -> Result<Vec<f32>> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(TrainError::Config(format!(
            "weight quantizer: {} values for shape {shape:?}",
            data.len()
        )));
    }
    if let WeightGrid::Int { qmax } | WeightGrid::IntClipped { qmax } = grid {
        if !(1..=32767).contains(&qmax) {
            return Err(TrainError::Config(format!(
                "weight quantizer: qmax {qmax} not in 1..=32767"
            )));
        }
    }
    if group == Some(0) {
        return Err(TrainError::Config("weight quantizer: group size 0".into()));
    }
    let (outer, ch, inner) = match axis {
        Some(a) if a < shape.len() => (
            shape[..a].iter().product::<usize>(),
            shape[a],
            shape[a + 1..].iter().product::<usize>(),
        ),
        Some(a) => {
            return Err(TrainError::Config(format!(
                "weight quantizer: axis {a} out of range for {shape:?}"
            )))
        }
        None => (1, 1, n),
    };
    let mut out = vec![0f32; n];
    let mut idx: Vec<usize> = Vec::with_capacity(outer * inner);
    let mut block: Vec<f32> = Vec::new();
    for c in 0..ch {
        idx.clear();
        for o in 0..outer {
            let base = (o * ch + c) * inner;
            idx.extend(base..base + inner);
        }
        let g = group.unwrap_or(idx.len().max(1));
        for chunk in idx.chunks(g) {
            block.clear();
            block.extend(chunk.iter().map(|&i| data[i]));
            quantize_block(&mut block, grid);
            for (&i, &q) in chunk.iter().zip(&block) {
                out[i] = q;
            }
        }
    }
    Ok(out)
}

/// Quantizes one block that shares a scale, in place: the dequantized values of
/// `edgeopt_ir::quant::quantize_block`, the quantizer PTQ writes the integer graph
/// with. A block with NaN or infinity (diverged training) becomes zeros.
fn quantize_block(w: &mut [f32], grid: WeightGrid) {
    if w.iter().any(|v| !v.is_finite()) {
        w.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let (s, codes) = quant::quantize_block(w, grid);
    for (v, c) in w.iter_mut().zip(codes) {
        *v = c as f32 * s;
    }
}

/// TFLite's asymmetric activation parameters on the signed `bits`-bit grid:
/// `(scale, zero_point, qmin, qmax)`. The range is widened to contain 0 and the zero
/// point is nudged (rounded, clamped) so that real 0 is exact: `edgeopt_ir::quant`'s
/// arithmetic, which `edgeopt_compress::quant::activation_params` also calls, so fake-quant during training uses exactly the integer graph's parameters.
pub fn asymmetric_params(range: (f32, f32), bits: u32) -> (f32, f32, f32, f32) {
    let qmin = -(1i64 << (bits - 1));
    let qmax = (1i64 << (bits - 1)) - 1;
    let (scale, zp) = quant::activation_params(range, qmin, qmax);
    (scale, zp as f32, qmin as f32, qmax as f32)
}

impl FakeQuant {
    /// TFLite-style int8 weights: symmetric, per output channel (axis 0).
    pub fn int8_weights() -> Self {
        FakeQuant {
            bits: 8,
            symmetric: true,
            channel_axis: Some(0),
            range: None,
            grid: None,
            group: None,
        }
    }
    /// TFLite-style int8 activations: asymmetric, per tensor, observed range.
    pub fn int8_activations() -> Self {
        FakeQuant {
            bits: 8,
            symmetric: false,
            channel_axis: None,
            range: None,
            grid: None,
            group: None,
        }
    }

    /// Weights on an exact [`WeightGrid`], one scale per slice along `channel_axis`
    /// (or per tensor), optionally per `group` of consecutive elements.
    pub fn weights(grid: WeightGrid, channel_axis: Option<usize>, group: Option<usize>) -> Self {
        FakeQuant {
            bits: 8,
            symmetric: true,
            channel_axis,
            range: None,
            grid: Some(grid),
            group,
        }
    }

    fn levels(&self) -> Result<(f32, f32)> {
        if !(2..=16).contains(&self.bits) {
            return Err(TrainError::Config(format!(
                "fake-quant bits {} not in 2..=16",
                self.bits
            )));
        }
        let n = (1u32 << self.bits) as f32;
        Ok(if self.symmetric {
            // Narrow range [-(2^(b-1)-1), 2^(b-1)-1] as TFLite weights.
            (-(n / 2.0 - 1.0), n / 2.0 - 1.0)
        } else {
            (0.0, n - 1.0)
        })
    }

    /// Applies fake quantization with the straight-through estimator. `observed` is the
    /// range to use for asymmetric per-tensor quantization when `range` is `None`.
    pub fn apply(&self, x: DynTensor, observed: Option<(f32, f32)>) -> Result<DynTensor> {
        let dims = x.dims();
        if let Some(grid) = self.grid {
            // Exact weight grid: computed on the host (weights are small next to the
            // activations), detached, then the STE as below.
            let v = x.clone().detach().to_vec()?;
            let q = quantize_weights(&v, &dims, grid, self.channel_axis, self.group)?;
            let q = DynTensor::from_vec(q, &dims, &x.device())?;
            return x.clone().add(q.sub(x)?.detach());
        }
        let (qmin, qmax) = self.levels()?;
        // Scale (and zero point) computed on detached values: no gradient flows
        // through the range, as in TF's and PyTorch's fake-quant with STE.
        let xd = x.clone().detach();
        let (scale, zp): (DynTensor, DynTensor) = match (self.channel_axis, self.symmetric) {
            (Some(axis), true) => {
                if axis >= dims.len() {
                    return Err(TrainError::Config(format!(
                        "fake-quant axis {axis} out of range for {dims:?}"
                    )));
                }
                // max |x| over every axis but `axis`, kept broadcastable.
                let mut m = xd.clone().abs();
                for a in 0..dims.len() {
                    if a != axis {
                        m = m.max_dim(a);
                    }
                }
                let s = m.clamp(Some(1e-8), None).mul_scalar(1.0 / qmax);
                let z = s.clone().mul_scalar(0.0);
                (s, z)
            }
            (None, true) => {
                let amax = match self.range {
                    Some((lo, hi)) => lo.abs().max(hi.abs()),
                    None => {
                        let v = xd.clone().abs().reshape(&[dims.iter().product()])?;
                        v.max_dim(0).to_vec()?[0]
                    }
                };
                let s = (amax.max(1e-8)) / qmax;
                (scalar(s, &x)?, scalar(0.0, &x)?)
            }
            (_, false) => {
                if self.channel_axis.is_some() {
                    return Err(TrainError::Config(
                        "asymmetric fake-quant is per tensor only".into(),
                    ));
                }
                let (lo, hi) = match self.range.or(observed) {
                    Some(r) => r,
                    None => range_of(&xd)?,
                };
                // TFLite's parameters on the signed grid (the range widened to
                // contain 0 so that zero padding is exact, the zero point nudged).
                // The unsigned [0, 2^b - 1] grid is the same grid shifted by
                // 2^(b-1); the signed one shares its arithmetic with the integer graph.
                let (s, z, lo_q, hi_q) = asymmetric_params((lo, hi), self.bits);
                let q = xd
                    .div(scalar(s, &x)?)?
                    .round()
                    .add_scalar(z)
                    .clamp(Some(lo_q), Some(hi_q))
                    .add_scalar(-z)
                    .mul_scalar(s);
                return x.clone().add(q.sub(x)?.detach());
            }
        };
        // q = (clamp(round(x / s) + z, qmin, qmax) - z) * s
        let q = xd
            .div(scale.clone())?
            .round()
            .add(zp.clone())?
            .clamp(Some(qmin), Some(qmax))
            .sub(zp)?
            .mul(scale)?;
        // STE: forward value q, gradient of identity.
        x.clone().add(q.sub(x)?.detach())
    }
}

/// LSQ weight quantization (Esser et al. 2020, "Learned Step Size Quantization"):
/// `w_q = clamp(round(w / s), -qmax, qmax) * s`, rounding with the STE, where the step
/// `s = init * u` is learned through `u` (a trainable parameter, one element per
/// output channel, shaped to broadcast against the weight: size 1 on every axis but
/// the channel axis). The gradient reaching `s` is LSQ's: `round(w/s) - w/s` inside
/// the grid, `±qmax` where clipped, scaled by `grad_scale` (LSQ uses
/// `1 / sqrt(elements per channel * qmax)` so the step learns at the weights' pace).
/// The weight gets the identity gradient inside the grid and none where clipped.
///
/// Storing `u` relative to the initial step (rather than `s` itself) makes an update
/// of the optimizer a relative change of the step whatever the channel's magnitude
/// (Adam's update size is about the learning rate, independent of the gradient's scale).
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedStep {
    /// Name of the parameter holding `u` (see [`crate::Model::add_aux_param`]).
    pub param: String,
    /// The initial step per element of `u` (same shape as `u`).
    pub init: edgeopt_ir::Tensor,
    pub qmax: i32,
    pub grad_scale: f32,
}

impl LearnedStep {
    /// The quantized weight for weight `w` and step multiplier `u` (both possibly
    /// autodiff tensors).
    pub fn apply(&self, w: DynTensor, u: DynTensor) -> Result<DynTensor> {
        // On the weight's device (the autodiff decorator while training).
        let init = DynTensor::from_ir(&self.init, &w.device())?;
        let s = u.mul(init)?;
        // Gradient scaling without changing the value: s*g + (s - s*g).detach().
        let g = self.grad_scale;
        let sg = s.clone().mul_scalar(g);
        let s = sg.clone().add(s.sub(sg)?.detach())?;
        let q = self.qmax as f32;
        let x = w.div(s.clone())?.clamp(Some(-q), Some(q));
        let r = x.clone().add(x.clone().round().sub(x)?.detach())?;
        r.mul(s)
    }

    /// The step per channel for multiplier values `u` (plain values).
    pub fn steps(&self, u: &[f32]) -> Result<Vec<f32>> {
        let init = self.init.to_f32_vec();
        if init.len() != u.len() {
            return Err(TrainError::Config(format!(
                "learned step '{}': {} multipliers for {} channels",
                self.param,
                u.len(),
                init.len()
            )));
        }
        Ok(init.iter().zip(u).map(|(a, b)| a * b).collect())
    }
}

fn scalar(v: f32, like: &DynTensor) -> Result<DynTensor> {
    let d = DynTensor::from_vec(vec![v], &[1], &like.device())?;
    d.lift(like.rank())
}

/// (min, max) of a tensor.
pub fn range_of(x: &DynTensor) -> Result<(f32, f32)> {
    let n = x.numel();
    let flat = x.clone().detach().reshape(&[n])?;
    let lo = flat.clone().min_dim(0).to_vec()?[0];
    let hi = flat.max_dim(0).to_vec()?[0];
    Ok((lo, hi))
}

/// What an extra loss term sees after a forward pass.
pub struct LossCtx<'a> {
    /// Effective parameters (after masks and fake-quant) by parameter name.
    pub params: &'a BTreeMap<String, DynTensor>,
    /// Tapped activations by value name.
    pub taps: &'a BTreeMap<String, DynTensor>,
    /// The model's training outputs (logits for classifiers).
    pub outputs: &'a [DynTensor],
}

/// An extra term added to the task loss (must be differentiable through `ctx`).
pub trait LossTerm: Send {
    fn name(&self) -> &str;
    /// A one-element tensor on the forward pass's device.
    fn compute(&self, ctx: &LossCtx) -> Result<Tensor<1>>;
}

/// `weight * sum(|w|)` over the named parameters (L1 sparsity, pruning-friendly).
pub struct L1Penalty {
    pub params: Vec<String>,
    pub weight: f32,
}

impl LossTerm for L1Penalty {
    fn name(&self) -> &str {
        "l1"
    }
    fn compute(&self, ctx: &LossCtx) -> Result<Tensor<1>> {
        let mut total: Option<Tensor<1>> = None;
        for p in &self.params {
            let t = ctx
                .params
                .get(p)
                .ok_or_else(|| TrainError::Config(format!("L1 penalty: no parameter '{p}'")))?;
            let s = t.clone().abs().sum();
            total = Some(match total {
                Some(a) => a + s,
                None => s,
            });
        }
        total
            .map(|t| t.mul_scalar(self.weight))
            .ok_or_else(|| TrainError::Config("L1 penalty over no parameters".into()))
    }
}

/// All hooks of a model. Parameter keys are parameter (constant value) names; value
/// keys are IR value names.
#[derive(Default)]
pub struct Hooks {
    pub frozen: BTreeSet<String>,
    /// 0/1 masks, same shape as the parameter.
    pub masks: BTreeMap<String, edgeopt_ir::Tensor>,
    pub weight_quant: BTreeMap<String, FakeQuant>,
    pub act_quant: BTreeMap<String, FakeQuant>,
    /// LSQ weights by weight parameter name (takes the place of `weight_quant`).
    pub learned_steps: BTreeMap<String, LearnedStep>,
    pub taps: BTreeSet<String>,
    pub extra_losses: Vec<Box<dyn LossTerm>>,
}

impl Hooks {
    pub fn freeze(&mut self, param: impl Into<String>) -> &mut Self {
        self.frozen.insert(param.into());
        self
    }
    pub fn mask(&mut self, param: impl Into<String>, mask: edgeopt_ir::Tensor) -> &mut Self {
        self.masks.insert(param.into(), mask);
        self
    }
    pub fn quantize_weight(&mut self, param: impl Into<String>, fq: FakeQuant) -> &mut Self {
        self.weight_quant.insert(param.into(), fq);
        self
    }
    pub fn quantize_activation(&mut self, value: impl Into<String>, fq: FakeQuant) -> &mut Self {
        self.act_quant.insert(value.into(), fq);
        self
    }
    pub fn learn_step(&mut self, param: impl Into<String>, step: LearnedStep) -> &mut Self {
        self.learned_steps.insert(param.into(), step);
        self
    }
    pub fn tap(&mut self, value: impl Into<String>) -> &mut Self {
        self.taps.insert(value.into());
        self
    }
    pub fn add_loss(&mut self, term: Box<dyn LossTerm>) -> &mut Self {
        self.extra_losses.push(term);
        self
    }
}
