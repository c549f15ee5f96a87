//! TFLite hybrid (dynamic-range) operators — float activations, int8 weights — against
//! LiteRT's builtin kernels, which quantize the float input on the fly (see
//! `edgeopt_ir::Hybrid` and `edgeopt_runtime::kernels::quantized::hybrid`).
//!
//! Small synthetic models with seeded random weights cover FULLY_CONNECTED with
//! per-tensor and per-channel weights, `asymmetric_quantize_inputs` false and true,
//! and 4 rows per run (a `[1, 4, K]` input); CONV_2D with one weight scale
//! (symmetric input quantization), per-channel scales (asymmetric), stride 2 and SAME
//! padding; DEPTHWISE_CONV_2D (always asymmetric) with a depth multiplier and dilation.
//! The convolutions run on a batch of 2 (a RESHAPE inside the model), so each sample is
//! quantized on its own. Inputs: random (mixed signs), all positive (the asymmetric
//! zero point at -128), and all zeros (LiteRT's shortcut).
//!
//! Measured (this machine): FULLY_CONNECTED and CONV_2D equal LiteRT bit for bit,
//! DEPTHWISE_CONV_2D within 1.8e-7 relative to max(1, max|LiteRT|), while the float
//! semantics (dequantized weights) is 1.2e-3 to 6.8e-3 away. Each model is also
//! exported and re-imported: the hybrid attributes survive and the outputs stay the
//! same. About 10 s with the MLPerf KWS check (one LiteRT run per model).

use edgeopt_ir::{Graph, Hybrid, Tensor, TensorData};
use edgeopt_testkit::{oracle_available, run_oracle, scratch_dir};
use edgeopt_tflite::fixtures::ModelBuilder;
use edgeopt_tflite::schema::{
    self as s, ActivationFunctionType as A, BuiltinOperator as B, BuiltinOptions as O,
};
use rand::{Rng, SeedableRng};

/// Within this of LiteRT, relative to max(1, max|LiteRT|). Float rounding only
/// (LiteRT may fuse a multiply-add); one input quantization step flipped would cost
/// about 1e-3 here.
const TOL: f64 = 1e-5;

struct Case {
    name: &'static str,
    model: s::Model,
    /// Model input shape (batch 1).
    input: Vec<usize>,
    /// Expected hybrid attribute of the one hybrid node.
    hybrid: Hybrid,
}

/// Int8 weights in [-127, 127], quantized along `dim` with `scales` (zero points 0).
fn int8_weights(
    b: &mut ModelBuilder,
    r: &mut rand::rngs::StdRng,
    name: &str,
    shape: &[i32],
    scales: Vec<f32>,
    dim: i32,
) -> i32 {
    let n = shape.iter().product::<i32>() as usize;
    let data: Vec<u8> = (0..n)
        .map(|_| r.gen_range(-127..=127i32) as i8 as u8)
        .collect();
    let q = s::QuantizationParameters {
        zero_point: Some(vec![0; scales.len()]),
        scale: Some(scales),
        quantized_dimension: dim,
        ..Default::default()
    };
    b.constant_bytes(name, shape, s::TensorType::Int8, data, Some(q))
}

/// `n` weight scales: one, or one per channel (all different).
fn scales(r: &mut rand::rngs::StdRng, n: usize, per_channel: bool) -> Vec<f32> {
    let k = if per_channel { n } else { 1 };
    (0..k).map(|_| r.gen_range(0.002f32..0.02)).collect()
}

fn bias(b: &mut ModelBuilder, r: &mut rand::rngs::StdRng, name: &str, n: usize) -> i32 {
    let v: Vec<f32> = (0..n).map(|_| r.gen_range(-0.5f32..0.5)).collect();
    b.constant_f32(name, &[n as i32], &v)
}

fn reshape(b: &mut ModelBuilder, x: i32, y: i32, shape: &[i32]) {
    let t = b.constant_i32(&format!("shape{y}"), &[shape.len() as i32], shape);
    b.op(
        B::Reshape,
        &[x, t],
        &[y],
        Some(O::ReshapeOptions(Box::new(s::ReshapeOptions {
            new_shape: Some(shape.to_vec()),
        }))),
    );
}

/// x [1, 4, 24] -> FULLY_CONNECTED(10) -> y [1, 4, 10]: four rows, each quantized alone.
fn fc(name: &'static str, per_channel: bool, asymmetric: bool, seed: u64) -> Case {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut b = ModelBuilder::new();
    let x = b.activation("x", &[1, 4, 24]);
    let sc = scales(&mut r, 10, per_channel);
    let w = int8_weights(&mut b, &mut r, "w", &[10, 24], sc, 0);
    let bi = bias(&mut b, &mut r, "b", 10);
    // keep_num_dims: y [1, 4, 10] directly; otherwise [4, 10] and a RESHAPE back to a
    // batch of 1 (litert_run.py reads sample 0 of the output).
    let keep = per_channel;
    let fc_out = b.activation("fc", if keep { &[1, 4, 10] } else { &[4, 10] });
    let opts = s::FullyConnectedOptions {
        fused_activation_function: if asymmetric { A::Relu } else { A::None },
        asymmetric_quantize_inputs: asymmetric,
        keep_num_dims: keep,
        ..Default::default()
    };
    b.op(
        B::FullyConnected,
        &[x, w, bi],
        &[fc_out],
        Some(O::FullyConnectedOptions(Box::new(opts))),
    );
    let y = if keep {
        fc_out
    } else {
        let y = b.activation("y", &[1, 4, 10]);
        reshape(&mut b, fc_out, y, &[1, 4, 10]);
        y
    };
    Case {
        name,
        model: b.finish(&[x], &[y]),
        input: vec![1, 4, 24],
        hybrid: Hybrid::new(asymmetric),
    }
}

/// x [1, 16, 8, 3] -> RESHAPE [2, 8, 8, 3] -> CONV_2D 3x3 (stride 2, SAME, 6 filters,
/// RELU6) -> [2, 4, 4, 6] -> RESHAPE [1, 8, 4, 6].
fn conv(name: &'static str, per_channel: bool, seed: u64) -> Case {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut b = ModelBuilder::new();
    let x = b.activation("x", &[1, 16, 8, 3]);
    let x2 = b.activation("x2", &[2, 8, 8, 3]);
    reshape(&mut b, x, x2, &[2, 8, 8, 3]);
    let sc = scales(&mut r, 6, per_channel);
    let w = int8_weights(&mut b, &mut r, "w", &[6, 3, 3, 3], sc, 0);
    let bi = bias(&mut b, &mut r, "b", 6);
    let c = b.activation("c", &[2, 4, 4, 6]);
    let opts = s::Conv2DOptions {
        padding: s::Padding::Same,
        stride_w: 2,
        stride_h: 2,
        fused_activation_function: A::Relu6,
        dilation_w_factor: 1,
        dilation_h_factor: 1,
        quantized_bias_type: s::TensorType::Float32,
    };
    b.op(
        B::Conv2d,
        &[x2, w, bi],
        &[c],
        Some(O::Conv2DOptions(Box::new(opts))),
    );
    let y = b.activation("y", &[1, 8, 4, 6]);
    reshape(&mut b, c, y, &[1, 8, 4, 6]);
    Case {
        name,
        model: b.finish(&[x], &[y]),
        input: vec![1, 16, 8, 3],
        // LiteRT: per-channel scales -> asymmetric, one scale -> symmetric.
        hybrid: Hybrid::new(per_channel),
    }
}

/// x [1, 14, 7, 4] -> RESHAPE [2, 7, 7, 4] -> DEPTHWISE_CONV_2D 3x3 (multiplier 2,
/// dilation 2, SAME) -> [2, 7, 7, 8] -> RESHAPE [1, 14, 7, 8].
fn depthwise(name: &'static str, seed: u64) -> Case {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut b = ModelBuilder::new();
    let x = b.activation("x", &[1, 14, 7, 4]);
    let x2 = b.activation("x2", &[2, 7, 7, 4]);
    reshape(&mut b, x, x2, &[2, 7, 7, 4]);
    let sc = scales(&mut r, 8, true);
    let w = int8_weights(&mut b, &mut r, "w", &[1, 3, 3, 8], sc, 3);
    let bi = bias(&mut b, &mut r, "b", 8);
    let c = b.activation("c", &[2, 7, 7, 8]);
    let opts = s::DepthwiseConv2DOptions {
        padding: s::Padding::Same,
        stride_w: 1,
        stride_h: 1,
        depth_multiplier: 2,
        fused_activation_function: A::None,
        dilation_w_factor: 2,
        dilation_h_factor: 2,
    };
    b.op(
        B::DepthwiseConv2d,
        &[x2, w, bi],
        &[c],
        Some(O::DepthwiseConv2DOptions(Box::new(opts))),
    );
    let y = b.activation("y", &[1, 14, 7, 8]);
    reshape(&mut b, c, y, &[1, 14, 7, 8]);
    Case {
        name,
        model: b.finish(&[x], &[y]),
        input: vec![1, 14, 7, 4],
        hybrid: Hybrid::new(true),
    }
}

/// Samples stacked on axis 0: random with mixed signs (two scales), all positive, and
/// all zeros.
fn samples(shape: &[usize], seed: u64) -> Tensor {
    let per: usize = shape.iter().product();
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(4 * per);
    v.extend((0..per).map(|_| r.gen_range(-1.0f32..1.0)));
    v.extend((0..per).map(|_| r.gen_range(-3.0f32..0.7)));
    v.extend((0..per).map(|_| r.gen_range(0.0f32..2.0)));
    v.extend(std::iter::repeat_n(0.0f32, per));
    let mut s = shape.to_vec();
    s[0] = 4;
    Tensor::new(s, TensorData::F32(v)).unwrap()
}

/// Runs `g` sample by sample (batch 1 each, as litert_run.py does) and stacks.
fn run(g: &Graph, x: &Tensor) -> Vec<f32> {
    let n = x.shape[0];
    let per = x.len() / n;
    let xv = x.to_f32_vec();
    let mut shape = x.shape.clone();
    shape[0] = 1;
    let mut out = Vec::new();
    for i in 0..n {
        let xi = Tensor::new(
            shape.clone(),
            TensorData::F32(xv[i * per..(i + 1) * per].to_vec()),
        )
        .unwrap();
        let y = edgeopt_runtime::run(g, &[xi]).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        out.extend(y[0].to_f32_vec());
    }
    out
}

/// max |got - want| / max(1, max |want|).
fn rel(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs())) as f64;
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max)
        / scale
}

fn hybrid_nodes(g: &Graph) -> Vec<Hybrid> {
    g.nodes.iter().filter_map(|n| n.op.hybrid()).collect()
}

#[test]
fn hybrid_ops_match_litert_builtin() {
    if !oracle_available() {
        println!("skipped: no LiteRT oracle");
        return;
    }
    let dir = scratch_dir("tflite_hybrid");
    let cases = [
        fc("fc_tensor_sym", false, false, 1),
        fc("fc_tensor_asym", false, true, 2),
        fc("fc_channel_sym", true, false, 3),
        fc("fc_channel_asym", true, true, 4),
        conv("conv_tensor_sym", false, 5),
        conv("conv_channel_asym", true, 6),
        depthwise("depthwise_asym", 7),
    ];
    let mut float_far = 0;
    for (k, c) in cases.iter().enumerate() {
        let bytes = edgeopt_tflite::finish_model(&c.model);
        let g = edgeopt_tflite::import(&bytes).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(hybrid_nodes(&g), vec![c.hybrid], "{}", c.name);
        let path = dir.join(format!("{}.tflite", c.name));
        std::fs::write(&path, &bytes).unwrap();
        let x = samples(&c.input, 100 + k as u64);
        let (xin, yout) = (
            dir.join(format!("{}_x.npy", c.name)),
            dir.join(format!("{}_y.npy", c.name)),
        );
        edgeopt_npy::write(&xin, &x).unwrap();
        run_oracle("litert_run.py", &[&path, &xin, &yout]);
        let want = edgeopt_npy::read(&yout).unwrap().to_f32_vec();

        let got = run(&g, &x);
        let d = rel(&got, &want);
        // The float semantics of the same graph (dequantized weights): what the
        // hybrid kernels must differ from.
        let mut plain = g.clone();
        for n in &mut plain.nodes {
            if let Some(h) = n.op.hybrid_mut() {
                *h = None;
            }
        }
        let d_float = rel(&run(&plain, &x), &want);
        // Export -> re-import keeps the hybrid operator and its numerics.
        let back = edgeopt_tflite::export(&g)
            .and_then(|b| edgeopt_tflite::import(&b))
            .unwrap_or_else(|e| panic!("{}: round trip: {e}", c.name));
        assert_eq!(
            hybrid_nodes(&back),
            vec![c.hybrid],
            "{}: round trip",
            c.name
        );
        let d_back = rel(&run(&back, &x), &want);
        println!(
            "{:<18} edgeopt {d:.2e}  re-imported {d_back:.2e}  float semantics {d_float:.2e}",
            c.name
        );
        assert!(d <= TOL, "{}: {d:e} from LiteRT", c.name);
        assert!(
            d_back <= TOL,
            "{}: round trip {d_back:e} from LiteRT",
            c.name
        );
        if d_float > 100.0 * TOL {
            float_far += 1;
        }
    }
    // The comparison discriminates: the float semantics misses LiteRT by far.
    assert!(
        float_far >= cases.len() - 1,
        "only {float_far} cases tell hybrid from float"
    );
}

/// The MLPerf Tiny KWS DS-CNN "float32" file is a hybrid model too (int8 weights with
/// one scale in its five CONV_2D: symmetric input quantization; float depthwise and
/// FULLY_CONNECTED): 20 seeded inputs over the model's input range, within 1e-4 of
/// LiteRT relative to max(1, max|LiteRT|) (measured 1.5e-7; the float semantics is
/// 1.7e-2 away).
#[test]
fn mlperf_kws_hybrid_matches_litert_builtin() {
    let Some(path) = edgeopt_testkit::data_file(
        "mlperf-tiny/benchmark/training/keyword_spotting/trained_models/kws_ref_model_float32.tflite",
    ) else {
        return;
    };
    if !oracle_available() {
        println!("skipped: no LiteRT oracle");
        return;
    }
    let g = edgeopt_tflite::import_file(&path).unwrap();
    assert_eq!(hybrid_nodes(&g), vec![Hybrid::new(false); 5]);
    // The KWS int8 model's input range (scale 0.584703, zero point 83): [-123.4, 25.7].
    let mut r = rand::rngs::StdRng::seed_from_u64(7);
    let n = 20;
    let v = (0..n * 49 * 10)
        .map(|_| r.gen_range(-123.0f32..25.0))
        .collect();
    let x = Tensor::new(vec![n, 49, 10, 1], TensorData::F32(v)).unwrap();
    let dir = scratch_dir("tflite_hybrid_kws");
    let (xin, yout) = (dir.join("x.npy"), dir.join("y.npy"));
    edgeopt_npy::write(&xin, &x).unwrap();
    run_oracle("litert_run.py", &[&path, &xin, &yout]);
    let want = edgeopt_npy::read(&yout).unwrap().to_f32_vec();
    let d = rel(&run(&g, &x), &want);
    let mut plain = g.clone();
    for n in &mut plain.nodes {
        if let Some(h) = n.op.hybrid_mut() {
            *h = None;
        }
    }
    let d_float = rel(&run(&plain, &x), &want);
    println!("kws_ref_model_float32: edgeopt {d:.2e}  float semantics {d_float:.2e}");
    assert!(d <= 1e-4, "{d:e} from LiteRT");
}
