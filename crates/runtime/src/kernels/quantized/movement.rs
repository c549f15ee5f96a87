//! Data movement on quantized tensors: PAD (pad value in the quantized domain),
//! CONCATENATION (inputs requantized to the output's parameters), TRANSPOSE, RESIZE
//! (nearest), and requantization after reshape-like ops whose input and output
//! parameters differ.

use super::super::NodeCtx;
use super::common::*;
use super::quantize::requantize_values;
use crate::error::Result;
use edgeopt_ir::{
    Activation, CoordTransform, NearestMode, PadMode, ResizeAttrs, ResizeMode, Tensor,
};

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Maps every output element to a source element (or `None` = fill), in output order.
/// `map(axis, out_coord) -> Option<in_coord>` is evaluated once per axis coordinate.
fn gather_by_axis<T: Copy>(
    src: &[T],
    in_shape: &[usize],
    out_shape: &[usize],
    fill: T,
    map: impl Fn(usize, usize) -> Option<usize>,
) -> Vec<T> {
    let r = out_shape.len();
    let ist = strides(in_shape);
    // Per axis, per output coordinate: source offset contribution.
    let tables: Vec<Vec<Option<usize>>> = (0..r)
        .map(|d| {
            (0..out_shape[d])
                .map(|o| map(d, o).map(|i| i * ist[d]))
                .collect()
        })
        .collect();
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let mut off = Some(0usize);
        for d in 0..r {
            off = match (off, tables[d][idx[d]]) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
        out.push(off.map_or(fill, |o| src[o]));
        let mut d = r;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// PAD / PADV2 / MIRROR_PAD on quantized data. The pad value is the real `value`
/// quantized with the output's parameters (0.0 -> the zero point).
pub fn pad<T: QInt>(
    ctx: &NodeCtx,
    mode: PadMode,
    pads: &[i64],
    value: f32,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let qx = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    if qx != qy {
        return Err(ctx.error("quantized Pad needs identical input and output quantization"));
    }
    let r = x.shape.len();
    if pads.len() != 2 * r {
        return Err(ctx.error(format!("pads has {} entries for rank {r}", pads.len())));
    }
    let mut out_shape = Vec::with_capacity(r);
    for d in 0..r {
        let o = x.shape[d] as i64 + pads[d] + pads[d + r];
        if o < 0 || pads[d].unsigned_abs() > (1 << 40) || pads[d + r].unsigned_abs() > (1 << 40) {
            return Err(ctx.error(format!("pads {pads:?} invalid for shape {:?}", x.shape)));
        }
        out_shape.push(o as usize);
    }
    numel(ctx, &out_shape)?;
    let fill = T::from_i32((qy.zp + (value / qy.scale).round() as i32).clamp(T::MIN, T::MAX));
    if mode != PadMode::Constant
        && x.shape
            .iter()
            .zip(&out_shape)
            .any(|(&i, &o)| i == 0 && o > 0)
    {
        return Err(ctx.error("cannot reflect/edge-pad an empty axis"));
    }
    let xv = data::<T>(ctx, x, "input")?;
    let shape = x.shape.clone();
    let out = gather_by_axis(xv, &x.shape, &out_shape, fill, |d, o| {
        let n = shape[d] as i64;
        let i = o as i64 - pads[d];
        if (0..n).contains(&i) {
            return Some(i as usize);
        }
        match mode {
            PadMode::Constant => None,
            PadMode::Edge => Some(i.clamp(0, n - 1) as usize),
            PadMode::Wrap => Some(i.rem_euclid(n) as usize),
            PadMode::Reflect => {
                if n == 1 {
                    return Some(0);
                }
                let period = 2 * (n - 1);
                let m = i.rem_euclid(period);
                Some(if m < n { m } else { period - m } as usize)
            }
        }
    });
    Ok(vec![make(out_shape, out)])
}

/// CONCATENATION: inputs with other parameters than the output are rescaled as
/// TFLite's `ConcatenationWithScaling` does (float scale and bias, round half away).
pub fn concat<T: QInt>(
    ctx: &NodeCtx,
    axis: i64,
    activation: Activation,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let xs: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    let first = xs
        .first()
        .ok_or_else(|| ctx.error("Concat needs at least one input"))?;
    let r = first.shape.len();
    let ax = norm_axis(ctx, axis, r)?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    let (amin, amax) = activation_range::<T>(activation, qy);
    let mut out_shape = first.shape.clone();
    out_shape[ax] = 0;
    for t in &xs {
        if t.shape.len() != r || (0..r).any(|d| d != ax && t.shape[d] != first.shape[d]) {
            return Err(ctx.error(format!(
                "cannot concatenate {:?} and {:?} on axis {ax}",
                first.shape, t.shape
            )));
        }
        out_shape[ax] += t.shape[ax];
    }
    let outer: usize = first.shape[..ax].iter().product();
    let inner: usize = first.shape[ax + 1..].iter().product();
    let n = numel(ctx, &out_shape)?;
    // Each input converted (if needed) to the output's parameters.
    let mut parts: Vec<Vec<T>> = Vec::with_capacity(xs.len());
    for (k, t) in inputs.iter().enumerate() {
        let Some(t) = t else { continue };
        let qx = per_tensor(ctx, ctx.in_quant(k), "input")?;
        let v = data::<T>(ctx, t, "input")?;
        if qx == qy {
            parts.push(
                v.iter()
                    .map(|e| T::from_i32(e.to_i32().clamp(amin, amax)))
                    .collect(),
            );
        } else {
            let inverse_output_scale = 1.0f32 / qy.scale;
            let scale = qx.scale * inverse_output_scale;
            let bias = -(qx.zp as f32) * scale;
            parts.push(
                v.iter()
                    .map(|e| {
                        let q = (e.to_i32() as f32 * scale + bias).round() as i32 + qy.zp;
                        T::from_i32(q.clamp(T::MIN, T::MAX).clamp(amin, amax))
                    })
                    .collect(),
            );
        }
    }
    let mut out = Vec::with_capacity(n);
    for o in 0..outer {
        for (t, p) in xs.iter().zip(&parts) {
            let len = t.shape[ax] * inner;
            out.extend_from_slice(&p[o * len..(o + 1) * len]);
        }
    }
    Ok(vec![make(out_shape, out)])
}

/// TRANSPOSE (empty `perm` reverses the axes), then requantization if the output's
/// parameters differ.
pub fn transpose<T: QInt>(
    ctx: &NodeCtx,
    perm: &[usize],
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let r = x.shape.len();
    let perm: Vec<usize> = if perm.is_empty() {
        (0..r).rev().collect()
    } else {
        perm.to_vec()
    };
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
    {
        return Err(ctx.error(format!("perm {perm:?} is not a permutation of rank {r}")));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let xv = data::<T>(ctx, x, "input")?;
    let ist = strides(&x.shape);
    let n = xv.len();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    let pst: Vec<usize> = perm.iter().map(|&p| ist[p]).collect();
    let mut off = 0usize;
    for _ in 0..n {
        out.push(xv[off]);
        let mut d = r;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            off += pst[d];
            if idx[d] < out_shape[d] {
                break;
            }
            off -= pst[d] * out_shape[d];
            idx[d] = 0;
        }
    }
    let t = make(out_shape, out);
    Ok(vec![requantize_if_needed::<T>(ctx, t)?])
}

/// Requantizes a computed output whose values carry input 0's parameters to the
/// output's parameters (TFLite QUANTIZE int8 -> int8 semantics). A no-op when equal.
pub fn requantize_if_needed<T: QInt>(ctx: &NodeCtx, t: Tensor) -> Result<Tensor> {
    let qx = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    if qx == qy {
        return Ok(t);
    }
    let v = data::<T>(ctx, &t, "value")?;
    let out = requantize_values::<T, T>(v, qx, qy);
    Ok(make(t.shape.clone(), out))
}

/// RESIZE nearest on quantized data (pure data movement, f32 coordinate arithmetic as
/// in TFLite's kernel).
pub fn resize_nearest<T: QInt>(
    ctx: &NodeCtx,
    a: &ResizeAttrs,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    if a.mode != ResizeMode::Nearest {
        return Err(ctx.error("quantized Resize supports nearest mode only"));
    }
    let r = x.shape.len();
    let axes: Vec<usize> = match &a.axes {
        None => (0..r).collect(),
        Some(ax) => ax
            .iter()
            .map(|&v| norm_axis(ctx, v, r))
            .collect::<Result<_>>()?,
    };
    let mut out_shape = x.shape.clone();
    let mut scales = vec![1.0f32; r];
    // With explicit sizes (TFLite), source coordinates use `in / out` as TFLite does;
    // with scales (ONNX), `out / scale`.
    let mut by_size = false;
    match (&a.sizes, &a.scales) {
        (Some(s), _) => {
            if s.len() != axes.len() {
                return Err(ctx.error("Resize sizes do not match its axes"));
            }
            for (&d, &v) in axes.iter().zip(s) {
                out_shape[d] = v;
                scales[d] = v as f32 / x.shape[d].max(1) as f32;
            }
            by_size = true;
        }
        (None, Some(s)) => {
            if s.len() != axes.len() {
                return Err(ctx.error("Resize scales do not match its axes"));
            }
            for (&d, &v) in axes.iter().zip(s) {
                if !(v.is_finite() && v > 0.0) {
                    return Err(ctx.error(format!("invalid resize scale {v}")));
                }
                let o = (x.shape[d] as f32 * v).floor();
                if o > (1u64 << 32) as f32 {
                    return Err(ctx.error("resize output too large"));
                }
                out_shape[d] = o as usize;
                scales[d] = v;
            }
        }
        (None, None) => return Err(ctx.error("Resize needs scales or sizes")),
    }
    numel(ctx, &out_shape)?;
    let xv = data::<T>(ctx, x, "input")?;
    let in_shape = x.shape.clone();
    let out_dims = out_shape.clone();
    let out = gather_by_axis(xv, &x.shape, &out_shape, T::from_i32(0), |d, o| {
        let (inp, outp) = (in_shape[d], out_dims[d]);
        if inp == outp {
            return Some(o);
        }
        let (o, inp_f, outp_f) = (o as f32, inp as f32, outp as f32);
        let src = match a.coord {
            CoordTransform::AlignCorners => {
                if outp > 1 {
                    o * ((inp_f - 1.0) / (outp_f - 1.0))
                } else {
                    0.0
                }
            }
            CoordTransform::Asymmetric if by_size => o * (inp_f / outp_f),
            CoordTransform::Asymmetric => o / scales[d],
            CoordTransform::TfHalfPixelForNn => (o + 0.5) * (inp_f / outp_f),
            CoordTransform::HalfPixel | CoordTransform::HalfPixelSymmetric => {
                (o + 0.5) / scales[d] - 0.5
            }
            CoordTransform::PytorchHalfPixel => {
                if outp > 1 {
                    (o + 0.5) / scales[d] - 0.5
                } else {
                    0.0
                }
            }
            CoordTransform::TfCropAndResize => o / scales[d],
        };
        let i = match a.nearest_mode {
            NearestMode::Floor => src.floor(),
            NearestMode::Ceil => src.ceil(),
            NearestMode::RoundPreferFloor => {
                if src.fract() == 0.5 {
                    src.floor()
                } else {
                    src.round()
                }
            }
            NearestMode::RoundPreferCeil => src.round(),
        };
        Some((i.max(0.0) as usize).min(inp.saturating_sub(1)))
    });
    let t = make(out_shape, out);
    Ok(vec![requantize_if_needed::<T>(ctx, t)?])
}

/// RESIZE_BILINEAR on quantized NHWC data, TFLite's integer kernel
/// (`reference_ops::ResizeBilinearInteger`): source coordinates in 1/1024 steps, the
/// four weighted taps summed in i64 (weights in 2^20 units), rounded half away from
/// zero. C's truncating division is reproduced with Rust's `/`, including the
/// negative half-pixel coordinate at the first row/column (truncated to 0, not floored).
pub fn resize_bilinear<T: QInt>(
    ctx: &NodeCtx,
    a: &ResizeAttrs,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    if x.rank() != 4 {
        return Err(ctx.error("quantized bilinear Resize needs a 4-D NHWC input"));
    }
    let (align, half) = match a.coord {
        CoordTransform::AlignCorners => (true, false),
        CoordTransform::HalfPixel => (false, true),
        CoordTransform::Asymmetric => (false, false),
        c => {
            return Err(ctx.error(format!(
                "quantized bilinear Resize does not support {c:?} coordinates"
            )))
        }
    };
    let (ih, iw) = (x.shape[1], x.shape[2]);
    let (oh, ow) = match (&a.axes, &a.sizes) {
        (Some(ax), Some(s)) if ax == &[1, 2] && s.len() == 2 => (s[0], s[1]),
        (None, Some(s)) if s.len() == 4 && s[0] == x.shape[0] && s[3] == x.shape[3] => (s[1], s[2]),
        _ => {
            return Err(
                ctx.error("quantized bilinear Resize needs output sizes for the H and W axes")
            )
        }
    };
    // Coordinates are int32 fixed point with 10 fractional bits, as in TFLite.
    let limit = (i32::MAX >> 11) as usize;
    if oh == 0 || ow == 0 || ih == 0 || iw == 0 || [ih, iw, oh, ow].iter().any(|&d| d > limit) {
        return Err(ctx.error(format!(
            "bilinear Resize from {ih}x{iw} to {oh}x{ow} is out of range"
        )));
    }
    let (n, c) = (x.shape[0], x.shape[3]);
    let out_shape = vec![n, oh, ow, c];
    numel(ctx, &out_shape)?;
    let xv = data::<T>(ctx, x, "input")?;
    let scale_10 = |i: usize, o: usize| -> i32 {
        let (i, o) = (i as i32, o as i32);
        if align && o > 1 {
            ((1 << 10) * (i - 1) + (o - 1) / 2) / (o - 1)
        } else {
            ((1 << 10) * i + o / 2) / o
        }
    };
    // (scaled coordinate, lower, upper) per output row / column.
    let taps = |o: usize, scale: i32, size: usize| -> Vec<(i64, usize, usize)> {
        (0..o as i32)
            .map(|v| {
                let s = if half {
                    v * scale + scale / 2 - (1 << 9)
                } else {
                    v * scale
                };
                // TFLite does not bound `lo` above; extreme upscales (scale rounded
                // up) would read past the input there, so it is clamped here.
                let lo = (s / (1 << 10)).max(0).min(size as i32 - 1);
                let hi = ((s + (1 << 10) - 1) / (1 << 10)).min(size as i32 - 1);
                (s as i64, lo as usize, hi.max(0) as usize)
            })
            .collect()
    };
    let ys = taps(oh, scale_10(ih, oh), ih);
    let xs = taps(ow, scale_10(iw, ow), iw);
    let at = |b: usize, y: usize, xx: usize, ch: usize| {
        xv[((b * ih + y) * iw + xx) * c + ch].to_i32() as i64
    };
    let one = 1i64 << 10;
    let mut out = Vec::with_capacity(n * oh * ow * c);
    for b in 0..n {
        for &(sy, y0, y1) in &ys {
            let dy = sy - one * y0 as i64;
            for &(sx, x0, x1) in &xs {
                let dx = sx - one * x0 as i64;
                for ch in 0..c {
                    let v = at(b, y0, x0, ch) * (one - dy) * (one - dx)
                        + at(b, y1, x0, ch) * dy * (one - dx)
                        + at(b, y0, x1, ch) * (one - dy) * dx
                        + at(b, y1, x1, ch) * dy * dx;
                    let round = if v > 0 { 1i64 << 19 } else { -(1i64 << 19) };
                    let r = (v + round) / (1i64 << 20);
                    out.push(T::from_i32(r.clamp(T::MIN as i64, T::MAX as i64) as i32));
                }
            }
        }
    }
    let t = make(out_shape, out);
    Ok(vec![requantize_if_needed::<T>(ctx, t)?])
}
