//! `edgeopt bench`: batch-1 latency on a seeded random input.

use anyhow::{anyhow, bail, Context, Result};
use edgeopt_ir::{shape::bind_input_shapes, DType, Graph, Tensor, TensorData};
use edgeopt_runtime::ExecOptions;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub threads: usize,
    pub warmup: usize,
    pub runs: usize,
    pub seed: u64,
    /// Also time every node (a second series of `runs` runs with per-node clocks, so
    /// the end-to-end figures are not inflated by them).
    pub per_layer: bool,
    /// Numerics and kernels of the session.
    pub exec: ExecOptions,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            threads: 1,
            warmup: 3,
            runs: 20,
            seed: 0,
            per_layer: false,
            exec: ExecOptions::default(),
        }
    }
}

/// Mean time of one node over the profiled runs.
#[derive(Debug, Clone, Serialize)]
pub struct LayerTime {
    pub name: String,
    pub op: String,
    pub mean_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub threads: usize,
    pub warmup: usize,
    pub runs: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// With `per_layer`: every node in graph order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerTime>>,
}

/// A random batch-1 input for every graph input, within the range its values take:
/// [0, 1) for floats (a normalised signal), the whole range for integer types.
pub fn random_inputs(graph: &Graph, seed: u64) -> Result<Vec<Tensor>> {
    let shapes = bind_input_shapes(graph, 1).context("cannot bind the input shapes")?;
    let mut rng = StdRng::seed_from_u64(seed);
    graph
        .inputs
        .iter()
        .zip(shapes)
        .map(|(&id, shape)| {
            let n = edgeopt_ir::checked_numel(&shape)?;
            let dtype = graph.values[id].dtype;
            let data = match dtype {
                DType::F32 => TensorData::F32((0..n).map(|_| rng.gen::<f32>()).collect()),
                DType::F16 => TensorData::F16((0..n).map(|_| f16::from_f32(rng.gen())).collect()),
                DType::Bool => TensorData::Bool((0..n).map(|_| rng.gen()).collect()),
                int => {
                    let (lo, hi) = int
                        .int_range()
                        .ok_or_else(|| anyhow!("no value range for {int}"))?;
                    let v: Vec<i64> = (0..n).map(|_| rng.gen_range(lo..=hi)).collect();
                    edgeopt_eval::int_data(int, v)?
                }
            };
            Ok(Tensor::new(shape, data)?)
        })
        .collect()
}

/// Value at fraction `q` of sorted `v` (nearest rank: the smallest value with at least
/// `q` of the samples at or below it).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Middle value of sorted `v` (mean of the two middle ones for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Measures batch-1 latency: `warmup` untimed runs, then `runs` timed ones, on a
/// rayon pool of `threads` threads.
pub fn bench(graph: &Graph, model_name: &str, cfg: &BenchConfig) -> Result<BenchReport> {
    if cfg.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if cfg.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let inputs = random_inputs(graph, cfg.seed)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .context("cannot start the thread pool")?;
    // A prepared session: weights are packed and buffers allocated once, outside the
    // timed runs, as a deployed model would be.
    let mut session = edgeopt_runtime::Session::with_options(graph, cfg.exec);
    let mut times = pool.install(|| -> Result<Vec<f64>> {
        for _ in 0..cfg.warmup {
            session.run_in_place(&inputs).context("inference failed")?;
        }
        // The outputs stay in the session (as in an interpreter's output tensors):
        // the timed span is the inference, not a copy of its results.
        let mut times = Vec::with_capacity(cfg.runs);
        for _ in 0..cfg.runs {
            let t = Instant::now();
            session.run_in_place(&inputs).context("inference failed")?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(times)
    })?;
    let layers = if cfg.per_layer {
        session.set_profiling(true);
        pool.install(|| -> Result<()> {
            for _ in 0..cfg.runs {
                session.run_in_place(&inputs).context("inference failed")?;
            }
            Ok(())
        })?;
        let secs = session.node_times().unwrap_or_default();
        Some(
            graph
                .nodes
                .iter()
                .zip(secs)
                .map(|(n, s)| LayerTime {
                    name: n.name.clone(),
                    op: n.op.name().to_string(),
                    mean_ms: s * 1e3,
                })
                .collect(),
        )
    } else {
        None
    };
    times.sort_by(f64::total_cmp);
    Ok(BenchReport {
        model: model_name.to_string(),
        threads: cfg.threads,
        warmup: cfg.warmup,
        runs: cfg.runs,
        median_ms: median(&times),
        p90_ms: quantile(&times, 0.9),
        mean_ms: times.iter().sum::<f64>() / times.len() as f64,
        min_ms: times[0],
        max_ms: times[times.len() - 1],
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<f64> = (1..=10).map(|x| x as f64).collect();
        assert_eq!(quantile(&v, 0.5), 5.0);
        assert_eq!(median(&v), 5.5);
        assert_eq!(median(&v[..9]), 5.0);
        assert_eq!(quantile(&v, 0.9), 9.0);
        assert_eq!(quantile(&[3.0], 0.9), 3.0);
    }
}
