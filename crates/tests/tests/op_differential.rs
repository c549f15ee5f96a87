//! Per-op differential test of the int8 numerics: seeded random single-op int8 .tflite
//! models (every op edgeopt's int8 runtime runs in LiteRT terms, over kernel sizes,
//! strides, dilations, paddings, depth multipliers, broadcasts, class counts and
//! quantization parameters), each run
//! - by edgeopt under `Numerics::LiteRt` against LiteRT's builtin CPU kernels
//!   (`litert_run_many.py`: the interpreter without XNNPACK, so LiteRT's optimized
//!   kernels where it has them), and
//! - by edgeopt under `Numerics::Tflm` against TensorFlow Lite Micro
//!   (`tflm_run_many.py`: the `tflite-micro` interpreter's reference kernels),
//!
//! both on edgeopt's reference integer kernels and on its fast kernels on every
//! instruction set the CPU has (which must give the same integers). Every output must be equal (0 LSB). A case one runtime
//! refuses must be listed in [`SKIPS`] with the reason (a listed case that runs fails
//! the test, so the list stays true). Prints a per-op table.
//!
//! One process per oracle for all models (about 400): the test takes about 20 s after
//! the build. Found this way: LiteRT's optimized int8 DEPTHWISE_CONV_2D rounds the
//! channels it requantizes in vector lanes (whole blocks of 8) ties-up, the rest ties
//! away from zero ([`Rounding::TiesUpBelow`](edgeopt_runtime::kernels::quantized::common::Rounding)).

use edgeopt_ir::{Tensor, TensorData};
use edgeopt_runtime::kernels::fast::{Isa, Kernels};
use edgeopt_runtime::kernels::quantized::Numerics;
use edgeopt_runtime::ExecOptions;
use edgeopt_runtime::Session;
use edgeopt_testkit as tk;
use edgeopt_tflite::fixtures::ModelBuilder;
use edgeopt_tflite::schema::{
    self as s, ActivationFunctionType as A, BuiltinOperator as B, BuiltinOptions as O,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Samples per model: a ramp over the 256 int8 values, then seeded random inputs.
const SAMPLES: usize = 3;

/// Cases a runtime refuses: (case name prefix, runtime, reason). Runtimes: `litert`,
/// `tflm`, `edgeopt`. Empty: every generated case runs everywhere. (An int8
/// CONCATENATION whose inputs' parameters differ from the output's is not generated:
/// LiteRT's Prepare refuses it as TFLite Micro's does, "t->params.scale !=
/// output->params.scale".)
const SKIPS: &[(&str, &str, &str)] = &[];

struct Case {
    op: &'static str,
    name: String,
    model: s::Model,
    /// The model input's shape (batch 1 included).
    input: Vec<usize>,
    /// A float32 input of this scale's grid (QUANTIZE from float), else int8.
    float_input: Option<f32>,
}

fn log_uniform(r: &mut StdRng, lo: f32, hi: f32) -> f32 {
    (r.gen_range(lo.ln()..hi.ln())).exp()
}

fn zp(r: &mut StdRng) -> i64 {
    r.gen_range(-128..=127)
}

fn act(m: &mut ModelBuilder, name: &str, shape: &[usize], q: (f32, i64)) -> i32 {
    m.typed_activation(name, &dims(shape), s::TensorType::Int8, Some(q))
}

fn dims(shape: &[usize]) -> Vec<i32> {
    shape.iter().map(|&d| d as i32).collect()
}

fn quant(scale: Vec<f32>, zp: Vec<i64>, dim: i32) -> s::QuantizationParameters {
    s::QuantizationParameters {
        scale: Some(scale),
        zero_point: Some(zp),
        quantized_dimension: dim,
        ..Default::default()
    }
}

/// Symmetric int8 weights (zero point 0) with `scales` along `dim` (one: per tensor).
fn weights(m: &mut ModelBuilder, r: &mut StdRng, shape: &[usize], scales: &[f32], dim: i32) -> i32 {
    let n: usize = shape.iter().product();
    let v: Vec<u8> = (0..n)
        .map(|_| r.gen_range(-127..=127i32) as i8 as u8)
        .collect();
    let q = quant(scales.to_vec(), vec![0; scales.len()], dim);
    m.constant_bytes("w", &dims(shape), s::TensorType::Int8, v, Some(q))
}

/// Int32 bias of scale in_scale * w_scale[c], values within +-`mag`.
fn bias(m: &mut ModelBuilder, r: &mut StdRng, in_scale: f32, w: &[f32], n: usize, mag: i32) -> i32 {
    let v: Vec<u8> = (0..n)
        .flat_map(|_| r.gen_range(-mag..=mag).to_le_bytes())
        .collect();
    let ws: Vec<f32> = (0..n).map(|c| in_scale * w[c.min(w.len() - 1)]).collect();
    m.constant_bytes(
        "b",
        &[n as i32],
        s::TensorType::Int32,
        v,
        Some(quant(ws, vec![0; n], 0)),
    )
}

/// An int8 constant operand with its own parameters.
fn constant(
    m: &mut ModelBuilder,
    r: &mut StdRng,
    name: &str,
    shape: &[usize],
    q: (f32, i64),
) -> i32 {
    let n: usize = shape.iter().product();
    let v: Vec<u8> = (0..n).map(|_| r.gen::<u8>()).collect();
    m.constant_bytes(
        name,
        &dims(shape),
        s::TensorType::Int8,
        v,
        Some(quant(vec![q.0], vec![q.1], 0)),
    )
}

fn fused(r: &mut StdRng) -> A {
    [A::None, A::None, A::Relu, A::Relu6][r.gen_range(0..4)]
}

/// Output size and whether it is valid (TFLite SAME / VALID).
fn out_size(input: usize, k: usize, stride: usize, dil: usize, same: bool) -> Option<usize> {
    let eff = (k - 1) * dil + 1;
    if same {
        Some(input.div_ceil(stride))
    } else {
        (input >= eff).then(|| (input - eff) / stride + 1)
    }
}

/// Spatial geometry of a random window op: (h, w, kh, kw, stride, dilation, same, oh, ow).
struct Win {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    same: bool,
    oh: usize,
    ow: usize,
}

fn window(r: &mut StdRng, kmax: usize, allow_dilation: bool) -> Win {
    loop {
        // One in three is 1-D along W (H = 1, as Keras writes Conv1D), one in six
        // along H.
        let shape = r.gen_range(0..6);
        let (kh, kw) = match shape {
            0 | 1 => (1, r.gen_range(1..=kmax)),
            2 => (r.gen_range(1..=kmax), 1),
            _ => (r.gen_range(1..=kmax.min(7)), r.gen_range(1..=kmax.min(7))),
        };
        let (sh, sw) = (r.gen_range(1..=3), r.gen_range(1..=3));
        let (dh, dw) = if allow_dilation && r.gen_bool(0.3) {
            (r.gen_range(1..=3), r.gen_range(1..=3))
        } else {
            (1, 1)
        };
        let same = r.gen_bool(0.5);
        let span = |k: usize, d: usize| (k - 1) * d + 1;
        let h = if kh == 1 && shape <= 1 {
            1
        } else {
            span(kh, dh) + r.gen_range(0..6)
                - if same {
                    r.gen_range(0..span(kh, dh))
                } else {
                    0
                }
        };
        let w = if kw == 1 && shape == 2 {
            1
        } else {
            span(kw, dw) + r.gen_range(0..8)
                - if same {
                    r.gen_range(0..span(kw, dw))
                } else {
                    0
                }
        };
        let (Some(oh), Some(ow)) = (out_size(h, kh, sh, dh, same), out_size(w, kw, sw, dw, same))
        else {
            continue;
        };
        if oh == 0 || ow == 0 || h == 0 || w == 0 {
            continue;
        }
        return Win {
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            same,
            oh,
            ow,
        };
    }
}

fn padding(same: bool) -> s::Padding {
    if same {
        s::Padding::Same
    } else {
        s::Padding::Valid
    }
}

fn conv_case(r: &mut StdRng, i: usize, depthwise: bool) -> Case {
    let g = window(r, if depthwise { 9 } else { 15 }, true);
    let c = r.gen_range(1..=if depthwise { 20 } else { 8 });
    let mult = if depthwise { r.gen_range(1..=4) } else { 1 };
    let m_out = if depthwise {
        c * mult
    } else {
        r.gen_range(1..=16)
    };
    let xq = (log_uniform(r, 0.005, 0.2), zp(r));
    let per_channel = r.gen_bool(0.75);
    let k_len = g.kh * g.kw * if depthwise { 1 } else { c };
    let ws: Vec<f32> = (0..if per_channel { m_out } else { 1 })
        .map(|_| log_uniform(r, 0.002, 0.05))
        .collect();
    // Accumulators spread about sqrt(k) * 74 * 73 (uniform int8 operands): aim the
    // output at 20..60 LSB of spread so requantization rounds and clamps, but does not
    // saturate everything.
    let spread = (k_len as f32).sqrt() * 74.0 * 73.0;
    let mean_w = ws.iter().sum::<f32>() / ws.len() as f32;
    let yq = (xq.0 * mean_w * spread / r.gen_range(20.0..60.0), zp(r));
    let mut m = ModelBuilder::new();
    let xs = [1, g.h, g.w, c];
    let x = act(&mut m, "x", &xs, xq);
    let (w, opts, code) = if depthwise {
        let w = weights(&mut m, r, &[1, g.kh, g.kw, m_out], &ws, 3);
        let o = s::DepthwiseConv2DOptions {
            padding: padding(g.same),
            stride_w: g.sw as i32,
            stride_h: g.sh as i32,
            depth_multiplier: mult as i32,
            fused_activation_function: fused(r),
            dilation_w_factor: g.dw as i32,
            dilation_h_factor: g.dh as i32,
        };
        (
            w,
            O::DepthwiseConv2DOptions(Box::new(o)),
            B::DepthwiseConv2d,
        )
    } else {
        let w = weights(&mut m, r, &[m_out, g.kh, g.kw, c], &ws, 0);
        let o = s::Conv2DOptions {
            padding: padding(g.same),
            stride_w: g.sw as i32,
            stride_h: g.sh as i32,
            fused_activation_function: fused(r),
            dilation_w_factor: g.dw as i32,
            dilation_h_factor: g.dh as i32,
            quantized_bias_type: s::TensorType::Float32,
        };
        (w, O::Conv2DOptions(Box::new(o)), B::Conv2d)
    };
    let b = bias(&mut m, r, xq.0, &ws, m_out, (spread / 2.0) as i32);
    let y = act(&mut m, "y", &[1, g.oh, g.ow, m_out], yq);
    m.op(code, &[x, w, b], &[y], Some(opts));
    let op = if depthwise {
        "DEPTHWISE_CONV_2D"
    } else {
        "CONV_2D"
    };
    Case {
        op,
        name: format!(
            "{}_{i}_k{}x{}_s{}x{}_d{}x{}_{}_c{c}_m{m_out}",
            op.to_lowercase(),
            g.kh,
            g.kw,
            g.sh,
            g.sw,
            g.dh,
            g.dw,
            if g.same { "same" } else { "valid" }
        ),
        model: m.finish(&[x], &[y]),
        input: xs.to_vec(),
        float_input: None,
    }
}

fn fc_case(r: &mut StdRng, i: usize) -> Case {
    let k = r.gen_range(1..=300);
    let n = r.gen_range(1..=40);
    let rows = if r.gen_bool(0.3) {
        r.gen_range(2..=4)
    } else {
        1
    };
    let xq = (log_uniform(r, 0.005, 0.2), zp(r));
    let per_channel = r.gen_bool(0.5);
    let ws: Vec<f32> = (0..if per_channel { n } else { 1 })
        .map(|_| log_uniform(r, 0.002, 0.05))
        .collect();
    let spread = (k as f32).sqrt() * 74.0 * 73.0;
    let mean_w = ws.iter().sum::<f32>() / ws.len() as f32;
    let yq = (xq.0 * mean_w * spread / r.gen_range(20.0..60.0), zp(r));
    let mut m = ModelBuilder::new();
    let xs = if rows == 1 {
        vec![1, k]
    } else {
        vec![1, rows, k]
    };
    let x = act(&mut m, "x", &xs, xq);
    let w = weights(&mut m, r, &[n, k], &ws, 0);
    let b = bias(&mut m, r, xq.0, &ws, n, (spread / 2.0) as i32);
    let y = act(&mut m, "y", &[rows, n], yq);
    let o = s::FullyConnectedOptions {
        fused_activation_function: fused(r),
        ..Default::default()
    };
    m.op(
        B::FullyConnected,
        &[x, w, b],
        &[y],
        Some(O::FullyConnectedOptions(Box::new(o))),
    );
    Case {
        op: "FULLY_CONNECTED",
        name: format!("fully_connected_{i}_k{k}_n{n}_rows{rows}"),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

/// Broadcast shapes (input, constant operand, output) over a 4-D NHWC shape.
fn broadcast_shapes(r: &mut StdRng) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (h, w, c) = (r.gen_range(1..=6), r.gen_range(1..=6), r.gen_range(1..=12));
    let full = vec![1, h, w, c];
    let other = match r.gen_range(0..7) {
        0 => full.clone(),
        1 => vec![c],
        2 => vec![1, 1, 1, c],
        3 => vec![1, h, 1, 1],
        4 => vec![1, h, w, 1],
        5 => vec![1, 1, w, c],
        _ => vec![1, 1, 1, 1],
    };
    // One in four has the model input as the smaller operand.
    if r.gen_bool(0.25) && other.len() == 4 && other != full {
        (other, full.clone(), full)
    } else {
        (full.clone(), other, full)
    }
}

fn binary_case(r: &mut StdRng, i: usize, code: B) -> Case {
    let (xs, cs, ys) = broadcast_shapes(r);
    let xq = (log_uniform(r, 0.005, 0.2), zp(r));
    let cq = (log_uniform(r, 0.005, 0.2), zp(r));
    let act_fn = fused(r);
    let yq = match code {
        B::Mul => (xq.0 * cq.0 * 5476.0 / r.gen_range(20.0..60.0), zp(r)),
        _ => (xq.0.max(cq.0) * r.gen_range(0.7..2.5), zp(r)),
    };
    let mut m = ModelBuilder::new();
    let x = act(&mut m, "x", &xs, xq);
    let c = constant(&mut m, r, "c", &cs, cq);
    let y = act(&mut m, "y", &ys, yq);
    let (ins, opts, op) = match code {
        B::Add => (
            [x, c],
            O::AddOptions(Box::new(s::AddOptions {
                fused_activation_function: act_fn,
                ..Default::default()
            })),
            "ADD",
        ),
        B::Sub => (
            // The constant first half the time: SUB is not symmetric.
            if r.gen_bool(0.5) { [x, c] } else { [c, x] },
            O::SubOptions(Box::new(s::SubOptions {
                fused_activation_function: act_fn,
                ..Default::default()
            })),
            "SUB",
        ),
        _ => (
            [x, c],
            O::MulOptions(Box::new(s::MulOptions {
                fused_activation_function: act_fn,
            })),
            "MUL",
        ),
    };
    m.op(code, &ins, &[y], Some(opts));
    Case {
        op,
        name: format!("{}_{i}_{xs:?}_{cs:?}", op.to_lowercase()).replace([' ', ','], ""),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

fn pool_case(r: &mut StdRng, i: usize, code: B) -> Case {
    let g = loop {
        let g = window(r, 5, false);
        if g.kh * g.kw > 1 || r.gen_bool(0.2) {
            break g;
        }
    };
    let c = r.gen_range(1..=10);
    let q = (log_uniform(r, 0.005, 0.2), zp(r));
    let mut m = ModelBuilder::new();
    let xs = [1, g.h, g.w, c];
    let x = act(&mut m, "x", &xs, q);
    let y = act(&mut m, "y", &[1, g.oh, g.ow, c], q);
    let o = s::Pool2DOptions {
        padding: padding(g.same),
        stride_w: g.sw as i32,
        stride_h: g.sh as i32,
        filter_width: g.kw as i32,
        filter_height: g.kh as i32,
        fused_activation_function: fused(r),
    };
    m.op(code, &[x], &[y], Some(O::Pool2DOptions(Box::new(o))));
    let op = if code == B::AveragePool2d {
        "AVERAGE_POOL_2D"
    } else {
        "MAX_POOL_2D"
    };
    Case {
        op,
        name: format!(
            "{}_{i}_k{}x{}_s{}x{}_{}",
            op.to_lowercase(),
            g.kh,
            g.kw,
            g.sh,
            g.sw,
            if g.same { "same" } else { "valid" }
        ),
        model: m.finish(&[x], &[y]),
        input: xs.to_vec(),
        float_input: None,
    }
}

fn softmax_case(r: &mut StdRng, i: usize) -> Case {
    const CLASSES: [usize; 12] = [3, 4, 5, 10, 12, 37, 100, 128, 255, 256, 500, 1000];
    let n = CLASSES[i % CLASSES.len()];
    let rows = if n <= 128 && r.gen_bool(0.4) {
        r.gen_range(2..=4)
    } else {
        1
    };
    let beta = if r.gen_bool(0.5) {
        1.0
    } else {
        r.gen_range(0.3..2.0)
    };
    let xq = (log_uniform(r, 0.01, 0.5), zp(r));
    let mut m = ModelBuilder::new();
    let xs = vec![1, rows, n];
    let x = act(&mut m, "x", &xs, xq);
    let y = act(&mut m, "y", &xs, (1.0 / 256.0, -128));
    m.op(
        B::Softmax,
        &[x],
        &[y],
        Some(O::SoftmaxOptions(Box::new(s::SoftmaxOptions { beta }))),
    );
    Case {
        op: "SOFTMAX",
        name: format!("softmax_{i}_n{n}_rows{rows}"),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

/// Elements of an element-wise case: 256 (the ramp sample covers the whole int8
/// domain) or more, and every other case a count that is not a multiple of 16 (LiteRT's
/// vector kernels leave a scalar tail).
fn element_count(r: &mut StdRng, i: usize) -> usize {
    match i % 4 {
        0 => 256,
        1 => r.gen_range(257..300),
        2 => r.gen_range(1..40),
        _ => 256 + r.gen_range(1..16),
    }
}

/// Element-wise activations over 256 values (the ramp sample covers the whole domain).
fn unary_case(r: &mut StdRng, i: usize, code: B) -> Case {
    let xq = (log_uniform(r, 0.002, 0.25), zp(r));
    let (op, yq, opts) = match code {
        B::Logistic => ("LOGISTIC", (1.0 / 256.0, -128), None),
        B::Tanh => ("TANH", (1.0 / 128.0, 0), None),
        B::HardSwish => ("HARD_SWISH", (xq.0 * r.gen_range(0.3..1.5), zp(r)), None),
        B::Relu => ("RELU", (xq.0 * r.gen_range(0.3..1.5), zp(r)), None),
        B::Relu6 => (
            "RELU6",
            if r.gen_bool(0.5) {
                (6.0 / 255.0, -128)
            } else {
                (xq.0 * r.gen_range(0.3..1.5), zp(r))
            },
            None,
        ),
        B::LeakyRelu => (
            "LEAKY_RELU",
            (xq.0 * r.gen_range(0.5..1.5), zp(r)),
            Some(O::LeakyReluOptions(Box::new(s::LeakyReluOptions {
                alpha: r.gen_range(0.01..0.5),
            }))),
        ),
        B::Quantize => ("QUANTIZE", (xq.0 * r.gen_range(0.3..3.0), zp(r)), None),
        _ => unreachable!("not an element-wise case"),
    };
    let mut m = ModelBuilder::new();
    let xs = vec![1, element_count(r, i)];
    let x = act(&mut m, "x", &xs, xq);
    let y = act(&mut m, "y", &xs, yq);
    m.op(code, &[x], &[y], opts);
    Case {
        op,
        name: format!("{}_{i}", op.to_lowercase()),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

/// QUANTIZE from float32 to int8 or int16 (per tensor).
fn quantize_float_case(r: &mut StdRng, i: usize, ty: s::TensorType) -> Case {
    let yq = (
        log_uniform(r, 0.002, 0.25),
        if ty == s::TensorType::Int8 { zp(r) } else { 0 },
    );
    let mut m = ModelBuilder::new();
    let xs = vec![1, element_count(r, i)];
    let x = m.typed_activation("x", &dims(&xs), s::TensorType::Float32, None);
    let y = m.typed_activation("y", &dims(&xs), ty, Some(yq));
    m.op(B::Quantize, &[x], &[y], None);
    Case {
        op: "QUANTIZE (float)",
        name: format!("quantize_float_{ty:?}_{i}").to_lowercase(),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: Some(yq.0),
    }
}

fn dequantize_case(r: &mut StdRng, i: usize) -> Case {
    let xq = (log_uniform(r, 0.002, 0.25), zp(r));
    let mut m = ModelBuilder::new();
    let xs = vec![1, element_count(r, i)];
    let x = act(&mut m, "x", &xs, xq);
    let y = m.typed_activation("y", &dims(&xs), s::TensorType::Float32, None);
    m.op(B::Dequantize, &[x], &[y], None);
    Case {
        op: "DEQUANTIZE",
        name: format!("dequantize_{i}"),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

fn mean_case(r: &mut StdRng, i: usize) -> Case {
    let (h, w, c) = (r.gen_range(1..=9), r.gen_range(1..=9), r.gen_range(1..=12));
    let axes: Vec<i32> = match i % 6 {
        0..=2 => vec![1, 2],
        3 => vec![1],
        4 => vec![2],
        _ => vec![3],
    };
    let keep = r.gen_bool(0.5);
    let xq = (log_uniform(r, 0.005, 0.2), zp(r));
    let yq = if r.gen_bool(0.3) {
        xq
    } else {
        (xq.0 * r.gen_range(0.3..1.5), zp(r))
    };
    let xs = vec![1, h, w, c];
    let ys: Vec<usize> = (0..4)
        .filter_map(|d| {
            if axes.contains(&(d as i32)) {
                keep.then_some(1)
            } else {
                Some(xs[d])
            }
        })
        .collect();
    let mut m = ModelBuilder::new();
    let x = act(&mut m, "x", &xs, xq);
    let ax = m.constant_i32("axes", &[axes.len() as i32], &axes);
    let y = act(&mut m, "y", &ys, yq);
    m.op(
        B::Mean,
        &[x, ax],
        &[y],
        Some(O::ReducerOptions(Box::new(s::ReducerOptions {
            keep_dims: keep,
        }))),
    );
    Case {
        op: "MEAN",
        name: format!("mean_{i}_axes{axes:?}_keep{keep}").replace([' ', ','], ""),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

fn resize_case(r: &mut StdRng, i: usize, code: B) -> Case {
    let (h, w, c) = (r.gen_range(1..=8), r.gen_range(1..=8), r.gen_range(1..=6));
    let (oh, ow) = (r.gen_range(1..=16), r.gen_range(1..=16));
    let (align, half) = match i % 3 {
        0 => (false, false),
        1 => (true, false),
        _ => (false, true),
    };
    let q = (log_uniform(r, 0.005, 0.2), zp(r));
    let xs = vec![1, h, w, c];
    let mut m = ModelBuilder::new();
    let x = act(&mut m, "x", &xs, q);
    let size = m.constant_i32("size", &[2], &[oh as i32, ow as i32]);
    let y = act(&mut m, "y", &[1, oh, ow, c], q);
    let (op, opts) = if code == B::ResizeBilinear {
        (
            "RESIZE_BILINEAR",
            O::ResizeBilinearOptions(Box::new(s::ResizeBilinearOptions {
                align_corners: align,
                half_pixel_centers: half,
            })),
        )
    } else {
        (
            "RESIZE_NEAREST_NEIGHBOR",
            O::ResizeNearestNeighborOptions(Box::new(s::ResizeNearestNeighborOptions {
                align_corners: align,
                half_pixel_centers: half,
            })),
        )
    };
    m.op(code, &[x, size], &[y], Some(opts));
    Case {
        op,
        name: format!(
            "{}_{i}_{h}x{w}_to_{oh}x{ow}_align{align}_half{half}",
            op.to_lowercase()
        ),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

fn concat_case(r: &mut StdRng, i: usize) -> Case {
    let base = [
        1,
        r.gen_range(1..=5),
        r.gen_range(1..=5),
        r.gen_range(1..=6),
    ];
    let axis = r.gen_range(1..4);
    let parts = r.gen_range(2..=3);
    let yq = (log_uniform(r, 0.005, 0.2), zp(r));
    let mut m = ModelBuilder::new();
    let mut ins = Vec::new();
    let mut total = 0;
    let mut xs = Vec::new();
    for p in 0..parts {
        let mut sh = base.to_vec();
        sh[axis] = r.gen_range(1..=4);
        total += sh[axis];
        let q = yq;
        if p == 0 {
            xs = sh.clone();
            ins.push(act(&mut m, "x", &sh, q));
        } else {
            ins.push(constant(&mut m, r, &format!("c{p}"), &sh, q));
        }
    }
    let mut ys = base.to_vec();
    ys[axis] = total;
    let y = act(&mut m, "y", &ys, yq);
    let o = s::ConcatenationOptions {
        axis: axis as i32,
        fused_activation_function: A::None,
    };
    m.op(
        B::Concatenation,
        &ins,
        &[y],
        Some(O::ConcatenationOptions(Box::new(o))),
    );
    let x = ins[0];
    Case {
        op: "CONCATENATION",
        name: format!("concatenation_{i}_axis{axis}_parts{parts}"),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

fn pad_case(r: &mut StdRng, i: usize) -> Case {
    let xs = vec![
        1,
        r.gen_range(1..=6),
        r.gen_range(1..=6),
        r.gen_range(1..=5),
    ];
    let pads: Vec<i32> = (0..8)
        .map(|k| if k < 2 { 0 } else { r.gen_range(0..=3) })
        .collect();
    let ys: Vec<usize> = (0..4)
        .map(|d| xs[d] + (pads[2 * d] + pads[2 * d + 1]) as usize)
        .collect();
    let q = (log_uniform(r, 0.005, 0.2), zp(r));
    let v2 = i % 2 == 1;
    let mut m = ModelBuilder::new();
    let x = act(&mut m, "x", &xs, q);
    let p = m.constant_i32("pads", &[4, 2], &pads);
    let y = act(&mut m, "y", &ys, q);
    if v2 {
        let c = constant(&mut m, r, "value", &[1], q);
        m.op(
            B::Padv2,
            &[x, p, c],
            &[y],
            Some(O::PadV2Options(Box::default())),
        );
    } else {
        m.op(B::Pad, &[x, p], &[y], Some(O::PadOptions(Box::default())));
    }
    let op = if v2 { "PADV2" } else { "PAD" };
    Case {
        op,
        name: format!("{}_{i}_{pads:?}", op.to_lowercase()).replace([' ', ','], ""),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

fn transpose_case(r: &mut StdRng, i: usize) -> Case {
    let xs = vec![
        1,
        r.gen_range(1..=5),
        r.gen_range(1..=5),
        r.gen_range(1..=5),
    ];
    let mut perm = vec![1usize, 2, 3];
    for k in (1..3).rev() {
        perm.swap(k, r.gen_range(0..=k));
    }
    perm.insert(0, 0);
    let ys: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
    let q = (log_uniform(r, 0.005, 0.2), zp(r));
    let mut m = ModelBuilder::new();
    let x = act(&mut m, "x", &xs, q);
    let p = m.constant_i32(
        "perm",
        &[4],
        &perm.iter().map(|&p| p as i32).collect::<Vec<_>>(),
    );
    let y = act(&mut m, "y", &ys, q);
    m.op(
        B::Transpose,
        &[x, p],
        &[y],
        Some(O::TransposeOptions(Box::default())),
    );
    Case {
        op: "TRANSPOSE",
        name: format!("transpose_{i}_{perm:?}").replace([' ', ','], ""),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

/// BROADCAST_TO repeating random size-1 dimensions (what edgeopt writes for a TILE of
/// them, e.g. Keras's UpSampling2D), rank 4 or 5.
fn broadcast_to_case(r: &mut StdRng, i: usize) -> Case {
    let rank = r.gen_range(4..=5);
    let xs: Vec<usize> = (0..rank)
        .map(|k| {
            if k == 0 || r.gen_bool(0.5) {
                1
            } else {
                r.gen_range(1..=5)
            }
        })
        .collect();
    let ys: Vec<usize> = xs
        .iter()
        .enumerate()
        .map(|(k, &d)| {
            if k > 0 && d == 1 {
                r.gen_range(1..=4)
            } else {
                d
            }
        })
        .collect();
    let q = (log_uniform(r, 0.005, 0.2), zp(r));
    let mut m = ModelBuilder::new();
    let x = act(&mut m, "x", &xs, q);
    let shape: Vec<i32> = ys.iter().map(|&d| d as i32).collect();
    let p = m.constant_i32("shape", &[rank], &shape);
    let y = act(&mut m, "y", &ys, q);
    m.op(
        B::BroadcastTo,
        &[x, p],
        &[y],
        Some(O::BroadcastToOptions(Box::default())),
    );
    Case {
        op: "BROADCAST_TO",
        name: format!("broadcast_to_{i}_{xs:?}_{ys:?}").replace([' ', ','], ""),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

fn minmax_case(r: &mut StdRng, i: usize, code: B) -> Case {
    let (xs, cs, ys) = broadcast_shapes(r);
    // LiteRT's MAXIMUM / MINIMUM compare stored values: both operands and the output
    // share one scale and zero point.
    let q = (log_uniform(r, 0.005, 0.2), zp(r));
    let mut m = ModelBuilder::new();
    let x = act(&mut m, "x", &xs, q);
    let c = constant(&mut m, r, "c", &cs, q);
    let y = act(&mut m, "y", &ys, q);
    m.op(code, &[x, c], &[y], None);
    let op = if code == B::Maximum {
        "MAXIMUM"
    } else {
        "MINIMUM"
    };
    Case {
        op,
        name: format!("{}_{i}_{cs:?}", op.to_lowercase()).replace([' ', ','], ""),
        model: m.finish(&[x], &[y]),
        input: xs,
        float_input: None,
    }
}

fn cases() -> Vec<Case> {
    let mut r = StdRng::seed_from_u64(0x0d1f_f5ee_d000_0001);
    let mut out = Vec::new();
    let rr = &mut r;
    for i in 0..60 {
        out.push(conv_case(rr, i, false));
    }
    for i in 0..80 {
        out.push(conv_case(rr, i, true));
    }
    for i in 0..25 {
        out.push(fc_case(rr, i));
    }
    for code in [B::Add, B::Sub, B::Mul] {
        for i in 0..20 {
            out.push(binary_case(rr, i, code));
        }
    }
    for code in [B::AveragePool2d, B::MaxPool2d] {
        for i in 0..15 {
            out.push(pool_case(rr, i, code));
        }
    }
    for i in 0..24 {
        out.push(softmax_case(rr, i));
    }
    for code in [
        B::Logistic,
        B::Tanh,
        B::HardSwish,
        B::Relu,
        B::Relu6,
        B::LeakyRelu,
        B::Quantize,
    ] {
        for i in 0..8 {
            out.push(unary_case(rr, i, code));
        }
    }
    for i in 0..8 {
        out.push(dequantize_case(rr, i));
        out.push(quantize_float_case(rr, i, s::TensorType::Int8));
        out.push(quantize_float_case(rr, i, s::TensorType::Int16));
    }
    for i in 0..12 {
        out.push(mean_case(rr, i));
    }
    for code in [B::ResizeBilinear, B::ResizeNearestNeighbor] {
        for i in 0..9 {
            out.push(resize_case(rr, i, code));
        }
    }
    for i in 0..8 {
        out.push(concat_case(rr, i));
    }
    for i in 0..8 {
        out.push(pad_case(rr, i));
    }
    for i in 0..6 {
        out.push(transpose_case(rr, i));
    }
    for i in 0..6 {
        out.push(broadcast_to_case(rr, i));
    }
    for code in [B::Maximum, B::Minimum] {
        for i in 0..6 {
            out.push(minmax_case(rr, i, code));
        }
    }
    out
}

/// SAMPLES inputs of `shape` (batch 1 excluded) stacked: a ramp, then random values.
/// Float inputs (`grid`: the output scale of a QUANTIZE) are half-integer multiples of
/// the grid (rounding ties, as far as f32 represents them), then random values.
fn inputs(shape: &[usize], grid: Option<f32>, seed: u64) -> Tensor {
    let per: usize = shape[1..].iter().product();
    let mut r = StdRng::seed_from_u64(seed);
    let mut s = vec![SAMPLES];
    s.extend_from_slice(&shape[1..]);
    let data = match grid {
        None => {
            let mut v: Vec<i8> = (0..per).map(|k| ((k % 256) as i32 - 128) as i8).collect();
            for _ in 1..SAMPLES {
                v.extend((0..per).map(|_| r.gen::<i8>()));
            }
            TensorData::I8(v)
        }
        Some(g) => {
            let mut v: Vec<f32> = (0..per)
                .map(|k| ((k % 512) as f32 - 256.0 + 0.5) * g)
                .collect();
            for _ in 1..SAMPLES {
                v.extend((0..per).map(|_| r.gen_range(-300.0..300.0f32) * g));
            }
            TensorData::F32(v)
        }
    };
    Tensor::new(s, data).expect("input shape")
}

fn sample(batch: &Tensor, k: usize, shape: &[usize]) -> Tensor {
    let per: usize = shape.iter().product();
    let data = match &batch.data {
        TensorData::I8(v) => TensorData::I8(v[k * per..(k + 1) * per].to_vec()),
        TensorData::F32(v) => TensorData::F32(v[k * per..(k + 1) * per].to_vec()),
        d => unreachable!("inputs are int8 or float32, not {}", d.dtype()),
    };
    Tensor::new(shape.to_vec(), data).expect("sample shape")
}

/// Runs `script` over every job in one process; per job, Ok(output) or Err(refusal).
fn oracle_many(
    script: &str,
    jobs: &[(PathBuf, PathBuf, PathBuf)],
    list: &Path,
) -> Vec<Result<Tensor, String>> {
    let json: Vec<serde_json::Value> = jobs
        .iter()
        .map(|(model, input, out)| {
            serde_json::json!({"model": model, "input": input, "out_dir": out})
        })
        .collect();
    std::fs::write(list, serde_json::to_string(&json).unwrap()).unwrap();
    tk::run_oracle(script, &[list]);
    jobs.iter()
        .map(|(_, _, out)| {
            let err = out.join("error.txt");
            if err.exists() {
                Err(std::fs::read_to_string(err).unwrap_or_default())
            } else {
                edgeopt_npy::read(&out.join("output.npy")).map_err(|e| e.to_string())
            }
        })
        .collect()
}

/// Max |difference| (in LSB for integer outputs) and the count of differing values.
fn compare(got: &Tensor, want: &Tensor) -> Result<(f64, usize), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{} values vs the oracle's {} ({:?} vs {:?})",
            got.len(),
            want.len(),
            got.shape,
            want.shape
        ));
    }
    let (a, b) = (got.to_f32_vec(), want.to_f32_vec());
    let mut worst = 0f64;
    let mut bad = 0;
    for (&x, &y) in a.iter().zip(&b) {
        if x.to_bits() != y.to_bits() {
            bad += 1;
            worst = worst.max((x as f64 - y as f64).abs());
        }
    }
    Ok((worst, bad))
}

/// edgeopt's outputs for every sample, with the given numerics and kernels.
fn run_edgeopt(
    g: &edgeopt_ir::Graph,
    x: &Tensor,
    shape: &[usize],
    opts: ExecOptions,
) -> Result<Tensor, String> {
    let mut sess = Session::with_options(g, opts);
    let mut outs = Vec::new();
    for k in 0..SAMPLES {
        let y = sess
            .run(&[sample(x, k, shape)])
            .map_err(|e| e.to_string())?;
        outs.push(y.into_iter().next().ok_or("no output")?);
    }
    Tensor::concat_rows(&outs).map_err(|e| e.to_string())
}

#[derive(Default)]
struct Tally {
    cases: usize,
    equal: [usize; 2],
    skipped: [usize; 2],
    worst: [f64; 2],
}

#[test]
fn every_int8_op_equals_litert_and_tflm() {
    // The models are synthetic; the data folder only gates the oracle requirement.
    let Some(_) = tk::data_dir() else { return };
    if !tk::oracle_available() || !tk::tflm_available() {
        return;
    }
    let dir = tk::scratch_dir("op_differential");
    let cases = cases();
    let mut jobs_l = Vec::new();
    let mut jobs_t = Vec::new();
    let mut xs = Vec::new();
    for (k, c) in cases.iter().enumerate() {
        let d = dir.join(&c.name);
        std::fs::create_dir_all(&d).unwrap();
        let model = d.join("model.tflite");
        std::fs::write(&model, edgeopt_tflite::finish_model(&c.model)).unwrap();
        let x = inputs(&c.input, c.float_input, k as u64);
        let xin = d.join("input.npy");
        edgeopt_npy::write(&xin, &x).unwrap();
        jobs_l.push((model.clone(), xin.clone(), d.join("litert")));
        jobs_t.push((model, xin, d.join("tflm")));
        xs.push(x);
    }
    // Both oracles at once (one process each).
    let (litert, tflm) = std::thread::scope(|sc| {
        let l = sc.spawn(|| oracle_many("litert_run_many.py", &jobs_l, &dir.join("litert.json")));
        let t = oracle_many("tflm_run_many.py", &jobs_t, &dir.join("tflm.json"));
        (l.join().expect("LiteRT oracle thread"), t)
    });

    let skip_of = |name: &str, runtime: &str| {
        SKIPS
            .iter()
            .find(|(p, rt, _)| name.starts_with(p) && *rt == runtime)
    };
    let mut tally: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut skip_used = vec![false; SKIPS.len()];
    for (k, c) in cases.iter().enumerate() {
        let t = tally.entry(c.op).or_default();
        t.cases += 1;
        let g = match edgeopt_tflite::import_file(dir.join(&c.name).join("model.tflite")) {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{}: edgeopt import: {e}", c.name));
                continue;
            }
        };
        for (j, (num, runtime, want)) in [
            (Numerics::LiteRt, "litert", &litert[k]),
            (Numerics::Tflm, "tflm", &tflm[k]),
        ]
        .into_iter()
        .enumerate()
        {
            let want = match want {
                Ok(w) => w,
                Err(e) => {
                    match skip_of(&c.name, runtime) {
                        Some(s) => {
                            skip_used[SKIPS.iter().position(|x| x == s).unwrap()] = true;
                            t.skipped[j] += 1;
                        }
                        None => failures.push(format!("{}: {runtime} refuses: {e}", c.name)),
                    }
                    continue;
                }
            };
            if let Some(s) = skip_of(&c.name, runtime) {
                failures.push(format!(
                    "{}: listed in SKIPS for {runtime} ({}) but {runtime} runs it",
                    c.name, s.2
                ));
            }
            let mut ok = true;
            // The reference kernels, then the fast ones on every instruction set this
            // CPU has (each has its own kernels: AVX-512, AVX2, portable).
            let kernel_sets = std::iter::once(("reference", Kernels::Reference)).chain(
                Isa::available()
                    .into_iter()
                    .map(|isa| (isa.name(), Kernels::Fast(isa))),
            );
            for (kname, kernels) in kernel_sets {
                match run_edgeopt(
                    &g,
                    &xs[k],
                    &c.input,
                    ExecOptions {
                        numerics: num,
                        kernels,
                    },
                )
                .and_then(|got| compare(&got, want))
                {
                    Ok((worst, 0)) => debug_assert_eq!(worst, 0.0),
                    Ok((worst, bad)) => {
                        ok = false;
                        t.worst[j] = t.worst[j].max(worst);
                        failures.push(format!(
                            "{}: {runtime} numerics, {kname} kernels: {bad} of {} values differ, max {worst}",
                            c.name,
                            want.len()
                        ));
                    }
                    Err(e) => {
                        ok = false;
                        failures.push(format!(
                            "{}: {runtime} numerics, {kname} kernels: {e}",
                            c.name
                        ));
                    }
                }
            }
            t.equal[j] += usize::from(ok);
        }
    }
    for (used, s) in skip_used.iter().zip(SKIPS) {
        if !used {
            failures.push(format!("SKIPS entry {s:?} matched no refused case"));
        }
    }

    eprintln!(
        "\n{:<24} {:>5}  {:>16} {:>8}  {:>16} {:>8}",
        "op", "cases", "LiteRT equal", "max LSB", "TFLM equal", "max LSB"
    );
    for (op, t) in &tally {
        let cell = |j: usize| {
            let s = if t.skipped[j] > 0 {
                format!(
                    "{}/{} ({} skip)",
                    t.equal[j],
                    t.cases - t.skipped[j],
                    t.skipped[j]
                )
            } else {
                format!("{}/{}", t.equal[j], t.cases)
            };
            s
        };
        eprintln!(
            "{op:<24} {:>5}  {:>16} {:>8}  {:>16} {:>8}",
            t.cases,
            cell(0),
            t.worst[0],
            cell(1),
            t.worst[1]
        );
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    assert!(
        failures.is_empty(),
        "{} failures (listed above)",
        failures.len()
    );
}
