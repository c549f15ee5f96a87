//! Deployment targets: what the C generator needs from a device profile — memory budgets,
//! DSP availability, compiler flags and the qemu machine.
//!
//! The devices are data (`devices/*.toml`, read by `edgeopt_device`, each figure with its
//! source); a `Target` is built from one. The former names (cortex-m0, cortex-m4,
//! cortex-m7, generic) are profiles of their own with the same budgets and flags.
//! `--target` takes a built-in name or a path to a device file ([`Target::resolve`]).

use edgeopt_device::{Device, DeviceError};
use serde::Serialize;
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub name: String,
    /// SRAM budget (bytes); `None` = unbounded (generic).
    pub ram_bytes: Option<u64>,
    /// Flash budget (bytes).
    pub flash_bytes: Option<u64>,
    /// Whether the core has the DSP extension (SMLAD dual 16-bit MAC).
    pub has_dsp: bool,
    /// arm-none-eabi-gcc flags (empty: use the host compiler).
    pub gcc_flags: Vec<String>,
    /// qemu-system-arm machine that emulates this core, if any.
    pub qemu_machine: Option<String>,
}

impl From<&Device> for Target {
    fn from(d: &Device) -> Target {
        Target {
            name: d.name.clone(),
            ram_bytes: d.ram_bytes.as_ref().map(|f| f.value),
            flash_bytes: d.flash_bytes.as_ref().map(|f| f.value),
            has_dsp: d.isa.dsp,
            gcc_flags: d.codegen.gcc_flags.clone(),
            qemu_machine: d.codegen.qemu_machine.clone(),
        }
    }
}

/// The targets of every built-in device, in the order of `devices/`.
pub fn targets() -> &'static [Target] {
    static ALL: OnceLock<Vec<Target>> = OnceLock::new();
    ALL.get_or_init(|| edgeopt_device::builtin().iter().map(Target::from).collect())
}

impl Target {
    /// The built-in target named `name` or with that alias (case-insensitive).
    pub fn by_name(name: &str) -> Option<&'static Target> {
        let d = edgeopt_device::find(name)?;
        targets().iter().find(|t| t.name == d.name)
    }

    pub fn names() -> Vec<&'static str> {
        edgeopt_device::names()
    }

    /// A built-in name or alias, or a path to a device file (see
    /// [`edgeopt_device::resolve`]).
    pub fn resolve(name_or_path: &str) -> Result<Target, DeviceError> {
        edgeopt_device::resolve(name_or_path).map(|d| Target::from(&d))
    }

    /// The qemu machine, for callers that need a `&str`.
    pub fn qemu(&self) -> Option<&str> {
        self.qemu_machine.as_deref()
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Target::resolve(s).map_err(|e| e.to_string())
    }
}
