//! Compiles the MLPerf Tiny int8 models to C, checks them bit-exact against edgeopt's
//! runtime (Numerics::Reference) on the host and on qemu Cortex-M4/M7 (DSP on and off),
//! and prints one JSON object per (model, core, dsp) with sizes and instruction counts.
//! Driven by bench/codegen.py. Usage: mcu_bench DATA_DIR WORK_DIR [ic|kws|ad ...]
use edgeopt_codegen::{compile, harness, samples, write_dir, Target};
use edgeopt_ir::{Tensor, TensorData};
use edgeopt_runtime::kernels::quantized::{set_numerics, Numerics};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn runtime_outputs(g: &edgeopt_ir::Graph, inputs: &[u8]) -> Vec<u8> {
    let shape = edgeopt_ir::shape::bind_input_shapes(g, 1).unwrap().remove(0);
    let per: usize = shape.iter().product();
    let mut out = Vec::new();
    for s in inputs.chunks_exact(per) {
        let t = Tensor::new(shape.clone(), TensorData::I8(s.iter().map(|&b| b as i8).collect())).unwrap();
        for o in edgeopt_runtime::run(g, &[t]).unwrap() {
            match o.data {
                TensorData::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
                d => panic!("unexpected output {:?}", d.dtype()),
            }
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = PathBuf::from(&args[1]);
    let work = PathBuf::from(&args[2]);
    let which: Vec<String> = if args.len() > 3 { args[3..].to_vec() } else { vec!["ic".into(), "kws".into(), "ad".into()] };
    set_numerics(Numerics::Reference);
    for m in which {
        let (rel, n) = match m.as_str() { "ic" => (samples::IC, 20), "kws" => (samples::KWS, 24), _ => (samples::AD, 40) };
        let g = edgeopt_tflite::import_file(&data.join(rel)).unwrap();
        let inputs = match m.as_str() {
            "ic" => { let rows = samples::ic_perf_rows(&data).unwrap(); samples::ic_inputs(&data, &g, &rows[..n]).unwrap() }
            "kws" => samples::kws_inputs(&data, &g, 2).unwrap().0,
            _ => samples::ad_inputs(&data, &g).unwrap(),
        };
        let expected = runtime_outputs(&g, &inputs);
        let t = Target::by_name("cortex-m4").unwrap();
        let gen = compile(&g, t).unwrap();
        eprintln!("{m}: {}", gen.footprint.render());
        let dir = work.join(&m).join("gen");
        write_dir(&gen, &dir).unwrap();
        let exe = harness::build_host(&dir, &work.join(&m).join("host")).unwrap();
        let got = harness::run_host(&exe, &inputs, &work.join(&m).join("host")).unwrap();
        let diff = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        eprintln!("{m}: host {} bytes, {diff} differ (len {} vs {})", got.len(), got.len(), expected.len());
        for core in ["cortex-m4", "cortex-m7"] {
            let t = Target::by_name(core).unwrap();
            for dsp in [true, false] {
                let w = work.join(&m).join(format!("{core}-{}", if dsp { "dsp" } else { "nodsp" }));
                let b = harness::build_arm(&dir, t, dsp, edgeopt_codegen::STACK_BYTES, &w).unwrap();
                let r = harness::run_qemu(&b, t.qemu_machine.unwrap(), &inputs, &w, Duration::from_secs(600)).unwrap();
                let diff = r.outputs.iter().zip(&expected).filter(|(a, b)| a != b).count() + r.outputs.len().abs_diff(expected.len());
                println!("{}", serde_json::json!({"model": m, "core": core, "dsp": dsp, "differ": diff, "image": b.image, "model_sizes": b.model, "run": r, "footprint": gen.footprint}));
            }
        }
    }
    let _ = Path::new(".");
}
