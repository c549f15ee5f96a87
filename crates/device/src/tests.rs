use super::*;

/// A minimal valid profile; tests break one thing at a time.
const GOOD: &str = r#"
name = "my-board"
class = "iot"
description = "a test board"
core = "cortex-m4f"
clock_hz = { value = 80000000, source = "test datasheet, p. 1" }
ram_bytes = { value = 131072, source = "test datasheet, p. 1" }
flash_bytes = { value = 524288, source = "test datasheet, p. 1" }
active_power = { current_a = 0.01, voltage_v = 3.3, basis = "typical", condition = "run, 80 MHz", source = "test datasheet, table 20" }

[isa]
dsp = true
fpu = "sp"
source = "test"

[codegen]
gcc_flags = ["-mcpu=cortex-m4", "-mthumb"]
qemu_machine = "mps2-an386"

[unknown]
cores = "not given"
"isa.simd_bits" = "not given"
idle_power = "not given"
memory_energy = "not given"
"#;

fn parse(text: &str) -> Result<Device, DeviceError> {
    Device::parse(text, "test.toml")
}

fn err_of(text: &str) -> String {
    match parse(text) {
        Ok(d) => panic!("expected an error, parsed {d:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_profile_parses() {
    let d = parse(GOOD).unwrap();
    assert_eq!(d.name, "my-board");
    assert_eq!(d.ram_bytes.as_ref().unwrap().value, 131072);
    let w = d.active_power.as_ref().unwrap().watts();
    assert!((w - 0.033).abs() < 1e-12, "{w}");
}

#[test]
fn malformed_profiles_are_clear_errors() {
    let cases: &[(&str, String, &str)] = &[
        (
            "unknown field",
            GOOD.replace("core = ", "cpu_core = "),
            "cpu_core",
        ),
        (
            "missing required",
            GOOD.replace("class = \"iot\"\n", ""),
            "class",
        ),
        (
            "negative size",
            GOOD.replace("value = 131072", "value = -131072"),
            "-131072",
        ),
        (
            "zero size",
            GOOD.replace("value = 131072", "value = 0"),
            "ram_bytes.value must be positive",
        ),
        (
            "unit mistake",
            GOOD.replace("value = 80000000", "value = 80"),
            "clock_hz.value = 80 is outside",
        ),
        (
            "empty source",
            GOOD.replace("p. 1\" }\nram", "\" }\nram")
                .replace("source = \"test datasheet, \" }", "source = \" \" }"),
            "clock_hz.source is empty",
        ),
        (
            "bad class",
            GOOD.replace("\"iot\"", "\"toaster\""),
            "toaster",
        ),
        (
            "bad basis",
            GOOD.replace("\"typical\"", "\"nominal\""),
            "nominal",
        ),
        (
            "negative power",
            GOOD.replace("current_a = 0.01", "current_a = -0.01"),
            "current_a must be a positive number",
        ),
        (
            "nan power",
            GOOD.replace("current_a = 0.01", "current_a = nan"),
            "current_a must be a positive number",
        ),
        (
            "power without voltage",
            GOOD.replace("voltage_v = 3.3, ", ""),
            "either watts, or current_a",
        ),
        (
            "unexplained absence",
            GOOD.replace("idle_power = \"not given\"\n", ""),
            "idle_power is missing",
        ),
        (
            "present and unknown",
            GOOD.replace("cores = \"not given\"", "cores = \"x\"\ncore = \"y\""),
            "unknown.core: the field is given",
        ),
        (
            "unknown unknown",
            GOOD.replace("cores = \"not given\"", "cores = \"x\"\nwidth = \"y\""),
            "unknown.width: not an optional field",
        ),
        (
            "flag with space",
            GOOD.replace("\"-mthumb\"", "\"-mthumb -O2\""),
            "not one flag",
        ),
        (
            "bad name",
            GOOD.replace("\"my-board\"", "\"My Board\""),
            "name 'My Board'",
        ),
        ("not toml", "name = ".to_string(), "test.toml"),
        (
            "wrong type",
            GOOD.replace("dsp = true", "dsp = \"yes\""),
            "dsp",
        ),
    ];
    for (what, text, want) in cases {
        let e = err_of(text);
        assert!(
            e.starts_with("test.toml: "),
            "{what}: error does not name the file: {e}"
        );
        assert!(
            e.contains(want),
            "{what}: error '{e}' does not mention '{want}'"
        );
    }
}

#[test]
fn every_builtin_file_parses_and_is_listed() {
    // The list in builtin_files.rs and the folder agree.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = builtin_files::FILES
        .iter()
        .map(|(f, _)| f.to_string())
        .collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "devices/ and crates/device/src/builtin_files.rs disagree"
    );
    for (file, text) in builtin_files::FILES {
        let d = Device::parse(text, file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            format!("{}.toml", d.name),
            *file,
            "a file is named after its device"
        );
    }
    assert_eq!(builtin().len(), builtin_files::FILES.len());
}

#[test]
fn names_and_aliases_are_unique() {
    let mut seen = std::collections::BTreeSet::new();
    for d in builtin() {
        for n in std::iter::once(&d.name).chain(&d.aliases) {
            assert!(
                seen.insert(n.to_ascii_lowercase()),
                "'{n}' names two devices"
            );
            assert!(!is_path(n), "'{n}' would be read as a path");
        }
    }
}

/// Sane ranges per class: a microcontroller has kilobytes to a few megabytes and runs at
/// tens to hundreds of MHz on milliwatts; an application processor has gigabytes, GHz and
/// watts. Wider than any real part, narrow enough to catch a unit slip (Hz vs MHz, KiB vs
/// bytes, mA vs A).
#[test]
fn builtin_figures_are_in_sane_ranges() {
    for d in builtin() {
        let mcu = match d.core.as_deref() {
            Some(c) => c.starts_with("cortex-m"),
            None => d.class == DeviceClass::Iot,
        };
        let n = &d.name;
        if let Some(c) = &d.clock_hz {
            let (lo, hi) = if mcu { (1e6, 1e9) } else { (1e8, 6e9) };
            assert!(
                (lo..=hi).contains(&(c.value as f64)),
                "{n}: clock {}",
                c.value
            );
        }
        if let Some(r) = &d.ram_bytes {
            let (lo, hi) = if mcu {
                (2u64 << 10, 8 << 20)
            } else {
                (64 << 20, 1 << 42)
            };
            assert!((lo..=hi).contains(&r.value), "{n}: ram {}", r.value);
        }
        if let Some(f) = &d.flash_bytes {
            assert!(
                ((16u64 << 10)..=(64 << 20)).contains(&f.value),
                "{n}: flash {}",
                f.value
            );
        }
        if let Some(c) = &d.cores {
            assert!((1..=256).contains(&c.value), "{n}: cores {}", c.value);
        }
        if let Some(s) = &d.isa.simd_bits {
            assert!(
                [32, 64, 128, 256, 512].contains(&s.value),
                "{n}: simd {}",
                s.value
            );
        }
        for p in [&d.active_power, &d.idle_power].into_iter().flatten() {
            let w = p.watts();
            let (lo, hi) = if mcu { (1e-6, 2.0) } else { (1e-3, 2000.0) };
            assert!((lo..=hi).contains(&w), "{n}: power {w} W");
        }
        if let (Some(a), Some(i)) = (&d.active_power, &d.idle_power) {
            assert!(i.watts() < a.watts(), "{n}: idle power above active");
        }
        if let Some(m) = &d.memory_energy {
            assert!(
                (1e-14..=1e-8).contains(&m.joules_per_byte),
                "{n}: memory energy"
            );
        }
        // The DSP paths are Armv7E-M only; a qemu machine needs Arm flags.
        if d.isa.dsp {
            assert!(
                d.codegen
                    .gcc_flags
                    .iter()
                    .any(|f| f == "-mcpu=cortex-m4" || f == "-mcpu=cortex-m7"),
                "{n}"
            );
        }
        if let Some(m) = &d.codegen.qemu_machine {
            assert!(m.starts_with("mps2-"), "{n}: {m}");
        }
    }
}

#[test]
fn legacy_targets_keep_their_budgets() {
    // The former constant table of codegen (crates/codegen/src/target.rs before devices/).
    let kib = 1024u64;
    for (name, ram, flash, dsp, machine) in [
        ("cortex-m0", Some(32 * kib), Some(256 * kib), false, None),
        (
            "cortex-m4",
            Some(256 * kib),
            Some(1024 * kib),
            true,
            Some("mps2-an386"),
        ),
        (
            "cortex-m7",
            Some(320 * kib),
            Some(1024 * kib),
            true,
            Some("mps2-an500"),
        ),
        ("generic", None, None, false, None),
    ] {
        let d = find(name).unwrap();
        assert_eq!(d.ram_bytes.as_ref().map(|f| f.value), ram, "{name}");
        assert_eq!(d.flash_bytes.as_ref().map(|f| f.value), flash, "{name}");
        assert_eq!(d.isa.dsp, dsp, "{name}");
        assert_eq!(d.codegen.qemu_machine.as_deref(), machine, "{name}");
    }
    assert_eq!(find("CORTEX-M4").unwrap().name, "cortex-m4");
    assert_eq!(find("nucleo-l4r5zi").unwrap().name, "stm32l4r5");
}

#[test]
fn resolve_takes_names_and_paths() {
    assert_eq!(resolve("rp2040").unwrap().name, "rp2040");
    let e = resolve("no-such-board").unwrap_err().to_string();
    assert!(
        e.contains("unknown target 'no-such-board'") && e.contains("cortex-m4"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("my-board.toml");
    std::fs::write(&p, GOOD).unwrap();
    assert_eq!(resolve(p.to_str().unwrap()).unwrap().name, "my-board");
    let missing = dir.path().join("absent.toml");
    let e = resolve(missing.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        e.contains("absent.toml") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::write(&p, [0xff, 0xfe, 0x00]).unwrap();
    assert!(resolve(p.to_str().unwrap()).is_err());
}

#[test]
fn memory_check_compares_needs_with_budgets() {
    let d = find("stm32f446").unwrap();
    let c = d.check_memory(128 * 1024, 512 * 1024);
    assert_eq!(
        (c.ram.fits, c.flash.fits, c.fits()),
        (Some(true), Some(true), true)
    );
    let c = d.check_memory(128 * 1024 + 1, 10);
    assert_eq!((c.ram.fits, c.fits()), (Some(false), false));
    let c = find("raspberry-pi-4b").unwrap().check_memory(1, 1 << 40);
    assert_eq!(c.flash.fits, None);
    assert!(c.flash.unknown_why.as_deref().unwrap().contains("microSD"));
    assert!(c.fits());
}
