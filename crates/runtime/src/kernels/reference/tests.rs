//! Unit tests of the reference kernels: the fast conv against `conv_naive` over random
//! geometries, and small hand-checked cases of the other families.

use super::conv::{conv_f32, conv_naive};
use super::util::bcast_map;
use crate::kernels::NodeCtx;
use edgeopt_ir::*;
use rand::{Rng, SeedableRng};

fn rand_vec(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

#[test]
fn fast_conv_matches_naive() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut checked = 0;
    for case in 0..400 {
        let nd = 1 + case % 3;
        let layout = if rng.gen_bool(0.5) {
            Layout::Nchw
        } else {
            Layout::Nhwc
        };
        let group_kind = rng.gen_range(0..3); // 0: dense, 1: grouped, 2: depthwise
        let base_c = rng.gen_range(1..4);
        let (group, cg, mg) = match group_kind {
            0 => (1, base_c, rng.gen_range(1..5)),
            1 => (2, base_c, rng.gen_range(1..3)),
            _ => (base_c + 1, 1, rng.gen_range(1..3)),
        };
        let c = group * cg;
        let m = group * mg;
        let n = rng.gen_range(1..3);
        let max_sp = if nd == 3 { 6 } else { 9 };
        let sp: Vec<usize> = (0..nd).map(|_| rng.gen_range(1..max_sp)).collect();
        let k: Vec<usize> = (0..nd).map(|_| rng.gen_range(1..4)).collect();
        let strides: Vec<usize> = (0..nd).map(|_| rng.gen_range(1..3)).collect();
        let dil: Vec<usize> = (0..nd).map(|_| rng.gen_range(1..3)).collect();
        let pads: Vec<usize> = (0..2 * nd).map(|_| rng.gen_range(0..3)).collect();
        let auto_pad = match rng.gen_range(0..5) {
            0 => AutoPad::SameUpper,
            1 => AutoPad::SameLower,
            2 => AutoPad::Valid,
            _ => AutoPad::NotSet,
        };
        let a = ConvAttrs {
            layout,
            kernel_shape: vec![],
            strides,
            dilations: dil,
            pads,
            auto_pad,
            group,
            activation: if rng.gen_bool(0.3) {
                Activation::Relu
            } else {
                Activation::None
            },
            hybrid: None,
        };
        let x_shape = edgeopt_ir::shape::join_layout(n, c, &sp, layout);
        let w_shape = edgeopt_ir::shape::join_layout(m, cg, &k, layout);
        let xn: usize = x_shape.iter().product();
        let wn: usize = w_shape.iter().product();
        let x = rand_vec(&mut rng, xn);
        let w = rand_vec(&mut rng, wn);
        let b = rng.gen_bool(0.5).then(|| rand_vec(&mut rng, m));
        let fast = conv_f32(&a, &x_shape, &x, &w_shape, &w, b.as_deref());
        let slow = conv_naive(&a, &x_shape, &x, &w_shape, &w, b.as_deref());
        match (fast, slow) {
            (Ok(f), Ok(s)) => {
                assert!(
                    close(&f, &s, 1e-5),
                    "case {case}: {a:?} x{x_shape:?} w{w_shape:?}"
                );
                checked += 1;
            }
            (Err(_), Err(_)) => {} // geometry rejected (kernel larger than input)
            (f, s) => panic!("case {case}: fast {:?} vs naive {:?}", f.err(), s.err()),
        }
    }
    assert!(checked > 200, "only {checked} cases had a valid geometry");
}

#[test]
fn naive_conv_hand_case() {
    // 1x1x3x3 input 0..9, 2x2 kernel of ones, no pad: sums of 2x2 blocks.
    let a = ConvAttrs {
        layout: Layout::Nchw,
        kernel_shape: vec![],
        strides: vec![],
        dilations: vec![],
        pads: vec![],
        auto_pad: AutoPad::NotSet,
        group: 1,
        activation: Activation::None,
        hybrid: None,
    };
    let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
    let y = conv_naive(&a, &[1, 1, 3, 3], &x, &[1, 1, 2, 2], &[1.0; 4], None).unwrap();
    assert_eq!(y, [8.0, 12.0, 20.0, 24.0]);
}

/// Runs one node on constant inputs through the dispatcher.
fn run1(op: Op, inputs: Vec<Tensor>, out_dtype: DType) -> crate::Result<Tensor> {
    let mut g = Graph::new("t");
    let ids: Vec<Option<ValueId>> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, t)| Some(g.add_const(format!("in{i}"), t)))
        .collect();
    let o = g.add_value("out", out_dtype, None);
    g.add_node("n", op, ids.clone(), vec![o]);
    let node = &g.nodes[0];
    let ins: Vec<Option<&Tensor>> = ids.iter().map(|i| g.const_data(i.unwrap())).collect();
    let mut r = super::eval(&NodeCtx::new(&g, node, crate::ExecOptions::default()), &ins)?;
    Ok(r.remove(0))
}

#[test]
fn integer_arithmetic_wraps() {
    let a = Tensor::new(vec![3], TensorData::U8(vec![200, 10, 7])).unwrap();
    let b = Tensor::new(vec![3], TensorData::U8(vec![100, 20, 2])).unwrap();
    let add = Op::Binary {
        kind: BinaryKind::Add,
        activation: Activation::None,
    };
    let sub = Op::Binary {
        kind: BinaryKind::Sub,
        activation: Activation::None,
    };
    let div = Op::Binary {
        kind: BinaryKind::Div,
        activation: Activation::None,
    };
    assert_eq!(
        run1(add, vec![a.clone(), b.clone()], DType::U8)
            .unwrap()
            .data,
        TensorData::U8(vec![44, 30, 9])
    );
    assert_eq!(
        run1(sub, vec![a.clone(), b.clone()], DType::U8)
            .unwrap()
            .data,
        TensorData::U8(vec![100, 246, 5])
    );
    assert_eq!(
        run1(div, vec![a, b], DType::U8).unwrap().data,
        TensorData::U8(vec![2, 0, 3])
    );
    let z = Tensor::new(vec![1], TensorData::I32(vec![0])).unwrap();
    let one = Tensor::new(vec![1], TensorData::I32(vec![1])).unwrap();
    let div = Op::Binary {
        kind: BinaryKind::Div,
        activation: Activation::None,
    };
    let e = run1(div, vec![one, z], DType::I32).unwrap_err().to_string();
    assert!(e.contains("division by zero"), "{e}");
}

#[test]
fn clip_int8_and_maxpool_uint8() {
    let x = Tensor::new(vec![4], TensorData::I8(vec![-128, -5, 5, 127])).unwrap();
    let y = run1(
        Op::Clip {
            min: Some(-10.0),
            max: Some(10.0),
        },
        vec![x],
        DType::I8,
    )
    .unwrap();
    assert_eq!(y.data, TensorData::I8(vec![-10, -5, 5, 10]));
    let x = Tensor::new(vec![1, 1, 2, 2], TensorData::U8(vec![1, 250, 3, 4])).unwrap();
    let p = PoolAttrs {
        layout: Layout::Nchw,
        kernel_shape: vec![2, 2],
        strides: vec![],
        dilations: vec![],
        pads: vec![],
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
        count_include_pad: false,
        activation: Activation::None,
    };
    let y = run1(Op::MaxPool(p), vec![x], DType::U8).unwrap();
    assert_eq!(y.data, TensorData::U8(vec![250]));
}

#[test]
fn broadcast_map_right_aligned() {
    assert_eq!(
        bcast_map(&[3, 1], &[2, 3, 2]),
        [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]
    );
    assert_eq!(bcast_map(&[2], &[2, 2]), [0, 1, 0, 1]);
}

#[test]
fn where_and_less_on_int64() {
    let a = Tensor::from_i64(vec![3], vec![1, 5, -3]).unwrap();
    let b = Tensor::from_i64(vec![1], vec![2]).unwrap();
    let less = run1(
        Op::Compare(CompareKind::Less),
        vec![a.clone(), b.clone()],
        DType::Bool,
    )
    .unwrap();
    assert_eq!(less.data, TensorData::Bool(vec![true, false, true]));
    let w = run1(Op::Where, vec![less, a, b], DType::I64).unwrap();
    assert_eq!(w.data, TensorData::I64(vec![1, 2, -3]));
}

#[test]
fn pad_modes_and_crop() {
    let x = Tensor::from_f32(vec![1, 3], vec![1.0, 2.0, 3.0]).unwrap();
    let pad = |mode, pads: Vec<i64>| Op::Pad {
        mode,
        pads,
        value: 9.0,
    };
    let r = |mode, pads| {
        run1(pad(mode, pads), vec![x.clone()], DType::F32)
            .unwrap()
            .to_f32_vec()
    };
    assert_eq!(
        r(PadMode::Constant, vec![0, 2, 0, -1]),
        [9.0, 9.0, 1.0, 2.0]
    );
    assert_eq!(
        r(PadMode::Reflect, vec![0, 2, 0, 2]),
        [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]
    );
    assert_eq!(
        r(PadMode::Edge, vec![0, 1, 0, 2]),
        [1.0, 1.0, 2.0, 3.0, 3.0, 3.0]
    );
    assert_eq!(
        r(PadMode::Wrap, vec![0, 2, 0, 1]),
        [2.0, 3.0, 1.0, 2.0, 3.0, 1.0]
    );
}

#[test]
fn softmax_any_axis_and_beta() {
    let x = Tensor::from_f32(vec![2, 2], vec![0.0, 0.0, 1.0, 3.0]).unwrap();
    let y = run1(
        Op::Softmax { axis: 0, beta: 1.0 },
        vec![x.clone()],
        DType::F32,
    )
    .unwrap()
    .to_f32_vec();
    let e = |v: f32| v.exp();
    let (a, b) = (1.0 / (1.0 + e(1.0)), 1.0 / (1.0 + e(3.0)));
    assert!(close(&y, &[a, b, 1.0 - a, 1.0 - b], 1e-6), "{y:?}");
    let y = run1(
        Op::Softmax {
            axis: -1,
            beta: 0.5,
        },
        vec![x],
        DType::F32,
    )
    .unwrap()
    .to_f32_vec();
    let c = 1.0 / (1.0 + e(1.0));
    assert!(close(&y, &[0.5, 0.5, c, 1.0 - c], 1e-6), "{y:?}");
}

#[test]
fn f16_is_computed_in_f32() {
    use half::f16;
    let x = Tensor::new(
        vec![2],
        TensorData::F16(vec![f16::from_f32(-1.0), f16::from_f32(2.0)]),
    )
    .unwrap();
    let y = run1(Op::Unary(UnaryKind::Relu), vec![x], DType::F16).unwrap();
    assert_eq!(
        y.data,
        TensorData::F16(vec![f16::from_f32(0.0), f16::from_f32(2.0)])
    );
}

#[test]
fn quantized_ops_are_refused_clearly() {
    let x = Tensor::from_f32(vec![1], vec![1.0]).unwrap();
    let e = run1(Op::Dequantize, vec![x], DType::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("quantized"), "{e}");
}

#[test]
fn dequantize_of_f16_widens_exactly() {
    // TFLite fp16 weights: FLOAT16 constant -> DEQUANTIZE -> f32.
    let vals = [0.1f32, -3.75, 65504.0];
    let x = Tensor::new(
        vec![3],
        TensorData::F16(vals.iter().map(|&v| half::f16::from_f32(v)).collect()),
    )
    .unwrap();
    let y = run1(Op::Dequantize, vec![x], DType::F32).unwrap();
    let want: Vec<f32> = vals
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(y.data, TensorData::F32(want));
}
