//! Hook points the compression work uses without touching any op's lowering.
//!
//! - **frozen parameters**: excluded from gradients and updates ([`Hooks::freeze`]).
//! - **masks** (pruning): a 0/1 tensor per parameter; the forward pass uses
//!   `w * mask` (so masked weights get zero gradient) and the optimizer re-applies the
//!   mask after each update, so pruned weights stay exactly zero.
//! - **fake-quant** on weights (per parameter) and activations (per value), with a
//!   straight-through estimator: `x + (q(x) - x).detach()`.
//! - **extra loss terms**: any [`LossTerm`] added to the task loss (regularization,
//!   distillation on features, sparsity penalties).
//! - **activation taps**: named values returned from every forward pass (distillation,
//!   activation-based pruning, statistics).

use crate::dyn_tensor::{DynTensor, Result};
use crate::TrainError;
use burn::tensor::Tensor;
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
}

impl FakeQuant {
    /// TFLite-style int8 weights: symmetric, per output channel (axis 0).
    pub fn int8_weights() -> Self {
        FakeQuant {
            bits: 8,
            symmetric: true,
            channel_axis: Some(0),
            range: None,
        }
    }
    /// TFLite-style int8 activations: asymmetric, per tensor, observed range.
    pub fn int8_activations() -> Self {
        FakeQuant {
            bits: 8,
            symmetric: false,
            channel_axis: None,
            range: None,
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
        let (qmin, qmax) = self.levels()?;
        let dims = x.dims();
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
                // The range must contain 0 so that zero padding is exact.
                let lo = lo.min(0.0);
                let hi = hi.max(0.0).max(lo + 1e-8);
                let s = (hi - lo) / (qmax - qmin);
                let z = (qmin - lo / s).round().clamp(qmin, qmax);
                (scalar(s, &x)?, scalar(z, &x)?)
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
    pub fn tap(&mut self, value: impl Into<String>) -> &mut Self {
        self.taps.insert(value.into());
        self
    }
    pub fn add_loss(&mut self, term: Box<dyn LossTerm>) -> &mut Self {
        self.extra_losses.push(term);
        self
    }
}
