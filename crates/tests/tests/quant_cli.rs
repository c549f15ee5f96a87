//! `edgeopt quantize` (the library function behind the command): ResNet-8 .tflite
//! calibrated on 100 of the MLPerf calibration images, written as .tflite and .onnx
//! with a JSON report; the written .tflite imports back and gives the same outputs as
//! the in-memory integer graph; bad options are clear errors.

use edgeopt_cli::eval::{prepare, EvalConfig};
use edgeopt_cli::quantize::{quantize_command, QuantizeArgs, WeightsArg};
use edgeopt_testkit as tk;
use std::path::PathBuf;

const IC: &str = "mlperf-tiny/benchmark/training/image_classification";

fn args(data: &std::path::Path, out: Option<PathBuf>) -> QuantizeArgs {
    QuantizeArgs {
        calib_names: Some(data.join("cifar10/test_filenames.txt")),
        calib_select: Some(data.join(format!("{IC}/calibration_samples.txt"))),
        calib_limit: Some(100),
        report: true,
        output: out,
        ..QuantizeArgs::new(
            data.join(format!("{IC}/trained_models/pretrainedResnet.tflite")),
            data.join("cifar10/test_x.npy"),
        )
    }
}

#[test]
fn quantize_writes_tflite_onnx_and_report() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("quant_cli");
    let out = dir.join("r8_int8.tflite");
    let s = quantize_command(&args(&data, Some(out.clone()))).unwrap();
    assert_eq!(s.calibration_samples, 100);
    assert_eq!(s.weight_bytes, s.int8_weight_bytes);
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r8_int8.report.json")).unwrap())
            .unwrap();
    let layers = rep["layers"].as_array().unwrap();
    assert!(layers.len() >= 10);
    // Every conv reports a weight SQNR well above the int8 noise floor of ~40 dB.
    for l in layers.iter().filter(|l| l["op"] == "Conv") {
        assert!(l["weight_sqnr_db"].as_f64().unwrap() > 35.0, "{l}");
    }
    // The written model runs and matches a fresh in-memory quantization (same options).
    let g = edgeopt_cli::load_model(&out).unwrap();
    let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap();
    let gin =
        edgeopt_cli::load_model(&data.join(format!("{IC}/trained_models/pretrainedResnet.tflite")))
            .unwrap();
    let samples = edgeopt_cli::quantize::load_calibration(&args(&data, None), &gin).unwrap();
    let r =
        edgeopt_compress::quant::ptq::run(&gin, &samples, &args(&data, None).options().unwrap())
            .unwrap();
    for i in [0usize, 4321, 9999] {
        let xi = prepare(&g, &x, i..i + 1, &EvalConfig::default()).unwrap();
        let a = edgeopt_runtime::run(&g, std::slice::from_ref(&xi)).unwrap();
        let b = edgeopt_runtime::run(&r.quantized, &[xi]).unwrap();
        assert_eq!(a[0].to_f32_vec(), b[0].to_f32_vec(), "sample {i}");
    }
    // ONNX (QDQ) output is written too.
    let onnx = dir.join("r8_int8.onnx");
    let mut a = args(&data, Some(onnx.clone()));
    a.report = false;
    quantize_command(&a).unwrap();
    assert!(std::fs::metadata(&onnx).unwrap().len() > 10_000);
}

#[test]
fn quantize_rejects_bad_options_clearly() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("quant_cli_err");
    let mut a = args(&data, Some(dir.join("x.tflite")));
    a.granularity = "group:32".into();
    let e = quantize_command(&a).unwrap_err().to_string();
    assert!(e.contains("group"), "{e}");
    let mut a = args(&data, Some(dir.join("x.bin")));
    a.report = false;
    let e = quantize_command(&a).unwrap_err().to_string();
    assert!(e.contains(".onnx or .tflite"), "{e}");
    let mut a = args(&data, Some(dir.join("x.tflite")));
    a.weights = WeightsArg::Int4;
    a.budget = Some(1000);
    let e = quantize_command(&a).unwrap_err().to_string();
    assert!(e.contains("--budget"), "{e}");
    let mut a = args(&data, Some(dir.join("x.tflite")));
    a.calib_select = Some(data.join("cifar10/PROVENANCE.md"));
    let e = quantize_command(&a).unwrap_err().to_string();
    assert!(e.contains("not in the names list"), "{e}");
}
