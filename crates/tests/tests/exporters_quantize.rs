//! Every float model of the exporter corpus (../shared/data/exporters: PyTorch 2.15
//! ONNX exports, Keras 3 fp32 .tflite conversions) through the path a user takes after
//! import: `quantize` with the file's own 32 calibration samples, written
//! - as .tflite: LiteRT (builtin kernels) loads it, and its outputs on the 4 corpus
//!   samples equal `edgeopt run` on the same file (dequantized outputs within 1e-6
//!   relative: the same integers, printed through one float multiply);
//! - as .onnx (QDQ): onnxruntime loads and runs it, within 5% of the output range of
//!   edgeopt's run of the same file (onnxruntime requantizes in float, edgeopt in
//!   TFLite's fixed point: they differ by a few LSB, a broken export by far more);
//! - compiled for Cortex-M4 from the .tflite, and the generated C, built on the host
//!   with `-Werror`, gives outputs byte for byte equal to TensorFlow Lite Micro's
//!   (`tflm_run.py`; the C's numerics) and to edgeopt's runtime under
//!   `Numerics::Tflm` on the 4 samples.
//!
//! Prints a table (file x stage). A cell that fails must be listed in [`KNOWN`] with
//! its reason, and a listed cell that passes fails the test too (the list stays true).

use edgeopt_cli::compile::{compile_command, CompileArgs};
use edgeopt_cli::quantize::{quantize_command, QuantizeArgs};
use edgeopt_codegen::{compile, harness, write_dir, Target};
use edgeopt_ir::Tensor;
use edgeopt_runtime::kernels::quantized::Numerics;
use edgeopt_runtime::ExecOptions;
use edgeopt_testkit as tk;
use edgeopt_tests::exporters::{self, Entry};
use std::path::{Path, PathBuf};

/// Cells known to fail: (file name, stage, reason). Stages: import, quantize,
/// tflite, onnx, compile, c-host.
const KNOWN: &[(&str, &str, &str)] = &[
    ("shufflenet_v2_x0_5.ts17.onnx", "compile", "the C generator has no int8 MEAN yet"),
    ("shufflenet_v2_x0_5.dynamo18_inline.onnx", "compile", "the C generator has no int8 MEAN yet"),
    ("unet_bits.dynbatch.fp32.tflite", "c-host", "two outputs (tflm_run.py runs one), and TFLite Micro has no TILE"),
    ("unet_bits.batch1.fp32.tflite", "c-host", "two outputs (tflm_run.py runs one), and TFLite Micro has no TILE"),
    ("transformer.ts17.onnx", "compile", "the C generator has no BATCH_MATMUL, GELU or float LayerNorm island (MEAN, SQRT, DIV in float) yet; TFLite Micro has no GELU kernel either"),
    ("transformer.dynamo18.onnx", "compile", "the C generator has no BATCH_MATMUL, GELU or float LayerNorm island (MEAN, SQRT, DIV in float) yet; TFLite Micro has no GELU kernel either"),
    ("transformer.dynamo18_inline.onnx", "compile", "the C generator has no BATCH_MATMUL, GELU or float LayerNorm island (MEAN, SQRT, DIV in float) yet; TFLite Micro has no GELU kernel either"),
    ("gru_kws.batch1.fp32.tflite", "import", "WHILE (control flow)"),
];

const STAGES: [&str; 6] = ["import", "quantize", "tflite", "onnx", "compile", "c-host"];

/// Outcome of one stage: Ok(note) or Err(reason). `None`: not reached.
type Cell = Option<Result<String, String>>;

fn max_rel_diff(a: &Tensor, b: &Tensor) -> Result<f64, String> {
    if a.shape != b.shape {
        return Err(format!("shape {:?} vs {:?}", a.shape, b.shape));
    }
    let (x, y) = (a.to_f32_vec(), b.to_f32_vec());
    let range = y
        .iter()
        .fold(0f64, |m, &v| m.max((v as f64).abs()))
        .max(1.0);
    let worst = x
        .iter()
        .zip(&y)
        .fold(0f64, |m, (&p, &q)| m.max((p as f64 - q as f64).abs()));
    Ok(worst / range)
}

fn first_line(e: impl std::fmt::Display) -> String {
    let s = format!("{e:#}");
    let s = s.lines().next().unwrap_or_default().to_string();
    if s.len() > 110 {
        format!("{}...", &s[..s.floor_char_boundary(107)])
    } else {
        s
    }
}

/// Runs the oracle `litert_run.py` (builtin kernels) and returns its output.
fn litert(model: &Path, input: &Path, out: &Path) -> Result<Tensor, String> {
    let script = tk::workspace_root().join("scripts/oracle/litert_run.py");
    let o = std::process::Command::new(tk::python_path())
        .arg(script)
        .args([model, input, out])
        .args(["--resolver", "builtin"])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        return Err(format!("LiteRT: {}", first_line(line)));
    }
    edgeopt_npy::read(out).map_err(|e| e.to_string())
}

struct Row {
    entry: Entry,
    cells: Vec<Cell>,
    /// The written .tflite when it compiled, for the host C stage.
    compiled: Option<PathBuf>,
    /// The written .onnx and the per-sample inputs, for the one onnxruntime batch.
    onnx_job: Option<(PathBuf, Vec<PathBuf>, Tensor)>,
}

fn run_row(data: &Path, dir: &Path, e: &Entry) -> Row {
    let mut row = Row {
        entry: e.clone(),
        cells: vec![None; STAGES.len()],
        compiled: None,
        onnx_job: None,
    };
    let path = e.path(data);
    let input = e.input_float.clone().unwrap_or_else(|| e.input.clone());
    let calib = e
        .calib
        .clone()
        .expect("float files have calibration samples");
    if let Err(err) = edgeopt_cli::load_model(&path) {
        row.cells[0] = Some(Err(first_line(err)));
        return row;
    }
    row.cells[0] = Some(Ok(String::new()));
    let x = edgeopt_npy::read(&input).expect("corpus input");
    let stem = e.name().replace('.', "_");
    let quantize = |out: PathBuf| {
        quantize_command(&QuantizeArgs {
            output: Some(out),
            ..QuantizeArgs::new(&path, &calib)
        })
    };

    // TFLite: LiteRT builtin == edgeopt on the written file.
    let tfl = dir.join(format!("{stem}.tflite"));
    match quantize(tfl.clone()) {
        Err(err) => row.cells[1] = Some(Err(first_line(err))),
        Ok(_) => {
            row.cells[1] = Some(Ok(String::new()));
            let lite = dir.join(format!("{stem}.litert.npy"));
            let ours = edgeopt_cli::load_model(&tfl)
                .map_err(first_line)
                .and_then(|g| {
                    let litert = ExecOptions::numerics(Numerics::LiteRt);
                    edgeopt_runtime::run_per_sample(&g, std::slice::from_ref(&x), litert)
                        .map_err(first_line)
                });
            row.cells[2] = Some(match (ours, litert(&tfl, &input, &lite)) {
                (Err(err), _) => Err(format!("edgeopt run: {err}")),
                (_, Err(err)) => Err(err),
                (Ok(ours), Ok(theirs)) => max_rel_diff(&ours[0], &theirs).and_then(|d| {
                    if d <= 1e-6 {
                        Ok(format!("{d:.0e}"))
                    } else {
                        Err(format!("LiteRT differs from edgeopt: {d:.2e} of the range"))
                    }
                }),
            });
            let out = dir.join(format!("{stem}_c"));
            let compiled = compile_command(&CompileArgs {
                model: tfl.clone(),
                target: "cortex-m4".into(),
                output: out,
                max_ram: Some(u64::MAX),
                max_flash: Some(u64::MAX),
                json: false,
            });
            if compiled.is_ok() {
                row.compiled = Some(tfl.clone());
            }
            row.cells[4] = Some(compiled.map(|_| String::new()).map_err(first_line));
        }
    }

    // ONNX QDQ: written here, run by onnxruntime in one batch for every file.
    let onnx = dir.join(format!("{stem}.onnx"));
    match quantize(onnx.clone()) {
        Err(err) => row.cells[3] = Some(Err(format!("quantize -o .onnx: {}", first_line(err)))),
        Ok(_) => {
            let ours = edgeopt_cli::load_model(&onnx)
                .map_err(first_line)
                .and_then(|g| {
                    let litert = ExecOptions::numerics(Numerics::LiteRt);
                    edgeopt_runtime::run_per_sample(&g, std::slice::from_ref(&x), litert)
                        .map_err(first_line)
                });
            match ours {
                Err(err) => row.cells[3] = Some(Err(format!("edgeopt run: {err}"))),
                Ok(ours) => {
                    let n = x.shape[0];
                    let samples = (0..n)
                        .map(|i| {
                            let p = dir.join(format!("{stem}.x{i}.npy"));
                            edgeopt_npy::write(&p, &x.rows(i, 1).expect("row")).expect("write");
                            p
                        })
                        .collect();
                    row.onnx_job = Some((onnx, samples, ours[0].clone()));
                }
            }
        }
    }
    row
}

/// One onnxruntime process for every written .onnx (per-sample jobs, stacked here).
fn run_onnx_jobs(dir: &Path, rows: &mut [Row]) {
    let mut jobs = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        if let Some((model, samples, _)) = &row.onnx_job {
            for (i, s) in samples.iter().enumerate() {
                jobs.push(serde_json::json!({
                    "model": model,
                    "inputs": [s],
                    "out_dir": dir.join(format!("ort_{r}_{i}")),
                }));
            }
        }
    }
    if jobs.is_empty() {
        return;
    }
    let spec = dir.join("ort_jobs.json");
    std::fs::write(&spec, serde_json::to_vec(&jobs).unwrap()).unwrap();
    tk::run_oracle("onnx_run_many.py", &[&spec]);
    for (r, row) in rows.iter_mut().enumerate() {
        let Some((_, samples, ours)) = row.onnx_job.take() else {
            continue;
        };
        let mut parts = Vec::new();
        let mut failure = None;
        for i in 0..samples.len() {
            let d = dir.join(format!("ort_{r}_{i}"));
            match edgeopt_npy::read(&d.join("output_0.npy")) {
                Ok(t) => parts.push(t),
                Err(_) => {
                    let msg = std::fs::read_to_string(d.join("error.txt")).unwrap_or_default();
                    failure = Some(format!("onnxruntime: {}", first_line(msg)));
                    break;
                }
            }
        }
        row.cells[3] = Some(match failure {
            Some(f) => Err(f),
            None => Tensor::concat_rows(&parts)
                .map_err(|e| e.to_string())
                .and_then(|theirs| max_rel_diff(&ours, &theirs))
                .and_then(|d| {
                    if d <= 0.05 {
                        Ok(format!("{d:.1e}"))
                    } else {
                        Err(format!(
                            "onnxruntime differs from edgeopt: {d:.2e} of the range"
                        ))
                    }
                }),
        });
    }
}

use edgeopt_tests::tflm::bytes;

/// The generated C (host gcc, -Werror) vs TensorFlow Lite Micro on the same .tflite,
/// sample by sample, every output byte.
fn host_c(dir: &Path, tfl: &Path, x: &Tensor) -> Result<String, String> {
    let g = edgeopt_cli::load_model(tfl).map_err(first_line)?;
    if g.inputs.len() != 1 || g.outputs.len() != 1 {
        return Err("the TFLM oracle runs one input and one output".into());
    }
    let work = dir.join(format!(
        "{}_host",
        tfl.file_stem().unwrap().to_string_lossy()
    ));
    let gen =
        compile(&g, Target::by_name("generic").expect("generic target")).map_err(first_line)?;
    write_dir(&gen, &work.join("gen")).map_err(first_line)?;
    let exe = harness::build_host(&work.join("gen"), &work.join("build")).map_err(first_line)?;
    let want = bytes(&edgeopt_tests::tflm::try_run(tfl, x, &work.join("tflm"))?);
    let got = harness::run_host(&exe, &bytes(x), &work.join("build")).map_err(first_line)?;
    // edgeopt's runtime under `Numerics::Tflm` predicts the device.
    let tflm = ExecOptions::numerics(Numerics::Tflm);
    let ours =
        edgeopt_runtime::run_per_sample(&g, std::slice::from_ref(x), tflm).map_err(first_line)?;
    let ours = bytes(&ours[0]);
    let differ = |other: &[u8]| got.iter().zip(other).filter(|(a, b)| a != b).count();
    if got != want {
        Err(format!(
            "{} of {} output bytes differ from TFLite Micro",
            differ(&want),
            want.len()
        ))
    } else if got != ours {
        Err(format!(
            "{} of {} output bytes differ from edgeopt run --numerics tflm",
            differ(&ours),
            ours.len()
        ))
    } else {
        Ok(String::new())
    }
}

#[test]
fn float_corpus_quantizes_exports_and_compiles() {
    let Some(data) = tk::data_dir() else { return };
    if !tk::oracle_available() {
        return;
    }
    let dir = tk::scratch_dir("exporters_quantize");
    let start = std::time::Instant::now();
    let mut rows: Vec<Row> = exporters::entries(&data)
        .iter()
        .filter(|e| e.is_float32())
        .map(|e| run_row(&data, &dir, e))
        .collect();
    run_onnx_jobs(&dir, &mut rows);
    // The C follows TFLite Micro: compare with it (when the oracle is installed).
    let tflm = tk::tflm_available();
    for row in rows.iter_mut().filter(|_| tflm) {
        if let Some(tfl) = row.compiled.take() {
            let x = edgeopt_npy::read(row.entry.input_float.as_ref().unwrap_or(&row.entry.input))
                .expect("corpus input");
            row.cells[5] = Some(host_c(&dir, &tfl, &x));
        }
    }

    let mut table = format!("{:<44}", "file");
    for s in STAGES {
        table.push_str(&format!(" {s:<9}"));
    }
    table.push('\n');
    let mut unexpected = Vec::new();
    let mut reasons = Vec::new();
    let (mut cells, mut failed) = (0, 0);
    for row in &rows {
        let name = row.entry.name();
        table.push_str(&format!("{name:<44}"));
        for (k, cell) in row.cells.iter().enumerate() {
            let known = KNOWN.iter().any(|(f, s, _)| *f == name && *s == STAGES[k]);
            let mark = match cell {
                None => "-",
                Some(Ok(_)) => "ok",
                Some(Err(_)) => "FAIL",
            };
            table.push_str(&format!(" {mark:<9}"));
            match cell {
                Some(Ok(_)) if known => unexpected.push(format!(
                    "{name} {}: passes now; remove it from KNOWN",
                    STAGES[k]
                )),
                Some(Err(reason)) => {
                    failed += 1;
                    reasons.push(format!("{name} {}: {reason}", STAGES[k]));
                    if !known {
                        unexpected.push(format!("{name} {}: {reason}", STAGES[k]));
                    }
                }
                _ => {}
            }
            cells += cell.is_some() as usize;
        }
        table.push('\n');
    }
    println!("{table}");
    println!("failures ({failed} of {cells} cells reached):");
    for r in &reasons {
        println!("  {r}");
    }
    println!("{:.0} s", start.elapsed().as_secs_f64());
    assert!(
        unexpected.is_empty(),
        "cells that differ from KNOWN:\n  {}",
        unexpected.join("\n  ")
    );
}
