//! Data-free and data-aided fixes for per-channel weight quantization error
//! (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
//! Correction", ICCV 2019):
//!
//! - [`cross_layer_equalize`]: for consecutive layers `W2 · act(W1 x + b1)` with a
//!   positively homogeneous `act` (none or ReLU), scale output channel i of layer 1 by
//!   `1/s_i` and input channel i of layer 2 by `s_i`, `s_i = sqrt(r1_i / r2_i)` (r =
//!   per-channel absolute max), which equalizes the channel ranges. This is what
//!   depthwise-separable networks (MobileNet, DS-CNN) need, whose depthwise channels
//!   have ranges orders of magnitude apart.
//! - [`correct_bias`]: the expected output shift that weight quantization causes,
//!   `(W_q − W) · E[x]` per output channel (E[x] per input channel from calibration),
//!   is subtracted from the bias.

use super::prepare::weighted_nodes;
use super::util::fresh_name;
use super::weights::quantize as quantize_weights;
use super::{Observed, QuantPlan, WeightFormat};
use crate::Result;
use edgeopt_ir::{Activation, Graph, Layout, Op, Tensor, ValueId};

/// How a weighted node's input channel `c` maps to weight elements.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Conv NHWC, group 1, weights [M, *k, C].
    Dense { c: usize },
    /// Depthwise NHWC: weights [C*mult, *k, 1], group C.
    Depthwise { c: usize, mult: usize },
    /// FullyConnected: weights [N, K].
    Fc { k: usize },
}

fn kind(g: &Graph, ni: usize) -> Option<Kind> {
    let n = &g.nodes[ni];
    let w = g.values[n.input(1)?].data.as_ref()?;
    match &n.op {
        Op::Conv(a) if a.layout == Layout::Nhwc => {
            let last = *w.shape.last()?;
            if a.group == 1 {
                Some(Kind::Dense { c: last })
            } else if last == 1 && w.shape[0] % a.group == 0 {
                Some(Kind::Depthwise {
                    c: a.group,
                    mult: w.shape[0] / a.group,
                })
            } else {
                None
            }
        }
        Op::FullyConnected { .. } if w.rank() == 2 => Some(Kind::Fc { k: w.shape[1] }),
        Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::Gemm { .. }
        | Op::MatMul
        | Op::FullyConnected { .. }
        | Op::Binary { .. }
        | Op::Compare(_)
        | Op::Where
        | Op::Unary(_)
        | Op::Clip { .. }
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::GlobalAveragePool
        | Op::BatchNorm { .. }
        | Op::LayerNorm { .. }
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Concat { .. }
        | Op::StridedSlice(_)
        | Op::Tile { .. }
        | Op::Fill
        | Op::Gather { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Lstm { .. }
        | Op::TopK { .. }
        | Op::Gru { .. }
        | Op::Reduce { .. }
        | Op::Resize(_)
        | Op::Identity
        | Op::Shape
        | Op::Cast { .. }
        | Op::QuantizeLinear { .. }
        | Op::DequantizeLinear { .. }
        | Op::QLinearConv(_)
        | Op::QLinearMatMul
        | Op::ConvInteger(_)
        | Op::MatMulInteger
        | Op::Quantize
        | Op::Dequantize => None,
    }
}

fn activation(op: &Op) -> Activation {
    // Conv and FullyConnected only: the layers equalization pairs.
    if matches!(op, Op::Conv(_) | Op::FullyConnected { .. }) {
        op.fused_activation().unwrap_or(Activation::None)
    } else {
        Activation::None
    }
}

/// For input channel `c` of a weighted node, the indices of its weight elements.
fn input_channel_elems(k: Kind, shape: &[usize], c: usize) -> Vec<usize> {
    let n: usize = shape.iter().product();
    match k {
        Kind::Dense { c: cc } | Kind::Fc { k: cc } => (c..n).step_by(cc).collect(),
        Kind::Depthwise { mult, .. } => {
            let per = n / shape[0];
            (c * mult * per..(c + 1) * mult * per).collect()
        }
    }
}

fn channels_in(k: Kind) -> usize {
    match k {
        Kind::Dense { c } | Kind::Depthwise { c, .. } => c,
        Kind::Fc { k } => k,
    }
}

/// Equalizes every eligible pair of consecutive weighted layers (a few sweeps, as the
/// scales of a layer shared between two pairs interact). Returns the number of pairs.
pub fn cross_layer_equalize(g: &mut Graph) -> Result<usize> {
    let producers = g.producers();
    let consumers = g.consumers();
    let outputs: Vec<ValueId> = g.outputs.clone();
    let mut pairs = Vec::new();
    for (n2, _) in weighted_nodes(g) {
        let Some(k2) = kind(g, n2) else { continue };
        let Some(x) = g.nodes[n2].input(0) else {
            continue;
        };
        let Some(n1) = producers[x] else { continue };
        if consumers[x].len() != 1 || outputs.contains(&x) {
            continue;
        }
        if !matches!(
            activation(&g.nodes[n1].op),
            Activation::None | Activation::Relu
        ) {
            continue;
        }
        let Some(k1) = kind(g, n1) else { continue };
        if matches!(k1, Kind::Depthwise { mult, .. } if mult != 1) {
            continue;
        }
        let m1 = g.values[g.nodes[n1].input(1).expect("weighted")]
            .data
            .as_ref()
            .map_or(0, |t| t.shape[0]);
        if m1 != channels_in(k2) {
            continue;
        }
        pairs.push((n1, n2, k2));
    }
    for _sweep in 0..4 {
        for &(n1, n2, k2) in &pairs {
            let w1id = g.nodes[n1].input(1).expect("weighted");
            let w2id = g.nodes[n2].input(1).expect("weighted");
            let mut w1 = g.values[w1id].data.clone().expect("const");
            let mut w2 = g.values[w2id].data.clone().expect("const");
            let m = w1.shape[0];
            let per1 = w1.len() / m;
            let v1 = w1.as_f32_mut()?;
            let shape2 = w2.shape.clone();
            let v2 = w2.as_f32_mut()?;
            let mut scales = vec![1f32; m];
            for (c, s) in scales.iter_mut().enumerate() {
                let r1 = v1[c * per1..(c + 1) * per1]
                    .iter()
                    .fold(0f32, |a, v| a.max(v.abs()));
                let idx = input_channel_elems(k2, &shape2, c);
                let r2 = idx.iter().fold(0f32, |a, &i| a.max(v2[i].abs()));
                if r1 > 0.0 && r2 > 0.0 {
                    *s = (r1 / r2).sqrt();
                }
                for v in &mut v1[c * per1..(c + 1) * per1] {
                    *v /= *s;
                }
                for i in idx {
                    v2[i] *= *s;
                }
            }
            g.values[w1id].data = Some(w1);
            g.values[w2id].data = Some(w2);
            if let Some(b) = g.nodes[n1].input(2) {
                if let Some(t) = g.values[b].data.as_mut() {
                    for (v, s) in t.as_f32_mut()?.iter_mut().zip(&scales) {
                        *v /= s;
                    }
                }
            }
        }
    }
    Ok(pairs.len())
}

/// Subtracts the expected weight-quantization output shift from each integer-weighted
/// layer's bias (creating a bias where there was none).
pub fn correct_bias(g: &mut Graph, plan: &QuantPlan, obs: &Observed) -> Result<usize> {
    let mut corrected = 0;
    for (ni, w) in weighted_nodes(g) {
        let spec = plan
            .weights
            .get(&g.values[w].name)
            .copied()
            .unwrap_or(super::DEFAULT_WEIGHT);
        if matches!(spec.format, WeightFormat::Fp16 | WeightFormat::Float) {
            continue;
        }
        let Some(k) = kind(g, ni) else { continue };
        let Some(x) = g.nodes[ni].input(0) else {
            continue;
        };
        let Some(mean) = obs.channel_mean.get(&g.values[x].name) else {
            continue;
        };
        if mean.len() != channels_in(k) {
            continue;
        }
        let wt = g.values[w].data.clone().expect("const");
        let m = wt.shape[0];
        let q = quantize_weights(wt.as_f32()?, m, spec)?;
        let deq = q.dequantize(if q.scales.len() == 1 { 1 } else { m });
        let wv = wt.as_f32()?;
        let per = wv.len() / m;
        let mut shift = vec![0f64; m];
        for (o, s) in shift.iter_mut().enumerate() {
            for j in 0..per {
                let i = o * per + j;
                let c = match k {
                    Kind::Dense { c } | Kind::Fc { k: c } => j % c,
                    Kind::Depthwise { mult, .. } => o / mult,
                };
                *s += (deq[i] - wv[i]) as f64 * mean[c];
            }
        }
        let old: Vec<f32> = match g.nodes[ni].input(2).and_then(|b| g.values[b].data.as_ref()) {
            Some(b) => b.as_f32()?.to_vec(),
            None => vec![0.0; m],
        };
        let new: Vec<f32> = old
            .iter()
            .zip(&shift)
            .map(|(&b, &s)| (b as f64 - s) as f32)
            .collect();
        let name = fresh_name(g, &format!("{}_bias_corrected", g.nodes[ni].name));
        let id = g.add_const(name, Tensor::from_f32(vec![m], new)?);
        let n = &mut g.nodes[ni];
        n.inputs.resize(3, None);
        n.inputs[2] = Some(id);
        corrected += 1;
    }
    super::util::compact(g);
    Ok(corrected)
}
