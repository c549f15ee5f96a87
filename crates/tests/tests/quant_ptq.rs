//! Post-training quantization of the MLPerf Tiny ResNet-8 (fp32 .onnx from tf2onnx and
//! .tflite) calibrated on the 500 MLPerf calibration images (matched by file name to
//! the class-sorted CIFAR-10 test set), evaluated on all 10,000 test images.
//!
//! The bar: the reference int8 model (`pretrainedResnet_quant.tflite`, TFLite
//! converter PTQ) scores 86.97% (mlperf-tiny/PROVENANCE.md); edgeopt's int8 PTQ must
//! reach 87.0%. Also checked: `prepare` (layout conversion, fusion) keeps the float
//! outputs, and leaves no Transpose in the tf2onnx graph.

use edgeopt_cli::eval::{evaluate, prepare as prep_input, EvalConfig};
use edgeopt_cli::quantize::{calibration_samples, select_rows};
use edgeopt_compress::quant::ptq::{run, PtqOptions};
use edgeopt_compress::quant::{prepare, CalibMethod};
use edgeopt_ir::{Layout, Op, Tensor};
use edgeopt_testkit as tk;
use std::path::Path;

const IC: &str = "mlperf-tiny/benchmark/training/image_classification";
const OX: &str = "mlperf-tiny/onnx/tf2onnx_from_tflite";

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

struct Cifar {
    x: Tensor,
    y: Tensor,
    calib_rows: Vec<usize>,
}

fn cifar(data: &Path) -> Cifar {
    let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap();
    let y = edgeopt_npy::read(&data.join("cifar10/test_y.npy")).unwrap();
    let names = lines(&data.join("cifar10/test_filenames.txt"));
    let select = lines(&data.join(format!("{IC}/calibration_samples.txt")));
    let calib_rows = select_rows(&names, &select).unwrap();
    assert_eq!(calib_rows.len(), 500);
    Cifar { x, y, calib_rows }
}

#[test]
fn prepare_keeps_float_outputs_and_removes_transposes() {
    let Some(data) = tk::data_dir() else { return };
    let c = cifar(&data);
    for rel in [
        format!("{OX}/pretrainedResnet.onnx"),
        format!("{IC}/trained_models/pretrainedResnet.tflite"),
    ] {
        let g = edgeopt_cli::load_model(&data.join(&rel)).unwrap();
        let p = prepare(&g).unwrap();
        for n in &p.nodes {
            assert!(
                !matches!(n.op, Op::Transpose { .. }),
                "{rel}: Transpose left: {}",
                n.name
            );
            assert!(
                !matches!(n.op, Op::Unary(_) | Op::MatMul | Op::Gemm { .. }),
                "{rel}: {} not fused",
                n.name
            );
            if let Op::Conv(a) = &n.op {
                assert_eq!(a.layout, Layout::Nhwc, "{rel}: {}", n.name);
            }
        }
        let mut worst = 0f32;
        for i in (0..10000).step_by(500) {
            let x = prep_input(&g, &c.x, i..i + 1, &EvalConfig::default()).unwrap();
            let a = edgeopt_runtime::run(&g, std::slice::from_ref(&x)).unwrap();
            let b = edgeopt_runtime::run(&p, &[x]).unwrap();
            for (u, v) in a[0].as_f32().unwrap().iter().zip(b[0].as_f32().unwrap()) {
                worst = worst.max((u - v).abs());
            }
        }
        eprintln!("{rel}: prepared vs original max |diff| of softmax outputs {worst:e}");
        assert!(worst < 1e-4, "{rel}: {worst}");
    }
}

fn ptq_accuracy(rel: &str, opts: &PtqOptions, limit: Option<usize>) -> f64 {
    let data = tk::data_dir().expect("checked by caller");
    let c = cifar(&data);
    let g = edgeopt_cli::load_model(&data.join(rel)).unwrap();
    let samples = calibration_samples(&g, &c.x, &c.calib_rows, &EvalConfig::default()).unwrap();
    let r = run(&g, &samples, opts).unwrap();
    let cfg = EvalConfig {
        limit,
        ..EvalConfig::default()
    };
    let e = evaluate(&r.quantized, rel, &c.x, &c.y, &cfg).unwrap();
    eprintln!(
        "{rel} {:?} bias_correction={}: int8 PTQ top-1 {:.2}% ({} / {})",
        opts.method, opts.bias_correction, e.accuracy, e.correct, e.samples
    );
    e.accuracy
}

#[test]
fn resnet8_onnx_int8_ptq_at_least_87_0() {
    if tk::data_dir().is_none() {
        return;
    }
    let acc = ptq_accuracy(
        &format!("{OX}/pretrainedResnet.onnx"),
        &PtqOptions {
            method: CalibMethod::Percentile(99.999),
            ..PtqOptions::default()
        },
        None,
    );
    assert!(acc >= 87.0, "{acc:.2}% < 87.0%");
}

#[test]
fn resnet8_tflite_int8_ptq_at_least_87_0() {
    if tk::data_dir().is_none() {
        return;
    }
    let acc = ptq_accuracy(
        &format!("{IC}/trained_models/pretrainedResnet.tflite"),
        &PtqOptions {
            method: CalibMethod::Percentile(99.999),
            ..PtqOptions::default()
        },
        None,
    );
    assert!(acc >= 87.0, "{acc:.2}% < 87.0%");
}
