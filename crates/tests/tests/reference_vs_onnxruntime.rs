//! The reference kernels against onnxruntime on random single-op models
//! (scripts/oracle/ref_random_models.py): Conv / ConvTranspose / pools in 1-D, 2-D and
//! 3-D with strides, dilations, pads, auto_pad, groups and ceil_mode; Resize in every
//! mode and coordinate transform; Gemm, MatMul, Softmax, reductions, Pad.
//! Tolerance as the ONNX conformance tests: |got - want| <= 1e-5 + 1e-3 * |want|.

use edgeopt_ir::Tensor;

fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!(
            "shape {:?}, onnxruntime {:?}",
            got.shape, want.shape
        ));
    }
    let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
    let mut worst: Option<(usize, f32, f32)> = None;
    let mut bad = 0;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        if !((a - b).abs() <= 1e-5 + 1e-3 * b.abs() || (a.is_nan() && b.is_nan())) {
            bad += 1;
            if worst.is_none_or(|(_, p, q)| (a - b).abs() > (p - q).abs()) {
                worst = Some((i, a, b));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, a, b)) => Err(format!(
            "{bad}/{} differ, worst at {i}: got {a}, onnxruntime {b}",
            w.len()
        )),
    }
}

#[test]
fn random_single_op_models_match_onnxruntime() {
    if edgeopt_testkit::data_dir().is_none() || !edgeopt_testkit::oracle_available() {
        return;
    }
    let dir = edgeopt_testkit::scratch_dir("reference_random_models");
    // EDGEOPT_REF_SEED draws another set of cases (the default, 0, is what CI runs).
    let seed =
        std::path::PathBuf::from(std::env::var("EDGEOPT_REF_SEED").unwrap_or_else(|_| "0".into()));
    let list = edgeopt_testkit::run_oracle("ref_random_models.py", &[&dir, &seed]);
    let names: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    assert!(names.len() > 250, "only {} cases generated", names.len());
    let mut failures = Vec::new();
    for name in &names {
        let r = (|| -> Result<(), String> {
            let g = edgeopt_onnx::import_file(dir.join(format!("{name}.onnx")))
                .map_err(|e| format!("import: {e}"))?;
            let x =
                edgeopt_npy::read(&dir.join(format!("{name}_x.npy"))).map_err(|e| e.to_string())?;
            let want =
                edgeopt_npy::read(&dir.join(format!("{name}_y.npy"))).map_err(|e| e.to_string())?;
            let got = edgeopt_runtime::run(&g, &[x]).map_err(|e| format!("run: {e}"))?;
            compare(&got[0], &want)
        })();
        if let Err(e) = r {
            let desc = edgeopt_onnx::import_file(dir.join(format!("{name}.onnx")))
                .ok()
                .and_then(|g| g.nodes.first().map(|n| format!("{:?}", n.op)))
                .unwrap_or_default();
            failures.push(format!("{name}: {e}\n    {desc}"));
        }
    }
    println!(
        "reference vs onnxruntime: {} passed, {} failed",
        names.len() - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

#[test]
#[ignore]
fn ad_debug() {
    let data = edgeopt_testkit::data_dir().unwrap();
    let p = data.join("mlperf-tiny/benchmark/reference_submissions/anomaly_detection/datasets/dcase01/normal_id_01_00000000_hist_librosa.bin");
    let bytes = std::fs::read(p).unwrap();
    let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let x = Tensor::from_f32(vec![40, 640], v.clone()).unwrap();
    let g = edgeopt_onnx::import_file(data.join("mlperf-tiny/onnx/tf2onnx_from_tflite/ad01_fp32.onnx")).unwrap();
    let y = edgeopt_runtime::run(&g, &[x]).unwrap();
    edgeopt_npy::write(std::path::Path::new("/tmp/ad_batch.npy"), &y[0]).unwrap();
    let mut all = Vec::new();
    for i in 0..40 {
        let xi = Tensor::from_f32(vec![1, 640], v[i * 640..(i + 1) * 640].to_vec()).unwrap();
        all.extend(edgeopt_runtime::run(&g, &[xi]).unwrap()[0].to_f32_vec());
    }
    edgeopt_npy::write(std::path::Path::new("/tmp/ad_single.npy"), &Tensor::from_f32(vec![40, 640], all).unwrap()).unwrap();
}
