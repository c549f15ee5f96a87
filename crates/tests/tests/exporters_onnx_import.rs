//! Every ONNX file of the exporter corpus (`../shared/data/exporters`: real PyTorch
//! TorchScript opset-17 and dynamo opset-18 exports, with external data and inline)
//! imports and, run sample by sample on its `input` array, matches the onnxruntime
//! outputs stored as its `expected` arrays: max |diff| <= 1e-4 * max(1, max |expected|).
//!
//! Files that do not pass yet are listed in [`KNOWN_FAILURES`] with the reason; every
//! other file must pass, and a listed file that passes fails the test (so the list
//! stays true).

use edgeopt_ir::{Tensor, TensorData};
use std::path::Path;

/// Files expected to fail, with why.
const KNOWN_FAILURES: &[(&str, &str)] = &[];

const REL_TOL: f32 = 1e-4;

/// Sample `k` of a batch, with a batch dimension of 1.
fn sample(x: &Tensor, k: usize) -> Result<Tensor, String> {
    let n = *x.shape.first().ok_or("input has rank 0")?;
    let per = x.len() / n.max(1);
    let TensorData::F32(v) = &x.data else {
        return Err(format!("input is {}, expected f32", x.dtype()));
    };
    let mut shape = x.shape.clone();
    shape[0] = 1;
    Tensor::new(shape, TensorData::F32(v[k * per..(k + 1) * per].to_vec())).map_err(|e| e.to_string())
}

/// Runs `path` on every sample of `input`; the worst relative difference over all
/// outputs.
fn check(path: &Path, input: &Tensor, expected: &[Tensor]) -> Result<f32, String> {
    let g = edgeopt_onnx::import_file(path).map_err(|e| format!("import: {e}"))?;
    let n = input.shape[0];
    let mut got: Vec<Vec<f32>> = vec![Vec::new(); expected.len()];
    for k in 0..n {
        let x = sample(input, k)?;
        let outs = edgeopt_runtime::run(&g, &[x]).map_err(|e| format!("run: {e}"))?;
        if outs.len() != expected.len() {
            return Err(format!("{} outputs, expected {}", outs.len(), expected.len()));
        }
        for (acc, o) in got.iter_mut().zip(&outs) {
            acc.extend(o.to_f32_vec());
        }
    }
    let mut worst = 0.0f32;
    for (i, (g, want)) in got.iter().zip(expected).enumerate() {
        let w = want.to_f32_vec();
        if g.len() != w.len() {
            return Err(format!("output {i}: {} values, expected {}", g.len(), w.len()));
        }
        let scale = w.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let diff = g
            .iter()
            .zip(&w)
            .map(|(a, b)| if a.is_nan() && b.is_nan() { 0.0 } else { (a - b).abs() })
            .fold(0.0f32, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) });
        worst = worst.max(diff / scale);
    }
    Ok(worst)
}

#[test]
fn exporter_corpus_onnx_files_match_onnxruntime() {
    let Some(data) = edgeopt_testkit::data_dir() else {
        return;
    };
    let root = data.join("exporters");
    let manifest = match std::fs::read_to_string(root.join("manifest.json")) {
        Ok(s) => s,
        Err(e) => {
            assert!(
                std::env::var("EDGEOPT_REQUIRE_DATA").as_deref() != Ok("1"),
                "exporters/manifest.json: {e}"
            );
            println!("skipped: {}/manifest.json not found", root.display());
            return;
        }
    };
    let m: serde_json::Value = serde_json::from_str(&manifest).expect("manifest.json");
    let files = m["files"].as_array().expect("manifest files");
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for f in files.iter().filter(|f| f["format"] == "onnx") {
        let file = f["file"].as_str().expect("file");
        let r = (|| -> Result<f32, String> {
            let input = f["input"].as_str().ok_or("no input array")?;
            let input = edgeopt_npy::read(&root.join(input)).map_err(|e| e.to_string())?;
            let expected = f["expected"]
                .as_array()
                .ok_or("no expected arrays")?
                .iter()
                .map(|e| {
                    let p = e["file"].as_str().ok_or("expected entry without file")?;
                    edgeopt_npy::read(&root.join(p)).map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, String>>()?;
            check(&root.join(file), &input, &expected)
        })();
        let known = KNOWN_FAILURES.iter().find(|(k, _)| *k == file);
        let (import, result) = match &r {
            Ok(d) => ("ok", format!("{d:.2e}")),
            Err(e) if e.starts_with("import") => ("err", e.clone()),
            Err(e) => ("ok", e.clone()),
        };
        let pass = matches!(r, Ok(d) if d <= REL_TOL);
        rows.push(format!("{file:<46} {import:<6} {result}"));
        match (pass, known) {
            (true, Some(_)) => failures.push(format!("{file}: passes now; remove it from KNOWN_FAILURES")),
            (false, None) => failures.push(format!("{file}: {result}")),
            _ => {}
        }
    }
    println!("{:<46} {:<6} max |diff| / max(1, max |expected|)", "file", "import");
    for r in &rows {
        println!("{r}");
    }
    for (file, why) in KNOWN_FAILURES {
        println!("known failure {file}: {why}");
    }
    assert!(rows.len() >= 20, "only {} ONNX files in the manifest", rows.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
