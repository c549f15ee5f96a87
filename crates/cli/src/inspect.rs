//! `edgeopt inspect`: per-layer table and totals from the profiler, peak arena from the
//! memory planner.

use crate::model::describe_source;
use anyhow::{bail, Context, Result};
use edgeopt_device::{Device, Fit, MemoryCheck};
use edgeopt_ir::{shape::bind_input_shapes, Graph};
use edgeopt_runtime::profile::{profile, ModelProfile};
use edgeopt_search::CostReport;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub name: String,
    pub op: String,
    pub output_shapes: Vec<Vec<usize>>,
    pub output_dtypes: Vec<String>,
    pub params: u64,
    pub macs: u64,
    pub elem_ops: u64,
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    /// Computed from constants only; folded before inference, not in the totals.
    pub folded: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub params: u64,
    pub macs: u64,
    pub elem_ops: u64,
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    pub input_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Exact arena the static planner needs for all activations.
    pub peak_arena_bytes: u64,
    /// Every activation in its own memory.
    pub naive_activation_bytes: u64,
    /// Values computed from constants only (kept beside the weights, not in the arena).
    pub folded_bytes: u64,
}

/// Everything `inspect` reports (also its `--json` form).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub source: String,
    pub batch: usize,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub layers: Vec<LayerInfo>,
    pub totals: Totals,
    pub memory: Memory,
    /// With `--device`: the model against that device's budgets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceReport>,
}

/// `inspect --device`: which device, whether the model's arena and weights fit it, and
/// the cost model's per-layer and total estimates (latency, energy, RAM with scratch and
/// stack, flash with code: `edgeopt_search::cost`).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub name: String,
    pub class: String,
    pub core: Option<String>,
    /// `built-in` or the file it was read from.
    pub from: String,
    pub clock_hz: Option<u64>,
    /// RAM need = the planner's peak arena; flash need = weights + folded constants.
    /// Lower bounds: code, kernel scratch and stack are not counted (`edgeopt compile`
    /// counts them for the models it compiles).
    pub memory: MemoryCheck,
    pub fits: bool,
    /// The cost model's estimate (batch 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostReport>,
    /// Why there is no estimate (e.g. an op the C generator does not support).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_unavailable: Option<String>,
}

/// Checks `report`'s memory needs against `device` (read from `from`).
pub fn check_device(report: &mut Report, device: &Device, from: &str) {
    let ram = report.memory.peak_arena_bytes;
    let flash = report.totals.weight_bytes + report.memory.folded_bytes;
    let memory = device.check_memory(ram, flash);
    report.device = Some(DeviceReport {
        name: device.name.clone(),
        class: device.class.name().to_string(),
        core: device.core.clone(),
        from: from.to_string(),
        clock_hz: device.clock_hz.as_ref().map(|f| f.value),
        fits: memory.fits(),
        memory,
        cost: None,
        cost_unavailable: None,
    });
}

/// Adds the cost model's estimate of `graph` on `device` to `report`'s device section
/// (after [`check_device`]). The estimate is for batch 1.
pub fn add_cost(report: &mut Report, graph: &Graph, device: &Device) {
    let batch = report.batch;
    let Some(d) = report.device.as_mut() else {
        return;
    };
    if batch != 1 {
        d.cost_unavailable = Some(format!(
            "the cost model estimates batch 1 (the C generator's), not --batch {batch}"
        ));
        return;
    }
    match edgeopt_search::estimate(graph, device) {
        Ok(c) => d.cost = Some(c),
        Err(e) => d.cost_unavailable = Some(format!("{e}")),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_string(), |x| format!("{x:.digits$}"))
}

fn render_cost(o: &mut String, c: &CostReport) {
    const NAME: usize = 30;
    let _ = writeln!(o, "\ncost model on {}: {}", c.device, c.method);
    let _ = writeln!(
        o,
        "{:>4}  {:<NAME$}  {:<16}  {:<16}  {:>12}  {:>10}  {:>10}  {:>10}  {:>10}",
        "#", "name", "op", "kernel", "instructions", "ms", "uJ", "weights B", "act B"
    );
    for (i, l) in c.layers.iter().enumerate() {
        let _ = writeln!(
            o,
            "{:>4}  {:<NAME$}  {:<16}  {:<16}  {:>12}  {:>10}  {:>10}  {:>10}  {:>10}",
            i,
            clip(&l.name, NAME),
            clip(&l.op, 16),
            l.kernel,
            l.instructions
                .map_or("-".into(), |v| thousands(v.max(0.0).round() as u64)),
            opt(l.latency_ms, 4),
            opt(l.energy_uj, 2),
            thousands(l.weight_bytes),
            thousands(l.activation_bytes)
        );
    }
    let _ = writeln!(
        o,
        "  total: {} instructions, latency {} ms{}, energy {}",
        c.instructions
            .map_or("-".into(), |v| thousands(v.max(0.0).round() as u64)),
        opt(c.latency_ms, 3),
        c.clock_hz
            .map_or(String::new(), |hz| format!(" at {} MHz", hz as f64 / 1e6)),
        c.energy_uj
            .map_or("not estimated".into(), |e| format!("{e:.1} uJ"))
    );
    let _ = writeln!(o, "  energy: {}", c.energy_note);
    let _ = writeln!(
        o,
        "  RAM:   {} B (arena {} + scratch {} + stack {})",
        thousands(c.ram.total_bytes),
        thousands(c.ram.arena_bytes),
        thousands(c.ram.scratch_bytes),
        thousands(c.ram.stack_bytes)
    );
    let _ = writeln!(
        o,
        "  flash: {} B (weights {} + code {})",
        thousands(c.flash.total_bytes),
        thousands(c.flash.weights_bytes),
        thousands(c.flash.code_bytes)
    );
    render_fit(o, "RAM:", "total", &c.memory.ram, "RAM");
    render_fit(o, "flash:", "total", &c.memory.flash, "flash");
    let _ = writeln!(
        o,
        "  {} (RAM and flash as the cost model counts them)",
        if c.fits { "fits" } else { "DOES NOT FIT" }
    );
    for n in &c.notes {
        let _ = writeln!(o, "  note: {n}");
    }
}

fn render_fit(o: &mut String, what: &str, need: &str, f: &Fit, memory: &str) {
    let _ = match (f.budget_bytes, f.fits) {
        (Some(b), Some(fits)) => writeln!(
            o,
            "  {what:<6} {need} {} B of {} B {memory} ({:.1}%): {}",
            thousands(f.need_bytes),
            thousands(b),
            100.0 * f.need_bytes as f64 / b as f64,
            if fits { "fits" } else { "DOES NOT FIT" }
        ),
        _ => writeln!(
            o,
            "  {what:<6} {need} {} B; no {memory} budget ({})",
            thousands(f.need_bytes),
            f.unknown_why.as_deref().unwrap_or("not given")
        ),
    };
}

/// Profiles `graph` at the given batch size.
pub fn inspect(graph: &Graph, model_name: &str, batch: usize) -> Result<Report> {
    // A batch other than 1 needs an input whose leading dimension is dynamic;
    // otherwise the report would silently describe batch 1.
    let dynamic = graph.inputs.iter().any(|&i| {
        graph.values[i]
            .shape
            .as_ref()
            .and_then(|s| s.first())
            .is_some_and(|d| d.fixed().is_none())
    });
    if batch != 1 && !dynamic {
        bail!("--batch {batch}: the model's inputs have a fixed batch dimension");
    }
    let shapes = bind_input_shapes(graph, batch).context("cannot bind the input shapes")?;
    let p: ModelProfile = profile(graph, &shapes).context("cannot profile the model")?;
    let inputs = graph
        .inputs
        .iter()
        .zip(&p.input_shapes)
        .map(|(&i, s)| TensorInfo {
            name: graph.values[i].name.clone(),
            dtype: graph.values[i].dtype.to_string(),
            shape: s.clone(),
        })
        .collect();
    // Output shapes at this batch: from the layer that produces them.
    let outputs = graph
        .outputs
        .iter()
        .map(|&o| {
            let shape = graph
                .nodes
                .iter()
                .zip(&p.layers)
                .find_map(|(n, l)| {
                    let k = n.outputs.iter().position(|&x| x == o)?;
                    l.output_shapes.get(k).cloned()
                })
                .or_else(|| graph.values[o].fixed_shape())
                .unwrap_or_default();
            TensorInfo {
                name: graph.values[o].name.clone(),
                dtype: graph.values[o].dtype.to_string(),
                shape,
            }
        })
        .collect();
    let layers = p
        .layers
        .iter()
        .map(|l| LayerInfo {
            name: l.name.clone(),
            op: l.op.to_string(),
            output_shapes: l.output_shapes.clone(),
            output_dtypes: l.output_dtypes.iter().map(|d| d.to_string()).collect(),
            params: l.params,
            macs: l.macs,
            elem_ops: l.elem_ops,
            weight_bytes: l.weight_bytes,
            activation_bytes: l.activation_bytes,
            folded: l.folded,
        })
        .collect();
    Ok(Report {
        model: model_name.to_string(),
        source: describe_source(graph),
        batch,
        inputs,
        outputs,
        layers,
        totals: Totals {
            params: p.total_params,
            macs: p.total_macs,
            elem_ops: p.total_elem_ops,
            weight_bytes: p.total_weight_bytes,
            activation_bytes: p.total_activation_bytes,
            input_bytes: p.input_bytes,
        },
        memory: Memory {
            peak_arena_bytes: p.peak_arena_bytes,
            naive_activation_bytes: p.naive_activation_bytes,
            folded_bytes: p.folded_bytes,
        },
        device: None,
    })
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in B / KiB / MiB / GiB with one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn shape_str(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// Long names (TFLite and tf2onnx join every fused op's name with ';') are cut to fit
/// the table; `--json` has them whole.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}

/// The human-readable table.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let ins: Vec<String> = r
        .inputs
        .iter()
        .map(|t| format!("{} {} {}", t.name, t.dtype, shape_str(&t.shape)))
        .collect();
    let outs: Vec<String> = r
        .outputs
        .iter()
        .map(|t| format!("{} {} {}", t.name, t.dtype, shape_str(&t.shape)))
        .collect();
    let _ = writeln!(o, "model:   {} ({})", r.model, r.source);
    let _ = writeln!(o, "inputs:  {}", ins.join(", "));
    let _ = writeln!(o, "outputs: {}", outs.join(", "));
    let _ = writeln!(o, "batch:   {}", r.batch);
    let _ = writeln!(o);
    const NAME: usize = 36;
    let _ = writeln!(
        o,
        "{:>4}  {:<NAME$}  {:<18}  {:<16}  {:>9}  {:>13}  {:>10}  {:>10}",
        "#", "name", "op", "output", "params", "MACs", "weights B", "act B"
    );
    for (i, l) in r.layers.iter().enumerate() {
        let out = l
            .output_shapes
            .iter()
            .map(|s| shape_str(s))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            o,
            "{:>4}  {:<NAME$}  {:<18}  {:<16}  {:>9}  {:>13}  {:>10}  {:>10}",
            i,
            clip(&l.name, NAME),
            if l.folded {
                format!("{}*", clip(&l.op, 17))
            } else {
                clip(&l.op, 18)
            },
            out,
            thousands(l.params),
            thousands(l.macs),
            thousands(l.weight_bytes),
            thousands(l.activation_bytes)
        );
    }
    let t = &r.totals;
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "total:   {} layers, {} params ({} of weights), {} MACs, {} element ops",
        r.layers.len(),
        thousands(t.params),
        human_bytes(t.weight_bytes),
        thousands(t.macs),
        thousands(t.elem_ops)
    );
    let _ = writeln!(
        o,
        "activations: {} in layer outputs + {} of inputs",
        human_bytes(t.activation_bytes),
        human_bytes(t.input_bytes)
    );
    let m = &r.memory;
    if r.layers.iter().any(|l| l.folded) {
        let _ = writeln!(
            o,
            "* computed from constants only: folded before inference ({} kept beside the \
             weights), not counted in the run-time totals or the arena",
            human_bytes(m.folded_bytes)
        );
    }
    let ratio = if m.peak_arena_bytes > 0 {
        format!(
            ", {:.1}x smaller",
            m.naive_activation_bytes as f64 / m.peak_arena_bytes as f64
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "peak arena: {} ({} B, static plan) vs naive sum of activations {} ({} B){ratio}",
        human_bytes(m.peak_arena_bytes),
        thousands(m.peak_arena_bytes),
        human_bytes(m.naive_activation_bytes),
        thousands(m.naive_activation_bytes),
    );
    if let Some(d) = &r.device {
        let mut what = vec![d.class.clone()];
        what.extend(d.core.clone());
        if let Some(hz) = d.clock_hz {
            what.push(format!("{} MHz", hz as f64 / 1e6));
        }
        what.push(d.from.clone());
        let _ = writeln!(o, "\ndevice: {} ({})", d.name, what.join(", "));
        render_fit(&mut o, "RAM:", "peak arena", &d.memory.ram, "RAM");
        render_fit(&mut o, "flash:", "weights", &d.memory.flash, "flash");
        let _ = writeln!(
            o,
            "  {} (lower bounds: code, kernel scratch and stack not counted; `edgeopt compile` counts them)",
            if d.fits { "fits" } else { "DOES NOT FIT" }
        );
        match (&d.cost, &d.cost_unavailable) {
            (Some(c), _) => render_cost(&mut o, c),
            (None, Some(why)) => {
                let _ = writeln!(o, "  cost model: not estimated: {why}");
            }
            (None, None) => {}
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeopt_ir::{DType, Dim, Op, UnaryKind};

    #[test]
    fn batch_needs_a_dynamic_input() {
        let mut g = Graph::new("g");
        let x = g.add_value("x", DType::F32, Some(vec![Dim::Fixed(1), Dim::Fixed(4)]));
        let y = g.add_value("y", DType::F32, None);
        g.add_node("relu", Op::Unary(UnaryKind::Relu), vec![Some(x)], vec![y]);
        g.inputs = vec![x];
        g.outputs = vec![y];
        let e = inspect(&g, "g", 2).unwrap_err().to_string();
        assert!(e.contains("fixed batch"), "{e}");
        let r = inspect(&g, "g", 1).unwrap();
        assert_eq!(r.outputs[0].shape, vec![1, 4]);
        assert_eq!(r.memory.peak_arena_bytes, 16, "relu in place over x");
        assert_eq!(r.memory.naive_activation_bytes, 32);
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12501632), "12,501,632");
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
