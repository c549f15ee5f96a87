//! Recurrent layers: ONNX LSTM with the default activations.

use super::util::{f32_of, f32_tensor, sigmoid, KResult};
use edgeopt_ir::shape::OutputFact;
use edgeopt_ir::{RnnDirection, Tensor};

/// The attributes of [`edgeopt_ir::Op::Lstm`].
pub struct LstmAttrs {
    pub hidden: usize,
    pub direction: RnnDirection,
    pub batch_first: bool,
    pub clip: Option<f32>,
    pub input_forget: bool,
}

/// ONNX LSTM (shapes checked by the IR's rule): per direction and batch row, runs the
/// cell over the first `sequence_lens[b]` steps (forward, or backward from the last
/// valid step); outputs past a row's length stay zero and its final states are those
/// of its last valid step (zero for a row of length 0). Dot products accumulate in
/// f64.
pub fn lstm(
    a: &LstmAttrs,
    inputs: &[Option<&Tensor>],
    outs: &[OutputFact],
) -> KResult<Vec<Tensor>> {
    let get = |k: usize| inputs.get(k).copied().flatten();
    let x = get(0).ok_or("input 0 is missing")?;
    let xs = f32_of(x)?;
    let w = f32_of(get(1).ok_or("w is missing")?)?;
    let r = f32_of(get(2).ok_or("r is missing")?)?;
    let opt_f32 = |k: usize| get(k).map(f32_of).transpose();
    let (b, h0, c0, p) = (opt_f32(3)?, opt_f32(5)?, opt_f32(6)?, opt_f32(7)?);
    let (seq, batch, isz) = if a.batch_first {
        (x.shape[1], x.shape[0], x.shape[2])
    } else {
        (x.shape[0], x.shape[1], x.shape[2])
    };
    let lens: Vec<usize> = match get(4) {
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
    let (h, d) = (a.hidden, a.direction.count());
    let g4 = 4 * h;
    let x_at = |bi: usize, t: usize| {
        let o = if a.batch_first {
            bi * seq + t
        } else {
            t * batch + bi
        } * isz;
        &xs[o..o + isz]
    };
    let y_at = |t: usize, dir: usize, bi: usize| {
        if a.batch_first {
            ((bi * seq + t) * d + dir) * h
        } else {
            ((t * d + dir) * batch + bi) * h
        }
    };
    let state_at = |dir: usize, bi: usize| {
        if a.batch_first {
            (bi * d + dir) * h
        } else {
            (dir * batch + bi) * h
        }
    };
    let clip = |v: f32| a.clip.map_or(v, |c| v.clamp(-c, c));
    let mut y = vec![0.0f32; seq * d * batch * h];
    let mut yh = vec![0.0f32; d * batch * h];
    let mut yc = vec![0.0f32; d * batch * h];
    let mut gates = vec![0.0f32; g4];
    for dir in 0..d {
        let reverse = a.direction == RnnDirection::Reverse || dir == 1;
        let wd = &w[dir * g4 * isz..(dir + 1) * g4 * isz];
        let rd = &r[dir * g4 * h..(dir + 1) * g4 * h];
        // Input and recurrence biases are always added together.
        let bias: Vec<f32> = match b {
            Some(b) => (0..g4)
                .map(|k| b[dir * 2 * g4 + k] + b[dir * 2 * g4 + g4 + k])
                .collect(),
            None => vec![0.0; g4],
        };
        let peep = |k: usize, j: usize| p.map_or(0.0, |p| p[dir * 3 * h + k * h + j]);
        for (bi, &n) in lens.iter().enumerate() {
            let s0 = state_at(dir, bi);
            let mut hs = h0.map_or(vec![0.0; h], |v| v[s0..s0 + h].to_vec());
            let mut cs = c0.map_or(vec![0.0; h], |v| v[s0..s0 + h].to_vec());
            for step in 0..n {
                let t = if reverse { n - 1 - step } else { step };
                let xt = x_at(bi, t);
                for (k, gk) in gates.iter_mut().enumerate() {
                    let wx: f64 = wd[k * isz..(k + 1) * isz]
                        .iter()
                        .zip(xt)
                        .map(|(&p, &q)| p as f64 * q as f64)
                        .sum();
                    let rh: f64 = rd[k * h..(k + 1) * h]
                        .iter()
                        .zip(&hs)
                        .map(|(&p, &q)| p as f64 * q as f64)
                        .sum();
                    *gk = (wx + rh) as f32 + bias[k];
                }
                let yo = y_at(t, dir, bi);
                for j in 0..h {
                    let i = sigmoid(clip(gates[j] + peep(0, j) * cs[j]));
                    let f = if a.input_forget {
                        1.0 - i
                    } else {
                        sigmoid(clip(gates[2 * h + j] + peep(2, j) * cs[j]))
                    };
                    let cand = clip(gates[3 * h + j]).tanh();
                    let c = f * cs[j] + i * cand;
                    let o = sigmoid(clip(gates[h + j] + peep(1, j) * c));
                    cs[j] = c;
                    hs[j] = o * c.tanh();
                    y[yo + j] = hs[j];
                }
            }
            // A row of length 0 has no last step: its final states are zero, not the
            // initial ones (onnxruntime).
            if n > 0 {
                yh[s0..s0 + h].copy_from_slice(&hs);
                yc[s0..s0 + h].copy_from_slice(&cs);
            }
        }
    }
    Ok(vec![
        f32_tensor(outs[0].shape.clone(), y)?,
        f32_tensor(outs[1].shape.clone(), yh)?,
        f32_tensor(outs[2].shape.clone(), yc)?,
    ])
}
