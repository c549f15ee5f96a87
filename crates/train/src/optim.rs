//! Optimizers (SGD with momentum, AdamW), learning-rate schedules (constant, step,
//! cosine, each with linear warm-up), weight decay and gradient clipping.
//!
//! Updates run on the plain (non-autodiff) tensors the model stores, so the tape never
//! grows across steps. Weight decay applies to conv/dense weights only (not biases,
//! not BatchNorm), the usual practice. Masks are re-applied after every update.

use crate::dyn_tensor::{DynTensor, Result};
use crate::model::{Model, ParamRole};
use crate::TrainError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// PyTorch semantics: `v = mu v + g (+ wd w)`, `w -= lr v` (Nesterov: `w -= lr (g + mu v)`).
    Sgd { momentum: f32, nesterov: bool },
    /// Loshchilov & Hutter: Adam with decoupled weight decay `w -= lr wd w`.
    AdamW { beta1: f32, beta2: f32, eps: f32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ScheduleKind {
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        every: usize,
        gamma: f32,
    },
    /// Cosine from the base rate to `min_lr` over the run (after warm-up).
    Cosine {
        min_lr: f32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f32,
    /// Linear warm-up from 0 over this many steps.
    pub warmup_steps: usize,
}

impl Schedule {
    /// Learning rate at optimizer step `step` (0-based) of `total` steps, with
    /// `per_epoch` steps per epoch.
    pub fn lr(&self, step: usize, total: usize, per_epoch: usize) -> f32 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        match self.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Step { every, gamma } => {
                let epoch = step / per_epoch.max(1);
                self.base_lr * gamma.powi((epoch / every.max(1)) as i32)
            }
            ScheduleKind::Cosine { min_lr } => {
                let span = total.saturating_sub(self.warmup_steps).max(1);
                let t = (step - self.warmup_steps) as f32 / span as f32;
                min_lr
                    + 0.5
                        * (self.base_lr - min_lr)
                        * (1.0 + (std::f32::consts::PI * t.min(1.0)).cos())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    pub weight_decay: f32,
    /// Rescale all gradients so their global L2 norm is at most this.
    pub clip_norm: Option<f32>,
    /// Clamp each gradient element to `[-v, v]`.
    pub clip_value: Option<f32>,
}

/// Optimizer state: one or two moment tensors per parameter.
pub struct Optimizer {
    pub cfg: OptimConfig,
    pub m1: Vec<Option<DynTensor>>,
    pub m2: Vec<Option<DynTensor>>,
    pub steps: u64,
}

impl Optimizer {
    pub fn new(cfg: OptimConfig, n_params: usize) -> Result<Self> {
        match cfg.kind {
            OptimizerKind::Sgd { momentum, .. } if !(0.0..1.0).contains(&momentum) => {
                return Err(TrainError::Config(format!(
                    "momentum {momentum} not in [0, 1)"
                )));
            }
            OptimizerKind::AdamW { beta1, beta2, eps }
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) || eps <= 0.0 =>
            {
                return Err(TrainError::Config(
                    "AdamW betas must be in [0, 1), eps > 0".into(),
                ));
            }
            _ => {}
        }
        if cfg.weight_decay < 0.0 || !cfg.weight_decay.is_finite() {
            return Err(TrainError::Config("weight decay must be >= 0".into()));
        }
        Ok(Optimizer {
            cfg,
            m1: vec![None; n_params],
            m2: vec![None; n_params],
            steps: 0,
        })
    }

    /// Applies one update with learning rate `lr`. `grads[i]` is the gradient of
    /// parameter `i` (plain device), `None` for frozen parameters and buffers.
    /// Returns the global gradient norm before clipping.
    pub fn step(
        &mut self,
        model: &mut Model,
        grads: Vec<Option<DynTensor>>,
        lr: f32,
    ) -> Result<f32> {
        if grads.len() != model.params.len() {
            return Err(TrainError::Config("gradient count mismatch".into()));
        }
        self.steps += 1;
        let mut sq = 0.0f64;
        for g in grads.iter().flatten() {
            let s: f32 = g.clone().mul(g.clone())?.sum().into_scalar::<f32>();
            sq += s as f64;
        }
        let norm = sq.sqrt() as f32;
        if !norm.is_finite() {
            return Err(TrainError::Config(
                "gradient is not finite (diverged; lower the learning rate)".into(),
            ));
        }
        let scale = match self.cfg.clip_norm {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        let t = self.steps as i32;
        for (i, g) in grads.into_iter().enumerate() {
            let Some(mut g) = g else { continue };
            if scale != 1.0 {
                g = g.mul_scalar(scale);
            }
            if let Some(v) = self.cfg.clip_value {
                g = g.clamp(Some(-v), Some(v));
            }
            let decay = matches!(model.params[i].role, ParamRole::Weight { .. })
                && self.cfg.weight_decay > 0.0;
            let w = model.param(i).clone();
            let new_w = match self.cfg.kind {
                OptimizerKind::Sgd { momentum, nesterov } => {
                    if decay {
                        g = g.add(w.clone().mul_scalar(self.cfg.weight_decay))?;
                    }
                    let d = if momentum > 0.0 {
                        let v = match self.m1[i].take() {
                            Some(v) => v.mul_scalar(momentum).add(g.clone())?,
                            None => g.clone(),
                        };
                        self.m1[i] = Some(v.clone());
                        if nesterov {
                            g.add(v.mul_scalar(momentum))?
                        } else {
                            v
                        }
                    } else {
                        g
                    };
                    w.sub(d.mul_scalar(lr))?
                }
                OptimizerKind::AdamW { beta1, beta2, eps } => {
                    let m = match self.m1[i].take() {
                        Some(m) => m.mul_scalar(beta1).add(g.clone().mul_scalar(1.0 - beta1))?,
                        None => g.clone().mul_scalar(1.0 - beta1),
                    };
                    let g2 = g.clone().mul(g)?;
                    let v = match self.m2[i].take() {
                        Some(v) => v.mul_scalar(beta2).add(g2.mul_scalar(1.0 - beta2))?,
                        None => g2.mul_scalar(1.0 - beta2),
                    };
                    self.m1[i] = Some(m.clone());
                    self.m2[i] = Some(v.clone());
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    let upd = m
                        .mul_scalar(1.0 / bc1)
                        .div(v.mul_scalar(1.0 / bc2).sqrt().add_scalar(eps))?;
                    let w = if decay {
                        w.clone().sub(w.mul_scalar(lr * self.cfg.weight_decay))?
                    } else {
                        w
                    };
                    w.sub(upd.mul_scalar(lr))?
                }
            };
            model.set_param(i, new_w)?;
        }
        model.apply_masks()?;
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let s = Schedule {
            kind: ScheduleKind::Cosine { min_lr: 0.0 },
            base_lr: 1.0,
            warmup_steps: 10,
        };
        // Linear warm-up reaches the base rate at the end of warm-up.
        assert!((s.lr(0, 110, 10) - 0.1).abs() < 1e-6);
        assert!((s.lr(9, 110, 10) - 1.0).abs() < 1e-6);
        // Cosine: base at the start, half-way at the middle, ~0 at the end.
        assert!((s.lr(10, 110, 10) - 1.0).abs() < 1e-6);
        assert!((s.lr(60, 110, 10) - 0.5).abs() < 1e-6);
        assert!(s.lr(109, 110, 10) < 1e-3);
        let st = Schedule {
            kind: ScheduleKind::Step {
                every: 2,
                gamma: 0.1,
            },
            base_lr: 1.0,
            warmup_steps: 0,
        };
        // 10 steps per epoch: epochs 0-1 at 1.0, 2-3 at 0.1, 4 at 0.01.
        assert_eq!(st.lr(19, 100, 10), 1.0);
        assert!((st.lr(20, 100, 10) - 0.1).abs() < 1e-7);
        assert!((st.lr(45, 100, 10) - 0.01).abs() < 1e-8);
    }
}
