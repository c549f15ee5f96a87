//! A recurrent layer with constant weights and a sequence length fixed by the model's
//! shapes → its steps as plain operators (the form the Keras converter writes with
//! `unroll=True`): one FullyConnected projects the whole input sequence, then per step
//! a FullyConnected of the previous hidden state, an Add, a Split into the gates,
//! Logistic / Tanh and the elementwise cell update.
//!
//! Why unroll: every operator of the unrolled form already has an int8 kernel in the
//! runtime (bit-exact with LiteRT and TFLite Micro), a TFLite and an ONNX form, so the
//! whole cell quantizes (each step's gates and state with their own calibrated range)
//! and every writer takes it; TFLite's own integer LSTM (UNIDIRECTIONAL_SEQUENCE_LSTM
//! with int16 cell state and 20-odd intermediate scales) would need a kernel of its
//! own. The float arithmetic is the same as the fused op up to float rounding.
//!
//! Handled: ONNX LSTM with the default activations, any direction, either layout, no
//! `sequence_lens`, no peepholes, no `clip`, no `input_forget`, constant (or absent)
//! initial states. Anything else is left as it is (and runs in float).

use super::util::fresh_name;
use crate::Result;
use edgeopt_ir::shape::{bind_input_shapes, infer_graph};
use edgeopt_ir::{
    Activation, BinaryKind, DType, Graph, Node, Op, RnnDirection, Tensor, UnaryKind, ValueId,
};

/// Unrolls every LSTM of `g` that the module doc describes.
pub fn unroll_lstm(g: &mut Graph) -> Result<()> {
    if !g.nodes.iter().any(|n| matches!(n.op, Op::Lstm { .. })) {
        return Ok(());
    }
    let shapes = bind_input_shapes(g, 1)?;
    let facts = infer_graph(g, &shapes)?;
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for n in std::mem::take(&mut g.nodes) {
        let x_shape = n
            .input(0)
            .and_then(|x| facts.get(x).cloned().flatten())
            .map(|f| f.shape);
        match (&n.op, x_shape) {
            (
                Op::Lstm {
                    hidden_size,
                    direction,
                    batch_first,
                    clip: None,
                    input_forget: false,
                },
                Some(xs),
            ) if xs.len() == 3 && unrollable(g, &n) => {
                let mut e = Emit {
                    g,
                    nodes: &mut nodes,
                    base: n.name.clone(),
                };
                e.lstm(&n, *hidden_size, *direction, *batch_first, &xs)?;
            }
            _ => nodes.push(n),
        }
    }
    g.nodes = nodes;
    Ok(())
}

/// Constant weights and states, no sequence lengths or peepholes, f32.
fn unrollable(g: &Graph, n: &Node) -> bool {
    let is_f32_const = |k: usize| {
        n.input(k)
            .and_then(|v| g.const_data(v))
            .is_some_and(|t| t.dtype() == DType::F32)
    };
    let absent_or_const = |k: usize| n.input(k).is_none() || is_f32_const(k);
    is_f32_const(1)
        && is_f32_const(2)
        && absent_or_const(3)
        && n.input(4).is_none()
        && absent_or_const(5)
        && absent_or_const(6)
        && n.input(7).is_none()
        && n.input(0).is_some_and(|x| g.values[x].dtype == DType::F32)
}

struct Emit<'a> {
    g: &'a mut Graph,
    nodes: &'a mut Vec<Node>,
    base: String,
}

impl Emit<'_> {
    fn value(&mut self, tag: &str) -> ValueId {
        let name = fresh_name(self.g, &format!("{}_{tag}", self.base));
        self.g.add_value(name, DType::F32, None)
    }

    fn constant(&mut self, tag: &str, t: Tensor) -> ValueId {
        let name = fresh_name(self.g, &format!("{}_{tag}", self.base));
        self.g.add_const(name, t)
    }

    fn node(&mut self, tag: &str, op: Op, inputs: Vec<ValueId>, outputs: Vec<ValueId>) {
        let name = fresh_name(self.g, &format!("{}_{tag}", self.base));
        self.nodes.push(Node {
            name,
            op,
            inputs: inputs.into_iter().map(Some).collect(),
            outputs,
        });
    }

    fn unary(&mut self, tag: &str, k: UnaryKind, x: ValueId) -> ValueId {
        let y = self.value(tag);
        self.node(tag, Op::Unary(k), vec![x], vec![y]);
        y
    }

    fn binary(&mut self, tag: &str, kind: BinaryKind, a: ValueId, b: ValueId) -> ValueId {
        let y = self.value(tag);
        let op = Op::Binary {
            kind,
            activation: Activation::None,
        };
        self.node(tag, op, vec![a, b], vec![y]);
        y
    }

    fn reshape(&mut self, tag: &str, x: ValueId, shape: &[i64]) -> Result<ValueId> {
        let s = self.constant(
            &format!("{tag}_shape"),
            Tensor::from_i64(vec![shape.len()], shape.to_vec())?,
        );
        let y = self.value(tag);
        self.node(tag, Op::Reshape { allowzero: false }, vec![x, s], vec![y]);
        Ok(y)
    }

    /// FullyConnected `x [.., K] · w[N, K]ᵀ (+ b)`.
    fn fc(&mut self, tag: &str, x: ValueId, w: ValueId, b: Option<ValueId>, keep: bool) -> ValueId {
        let y = self.value(tag);
        let name = fresh_name(self.g, &format!("{}_{tag}", self.base));
        self.nodes.push(Node {
            name,
            op: Op::FullyConnected {
                activation: Activation::None,
                keep_num_dims: keep,
                hybrid: None,
            },
            inputs: vec![Some(x), Some(w), b],
            outputs: vec![y],
        });
        y
    }

    /// Rows `[d*rows .. (d+1)*rows)` of a constant `[dirs, rows, cols]` as `[rows, cols]`.
    fn slab(&mut self, tag: &str, t: &Tensor, d: usize) -> Result<ValueId> {
        let (rows, cols) = (t.shape[1], t.shape[2]);
        let v = t.as_f32()?[d * rows * cols..(d + 1) * rows * cols].to_vec();
        Ok(self.constant(tag, Tensor::from_f32(vec![rows, cols], v)?))
    }

    fn lstm(
        &mut self,
        n: &Node,
        h: usize,
        direction: RnnDirection,
        batch_first: bool,
        xs: &[usize],
    ) -> Result<()> {
        let g = &*self.g;
        let x = n.input(0).expect("checked");
        let w = g
            .const_data(n.input(1).expect("checked"))
            .expect("checked")
            .clone();
        let r = g
            .const_data(n.input(2).expect("checked"))
            .expect("checked")
            .clone();
        let b = n.input(3).and_then(|v| g.const_data(v)).cloned();
        let h0 = n.input(5).and_then(|v| g.const_data(v)).cloned();
        let c0 = n.input(6).and_then(|v| g.const_data(v)).cloned();
        let dirs = direction.count();
        let (seq, batch, input) = if batch_first {
            (xs[1], xs[0], xs[2])
        } else {
            (xs[0], xs[1], xs[2])
        };
        if w.shape != [dirs, 4 * h, input] || r.shape != [dirs, 4 * h, h] || seq == 0 {
            return Err(crate::CompressError::Invalid(format!(
                "LSTM '{}': weights {:?} / {:?} do not match {dirs} direction(s), hidden \
                 size {h}, input size {input}",
                n.name, w.shape, r.shape
            )));
        }
        let seq_axis = if batch_first { 1 } else { 0 };
        // The input sequence, one [batch, input] piece per step.
        let pieces: Vec<ValueId> = (0..seq).map(|t| self.value(&format!("x{t}"))).collect();
        self.node(
            "split_x",
            Op::Split {
                axis: seq_axis,
                split: vec![1; seq],
            },
            vec![x],
            pieces.clone(),
        );
        let steps_in: Vec<ValueId> = pieces
            .iter()
            .enumerate()
            .map(|(t, &p)| self.reshape(&format!("x{t}_2d"), p, &[-1, input as i64]))
            .collect::<Result<_>>()?;
        // A state given as a constant [dirs, batch, H] (batch-first: [batch, dirs, H]):
        // direction d's [batch, H] slice, or None when it is all zeros.
        let state = |t: &Option<Tensor>, d: usize| -> Result<Option<Tensor>> {
            let Some(t) = t else { return Ok(None) };
            let v = t.as_f32()?;
            if v.iter().all(|&a| a == 0.0) {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(batch * h);
            for bi in 0..batch {
                let at = if batch_first {
                    (bi * dirs + d) * h
                } else {
                    (d * batch + bi) * h
                };
                out.extend_from_slice(&v[at..at + h]);
            }
            Ok(Some(Tensor::from_f32(vec![batch, h], out)?))
        };
        let mut ys = Vec::new();
        let mut hs = Vec::new();
        let mut cs = Vec::new();
        for d in 0..dirs {
            let reverse = direction == RnnDirection::Reverse || d == 1;
            let wd = self.slab(&format!("w{d}"), &w, d)?;
            let rd = self.slab(&format!("r{d}"), &r, d)?;
            let bias = match &b {
                Some(bt) => {
                    let v = bt.as_f32()?;
                    let at = d * 8 * h;
                    let sum: Vec<f32> = (0..4 * h).map(|k| v[at + k] + v[at + 4 * h + k]).collect();
                    Some(self.constant(&format!("b{d}"), Tensor::from_f32(vec![4 * h], sum)?))
                }
                None => None,
            };
            let mut hv = state(&h0, d)?.map(|t| self.constant(&format!("h0_{d}"), t));
            let mut cv = state(&c0, d)?.map(|t| self.constant(&format!("c0_{d}"), t));
            let mut outs = vec![None; seq];
            for k in 0..seq {
                let t = if reverse { seq - 1 - k } else { k };
                let tag = format!("d{d}t{t}");
                let xp = self.fc(&format!("{tag}_x"), steps_in[t], wd, bias, false);
                let gates = match hv {
                    Some(hp) => {
                        let rp = self.fc(&format!("{tag}_h"), hp, rd, None, false);
                        self.binary(&format!("{tag}_gates"), BinaryKind::Add, xp, rp)
                    }
                    None => xp,
                };
                // ONNX gate order: input, output, forget, cell.
                let parts: Vec<ValueId> = ["i", "o", "f", "c"]
                    .iter()
                    .map(|s| self.value(&format!("{tag}_{s}_pre")))
                    .collect();
                self.node(
                    &format!("{tag}_split"),
                    Op::Split {
                        axis: 1,
                        split: vec![h; 4],
                    },
                    vec![gates],
                    parts.clone(),
                );
                let i = self.unary(&format!("{tag}_i"), UnaryKind::Sigmoid, parts[0]);
                let o = self.unary(&format!("{tag}_o"), UnaryKind::Sigmoid, parts[1]);
                let f = self.unary(&format!("{tag}_f"), UnaryKind::Sigmoid, parts[2]);
                let c = self.unary(&format!("{tag}_c"), UnaryKind::Tanh, parts[3]);
                let ic = self.binary(&format!("{tag}_ic"), BinaryKind::Mul, i, c);
                let cell = match cv {
                    Some(cp) => {
                        let fc = self.binary(&format!("{tag}_fc"), BinaryKind::Mul, f, cp);
                        self.binary(&format!("{tag}_cell"), BinaryKind::Add, fc, ic)
                    }
                    None => ic,
                };
                let tc = self.unary(&format!("{tag}_tanh_cell"), UnaryKind::Tanh, cell);
                let hn = self.binary(&format!("{tag}_hidden"), BinaryKind::Mul, o, tc);
                outs[t] = Some(hn);
                hv = Some(hn);
                cv = Some(cell);
            }
            ys.push(
                outs.into_iter()
                    .map(|o| o.expect("every step ran"))
                    .collect::<Vec<_>>(),
            );
            hs.push(hv.expect("seq > 0"));
            cs.push(cv.expect("seq > 0"));
        }
        let hh = h as i64;
        // y: [seq, dirs, batch, H] (batch-first: [batch, seq, dirs, H]).
        if let Some(&y) = n.outputs.first() {
            let mut per_dir = Vec::new();
            for (d, steps) in ys.iter().enumerate() {
                let shape: Vec<i64> = if batch_first {
                    vec![-1, 1, 1, hh]
                } else {
                    vec![1, 1, -1, hh]
                };
                let parts: Vec<ValueId> = steps
                    .iter()
                    .enumerate()
                    .map(|(t, &s)| self.reshape(&format!("y_d{d}t{t}"), s, &shape))
                    .collect::<Result<_>>()?;
                let yd = if dirs == 1 {
                    y
                } else {
                    self.value(&format!("y{d}"))
                };
                self.node(
                    &format!("y{d}_concat"),
                    Op::Concat {
                        axis: seq_axis,
                        activation: Activation::None,
                    },
                    parts,
                    vec![yd],
                );
                per_dir.push(yd);
            }
            if dirs > 1 {
                let axis = if batch_first { 2 } else { 1 };
                let op = Op::Concat {
                    axis,
                    activation: Activation::None,
                };
                self.node("y_concat", op, per_dir, vec![y]);
            }
        }
        // y_h, y_c: [dirs, batch, H] (batch-first: [batch, dirs, H]).
        for (k, finals) in [(1usize, hs), (2, cs)] {
            let Some(&out) = n.outputs.get(k) else {
                continue;
            };
            let tag = if k == 1 { "y_h" } else { "y_c" };
            let shape: Vec<i64> = if batch_first {
                vec![-1, 1, hh]
            } else {
                vec![1, -1, hh]
            };
            if dirs == 1 {
                let s = self.constant(
                    &format!("{tag}_shape"),
                    Tensor::from_i64(vec![3], shape.clone())?,
                );
                self.node(
                    tag,
                    Op::Reshape { allowzero: false },
                    vec![finals[0], s],
                    vec![out],
                );
                continue;
            }
            let parts: Vec<ValueId> = finals
                .iter()
                .enumerate()
                .map(|(d, &v)| self.reshape(&format!("{tag}{d}"), v, &shape))
                .collect::<Result<_>>()?;
            let axis = if batch_first { 1 } else { 0 };
            let op = Op::Concat {
                axis,
                activation: Activation::None,
            };
            self.node(&format!("{tag}_concat"), op, parts, vec![out]);
        }
        Ok(())
    }
}
