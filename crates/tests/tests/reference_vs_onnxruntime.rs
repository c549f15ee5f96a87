//! The reference kernels against onnxruntime on random single-op models
//! (scripts/oracle/ref_random_models.py): Conv / ConvTranspose / pools in 1-D, 2-D and
//! 3-D with strides, dilations, pads, auto_pad, groups and ceil_mode; Resize in every
//! mode and coordinate transform; Gemm, MatMul, Softmax, reductions, Pad; Erf,
//! LayerNormalization, Split, Slice, LSTM, GRU and TopK.
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
