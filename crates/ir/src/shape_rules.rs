//! The per-op shape rules behind [`crate::shape::infer_node`].
//!
//! Each rule checks what it needs of its inputs (rank, channels, dtypes) and returns a
//! plain message on failure; the caller adds the node's name. Geometry shared with the
//! kernels (window sizes and pads of conv/pool, resize scales) is computed here once and
//! exported through [`crate::shape`], so kernels never re-derive it.
//!
//! Besides dtype and shape, rules propagate known *values* of small integer tensors
//! (Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains as PyTorch exports them),
//! so that run-time-looking Reshape targets resolve statically.

use crate::dtype::DType;
use crate::graph::Node;
use crate::op::*;
use crate::shape::{InputFact, OutputFact};
use crate::tensor::{checked_numel, Tensor, TensorData};

type R<T> = Result<T, String>;

/// Largest integer tensor whose value is propagated (shape arithmetic is tiny; this
/// keeps inference cheap when a rule is handed big constants).
const VALUE_LIMIT: usize = 1024;

/// Largest tensor a rule accepts (bytes). Anything larger is a corrupt or hostile model
/// on every device edgeopt targets, and allocating it would abort the process.
pub const MAX_TENSOR_BYTES: usize = 1 << 34;

/// One rule per op. `declared` holds the declared dtypes of the node's outputs where
/// known; only ops whose output dtype cannot be derived from their inputs read it
/// (TFLite QUANTIZE / DEQUANTIZE).
pub(crate) fn infer(
    node: &Node,
    inputs: &[Option<InputFact>],
    declared: &[Option<DType>],
) -> R<Vec<OutputFact>> {
    // Graph inputs carry declared shapes that may be absurd; rules multiply dims freely.
    for (k, x) in inputs.iter().enumerate() {
        if let Some(x) = x {
            checked_numel(x.shape)
                .map_err(|_| format!("input {k} shape {:?} overflows", x.shape))?;
        }
    }
    let outs = infer_op(&node.op, inputs, declared)?;
    for (k, o) in outs.iter().enumerate() {
        let n = checked_numel(&o.shape)
            .map_err(|_| format!("output {k} shape {:?} overflows", o.shape))?;
        if o.dtype.storage_bytes(n) > MAX_TENSOR_BYTES {
            return Err(format!(
                "output {k} shape {:?} needs {} bytes, more than the {} byte limit",
                o.shape,
                o.dtype.storage_bytes(n),
                MAX_TENSOR_BYTES
            ));
        }
    }
    Ok(outs)
}

fn infer_op(
    op: &Op,
    inputs: &[Option<InputFact>],
    declared: &[Option<DType>],
) -> R<Vec<OutputFact>> {
    let one = |f: OutputFact| Ok(vec![f]);
    match op {
        Op::Conv(a) => {
            let x = req(inputs, 0)?;
            one(out(
                x.dtype,
                conv_shape(a, x, req(inputs, 1)?, opt(inputs, 2))?,
            ))
        }
        Op::ConvInteger(a) => {
            let x = req(inputs, 0)?;
            one(out(DType::I32, conv_shape(a, x, req(inputs, 1)?, None)?))
        }
        Op::QLinearConv(a) => {
            let x = req(inputs, 0)?;
            let dt = opt(inputs, 7).map(|z| z.dtype).unwrap_or(x.dtype);
            one(out(dt, conv_shape(a, x, req(inputs, 3)?, opt(inputs, 8))?))
        }
        Op::ConvTranspose(a) => {
            let x = req(inputs, 0)?;
            one(out(
                x.dtype,
                conv_transpose_geometry(
                    a,
                    x.shape,
                    req(inputs, 1)?.shape,
                    opt(inputs, 2).map(|b| b.shape),
                )?
                .0,
            ))
        }
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            let a = req(inputs, 0)?;
            let b = req(inputs, 1)?;
            if a.shape.len() != 2 || b.shape.len() != 2 {
                return Err(format!(
                    "Gemm needs 2-D inputs, got {:?} and {:?}",
                    a.shape, b.shape
                ));
            }
            let (m, ka) = if *trans_a {
                (a.shape[1], a.shape[0])
            } else {
                (a.shape[0], a.shape[1])
            };
            let (kb, n) = if *trans_b {
                (b.shape[1], b.shape[0])
            } else {
                (b.shape[0], b.shape[1])
            };
            if ka != kb {
                return Err(format!(
                    "inner dimensions differ: A {:?}{} has K={ka}, B {:?}{} has K={kb}",
                    a.shape,
                    if *trans_a { "ᵀ" } else { "" },
                    b.shape,
                    if *trans_b { "ᵀ" } else { "" }
                ));
            }
            if let Some(c) = opt(inputs, 2) {
                let bc = broadcast(&[m, n], c.shape)
                    .map_err(|_| format!("C {:?} does not broadcast to [{m}, {n}]", c.shape))?;
                if bc != [m, n] {
                    return Err(format!("C {:?} does not broadcast to [{m}, {n}]", c.shape));
                }
            }
            one(out(a.dtype, vec![m, n]))
        }
        Op::MatMul => {
            let a = req(inputs, 0)?;
            one(out(a.dtype, matmul_shape(a.shape, req(inputs, 1)?.shape)?))
        }
        Op::MatMulInteger => one(out(
            DType::I32,
            matmul_shape(req(inputs, 0)?.shape, req(inputs, 1)?.shape)?,
        )),
        Op::QLinearMatMul => {
            let a = req(inputs, 0)?;
            let dt = opt(inputs, 7).map(|z| z.dtype).unwrap_or(a.dtype);
            one(out(dt, matmul_shape(a.shape, req(inputs, 3)?.shape)?))
        }
        Op::FullyConnected { keep_num_dims, .. } => {
            let x = req(inputs, 0)?;
            let w = req(inputs, 1)?;
            if w.shape.len() != 2 {
                return Err(format!("weights must be [N, K], got {:?}", w.shape));
            }
            let (n, k) = (w.shape[0], w.shape[1]);
            if let Some(b) = opt(inputs, 2) {
                if b.shape.iter().product::<usize>() != n {
                    return Err(format!("bias {:?} does not have {n} elements", b.shape));
                }
            }
            let numel: usize = x.shape.iter().product();
            if *keep_num_dims {
                if x.shape.last() != Some(&k) {
                    return Err(format!(
                        "input {:?} last dimension is not the weights' K={k}",
                        x.shape
                    ));
                }
                let mut s = x.shape.to_vec();
                *s.last_mut().expect("checked non-empty") = n;
                one(out(x.dtype, s))
            } else {
                if k == 0 || !numel.is_multiple_of(k) {
                    return Err(format!(
                        "input {:?} ({numel} elements) is not a multiple of K={k}",
                        x.shape
                    ));
                }
                one(out(x.dtype, vec![numel / k, n]))
            }
        }
        Op::Binary { kind, .. } => {
            let a = req(inputs, 0)?;
            let b = req(inputs, 1)?;
            if a.dtype != b.dtype && *kind != BinaryKind::Pow {
                return Err(format!(
                    "inputs have different dtypes {} and {}",
                    a.dtype, b.dtype
                ));
            }
            let shape = broadcast(a.shape, b.shape)?;
            let value = binary_value(*kind, a, b, &shape);
            Ok(vec![OutputFact {
                dtype: a.dtype,
                shape,
                value,
            }])
        }
        Op::Compare(_) => {
            let a = req(inputs, 0)?;
            let b = req(inputs, 1)?;
            if a.dtype != b.dtype {
                return Err(format!(
                    "inputs have different dtypes {} and {}",
                    a.dtype, b.dtype
                ));
            }
            one(out(DType::Bool, broadcast(a.shape, b.shape)?))
        }
        Op::Where => {
            let c = req(inputs, 0)?;
            let a = req(inputs, 1)?;
            let b = req(inputs, 2)?;
            if c.dtype != DType::Bool {
                return Err(format!("condition must be bool, got {}", c.dtype));
            }
            if a.dtype != b.dtype {
                return Err(format!(
                    "inputs 1 and 2 have different dtypes {} and {}",
                    a.dtype, b.dtype
                ));
            }
            one(out(
                a.dtype,
                broadcast(&broadcast(c.shape, a.shape)?, b.shape)?,
            ))
        }
        Op::Unary(UnaryKind::Not) => {
            let x = req(inputs, 0)?;
            if x.dtype != DType::Bool {
                return Err(format!("Not needs bool input, got {}", x.dtype));
            }
            one(out(DType::Bool, x.shape.to_vec()))
        }
        Op::Unary(_) | Op::Clip { .. } | Op::LeakyRelu { .. } | Op::HardSigmoid { .. } => {
            let x = req(inputs, 0)?;
            one(out(x.dtype, x.shape.to_vec()))
        }
        Op::Softmax { axis, .. } | Op::LogSoftmax { axis } => {
            let x = req(inputs, 0)?;
            norm_axis(*axis, x.shape.len())?;
            one(out(x.dtype, x.shape.to_vec()))
        }
        Op::MaxPool(p) | Op::AveragePool(p) => {
            let x = req(inputs, 0)?;
            one(out(x.dtype, pool_geometry(p, x.shape)?.0))
        }
        Op::GlobalAveragePool => {
            let x = req(inputs, 0)?;
            if x.shape.len() < 3 {
                return Err(format!(
                    "input must be [N, C, spatial...], got {:?}",
                    x.shape
                ));
            }
            let mut s = x.shape[..2].to_vec();
            s.resize(x.shape.len(), 1);
            one(out(x.dtype, s))
        }
        Op::BatchNorm { .. } => {
            let x = req(inputs, 0)?;
            if x.shape.len() < 2 {
                return Err(format!("input must be [N, C, ...], got {:?}", x.shape));
            }
            let c = x.shape[1];
            for (i, name) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
                let p = req(inputs, i)?;
                if p.shape != [c] {
                    return Err(format!("{name} has shape {:?}, expected [{c}]", p.shape));
                }
            }
            one(out(x.dtype, x.shape.to_vec()))
        }
        Op::LayerNorm { axis, .. } => {
            let x = req(inputs, 0)?;
            if !x.dtype.is_float() {
                return Err(format!("LayerNorm needs a float input, got {}", x.dtype));
            }
            let a = norm_axis(*axis, x.shape.len())?;
            let inner = &x.shape[a..];
            for (i, name) in [(1, "scale"), (2, "bias")] {
                let Some(p) = opt(inputs, i) else {
                    if i == 1 {
                        return Err("scale is missing".into());
                    }
                    continue;
                };
                // Unidirectional broadcast to the normalized shape.
                if broadcast(inner, p.shape).ok().as_deref() != Some(inner) {
                    return Err(format!(
                        "{name} has shape {:?}, which does not broadcast to {inner:?}",
                        p.shape
                    ));
                }
            }
            one(out(x.dtype, x.shape.to_vec()))
        }
        Op::Lstm {
            hidden_size,
            direction,
            batch_first,
            ..
        } => rnn(inputs, "LSTM", 4, *hidden_size, *direction, *batch_first),
        Op::Gru {
            hidden_size,
            direction,
            batch_first,
            ..
        } => rnn(inputs, "GRU", 3, *hidden_size, *direction, *batch_first),
        Op::TopK { axis, k, .. } => {
            let x = req(inputs, 0)?;
            if x.dtype == DType::Bool {
                return Err("TopK needs numbers, got bool".into());
            }
            let a = norm_axis(*axis, x.shape.len())?;
            if *k > x.shape[a] {
                return Err(format!(
                    "k = {k} is larger than dimension {a} of {:?}",
                    x.shape
                ));
            }
            let mut s = x.shape.to_vec();
            s[a] = *k;
            Ok(vec![out(x.dtype, s.clone()), out(DType::I64, s)])
        }
        Op::Flatten { axis } => {
            let x = req(inputs, 0)?;
            let r = x.shape.len() as i64;
            let a = if *axis < 0 { axis + r } else { *axis };
            if a < 0 || a > r {
                return Err(format!("axis {axis} out of range for rank {r}"));
            }
            let a = a as usize;
            let s = vec![x.shape[..a].iter().product(), x.shape[a..].iter().product()];
            let value = small_int(x).map(|v| make_value(x.dtype, s.clone(), &v));
            Ok(vec![OutputFact {
                dtype: x.dtype,
                shape: s,
                value,
            }])
        }
        Op::Reshape { allowzero } => {
            let x = req(inputs, 0)?;
            let s = req(inputs, 1)?;
            if !s.dtype.is_integer() || s.shape.len() > 1 {
                return Err(format!(
                    "shape input must be a 1-D integer tensor, got {} {:?}",
                    s.dtype, s.shape
                ));
            }
            let target = s
                .value
                .ok_or("shape input is not known before run time")?
                .to_i64_vec();
            let shape = reshape_shape(x.shape, &target, *allowzero)?;
            let value = small_int(x).map(|v| make_value(x.dtype, shape.clone(), &v));
            Ok(vec![OutputFact {
                dtype: x.dtype,
                shape,
                value,
            }])
        }
        Op::Transpose { perm } => {
            let x = req(inputs, 0)?;
            let perm = full_perm(perm, x.shape.len())?;
            one(out(x.dtype, perm.iter().map(|&p| x.shape[p]).collect()))
        }
        Op::Squeeze { axes } => {
            let x = req(inputs, 0)?;
            let r = x.shape.len();
            let drop: Vec<usize> = if axes.is_empty() {
                (0..r).filter(|&i| x.shape[i] == 1).collect()
            } else {
                let d = norm_axes(axes, r)?;
                for &a in &d {
                    if x.shape[a] != 1 {
                        return Err(format!(
                            "cannot squeeze axis {a} of size {} in {:?}",
                            x.shape[a], x.shape
                        ));
                    }
                }
                d
            };
            let s: Vec<usize> = (0..r)
                .filter(|i| !drop.contains(i))
                .map(|i| x.shape[i])
                .collect();
            let value = small_int(x).map(|v| make_value(x.dtype, s.clone(), &v));
            Ok(vec![OutputFact {
                dtype: x.dtype,
                shape: s,
                value,
            }])
        }
        Op::Unsqueeze { axes } => {
            let x = req(inputs, 0)?;
            let s = unsqueeze_shape(x.shape, axes)?;
            let value = small_int(x).map(|v| make_value(x.dtype, s.clone(), &v));
            Ok(vec![OutputFact {
                dtype: x.dtype,
                shape: s,
                value,
            }])
        }
        Op::Concat { axis, .. } => concat(inputs, *axis),
        Op::StridedSlice(a) => {
            let x = req(inputs, 0)?;
            let plan = strided_slice_plan(a, x.shape)?;
            // Shape arithmetic (SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE, as the TFLite
            // converter writes a dynamic batch) is evaluated here, as for Gather.
            let value = small_int(x).map(|v| {
                let mut out = Vec::with_capacity(plan.numel());
                plan.for_each_source(|i| out.push(v[i]));
                make_value(x.dtype, plan.out_shape.clone(), &out)
            });
            Ok(vec![OutputFact {
                dtype: x.dtype,
                shape: plan.out_shape,
                value,
            }])
        }
        Op::Tile { repeats } => {
            let x = req(inputs, 0)?;
            if repeats.len() != x.shape.len() {
                return Err(format!(
                    "{} repeats for an input of rank {}",
                    repeats.len(),
                    x.shape.len()
                ));
            }
            let s: Vec<usize> = x
                .shape
                .iter()
                .zip(repeats)
                .map(|(&d, &r)| d.checked_mul(r))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("tiling {:?} by {repeats:?} overflows", x.shape))?;
            one(out(x.dtype, s))
        }
        Op::Fill => {
            let d = req(inputs, 0)?;
            let v = req(inputs, 1)?;
            if !d.dtype.is_integer() || d.shape.len() != 1 {
                return Err(format!(
                    "dims must be a 1-D integer tensor, got {} {:?}",
                    d.dtype, d.shape
                ));
            }
            if v.shape.iter().product::<usize>() != 1 {
                return Err(format!(
                    "value must have one element, has shape {:?}",
                    v.shape
                ));
            }
            let dims = small_int(d).ok_or("dims are not known before run time")?;
            let s = dims
                .iter()
                .map(|&k| usize::try_from(k).map_err(|_| format!("dims {dims:?}")))
                .collect::<R<Vec<usize>>>()?;
            let n = checked_numel(&s).map_err(|_| format!("dims {dims:?} overflow"))?;
            let value = match small_int(v) {
                Some(x) if n <= VALUE_LIMIT => Some(make_value(v.dtype, s.clone(), &vec![x[0]; n])),
                _ => None,
            };
            Ok(vec![OutputFact {
                dtype: v.dtype,
                shape: s,
                value,
            }])
        }
        Op::Gather { axis } => {
            let d = req(inputs, 0)?;
            let i = req(inputs, 1)?;
            if !i.dtype.is_integer() {
                return Err(format!("indices must be integers, got {}", i.dtype));
            }
            let a = norm_axis(*axis, d.shape.len())?;
            let mut s = d.shape[..a].to_vec();
            s.extend_from_slice(i.shape);
            s.extend_from_slice(&d.shape[a + 1..]);
            let value = gather_value(d, i, a, &s)?;
            Ok(vec![OutputFact {
                dtype: d.dtype,
                shape: s,
                value,
            }])
        }
        Op::Split { axis, split } => {
            let x = req(inputs, 0)?;
            let a = norm_axis(*axis, x.shape.len())?;
            let total = split.iter().try_fold(0usize, |s, &w| s.checked_add(w));
            if split.is_empty() || total != Some(x.shape[a]) {
                return Err(format!(
                    "split {split:?} does not add up to dimension {a} of {:?}",
                    x.shape
                ));
            }
            Ok(split
                .iter()
                .map(|&w| {
                    let mut s = x.shape.to_vec();
                    s[a] = w;
                    out(x.dtype, s)
                })
                .collect())
        }
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => {
            let x = req(inputs, 0)?;
            let sl = slice_geometry(x.shape, starts, ends, axes, steps)?;
            let value = small_int(x).map(|v| {
                let st = strides_of(x.shape);
                let mut vals = Vec::with_capacity(checked_numel(&sl.count).unwrap_or(0));
                sl.for_each_source(&st, |i| vals.push(v[i]));
                make_value(x.dtype, sl.count.clone(), &vals)
            });
            Ok(vec![OutputFact {
                dtype: x.dtype,
                shape: sl.count,
                value,
            }])
        }
        Op::Pad { pads, .. } => {
            let x = req(inputs, 0)?;
            one(out(x.dtype, pad_shape(x.shape, pads)?))
        }
        Op::Reduce {
            axes,
            keepdims,
            noop_with_empty_axes,
            ..
        } => {
            let x = req(inputs, 0)?;
            let red = reduce_axes(x.shape.len(), axes.as_deref(), *noop_with_empty_axes)?;
            let s = x
                .shape
                .iter()
                .enumerate()
                .filter_map(|(i, &d)| match (red.contains(&i), keepdims) {
                    (false, _) => Some(d),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect();
            one(out(x.dtype, s))
        }
        Op::Resize(a) => {
            let x = req(inputs, 0)?;
            one(out(x.dtype, resize_geometry(a, x.shape)?.0))
        }
        Op::Identity => {
            let x = req(inputs, 0)?;
            Ok(vec![OutputFact {
                dtype: x.dtype,
                shape: x.shape.to_vec(),
                value: small_int(x).map(|v| make_value(x.dtype, x.shape.to_vec(), &v)),
            }])
        }
        Op::Shape => {
            let x = req(inputs, 0)?;
            let v: Vec<i64> = x.shape.iter().map(|&d| d as i64).collect();
            let shape = vec![v.len()];
            Ok(vec![OutputFact {
                dtype: DType::I64,
                shape: shape.clone(),
                value: Some(Tensor {
                    shape,
                    data: TensorData::I64(v),
                }),
            }])
        }
        Op::Cast { to } => {
            let x = req(inputs, 0)?;
            let value = match small_int(x) {
                Some(v) if to.is_integer() || *to == DType::Bool => {
                    let v: Vec<i64> = if *to == DType::Bool {
                        v.iter().map(|&e| (e != 0) as i64).collect()
                    } else {
                        v
                    };
                    Some(make_value(*to, x.shape.to_vec(), &v))
                }
                _ => None,
            };
            Ok(vec![OutputFact {
                dtype: *to,
                shape: x.shape.to_vec(),
                value,
            }])
        }
        Op::QuantizeLinear { output_dtype, .. } => {
            let x = req(inputs, 0)?;
            req(inputs, 1)?;
            // ONNX: the zero point's type is the output type; without one, the attribute.
            let dt = opt(inputs, 2).map(|z| z.dtype).unwrap_or(*output_dtype);
            if !dt.is_integer() {
                return Err(format!("output dtype {dt} is not an integer type"));
            }
            one(out(dt, x.shape.to_vec()))
        }
        Op::DequantizeLinear { .. } => {
            let x = req(inputs, 0)?;
            let s = req(inputs, 1)?;
            // ONNX: the output has the scale's (float) type.
            let dt = if s.dtype.is_float() {
                s.dtype
            } else {
                DType::F32
            };
            one(out(dt, x.shape.to_vec()))
        }
        Op::Quantize => {
            let x = req(inputs, 0)?;
            let dt = declared
                .first()
                .copied()
                .flatten()
                .ok_or("output dtype is not derivable from the inputs and none is declared")?;
            one(out(dt, x.shape.to_vec()))
        }
        Op::Dequantize => {
            let x = req(inputs, 0)?;
            let dt = match declared.first().copied().flatten() {
                Some(d) if d.is_float() => d,
                _ => DType::F32,
            };
            one(out(dt, x.shape.to_vec()))
        }
    }
}

// ---------------------------------------------------------------------------------
// Small helpers

fn req<'a, 'b>(inputs: &'b [Option<InputFact<'a>>], i: usize) -> R<&'b InputFact<'a>> {
    inputs
        .get(i)
        .and_then(|x| x.as_ref())
        .ok_or_else(|| format!("input {i} is missing"))
}

fn opt<'a, 'b>(inputs: &'b [Option<InputFact<'a>>], i: usize) -> Option<&'b InputFact<'a>> {
    inputs.get(i).and_then(|x| x.as_ref())
}

fn out(dtype: DType, shape: Vec<usize>) -> OutputFact {
    OutputFact {
        dtype,
        shape,
        value: None,
    }
}

/// Normalizes a possibly negative axis into `0..rank`.
pub fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Normalizes a list of axes, rejecting duplicates.
fn norm_axes(axes: &[i64], rank: usize) -> R<Vec<usize>> {
    let mut v = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = norm_axis(a, rank)?;
        if v.contains(&n) {
            return Err(format!("axis {a} is listed twice"));
        }
        v.push(n);
    }
    Ok(v)
}

/// The axes a Reduce reduces (sorted), after ONNX's rules for absent/empty axes.
pub fn reduce_axes(rank: usize, axes: Option<&[i64]>, noop_with_empty_axes: bool) -> R<Vec<usize>> {
    match axes {
        Some(a) if !a.is_empty() => {
            let mut v = norm_axes(a, rank)?;
            v.sort_unstable();
            Ok(v)
        }
        _ if noop_with_empty_axes => Ok(vec![]),
        _ => Ok((0..rank).collect()),
    }
}

/// Numpy multidirectional broadcasting.
pub fn broadcast(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut s = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        s[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!("shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(s)
}

/// ONNX LSTM (4 gates) and GRU (3 gates): x, w, r, [b], [sequence_lens], [initial_h],
/// then for LSTM [initial_c], [p] -> y, y_h (, y_c).
fn rnn(
    inputs: &[Option<InputFact>],
    op: &str,
    gates: usize,
    h: usize,
    direction: RnnDirection,
    batch_first: bool,
) -> R<Vec<OutputFact>> {
    let x = req(inputs, 0)?;
    if !x.dtype.is_float() {
        return Err(format!("{op} needs a float input, got {}", x.dtype));
    }
    let &[a, b, i] = x.shape else {
        return Err(format!("x must have rank 3, got {:?}", x.shape));
    };
    let (seq, batch) = if batch_first { (b, a) } else { (a, b) };
    let d = direction.count();
    let g = h.checked_mul(gates).ok_or("hidden_size overflows")?;
    let st = state_shape(batch_first, d, batch, h);
    let mut want = vec![
        (1, "w", vec![d, g, i]),
        (2, "r", vec![d, g, h]),
        (3, "b", vec![d, 2 * g]),
        (5, "initial_h", st.clone()),
    ];
    if gates == 4 {
        want.push((6, "initial_c", st.clone()));
        want.push((7, "p", vec![d, 3 * h]));
    } else if inputs.len() > 6 {
        return Err(format!("{op} has at most 6 inputs"));
    }
    for (k, name, shape) in want {
        match opt(inputs, k) {
            Some(t) if t.shape != shape.as_slice() => {
                return Err(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    t.shape
                ))
            }
            None if k <= 2 => return Err(format!("{name} is missing")),
            _ => {}
        }
    }
    if let Some(l) = opt(inputs, 4) {
        if l.shape != [batch] || !l.dtype.is_integer() {
            return Err(format!(
                "sequence_lens must be integers of shape [{batch}], got {} {:?}",
                l.dtype, l.shape
            ));
        }
    }
    let y = if batch_first {
        vec![batch, seq, d, h]
    } else {
        vec![seq, d, batch, h]
    };
    let mut outs = vec![out(x.dtype, y), out(x.dtype, st.clone())];
    if gates == 4 {
        outs.push(out(x.dtype, st));
    }
    Ok(outs)
}

/// Shape of an RNN's initial and final states.
pub fn state_shape(batch_first: bool, dirs: usize, batch: usize, hidden: usize) -> Vec<usize> {
    if batch_first {
        vec![batch, dirs, hidden]
    } else {
        vec![dirs, batch, hidden]
    }
}

/// Where an ONNX Slice reads from, per axis of the input: the first index, the step
/// and the number of elements taken (the output shape).
#[derive(Debug, Clone, PartialEq)]
pub struct SliceGeometry {
    pub begin: Vec<i64>,
    pub step: Vec<i64>,
    pub count: Vec<usize>,
}

impl SliceGeometry {
    /// Calls `f` with the flat source index (under row-major `strides` of the input)
    /// of every output element, in output order.
    pub fn for_each_source(&self, strides: &[usize], mut f: impl FnMut(usize)) {
        if self.count.contains(&0) {
            return;
        }
        let r = self.count.len();
        let mut pos = vec![0usize; r];
        let flat = |pos: &[usize]| -> usize {
            (0..r)
                .map(|k| (self.begin[k] + pos[k] as i64 * self.step[k]) as usize * strides[k])
                .sum()
        };
        loop {
            f(flat(&pos));
            let mut d = r;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                pos[d] += 1;
                if pos[d] < self.count[d] {
                    break;
                }
                pos[d] = 0;
            }
        }
    }
}

/// ONNX Slice semantics: negative starts/ends count from the end; starts and ends are
/// clamped to `[0, dim]` (`[0, dim - 1]` and `[-1, dim - 1]` for negative steps), so
/// huge values are fine; an end of INT_MAX means "to the end" in either direction. Empty `axes` means `0..n`, empty
/// `steps` all 1.
pub fn slice_geometry(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: &[i64],
    steps: &[i64],
) -> R<SliceGeometry> {
    let n = starts.len();
    let axes: Vec<i64> = if axes.is_empty() {
        (0..n as i64).collect()
    } else {
        axes.to_vec()
    };
    let steps: Vec<i64> = if steps.is_empty() {
        vec![1; n]
    } else {
        steps.to_vec()
    };
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
        ));
    }
    let r = shape.len();
    let axes = norm_axes(&axes, r)?;
    let mut g = SliceGeometry {
        begin: vec![0; r],
        step: vec![1; r],
        count: shape.to_vec(),
    };
    for k in 0..n {
        let (a, s) = (axes[k], steps[k]);
        if s == 0 {
            return Err("slice step 0".into());
        }
        let d = shape[a] as i64;
        g.step[a] = s;
        if d == 0 {
            g.count[a] = 0;
            continue;
        }
        let fix = |x: i64| if x < 0 { x.saturating_add(d) } else { x };
        let (st, en) = if s > 0 {
            (fix(starts[k]).clamp(0, d), fix(ends[k]).clamp(0, d))
        } else if ends[k] == i64::MAX || ends[k] == i32::MAX as i64 {
            // An INT_MAX end is numpy's `None`, "to the end in the step's direction",
            // also for negative steps (onnxruntime; the clamp alone would give an
            // empty slice).
            (fix(starts[k]).clamp(0, d - 1), -1)
        } else {
            (
                fix(starts[k]).clamp(0, d - 1),
                fix(ends[k]).clamp(-1, d - 1),
            )
        };
        // Elements strictly between st and en, every |s|-th (ceil division).
        let span = if s > 0 { en - st } else { st - en };
        g.count[a] = if span > 0 {
            (span as u64).div_ceil(s.unsigned_abs()) as usize
        } else {
            0
        };
        g.begin[a] = st;
    }
    Ok(g)
}

/// Full permutation (empty = reverse), validated.
pub fn full_perm(perm: &[usize], rank: usize) -> R<Vec<usize>> {
    if perm.is_empty() {
        return Ok((0..rank).rev().collect());
    }
    if perm.len() != rank {
        return Err(format!(
            "perm {perm:?} has {} entries for rank {rank}",
            perm.len()
        ));
    }
    let mut seen = vec![false; rank];
    for &p in perm {
        if p >= rank || seen[p] {
            return Err(format!("perm {perm:?} is not a permutation of 0..{rank}"));
        }
        seen[p] = true;
    }
    Ok(perm.to_vec())
}

/// Numpy matmul shape (1-D operands are promoted and the added axis removed).
pub fn matmul_shape(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return Err(format!(
            "MatMul operands must have rank >= 1, got {a:?} and {b:?}"
        ));
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, ka) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if ka != kb {
        return Err(format!(
            "inner dimensions differ: {a:?} has K={ka}, {b:?} has K={kb}"
        ));
    }
    let mut s = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
        .map_err(|_| format!("batch dimensions of {a:?} and {b:?} do not broadcast"))?;
    if a.len() > 1 {
        s.push(m);
    }
    if b.len() > 1 {
        s.push(n);
    }
    Ok(s)
}

/// ONNX Reshape target (0 copies the input dim unless `allowzero`, one -1 is inferred).
pub fn reshape_shape(input: &[usize], target: &[i64], allowzero: bool) -> R<Vec<usize>> {
    let numel: usize = input.iter().product();
    let mut s = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 => {
                if infer.is_some() {
                    return Err(format!("shape {target:?} has more than one -1"));
                }
                infer = Some(i);
                s.push(1);
            }
            0 if !allowzero => {
                let d = *input.get(i).ok_or_else(|| {
                    format!("shape {target:?} copies dimension {i} (0) but the input {input:?} has none")
                })?;
                s.push(d);
            }
            t if t < 0 => return Err(format!("shape {target:?} has negative dimension {t}")),
            t => s.push(usize::try_from(t).map_err(|_| format!("dimension {t} too large"))?),
        }
    }
    if allowzero && infer.is_some() && target.contains(&0) {
        return Err(format!("shape {target:?} has both 0 and -1 with allowzero"));
    }
    let known = checked_numel(&s).map_err(|_| format!("shape {target:?} overflows"))?;
    if let Some(i) = infer {
        if known == 0 || !numel.is_multiple_of(known) {
            return Err(format!(
                "cannot reshape {input:?} ({numel} elements) to {target:?}"
            ));
        }
        s[i] = numel / known;
    } else if known != numel {
        return Err(format!(
            "cannot reshape {input:?} ({numel} elements) to {target:?} ({known} elements)"
        ));
    }
    Ok(s)
}

/// A resolved TFLite strided slice: for every *effective* dimension (the input's, with
/// ellipsis expanded and new axes inserted) the first index, the step and the number
/// of elements taken; and the output shape (shrunk axes removed).
#[derive(Debug, Clone, PartialEq)]
pub struct SlicePlan {
    /// Effective input shape (new axes are dimensions of size 1).
    pub dims: Vec<usize>,
    pub start: Vec<i64>,
    pub step: Vec<i64>,
    pub len: Vec<usize>,
    pub out_shape: Vec<usize>,
}

impl SlicePlan {
    pub fn numel(&self) -> usize {
        self.len.iter().product()
    }

    /// Calls `f` with the flat input index of every output element, in output order.
    pub fn for_each_source(&self, mut f: impl FnMut(usize)) {
        let r = self.dims.len();
        if self.len.contains(&0) {
            return;
        }
        let strides = strides_of(&self.dims);
        let mut idx = vec![0usize; r];
        loop {
            let mut src = 0i64;
            for d in 0..r {
                src += (self.start[d] + idx[d] as i64 * self.step[d]) * strides[d] as i64;
            }
            f(src as usize);
            // Odometer over the output positions, last axis fastest.
            let mut d = r;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < self.len[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
}

/// Resolves TFLite STRIDED_SLICE semantics (begin/end/ellipsis/new-axis/shrink masks,
/// negative indices, clamping, `offset`) against an input shape, as TFLite's
/// `BuildStridedSliceParams` + `StartForAxis`/`StopForAxis` do.
pub fn strided_slice_plan(a: &StridedSliceAttrs, input: &[usize]) -> R<SlicePlan> {
    let n = a.begin.len();
    if a.end.len() != n || a.strides.len() != n {
        return Err(format!(
            "begin/end/strides have {}/{}/{} entries",
            n,
            a.end.len(),
            a.strides.len()
        ));
    }
    if n > 32 {
        return Err(format!("{n} slice entries"));
    }
    let bit = |m: u32, i: usize| i < 32 && m & (1 << i) != 0;
    // New axes not covered by the ellipsis add dimensions.
    let num_add = (0..n)
        .filter(|&i| !bit(a.ellipsis_mask, i) && bit(a.new_axis_mask, i))
        .count();
    let rank = input.len();
    let named = (0..n)
        .filter(|&i| !bit(a.ellipsis_mask, i) && !bit(a.new_axis_mask, i))
        .count();
    if named > rank {
        return Err(format!(
            "slice spec names {named} dimensions of an input of rank {rank}"
        ));
    }
    let eff = rank + num_add;
    if eff > 32 {
        return Err(format!("slice of rank {eff}"));
    }
    // Expand the ellipsis over the dimensions the spec does not name.
    let (mut ell_mask, mut new_mask) = (0u64, 0u64);
    let (mut ell_start, mut expanded) = (eff, 0usize);
    let mut i = 0;
    while i < eff {
        if bit(a.ellipsis_mask, i) {
            ell_start = i;
            let end = (i + 1).max((i + 1 + num_add + rank).saturating_sub(n).min(eff));
            expanded = end - i - 1;
            while i < end {
                ell_mask |= 1 << i;
                i += 1;
            }
            continue;
        }
        if i >= expanded && bit(a.new_axis_mask, i - expanded) {
            new_mask |= 1 << i;
        }
        i += 1;
    }
    let mut dims = Vec::with_capacity(eff);
    let (mut start, mut step, mut len) = (Vec::new(), Vec::new(), Vec::new());
    let mut out_shape = Vec::new();
    let (mut added_ell, mut added_axes) = (0usize, 0usize);
    for i in 0..eff {
        // (begin, end, stride, begin masked, end masked, shrink) of effective dim i.
        let spec = if ell_mask & (1 << i) != 0 {
            added_ell = i.saturating_sub(ell_start);
            None
        } else if new_mask & (1 << i) != 0 {
            added_axes += 1;
            dims.push(1);
            start.push(0);
            step.push(1);
            len.push(1);
            out_shape.push(1);
            continue;
        } else if i >= n + expanded {
            None
        } else {
            let o = i - added_ell;
            let e = if a.offset {
                a.begin[o].checked_add(a.end[o]).ok_or("end overflows")?
            } else {
                a.end[o]
            };
            Some((
                a.begin[o],
                e,
                a.strides[o],
                bit(a.begin_mask, o),
                bit(a.end_mask, o),
                bit(a.shrink_axis_mask, o),
            ))
        };
        let d = *input
            .get(i - added_axes)
            .ok_or_else(|| format!("slice spec does not fit an input of rank {rank}"))?;
        dims.push(d);
        let (b, e, s, bm, em, shrink) = spec.unwrap_or((0, 0, 1, true, true, false));
        if s == 0 {
            return Err("stride 0".into());
        }
        let size = d as i64;
        let clamp = |v: i64| {
            if s > 0 {
                v.clamp(0, size)
            } else {
                v.clamp(-1, size - 1)
            }
        };
        let norm = |v: i64| if v < 0 { v + size } else { v };
        let first = if size == 0 {
            0
        } else if bm {
            if s > 0 {
                0
            } else {
                size - 1
            }
        } else {
            clamp(norm(b))
        };
        let stop = if size == 0 {
            0
        } else if shrink {
            first + 1
        } else if em {
            if s > 0 {
                size
            } else {
                -1
            }
        } else {
            clamp(norm(e))
        };
        if shrink && (first < 0 || first >= size) {
            return Err(format!(
                "shrunk axis {i} index {b} is out of range for size {d}"
            ));
        }
        // ceil((stop - first) / s), never negative.
        let span = stop - first;
        let s_abs = s.checked_abs().ok_or("stride out of range")?;
        let n_el = if (span > 0) == (s > 0) && span != 0 {
            ((span.abs() + s_abs - 1) / s_abs) as usize
        } else {
            0
        };
        start.push(first);
        step.push(s);
        len.push(n_el);
        if !shrink {
            out_shape.push(n_el);
        }
    }
    Ok(SlicePlan {
        dims,
        start,
        step,
        len,
        out_shape,
    })
}

/// Flat index into a tensor of shape `input` of the element that TILE puts at output
/// multi-index `out_idx` (every axis wraps around its input size).
pub fn tile_source_index(input: &[usize], out_idx: &[usize]) -> usize {
    let mut src = 0;
    for (d, &i) in input.iter().zip(out_idx) {
        src = src * d + i % d.max(&1);
    }
    src
}

fn unsqueeze_shape(input: &[usize], axes: &[i64]) -> R<Vec<usize>> {
    let r = input.len() + axes.len();
    let mut ax = norm_axes(axes, r)?;
    ax.sort_unstable();
    let mut s = Vec::with_capacity(r);
    let mut it = input.iter();
    for i in 0..r {
        if ax.contains(&i) {
            s.push(1);
        } else {
            s.push(*it.next().ok_or("axes inconsistent with rank")?);
        }
    }
    Ok(s)
}

/// Output shape of ONNX Pad (negative pads crop).
pub fn pad_shape(input: &[usize], pads: &[i64]) -> R<Vec<usize>> {
    let r = input.len();
    if pads.len() != 2 * r {
        return Err(format!(
            "pads {pads:?} must have {} entries for rank {r}",
            2 * r
        ));
    }
    input
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let n = d as i64 + pads[i] + pads[i + r];
            usize::try_from(n)
                .map_err(|_| format!("pads {pads:?} give axis {i} of size {d} a negative size {n}"))
        })
        .collect()
}

fn concat(inputs: &[Option<InputFact>], axis: i64) -> R<Vec<OutputFact>> {
    let xs: Vec<&InputFact> = inputs.iter().flatten().collect();
    let first = xs.first().ok_or("Concat has no inputs")?;
    let r = first.shape.len();
    let a = norm_axis(axis, r)?;
    let mut s = first.shape.to_vec();
    s[a] = 0;
    for (k, x) in xs.iter().enumerate() {
        if x.dtype != first.dtype {
            return Err(format!(
                "input {k} is {}, input 0 is {}",
                x.dtype, first.dtype
            ));
        }
        if x.shape.len() != r
            || x.shape
                .iter()
                .zip(first.shape)
                .enumerate()
                .any(|(i, (p, q))| i != a && p != q)
        {
            return Err(format!(
                "input {k} has shape {:?}, incompatible with {:?} along axis {a}",
                x.shape, first.shape
            ));
        }
        s[a] += x.shape[a];
    }
    // Value: known only if every input's value is known.
    let value = if a == 0 && r == 1 {
        let mut all = Vec::new();
        let mut ok = true;
        for x in &xs {
            match small_int(x) {
                Some(v) => all.extend(v),
                None => ok = false,
            }
        }
        (ok && all.len() <= VALUE_LIMIT).then(|| make_value(first.dtype, s.clone(), &all))
    } else {
        None
    };
    Ok(vec![OutputFact {
        dtype: first.dtype,
        shape: s,
        value,
    }])
}

// ---------------------------------------------------------------------------------
// Known values of small integer tensors

fn small_int(f: &InputFact) -> Option<Vec<i64>> {
    let v = f.value?;
    if !(v.dtype().is_integer() || v.dtype() == DType::Bool) || v.len() > VALUE_LIMIT {
        return None;
    }
    Some(v.to_i64_vec())
}

/// An integer tensor of `dtype` from i64 values (wrapping like a C cast).
fn make_value(dtype: DType, shape: Vec<usize>, v: &[i64]) -> Tensor {
    let data = match dtype {
        DType::I8 => TensorData::I8(v.iter().map(|&e| e as i8).collect()),
        DType::U8 => TensorData::U8(v.iter().map(|&e| e as u8).collect()),
        DType::I16 => TensorData::I16(v.iter().map(|&e| e as i16).collect()),
        DType::U16 => TensorData::U16(v.iter().map(|&e| e as u16).collect()),
        DType::I32 => TensorData::I32(v.iter().map(|&e| e as i32).collect()),
        DType::I4 => TensorData::I4(v.iter().map(|&e| e as i8).collect()),
        DType::U4 => TensorData::U4(v.iter().map(|&e| e as u8).collect()),
        DType::Bool => TensorData::Bool(v.iter().map(|&e| e != 0).collect()),
        DType::F32 => TensorData::F32(v.iter().map(|&e| e as f32).collect()),
        DType::F16 => TensorData::F16(v.iter().map(|&e| half::f16::from_f32(e as f32)).collect()),
        DType::I64 => TensorData::I64(v.to_vec()),
    };
    Tensor { shape, data }
}

/// Row-major strides of a shape.
fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn binary_value(kind: BinaryKind, a: &InputFact, b: &InputFact, shape: &[usize]) -> Option<Tensor> {
    if a.dtype != b.dtype || !a.dtype.is_integer() {
        return None;
    }
    let va = small_int(a)?;
    let vb = small_int(b)?;
    let n: usize = shape.iter().product();
    if n > VALUE_LIMIT {
        return None;
    }
    let sa = bcast_strides(a.shape, shape);
    let sb = bcast_strides(b.shape, shape);
    let os = strides_of(shape);
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let (mut ia, mut ib) = (0, 0);
        for d in 0..shape.len() {
            let c = (i / os[d]) % shape[d];
            ia += c * sa[d];
            ib += c * sb[d];
        }
        let (x, y) = (va[ia], vb[ib]);
        v.push(match kind {
            BinaryKind::Add => x.wrapping_add(y),
            BinaryKind::Sub => x.wrapping_sub(y),
            BinaryKind::Mul => x.wrapping_mul(y),
            BinaryKind::Div => x.checked_div(y)?,
            BinaryKind::Max => x.max(y),
            BinaryKind::Min => x.min(y),
            BinaryKind::Pow => x.checked_pow(u32::try_from(y).ok()?)?,
        });
    }
    Some(make_value(a.dtype, shape.to_vec(), &v))
}

/// Strides of `shape` broadcast to `out` (0 on broadcast axes), right-aligned.
pub fn bcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides_of(shape);
    let off = out.len() - shape.len();
    (0..out.len())
        .map(|d| {
            if d < off || shape[d - off] == 1 {
                0
            } else {
                st[d - off]
            }
        })
        .collect()
}

fn gather_value(d: &InputFact, i: &InputFact, axis: usize, shape: &[usize]) -> R<Option<Tensor>> {
    let (Some(dv), Some(iv)) = (small_int(d), small_int(i)) else {
        return Ok(None);
    };
    let n: usize = shape.iter().product();
    if n > VALUE_LIMIT {
        return Ok(None);
    }
    let outer: usize = d.shape[..axis].iter().product();
    let inner: usize = d.shape[axis + 1..].iter().product();
    let dim = d.shape[axis] as i64;
    let mut v = Vec::with_capacity(n);
    for o in 0..outer {
        for &ix in &iv {
            let j = if ix < 0 { ix + dim } else { ix };
            if j < 0 || j >= dim {
                return Err(format!("index {ix} out of range for axis of size {dim}"));
            }
            let base = (o * dim as usize + j as usize) * inner;
            v.extend_from_slice(&dv[base..base + inner]);
        }
    }
    Ok(Some(make_value(d.dtype, shape.to_vec(), &v)))
}

// ---------------------------------------------------------------------------------
// Sliding windows (conv, pool)

/// Resolved geometry of a sliding window over the spatial dims (conv, pool): one entry
/// per spatial dim. Output index `o` reads input positions `o*stride - pad_begin +
/// j*dilation` for `j < kernel` (positions outside `0..input` are padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub input: Vec<usize>,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    /// Declared end padding (ceil-mode pools may read past it; such positions count as
    /// outside the padded input).
    pub pads_end: Vec<usize>,
    pub output: Vec<usize>,
}

fn per_dim(v: &[usize], n: usize, what: &str) -> R<Vec<usize>> {
    if v.is_empty() {
        return Ok(vec![1; n]);
    }
    if v.len() != n {
        return Err(format!(
            "{what} {v:?} has {} entries for {n} spatial dims",
            v.len()
        ));
    }
    if v.contains(&0) {
        return Err(format!("{what} {v:?} contains 0"));
    }
    Ok(v.to_vec())
}

/// Resolves window geometry: output size per spatial dim, with ONNX's rules for
/// explicit pads, `auto_pad` and `ceil_mode` (pools).
pub fn window(
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
    auto_pad: AutoPad,
    ceil_mode: bool,
) -> R<Window> {
    window_impl(
        input, kernel, strides, dilations, pads, auto_pad, ceil_mode, false,
    )
}

#[allow(clippy::too_many_arguments)]
fn window_impl(
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
    auto_pad: AutoPad,
    ceil_mode: bool,
    pool: bool,
) -> R<Window> {
    let n = input.len();
    if kernel.len() != n {
        return Err(format!(
            "kernel {kernel:?} has {} dims for {n} spatial dims",
            kernel.len()
        ));
    }
    if kernel.contains(&0) {
        return Err(format!("kernel {kernel:?} contains 0"));
    }
    let strides = per_dim(strides, n, "strides")?;
    let dilations = per_dim(dilations, n, "dilations")?;
    let (mut pb, mut pe) = (vec![0; n], vec![0; n]);
    if auto_pad == AutoPad::NotSet && !pads.is_empty() {
        if pads.len() != 2 * n {
            return Err(format!("pads {pads:?} must have {} entries", 2 * n));
        }
        pb.copy_from_slice(&pads[..n]);
        pe.copy_from_slice(&pads[n..]);
    }
    let mut output = vec![0; n];
    for i in 0..n {
        let dk = (kernel[i] - 1)
            .checked_mul(dilations[i])
            .and_then(|x| x.checked_add(1))
            .ok_or("kernel extent overflows")?;
        let s = strides[i];
        match auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => {
                let o = input[i].div_ceil(s);
                let total = ((o.max(1) - 1) * s + dk).saturating_sub(input[i]);
                let small = total / 2;
                if auto_pad == AutoPad::SameUpper {
                    (pb[i], pe[i]) = (small, total - small);
                } else {
                    (pb[i], pe[i]) = (total - small, small);
                }
                output[i] = o;
            }
            AutoPad::Valid | AutoPad::NotSet => {
                let padded = input[i]
                    .checked_add(pb[i])
                    .and_then(|x| x.checked_add(pe[i]))
                    .ok_or("pads overflow")?;
                // Signed: with ceil_mode a window may start inside the input and run
                // past its end even when the padded input is shorter than the kernel
                // (onnxruntime accepts this).
                let span = padded as i64 - dk as i64;
                let si = s as i64;
                // Pools divide truncating toward zero like onnxruntime's integer
                // arithmetic (a window may hang past the end by less than a stride);
                // convolutions need the kernel inside the padded input.
                let mut o = if ceil_mode {
                    span.div_euclid(si) + i64::from(span.rem_euclid(si) != 0)
                } else {
                    span / si
                } + 1;
                if (span < 0 && !ceil_mode && !pool) || o < 1 {
                    return Err(format!(
                        "spatial dim {i}: padded input {padded} is smaller than the (dilated) kernel {dk}"
                    ));
                }
                // ONNX/PyTorch: the last window must start inside the input or the
                // begin padding, not in the end padding.
                if ceil_mode && o > 1 && (o - 1) * si >= (input[i] + pb[i]) as i64 {
                    o -= 1;
                }
                let o = o as usize;
                output[i] = o;
            }
        }
    }
    Ok(Window {
        input: input.to_vec(),
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pads_begin: pb,
        pads_end: pe,
        output,
    })
}

/// Splits an activation shape into (batch, channels, spatial) for a layout.
pub fn split_layout(shape: &[usize], layout: Layout) -> R<(usize, usize, Vec<usize>)> {
    if shape.len() < 3 {
        return Err(format!(
            "input must have a batch, a channel and at least one spatial dim, got {shape:?}"
        ));
    }
    Ok(match layout {
        Layout::Nchw => (shape[0], shape[1], shape[2..].to_vec()),
        Layout::Nhwc => (
            shape[0],
            shape[shape.len() - 1],
            shape[1..shape.len() - 1].to_vec(),
        ),
    })
}

/// Joins (batch, channels, spatial) into an activation shape for a layout.
pub fn join_layout(n: usize, c: usize, spatial: &[usize], layout: Layout) -> Vec<usize> {
    let mut s = vec![n];
    match layout {
        Layout::Nchw => {
            s.push(c);
            s.extend_from_slice(spatial);
        }
        Layout::Nhwc => {
            s.extend_from_slice(spatial);
            s.push(c);
        }
    }
    s
}

/// Resolved convolution: output channels `m`, input channels `c`, window geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub group: usize,
    pub window: Window,
}

/// Convolution geometry from the input and weight shapes.
pub fn conv_geometry(a: &ConvAttrs, x: &[usize], w: &[usize]) -> R<ConvGeometry> {
    let (n, c, sp) = split_layout(x, a.layout)?;
    if w.len() != x.len() {
        return Err(format!(
            "weights {w:?} have rank {}, input {x:?} has rank {}",
            w.len(),
            x.len()
        ));
    }
    let (m, cg, k) = match a.layout {
        Layout::Nchw => (w[0], w[1], w[2..].to_vec()),
        Layout::Nhwc => (w[0], w[w.len() - 1], w[1..w.len() - 1].to_vec()),
    };
    let g = a.group;
    if g == 0 {
        return Err("group is 0".into());
    }
    if cg.checked_mul(g) != Some(c) {
        if c % g != 0 {
            return Err(format!(
                "input has {c} channels, not divisible by group {g}"
            ));
        }
        return Err(format!(
            "input 0 has {} channels per group, weights expect {cg}",
            c / g
        ));
    }
    if m % g != 0 {
        return Err(format!(
            "weights have {m} output channels, not divisible by group {g}"
        ));
    }
    if !a.kernel_shape.is_empty() && a.kernel_shape != k {
        return Err(format!(
            "kernel_shape {:?} differs from the weights' kernel {k:?}",
            a.kernel_shape
        ));
    }
    let window = window(
        &sp,
        &k,
        &a.strides,
        &a.dilations,
        &a.pads,
        a.auto_pad,
        false,
    )?;
    Ok(ConvGeometry {
        batch: n,
        in_channels: c,
        out_channels: m,
        group: g,
        window,
    })
}

fn conv_shape(a: &ConvAttrs, x: &InputFact, w: &InputFact, b: Option<&InputFact>) -> R<Vec<usize>> {
    let g = conv_geometry(a, x.shape, w.shape)?;
    if let Some(b) = b {
        if b.shape != [g.out_channels] {
            return Err(format!(
                "bias has shape {:?}, expected [{}]",
                b.shape, g.out_channels
            ));
        }
    }
    Ok(join_layout(
        g.batch,
        g.out_channels,
        &g.window.output,
        a.layout,
    ))
}

/// Pool geometry: output shape and window.
pub fn pool_geometry(p: &PoolAttrs, x: &[usize]) -> R<(Vec<usize>, Window)> {
    let (n, c, sp) = split_layout(x, p.layout)?;
    if p.kernel_shape.is_empty() {
        return Err("kernel_shape is required".into());
    }
    let nd = sp.len();
    if p.kernel_shape.len() != nd {
        return Err(format!(
            "kernel_shape {:?} has {} dims for {nd} spatial dims",
            p.kernel_shape,
            p.kernel_shape.len()
        ));
    }
    let (pads, auto_pad) = match p.auto_pad {
        // As onnxruntime (and TFLite, which has no dilated pools): SAME pads come from
        // the *undilated* kernel, the output size then from the dilated one.
        AutoPad::SameUpper | AutoPad::SameLower => {
            let strides = per_dim(&p.strides, nd, "strides")?;
            let (mut pb, mut pe) = (Vec::with_capacity(nd), Vec::with_capacity(nd));
            for i in 0..nd {
                let legacy = sp[i].div_ceil(strides[i]);
                let need =
                    ((legacy.max(1) - 1) * strides[i] + p.kernel_shape[i]).saturating_sub(sp[i]);
                let head = if p.auto_pad == AutoPad::SameUpper {
                    need / 2
                } else {
                    need.div_ceil(2)
                };
                pb.push(head);
                pe.push(need - head);
            }
            pb.extend(pe);
            (pb, AutoPad::NotSet)
        }
        a => (p.pads.clone(), a),
    };
    let w = window_impl(
        &sp,
        &p.kernel_shape,
        &p.strides,
        &p.dilations,
        &pads,
        auto_pad,
        p.ceil_mode,
        true,
    )?;
    Ok((join_layout(n, c, &w.output, p.layout), w))
}

/// Transposed-convolution geometry: output shape, and the window of the equivalent
/// scatter (input index `i` writes output positions `i*stride - pad_begin + j*dilation`).
/// Weights are `[C, M/group, *kernel]` (Nchw) or `[C, *kernel, M/group]` (Nhwc).
/// Pads derived from `output_shape` or `auto_pad` follow the ONNX reference (odd total
/// padding: the extra one at the end, except SAME_LOWER).
pub fn conv_transpose_geometry(
    a: &ConvTransposeAttrs,
    x: &[usize],
    w: &[usize],
    bias: Option<&[usize]>,
) -> R<(Vec<usize>, ConvGeometry)> {
    let c_attrs = &a.conv;
    let (n, c, sp) = split_layout(x, c_attrs.layout)?;
    if w.len() != x.len() {
        return Err(format!(
            "weights {w:?} have rank {}, input {x:?} has rank {}",
            w.len(),
            x.len()
        ));
    }
    let (wc, mg, k) = match c_attrs.layout {
        Layout::Nchw => (w[0], w[1], w[2..].to_vec()),
        Layout::Nhwc => (w[0], w[w.len() - 1], w[1..w.len() - 1].to_vec()),
    };
    let g = c_attrs.group;
    if g == 0 {
        return Err("group is 0".into());
    }
    if wc != c {
        return Err(format!("input has {c} channels, weights expect {wc}"));
    }
    if c % g != 0 {
        return Err(format!(
            "input has {c} channels, not divisible by group {g}"
        ));
    }
    let m = mg * g;
    if let Some(b) = bias {
        if b != [m] {
            return Err(format!("bias has shape {b:?}, expected [{m}]"));
        }
    }
    if !c_attrs.kernel_shape.is_empty() && c_attrs.kernel_shape != k {
        return Err(format!(
            "kernel_shape {:?} differs from the weights' kernel {k:?}",
            c_attrs.kernel_shape
        ));
    }
    let nd = sp.len();
    if k.len() != nd || k.contains(&0) {
        return Err(format!("bad kernel {k:?}"));
    }
    let strides = per_dim(&c_attrs.strides, nd, "strides")?;
    let dilations = per_dim(&c_attrs.dilations, nd, "dilations")?;
    let adj: Vec<usize> = if a.output_padding.is_empty() {
        vec![0; nd]
    } else if a.output_padding.len() == nd {
        a.output_padding.clone()
    } else {
        return Err(format!(
            "output_padding {:?} has {} entries for {nd} spatial dims",
            a.output_padding,
            a.output_padding.len()
        ));
    };
    let (mut pb, mut pe) = (vec![0usize; nd], vec![0usize; nd]);
    if !c_attrs.pads.is_empty() {
        if c_attrs.pads.len() != 2 * nd {
            return Err(format!(
                "pads {:?} must have {} entries",
                c_attrs.pads,
                2 * nd
            ));
        }
        pb.copy_from_slice(&c_attrs.pads[..nd]);
        pe.copy_from_slice(&c_attrs.pads[nd..]);
    }
    let out_shape = match &a.output_shape {
        Some(o) if o.len() == nd => Some(o.clone()),
        // ONNX allows output_shape to include N and C.
        Some(o) if o.len() == nd + 2 => Some(match c_attrs.layout {
            Layout::Nchw => o[2..].to_vec(),
            Layout::Nhwc => o[1..nd + 1].to_vec(),
        }),
        Some(o) => {
            return Err(format!(
                "output_shape {o:?} has {} entries for {nd} spatial dims",
                o.len()
            ))
        }
        None => None,
    };
    let mut output = vec![0; nd];
    for i in 0..nd {
        let dk = (k[i] - 1) * dilations[i] + 1;
        if sp[i] == 0 {
            return Err(format!("spatial dim {i} is empty"));
        }
        let full = (sp[i] - 1)
            .checked_mul(strides[i])
            .and_then(|v| v.checked_add(adj[i] + dk))
            .ok_or("output size overflows")?;
        let target = match (&out_shape, c_attrs.auto_pad) {
            (Some(o), _) => Some(o[i]),
            (None, AutoPad::SameUpper | AutoPad::SameLower) => Some(sp[i] * strides[i]),
            _ => None,
        };
        if let Some(t) = target {
            let total = full.saturating_sub(t);
            // As the ONNX reference and onnxruntime 1.32: SAME_LOWER puts the odd pad
            // at the beginning, SAME_UPPER (and explicit output_shape) at the end.
            if c_attrs.auto_pad == AutoPad::SameLower {
                (pb[i], pe[i]) = (total - total / 2, total / 2);
            } else {
                (pb[i], pe[i]) = (total / 2, total - total / 2);
            }
        }
        output[i] = full
            .checked_sub(pb[i] + pe[i])
            .filter(|&o| o > 0)
            .ok_or_else(|| {
                format!(
                    "pads {:?} leave no output along spatial dim {i}",
                    c_attrs.pads
                )
            })?;
        if let Some(t) = target {
            if out_shape.is_some() && output[i] != t {
                // output_shape larger than the full extent: onnxruntime pads the end.
                output[i] = t;
            }
        }
    }
    let shape = join_layout(n, m, &output, c_attrs.layout);
    Ok((
        shape,
        ConvGeometry {
            batch: n,
            in_channels: c,
            out_channels: m,
            group: g,
            window: Window {
                input: sp,
                kernel: k,
                strides,
                dilations,
                pads_begin: pb,
                pads_end: pe,
                output,
            },
        },
    ))
}

// ---------------------------------------------------------------------------------
// Resize

/// Resize output shape and the effective per-axis scale (over all axes) that the
/// coordinate transforms use. `scales` give `floor(in * scale)` (f32 arithmetic, as
/// onnxruntime); `sizes` give the sizes directly, or with a keep-aspect-ratio policy one
/// common scale over `axes` and `round(in * scale)`.
pub fn resize_geometry(a: &ResizeAttrs, x: &[usize]) -> R<(Vec<usize>, Vec<f32>)> {
    let r = x.len();
    let axes = match &a.axes {
        Some(ax) => norm_axes(ax, r)?,
        None => (0..r).collect(),
    };
    let mut shape = x.to_vec();
    let mut scales = vec![1.0f32; r];
    match (&a.scales, &a.sizes) {
        (Some(s), None) => {
            if s.len() != axes.len() {
                return Err(format!(
                    "scales {s:?} have {} entries for {} axes",
                    s.len(),
                    axes.len()
                ));
            }
            for (&ax, &sc) in axes.iter().zip(s) {
                if !(sc > 0.0 && sc.is_finite()) {
                    return Err(format!("scale {sc} must be positive"));
                }
                let o = (x[ax] as f32 * sc).floor();
                if o >= 1e15 {
                    return Err(format!("scale {sc} gives an absurd size"));
                }
                shape[ax] = o as usize;
                scales[ax] = sc;
            }
        }
        (None, Some(sz)) => {
            if sz.len() != axes.len() {
                return Err(format!(
                    "sizes {sz:?} have {} entries for {} axes",
                    sz.len(),
                    axes.len()
                ));
            }
            match a.keep_aspect_ratio_policy {
                AspectRatioPolicy::Stretch => {
                    for (&ax, &o) in axes.iter().zip(sz) {
                        shape[ax] = o;
                        scales[ax] = if x[ax] == 0 {
                            1.0
                        } else {
                            o as f32 / x[ax] as f32
                        };
                    }
                }
                p => {
                    let ratios = axes
                        .iter()
                        .zip(sz)
                        .filter(|(&ax, _)| x[ax] > 0)
                        .map(|(&ax, &o)| o as f32 / x[ax] as f32);
                    let sc = if p == AspectRatioPolicy::NotLarger {
                        ratios.fold(f32::INFINITY, f32::min)
                    } else {
                        ratios.fold(0.0f32, f32::max)
                    };
                    let sc = if sc.is_finite() { sc } else { 1.0 };
                    for &ax in &axes {
                        shape[ax] = (sc * x[ax] as f32).round() as usize;
                        scales[ax] = sc;
                    }
                }
            }
        }
        _ => return Err("exactly one of scales and sizes must be set".into()),
    }
    if let Some(roi) = &a.roi {
        if a.coord == CoordTransform::TfCropAndResize
            && roi.len() != 2 * axes.len()
            && roi.len() != 2 * r
        {
            return Err(format!("roi {roi:?} must have {} entries", 2 * axes.len()));
        }
    }
    Ok((shape, scales))
}

#[cfg(test)]
mod tests;
