//! The exporter corpus end to end (`../shared/data/exporters`, see its README.md and
//! manifest.json: PyTorch TorchScript / dynamo exports and Keras 3 conversions, fixed
//! and dynamic batch, fp32 / fp16 / int8 / dynamic-range), every file through every
//! stage a user takes it through, printed as one table (file x stage):
//!
//! - `import`: `edgeopt_cli::load_model`.
//! - `run`: edgeopt's runtime (LiteRT numerics) vs the file's reference outputs
//!   (onnxruntime; LiteRT builtin kernels): float outputs within 1e-4 of
//!   max(1, max |expected|) (dynamic-range files included: edgeopt reproduces LiteRT's
//!   on-the-fly activation quantization), int8 outputs 0 LSB. Dynamic-batch Keras files
//!   run their 4 samples as one batch, as the references were made; the others one
//!   sample at a time.
//! - `export`: the imported graph written back in its own format gives the same
//!   answer: .tflite re-imported and run by edgeopt and run by LiteRT (builtin kernels,
//!   one sample at a time), .onnx run by onnxruntime (sample 0), at the `run`
//!   tolerance.
//! - `quantize` (fp32 files): `edgeopt quantize` with the file's 32 calibration samples.
//! - `tflite`: the written .tflite in LiteRT (builtin kernels) == `edgeopt run
//!   --numerics litert`, every output (1e-6 of the range: the float model edge; the
//!   integers agree).
//! - `onnx`: the written QDQ .onnx runs in onnxruntime within 5% of the range of
//!   edgeopt's outputs (onnxruntime's QDQ arithmetic is its own, not LiteRT's).
//! - `compile`: `edgeopt compile --target cortex-m4` of the written .tflite (fp32
//!   files) or of the file itself (int8 files).
//! - `c-host`: the generated C built by the host gcc with -Werror; its output bytes
//!   equal `edgeopt run --numerics tflm`'s, every sample and output.
//! - `c-tflm`: the same bytes equal TensorFlow Lite Micro's on the same .tflite (its
//!   own cell: a model TFLite Micro cannot run still has its C checked by c-host).
//! - `qemu`: models that fit a Cortex-M4 (256 KB RAM, 1 MB flash): built with
//!   arm-none-eabi-gcc, run on qemu mps2-an386, output bytes equal the host C's.
//!
//! A cell that fails must be listed in [`KNOWN`] with its reason (the one list of what
//! does not work yet), a listed cell that passes fails the test too, and the known
//! cells must stay under 5% of the cells reached.

use edgeopt_cli::compile::{compile_command, CompileArgs};
use edgeopt_cli::quantize::{quantize_command, QuantizeArgs};
use edgeopt_codegen::{compile, write_dir, Target, STACK_BYTES};
use edgeopt_ir::{DType, Graph, Tensor, TensorData};
use edgeopt_runtime::kernels::quantized::Numerics;
use edgeopt_runtime::ExecOptions;
use edgeopt_testkit as tk;
use edgeopt_tests::exporters::{self, Entry};
use edgeopt_tests::harness;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Cells known to fail: (file name, stage, reason).
const KNOWN: &[(&str, &str, &str)] = &[
    ("ds_cnn_like.batch1.dynamic.tflite", "run", DS_CNN_HYBRID),
    ("ds_cnn_like.dynbatch.dynamic.tflite", "run", DS_CNN_HYBRID),
    ("conv1d_ts.dynbatch.dynamic.tflite", "export", "a hybrid dilated conv folded from SPACE_TO_BATCH_ND: LiteRT quantized its input per phase, which a dilated CONV_2D would not; writing the SPACE_TO_BATCH_ND chain back is not supported"),
    ("unet_bits.dynbatch.fp32.tflite", "c-tflm", "TFLite Micro has no TILE, and with a dynamic batch the writer cannot use BROADCAST_TO (its shape is absolute)"),
    ("unet_bits.dynbatch.int8.tflite", "c-tflm", "the converter's own file: TFLite Micro has no TILE"),
    ("unet_bits.batch1.int8.tflite", "c-tflm", "the converter's own file: TFLite Micro has no TILE"),
    ("gru_kws_unrolled.dynbatch.int8.tflite", "c-tflm", "the converter's own file: TFLite Micro's FILL needs constant dims"),
    ("conv1d_ts.dynbatch.int8.tflite", "c-tflm", "TFLite Micro's SPACE_TO_BATCH_ND never sets its pad value (SpaceToBatchParams comes from an uninitialized persistent buffer, 0 in practice), so it pads int8 with 0 where LiteRT pads with the zero point (the real value 0); edgeopt and the C follow LiteRT's padding (10 LSB at the logits on the 4 samples)"),
    ("transformer.ts17.onnx", "c-tflm", TRANSFORMER_C),
    ("transformer.dynamo18.onnx", "c-tflm", TRANSFORMER_C),
    ("transformer.dynamo18_inline.onnx", "c-tflm", TRANSFORMER_C),
    ("mnist_cnn.ts17.onnx", "qemu", MNIST_COST),
    ("mnist_cnn.dynamo18.onnx", "qemu", MNIST_COST),
    ("mnist_cnn.dynamo18_inline.onnx", "qemu", MNIST_COST),
];

/// The C is right (same bytes as the host C on both paths); the cost model is not: on
/// the DSP path it predicts 2,589,102 instructions for 2,877,230 measured (-10.01%;
/// portable -8.4%). Its first conv has one input channel, so the receptive-field copy
/// runs one (ky, kx) iteration per element, and that per-tap loop overhead is not a
/// feature of the conv model (that layer: 732,233 predicted, 1,002,380 measured; see
/// bench/results/cost_model.md). Fix: a per-tap feature, then refit (cost_fit.rs).
const MNIST_COST: &str = "cost model 10.01% low on the DSP path: the per-tap overhead of \
    a one-input-channel conv's receptive-field copy is not a feature (see MNIST_COST)";

const TRANSFORMER_C: &str = "TensorFlow Lite Micro has no GELU kernel (the C's int8 GELU \
    is the runtime's lookup table, which c-host checks)";

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

const STAGES: [&str; 10] = [
    "import", "run", "export", "quantize", "tflite", "onnx", "compile", "c-host", "c-tflm", "qemu",
];
const IMPORT: usize = 0;
const RUN: usize = 1;
const EXPORT: usize = 2;
const QUANTIZE: usize = 3;
const TFLITE: usize = 4;
const ONNX: usize = 5;
const COMPILE: usize = 6;
const C_HOST: usize = 7;
const C_TFLM: usize = 8;
const QEMU: usize = 9;

/// Reference outputs: relative tolerance for float (of max(1, max |expected|)).
const REL_TOL: f64 = 1e-4;

/// Outcome of one stage: Ok(note) or Err(reason). `None`: not reached or not
/// applicable.
type Cell = Option<Result<String, String>>;

fn first_line(e: impl std::fmt::Display) -> String {
    let s = format!("{e:#}");
    let s = s.lines().next().unwrap_or_default().to_string();
    if s.len() > 110 {
        format!("{}...", &s[..s.floor_char_boundary(107)])
    } else {
        s
    }
}

/// Worst difference of `got` vs `want`: relative to max(1, max |want|) for float,
/// absolute LSBs for integers; a NaN is infinitely far.
fn diff(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, expected {:?}", got.shape, want.shape));
    }
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
    let worst = g.iter().zip(&w).fold(0f64, |m, (&a, &b)| {
        let d = (a as f64 - b as f64).abs();
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d)
        }
    });
    if want.dtype().is_float() {
        Ok(worst / w.iter().fold(1f64, |m, &x| m.max((x as f64).abs())))
    } else {
        Ok(worst)
    }
}

/// [`diff`] over every output, against `tol` (float: relative; int: LSB, so 0).
fn compare(got: &[Tensor], want: &[Tensor], tol: f64, who: &str) -> Result<String, String> {
    if got.len() != want.len() {
        return Err(format!("{} outputs, {who} has {}", got.len(), want.len()));
    }
    let mut worst = 0f64;
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let d = diff(g, w).map_err(|e| format!("output {k}: {e}"))?;
        let tol = if w.dtype().is_float() { tol } else { 0.0 };
        if d > tol {
            let unit = if w.dtype().is_float() {
                " of the range"
            } else {
                " LSB"
            };
            return Err(format!("output {k} differs from {who} by {d:.2e}{unit}"));
        }
        worst = worst.max(d);
    }
    Ok(format!("{worst:.0e}"))
}

/// Runs `g` on the samples of `x` under `opts`: as one batch if `whole_batch`, else
/// one sample at a time (outputs stacked).
fn run(g: &Graph, x: &Tensor, whole_batch: bool, opts: ExecOptions) -> Result<Vec<Tensor>, String> {
    let inputs = std::slice::from_ref(x);
    if whole_batch {
        edgeopt_runtime::run_with(g, inputs, opts).map_err(first_line)
    } else {
        edgeopt_runtime::run_per_sample(g, inputs, opts).map_err(first_line)
    }
}

fn last_line(s: &str) -> &str {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
}

/// Which runtime runs a job.
#[derive(Clone, Copy, PartialEq)]
enum Oracle {
    /// onnxruntime (`onnx_run_many.py`), one sample per run.
    Ort,
    /// LiteRT's builtin kernels (`litert_run_many.py`), the samples one at a time.
    LiteRt,
}

/// One model for a runtime (one process per runtime runs every job) and what its
/// outputs, stacked over the samples, must equal.
struct Job {
    oracle: Oracle,
    row: usize,
    stage: usize,
    model: PathBuf,
    /// The samples: one file each for onnxruntime, one stacked file for LiteRT.
    inputs: Vec<PathBuf>,
    want: Vec<Tensor>,
    tol: f64,
}

struct Row {
    entry: Entry,
    cells: Vec<Cell>,
    /// A .tflite that compiled, with the samples to feed its C.
    compiled: Option<(PathBuf, Tensor)>,
}

/// Writes sample `i` of `x` for onnxruntime.
fn write_samples(dir: &Path, stem: &str, x: &Tensor, n: usize) -> Result<Vec<PathBuf>, String> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{stem}.x{i}.npy"));
            let row = x.rows(i, 1).map_err(|e| e.to_string())?;
            edgeopt_npy::write(&p, &row).map_err(|e| e.to_string())?;
            Ok(p)
        })
        .collect()
}

fn run_row(data: &Path, dir: &Path, r: usize, e: &Entry, jobs: &mut Vec<Job>) -> Row {
    let mut row = Row {
        entry: e.clone(),
        cells: vec![None; STAGES.len()],
        compiled: None,
    };
    let path = e.path(data);
    let stem = e.name().replace('.', "_");
    let g = match edgeopt_cli::load_model(&path) {
        Ok(g) => g,
        Err(err) => {
            row.cells[IMPORT] = Some(Err(first_line(err)));
            return row;
        }
    };
    row.cells[IMPORT] = Some(Ok(String::new()));

    // Run: the file's own input vs its reference outputs.
    let x = edgeopt_npy::read(&e.input).expect("corpus input");
    let expected: Vec<Tensor> = e
        .expected
        .iter()
        .map(|p| edgeopt_npy::read(p).expect("corpus reference output"))
        .collect();
    let whole_batch = e.dynbatch;
    let ran = run(&g, &x, whole_batch, ExecOptions::default())
        .and_then(|got| compare(&got, &expected, REL_TOL, "the reference"));
    let ran_ok = ran.is_ok();
    row.cells[RUN] = Some(ran);

    // Export: written back in its own format, the same answer.
    if ran_ok && e.format == "tflite" {
        // Re-imported by edgeopt, and run by LiteRT (which must load what edgeopt writes).
        let out = dir.join(format!("{stem}.export.tflite"));
        let back = edgeopt_tflite::export(&g)
            .map_err(|err| format!("export: {}", first_line(err)))
            .and_then(|b| {
                std::fs::write(&out, &b).map_err(|e| e.to_string())?;
                edgeopt_tflite::import(&b).map_err(|err| format!("re-import: {}", first_line(err)))
            })
            .and_then(|g2| run(&g2, &x, whole_batch, ExecOptions::default()))
            .and_then(|got| compare(&got, &expected, REL_TOL, "the reference"));
        if back.is_ok() {
            jobs.push(Job {
                oracle: Oracle::LiteRt,
                row: r,
                stage: EXPORT,
                model: out,
                inputs: vec![e.input.clone()],
                want: expected.clone(),
                tol: REL_TOL,
            });
        }
        row.cells[EXPORT] = Some(back);
    } else if ran_ok {
        let out = dir.join(format!("{stem}.export.onnx"));
        let job = edgeopt_onnx::export_file(&g, &out)
            .map_err(|err| format!("export: {}", first_line(err)))
            .and_then(|_| {
                let want = expected
                    .iter()
                    .map(|t| t.rows(0, 1).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?;
                let samples = write_samples(dir, &format!("{stem}.export"), &x, 1)?;
                Ok((samples, want))
            });
        match job {
            Ok((inputs, want)) => jobs.push(Job {
                oracle: Oracle::Ort,
                row: r,
                stage: EXPORT,
                model: out,
                inputs,
                want,
                tol: REL_TOL,
            }),
            Err(err) => row.cells[EXPORT] = Some(Err(err)),
        }
    }

    if e.is_float32() {
        quantize_row(e, dir, r, &path, &stem, &mut row, jobs);
    } else if e.format == "tflite" && g.inputs.iter().all(|&v| g.values[v].dtype == DType::I8) {
        // A quantized file as the converter wrote it goes to the C as it is.
        compile_stage(&path, &stem, dir, x, &mut row);
    }
    row
}

/// quantize, tflite, onnx and compile for a float file.
fn quantize_row(
    e: &Entry,
    dir: &Path,
    r: usize,
    path: &Path,
    stem: &str,
    row: &mut Row,
    jobs: &mut Vec<Job>,
) {
    let input = e.input_float.clone().unwrap_or_else(|| e.input.clone());
    let calib = e
        .calib
        .clone()
        .expect("float files have calibration samples");
    let x = edgeopt_npy::read(&input).expect("corpus input");
    let quantize = |out: PathBuf| {
        quantize_command(&QuantizeArgs {
            output: Some(out),
            ..QuantizeArgs::new(path, &calib)
        })
    };
    let litert_numerics = ExecOptions::numerics(Numerics::LiteRt);

    // TFLite: LiteRT builtin == edgeopt on the written file.
    let tfl = dir.join(format!("{stem}.tflite"));
    if let Err(err) = quantize(tfl.clone()) {
        row.cells[QUANTIZE] = Some(Err(first_line(err)));
        return;
    }
    row.cells[QUANTIZE] = Some(Ok(String::new()));
    match edgeopt_cli::load_model(&tfl)
        .map_err(first_line)
        .and_then(|g| run(&g, &x, false, litert_numerics))
    {
        Ok(want) => jobs.push(Job {
            oracle: Oracle::LiteRt,
            row: r,
            stage: TFLITE,
            model: tfl.clone(),
            inputs: vec![input.clone()],
            want,
            tol: 1e-6,
        }),
        Err(err) => row.cells[TFLITE] = Some(Err(format!("edgeopt run: {err}"))),
    }
    compile_stage(&tfl, stem, dir, x.clone(), row);

    // ONNX QDQ: written here, run by onnxruntime in one process for every file.
    let onnx = dir.join(format!("{stem}.onnx"));
    let job = quantize(onnx.clone())
        .map_err(|err| format!("quantize -o .onnx: {}", first_line(err)))
        .and_then(|_| edgeopt_cli::load_model(&onnx).map_err(first_line))
        .and_then(|g| run(&g, &x, false, litert_numerics).map_err(|e| format!("edgeopt run: {e}")))
        .and_then(|ours| Ok((write_samples(dir, stem, &x, x.shape[0])?, ours)));
    match job {
        Ok((inputs, want)) => jobs.push(Job {
            oracle: Oracle::Ort,
            row: r,
            stage: ONNX,
            model: onnx,
            inputs,
            want,
            tol: 0.05,
        }),
        Err(err) => row.cells[ONNX] = Some(Err(err)),
    }
}

/// `edgeopt compile` of a quantized .tflite; the C stages follow later.
fn compile_stage(tfl: &Path, stem: &str, dir: &Path, x: Tensor, row: &mut Row) {
    let compiled = compile_command(&CompileArgs {
        model: tfl.to_path_buf(),
        target: "cortex-m4".into(),
        output: dir.join(format!("{stem}_c")),
        max_ram: Some(u64::MAX),
        max_flash: Some(u64::MAX),
        json: false,
    });
    if compiled.is_ok() {
        row.compiled = Some((tfl.to_path_buf(), x));
    }
    row.cells[COMPILE] = Some(compiled.map(|_| String::new()).map_err(first_line));
}

/// Every job, one process per runtime; fills the jobs' cells (a cell that already
/// failed keeps its first failure).
fn run_jobs(dir: &Path, rows: &mut [Row], jobs: Vec<Job>) {
    // onnxruntime: one run per sample, in ort_<job>_<sample>/output_<k>.npy.
    // LiteRT: every sample, in litert_<job>/output.npy, output.<k>.npy.
    let run_dir = |j: usize, i: usize, o: Oracle| match o {
        Oracle::Ort => dir.join(format!("ort_{j}_{i}")),
        Oracle::LiteRt => dir.join(format!("litert_{j}")),
    };
    for (oracle, script) in [
        (Oracle::Ort, "onnx_run_many.py"),
        (Oracle::LiteRt, "litert_run_many.py"),
    ] {
        let spec: Vec<_> = jobs
            .iter()
            .enumerate()
            .filter(|(_, job)| job.oracle == oracle)
            .flat_map(|(j, job)| {
                job.inputs.iter().enumerate().map(move |(i, x)| {
                    let out = run_dir(j, i, oracle);
                    match oracle {
                        Oracle::Ort => {
                            serde_json::json!({"model": job.model, "inputs": [x], "out_dir": out})
                        }
                        Oracle::LiteRt => {
                            serde_json::json!({"model": job.model, "input": x, "out_dir": out})
                        }
                    }
                })
            })
            .collect();
        if spec.is_empty() {
            continue;
        }
        let path = dir.join(format!("{script}.jobs.json"));
        std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
        tk::run_oracle(script, &[&path]);
    }
    for (j, job) in jobs.into_iter().enumerate() {
        let who = match job.oracle {
            Oracle::Ort => "onnxruntime",
            Oracle::LiteRt => "LiteRT",
        };
        let output = |d: &Path, k: usize| match job.oracle {
            Oracle::Ort => d.join(format!("output_{k}.npy")),
            Oracle::LiteRt if k == 0 => d.join("output.npy"),
            Oracle::LiteRt => d.join(format!("output.{k}.npy")),
        };
        let result = (0..job.inputs.len())
            .map(|i| {
                let d = run_dir(j, i, job.oracle);
                (0..job.want.len())
                    .map(|k| edgeopt_npy::read(&output(&d, k)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        let msg = std::fs::read_to_string(d.join("error.txt")).unwrap_or_default();
                        format!("{who}: {}", first_line(msg))
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .and_then(|per_input| {
                let got = (0..job.want.len())
                    .map(|k| {
                        let parts: Vec<Tensor> = per_input.iter().map(|o| o[k].clone()).collect();
                        Tensor::concat_rows(&parts).map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                compare(&got, &job.want, job.tol, who)
            });
        let cell = &mut rows[job.row].cells[job.stage];
        if !matches!(cell, Some(Err(_))) {
            *cell = Some(result);
        }
    }
}

/// The harness's I/O bytes of `outs` (stacked over samples), sample after sample,
/// each sample's outputs back to back.
fn harness_bytes(outs: &[Tensor], n: usize) -> Result<Vec<u8>, String> {
    let mut b = Vec::new();
    for i in 0..n {
        for t in outs {
            let row = t.rows(i, 1).map_err(|e| e.to_string())?;
            match &row.data {
                TensorData::I8(v) => b.extend(v.iter().map(|&x| x as u8)),
                TensorData::F32(v) => b.extend(v.iter().flat_map(|x| x.to_le_bytes())),
                d => return Err(format!("the C harness has no {} I/O", d.dtype())),
            }
        }
    }
    Ok(b)
}

fn differ(got: &[u8], want: &[u8]) -> String {
    let n = got.iter().zip(want).filter(|(a, b)| a != b).count();
    format!("{n} of {} output bytes differ", want.len())
}

/// The generated C built by the host gcc (-Werror), sample by sample, every output
/// byte: vs `edgeopt run --numerics tflm` (c-host) and vs TensorFlow Lite Micro on the
/// same .tflite (c-tflm: its own cell, so a model TFLite Micro cannot run still has its
/// C checked against the runtime that predicts the device); then, when the model fits
/// a Cortex-M4, the same C on qemu vs the host C (qemu).
fn c_stages(dir: &Path, tfl: &Path, x: &Tensor, arm: bool) -> [Cell; 3] {
    let stem = tfl.file_stem().unwrap().to_string_lossy().to_string();
    let host = (|| -> Result<(Graph, Vec<u8>, Vec<u8>), String> {
        let g = edgeopt_cli::load_model(tfl).map_err(first_line)?;
        if g.inputs.len() != 1 {
            return Err("the harness feeds one input".into());
        }
        let work = dir.join(format!("{stem}_host"));
        let gen =
            compile(&g, Target::by_name("generic").expect("generic target")).map_err(first_line)?;
        write_dir(&gen, &work.join("gen")).map_err(first_line)?;
        let exe =
            harness::build_host(&work.join("gen"), &work.join("build")).map_err(first_line)?;
        let xb = harness_bytes(std::slice::from_ref(x), x.shape[0])?;
        let got = harness::run_host(&exe, &xb, &work.join("build")).map_err(first_line)?;
        let ours = run(&g, x, false, ExecOptions::numerics(Numerics::Tflm))?;
        let ours = harness_bytes(&ours, x.shape[0])?;
        if got != ours {
            return Err(format!(
                "{} from edgeopt run --numerics tflm",
                differ(&got, &ours)
            ));
        }
        Ok((g, xb, got))
    })();
    let (g, xb, got) = match host {
        Ok(v) => v,
        Err(e) => return [Some(Err(e)), None, None],
    };
    let work = dir.join(format!("{stem}_tflm"));
    let tflm = edgeopt_tests::tflm::try_run_outputs(tfl, x, g.outputs.len(), &work)
        .map_err(|e| format!("TFLite Micro: {}", first_line(last_line(&e))))
        .and_then(|outs| harness_bytes(&outs, x.shape[0]))
        .and_then(|want| match got == want {
            true => Ok(String::new()),
            false => Err(format!("{} from TFLite Micro", differ(&got, &want))),
        });
    if !arm {
        return [Some(Ok(String::new())), Some(tflm), None];
    }
    let m4 = Target::by_name("cortex-m4").expect("cortex-m4 target");
    let qemu = (|| -> Result<Option<String>, String> {
        let gen = compile(&g, m4).map_err(first_line)?;
        if gen.footprint.check().is_err() {
            return Ok(None); // not a small model: does not fit the board
        }
        let work = dir.join(format!("{stem}_m4"));
        write_dir(&gen, &work.join("gen")).map_err(first_line)?;
        let b = harness::build_arm(
            &work.join("gen"),
            m4,
            true,
            STACK_BYTES,
            &work.join("build"),
        )
        .map_err(first_line)?;
        let machine = m4.qemu().expect("cortex-m4 has a qemu machine");
        let r = harness::run_qemu(
            &b,
            machine,
            &xb,
            &work.join("build"),
            Duration::from_secs(120),
        )
        .map_err(first_line)?;
        if r.outputs != got {
            return Err(format!("{} from the host C", differ(&r.outputs, &got)));
        }
        let dsp = cost_check(&g, true, r.instructions_per_inference)?;
        // The portable kernels (-DEO_NO_DSP): same bytes, and the cost model's other path.
        // One sample, to keep the added qemu time small: the kernels' counts depend on the
        // data only through a few branches (clamps, softmax).
        let n = x.shape[0].max(1);
        let (xb1, got1) = (&xb[..xb.len() / n], &got[..got.len() / n]);
        let b = harness::build_arm(
            &work.join("gen"),
            m4,
            false,
            STACK_BYTES,
            &work.join("build-portable"),
        )
        .map_err(first_line)?;
        let r = harness::run_qemu(
            &b,
            machine,
            xb1,
            &work.join("build-portable"),
            Duration::from_secs(120),
        )
        .map_err(first_line)?;
        if r.outputs != got1 {
            return Err(format!(
                "portable kernels: {} from the host C",
                differ(&r.outputs, got1)
            ));
        }
        let portable = cost_check(&g, false, r.instructions_per_inference)?;
        Ok(Some(format!("{dsp}; portable {portable}")))
    })();
    [Some(Ok(String::new())), Some(tflm), qemu.transpose()]
}

/// The cost model (edgeopt_search, issue 15 item 8) predicts the qemu instruction count
/// within 10% (the constants were fitted on half of these models: see
/// crates/search/data/cortex-m4.json, `fitted_on`; the other half is held out).
fn cost_check(g: &Graph, dsp: bool, measured: f64) -> Result<String, String> {
    let (_, p) = edgeopt_search::predict_instructions(g, dsp).map_err(first_line)?;
    let e = (p - measured) / measured;
    let msg = format!(
        "{measured:.0} instructions, predicted {p:.0} ({:+.1}%)",
        100.0 * e
    );
    if e.abs() < 0.10 {
        Ok(msg)
    } else {
        Err(format!(
            "cost model ({}): {msg}",
            if dsp { "dsp" } else { "portable" }
        ))
    }
}

#[test]
fn every_corpus_file_through_every_stage() {
    let Some(data) = tk::data_dir() else { return };
    if !tk::oracle_available() {
        return;
    }
    let dir = tk::scratch_dir("exporters_corpus");
    let start = std::time::Instant::now();
    let entries = exporters::entries(&data);
    assert!(
        entries.len() >= 40,
        "only {} files in the manifest",
        entries.len()
    );
    let mut jobs = Vec::new();
    let mut rows: Vec<Row> = entries
        .iter()
        .enumerate()
        .map(|(r, e)| run_row(&data, &dir, r, e, &mut jobs))
        .collect();
    run_jobs(&dir, &mut rows, jobs);
    // The C follows TFLite Micro: compare with it (when the oracle is installed).
    if tk::tflm_available() {
        let arm = edgeopt_tests::arm_toolchain();
        for row in rows.iter_mut() {
            if let Some((tfl, x)) = row.compiled.take() {
                let [host, tflm, qemu] = c_stages(&dir, &tfl, &x, arm);
                row.cells[C_HOST] = host;
                row.cells[C_TFLM] = tflm;
                row.cells[QEMU] = qemu;
            }
        }
    }
    report(&rows, start);
}

/// Prints the table and the failures; fails on any cell that differs from [`KNOWN`].
fn report(rows: &[Row], start: std::time::Instant) {
    let mut table = format!("{:<44}", "file");
    for s in STAGES {
        table.push_str(&format!(" {s:<8}"));
    }
    table.push('\n');
    let mut unexpected = Vec::new();
    let mut reasons = Vec::new();
    let (mut cells, mut failed) = (0usize, 0usize);
    for row in rows {
        let name = row.entry.name();
        table.push_str(&format!("{name:<44}"));
        for (k, cell) in row.cells.iter().enumerate() {
            let known = KNOWN.iter().any(|(f, s, _)| *f == name && *s == STAGES[k]);
            let mark = match cell {
                None => "-",
                Some(Ok(_)) => "ok",
                Some(Err(_)) => "FAIL",
            };
            table.push_str(&format!(" {mark:<8}"));
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
    println!(
        "{} of {cells} cells pass; {failed} fail ({:.1}%); {:.0} s",
        cells - failed,
        100.0 * failed as f64 / cells.max(1) as f64,
        start.elapsed().as_secs_f64()
    );
    for r in &reasons {
        println!("  {r}");
    }
    let qemu: Vec<String> = rows
        .iter()
        .filter_map(|r| match &r.cells[QEMU] {
            Some(Ok(n)) => Some(format!("{} {n}", r.entry.name())),
            _ => None,
        })
        .collect();
    println!("qemu Cortex-M4 per inference: {}", qemu.join("; "));
    for (f, s, _) in KNOWN {
        let row = rows.iter().find(|r| r.entry.name() == *f);
        let stage = STAGES.iter().position(|x| x == s);
        if row.is_none() || stage.is_none() {
            unexpected.push(format!("KNOWN names {f} {s}, which is not a corpus cell"));
        } else if row.is_some_and(|r| r.cells[stage.unwrap()].is_none()) {
            unexpected.push(format!("KNOWN names {f} {s}, which was not reached"));
        }
    }
    assert!(
        unexpected.is_empty(),
        "cells that differ from KNOWN:\n  {}",
        unexpected.join("\n  ")
    );
    assert!(
        failed * 20 < cells,
        "{failed} of {cells} cells fail: the known failures must stay under 5%"
    );
}
