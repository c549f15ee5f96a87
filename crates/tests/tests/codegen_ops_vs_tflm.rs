//! Every op the C generator emits, one small int8 .tflite model each, compiled to C and
//! compared with TensorFlow Lite Micro bit for bit (the MLPerf models of
//! codegen_vs_tflm.rs only use CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D,
//! RESHAPE, FULLY_CONNECTED and SOFTMAX, without padding at the pools).
//!
//! The models are built with the TFLite schema types (deterministic weights, scales and
//! zero points chosen off round values so requantization ties and clamps happen).
//! Sample 0 of every case is a ramp over all 256 int8 values (so element-wise ops are
//! checked on their whole domain), the others are seeded random.
//!
//! Found this way (before the fix, the C followed edgeopt's runtime = LiteRT): RELU6
//! with input and output parameters that differ matched TFLM on 0 to 8 of 1024 outputs
//! per scale (TFLM clamps in the input's units and ignores the output's parameters).
//! Everything else matched as it was, including LOGISTIC and TANH (TFLM computes them in
//! gemmlowp fixed point, the C looks up LiteRT's float-built table; equal on all 256
//! inputs at six input scales and on the requantized inputs at 70 more scales from
//! 0.002 to 0.23) and HARD_SWISH. TFLM refuses a CONCATENATION whose inputs' parameters
//! differ from the output's, so only the plain copy is compared. STRIDED_SLICE, SPLIT /
//! SPLIT_V and RESIZE_BILINEAR (half-pixel, align-corners, asymmetric; up and down)
//! matched on their first run; TFLM has no TILE, whose C is compared with LiteRT's
//! builtin kernel instead. So did MEAN (10 cases), BATCH_MATMUL (4) and the float
//! LayerNorm island (2; its float output compared bit for bit: a C float mean that
//! multiplied by 1/count instead of dividing differed on 100 of 1920 bytes); TFLM has no
//! GELU, whose C is compared with edgeopt's runtime under `Numerics::Tflm` (3 cases).
//! Runtime: ~105 s on 2 shared cores (75 small models, one gcc and one oracle run each).

use edgeopt_codegen::{compile, write_dir, Target};
use edgeopt_ir::{Tensor, TensorData};
use edgeopt_runtime::kernels::quantized::Numerics;
use edgeopt_runtime::ExecOptions;
use edgeopt_testkit::{data_dir, run_oracle, scratch_dir, tflm_available};
use edgeopt_tests::harness;
use edgeopt_tflite::fixtures::ModelBuilder;
use edgeopt_tflite::schema::{
    self as s, ActivationFunctionType as A, BuiltinOperator as B, BuiltinOptions as O,
};
use rand::{Rng, SeedableRng};
use std::path::Path;

const SAMPLES: usize = 4;
/// Input scales of the LOGISTIC / TANH sweeps (0.002 to ~0.23, geometric).
const SWEEP: usize = 70;

/// Deterministic int8 values in [-127, 127] (symmetric weights).
fn values(n: usize, seed: u64) -> Vec<i8> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.gen_range(-127..=127i32) as i8).collect()
}

fn act(m: &mut ModelBuilder, name: &str, shape: &[i32], scale: f32, zp: i64) -> i32 {
    m.typed_activation(name, shape, s::TensorType::Int8, Some((scale, zp)))
}

fn quant(scale: Vec<f32>, zp: Vec<i64>, dim: i32) -> s::QuantizationParameters {
    s::QuantizationParameters {
        scale: Some(scale),
        zero_point: Some(zp),
        quantized_dimension: dim,
        ..Default::default()
    }
}

/// Int8 weights quantized per channel along `dim` (zero points 0).
fn weights(m: &mut ModelBuilder, name: &str, shape: &[i32], scales: &[f32], dim: i32) -> i32 {
    let n = shape.iter().product::<i32>() as usize;
    let v = values(n, n as u64 + name.len() as u64);
    let q = quant(scales.to_vec(), vec![0; scales.len()], dim);
    m.constant_bytes(
        name,
        shape,
        s::TensorType::Int8,
        v.iter().map(|&x| x as u8).collect(),
        Some(q),
    )
}

/// Int32 bias with scale input_scale * weight_scale[c].
fn bias(m: &mut ModelBuilder, name: &str, in_scale: f32, w_scales: &[f32]) -> i32 {
    let n = w_scales.len();
    let v: Vec<i32> = values(n, 7 + n as u64)
        .iter()
        .map(|&x| x as i32 * 37)
        .collect();
    let q = quant(
        w_scales.iter().map(|&w| in_scale * w).collect(),
        vec![0; n],
        0,
    );
    m.constant_bytes(
        name,
        &[n as i32],
        s::TensorType::Int32,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Some(q),
    )
}

/// An int8 constant activation (an operand of ADD/SUB/MUL).
fn constant_i8(m: &mut ModelBuilder, name: &str, shape: &[i32], scale: f32, zp: i64) -> i32 {
    let n = shape.iter().product::<i32>() as usize;
    let v = values(n, 99 + n as u64);
    m.constant_bytes(
        name,
        shape,
        s::TensorType::Int8,
        v.iter().map(|&x| x as u8).collect(),
        Some(quant(vec![scale], vec![zp], 0)),
    )
}

fn scales(n: usize, base: f32) -> Vec<f32> {
    (0..n).map(|i| base * (1.0 + 0.37 * i as f32)).collect()
}

fn conv_opts(padding: s::Padding, stride: i32, act: A) -> Option<O> {
    Some(O::Conv2DOptions(Box::new(s::Conv2DOptions {
        padding,
        stride_w: stride,
        stride_h: stride,
        fused_activation_function: act,
        dilation_w_factor: 1,
        dilation_h_factor: 1,
        quantized_bias_type: s::TensorType::Float32,
    })))
}

fn pool_opts(filter: i32, stride: i32, padding: s::Padding) -> Option<O> {
    Some(O::Pool2DOptions(Box::new(s::Pool2DOptions {
        padding,
        stride_w: stride,
        stride_h: stride,
        filter_width: filter,
        filter_height: filter,
        fused_activation_function: A::None,
    })))
}

/// (name, model, input shape).
fn cases() -> Vec<(&'static str, s::Model, Vec<usize>)> {
    let mut out = Vec::new();

    // CONV_2D 3x3, stride 2, SAME padding, per-channel weights, fused ReLU6.
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 9, 9, 3], 0.047, -3);
        let ws = scales(8, 0.0031);
        let w = weights(&mut m, "w", &[8, 3, 3, 3], &ws, 0);
        let b = bias(&mut m, "b", 0.047, &ws);
        let y = act(&mut m, "y", &[1, 5, 5, 8], 0.031, -128);
        m.op(
            B::Conv2d,
            &[x, w, b],
            &[y],
            conv_opts(s::Padding::Same, 2, A::Relu6),
        );
        out.push((
            "conv_3x3_s2_same_relu6",
            m.finish(&[x], &[y]),
            vec![9, 9, 3],
        ));
    }
    // DEPTHWISE_CONV_2D, depth multiplier 2, SAME, fused ReLU.
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 7, 7, 4], 0.052, 7);
        let ws = scales(8, 0.0043);
        let w = weights(&mut m, "w", &[1, 3, 3, 8], &ws, 3);
        let b = bias(&mut m, "b", 0.052, &ws);
        let y = act(&mut m, "y", &[1, 7, 7, 8], 0.029, -128);
        let o = s::DepthwiseConv2DOptions {
            padding: s::Padding::Same,
            stride_w: 1,
            stride_h: 1,
            depth_multiplier: 2,
            fused_activation_function: A::Relu,
            dilation_w_factor: 1,
            dilation_h_factor: 1,
        };
        m.op(
            B::DepthwiseConv2d,
            &[x, w, b],
            &[y],
            Some(O::DepthwiseConv2DOptions(Box::new(o))),
        );
        out.push((
            "depthwise_mult2_same_relu",
            m.finish(&[x], &[y]),
            vec![7, 7, 4],
        ));
    }
    // DEPTHWISE_CONV_2D stride 2, no activation.
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 8, 8, 6], 0.041, -11);
        let ws = scales(6, 0.0051);
        let w = weights(&mut m, "w", &[1, 3, 3, 6], &ws, 3);
        let b = bias(&mut m, "b", 0.041, &ws);
        let y = act(&mut m, "y", &[1, 4, 4, 6], 0.063, 4);
        let o = s::DepthwiseConv2DOptions {
            padding: s::Padding::Same,
            stride_w: 2,
            stride_h: 2,
            depth_multiplier: 1,
            fused_activation_function: A::None,
            dilation_w_factor: 1,
            dilation_h_factor: 1,
        };
        m.op(
            B::DepthwiseConv2d,
            &[x, w, b],
            &[y],
            Some(O::DepthwiseConv2DOptions(Box::new(o))),
        );
        out.push(("depthwise_s2_same", m.finish(&[x], &[y]), vec![8, 8, 6]));
    }
    // FULLY_CONNECTED, per-tensor weights, fused ReLU, after a RESHAPE.
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 4, 6], 0.044, 9);
        let r = act(&mut m, "r", &[1, 24], 0.044, 9);
        let shape = m.constant_i32("shape", &[2], &[1, 24]);
        m.op(B::Reshape, &[x, shape], &[r], None);
        let ws = [0.0071f32];
        let w = weights(&mut m, "w", &[10, 24], &ws, 0);
        let b = bias(&mut m, "b", 0.044, &[0.0071; 10]);
        let y = act(&mut m, "y", &[1, 10], 0.083, -128);
        let o = s::FullyConnectedOptions {
            fused_activation_function: A::Relu,
            ..Default::default()
        };
        m.op(
            B::FullyConnected,
            &[r, w, b],
            &[y],
            Some(O::FullyConnectedOptions(Box::new(o))),
        );
        out.push((
            "reshape_fully_connected_relu",
            m.finish(&[x], &[y]),
            vec![4, 6],
        ));
    }
    // FULLY_CONNECTED with per-channel weights over 3 rows ([1, 3, 24] -> [3, 10]).
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 3, 24], 0.039, -6);
        let ws = scales(10, 0.0023);
        let w = weights(&mut m, "w", &[10, 24], &ws, 0);
        let b = bias(&mut m, "b", 0.039, &ws);
        let y = act(&mut m, "y", &[3, 10], 0.057, 12);
        m.op(
            B::FullyConnected,
            &[x, w, b],
            &[y],
            Some(O::FullyConnectedOptions(Box::default())),
        );
        out.push((
            "fully_connected_per_channel_3_rows",
            m.finish(&[x], &[y]),
            vec![3, 24],
        ));
    }
    // CONV_2D with dilation 2 (VALID), and a grouped CONV_2D (2 groups, SAME).
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 9, 9, 4], 0.047, 1);
        let ws = scales(6, 0.0029);
        let w = weights(&mut m, "w", &[6, 3, 3, 4], &ws, 0);
        let b = bias(&mut m, "b", 0.047, &ws);
        let y = act(&mut m, "y", &[1, 5, 5, 6], 0.05, -3);
        let o = s::Conv2DOptions {
            padding: s::Padding::Valid,
            stride_w: 1,
            stride_h: 1,
            fused_activation_function: A::None,
            dilation_w_factor: 2,
            dilation_h_factor: 2,
            quantized_bias_type: s::TensorType::Float32,
        };
        m.op(
            B::Conv2d,
            &[x, w, b],
            &[y],
            Some(O::Conv2DOptions(Box::new(o))),
        );
        out.push((
            "conv_3x3_dilation2_valid",
            m.finish(&[x], &[y]),
            vec![9, 9, 4],
        ));
    }
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 6, 6, 4], 0.047, 1);
        let ws = scales(6, 0.0037);
        let w = weights(&mut m, "w", &[6, 3, 3, 2], &ws, 0);
        let b = bias(&mut m, "b", 0.047, &ws);
        let y = act(&mut m, "y", &[1, 6, 6, 6], 0.05, -3);
        m.op(
            B::Conv2d,
            &[x, w, b],
            &[y],
            conv_opts(s::Padding::Same, 1, A::None),
        );
        out.push(("conv_grouped_2", m.finish(&[x], &[y]), vec![6, 6, 4]));
    }
    // SOFTMAX with beta != 1.
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 4, 12], 0.21, -30);
        let y = act(&mut m, "y", &[1, 4, 12], 1.0 / 256.0, -128);
        m.op(
            B::Softmax,
            &[x],
            &[y],
            Some(O::SoftmaxOptions(Box::new(s::SoftmaxOptions {
                beta: 0.63,
            }))),
        );
        out.push(("softmax_beta", m.finish(&[x], &[y]), vec![4, 12]));
    }
    // AVERAGE_POOL_2D / MAX_POOL_2D 3x3, stride 2, SAME (partial windows at the edges).
    for (name, code) in [
        ("average_pool_3x3_s2_same", B::AveragePool2d),
        ("max_pool_3x3_s2_same", B::MaxPool2d),
    ] {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 9, 9, 4], 0.05, -7);
        let y = act(&mut m, "y", &[1, 5, 5, 4], 0.05, -7);
        m.op(code, &[x], &[y], pool_opts(3, 2, s::Padding::Same));
        out.push((name, m.finish(&[x], &[y]), vec![9, 9, 4]));
    }
    // ADD / SUB / MUL with a broadcast constant operand.
    for (name, code) in [
        ("add_broadcast_relu", B::Add),
        ("sub_broadcast_relu", B::Sub),
        ("mul_broadcast_relu", B::Mul),
    ] {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 4, 4, 3], 0.037, 5);
        let c = constant_i8(&mut m, "c", &[3], 0.021, -9);
        let y = act(&mut m, "y", &[1, 4, 4, 3], 0.043, -20);
        let opts = match code {
            B::Add => O::AddOptions(Box::new(s::AddOptions {
                fused_activation_function: A::Relu,
                ..Default::default()
            })),
            B::Sub => O::SubOptions(Box::new(s::SubOptions {
                fused_activation_function: A::Relu,
                ..Default::default()
            })),
            _ => O::MulOptions(Box::new(s::MulOptions {
                fused_activation_function: A::Relu,
            })),
        };
        m.op(code, &[x, c], &[y], Some(opts));
        out.push((name, m.finish(&[x], &[y]), vec![4, 4, 3]));
    }
    // SOFTMAX over the last axis (TFLM's int8 output is scale 1/256, zero point -128).
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 8, 32], 0.093, 3);
        let y = act(&mut m, "y", &[1, 8, 32], 1.0 / 256.0, -128);
        m.op(
            B::Softmax,
            &[x],
            &[y],
            Some(O::SoftmaxOptions(Box::new(s::SoftmaxOptions { beta: 1.0 }))),
        );
        out.push(("softmax", m.finish(&[x], &[y]), vec![8, 32]));
    }
    // Element-wise ops on all 256 input values, each at several input scales (ties of
    // the requantization and of the fixed-point transcendental functions depend on them).
    let sweep: [(f32, i64); 6] = [
        (0.061, 3),
        (0.0117, -128),
        (0.0233, 17),
        (0.1003, -5),
        (0.00391, 0),
        (0.2, 100),
    ];
    for (i, &(si, zi)) in sweep.iter().enumerate() {
        for (name, code, (so, zo)) in [
            ("logistic", B::Logistic, (1.0f32 / 256.0, -128i64)),
            ("tanh", B::Tanh, (1.0 / 128.0, 0)),
            ("relu", B::Relu, (si * 0.77, -128)),
            ("relu6", B::Relu6, (6.0 / 255.0, -128)),
            ("hard_swish", B::HardSwish, (0.021, -50)),
            ("quantize_requant", B::Quantize, (si * 1.37, -10)),
        ] {
            let mut m = ModelBuilder::new();
            let x = act(&mut m, "x", &[1, 256], si, zi);
            let y = act(&mut m, "y", &[1, 256], so, zo);
            m.op(code, &[x], &[y], None);
            let name: &'static str = Box::leak(format!("{name}_{i}").into_boxed_str());
            out.push((name, m.finish(&[x], &[y]), vec![256]));
        }
    }
    // RELU at a scale pair whose float quotient gives another multiplier than the double
    // one TFLM uses: LiteRT's table (the runtime's) maps input 118 to 14, TFLM's to 15.
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 256], 0.024_050_42, 60);
        let y = act(&mut m, "y", &[1, 256], 0.009_788_942_5, -128);
        m.op(B::Relu, &[x], &[y], None);
        out.push(("relu_double_division", m.finish(&[x], &[y]), vec![256]));
    }
    // LOGISTIC / TANH at many input scales in one model each: QUANTIZE_i rescales the
    // input to scale_i, the op runs, and the outputs (fixed parameters) are
    // concatenated.
    for (name, code, (so, zo)) in [
        ("logistic_sweep", B::Logistic, (1.0f32 / 256.0, -128i64)),
        ("tanh_sweep", B::Tanh, (1.0 / 128.0, 0)),
    ] {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 256], 0.05, 0);
        let mut parts = Vec::new();
        for i in 0..SWEEP {
            let si = 0.002 * 1.07f32.powi(i as i32);
            let zi = (i as i64 * 37) % 255 - 127;
            let q = act(&mut m, &format!("q{i}"), &[1, 256], si, zi);
            m.op(B::Quantize, &[x], &[q], None);
            let y = act(&mut m, &format!("y{i}"), &[1, 256], so, zo);
            m.op(code, &[q], &[y], None);
            parts.push(y);
        }
        // TFLM's CONCATENATION takes at most 10 inputs: concatenate in two levels.
        let concat = |m: &mut ModelBuilder, ins: &[i32], width: usize, name: &str| {
            let y = act(m, name, &[1, width as i32], so, zo);
            let o = s::ConcatenationOptions {
                axis: 1,
                fused_activation_function: A::None,
            };
            m.op(
                B::Concatenation,
                ins,
                &[y],
                Some(O::ConcatenationOptions(Box::new(o))),
            );
            y
        };
        let groups: Vec<i32> = parts
            .chunks(10)
            .enumerate()
            .map(|(i, c)| concat(&mut m, c, 256 * c.len(), &format!("g{i}")))
            .collect();
        let y = concat(&mut m, &groups, 256 * SWEEP, "y");
        out.push((name, m.finish(&[x], &[y]), vec![256]));
    }
    // DEQUANTIZE to a float32 output (compared as bytes).
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 256], 0.0173, -9);
        let y = m.typed_activation("y", &[1, 256], s::TensorType::Float32, None);
        m.op(B::Dequantize, &[x], &[y], None);
        out.push(("dequantize", m.finish(&[x], &[y]), vec![256]));
    }
    // PAD (constant, zero point fill), TRANSPOSE.
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 4, 4, 3], 0.05, -17);
        let pads = m.constant_i32("pads", &[4, 2], &[0, 0, 1, 2, 2, 1, 0, 0]);
        let p = act(&mut m, "p", &[1, 7, 7, 3], 0.05, -17);
        m.op(
            B::Pad,
            &[x, pads],
            &[p],
            Some(O::PadOptions(Box::default())),
        );
        let perm = m.constant_i32("perm", &[4], &[0, 3, 1, 2]);
        let y = act(&mut m, "y", &[1, 3, 7, 7], 0.05, -17);
        m.op(
            B::Transpose,
            &[p, perm],
            &[y],
            Some(O::TransposeOptions(Box::default())),
        );
        out.push(("pad_transpose", m.finish(&[x], &[y]), vec![4, 4, 3]));
    }
    // CONCATENATION (TFLM requires every input's parameters to equal the output's:
    // "input->params.scale != output->params.scale" fails Prepare otherwise).
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 4, 4, 3], 0.05, -17);
        let r = act(&mut m, "r", &[1, 4, 4, 3], 0.05, -17);
        m.op(B::Relu, &[x], &[r], None);
        let y = act(&mut m, "y", &[1, 4, 4, 6], 0.05, -17);
        let o = s::ConcatenationOptions {
            axis: 3,
            fused_activation_function: A::None,
        };
        m.op(
            B::Concatenation,
            &[x, r],
            &[y],
            Some(O::ConcatenationOptions(Box::new(o))),
        );
        out.push(("relu_concatenation", m.finish(&[x], &[y]), vec![4, 4, 3]));
    }
    // STRIDED_SLICE: a negative stride with begin/end masks, and the Keras `x[:, t, :]`
    // form (masks on the kept axes, the time axis shrunk).
    for (name, shape, out_shape, begin, end, strides, masks) in [
        (
            "strided_slice_negative_stride",
            vec![1, 6, 8, 5],
            vec![1, 3, 3, 3],
            vec![0, 1, 7, 1],
            vec![0, 6, 0, 4],
            vec![1, 2, -3, 1],
            (1, 1, 0),
        ),
        (
            "strided_slice_shrink_time",
            vec![1, 7, 12],
            vec![1, 12],
            vec![0, 4, 0],
            vec![0, 5, 0],
            vec![1, 1, 1],
            (5, 5, 2),
        ),
    ] {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &shape, 0.043, -5);
        let k = begin.len() as i32;
        let b = m.constant_i32("begin", &[k], &begin);
        let e = m.constant_i32("end", &[k], &end);
        let st = m.constant_i32("strides", &[k], &strides);
        let y = act(&mut m, "y", &out_shape, 0.043, -5);
        let o = s::StridedSliceOptions {
            begin_mask: masks.0,
            end_mask: masks.1,
            shrink_axis_mask: masks.2,
            ..Default::default()
        };
        m.op(
            B::StridedSlice,
            &[x, b, e, st],
            &[y],
            Some(O::StridedSliceOptions(Box::new(o))),
        );
        let sample: Vec<usize> = shape[1..].iter().map(|&d| d as usize).collect();
        out.push((name, m.finish(&[x], &[y]), sample));
    }
    // SPLIT (3 equal parts of the channels) and SPLIT_V (3, 5, 2 rows), the parts
    // concatenated back in another order so every output is checked.
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 6, 4, 9], 0.05, 3);
        let axis = m.constant_i32("axis", &[], &[3]);
        let parts: Vec<i32> = (0..3)
            .map(|i| act(&mut m, &format!("p{i}"), &[1, 6, 4, 3], 0.05, 3))
            .collect();
        m.op(
            B::Split,
            &[axis, x],
            &parts,
            Some(O::SplitOptions(Box::new(s::SplitOptions { num_splits: 3 }))),
        );
        let y = act(&mut m, "y", &[1, 6, 4, 9], 0.05, 3);
        let o = s::ConcatenationOptions {
            axis: 3,
            fused_activation_function: A::None,
        };
        m.op(
            B::Concatenation,
            &[parts[2], parts[0], parts[1]],
            &[y],
            Some(O::ConcatenationOptions(Box::new(o))),
        );
        out.push(("split_channels", m.finish(&[x], &[y]), vec![6, 4, 9]));
    }
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 10, 6], 0.05, 3);
        let sizes = m.constant_i32("sizes", &[3], &[3, 5, 2]);
        let axis = m.constant_i32("axis", &[], &[1]);
        let parts: Vec<i32> = [3, 5, 2]
            .iter()
            .enumerate()
            .map(|(i, &w)| act(&mut m, &format!("p{i}"), &[1, w, 6], 0.05, 3))
            .collect();
        m.op(
            B::SplitV,
            &[x, sizes, axis],
            &parts,
            Some(O::SplitVOptions(Box::new(s::SplitVOptions {
                num_splits: 3,
            }))),
        );
        let y = act(&mut m, "y", &[1, 10, 6], 0.05, 3);
        let o = s::ConcatenationOptions {
            axis: 1,
            fused_activation_function: A::None,
        };
        m.op(
            B::Concatenation,
            &[parts[1], parts[2], parts[0]],
            &[y],
            Some(O::ConcatenationOptions(Box::new(o))),
        );
        out.push(("split_v_rows", m.finish(&[x], &[y]), vec![10, 6]));
    }
    // RESIZE_BILINEAR (int8: TFLite's ResizeBilinearInteger): half-pixel upscale by a
    // non-integer ratio, align-corners, a plain (asymmetric) downscale, and the 2x
    // half-pixel upscale of Keras `Resizing(bilinear)` in the corpus U-Net.
    for (name, (ih, iw, c), (oh, ow), (align, half)) in [
        (
            "resize_bilinear_half_pixel",
            (5, 7, 3),
            (9, 12),
            (false, true),
        ),
        (
            "resize_bilinear_align_corners",
            (5, 7, 3),
            (10, 14),
            (true, false),
        ),
        (
            "resize_bilinear_downscale",
            (8, 6, 4),
            (3, 5),
            (false, false),
        ),
        (
            "resize_bilinear_2x_half_pixel",
            (6, 6, 4),
            (12, 12),
            (false, true),
        ),
    ] {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, ih, iw, c], 0.047, -9);
        let size = m.constant_i32("size", &[2], &[oh, ow]);
        let y = act(&mut m, "y", &[1, oh, ow, c], 0.047, -9);
        let o = s::ResizeBilinearOptions {
            align_corners: align,
            half_pixel_centers: half,
        };
        m.op(
            B::ResizeBilinear,
            &[x, size],
            &[y],
            Some(O::ResizeBilinearOptions(Box::new(o))),
        );
        let sample = vec![ih as usize, iw as usize, c as usize];
        out.push((name, m.finish(&[x], &[y]), sample));
    }
    // MEAN (TFLite Micro's QuantizedMeanOrSum): global average pools as the converter
    // and edgeopt's writer emit them (axes {1, 2}, with and without keep_dims), 1-wide
    // spatial dims, a single reduced axis, non-adjacent axes, a negative axis, a 3-D
    // input, 1024 summed elements. "same": input and output share scale and zero point
    // (TFLM's former Mean path, merged into QuantizedMeanOrSum in 2023, #1908: the
    // multiplier is then 2^30 / count with shift 1), the others requantize.
    for (name, shape, axes, keep, xq, yq) in [
        (
            "mean_hw_keep",
            vec![1, 5, 7, 12],
            vec![1, 2],
            true,
            (0.047, -9),
            (0.021, 5),
        ),
        (
            "mean_hw_drop_same",
            vec![1, 6, 6, 8],
            vec![2, 1],
            false,
            (0.047, -9),
            (0.047, -9),
        ),
        (
            "mean_hw_1wide_h",
            vec![1, 1, 9, 6],
            vec![1, 2],
            true,
            (0.033, 12),
            (0.05, -3),
        ),
        (
            "mean_hw_1x1_same",
            vec![1, 1, 1, 10],
            vec![1, 2],
            false,
            (0.033, 12),
            (0.033, 12),
        ),
        (
            "mean_w_1wide",
            vec![1, 4, 1, 5],
            vec![2],
            true,
            (0.061, 0),
            (0.019, -20),
        ),
        (
            "mean_channels_drop",
            vec![1, 3, 4, 9],
            vec![3],
            false,
            (0.02, -128),
            (0.009, -70),
        ),
        (
            "mean_axes_1_3_keep",
            vec![1, 4, 5, 6],
            vec![1, 3],
            true,
            (0.05, 3),
            (0.04, 3),
        ),
        (
            "mean_neg_axis_3d_same",
            vec![1, 10, 16],
            vec![-1],
            true,
            (0.07, 1),
            (0.07, 1),
        ),
        (
            "mean_3d_rows_drop",
            vec![1, 10, 16],
            vec![1],
            false,
            (0.07, 1),
            (0.31, 7),
        ),
        (
            "mean_hw_1024_gain",
            vec![1, 32, 32, 3],
            vec![1, 2],
            true,
            (0.2, -1),
            (0.003, 2),
        ),
    ] {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &shape, xq.0, xq.1);
        let r = shape.len() as i32;
        let red: Vec<i32> = axes
            .iter()
            .map(|&a| if a < 0 { a + r } else { a })
            .collect();
        let out_shape: Vec<i32> = (0..r)
            .filter_map(|d| match (red.contains(&d), keep) {
                (true, true) => Some(1),
                (true, false) => None,
                (false, _) => Some(shape[d as usize]),
            })
            .collect();
        let ax = m.constant_i32("axes", &[axes.len() as i32], &axes);
        let y = act(&mut m, "y", &out_shape, yq.0, yq.1);
        m.op(
            B::Mean,
            &[x, ax],
            &[y],
            Some(O::ReducerOptions(Box::new(s::ReducerOptions {
                keep_dims: keep,
            }))),
        );
        let sample: Vec<usize> = shape[1..].iter().map(|&d| d as usize).collect();
        out.push((name, m.finish(&[x], &[y]), sample));
    }
    // BATCH_MATMUL (int8): attention's Q·Kᵀ form (4-D, the rhs the transposed input,
    // so both operands share parameters), a constant rhs with its own zero point, batch
    // broadcasting (rank 5 x rank 3), rank 2, and an accumulation depth of 67
    // (not a multiple of the 4-wide SMLAD steps).
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 4, 16, 8], 0.05, -3);
        let perm = m.constant_i32("perm", &[4], &[0, 1, 3, 2]);
        let xt = act(&mut m, "xt", &[1, 4, 8, 16], 0.05, -3);
        m.op(
            B::Transpose,
            &[x, perm],
            &[xt],
            Some(O::TransposeOptions(Box::default())),
        );
        let y = act(&mut m, "y", &[1, 4, 16, 16], 0.093, -2);
        m.op(B::BatchMatmul, &[x, xt], &[y], bmm_opts());
        out.push(("batch_matmul_qkt", m.finish(&[x], &[y]), vec![4, 16, 8]));
    }
    for (name, xs, bs, ys, (xq, bq, yq)) in [
        (
            "batch_matmul_const_rhs",
            vec![1, 3, 12, 10],
            vec![1, 3, 10, 7],
            vec![1, 3, 12, 7],
            ((0.047, 11), (0.031, -6), (0.21, 4)),
        ),
        (
            "batch_matmul_broadcast_batch",
            vec![1, 2, 3, 5, 7],
            vec![3, 7, 4],
            vec![1, 2, 3, 5, 4],
            ((0.06, -128), (0.02, 3), (0.05, -40)),
        ),
        (
            "batch_matmul_rank2_depth67",
            vec![1, 67],
            vec![67, 9],
            vec![1, 9],
            ((0.013, 0), (0.017, 1), (0.11, 9)),
        ),
    ] {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &xs, xq.0, xq.1);
        let b = constant_i8(&mut m, "b", &bs, bq.0, bq.1);
        let y = act(&mut m, "y", &ys, yq.0, yq.1);
        m.op(B::BatchMatmul, &[x, b], &[y], bmm_opts());
        let sample: Vec<usize> = xs[1..].iter().map(|&d| d as usize).collect();
        out.push((name, m.finish(&[x], &[y]), sample));
    }
    // A float island as edgeopt's TFLite writer emits LayerNorm (int8 -> DEQUANTIZE,
    // float MEAN / SUB / MUL / ADD / SQRT / DIV over the last axis, gamma and beta; the
    // float output compared bit for bit), TFLM's reference float kernels; and float
    // MEAN over axes {1, 2}
    // with keep_dims (TFLM's special 4-D path) and a fused-RELU6 DIV by a broadcast
    // constant.
    {
        let mut m = ModelBuilder::new();
        let (r, c) = (6, 20);
        let x = act(&mut m, "x", &[1, r, c], 0.043, 7);
        let f = |m: &mut ModelBuilder, n: &str, sh: &[i32]| {
            m.typed_activation(n, sh, s::TensorType::Float32, None)
        };
        let xf = f(&mut m, "xf", &[1, r, c]);
        m.op(B::Dequantize, &[x], &[xf], None);
        let ax = m.constant_i32("axes", &[1], &[-1]);
        let mean = f(&mut m, "mean", &[1, r, 1]);
        m.op(B::Mean, &[xf, ax], &[mean], keep_opts());
        let d = f(&mut m, "d", &[1, r, c]);
        m.op(
            B::Sub,
            &[xf, mean],
            &[d],
            Some(O::SubOptions(Box::default())),
        );
        let d2 = f(&mut m, "d2", &[1, r, c]);
        m.op(B::Mul, &[d, d], &[d2], Some(O::MulOptions(Box::default())));
        let var = f(&mut m, "var", &[1, r, 1]);
        m.op(B::Mean, &[d2, ax], &[var], keep_opts());
        let eps = m.constant_f32("eps", &[1], &[1e-5]);
        let ve = f(&mut m, "ve", &[1, r, 1]);
        m.op(
            B::Add,
            &[var, eps],
            &[ve],
            Some(O::AddOptions(Box::default())),
        );
        let sd = f(&mut m, "sd", &[1, r, 1]);
        m.op(B::Sqrt, &[ve], &[sd], None);
        let nrm = f(&mut m, "nrm", &[1, r, c]);
        m.op(
            B::Div,
            &[d, sd],
            &[nrm],
            Some(O::DivOptions(Box::default())),
        );
        let gv: Vec<f32> = (0..c).map(|i| 0.5 + 0.07 * i as f32).collect();
        let bv: Vec<f32> = (0..c).map(|i| -0.3 + 0.05 * i as f32).collect();
        let gamma = m.constant_f32("gamma", &[c], &gv);
        let beta = m.constant_f32("beta", &[c], &bv);
        let sc = f(&mut m, "sc", &[1, r, c]);
        m.op(
            B::Mul,
            &[nrm, gamma],
            &[sc],
            Some(O::MulOptions(Box::default())),
        );
        let sh = f(&mut m, "sh", &[1, r, c]);
        m.op(
            B::Add,
            &[sc, beta],
            &[sh],
            Some(O::AddOptions(Box::default())),
        );
        // The float result is the output: compared bit for bit (a QUANTIZE would hide
        // an ulp of difference most of the time).
        out.push((
            "float_island_layernorm",
            m.finish(&[x], &[sh]),
            vec![r as usize, c as usize],
        ));
    }
    {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 5, 6, 4], 0.061, -17);
        let f = |m: &mut ModelBuilder, n: &str, sh: &[i32]| {
            m.typed_activation(n, sh, s::TensorType::Float32, None)
        };
        let xf = f(&mut m, "xf", &[1, 5, 6, 4]);
        m.op(B::Dequantize, &[x], &[xf], None);
        let ax = m.constant_i32("axes", &[2], &[1, 2]);
        let mean = f(&mut m, "mean", &[1, 1, 1, 4]);
        m.op(B::Mean, &[xf, ax], &[mean], keep_opts());
        let k = m.constant_f32("k", &[4], &[0.3, -0.7, 0.11, 1.9]);
        let q = f(&mut m, "q", &[1, 1, 1, 4]);
        let o = s::DivOptions {
            fused_activation_function: A::Relu6,
        };
        m.op(B::Div, &[mean, k], &[q], Some(O::DivOptions(Box::new(o))));
        let y = act(&mut m, "y", &[1, 1, 1, 4], 0.025, -128);
        m.op(B::Quantize, &[q], &[y], None);
        out.push((
            "float_island_mean_hw_div_relu6",
            m.finish(&[x], &[y]),
            vec![5, 6, 4],
        ));
    }
    out
}

fn bmm_opts() -> Option<O> {
    Some(O::BatchMatMulOptions(Box::default()))
}

fn keep_opts() -> Option<O> {
    Some(O::ReducerOptions(Box::new(s::ReducerOptions {
        keep_dims: true,
    })))
}

/// Ops TensorFlow Lite Micro does not have (no TILE kernel in the `tflite-micro`
/// package): compared with LiteRT's builtin kernels instead (pure data movement, so
/// any runtime's result is the one answer).
fn litert_cases() -> Vec<(&'static str, s::Model, Vec<usize>)> {
    let mut out = Vec::new();
    // TILE of a 4-D tensor, and the rank-5 form Keras UpSampling2D converts to.
    for (name, shape, multiples) in [
        ("tile_4d", vec![1, 3, 4, 2], vec![1, 2, 1, 3]),
        (
            "tile_5d_upsampling",
            vec![1, 4, 1, 4, 5],
            vec![1, 1, 2, 1, 1],
        ),
    ] {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &shape, 0.05, -7);
        let k = multiples.len() as i32;
        let mult = m.constant_i32("multiples", &[k], &multiples);
        let out_shape: Vec<i32> = shape.iter().zip(&multiples).map(|(a, b)| a * b).collect();
        let y = act(&mut m, "y", &out_shape, 0.05, -7);
        m.op(
            B::Tile,
            &[x, mult],
            &[y],
            Some(O::TileOptions(Box::default())),
        );
        let sample: Vec<usize> = shape[1..].iter().map(|&d| d as usize).collect();
        out.push((name, m.finish(&[x], &[y]), sample));
    }
    out
}

/// Ops TensorFlow Lite Micro does not have and whose C is not LiteRT's arithmetic
/// either: compared with edgeopt's runtime under `Numerics::Tflm` (what `edgeopt run
/// --numerics tflm` and `eval` predict for the device). GELU: TFLM has no GELU kernel;
/// the C looks up the runtime's int8 table (LiteRT's GELU lookup table, itself checked
/// against LiteRT in tflite_int8_bmm_gelu.rs), over all 256 inputs at several scales.
fn runtime_cases() -> Vec<(&'static str, s::Model, Vec<usize>)> {
    let mut out = Vec::new();
    // edgeopt imports the exact form only (`approximate = true` is refused on import).
    for (name, (si, zi), (so, zo), approximate) in [
        ("gelu_exact", (0.047, -9), (0.031, -100), false),
        ("gelu_small_scale", (0.021, 3), (0.012, -120), false),
        ("gelu_wide_input", (0.11, 40), (0.09, -30), false),
    ] {
        let mut m = ModelBuilder::new();
        let x = act(&mut m, "x", &[1, 4, 64], si, zi);
        let y = act(&mut m, "y", &[1, 4, 64], so, zo);
        let o = s::GeluOptions { approximate };
        m.op(B::Gelu, &[x], &[y], Some(O::GeluOptions(Box::new(o))));
        out.push((name, m.finish(&[x], &[y]), vec![4, 64]));
    }
    out
}

/// edgeopt's runtime under `Numerics::Tflm` on int8 `inputs` of `sample_shape`.
fn runtime_outputs(model: &Path, sample_shape: &[usize], inputs: &[u8]) -> Vec<u8> {
    let g = edgeopt_tflite::import_file(model).expect("import");
    let per: usize = sample_shape.iter().product();
    let mut shape = vec![inputs.len() / per];
    shape.extend_from_slice(sample_shape);
    let x = Tensor::new(
        shape,
        TensorData::I8(inputs.iter().map(|&b| b as i8).collect()),
    )
    .expect("input shape");
    let tflm = ExecOptions::numerics(Numerics::Tflm);
    let y = edgeopt_runtime::run_per_sample(&g, std::slice::from_ref(&x), tflm).expect("run");
    edgeopt_tests::tflm::bytes(&y[0])
}

/// LiteRT (builtin kernels) on int8 `inputs` of `sample_shape`, as [`edgeopt_tests::tflm::outputs`].
fn litert_outputs(model: &Path, sample_shape: &[usize], inputs: &[u8], work: &Path) -> Vec<u8> {
    let per: usize = sample_shape.iter().product();
    let mut shape = vec![inputs.len() / per];
    shape.extend_from_slice(sample_shape);
    let x = Tensor::new(
        shape,
        TensorData::I8(inputs.iter().map(|&b| b as i8).collect()),
    )
    .expect("input shape");
    std::fs::create_dir_all(work).expect("work dir");
    let (xin, yout) = (work.join("litert_in.npy"), work.join("litert_out.npy"));
    edgeopt_npy::write(&xin, &x).expect("write inputs");
    run_oracle("litert_run.py", &[model, &xin, &yout]);
    edgeopt_tests::tflm::bytes(&edgeopt_npy::read(&yout).expect("LiteRT outputs"))
}

/// SAMPLES inputs of `shape`: a ramp over -128..=127, then seeded random values.
fn inputs(shape: &[usize]) -> Vec<u8> {
    let per: usize = shape.iter().product();
    let mut r = rand::rngs::StdRng::seed_from_u64(per as u64);
    let mut v: Vec<u8> = (0..per).map(|i| (i % 256) as u8 ^ 0x80).collect();
    for _ in 1..SAMPLES {
        v.extend((0..per).map(|_| r.gen::<u8>()));
    }
    v
}

#[test]
fn every_emitted_op_equals_tflm() {
    // The models are synthetic; the data folder only gates the oracle requirement.
    let Some(_) = data_dir() else { return };
    if !tflm_available() {
        return;
    }
    harness::host_cc().expect("no host C compiler");
    let mut failures = Vec::new();
    let tflm = cases().into_iter().map(|c| (c, "TFLite Micro"));
    let litert = litert_cases().into_iter().map(|c| (c, "LiteRT"));
    let runtime = runtime_cases()
        .into_iter()
        .map(|c| (c, "edgeopt run --numerics tflm"));
    for ((name, model, shape), oracle) in tflm.chain(litert).chain(runtime) {
        let work = scratch_dir(&format!("codegen_ops_vs_tflm/{name}"));
        let path = work.join(format!("{name}.tflite"));
        std::fs::write(&path, edgeopt_tflite::finish_model(&model)).unwrap();
        let g = edgeopt_tflite::import_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let gen = compile(&g, Target::by_name("generic").unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        write_dir(&gen, &work.join("gen")).unwrap();
        let exe = harness::build_host(&work.join("gen"), &work.join("build")).unwrap();
        let x = inputs(&shape);
        let got = harness::run_host(&exe, &x, &work.join("build")).unwrap();
        let want = if oracle == "LiteRT" {
            litert_outputs(&path, &shape, &x, &work.join("litert"))
        } else if oracle.starts_with("edgeopt") {
            runtime_outputs(&path, &shape, &x)
        } else {
            edgeopt_tests::tflm::outputs(&path, &shape, &x, &work.join("tflm"))
        };
        assert_eq!(got.len(), want.len(), "{name}: output length");
        let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        let max_diff = got
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (a as i8 as i32 - b as i8 as i32).abs())
            .max()
            .unwrap_or(0);
        eprintln!(
            "{name}: {}/{} output bytes equal {oracle} (max |diff| {max_diff} as int8)",
            want.len() - bad,
            want.len()
        );
        if bad > 0 {
            failures.push(name);
        }
    }
    assert!(
        failures.is_empty(),
        "differ from their oracle: {failures:?}"
    );
}
