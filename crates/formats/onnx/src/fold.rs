//! Constant folding at import: evaluates ONNX nodes whose inputs are all constants
//! (Constant, shape arithmetic as PyTorch exports it: Shape/Gather/Concat/Unsqueeze/
//! Slice/Cast/..., ConstantOfShape, Range, Expand). Only data movement and exact
//! integer/f32 element-wise arithmetic are evaluated, so a folded constant is exactly
//! what the runtime would compute.
//!
//! Every output size is checked before it is allocated.

use crate::attrs::NodeView;
use crate::error::Result;
use crate::tensor::{dtype_from_onnx, tensor_from_proto};
use edgeopt_ir::{checked_numel, DType, Tensor, TensorData};
use half::f16;

/// Largest element count a generating op (ConstantOfShape, Range, Expand, broadcasts)
/// may fold to; data movement ops may also reach the size of their inputs.
const MAX_GENERATED: usize = 1 << 20;

type Folded = Option<Result<Vec<Tensor>>>;

/// Evaluates `v` on constant inputs. `None`: this node is not folded here (it is
/// converted to an IR node instead); `Some(Err)`: the node is invalid.
/// `static_shape` is the input's shape for `Shape`/`Size` when it is static.
pub fn eval(
    v: &NodeView,
    ins: &[Option<&Tensor>],
    static_shape: Option<&[usize]>,
    opset: i64,
) -> Folded {
    let r = match v.op_type {
        "Constant" => constant(v).map(|t| vec![t]),
        "Shape" => {
            let s = static_shape?;
            shape_op(v, s).map(|t| vec![t])
        }
        "Size" => {
            let s = static_shape?;
            let n = checked_numel(s).ok()?;
            Ok(vec![
                Tensor::new(vec![], TensorData::I64(vec![n as i64])).ok()?
            ])
        }
        _ => {
            // Every present input must be a constant from here on.
            let first = ins.first().copied().flatten();
            let limit = ins
                .iter()
                .flatten()
                .map(|t| t.len())
                .sum::<usize>()
                .max(MAX_GENERATED);
            match v.op_type {
                "Identity" => Ok(vec![first?.clone()]),
                "Dropout" if v.present_outputs() == 1 => Ok(vec![first?.clone()]),
                "Cast" => {
                    let to = dtype_from_onnx(v.i("to", 0).ok()? as i32).ok()?;
                    Ok(vec![cast(first?, to)])
                }
                "CastLike" => Ok(vec![cast(first?, ins.get(1).copied().flatten()?.dtype())]),
                "Reshape" => reshape(v, first?, ins.get(1).copied().flatten()?).map(|t| vec![t]),
                "Flatten" => flatten(v, first?).map(|t| vec![t]),
                "Squeeze" => {
                    let axes = axes_of(v, ins, opset >= 13)?;
                    squeeze(v, first?, axes).map(|t| vec![t])
                }
                "Unsqueeze" => {
                    let axes = axes_of(v, ins, opset >= 13)?.unwrap_or_default();
                    unsqueeze(v, first?, &axes).map(|t| vec![t])
                }
                "Transpose" => transpose(v, first?).map(|t| vec![t]),
                "Gather" => {
                    gather(v, first?, ins.get(1).copied().flatten()?, limit)?.map(|t| vec![t])
                }
                "Concat" => {
                    let parts: Option<Vec<&Tensor>> = ins.iter().copied().collect();
                    concat(v, &parts?)?.map(|t| vec![t])
                }
                "Slice" => slice(v, ins, opset)?.map(|t| vec![t]),
                "Expand" => expand(v, first?, ins.get(1).copied().flatten()?)?.map(|t| vec![t]),
                "ConstantOfShape" => constant_of_shape(v, first?).map(|t| vec![t]),
                "Range" => range(v, ins)?.map(|t| vec![t]),
                "Mod" => {
                    let (a, b) = (first?, ins.get(1).copied().flatten()?);
                    // fmod=1: C fmod (sign of the dividend); fmod=0: integer modulo with
                    // the sign of the divisor (Python), only defined on integers.
                    let op = if v.i("fmod", 0).ok()? != 0 {
                        "FMod"
                    } else {
                        "Mod"
                    };
                    arith(op, a, b)?.map(|t| vec![t])
                }
                "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" => {
                    let (a, b) = match ins {
                        [Some(a)] => return Some(Ok(vec![(*a).clone()])),
                        [Some(a), Some(b)] => (*a, *b),
                        _ => return None,
                    };
                    arith(v.op_type, a, b)?.map(|t| vec![t])
                }
                "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" => {
                    let (a, b) = (first?, ins.get(1).copied().flatten()?);
                    compare(v.op_type, a, b)?.map(|t| vec![t])
                }
                "Not" => match &first?.data {
                    TensorData::Bool(x) => Tensor::new(
                        first?.shape.clone(),
                        TensorData::Bool(x.iter().map(|b| !b).collect()),
                    )
                    .map(|t| vec![t])
                    .map_err(Into::into),
                    _ => return None,
                },
                "Neg" => neg(first?)?.map(|t| vec![t]),
                "Where" => {
                    let (c, a, b) = (
                        first?,
                        ins.get(1).copied().flatten()?,
                        ins.get(2).copied().flatten()?,
                    );
                    select(v, c, a, b)?.map(|t| vec![t])
                }
                _ => return None,
            }
        }
    };
    Some(r)
}

fn constant(v: &NodeView) -> Result<Tensor> {
    if let Some(t) = v.t("value")? {
        return tensor_from_proto(t);
    }
    if let Some(f) = v.f_opt("value_float")? {
        return Ok(Tensor::scalar_f32(f));
    }
    if let Some(fs) = v.floats("value_floats")? {
        return Ok(Tensor::from_f32(vec![fs.len()], fs.to_vec())?);
    }
    if let Some(i) = v.i_opt("value_int")? {
        return Ok(Tensor::from_i64(vec![], vec![i])?);
    }
    if let Some(is) = v.ints("value_ints")? {
        return Ok(Tensor::from_i64(vec![is.len()], is.to_vec())?);
    }
    if v.has("sparse_value") {
        return Err(v.err("sparse constants are not supported"));
    }
    if v.has("value_string") || v.has("value_strings") {
        return Err(v.err("string constants are not supported"));
    }
    Err(v.err("Constant has no value attribute"))
}

/// `Shape` with the `start`/`end` attributes of opset 15.
fn shape_op(v: &NodeView, s: &[usize]) -> Result<Tensor> {
    let r = s.len() as i64;
    let clamp = |x: i64| -> usize { (if x < 0 { x + r } else { x }).clamp(0, r) as usize };
    let start = clamp(v.i("start", 0)?);
    let end = clamp(v.i("end", r)?);
    let dims: Vec<i64> = s
        .get(start..end.max(start))
        .unwrap_or(&[])
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(Tensor::from_i64(vec![dims.len()], dims)?)
}

/// Normalizes an axis against `rank`.
fn norm_axis(v: &NodeView, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(v.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// Axes from the attribute (`from_input == false`) or from input 1.
fn axes_of(v: &NodeView, ins: &[Option<&Tensor>], from_input: bool) -> Option<Option<Vec<i64>>> {
    if from_input {
        match ins.get(1).copied().flatten() {
            None => Some(None),
            Some(t) if is_int(t) => Some(Some(t.to_i64_vec())),
            Some(_) => None,
        }
    } else {
        v.axes("axes").ok()
    }
}

fn is_int(t: &Tensor) -> bool {
    matches!(t.dtype(), DType::I64 | DType::I32)
}

/// Same data as `t` with a new shape.
fn with_shape(t: &Tensor, shape: Vec<usize>) -> Result<Tensor> {
    Ok(t.clone().reshaped(shape)?)
}

pub fn cast(t: &Tensor, to: DType) -> Tensor {
    let n = t.len();
    let d = &t.data;
    let data = if d.dtype() == to {
        d.clone()
    } else {
        // Float -> int truncates toward zero, then wraps like a C cast (what ORT does);
        // int -> int wraps.
        let int = |i: usize| -> i64 {
            match d {
                TensorData::F32(_) | TensorData::F16(_) => {
                    let x = d.get_f64(i);
                    if x.is_nan() {
                        0
                    } else {
                        x.trunc() as i64
                    }
                }
                _ => d.get_i64(i),
            }
        };
        match to {
            DType::F32 => TensorData::F32((0..n).map(|i| d.get_f64(i) as f32).collect()),
            DType::F16 => TensorData::F16((0..n).map(|i| f16::from_f64(d.get_f64(i))).collect()),
            DType::Bool => TensorData::Bool((0..n).map(|i| d.get_f64(i) != 0.0).collect()),
            DType::I8 => TensorData::I8((0..n).map(|i| int(i) as i8).collect()),
            DType::U8 => TensorData::U8((0..n).map(|i| int(i) as u8).collect()),
            DType::I16 => TensorData::I16((0..n).map(|i| int(i) as i16).collect()),
            DType::U16 => TensorData::U16((0..n).map(|i| int(i) as u16).collect()),
            DType::I32 => TensorData::I32((0..n).map(|i| int(i) as i32).collect()),
            DType::I64 => TensorData::I64((0..n).map(int).collect()),
            DType::I4 => TensorData::I4((0..n).map(|i| int(i).clamp(-8, 7) as i8).collect()),
            DType::U4 => TensorData::U4((0..n).map(|i| int(i).clamp(0, 15) as u8).collect()),
        }
    };
    Tensor {
        shape: t.shape.clone(),
        data,
    }
}

/// ONNX Reshape target resolution (0 copies the input dim unless `allowzero`, one -1).
pub fn reshape_target(
    v: &NodeView,
    in_shape: &[usize],
    target: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>> {
    let numel = checked_numel(in_shape)?;
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *in_shape
                    .get(i)
                    .ok_or_else(|| v.err(format!("shape {target:?}: 0 at {i} has no input dim")))?,
            ),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(v.err(format!("invalid target shape {target:?}"))),
        }
    }
    let known = out
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != infer)
        .try_fold(1usize, |a, (_, &d)| a.checked_mul(d))
        .ok_or_else(|| v.err(format!("target shape {target:?} overflows")))?;
    if let Some(i) = infer {
        if known == 0 || numel % known != 0 {
            return Err(v.err(format!("cannot reshape {in_shape:?} to {target:?}")));
        }
        out[i] = numel / known;
    } else if known != numel {
        return Err(v.err(format!("cannot reshape {in_shape:?} to {target:?}")));
    }
    Ok(out)
}

fn reshape(v: &NodeView, t: &Tensor, shape: &Tensor) -> Result<Tensor> {
    if !is_int(shape) {
        return Err(v.err("the shape input must be int64"));
    }
    let target = shape.to_i64_vec();
    let out = reshape_target(v, &t.shape, &target, v.i("allowzero", 0)? != 0)?;
    with_shape(t, out)
}

fn flatten(v: &NodeView, t: &Tensor) -> Result<Tensor> {
    let r = t.rank();
    let axis = v.i("axis", 1)?;
    let a = if axis < 0 { axis + r as i64 } else { axis };
    if a < 0 || a > r as i64 {
        return Err(v.err(format!("axis {axis} is out of range for rank {r}")));
    }
    let a = a as usize;
    let outer: usize = t.shape[..a].iter().product();
    let inner: usize = t.shape[a..].iter().product();
    with_shape(t, vec![outer, inner])
}

fn squeeze(v: &NodeView, t: &Tensor, axes: Option<Vec<i64>>) -> Result<Tensor> {
    let r = t.rank();
    let shape: Vec<usize> = match axes.filter(|a| !a.is_empty()) {
        None => t.shape.iter().copied().filter(|&d| d != 1).collect(),
        Some(axes) => {
            let mut drop = vec![false; r];
            for a in axes {
                let a = norm_axis(v, a, r)?;
                if t.shape[a] != 1 {
                    return Err(v.err(format!("cannot squeeze axis {a} of shape {:?}", t.shape)));
                }
                drop[a] = true;
            }
            t.shape
                .iter()
                .zip(drop)
                .filter(|(_, d)| !d)
                .map(|(&s, _)| s)
                .collect()
        }
    };
    with_shape(t, shape)
}

fn unsqueeze(v: &NodeView, t: &Tensor, axes: &[i64]) -> Result<Tensor> {
    let r = t.rank() + axes.len();
    let mut ins = vec![false; r];
    for &a in axes {
        let a = norm_axis(v, a, r)?;
        if ins[a] {
            return Err(v.err(format!("axis {a} repeated in {axes:?}")));
        }
        ins[a] = true;
    }
    let mut src = t.shape.iter();
    let shape = ins
        .iter()
        .map(|&one| {
            if one {
                1
            } else {
                src.next().copied().unwrap_or(1)
            }
        })
        .collect();
    with_shape(t, shape)
}

/// Row-major strides.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(shape[i + 1]);
    }
    s
}

/// Elements of `d` at the given flat indices (all in range by construction).
fn take(d: &TensorData, idx: &[usize]) -> TensorData {
    macro_rules! pick {
        ($($var:ident),*) => {
            match d {
                $(TensorData::$var(x) => TensorData::$var(idx.iter().map(|&i| x[i]).collect()),)*
            }
        };
    }
    pick!(F32, F16, I8, U8, I16, U16, I32, I64, Bool, I4, U4)
}

/// `a` followed by `b` (None if the dtypes differ).
fn append(a: &TensorData, b: &TensorData) -> Option<TensorData> {
    macro_rules! cat {
        ($($var:ident),*) => {
            match (a, b) {
                $((TensorData::$var(x), TensorData::$var(y)) => {
                    let mut v = Vec::with_capacity(x.len() + y.len());
                    v.extend_from_slice(x);
                    v.extend_from_slice(y);
                    TensorData::$var(v)
                })*
                _ => return None,
            }
        };
    }
    Some(cat!(F32, F16, I8, U8, I16, U16, I32, I64, Bool, I4, U4))
}

/// Visits every multi-index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut k = shape.len();
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

fn transpose(v: &NodeView, t: &Tensor) -> Result<Tensor> {
    let r = t.rank();
    let perm: Vec<usize> = match v.ints("perm")? {
        None => (0..r).rev().collect(),
        Some(p) => p.iter().map(|&x| x as usize).collect(),
    };
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
    {
        return Err(v.err(format!("perm {perm:?} is not a permutation of rank {r}")));
    }
    let st = strides(&t.shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    let mut idx = Vec::with_capacity(t.len());
    for_each_index(&out_shape, |o| {
        idx.push(o.iter().zip(&perm).map(|(&i, &p)| i * st[p]).sum());
    });
    Ok(Tensor::new(out_shape, take(&t.data, &idx))?)
}

fn gather(v: &NodeView, data: &Tensor, indices: &Tensor, limit: usize) -> Option<Result<Tensor>> {
    if !is_int(indices) {
        return None;
    }
    Some((|| {
        let r = data.rank();
        let axis = norm_axis(v, v.i("axis", 0)?, r)?;
        let dim = data.shape[axis];
        let outer: usize = data.shape[..axis].iter().product();
        let inner: usize = data.shape[axis + 1..].iter().product();
        let mut out_shape = data.shape[..axis].to_vec();
        out_shape.extend_from_slice(&indices.shape);
        out_shape.extend_from_slice(&data.shape[axis + 1..]);
        let n = checked_numel(&out_shape)?;
        if n > limit {
            return Err(v.err(format!("folded output {out_shape:?} is too large")));
        }
        let ix = indices.to_i64_vec();
        let mut src = Vec::with_capacity(ix.len());
        for &i in &ix {
            let j = if i < 0 { i + dim as i64 } else { i };
            if j < 0 || j >= dim as i64 {
                return Err(v.err(format!(
                    "index {i} is out of range for a dimension of {dim}"
                )));
            }
            src.push(j as usize);
        }
        let mut idx = Vec::with_capacity(n);
        for o in 0..outer {
            for &j in &src {
                for k in 0..inner {
                    idx.push((o * dim + j) * inner + k);
                }
            }
        }
        Ok(Tensor::new(out_shape, take(&data.data, &idx))?)
    })())
}

fn concat(v: &NodeView, parts: &[&Tensor]) -> Option<Result<Tensor>> {
    let first = parts.first()?;
    let mut all = first.data.clone();
    for p in &parts[1..] {
        all = append(&all, &p.data)?;
    }
    Some((|| {
        let r = first.rank();
        let axis = norm_axis(v, v.i("axis", 0)?, r)?;
        let mut out_shape = first.shape.clone();
        out_shape[axis] = 0;
        for p in parts {
            let same = p.rank() == r
                && p.shape
                    .iter()
                    .enumerate()
                    .all(|(k, &d)| k == axis || d == first.shape[k]);
            if !same {
                return Err(v.err(format!(
                    "inputs of shapes {:?} and {:?} cannot be concatenated on axis {axis}",
                    first.shape, p.shape
                )));
            }
            out_shape[axis] += p.shape[axis];
        }
        let outer: usize = first.shape[..axis].iter().product();
        let mut idx = Vec::with_capacity(all.len());
        let mut base = 0;
        let mut bases = Vec::new();
        for p in parts {
            bases.push(base);
            base += p.len();
        }
        for o in 0..outer {
            for (p, &b) in parts.iter().zip(&bases) {
                let chunk: usize = p.shape[axis..].iter().product();
                idx.extend(b + o * chunk..b + (o + 1) * chunk);
            }
        }
        Ok(Tensor::new(out_shape, take(&all, &idx))?)
    })())
}

/// ONNX Slice (inputs from opset 10, attributes before).
fn slice(v: &NodeView, ins: &[Option<&Tensor>], opset: i64) -> Option<Result<Tensor>> {
    let data = ins.first().copied().flatten()?;
    let get = |k: usize| -> Option<Option<Vec<i64>>> {
        match ins.get(k).copied().flatten() {
            None => Some(None),
            Some(t) if is_int(t) => Some(Some(t.to_i64_vec())),
            Some(_) => None,
        }
    };
    let (starts, ends, axes, steps) = if opset >= 10 {
        (get(1)??, get(2)??, get(3)?, get(4)?)
    } else {
        (
            v.ints("starts").ok()??.to_vec(),
            v.ints("ends").ok()??.to_vec(),
            v.ints("axes").ok()?.map(|a| a.to_vec()),
            None,
        )
    };
    Some((|| {
        let axes = axes.unwrap_or_default();
        let steps = steps.unwrap_or_default();
        let g = edgeopt_ir::shape::slice_geometry(&data.shape, &starts, &ends, &axes, &steps)
            .map_err(|m| v.err(m))?;
        let mut idx = Vec::with_capacity(checked_numel(&g.count)?);
        g.for_each_source(&strides(&data.shape), |i| idx.push(i));
        Ok(Tensor::new(g.count, take(&data.data, &idx))?)
    })())
}

/// Numpy broadcast of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let y = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (x, y) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// For each element of `out` (row-major), the flat index in a tensor of shape `src`
/// broadcast to it.
fn broadcast_index(out: &[usize], src: &[usize]) -> Vec<usize> {
    let st = strides(src);
    let off = out.len() - src.len();
    let mut idx = Vec::with_capacity(checked_numel(out).unwrap_or(0));
    for_each_index(out, |o| {
        idx.push(
            src.iter()
                .enumerate()
                .map(|(k, &d)| if d == 1 { 0 } else { o[k + off] * st[k] })
                .sum(),
        );
    });
    idx
}

/// Broadcast shape of `a` and `b`, if it is small enough to fold.
fn fold_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let s = broadcast(a, b)?;
    (checked_numel(&s).ok()? <= MAX_GENERATED).then_some(s)
}

fn expand(v: &NodeView, t: &Tensor, shape: &Tensor) -> Option<Result<Tensor>> {
    if !is_int(shape) {
        return None;
    }
    let target: Vec<i64> = shape.to_i64_vec();
    if target.iter().any(|&d| d < 0) {
        return Some(Err(v.err(format!("invalid shape {target:?}"))));
    }
    let target: Vec<usize> = target.iter().map(|&d| d as usize).collect();
    let Some(out) = broadcast(&t.shape, &target) else {
        return Some(Err(
            v.err(format!("cannot expand {:?} to {target:?}", t.shape))
        ));
    };
    if checked_numel(&out).ok()? > MAX_GENERATED {
        return Some(Err(
            v.err(format!("expanding to {out:?} is too large to fold"))
        ));
    }
    let idx = broadcast_index(&out, &t.shape);
    Some(Tensor::new(out, take(&t.data, &idx)).map_err(Into::into))
}

fn constant_of_shape(v: &NodeView, shape: &Tensor) -> Result<Tensor> {
    if !is_int(shape) {
        return Err(v.err("the shape input must be int64"));
    }
    let dims: Vec<i64> = shape.to_i64_vec();
    if dims.iter().any(|&d| d < 0) {
        return Err(v.err(format!("invalid shape {dims:?}")));
    }
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let n = checked_numel(&dims)?;
    if n > MAX_GENERATED {
        return Err(v.err(format!("a constant of shape {dims:?} is too large to fold")));
    }
    let value = match v.t("value")? {
        Some(p) => tensor_from_proto(p)?,
        None => Tensor::scalar_f32(0.0),
    };
    if value.len() != 1 {
        return Err(v.err("value must hold one element"));
    }
    Ok(Tensor::new(dims, take(&value.data, &vec![0; n]))?)
}

fn range(v: &NodeView, ins: &[Option<&Tensor>]) -> Option<Result<Tensor>> {
    let (s, l, d) = match ins {
        [Some(s), Some(l), Some(d)] => (*s, *l, *d),
        _ => return None,
    };
    if s.len() != 1 || l.len() != 1 || d.len() != 1 {
        return Some(Err(v.err("start, limit and delta must be scalars")));
    }
    let too_big = || v.err("the range is too large to fold");
    Some(match (&s.data, &l.data, &d.data) {
        (TensorData::F32(s), TensorData::F32(l), TensorData::F32(d)) => {
            let (s, l, d) = (s[0], l[0], d[0]);
            let n = ((l - s) / d).ceil();
            if !n.is_finite() {
                return Some(Err(v.err("invalid range")));
            }
            let n = n.max(0.0);
            if n > MAX_GENERATED as f32 {
                return Some(Err(too_big()));
            }
            let n = n as usize;
            // ORT accumulates start + i * delta.
            Tensor::from_f32(vec![n], (0..n).map(|i| s + i as f32 * d).collect())
                .map_err(Into::into)
        }
        (a, b, c) if a.dtype() == b.dtype() && b.dtype() == c.dtype() && is_int(s) => {
            let (s0, l0, d0) = (a.get_i64(0), b.get_i64(0), c.get_i64(0));
            if d0 == 0 {
                return Some(Err(v.err("delta is 0")));
            }
            let span = (l0 as i128) - (s0 as i128);
            let n = if (span > 0) == (d0 > 0) && span != 0 {
                (span.abs() + d0.abs() as i128 - 1) / d0.abs() as i128
            } else {
                0
            };
            if n > MAX_GENERATED as i128 {
                return Some(Err(too_big()));
            }
            let vals: Vec<i64> = (0..n as i64)
                .map(|i| s0.wrapping_add(i.wrapping_mul(d0)))
                .collect();
            let t = Tensor::from_i64(vec![n as usize], vals).map(|t| cast(&t, a.dtype()));
            t.map_err(Into::into)
        }
        _ => return None,
    })
}

fn arith(op: &str, a: &Tensor, b: &Tensor) -> Option<Result<Tensor>> {
    let out = fold_shape(&a.shape, &b.shape)?;
    let ia = broadcast_index(&out, &a.shape);
    let ib = broadcast_index(&out, &b.shape);
    let data = match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            if op == "Mod" {
                return None; // float Mod needs fmod=1
            }
            let f = |p: f32, q: f32| match op {
                "FMod" => p % q,
                "Add" => p + q,
                "Sub" => p - q,
                "Mul" => p * q,
                "Div" => p / q,
                "Max" => p.max(q),
                _ => p.min(q),
            };
            TensorData::F32(ia.iter().zip(&ib).map(|(&i, &j)| f(x[i], y[j])).collect())
        }
        (TensorData::I64(_), TensorData::I64(_)) | (TensorData::I32(_), TensorData::I32(_)) => {
            let (x, y) = (a.to_i64_vec(), b.to_i64_vec());
            let mut v = Vec::with_capacity(ia.len());
            for (&i, &j) in ia.iter().zip(&ib) {
                let (p, q) = (x[i], y[j]);
                v.push(match op {
                    "Add" => p.wrapping_add(q),
                    "Sub" => p.wrapping_sub(q),
                    "Mul" => p.wrapping_mul(q),
                    // Integer division truncates (C semantics, as ORT); by zero: leave
                    // the node to the runtime.
                    "Div" => p.checked_div(q)?,
                    "FMod" => p.checked_rem(q)?,
                    "Mod" => {
                        let r = p.checked_rem(q)?;
                        if r != 0 && (r < 0) != (q < 0) {
                            r + q
                        } else {
                            r
                        }
                    }
                    "Max" => p.max(q),
                    _ => p.min(q),
                });
            }
            let t = Tensor::from_i64(out.clone(), v).ok()?;
            return Some(Ok(cast(&t, a.dtype())));
        }
        _ => return None,
    };
    Some(Tensor::new(out, data).map_err(Into::into))
}

fn compare(op: &str, a: &Tensor, b: &Tensor) -> Option<Result<Tensor>> {
    if a.dtype() != b.dtype() || !matches!(a.dtype(), DType::F32 | DType::I64 | DType::I32) {
        return None;
    }
    let out = fold_shape(&a.shape, &b.shape)?;
    let ia = broadcast_index(&out, &a.shape);
    let ib = broadcast_index(&out, &b.shape);
    let v: Vec<bool> = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            // Both are f64-exact for f32 and the small integers of shape arithmetic;
            // compare i64 as i64 to stay exact for large values.
            let ord = if a.dtype() == DType::F32 {
                a.data.get_f64(i).partial_cmp(&b.data.get_f64(j))
            } else {
                Some(a.data.get_i64(i).cmp(&b.data.get_i64(j)))
            };
            use std::cmp::Ordering::*;
            matches!(
                (op, ord),
                ("Equal", Some(Equal))
                    | ("Less", Some(Less))
                    | ("Greater", Some(Greater))
                    | ("LessOrEqual", Some(Less | Equal))
                    | ("GreaterOrEqual", Some(Greater | Equal))
            )
        })
        .collect();
    Some(Tensor::new(out, TensorData::Bool(v)).map_err(Into::into))
}

fn neg(t: &Tensor) -> Option<Result<Tensor>> {
    let data = match &t.data {
        TensorData::F32(x) => TensorData::F32(x.iter().map(|v| -v).collect()),
        TensorData::I64(x) => TensorData::I64(x.iter().map(|v| v.wrapping_neg()).collect()),
        TensorData::I32(x) => TensorData::I32(x.iter().map(|v| v.wrapping_neg()).collect()),
        _ => return None,
    };
    Some(Tensor::new(t.shape.clone(), data).map_err(Into::into))
}

fn select(v: &NodeView, c: &Tensor, a: &Tensor, b: &Tensor) -> Option<Result<Tensor>> {
    let TensorData::Bool(cond) = &c.data else {
        return Some(Err(v.err("the condition must be bool")));
    };
    let out = fold_shape(&fold_shape(&c.shape, &a.shape)?, &b.shape)?;
    let both = append(&a.data, &b.data)?;
    let (ic, ia, ib) = (
        broadcast_index(&out, &c.shape),
        broadcast_index(&out, &a.shape),
        broadcast_index(&out, &b.shape),
    );
    let idx: Vec<usize> = (0..ic.len())
        .map(|k| if cond[ic[k]] { ia[k] } else { a.len() + ib[k] })
        .collect();
    Some(Tensor::new(out, take(&both, &idx)).map_err(Into::into))
}
