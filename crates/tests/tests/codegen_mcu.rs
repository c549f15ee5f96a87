//! `edgeopt compile` (crates/codegen): the generated C is bit-exact with TensorFlow Lite
//! Micro on the three MLPerf Tiny int8 models, on the host (gcc -std=c99 -Wall -Wextra
//! -Werror) and on emulated Cortex-M4 (qemu mps2-an386) and Cortex-M7 (mps2-an500), with
//! the DSP (SMLAD) path and with the portable path.
//!
//! Reference: TFLite Micro's interpreter (`scripts/oracle/tflm_run.py`, the `tflm`
//! numerics of DESIGN.md). Not edgeopt's runtime: its `Numerics::Reference` follows
//! LiteRT's reference kernels, whose FULLY_CONNECTED rounds the requantization once where
//! TFLM (and the C) round twice, so on AD the two differ on every sample (see
//! codegen_vs_tflm.rs). Inputs are real: 20 MLPerf IC perf samples (CIFAR-10), 24 Speech
//! Commands clips (2 per class) through an MFCC front end for KWS, the 40 slices of the
//! public AD sample.
//!
//! Without arm-none-eabi-gcc / qemu-system-arm the qemu tests print that they skipped,
//! except under EDGEOPT_REQUIRE_DATA=1 (CI), where that fails; likewise without the
//! tflite_micro Python package.

use edgeopt_codegen::{compile, write_dir, Target, STACK_BYTES};
use edgeopt_ir::Graph;
use edgeopt_testkit::{data_dir, scratch_dir, tflm_available};
use edgeopt_tests::{harness, samples};
use std::path::Path;
use std::time::Duration;

/// The model's file, the model and its real inputs (int8 bytes, back to back).
fn model_and_inputs(data: &Path, which: &str) -> (&'static str, Graph, Vec<u8>) {
    let rel = match which {
        "ic" => samples::IC,
        "kws" => samples::KWS,
        _ => samples::AD,
    };
    let g = edgeopt_tflite::import_file(data.join(rel)).expect("import");
    let inputs = match which {
        "ic" => {
            let rows = samples::ic_perf_rows(data).unwrap();
            samples::ic_inputs(data, &g, &rows[..20]).unwrap()
        }
        "kws" => samples::kws_inputs(data, &g, 2).unwrap().0,
        _ => samples::ad_inputs(data, &g).unwrap(),
    };
    (rel, g, inputs)
}

/// TFLite Micro on each sample of `model` (relative to `data`); outputs back to back.
fn tflm_outputs(data: &Path, rel: &str, g: &Graph, inputs: &[u8], work: &Path) -> Vec<u8> {
    let shape = edgeopt_ir::shape::bind_input_shapes(g, 1)
        .unwrap()
        .remove(0);
    edgeopt_tests::tflm::outputs(&data.join(rel), &shape[1..], inputs, work)
}

fn generate(g: &Graph, target: &str, dir: &Path) -> edgeopt_codegen::Generated {
    let gen = compile(g, Target::by_name(target).unwrap()).expect("compile");
    write_dir(&gen, dir).expect("write");
    gen
}

fn assert_same(what: &str, got: &[u8], want: &[u8], per_sample: usize) {
    assert_eq!(got.len(), want.len(), "{what}: output length");
    let bad: Vec<usize> = (0..want.len() / per_sample)
        .filter(|&i| {
            got[i * per_sample..(i + 1) * per_sample] != want[i * per_sample..(i + 1) * per_sample]
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} samples differ from TFLite Micro (first: {:?})",
        bad.len(),
        want.len() / per_sample,
        &bad[..bad.len().min(5)]
    );
}

fn out_per_sample(gen: &edgeopt_codegen::Generated, g: &Graph) -> usize {
    g.outputs.iter().map(|&o| gen.plan.sizes[o]).sum()
}

#[test]
fn host_gcc_bitexact_three_models() {
    let Some(data) = data_dir() else { return };
    if !tflm_available() {
        return;
    }
    if harness::host_cc().is_none() {
        panic!("no host C compiler");
    }
    for which in ["ic", "kws", "ad"] {
        let (rel, g, inputs) = model_and_inputs(&data, which);
        let work = scratch_dir(&format!("codegen_mcu/host-{which}"));
        let want = tflm_outputs(&data, rel, &g, &inputs, &work.join("tflm"));
        let gen = generate(&g, "generic", &work.join("gen"));
        let exe = harness::build_host(&work.join("gen"), &work.join("build")).unwrap();
        let got = harness::run_host(&exe, &inputs, &work.join("build")).unwrap();
        let per = out_per_sample(&gen, &g);
        assert_same(&format!("{which} host"), &got, &want, per);
        eprintln!(
            "{which}: host gcc bit-exact on {} samples",
            want.len() / per
        );
    }
}

/// Builds for `core` (DSP on/off), runs on qemu, compares with TFLite Micro.
fn qemu_check(which: &str, cores: &[(&str, bool)]) {
    let Some(data) = data_dir() else { return };
    if !edgeopt_tests::arm_toolchain() || !tflm_available() {
        return;
    }
    let (rel, g, inputs) = model_and_inputs(&data, which);
    let work = scratch_dir(&format!("codegen_mcu/qemu-{which}"));
    let want = tflm_outputs(&data, rel, &g, &inputs, &work.join("tflm"));
    let gen = generate(&g, "cortex-m4", &work.join("gen"));
    let per = out_per_sample(&gen, &g);
    for &(core, dsp) in cores {
        let t = Target::by_name(core).unwrap();
        let w = work.join(format!("{core}-{}", if dsp { "dsp" } else { "portable" }));
        let b = harness::build_arm(&work.join("gen"), t, dsp, STACK_BYTES, &w).unwrap();
        let r = harness::run_qemu(&b, t.qemu().unwrap(), &inputs, &w, Duration::from_secs(300))
            .unwrap();
        assert_eq!(r.samples as usize * per, want.len());
        assert_same(&format!("{which} {core} dsp={dsp}"), &r.outputs, &want, per);
        // The clock calibration is what turns ticks into instructions: it must be exact.
        assert_eq!(r.calib_instructions % r.calib_ticks, 0, "{r:?}");
        if core == "cortex-m4" {
            // The cost model (fitted on half of the exporter corpus, never on these
            // models: crates/search/data/cortex-m4.json) within 10% of qemu's count.
            let (_, p) = edgeopt_search::predict_instructions(&g, dsp).unwrap();
            let m = r.instructions_per_inference;
            let e = (p - m) / m;
            eprintln!(
                "{which} dsp={dsp}: cost model {p:.0} vs qemu {m:.0} ({:+.1}%)",
                100.0 * e
            );
            assert!(
                e.abs() < 0.10,
                "{which} dsp={dsp}: predicted {p:.0}, qemu {m:.0}"
            );
        }
        eprintln!(
            "{which} on {core} (dsp {dsp}): {} samples bit-exact; text {} data {} bss {}; \
             {:.0} instructions/inference",
            r.samples, b.image.text, b.image.data, b.image.bss, r.instructions_per_inference
        );
    }
}

const ALL_CORES: &[(&str, bool)] = &[
    ("cortex-m4", true),
    ("cortex-m4", false),
    ("cortex-m7", true),
    ("cortex-m7", false),
];

#[test]
fn qemu_ic_bitexact_m4_m7() {
    qemu_check("ic", ALL_CORES);
}

#[test]
fn qemu_kws_bitexact_m4_m7() {
    qemu_check("kws", ALL_CORES);
}

#[test]
fn qemu_ad_bitexact_m4_m7() {
    qemu_check("ad", ALL_CORES);
}

/// Top-1 over the 200 MLPerf perf samples on the emulated Cortex-M4 equals TFLite
/// Micro's, prediction for prediction (and every output byte).
#[test]
fn qemu_ic_accuracy_200_perf_samples() {
    let Some(data) = data_dir() else { return };
    if !edgeopt_tests::arm_toolchain() || !tflm_available() {
        return;
    }
    let g = edgeopt_tflite::import_file(data.join(samples::IC)).unwrap();
    let rows = samples::ic_perf_rows(&data).unwrap();
    assert_eq!(rows.len(), 200);
    let labels = samples::cifar_labels(&data).unwrap();
    let inputs = samples::ic_inputs(&data, &g, &rows).unwrap();
    let work = scratch_dir("codegen_mcu/ic-accuracy");
    let want = tflm_outputs(&data, samples::IC, &g, &inputs, &work.join("tflm"));
    let gen = generate(&g, "cortex-m4", &work.join("gen"));
    let t = Target::by_name("cortex-m4").unwrap();
    let b = harness::build_arm(&work.join("gen"), t, true, STACK_BYTES, &work.join("m4")).unwrap();
    let r = harness::run_qemu(
        &b,
        "mps2-an386",
        &inputs,
        &work.join("m4"),
        Duration::from_secs(300),
    )
    .unwrap();
    let per = out_per_sample(&gen, &g);
    assert_eq!(per, 10);
    let argmax = |v: &[u8]| -> Vec<usize> {
        v.chunks_exact(per)
            .map(|row| {
                let mut best = 0;
                for k in 1..per {
                    if (row[k] as i8) > (row[best] as i8) {
                        best = k;
                    }
                }
                best
            })
            .collect()
    };
    let (pm, ph) = (argmax(&r.outputs), argmax(&want));
    let correct = |p: &[usize]| {
        p.iter()
            .zip(&rows)
            .filter(|(&p, &r)| p == labels[r])
            .count()
    };
    let (cm, ch) = (correct(&pm), correct(&ph));
    eprintln!("IC 200 perf samples: Cortex-M4 {cm}/200, TFLite Micro {ch}/200");
    assert_eq!(pm, ph, "predictions differ");
    assert_same("ic 200 perf samples cortex-m4", &r.outputs, &want, per);
    assert_eq!(cm, ch);
    // A working classifier, not a constant: the reference int8 model scores ~87%.
    assert!(cm > 150, "only {cm}/200 correct");
}

/// IC fits the budget (256 KiB RAM, 1 MiB flash) with the arena equal to the
/// planner's peak; the Arm image links with exactly that memory.
#[test]
fn ic_fits_cortex_m4_budget() {
    let Some(data) = data_dir() else { return };
    let g = edgeopt_tflite::import_file(data.join(samples::IC)).unwrap();
    let work = scratch_dir("codegen_mcu/ic-fit");
    let gen = generate(&g, "cortex-m4", &work.join("gen"));
    let plan = edgeopt_runtime::planner::plan_for_batch(&g, 1).unwrap();
    let fp = &gen.footprint;
    eprint!("{}", fp.render());
    assert_eq!(fp.arena_bytes, plan.arena_bytes as u64);
    fp.check().expect("IC fits cortex-m4");
    assert!(fp.ram_bytes <= 256 * 1024 && fp.flash_bytes <= 1024 * 1024);
    let model_c = std::fs::read_to_string(work.join("gen/model.c")).unwrap();
    assert!(model_c.contains("static uint8_t eo_arena[EDGEOPT_ARENA_BYTES]"));
    let model_h = std::fs::read_to_string(work.join("gen/model.h")).unwrap();
    assert!(model_h.contains(&format!(
        "#define EDGEOPT_ARENA_BYTES {}\n",
        plan.arena_bytes
    )));
    if !edgeopt_tests::arm_toolchain() {
        return;
    }
    let t = Target::by_name("cortex-m4").unwrap();
    let b = harness::build_arm(&work.join("gen"), t, true, STACK_BYTES, &work.join("m4")).unwrap();
    eprintln!(
        "IC cortex-m4 image: {:?}; model objects: {:?}",
        b.image, b.model
    );
    // The linker placed everything within FLASH = 1 MiB and RAM = 256 KiB (minus the
    // stack estimate); the model's own .bss is the arena plus the scratch.
    assert!(b.image.text + b.image.data <= 1024 * 1024);
    assert!(b.image.data + b.image.bss + STACK_BYTES <= 256 * 1024);
    assert!(b.model.bss >= fp.arena_bytes && b.model.bss <= fp.arena_bytes + fp.scratch_bytes + 32);
}

/// `edgeopt compile` (the library function behind the command) refuses a model too
/// large for the target, naming budget and need, and writes nothing; with enough room
/// it writes the five files.
#[test]
fn cli_compile_refuses_too_large_model() {
    use edgeopt_cli::compile::{compile_command, CompileArgs};
    let Some(data) = data_dir() else { return };
    let work = scratch_dir("codegen_mcu/cli");
    let out = work.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let args = |model: &str, target: &str, max_ram: Option<u64>| CompileArgs {
        model: data.join(model),
        target: target.into(),
        output: out.clone(),
        max_ram,
        max_flash: None,
        json: false,
    };
    // AD has ~278 KB of weights: more than the Cortex-M0 profile's 256 KiB of flash.
    let e = compile_command(&args(samples::AD, "cortex-m0", None)).unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("{msg}");
    assert!(msg.contains("does not fit cortex-m0"), "{msg}");
    assert!(
        msg.contains("flash needs") && msg.contains("budget is 262144 B"),
        "{msg}"
    );
    assert!(
        !out.exists(),
        "nothing may be written when the model does not fit"
    );
    // IC's arena (48 KiB) exceeds an explicit 32 KiB RAM budget.
    let e = compile_command(&args(samples::IC, "cortex-m4", Some(32768))).unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("{msg}");
    assert!(
        msg.contains("RAM needs") && msg.contains("budget is 32768 B"),
        "{msg}"
    );
    assert!(!out.exists());
    // Unknown targets are named.
    let e = compile_command(&args(samples::IC, "cortex-m99", None)).unwrap_err();
    assert!(format!("{e:#}").contains("unknown target"));
    // And IC compiles for the Cortex-M4 budget.
    let fp = compile_command(&args(samples::IC, "cortex-m4", None)).unwrap();
    assert!(fp.ram_bytes <= 256 * 1024);
    for f in [
        "model.h",
        "model.c",
        "edgeopt_kernels.c",
        "edgeopt_kernels.h",
        "README.md",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
}
