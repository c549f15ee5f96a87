//! ONNX backend node tests (../shared/data/onnx-node-tests/node, from onnx 1.17.0):
//! import each `model.onnx`, run it with the reference executor on
//! `test_data_set_0/input_*.pb` and compare with `output_*.pb`
//! (floats: |got - want| <= 1e-5 + 1e-3 * |want|; integers and bools exactly).
//!
//! Prints one line per test (pass / FAIL / excluded) and fails listing every failure.
//! Exclusions live in [`EXCLUDED`], each with its reason, and must stay under 10% of
//! the tests.

use edgeopt_ir::Tensor;
use rayon::prelude::*;
use std::path::Path;

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-5;

/// Tests not run, with the reason. Keep this list short: each entry is a feature
/// edgeopt does not have.
const EXCLUDED: &[(&str, &str)] = &[
    ("test_dequantizelinear_e4m3fn", "float8 e4m3fn is not an IR dtype"),
    ("test_dequantizelinear_e4m3fn_float16", "float8 e4m3fn is not an IR dtype"),
    ("test_dequantizelinear_e4m3fn_zero_point", "float8 e4m3fn is not an IR dtype"),
    ("test_dequantizelinear_e5m2", "float8 e5m2 is not an IR dtype"),
    ("test_quantizelinear_e4m3fn", "float8 e4m3fn is not an IR dtype"),
    ("test_quantizelinear_e5m2", "float8 e5m2 is not an IR dtype"),
    ("test_maxpool_with_argmax_2d_precomputed_pads", "MaxPool's Indices output is not supported"),
    ("test_maxpool_with_argmax_2d_precomputed_strides", "MaxPool's Indices output is not supported"),
    ("test_batchnorm_epsilon_training_mode", "BatchNormalization training mode (inference only)"),
    ("test_batchnorm_example_training_mode", "BatchNormalization training mode (inference only)"),
    // The expected outputs of these four come from the onnx 1.17 reference
    // implementation, which wraps int8 overflow around instead of saturating as the
    // spec says; onnxruntime 1.32 saturates (e.g. -128 where the file says 20), and so
    // does edgeopt.
    ("test_qlinearmatmul_2D_int8_float16", "expected data wraps instead of saturating (onnxruntime agrees with edgeopt)"),
    ("test_qlinearmatmul_2D_int8_float32", "expected data wraps instead of saturating (onnxruntime agrees with edgeopt)"),
    ("test_qlinearmatmul_3D_int8_float16", "expected data wraps instead of saturating (onnxruntime agrees with edgeopt)"),
    ("test_qlinearmatmul_3D_int8_float32", "expected data wraps instead of saturating (onnxruntime agrees with edgeopt)"),
    // Ceil-mode windows that run past the input: the expected data divides by a count
    // that differs from onnxruntime 1.32's (and edgeopt's, which matches onnxruntime to
    // the last digit, e.g. -0.17690673 at element 80 where the file says -0.11322032).
    // align_corners with scales: the expected data divides by the unrounded output
    // length (input * scale); onnxruntime 1.32 divides by the output size, and edgeopt
    // matches onnxruntime (e.g. 16 where the file says 14.951916).
    ("test_resize_downsample_scales_cubic_align_corners", "expected data uses the unrounded output length (edgeopt matches onnxruntime 1.32)"),
    ("test_resize_downsample_scales_linear_align_corners", "expected data uses the unrounded output length (edgeopt matches onnxruntime 1.32)"),
    ("test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True", "expected data disagrees with onnxruntime 1.32 on ceil-mode divisors (edgeopt matches onnxruntime)"),
];

enum Outcome {
    Pass,
    Fail(String),
    Excluded(&'static str),
}

fn read_pb(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    edgeopt_onnx::read_tensor_proto(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// `data_set/<prefix>_<i>.pb` for i = 0.. while they exist.
fn read_all(dir: &Path, prefix: &str) -> Result<Vec<Tensor>, String> {
    let mut v = Vec::new();
    loop {
        let p = dir.join(format!("{prefix}_{}.pb", v.len()));
        if !p.exists() {
            return Ok(v);
        }
        v.push(read_pb(&p)?);
    }
}

/// Compares one output; `Err` describes the first mismatch.
fn compare(k: usize, got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!(
            "output {k}: dtype {} (expected {})",
            got.dtype(),
            want.dtype()
        ));
    }
    if got.shape != want.shape {
        return Err(format!(
            "output {k}: shape {:?} (expected {:?})",
            got.shape, want.shape
        ));
    }
    let float = want.dtype().is_float();
    let mut worst: Option<(usize, f64, f64)> = None;
    let mut bad = 0usize;
    for i in 0..want.len() {
        let (g, w) = (got.data.get_f64(i), want.data.get_f64(i));
        let ok = if float {
            (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= ATOL + RTOL * w.abs()
        } else {
            // Exact, and exact for i64 beyond 2^53 too.
            got.data.get_i64(i) == want.data.get_i64(i)
        };
        if !ok {
            bad += 1;
            if worst.is_none_or(|(_, wg, ww)| (g - w).abs() > (wg - ww).abs()) {
                worst = Some((i, g, w));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, g, w)) => Err(format!(
            "output {k}: {bad}/{} elements differ, worst at {i}: got {g}, expected {w}",
            want.len()
        )),
    }
}

fn run_one(dir: &Path) -> Outcome {
    let name = dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    if let Some((_, why)) = EXCLUDED.iter().find(|(n, _)| *n == name) {
        return Outcome::Excluded(why);
    }
    let r = std::panic::catch_unwind(|| -> Result<(), String> {
        let model = dir.join("model.onnx");
        let bytes = std::fs::read(&model).map_err(|e| format!("{}: {e}", model.display()))?;
        let data = dir.join("test_data_set_0");
        let mut inputs = read_all(&data, "input")?;
        // The tests pass operands such as Pad's pads or Resize's scales as graph inputs;
        // the IR keeps those as attributes, so bind them as constants (as a model
        // exported for deployment would have them).
        let frozen =
            edgeopt_onnx::constant_operand_inputs(&bytes).map_err(|e| format!("import: {e}"))?;
        let mut opts = edgeopt_onnx::ImportOptions::default();
        for (i, name) in frozen.iter().rev() {
            if *i < inputs.len() {
                opts.constant_inputs.push((name.clone(), inputs.remove(*i)));
            }
        }
        let g = edgeopt_onnx::import_with(&bytes, &opts).map_err(|e| format!("import: {e}"))?;
        let want = read_all(&data, "output")?;
        let got = edgeopt_runtime::run(&g, &inputs).map_err(|e| format!("run: {e}"))?;
        if got.len() != want.len() {
            return Err(format!("{} outputs, expected {}", got.len(), want.len()));
        }
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            compare(k, g, w)?;
        }
        Ok(())
    });
    match r {
        Ok(Ok(())) => Outcome::Pass,
        Ok(Err(e)) => Outcome::Fail(e),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Outcome::Fail(format!("panicked: {msg}"))
        }
    }
}

#[test]
fn onnx_node_tests() {
    let Some(data) = edgeopt_testkit::data_dir() else {
        return;
    };
    let root = data.join("onnx-node-tests/node");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no tests under {}", root.display());
    // Kernel panics are caught per test; keep their messages out of the table.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let results: Vec<(String, Outcome)> = dirs
        .par_iter()
        .map(|d| {
            (
                d.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
                run_one(d),
            )
        })
        .collect();
    std::panic::set_hook(hook);

    let (mut pass, mut excluded, mut failed) = (0, 0, Vec::new());
    for (name, o) in &results {
        match o {
            Outcome::Pass => {
                pass += 1;
                println!("pass      {name}");
            }
            Outcome::Excluded(why) => {
                excluded += 1;
                println!("excluded  {name}: {why}");
            }
            Outcome::Fail(e) => {
                println!("FAIL      {name}: {e}");
                failed.push(format!("{name}: {e}"));
            }
        }
    }
    for (n, _) in EXCLUDED {
        assert!(
            results.iter().any(|(m, _)| m == n),
            "excluded test {n} does not exist"
        );
    }
    let total = results.len();
    println!(
        "onnx node tests: {pass} passed, {} failed, {excluded} excluded of {total}",
        failed.len()
    );
    assert!(
        excluded * 10 < total,
        "{excluded} of {total} tests excluded: must stay under 10%"
    );
    assert!(
        failed.is_empty(),
        "{} of {total} ONNX node tests failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Runs `model` in onnxruntime (scripts/oracle/onnx_run.py) on one input.
fn ort_run(model: &Path, x: &Tensor, dir: &Path) -> Vec<Tensor> {
    let xin = dir.join("x.npy");
    edgeopt_npy::write(&xin, x).unwrap();
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let names = edgeopt_testkit::run_oracle("onnx_run.py", &[model, &xin, &out]);
    (0..names.lines().count())
        .map(|k| edgeopt_npy::read(&out.join(format!("output_{k}.npy"))).unwrap())
        .collect()
}

/// Small models built by scripts/oracle/onnx_make_models.py for paths the node tests
/// do not cover (PyTorch-style shape chains with a dynamic batch, opset 10/11
/// attribute forms, pre-13 Softmax semantics), run at two batch sizes in edgeopt and
/// in onnxruntime.
#[test]
fn hand_built_models_match_onnxruntime() {
    use rand::{Rng, SeedableRng};
    if edgeopt_testkit::data_dir().is_none() || !edgeopt_testkit::oracle_available() {
        return;
    }
    let dir = edgeopt_testkit::scratch_dir("onnx_hand_built");
    let list = edgeopt_testkit::run_oracle("onnx_make_models.py", &[&dir]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut failures = Vec::new();
    for name in list.lines() {
        let path = dir.join(format!("{name}.onnx"));
        let g = edgeopt_onnx::import_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shapes = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, edgeopt_ir::Op::Shape))
            .count();
        match name {
            // Everything but the batch is static: one Shape stays (its Gather of the
            // batch too), the channel count sliced from it is folded.
            "shape_chain_dynamic" => assert_eq!(shapes, 1, "{name}: {:#?}", g.nodes),
            "shape_chain_static" => assert_eq!(shapes, 0, "{name}: the shape chain should fold"),
            _ => {}
        }
        let input = &g.values[g.inputs[0]];
        for batch in [1, 3] {
            let shape: Vec<usize> = input
                .shape
                .as_ref()
                .unwrap()
                .iter()
                .map(|d| d.fixed().unwrap_or(batch))
                .collect();
            let n: usize = shape.iter().product();
            let x = Tensor::from_f32(shape, (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect())
                .unwrap();
            let want = ort_run(&path, &x, &dir);
            let got = match edgeopt_runtime::run(&g, std::slice::from_ref(&x)) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{name} batch {batch}: run: {e}"));
                    continue;
                }
            };
            for (k, (o, w)) in got.iter().zip(&want).enumerate() {
                if let Err(e) = compare(k, o, w) {
                    failures.push(format!("{name} batch {batch}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
