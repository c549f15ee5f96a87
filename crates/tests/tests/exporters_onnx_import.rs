//! Every ONNX file of the exporter corpus (`../shared/data/exporters`: real PyTorch
//! TorchScript opset-17 and dynamo opset-18 exports, with external data and inline)
//! imports and, run sample by sample on its `input` array, matches the onnxruntime
//! outputs stored as its `expected` arrays: max |diff| <= 1e-4 * max(1, max |expected|).
//!
//! Files that do not pass yet are listed in [`KNOWN_FAILURES`] with the reason; every
//! other file must pass, and a listed file that passes fails the test (so the list
//! stays true).
//!
//! Export: every imported graph, written back with `edgeopt_onnx::export_file`, runs in
//! onnxruntime with the same outputs (sample 0) as the original file.

use edgeopt_ir::{Tensor, TensorData};
use std::path::{Path, PathBuf};

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
    Tensor::new(shape, TensorData::F32(v[k * per..(k + 1) * per].to_vec()))
        .map_err(|e| e.to_string())
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
            return Err(format!(
                "{} outputs, expected {}",
                outs.len(),
                expected.len()
            ));
        }
        for (acc, o) in got.iter_mut().zip(&outs) {
            acc.extend(o.to_f32_vec());
        }
    }
    let mut worst = 0.0f32;
    for (i, (g, want)) in got.iter().zip(expected).enumerate() {
        let w = want.to_f32_vec();
        if g.len() != w.len() {
            return Err(format!(
                "output {i}: {} values, expected {}",
                g.len(),
                w.len()
            ));
        }
        worst = worst.max(rel_diff(g, &w));
    }
    Ok(worst)
}

/// The corpus folder and its parsed manifest, or `None` (skip) without the data.
fn manifest() -> Option<(PathBuf, serde_json::Value)> {
    let root = edgeopt_testkit::data_dir()?.join("exporters");
    match std::fs::read_to_string(root.join("manifest.json")) {
        Ok(s) => Some((root, serde_json::from_str(&s).expect("manifest.json"))),
        Err(e) => {
            assert!(
                std::env::var("EDGEOPT_REQUIRE_DATA").as_deref() != Ok("1"),
                "exporters/manifest.json: {e}"
            );
            println!("skipped: {}/manifest.json not found", root.display());
            None
        }
    }
}

/// Largest |a - b| relative to max(1, max |b|).
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let d = a.iter().zip(b).fold(0.0f32, |m, (p, q)| {
        let d = (p - q).abs();
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    });
    d / scale
}

#[test]
fn exported_corpus_graphs_run_in_onnxruntime() {
    let Some((root, m)) = manifest() else {
        return;
    };
    if !edgeopt_testkit::oracle_available() {
        return;
    }
    let dir = edgeopt_testkit::scratch_dir("exporters_onnx_export");
    let mut failures = Vec::new();
    let mut n = 0;
    for f in m["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["format"] == "onnx")
    {
        let file = f["file"].as_str().expect("file");
        if KNOWN_FAILURES.iter().any(|(k, _)| *k == file) {
            continue;
        }
        let r = (|| -> Result<f32, String> {
            let g =
                edgeopt_onnx::import_file(root.join(file)).map_err(|e| format!("import: {e}"))?;
            let stem = file.replace('/', "_");
            let out = dir.join(&stem);
            edgeopt_onnx::export_file(&g, &out).map_err(|e| format!("export: {e}"))?;
            let input = edgeopt_npy::read(&root.join(f["input"].as_str().ok_or("input")?))
                .map_err(|e| e.to_string())?;
            let x = dir.join(format!("{stem}.x.npy"));
            edgeopt_npy::write(&x, &sample(&input, 0)?).map_err(|e| e.to_string())?;
            let ort_out = dir.join(format!("{stem}.out"));
            edgeopt_testkit::run_oracle("onnx_run.py", &[&out, &x, &ort_out]);
            let mut worst = 0.0f32;
            for (k, e) in f["expected"]
                .as_array()
                .ok_or("expected")?
                .iter()
                .enumerate()
            {
                let want = edgeopt_npy::read(&root.join(e["file"].as_str().ok_or("file")?))
                    .map_err(|e| e.to_string())?;
                let got = edgeopt_npy::read(&ort_out.join(format!("output_{k}.npy")))
                    .map_err(|e| e.to_string())?;
                let want = want.to_f32_vec();
                let per = want.len() / want_samples(f, k).max(1);
                worst = worst.max(rel_diff(&got.to_f32_vec(), &want[..per]));
            }
            Ok(worst)
        })();
        n += 1;
        match r {
            Ok(d) if d <= REL_TOL => println!("{file:<46} export ok  {d:.2e}"),
            Ok(d) => failures.push(format!("{file}: exported model differs by {d:.2e}")),
            Err(e) => failures.push(format!("{file}: {e}")),
        }
    }
    assert!(n >= 20, "only {n} files exported");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Number of samples stacked in expected output `k` (its first dimension).
fn want_samples(f: &serde_json::Value, k: usize) -> usize {
    f["expected"][k]["shape"][0].as_u64().unwrap_or(1) as usize
}

#[test]
fn exporter_corpus_onnx_files_match_onnxruntime() {
    let Some((root, m)) = manifest() else {
        return;
    };
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
            (true, Some(_)) => {
                failures.push(format!("{file}: passes now; remove it from KNOWN_FAILURES"))
            }
            (false, None) => failures.push(format!("{file}: {result}")),
            _ => {}
        }
    }
    println!(
        "{:<46} {:<6} max |diff| / max(1, max |expected|)",
        "file", "import"
    );
    for r in &rows {
        println!("{r}");
    }
    for (file, why) in KNOWN_FAILURES {
        println!("known failure {file}: {why}");
    }
    assert!(
        rows.len() >= 20,
        "only {} ONNX files in the manifest",
        rows.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
