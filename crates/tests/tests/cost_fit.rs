//! The cost model's fitting program (ignored: run it by hand when the C kernels or the
//! code generator change):
//!
//! ```text
//! cargo test --release -p edgeopt-tests --test cost_fit -- --ignored --nocapture
//! ```
//!
//! For every model that compiles and fits a Cortex-M4 (the MLPerf Tiny int8 IC, KWS and
//! AD models, and every file of ../shared/data/exporters as the corpus test quantizes
//! it), on both kernel paths (DSP and portable, `-DEO_NO_DSP`): builds the generated C
//! twice, plain and with `-DEDGEOPT_PROFILE` (the harness reads SysTick after every
//! layer), runs both on qemu mps2-an386 with `-icount shift=0`, and records the plain
//! instructions per inference and each layer's instructions with its features. The
//! corpus models, sorted by name, alternate between the fit set (even positions) and the
//! held-out set (odd); the MLPerf models are all held out. Writes
//! `crates/search/data/cortex-m4.measurements.json.gz` (the raw data),
//! `crates/search/data/cortex-m4.json` (the constants, [`edgeopt_search::fit::fit`]) and
//! `bench/results/cost_model.md` (predicted vs measured, every model and path).

use edgeopt_cli::quantize::{quantize_command, QuantizeArgs};
use edgeopt_codegen::{compile, write_dir, Target, STACK_BYTES};
use edgeopt_ir::{Graph, Tensor, TensorData};
use edgeopt_search::features;
use edgeopt_search::fit::{self, KernelPath, MeasuredLayer, Measurements, ModelMeasurement};
use edgeopt_testkit as tk;
use edgeopt_tests::{harness, samples};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Model {
    name: String,
    graph: Graph,
    inputs: Vec<u8>,
    set: &'static str,
}

fn input_bytes(x: &Tensor) -> Option<Vec<u8>> {
    match &x.data {
        TensorData::I8(v) => Some(v.iter().map(|&b| b as u8).collect()),
        TensorData::F32(v) => Some(v.iter().flat_map(|f| f.to_le_bytes()).collect()),
        _ => None,
    }
}

/// The corpus models as the corpus test compiles them (quantized float files, and the
/// converter's own int8 files), that compile for and fit a Cortex-M4.
fn corpus(data: &Path, dir: &Path) -> Vec<Model> {
    let m4 = Target::by_name("cortex-m4").unwrap();
    let mut out = Vec::new();
    for e in tk_entries(data) {
        let path = e.path(data);
        let stem = e.name().replace('.', "_");
        let (file, x) = if e.is_float32() {
            let Some(calib) = e.calib.clone() else {
                continue;
            };
            let tfl = dir.join(format!("{stem}.tflite"));
            let q = quantize_command(&QuantizeArgs {
                output: Some(tfl.clone()),
                ..QuantizeArgs::new(&path, &calib)
            });
            if q.is_err() {
                continue;
            }
            (
                tfl,
                e.input_float.clone().unwrap_or_else(|| e.input.clone()),
            )
        } else if e.format == "tflite" {
            // A quantized file as the converter wrote it (int8 inputs: checked below).
            (path.clone(), e.input.clone())
        } else {
            continue;
        };
        let Ok(g) = edgeopt_cli::load_model(&file) else {
            continue;
        };
        if g.inputs.len() != 1
            || (!e.is_float32() && g.values[g.inputs[0]].dtype != edgeopt_ir::DType::I8)
        {
            continue;
        }
        let Ok(gen) = compile(&g, m4) else { continue };
        if gen.footprint.check().is_err() {
            continue;
        }
        let Ok(xt) = edgeopt_npy::read(&x) else {
            continue;
        };
        let Some(inputs) = input_bytes(&xt) else {
            continue;
        };
        out.push(Model {
            name: e.name().to_string(),
            graph: g,
            inputs,
            set: "",
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    for (i, m) in out.iter_mut().enumerate() {
        m.set = if i % 2 == 0 { "fit" } else { "check" };
    }
    out
}

fn tk_entries(data: &Path) -> Vec<edgeopt_tests::exporters::Entry> {
    edgeopt_tests::exporters::entries(data)
}

fn mlperf(data: &Path) -> Vec<Model> {
    let mut out = Vec::new();
    for (name, rel) in [
        ("ic", samples::IC),
        ("kws", samples::KWS),
        ("ad", samples::AD),
    ] {
        let g = edgeopt_tflite::import_file(data.join(rel)).expect("import");
        let inputs = match name {
            "ic" => {
                let rows = samples::ic_perf_rows(data).unwrap();
                samples::ic_inputs(data, &g, &rows[..5]).unwrap()
            }
            "kws" => samples::kws_inputs(data, &g, 1).unwrap().0,
            _ => samples::ad_inputs(data, &g).unwrap(),
        };
        out.push(Model {
            name: format!("mlperf-{name}"),
            graph: g,
            inputs,
            set: "check",
        });
    }
    out
}

fn run(dir: &Path, m: &Model, dsp: bool, profile: bool) -> harness::QemuRun {
    let m4 = Target::by_name("cortex-m4").unwrap();
    let gen_dir = dir.join("gen");
    let w = dir.join(format!(
        "{}-{}",
        KernelPath::of(dsp).name(),
        if profile { "prof" } else { "plain" }
    ));
    let flags: &[&str] = if profile { &["-DEDGEOPT_PROFILE"] } else { &[] };
    let b = harness::build_arm_with(&gen_dir, m4, dsp, STACK_BYTES, &w, flags).unwrap();
    harness::run_qemu(
        &b,
        m4.qemu().unwrap(),
        &m.inputs,
        &w,
        Duration::from_secs(600),
    )
    .unwrap()
}

fn cmd(c: &str, args: &[&str]) -> String {
    std::process::Command::new(c)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
#[ignore]
fn fit_cost_model() {
    let data = tk::data_dir().expect("../shared/data");
    assert!(
        edgeopt_tests::arm_toolchain(),
        "arm-none-eabi-gcc and qemu-system-arm"
    );
    let dir = tk::scratch_dir("cost_fit");
    let mut models = mlperf(&data);
    models.extend(corpus(&data, &dir));
    let m4 = Target::by_name("cortex-m4").unwrap();
    let mut ms = Vec::new();
    for m in &models {
        let mdir = dir.join(&m.name);
        let gen = compile(&m.graph, m4).unwrap();
        write_dir(&gen, &mdir.join("gen")).unwrap();
        let layers = features::layers(&m.graph, &gen.plan).unwrap();
        assert_eq!(
            layers.len(),
            gen.layers,
            "{}: one feature row per generated layer",
            m.name
        );
        for dsp in [true, false] {
            let plain = run(&mdir, m, dsp, false);
            let prof = run(&mdir, m, dsp, true);
            assert_eq!(prof.layer_ticks.len(), layers.len(), "{}", m.name);
            let per = |t: u64| t as f64 * prof.instructions_per_tick / prof.samples as f64;
            let measured: Vec<MeasuredLayer> = layers
                .iter()
                .zip(&prof.layer_ticks)
                .map(|(f, &t)| MeasuredLayer {
                    features: f.clone(),
                    instructions: per(t),
                })
                .collect();
            let profiled = measured.iter().map(|l| l.instructions).sum();
            eprintln!(
                "{} {}: {:.0} instructions/inference ({} samples), profiled {:.0}",
                m.name,
                KernelPath::of(dsp).name(),
                plain.instructions_per_inference,
                plain.samples,
                profiled
            );
            ms.push(ModelMeasurement {
                model: m.name.clone(),
                set: m.set.to_string(),
                path: KernelPath::of(dsp),
                samples: plain.samples,
                instructions: plain.instructions_per_inference,
                profiled_instructions: profiled,
                layers: measured,
            });
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let meas = Measurements {
        core: "cortex-m4".into(),
        qemu_machine: m4.qemu().unwrap().into(),
        date: cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
            .trim()
            .to_string(),
        host_cpu: cpu,
        command: "cargo test --release -p edgeopt-tests --test cost_fit -- --ignored --nocapture"
            .into(),
        toolchain: format!(
            "{}; {}",
            cmd("arm-none-eabi-gcc", &["--version"])
                .lines()
                .next()
                .unwrap_or(""),
            cmd("qemu-system-arm", &["--version"])
                .lines()
                .next()
                .unwrap_or("")
        ),
        models: ms,
    };
    let c = fit::fit(&meas);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data_dir = root.join("crates/search/data");
    // Compact and gzipped: the per-layer counts of 49 models x 2 paths are 10.9 MB
    // pretty-printed, 4.0 MB compact, 140 kB gzipped (`zcat` reads it).
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, serde_json::to_string(&meas).unwrap().as_bytes()).unwrap();
    std::fs::write(
        data_dir.join("cortex-m4.measurements.json.gz"),
        gz.finish().unwrap(),
    )
    .unwrap();
    std::fs::write(
        data_dir.join("cortex-m4.json"),
        serde_json::to_string_pretty(&c).unwrap() + "\n",
    )
    .unwrap();
    // Predicted vs measured with the new constants.
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Cost model: predicted vs measured instructions per inference (Cortex-M4)\n\n\
         Measured: {} on {} (host CPU: {}).\nCommand: `{}`.\nToolchain: {}.\n\n\
         Measured = executed instructions per inference of the generated C (gcc -O2) under \
         qemu `-icount shift=0`, mean over the samples. Predicted = the per-kernel instruction \
         model of crates/search (constants in crates/search/data/cortex-m4.json) on the \
         model's layer features. Fit set: {}. Held out: {}.\n",
        meas.date,
        meas.qemu_machine,
        meas.host_cpu,
        meas.command,
        meas.toolchain,
        c.fitted_on.join(", "),
        c.held_out.join(", ")
    );
    let _ = writeln!(
        md,
        "| model | set | path | layers | measured | predicted | error |\n|---|---|---|---:|---:|---:|---:|"
    );
    let mut worst: f64 = 0.0;
    for m in &meas.models {
        let g = &models.iter().find(|x| x.name == m.model).unwrap().graph;
        let (_, p) =
            edgeopt_search::cost::predict_instructions_with(&c, g, m.path == KernelPath::Dsp)
                .unwrap();
        let e = (p - m.instructions) / m.instructions;
        if m.set == "check" {
            worst = worst.max(e.abs());
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:+.1}% |",
            m.model,
            m.set,
            m.path.name(),
            m.layers.len(),
            m.instructions,
            p,
            100.0 * e
        );
    }
    let _ = writeln!(md, "\nWorst held-out error: {:.1}%.\n", 100.0 * worst);
    // MLPerf Tiny: predicted ms at 120 MHz vs the closed-division results on NUCLEO-L4R5ZI.
    let _ = writeln!(
        md,
        "## MLPerf Tiny on NUCLEO-L4R5ZI (STM32L4R5, Cortex-M4F, 120 MHz)\n\n\
         Predicted ms = predicted instructions x CPI {} / 120 MHz (DSP path, the profile \
         stm32l4r5). MLPerf Tiny v1.3 closed division: ST X-CUBE-AI 10.2; TFLite Micro: the \
         2021 reference submission (v0.5). Those are measured on the board (flash wait states, \
         real pipeline): the ratio is the board's effective CPI relative to ours.\n\n\
         | model | predicted instructions | predicted ms | X-CUBE-AI ms | TFLM reference ms | TFLM / predicted |\n|---|---:|---:|---:|---:|---:|",
        edgeopt_search::cost::CPI
    );
    for (name, xcube, tflm) in [
        ("mlperf-kws", 43.4, 181.9),
        ("mlperf-ic", 165.7, 704.2),
        ("mlperf-ad", 4.8, 10.05),
    ] {
        let g = &models.iter().find(|x| x.name == name).unwrap().graph;
        let (_, p) = edgeopt_search::cost::predict_instructions_with(&c, g, true).unwrap();
        let ms = p * edgeopt_search::cost::CPI / 120e6 * 1e3;
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1} | {} | {} | {:.2} |",
            name,
            p,
            ms,
            xcube,
            tflm,
            tflm / ms
        );
    }
    std::fs::write(root.join("bench/results/cost_model.md"), md).unwrap();
    eprintln!("worst held-out error {:.1}%", 100.0 * worst);
}
