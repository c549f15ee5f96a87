//! ONNX Resize: nearest (every nearest_mode, any dtype), linear and cubic (f32,
//! separable, one axis at a time; cubic_coeff_a, exclude_outside, antialias), all
//! coordinate transforms incl. tf_crop_and_resize with extrapolation and TFLite's
//! half-pixel nearest. Coordinates are computed in f32 like onnxruntime, so nearest
//! rounding ties land on the same side.

use super::util::{f32_of, f32_tensor, inc, strides, take, KResult, NONE};
use edgeopt_ir::shape::{norm_axis, resize_geometry, OutputFact};
use edgeopt_ir::{CoordTransform, NearestMode, ResizeAttrs, ResizeMode, Tensor};

/// Input coordinate of output coordinate `o` along one axis.
fn orig_coord(
    ct: CoordTransform,
    o: usize,
    scale: f32,
    out_len: usize,
    in_len: usize,
    roi: (f32, f32),
) -> f32 {
    let x = o as f32;
    let (lo, li) = (out_len as f32, in_len as f32);
    match ct {
        CoordTransform::HalfPixel => (x + 0.5) / scale - 0.5,
        CoordTransform::HalfPixelSymmetric => {
            let adjustment = lo / (scale * li);
            let center = li / 2.0;
            let offset = center * (1.0 - adjustment);
            // onnxruntime sums this part in double precision; nearest rounding ties
            // depend on it.
            (offset as f64 + (x as f64 + 0.5) / scale as f64 - 0.5) as f32
        }
        CoordTransform::PytorchHalfPixel => {
            if out_len > 1 {
                (x + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        CoordTransform::AlignCorners => {
            if out_len == 1 {
                0.0
            } else {
                x * (li - 1.0) / (lo - 1.0)
            }
        }
        CoordTransform::Asymmetric => x / scale,
        CoordTransform::TfHalfPixelForNn => (x + 0.5) / scale,
        CoordTransform::TfCropAndResize => {
            let (s, e) = roi;
            if out_len > 1 {
                s * (li - 1.0) + (x * (e - s) * (li - 1.0)) / (lo - 1.0)
            } else {
                0.5 * (s + e) * (li - 1.0)
            }
        }
    }
}

fn nearest_index(x: f32, mode: NearestMode, in_len: usize) -> usize {
    let r = match mode {
        NearestMode::RoundPreferFloor => {
            if x - x.floor() == 0.5 {
                x.floor()
            } else {
                x.round()
            }
        }
        NearestMode::RoundPreferCeil => {
            if x - x.floor() == 0.5 {
                x.ceil()
            } else {
                x.round()
            }
        }
        NearestMode::Floor => x.floor(),
        NearestMode::Ceil => x.ceil(),
    };
    r.clamp(0.0, in_len.saturating_sub(1) as f32) as usize
}

fn cubic(a: f32, x: f32) -> f32 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Taps `(input index, weight)` of one output coordinate for linear/cubic.
fn taps(a: &ResizeAttrs, x: f32, scale: f32, in_len: usize) -> Vec<(usize, f32)> {
    let last = in_len as i64 - 1;
    let xi = x.floor();
    let ratio = x - xi;
    let xi = xi as i64;
    let aa = a.antialias && scale < 1.0;
    // Tap offsets j (relative to floor(x)) and the filter's argument for each.
    let (start, end, filt): (i64, i64, Box<dyn Fn(f32) -> f32>) = match (a.mode, aa) {
        (ResizeMode::Linear, false) => (0, 2, Box::new(|d: f32| (1.0 - d.abs()).max(0.0))),
        (ResizeMode::Cubic, false) => {
            let c = a.cubic_coeff_a;
            (-1, 3, Box::new(move |d| cubic(c, d)))
        }
        (ResizeMode::Linear, true) => {
            let s = (-1.0 / scale).floor() as i64 + 1;
            (
                s,
                2 - s,
                Box::new(move |d: f32| (1.0 - (d * scale).abs()).clamp(0.0, 1.0)),
            )
        }
        (ResizeMode::Cubic, true) => {
            let s = (-2.0 / scale).floor() as i64 + 1;
            let c = a.cubic_coeff_a;
            (s, 2 - s, Box::new(move |d| cubic(c, d * scale)))
        }
        (ResizeMode::Nearest, _) => unreachable!("nearest has no taps"),
    };
    let mut t: Vec<(i64, f32)> = (start..end)
        .map(|j| (xi + j, filt(j as f32 - ratio)))
        .collect();
    if a.exclude_outside {
        for (i, w) in &mut t {
            if *i < 0 || *i > last {
                *w = 0.0;
            }
        }
    }
    let sum: f32 = t.iter().map(|&(_, w)| w).sum();
    // Plain linear/cubic weights already sum to 1; antialiased and excluded ones are
    // renormalized as the ONNX definition does.
    let norm = aa || a.exclude_outside;
    t.into_iter()
        .filter(|&(_, w)| w != 0.0)
        .map(|(i, w)| {
            (
                i.clamp(0, last.max(0)) as usize,
                if norm && sum != 0.0 { w / sum } else { w },
            )
        })
        .collect()
}

pub fn resize(a: &ResizeAttrs, x: &Tensor, out: &OutputFact) -> KResult<Tensor> {
    let (oshape, scales) = resize_geometry(a, &x.shape)?;
    let r = x.rank();
    if x.is_empty() && oshape.iter().all(|&d| d > 0) {
        return Err(format!(
            "cannot resize the empty tensor {:?} to {oshape:?}",
            x.shape
        ));
    }
    // ROI per axis (only tf_crop_and_resize reads it).
    let mut roi = vec![(0.0f32, 1.0f32); r];
    if let (CoordTransform::TfCropAndResize, Some(v)) = (a.coord, &a.roi) {
        let axes: Vec<usize> = match &a.axes {
            Some(ax) if v.len() != 2 * r => ax
                .iter()
                .map(|&q| norm_axis(q, r))
                .collect::<Result<_, _>>()?,
            _ => (0..r).collect(),
        };
        let k = axes.len();
        if v.len() != 2 * k {
            return Err(format!("roi has {} entries, expected {}", v.len(), 2 * k));
        }
        for (i, &ax) in axes.iter().enumerate() {
            roi[ax] = (v[i], v[k + i]);
        }
    }
    let extrap = a.coord == CoordTransform::TfCropAndResize;
    // Per axis, per output coordinate: input coordinate, and whether it lies outside.
    let coords: Vec<Vec<f32>> = (0..r)
        .map(|d| {
            (0..oshape[d])
                .map(|o| orig_coord(a.coord, o, scales[d], oshape[d], x.shape[d], roi[d]))
                .collect()
        })
        .collect();
    let outside = |d: usize, c: f32| extrap && (c < 0.0 || c > x.shape[d] as f32 - 1.0);
    if a.mode == ResizeMode::Nearest {
        let per_axis: Vec<Vec<usize>> = (0..r)
            .map(|d| {
                coords[d]
                    .iter()
                    .map(|&c| {
                        if outside(d, c) {
                            NONE
                        } else {
                            nearest_index(c, a.nearest_mode, x.shape[d])
                        }
                    })
                    .collect()
            })
            .collect();
        let st = strides(&x.shape);
        let n: usize = oshape.iter().product();
        let mut idx = Vec::with_capacity(n);
        let mut pos = vec![0usize; r];
        for _ in 0..n {
            let mut off = 0usize;
            for d in 0..r {
                let i = per_axis[d][pos[d]];
                if i == NONE {
                    off = NONE;
                    break;
                }
                off += i * st[d];
            }
            idx.push(off);
            inc(&mut pos, &oshape);
        }
        return Tensor::new(
            out.shape.clone(),
            take(&x.data, &idx, a.extrapolation_value as f64),
        )
        .map_err(|e| e.to_string());
    }
    let mut cur = f32_of(x)?.to_vec();
    let mut shape = x.shape.clone();
    for d in 0..r {
        let identity =
            oshape[d] == x.shape[d] && coords[d].iter().enumerate().all(|(o, &c)| c == o as f32);
        if identity {
            continue;
        }
        let t: Vec<Vec<(usize, f32)>> = coords[d]
            .iter()
            .map(|&c| {
                if outside(d, c) || x.shape[d] == 0 {
                    vec![]
                } else {
                    taps(a, c, scales[d], x.shape[d])
                }
            })
            .collect();
        let outer: usize = shape[..d].iter().product();
        let inner: usize = shape[d + 1..].iter().product();
        let (li, lo) = (shape[d], oshape[d]);
        let mut next = vec![0.0f32; outer * lo * inner];
        for b in 0..outer {
            for (o, tap) in t.iter().enumerate() {
                let dst = &mut next[(b * lo + o) * inner..(b * lo + o + 1) * inner];
                for &(i, w) in tap {
                    let src = &cur[(b * li + i) * inner..(b * li + i + 1) * inner];
                    for (q, &s) in dst.iter_mut().zip(src) {
                        *q += w * s;
                    }
                }
            }
        }
        cur = next;
        shape[d] = lo;
    }
    if extrap {
        let mut pos = vec![0usize; r];
        for v in cur.iter_mut() {
            if (0..r).any(|d| outside(d, coords[d][pos[d]])) {
                *v = a.extrapolation_value;
            }
            inc(&mut pos, &oshape);
        }
    }
    f32_tensor(out.shape.clone(), cur)
}
