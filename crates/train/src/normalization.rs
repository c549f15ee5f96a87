//! The input normalization a model trains on, embedded into the exported graph (so it
//! takes raw inputs) and recovered from it (to fine-tune on the same normalization).

use crate::data::Normalize;
use anyhow::Context;
use edgeopt_ir::{Activation, BinaryKind, Graph, Op, Tensor};

/// Inserts the input normalization into the graph: `x * (scale / std) - mean / std`
/// per channel, so the exported model takes raw inputs.
pub fn embed_normalization(
    g: &mut Graph,
    norm: &Normalize,
    channel_axis: Option<usize>,
) -> anyhow::Result<()> {
    if *norm == Normalize::identity() {
        return Ok(());
    }
    let input = *g.inputs.first().context("model has no input")?;
    let rank = g.values[input].shape.as_ref().map_or(2, |s| s.len());
    let c = norm.mean.len().max(norm.std.len());
    let mul: Vec<f32> = (0..c)
        .map(|i| norm.scale / norm.std[i.min(norm.std.len() - 1)])
        .collect();
    let add: Vec<f32> = (0..c)
        .map(|i| -norm.mean[i.min(norm.mean.len() - 1)] / norm.std[i.min(norm.std.len() - 1)])
        .collect();
    // Broadcast shape: [C, 1, ...] after the batch dim at the channel axis.
    let mut shape = vec![1usize; rank.saturating_sub(1)];
    if c > 1 {
        let ax = channel_axis.context("per-channel normalization needs a channel axis")?;
        shape[ax] = c;
    }
    let raw_name = format!("{}_raw", g.values[input].name);
    let raw = g.add_value(
        raw_name,
        g.values[input].dtype,
        g.values[input].shape.clone(),
    );
    let mid_shape = g.values[input].shape.clone();
    let mid = g.add_value(
        format!("{}_scaled", g.values[input].name),
        g.values[input].dtype,
        mid_shape,
    );
    let wm = g.add_const("input_norm.mul", Tensor::from_f32(shape.clone(), mul)?);
    let wa = g.add_const("input_norm.add", Tensor::from_f32(shape, add)?);
    let bin = |kind| Op::Binary {
        kind,
        activation: Activation::None,
    };
    g.add_node(
        "input_norm_mul",
        bin(BinaryKind::Mul),
        vec![Some(raw), Some(wm)],
        vec![mid],
    );
    g.add_node(
        "input_norm_add",
        bin(BinaryKind::Add),
        vec![Some(mid), Some(wa)],
        vec![input],
    );
    // The new nodes must run first: rotate them to the front.
    let k = g.nodes.len();
    g.nodes.rotate_right(2);
    debug_assert_eq!(g.nodes.len(), k);
    g.inputs[0] = raw;
    g.validate()?;
    Ok(())
}

/// Removes a leading `input_norm_mul` / `input_norm_add` pair written by
/// [`embed_normalization`].
pub fn strip_embedded_normalization(g: &mut Graph) -> Option<Normalize> {
    let m = g.nodes.iter().position(|n| n.name == "input_norm_mul")?;
    let ad = g.nodes.iter().position(|n| n.name == "input_norm_add")?;
    let raw = g.nodes[m].input(0);
    let out = g.nodes[ad].outputs.first().copied();
    // x_norm = x * mul + add  ==  (x - mean) / std  with std = 1/mul, mean = -add/mul.
    let mul = g.const_data(g.nodes[m].input(1)?)?.to_f32_vec();
    let add = g.const_data(g.nodes[ad].input(1)?)?.to_f32_vec();
    if mul.len() != add.len() || mul.iter().any(|&v| v == 0.0 || !v.is_finite()) {
        return None;
    }
    let norm = Normalize {
        scale: 1.0,
        mean: add.iter().zip(&mul).map(|(a, m)| -a / m).collect(),
        std: mul.iter().map(|m| 1.0 / m).collect(),
    };
    if let (Some(raw), Some(out)) = (raw, out) {
        if g.inputs.first() == Some(&raw) {
            g.inputs[0] = out;
            let (a, b) = (m.max(ad), m.min(ad));
            g.nodes.remove(a);
            g.nodes.remove(b);
            // The new input takes the raw input's declared shape (with its symbolic
            // batch; importers annotate intermediates at batch 1).
            g.values[out].shape = g.values[raw].shape.clone();
            // Drop the raw input and the normalization constants.
            crate::model::compact(g);
            return Some(norm);
        }
    }
    None
}
