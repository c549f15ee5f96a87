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

/// `edgeopt quantize --weights int4 --qat 1 --train X --train-labels Y --qat-augment`
/// end to end on 2,048 train20k images (32 steps of the recommended recipe: LSQ
/// learned scales, distillation from the float model): the written model carries the
/// learned weight scales (not PTQ's), stays as accurate as int4 PTQ on 1,000 test
/// images (every 10th), and the file read back agrees with the in-memory model. The
/// 3-epoch figure (85.85%) comes from bench/qat.py.
#[test]
fn quantize_with_qat_writes_the_tuned_model() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("quant_cli_qat");
    let pick = |t: &edgeopt_ir::Tensor, step: usize, n: usize| -> edgeopt_ir::Tensor {
        let per: usize = t.shape[1..].iter().product();
        let rows: Vec<usize> = (0..n).map(|i| i * step).collect();
        let mut shape = t.shape.clone();
        shape[0] = n;
        let data = match &t.data {
            edgeopt_ir::TensorData::U8(v) => edgeopt_ir::TensorData::U8(
                rows.iter()
                    .flat_map(|&r| v[r * per..(r + 1) * per].iter().copied())
                    .collect(),
            ),
            d => panic!("CIFAR-10 arrays are u8, got {}", d.dtype()),
        };
        edgeopt_ir::Tensor::new(shape, data).unwrap()
    };
    let write = |name: &str, t: edgeopt_ir::Tensor| {
        let p = dir.join(name);
        edgeopt_npy::write(&p, &t).unwrap();
        p
    };
    let tx = edgeopt_npy::read(&data.join("cifar10/train20k/train_x.npy.gz")).unwrap();
    let ty = edgeopt_npy::read(&data.join("cifar10/train20k/train_y.npy")).unwrap();
    let (train_x, train_y) = (
        write("tx.npy", pick(&tx, 1, 2048)),
        write("ty.npy", pick(&ty, 1, 2048)),
    );
    let ex = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap();
    let ey = edgeopt_npy::read(&data.join("cifar10/test_y.npy")).unwrap();
    let (eval_x, eval_y) = (
        write("ex.npy", pick(&ex, 10, 1000)),
        write("ey.npy", pick(&ey, 10, 1000)),
    );
    let base = |out: &str| QuantizeArgs {
        weights: WeightsArg::Int4,
        report: false,
        eval_data: Some(eval_x.clone()),
        eval_labels: Some(eval_y.clone()),
        ..args(&data, Some(dir.join(out)))
    };
    let ptq = quantize_command(&base("ptq.tflite")).unwrap();
    let qat = quantize_command(&QuantizeArgs {
        qat: Some(1),
        train: Some(train_x),
        train_labels: Some(train_y),
        qat_augment: true,
        ..base("qat.tflite")
    })
    .unwrap();
    let (p, q) = (
        ptq.quantized_accuracy.unwrap(),
        qat.quantized_accuracy.unwrap(),
    );
    let file = qat.exported_accuracy.unwrap();
    eprintln!(
        "int4 on 1000 test images: PTQ {p:.2}%, after 32 QAT steps {q:.2}% (file {file:.2}%)"
    );
    assert!(q >= p - 1.0, "QAT {q:.2}% vs PTQ {p:.2}%");
    assert!(
        (file - q).abs() <= 1.0,
        "file {file:.2}% vs in-memory {q:.2}%"
    );
    // The learned scales reach the written weights' quantization parameters.
    let scales = |f: &str| -> Vec<f32> {
        let g = edgeopt_cli::load_model(&dir.join(f)).unwrap();
        g.values
            .iter()
            .filter(|v| v.data.is_some() && v.dtype == edgeopt_ir::DType::I4)
            .flat_map(|v| v.quant.as_ref().unwrap().scale.clone())
            .collect()
    };
    let (sp, sq) = (scales("ptq.tflite"), scales("qat.tflite"));
    assert_eq!(sp.len(), sq.len());
    assert!(!sp.is_empty(), "the TFLite file has int4 weights");
    let moved = sp.iter().zip(&sq).filter(|(a, b)| a != b).count();
    assert!(
        moved * 2 > sp.len(),
        "only {moved} of {} weight scales were learned",
        sp.len()
    );
}

/// A model with two inputs quantizes with one calibration file per input (in the
/// model's input order) and the written .tflite reads back with both inputs and runs;
/// one file for two inputs is a clear error.
#[test]
fn quantize_a_two_input_model() {
    use edgeopt_ir::{Activation, BinaryKind, DType, Dim, Graph, Op, Tensor};
    let dir = tk::scratch_dir("quant_cli_two_inputs");
    // y = relu(fc(a, Wa) + fc(b, Wb)), a: [1, 6], b: [1, 4], seeded weights.
    let mut g = Graph::new("two_inputs");
    let mut seed = 7u64;
    let mut rnd = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    };
    let a = g.add_value("a", DType::F32, Some(vec![Dim::Fixed(1), Dim::Fixed(6)]));
    let b = g.add_value("b", DType::F32, Some(vec![Dim::Fixed(1), Dim::Fixed(4)]));
    g.inputs = vec![a, b];
    let wa = g.add_const("wa", Tensor::from_f32(vec![5, 6], rnd(30)).unwrap());
    let wb = g.add_const("wb", Tensor::from_f32(vec![5, 4], rnd(20)).unwrap());
    let fc = |g: &mut Graph, name: &str, x, w| {
        let y = g.add_value(name, DType::F32, None);
        let op = Op::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
            hybrid: None,
        };
        g.add_node(name, op, vec![Some(x), Some(w)], vec![y]);
        y
    };
    let (ya, yb) = (fc(&mut g, "fa", a, wa), fc(&mut g, "fb", b, wb));
    let y = g.add_value("y", DType::F32, None);
    let add = Op::Binary {
        kind: BinaryKind::Add,
        activation: Activation::Relu,
    };
    g.add_node("add", add, vec![Some(ya), Some(yb)], vec![y]);
    g.outputs = vec![y];
    edgeopt_ir::shape::annotate(&mut g).unwrap();
    let model = dir.join("two.tflite");
    edgeopt_tflite::export_file(&g, &model).unwrap();

    let (ca, cb) = (dir.join("ca.npy"), dir.join("cb.npy"));
    edgeopt_npy::write(&ca, &Tensor::from_f32(vec![32, 6], rnd(192)).unwrap()).unwrap();
    edgeopt_npy::write(&cb, &Tensor::from_f32(vec![32, 4], rnd(128)).unwrap()).unwrap();
    let out = dir.join("two_int8.tflite");
    let one = QuantizeArgs {
        output: Some(out.clone()),
        ..QuantizeArgs::new(&model, &ca)
    };
    let e = quantize_command(&one).unwrap_err().to_string();
    assert!(e.contains("one calibration file per input"), "{e}");
    let both = QuantizeArgs {
        calib: vec![ca.clone(), cb.clone()],
        ..one
    };
    quantize_command(&both).unwrap();
    let q = edgeopt_cli::load_model(&out).unwrap();
    assert_eq!(q.inputs.len(), 2);
    let ours = edgeopt_runtime::run(
        &q,
        &[
            Tensor::from_f32(vec![1, 6], rnd(6)).unwrap(),
            Tensor::from_f32(vec![1, 4], rnd(4)).unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(ours[0].shape, vec![1, 5]);
    assert!(ours[0]
        .to_f32_vec()
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0));
}
