//! The converter's dilated convolution (SPACE_TO_BATCH_ND -> [EXPAND_DIMS] -> CONV_2D /
//! DEPTHWISE_CONV_2D -> [SQUEEZE] -> BATCH_TO_SPACE_ND), which the importer folds into
//! one dilated `Conv` with explicit pads: synthetic models with uneven paddings and
//! non-zero crops, 1-D (float and int8) and 2-D depthwise with different blocks per
//! axis, checked against LiteRT's builtin kernels (float within 1e-5, int8 exactly).

use edgeopt_ir::{Op, Tensor, TensorData};
use edgeopt_testkit::{data_dir, oracle_available, run_oracle, scratch_dir};
use edgeopt_tflite::fixtures::ModelBuilder;
use edgeopt_tflite::schema::{self as s, BuiltinOperator as B, BuiltinOptions as O};

fn q(scale: &[f32], zp: i64, dim: i32) -> s::QuantizationParameters {
    s::QuantizationParameters {
        scale: Some(scale.to_vec()),
        zero_point: Some(vec![zp; scale.len()]),
        quantized_dimension: dim,
        ..Default::default()
    }
}

fn conv_opts() -> Option<O> {
    Some(O::Conv2DOptions(Box::new(s::Conv2DOptions {
        padding: s::Padding::Valid,
        stride_w: 1,
        stride_h: 1,
        fused_activation_function: s::ActivationFunctionType::None,
        dilation_w_factor: 1,
        dilation_h_factor: 1,
        quantized_bias_type: s::TensorType::Float32,
    })))
}

/// x [1, 20, 3] -> S2B(block 2, pads [2, 4]) -> EXPAND_DIMS(1) -> CONV_2D 3 taps, 4
/// filters -> SQUEEZE([1]) -> B2S(block 2, crops [0, 1]) -> y [1, 21, 4].
fn conv1d(int8: bool) -> (s::Model, Vec<usize>) {
    conv1d_with(int8, [2, 4], [0, 1])
}

/// [`conv1d`] with other paddings and crops (shapes follow).
fn conv1d_with(int8: bool, pad: [i32; 2], crop: [i32; 2]) -> (s::Model, Vec<usize>) {
    let phase = (20 + pad[0] + pad[1]) / 2;
    let out = 2 * (phase - 2) - crop[0] - crop[1];
    let mut b = ModelBuilder::new();
    let (ty, qa, qy) = if int8 {
        (s::TensorType::Int8, Some((0.05, -3)), Some((0.08, 5)))
    } else {
        (s::TensorType::Float32, None, None)
    };
    let x = b.typed_activation("x", &[1, 20, 3], ty, qa);
    let block = b.constant_i32("block", &[1], &[2]);
    let pads = b.constant_i32("pads", &[1, 2], &pad);
    let crops = b.constant_i32("crops", &[1, 2], &crop);
    let axis = b.constant_i32("axis", &[], &[1]);
    let s2b = b.typed_activation("s2b", &[2, phase, 3], ty, qa);
    let e = b.typed_activation("expand", &[2, 1, phase, 3], ty, qa);
    let c = b.typed_activation("conv", &[2, 1, phase - 2, 4], ty, qy);
    let sq = b.typed_activation("squeeze", &[2, phase - 2, 4], ty, qy);
    let y = b.typed_activation("y", &[1, out, 4], ty, qy);
    let (w, bias) = if int8 {
        let ws = [0.01f32, 0.02, 0.015, 0.03];
        let wv: Vec<u8> = (0..36)
            .map(|i: i32| (i * 37 % 255 - 127) as i8 as u8)
            .collect();
        let w = b.constant_bytes(
            "w",
            &[4, 1, 3, 3],
            s::TensorType::Int8,
            wv,
            Some(q(&ws, 0, 0)),
        );
        let bs: Vec<f32> = ws.iter().map(|s| s * 0.05).collect();
        let bv: Vec<u8> = [100i32, -250, 40, 7]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bias = b.constant_bytes("b", &[4], s::TensorType::Int32, bv, Some(q(&bs, 0, 0)));
        (w, bias)
    } else {
        (b.weights("w", &[4, 1, 3, 3]), b.weights("b", &[4]))
    };
    b.op(
        B::SpaceToBatchNd,
        &[x, block, pads],
        &[s2b],
        Some(O::SpaceToBatchNdOptions(Box::default())),
    );
    b.op(
        B::ExpandDims,
        &[s2b, axis],
        &[e],
        Some(O::ExpandDimsOptions(Box::default())),
    );
    b.op(B::Conv2d, &[e, w, bias], &[c], conv_opts());
    let sqo = s::SqueezeOptions {
        squeeze_dims: Some(vec![1]),
    };
    b.op(
        B::Squeeze,
        &[c],
        &[sq],
        Some(O::SqueezeOptions(Box::new(sqo))),
    );
    b.op(
        B::BatchToSpaceNd,
        &[sq, block, crops],
        &[y],
        Some(O::BatchToSpaceNdOptions(Box::default())),
    );
    (b.finish(&[x], &[y]), vec![1, 20, 3])
}

/// x [1, 9, 10, 4] -> S2B(block [2, 3], pads [[1, 2], [3, 2]]) -> DEPTHWISE 3x2 ->
/// B2S(crops [[0, 1], [1, 0]]) -> y [1, 7, 11, 4].
fn depthwise2d() -> (s::Model, Vec<usize>) {
    let mut b = ModelBuilder::new();
    let x = b.activation("x", &[1, 9, 10, 4]);
    let block = b.constant_i32("block", &[2], &[2, 3]);
    let pads = b.constant_i32("pads", &[2, 2], &[1, 2, 3, 2]);
    let crops = b.constant_i32("crops", &[2, 2], &[0, 1, 1, 0]);
    let s2b = b.activation("s2b", &[6, 6, 5, 4]);
    let c = b.activation("dw", &[6, 4, 4, 4]);
    let y = b.activation("y", &[1, 7, 11, 4]);
    let w = b.weights("w", &[1, 3, 2, 4]);
    let bias = b.weights("b", &[4]);
    b.op(
        B::SpaceToBatchNd,
        &[x, block, pads],
        &[s2b],
        Some(O::SpaceToBatchNdOptions(Box::default())),
    );
    let o = s::DepthwiseConv2DOptions {
        padding: s::Padding::Valid,
        stride_w: 1,
        stride_h: 1,
        depth_multiplier: 1,
        fused_activation_function: s::ActivationFunctionType::Relu,
        dilation_w_factor: 1,
        dilation_h_factor: 1,
    };
    b.op(
        B::DepthwiseConv2d,
        &[s2b, w, bias],
        &[c],
        Some(O::DepthwiseConv2DOptions(Box::new(o))),
    );
    b.op(
        B::BatchToSpaceNd,
        &[c, block, crops],
        &[y],
        Some(O::BatchToSpaceNdOptions(Box::default())),
    );
    (b.finish(&[x], &[y]), vec![1, 9, 10, 4])
}

fn input(shape: &[usize], int8: bool, seed: u64) -> Tensor {
    let mut dims = vec![3usize];
    dims.extend_from_slice(&shape[1..]);
    let n: usize = dims.iter().product();
    let mut st = seed | 1;
    let mut next = move || {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        (st >> 24) as i8
    };
    let data = if int8 {
        TensorData::I8((0..n).map(|_| next()).collect())
    } else {
        TensorData::F32((0..n).map(|_| next() as f32 / 64.0).collect())
    };
    Tensor::new(dims, data).unwrap()
}

#[test]
fn dilated_conv_chains_fold_and_match_litert() {
    if data_dir().is_none() || !oracle_available() {
        return;
    }
    let dir = scratch_dir("tflite_dilated_conv");
    let cases = [
        ("conv1d_f32", conv1d(false), false, vec![1, 2]),
        ("conv1d_i8", conv1d(true), true, vec![1, 2]),
        ("depthwise2d_f32", depthwise2d(), false, vec![2, 3]),
    ];
    for (k, (name, (m, shape), int8, dil)) in cases.into_iter().enumerate() {
        let bytes = edgeopt_tflite::finish_model(&m);
        let g = edgeopt_tflite::import(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        // One dilated conv, no space/batch shuffling left.
        let convs: Vec<&Op> = g
            .nodes
            .iter()
            .map(|n| &n.op)
            .filter(|o| matches!(o, Op::Conv(_)))
            .collect();
        assert_eq!(convs.len(), 1, "{name}");
        let Op::Conv(a) = convs[0] else {
            unreachable!()
        };
        assert_eq!(a.dilations, dil, "{name}");
        let path = dir.join(format!("{name}.tflite"));
        std::fs::write(&path, &bytes).unwrap();
        let x = input(&shape, int8, 0x51ed_2705 + k as u64);
        let (xin, yout) = (
            dir.join(format!("{name}_x.npy")),
            dir.join(format!("{name}_y.npy")),
        );
        edgeopt_npy::write(&xin, &x).unwrap();
        run_oracle("litert_run.py", &[&path, &xin, &yout]);
        let want = edgeopt_npy::read(&yout).unwrap();
        // Our runtime takes the 3 samples as one batch.
        let got = edgeopt_runtime::run(&g, std::slice::from_ref(&x))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got[0].len(), want.len(), "{name}");
        let (gv, wv) = (got[0].to_f32_vec(), want.to_f32_vec());
        let d = gv
            .iter()
            .zip(&wv)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("{name}: max |edgeopt - LiteRT| = {d:e}");
        assert!(if int8 { d == 0.0 } else { d <= 1e-5 }, "{name}: {d}");
    }
}

#[test]
fn space_to_batch_outside_the_pattern_is_refused_clearly() {
    // Crops larger than the paddings: not a plain padded dilated conv.
    let (m, _) = conv1d_with(false, [0, 2], [1, 1]);
    let err = edgeopt_tflite::import(&edgeopt_tflite::finish_model(&m))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SPACE_TO_BATCH_ND") && err.contains("dilated convolution"),
        "{err}"
    );
}
