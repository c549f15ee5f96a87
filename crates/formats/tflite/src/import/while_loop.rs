//! WHILE loops with a trip count fixed by constants, unrolled at import: what the
//! TFLite converter writes for a Keras RNN / GRU / LSTM layer that is not unrolled
//! (`unroll=False`, the default):
//!
//! ```text
//! WHILE(i = 0, t = 0, out, state, sequence)   cond: i < T && t < T
//!   body: i + 1, t + 1, GATHER(sequence, t) -> FULLY_CONNECTED ... -> state'
//! ```
//!
//! The loop control (the counters and the condition) is integer scalar arithmetic on
//! values that start as constants. The importer evaluates it while it inlines the body
//! once per trip, with the counters as constants, so the loop becomes the straight-line
//! graph of its iterations (the form `tf.keras` gives with `unroll=True`), which every
//! stage of edgeopt handles (run, quantize, export, compile). A condition that depends
//! on run-time values (a data-dependent loop) is refused by name; the trip count and
//! the inlined body are bounded by [`MAX_TRIPS`] and the import budget.

use super::*;

/// Most trips a loop may take (a hostile file cannot make the import loop forever;
/// the import budget bounds the nodes the trips add too).
pub(super) const MAX_TRIPS: usize = 1 << 16;

/// Most WHILE loops nested in one another.
const MAX_DEPTH: usize = 4;

/// Most elements of a loop-control value the evaluator computes (counters are scalars).
const MAX_EVAL_ELEMENTS: usize = 64;

/// A loop body's invariants: tensors computed from constants only, and their values.
#[derive(Default)]
struct Invariant {
    tensors: HashSet<usize>,
    values: HashMap<(usize, View), ValueId>,
}

/// The subgraph-specific state of the importer, swapped while a loop's subgraphs are
/// read.
pub(super) struct Scope<'a> {
    sg: fb::SubGraphRef<'a>,
    tensors: Option<Vector<'a, planus::Result<fb::TensorRef<'a>>>>,
    values: HashMap<(usize, View), ValueId>,
    fold: HashMap<usize, dilated::Role>,
    shape_override: HashMap<usize, Vec<Dim>>,
}

impl<'a> Importer<'a> {
    fn subgraph(&self, i: i32) -> Result<fb::SubGraphRef<'a>> {
        let sgs = self
            .subgraphs
            .ok_or_else(|| invalid("model has no subgraphs"))?;
        let k = usize::try_from(i)
            .ok()
            .filter(|&k| k > 0 && k < sgs.len())
            .ok_or_else(|| invalid(format!("subgraph index {i} ({} subgraphs)", sgs.len())))?;
        Ok(sgs
            .get(k)
            .ok_or_else(|| invalid(format!("subgraph {k}")))??)
    }

    /// Makes `sg` the subgraph whose tensors and operators are read, with `values` as
    /// its tensor -> value map; returns the scope it replaces.
    fn enter(
        &mut self,
        sg: fb::SubGraphRef<'a>,
        values: HashMap<(usize, View), ValueId>,
    ) -> Result<Scope<'a>> {
        let tensors = sg.tensors()?;
        Ok(self.swap_scope(Scope {
            sg,
            tensors,
            values,
            fold: HashMap::new(),
            shape_override: HashMap::new(),
        }))
    }

    fn swap_scope(&mut self, s: Scope<'a>) -> Scope<'a> {
        Scope {
            sg: std::mem::replace(&mut self.sg, s.sg),
            tensors: std::mem::replace(&mut self.tensors, s.tensors),
            values: std::mem::replace(&mut self.values, s.values),
            fold: std::mem::replace(&mut self.fold, s.fold),
            shape_override: std::mem::replace(&mut self.shape_override, s.shape_override),
        }
    }

    /// Unrolls WHILE operator #`k` (`ins`: the initial loop values, `outs`: the final
    /// ones).
    pub(super) fn while_loop(
        &mut self,
        k: usize,
        op: &fb::OperatorRef<'a>,
        ins: &[i32],
        outs: &[i32],
    ) -> Result<()> {
        let Some(fb::BuiltinOptionsRef::WhileOptions(o)) = op.builtin_options()? else {
            return Err(invalid("WHILE without WhileOptions"));
        };
        if self.loop_depth >= MAX_DEPTH {
            return Err(unsupported(format!(
                "WHILE loops nested deeper than {MAX_DEPTH}"
            )));
        }
        let cond = self.subgraph(o.cond_subgraph_index()?)?;
        let body = self.subgraph(o.body_subgraph_index()?)?;
        let n = ins.len();
        let cond_ins = read_indices(cond.inputs()?, &mut self.budget)?;
        let body_ins = read_indices(body.inputs()?, &mut self.budget)?;
        let body_outs = read_indices(body.outputs()?, &mut self.budget)?;
        let cond_outs = read_indices(cond.outputs()?, &mut self.budget)?;
        if outs.len() != n || cond_ins.len() != n || body_ins.len() != n || body_outs.len() != n {
            return Err(invalid(format!(
                "WHILE with {n} loop values: {} outputs, cond takes {}, body takes {} and \
                 gives {}",
                outs.len(),
                cond_ins.len(),
                body_ins.len(),
                body_outs.len()
            )));
        }
        let [cond_out] = cond_outs[..] else {
            return Err(invalid(format!(
                "WHILE condition with {} outputs",
                cond_outs.len()
            )));
        };
        self.budget.allow_unrolling();
        let mut vars = ins
            .iter()
            .map(|&t| self.tensor_value(t, View::Plain))
            .collect::<Result<Vec<_>>>()?;
        // What the body computes from constants only (its weights, their
        // dequantization), imported once for every trip.
        let mut invariant = Invariant::default();
        self.loop_depth += 1;
        let mut trips = 0;
        let result = loop {
            let go = self
                .eval_cond(cond, &cond_ins, cond_out, &vars)
                .map_err(|e| e.context(&format!("WHILE #{k} condition, trip {trips}")));
            match go {
                Ok(false) => break Ok(()),
                Ok(true) if trips >= MAX_TRIPS => {
                    break Err(unsupported(format!(
                        "WHILE #{k} runs more than {MAX_TRIPS} trips"
                    )))
                }
                Ok(true) => {}
                Err(e) => break Err(e),
            }
            match self.inline_body(body, &body_ins, &body_outs, &vars, &mut invariant) {
                Ok(next) => vars = next,
                Err(e) => break Err(e.context(&format!("WHILE #{k} body, trip {trips}"))),
            }
            trips += 1;
        };
        self.loop_depth -= 1;
        result?;
        for (&t, &v) in outs.iter().zip(&vars) {
            let t = usize::try_from(t).map_err(|_| invalid(format!("tensor index {t}")))?;
            self.values.insert((t, View::Plain), v);
        }
        Ok(())
    }

    /// Whether tensor `t` of the tensor table `tensors` has data in the file (converters
    /// give every tensor a buffer, most of them empty).
    fn has_data(
        &self,
        tensors: Option<Vector<'a, planus::Result<fb::TensorRef<'a>>>>,
        t: usize,
    ) -> bool {
        tensors
            .and_then(|ts| ts.get(t).and_then(|r| r.ok()))
            .and_then(|tr| tr.buffer().ok())
            .and_then(|b| self.buffer_bytes(b).ok())
            .is_some_and(|d| !d.is_empty())
    }

    /// The constant contents of `v`, if it is a constant.
    fn loop_const(&self, v: ValueId) -> Option<Tensor> {
        self.graph.values[v].data.clone()
    }

    /// Evaluates the loop condition on the loop values: every operator of the
    /// condition must be loop control on constants.
    fn eval_cond(
        &mut self,
        cond: fb::SubGraphRef<'a>,
        cond_ins: &[i32],
        out: i32,
        vars: &[ValueId],
    ) -> Result<bool> {
        let mut known = HashMap::new();
        for (&t, &v) in cond_ins.iter().zip(vars) {
            if let Some(c) = self.loop_const(v) {
                known.insert(t, c);
            }
        }
        let outer = self.enter(cond, HashMap::new())?;
        let r = self.eval_ops(&mut known, None);
        self.swap_scope(outer);
        r?;
        match known.get(&out).map(|t| &t.data) {
            Some(TensorData::Bool(b)) if b.len() == 1 => Ok(b[0]),
            Some(_) => Err(invalid("the condition is not one boolean")),
            None => Err(unsupported(
                "a WHILE whose condition depends on run-time values (a data-dependent loop) \
                 is not supported; only loops with a trip count fixed by constants are \
                 unrolled",
            )),
        }
    }

    /// Inlines one trip of the body: its inputs are `vars`, its loop control is
    /// evaluated, everything else imported; returns the loop values after the trip.
    fn inline_body(
        &mut self,
        body: fb::SubGraphRef<'a>,
        body_ins: &[i32],
        body_outs: &[i32],
        vars: &[ValueId],
        invariant: &mut Invariant,
    ) -> Result<Vec<ValueId>> {
        let mut values = invariant.values.clone();
        let mut known = HashMap::new();
        for (&t, &v) in body_ins.iter().zip(vars) {
            let ti = usize::try_from(t).map_err(|_| invalid(format!("tensor index {t}")))?;
            values.insert((ti, View::Plain), v);
            if let Some(c) = self.loop_const(v) {
                known.insert(t, c);
            }
        }
        let outer = self.enter(body, values)?;
        let r = self.eval_ops(&mut known, Some(&mut invariant.tensors));
        let next = r.and_then(|_| {
            body_outs
                .iter()
                .map(|&t| self.value_or_known(t, &known))
                .collect::<Result<Vec<_>>>()
        });
        let inner = self.swap_scope(outer);
        // Keep the body's loop invariants (its weights and what is computed from them
        // alone) for the next trips.
        for (&(t, view), &v) in &inner.values {
            let constant = self.graph.values[v].is_const() && self.has_data(inner.tensors, t);
            if constant || invariant.tensors.contains(&t) {
                invariant.values.insert((t, view), v);
            }
        }
        next
    }

    /// The value of tensor `t` of the current scope; a loop-control result that was
    /// only evaluated becomes a constant value now.
    fn value_or_known(&mut self, t: i32, known: &HashMap<i32, Tensor>) -> Result<ValueId> {
        let ti = usize::try_from(t).map_err(|_| invalid(format!("tensor index {t}")))?;
        if let Some(&v) = self.values.get(&(ti, View::Plain)) {
            return Ok(v);
        }
        match known.get(&t) {
            Some(c) => {
                let mut info = self.read_tensor(ti)?;
                info.data = Some(c.clone());
                let v = self.push_value(info, ti)?;
                self.values.insert((ti, View::Plain), v);
                Ok(v)
            }
            None => self.tensor_value(t, View::Plain),
        }
    }

    /// Runs the current scope's operators: loop control whose inputs are all known is
    /// evaluated into `known`; with `import` set (the loop invariants found so far),
    /// everything else is imported (its known inputs become constants) unless an
    /// earlier trip computed it from invariants already, else it ends the evaluation.
    fn eval_ops(
        &mut self,
        known: &mut HashMap<i32, Tensor>,
        mut import: Option<&mut HashSet<usize>>,
    ) -> Result<()> {
        let Some(ops) = self.sg.operators()? else {
            return Ok(());
        };
        for (k, op) in ops.iter().enumerate() {
            let op = op.map_err(|e| TfliteError::from(e).context(&format!("operator #{k}")))?;
            let (b, custom) =
                opcode(self.codes, &op).map_err(|e| e.context(&format!("operator #{k}")))?;
            let ctx = format!("operator #{k} ({})", op_name(b));
            if let Some(c) = custom {
                return Err(unsupported(format!("{ctx}: custom operator '{c}'")));
            }
            let ins = read_indices(op.inputs()?, &mut self.budget)?;
            let outs = read_indices(op.outputs()?, &mut self.budget)?;
            let evaluated = self
                .eval_control(b, &op, &ins, known)
                .map_err(|e| e.context(&ctx))?;
            match (evaluated, outs.as_slice()) {
                (Some(r), [o]) => {
                    known.insert(*o, r);
                }
                _ => {
                    let Some(invariant) = import.as_deref_mut() else {
                        return Ok(());
                    };
                    let index = |t: i32| usize::try_from(t).ok();
                    let done = outs.iter().all(|&t| {
                        index(t).is_some_and(|t| invariant.contains(&t))
                            && self.values.contains_key(&(t as usize, View::Plain))
                    });
                    if done {
                        continue;
                    }
                    for &t in &ins {
                        if t >= 0 && known.contains_key(&t) {
                            self.value_or_known(t, known)?;
                        }
                    }
                    self.operator(k, b, &op).map_err(|e| e.context(&ctx))?;
                    let scope_tensors = self.tensors;
                    let from_invariants = ins.iter().filter(|&&t| t >= 0).all(|&t| {
                        index(t).is_some_and(|t| {
                            invariant.contains(&t) || self.has_data(scope_tensors, t)
                        })
                    });
                    if from_invariants {
                        invariant.extend(outs.iter().filter_map(|&t| index(t)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Evaluates one loop-control operator (integer / boolean arithmetic and
    /// comparisons on small constants); `None` when it is not one or an input is not
    /// known.
    fn eval_control(
        &mut self,
        b: fb::BuiltinOperator,
        op: &fb::OperatorRef<'a>,
        ins: &[i32],
        known: &HashMap<i32, Tensor>,
    ) -> Result<Option<Tensor>> {
        use fb::BuiltinOperator as B;
        let kind = match b {
            B::Less | B::LessEqual | B::Greater | B::GreaterEqual | B::Equal | B::NotEqual => {
                Control::Compare(b)
            }
            B::LogicalAnd | B::LogicalOr => Control::Logic(b),
            B::LogicalNot => Control::Not,
            B::Add | B::Sub | B::Mul | B::Minimum | B::Maximum => Control::Arith(b),
            _ => return Ok(None),
        };
        // A fused activation makes ADD / SUB / MUL more than loop control.
        let fused = match op.builtin_options()? {
            Some(fb::BuiltinOptionsRef::AddOptions(o)) => o.fused_activation_function()?,
            Some(fb::BuiltinOptionsRef::SubOptions(o)) => o.fused_activation_function()?,
            Some(fb::BuiltinOptionsRef::MulOptions(o)) => o.fused_activation_function()?,
            _ => fb::ActivationFunctionType::None,
        };
        if fused != fb::ActivationFunctionType::None {
            return Ok(None);
        }
        let mut args = Vec::with_capacity(ins.len());
        for &t in ins {
            let value = match known.get(&t) {
                Some(c) => c.clone(),
                None => {
                    let ti = usize::try_from(t).map_err(|_| invalid(format!("tensor {t}")))?;
                    match self.read_tensor(ti)?.data {
                        Some(c) => c,
                        None => return Ok(None),
                    }
                }
            };
            if value.len() > MAX_EVAL_ELEMENTS {
                return Ok(None);
            }
            args.push(value);
        }
        Ok(kind.eval(&args))
    }
}

/// The loop-control operators the importer evaluates.
enum Control {
    Compare(fb::BuiltinOperator),
    Logic(fb::BuiltinOperator),
    Not,
    Arith(fb::BuiltinOperator),
}

impl Control {
    /// The result on `args` (scalars broadcast), or `None` for types, shapes or values
    /// (overflow) that are not evaluated.
    fn eval(&self, args: &[Tensor]) -> Option<Tensor> {
        use fb::BuiltinOperator as B;
        let shape = args.iter().max_by_key(|t| t.len())?.shape.clone();
        let n = shape.iter().product::<usize>();
        if args.iter().any(|t| t.len() != n && t.len() != 1) {
            return None;
        }
        let at = |t: &Tensor, i: usize| if t.len() == 1 { 0 } else { i };
        let data = match self {
            Control::Not => match args {
                [Tensor {
                    data: TensorData::Bool(a),
                    ..
                }] => TensorData::Bool(a.iter().map(|x| !x).collect()),
                _ => return None,
            },
            Control::Logic(op) => {
                let [TensorData::Bool(a), TensorData::Bool(c)] =
                    [&args.first()?.data, &args.get(1)?.data]
                else {
                    return None;
                };
                let (x, y) = (&args[0], &args[1]);
                TensorData::Bool(
                    (0..n)
                        .map(|i| {
                            let (p, q) = (a[at(x, i)], c[at(y, i)]);
                            if *op == B::LogicalAnd {
                                p && q
                            } else {
                                p || q
                            }
                        })
                        .collect(),
                )
            }
            Control::Compare(op) => {
                let (x, y) = (ints(args.first()?)?, ints(args.get(1)?)?);
                let (tx, ty) = (&args[0], &args[1]);
                TensorData::Bool(
                    (0..n)
                        .map(|i| {
                            let (p, q) = (x[at(tx, i)], y[at(ty, i)]);
                            match op {
                                B::Less => p < q,
                                B::LessEqual => p <= q,
                                B::Greater => p > q,
                                B::GreaterEqual => p >= q,
                                B::Equal => p == q,
                                _ => p != q,
                            }
                        })
                        .collect(),
                )
            }
            Control::Arith(op) => {
                let (x, y) = (ints(args.first()?)?, ints(args.get(1)?)?);
                let (tx, ty) = (&args[0], &args[1]);
                let r = (0..n)
                    .map(|i| {
                        let (p, q) = (x[at(tx, i)], y[at(ty, i)]);
                        match op {
                            B::Add => p.checked_add(q),
                            B::Sub => p.checked_sub(q),
                            B::Mul => p.checked_mul(q),
                            B::Minimum => Some(p.min(q)),
                            _ => Some(p.max(q)),
                        }
                    })
                    .collect::<Option<Vec<i64>>>()?;
                match (&args[0].data, &args[1].data) {
                    (TensorData::I32(_), TensorData::I32(_)) => TensorData::I32(
                        r.iter()
                            .map(|&v| i32::try_from(v).ok())
                            .collect::<Option<_>>()?,
                    ),
                    (TensorData::I64(_), TensorData::I64(_)) => TensorData::I64(r),
                    _ => return None,
                }
            }
        };
        Tensor::new(shape, data).ok()
    }
}

/// The values of an int32 / int64 tensor.
fn ints(t: &Tensor) -> Option<Vec<i64>> {
    match &t.data {
        TensorData::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
        TensorData::I64(v) => Some(v.clone()),
        _ => None,
    }
}
