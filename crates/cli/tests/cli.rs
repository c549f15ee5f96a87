//! The `edgeopt` binary: bad input ends in `error: ...` and a non-zero exit, never a
//! panic; `run` writes its outputs atomically; the `--json` outputs parse.

use edgeopt_ir::{Tensor, TensorData};
use edgeopt_testkit as tk;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RESNET_TFLITE: &str =
    "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet.tflite";
const RESNET_ONNX: &str = "mlperf-tiny/onnx/tf2onnx_from_tflite/pretrainedResnet.onnx";

fn edgeopt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeopt"))
        .args(args)
        .output()
        .expect("run edgeopt")
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Exit code 1, one `error:` line naming the problem, no panic.
fn assert_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
}

#[test]
fn missing_file() {
    for m in ["/nonexistent/model.onnx", "/nonexistent/model.tflite"] {
        assert_error(&edgeopt(&["inspect", m]), "no such model file");
        assert_error(&edgeopt(&["bench", m]), "no such model file");
    }
}

#[test]
fn wrong_extension() {
    let dir = tk::scratch_dir("cli_wrong_ext");
    let f = dir.join("model.pb");
    std::fs::write(&f, b"not a model").unwrap();
    assert_error(&edgeopt(&["inspect", p(&f)]), "unknown model format '.pb'");
    let g = dir.join("model");
    std::fs::write(&g, b"not a model").unwrap();
    assert_error(&edgeopt(&["inspect", p(&g)]), "expected a .onnx or .tflite");
}

#[test]
fn garbage_and_truncated_models() {
    let dir = tk::scratch_dir("cli_truncated");
    for (name, bytes) in [
        ("empty.onnx", vec![]),
        ("empty.tflite", vec![]),
        ("junk.onnx", vec![0xffu8; 100]),
        ("junk.tflite", vec![0xffu8; 100]),
    ] {
        let f = dir.join(name);
        std::fs::write(&f, bytes).unwrap();
        assert_error(&edgeopt(&["inspect", p(&f)]), "cannot load");
    }
    let Some(data) = tk::data_dir() else { return };
    for rel in [RESNET_TFLITE, RESNET_ONNX] {
        let bytes = std::fs::read(data.join(rel)).unwrap();
        let ext = Path::new(rel).extension().unwrap().to_str().unwrap();
        for frac in [2, 3, 10] {
            let f = dir.join(format!("cut_{frac}.{ext}"));
            std::fs::write(&f, &bytes[..bytes.len() / frac]).unwrap();
            assert_error(&edgeopt(&["inspect", p(&f)]), "cannot load");
        }
    }
}

#[test]
fn bad_arguments() {
    // clap's own errors: exit code 2, no panic.
    let out = edgeopt(&["inspect"]);
    assert_eq!(out.status.code(), Some(2));
    let out = edgeopt(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let Some(data) = tk::data_dir() else { return };
    let m = data.join(RESNET_TFLITE);
    assert_error(&edgeopt(&["inspect", p(&m), "--batch", "0"]), "--batch");
    assert_error(&edgeopt(&["bench", p(&m), "--runs", "0"]), "--runs");
    let labels = data.join("cifar10/test_y.npy");
    let x = data.join("cifar10/test_x.npy");
    // Data and labels swapped: samples have no image shape.
    assert_error(
        &edgeopt(&["eval", p(&m), "--data", p(&labels), "--labels", p(&labels)]),
        "do not fit the model input",
    );
    assert_error(
        &edgeopt(&[
            "eval",
            p(&m),
            "--data",
            p(&x),
            "--labels",
            p(&labels),
            "--mean",
            "1,2",
        ]),
        "--mean",
    );
}

fn write_npy(path: &Path, t: &Tensor) {
    edgeopt_npy::write(path, t).unwrap();
}

#[test]
fn run_checks_inputs_and_writes_atomically() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("cli_run");
    let m = data.join(RESNET_TFLITE);
    let out_path = dir.join("out.npy");

    // Wrong shape, wrong dtype, wrong count: errors, and no output file.
    let small = dir.join("small.npy");
    write_npy(
        &small,
        &Tensor::from_f32(vec![1, 16, 16, 3], vec![0.0; 768]).unwrap(),
    );
    assert_error(
        &edgeopt(&["run", p(&m), "--input", p(&small), "-o", p(&out_path)]),
        "shape",
    );
    let bytes = dir.join("u8.npy");
    write_npy(
        &bytes,
        &Tensor::new(vec![1, 32, 32, 3], TensorData::U8(vec![0; 3072])).unwrap(),
    );
    assert_error(
        &edgeopt(&["run", p(&m), "--input", p(&bytes), "-o", p(&out_path)]),
        "u8",
    );
    assert_error(
        &edgeopt(&[
            "run",
            p(&m),
            "--input",
            p(&bytes),
            "--input",
            p(&bytes),
            "-o",
            p(&out_path),
        ]),
        "--input given",
    );
    assert_error(
        &edgeopt(&[
            "run",
            p(&m),
            "--input",
            p(&dir.join("none.npy")),
            "-o",
            p(&out_path),
        ]),
        "cannot read input",
    );
    assert!(!out_path.exists());

    // A real image: the written output equals the library's run, and nothing but the
    // output is left in the folder (the temporary file was renamed).
    let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap();
    let TensorData::U8(px) = &x.data else {
        panic!("cifar is u8")
    };
    let img = Tensor::from_f32(
        vec![1, 32, 32, 3],
        px[..3072].iter().map(|&b| b as f32).collect(),
    )
    .unwrap();
    let img_path = dir.join("img.npy");
    write_npy(&img_path, &img);
    let out = edgeopt(&["run", p(&m), "--input", p(&img_path), "-o", p(&out_path)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = edgeopt_npy::read(&out_path).unwrap();
    let g = edgeopt_cli::load_model(&m).unwrap();
    let want = edgeopt_runtime::run(&g, &[img]).unwrap();
    assert_eq!(got, want[0]);
    // The same inside the planned arena.
    let arena_path = dir.join("out_arena.npy");
    let out = edgeopt(&[
        "run",
        p(&m),
        "--arena",
        "-i",
        p(&img_path),
        "-o",
        p(&arena_path),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(edgeopt_npy::read(&arena_path).unwrap(), want[0]);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["img.npy", "out.npy", "out_arena.npy", "small.npy", "u8.npy"]
    );

    // Unwritable destination: an error, and no partial file.
    let bad: PathBuf = dir.join("no_such_dir").join("out.npy");
    assert_error(
        &edgeopt(&["run", p(&m), "--input", p(&img_path), "-o", p(&bad)]),
        "cannot write",
    );
    assert!(!bad.exists());
}

#[test]
fn json_outputs() {
    let Some(data) = tk::data_dir() else { return };
    let m = data.join(RESNET_TFLITE);
    let out = edgeopt(&["inspect", p(&m), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["totals"]["macs"].as_u64().unwrap() > 0);
    assert!(v["memory"]["peak_arena_bytes"].as_u64().unwrap() > 0);
    assert!(!v["layers"].as_array().unwrap().is_empty());

    // The TFLite model's batch is dynamic (shape_signature -1).
    let out = edgeopt(&["inspect", p(&m), "--json", "--batch", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([2, 10]));

    let out = edgeopt(&["inspect", p(&m)]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("peak arena"), "{text}");

    let x = data.join("cifar10/test_x.npy");
    let y = data.join("cifar10/test_y.npy");
    let out = edgeopt(&[
        "eval",
        p(&m),
        "--data",
        p(&x),
        "--labels",
        p(&y),
        "--limit",
        "20",
        "--threads",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["samples"].as_u64(), Some(20));
    assert!(v["accuracy"].as_f64().unwrap() >= 0.0);

    let out = edgeopt(&["bench", p(&m), "--warmup", "1", "--runs", "3", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["median_ms"].as_f64().unwrap() > 0.0);
    assert!(v["p90_ms"].as_f64().unwrap() >= v["median_ms"].as_f64().unwrap());
}

/// A batch of 4 given to a batch-1 model runs sample by sample (the outputs stack on
/// axis 0, each row equal to that sample's own run and to LiteRT's reference output);
/// `-o` takes a folder for every output, `NAME=FILE` for one, and refuses more files
/// than outputs.
#[test]
fn run_batches_a_batch1_model_and_places_outputs() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("cli_run_batch");
    let ex = data.join("exporters/tflite");
    let m = ex.join("mlp_tabular.batch1.fp32.tflite");
    let input = ex.join("ai4i_8.input.npy");
    let expected = edgeopt_npy::read(&ex.join("mlp_tabular.batch1.fp32.expected_0.npy")).unwrap();
    let g = edgeopt_cli::load_model(&m).unwrap();
    let x = edgeopt_npy::read(&input).unwrap();
    assert_eq!(x.shape[0], 4, "the corpus gives 4 samples");

    let out_dir = dir.join("outs");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = edgeopt(&["run", p(&m), "-i", p(&input), "-o", p(&out_dir)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(files.len(), 1, "one file per output");
    let got = edgeopt_npy::read(&files[0].as_ref().unwrap().path()).unwrap();
    assert_eq!(got.shape, expected.shape);
    for i in 0..4 {
        let one = edgeopt_runtime::run(&g, &[x.rows(i, 1).unwrap()]).unwrap();
        assert_eq!(got.rows(i, 1).unwrap(), one[0], "sample {i}");
    }
    let (a, b) = (got.to_f32_vec(), expected.to_f32_vec());
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "max |edgeopt - LiteRT| = {worst}");

    let name = &g.values[g.outputs[0]].name;
    let named = dir.join("named.npy");
    let arg = format!("{name}={}", p(&named));
    let out = edgeopt(&["run", p(&m), "-i", p(&input), "-o", &arg, "--arena"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(edgeopt_npy::read(&named).unwrap(), got);

    let extra = dir.join("extra.npy");
    assert_error(
        &edgeopt(&[
            "run",
            p(&m),
            "-i",
            p(&input),
            "-o",
            p(&named),
            "-o",
            p(&extra),
        ]),
        "-o given",
    );
}

/// `quantize --io int8` writes a model whose inputs and outputs are int8 with their
/// quantization parameters (LiteRT loads it and agrees with edgeopt bit for bit), which
/// compiles with a smaller arena than the float-edge model; calibration data that would
/// ruin the model (NaN, constant) is refused, and `--max-accuracy-drop` refuses a
/// model calibrated on data of the wrong range without writing it.
#[test]
fn quantize_integer_io_and_calibration_guards() {
    let Some(data) = tk::data_dir() else { return };
    if !tk::oracle_available() {
        return;
    }
    let dir = tk::scratch_dir("cli_quantize_io");
    let ex = data.join("exporters/tflite");
    let m = ex.join("mlp_tabular.batch1.fp32.tflite");
    let calib = ex.join("ai4i_8.calib.npy");
    let quantize = |extra: &[&str], out: &Path| {
        let mut args = vec!["quantize", p(&m), "--calib", p(&calib), "-o", p(out)];
        args.extend_from_slice(extra);
        edgeopt(&args)
    };
    let (float_io, int8_io) = (dir.join("float.tflite"), dir.join("int8.tflite"));
    for (extra, out) in [(&[][..], &float_io), (&["--io", "int8"][..], &int8_io)] {
        let o = quantize(extra, out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let g = edgeopt_cli::load_model(&int8_io).unwrap();
    let (i, o) = (&g.values[g.inputs[0]], &g.values[g.outputs[0]]);
    assert_eq!(
        (i.dtype, o.dtype),
        (edgeopt_ir::DType::I8, edgeopt_ir::DType::I8)
    );
    let q = i
        .quant
        .clone()
        .expect("the int8 input carries its parameters");

    // The same samples, quantized with the input's parameters: LiteRT == edgeopt.
    let x = edgeopt_npy::read(&ex.join("ai4i_8.input.npy")).unwrap();
    let (s, z) = q.channel(0);
    let xq = Tensor::new(
        x.shape.clone(),
        TensorData::I8(
            x.to_f32_vec()
                .iter()
                .map(|&v| edgeopt_tests_quantize(v, s, z))
                .collect(),
        ),
    )
    .unwrap();
    let xq_path = dir.join("xq.npy");
    write_npy(&xq_path, &xq);
    let lite = dir.join("lite.npy");
    tk::run_oracle("litert_run.py", &[&int8_io, &xq_path, &lite]);
    let ours = edgeopt_runtime::run_per_sample(&g, &[xq], edgeopt_runtime::ExecOptions::default())
        .unwrap();
    assert_eq!(ours[0], edgeopt_npy::read(&lite).unwrap());

    // Both compile; the integer edge holds no float buffer (never a larger arena).
    let arena = |model: &Path, name: &str| {
        let out = edgeopt(&[
            "compile",
            p(model),
            "--target",
            "cortex-m4",
            "-o",
            p(&dir.join(name)),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        j["arena_bytes"].as_u64().unwrap()
    };
    assert!(arena(&int8_io, "c_int8") <= arena(&float_io, "c_float"));
    let h = std::fs::read_to_string(dir.join("c_int8/model.h")).unwrap();
    assert!(h.contains("#define EDGEOPT_INPUT0_IS_FLOAT 0"), "{h}");

    // Calibration guards.
    let bad = dir.join("bad.npy");
    let c = edgeopt_npy::read(&calib).unwrap();
    let mut nan = c.to_f32_vec();
    nan[5] = f32::NAN;
    write_npy(&bad, &Tensor::from_f32(c.shape.clone(), nan).unwrap());
    let out = dir.join("never.tflite");
    let args = ["quantize", p(&m), "--calib", p(&bad), "-o", p(&out)];
    assert_error(&edgeopt(&args), "must be finite");
    write_npy(
        &bad,
        &Tensor::from_f32(c.shape.clone(), vec![0.0; c.len()]).unwrap(),
    );
    assert_error(&edgeopt(&args), "constant");
    assert!(!out.exists());
}

/// Quantized like TFLite's QUANTIZE (round half away from zero, saturate).
fn edgeopt_tests_quantize(v: f32, scale: f32, zp: i64) -> i8 {
    ((v / scale).round() as i64 + zp).clamp(-128, 127) as i8
}

#[test]
fn quantize_refuses_a_large_accuracy_drop() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("cli_quantize_drop");
    let m = data.join(RESNET_TFLITE);
    // Calibration on images scaled to a thousandth of their range: every activation
    // range is far too small and the quantized model collapses.
    let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap();
    let TensorData::U8(px) = &x.data else {
        panic!("cifar is u8")
    };
    let n = 16 * 3072;
    let tiny = Tensor::from_f32(
        vec![16, 32, 32, 3],
        px[..n].iter().map(|&b| b as f32 * 0.001).collect(),
    )
    .unwrap();
    let calib = dir.join("tiny.npy");
    write_npy(&calib, &tiny);
    let out = dir.join("never.tflite");
    let o = edgeopt(&[
        "quantize",
        p(&m),
        "--calib",
        p(&calib),
        "--eval-data",
        p(&data.join("cifar10/test_x.npy")),
        "--eval-labels",
        p(&data.join("cifar10/test_y.npy")),
        "--eval-limit",
        "200",
        "--max-accuracy-drop",
        "1",
        "-o",
        p(&out),
    ]);
    assert_error(&o, "--max-accuracy-drop 1");
    assert!(!out.exists(), "nothing is written");
}

/// `run --numerics tflm` gives TensorFlow Lite Micro's integers on the MLPerf AD model
/// (where TFLM's two-rounding FULLY_CONNECTED differs from LiteRT's builtin one), and
/// the default (`litert`) gives LiteRT's builtin kernels' integers.
#[test]
fn run_numerics_follow_tflm_and_litert() {
    let Some(data) = tk::data_dir() else { return };
    if !tk::oracle_available() || !tk::tflm_available() {
        return;
    }
    let dir = tk::scratch_dir("cli_run_numerics");
    let m = data
        .join("mlperf-tiny/benchmark/training/anomaly_detection/trained_models/ad01_int8.tflite");
    let g = edgeopt_cli::load_model(&m).unwrap();
    let q = g.values[g.inputs[0]].quant.clone().expect("int8 input");
    let (s, z) = q.channel(0);
    // 8 slices of the public AD sample (float32 [40, 640]), quantized for the input.
    let bytes = std::fs::read(data.join(
        "mlperf-tiny/benchmark/reference_submissions/anomaly_detection/datasets/dcase01/normal_id_01_00000000_hist_librosa.bin",
    ))
    .unwrap();
    let vals: Vec<i8> = bytes
        .chunks_exact(4)
        .take(8 * 640)
        .map(|b| edgeopt_tests_quantize(f32::from_le_bytes([b[0], b[1], b[2], b[3]]), s, z))
        .collect();
    let x = dir.join("x.npy");
    write_npy(
        &x,
        &Tensor::new(vec![8, 640], TensorData::I8(vals)).unwrap(),
    );
    let run = |numerics: &str, out: &Path| {
        let o = edgeopt(&[
            "run",
            p(&m),
            "-i",
            p(&x),
            "-o",
            p(out),
            "--numerics",
            numerics,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        edgeopt_npy::read(out).unwrap()
    };
    let ours_tflm = run("tflm", &dir.join("tflm.npy"));
    let ours_litert = run("litert", &dir.join("litert.npy"));
    let (tflm, lite) = (dir.join("tflm_oracle.npy"), dir.join("litert_oracle.npy"));
    tk::run_oracle("tflm_run.py", &[&m, &x, &tflm]);
    tk::run_oracle("litert_run.py", &[&m, &x, &lite]);
    let flat = |t: &Tensor| t.to_f32_vec();
    assert_eq!(flat(&ours_tflm), flat(&edgeopt_npy::read(&tflm).unwrap()));
    assert_eq!(flat(&ours_litert), flat(&edgeopt_npy::read(&lite).unwrap()));
    assert_ne!(
        flat(&ours_tflm),
        flat(&ours_litert),
        "the two numerics differ on AD"
    );
}

/// Mistakes a new user makes with paths get one clear line each: a directory as MODEL,
/// a TFLite file under a .onnx name, a missing data file (its OS error said once).
#[test]
fn clear_messages_for_path_mistakes() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("cli_path_mistakes");
    let as_dir = dir.join("model.onnx");
    std::fs::create_dir_all(&as_dir).unwrap();
    assert_error(&edgeopt(&["inspect", p(&as_dir)]), "is a directory");
    let renamed = dir.join("renamed.onnx");
    std::fs::copy(data.join(RESNET_TFLITE), &renamed).unwrap();
    assert_error(
        &edgeopt(&["inspect", p(&renamed)]),
        "this is a TFLite model",
    );
    let missing = dir.join("missing.npy");
    let o = edgeopt(&[
        "run",
        p(&data.join(RESNET_TFLITE)),
        "-i",
        p(&missing),
        "-o",
        p(&dir.join("out.npy")),
    ]);
    assert_error(&o, "cannot read input");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
}
