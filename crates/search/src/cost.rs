//! The cost model: per layer and in total, latency, energy, RAM and flash of a graph on
//! a device profile.
//!
//! - Microcontrollers (profiles the C generator builds with arm-none-eabi-gcc): executed
//!   instructions per layer from the per-kernel instruction model fitted under qemu
//!   (`data/cortex-m4.json`, see [`crate::fit`]), on the DSP path when the profile has
//!   the DSP extension and on the portable path otherwise; cycles = instructions x
//!   [`CPI`]; latency = cycles / the profile's clock. RAM (arena + kernel scratch +
//!   stack) and flash (weights + code) are the C generator's own footprint.
//! - Other devices: a clearly labelled peak-throughput lower bound (see
//!   [`HOST_METHOD`]); RAM = the planner's peak arena, flash = the weights.
//! - Energy = latency x the profile's active power + bytes moved x its energy per byte,
//!   each term only when the profile gives the figure (with its source); otherwise the
//!   report says which figure is missing.

use crate::features::{self, Kernel, LayerFeatures};
use crate::fit::{Constants, KernelPath};
use edgeopt_codegen::Target;
use edgeopt_device::{Device, MemoryCheck};
use edgeopt_ir::{shape::bind_input_shapes, Graph};
use serde::Serialize;
use std::sync::OnceLock;

/// The fitted Cortex-M4 instruction model (qemu mps2-an386, gcc -O2).
pub const CORTEX_M4_JSON: &str = include_str!("../data/cortex-m4.json");

/// Cycles per instruction assumed to turn counted instructions into time.
///
/// 1.0: the Cortex-M4 Technical Reference Manual (Arm DDI 0439), "Processor instruction
/// timings", gives 1 cycle for data processing, multiplies and the DSP multiply-
/// accumulates (SMLAD, SMLABB) and 2 for a single load (1 when pipelined after another
/// load), 1 + P (pipeline refill, 1-3) for a taken branch. Loads and taken branches are
/// frequent in these kernels, and flash wait states (5 at 120 MHz on the STM32L4R5,
/// partly hidden by ST's ART accelerator) add more, so real CPI is above 1: the
/// predicted milliseconds are a lower bound; bench/results/cost_model.md sets them next
/// to the MLPerf Tiny measurements on the real board.
pub const CPI: f64 = 1.0;

/// How the non-microcontroller latency is estimated.
pub const HOST_METHOD: &str =
    "peak-throughput lower bound, not fitted: (MACs + element operations) / \
     (SIMD lanes of f32 x cores) / clock, i.e. one SIMD multiply-accumulate per lane per cycle on \
     every core, no memory stalls";

/// The fitted Cortex-M4 constants.
pub fn cortex_m4() -> &'static Constants {
    static C: OnceLock<Constants> = OnceLock::new();
    C.get_or_init(|| {
        serde_json::from_str(CORTEX_M4_JSON).expect("crates/search/data/cortex-m4.json is valid")
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error(transparent)]
    Feature(#[from] features::FeatureError),
    #[error(transparent)]
    Codegen(#[from] edgeopt_codegen::CodegenError),
    #[error(transparent)]
    Runtime(#[from] edgeopt_runtime::RuntimeError),
    #[error(transparent)]
    Ir(#[from] edgeopt_ir::IrError),
    #[error("{0}")]
    Model(String),
}

/// Instructions of one layer under `c` on `path` (hook excluded).
pub fn layer_instructions(c: &Constants, path: KernelPath, l: &LayerFeatures) -> f64 {
    let Some(pc) = c.paths.get(&path) else {
        return 0.0;
    };
    // A kernel no fitted model used: the transpose's constants on its calls and
    // outputs (an element loop with index arithmetic; every kernel has calls and
    // outputs).
    let coefs = match pc.kernels.get(&l.kernel) {
        Some(k) => k.clone(),
        None => pc
            .kernels
            .get(&Kernel::Transpose)
            .cloned()
            .unwrap_or_default(),
    };
    let raw: f64 = coefs.iter().map(|(f, v)| v * l.count(*f)).sum();
    raw - pc.hook_per_layer
}

/// Predicted instructions per inference of the generated C of `graph` (batch 1): per
/// layer and in total.
pub fn predict_instructions(graph: &Graph, dsp: bool) -> Result<(Vec<f64>, f64), CostError> {
    predict_instructions_with(cortex_m4(), graph, dsp)
}

/// [`predict_instructions`] with constants `c` (e.g. freshly fitted).
pub fn predict_instructions_with(
    c: &Constants,
    graph: &Graph,
    dsp: bool,
) -> Result<(Vec<f64>, f64), CostError> {
    let plan = edgeopt_runtime::planner::plan_for_batch(graph, 1)?;
    let layers = features::layers(graph, &plan)?;
    let path = KernelPath::of(dsp);
    let per: Vec<f64> = layers
        .iter()
        .map(|l| layer_instructions(c, path, l))
        .collect();
    let total = per.iter().sum();
    Ok((per, total))
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerCost {
    pub name: String,
    pub op: String,
    /// The C kernel (microcontrollers) or `-`.
    pub kernel: String,
    pub macs: u64,
    pub instructions: Option<f64>,
    pub latency_ms: Option<f64>,
    pub energy_uj: Option<f64>,
    pub weight_bytes: u64,
    /// Bytes of the layer's activation inputs and outputs (its working set).
    pub activation_bytes: u64,
    /// Bytes read and written once (a lower bound on memory traffic).
    pub bytes_moved: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RamCost {
    pub arena_bytes: u64,
    pub scratch_bytes: u64,
    pub stack_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlashCost {
    pub weights_bytes: u64,
    pub code_bytes: u64,
    pub total_bytes: u64,
}

/// The whole estimate.
#[derive(Debug, Clone, Serialize)]
pub struct CostReport {
    pub device: String,
    /// How latency was estimated (instruction model and path, or the host bound).
    pub method: String,
    pub clock_hz: Option<u64>,
    pub cpi: Option<f64>,
    pub layers: Vec<LayerCost>,
    pub instructions: Option<f64>,
    pub latency_ms: Option<f64>,
    pub energy_uj: Option<f64>,
    /// Which energy terms are included and which figures are missing.
    pub energy_note: String,
    pub ram: RamCost,
    pub flash: FlashCost,
    pub memory: MemoryCheck,
    pub fits: bool,
    pub notes: Vec<String>,
}

/// Whether `device` is a microcontroller the C generator builds for (arm-none-eabi-gcc
/// flags in its profile).
pub fn is_mcu(device: &Device) -> bool {
    !device.codegen.gcc_flags.is_empty()
}

fn why_unknown(device: &Device, key: &str) -> String {
    device
        .unknown
        .get(key)
        .cloned()
        .unwrap_or_else(|| "not in the profile".into())
}

/// Energy from latency and bytes moved, with the terms the profile allows.
fn energy(device: &Device, latency_s: Option<f64>, bytes: u64) -> (Option<f64>, String) {
    let mut parts = Vec::new();
    let mut missing = Vec::new();
    let mut e = 0.0;
    match (&device.active_power, latency_s) {
        (Some(p), Some(t)) => {
            e += p.watts() * t;
            parts.push(format!(
                "time x active power {:.3} W ({}, {})",
                p.watts(),
                p.condition,
                p.source
            ));
        }
        (Some(_), None) => missing.push("latency unknown".to_string()),
        (None, _) => missing.push(format!(
            "active power unknown ({})",
            why_unknown(device, "active_power")
        )),
    }
    match &device.memory_energy {
        Some(m) => {
            e += m.joules_per_byte * bytes as f64;
            parts.push(format!(
                "bytes moved x {:.3e} J/B ({})",
                m.joules_per_byte, m.source
            ));
        }
        None => missing.push(format!(
            "memory traffic term omitted: energy per byte unknown ({})",
            why_unknown(device, "memory_energy")
        )),
    }
    let note = format!(
        "included: {}; {}",
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join(" + ")
        },
        if missing.is_empty() {
            "nothing missing".to_string()
        } else {
            missing.join("; ")
        }
    );
    if parts.is_empty() || device.active_power.is_none() {
        (None, note)
    } else {
        (Some(e), note)
    }
}

/// Estimates `graph` (batch 1) on `device`.
pub fn estimate(graph: &Graph, device: &Device) -> Result<CostReport, CostError> {
    if is_mcu(device) {
        estimate_mcu(graph, device)
    } else {
        estimate_host(graph, device)
    }
}

fn estimate_mcu(graph: &Graph, device: &Device) -> Result<CostReport, CostError> {
    let target = Target::from(device);
    let gen = edgeopt_codegen::compile(graph, &target)?;
    let layers = features::layers(graph, &gen.plan)?;
    let c = cortex_m4();
    let path = KernelPath::of(device.isa.dsp);
    let clock = device.clock_hz.as_ref().map(|f| f.value);
    let mut notes = Vec::new();
    let core = device.core.as_deref().unwrap_or("");
    if !core.starts_with("cortex-m4") {
        notes.push(format!(
            "instruction model fitted on {} ({}); for core '{}' it is an extrapolation (other \
             instruction set or pipeline, other gcc flags)",
            c.core,
            c.qemu_machine,
            if core.is_empty() { "unknown" } else { core }
        ));
    }
    if clock.is_none() {
        notes.push(format!(
            "no clock in the profile ({}): latency not computed",
            why_unknown(device, "clock_hz")
        ));
    }
    let to_s = |instr: f64| clock.map(|hz| instr * CPI / hz as f64);
    let mut out = Vec::new();
    let mut total = 0.0;
    let mut moved = 0u64;
    for l in &layers {
        let i = layer_instructions(c, path, l);
        total += i;
        let b = l.bytes_read + l.bytes_written;
        moved += b;
        let (e, _) = energy(device, to_s(i), b);
        out.push(LayerCost {
            name: l.name.clone(),
            op: l.op.clone(),
            kernel: l.kernel.name().to_string(),
            macs: l.macs,
            instructions: Some(i),
            latency_ms: to_s(i).map(|s| s * 1e3),
            energy_uj: e.map(|j| j * 1e6),
            weight_bytes: l.weight_bytes,
            activation_bytes: l.activation_bytes,
            bytes_moved: b,
        });
    }
    let latency = to_s(total);
    let (e, energy_note) = energy(device, latency, moved);
    let f = &gen.footprint;
    let memory = device.check_memory(f.ram_bytes, f.flash_bytes);
    Ok(CostReport {
        device: device.name.clone(),
        method: format!(
            "instruction model fitted under qemu ({}, {}), {} kernels, {CPI} cycle per instruction \
             (Cortex-M4 TRM DDI 0439 single-cycle ALU/MAC; a lower bound)",
            c.core,
            c.qemu_machine,
            path.name()
        ),
        clock_hz: clock,
        cpi: Some(CPI),
        layers: out,
        instructions: Some(total),
        latency_ms: latency.map(|s| s * 1e3),
        energy_uj: e.map(|j| j * 1e6),
        energy_note,
        ram: RamCost {
            arena_bytes: f.arena_bytes,
            scratch_bytes: f.scratch_bytes,
            stack_bytes: f.stack_bytes_estimate,
            total_bytes: f.ram_bytes,
        },
        flash: FlashCost {
            weights_bytes: f.weights_bytes,
            code_bytes: f.code_bytes_estimate,
            total_bytes: f.flash_bytes,
        },
        fits: memory.fits(),
        memory,
        notes,
    })
}

fn estimate_host(graph: &Graph, device: &Device) -> Result<CostReport, CostError> {
    let shapes = bind_input_shapes(graph, 1)?;
    let p = edgeopt_runtime::profile::profile(graph, &shapes)?;
    let clock = device.clock_hz.as_ref().map(|f| f.value);
    let cores = device.cores.as_ref().map_or(1, |f| f.value.max(1));
    let lanes = device
        .isa
        .simd_bits
        .as_ref()
        .map_or(1, |f| (f.value / 32).max(1));
    let mut notes = vec![format!("latency: {HOST_METHOD}")];
    if clock.is_none() {
        notes.push(format!(
            "no clock in the profile ({}): latency not computed",
            why_unknown(device, "clock_hz")
        ));
    }
    let to_s = |ops: u64| clock.map(|hz| ops as f64 / (lanes * cores) as f64 / hz as f64);
    let mut out = Vec::new();
    let mut ops_total = 0;
    let mut moved = 0;
    for l in p.layers.iter().filter(|l| !l.folded) {
        let ops = l.macs + l.elem_ops;
        ops_total += ops;
        let b = l.weight_bytes + l.activation_bytes;
        moved += b;
        let (e, _) = energy(device, to_s(ops), b);
        out.push(LayerCost {
            name: l.name.clone(),
            op: l.op.to_string(),
            kernel: "-".into(),
            macs: l.macs,
            instructions: None,
            latency_ms: to_s(ops).map(|s| s * 1e3),
            energy_uj: e.map(|j| j * 1e6),
            weight_bytes: l.weight_bytes,
            activation_bytes: l.activation_bytes,
            bytes_moved: b,
        });
    }
    let latency = to_s(ops_total);
    let (e, energy_note) = energy(device, latency, moved);
    let ram = p.peak_arena_bytes;
    let flash = p.total_weight_bytes + p.folded_bytes;
    let memory = device.check_memory(ram, flash);
    Ok(CostReport {
        device: device.name.clone(),
        method: format!("{HOST_METHOD} ({lanes} lanes x {cores} cores)"),
        clock_hz: clock,
        cpi: None,
        layers: out,
        instructions: None,
        latency_ms: latency.map(|s| s * 1e3),
        energy_uj: e.map(|j| j * 1e6),
        energy_note,
        ram: RamCost {
            arena_bytes: ram,
            scratch_bytes: 0,
            stack_bytes: 0,
            total_bytes: ram,
        },
        flash: FlashCost {
            weights_bytes: flash,
            code_bytes: 0,
            total_bytes: flash,
        },
        fits: memory.fits(),
        memory,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Kernel;

    #[test]
    fn committed_constants_cover_both_paths() {
        let c = cortex_m4();
        assert!(!c.fitted_on.is_empty() && !c.held_out.is_empty());
        for f in &c.fitted_on {
            assert!(
                !c.held_out.contains(f),
                "{f} is both fitted on and held out"
            );
        }
        for path in [KernelPath::Dsp, KernelPath::Portable] {
            let pc = &c.paths[&path];
            for k in [
                Kernel::Conv,
                Kernel::Depthwise,
                Kernel::Fc,
                Kernel::Transpose,
            ] {
                let coefs = pc
                    .kernels
                    .get(&k)
                    .unwrap_or_else(|| panic!("{path:?} {k:?}"));
                // Exactly the kernel's features, each finite and non-negative.
                let names: Vec<_> = coefs.keys().copied().collect();
                let mut want = k.features().to_vec();
                want.sort();
                assert_eq!(names, want, "{path:?} {k:?}");
                assert!(coefs.values().all(|v| v.is_finite() && *v >= 0.0));
            }
        }
        // SMLAD does two MACs per instruction: a main-loop MAC costs less on the DSP path.
        let mac =
            |p: KernelPath| c.paths[&p].kernels[&Kernel::Conv][&crate::features::Feature::MacsMain];
        assert!(mac(KernelPath::Dsp) < mac(KernelPath::Portable));
    }
}
