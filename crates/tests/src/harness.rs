//! Verification harness: builds generated code with the host gcc or with
//! arm-none-eabi-gcc for the qemu mps2 boards, runs it on a file of inputs and returns
//! the outputs, the section sizes and the instruction counts (the C side is
//! `scripts/mcu/harness.c` + `startup.c`). Used by the tests and by `bench/codegen.py`.
//!
//! Instruction counts: qemu runs with `-icount shift=0`, so each executed instruction
//! advances virtual time by exactly 1 ns; SysTick (processor clock, 25 MHz on these
//! boards) counts virtual time, so one tick is a fixed number of instructions. The
//! harness measures that ratio on a loop of known length (`subs`/`bne`, 2 instructions
//! per iteration) and every inference's ticks are converted with it. Resolution: one
//! tick (40 instructions) per reading.

use edgeopt_codegen::Target;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for HarnessError {}

pub type Result<T> = std::result::Result<T, HarnessError>;

fn err(msg: impl Into<String>) -> HarnessError {
    HarnessError(msg.into())
}

/// `scripts/mcu` of this workspace (startup code, linker script, harness).
pub fn mcu_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mcu")
}

fn works(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the host C compiler (`$CC` or `gcc`) runs.
pub fn host_cc() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    works(&cc, "--version").then_some(cc)
}

/// Whether arm-none-eabi-gcc (with newlib headers), arm-none-eabi-size and
/// qemu-system-arm are installed.
pub fn arm_toolchain_available() -> bool {
    works("arm-none-eabi-gcc", "--version")
        && works("arm-none-eabi-size", "--version")
        && works("qemu-system-arm", "--version")
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| err(format!("{what}: cannot run {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the generated model in `gen_dir` with the host compiler and the strict
/// flags of the issue (`-std=c99 -Wall -Wextra -Werror`). Returns the executable.
pub fn build_host(gen_dir: &Path, work: &Path) -> Result<PathBuf> {
    let cc = host_cc().ok_or_else(|| err("no host C compiler (gcc or $CC)"))?;
    std::fs::create_dir_all(work).map_err(|e| err(format!("{}: {e}", work.display())))?;
    let exe = work.join("harness-host");
    let mcu = mcu_dir();
    run_checked(
        Command::new(&cc)
            .args([
                "-std=c99",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-O2",
                "-DEO_HOST",
            ])
            .arg("-I")
            .arg(gen_dir)
            .arg(gen_dir.join("model.c"))
            .arg(gen_dir.join("edgeopt_kernels.c"))
            .arg(mcu.join("harness.c"))
            .arg("-o")
            .arg(&exe),
        "host gcc",
    )?;
    Ok(exe)
}

/// Runs the host harness on `inputs` (samples back to back) and returns the outputs.
pub fn run_host(exe: &Path, inputs: &[u8], work: &Path) -> Result<Vec<u8>> {
    let fi = work.join("inputs.bin");
    let fo = work.join("outputs.bin");
    std::fs::write(&fi, inputs).map_err(|e| err(format!("{}: {e}", fi.display())))?;
    run_checked(Command::new(exe).arg(&fi).arg(&fo), "host harness")?;
    std::fs::read(&fo).map_err(|e| err(format!("{}: {e}", fo.display())))
}

/// Section sizes (arm-none-eabi-size, Berkeley format).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Sizes {
    pub text: u64,
    pub data: u64,
    pub bss: u64,
}

/// An Arm build of the harness.
#[derive(Debug, Clone)]
pub struct ArmBuild {
    pub elf: PathBuf,
    /// The whole image (model + kernels + harness + start-up).
    pub image: Sizes,
    /// model.o + edgeopt_kernels.o only: what the model adds to a firmware.
    pub model: Sizes,
    pub dsp: bool,
}

fn parse_size(out: &str) -> Result<Sizes> {
    // "   text    data     bss     dec     hex filename" then one line per file (and a
    // total line with -t).
    let mut total = Sizes::default();
    let mut rows = 0;
    for line in out.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || line.contains("(TOTALS)") {
            continue;
        }
        let p = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| err(format!("size output: {line}")))
        };
        total.text += p(f[0])?;
        total.data += p(f[1])?;
        total.bss += p(f[2])?;
        rows += 1;
    }
    if rows == 0 {
        return Err(err(format!("unexpected size output:\n{out}")));
    }
    Ok(total)
}

/// Builds the generated model for `target` (a Cortex-M with a qemu machine) with
/// arm-none-eabi-gcc -O2, linked with the target's flash and RAM budget as memory
/// sizes (the link fails if the image does not fit). `dsp = false` defines
/// `EO_NO_DSP` to force the portable kernels.
pub fn build_arm(
    gen_dir: &Path,
    target: &Target,
    dsp: bool,
    stack_bytes: u64,
    work: &Path,
) -> Result<ArmBuild> {
    build_arm_with(gen_dir, target, dsp, stack_bytes, work, &[])
}

/// [`build_arm`] with extra compiler flags (e.g. `-DEDGEOPT_PROFILE` for per-layer ticks).
pub fn build_arm_with(
    gen_dir: &Path,
    target: &Target,
    dsp: bool,
    stack_bytes: u64,
    work: &Path,
    extra_flags: &[&str],
) -> Result<ArmBuild> {
    if target.gcc_flags.is_empty() {
        return Err(err(format!(
            "target {} has no Arm compiler flags",
            target.name
        )));
    }
    std::fs::create_dir_all(work).map_err(|e| err(format!("{}: {e}", work.display())))?;
    let mcu = mcu_dir();
    let ld_in = std::fs::read_to_string(mcu.join("link.ld.in"))
        .map_err(|e| err(format!("link.ld.in: {e}")))?;
    let ld = ld_in
        .replace(
            "@FLASH@",
            &target.flash_bytes.unwrap_or(4 << 20).to_string(),
        )
        .replace("@RAM@", &target.ram_bytes.unwrap_or(4 << 20).to_string())
        .replace("@STACK@", &stack_bytes.to_string());
    let ld_path = work.join("link.ld");
    std::fs::write(&ld_path, ld).map_err(|e| err(format!("{}: {e}", ld_path.display())))?;
    let mut flags: Vec<String> = target.gcc_flags.iter().map(|s| s.to_string()).collect();
    flags.extend(
        [
            "-std=c99",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-ffunction-sections",
            "-fdata-sections",
        ]
        .map(String::from),
    );
    if !dsp {
        flags.push("-DEO_NO_DSP".into());
    }
    flags.extend(extra_flags.iter().map(|s| s.to_string()));
    let mut objs = Vec::new();
    for (src, dir) in [
        ("model.c", gen_dir),
        ("edgeopt_kernels.c", gen_dir),
        ("harness.c", mcu.as_path()),
        ("startup.c", mcu.as_path()),
    ] {
        let obj = work.join(src.replace(".c", ".o"));
        run_checked(
            Command::new("arm-none-eabi-gcc")
                .args(&flags)
                .arg("-I")
                .arg(gen_dir)
                .arg("-I")
                .arg(&mcu)
                .arg("-c")
                .arg(dir.join(src))
                .arg("-o")
                .arg(&obj),
            &format!("arm-none-eabi-gcc {src}"),
        )?;
        objs.push(obj);
    }
    let elf = work.join("harness.elf");
    run_checked(
        Command::new("arm-none-eabi-gcc")
            .args(&flags)
            .args([
                "-nostartfiles",
                "-Wl,--gc-sections",
                "--specs=nano.specs",
                "--specs=nosys.specs",
            ])
            .arg(format!("-T{}", ld_path.display()))
            .args(&objs)
            .arg("-o")
            .arg(&elf),
        "arm-none-eabi-gcc link",
    )?;
    let image = parse_size(&run_checked(
        Command::new("arm-none-eabi-size").arg(&elf),
        "size",
    )?)?;
    let model = parse_size(&run_checked(
        Command::new("arm-none-eabi-size")
            .arg(&objs[0])
            .arg(&objs[1]),
        "size",
    )?)?;
    Ok(ArmBuild {
        elf,
        image,
        model,
        dsp,
    })
}

/// Outputs and instruction counts of one qemu run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QemuRun {
    #[serde(skip)]
    pub outputs: Vec<u8>,
    pub samples: u64,
    pub calib_instructions: u64,
    pub calib_ticks: u64,
    /// Instructions per SysTick tick, measured on the calibration loop.
    pub instructions_per_tick: f64,
    pub ticks_total: u64,
    pub ticks_min: u64,
    pub ticks_max: u64,
    /// Mean executed instructions per inference (ticks x instructions per tick).
    pub instructions_per_inference: f64,
    pub wall_seconds: f64,
    /// Per-layer ticks summed over the samples (builds with `-DEDGEOPT_PROFILE` only).
    pub layer_ticks: Vec<u64>,
}

/// Runs `build` on qemu `machine` with semihosting and `-icount shift=0`, on `inputs`
/// (samples back to back). Fails after `timeout`.
pub fn run_qemu(
    build: &ArmBuild,
    machine: &str,
    inputs: &[u8],
    work: &Path,
    timeout: Duration,
) -> Result<QemuRun> {
    let fi = work.join("inputs.bin");
    let fo = work.join("outputs.bin");
    std::fs::write(&fi, inputs).map_err(|e| err(format!("{}: {e}", fi.display())))?;
    let _ = std::fs::remove_file(&fo);
    let start = Instant::now();
    let mut child = Command::new("qemu-system-arm")
        .args([
            "-machine",
            machine,
            "-nographic",
            "-monitor",
            "none",
            "-serial",
            "none",
        ])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0"])
        .arg("-kernel")
        .arg(&build.elf)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot start qemu-system-arm: {e}")))?;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!("qemu ({machine}) timed out after {timeout:?}")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(err(format!("waiting for qemu: {e}"))),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("qemu output: {e}")))?;
    let wall = start.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(err(format!(
            "qemu ({machine}) exited with {}:\n{text}",
            out.status
        )));
    }
    let get = |key: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
            .ok_or_else(|| err(format!("harness output lacks '{key}':\n{text}")))
    };
    let samples = get("samples ")?;
    let calib_instructions = get("calib_instructions ")?;
    let calib_ticks = get("calib_ticks ")?;
    let ticks_total = get("invoke_ticks_total ")?;
    if calib_ticks == 0 {
        return Err(err("SysTick did not advance (is -icount on?)"));
    }
    let ipt = calib_instructions as f64 / calib_ticks as f64;
    let outputs = std::fs::read(&fo).map_err(|e| err(format!("{}: {e}", fo.display())))?;
    Ok(QemuRun {
        outputs,
        samples,
        calib_instructions,
        calib_ticks,
        instructions_per_tick: ipt,
        ticks_total,
        ticks_min: get("invoke_ticks_min ")?,
        ticks_max: get("invoke_ticks_max ")?,
        instructions_per_inference: if samples > 0 {
            ticks_total as f64 * ipt / samples as f64
        } else {
            0.0
        },
        wall_seconds: wall,
        layer_ticks: text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("layer_ticks ")
                    .and_then(|v| v.trim().parse().ok())
            })
            .collect(),
    })
}
