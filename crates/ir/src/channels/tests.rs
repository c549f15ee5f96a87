use super::analyze::reshape_map;
use super::*;
use crate::op::{Activation, AutoPad, ConvAttrs, Layout, Op};
use crate::{DType, Dim, Tensor};

#[test]
fn flatten_nchw_is_blocks_nhwc_is_strided() {
    // NCHW [1, 3, 2, 2] -> [1, 12]: feature f comes from channel f / 4.
    let (axes, map) = reshape_map(&[1, 3, 2, 2], &[1], &[1, 12]).unwrap();
    assert_eq!(axes, vec![1]);
    assert_eq!(map, (0..12).map(|f| f / 4).collect::<Vec<_>>());
    // NHWC [1, 2, 2, 3] -> [1, 12]: feature f comes from channel f % 3.
    let (axes, map) = reshape_map(&[1, 2, 2, 3], &[3], &[1, 12]).unwrap();
    assert_eq!(axes, vec![1]);
    assert_eq!(map, (0..12).map(|f| f % 3).collect::<Vec<_>>());
}

#[test]
fn shuffle_reshape_splits_the_channel_axis() {
    // [1, 6, 2, 2] -> [1, 2, 3, 2, 2] (ShuffleNet's first reshape): two channel axes.
    let (axes, map) = reshape_map(&[1, 6, 2, 2], &[1], &[1, 2, 3, 2, 2]).unwrap();
    assert_eq!(axes, vec![1, 2]);
    assert_eq!(map, (0..6).collect::<Vec<_>>());
    // A single channel has no digits in the flat index: no output axis carries it, and
    // the reshape is refused (its readers then block the channel).
    assert!(reshape_map(&[1, 1, 2, 2], &[1], &[4]).is_err());
}

fn conv(group: usize) -> Op {
    Op::Conv(ConvAttrs {
        layout: Layout::Nchw,
        kernel_shape: vec![],
        strides: vec![],
        dilations: vec![],
        pads: vec![0; 4],
        auto_pad: AutoPad::NotSet,
        group,
        activation: Activation::None,
        hybrid: None,
    })
}

/// x [1, 2, 4, 4] -> conv1 (3 ch) -> y -> conv2 (2 ch) -> out; with `shape_reader`,
/// also Shape(y) -> s (an op the analysis does not map: the output depends on the
/// channel count).
fn two_convs(shape_reader: bool) -> Graph {
    let mut g = Graph::new("t");
    let x = g.add_value(
        "x",
        DType::F32,
        Some([1, 2, 4, 4].iter().map(|&d| Dim::Fixed(d)).collect()),
    );
    g.inputs.push(x);
    let w1 = g.add_const(
        "w1",
        Tensor::from_f32(vec![3, 2, 1, 1], vec![0.5; 6]).unwrap(),
    );
    let w2 = g.add_const(
        "w2",
        Tensor::from_f32(vec![2, 3, 1, 1], vec![0.25; 6]).unwrap(),
    );
    let y = g.add_value("y", DType::F32, None);
    let out = g.add_value("out", DType::F32, None);
    g.add_node("conv1", conv(1), vec![Some(x), Some(w1)], vec![y]);
    g.add_node("conv2", conv(1), vec![Some(y), Some(w2)], vec![out]);
    g.outputs.push(out);
    if shape_reader {
        let s = g.add_value("s", DType::I64, None);
        g.add_node("shape", Op::Shape, vec![Some(y)], vec![s]);
        g.outputs.push(s);
    }
    crate::shape::annotate(&mut g).unwrap();
    g
}

#[test]
fn unmapped_reader_blocks_with_its_reason() {
    let g = two_convs(false);
    let an = analyze(&g).unwrap();
    let grp = an.groups.iter().find(|grp| grp.len() == 3).unwrap();
    assert!(grp.is_prunable());
    let p = prune_channels(&g, grp, &[0, 2]).unwrap();
    assert_eq!(
        p.values[p.find_value("w2").unwrap()]
            .data
            .as_ref()
            .unwrap()
            .shape,
        vec![2, 2, 1, 1]
    );

    let g = two_convs(true);
    let an = analyze(&g).unwrap();
    let grp = an.groups.iter().find(|grp| grp.len() == 3).unwrap();
    assert!(!grp.is_prunable());
    assert!(
        grp.blocked.iter().any(|r| r.contains("Shape 'shape'")),
        "{:?}",
        grp.blocked
    );
    let err = prune_channels(&g, grp, &[0, 2]).unwrap_err().to_string();
    assert!(
        err.contains("not prunable") && err.contains("Shape"),
        "{err}"
    );
}
