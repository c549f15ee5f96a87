//! Batch-1 latency of a TFLite model on a prepared session, for kernel work without
//! building the CLI: `cargo run --release -p edgeopt-runtime --example latency --
//! MODEL.tflite [RUNS]` (`EDGEOPT_KERNELS` selects the kernels). Prints the median
//! and the minimum in microseconds, and with `EDGEOPT_PER_NODE=1` the mean time of
//! every node. `bench/latency_int8.py` is the benchmark of
//! record; this is the quick loop.

use edgeopt_ir::{Tensor, TensorData};
use edgeopt_runtime::Session;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: latency MODEL.tflite [RUNS]")?;
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let graph = edgeopt_tflite::import_file(&path)?;
    // Seeded pseudo-random inputs (xorshift), in the inputs' own types.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let inputs: Vec<Tensor> = graph
        .inputs
        .iter()
        .map(|&id| {
            let v = &graph.values[id];
            let shape: Vec<usize> = v
                .shape
                .as_ref()
                .map(|s| s.iter().map(|d| d.fixed().unwrap_or(1)).collect())
                .unwrap_or_default();
            let n = shape.iter().product();
            let data = match v.dtype {
                edgeopt_ir::DType::I8 => TensorData::I8((0..n).map(|_| next() as i8).collect()),
                edgeopt_ir::DType::U8 => TensorData::U8((0..n).map(|_| next() as u8).collect()),
                _ => TensorData::F32(
                    (0..n)
                        .map(|_| (next() % 2000) as f32 / 1000.0 - 1.0)
                        .collect(),
                ),
            };
            Tensor { shape, data }
        })
        .collect();
    let opts = edgeopt_runtime::ExecOptions::default()
        .with_kernels(edgeopt_runtime::kernels::fast::Kernels::from_env());
    let mut session = Session::with_options(&graph, opts);
    for _ in 0..runs / 10 + 3 {
        session.run_in_place(&inputs)?;
    }
    // Timed as `edgeopt bench` does: the outputs stay in the session.
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            let r = session.run_in_place(&inputs);
            let e = s.elapsed().as_secs_f64() * 1e6;
            r.map(|_| e)
        })
        .collect::<Result<_, _>>()?;
    t.sort_by(f64::total_cmp);
    if std::env::var_os("EDGEOPT_PER_NODE").is_some() {
        session.set_profiling(true);
        for _ in 0..runs {
            session.run_in_place(&inputs)?;
        }
        let times = session.node_times().unwrap_or_default();
        for (node, s) in graph.nodes.iter().zip(times) {
            println!("  {:40} {:>8.2} us", node.name, s * 1e6);
        }
    }
    println!(
        "{path}: median {:.2} us, min {:.2} us ({} fast nodes of {})",
        t[t.len() / 2],
        t[0],
        session.fast_nodes(),
        graph.nodes.len()
    );
    Ok(())
}
