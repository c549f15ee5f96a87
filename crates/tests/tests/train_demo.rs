//! `edgeopt demo` with its defaults (no arguments, no files): the 1-D CNN trained on
//! the built-in vibration dataset reaches >= 95% on its held-out split, and the
//! exported graph gives the same accuracy on edgeopt's own executor.

use edgeopt_cli::train::{run_demo, DemoArgs};

#[test]
fn demo_reaches_95_percent() {
    edgeopt_train::with_threads(Some(2), || {
        let r = run_demo(&DemoArgs::default()).unwrap();
        let acc = r.test.accuracy.unwrap();
        eprintln!(
            "demo: held-out accuracy {:.2}% on {} windows, executor {:?}, {:.1}s",
            100.0 * acc,
            r.test.samples,
            r.runtime_accuracy,
            r.seconds
        );
        assert!(acc >= 0.95, "held-out accuracy {acc}");
        let rt = r.runtime_accuracy.expect("executor ran the exported graph");
        // Same model, two engines: at most a couple of windows may flip on ties.
        assert!(
            (rt - acc).abs() <= 2.0 / r.test.samples as f32,
            "burn {acc} vs executor {rt}"
        );
        // The exported graph round-trips through ONNX.
        let dir = edgeopt_testkit::scratch_dir("train_demo");
        let p = dir.join("demo.onnx");
        edgeopt_onnx::export_file(&r.graph, &p).unwrap();
        let back = edgeopt_onnx::import_file(&p).unwrap();
        assert_eq!(back.param_count(), r.graph.param_count());
    })
    .unwrap()
}
