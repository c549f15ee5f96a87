//! The lowering is faithful: real MLPerf Tiny models imported from ONNX (NCHW inside,
//! NHWC input) and TFLite (NHWC layout), lowered to burn, give edgeopt's executor's
//! outputs within 1e-4 on real CIFAR-10 / synthetic inputs before any training.

use edgeopt_ir::{Graph, Op, Tensor};
use edgeopt_train::{cpu, DynTensor, Mode, Model};

/// Max |burn - executor| over the graph's output and, when the output is a Softmax,
/// over the logits feeding it.
fn compare(g: &Graph, x: Tensor) -> (f32, f32) {
    let model = Model::new(g.clone(), &cpu()).unwrap();
    let xin = DynTensor::from_ir(&x, model.device()).unwrap();
    let out = model.forward(vec![xin], Mode::Eval, false).unwrap();
    let logits = out.outputs[0].to_vec().unwrap();
    // The executor on the graph with the pre-softmax value as output.
    let mut gl = g.clone();
    let producers = gl.producers();
    let o = gl.outputs[0];
    if let Some(p) = producers[o] {
        if matches!(gl.nodes[p].op, Op::Softmax { .. }) {
            gl.outputs[0] = gl.nodes[p].input(0).unwrap();
        }
    }
    let want = edgeopt_runtime::run(&gl, std::slice::from_ref(&x)).unwrap()[0].to_f32_vec();
    assert_eq!(want.len(), logits.len());
    let dl = want
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // And the probabilities the original graph outputs.
    let probs = edgeopt_runtime::run(g, &[x]).unwrap()[0].to_f32_vec();
    let classes = *out.outputs[0].dims().last().unwrap();
    let mine: Vec<f32> = logits
        .chunks(classes)
        .flat_map(|r| {
            let m = r.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = r.iter().map(|v| (v - m).exp()).collect();
            let s: f32 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect();
    let dp = probs
        .iter()
        .zip(&mine)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    (dl, dp)
}

fn cifar_batch(n: usize) -> Option<Tensor> {
    let p = edgeopt_testkit::data_file("cifar10/test_x.npy")?;
    let t = edgeopt_npy::read(&p).unwrap();
    let per = 32 * 32 * 3;
    // Every 1000th image: one per class (the file is class-sorted).
    let v = t.to_f32_vec();
    let mut x = Vec::with_capacity(n * per);
    for i in 0..n {
        let r = (i * 1000 + 7) % 10_000;
        x.extend_from_slice(&v[r * per..(r + 1) * per]);
    }
    Some(Tensor::from_f32(vec![n, 32, 32, 3], x).unwrap())
}

#[test]
fn resnet8_onnx_lowering_matches_executor() {
    let Some(p) =
        edgeopt_testkit::data_file("mlperf-tiny/onnx/tf2onnx_from_tflite/pretrainedResnet.onnx")
    else {
        return;
    };
    let g = edgeopt_onnx::import_file(&p).unwrap();
    let x = cifar_batch(10).unwrap();
    let (dl, dp) = compare(&g, x);
    eprintln!("ONNX ResNet-8: max |logit diff| {dl:e}, max |prob diff| {dp:e}");
    assert!(dl <= 1e-4 && dp <= 1e-4, "logits {dl}, probabilities {dp}");
}

#[test]
fn resnet8_tflite_lowering_matches_executor() {
    let Some(p) = edgeopt_testkit::data_file(
        "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet.tflite",
    ) else {
        return;
    };
    let g = edgeopt_tflite::import_file(&p).unwrap();
    let x = cifar_batch(10).unwrap();
    let (dl, dp) = compare(&g, x);
    eprintln!("TFLite ResNet-8: max |logit diff| {dl:e}, max |prob diff| {dp:e}");
    assert!(dl <= 1e-4 && dp <= 1e-4, "logits {dl}, probabilities {dp}");
}

fn seeded(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_f32(
        shape.to_vec(),
        (0..n).map(|_| rng.gen_range(lo..hi)).collect(),
    )
    .unwrap()
}

/// Max |burn - executor| on the graph's own output.
fn compare_outputs(g: &Graph, x: Tensor) -> f32 {
    let model = Model::new(g.clone(), &cpu()).unwrap();
    let xin = DynTensor::from_ir(&x, model.device()).unwrap();
    let out = model.forward(vec![xin], Mode::Eval, false).unwrap();
    let mut gl = g.clone();
    // Compare the value training uses (pre-softmax when the graph ends in Softmax).
    let producers = gl.producers();
    if let Some(p) = producers[gl.outputs[0]] {
        if matches!(gl.nodes[p].op, Op::Softmax { .. }) {
            gl.outputs[0] = gl.nodes[p].input(0).unwrap();
        }
    }
    let want = edgeopt_runtime::run(&gl, &[x]).unwrap()[0].to_f32_vec();
    let got = out.outputs[0].to_vec().unwrap();
    assert_eq!(want.len(), got.len());
    want.iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

fn ad_input(n: usize) -> Option<Tensor> {
    let p = edgeopt_testkit::data_file(
        "mlperf-tiny/benchmark/reference_submissions/anomaly_detection/datasets/dcase01/normal_id_01_00000000_hist_librosa.bin",
    )?;
    let b = std::fs::read(p).unwrap();
    let v: Vec<f32> = b
        .chunks_exact(4)
        .take(n * 640)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(Tensor::from_f32(vec![n, 640], v).unwrap())
}

#[test]
fn dscnn_and_autoencoder_lowering_matches_executor() {
    let Some(dir) = edgeopt_testkit::data_dir() else {
        return;
    };
    let m = dir.join("mlperf-tiny");
    let onnx = m.join("onnx/tf2onnx_from_tflite");
    let tfl = m.join("benchmark/training");
    // DS-CNN fp32-I/O hybrid (int8 weights, folded to float by the lowering). The
    // executor runs the .tflite's hybrid ops with LiteRT's on-the-fly input
    // quantization unless their attribute is cleared: compare the float semantics.
    let kws_x = seeded(&[4, 49, 10, 1], -30.0, 30.0, 1);
    for mut g in [
        edgeopt_onnx::import_file(onnx.join("kws_ref_model_float32.onnx")).unwrap(),
        edgeopt_tflite::import_file(
            tfl.join("keyword_spotting/trained_models/kws_ref_model_float32.tflite"),
        )
        .unwrap(),
    ] {
        for n in &mut g.nodes {
            if let Some(h) = n.op.hybrid_mut() {
                *h = None;
            }
        }
        let d = compare_outputs(&g, kws_x.clone());
        eprintln!("DS-CNN ({:?}): max |diff| {d:e}", g.source);
        assert!(d <= 1e-4, "DS-CNN {d}");
    }
    let ad_x = ad_input(8).unwrap();
    for g in [
        edgeopt_onnx::import_file(onnx.join("ad01_fp32.onnx")).unwrap(),
        edgeopt_tflite::import_file(tfl.join("anomaly_detection/trained_models/ad01_fp32.tflite"))
            .unwrap(),
    ] {
        let d = compare_outputs(&g, ad_x.clone());
        eprintln!("AD autoencoder ({:?}): max |diff| {d:e}", g.source);
        assert!(d <= 1e-4, "autoencoder {d}");
    }
}
