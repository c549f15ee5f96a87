//! Imports the real ONNX models of ../shared/data (MLPerf Tiny conversions).

use edgeopt_ir::Op;

#[test]
fn mlperf_tiny_models_import() {
    let Some(dir) = edgeopt_testkit::data_dir() else { return };
    let dir = dir.join("mlperf-tiny/onnx/tf2onnx_from_tflite");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert_eq!(names.len(), 6);
    for p in names {
        let g = edgeopt_onnx::import_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        g.validate().unwrap();
        let ops: std::collections::BTreeMap<&str, usize> = g.nodes.iter().fold(Default::default(), |mut m, n| {
            *m.entry(n.op.name()).or_default() += 1;
            m
        });
        eprintln!("{}: {} nodes {:?}", p.file_name().unwrap().to_string_lossy(), g.nodes.len(), ops);
        assert!(g.nodes.iter().all(|n| !matches!(n.op, Op::Shape)));
        for &i in &g.inputs {
            eprintln!("  in {} {} {:?}", g.values[i].name, g.values[i].dtype, g.values[i].shape);
        }
        for &o in &g.outputs {
            eprintln!("  out {} {} {:?}", g.values[o].name, g.values[o].dtype, g.values[o].shape);
        }
    }
}
