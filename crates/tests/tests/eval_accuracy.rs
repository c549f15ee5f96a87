//! `edgeopt eval` (the library function behind the command) on the full CIFAR-10
//! test set (10,000 images) reproduces the accuracies LiteRT / onnxruntime give, as
//! recorded in mlperf-tiny/PROVENANCE.md and cifar10/PROVENANCE.md:
//! pretrainedResnet.tflite 87.19%, pretrainedResnet.onnx 87.19%,
//! pretrainedResnet_quant.tflite 86.97% (the ONNX int8 conversion: 87.07%).
//!
//! Inputs as the models expect them (PROVENANCE): the fp32 models take raw pixels
//! 0..255 as float (`--scale 1`, no mean/std); the int8 model takes pixel-128, which
//! is what quantizing the float pixel with its input parameters (scale 1, zp -128)
//! gives. Both are `EvalConfig::default()`.

use edgeopt_cli::eval::{evaluate, EvalConfig};
use edgeopt_testkit as tk;

const IC: &str = "mlperf-tiny/benchmark/training/image_classification/trained_models";
const OX: &str = "mlperf-tiny/onnx/tf2onnx_from_tflite";

/// `expected_correct` of 10,000, i.e. the PROVENANCE accuracy to 0.01 pt.
fn check(rel: &str, expected_correct: usize) {
    let Some(data) = tk::data_dir() else { return };
    let g = edgeopt_cli::load_model(&data.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e:#}"));
    let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap();
    let y = edgeopt_npy::read(&data.join("cifar10/test_y.npy")).unwrap();
    assert_eq!(x.shape, vec![10000, 32, 32, 3]);
    let r = evaluate(&g, rel, &x, &y, &EvalConfig::default())
        .unwrap_or_else(|e| panic!("{rel}: {e:#}"));
    eprintln!(
        "{rel}: {:.2}% ({} / {}) in {:.1} s on {} threads",
        r.accuracy, r.correct, r.samples, r.seconds, r.threads
    );
    assert_eq!(r.samples, 10000);
    assert_eq!(
        r.correct,
        expected_correct,
        "{rel}: {:.2}% instead of {:.2}%",
        r.accuracy,
        expected_correct as f64 / 100.0
    );
}

#[test]
fn resnet8_fp32_tflite_87_19() {
    check(&format!("{IC}/pretrainedResnet.tflite"), 8719);
}

#[test]
fn resnet8_fp32_onnx_87_19() {
    check(&format!("{OX}/pretrainedResnet.onnx"), 8719);
}

#[test]
fn resnet8_int8_tflite_86_97() {
    check(&format!("{IC}/pretrainedResnet_quant.tflite"), 8697);
}

#[test]
fn resnet8_int8_onnx_87_07() {
    check(&format!("{OX}/pretrainedResnet_quant.onnx"), 8707);
}
