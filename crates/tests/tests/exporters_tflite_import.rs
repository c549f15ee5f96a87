//! Every `.tflite` file of the exporter corpus (`exporters/manifest.json`: real Keras 3 /
//! TF 2.21 conversions, fixed and dynamic batch, fp32 / int8 / dynamic-range / fp16),
//! imported and run end to end against LiteRT's builtin kernels.
//!
//! Dynamic-batch files run their 4 samples as one batch (as the expected outputs were
//! made); fixed-batch files run sample by sample. Float outputs must agree within 1e-4
//! relative to max(1, max|expected|); int8 outputs exactly. Dynamic-range (hybrid)
//! files are float too: LiteRT quantizes their activations on the fly, which edgeopt
//! reproduces under its default LiteRT numerics (`edgeopt_ir::Hybrid`); measured
//! 1.5e-8 to 3.6e-7 (mlp_tabular, conv1d_ts including the dilated conv LiteRT runs per
//! space-to-batch phase, unet_bits). Files that still fail are listed, with the
//! reason, in [`KNOWN_FAILURES`]; a listed file that starts passing fails the test too,
//! so the list stays true.

use edgeopt_ir::{DType, Tensor};
use edgeopt_testkit::data_dir;
use serde_json::Value as Json;
use std::path::Path;

/// Files expected to fail, with why. Everything else must import, run and match.
const KNOWN_FAILURES: &[(&str, &str)] = &[
    (
        "tflite/gru_kws.batch1.fp32.tflite",
        "WHILE control flow (the Keras GRU loop) is not supported",
    ),
    (
        "tflite/gru_kws.batch1.dynamic.tflite",
        "WHILE control flow (the Keras GRU loop) is not supported",
    ),
    (
        "tflite/gru_kws.batch1.fp16.tflite",
        "WHILE control flow (the Keras GRU loop) is not supported",
    ),
    ("tflite/ds_cnn_like.batch1.dynamic.tflite", DS_CNN_HYBRID),
    ("tflite/ds_cnn_like.dynbatch.dynamic.tflite", DS_CNN_HYBRID),
];

/// Why the DS-CNN dynamic-range files miss 1e-4 (3.9e-3 on sample 2, the other three
/// samples within 1.8e-6): its first six layers are float (weights under 1024
/// elements stay float in the converter), where edgeopt's float kernels differ from
/// LiteRT's by a few ulps (2.3e-6 relative after six layers); on sample 2 that moves
/// one input of the first hybrid layer (conv_pw_3) across a rounding boundary of its
/// on-the-fly quantization, one step of 0.0235, and the 20 hybrid layers after it
/// amplify that to 3.9e-3 on the softmax. LiteRT's own reference kernels differ from
/// its builtin ones by 3.0e-3 on this file for the same reason. Closing it needs
/// float CONV_2D / DEPTHWISE_CONV_2D bit-exact with LiteRT's.
const DS_CNN_HYBRID: &str = "float kernels a few ulps from LiteRT's flip one on-the-fly \
    input quantization step of the first hybrid layer on one sample (see DS_CNN_HYBRID)";

/// Files that pass but cannot be exported back to TFLite yet, with why. Every other
/// passing file must give the same answer after export -> re-import.
const EXPORT_KNOWN_FAILURES: &[(&str, &str)] = &[
    (
        "tflite/ds_cnn_like.dynbatch.fp16.tflite",
        "depthwise weights come from a run-time DEQUANTIZE of f16; the exporter needs constant depthwise weights",
    ),
    (
        "tflite/ds_cnn_like.batch1.fp16.tflite",
        "depthwise weights come from a run-time DEQUANTIZE of f16; the exporter needs constant depthwise weights",
    ),
    (
        "tflite/conv1d_ts.dynbatch.dynamic.tflite",
        "a hybrid dilated conv folded from SPACE_TO_BATCH_ND: LiteRT quantized its input per phase, which a dilated CONV_2D would not; writing the SPACE_TO_BATCH_ND chain back is not supported",
    ),
];

/// Outcome of one file.
struct Row {
    file: String,
    import: Result<(), String>,
    /// Worst difference over outputs and samples: relative for float, LSBs for int.
    run: Result<f64, String>,
    float: bool,
    dynamic_range: bool,
    /// Export -> re-import -> run, for files that pass.
    roundtrip: Option<Result<f64, String>>,
}

impl Row {
    fn passed(&self) -> bool {
        let tol = if self.float { 1e-4 } else { 0.0 };
        self.import.is_ok() && self.run.as_ref().is_ok_and(|&d| d <= tol)
    }
}

fn read_npy(dir: &Path, rel: &str) -> Tensor {
    edgeopt_npy::read(&dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Sample `i` of a batch-first tensor, with a leading batch of 1.
fn sample(t: &Tensor, i: usize) -> Tensor {
    let n = t.shape[0];
    let per = t.len() / n;
    let mut shape = t.shape.clone();
    shape[0] = 1;
    let data = slice_data(&t.data, i * per, per);
    Tensor::new(shape, data).unwrap()
}

fn slice_data(d: &edgeopt_ir::TensorData, start: usize, len: usize) -> edgeopt_ir::TensorData {
    use edgeopt_ir::TensorData as D;
    match d {
        D::F32(v) => D::F32(v[start..start + len].to_vec()),
        D::I8(v) => D::I8(v[start..start + len].to_vec()),
        D::U8(v) => D::U8(v[start..start + len].to_vec()),
        D::I16(v) => D::I16(v[start..start + len].to_vec()),
        D::I32(v) => D::I32(v[start..start + len].to_vec()),
        D::I64(v) => D::I64(v[start..start + len].to_vec()),
        other => panic!("unexpected sample dtype {:?}", other.dtype()),
    }
}

/// Worst difference of `got` vs `want`: relative to max(1, max|want|) for float,
/// absolute LSBs for integers.
fn diff(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, expected {:?}", got.shape, want.shape));
    }
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    let g = got.to_f32_vec();
    let w = want.to_f32_vec();
    let worst = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    if want.dtype().is_float() {
        let scale = w.iter().fold(1.0f32, |m, x| m.max(x.abs())) as f64;
        Ok(worst / scale)
    } else {
        Ok(worst)
    }
}

fn run_file(dir: &Path, entry: &Json) -> Row {
    let file = entry["file"].as_str().unwrap().to_string();
    let dynbatch = entry["batch"].as_str() == Some("dynbatch");
    let dynamic_range = entry["quant"].as_str() == Some("dynamic");
    let expected: Vec<Tensor> = entry["expected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| read_npy(dir, e["file"].as_str().unwrap()))
        .collect();
    let float = expected.iter().all(|t| t.dtype() == DType::F32);
    let mut row = Row {
        file: file.clone(),
        import: Ok(()),
        run: Err("not run".into()),
        float,
        dynamic_range,
        roundtrip: None,
    };
    let graph = match edgeopt_tflite::import_file(dir.join(&file)) {
        Ok(g) => g,
        Err(e) => {
            row.import = Err(e.to_string());
            return row;
        }
    };
    let input = read_npy(dir, entry["input"].as_str().unwrap());
    row.run = run_graph(&graph, dynbatch, &input, &expected);
    // What passes must also survive export: written back as .tflite, re-imported
    // and run again, it must give the same answer.
    if row.passed() {
        row.roundtrip = Some(
            edgeopt_tflite::export(&graph)
                .map_err(|e| format!("export: {e}"))
                .and_then(|b| edgeopt_tflite::import(&b).map_err(|e| format!("re-import: {e}")))
                .and_then(|g| run_graph(&g, dynbatch, &input, &expected)),
        );
    }
    row
}

/// Runs `graph` on the 4 samples (one batch if `dynbatch`, else one at a time) and
/// returns the worst difference to `expected` over all outputs.
fn run_graph(
    graph: &edgeopt_ir::Graph,
    dynbatch: bool,
    input: &Tensor,
    expected: &[Tensor],
) -> Result<f64, String> {
    let batches: Vec<Tensor> = if dynbatch {
        vec![input.clone()]
    } else {
        (0..input.shape[0]).map(|i| sample(input, i)).collect()
    };
    let mut per_output: Vec<Vec<Tensor>> = vec![Vec::new(); expected.len()];
    for x in &batches {
        let outs =
            edgeopt_runtime::run(graph, std::slice::from_ref(x)).map_err(|e| e.to_string())?;
        if outs.len() != expected.len() {
            return Err(format!(
                "{} outputs, expected {}",
                outs.len(),
                expected.len()
            ));
        }
        for (k, o) in outs.into_iter().enumerate() {
            per_output[k].push(o);
        }
    }
    let mut worst = 0.0f64;
    for (got, want) in per_output.iter().zip(expected) {
        worst = worst.max(diff(&stack(got), want)?);
    }
    Ok(worst)
}

/// Concatenates tensors along axis 0.
fn stack(ts: &[Tensor]) -> Tensor {
    if ts.len() == 1 {
        return ts[0].clone();
    }
    let mut shape = ts[0].shape.clone();
    shape[0] = ts.iter().map(|t| t.shape[0]).sum();
    let data = match &ts[0].data {
        edgeopt_ir::TensorData::F32(_) => {
            edgeopt_ir::TensorData::F32(ts.iter().flat_map(|t| t.to_f32_vec()).collect())
        }
        edgeopt_ir::TensorData::I8(_) => edgeopt_ir::TensorData::I8(
            ts.iter()
                .flat_map(|t| t.as_i8().unwrap().to_vec())
                .collect(),
        ),
        other => panic!("unexpected output dtype {:?}", other.dtype()),
    };
    Tensor::new(shape, data).unwrap()
}

#[test]
fn every_exporter_tflite_file_runs_like_litert() {
    let Some(data) = data_dir() else { return };
    let dir = data.join("exporters");
    let manifest: Json = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("exporters/manifest.json"),
    )
    .expect("manifest JSON");
    let files: Vec<&Json> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["format"].as_str() == Some("tflite"))
        .collect();
    assert!(!files.is_empty(), "no tflite files in the manifest");
    let rows: Vec<Row> = files.iter().map(|f| run_file(&dir, f)).collect();

    println!(
        "{:<48} {:<8} run (float: rel. diff; int: LSB)",
        "file", "import"
    );
    for r in &rows {
        let imp = if r.import.is_ok() { "ok" } else { "FAIL" };
        let run = match (&r.import, &r.run) {
            (Err(e), _) => e.clone(),
            (_, Ok(d)) => format!("{d:.3e}{}", if r.passed() { "" } else { "  MISMATCH" }),
            (_, Err(e)) => format!("ERROR {e}"),
        };
        let rt = match &r.roundtrip {
            None => String::new(),
            Some(Ok(d)) => format!("  export round trip {d:.3e}"),
            Some(Err(e)) => format!("  export round trip FAILED: {e}"),
        };
        println!("{:<48} {imp:<8} {run}{rt}", r.file);
    }
    let hybrid: Vec<f64> = rows
        .iter()
        .filter(|r| r.dynamic_range && r.passed())
        .filter_map(|r| r.run.as_ref().ok().copied())
        .collect();
    println!(
        "dynamic-range files within 1e-4 of LiteRT: {} (worst {:.3e})",
        hybrid.len(),
        hybrid.iter().fold(0.0f64, |m, &d| m.max(d))
    );

    let mut problems = Vec::new();
    for r in &rows {
        let known = KNOWN_FAILURES.iter().find(|(f, _)| *f == r.file);
        let export_known = EXPORT_KNOWN_FAILURES.iter().any(|(f, _)| *f == r.file);
        let tol = if r.float { 1e-4 } else { 0.0 };
        match (&r.roundtrip, export_known) {
            (Some(Ok(d)), false) if *d <= tol => {}
            (Some(Ok(_)) | Some(Err(_)), false) => problems.push(format!(
                "{}: export round trip fails and is not listed",
                r.file
            )),
            (Some(Ok(d)), true) if *d <= tol => problems.push(format!(
                "{}: export round trip passes now; remove it from EXPORT_KNOWN_FAILURES",
                r.file
            )),
            _ => {}
        }
        match (r.passed(), known) {
            (false, None) => problems.push(format!("{}: fails and is not listed", r.file)),
            (true, Some(_)) => problems.push(format!(
                "{}: passes now; remove it from KNOWN_FAILURES",
                r.file
            )),
            _ => {}
        }
    }
    for (f, _) in KNOWN_FAILURES {
        assert!(
            rows.iter().any(|r| r.file == *f),
            "KNOWN_FAILURES names {f}, which the manifest does not list"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
