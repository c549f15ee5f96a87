//! Fitting the instruction model: per kernel and per path (DSP / portable), the
//! non-negative least-squares fit of executed instructions per layer (qemu `-icount`,
//! per-layer SysTick readings of a `-DEDGEOPT_PROFILE` build) on the layer's features.
//!
//! The measurements and the constants are data (`crates/search/data/`); the program that
//! measures is `crates/tests/tests/cost_fit.rs` (ignored test), which calls [`fit`].

use crate::features::{Feature, Kernel, LayerFeatures};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which kernels the C was built with: `EO_NO_DSP` undefined (SMLAD) or defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelPath {
    Dsp,
    Portable,
}

impl KernelPath {
    pub fn of(dsp: bool) -> KernelPath {
        if dsp {
            KernelPath::Dsp
        } else {
            KernelPath::Portable
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Dsp => "dsp",
            KernelPath::Portable => "portable",
        }
    }
}

/// One layer as measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasuredLayer {
    pub features: LayerFeatures,
    /// Instructions per inference (layer ticks summed over the samples x instructions
    /// per tick / samples), hook included.
    pub instructions: f64,
}

/// One model on one path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeasurement {
    pub model: String,
    /// `fit` (its layers fit the constants) or `check` (held out).
    pub set: String,
    pub path: KernelPath,
    pub samples: u64,
    /// Instructions per inference of the plain build (no profiling hook): what the
    /// model predicts.
    pub instructions: f64,
    /// Sum of the per-layer counts of the profiling build.
    pub profiled_instructions: f64,
    pub layers: Vec<MeasuredLayer>,
}

/// Everything one run of the fitting program measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurements {
    pub core: String,
    pub qemu_machine: String,
    pub date: String,
    pub host_cpu: String,
    pub command: String,
    pub toolchain: String,
    pub models: Vec<ModelMeasurement>,
}

/// Constants of one path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PathConstants {
    /// Instructions the profiling hook adds per layer (profiled sum - plain total, per
    /// layer, mean over the fitted models): subtracted from every prediction.
    pub hook_per_layer: f64,
    /// Instructions per unit of each feature, per kernel.
    pub kernels: BTreeMap<Kernel, BTreeMap<Feature, f64>>,
    /// Layers each kernel was fitted on.
    pub layers_fitted: BTreeMap<Kernel, usize>,
}

/// The instruction model of one core.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Constants {
    pub core: String,
    pub qemu_machine: String,
    /// Models whose layers the constants were fitted on.
    pub fitted_on: Vec<String>,
    /// Models measured but held out (checked only).
    pub held_out: Vec<String>,
    pub measured: String,
    pub paths: BTreeMap<KernelPath, PathConstants>,
}

/// Non-negative least squares by cyclic coordinate descent on the normal equations
/// (the problems here have at most 6 unknowns). Columns are scaled to unit norm first.
pub fn nnls(a: &[Vec<f64>], y: &[f64], w: &[f64]) -> Vec<f64> {
    let n = a.first().map_or(0, |r| r.len());
    let mut scale = vec![0.0; n];
    for (r, wi) in a.iter().zip(w) {
        for j in 0..n {
            scale[j] += (r[j] * wi).powi(2);
        }
    }
    for s in &mut scale {
        *s = if *s > 0.0 { s.sqrt() } else { 1.0 };
    }
    let mut g = vec![vec![0.0; n]; n];
    let mut b = vec![0.0; n];
    for ((r, &yi), &wi) in a.iter().zip(y).zip(w) {
        for j in 0..n {
            let aj = r[j] * wi / scale[j];
            b[j] += aj * yi * wi;
            for k in 0..n {
                g[j][k] += aj * r[k] * wi / scale[k];
            }
        }
    }
    let mut x = vec![0.0; n];
    for _ in 0..20000 {
        let mut moved = 0.0f64;
        for j in 0..n {
            if g[j][j] <= 0.0 {
                continue;
            }
            let grad: f64 = (0..n).map(|k| g[j][k] * x[k]).sum::<f64>() - b[j];
            let nx = (x[j] - grad / g[j][j]).max(0.0);
            moved = moved.max((nx - x[j]).abs());
            x[j] = nx;
        }
        if moved < 1e-12 {
            break;
        }
    }
    x.iter().zip(&scale).map(|(v, s)| v / s).collect()
}

/// Fits the constants of every path on the models of set `fit`.
pub fn fit(m: &Measurements) -> Constants {
    let mut paths = BTreeMap::new();
    for path in [KernelPath::Dsp, KernelPath::Portable] {
        let models: Vec<&ModelMeasurement> = m
            .models
            .iter()
            .filter(|x| x.path == path && x.set == "fit")
            .collect();
        let mut pc = PathConstants::default();
        let hooks: Vec<f64> = models
            .iter()
            .filter(|x| !x.layers.is_empty())
            .map(|x| (x.profiled_instructions - x.instructions) / x.layers.len() as f64)
            .collect();
        pc.hook_per_layer = if hooks.is_empty() {
            0.0
        } else {
            hooks.iter().sum::<f64>() / hooks.len() as f64
        };
        for kernel in Kernel::ALL {
            let feats = kernel.features();
            let rows: Vec<&MeasuredLayer> = models
                .iter()
                .flat_map(|x| &x.layers)
                .filter(|l| l.features.kernel == kernel)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let a: Vec<Vec<f64>> = rows
                .iter()
                .map(|l| feats.iter().map(|&f| l.features.count(f)).collect())
                .collect();
            let y: Vec<f64> = rows.iter().map(|l| l.instructions).collect();
            // Weights 1/sqrt(instructions): between an absolute fit (which leaves the
            // small layers of the small models far off: the first fit, with 1/y
            // weights, was within 0.2% on the conv totals but the many small layers
            // pulled the per-element kernels 35% low on the big ones) and a relative
            // one.
            let w: Vec<f64> = y.iter().map(|v| 1.0 / v.max(100.0).sqrt()).collect();
            let x = nnls(&a, &y, &w);
            pc.kernels
                .insert(kernel, feats.iter().copied().zip(x).collect());
            pc.layers_fitted.insert(kernel, rows.len());
        }
        paths.insert(path, pc);
    }
    let names = |set: &str| {
        let mut v: Vec<String> = m
            .models
            .iter()
            .filter(|x| x.set == set)
            .map(|x| x.model.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    Constants {
        core: m.core.clone(),
        qemu_machine: m.qemu_machine.clone(),
        fitted_on: names("fit"),
        held_out: names("check"),
        measured: format!("{} ({}; {})", m.date, m.command, m.toolchain),
        paths,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnls_recovers_exact_and_clamps() {
        // y = 3 a + 5 b, exactly.
        let a = vec![
            vec![1.0, 2.0],
            vec![2.0, 1.0],
            vec![3.0, 7.0],
            vec![1.0, 0.0],
        ];
        let y: Vec<f64> = a.iter().map(|r| 3.0 * r[0] + 5.0 * r[1]).collect();
        let x = nnls(&a, &y, &[1.0; 4]);
        assert!(
            (x[0] - 3.0).abs() < 1e-6 && (x[1] - 5.0).abs() < 1e-6,
            "{x:?}"
        );
        // y = 4 a - 1 b: the negative coefficient is clamped to 0.
        let y: Vec<f64> = a.iter().map(|r| 4.0 * r[0] - r[1]).collect();
        let x = nnls(&a, &y, &[1.0; 4]);
        assert_eq!(x[1], 0.0, "{x:?}");
        assert!(x[0] > 0.0);
    }
}
