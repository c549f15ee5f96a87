//! `inspect` on the MLPerf Tiny ResNet-8 (pretrainedResnet.onnx and .tflite):
//! - params equal the element count of the model's constants and MACs equal an
//!   independent count, both from `scripts/oracle/count_macs.py` (the `onnx` package
//!   with its own shape inference for .onnx, LiteRT's flatbuffer schema for .tflite);
//! - the planned arena is smaller than the naive sum of activations, the plan is
//!   valid, and running inside the arena reproduces the plain executor's outputs bit
//!   for bit on real CIFAR-10 images.

use edgeopt_cli::eval::{prepare, EvalConfig};
use edgeopt_cli::inspect::inspect;
use edgeopt_ir::Tensor;
use edgeopt_runtime::{arena, planner};
use edgeopt_testkit as tk;
use std::path::{Path, PathBuf};

const IC: &str = "mlperf-tiny/benchmark/training/image_classification/trained_models";
const OX: &str = "mlperf-tiny/onnx/tf2onnx_from_tflite";

struct Oracle {
    params: u64,
    macs: u64,
}

fn oracle_count(model: &Path) -> Oracle {
    let out = tk::run_oracle("count_macs.py", &[model]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("oracle prints JSON");
    Oracle {
        params: v["params"].as_u64().expect("params"),
        macs: v["macs"].as_u64().expect("macs"),
    }
}

/// Bit patterns, so that NaN or -0.0 differences would show.
fn bits(t: &Tensor) -> (Vec<usize>, Vec<u64>) {
    let v = (0..t.len())
        .map(|i| match &t.data {
            edgeopt_ir::TensorData::F32(v) => v[i].to_bits() as u64,
            d => d.get_i64(i) as u64,
        })
        .collect();
    (t.shape.clone(), v)
}

fn check(rel: &str) {
    let Some(data) = tk::data_dir() else { return };
    if !tk::oracle_available() {
        return;
    }
    let path: PathBuf = data.join(rel);
    let g = edgeopt_cli::load_model(&path).unwrap_or_else(|e| panic!("{rel}: {e:#}"));
    let report = inspect(&g, rel, 1).unwrap_or_else(|e| panic!("{rel}: {e:#}"));
    let oracle = oracle_count(&path);
    eprintln!(
        "{rel}: params {} (oracle {}), MACs {} (oracle {}), arena {} B vs naive {} B",
        report.totals.params,
        oracle.params,
        report.totals.macs,
        oracle.macs,
        report.memory.peak_arena_bytes,
        report.memory.naive_activation_bytes
    );
    assert_eq!(report.totals.params, oracle.params, "{rel}: params");
    assert_eq!(
        g.param_count() as u64,
        oracle.params,
        "{rel}: graph constants"
    );
    assert_eq!(report.totals.macs, oracle.macs, "{rel}: MACs");
    let m = &report.memory;
    assert!(
        m.peak_arena_bytes < m.naive_activation_bytes,
        "{rel}: arena {} not below the naive sum {}",
        m.peak_arena_bytes,
        m.naive_activation_bytes
    );

    // Real images, every 1000th (the set is class-sorted: one per class), batch 1.
    let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap();
    let plan = planner::plan_for_batch(&g, 1).unwrap();
    plan.check().unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(plan.arena_bytes as u64, m.peak_arena_bytes);
    for i in (0..10).map(|k| k * 1000) {
        let input = prepare(&g, &x, i..i + 1, &EvalConfig::default()).unwrap();
        let plain = edgeopt_runtime::run(&g, std::slice::from_ref(&input)).unwrap();
        let in_arena =
            arena::run_with_plan(&g, &plan, &[input], edgeopt_runtime::ExecOptions::default())
                .unwrap();
        assert_eq!(plain.len(), in_arena.len());
        for (a, b) in plain.iter().zip(&in_arena) {
            assert_eq!(bits(a), bits(b), "{rel}: image {i}: arena run differs");
        }
    }
}

#[test]
fn resnet8_tflite() {
    check(&format!("{IC}/pretrainedResnet.tflite"));
}

#[test]
fn resnet8_onnx() {
    check(&format!("{OX}/pretrainedResnet.onnx"));
}
