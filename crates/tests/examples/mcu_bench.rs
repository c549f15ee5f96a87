//! Measurement driver of `bench/codegen.py`: compiles each MLPerf Tiny int8 model to C,
//! checks it bit-exact against TensorFlow Lite Micro (`scripts/oracle/tflm_run.py`, the
//! oracle Python of `EDGEOPT_PYTHON`) on the host and on qemu Cortex-M4 / Cortex-M7 with
//! the DSP path on and off, and prints one JSON object per line: a "model" record
//! (footprint, host check, where edgeopt's runtime differs: LiteRt vs Reference numerics,
//! Reference vs the C) and one "run" record per (core, dsp) with sizes and instruction
//! counts.
//!
//! Usage: mcu_bench DATA_DIR WORK_DIR [ic|kws|ad ...]
use edgeopt_codegen::{compile, write_dir, Target, STACK_BYTES};
use edgeopt_ir::{Graph, Tensor, TensorData};
use edgeopt_runtime::kernels::quantized::Numerics;
use edgeopt_runtime::ExecOptions;
use edgeopt_tests::{harness, samples};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

fn runtime_outputs(g: &Graph, inputs: &[u8], num: Numerics) -> Result<Vec<u8>, String> {
    let shape = edgeopt_ir::shape::bind_input_shapes(g, 1)
        .map_err(|e| e.to_string())?
        .remove(0);
    let per: usize = shape.iter().product();
    let mut out = Vec::new();
    for s in inputs.chunks_exact(per) {
        let t = Tensor::new(
            shape.clone(),
            TensorData::I8(s.iter().map(|&b| b as i8).collect()),
        )
        .map_err(|e| e.to_string())?;
        for o in edgeopt_runtime::run_with(g, &[t], ExecOptions::numerics(num))
            .map_err(|e| e.to_string())?
        {
            match o.data {
                TensorData::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
                d => return Err(format!("unexpected output dtype {}", d.dtype())),
            }
        }
    }
    Ok(out)
}

/// TFLite Micro's outputs for `inputs` (samples of `g`'s input shape, back to back).
fn tflm_outputs(
    model: &std::path::Path,
    g: &Graph,
    inputs: &[u8],
    work: &std::path::Path,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut shape = edgeopt_ir::shape::bind_input_shapes(g, 1)?.remove(0);
    let per: usize = shape.iter().product();
    shape[0] = inputs.len() / per.max(1);
    let x = Tensor::new(
        shape,
        TensorData::I8(inputs.iter().map(|&b| b as i8).collect()),
    )?;
    std::fs::create_dir_all(work)?;
    let (xin, yout) = (work.join("tflm_in.npy"), work.join("tflm_out.npy"));
    edgeopt_npy::write(&xin, &x)?;
    edgeopt_testkit::run_oracle("tflm_run.py", &[model, &xin, &yout]);
    match edgeopt_npy::read(&yout)?.data {
        TensorData::I8(v) => Ok(v.iter().map(|&b| b as u8).collect()),
        d => Err(format!("TFLM output is {}, int8 expected", d.dtype()).into()),
    }
}

fn differing(a: &[u8], b: &[u8], per: usize) -> (usize, usize) {
    let samples = a
        .chunks(per)
        .zip(b.chunks(per))
        .filter(|(x, y)| x != y)
        .count();
    let elems = a.iter().zip(b).filter(|(x, y)| x != y).count();
    (samples + a.len().abs_diff(b.len()) / per.max(1), elems)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: mcu_bench DATA_DIR WORK_DIR [ic|kws|ad ...]".into());
    }
    let data = PathBuf::from(&args[1]);
    let work = PathBuf::from(&args[2]);
    let which: Vec<String> = if args.len() > 3 {
        args[3..].to_vec()
    } else {
        vec!["ic".into(), "kws".into(), "ad".into()]
    };
    for m in which {
        let rel = match m.as_str() {
            "ic" => samples::IC,
            "kws" => samples::KWS,
            "ad" => samples::AD,
            other => return Err(format!("unknown model {other}").into()),
        };
        let g = edgeopt_tflite::import_file(data.join(rel))?;
        let mut labels: Vec<usize> = Vec::new();
        let (inputs, what) = match m.as_str() {
            "ic" => {
                let rows = samples::ic_perf_rows(&data)?;
                let all = samples::cifar_labels(&data)?;
                labels = rows[..20].iter().map(|&r| all[r]).collect();
                (
                    samples::ic_inputs(&data, &g, &rows[..20])?,
                    "20 MLPerf IC perf samples (CIFAR-10)",
                )
            }
            "kws" => {
                let (x, y) = samples::kws_inputs(&data, &g, 2)?;
                labels = y;
                (x, "24 Speech Commands test clips (2 per class), MFCC")
            }
            _ => (
                samples::ad_inputs(&data, &g)?,
                "40 log-mel slices of the public AD sample",
            ),
        };
        let reference = runtime_outputs(&g, &inputs, Numerics::Reference)?;
        let litert = runtime_outputs(&g, &inputs, Numerics::LiteRt)?;
        let tflm = tflm_outputs(&data.join(rel), &g, &inputs, &work.join(&m).join("tflm"))?;
        let t = Target::by_name("cortex-m4").ok_or("no cortex-m4")?;
        let gen = compile(&g, t)?;
        let per: usize = g.outputs.iter().map(|&o| gen.plan.sizes[o]).sum();
        let (nd_samples, nd_elems) = differing(&litert, &reference, per);
        // Top-1 of TFLM's outputs on the labelled inputs (a sanity check that the inputs
        // are real: IC images, KWS MFCC features).
        let correct = labels
            .iter()
            .zip(tflm.chunks(per))
            .filter(|(&y, row)| {
                let best = (0..row.len()).fold(0, |b, k| {
                    if (row[k] as i8) > (row[b] as i8) {
                        k
                    } else {
                        b
                    }
                });
                best == y
            })
            .count();
        let dir = work.join(&m).join("gen");
        write_dir(&gen, &dir)?;
        let host_dir = work.join(&m).join("host");
        let exe = harness::build_host(&dir, &host_dir)?;
        let host = harness::run_host(&exe, &inputs, &host_dir)?;
        let (host_diff, _) = differing(&host, &tflm, per);
        let (ref_vs_c, ref_vs_c_elems) = differing(&reference, &host, per);
        let ops: std::collections::BTreeMap<String, usize> =
            g.nodes.iter().fold(Default::default(), |mut acc, n| {
                *acc.entry(n.op.name().to_string()).or_default() += 1;
                acc
            });
        println!(
            "{}",
            json!({"record": "model", "model": m, "file": rel, "inputs": what,
                   "samples": tflm.len() / per, "layers": gen.layers, "ops": ops,
                   "footprint": gen.footprint, "planner_arena_bytes": gen.plan.arena_bytes,
                   "host_samples_differing": host_diff,
                   "reference_vs_c_samples_differing": ref_vs_c,
                   "reference_vs_c_elements_differing": ref_vs_c_elems,
                   "litert_vs_reference_samples_differing": nd_samples,
                   "litert_vs_reference_elements_differing": nd_elems,
                   "elements": reference.len(),
                   "labelled": labels.len(), "top1_correct": correct})
        );
        for core in ["cortex-m4", "cortex-m7"] {
            let t = Target::by_name(core).ok_or("no target")?;
            for dsp in [true, false] {
                let w = work
                    .join(&m)
                    .join(format!("{core}-{}", if dsp { "dsp" } else { "portable" }));
                let b = harness::build_arm(&dir, t, dsp, STACK_BYTES, &w)?;
                let machine = t.qemu().ok_or("no qemu machine")?;
                let r = harness::run_qemu(&b, machine, &inputs, &w, Duration::from_secs(900))?;
                let (diff, _) = differing(&r.outputs, &tflm, per);
                println!(
                    "{}",
                    json!({"record": "run", "model": m, "core": core, "machine": machine, "dsp": dsp,
                           "samples_differing": diff, "image": b.image, "model_objects": b.model,
                           "run": r})
                );
            }
        }
    }
    Ok(())
}
