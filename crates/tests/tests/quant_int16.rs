//! int16 activations with int8 weights (TFLite's "16x8" scheme) end to end, on the
//! MLPerf Tiny fp32 ResNet-8 (pretrainedResnet.onnx):
//! - `edgeopt quantize --activations int16 -o r8.tflite`, calibrated on the first 200
//!   of the 500 MLPerf calibration images (min-max, the TFLite converter's method);
//! - the written file, read back and run by edgeopt's 16x8 integer kernels, and the
//!   same file in LiteRT's builtin kernels (int16 CONV_2D / ADD / AVERAGE_POOL_2D /
//!   FULLY_CONNECTED / SOFTMAX with int64 biases) give identical outputs on 1,000
//!   CIFAR-10 test images (every 10th of the class-sorted set: 100 per class);
//! - on those images, int16 top-1 accuracy is at least int8's (percentile PTQ, the
//!   project's best int8 setting) minus 0.5 pt, and within 1 pt of float.

use edgeopt_cli::quantize::{quantize_command, ActivationsArg, MethodArg, QuantizeArgs};
use edgeopt_ir::{DType, Graph, Tensor};
use edgeopt_runtime::kernels::{eval_node, NodeCtx};
use edgeopt_testkit as tk;
use std::path::{Path, PathBuf};

const IC: &str = "mlperf-tiny/benchmark/training/image_classification";
const ONNX_MODEL: &str = "mlperf-tiny/onnx/tf2onnx_from_tflite/pretrainedResnet.onnx";
const N_EVAL: usize = 1000;

fn base_args(data: &Path) -> QuantizeArgs {
    QuantizeArgs {
        calib_names: Some(data.join("cifar10/test_filenames.txt")),
        calib_select: Some(data.join(format!("{IC}/calibration_samples.txt"))),
        calib_limit: Some(200),
        ..QuantizeArgs::new(data.join(ONNX_MODEL), data.join("cifar10/test_x.npy"))
    }
}

/// Every 10th test image (100 per class) and its label, written as .npy files.
fn eval_subset(data: &Path, dir: &Path) -> (Tensor, Vec<i64>, PathBuf, PathBuf) {
    let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap();
    let y = edgeopt_npy::read(&data.join("cifar10/test_y.npy")).unwrap();
    let per = 32 * 32 * 3;
    let xv = x.to_f32_vec();
    let yv = y.to_i64_vec();
    let rows: Vec<usize> = (0..N_EVAL).map(|i| i * 10).collect();
    let mut sub = Vec::with_capacity(N_EVAL * per);
    for &r in &rows {
        sub.extend_from_slice(&xv[r * per..(r + 1) * per]);
    }
    let labels: Vec<i64> = rows.iter().map(|&r| yv[r]).collect();
    let xt = Tensor::from_f32(vec![N_EVAL, 32, 32, 3], sub).unwrap();
    let yt = Tensor::from_i64(vec![N_EVAL], labels.clone()).unwrap();
    let (xp, yp) = (dir.join("x1000.npy"), dir.join("y1000.npy"));
    edgeopt_npy::write(&xp, &xt).unwrap();
    edgeopt_npy::write(&yp, &yt).unwrap();
    (xt, labels, xp, yp)
}

fn top1(scores: &Tensor, labels: &[i64]) -> f64 {
    let v = scores.to_f32_vec();
    let k = v.len() / labels.len();
    let hits = v
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, &l)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, &s)| if s > row[b] { i } else { b });
            best as i64 == l
        })
        .count();
    100.0 * hits as f64 / labels.len() as f64
}

/// Runs `tfl` on the inputs in `xp` in LiteRT's builtin kernels and asserts every
/// output value equals edgeopt's `ours` (`samples` rows); on a difference, names the
/// first node of `g` that differs on the first differing sample.
fn assert_matches_litert(
    what: &str,
    ours: &Tensor,
    samples: usize,
    g: &Graph,
    tfl: &Path,
    xp: &Path,
    dir: &Path,
) {
    let lite = dir.join("lite.npy");
    let args: [&Path; 5] = [
        tfl,
        xp,
        &lite,
        Path::new("--resolver"),
        Path::new("builtin"),
    ];
    tk::run_oracle("litert_run.py", &args);
    let theirs = edgeopt_npy::read(&lite).unwrap();
    let (a, b) = (ours.to_f32_vec(), theirs.to_f32_vec());
    assert_eq!(a.len(), b.len(), "{what}: output sizes");
    let differing = a.iter().zip(&b).filter(|(p, q)| p != q).count();
    eprintln!("{what}: edgeopt vs LiteRT, {differing} values differ");
    if let Some(i) = a.iter().zip(&b).position(|(p, q)| p != q) {
        let k = i / (a.len() / samples.max(1));
        let why = first_differing_node(g, tfl, xp, k, dir);
        panic!("LiteRT differs from edgeopt on {what}: {differing} values; sample {k}: {why}");
    }
}

/// For a failure message: the first node of `g` whose output differs from LiteRT's
/// when fed LiteRT's own input tensors (sample `k` of `xp`).
fn first_differing_node(g: &Graph, model: &Path, xp: &Path, k: usize, dir: &Path) -> String {
    let tdir = dir.join("tensors");
    let ks = k.to_string();
    let out = dir.join("trace-out.npy");
    let args: [&Path; 9] = [
        model,
        xp,
        &out,
        Path::new("--resolver"),
        Path::new("builtin"),
        Path::new("--tensors"),
        &tdir,
        Path::new("--sample"),
        Path::new(&ks),
    ];
    tk::run_oracle("litert_run.py", &args);
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tdir.join("index.json")).unwrap()).unwrap();
    let files = index["files"].as_object().unwrap();
    let load = |name: &str| -> Option<Tensor> {
        edgeopt_npy::read(&tdir.join(files.get(name)?.as_str()?)).ok()
    };
    for node in &g.nodes {
        let ins: Option<Vec<Option<Tensor>>> = node
            .inputs
            .iter()
            .map(|x| match x {
                None => Some(None),
                Some(id) => {
                    let v = &g.values[*id];
                    v.data.clone().or_else(|| load(&v.name)).map(Some)
                }
            })
            .collect();
        let (Some(ins), Some(want)) = (ins, load(&g.values[node.outputs[0]].name)) else {
            continue;
        };
        let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
        let got = match eval_node(
            &NodeCtx::new(g, node, edgeopt_runtime::ExecOptions::default()),
            &refs,
        ) {
            Ok(mut o) => o.remove(0),
            Err(e) => return format!("node '{}' fails on LiteRT's inputs: {e}", node.name),
        };
        let (a, b) = (got.to_f32_vec(), want.to_f32_vec());
        let d: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).collect();
        let n = d.iter().filter(|&&v| v != 0.0).count();
        if n > 0 {
            return format!(
                "first differing node '{}' ({}): {n} of {} values differ, max |diff| {}",
                node.name,
                node.op.name(),
                a.len(),
                d.iter().fold(0f32, |m, &v| m.max(v))
            );
        }
    }
    "every node agrees with LiteRT on LiteRT's inputs".into()
}

#[test]
fn int16_resnet8_tflite_matches_litert_and_beats_int8() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("quant_int16");
    let (x, labels, xp, yp) = eval_subset(&data, &dir);

    // int16 activations, int8 weights, written as TFLite.
    let tfl = dir.join("r8_int16.tflite");
    quantize_command(&QuantizeArgs {
        activations: Some(ActivationsArg::Int16),
        output: Some(tfl.clone()),
        ..base_args(&data)
    })
    .unwrap();
    let g = edgeopt_cli::load_model(&tfl).unwrap();
    // The graph really runs on 16-bit integer kernels (no float islands): every conv
    // and fully-connected reads an int16 tensor.
    for n in &g.nodes {
        if matches!(
            n.op,
            edgeopt_ir::Op::Conv(_) | edgeopt_ir::Op::FullyConnected { .. }
        ) {
            let x = n.input(0).unwrap();
            assert_eq!(g.values[x].dtype, DType::I16, "node {}", n.name);
        }
    }
    let ours = edgeopt_runtime::run(&g, &[x]).unwrap().remove(0);
    let acc16 = top1(&ours, &labels);

    // int8 (percentile, the project's best int8 PTQ) and float on the same images.
    let s8 = quantize_command(&QuantizeArgs {
        method: MethodArg::Percentile,
        eval_data: Some(xp.clone()),
        eval_labels: Some(yp),
        ..base_args(&data)
    })
    .unwrap();
    let acc8 = s8.quantized_accuracy.expect("evaluated");
    let accf = s8.float_accuracy.expect("evaluated");
    eprintln!(
        "top-1 on {N_EVAL} CIFAR-10 test images: float {accf:.2}%, int16 {acc16:.2}%, \
         int8 {acc8:.2}%"
    );
    assert!(acc16 >= acc8 - 0.5, "int16 {acc16:.2}% vs int8 {acc8:.2}%");
    assert!(
        (acc16 - accf).abs() <= 1.0,
        "int16 {acc16:.2}% vs float {accf:.2}%"
    );

    // LiteRT's builtin kernels on the same file and images.
    if !tk::oracle_available() {
        return;
    }
    assert_matches_litert("the int16 ResNet-8", &ours, N_EVAL, &g, &tfl, &xp, &dir);
}

/// PTQ of `g` on `calib` with the given activation type and calibration method.
fn ptq(
    g: &Graph,
    calib: &[Vec<Tensor>],
    activations: edgeopt_compress::quant::ActivationFormat,
    method: edgeopt_compress::quant::CalibMethod,
) -> Graph {
    use edgeopt_compress::quant::ptq::{run, PtqOptions};
    let opts = PtqOptions {
        method,
        activations,
        ..PtqOptions::default()
    };
    run(g, calib, &opts).unwrap().quantized
}

/// Writes `q` as TFLite to `path` and reads it back.
fn export_tflite(q: &Graph, path: &Path) -> (PathBuf, Graph) {
    edgeopt_tflite::export_file(q, path).unwrap();
    (path.to_path_buf(), edgeopt_cli::load_model(path).unwrap())
}

const KWS: &str =
    "mlperf-tiny/benchmark/training/keyword_spotting/trained_models/kws_ref_model_float32.tflite";

/// DS-CNN (depthwise-separable: int16 DEPTHWISE_CONV_2D) on real Speech Commands
/// clips, MFCC features as the MLPerf reference computes them: int16 PTQ (min-max,
/// calibrated on the 300 even-indexed clips of the 600-clip subset) exported to
/// TFLite runs bit-exact in LiteRT on the 300 odd-indexed clips, and its accuracy is
/// at least int8's (percentile) minus one clip.
#[test]
fn int16_dscnn_tflite_matches_litert() {
    use edgeopt_compress::quant::{ActivationFormat, CalibMethod};
    use edgeopt_ir::TensorData;
    use edgeopt_tests::samples::kws_features;

    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("quant_int16_dscnn");
    let g = edgeopt_cli::load_model(&data.join(KWS)).unwrap();
    let clips = data.join("speech-commands-v2-test-subset");
    let audio = edgeopt_npy::read(&clips.join("audio_int16_16k.npy")).unwrap();
    let labels = edgeopt_npy::read(&clips.join("labels.npy"))
        .unwrap()
        .to_i64_vec();
    let TensorData::I16(pcm) = &audio.data else {
        panic!("int16 audio")
    };
    let len = audio.shape[1];
    let feats: Vec<Vec<f32>> = (0..labels.len())
        .map(|i| kws_features(&pcm[i * len..(i + 1) * len]))
        .collect();
    let one = |f: &Vec<f32>| Tensor::from_f32(vec![1, 49, 10, 1], f.clone()).unwrap();
    let calib: Vec<Vec<Tensor>> = feats.iter().step_by(2).map(|f| vec![one(f)]).collect();
    let test: Vec<f32> = feats.iter().skip(1).step_by(2).flatten().copied().collect();
    let ys: Vec<i64> = labels.iter().skip(1).step_by(2).copied().collect();
    let n = ys.len();
    let xt = Tensor::from_f32(vec![n, 49, 10, 1], test).unwrap();

    let quantize = |activations, method| ptq(&g, &calib, activations, method);
    let q16 = quantize(ActivationFormat::Int16, CalibMethod::MinMax);
    let q8 = quantize(ActivationFormat::Int8, CalibMethod::Percentile(99.999));
    let (tfl, back) = export_tflite(&q16, &dir.join("kws_int16.tflite"));
    let ours = edgeopt_runtime::run(&back, std::slice::from_ref(&xt))
        .unwrap()
        .remove(0);
    let acc16 = top1(&ours, &ys);
    let acc8 = top1(
        &edgeopt_runtime::run(&q8, std::slice::from_ref(&xt)).unwrap()[0],
        &ys,
    );
    let accf = top1(
        &edgeopt_runtime::run(&g, std::slice::from_ref(&xt)).unwrap()[0],
        &ys,
    );
    eprintln!("DS-CNN top-1 on {n} clips: float {accf:.2}%, int16 {acc16:.2}%, int8 {acc8:.2}%");
    let clip = 100.0 / n as f64;
    assert!(
        acc16 >= acc8 - clip - 1e-9,
        "int16 {acc16:.2}% vs int8 {acc8:.2}%"
    );

    if !tk::oracle_available() {
        return;
    }
    let xp = dir.join("x.npy");
    edgeopt_npy::write(&xp, &xt).unwrap();
    assert_matches_litert("the int16 DS-CNN", &ours, n, &back, &tfl, &xp, &dir);
}

const AD_MODEL: &str =
    "mlperf-tiny/benchmark/training/anomaly_detection/trained_models/ad01_fp32.tflite";

/// The anomaly-detection autoencoder (ten int16 FULLY_CONNECTED layers with fused
/// ReLU) on the one real ToyCar clip there is (40 log-mel slices): int16 PTQ
/// calibrated on the even slices, exported to TFLite, runs bit-exact in LiteRT on all
/// 40; its outputs stay closer to float than int8's do (mean squared difference).
#[test]
fn int16_autoencoder_tflite_matches_litert() {
    use edgeopt_compress::quant::{ActivationFormat, CalibMethod};

    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("quant_int16_ad");
    let g = edgeopt_cli::load_model(&data.join(AD_MODEL)).unwrap();
    let v = edgeopt_tests::toycar::values(&data);
    let calib: Vec<Vec<Tensor>> = v
        .chunks_exact(640)
        .step_by(2)
        .map(|s| vec![Tensor::from_f32(vec![1, 640], s.to_vec()).unwrap()])
        .collect();
    let xt = Tensor::from_f32(vec![40, 640], v).unwrap();
    let quantize = |activations, method| ptq(&g, &calib, activations, method);
    let q16 = quantize(ActivationFormat::Int16, CalibMethod::MinMax);
    let q8 = quantize(ActivationFormat::Int8, CalibMethod::MinMax);
    let (tfl, back) = export_tflite(&q16, &dir.join("ad_int16.tflite"));
    let x1 = std::slice::from_ref(&xt);
    let ours = edgeopt_runtime::run(&back, x1).unwrap().remove(0);
    let float = edgeopt_runtime::run(&g, x1).unwrap().remove(0).to_f32_vec();
    let mse = |t: &Tensor| {
        let a = t.to_f32_vec();
        // Odd slices only: the even ones were calibrated on.
        let (mut s, mut n) = (0f64, 0usize);
        for (r, (p, q)) in a.chunks(640).zip(float.chunks(640)).enumerate() {
            if r % 2 == 1 {
                s += p
                    .iter()
                    .zip(q)
                    .map(|(x, y)| ((x - y) as f64).powi(2))
                    .sum::<f64>();
                n += 640;
            }
        }
        s / n as f64
    };
    let (e16, e8) = (mse(&ours), mse(&edgeopt_runtime::run(&q8, x1).unwrap()[0]));
    eprintln!("AD autoencoder, mean squared difference to float on 20 slices: int16 {e16:.3e}, int8 {e8:.3e}");
    assert!(e16 < e8, "int16 {e16} vs int8 {e8}");

    if !tk::oracle_available() {
        return;
    }
    let xp = dir.join("x.npy");
    edgeopt_npy::write(&xp, &xt).unwrap();
    assert_matches_litert("the int16 autoencoder", &ours, 40, &back, &tfl, &xp, &dir);
}

/// `edgeopt quantize --activations int16 -o r8.onnx` writes a QDQ model with int16
/// QuantizeLinear/DequantizeLinear (opset 21) that onnxruntime runs; its accuracy on
/// the 1,000 images is within 0.5 pt of edgeopt's own int16 model (onnxruntime
/// requantizes in float between the Q/DQ pairs, edgeopt in TFLite's fixed point).
#[test]
fn int16_resnet8_onnx_qdq_runs_in_onnxruntime() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("quant_int16_onnx");
    let (_, _, xp, yp) = eval_subset(&data, &dir);
    let onnx = dir.join("r8_int16.onnx");
    let s = quantize_command(&QuantizeArgs {
        activations: Some(ActivationsArg::Int16),
        output: Some(onnx.clone()),
        eval_data: Some(xp.clone()),
        eval_labels: Some(yp.clone()),
        ..base_args(&data)
    })
    .unwrap();
    let ours = s.quantized_accuracy.expect("evaluated");
    let written = s.exported_accuracy.expect("read back");
    eprintln!("int16 ResNet-8 on {N_EVAL} images: edgeopt {ours:.2}%, the QDQ file as edgeopt reads it {written:.2}%");
    if !tk::oracle_available() {
        return;
    }
    let out = tk::run_oracle("onnx_accuracy.py", &[&onnx, &xp, &yp]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ort = v["accuracy"].as_f64().unwrap();
    eprintln!("onnxruntime on the int16 QDQ file: {ort:.2}%");
    assert_eq!(v["n"].as_u64(), Some(N_EVAL as u64));
    assert!(
        (ort - ours).abs() <= 0.5,
        "onnxruntime {ort:.2}% vs edgeopt {ours:.2}%"
    );
}
