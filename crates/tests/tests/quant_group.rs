//! Group-wise (block) int4 weight scales, `edgeopt quantize --granularity group:N`:
//! MLPerf ResNet-8 calibrated on 100 of the MLPerf calibration images.
//!
//! - Every conv and the FC whose channels hold more than 16 weights carry one scale
//!   per block of 16 weights of each output channel (9 layers), and each of those
//!   layers' weight SQNR beats per-channel int4.
//! - The integer graph (edgeopt's block-wise kernel: integer block dot products,
//!   float combination) and the exported ONNX (block-wise DequantizeLinear, opset 21)
//!   agree on the top-1 of 500 test images, both as edgeopt reads the file back and in
//!   onnxruntime: the block layout of the kernel and of the ONNX DequantizeLinear
//!   are the same.
//! - TFLite has no block-wise CONV_2D: a clear error, nothing written.
//! - The same inputs give a byte-identical file.
//!
//! Measured on all 10,000 test images (percentile calibration, 500 images):
//! per-channel int4 74.81%, group:16 75.49% (onnxruntime on the file 75.38%).

use edgeopt_cli::quantize::{quantize_command, QuantizeArgs, WeightsArg};
use edgeopt_ir::Graph;
use edgeopt_testkit as tk;
use edgeopt_tests::cifar;
use std::path::{Path, PathBuf};

const IC: &str = "mlperf-tiny/benchmark/training/image_classification";
const MODEL: &str = "mlperf-tiny/onnx/tf2onnx_from_tflite/pretrainedResnet.onnx";

fn args(data: &Path, granularity: &str, out: PathBuf) -> QuantizeArgs {
    QuantizeArgs {
        calib_names: Some(data.join("cifar10/test_filenames.txt")),
        calib_select: Some(data.join(format!("{IC}/calibration_samples.txt"))),
        calib_limit: Some(100),
        weights: WeightsArg::Int4,
        granularity: granularity.into(),
        report: true,
        output: Some(out),
        ..QuantizeArgs::new(data.join(MODEL), data.join("cifar10/test_x.npy"))
    }
}

fn top1(out: &[f32]) -> Vec<usize> {
    out.chunks(10)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(0, |b, (i, &p)| if p > r[b] { i } else { b })
        })
        .collect()
}

fn weight_sqnr(report: &Path) -> Vec<(String, f64)> {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| {
            Some((
                l["node"].as_str()?.to_string(),
                l["weight_sqnr_db"].as_f64()?,
            ))
        })
        .collect()
}

#[test]
fn group_int4_weights_run_and_export() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("quant_group");
    let grouped = dir.join("r8_g16.onnx");
    quantize_command(&args(&data, "group:16", grouped.clone())).unwrap();
    let channel = dir.join("r8_channel.onnx");
    quantize_command(&args(&data, "channel", channel.clone())).unwrap();

    // Weight SQNR per layer: groups of 16 beat one scale per channel everywhere.
    let g = weight_sqnr(&dir.join("r8_g16.report.json"));
    let c = weight_sqnr(&dir.join("r8_channel.report.json"));
    assert_eq!(g.len(), c.len());
    assert!(g.len() >= 10, "{g:?}");
    let mut better = 0;
    for ((name, sg), (_, sc)) in g.iter().zip(&c) {
        // A channel of at most 16 weights (the 1x1 16->32 shortcut) is one block.
        assert!(sg >= sc, "{name}: group {sg:.2} dB vs channel {sc:.2} dB");
        better += usize::from(sg > sc);
    }
    assert_eq!(better, 9, "{g:?}\n{c:?}");

    // The in-memory integer graph, with its block-wise weights.
    let graph = edgeopt_cli::load_model(&data.join(MODEL)).unwrap();
    let a = args(&data, "group:16", grouped.clone());
    let samples = edgeopt_cli::quantize::load_calibration(&a, &graph).unwrap();
    let r = edgeopt_compress::quant::ptq::run(&graph, &samples, &a.options().unwrap()).unwrap();
    let blocked = block_weights(&r.quantized);
    assert_eq!(blocked, 9, "7 3x3 convs, the 1x1 32->64 conv and the FC");

    let rows = cifar::spread(500);
    let x = cifar::batch(&data, &rows);
    let ours = edgeopt_runtime::run(&r.quantized, std::slice::from_ref(&x)).unwrap();
    let file = edgeopt_cli::load_model(&grouped).unwrap();
    let back = edgeopt_runtime::run(&file, std::slice::from_ref(&x)).unwrap();
    let (p_int, p_back) = (top1(&ours[0].to_f32_vec()), top1(&back[0].to_f32_vec()));
    let same = |a: &[usize], b: &[usize]| a.iter().zip(b).filter(|(x, y)| x == y).count();
    // int4 models have many near-ties: the integer kernel (exact block sums,
    // one rounding) and the QDQ file's float ops (f32 conv, then QuantizeLinear)
    // differ by a step here and there, which flips a few. Measured 485/500 here and
    // 491/500 for per-channel int4; a wrong block layout flips most of them.
    assert!(
        same(&p_int, &p_back) >= 475,
        "{}/500",
        same(&p_int, &p_back)
    );

    if tk::oracle_available() {
        let x_path = dir.join("x.npy");
        edgeopt_npy::write(&x_path, &x).unwrap();
        let out = dir.join("ort");
        std::fs::create_dir_all(&out).unwrap();
        tk::run_oracle("onnx_run.py", &[&grouped, &x_path, &out]);
        let ort = edgeopt_npy::read(&out.join("output_0.npy")).unwrap();
        let p_ort = top1(&ort.to_f32_vec());
        eprintln!(
            "top-1 agreement on 500 images: integer vs file {}, integer vs onnxruntime {}",
            same(&p_int, &p_back),
            same(&p_int, &p_ort)
        );
        assert!(same(&p_int, &p_ort) >= 475, "{}/500", same(&p_int, &p_ort));
    }

    // TFLite: clear error, nothing written.
    let tfl = dir.join("r8_g16.tflite");
    let e = quantize_command(&QuantizeArgs {
        report: false,
        ..args(&data, "group:16", tfl.clone())
    })
    .unwrap_err();
    assert!(format!("{e:#}").contains("group-wise"), "{e:#}");
    assert!(!tfl.exists());

    // Deterministic: the same command writes the same bytes.
    let again = dir.join("r8_g16_again.onnx");
    quantize_command(&args(&data, "group:16", again.clone())).unwrap();
    assert_eq!(
        std::fs::read(&grouped).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

fn block_weights(g: &Graph) -> usize {
    g.values
        .iter()
        .filter(|v| {
            let Some(q) = &v.quant else { return false };
            let (Some(b), Some(t)) = (q.block_size, &v.data) else {
                return false;
            };
            let m = t.shape[0];
            q.scale.len() == m * (t.len() / m).div_ceil(b)
        })
        .count()
}
