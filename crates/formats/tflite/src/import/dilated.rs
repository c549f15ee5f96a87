//! Dilated convolutions as the TFLite converter writes them when the dilation cannot
//! be an attribute (Keras `Conv1D(dilation_rate=d)`, some `Conv2D`/`DepthwiseConv2D`):
//!
//! ```text
//! SPACE_TO_BATCH_ND(block, paddings) -> [EXPAND_DIMS] -> CONV_2D | DEPTHWISE_CONV_2D
//!     (VALID, stride 1, dilation 1) -> [SQUEEZE | RESHAPE] -> BATCH_TO_SPACE_ND(block, crops)
//! ```
//!
//! The chain computes exactly a convolution with dilation `block` over the input padded
//! by `paddings` and then cropped by `crops`: splitting the padded input into `block`
//! phases, running the VALID convolution on each and interleaving the results picks,
//! for output position `o`, the inputs `o + block * k`. With stride 1, cropping the
//! output is removing the same amount of padding, so the whole chain is one `Conv`
//! with `dilations = block` and explicit `pads = paddings - crops` (the padded values
//! are zeros, or the zero point for int8, in both forms). The chain is recognized
//! before conversion and imported as that single convolution (plus the EXPAND_DIMS and
//! a Squeeze); SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND anywhere else are refused.

use super::*;

/// What a folded operator becomes.
#[derive(Debug, Clone)]
pub(super) enum Role {
    /// SPACE_TO_BATCH_ND: its output tensor stands for its input tensor.
    Alias { from: usize, to: i32 },
    /// BATCH_TO_SPACE_ND: nothing (its output is written by the previous step).
    Skip,
    /// The convolution: dilation and explicit pads `[top, left, bottom, right]`
    /// (ONNX order), writing `out` instead of its own output when set.
    Conv {
        dilations: [usize; 2],
        pads: [usize; 4],
        /// The SPACE_TO_BATCH_ND's leading padding per spatial dim: with the block
        /// (`dilations`) it says which phase each input element ran in, which a
        /// hybrid conv needs (LiteRT quantizes each phase on its own).
        phase_offset: [usize; 2],
        out: Option<i32>,
    },
    /// SQUEEZE / RESHAPE after the conv: removes `axis` and writes `out`.
    Squeeze { axis: i64, out: i32 },
}

/// One operator, read once for the pattern search.
struct OpInfo<'a> {
    code: fb::BuiltinOperator,
    ins: Vec<i32>,
    outs: Vec<i32>,
    op: fb::OperatorRef<'a>,
}

impl<'a> Importer<'a> {
    /// Finds every dilated-convolution chain and records the role of its operators in
    /// `self.fold` (and the corrected declared shapes of its inner tensors in
    /// `self.shape_override`). Chains that do not match are left alone: their
    /// SPACE_TO_BATCH_ND is then refused with a clear error when it is converted.
    pub(super) fn find_dilated_convs(&mut self) -> Result<()> {
        let Some(ops) = self.sg.operators()? else {
            return Ok(());
        };
        let mut infos = Vec::with_capacity(ops.len().min(1 << 16));
        let mut any = false;
        for op in ops.iter() {
            let op = op?;
            let (code, _) = opcode(self.codes, &op)?;
            any |= code == fb::BuiltinOperator::SpaceToBatchNd;
            let ins = read_indices(op.inputs()?, &mut self.budget)?;
            let outs = read_indices(op.outputs()?, &mut self.budget)?;
            infos.push(OpInfo {
                code,
                ins,
                outs,
                op,
            });
        }
        if !any {
            return Ok(());
        }
        // Who reads each tensor; graph outputs count as a reader outside the chain.
        let mut readers: HashMap<i32, Vec<usize>> = HashMap::new();
        for (k, o) in infos.iter().enumerate() {
            for &t in &o.ins {
                if t >= 0 {
                    readers.entry(t).or_default().push(k);
                }
            }
        }
        for t in read_indices(self.sg.outputs()?, &mut self.budget)? {
            readers.entry(t).or_default().push(usize::MAX);
        }
        for k in 0..infos.len() {
            if infos[k].code == fb::BuiltinOperator::SpaceToBatchNd {
                // A chain that does not match is not an error here (see above).
                if let Some(plan) = self.match_chain(&infos, &readers, k)? {
                    for (i, role) in plan.roles {
                        self.fold.insert(i, role);
                    }
                    self.shape_override.extend(plan.shapes);
                }
            }
        }
        Ok(())
    }

    fn match_chain(
        &mut self,
        infos: &[OpInfo<'a>],
        readers: &HashMap<i32, Vec<usize>>,
        s2b: usize,
    ) -> Result<Option<Plan>> {
        use fb::BuiltinOperator as B;
        // The single reader of tensor `t`, if there is exactly one.
        let only_reader = |t: i32| match readers.get(&t).map(Vec::as_slice) {
            Some([k]) if *k != usize::MAX => Some(*k),
            _ => None,
        };
        let s = &infos[s2b];
        if s.ins.len() != 3 || s.outs.len() != 1 {
            return Ok(None);
        }
        let Some(block) = self.const_of(s.ins[1])? else {
            return Ok(None);
        };
        let Some(pads) = self.const_of(s.ins[2])? else {
            return Ok(None);
        };
        let m = block.len();
        if !(1..=2).contains(&m) || pads.len() != 2 * m || block.iter().any(|&b| b < 1) {
            return Ok(None);
        }
        if pads.iter().any(|&p| p < 0) {
            return Ok(None);
        }
        let Some(mut k) = only_reader(s.outs[0]) else {
            return Ok(None);
        };
        // Optional EXPAND_DIMS (1-D case): where the unit axis goes.
        let mut expand = None;
        if infos[k].code == B::ExpandDims {
            let e = &infos[k];
            if e.ins.len() != 2 || e.outs.len() != 1 || m != 1 {
                return Ok(None);
            }
            let Some(ax) = self.const_of(e.ins[1])? else {
                return Ok(None);
            };
            // Rank 3 in, 4 out: the unit axis must be spatial (1 or 2).
            let a = match ax.as_slice() {
                [a] if *a == 1 || *a == -3 => 1,
                [a] if *a == 2 || *a == -2 => 2,
                _ => return Ok(None),
            };
            expand = Some((k, a));
            let Some(next) = only_reader(e.outs[0]) else {
                return Ok(None);
            };
            k = next;
        }
        if expand.is_none() && m != 2 {
            return Ok(None);
        }
        let conv = k;
        let c = &infos[conv];
        if !matches!(c.code, B::Conv2d | B::DepthwiseConv2d) || c.outs.len() != 1 {
            return Ok(None);
        }
        let geometry = match c.op.builtin_options()? {
            Some(fb::BuiltinOptionsRef::Conv2DOptions(o)) => (
                o.padding()?,
                [o.stride_h()?, o.stride_w()?],
                [o.dilation_h_factor()?, o.dilation_w_factor()?],
            ),
            Some(fb::BuiltinOptionsRef::DepthwiseConv2DOptions(o)) => (
                o.padding()?,
                [o.stride_h()?, o.stride_w()?],
                [o.dilation_h_factor()?, o.dilation_w_factor()?],
            ),
            _ => return Ok(None),
        };
        if geometry.0 != fb::Padding::Valid || geometry.1 != [1, 1] || geometry.2 != [1, 1] {
            return Ok(None);
        }
        let Some(mut k) = only_reader(c.outs[0]) else {
            return Ok(None);
        };
        // Optional SQUEEZE / RESHAPE removing the unit axis again.
        let mut squeeze = None;
        if let Some((_, a)) = expand {
            let q = &infos[k];
            let removes_axis = match q.code {
                B::Squeeze => match q.op.builtin_options()? {
                    Some(fb::BuiltinOptionsRef::SqueezeOptions(o)) => {
                        o.squeeze_dims()?.is_some_and(|d| {
                            d.len() == 1
                                && matches!(d.get(0), Some(x) if x == a as i32 || x == a as i32 - 4)
                        })
                    }
                    _ => false,
                },
                B::Reshape => self.declared_sig(c.outs[0])?.is_some_and(|conv_out| {
                    let mut want = conv_out.clone();
                    want.remove(a);
                    self.declared_sig(q.outs[0]).ok().flatten() == Some(want)
                }),
                _ => false,
            };
            if !removes_axis || q.outs.len() != 1 {
                return Ok(None);
            }
            squeeze = Some(k);
            let Some(next) = only_reader(q.outs[0]) else {
                return Ok(None);
            };
            k = next;
        }
        let b2s = k;
        let b = &infos[b2s];
        if b.code != B::BatchToSpaceNd || b.ins.len() != 3 || b.outs.len() != 1 {
            return Ok(None);
        }
        if self.const_of(b.ins[1])?.as_ref() != Some(&block) {
            return Ok(None);
        }
        let Some(crops) = self.const_of(b.ins[2])? else {
            return Ok(None);
        };
        if crops.len() != 2 * m {
            return Ok(None);
        }
        // Explicit pads = paddings - crops, per S2B spatial dimension; must be >= 0.
        let mut begin = [0usize; 2];
        let mut end = [0usize; 2];
        let mut dil = [1usize; 2];
        let mut phase_offset = [0usize; 2];
        for j in 0..m {
            let (pb, pe) = (pads[2 * j], pads[2 * j + 1]);
            let (cb, ce) = (crops[2 * j], crops[2 * j + 1]);
            if cb < 0 || ce < 0 || pb < cb || pe < ce {
                return Ok(None);
            }
            // S2B spatial dim j (input axis 1 + j) -> conv spatial index (H=0, W=1).
            let axis = 1 + j + usize::from(expand.is_some_and(|(_, a)| a <= 1 + j));
            let sp = axis - 1;
            begin[sp] = (pb - cb) as usize;
            end[sp] = (pe - ce) as usize;
            dil[sp] = block[j] as usize;
            phase_offset[sp] = pb as usize;
        }
        // The fold keeps every tensor's dtype and quantization only if the chain does.
        let same_q = |a: i32, b: i32| -> Result<bool> {
            let (ta, tb) = (self.tensor_ref(a as usize)?, self.tensor_ref(b as usize)?);
            Ok(ta.type_()? == tb.type_()? && quant_key(&ta)? == quant_key(&tb)?)
        };
        let conv_out = squeeze.map_or(c.outs[0], |q| infos[q].outs[0]);
        if !same_q(s.ins[0], s.outs[0])?
            || !same_q(conv_out, b.outs[0])?
            || !same_q(b.ins[0], b.outs[0])?
        {
            return Ok(None);
        }
        let mut roles = vec![
            (
                s2b,
                Role::Alias {
                    from: s.outs[0] as usize,
                    to: s.ins[0],
                },
            ),
            (b2s, Role::Skip),
        ];
        let mut shapes = Vec::new();
        let pads4 = [begin[0], begin[1], end[0], end[1]];
        match (expand, squeeze) {
            (Some((e, a)), Some(q)) => {
                // EXPAND_DIMS and the conv see the undivided length: redeclare them.
                if let Some(mut sh) = self.declared_dims(s.ins[0])? {
                    sh.insert(a, Dim::Fixed(1));
                    shapes.push((infos[e].outs[0] as usize, sh));
                }
                if let Some(mut sh) = self.declared_dims(b.outs[0])? {
                    sh.insert(a, Dim::Fixed(1));
                    shapes.push((c.outs[0] as usize, sh));
                }
                roles.push((
                    conv,
                    Role::Conv {
                        dilations: dil,
                        pads: pads4,
                        phase_offset,
                        out: None,
                    },
                ));
                roles.push((
                    q,
                    Role::Squeeze {
                        axis: a as i64,
                        out: b.outs[0],
                    },
                ));
            }
            (None, None) => roles.push((
                conv,
                Role::Conv {
                    dilations: dil,
                    pads: pads4,
                    phase_offset,
                    out: Some(b.outs[0]),
                },
            )),
            _ => return Ok(None),
        }
        Ok(Some(Plan { roles, shapes }))
    }

    /// Contents of a constant integer tensor, `None` if it is not a constant.
    fn const_of(&mut self, t: i32) -> Result<Option<Vec<i64>>> {
        let t = usize::try_from(t).map_err(|_| invalid(format!("tensor index {t}")))?;
        let info = self.read_tensor(t)?;
        if info.data.is_none() {
            return Ok(None);
        }
        Ok(Some(Importer::const_ints(&info, "constant")?))
    }

    /// Declared shape signature of a tensor (-1 = dynamic), if it has a shape.
    fn declared_sig(&self, t: i32) -> Result<Option<Vec<i64>>> {
        let tr = self.tensor_ref(usize::try_from(t).map_err(|_| invalid("tensor index"))?)?;
        let Some(shape) = tr.shape()? else {
            return Ok(None);
        };
        let sig = tr.shape_signature()?;
        Ok(Some(
            shape
                .iter()
                .enumerate()
                .map(|(i, d)| match sig.and_then(|s| s.get(i)) {
                    Some(-1) => -1,
                    _ => d as i64,
                })
                .collect(),
        ))
    }

    /// Declared dims of a tensor as the importer would declare them.
    fn declared_dims(&mut self, t: i32) -> Result<Option<Vec<Dim>>> {
        let t = usize::try_from(t).map_err(|_| invalid(format!("tensor index {t}")))?;
        Ok(self.read_tensor(t)?.shape)
    }
}

/// A matched chain: roles by operator index, and redeclared tensor shapes.
struct Plan {
    roles: Vec<(usize, Role)>,
    shapes: Vec<(usize, Vec<Dim>)>,
}

/// Quantization of a tensor as comparable values (scales as bits).
fn quant_key(t: &fb::TensorRef<'_>) -> Result<Option<(Vec<u32>, Vec<i64>)>> {
    let Some(q) = t.quantization()? else {
        return Ok(None);
    };
    let scale: Vec<u32> = q
        .scale()?
        .map(|s| s.iter().map(f32::to_bits).collect())
        .unwrap_or_default();
    let zp: Vec<i64> = q
        .zero_point()?
        .map(|z| z.iter().collect())
        .unwrap_or_default();
    if scale.is_empty() && zp.is_empty() {
        return Ok(None);
    }
    Ok(Some((scale, zp)))
}
