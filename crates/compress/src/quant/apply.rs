//! **apply**: prepared float graph + [`QuantPlan`] → integer graph (TFLite int8
//! scheme), which the runtime's integer kernels run.
//!
//! - The graph keeps float inputs and outputs: a `Quantize` node follows each float
//!   input and a `Dequantize` node produces each output (TFLite's converter does the
//!   same unless asked for integer I/O).
//! - Activations: int8 asymmetric per tensor from the plan's ranges (int16:
//!   symmetric, zero point 0). Ops whose integer kernel requires the output to share
//!   the input's parameters (pools, reshapes, pad, transpose) get them; softmax and
//!   logistic outputs get TFLite's fixed parameters.
//! - Weights: per the plan's [`WeightSpec`] (default int8 per channel), symmetric,
//!   per output channel (axis 0); int4 weights are stored as `DType::I4`, ternary and
//!   binary as int8 codes in {-1, 0, 1}. Biases become i32 (int16 activations: i64,
//!   TFLite's 16x8 scheme) with scale `input_scale × weight_scale[c]`.
//! - A node with no integer kernel (or whose weights the plan keeps in float/fp16)
//!   runs in float between a `Dequantize` of its inputs and a `Quantize` of its outputs.
//! - [`ActivationFormat::Fp16`]: every activation and weight in f16 (no integer
//!   kernels); [`ActivationFormat::Float`]: f32 activations with fp16 weights stored as
//!   F16 constants widened by a Cast at load (TFLite's fp16 scheme, which writes a
//!   DEQUANTIZE there; the runtime has no f16 Dequantize kernel yet).

use super::prepare::weighted_nodes;
use super::util::{compact, fresh_name};
use super::{
    activation_params, ActivationFormat, Granularity, QuantPlan, WeightFormat, WeightSpec,
};
use crate::{CompressError, Result};
use edgeopt_ir::{
    BinaryKind, DType, Dim, Graph, Layout, Node, Op, QuantParams, ReduceKind, Tensor, TensorData,
    UnaryKind, ValueId,
};
use half::f16;
use std::collections::HashMap;

/// The spec a weight gets when the plan does not name it.
pub const DEFAULT_WEIGHT: WeightSpec = WeightSpec {
    format: WeightFormat::Int8,
    granularity: Granularity::Channel,
};

/// Quantizes `prepared` by `plan`.
pub fn apply(prepared: &Graph, plan: &QuantPlan) -> Result<Graph> {
    let act = plan
        .activations
        .ok_or_else(|| CompressError::Invalid("the plan has no activation format".into()))?;
    match act {
        ActivationFormat::Fp16 => to_fp16(prepared, plan),
        ActivationFormat::Float => float_weights_only(prepared, plan),
        ActivationFormat::Int8 => to_integer(prepared, plan, DType::I8),
        ActivationFormat::Int16 => to_integer(prepared, plan, DType::I16),
    }
}

fn spec_of(plan: &QuantPlan, g: &Graph, w: ValueId) -> WeightSpec {
    plan.weights
        .get(&g.values[w].name)
        .copied()
        .unwrap_or(DEFAULT_WEIGHT)
}

/// f32 activations; weights stored as the plan says in float formats (Fp16 → F16
/// constant + Cast to f32); integer weight formats are an error here.
fn float_weights_only(prepared: &Graph, plan: &QuantPlan) -> Result<Graph> {
    let mut g = prepared.clone();
    let mut nodes = Vec::new();
    let wn: HashMap<usize, ValueId> = weighted_nodes(prepared).into_iter().collect();
    for (ni, mut n) in std::mem::take(&mut g.nodes).into_iter().enumerate() {
        if let Some(&w) = wn.get(&ni) {
            match spec_of(plan, prepared, w).format {
                WeightFormat::Float => {}
                WeightFormat::Fp16 => {
                    let t = g.values[w]
                        .data
                        .clone()
                        .expect("weighted node has const weights");
                    let h = to_f16(&t)?;
                    let hid = g.add_const(fresh_name(&g, &format!("{}_fp16", g.values[w].name)), h);
                    let out = g.add_value(
                        fresh_name(&g, &format!("{}_dequant", g.values[w].name)),
                        DType::F32,
                        None,
                    );
                    g.values[out].shape = g.values[w].shape.clone();
                    nodes.push(Node {
                        name: g.values[out].name.clone(),
                        // The runtime has no f16 Dequantize kernel; Cast is the same
                        // widening (TFLite's scheme writes DEQUANTIZE here).
                        op: Op::Cast { to: DType::F32 },
                        inputs: vec![Some(hid)],
                        outputs: vec![out],
                    });
                    n.inputs[1] = Some(out);
                }
                f => {
                    return Err(CompressError::Invalid(format!(
                        "{f:?} weights need integer activations (--activations int8)"
                    )))
                }
            }
        }
        nodes.push(n);
    }
    g.nodes = nodes;
    compact(&mut g);
    g.validate()?;
    Ok(g)
}

fn to_f16(t: &Tensor) -> Result<Tensor> {
    Ok(Tensor::new(
        t.shape.clone(),
        TensorData::F16(t.to_f32_vec().into_iter().map(f16::from_f32).collect()),
    )?)
}

/// Everything in f16: inputs cast to f16, f32 constants converted, outputs cast back.
fn to_fp16(prepared: &Graph, plan: &QuantPlan) -> Result<Graph> {
    for (_, w) in weighted_nodes(prepared) {
        let f = spec_of(plan, prepared, w).format;
        if !matches!(f, WeightFormat::Fp16 | WeightFormat::Float) {
            return Err(CompressError::Invalid(format!(
                "fp16 activations need fp16 weights, '{}' is planned as {f:?}",
                prepared.values[w].name
            )));
        }
    }
    let mut g = prepared.clone();
    for v in &mut g.values {
        if v.dtype == DType::F32 {
            v.dtype = DType::F16;
            if let Some(t) = &v.data {
                v.data = Some(to_f16(t)?);
            }
        }
    }
    let mut pre = Vec::new();
    let mut inputs = g.inputs.clone();
    for x in inputs.iter_mut() {
        if prepared.values[*x].dtype != DType::F32 {
            continue;
        }
        let name = g.values[*x].name.clone();
        g.values[*x].name = fresh_name(&g, &format!("{name}_fp16"));
        let f = g.add_value(name.clone(), DType::F32, g.values[*x].shape.clone());
        pre.push(Node {
            name: format!("{name}_cast_fp16"),
            op: Op::Cast { to: DType::F16 },
            inputs: vec![Some(f)],
            outputs: vec![*x],
        });
        *x = f;
    }
    g.inputs = inputs;
    let mut outputs = g.outputs.clone();
    let mut post = Vec::new();
    for o in outputs.iter_mut() {
        if prepared.values[*o].dtype != DType::F32 {
            continue;
        }
        let name = g.values[*o].name.clone();
        g.values[*o].name = fresh_name(&g, &format!("{name}_fp16"));
        let f = g.add_value(name.clone(), DType::F32, g.values[*o].shape.clone());
        post.push(Node {
            name: format!("{name}_cast_fp32"),
            op: Op::Cast { to: DType::F32 },
            inputs: vec![Some(*o)],
            outputs: vec![f],
        });
        *o = f;
    }
    g.outputs = outputs;
    let body = std::mem::take(&mut g.nodes);
    g.nodes = pre.into_iter().chain(body).chain(post).collect();
    g.validate()?;
    Ok(g)
}

/// Whether an integer kernel runs this node (given quantized inputs).
/// `wide`: int16 activations, whose LOGISTIC / TANH / HARD_SWISH kernels the runtime
/// does not have (those nodes run in float between Dequantize and Quantize).
fn integer_kernel(g: &Graph, n: &Node, wide: bool) -> bool {
    match &n.op {
        Op::Conv(a) => {
            a.layout == Layout::Nhwc && n.input(1).is_some_and(|w| g.values[w].data.is_some())
        }
        Op::FullyConnected { .. } => n.input(1).is_some_and(|w| g.values[w].data.is_some()),
        // Two activations (attention's Q·Kᵀ and P·V): TFLite's int8 BATCH_MATMUL. A
        // constant operand that prepare left here (it is not a FullyConnected weight)
        // stays float.
        Op::MatMul => {
            !wide
                && n.present_inputs().count() == 2
                && n.present_inputs().all(|v| g.values[v].data.is_none())
        }
        Op::Binary { kind, .. } => {
            matches!(kind, BinaryKind::Add | BinaryKind::Sub | BinaryKind::Mul)
        }
        Op::MaxPool(p) | Op::AveragePool(p) => p.layout == Layout::Nhwc,
        Op::Softmax { .. } => true,
        Op::Unary(k) => match k {
            UnaryKind::Relu | UnaryKind::Relu6 => true,
            UnaryKind::Sigmoid | UnaryKind::Tanh | UnaryKind::HardSwish | UnaryKind::Gelu => !wide,
            _ => false,
        },
        Op::Clip { min, .. } => min.is_some_and(|m| m == 0.0),
        Op::Pad { mode, .. } => *mode == edgeopt_ir::PadMode::Constant,
        // Gather of constant indices picks whole slices: data movement too.
        Op::Gather { .. } => n.input(1).is_some_and(|i| g.values[i].data.is_some()),
        // Data movement: the integer tensors move as they are.
        Op::Concat { .. }
        | Op::Transpose { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::StridedSlice(_)
        | Op::Tile { .. } => true,
        Op::Resize(r) => integer_resize(g, n, r),
        // TFLite's int8 MEAN (any axes; the runtime is bit-exact with LiteRT's and
        // TFLite Micro's, and the C generator has it): a mean the prepare step did not
        // turn into a pool (ShuffleNet's `x.mean([2, 3])`, a mean over channels) stays
        // int8 instead of running in float between DEQUANTIZE and QUANTIZE. int16:
        // LiteRT's 16-bit MEAN has paths the runtime does not follow.
        Op::Reduce {
            kind: ReduceKind::Mean,
            ..
        } => !wide,
        op @ (Op::ConvTranspose(_)
        | Op::Gemm { .. }
        | Op::Compare(_)
        | Op::Where
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::LogSoftmax { .. }
        | Op::GlobalAveragePool
        | Op::BatchNorm { .. }
        | Op::LayerNorm { .. }
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Fill
        | Op::Lstm { .. }
        | Op::TopK { .. }
        | Op::Gru { .. }
        | Op::Reduce { .. }
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
        | Op::Dequantize) => op.is_reshape_like(),
    }
}

/// Whether the runtime's integer RESIZE (and TFLite's int8 RESIZE_BILINEAR /
/// RESIZE_NEAREST_NEIGHBOR, which the writer emits) runs this node: a 4-D NHWC input
/// resized over H and W by output sizes, with coordinates TFLite has. Bilinear then
/// stays int8 (TFLite's integer kernel, bit-exact in the runtime and the C) instead of
/// running in float between a DEQUANTIZE and a QUANTIZE.
fn integer_resize(g: &Graph, n: &Node, r: &edgeopt_ir::ResizeAttrs) -> bool {
    use edgeopt_ir::{CoordTransform as C, NearestMode as Nm, ResizeMode as M};
    let coord_ok = matches!(
        (r.mode, r.coord, r.nearest_mode),
        (M::Linear, C::AlignCorners | C::HalfPixel | C::Asymmetric, _)
            | (M::Nearest, C::AlignCorners, Nm::RoundPreferCeil)
            | (M::Nearest, C::TfHalfPixelForNn | C::Asymmetric, Nm::Floor)
    );
    let Some(shape) = n.input(0).and_then(|x| g.values[x].shape.as_ref()) else {
        return false;
    };
    let hw_sizes = match (&r.sizes, &r.axes) {
        (Some(s), Some(a)) => a.as_slice() == [1, 2] && s.len() == 2,
        (Some(s), None) => {
            s.len() == 4
                && shape.len() == 4
                && shape[0].fixed() == Some(s[0])
                && shape[3].fixed() == Some(s[3])
        }
        _ => false,
    };
    coord_ok && hw_sizes && shape.len() == 4 && !r.antialias && r.roi.is_none()
}

/// Ops whose integer kernel needs the output to carry the input's parameters.
fn shares_input_params(op: &Op) -> bool {
    matches!(
        op,
        Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::Pad { .. }
            | Op::Transpose { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Resize(_)
            | Op::Gather { .. }
    ) || op.is_reshape_like()
}

/// Gives a concat's operands its output's parameters where that is free: the operand
/// is computed by an integer node whose output parameters are its own choice (not a
/// pool/reshape that inherits them, not a fixed-range softmax/logistic/tanh) and is
/// read by nothing but this concat. This is what the TFLite converter does ("requantize
/// at the producer"): the producer's output stage writes the concat's scale directly,
/// so no extra op runs. The others keep theirs and get a requantizing `Quantize` in
/// front of the concat (step 2 of [`to_integer`]).
fn share_concat_params(
    g: &Graph,
    concat: &Node,
    float_node: &[bool],
    consumers: &[usize],
    params: &mut [Option<QuantParams>],
) {
    let Some(out) = concat.outputs.first().and_then(|&o| params[o].clone()) else {
        return;
    };
    let producers = g.producers();
    for x in concat.present_inputs() {
        if params[x].is_none() || params[x].as_ref() == Some(&out) || consumers[x] != 1 {
            continue;
        }
        let Some(pi) = producers[x] else { continue };
        let p = &g.nodes[pi];
        let fixed = matches!(
            p.op,
            Op::Softmax { .. } | Op::Unary(UnaryKind::Sigmoid) | Op::Unary(UnaryKind::Tanh)
        );
        if !float_node[pi] && !fixed && !shares_input_params(&p.op) && p.outputs.len() == 1 {
            params[x] = Some(out.clone());
        }
    }
}

fn act_params(range: (f32, f32), dt: DType) -> QuantParams {
    match dt {
        DType::I16 => {
            let m = range
                .0
                .abs()
                .max(range.1.abs())
                .max(f32::MIN_POSITIVE * 1e6);
            QuantParams::per_tensor(m / 32767.0, 0)
        }
        _ => activation_params(range, -128, 127),
    }
}

fn int_tensor(dt: DType, shape: Vec<usize>, codes: Vec<i8>) -> Result<Tensor> {
    Ok(Tensor::new(
        shape,
        match dt {
            DType::I4 => TensorData::I4(codes),
            _ => TensorData::I8(codes),
        },
    )?)
}

fn to_integer(prepared: &Graph, plan: &QuantPlan, adt: DType) -> Result<Graph> {
    let wide = adt == DType::I16;
    let mut g = prepared.clone();
    let nv = prepared.values.len();
    // 1. Activation parameters, in topological order.
    let mut params: Vec<Option<QuantParams>> = vec![None; nv];
    let range_of = |id: ValueId| -> Result<(f32, f32)> {
        let name = &prepared.values[id].name;
        plan.ranges.get(name).copied().ok_or_else(|| {
            CompressError::Invalid(format!("the plan has no calibrated range for '{name}'"))
        })
    };
    for &i in &prepared.inputs {
        if prepared.values[i].dtype == DType::F32 {
            params[i] = Some(act_params(range_of(i)?, adt));
        }
    }
    let weighted: HashMap<usize, ValueId> = weighted_nodes(prepared).into_iter().collect();
    let mut consumers = vec![0usize; nv];
    for n in &prepared.nodes {
        for x in n.present_inputs() {
            consumers[x] += 1;
        }
    }
    for &o in &prepared.outputs {
        consumers[o] += 1;
    }
    let mut float_node = vec![false; prepared.nodes.len()];
    for (ni, n) in prepared.nodes.iter().enumerate() {
        let float_weights = weighted.get(&ni).is_some_and(|&w| {
            matches!(
                spec_of(plan, prepared, w).format,
                WeightFormat::Fp16 | WeightFormat::Float
            )
        });
        float_node[ni] = float_weights || !integer_kernel(prepared, n, wide);
        for &o in &n.outputs {
            if prepared.values[o].dtype != DType::F32 {
                continue;
            }
            let x = n.input(0);
            let inherited = x.and_then(|x| params[x].clone());
            params[o] = Some(match (&n.op, inherited) {
                (op, Some(p)) if shares_input_params(op) && !float_node[ni] => p,
                (Op::Softmax { .. }, _) | (Op::Unary(UnaryKind::Sigmoid), _) if !float_node[ni] => {
                    if wide {
                        QuantParams::per_tensor(1.0 / 32768.0, 0)
                    } else {
                        QuantParams::per_tensor(1.0 / 256.0, -128)
                    }
                }
                (Op::Unary(UnaryKind::Tanh), _) if !float_node[ni] => {
                    if wide {
                        QuantParams::per_tensor(1.0 / 32768.0, 0)
                    } else {
                        QuantParams::per_tensor(1.0 / 128.0, 0)
                    }
                }
                _ => act_params(range_of(o)?, adt),
            });
        }
        if matches!(n.op, Op::Concat { .. }) && !float_node[ni] {
            share_concat_params(prepared, n, &float_node, &consumers, &mut params);
        }
    }
    // 2. Rewrite node by node.
    let mut nodes: Vec<Node> = Vec::new();
    // Graph inputs: f32 in, Quantize to the activation type.
    let mut replace: HashMap<ValueId, ValueId> = HashMap::new();
    for &i in &prepared.inputs {
        let Some(p) = &params[i] else { continue };
        let name = fresh_name(&g, &format!("{}_quantized", g.values[i].name));
        let q = g.add_value(name.clone(), adt, g.values[i].shape.clone());
        g.values[q].quant = Some(p.clone());
        nodes.push(Node {
            name,
            op: Op::Quantize,
            inputs: vec![Some(i)],
            outputs: vec![q],
        });
        replace.insert(i, q);
    }
    // Set activation dtypes/params on every computed f32 value.
    for (id, p) in params.iter().enumerate() {
        if let Some(p) = p {
            if !prepared.inputs.contains(&id) {
                g.values[id].dtype = adt;
                g.values[id].quant = Some(p.clone());
            }
        }
    }
    let act_in = |params: &Vec<Option<QuantParams>>, v: ValueId| params[v].clone();
    let mut shared_weights: HashMap<ValueId, (ValueId, WeightSpec)> = HashMap::new();
    let mut shared_q: HashMap<ValueId, super::weights::QuantizedWeights> = HashMap::new();
    for (ni, n0) in prepared.nodes.iter().enumerate() {
        let mut n = n0.clone();
        for x in n.inputs.iter_mut().flatten() {
            if let Some(&r) = replace.get(x) {
                *x = r;
            }
        }
        if float_node[ni] {
            // Dequantize quantized inputs, run in float, quantize the outputs.
            for (k, x) in n.inputs.iter_mut().enumerate() {
                let Some(v) = *x else { continue };
                let orig = n0.inputs[k].expect("same arity");
                if params[orig].is_none() || g.values[v].dtype == DType::F32 {
                    continue;
                }
                let name = fresh_name(&g, &format!("{}_dequantized", prepared.values[orig].name));
                let f = g.add_value(
                    name.clone(),
                    DType::F32,
                    prepared.values[orig].shape.clone(),
                );
                nodes.push(Node {
                    name,
                    op: Op::Dequantize,
                    inputs: vec![Some(v)],
                    outputs: vec![f],
                });
                *x = Some(f);
            }
            let mut post = Vec::new();
            for o in n.outputs.iter_mut() {
                if params[*o].is_none() {
                    continue;
                }
                let name = fresh_name(&g, &format!("{}_float", prepared.values[*o].name));
                let f = g.add_value(name, DType::F32, prepared.values[*o].shape.clone());
                post.push(Node {
                    name: format!("{}_requantize", n.name),
                    op: Op::Quantize,
                    inputs: vec![Some(f)],
                    outputs: vec![*o],
                });
                *o = f;
            }
            // fp16 weights: F16 constant + Dequantize (TFLite's fp16 scheme).
            if let Some(&w) = weighted.get(&ni) {
                if spec_of(plan, prepared, w).format == WeightFormat::Fp16 {
                    let t = prepared.values[w].data.clone().expect("const weights");
                    let hid = g.add_const(
                        fresh_name(&g, &format!("{}_fp16", prepared.values[w].name)),
                        to_f16(&t)?,
                    );
                    let name = fresh_name(&g, &format!("{}_dequantized", prepared.values[w].name));
                    let wf =
                        g.add_value(name.clone(), DType::F32, prepared.values[w].shape.clone());
                    nodes.push(Node {
                        name,
                        // The runtime has no f16 Dequantize kernel; Cast is the same
                        // widening (TFLite's scheme writes DEQUANTIZE here).
                        op: Op::Cast { to: DType::F32 },
                        inputs: vec![Some(hid)],
                        outputs: vec![wf],
                    });
                    n.inputs[1] = Some(wf);
                }
            }
            nodes.push(n);
            nodes.extend(post);
            continue;
        }
        match &n0.op {
            Op::Conv(_) | Op::FullyConnected { .. } => {
                let w = n0.input(1).expect("weighted");
                let x = n0.input(0).expect("has input");
                let xp = act_in(&params, x).ok_or_else(|| {
                    CompressError::Unsupported(format!(
                        "node '{}': input is not quantized",
                        n0.name
                    ))
                })?;
                let wt = prepared.values[w].data.as_ref().expect("const weights");
                let mut spec = spec_of(plan, prepared, w);
                // Grouped/depthwise convs have one short filter per channel: group-wise
                // scales would not pay off, and the block-wise kernel is for ordinary
                // convs and FC only.
                if let (Op::Conv(a), Granularity::Group(_)) = (&n0.op, spec.granularity) {
                    if a.group > 1 {
                        spec.granularity = Granularity::Channel;
                    }
                }
                let m = wt.shape[0];
                // A weight read by several nodes (an unrolled recurrent layer reads its
                // recurrent matrix once per step) is quantized and stored once.
                let shared = shared_weights
                    .get(&w)
                    .copied()
                    .filter(|&(_, s2)| s2 == spec);
                let (wid, qw) = match shared {
                    Some((wid, _)) => (wid, shared_q[&w].clone()),
                    None => {
                        let qw = super::weights::quantize_planned(
                            wt.as_f32()?,
                            m,
                            spec,
                            plan.weight_scales
                                .get(&prepared.values[w].name)
                                .map(Vec::as_slice),
                        )?;
                        let wdt = if spec.format == WeightFormat::Int4 {
                            DType::I4
                        } else {
                            DType::I8
                        };
                        let wname = fresh_name(&g, &format!("{}_{}", prepared.values[w].name, wdt));
                        let wid = g
                            .add_const(wname, int_tensor(wdt, wt.shape.clone(), qw.codes.clone())?);
                        g.values[wid].quant = Some(if qw.scales.len() == 1 {
                            QuantParams::per_tensor(qw.scales[0], 0)
                        } else {
                            QuantParams {
                                block_size: qw.block,
                                ..QuantParams::per_axis(
                                    qw.scales.clone(),
                                    vec![0; qw.scales.len()],
                                    0,
                                )
                            }
                        });
                        shared_weights.insert(w, (wid, spec));
                        shared_q.insert(w, qw.clone());
                        (wid, qw)
                    }
                };
                n.inputs[1] = Some(wid);
                // Group-wise weights have no single input*weight scale per channel to
                // put an integer bias on: the kernel adds the float bias after
                // combining its per-block integer sums (see runtime blockwise.rs).
                if qw.block.is_some() {
                    nodes.push(n);
                    continue;
                }
                if let Some(b) = n0.input(2) {
                    let bt = prepared.values[b].data.as_ref().ok_or_else(|| {
                        CompressError::Unsupported(format!(
                            "node '{}': bias is not constant",
                            n0.name
                        ))
                    })?;
                    let bv = bt.as_f32()?;
                    if bv.len() != m {
                        return Err(CompressError::Invalid(format!(
                            "node '{}': bias has {} values for {m} channels",
                            n0.name,
                            bv.len()
                        )));
                    }
                    let in_s = xp.scale[0];
                    let bscales: Vec<f32> = (0..m)
                        .map(|c| in_s * qw.scales[if qw.scales.len() == 1 { 0 } else { c }])
                        .collect();
                    let bq = bv
                        .iter()
                        .zip(&bscales)
                        .map(|(&v, &s)| (v as f64 / s as f64).round());
                    // TFLite's 16x8 scheme stores the bias as int64 (its accumulator
                    // is 64-bit); int8 activations use int32.
                    let (bdata, bdt) = if wide {
                        let v = bq.map(|q| q.clamp(-(2f64.powi(62)), 2f64.powi(62)) as i64);
                        (TensorData::I64(v.collect()), DType::I64)
                    } else {
                        let v = bq.map(|q| q.clamp(i32::MIN as f64, i32::MAX as f64) as i32);
                        (TensorData::I32(v.collect()), DType::I32)
                    };
                    let bname = fresh_name(&g, &format!("{}_{bdt}", prepared.values[b].name));
                    let bid = g.add_const(bname, Tensor::new(vec![m], bdata)?);
                    g.values[bid].quant = Some(if bscales.len() == 1 {
                        QuantParams::per_tensor(bscales[0], 0)
                    } else {
                        QuantParams::per_axis(bscales, vec![0; m], 0)
                    });
                    n.inputs[2] = Some(bid);
                }
            }
            Op::Binary { .. } | Op::Concat { .. } => {
                let concat_params = if matches!(n0.op, Op::Concat { .. }) {
                    n0.outputs.first().and_then(|&o| params[o].clone())
                } else {
                    None
                };
                // A concat's operands carry its output's parameters (TFLite's kernel
                // requires it); an operand that could not adopt them in step 1 is
                // requantized in front of the concat.
                if let Some(cp) = &concat_params {
                    for x in n.inputs.iter_mut() {
                        let Some(v) = *x else { continue };
                        if g.values[v].data.is_some() || g.values[v].quant.as_ref() == Some(cp) {
                            continue;
                        }
                        let name = fresh_name(&g, &format!("{}_requantized", g.values[v].name));
                        let r = g.add_value(name.clone(), adt, g.values[v].shape.clone());
                        g.values[r].quant = Some(cp.clone());
                        nodes.push(Node {
                            name,
                            op: Op::Quantize,
                            inputs: vec![Some(v)],
                            outputs: vec![r],
                        });
                        *x = Some(r);
                    }
                }
                // Constant operands are quantized with their own min-max range (a
                // concat's with its output's parameters).
                for x in n.inputs.iter_mut() {
                    let Some(v) = *x else { continue };
                    let Some(t) = g.values[v].data.clone() else {
                        continue;
                    };
                    if t.dtype() != DType::F32 {
                        continue;
                    }
                    let vals = t.to_f32_vec();
                    let lo = vals.iter().fold(0f32, |a, &b| a.min(b));
                    let hi = vals.iter().fold(0f32, |a, &b| a.max(b));
                    let p = concat_params
                        .clone()
                        .unwrap_or_else(|| act_params((lo, hi), adt));
                    let (s, z) = p.channel(0);
                    let (qmin, qmax) = adt.int_range().expect("integer");
                    let codes: Vec<i64> = vals
                        .iter()
                        .map(|&v| ((v / s).round() as i64 + z).clamp(qmin, qmax))
                        .collect();
                    let data = match adt {
                        DType::I16 => TensorData::I16(codes.iter().map(|&c| c as i16).collect()),
                        _ => TensorData::I8(codes.iter().map(|&c| c as i8).collect()),
                    };
                    let name = fresh_name(&g, &format!("{}_{adt}", g.values[v].name));
                    let id = g.add_const(name, Tensor::new(t.shape.clone(), data)?);
                    g.values[id].quant = Some(p);
                    *x = Some(id);
                }
            }
            Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
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
            | Op::Dequantize => {}
        }
        nodes.push(n);
    }
    // Graph outputs: Dequantize back to f32 under the original names.
    let mut outputs = Vec::new();
    for &o in &prepared.outputs {
        if params[o].is_none() {
            outputs.push(o);
            continue;
        }
        let name = g.values[o].name.clone();
        g.values[o].name = fresh_name(&g, &format!("{name}_{adt}"));
        let f = g.add_value(name.clone(), DType::F32, prepared.values[o].shape.clone());
        nodes.push(Node {
            name: format!("{name}_dequantize"),
            op: Op::Dequantize,
            inputs: vec![Some(o)],
            outputs: vec![f],
        });
        outputs.push(f);
    }
    g.nodes = nodes;
    g.outputs = outputs;
    compact(&mut g);
    // Keep declared shapes consistent for the new values.
    for v in &mut g.values {
        if v.shape.is_none() {
            if let Some(t) = &v.data {
                v.shape = Some(t.shape.iter().map(|&d| Dim::Fixed(d)).collect());
            }
        }
    }
    g.validate()?;
    Ok(g)
}

/// Total bytes of the weights of Conv / FullyConnected nodes of a prepared graph under
/// `plan` (formats' storage bits; scales not counted).
pub fn weight_size(prepared: &Graph, plan: &QuantPlan) -> usize {
    let mut seen = std::collections::HashSet::new();
    weighted_nodes(prepared)
        .into_iter()
        .filter(|&(_, w)| seen.insert(w))
        .map(|(_, w)| {
            let n = prepared.values[w].data.as_ref().map_or(0, |t| t.len());
            super::weights::weight_bytes(n, spec_of(plan, prepared, w).format)
        })
        .sum()
}
