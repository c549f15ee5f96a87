//! Fast integer kernels == reference integer kernels, bit for bit (whole models:
//! `crates/tests/tests/fast_kernels_models.rs`).
//!
//! Property tests over random single-node graphs: convolution (strides, dilations,
//! explicit / SAME / VALID padding, 1-D and 2-D, depthwise with channel multipliers),
//! fully-connected (also wide layers), add/sub/mul (same shapes and broadcast),
//! average/max pooling, softmax (last and other axes); i8 and u8 activations with
//! random zero points; per-tensor and per-channel weights in i8, u8 (with zero
//! points), i4 and ternary {-1, 0, 1}; optional bias; every fused activation;
//! multipliers below and above 1. Each case runs on the reference kernels
//! and on the fast kernels, on every instruction set this CPU has
//! (`Isa::available()`: portable, AVX2, AVX-VNNI, AVX-512), through a prepared
//! `Session` (twice, to exercise buffer reuse) and through the stateless executor;
//! the outputs (or the fact that all fail) must agree. Both integer arithmetics
//! (`Numerics::LiteRt`, `Numerics::Reference` and `Numerics::Tflm`) are covered.

use crate::kernels::fast::{Isa, Kernels};
use crate::kernels::quantized::Numerics;
use crate::kernels::{eval_node, NodeCtx};
use crate::{ExecOptions, Session};
use edgeopt_ir::{
    Activation, AutoPad, BinaryKind, ConvAttrs, DType, Dim, Graph, Layout, Op, PoolAttrs,
    QuantParams, Tensor, TensorData,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn fixed(shape: &[usize]) -> Option<Vec<Dim>> {
    Some(shape.iter().map(|&d| Dim::Fixed(d)).collect())
}

fn act(r: &mut StdRng) -> Activation {
    [
        Activation::None,
        Activation::Relu,
        Activation::Relu6,
        Activation::ReluN1To1,
    ][r.gen_range(0..4)]
}

/// Random activation data of `dt` (i8 or u8).
fn act_data(r: &mut StdRng, dt: DType, n: usize) -> TensorData {
    match dt {
        DType::I8 => TensorData::I8((0..n).map(|_| r.gen()).collect()),
        _ => TensorData::U8((0..n).map(|_| r.gen()).collect()),
    }
}

fn act_zp(r: &mut StdRng, dt: DType) -> i64 {
    match dt {
        DType::I8 => r.gen_range(-128..=127),
        _ => r.gen_range(0..=255),
    }
}

/// Weights `[m, per]` of a random kind, with their quant params (axis 0).
fn weights(
    r: &mut StdRng,
    shape: Vec<usize>,
    in_scale: f32,
    out_scale: &mut f32,
) -> (Tensor, QuantParams) {
    let m = shape[0];
    let n: usize = shape.iter().product();
    let kind = r.gen_range(0..5);
    let data = match kind {
        0 => TensorData::I8((0..n).map(|_| r.gen()).collect()),
        1 => TensorData::U8((0..n).map(|_| r.gen()).collect()),
        2 => TensorData::I4((0..n).map(|_| r.gen_range(-8..=7)).collect()),
        // Trained-like: small next to the per-channel maximum, a few at the extremes
        // (the AVX2 `vpmaddubsw` kernel takes these, with a remainder).
        3 => TensorData::I8(
            (0..n)
                .map(|_| match r.gen_range(0..50) {
                    0 => 127,
                    1 => -127,
                    _ => r.gen_range(-20..=20),
                })
                .collect(),
        ),
        _ => TensorData::I8((0..n).map(|_| r.gen_range(-1..=1)).collect()),
    };
    let per_channel = r.gen_bool(0.6);
    let nq = if per_channel { m } else { 1 };
    let scales: Vec<f32> = (0..nq).map(|_| r.gen_range(0.002f32..0.05)).collect();
    let zps: Vec<i64> = (0..nq)
        .map(|_| if kind == 1 { r.gen_range(0..=255) } else { 0 })
        .collect();
    // Output scale so that the real multiplier in*w/out spans 2^-14 .. 2^1.
    let mult = 2f32.powf(r.gen_range(-14.0f32..1.0));
    *out_scale = in_scale * scales[0] / mult;
    let q = if per_channel {
        QuantParams::per_axis(scales, zps, 0)
    } else {
        QuantParams::per_tensor(scales[0], zps[0])
    };
    (Tensor::new(shape, data).unwrap(), q)
}

fn bias(r: &mut StdRng, m: usize) -> Tensor {
    Tensor::new(
        vec![m],
        TensorData::I32((0..m).map(|_| r.gen_range(-20000..20000)).collect()),
    )
    .unwrap()
}

/// A one-node graph: (graph, runtime inputs).
struct Case {
    g: Graph,
    inputs: Vec<Tensor>,
}

fn add_act_input(g: &mut Graph, name: &str, t: &Tensor, q: QuantParams) -> usize {
    let id = g.add_value(name, t.dtype(), fixed(&t.shape));
    g.values[id].quant = Some(q);
    id
}

fn conv_case(seed: u64) -> Case {
    let r = &mut StdRng::seed_from_u64(seed);
    let dt = if r.gen_bool(0.7) {
        DType::I8
    } else {
        DType::U8
    };
    // One case in five: the 3x3 stride-1 depthwise layer of the row-sharing AVX2
    // kernel (`avx2::Depthwise2::rows3`), with rows of 1 to 12 pixels and up to 40
    // channels (whole and partial 16-channel blocks).
    let rows3 = r.gen_bool(0.2);
    let one_d = !rows3 && r.gen_bool(0.15);
    let depthwise = rows3 || r.gen_bool(0.35);
    let n = r.gen_range(1..=2);
    let (h, w) = (
        if one_d { 1 } else { r.gen_range(1..=9) },
        r.gen_range(1..=if rows3 { 12 } else { 9 }),
    );
    let c = r.gen_range(1..=if rows3 { 40 } else { 20 });
    let (kh, kw) = if rows3 {
        (3, 3)
    } else {
        (
            if one_d { 1 } else { r.gen_range(1..=4) },
            r.gen_range(1..=4),
        )
    };
    let (group, m) = if rows3 {
        (c, c)
    } else if depthwise {
        (c, c * r.gen_range(1..=3))
    } else {
        (1, r.gen_range(1..=40))
    };
    let cg = c / group;
    let sp = if one_d { 1 } else { 2 };
    let strides: Vec<usize> = (0..sp)
        .map(|_| if rows3 { 1 } else { r.gen_range(1..=3) })
        .collect();
    let dilations: Vec<usize> = (0..sp)
        .map(|_| if rows3 { 1 } else { r.gen_range(1..=2) })
        .collect();
    let auto_pad = [AutoPad::NotSet, AutoPad::SameUpper, AutoPad::Valid][r.gen_range(0..3)];
    let pads: Vec<usize> = if auto_pad == AutoPad::NotSet {
        (0..2 * sp).map(|_| r.gen_range(0..=2)).collect()
    } else {
        vec![]
    };
    let xshape = if one_d {
        vec![n, w, c]
    } else {
        vec![n, h, w, c]
    };
    let wshape = if one_d {
        vec![m, kw, cg]
    } else {
        vec![m, kh, kw, cg]
    };
    let in_scale = r.gen_range(0.005f32..0.1);
    let mut out_scale = 0.0;
    let (wt, wq) = weights(r, wshape, in_scale, &mut out_scale);
    let nx: usize = xshape.iter().product();
    let x = Tensor::new(xshape, act_data(r, dt, nx)).unwrap();
    let mut g = Graph::new("conv");
    let xi = add_act_input(
        &mut g,
        "x",
        &x,
        QuantParams::per_tensor(in_scale, act_zp(r, dt)),
    );
    let wi = g.add_const("w", wt);
    g.values[wi].quant = Some(wq);
    let bi = r.gen_bool(0.8).then(|| g.add_const("b", bias(r, m)));
    let yi = g.add_value("y", dt, None);
    g.values[yi].quant = Some(QuantParams::per_tensor(out_scale, act_zp(r, dt)));
    let attrs = ConvAttrs {
        layout: Layout::Nhwc,
        kernel_shape: vec![],
        strides,
        dilations,
        pads,
        auto_pad,
        group,
        activation: act(r),
        hybrid: None,
    };
    g.add_node(
        "conv",
        Op::Conv(attrs),
        vec![Some(xi), Some(wi), bi],
        vec![yi],
    );
    g.inputs = vec![xi];
    g.outputs = vec![yi];
    Case { g, inputs: vec![x] }
}

fn fc_case(seed: u64) -> Case {
    let r = &mut StdRng::seed_from_u64(seed);
    let dt = if r.gen_bool(0.7) {
        DType::I8
    } else {
        DType::U8
    };
    let rows = r.gen_range(1..=6);
    let k = r.gen_range(1..=70);
    // Sometimes wide layers: the AVX-512 GEMM takes 8 blocks of 16 channels at once
    // for few rows, with a partial last group.
    let nout = if r.gen_bool(0.2) {
        r.gen_range(100..=300)
    } else {
        r.gen_range(1..=40)
    };
    let in_scale = r.gen_range(0.005f32..0.1);
    let mut out_scale = 0.0;
    let (wt, wq) = weights(r, vec![nout, k], in_scale, &mut out_scale);
    let xshape = if r.gen_bool(0.5) {
        vec![rows, k]
    } else {
        vec![1, rows, k]
    };
    let x = Tensor::new(xshape, act_data(r, dt, rows * k)).unwrap();
    let mut g = Graph::new("fc");
    let xi = add_act_input(
        &mut g,
        "x",
        &x,
        QuantParams::per_tensor(in_scale, act_zp(r, dt)),
    );
    let wi = g.add_const("w", wt);
    g.values[wi].quant = Some(wq);
    let bi = r.gen_bool(0.8).then(|| g.add_const("b", bias(r, nout)));
    let yi = g.add_value("y", dt, None);
    g.values[yi].quant = Some(QuantParams::per_tensor(out_scale, act_zp(r, dt)));
    let op = Op::FullyConnected {
        activation: act(r),
        keep_num_dims: r.gen_bool(0.3),
        hybrid: None,
    };
    g.add_node("fc", op, vec![Some(xi), Some(wi), bi], vec![yi]);
    g.inputs = vec![xi];
    g.outputs = vec![yi];
    Case { g, inputs: vec![x] }
}

fn binary_case(seed: u64) -> Case {
    let r = &mut StdRng::seed_from_u64(seed);
    let dt = if r.gen_bool(0.7) {
        DType::I8
    } else {
        DType::U8
    };
    let shape: Vec<usize> = (0..r.gen_range(1..=4))
        .map(|_| r.gen_range(1..=7))
        .collect();
    let bshape = if r.gen_bool(0.2) {
        vec![*shape.last().unwrap()]
    } else {
        shape.clone()
    };
    let kind = [BinaryKind::Add, BinaryKind::Sub, BinaryKind::Mul][r.gen_range(0..3)];
    let mut g = Graph::new("binary");
    let na: usize = shape.iter().product();
    let nb: usize = bshape.iter().product();
    let a = Tensor::new(shape, act_data(r, dt, na)).unwrap();
    let b = Tensor::new(bshape, act_data(r, dt, nb)).unwrap();
    let sa = r.gen_range(0.005f32..0.2);
    let sb = sa * 2f32.powf(r.gen_range(-3.0f32..3.0));
    let sy = if kind == BinaryKind::Mul {
        sa * sb * 2f32.powf(r.gen_range(-9.0f32..1.0)) * 128.0
    } else {
        sa.max(sb) * 2f32.powf(r.gen_range(-1.0f32..2.0))
    };
    let ai = add_act_input(&mut g, "a", &a, QuantParams::per_tensor(sa, act_zp(r, dt)));
    let bi = add_act_input(&mut g, "b", &b, QuantParams::per_tensor(sb, act_zp(r, dt)));
    let yi = g.add_value("y", dt, None);
    g.values[yi].quant = Some(QuantParams::per_tensor(sy, act_zp(r, dt)));
    let op = Op::Binary {
        kind,
        activation: act(r),
    };
    g.add_node("bin", op, vec![Some(ai), Some(bi)], vec![yi]);
    g.inputs = vec![ai, bi];
    g.outputs = vec![yi];
    Case {
        g,
        inputs: vec![a, b],
    }
}

fn pool_case(seed: u64) -> Case {
    let r = &mut StdRng::seed_from_u64(seed);
    let dt = if r.gen_bool(0.7) {
        DType::I8
    } else {
        DType::U8
    };
    // Up to 70 channels (whole 16-channel vectors and a tail); one case in four a
    // global pool over up to 18 x 18 (windows past the 8-bit sums' i16 limit too).
    let global = r.gen_bool(0.25);
    let side = if global { 18 } else { 10 };
    let shape = vec![
        r.gen_range(1..=2),
        r.gen_range(1..=side),
        r.gen_range(1..=side),
        r.gen_range(1..=70),
    ];
    let n: usize = shape.iter().product();
    let kernel_shape = if global {
        vec![shape[1], shape[2]]
    } else {
        vec![r.gen_range(1..=4), r.gen_range(1..=4)]
    };
    let x = Tensor::new(shape, act_data(r, dt, n)).unwrap();
    let auto_pad = [AutoPad::NotSet, AutoPad::SameUpper, AutoPad::Valid][r.gen_range(0..3)];
    let attrs = PoolAttrs {
        layout: Layout::Nhwc,
        kernel_shape,
        strides: vec![r.gen_range(1..=3), r.gen_range(1..=3)],
        dilations: vec![],
        pads: if auto_pad == AutoPad::NotSet {
            (0..4).map(|_| r.gen_range(0..=1)).collect()
        } else {
            vec![]
        },
        auto_pad,
        ceil_mode: false,
        count_include_pad: false,
        activation: act(r),
    };
    let q = QuantParams::per_tensor(r.gen_range(0.005f32..0.1), act_zp(r, dt));
    let mut g = Graph::new("pool");
    let xi = add_act_input(&mut g, "x", &x, q.clone());
    let yi = g.add_value("y", dt, None);
    g.values[yi].quant = Some(q);
    let op = if r.gen_bool(0.5) {
        Op::AveragePool(attrs)
    } else {
        Op::MaxPool(attrs)
    };
    g.add_node("pool", op, vec![Some(xi)], vec![yi]);
    g.inputs = vec![xi];
    g.outputs = vec![yi];
    Case { g, inputs: vec![x] }
}

fn softmax_case(seed: u64) -> Case {
    let r = &mut StdRng::seed_from_u64(seed);
    let dt = if r.gen_bool(0.7) {
        DType::I8
    } else {
        DType::U8
    };
    let shape: Vec<usize> = (0..r.gen_range(1..=3))
        .map(|_| r.gen_range(1..=12))
        .collect();
    let n: usize = shape.iter().product();
    let x = Tensor::new(shape.clone(), act_data(r, dt, n)).unwrap();
    let mut g = Graph::new("softmax");
    let q = QuantParams::per_tensor(r.gen_range(0.01f32..0.5), act_zp(r, dt));
    let xi = add_act_input(&mut g, "x", &x, q);
    let yi = g.add_value("y", dt, None);
    // TFLite's output quantization of softmax: scale 1/256, zero point at the bottom.
    let zp = if dt == DType::I8 { -128 } else { 0 };
    g.values[yi].quant = Some(QuantParams::per_tensor(1.0 / 256.0, zp));
    // Mostly the last axis (the fast path), sometimes another (reference fallback).
    let axis = if r.gen_bool(0.8) {
        -1
    } else {
        r.gen_range(0..shape.len() as i64)
    };
    let op = Op::Softmax {
        axis,
        beta: r.gen_range(0.5f32..2.0),
    };
    g.add_node("softmax", op, vec![Some(xi)], vec![yi]);
    g.inputs = vec![xi];
    g.outputs = vec![yi];
    Case { g, inputs: vec![x] }
}

/// Every fast way of running the case gives the reference's result (or all fail).
fn check(case: &Case, numerics: Numerics) -> Result<(), TestCaseError> {
    let g = &case.g;
    let node = &g.nodes[0];
    let ins: Vec<Option<&Tensor>> = node
        .inputs
        .iter()
        .map(|x| {
            x.map(|id| {
                g.values[id].data.as_ref().unwrap_or_else(|| {
                    &case.inputs[g.inputs.iter().position(|&i| i == id).unwrap()]
                })
            })
        })
        .collect();
    let opts = |kernels| ExecOptions { numerics, kernels };
    let reference = NodeCtx::new(g, node, opts(Kernels::Reference));
    let want = eval_node(&reference, &ins).map(|mut o| o.remove(0));
    for isa in Isa::available() {
        let ctx = NodeCtx::new(g, node, opts(Kernels::Fast(isa)));
        let got = eval_node(&ctx, &ins).map(|mut o| o.remove(0));
        match (&want, &got) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "stateless, {}", isa.name()),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(
                false,
                "stateless {}: reference {:?}, fast {:?}",
                isa.name(),
                want,
                got
            ),
        }
        let mut s = Session::with_options(g, opts(Kernels::Fast(isa)));
        for run in 0..2 {
            let got = s.run(&case.inputs).map(|mut o| o.remove(0));
            match (&want, &got) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "session run {}, {}", run, isa.name()),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(
                    false,
                    "session {}: reference {:?}, fast {:?}",
                    isa.name(),
                    want,
                    got
                ),
            }
        }
    }
    Ok(())
}

fn with_numerics(seed: u64, f: impl Fn(u64) -> Case) -> Result<(), TestCaseError> {
    // Seeds cycle through LiteRT's builtin kernels, its reference kernels and TFLite
    // Micro's arithmetic.
    let num = match seed % 3 {
        0 => Numerics::LiteRt,
        1 => Numerics::Reference,
        _ => Numerics::Tflm,
    };
    check(&f(seed), num)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn conv_matches_reference(seed in any::<u64>()) {
        with_numerics(seed, conv_case)?;
    }

    #[test]
    fn fc_matches_reference(seed in any::<u64>()) {
        with_numerics(seed, fc_case)?;
    }

    #[test]
    fn binary_matches_reference(seed in any::<u64>()) {
        with_numerics(seed, binary_case)?;
    }

    #[test]
    fn pool_matches_reference(seed in any::<u64>()) {
        with_numerics(seed, pool_case)?;
    }

    #[test]
    fn softmax_matches_reference(seed in any::<u64>()) {
        with_numerics(seed, softmax_case)?;
    }
}

/// The fast conv kernel really runs (a prepared kernel exists) for the common cases,
/// so the property tests above do not pass by falling back to the reference.
#[test]
fn fast_kernels_are_used() {
    let mut used = 0;
    for seed in 0..40 {
        for case in [
            conv_case(seed),
            fc_case(seed),
            binary_case(seed),
            pool_case(seed),
        ] {
            let opts = ExecOptions::default().with_kernels(Kernels::Fast(Isa::PORTABLE));
            used += Session::with_options(&case.g, opts).fast_nodes();
        }
    }
    assert!(used >= 140, "only {used} of 160 nodes got a fast kernel");
}

/// `Aligned` starts on a cache line, holds zeros, and a clone is aligned anew with
/// the same contents.
#[test]
fn aligned_buffer_starts_on_a_line() {
    use crate::kernels::fast::Aligned;
    for len in [0usize, 1, 7, 64, 1000] {
        let mut a = Aligned::<i16>::zeroed(len);
        assert_eq!(a.as_slice().len(), len);
        assert_eq!(a.as_slice().as_ptr() as usize % 64, 0);
        assert!(a.as_slice().iter().all(|&v| v == 0));
        for (i, v) in a.as_mut_slice().iter_mut().enumerate() {
            *v = i as i16;
        }
        let b = a.clone();
        assert_eq!(b.as_slice(), a.as_slice());
        assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
    }
}
