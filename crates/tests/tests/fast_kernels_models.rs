//! The fast integer kernels are bit-exact with the reference integer kernels on the
//! three int8 MLPerf Tiny models, on real inputs: 20 CIFAR-10 test images (ResNet-8),
//! the 40 log-mel slices of the AD sample (autoencoder), 20 seeded random int8 inputs
//! (DS-CNN; the range covers the model's whole quantized domain). Every instruction
//! set this CPU has (`Isa::available()`: portable, AVX2, AVX-VNNI, AVX-512) is checked through a prepared
//! `Session` (reused across samples, so buffer reuse is exercised) against a
//! reference-kernel session. (The reference kernels themselves are checked against
//! LiteRT in `tflite_int8_bitexact.rs`, which now runs the default, fast, kernels too.)
//! Kernel-level property tests are in `edgeopt_runtime::kernels::fast::tests`.

use edgeopt_ir::{Graph, Tensor, TensorData};
use edgeopt_runtime::kernels::fast::{Isa, Kernels};
use edgeopt_runtime::{ExecOptions, Session};
use edgeopt_testkit::data_dir;
use rand::{Rng, SeedableRng};
use std::path::Path;

const IC: &str =
    "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet_quant.tflite";
const KWS: &str =
    "mlperf-tiny/benchmark/training/keyword_spotting/trained_models/kws_ref_model.tflite";
const AD: &str = "mlperf-tiny/benchmark/training/anomaly_detection/trained_models/ad01_int8.tflite";

fn input_params(g: &Graph) -> (f32, i64) {
    let q = g.values[g.inputs[0]]
        .quant
        .as_ref()
        .expect("int8 input has quant params");
    (q.scale[0], q.zero_point[0])
}

use edgeopt_tests::quantize_i8 as quantize;

/// Batch-1 input shape.
fn input_shape(g: &Graph) -> Vec<usize> {
    let v = &g.values[g.inputs[0]];
    let mut s: Vec<usize> = v.shape.as_ref().expect("input shape")[1..]
        .iter()
        .map(|d| d.fixed().expect("fixed sample dims"))
        .collect();
    s.insert(0, 1);
    s
}

fn tensors(g: &Graph, samples: Vec<Vec<i8>>) -> Vec<Tensor> {
    let shape = input_shape(g);
    samples
        .into_iter()
        .map(|v| Tensor::new(shape.clone(), TensorData::I8(v)).unwrap())
        .collect()
}

fn ic_inputs(dir: &Path, g: &Graph) -> Vec<Tensor> {
    let (scale, zp) = input_params(g);
    let rows: Vec<usize> = (0..20).map(|i| i * 499).collect();
    let samples = edgeopt_tests::cifar::images(dir, &rows)
        .into_iter()
        .map(|img| img.into_iter().map(|p| quantize(p, scale, zp)).collect())
        .collect();
    tensors(g, samples)
}

fn ad_inputs(dir: &Path, g: &Graph) -> Vec<Tensor> {
    let (scale, zp) = input_params(g);
    let vals = edgeopt_tests::toycar::values(dir);
    let samples = vals
        .chunks_exact(640)
        .map(|row| row.iter().map(|&v| quantize(v, scale, zp)).collect())
        .collect();
    tensors(g, samples)
}

fn kws_inputs(g: &Graph) -> Vec<Tensor> {
    let n: usize = input_shape(g).iter().product();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b7773);
    let samples = (0..20)
        .map(|_| (0..n).map(|_| rng.gen::<i8>()).collect())
        .collect();
    tensors(g, samples)
}

fn check(model: &str, inputs: impl Fn(&Path, &Graph) -> Vec<Tensor>) {
    let Some(dir) = data_dir() else {
        eprintln!("skipped: no EDGEOPT_DATA");
        return;
    };
    let g = edgeopt_tflite::import_file(dir.join(model)).expect("import");
    let xs = inputs(&dir, &g);
    let mut reference =
        Session::with_options(&g, ExecOptions::default().with_kernels(Kernels::Reference));
    let want: Vec<Vec<Tensor>> = xs
        .iter()
        .map(|x| reference.run(std::slice::from_ref(x)).unwrap())
        .collect();
    for isa in Isa::available() {
        let mut s =
            Session::with_options(&g, ExecOptions::default().with_kernels(Kernels::Fast(isa)));
        assert!(s.fast_nodes() > 0, "{model}: no node got a fast kernel");
        for (i, (x, w)) in xs.iter().zip(&want).enumerate() {
            let got = s.run(std::slice::from_ref(x)).unwrap();
            assert_eq!(
                &got,
                w,
                "{model}, {}: sample {i} differs from the reference kernels",
                isa.name()
            );
        }
        // `run` is `run_in_place` then a copy of `output(i)`; past the last output
        // is an error, not a panic.
        assert!(s.output(g.outputs.len()).is_err());
    }
    // The stateless executor (prepare-and-run per node) on the default kernels.
    let got = edgeopt_runtime::run(&g, std::slice::from_ref(&xs[0])).unwrap();
    assert_eq!(got, want[0], "{model}: stateless run differs");
}

#[test]
fn resnet8_fast_equals_reference() {
    check(IC, ic_inputs);
}

#[test]
fn ad_autoencoder_fast_equals_reference() {
    check(AD, ad_inputs);
}

#[test]
fn ds_cnn_fast_equals_reference() {
    check(KWS, |_, g| kws_inputs(g));
}
