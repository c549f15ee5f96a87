//! Unit tests of the trickier shape rules.

use super::*;
use crate::graph::Node;

fn fact<'a>(dtype: DType, shape: &'a [usize]) -> Option<InputFact<'a>> {
    Some(InputFact {
        dtype,
        shape,
        value: None,
    })
}

fn node(op: Op) -> Node {
    Node {
        name: "n".into(),
        op,
        inputs: vec![],
        outputs: vec![],
    }
}

fn shape_of(op: Op, inputs: &[Option<InputFact>]) -> Result<Vec<usize>, String> {
    infer(&node(op), inputs, &[]).map(|o| o[0].shape.clone())
}

fn conv(
    layout: Layout,
    strides: &[usize],
    dil: &[usize],
    pads: &[usize],
    auto_pad: AutoPad,
    group: usize,
) -> ConvAttrs {
    ConvAttrs {
        layout,
        kernel_shape: vec![],
        strides: strides.to_vec(),
        dilations: dil.to_vec(),
        pads: pads.to_vec(),
        auto_pad,
        group,
        activation: Activation::None,
        hybrid: None,
    }
}

#[test]
fn conv_shapes() {
    let f = DType::F32;
    // ONNX test_conv_with_strides_padding: 7x5, k3, s2, p1 -> 4x3
    let a = conv(
        Layout::Nchw,
        &[2, 2],
        &[],
        &[1, 1, 1, 1],
        AutoPad::NotSet,
        1,
    );
    assert_eq!(
        shape_of(
            Op::Conv(a),
            &[fact(f, &[1, 1, 7, 5]), fact(f, &[1, 1, 3, 3])]
        )
        .unwrap(),
        [1, 1, 4, 3]
    );
    // SAME_LOWER / SAME_UPPER: ceil(in / stride)
    let a = conv(Layout::Nchw, &[2, 2], &[], &[], AutoPad::SameLower, 1);
    assert_eq!(
        shape_of(
            Op::Conv(a),
            &[fact(f, &[1, 1, 5, 5]), fact(f, &[1, 1, 3, 3])]
        )
        .unwrap(),
        [1, 1, 3, 3]
    );
    // NHWC depthwise with dilation 2: 10 - (2*2+1) + 1 = 6
    let a = conv(Layout::Nhwc, &[], &[2, 2], &[], AutoPad::Valid, 8);
    assert_eq!(
        shape_of(
            Op::Conv(a),
            &[fact(f, &[2, 10, 10, 8]), fact(f, &[16, 3, 3, 1])]
        )
        .unwrap(),
        [2, 6, 6, 16]
    );
    // 3-D and 1-D
    let a = conv(Layout::Nchw, &[1, 2, 3], &[], &[], AutoPad::NotSet, 1);
    assert_eq!(
        shape_of(
            Op::Conv(a),
            &[fact(f, &[1, 2, 4, 9, 9]), fact(f, &[5, 2, 1, 3, 3])]
        )
        .unwrap(),
        [1, 5, 4, 4, 3]
    );
    let a = conv(Layout::Nhwc, &[], &[], &[2, 0], AutoPad::NotSet, 1);
    assert_eq!(
        shape_of(Op::Conv(a), &[fact(f, &[1, 9, 3]), fact(f, &[4, 3, 3])]).unwrap(),
        [1, 9, 4]
    );
    // group mismatch names both numbers
    let a = conv(Layout::Nchw, &[], &[], &[], AutoPad::NotSet, 1);
    let e = shape_of(
        Op::Conv(a),
        &[fact(f, &[1, 3, 8, 8]), fact(f, &[2, 4, 3, 3])],
    )
    .unwrap_err();
    assert!(e.contains("3 channels per group, weights expect 4"), "{e}");
    // kernel larger than padded input
    let a = conv(Layout::Nchw, &[], &[], &[], AutoPad::NotSet, 1);
    assert!(shape_of(
        Op::Conv(a),
        &[fact(f, &[1, 1, 2, 2]), fact(f, &[1, 1, 3, 3])]
    )
    .is_err());
}

#[test]
fn same_pads_split() {
    // in 5, k 4, s 1 -> total pad 3: upper puts the extra one at the end
    let w = window(&[5], &[4], &[], &[], &[], AutoPad::SameUpper, false).unwrap();
    assert_eq!((w.pads_begin[0], w.pads_end[0], w.output[0]), (1, 2, 5));
    let w = window(&[5], &[4], &[], &[], &[], AutoPad::SameLower, false).unwrap();
    assert_eq!((w.pads_begin[0], w.pads_end[0], w.output[0]), (2, 1, 5));
}

#[test]
fn pool_ceil_mode() {
    let p = |k: usize, s: usize, pads: &[usize], ceil| PoolAttrs {
        layout: Layout::Nchw,
        kernel_shape: vec![k, k],
        strides: vec![s, s],
        dilations: vec![],
        pads: pads.to_vec(),
        auto_pad: AutoPad::NotSet,
        ceil_mode: ceil,
        count_include_pad: false,
        activation: Activation::None,
    };
    let f = DType::F32;
    // ONNX test_maxpool_2d_ceil: 4x4, k3, s2 -> 2x2 (floor would give 1x1)
    assert_eq!(
        shape_of(Op::MaxPool(p(3, 2, &[], true)), &[fact(f, &[1, 1, 4, 4])]).unwrap(),
        [1, 1, 2, 2]
    );
    assert_eq!(
        shape_of(Op::MaxPool(p(3, 2, &[], false)), &[fact(f, &[1, 1, 4, 4])]).unwrap(),
        [1, 1, 1, 1]
    );
    // last window would start in the end padding: dropped (2x2, k1, s2 -> 1x1)
    assert_eq!(
        shape_of(Op::MaxPool(p(1, 2, &[], true)), &[fact(f, &[1, 1, 2, 2])]).unwrap(),
        [1, 1, 1, 1]
    );
}

#[test]
fn conv_transpose_shapes() {
    let f = DType::F32;
    let ct = |strides: &[usize],
              pads: &[usize],
              auto_pad,
              out_pad: &[usize],
              out_shape: Option<Vec<usize>>| {
        Op::ConvTranspose(ConvTransposeAttrs {
            conv: conv(Layout::Nchw, strides, &[], pads, auto_pad, 1),
            output_padding: out_pad.to_vec(),
            output_shape: out_shape,
        })
    };
    // ONNX test_convtranspose: 3x3 in, k3 -> 5x5
    assert_eq!(
        shape_of(
            ct(&[], &[], AutoPad::NotSet, &[], None),
            &[fact(f, &[1, 1, 3, 3]), fact(f, &[1, 2, 3, 3])]
        )
        .unwrap(),
        [1, 2, 5, 5]
    );
    // test_convtranspose_pad: s3,2 out_pad 1,1 -> 10x8
    assert_eq!(
        shape_of(
            ct(&[3, 2], &[], AutoPad::NotSet, &[1, 1], None),
            &[fact(f, &[1, 1, 3, 3]), fact(f, &[1, 2, 3, 3])]
        )
        .unwrap(),
        [1, 2, 10, 8]
    );
    // test_convtranspose_output_shape: explicit 10x8
    assert_eq!(
        shape_of(
            ct(&[3, 2], &[], AutoPad::NotSet, &[], Some(vec![10, 8])),
            &[fact(f, &[1, 1, 3, 3]), fact(f, &[1, 2, 3, 3])]
        )
        .unwrap(),
        [1, 2, 10, 8]
    );
    // auto_pad SAME: in * stride
    assert_eq!(
        shape_of(
            ct(&[2, 2], &[], AutoPad::SameUpper, &[], None),
            &[fact(f, &[1, 1, 3, 3]), fact(f, &[1, 2, 3, 3])]
        )
        .unwrap(),
        [1, 2, 6, 6]
    );
}

#[test]
fn matmul_and_fc() {
    assert_eq!(matmul_shape(&[3], &[3]).unwrap(), Vec::<usize>::new());
    assert_eq!(
        matmul_shape(&[2, 1, 4, 3], &[5, 3, 6]).unwrap(),
        [2, 5, 4, 6]
    );
    assert_eq!(matmul_shape(&[4], &[2, 4, 6]).unwrap(), [2, 6]);
    assert_eq!(matmul_shape(&[2, 3, 4], &[4]).unwrap(), [2, 3]);
    assert!(matmul_shape(&[2, 3], &[4, 5]).is_err());
    let f = DType::F32;
    let fc = |keep| Op::FullyConnected {
        activation: Activation::None,
        keep_num_dims: keep,
        hybrid: None,
    };
    assert_eq!(
        shape_of(fc(false), &[fact(f, &[2, 4, 4, 16]), fact(f, &[10, 64])]).unwrap(),
        [8, 10]
    );
    assert_eq!(
        shape_of(fc(true), &[fact(f, &[2, 3, 64]), fact(f, &[10, 64])]).unwrap(),
        [2, 3, 10]
    );
}

#[test]
fn reshape_rules() {
    assert_eq!(reshape_shape(&[2, 3, 4], &[0, -1], false).unwrap(), [2, 12]);
    assert_eq!(
        reshape_shape(&[2, 3, 4], &[4, 0, 2], false).unwrap(),
        [4, 3, 2]
    );
    assert_eq!(
        reshape_shape(&[0, 3, 4], &[3, 4, 0], true).unwrap(),
        [3, 4, 0]
    );
    assert!(reshape_shape(&[2, 3, 4], &[5, -1], false).is_err());
    assert!(reshape_shape(&[2, 3, 4], &[-1, -1], false).is_err());
}

#[test]
fn shape_gather_concat_reshape_chain() {
    let i64t = |v: Vec<i64>| Tensor {
        shape: vec![v.len()],
        data: TensorData::I64(v),
    };
    let x_shape = [2usize, 3, 4, 5];
    let sh = infer(&node(Op::Shape), &[fact(DType::F32, &x_shape)], &[])
        .unwrap()
        .remove(0);
    let idx = Tensor {
        shape: vec![],
        data: TensorData::I64(vec![0]),
    };
    let g = infer(
        &node(Op::Gather { axis: 0 }),
        &[
            Some(InputFact {
                dtype: DType::I64,
                shape: &sh.shape,
                value: sh.value.as_ref(),
            }),
            Some(InputFact {
                dtype: DType::I64,
                shape: &[],
                value: Some(&idx),
            }),
        ],
        &[],
    )
    .unwrap()
    .remove(0);
    assert_eq!(g.shape, Vec::<usize>::new());
    let u = infer(
        &node(Op::Unsqueeze { axes: vec![0] }),
        &[Some(InputFact {
            dtype: DType::I64,
            shape: &g.shape,
            value: g.value.as_ref(),
        })],
        &[],
    )
    .unwrap()
    .remove(0);
    let minus1 = i64t(vec![-1]);
    let c = infer(
        &node(Op::Concat {
            axis: 0,
            activation: Activation::None,
        }),
        &[
            Some(InputFact {
                dtype: DType::I64,
                shape: &u.shape,
                value: u.value.as_ref(),
            }),
            Some(InputFact {
                dtype: DType::I64,
                shape: &[1],
                value: Some(&minus1),
            }),
        ],
        &[],
    )
    .unwrap()
    .remove(0);
    assert_eq!(c.value.as_ref().unwrap().to_i64_vec(), [2, -1]);
    let r = infer(
        &node(Op::Reshape { allowzero: false }),
        &[
            fact(DType::F32, &x_shape),
            Some(InputFact {
                dtype: DType::I64,
                shape: &c.shape,
                value: c.value.as_ref(),
            }),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(r[0].shape, [2, 60]);
    // Binary on small i64 values: 60 / 2
    let two = Tensor {
        shape: vec![],
        data: TensorData::I64(vec![2]),
    };
    let d = infer(
        &node(Op::Binary {
            kind: BinaryKind::Div,
            activation: Activation::None,
        }),
        &[
            Some(InputFact {
                dtype: DType::I64,
                shape: &c.shape,
                value: c.value.as_ref(),
            }),
            Some(InputFact {
                dtype: DType::I64,
                shape: &[],
                value: Some(&two),
            }),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(d[0].value.as_ref().unwrap().to_i64_vec(), [1, 0]);
}

#[test]
fn squeeze_unsqueeze_negative_axes() {
    let f = DType::F32;
    assert_eq!(
        shape_of(Op::Unsqueeze { axes: vec![-1, 0] }, &[fact(f, &[3, 4])]).unwrap(),
        [1, 3, 4, 1]
    );
    assert_eq!(
        shape_of(Op::Squeeze { axes: vec![-2] }, &[fact(f, &[3, 1, 4])]).unwrap(),
        [3, 4]
    );
    assert_eq!(
        shape_of(Op::Squeeze { axes: vec![] }, &[fact(f, &[1, 3, 1])]).unwrap(),
        [3]
    );
    assert!(shape_of(Op::Squeeze { axes: vec![0] }, &[fact(f, &[3, 1])]).is_err());
}

#[test]
fn pad_reduce_resize() {
    let f = DType::F32;
    let pad = |p: Vec<i64>| Op::Pad {
        mode: PadMode::Constant,
        pads: p,
        value: 0.0,
    };
    assert_eq!(
        shape_of(pad(vec![0, 1, 0, -2]), &[fact(f, &[3, 5])]).unwrap(),
        [3, 4]
    );
    assert!(shape_of(pad(vec![0, -4, 0, -2]), &[fact(f, &[3, 5])]).is_err());
    let red = |axes: Option<Vec<i64>>, keep, noop| Op::Reduce {
        kind: ReduceKind::Mean,
        axes,
        keepdims: keep,
        noop_with_empty_axes: noop,
    };
    assert_eq!(
        shape_of(red(Some(vec![-1, 1]), true, false), &[fact(f, &[2, 3, 4])]).unwrap(),
        [2, 1, 1]
    );
    assert_eq!(
        shape_of(red(None, false, false), &[fact(f, &[2, 3, 4])]).unwrap(),
        Vec::<usize>::new()
    );
    assert_eq!(
        shape_of(red(None, false, true), &[fact(f, &[2, 3, 4])]).unwrap(),
        [2, 3, 4]
    );
    let rz = |scales: Option<Vec<f32>>, sizes: Option<Vec<usize>>, axes: Option<Vec<i64>>, pol| {
        ResizeAttrs {
            mode: ResizeMode::Nearest,
            coord: CoordTransform::HalfPixel,
            nearest_mode: NearestMode::RoundPreferFloor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            keep_aspect_ratio_policy: pol,
            axes,
            scales,
            sizes,
            roi: None,
        }
    };
    // floor(in * scale): 4 * 0.6 = 2.4 -> 2
    let (s, _) = resize_geometry(
        &rz(
            Some(vec![1.0, 1.0, 0.6, 0.6]),
            None,
            None,
            AspectRatioPolicy::Stretch,
        ),
        &[1, 1, 2, 4],
    )
    .unwrap();
    assert_eq!(s, [1, 1, 1, 2]);
    // ONNX test_resize_upsample_sizes_nearest_not_larger: 2x2 -> sizes 7x8 -> 7x7
    let (s, sc) = resize_geometry(
        &rz(
            None,
            Some(vec![7, 8]),
            Some(vec![2, 3]),
            AspectRatioPolicy::NotLarger,
        ),
        &[1, 1, 2, 2],
    )
    .unwrap();
    assert_eq!(s, [1, 1, 7, 7]);
    assert_eq!(sc[2], 3.5);
    let (s, _) = resize_geometry(
        &rz(
            None,
            Some(vec![7, 8]),
            Some(vec![2, 3]),
            AspectRatioPolicy::NotSmaller,
        ),
        &[1, 1, 2, 2],
    )
    .unwrap();
    assert_eq!(s, [1, 1, 8, 8]);
}

#[test]
fn quantized_dtypes() {
    let x = [1usize, 4];
    let q = Op::QuantizeLinear {
        axis: 1,
        block_size: 0,
        saturate: true,
        output_dtype: DType::U8,
    };
    let o = infer(
        &node(q.clone()),
        &[
            fact(DType::F32, &x),
            fact(DType::F32, &[]),
            fact(DType::I8, &[]),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(o[0].dtype, DType::I8);
    let o = infer(
        &node(q),
        &[fact(DType::F32, &x), fact(DType::F32, &[])],
        &[],
    )
    .unwrap();
    assert_eq!(o[0].dtype, DType::U8);
    assert!(infer(&node(Op::Quantize), &[fact(DType::F32, &x)], &[]).is_err());
    let o = infer(
        &node(Op::Quantize),
        &[fact(DType::F32, &x)],
        &[Some(DType::I16)],
    )
    .unwrap();
    assert_eq!(o[0].dtype, DType::I16);
    let ci = Op::ConvInteger(conv(Layout::Nchw, &[], &[], &[], AutoPad::NotSet, 1));
    let o = infer(
        &node(ci),
        &[
            fact(DType::U8, &[1, 1, 3, 3]),
            fact(DType::U8, &[1, 1, 2, 2]),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        (o[0].dtype, o[0].shape.clone()),
        (DType::I32, vec![1, 1, 2, 2])
    );
}

#[test]
fn absurd_shapes_are_errors() {
    let f = DType::F32;
    let e = shape_of(
        Op::Unsqueeze { axes: vec![0] },
        &[fact(f, &[1 << 40, 1 << 30])],
    )
    .unwrap_err();
    assert!(e.contains("limit") || e.contains("overflow"), "{e}");
}

fn ss(begin: &[i64], end: &[i64], strides: &[i64], masks: [u32; 5]) -> StridedSliceAttrs {
    StridedSliceAttrs {
        begin: begin.to_vec(),
        end: end.to_vec(),
        strides: strides.to_vec(),
        begin_mask: masks[0],
        end_mask: masks[1],
        ellipsis_mask: masks[2],
        new_axis_mask: masks[3],
        shrink_axis_mask: masks[4],
        offset: false,
    }
}

/// Output shape and flat source indices of a strided slice (numpy semantics).
fn slice_of(a: &StridedSliceAttrs, shape: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let p = strided_slice_plan(a, shape).unwrap();
    let mut src = Vec::new();
    p.for_each_source(|i| src.push(i));
    (p.out_shape, src)
}

#[test]
fn strided_slice_masks() {
    // x[0] of a shape vector (shrink): a scalar, as Keras' batch lookup.
    assert_eq!(
        slice_of(&ss(&[0], &[1], &[1], [0, 0, 0, 0, 1]), &[4]),
        (vec![], vec![0])
    );
    // x[:, 64:] of [2, 96] (begin_mask on axis 0, end_mask on both).
    let (s, src) = slice_of(&ss(&[0, 64], &[0, 0], &[1, 1], [1, 3, 0, 0, 0]), &[2, 96]);
    assert_eq!(s, vec![2, 32]);
    assert_eq!((src[0], src[31], src[32]), (64, 95, 160));
    // x[..., 1:3] of [2, 3, 4].
    let (s, src) = slice_of(&ss(&[0, 1], &[0, 3], &[1, 1], [0, 0, 1, 0, 0]), &[2, 3, 4]);
    assert_eq!(s, vec![2, 3, 2]);
    assert_eq!(&src[..4], &[1, 2, 5, 6]);
    // x[None, :] of [3].
    assert_eq!(
        slice_of(&ss(&[0, 0], &[0, 0], &[1, 1], [2, 2, 0, 1, 0]), &[3]),
        (vec![1, 3], vec![0, 1, 2])
    );
    // x[::-2] and x[-1:0:-1] of [5]; x[-2] (shrink with a negative index).
    assert_eq!(
        slice_of(&ss(&[0], &[0], &[-2], [1, 1, 0, 0, 0]), &[5]),
        (vec![3], vec![4, 2, 0])
    );
    assert_eq!(
        slice_of(&ss(&[-1], &[0], &[-1], [0, 0, 0, 0, 0]), &[5]),
        (vec![4], vec![4, 3, 2, 1])
    );
    assert_eq!(
        slice_of(&ss(&[-2], &[0], &[1], [0, 0, 0, 0, 1]), &[5]),
        (vec![], vec![3])
    );
    // Out-of-range ends clamp; an empty range gives an empty axis.
    assert_eq!(
        slice_of(&ss(&[1], &[100], &[2], [0, 0, 0, 0, 0]), &[5]),
        (vec![2], vec![1, 3])
    );
    assert_eq!(slice_of(&ss(&[3], &[1], &[1], [0; 5]), &[5]).0, vec![0]);
    // offset: end is relative to begin.
    let mut a = ss(&[1], &[2], &[1], [0; 5]);
    a.offset = true;
    assert_eq!(slice_of(&a, &[5]), (vec![2], vec![1, 2]));
    // Errors, not panics.
    assert!(strided_slice_plan(&ss(&[0], &[1], &[0], [0; 5]), &[5]).is_err());
    assert!(strided_slice_plan(&ss(&[7], &[8], &[1], [0, 0, 0, 0, 1]), &[5]).is_err());
    assert!(strided_slice_plan(&ss(&[0, 0, 0], &[1, 1, 1], &[1, 1, 1], [0; 5]), &[5]).is_err());
}

#[test]
fn tile_shape() {
    let t = Op::Tile {
        repeats: vec![1, 2, 3],
    };
    assert_eq!(
        shape_of(t.clone(), &[fact(DType::I8, &[2, 1, 2])]),
        Ok(vec![2, 2, 6])
    );
    assert!(shape_of(t, &[fact(DType::I8, &[2, 2])]).is_err());
    assert_eq!(tile_source_index(&[2, 3], &[3, 4]), 3 + 1);
}
