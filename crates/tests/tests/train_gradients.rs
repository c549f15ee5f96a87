//! Gradients of every trainable op's lowering match central finite differences on
//! small random cases (inputs and every parameter).
//!
//! Each case is a one- or two-node IR graph with random weights; the loss is
//! `sum(output * R)` for a fixed random `R`, so every output element contributes.
//! Finite differences use the non-autodiff forward pass with a step of 1e-3 (f32
//! arithmetic); inputs are kept away from the kinks of ReLU-like ops.

use edgeopt_ir::*;
use edgeopt_train::burn::tensor::Tensor as BTensor;
use edgeopt_train::{cpu, DynTensor, Mode, Model};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Case {
    name: &'static str,
    graph: Graph,
    input: Vec<(Vec<usize>, Vec<f32>)>,
    mode: Mode,
}

fn rand_vec(rng: &mut StdRng, n: usize, avoid_kinks: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = rng.gen_range(-1.0..1.0);
            if avoid_kinks && v.abs() < 0.1 {
                v + 0.2f32.copysign(v)
            } else {
                v
            }
        })
        .collect()
}

/// Builder for tiny graphs: inputs, constants, one chain of nodes.
struct G {
    g: Graph,
    rng: StdRng,
    inputs: Vec<(Vec<usize>, Vec<f32>)>,
}

impl G {
    fn new(seed: u64) -> G {
        G {
            g: Graph::new("case"),
            rng: StdRng::seed_from_u64(seed),
            inputs: vec![],
        }
    }
    fn input(&mut self, shape: &[usize], kinks: bool) -> ValueId {
        let n = shape.iter().product();
        let v = rand_vec(&mut self.rng, n, kinks);
        let id = self.g.add_value(
            format!("in{}", self.inputs.len()),
            DType::F32,
            Some(shape.iter().map(|&d| Dim::Fixed(d)).collect()),
        );
        self.g.inputs.push(id);
        self.inputs.push((shape.to_vec(), v));
        id
    }
    fn constant(&mut self, name: &str, shape: &[usize], positive: bool) -> ValueId {
        let n = shape.iter().product();
        let mut v = rand_vec(&mut self.rng, n, false);
        if positive {
            v.iter_mut().for_each(|x| *x = x.abs() + 0.5);
        }
        self.g
            .add_const(name, Tensor::from_f32(shape.to_vec(), v).unwrap())
    }
    fn int_const(&mut self, name: &str, v: Vec<i64>) -> ValueId {
        self.g
            .add_const(name, Tensor::from_i64(vec![v.len()], v).unwrap())
    }
    fn node(&mut self, op: Op, ins: Vec<Option<ValueId>>) -> ValueId {
        let k = self.g.nodes.len();
        let y = self.g.add_value(format!("y{k}"), DType::F32, None);
        self.g.add_node(format!("n{k}"), op, ins, vec![y]);
        y
    }
    fn case(mut self, name: &'static str, out: ValueId, mode: Mode) -> Case {
        self.g.outputs.push(out);
        Case {
            name,
            graph: self.g,
            input: self.inputs,
            mode,
        }
    }
}

fn conv_attrs(
    layout: Layout,
    k: usize,
    nd: usize,
    stride: usize,
    pads: Vec<usize>,
    dil: usize,
    group: usize,
) -> ConvAttrs {
    ConvAttrs {
        layout,
        kernel_shape: vec![k; nd],
        strides: vec![stride; nd],
        dilations: vec![dil; nd],
        pads,
        auto_pad: AutoPad::NotSet,
        group,
        activation: Activation::None,
        hybrid: None,
    }
}

fn pool_attrs(k: usize, nd: usize, stride: usize, pads: Vec<usize>, include: bool) -> PoolAttrs {
    PoolAttrs {
        layout: Layout::Nchw,
        kernel_shape: vec![k; nd],
        strides: vec![stride; nd],
        dilations: vec![],
        pads,
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
        count_include_pad: include,
        activation: Activation::None,
    }
}

fn bin(kind: BinaryKind) -> Op {
    Op::Binary {
        kind,
        activation: Activation::None,
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    // Conv 1-D with padding, stride, dilation.
    let mut g = G::new(1);
    let x = g.input(&[2, 3, 11], false);
    let w = g.constant("w", &[4, 3, 3], false);
    let b = g.constant("b", &[4], false);
    let y = g.node(
        Op::Conv(conv_attrs(Layout::Nchw, 3, 1, 2, vec![1, 2], 2, 1)),
        vec![Some(x), Some(w), Some(b)],
    );
    v.push(g.case("conv1d", y, Mode::Train));
    // Conv 2-D, asymmetric pads.
    let mut g = G::new(2);
    let x = g.input(&[2, 3, 7, 6], false);
    let w = g.constant("w", &[4, 3, 3, 3], false);
    let b = g.constant("b", &[4], false);
    let y = g.node(
        Op::Conv(conv_attrs(Layout::Nchw, 3, 2, 2, vec![1, 0, 1, 2], 1, 1)),
        vec![Some(x), Some(w), Some(b)],
    );
    v.push(g.case("conv2d", y, Mode::Train));
    // Grouped conv.
    let mut g = G::new(3);
    let x = g.input(&[2, 4, 6, 6], false);
    let w = g.constant("w", &[6, 2, 3, 3], false);
    let y = g.node(
        Op::Conv(conv_attrs(Layout::Nchw, 3, 2, 1, vec![1, 1, 1, 1], 1, 2)),
        vec![Some(x), Some(w), None],
    );
    v.push(g.case("conv2d_grouped", y, Mode::Train));
    // Depthwise conv (multiplier 2).
    let mut g = G::new(4);
    let x = g.input(&[2, 3, 6, 6], false);
    let w = g.constant("w", &[6, 1, 3, 3], false);
    let b = g.constant("b", &[6], false);
    let y = g.node(
        Op::Conv(conv_attrs(Layout::Nchw, 3, 2, 1, vec![1, 1, 1, 1], 1, 3)),
        vec![Some(x), Some(w), Some(b)],
    );
    v.push(g.case("conv2d_depthwise", y, Mode::Train));
    // NHWC conv (TFLite layout) with SAME padding and fused ReLU6.
    let mut g = G::new(5);
    let x = g.input(&[2, 5, 5, 3], false);
    let w = g.constant("w", &[4, 3, 3, 3], false);
    let b = g.constant("b", &[4], false);
    let mut a = conv_attrs(Layout::Nhwc, 3, 2, 2, vec![], 1, 1);
    a.auto_pad = AutoPad::SameUpper;
    let y = g.node(Op::Conv(a), vec![Some(x), Some(w), Some(b)]);
    v.push(g.case("conv2d_nhwc_same", y, Mode::Train));
    // NHWC depthwise (weights [C*m, kh, kw, 1], group = C).
    let mut g = G::new(6);
    let x = g.input(&[2, 5, 5, 3], false);
    let w = g.constant("w", &[3, 3, 3, 1], false);
    let y = g.node(
        Op::Conv(conv_attrs(Layout::Nhwc, 3, 2, 1, vec![1, 1, 1, 1], 1, 3)),
        vec![Some(x), Some(w), None],
    );
    v.push(g.case("conv2d_nhwc_depthwise", y, Mode::Train));
    // Gemm with transB, alpha, beta.
    let mut g = G::new(7);
    let x = g.input(&[3, 5], false);
    let w = g.constant("w", &[4, 5], false);
    let b = g.constant("b", &[4], false);
    let y = g.node(
        Op::Gemm {
            alpha: 0.7,
            beta: 1.3,
            trans_a: false,
            trans_b: true,
        },
        vec![Some(x), Some(w), Some(b)],
    );
    v.push(g.case("gemm", y, Mode::Train));
    // MatMul (batched, broadcast weights) + bias Add.
    let mut g = G::new(8);
    let x = g.input(&[2, 3, 5], false);
    let w = g.constant("w", &[5, 4], false);
    let b = g.constant("b", &[4], false);
    let m = g.node(Op::MatMul, vec![Some(x), Some(w)]);
    let y = g.node(bin(BinaryKind::Add), vec![Some(m), Some(b)]);
    v.push(g.case("matmul_add", y, Mode::Train));
    // TFLite FullyConnected with fused ReLU.
    let mut g = G::new(9);
    let x = g.input(&[3, 2, 4], true);
    let w = g.constant("w", &[5, 8], false);
    let b = g.constant("b", &[5], false);
    let y = g.node(
        Op::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
            hybrid: None,
        },
        vec![Some(x), Some(w), Some(b)],
    );
    v.push(g.case("fully_connected", y, Mode::Train));
    // BatchNorm, train mode (batch statistics) and eval mode (running statistics).
    for (name, mode) in [
        ("batchnorm_train", Mode::Train),
        ("batchnorm_eval", Mode::Eval),
    ] {
        let mut g = G::new(10);
        let x = g.input(&[4, 3, 2, 2], false);
        let s = g.constant("scale", &[3], false);
        let b = g.constant("bias", &[3], false);
        let m = g.constant("mean", &[3], false);
        let var = g.constant("var", &[3], true);
        let y = g.node(
            Op::BatchNorm { epsilon: 1e-5 },
            vec![Some(x), Some(s), Some(b), Some(m), Some(var)],
        );
        v.push(g.case(name, y, mode));
    }
    // Activations.
    let acts: Vec<(&'static str, Op)> = vec![
        ("relu", Op::Unary(UnaryKind::Relu)),
        ("relu6", Op::Unary(UnaryKind::Relu6)),
        (
            "clip",
            Op::Clip {
                min: Some(-0.5),
                max: Some(0.5),
            },
        ),
        ("leaky_relu", Op::LeakyRelu { alpha: 0.1 }),
        ("sigmoid", Op::Unary(UnaryKind::Sigmoid)),
        ("tanh", Op::Unary(UnaryKind::Tanh)),
        ("hard_swish", Op::Unary(UnaryKind::HardSwish)),
        (
            "softmax",
            Op::Softmax {
                axis: -1,
                beta: 1.0,
            },
        ),
    ];
    for (i, (name, op)) in acts.into_iter().enumerate() {
        let mut g = G::new(20 + i as u64);
        let x = g.input(&[3, 7], true);
        // Scale so ReLU6 / Clip / HardSwish see both their linear and flat regions.
        let s = g.constant("s", &[1], true);
        let xs = g.node(bin(BinaryKind::Mul), vec![Some(x), Some(s)]);
        let xs = g.node(bin(BinaryKind::Mul), vec![Some(xs), Some(s)]);
        let y = g.node(op, vec![Some(xs)]);
        v.push(g.case(name, y, Mode::Train));
    }
    // Pools.
    let mut g = G::new(30);
    let x = g.input(&[2, 2, 6, 7], false);
    let y = g.node(
        Op::MaxPool(pool_attrs(3, 2, 2, vec![1, 1, 1, 1], false)),
        vec![Some(x)],
    );
    v.push(g.case("maxpool2d", y, Mode::Train));
    let mut g = G::new(35);
    let x = g.input(&[2, 2, 5, 6], false);
    let y = g.node(
        Op::MaxPool(pool_attrs(2, 2, 2, vec![0, 0, 0, 0], false)),
        vec![Some(x)],
    );
    v.push(g.case("maxpool2d_tiled_floor", y, Mode::Train));
    let mut g = G::new(31);
    let x = g.input(&[2, 3, 9], false);
    let y = g.node(
        Op::MaxPool(pool_attrs(2, 1, 2, vec![0, 0], false)),
        vec![Some(x)],
    );
    v.push(g.case("maxpool1d", y, Mode::Train));
    let mut g = G::new(32);
    let x = g.input(&[2, 2, 6, 7], false);
    let y = g.node(
        Op::AveragePool(pool_attrs(3, 2, 2, vec![1, 1, 1, 1], false)),
        vec![Some(x)],
    );
    v.push(g.case("avgpool2d_exclude_pad", y, Mode::Train));
    let mut g = G::new(33);
    let x = g.input(&[2, 3, 8], false);
    let y = g.node(
        Op::AveragePool(pool_attrs(3, 1, 1, vec![1, 1], true)),
        vec![Some(x)],
    );
    v.push(g.case("avgpool1d_include_pad", y, Mode::Train));
    let mut g = G::new(34);
    let x = g.input(&[2, 3, 4, 5], false);
    let y = g.node(Op::GlobalAveragePool, vec![Some(x)]);
    v.push(g.case("global_avgpool", y, Mode::Train));
    // Add / Mul with broadcasting, both operands trainable paths.
    let mut g = G::new(40);
    let a = g.input(&[2, 3, 4], false);
    let b = g.input(&[3, 1], false);
    let y = g.node(bin(BinaryKind::Mul), vec![Some(a), Some(b)]);
    let y = g.node(bin(BinaryKind::Add), vec![Some(y), Some(a)]);
    v.push(g.case("mul_add_broadcast", y, Mode::Train));
    // Concat, Flatten, Reshape, Transpose, Pad.
    let mut g = G::new(41);
    let a = g.input(&[2, 3, 4], false);
    let b = g.input(&[2, 2, 4], false);
    let c = g.node(
        Op::Concat {
            axis: 1,
            activation: Activation::None,
        },
        vec![Some(a), Some(b)],
    );
    let t = g.node(
        Op::Transpose {
            perm: vec![0, 2, 1],
        },
        vec![Some(c)],
    );
    let p = g.node(
        Op::Pad {
            mode: PadMode::Constant,
            pads: vec![0, 1, 0, 0, 2, -1],
            value: 0.5,
        },
        vec![Some(t)],
    );
    let f = g.node(Op::Flatten { axis: 1 }, vec![Some(p)]);
    let s = g.int_const("shape", vec![0, -1, 2]);
    let y = g.node(Op::Reshape { allowzero: false }, vec![Some(f), Some(s)]);
    v.push(g.case("concat_transpose_pad_flatten_reshape", y, Mode::Train));
    let mut g = G::new(42);
    let a = g.input(&[1, 2, 5, 5], false);
    let y = g.node(
        Op::Pad {
            mode: PadMode::Reflect,
            pads: vec![0, 0, 1, 2, 0, 0, 2, 1],
            value: 0.0,
        },
        vec![Some(a)],
    );
    v.push(g.case("pad_reflect", y, Mode::Train));
    v
}

/// loss = sum(out * r).
fn loss_of(
    model: &Model,
    inputs: Vec<DynTensor>,
    r: &DynTensor,
    mode: Mode,
    autodiff: bool,
) -> (BTensor<1>, edgeopt_train::model::ForwardOut) {
    let out = model.forward(inputs, mode, autodiff).unwrap();
    let o = out.outputs[0].clone();
    let r = if autodiff {
        r.clone().autodiff()
    } else {
        r.clone()
    };
    let l = o.mul(r).unwrap().sum();
    (l, out)
}

#[test]
fn gradients_match_finite_differences() {
    let dev = cpu();
    let ad = dev.clone().autodiff();
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.name;
        let mut model = Model::new(case.graph, &dev).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Analytic gradients: inputs as leaves too.
        let leaves: Vec<DynTensor> = case
            .input
            .iter()
            .map(|(s, v)| {
                DynTensor::from_vec(v.clone(), s, &ad)
                    .unwrap()
                    .require_grad()
            })
            .collect();
        let probe = model.forward(leaves.clone(), case.mode, true).unwrap();
        let out_shape = probe.outputs[0].dims();
        let mut rng = StdRng::seed_from_u64(99);
        let rv = rand_vec(&mut rng, out_shape.iter().product(), false);
        let r = DynTensor::from_vec(rv, &out_shape, &dev).unwrap();
        let (l, out) = loss_of(&model, leaves.clone(), &r, case.mode, true);
        let grads = l.backward();
        let plain_inputs = |over: Option<(usize, usize, f32)>| -> Vec<DynTensor> {
            case.input
                .iter()
                .enumerate()
                .map(|(k, (s, v))| {
                    let mut v = v.clone();
                    if let Some((ki, j, d)) = over {
                        if ki == k {
                            v[j] += d;
                        }
                    }
                    DynTensor::from_vec(v, s, &dev).unwrap()
                })
                .collect()
        };
        let eps = 1e-3f32;
        let mut check =
            |what: String, analytic: Vec<f32>, fd: &mut dyn FnMut(usize, f32) -> f32| {
                let n = analytic.len();
                let step = (n / 12).max(1);
                for j in (0..n).step_by(step) {
                    let num = (fd(j, eps) - fd(j, -eps)) / (2.0 * eps);
                    let a = analytic[j];
                    if (num - a).abs() > 2e-2 * (1.0 + a.abs().max(num.abs())) {
                        failures.push(format!(
                            "{name}: d/d{what}[{j}] analytic {a} vs numeric {num}"
                        ));
                        return;
                    }
                }
            };
        for (k, leaf) in leaves.iter().enumerate() {
            let ga = leaf
                .grad(&grads)
                .unwrap_or_else(|| panic!("{name}: no grad for input {k}"))
                .to_vec()
                .unwrap();
            check(format!("input{k}"), ga, &mut |j, d| {
                loss_of(&model, plain_inputs(Some((k, j, d))), &r, case.mode, false)
                    .0
                    .into_scalar::<f32>()
            });
        }
        for (i, leaf) in out.leaves.iter().enumerate() {
            let Some(leaf) = leaf else { continue };
            let ga = leaf
                .grad(&grads)
                .unwrap_or_else(|| panic!("{name}: no grad for param {i}"))
                .to_vec()
                .unwrap();
            let base = model.param(i).clone();
            let shape = base.dims();
            let bv = base.to_vec().unwrap();
            let pname = model.params[i].name.clone();
            check(pname.clone(), ga, &mut |j, d| {
                let mut v = bv.clone();
                v[j] += d;
                model
                    .set_param(i, DynTensor::from_vec(v, &shape, &dev).unwrap())
                    .unwrap();
                let l = loss_of(&model, plain_inputs(None), &r, case.mode, false)
                    .0
                    .into_scalar::<f32>();
                model.set_param(i, base.clone()).unwrap();
                l
            });
        }
        eprintln!("checked {name}");
    }
    assert!(
        failures.is_empty(),
        "gradient mismatches:\n{}",
        failures.join("\n")
    );
}
