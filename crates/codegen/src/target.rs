//! Deployment targets as data: memory budgets, DSP availability and compiler flags.
//!
//! Where the numbers come from:
//! - `cortex-m0`: STM32F091RC (ST datasheet DS10009): 32 KiB SRAM, 256 KiB flash;
//!   Armv6-M, no DSP extension.
//! - `cortex-m4`: the budget, 256 KiB SRAM / 1 MiB flash, which is e.g. the
//!   nRF52840 (Nordic product specification v1.7) and the MLPerf Tiny reference class;
//!   Armv7E-M with the DSP extension (SMLAD) and a single-precision FPU.
//! - `cortex-m7`: STM32F746NG (ST datasheet DS10916): 320 KiB SRAM (incl. 64 KiB DTCM),
//!   1 MiB flash; Armv7E-M with DSP and a double-precision FPU (fpv5-d16).
//! - `generic`: any C99 host or MCU, no budget (checks are skipped).
//!
//! The gcc flags are what the harness (scripts/mcu) and the generated README use.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Target {
    pub name: &'static str,
    /// SRAM budget (bytes); `None` = unbounded (generic).
    pub ram_bytes: Option<u64>,
    /// Flash budget (bytes).
    pub flash_bytes: Option<u64>,
    /// Whether the core has the DSP extension (SMLAD dual 16-bit MAC).
    pub has_dsp: bool,
    /// arm-none-eabi-gcc flags (empty for generic: use the host compiler).
    pub gcc_flags: &'static [&'static str],
    /// qemu-system-arm machine that emulates this core, if any.
    pub qemu_machine: Option<&'static str>,
}

const KIB: u64 = 1024;

pub const TARGETS: &[Target] = &[
    Target {
        name: "cortex-m0",
        ram_bytes: Some(32 * KIB),
        flash_bytes: Some(256 * KIB),
        has_dsp: false,
        gcc_flags: &["-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"],
        qemu_machine: None,
    },
    Target {
        name: "cortex-m4",
        ram_bytes: Some(256 * KIB),
        flash_bytes: Some(1024 * KIB),
        has_dsp: true,
        gcc_flags: &[
            "-mcpu=cortex-m4",
            "-mthumb",
            "-mfloat-abi=hard",
            "-mfpu=fpv4-sp-d16",
        ],
        qemu_machine: Some("mps2-an386"),
    },
    Target {
        name: "cortex-m7",
        ram_bytes: Some(320 * KIB),
        flash_bytes: Some(1024 * KIB),
        has_dsp: true,
        gcc_flags: &[
            "-mcpu=cortex-m7",
            "-mthumb",
            "-mfloat-abi=hard",
            "-mfpu=fpv5-d16",
        ],
        qemu_machine: Some("mps2-an500"),
    },
    Target {
        name: "generic",
        ram_bytes: None,
        flash_bytes: None,
        has_dsp: false,
        gcc_flags: &[],
        qemu_machine: None,
    },
];

impl Target {
    /// The target named `name` (case-insensitive).
    pub fn by_name(name: &str) -> Option<&'static Target> {
        TARGETS.iter().find(|t| t.name.eq_ignore_ascii_case(name))
    }

    pub fn names() -> Vec<&'static str> {
        TARGETS.iter().map(|t| t.name).collect()
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Target::by_name(s).copied().ok_or_else(|| {
            format!(
                "unknown target '{s}' (known: {})",
                Target::names().join(", ")
            )
        })
    }
}
