//! Imports the real ONNX models of ../shared/data (MLPerf Tiny conversions).

use edgeopt_ir::Op;

#[test]
fn mlperf_tiny_models_import() {
    let Some(dir) = edgeopt_testkit::data_dir() else {
        return;
    };
    let dir = dir.join("mlperf-tiny/onnx/tf2onnx_from_tflite");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6);
    for p in names {
        let g = edgeopt_onnx::import_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        g.validate().unwrap();
        let ops: std::collections::BTreeMap<&str, usize> =
            g.nodes.iter().fold(Default::default(), |mut m, n| {
                *m.entry(n.op.name()).or_default() += 1;
                m
            });
        eprintln!(
            "{}: {} nodes {:?}",
            p.file_name().unwrap().to_string_lossy(),
            g.nodes.len(),
            ops
        );
        assert!(g.nodes.iter().all(|n| !matches!(n.op, Op::Shape)));
        // Shape inference ran: every value has a shape.
        for v in &g.values {
            assert!(
                v.shape.is_some(),
                "{}: value '{}' has no shape",
                p.display(),
                v.name
            );
        }
        let mut again = g.clone();
        edgeopt_ir::shape::annotate(&mut again).unwrap();
        assert_eq!(again, g, "annotate changed dtypes or shapes");
        for &i in &g.inputs {
            eprintln!(
                "  in {} {} {:?}",
                g.values[i].name, g.values[i].dtype, g.values[i].shape
            );
        }
        for &o in &g.outputs {
            eprintln!(
                "  out {} {} {:?}",
                g.values[o].name, g.values[o].dtype, g.values[o].shape
            );
        }
    }
}

/// Every backend node-test model imports, and the IR's shape inference accepts the
/// imported graph (so every value gets its inferred dtype and shape).
#[test]
fn node_test_models_import_and_annotate() {
    let Some(dir) = edgeopt_testkit::data_dir() else {
        return;
    };
    let root = dir.join("onnx-node-tests/node");
    let mut failures = Vec::new();
    let mut n = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let d = e.unwrap().path();
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        let Ok(bytes) = std::fs::read(d.join("model.onnx")) else {
            continue;
        };
        n += 1;
        let mut opts = edgeopt_onnx::ImportOptions::default();
        for (i, input) in edgeopt_onnx::constant_operand_inputs(&bytes).unwrap() {
            let pb = std::fs::read(d.join(format!("test_data_set_0/input_{i}.pb"))).unwrap();
            opts.constant_inputs
                .push((input, edgeopt_onnx::read_tensor_proto(&pb).unwrap()));
        }
        match edgeopt_onnx::import_with(&bytes, &opts) {
            Err(e) => failures.push(format!("{name}: import: {e}")),
            Ok(mut g) => {
                if let Err(e) = edgeopt_ir::shape::annotate(&mut g) {
                    failures.push(format!("{name}: annotate: {e}"));
                }
            }
        }
    }
    assert!(n > 0);
    // Float8 models are rejected at import (no IR dtype), as are training-mode
    // BatchNormalization and MaxPool's Indices output. The Reshape tests take the
    // target shape as a graph input: static inference cannot know it (the runtime
    // does), so their values keep the importer's dtypes and get no inferred shape.
    let expected_rejects = [
        "e4m3fn",
        "e5m2",
        "training_mode",
        "with_argmax",
        "not known before run time",
    ];
    let unexpected: Vec<_> = failures
        .iter()
        .filter(|f| !expected_rejects.iter().any(|r| f.contains(r)))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
}
