//! Device profiles as data.
//!
//! A device is one TOML file in the repository's `devices/` folder: its class, core,
//! clock, memories, ISA features, power and the C compiler flags / qemu machine the code
//! generator uses. Every figure carries its source (datasheet title and document number
//! or URL, and the section); a figure nobody could source is absent and the file says
//! why under `[unknown]`. The files are built into the binary ([`builtin`]) and a file
//! given by path ([`load_path`], [`resolve`]) is read the same way, so adding a device is
//! one file. A file is hostile input: every problem is an error naming the file and the
//! field, never a panic.
//!
//! Consumers: codegen's `Target` is built from a profile (budgets, DSP, gcc flags, qemu
//! machine); `edgeopt inspect --device` checks a model's arena and weights against it.
//! The cost model (issue 15 item 8) reads `clock_hz`, `active_power`, `idle_power` and
//! `memory_energy` from the same struct.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

mod builtin_files;

/// A device file could not be read or is not a valid profile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct DeviceError {
    /// The file (or built-in name) the profile came from.
    pub origin: String,
    pub message: String,
}

fn err(origin: &str, message: impl Into<String>) -> DeviceError {
    DeviceError {
        origin: origin.to_string(),
        message: message.into(),
    }
}

/// The seed's device classes (Table 1), plus `any` for a portable target with no class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceClass {
    Iot,
    Smartphone,
    EdgeServer,
    CloudServer,
    Any,
}

impl DeviceClass {
    pub fn name(self) -> &'static str {
        match self {
            DeviceClass::Iot => "iot",
            DeviceClass::Smartphone => "smartphone",
            DeviceClass::EdgeServer => "edge-server",
            DeviceClass::CloudServer => "cloud-server",
            DeviceClass::Any => "any",
        }
    }
}

/// How a rated figure was obtained. Datasheets give both typical and maximum currents;
/// the profile must say which one it copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    Typical,
    Max,
    Measured,
}

/// An integer figure with its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    pub value: u64,
    /// Document (title, number or URL) and section the value is copied from.
    pub source: String,
    /// Anything a reader must know (variant, revision, what is included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A power figure: either `watts`, or the datasheet's `current_a` at `voltage_v`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Power {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watts: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_a: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voltage_v: Option<f64>,
    pub basis: Basis,
    /// The operating point (mode, clock, supply, temperature, what runs).
    pub condition: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Power {
    /// Watts at the stated condition (current × voltage when given as a current).
    pub fn watts(&self) -> f64 {
        match (self.watts, self.current_a, self.voltage_v) {
            (Some(w), _, _) => w,
            (None, Some(a), Some(v)) => a * v,
            // `validate` refuses any other combination.
            _ => f64::NAN,
        }
    }
}

/// Energy of moving one byte to or from a memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryEnergy {
    pub joules_per_byte: f64,
    pub basis: Basis,
    /// Which memory and access (e.g. on-chip SRAM read, DRAM read).
    pub condition: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Floating-point unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fpu {
    None,
    /// Single precision only (e.g. Cortex-M4F FPv4-SP).
    Sp,
    /// Single and double precision.
    Dp,
}

/// Instruction-set features the kernels and the cost model care about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Isa {
    /// The Armv7E-M DSP extension (SMLAD dual 16-bit MAC): the C kernels' DSP paths.
    pub dsp: bool,
    pub fpu: Fpu,
    /// Where `dsp` and `fpu` come from.
    pub source: String,
    /// Width of the widest integer SIMD register (32 for the M-profile DSP extension's
    /// packed 8/16-bit operations, 128 for NEON, 256 for AVX2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simd_bits: Option<Figure>,
}

/// What the C generator and its harness need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Codegen {
    /// arm-none-eabi-gcc flags; empty = any C99 compiler (the host's).
    #[serde(default)]
    pub gcc_flags: Vec<String>,
    /// qemu-system-arm machine that emulates this core (not necessarily the part's own
    /// peripherals or memory map), if one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_machine: Option<String>,
}

/// One device profile (one file of `devices/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    /// Other names `--device` / `--target` accept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub class: DeviceClass,
    pub description: String,
    /// CPU core (e.g. "cortex-m4f"); absent for a class profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<String>,
    /// Maximum core clock (Hz).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_hz: Option<Figure>,
    /// Number of CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<Figure>,
    /// RAM for the model (bytes): on-chip SRAM on a microcontroller, DRAM on an
    /// application processor. `compile` and `inspect --device` check the arena against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_bytes: Option<Figure>,
    /// Non-volatile memory for code and weights (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_bytes: Option<Figure>,
    pub isa: Isa,
    /// Power while computing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_power: Option<Power>,
    /// Power while waiting for the next inference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_power: Option<Power>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_energy: Option<MemoryEnergy>,
    #[serde(default)]
    pub codegen: Codegen,
    /// Why a field is absent: field name → reason. Every optional field is either
    /// present or explained here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, String>,
}

/// The optional fields that must be present or explained under `[unknown]`.
pub const OPTIONAL_FIELDS: &[&str] = &[
    "core",
    "clock_hz",
    "cores",
    "ram_bytes",
    "flash_bytes",
    "isa.simd_bits",
    "active_power",
    "idle_power",
    "memory_energy",
];

/// Plausibility limits: a value outside them is almost surely a unit mistake (MHz
/// written as Hz, KiB as bytes, mA as A). Loose on purpose: from a 32 KiB
/// microcontroller to a cloud server.
const CLOCK_HZ: (u64, u64) = (1_000, 10_000_000_000);
const CORES: (u64, u64) = (1, 4096);
const BYTES: (u64, u64) = (1024, 1 << 50);
const SIMD_BITS: (u64, u64) = (8, 2048);
const WATTS: (f64, f64) = (1e-7, 1e5);
const J_PER_BYTE: (f64, f64) = (1e-15, 1e-6);

impl Device {
    /// Parses and validates one profile. `origin` names it in errors (a path or
    /// `built-in NAME`).
    pub fn parse(text: &str, origin: &str) -> Result<Device, DeviceError> {
        let d: Device = toml::from_str(text).map_err(|e| err(origin, e.to_string()))?;
        d.validate().map_err(|m| err(origin, m))?;
        Ok(d)
    }

    /// Whether `name` is this device's name or one of its aliases (case-insensitive).
    pub fn is_named(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    fn present(&self, field: &str) -> bool {
        match field {
            "core" => self.core.is_some(),
            "clock_hz" => self.clock_hz.is_some(),
            "cores" => self.cores.is_some(),
            "ram_bytes" => self.ram_bytes.is_some(),
            "flash_bytes" => self.flash_bytes.is_some(),
            "isa.simd_bits" => self.isa.simd_bits.is_some(),
            "active_power" => self.active_power.is_some(),
            "idle_power" => self.idle_power.is_some(),
            "memory_energy" => self.memory_energy.is_some(),
            _ => false,
        }
    }

    fn validate(&self) -> Result<(), String> {
        for (what, n) in
            std::iter::once(("name", &self.name)).chain(self.aliases.iter().map(|a| ("alias", a)))
        {
            let ok = n
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.+".contains(c));
            if !ok {
                return Err(format!(
                    "{what} '{n}': use lower-case letters, digits and - _ . + (it is typed on the command line)"
                ));
            }
        }
        nonempty("description", &self.description)?;
        if let Some(c) = &self.core {
            nonempty("core", c)?;
        }
        nonempty("isa.source", &self.isa.source)?;
        figure("clock_hz", &self.clock_hz, CLOCK_HZ)?;
        figure("cores", &self.cores, CORES)?;
        figure("ram_bytes", &self.ram_bytes, BYTES)?;
        figure("flash_bytes", &self.flash_bytes, BYTES)?;
        figure("isa.simd_bits", &self.isa.simd_bits, SIMD_BITS)?;
        for (field, p) in [
            ("active_power", &self.active_power),
            ("idle_power", &self.idle_power),
        ] {
            if let Some(p) = p {
                power(field, p)?;
            }
        }
        if let Some(m) = &self.memory_energy {
            positive(
                "memory_energy.joules_per_byte",
                m.joules_per_byte,
                J_PER_BYTE,
            )?;
            nonempty("memory_energy.condition", &m.condition)?;
            nonempty("memory_energy.source", &m.source)?;
        }
        for f in &self.codegen.gcc_flags {
            if f.trim().is_empty() || f.contains(char::is_whitespace) {
                return Err(format!(
                    "codegen.gcc_flags: '{f}' is not one flag (one flag per string, no spaces)"
                ));
            }
        }
        if let Some(m) = &self.codegen.qemu_machine {
            nonempty("codegen.qemu_machine", m)?;
            if self.codegen.gcc_flags.is_empty() {
                return Err(
                    "codegen.qemu_machine needs codegen.gcc_flags (the harness cross-compiles with them)"
                        .into(),
                );
            }
        }
        for (k, why) in &self.unknown {
            if !OPTIONAL_FIELDS.contains(&k.as_str()) {
                return Err(format!(
                    "unknown.{k}: not an optional field (those are: {})",
                    OPTIONAL_FIELDS.join(", ")
                ));
            }
            if self.present(k) {
                return Err(format!(
                    "unknown.{k}: the field is given; remove one of the two"
                ));
            }
            nonempty(&format!("unknown.{k}"), why)?;
        }
        for f in OPTIONAL_FIELDS {
            if !self.present(f) && !self.unknown.contains_key(*f) {
                return Err(format!(
                    "{f} is missing: give it with its source, or say why it is unknown under [unknown] ({f} = \"why\")"
                ));
            }
        }
        Ok(())
    }
}

fn nonempty(field: &str, s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    Ok(())
}

fn figure(field: &str, f: &Option<Figure>, (lo, hi): (u64, u64)) -> Result<(), String> {
    let Some(f) = f else { return Ok(()) };
    if f.value == 0 {
        return Err(format!("{field}.value must be positive, got 0"));
    }
    if f.value < lo || f.value > hi {
        return Err(format!(
            "{field}.value = {} is outside the plausible range {lo}..={hi} (a unit mistake?)",
            f.value
        ));
    }
    nonempty(&format!("{field}.source"), &f.source)
}

fn positive(field: &str, v: f64, (lo, hi): (f64, f64)) -> Result<(), String> {
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{field} must be a positive number, got {v}"));
    }
    if v < lo || v > hi {
        return Err(format!(
            "{field} = {v} is outside the plausible range {lo:e}..={hi:e} (a unit mistake?)"
        ));
    }
    Ok(())
}

fn power(field: &str, p: &Power) -> Result<(), String> {
    match (p.watts, p.current_a, p.voltage_v) {
        (Some(w), None, None) => positive(&format!("{field}.watts"), w, WATTS)?,
        (None, Some(a), Some(v)) => {
            positive(&format!("{field}.current_a"), a, (1e-9, 1e4))?;
            positive(&format!("{field}.voltage_v"), v, (0.1, 1000.0))?;
            positive(&format!("{field} (current_a × voltage_v)"), a * v, WATTS)?;
        }
        _ => {
            return Err(format!(
                "{field}: give either watts, or current_a together with voltage_v"
            ))
        }
    }
    nonempty(&format!("{field}.condition"), &p.condition)?;
    nonempty(&format!("{field}.source"), &p.source)
}

/// One memory against its budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fit {
    pub need_bytes: u64,
    /// `None`: the profile has no budget for this memory (see `unknown_why`).
    pub budget_bytes: Option<u64>,
    /// `None` when there is no budget.
    pub fits: Option<bool>,
    /// Why the budget is absent (the profile's `[unknown]` entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_why: Option<String>,
}

/// A model's memory needs against a device's RAM and flash.
///
/// This is the budget part of `inspect --device`; the cost model (issue 15 item 8) adds
/// latency and energy beside it from `clock_hz`, the power figures and `memory_energy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryCheck {
    pub ram: Fit,
    pub flash: Fit,
}

impl MemoryCheck {
    /// False if either memory is known not to fit.
    pub fn fits(&self) -> bool {
        self.ram.fits != Some(false) && self.flash.fits != Some(false)
    }
}

impl Device {
    /// Checks `ram_need` against `ram_bytes` and `flash_need` against `flash_bytes`.
    pub fn check_memory(&self, ram_need: u64, flash_need: u64) -> MemoryCheck {
        let fit = |need: u64, budget: &Option<Figure>, field: &str| Fit {
            need_bytes: need,
            budget_bytes: budget.as_ref().map(|f| f.value),
            fits: budget.as_ref().map(|f| need <= f.value),
            unknown_why: budget
                .is_none()
                .then(|| self.unknown.get(field).cloned())
                .flatten(),
        };
        MemoryCheck {
            ram: fit(ram_need, &self.ram_bytes, "ram_bytes"),
            flash: fit(flash_need, &self.flash_bytes, "flash_bytes"),
        }
    }
}

/// Every built-in profile (the files of `devices/`), parsed once.
///
/// The files are compiled in and a unit test parses each of them, so a failure here is
/// a bug in this repository, not bad input.
pub fn builtin() -> &'static [Device] {
    static ALL: OnceLock<Vec<Device>> = OnceLock::new();
    ALL.get_or_init(|| {
        builtin_files::FILES
            .iter()
            .map(|(file, text)| {
                Device::parse(text, &format!("built-in devices/{file}"))
                    .unwrap_or_else(|e| panic!("{e} (the built-in files are checked by tests)"))
            })
            .collect()
    })
}

/// The built-in profile called `name` (or with that alias), case-insensitive.
pub fn find(name: &str) -> Option<&'static Device> {
    builtin().iter().find(|d| d.is_named(name))
}

/// The built-in device names, in the order of `devices/`.
pub fn names() -> Vec<&'static str> {
    builtin().iter().map(|d| d.name.as_str()).collect()
}

/// Reads a profile from a file.
pub fn load_path(path: &Path) -> Result<Device, DeviceError> {
    let origin = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| err(&origin, format!("cannot read: {e}")))?;
    Device::parse(&text, &origin)
}

/// Whether a `--device` / `--target` argument is a path rather than a name: it has a
/// path separator or ends in `.toml`. Names never contain either.
pub fn is_path(arg: &str) -> bool {
    arg.contains('/')
        || arg.contains(std::path::MAIN_SEPARATOR)
        || arg.to_ascii_lowercase().ends_with(".toml")
}

/// A built-in name (or alias) or a path to a device file.
pub fn resolve(arg: &str) -> Result<Device, DeviceError> {
    if is_path(arg) {
        return load_path(Path::new(arg));
    }
    find(arg).cloned().ok_or_else(|| {
        err(
            &format!("unknown target '{arg}'"),
            format!(
                "no built-in device of that name (built-in: {}; or give a path to a .toml device file)",
                names().join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests;
