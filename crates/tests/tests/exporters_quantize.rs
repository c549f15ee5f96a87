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
//!   with `-Werror`, gives outputs byte for byte equal to edgeopt's runtime under
//!   `Numerics::Tflm` on the 4 samples (c-host) and to TensorFlow Lite Micro's
//!   (`tflm_run.py`; the C's numerics) (c-tflm: a separate cell, so a model TFLM cannot
//!   run still has its C checked against the runtime).
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
/// tflite, onnx, compile, c-host (the C on the host == `edgeopt run --numerics tflm`),
/// c-tflm (the C == TensorFlow Lite Micro on the written .tflite).
const KNOWN: &[(&str, &str, &str)] = &[
    ("ds_cnn_like.dynbatch.fp32.tflite", "c-tflm", "TFLite Micro's EXPAND_DIMS takes no int32: the batch arithmetic (SHAPE, STRIDED_SLICE, EXPAND_DIMS, CONCATENATION) stays in the written file"),
    ("unet_bits.dynbatch.fp32.tflite", "c-tflm", "two outputs (tflm_run.py runs one), and TFLite Micro has no TILE"),
    ("unet_bits.batch1.fp32.tflite", "c-tflm", "two outputs (tflm_run.py runs one), and TFLite Micro has no TILE"),
    ("transformer.ts17.onnx", "c-tflm", "TFLite Micro has no GELU kernel (the C's int8 GELU is the runtime's lookup table; c-host checks it)"),
    ("transformer.dynamo18.onnx", "c-tflm", "TFLite Micro has no GELU kernel (the C's int8 GELU is the runtime's lookup table; c-host checks it)"),
    ("transformer.dynamo18_inline.onnx", "c-tflm", "TFLite Micro has no GELU kernel (the C's int8 GELU is the runtime's lookup table; c-host checks it)"),
    ("gru_kws.batch1.fp32.tflite", "import", "WHILE (control flow)"),
    ("gru_kws_unrolled.dynbatch.fp32.tflite", "onnx", "edgeopt's ONNX import has no run-time Expand (the FILL of the batch-sized initial state, written as Expand)"),
    ("gru_kws_unrolled.dynbatch.fp32.tflite", "c-tflm", "TFLite Micro's FILL needs constant dims: the batch arithmetic stays in the written file"),
];

const STAGES: [&str; 7] = [
    "import", "quantize", "tflite", "onnx", "compile", "c-host", "c-tflm",
];

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

/// The generated C (host gcc, -Werror) on the corpus input, sample by sample, every
/// output byte: vs `edgeopt run --numerics tflm` (stage c-host) and vs TensorFlow Lite
/// Micro (stage c-tflm). Two cells, so a model TFLM cannot run (no GELU kernel, no
/// int32 EXPAND_DIMS, ...) still has its C checked against the runtime that predicts
/// the device.
fn host_c(dir: &Path, tfl: &Path, x: &Tensor) -> (Cell, Cell) {
    let g = match edgeopt_cli::load_model(tfl) {
        Ok(g) => g,
        Err(e) => return (Some(Err(first_line(e))), None),
    };
    if g.inputs.len() != 1 {
        return (Some(Err("the harness feeds one input".into())), None);
    }
    let work = dir.join(format!(
        "{}_host",
        tfl.file_stem().unwrap().to_string_lossy()
    ));
    let built = compile(&g, Target::by_name("generic").expect("generic target"))
        .map_err(first_line)
        .and_then(|gen| write_dir(&gen, &work.join("gen")).map_err(first_line))
        .and_then(|_| {
            harness::build_host(&work.join("gen"), &work.join("build")).map_err(first_line)
        })
        .and_then(|exe| {
            harness::run_host(&exe, &bytes(x), &work.join("build")).map_err(first_line)
        });
    let got = match built {
        Ok(v) => v,
        Err(e) => return (Some(Err(e)), None),
    };
    let differ = |other: &[u8]| got.iter().zip(other).filter(|(a, b)| a != b).count();
    // edgeopt's runtime under `Numerics::Tflm` predicts the device; the harness writes
    // every output of a sample back to back.
    let tflm = ExecOptions::numerics(Numerics::Tflm);
    let host = edgeopt_runtime::run_per_sample(&g, std::slice::from_ref(x), tflm)
        .map_err(first_line)
        .and_then(|outs| {
            let n = x.shape[0];
            let mut ours = Vec::new();
            for i in 0..n {
                for o in &outs {
                    ours.extend(bytes(&o.rows(i, 1).map_err(|e| e.to_string())?));
                }
            }
            if got == ours {
                Ok(format!("{} B", ours.len()))
            } else {
                Err(format!(
                    "{} of {} output bytes differ from edgeopt run --numerics tflm",
                    differ(&ours),
                    ours.len()
                ))
            }
        });
    let tflm_cell = if g.outputs.len() != 1 {
        Err("the TFLM oracle (tflm_run.py) runs one output".into())
    } else {
        edgeopt_tests::tflm::try_run(tfl, x, &work.join("tflm")).and_then(|want| {
            let want = bytes(&want);
            if got == want {
                Ok(String::new())
            } else {
                Err(format!(
                    "{} of {} output bytes differ from TFLite Micro",
                    differ(&want),
                    want.len()
                ))
            }
        })
    };
    (Some(host), Some(tflm_cell))
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
            (row.cells[5], row.cells[6]) = host_c(&dir, &tfl, &x);
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
