//! Data movement on every dtype: Reshape/Flatten/Squeeze/Unsqueeze/Identity (same data,
//! new shape), Transpose, Concat, Split, Slice, Gather, Pad, Shape.

use super::util::{apply_act, for_variant, inc, map_same, strides, take, KResult, NONE};
use edgeopt_ir::shape::{full_perm, norm_axis, slice_geometry, OutputFact};
use edgeopt_ir::{Activation, PadMode, Tensor, TensorData};

pub fn reshape(x: &Tensor, out: &OutputFact) -> KResult<Tensor> {
    x.clone()
        .reshaped(out.shape.clone())
        .map_err(|e| e.to_string())
}

pub fn shape(x: &Tensor) -> Tensor {
    Tensor {
        shape: vec![x.rank()],
        data: TensorData::I64(x.shape.iter().map(|&d| d as i64).collect()),
    }
}

pub fn transpose(x: &Tensor, perm: &[usize], out: &OutputFact) -> KResult<Tensor> {
    let perm = full_perm(perm, x.rank())?;
    let st = strides(&x.shape);
    // Input stride of each output axis; walk the output in order.
    let ost: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let n = x.len();
    let mut idx = Vec::with_capacity(n);
    let mut pos = vec![0usize; out.shape.len()];
    let mut cur = 0usize;
    for _ in 0..n {
        idx.push(cur);
        for d in (0..pos.len()).rev() {
            pos[d] += 1;
            cur += ost[d];
            if pos[d] < out.shape[d] {
                break;
            }
            cur -= ost[d] * out.shape[d];
            pos[d] = 0;
        }
    }
    Tensor::new(out.shape.clone(), take(&x.data, &idx, 0.0)).map_err(|e| e.to_string())
}

pub fn concat(
    inputs: &[Option<&Tensor>],
    axis: i64,
    act: Activation,
    out: &OutputFact,
) -> KResult<Tensor> {
    let xs: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    let a = norm_axis(axis, out.shape.len())?;
    let outer: usize = out.shape[..a].iter().product();
    let chunks: Vec<usize> = xs.iter().map(|x| x.shape[a..].iter().product()).collect();
    let total: usize = out.shape.iter().product();
    macro_rules! go {
        ($V:ident) => {{
            let parts = xs
                .iter()
                .map(|t| match &t.data {
                    TensorData::$V(v) => Ok(&v[..]),
                    d => Err(format!("Concat inputs differ in dtype: {}", d.dtype())),
                })
                .collect::<KResult<Vec<_>>>()?;
            let mut v = Vec::with_capacity(total);
            for o in 0..outer {
                for (p, &c) in parts.iter().zip(&chunks) {
                    v.extend_from_slice(&p[o * c..(o + 1) * c]);
                }
            }
            TensorData::$V(v)
        }};
    }
    let dt = xs.first().ok_or("Concat has no inputs")?.dtype();
    let mut data = for_variant!(dt, go);
    if act != Activation::None {
        match &mut data {
            TensorData::F32(v) => apply_act(v, act),
            _ => return Err("fused activation on a non-float Concat".into()),
        }
    }
    Tensor::new(out.shape.clone(), data).map_err(|e| e.to_string())
}

/// Consecutive pieces of `x` along `axis`, `split[i]` wide (shapes from the rule).
pub fn split(x: &Tensor, axis: i64, split: &[usize], outs: &[OutputFact]) -> KResult<Vec<Tensor>> {
    let a = norm_axis(axis, x.rank())?;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a + 1..].iter().product();
    let row = x.shape[a] * inner;
    let mut first = 0usize;
    let mut res = Vec::with_capacity(split.len());
    for (&w, o) in split.iter().zip(outs) {
        let (lo, n) = (first * inner, w * inner);
        let data = map_same!(&x.data, v => {
            let mut p = Vec::with_capacity(outer * n);
            for b in 0..outer {
                p.extend_from_slice(&v[b * row + lo..b * row + lo + n]);
            }
            p
        });
        res.push(Tensor::new(o.shape.clone(), data).map_err(|e| e.to_string())?);
        first += w;
    }
    Ok(res)
}

/// ONNX Slice with constant operands (geometry from the IR's rule).
pub fn slice(
    x: &Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: &[i64],
    steps: &[i64],
    out: &OutputFact,
) -> KResult<Tensor> {
    let g = slice_geometry(&x.shape, starts, ends, axes, steps)?;
    let mut idx = Vec::with_capacity(out.shape.iter().product());
    g.for_each_source(&strides(&x.shape), |i| idx.push(i));
    Tensor::new(out.shape.clone(), take(&x.data, &idx, 0.0)).map_err(|e| e.to_string())
}

/// ONNX TopK: per line along `axis`, the indices of the `k` best elements (largest or
/// smallest; NaN counts as the largest, as in onnxruntime), ties in index order; values
/// gathered from them.
pub fn top_k(
    x: &Tensor,
    axis: i64,
    k: usize,
    largest: bool,
    outs: &[OutputFact],
) -> KResult<Vec<Tensor>> {
    let a = norm_axis(axis, x.rank())?;
    let d = x.shape[a];
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a + 1..].iter().product();
    let mut src = Vec::with_capacity(outer * k * inner);
    let mut picks = Vec::with_capacity(outer * k * inner);
    let mut order: Vec<usize> = Vec::with_capacity(d);
    // The chosen indices of every line (outer, inner), best first.
    let mut lines: Vec<Vec<usize>> = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let base = o * d * inner + i;
            let key = |j: usize| x.data.get_f64(base + j * inner);
            order.clear();
            order.extend(0..d);
            // Stable sort: equal keys keep index order.
            order.sort_by(|&p, &q| {
                let (u, v) = (key(p), key(q));
                let c = match (u.is_nan(), v.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ => u.partial_cmp(&v).unwrap_or(std::cmp::Ordering::Equal),
                };
                if largest {
                    c.reverse()
                } else {
                    c
                }
            });
            lines.push(order[..k].to_vec());
        }
    }
    // Output layout [outer, k, inner].
    for (o, block) in lines.chunks(inner.max(1)).enumerate() {
        for r in 0..k {
            for (i, line) in block.iter().enumerate() {
                let j = line[r];
                src.push(o * d * inner + j * inner + i);
                picks.push(j as i64);
            }
        }
    }
    let values =
        Tensor::new(outs[0].shape.clone(), take(&x.data, &src, 0.0)).map_err(|e| e.to_string())?;
    let indices =
        Tensor::new(outs[1].shape.clone(), TensorData::I64(picks)).map_err(|e| e.to_string())?;
    Ok(vec![values, indices])
}

pub fn gather(d: &Tensor, i: &Tensor, axis: i64, out: &OutputFact) -> KResult<Tensor> {
    if !i.dtype().is_integer() {
        return Err(format!("indices must be integers, got {}", i.dtype()));
    }
    let a = norm_axis(axis, d.rank())?;
    let outer: usize = d.shape[..a].iter().product();
    let inner: usize = d.shape[a + 1..].iter().product();
    let dim = d.shape[a];
    let idx: Vec<usize> = i
        .to_i64_vec()
        .into_iter()
        .map(|ix| {
            let j = if ix < 0 { ix + dim as i64 } else { ix };
            if j < 0 || j >= dim as i64 {
                Err(format!(
                    "index {ix} out of range for axis {a} of size {dim}"
                ))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<KResult<_>>()?;
    let data = map_same!(&d.data, v => {
        let mut o = Vec::with_capacity(outer * idx.len() * inner);
        for b in 0..outer {
            for &j in &idx {
                let s = (b * dim + j) * inner;
                o.extend_from_slice(&v[s..s + inner]);
            }
        }
        o
    });
    Tensor::new(out.shape.clone(), data).map_err(|e| e.to_string())
}

/// Source coordinate along one axis for output coordinate `o` (`begin` may be negative:
/// cropping), or None for a constant-padded position.
fn pad_src(o: usize, begin: i64, d: usize, mode: PadMode) -> Option<usize> {
    let i = o as i64 - begin;
    let n = d as i64;
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    if n == 0 {
        return None;
    }
    match mode {
        PadMode::Constant => None,
        PadMode::Edge => Some(i.clamp(0, n - 1) as usize),
        PadMode::Wrap => Some(i.rem_euclid(n) as usize),
        PadMode::Reflect => {
            if n == 1 {
                return Some(0);
            }
            let p = 2 * (n - 1);
            let m = i.rem_euclid(p);
            Some(if m >= n { p - m } else { m } as usize)
        }
    }
}

pub fn pad(
    x: &Tensor,
    mode: PadMode,
    pads: &[i64],
    value: f32,
    out: &OutputFact,
) -> KResult<Tensor> {
    let r = x.rank();
    if mode != PadMode::Constant && x.is_empty() && !out.shape.contains(&0) {
        return Err(format!("{mode:?} padding of an empty tensor"));
    }
    let per_axis: Vec<Vec<Option<usize>>> = (0..r)
        .map(|a| {
            (0..out.shape[a])
                .map(|o| pad_src(o, pads[a], x.shape[a], mode))
                .collect()
        })
        .collect();
    let st = strides(&x.shape);
    let n: usize = out.shape.iter().product();
    let mut idx = Vec::with_capacity(n);
    let mut pos = vec![0usize; r];
    for _ in 0..n {
        let mut off = 0usize;
        for a in 0..r {
            match per_axis[a][pos[a]] {
                Some(s) => off += s * st[a],
                None => {
                    off = NONE;
                    break;
                }
            }
        }
        idx.push(off);
        inc(&mut pos, &out.shape);
    }
    Tensor::new(out.shape.clone(), take(&x.data, &idx, value as f64)).map_err(|e| e.to_string())
}

/// TFLite STRIDED_SLICE: the plan (masks resolved against the input shape) lives in
/// the IR's shape rules; this only gathers the elements it names.
pub fn strided_slice(
    x: &Tensor,
    a: &edgeopt_ir::StridedSliceAttrs,
    out: &OutputFact,
) -> KResult<Tensor> {
    let plan = edgeopt_ir::shape::strided_slice_plan(a, &x.shape)?;
    let mut idx = Vec::with_capacity(plan.numel());
    plan.for_each_source(|i| idx.push(i));
    Tensor::new(out.shape.clone(), take(&x.data, &idx, 0.0)).map_err(|e| e.to_string())
}

/// TILE: every output position reads the input at its index modulo the input size.
pub fn tile(x: &Tensor, out: &OutputFact) -> KResult<Tensor> {
    let n: usize = out.shape.iter().product();
    let mut idx = Vec::with_capacity(n);
    let mut pos = vec![0usize; out.shape.len()];
    for _ in 0..n {
        idx.push(edgeopt_ir::shape::tile_source_index(&x.shape, &pos));
        inc(&mut pos, &out.shape);
    }
    Tensor::new(out.shape.clone(), take(&x.data, &idx, 0.0)).map_err(|e| e.to_string())
}

/// FILL: the one-element `value` repeated over the output shape.
pub fn fill(value: &Tensor, out: &OutputFact) -> KResult<Tensor> {
    let n: usize = out.shape.iter().product();
    Tensor::new(out.shape.clone(), take(&value.data, &vec![0; n], 0.0)).map_err(|e| e.to_string())
}
