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
//! read back compute the same outputs. All but ShuffleNetV2 (no int8 MEAN in the C
//! generator yet) also quantize to int8 and compile to C, whose host build equals
//! `edgeopt run --numerics tflm` byte for byte.

use edgeopt_ir::channels::{analyze, prune_channels, prune_groups, zero_channels, ChannelGroup};
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
    check_c("resnet8", &o.pruned, &o.x);
}

#[test]
fn dscnn_depthwise_groups() {
    let Some(g) = load(DSCNN) else { return };
    let o = check_model("DS-CNN", &g, -30.0, 30.0);
    check_exports("DS-CNN", &o.pruned, &o.pruned, &o.x);
    check_c("dscnn", &o.pruned, &o.x);
}

#[test]
fn mobilenet_v2_groups() {
    let Some(g) = load(MOBILENET) else { return };
    let o = check_model("MobileNetV2", &g, -2.0, 2.0);
    let nhwc = edgeopt_compress::quant::prepare(&o.pruned).unwrap();
    check_exports("MobileNetV2", &o.pruned, &nhwc, &o.x);
    check_c("mobilenet_v2", &o.pruned, &o.x);
}

#[test]
fn shufflenet_v2_groups() {
    let Some(g) = load(SHUFFLENET) else { return };
    let o = check_model("ShuffleNetV2", &g, -2.0, 2.0);
    let nhwc = edgeopt_compress::quant::prepare(&o.pruned).unwrap();
    check_exports("ShuffleNetV2", &o.pruned, &nhwc, &o.x);
    // No C: the C generator has no int8 MEAN yet (a known cell of the corpus test for
    // the unpruned file too).
}

/// Quantizes the pruned float model (int8, integer I/O, TFLite Micro numerics),
/// compiles it to C, builds and runs the C on the host: its outputs equal `edgeopt run
/// --numerics tflm` byte for byte.
fn check_c(name: &str, pruned: &Graph, x: &[Tensor]) {
    use edgeopt_codegen::{compile, write_dir, Target};
    use edgeopt_compress::quant::ptq::{run as ptq, PtqOptions};
    use edgeopt_runtime::kernels::quantized::Numerics;
    use edgeopt_runtime::ExecOptions;
    use edgeopt_tests::harness;
    let opts = PtqOptions {
        exec: ExecOptions::numerics(Numerics::Tflm),
        ..PtqOptions::default()
    };
    let calib = vec![x.to_vec()];
    let mut q = ptq(pruned, &calib, &opts).unwrap().quantized;
    edgeopt_compress::quant::edge::integer_io(&mut q, true).unwrap();
    let gen = compile(&q, Target::by_name("generic").unwrap()).unwrap();
    let Some(_) = harness::host_cc() else {
        println!("  C: generated (no host C compiler to build it)");
        return;
    };
    let work = tk::scratch_dir(&format!("channel_deps/{name}"));
    write_dir(&gen, &work.join("gen")).unwrap();
    let exe = harness::build_host(&work.join("gen"), &work.join("build")).unwrap();
    // One int8 sample: the float input quantized with the model's input parameters.
    let qi = q.values[q.inputs[0]].quant.clone().unwrap();
    let xin: Vec<i8> = x[0]
        .to_f32_vec()
        .iter()
        .map(|&v| ((v / qi.scale[0]).round() as i64 + qi.zero_point[0]).clamp(-128, 127) as i8)
        .collect();
    let got = harness::run_host(
        &exe,
        &xin.iter().map(|&b| b as u8).collect::<Vec<_>>(),
        &work.join("build"),
    )
    .unwrap();
    let t = Tensor::new(x[0].shape.clone(), edgeopt_ir::TensorData::I8(xin)).unwrap();
    // The host harness (scripts/mcu/harness.c) writes every output, back to back.
    let want: Vec<u8> = edgeopt_runtime::run_with(&q, &[t], ExecOptions::numerics(Numerics::Tflm))
        .unwrap()
        .iter()
        .flat_map(|o| o.to_f32_vec().into_iter().map(|v| v as i8 as u8))
        .collect();
    println!(
        "  C: {} B of weights, {} B arena; host build output == runtime (tflm numerics): {}",
        gen.footprint.weights_bytes,
        gen.footprint.arena_bytes,
        got == want
    );
    assert_eq!(got, want, "{name}: generated C differs from the runtime");
}

// ---------------------------------------------------------------------------------
// The hand-built model.

fn rnd(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            scale * (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        })
        .collect()
}

fn conv_attrs(group: usize, pad: usize) -> edgeopt_ir::ConvAttrs {
    edgeopt_ir::ConvAttrs {
        layout: edgeopt_ir::Layout::Nchw,
        kernel_shape: vec![],
        strides: vec![],
        dilations: vec![],
        pads: vec![pad; 4],
        auto_pad: edgeopt_ir::AutoPad::NotSet,
        group,
        activation: edgeopt_ir::Activation::None,
        hybrid: None,
    }
}

/// NCHW, input [1, 3, 8, 8]:
/// - a = Relu(BN(ConvA(x))) (6 ch), b = Relu(ConvB(x)) (4 ch), cat = Concat(a, b);
/// - d = Clip(0, 6)(depthwise 3x3 over cat, group 10);
/// - s = Sigmoid(ConvC(d)) (5 ch), r = Relu(ConvD(s) + ConvE(x)) (8 ch, residual);
/// - out1 = Gemm(Flatten(r)) (each channel a block of 64 features),
///   out2 = MatMul(Flatten(Transpose(r) to NHWC)) (each channel every 8th feature);
/// - out3 = GlobalAveragePool(grouped conv (2 groups of 2) over ConvF(x)).
fn hand_model() -> Graph {
    use edgeopt_ir::{Activation, BinaryKind, DType, Dim, Op, UnaryKind};
    let mut g = Graph::new("concat_depthwise");
    let x = g.add_value(
        "x",
        DType::F32,
        Some([1, 3, 8, 8].iter().map(|&d| Dim::Fixed(d)).collect()),
    );
    g.inputs.push(x);
    let mut seed = 1u64;
    let mut k = |g: &mut Graph, name: &str, shape: Vec<usize>, scale: f32| {
        seed += 1;
        let n = shape.iter().product();
        g.add_const(name, Tensor::from_f32(shape, rnd(n, seed, scale)).unwrap())
    };
    let node = |g: &mut Graph, name: &str, op: Op, ins: Vec<usize>| {
        let y = g.add_value(name, DType::F32, None);
        g.add_node(name, op, ins.into_iter().map(Some).collect(), vec![y]);
        y
    };
    let (wa, ba) = (
        k(&mut g, "wa", vec![6, 3, 3, 3], 0.5),
        k(&mut g, "ba", vec![6], 0.3),
    );
    let ca = node(
        &mut g,
        "conv_a",
        Op::Conv(conv_attrs(1, 1)),
        vec![x, wa, ba],
    );
    let sc = k(&mut g, "bn_scale", vec![6], 1.0);
    let bi = k(&mut g, "bn_bias", vec![6], 0.5);
    let me = k(&mut g, "bn_mean", vec![6], 0.2);
    let va = g.add_const(
        "bn_var",
        Tensor::from_f32(vec![6], vec![0.5, 1.0, 1.5, 0.8, 1.2, 2.0]).unwrap(),
    );
    let bn = node(
        &mut g,
        "bn",
        Op::BatchNorm { epsilon: 1e-5 },
        vec![ca, sc, bi, me, va],
    );
    let a = node(&mut g, "relu_a", Op::Unary(UnaryKind::Relu), vec![bn]);
    let (wb, bb) = (
        k(&mut g, "wb", vec![4, 3, 1, 1], 0.5),
        k(&mut g, "bb", vec![4], 0.3),
    );
    let cb = node(
        &mut g,
        "conv_b",
        Op::Conv(conv_attrs(1, 0)),
        vec![x, wb, bb],
    );
    let b = node(&mut g, "relu_b", Op::Unary(UnaryKind::Relu), vec![cb]);
    let cat = node(
        &mut g,
        "cat",
        Op::Concat {
            axis: 1,
            activation: Activation::None,
        },
        vec![a, b],
    );
    let (wd, bd) = (
        k(&mut g, "w_dw", vec![10, 1, 3, 3], 0.5),
        k(&mut g, "b_dw", vec![10], 0.2),
    );
    let dw = node(
        &mut g,
        "depthwise",
        Op::Conv(conv_attrs(10, 1)),
        vec![cat, wd, bd],
    );
    let d = node(
        &mut g,
        "relu6",
        Op::Clip {
            min: Some(0.0),
            max: Some(6.0),
        },
        vec![dw],
    );
    let (wc, bc) = (
        k(&mut g, "wc", vec![5, 10, 1, 1], 0.5),
        k(&mut g, "bc", vec![5], 0.3),
    );
    let cc = node(
        &mut g,
        "conv_c",
        Op::Conv(conv_attrs(1, 0)),
        vec![d, wc, bc],
    );
    let s = node(&mut g, "sigmoid", Op::Unary(UnaryKind::Sigmoid), vec![cc]);
    let (wdd, bdd) = (
        k(&mut g, "wd", vec![8, 5, 1, 1], 0.5),
        k(&mut g, "bd", vec![8], 0.3),
    );
    let e = node(
        &mut g,
        "conv_d",
        Op::Conv(conv_attrs(1, 0)),
        vec![s, wdd, bdd],
    );
    let (we, be) = (
        k(&mut g, "we", vec![8, 3, 1, 1], 0.5),
        k(&mut g, "be", vec![8], 0.3),
    );
    let f = node(
        &mut g,
        "conv_e",
        Op::Conv(conv_attrs(1, 0)),
        vec![x, we, be],
    );
    let add = node(
        &mut g,
        "add",
        Op::Binary {
            kind: BinaryKind::Add,
            activation: Activation::None,
        },
        vec![e, f],
    );
    let r = node(&mut g, "relu_r", Op::Unary(UnaryKind::Relu), vec![add]);
    let fl = node(&mut g, "flatten", Op::Flatten { axis: 1 }, vec![r]);
    let (wg, cg) = (
        k(&mut g, "w_fc", vec![4, 512], 0.1),
        k(&mut g, "b_fc", vec![4], 0.1),
    );
    let gemm = Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    };
    let out1 = node(&mut g, "out1", gemm, vec![fl, wg, cg]);
    let rt = node(
        &mut g,
        "to_nhwc",
        Op::Transpose {
            perm: vec![0, 2, 3, 1],
        },
        vec![r],
    );
    let fl2 = node(&mut g, "flatten_nhwc", Op::Flatten { axis: 1 }, vec![rt]);
    let wm = k(&mut g, "w_mm", vec![512, 3], 0.1);
    let out2 = node(&mut g, "out2", Op::MatMul, vec![fl2, wm]);
    let wf = k(&mut g, "wf", vec![4, 3, 1, 1], 0.5);
    let cf = node(&mut g, "conv_f", Op::Conv(conv_attrs(1, 0)), vec![x, wf]);
    let wgc = k(&mut g, "w_grouped", vec![4, 2, 3, 3], 0.5);
    let cgc = node(&mut g, "grouped", Op::Conv(conv_attrs(2, 1)), vec![cf, wgc]);
    let out3 = node(&mut g, "out3", Op::GlobalAveragePool, vec![cgc]);
    g.outputs = vec![out1, out2, out3];
    edgeopt_ir::shape::annotate(&mut g).unwrap();
    g.validate().unwrap();
    g
}

/// Whether the group slices the constant `name` (as producer or consumer).
fn has(g: &Graph, grp: &ChannelGroup, name: &str) -> bool {
    grp.spaces.iter().any(|s| g.values[s.value].name == name)
}

/// Whether the constant `name` produces the group's channels.
fn produced_by(g: &Graph, grp: &ChannelGroup, name: &str) -> bool {
    grp.spaces
        .iter()
        .any(|s| s.role == edgeopt_ir::channels::Role::Producer && g.values[s.value].name == name)
}

/// The hand model's groups: which are prunable and why the others are not.
#[test]
fn hand_model_groups_and_reasons() {
    let g = hand_model();
    let an = analyze(&g).unwrap();
    let find = |w: &str| {
        an.groups
            .iter()
            .find(|grp| produced_by(&g, grp, w))
            .unwrap_or_else(|| panic!("no group produced by {w}"))
    };
    // ConvA + BN + concat[0..6) + depthwise channels 0..6 + ConvC's inputs.
    let ga = find("wa");
    assert_eq!(ga.len(), 6);
    assert!(ga.is_prunable() && ga.not_zero_exact.is_none(), "{ga:?}");
    assert!(has(&g, ga, "bn_scale") && has(&g, ga, "w_dw") && has(&g, ga, "wc"));
    let gb = find("wb");
    assert_eq!(gb.len(), 4);
    assert!(gb.is_prunable() && gb.not_zero_exact.is_none());
    // The Sigmoid makes a removed channel 0.5, not 0: prunable, not zero-exact.
    let gc = find("wc");
    assert!(gc.is_prunable());
    assert!(
        gc.not_zero_exact.as_deref().unwrap().contains("Sigmoid"),
        "{gc:?}"
    );
    // The residual: ConvD and ConvE outputs, the add, both flattens, Gemm and MatMul rows.
    let gd = find("wd");
    assert_eq!(gd.len(), 8);
    assert!(has(&g, gd, "we") && has(&g, gd, "w_fc") && has(&g, gd, "w_mm"));
    assert!(gd.is_prunable() && gd.not_zero_exact.is_none());
    // Not prunable: the graph outputs, and the grouped conv on both sides.
    let gf = find("wf");
    assert!(!gf.is_prunable() && gf.blocked.iter().any(|r| r.contains("grouped convolution")));
    assert!(
        an.groups
            .iter()
            .filter(|grp| grp.blocked.iter().any(|r| r.contains("graph output")))
            .count()
            >= 3
    );
    assert_eq!(an.prunable().count(), 4);

    // A non-prunable group, an empty keep, an out-of-range channel, another graph: errors.
    assert!(prune_channels(&g, gf, &[0]).is_err());
    assert!(prune_channels(&g, ga, &[]).is_err());
    assert!(prune_channels(&g, ga, &[0, 6]).is_err());
    let other = load(RESNET).or_else(|| load(DSCNN));
    if let Some(other) = other {
        assert!(prune_channels(&other, ga, &[0, 1]).is_err());
    }
}

/// One group at a time: concat offsets and the depthwise group count follow.
#[test]
fn hand_model_single_groups() {
    let g = hand_model();
    let an = analyze(&g).unwrap();
    let x = inputs(&g, -1.0, 1.0);
    let y0 = run(&g, &x);
    let gb = an
        .groups
        .iter()
        .find(|grp| produced_by(&g, grp, "wb"))
        .unwrap();
    // ConvB's channels 1 and 3 go: concat channels 7 and 9, depthwise 10 -> 8 groups.
    let p = prune_channels(&g, gb, &[0, 2]).unwrap();
    let dw = p.nodes.iter().find(|n| n.name == "depthwise").unwrap();
    let edgeopt_ir::Op::Conv(a) = &dw.op else {
        panic!()
    };
    assert_eq!(a.group, 8);
    let cat = p.find_value("cat").unwrap();
    assert_eq!(p.values[cat].fixed_shape().unwrap(), vec![1, 8, 8, 8]);
    let z = zero_channels(&g, gb, &[1, 3]).unwrap();
    let d = rel_diff(&run(&z, &x), &run(&p, &x));
    assert!(d < 1e-5, "concat group: pruned != zeroed ({d})");
    assert!(rel_diff(&y0, &run(&p, &x)) > 1e-3);

    // The residual group (flatten blocks in Gemm, strided columns in MatMul).
    let gd = an
        .groups
        .iter()
        .find(|grp| produced_by(&g, grp, "wd"))
        .unwrap();
    let p = prune_channels(&g, gd, &[0, 2, 3, 5, 7]).unwrap();
    let wm = p.find_value("w_mm").unwrap();
    assert_eq!(p.values[wm].data.as_ref().unwrap().shape, vec![320, 3]);
    let z = zero_channels(&g, gd, &[1, 4, 6]).unwrap();
    let d = rel_diff(&run(&z, &x), &run(&p, &x));
    assert!(d < 1e-5, "residual group: pruned != zeroed ({d})");

    // The Sigmoid group is prunable but zeroing is not the same function there.
    let gc = an
        .groups
        .iter()
        .find(|grp| produced_by(&g, grp, "wc"))
        .unwrap();
    let p = prune_channels(&g, gc, &[0, 1, 3]).unwrap();
    let z = zero_channels(&g, gc, &[2, 4]).unwrap();
    let d = rel_diff(&run(&z, &x), &run(&p, &x));
    println!("sigmoid group: |pruned - zeroed| {d:.2e} (not claimed equal)");
    assert!(d > 1e-3);
}

#[test]
fn hand_model_all_groups() {
    let g = hand_model();
    let o = check_model("concat+depthwise (hand-built)", &g, -1.0, 1.0);
    let nhwc = edgeopt_compress::quant::prepare(&o.pruned).unwrap();
    check_exports("hand-built", &o.pruned, &nhwc, &o.x);
    check_c("hand", &o.pruned, &o.x);
}

/// The MLPerf int8 ResNet-8: per-channel int8 weights and int32 biases with per-axis
/// scales are sliced with their parameters; integer sums with zero terms are exact, so
/// pruning equals zeroing (weights at their zero point, biases 0) bit for bit.
#[test]
fn resnet8_int8_groups() {
    let Some(g) = load(
        "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet_quant.tflite",
    ) else {
        return;
    };
    let an = analyze(&g).unwrap();
    let plans: Vec<(&ChannelGroup, Vec<usize>)> = an
        .prunable()
        .filter_map(|grp| keep_of(grp).map(|k| (grp, k)))
        .collect();
    assert!(plans.len() >= 6, "{} prunable groups", plans.len());
    let plan: Vec<(&ChannelGroup, &[usize])> =
        plans.iter().map(|(g, k)| (*g, k.as_slice())).collect();
    let pruned = prune_groups(&g, &plan).unwrap();
    let mut zeroed = g.clone();
    for (grp, keep) in &plan {
        let remove: Vec<usize> = (0..grp.len()).filter(|i| !keep.contains(i)).collect();
        zeroed = zero_channels(&zeroed, grp, &remove).unwrap();
    }
    // A conv bias keeps one scale per remaining output channel.
    let sliced = pruned
        .values
        .iter()
        .filter(|v| v.data.is_some() && v.quant.as_ref().is_some_and(|q| q.scale.len() > 1))
        .all(|v| {
            let q = v.quant.as_ref().unwrap();
            q.scale.len() == v.data.as_ref().unwrap().shape[q.axis.unwrap()]
        });
    assert!(sliced, "per-axis scales not sliced with their tensors");
    let shape = edgeopt_ir::shape::bind_input_shapes(&g, 1)
        .unwrap()
        .remove(0);
    let n: usize = shape.iter().product();
    let x = Tensor::new(
        shape,
        edgeopt_ir::TensorData::I8((0..n).map(|i| ((i * 37 + 11) % 256) as u8 as i8).collect()),
    )
    .unwrap();
    let (y0, yz, yp) = (
        run(&g, std::slice::from_ref(&x)),
        run(&zeroed, std::slice::from_ref(&x)),
        run(&pruned, std::slice::from_ref(&x)),
    );
    let p0 = edgeopt_runtime::profile::profile_batch(&g, 1).unwrap();
    let p1 = edgeopt_runtime::profile::profile_batch(&pruned, 1).unwrap();
    println!(
        "ResNet-8 int8: {} groups pruned, weight bytes {} -> {}, MACs {} -> {}; pruned == zeroed: {}, == original: {}",
        plan.len(),
        p0.total_weight_bytes,
        p1.total_weight_bytes,
        p0.total_macs,
        p1.total_macs,
        yp == yz,
        yp == y0
    );
    assert_eq!(yp, yz, "int8: pruned != zeroed");
    assert_ne!(yp, y0, "int8: pruning changed nothing");
    assert!(p1.total_weight_bytes < p0.total_weight_bytes && p1.total_macs < p0.total_macs);
    edgeopt_tflite::export(&pruned).unwrap();
}
