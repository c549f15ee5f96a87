//! Max and average pooling (any spatial rank, both layouts, dilations, pads, ceil mode)
//! and global average pooling. MaxPool works on every ordered dtype (e.g. uint8).

use super::util::{
    apply_act, f32_of, f32_tensor, map_same, window_table, Elem, KResult, WindowTable, NONE,
};
use edgeopt_ir::shape::{pool_geometry, split_layout, OutputFact, Window};
use edgeopt_ir::{Activation, Layout, PoolAttrs, Tensor};

/// Addressing shared by both pools: (batch, channels, input size, output size,
/// offset of channel `c` of batch `n` and spatial offset `s`).
struct Planes {
    n: usize,
    c: usize,
    s_in: usize,
    p_out: usize,
    layout: Layout,
}

impl Planes {
    fn x_at(&self, n: usize, c: usize, s: usize) -> usize {
        match self.layout {
            Layout::Nchw => (n * self.c + c) * self.s_in + s,
            Layout::Nhwc => (n * self.s_in + s) * self.c + c,
        }
    }
    fn y_at(&self, n: usize, c: usize, p: usize) -> usize {
        match self.layout {
            Layout::Nchw => (n * self.c + c) * self.p_out + p,
            Layout::Nhwc => (n * self.p_out + p) * self.c + c,
        }
    }
}

fn setup(p: &PoolAttrs, x: &Tensor) -> KResult<(Planes, Window, WindowTable)> {
    let (_, w) = pool_geometry(p, &x.shape)?;
    let (n, c, _) = split_layout(&x.shape, p.layout)?;
    let t = window_table(
        &w.output,
        &w.input,
        &w.kernel,
        &w.strides,
        &w.dilations,
        &w.pads_begin,
    )?;
    let planes = Planes {
        n,
        c,
        s_in: w.input.iter().product(),
        p_out: w.output.iter().product(),
        layout: p.layout,
    };
    Ok((planes, w, t))
}

fn max_generic<T: Elem>(x: &[T], pl: &Planes, t: &WindowTable, act: Activation) -> Vec<T> {
    let mut y = vec![T::lowest(); pl.n * pl.c * pl.p_out];
    let (lo, hi) = super::util::act_range(act);
    let (lo, hi) = (T::from_f64(lo as f64), T::from_f64(hi as f64));
    for n in 0..pl.n {
        for c in 0..pl.c {
            for p in 0..pl.p_out {
                let mut m = T::lowest();
                for k in 0..t.taps {
                    let off = t.offsets[k * t.positions + p];
                    if off != NONE {
                        let v = x[pl.x_at(n, c, off)];
                        if v > m {
                            m = v;
                        }
                    }
                }
                if act != Activation::None {
                    if m < lo {
                        m = lo;
                    }
                    if m > hi {
                        m = hi;
                    }
                }
                y[pl.y_at(n, c, p)] = m;
            }
        }
    }
    y
}

pub fn max_pool(p: &PoolAttrs, x: &Tensor, out: &OutputFact) -> KResult<Tensor> {
    let (pl, _, t) = setup(p, x)?;
    let act = p.activation;
    let data = map_same!(&x.data, v => max_generic(v, &pl, &t, act));
    Tensor::new(out.shape.clone(), data).map_err(|e| e.to_string())
}

pub fn avg_pool(p: &PoolAttrs, x: &Tensor, out: &OutputFact) -> KResult<Tensor> {
    let xs = f32_of(x)?;
    let (pl, w, t) = setup(p, x)?;
    // Divisor per output position: valid taps, or (count_include_pad) taps inside the
    // explicitly padded input — taps that only exist because of ceil_mode never count.
    let nd = w.input.len();
    let per_dim: Vec<Vec<usize>> = (0..nd)
        .map(|d| {
            (0..w.output[d])
                .map(|o| {
                    (0..w.kernel[d])
                        .filter(|&j| {
                            let pos = (o * w.strides[d] + j * w.dilations[d]) as isize;
                            let lim = (w.input[d] + w.pads_begin[d] + w.pads_end[d]) as isize;
                            pos < lim
                        })
                        .count()
                })
                .collect()
        })
        .collect();
    let ostr = super::util::strides(&w.output);
    let mut y = vec![0.0f32; pl.n * pl.c * pl.p_out];
    for pi in 0..pl.p_out {
        let padded_count: usize = (0..nd)
            .map(|d| per_dim[d][(pi / ostr[d]) % w.output[d]])
            .product();
        let valid: Vec<usize> = (0..t.taps)
            .map(|k| t.offsets[k * t.positions + pi])
            .filter(|&o| o != NONE)
            .collect();
        let div = if p.count_include_pad {
            padded_count
        } else {
            valid.len()
        };
        for n in 0..pl.n {
            for c in 0..pl.c {
                let s: f32 = valid.iter().map(|&o| xs[pl.x_at(n, c, o)]).sum();
                y[pl.y_at(n, c, pi)] = if div == 0 { 0.0 } else { s / div as f32 };
            }
        }
    }
    apply_act(&mut y, p.activation);
    f32_tensor(out.shape.clone(), y)
}

pub fn global_avg_pool(x: &Tensor, out: &OutputFact) -> KResult<Tensor> {
    let xs = f32_of(x)?;
    let (n, c) = (x.shape[0], x.shape[1]);
    let s: usize = x.shape[2..].iter().product();
    let mut y = Vec::with_capacity(n * c);
    for plane in xs.chunks_exact(s.max(1)).take(n * c) {
        let sum: f32 = plane.iter().sum();
        y.push(sum / s as f32);
    }
    if s == 0 {
        y = vec![f32::NAN; n * c];
    }
    f32_tensor(out.shape.clone(), y)
}
