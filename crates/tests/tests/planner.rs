//! The static memory plan on every MLPerf Tiny model (.tflite and .onnx, fp32 and
//! int8): the plan is valid (no two simultaneously-live buffers overlap, every slot
//! inside the arena) and running the whole graph inside one buffer of exactly the
//! planned size gives the plain executor's outputs bit for bit, on real inputs
//! (CIFAR-10 images, the AD log-mel sample; seeded random in-range MFCC features for
//! KWS, whose dataset is not in ../shared/data as features).

use edgeopt_cli::eval::{prepare, EvalConfig};
use edgeopt_ir::{Graph, Tensor, TensorData};
use edgeopt_runtime::planner::{self, Sharing};
use edgeopt_runtime::{arena, run};
use edgeopt_testkit as tk;
use rand::{Rng, SeedableRng};
use std::path::Path;

const TM: &str = "mlperf-tiny/benchmark/training";
const OX: &str = "mlperf-tiny/onnx/tf2onnx_from_tflite";

fn cifar(data: &Path) -> Tensor {
    edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap()
}

fn ad_slices(data: &Path) -> Tensor {
    let p = data.join(
        "mlperf-tiny/benchmark/reference_submissions/anomaly_detection/datasets/dcase01/\
         normal_id_01_00000000_hist_librosa.bin",
    );
    let bytes = std::fs::read(p).unwrap();
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(v.len(), 40 * 640, "AD sample is float32 (40, 640)");
    Tensor::from_f32(vec![40, 640], v).unwrap()
}

/// Seeded values over the KWS int8 input's real range (scale 0.584703, zp 83 per the
/// PROVENANCE: about [-123, 25]).
fn kws_features(n: usize) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let v = (0..n * 49 * 10)
        .map(|_| rng.gen_range(-123.0f32..25.0))
        .collect();
    Tensor::from_f32(vec![n, 49, 10, 1], v).unwrap()
}

fn bits(t: &Tensor) -> (Vec<usize>, Vec<u64>) {
    let v = (0..t.len())
        .map(|i| match &t.data {
            TensorData::F32(v) => v[i].to_bits() as u64,
            d => d.get_i64(i) as u64,
        })
        .collect();
    (t.shape.clone(), v)
}

/// Plans `g` for `input`'s shapes, checks the plan, and compares the arena run with the
/// plain run.
fn check_run(name: &str, g: &Graph, input: Tensor) -> planner::MemoryPlan {
    let plan = planner::plan(g, std::slice::from_ref(&input.shape))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    plan.check()
        .unwrap_or_else(|e| panic!("{name}: invalid plan: {e}"));
    assert!(
        plan.arena_bytes <= plan.naive_bytes,
        "{name}: arena above the naive sum"
    );
    let plain = run(g, std::slice::from_ref(&input)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let in_arena =
        arena::run_with_plan(g, &plan, &[input], edgeopt_runtime::ExecOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(plain.len(), in_arena.len());
    for (a, b) in plain.iter().zip(&in_arena) {
        assert_eq!(
            bits(a),
            bits(b),
            "{name}: arena run differs from the plain run"
        );
    }
    plan
}

fn check_model(rel: &str, samples: impl Fn(&Path) -> Tensor, onnx: bool) {
    let Some(data) = tk::data_dir() else { return };
    let g = edgeopt_cli::load_model(&data.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e:#}"));
    let x = samples(&data);
    let cfg = EvalConfig::default();
    let n = x.shape[0];
    // Four samples spread over the set, batch 1 each.
    for k in 0..4 {
        let i = k * n / 4;
        let input = prepare(&g, &x, i..i + 1, &cfg).unwrap_or_else(|e| panic!("{rel}: {e:#}"));
        let plan = check_run(rel, &g, input);
        if k == 0 {
            let in_place = plan
                .shared_with
                .iter()
                .flatten()
                .filter(|s| s.1 == Sharing::InPlace)
                .count();
            let aliased = plan
                .shared_with
                .iter()
                .flatten()
                .filter(|s| s.1 == Sharing::Alias)
                .count();
            eprintln!(
                "{rel}: arena {} B, naive {} B ({:.1}x), {} buffers, {in_place} in place, {aliased} aliased",
                plan.arena_bytes,
                plan.naive_bytes,
                plan.naive_bytes as f64 / plan.arena_bytes.max(1) as f64,
                plan.buffers.len()
            );
            assert!(
                plan.arena_bytes < plan.naive_bytes,
                "{rel}: no reuse at all"
            );
        }
    }
    // The ONNX conversions have a dynamic batch: plan and run a batch of 3 at once.
    if onnx {
        let input = prepare(&g, &x, 0..3, &cfg).unwrap_or_else(|e| panic!("{rel}: {e:#}"));
        check_run(&format!("{rel} (batch 3)"), &g, input);
    }
}

#[test]
fn resnet8_fp32_tflite() {
    check_model(
        &format!("{TM}/image_classification/trained_models/pretrainedResnet.tflite"),
        cifar,
        false,
    );
}

#[test]
fn resnet8_int8_tflite() {
    check_model(
        &format!("{TM}/image_classification/trained_models/pretrainedResnet_quant.tflite"),
        cifar,
        false,
    );
}

#[test]
fn resnet8_fp32_onnx() {
    check_model(&format!("{OX}/pretrainedResnet.onnx"), cifar, true);
}

#[test]
fn resnet8_int8_onnx() {
    check_model(&format!("{OX}/pretrainedResnet_quant.onnx"), cifar, true);
}

#[test]
fn kws_int8_tflite() {
    check_model(
        &format!("{TM}/keyword_spotting/trained_models/kws_ref_model.tflite"),
        |_| kws_features(8),
        false,
    );
}

#[test]
fn kws_hybrid_tflite() {
    check_model(
        &format!("{TM}/keyword_spotting/trained_models/kws_ref_model_float32.tflite"),
        |_| kws_features(8),
        false,
    );
}

#[test]
fn kws_int8_onnx() {
    check_model(
        &format!("{OX}/kws_ref_model.onnx"),
        |_| kws_features(8),
        true,
    );
}

#[test]
fn kws_float_onnx() {
    check_model(
        &format!("{OX}/kws_ref_model_float32.onnx"),
        |_| kws_features(8),
        true,
    );
}

#[test]
fn ad_fp32_tflite() {
    check_model(
        &format!("{TM}/anomaly_detection/trained_models/ad01_fp32.tflite"),
        ad_slices,
        false,
    );
}

#[test]
fn ad_int8_tflite() {
    check_model(
        &format!("{TM}/anomaly_detection/trained_models/ad01_int8.tflite"),
        ad_slices,
        false,
    );
}

#[test]
fn ad_fp32_onnx() {
    check_model(&format!("{OX}/ad01_fp32.onnx"), ad_slices, true);
}

#[test]
fn ad_int8_onnx() {
    check_model(&format!("{OX}/ad01_int8.onnx"), ad_slices, true);
}
