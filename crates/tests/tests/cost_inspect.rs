//! `edgeopt inspect MODEL --device NAME`: the cost model's per-layer and total estimates
//! (issue 15 item 8) on the MLPerf Tiny AD model, for a microcontroller profile (the
//! fitted instruction model at the profile's clock) and a Raspberry Pi profile (the host
//! bound, with energy from its sourced active power). The instruction counts themselves
//! are checked against qemu in codegen_mcu.rs and exporters_corpus.rs.

use edgeopt_cli::inspect::{add_cost, check_device, inspect, render};
use edgeopt_testkit as tk;
use edgeopt_tests::samples;

#[test]
fn inspect_device_prints_the_cost_model() {
    let Some(model) = tk::data_file(samples::AD) else {
        return;
    };
    let g = edgeopt_cli::load_model(&model).unwrap();

    // NUCLEO-L4R5ZI: DSP path, 120 MHz.
    let dev = edgeopt_device::resolve("stm32l4r5").unwrap();
    let mut r = inspect(&g, "ad", 1).unwrap();
    check_device(&mut r, &dev, "built-in");
    add_cost(&mut r, &g, &dev);
    let d = r.device.as_ref().unwrap();
    let c = d.cost.as_ref().expect("an estimate");
    assert!(c.method.contains("dsp"), "{}", c.method);
    let instr = c.instructions.unwrap();
    let per_layer: f64 = c.layers.iter().map(|l| l.instructions.unwrap()).sum();
    assert!((instr - per_layer).abs() < 1e-6 * instr);
    let ms = c.latency_ms.unwrap();
    assert!((ms - instr / 120e6 * 1e3).abs() < 1e-9 * ms, "{ms} ms");
    assert_eq!(
        c.ram.total_bytes,
        c.ram.arena_bytes + c.ram.scratch_bytes + c.ram.stack_bytes
    );
    assert_eq!(c.ram.arena_bytes, r.memory.peak_arena_bytes);
    assert_eq!(
        c.flash.total_bytes,
        c.flash.weights_bytes + c.flash.code_bytes
    );
    assert!(c.fits, "AD fits 640 KiB SRAM / 2 MiB flash");
    // No sourced power figure for this part: no energy, and the report says why.
    assert!(c.energy_uj.is_none());
    assert!(
        c.energy_note.contains("active power unknown"),
        "{}",
        c.energy_note
    );
    let text = render(&r);
    assert!(text.contains("cost model on stm32l4r5"), "{text}");
    assert!(
        text.contains("total:") && text.contains("at 120 MHz"),
        "{text}"
    );

    // The same model on the portable path (a profile without DSP) costs more.
    let mut nodsp = dev.clone();
    nodsp.isa.dsp = false;
    let mut r2 = inspect(&g, "ad", 1).unwrap();
    check_device(&mut r2, &nodsp, "test");
    add_cost(&mut r2, &g, &nodsp);
    let c2 = r2.device.unwrap().cost.unwrap();
    assert!(c2.method.contains("portable"), "{}", c2.method);
    assert!(c2.instructions.unwrap() > instr);

    // A Raspberry Pi 4: the labelled host bound, energy = time x its sourced power.
    let pi = edgeopt_device::resolve("raspberry-pi-4b").unwrap();
    let mut r3 = inspect(&g, "ad", 1).unwrap();
    check_device(&mut r3, &pi, "built-in");
    add_cost(&mut r3, &g, &pi);
    let c3 = r3.device.unwrap().cost.unwrap();
    assert!(c3.method.contains("lower bound"), "{}", c3.method);
    let watts = pi.active_power.as_ref().unwrap().watts();
    let e = c3.energy_uj.unwrap();
    let want = c3.latency_ms.unwrap() * 1e-3 * watts * 1e6;
    assert!((e - want).abs() < 1e-9 * want, "{e} vs {want}");

    // --batch other than 1: no estimate, and why.
    let mut r4 = inspect(&g, "ad", 1).unwrap();
    r4.batch = 2;
    check_device(&mut r4, &dev, "built-in");
    add_cost(&mut r4, &g, &dev);
    let d4 = r4.device.unwrap();
    assert!(d4.cost.is_none());
    assert!(d4.cost_unavailable.unwrap().contains("batch 1"));
}
