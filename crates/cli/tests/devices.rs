//! Adding a device is one file: a device profile written to a path is used by
//! `inspect --device PATH` (the model's arena and weights against its budgets) and by
//! `compile --target PATH` (its budgets, flags and name in the footprint); a malformed
//! file is an `error:` naming the file and the field, exit 1, never a panic.

use edgeopt_testkit as tk;
use std::path::Path;
use std::process::{Command, Output};

/// MLPerf Tiny AD (int8): small, and `compile` takes it.
const AD: &str = "mlperf-tiny/benchmark/training/anomaly_detection/trained_models/ad01_int8.tflite";

fn edgeopt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeopt"))
        .args(args)
        .output()
        .expect("run edgeopt")
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn ok_json(out: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn assert_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    // compile prints the footprint before its refusal.
    assert!(
        stderr.lines().any(|l| l.starts_with("error: ")),
        "stderr: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "expected '{n}' in: {stderr}");
    }
}

/// A board that is in no built-in file, with the given RAM and flash budgets.
fn board(ram: u64, flash: u64) -> String {
    format!(
        r#"
name = "test-board"
class = "iot"
description = "a board only this test knows"
core = "cortex-m4f"
clock_hz = {{ value = 100000000, source = "this test" }}
cores = {{ value = 1, source = "this test" }}
ram_bytes = {{ value = {ram}, source = "this test" }}
flash_bytes = {{ value = {flash}, source = "this test" }}
active_power = {{ watts = 0.05, basis = "typical", condition = "run", source = "this test" }}

[isa]
dsp = true
fpu = "sp"
source = "this test"
simd_bits = {{ value = 32, source = "this test" }}

[codegen]
gcc_flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
qemu_machine = "mps2-an386"

[unknown]
idle_power = "not needed here"
memory_energy = "not needed here"
"#
    )
}

#[test]
fn inspect_and_compile_use_a_device_file() {
    let Some(model) = tk::data_file(AD) else {
        return;
    };
    let dir = tk::scratch_dir("devices_cli");
    let model = p(&model);

    // The arena of this model, as inspect reports it without a device.
    let plain = ok_json(&edgeopt(&["inspect", model, "--json"]));
    assert!(
        plain.get("device").is_none(),
        "no device section without --device"
    );
    let arena = plain["memory"]["peak_arena_bytes"].as_u64().unwrap();
    let weights = plain["totals"]["weight_bytes"].as_u64().unwrap()
        + plain["memory"]["folded_bytes"].as_u64().unwrap();
    assert!(arena > 0);

    // Budgets above the needs, then a flash budget one byte short: the file's figures
    // decide. (The AD arena, 768 B, is below the smallest plausible RAM budget, 1 KiB.)
    let ram = arena + 1024;
    for (flash, fits) in [(weights + 1024, true), (weights - 1, false)] {
        let f = dir.join(format!("board-{flash}.toml"));
        std::fs::write(&f, board(ram, flash)).unwrap();
        let r = ok_json(&edgeopt(&["inspect", model, "--device", p(&f), "--json"]));
        let d = &r["device"];
        assert_eq!(d["name"], "test-board");
        assert_eq!(d["from"], p(&f));
        assert_eq!(d["clock_hz"], 100_000_000);
        assert_eq!(d["memory"]["ram"]["budget_bytes"], ram);
        assert_eq!(d["memory"]["ram"]["need_bytes"], arena);
        assert_eq!(d["memory"]["ram"]["fits"], true);
        assert_eq!(d["memory"]["flash"]["need_bytes"], weights);
        assert_eq!(d["memory"]["flash"]["budget_bytes"], flash);
        assert_eq!(d["memory"]["flash"]["fits"], fits);
        assert_eq!(d["fits"], fits);
        // The table says the same.
        let out = edgeopt(&["inspect", model, "--device", p(&f)]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("device: test-board (iot, cortex-m4f, 100 MHz"),
            "{text}"
        );
        let verdict = if fits { "  fits (" } else { "  DOES NOT FIT (" };
        assert!(text.contains(verdict), "{text}");
    }

    // compile takes the same file as its target: its name and budgets in the footprint.
    let f = dir.join("board-big.toml");
    std::fs::write(&f, board(256 * 1024, 1 << 20)).unwrap();
    let out_dir = dir.join("c");
    let fp = ok_json(&edgeopt(&[
        "compile",
        model,
        "--target",
        p(&f),
        "-o",
        p(&out_dir),
        "--json",
    ]));
    assert_eq!(fp["target"], "test-board");
    assert_eq!(fp["ram_budget"], 256 * 1024);
    assert_eq!(fp["flash_budget"], 1_048_576);
    assert!(out_dir.join("model.c").exists());
    let readme = std::fs::read_to_string(out_dir.join("README.md")).unwrap();
    assert!(readme.contains("(target test-board)") && readme.contains("-mfpu=fpv4-sp-d16"));

    // A budget below the model's RAM need (arena + scratch + stack) is refused and
    // nothing is written.
    let f = dir.join("board-tiny.toml");
    std::fs::write(&f, board(1024, 1 << 20)).unwrap();
    let refused = dir.join("c-refused");
    assert_error(
        &edgeopt(&["compile", model, "--target", p(&f), "-o", p(&refused)]),
        &["does not fit test-board"],
    );
    assert!(!refused.exists());

    // Built-in names and aliases still work.
    let r = ok_json(&edgeopt(&[
        "inspect",
        model,
        "--device",
        "NUCLEO-L4R5ZI",
        "--json",
    ]));
    assert_eq!(r["device"]["name"], "stm32l4r5");
    assert_eq!(r["device"]["from"], "built-in");
}

#[test]
fn malformed_device_files_are_errors() {
    let dir = tk::scratch_dir("devices_cli_bad");
    // The model is read after the device, so no data is needed to see these errors.
    let model = p(&dir.join("absent.tflite")).to_string();
    let good = board(65536, 1 << 20);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown field",
            good.replace("core = ", "chip = "),
            vec!["unknown field `chip`"],
        ),
        (
            "missing field",
            good.replace("class = \"iot\"\n", ""),
            vec!["missing field `class`"],
        ),
        (
            "negative size",
            good.replace("value = 65536", "value = -65536"),
            vec!["ram_bytes", "-65536"],
        ),
        (
            "zero size",
            good.replace("value = 65536", "value = 0"),
            vec!["ram_bytes.value must be positive"],
        ),
        (
            "no source",
            good.replace("idle_power = \"not needed here\"\n", ""),
            vec!["idle_power is missing"],
        ),
        ("not toml", "[[[".to_string(), vec!["TOML parse error"]),
    ];
    for (what, text, needles) in cases {
        let f = dir.join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&f, text).unwrap();
        let mut want = needles.clone();
        want.push(p(&f));
        let out = edgeopt(&["inspect", &model, "--device", p(&f)]);
        assert_error(&out, &want);
        let out = edgeopt(&[
            "compile",
            &model,
            "--target",
            p(&f),
            "-o",
            p(&dir.join("o")),
        ]);
        assert_error(&out, &want);
    }
    let missing = dir.join("no-such-file.toml");
    assert_error(
        &edgeopt(&["inspect", &model, "--device", p(&missing)]),
        &["no-such-file.toml", "cannot read"],
    );
    assert_error(
        &edgeopt(&["inspect", &model, "--device", "cortex-m99"]),
        &["unknown target 'cortex-m99'", "stm32l4r5"],
    );
}
