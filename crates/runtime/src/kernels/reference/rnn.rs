//! Recurrent layers: ONNX LSTM and GRU with the default activations.
//!
//! Both run, per direction and batch row, over the first `sequence_lens[b]` steps
//! (forward, or backward from the last valid step); outputs past a row's length stay
//! zero and its final states are those of its last valid step (zero for a row of
//! length 0, as onnxruntime). Dot products accumulate in f64.

use super::util::{f32_of, f32_tensor, sigmoid, KResult};
use edgeopt_ir::shape::OutputFact;
use edgeopt_ir::{RnnDirection, Tensor};

/// The attributes of [`edgeopt_ir::Op::Lstm`] and [`edgeopt_ir::Op::Gru`].
pub struct RnnAttrs {
    pub hidden: usize,
    pub direction: RnnDirection,
    pub batch_first: bool,
    pub clip: Option<f32>,
    /// LSTM: forget gate = 1 - input gate.
    pub input_forget: bool,
    /// GRU: reset gate applied after the recurrent product.
    pub linear_before_reset: bool,
}

/// Sequence geometry shared by the cells: where step `t` of row `b` is read and
/// written, in either layout.
struct Seq<'a> {
    xs: &'a [f32],
    seq: usize,
    batch: usize,
    isz: usize,
    dirs: usize,
    h: usize,
    batch_first: bool,
    lens: Vec<usize>,
}

impl<'a> Seq<'a> {
    fn new(a: &RnnAttrs, x: &'a Tensor, lens: Option<&Tensor>) -> KResult<Self> {
        let (seq, batch) = if a.batch_first {
            (x.shape[1], x.shape[0])
        } else {
            (x.shape[0], x.shape[1])
        };
        let lens = match lens {
            None => vec![seq; batch],
            Some(l) => l
                .to_i64_vec()
                .into_iter()
                .map(|n| {
                    usize::try_from(n)
                        .ok()
                        .filter(|&n| n <= seq)
                        .ok_or_else(|| format!("sequence length {n} is outside 0..={seq}"))
                })
                .collect::<KResult<_>>()?,
        };
        Ok(Seq {
            xs: f32_of(x)?,
            seq,
            batch,
            isz: x.shape[2],
            dirs: a.direction.count(),
            h: a.hidden,
            batch_first: a.batch_first,
            lens,
        })
    }

    fn x_at(&self, bi: usize, t: usize) -> &'a [f32] {
        let o = if self.batch_first {
            bi * self.seq + t
        } else {
            t * self.batch + bi
        } * self.isz;
        &self.xs[o..o + self.isz]
    }

    fn y_at(&self, t: usize, dir: usize, bi: usize) -> usize {
        if self.batch_first {
            ((bi * self.seq + t) * self.dirs + dir) * self.h
        } else {
            ((t * self.dirs + dir) * self.batch + bi) * self.h
        }
    }

    fn state_at(&self, dir: usize, bi: usize) -> usize {
        if self.batch_first {
            (bi * self.dirs + dir) * self.h
        } else {
            (dir * self.batch + bi) * self.h
        }
    }

    fn reverse(&self, a: &RnnAttrs, dir: usize) -> bool {
        a.direction == RnnDirection::Reverse || dir == 1
    }

    /// Initial state of row `bi` in direction `dir` (zeros when not given).
    fn initial(&self, s: Option<&[f32]>, dir: usize, bi: usize) -> Vec<f32> {
        let o = self.state_at(dir, bi);
        s.map_or(vec![0.0; self.h], |v| v[o..o + self.h].to_vec())
    }
}

fn dot(w: &[f32], v: &[f32]) -> f64 {
    w.iter().zip(v).map(|(&p, &q)| p as f64 * q as f64).sum()
}

/// `W x + R h` for every gate row: `gx[k]` and `gh[k]` kept apart (GRU needs them so).
fn products(w: &[f32], r: &[f32], x: &[f32], h: &[f32], gx: &mut [f32], gh: &mut [f32]) {
    let (isz, hsz) = (x.len(), h.len());
    for (k, (px, ph)) in gx.iter_mut().zip(gh.iter_mut()).enumerate() {
        *px = dot(&w[k * isz..(k + 1) * isz], x) as f32;
        *ph = dot(&r[k * hsz..(k + 1) * hsz], h) as f32;
    }
}

/// Input and recurrence biases of direction `dir` (`2 * gates` values each), or zeros.
fn biases(b: Option<&[f32]>, dir: usize, g: usize) -> (Vec<f32>, Vec<f32>) {
    match b {
        Some(b) => (
            b[dir * 2 * g..dir * 2 * g + g].to_vec(),
            b[dir * 2 * g + g..(dir + 1) * 2 * g].to_vec(),
        ),
        None => (vec![0.0; g], vec![0.0; g]),
    }
}

/// ONNX LSTM (shapes checked by the IR's rule); gate order i, o, f, c.
pub fn lstm(a: &RnnAttrs, inputs: &[Option<&Tensor>], outs: &[OutputFact]) -> KResult<Vec<Tensor>> {
    let get = |k: usize| inputs.get(k).copied().flatten();
    let s = Seq::new(a, get(0).ok_or("input 0 is missing")?, get(4))?;
    let w = f32_of(get(1).ok_or("w is missing")?)?;
    let r = f32_of(get(2).ok_or("r is missing")?)?;
    let opt_f32 = |k: usize| get(k).map(f32_of).transpose();
    let (b, h0, c0, p) = (opt_f32(3)?, opt_f32(5)?, opt_f32(6)?, opt_f32(7)?);
    let (h, isz) = (s.h, s.isz);
    let g = 4 * h;
    let clip = |v: f32| a.clip.map_or(v, |c| v.clamp(-c, c));
    let mut y = vec![0.0f32; s.seq * s.dirs * s.batch * h];
    let mut yh = vec![0.0f32; s.dirs * s.batch * h];
    let mut yc = vec![0.0f32; s.dirs * s.batch * h];
    let (mut gx, mut gh) = (vec![0.0f32; g], vec![0.0f32; g]);
    for dir in 0..s.dirs {
        let wd = &w[dir * g * isz..(dir + 1) * g * isz];
        let rd = &r[dir * g * h..(dir + 1) * g * h];
        let (wb, rb) = biases(b, dir, g);
        let peep = |k: usize, j: usize| p.map_or(0.0, |p| p[dir * 3 * h + k * h + j]);
        for (bi, &n) in s.lens.iter().enumerate() {
            let mut hs = s.initial(h0, dir, bi);
            let mut cs = s.initial(c0, dir, bi);
            for step in 0..n {
                let t = if s.reverse(a, dir) {
                    n - 1 - step
                } else {
                    step
                };
                products(wd, rd, s.x_at(bi, t), &hs, &mut gx, &mut gh);
                let gate = |k: usize| gx[k] + gh[k] + wb[k] + rb[k];
                let yo = s.y_at(t, dir, bi);
                for j in 0..h {
                    let i = sigmoid(clip(gate(j) + peep(0, j) * cs[j]));
                    let f = if a.input_forget {
                        1.0 - i
                    } else {
                        sigmoid(clip(gate(2 * h + j) + peep(2, j) * cs[j]))
                    };
                    let cand = clip(gate(3 * h + j)).tanh();
                    let c = f * cs[j] + i * cand;
                    let o = sigmoid(clip(gate(h + j) + peep(1, j) * c));
                    cs[j] = c;
                    hs[j] = o * c.tanh();
                    y[yo + j] = hs[j];
                }
            }
            if n > 0 {
                let o = s.state_at(dir, bi);
                yh[o..o + h].copy_from_slice(&hs);
                yc[o..o + h].copy_from_slice(&cs);
            }
        }
    }
    Ok(vec![
        f32_tensor(outs[0].shape.clone(), y)?,
        f32_tensor(outs[1].shape.clone(), yh)?,
        f32_tensor(outs[2].shape.clone(), yc)?,
    ])
}

/// ONNX GRU (shapes checked by the IR's rule); gate order z, r, h.
pub fn gru(a: &RnnAttrs, inputs: &[Option<&Tensor>], outs: &[OutputFact]) -> KResult<Vec<Tensor>> {
    let get = |k: usize| inputs.get(k).copied().flatten();
    let s = Seq::new(a, get(0).ok_or("input 0 is missing")?, get(4))?;
    let w = f32_of(get(1).ok_or("w is missing")?)?;
    let r = f32_of(get(2).ok_or("r is missing")?)?;
    let opt_f32 = |k: usize| get(k).map(f32_of).transpose();
    let (b, h0) = (opt_f32(3)?, opt_f32(5)?);
    let (h, isz) = (s.h, s.isz);
    let g = 3 * h;
    let clip = |v: f32| a.clip.map_or(v, |c| v.clamp(-c, c));
    let mut y = vec![0.0f32; s.seq * s.dirs * s.batch * h];
    let mut yh = vec![0.0f32; s.dirs * s.batch * h];
    let (mut gx, mut gh) = (vec![0.0f32; g], vec![0.0f32; g]);
    let mut rh = vec![0.0f32; h];
    for dir in 0..s.dirs {
        let wd = &w[dir * g * isz..(dir + 1) * g * isz];
        let rd = &r[dir * g * h..(dir + 1) * g * h];
        let rd_h = &rd[2 * h * h..];
        let (wb, rb) = biases(b, dir, g);
        for (bi, &n) in s.lens.iter().enumerate() {
            let mut hs = s.initial(h0, dir, bi);
            for step in 0..n {
                let t = if s.reverse(a, dir) {
                    n - 1 - step
                } else {
                    step
                };
                products(wd, rd, s.x_at(bi, t), &hs, &mut gx, &mut gh);
                let zr = |k: usize| sigmoid(clip(gx[k] + gh[k] + wb[k] + rb[k]));
                if !a.linear_before_reset {
                    // The candidate's recurrent product reads the reset state r * H.
                    for j in 0..h {
                        rh[j] = zr(h + j) * hs[j];
                    }
                }
                let yo = s.y_at(t, dir, bi);
                let mut next = vec![0.0f32; h];
                for (j, nj) in next.iter_mut().enumerate() {
                    let (z, rg) = (zr(j), zr(h + j));
                    let k = 2 * h + j;
                    let rec = if a.linear_before_reset {
                        rg * (gh[k] + rb[k])
                    } else {
                        dot(&rd_h[j * h..(j + 1) * h], &rh) as f32 + rb[k]
                    };
                    let cand = clip(gx[k] + wb[k] + rec).tanh();
                    *nj = (1.0 - z) * cand + z * hs[j];
                }
                hs = next;
                y[yo..yo + h].copy_from_slice(&hs);
            }
            if n > 0 {
                let o = s.state_at(dir, bi);
                yh[o..o + h].copy_from_slice(&hs);
            }
        }
    }
    Ok(vec![
        f32_tensor(outs[0].shape.clone(), y)?,
        f32_tensor(outs[1].shape.clone(), yh)?,
    ])
}
