//! `edgeopt train` end to end through its argument parser: train, export ONNX with
//! the normalization embedded, re-import, run on edgeopt's executor with raw inputs,
//! fine-tune from the exported model; bad arguments are errors, not panics.

use edgeopt_cli::train::{parse_train_args, runtime_accuracy, train_command};
use edgeopt_train::data::load_pair;

#[test]
fn train_export_reimport_finetune() {
    let Some(dir) = edgeopt_testkit::data_dir() else {
        return;
    };
    let digits = dir.join("sklearn-digits");
    let out = edgeopt_testkit::scratch_dir("train_cli");
    let m1 = out.join("digits.onnx");
    let rep = out.join("report.json");
    let x = digits.join("images_u8.npy");
    let y = digits.join("labels.npy");
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = vec![
            "--train-x".into(),
            x.display().to_string(),
            "--train-y".into(),
            y.display().to_string(),
            "--threads".into(),
            "2".into(),
            "--quiet".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        parse_train_args(v).unwrap()
    };
    let a = args(&[
        "--arch",
        "mlp",
        "--arch-args",
        "input=1:8:8,hidden=64",
        "--epochs",
        "15",
        "--val-split",
        "0.25",
        "--optimizer",
        "adamw",
        "--seed",
        "3",
        "--report",
        rep.to_str().unwrap(),
        "-o",
        m1.to_str().unwrap(),
    ]);
    train_command(&a).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let val = report["train"]["epochs"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["val_accuracy"]
        .as_f64()
        .unwrap();
    assert!(val > 0.9, "validation accuracy {val}");
    // The exported model takes raw 0..16 pixels (normalization embedded).
    let g = edgeopt_onnx::import_file(&m1).unwrap();
    let data = load_pair(&x, &y, &[1, 8, 8]).unwrap();
    let acc = runtime_accuracy(&g, &data).unwrap();
    assert!(acc > 0.9, "executor accuracy on raw inputs {acc}");
    // Fine-tune from the exported model: it keeps its normalization and accuracy.
    let m2 = out.join("digits_ft.onnx");
    let b = args(&[
        "--init",
        m1.to_str().unwrap(),
        "--epochs",
        "1",
        "--lr",
        "1e-4",
        "--optimizer",
        "adamw",
        "-o",
        m2.to_str().unwrap(),
    ]);
    train_command(&b).unwrap();
    let g2 = edgeopt_onnx::import_file(&m2).unwrap();
    let acc2 = runtime_accuracy(&g2, &data).unwrap();
    assert!((acc2 - acc).abs() < 0.02, "fine-tuned {acc2} vs {acc}");
    assert_eq!(g2.inputs.len(), 1);
}

#[test]
fn bad_arguments_are_errors() {
    let out = edgeopt_testkit::scratch_dir("train_cli_bad");
    let o = out.join("x.onnx");
    let o = o.to_str().unwrap();
    for bad in [
        vec!["-o", o],
        vec!["--arch", "nope", "--dataset", "/nonexistent", "-o", o],
        vec!["--arch", "lenet5", "--dataset", "/nonexistent", "-o", o],
        vec![
            "--arch",
            "lenet5",
            "--arch-args",
            "kernel=99",
            "--dataset",
            "/nonexistent",
            "-o",
            o,
        ],
        vec![
            "--init",
            "/nonexistent/model.onnx",
            "--dataset",
            "/tmp",
            "-o",
            o,
        ],
    ] {
        let a = parse_train_args(bad.clone()).unwrap();
        assert!(train_command(&a).is_err(), "{bad:?} should fail");
    }
    assert!(parse_train_args(["--epochs", "x", "-o", "y"]).is_err());
}
