//! IR graph -> TFLite flatbuffer: the inverse of [`crate::import`].
//!
//! The graph must be expressible in TFLite: NHWC convolutions and pools, TFLite's
//! ops (the set the importer reads), static attribute operands. Each IR node becomes
//! one TFLite operator (a PAD is added in front of a convolution or pool whose
//! explicit padding is neither SAME nor VALID); each IR value becomes one tensor with
//! its name, dtype, shape (a symbolic dimension is written as 1 in `shape` and -1 in
//! `shape_signature`, as the converter does) and quantization parameters (per tensor,
//! or per channel with `quantized_dimension`). Constants are written to their own
//! buffers: int4 packed two per byte, low nibble first (TFLite's INT4 layout).
//!
//! The IR's TFLite-specific conventions are undone here:
//! - depthwise weights `[C*mult, kh, kw, 1]` go back to `[1, kh, kw, C*mult]` (the
//!   per-channel axis 0 becomes 3);
//! - attributes that TFLite passes as constant operands (MEAN axes, PAD paddings,
//!   TRANSPOSE perm, EXPAND_DIMS axis, resize sizes) become int32 constants;
//!   RESHAPE's i64 shape becomes an int32 constant of the same name;
//! - hybrid models: an int8 constant that the importer dequantized for a float
//!   CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED weight operand is written back as
//!   the int8 operand itself (LiteRT's hybrid kernels), so a hybrid file round-trips
//!   to the same operators. Other `Dequantize` nodes (fp16 weights: FLOAT16
//!   constant + DEQUANTIZE, TFLite's fp16 scheme) stay DEQUANTIZE operators.
//! - int8 biases without quantization parameters get TFLite's
//!   `input_scale * weight_scale[c]`, which LiteRT checks.
//!
//! Anything TFLite cannot express (an NCHW convolution, an ONNX-only op, a computed
//! attribute) is an error naming the node.

use crate::error::{invalid, unsupported, TfliteError};
use crate::schema::{self as s, BuiltinOperator as B};
use edgeopt_ir::{
    Activation, AutoPad, BinaryKind, ConvAttrs, CoordTransform, DType, Dim, Graph, Layout,
    NearestMode, Node, Op, PadMode, PoolAttrs, QuantParams, ReduceKind, ResizeMode, Tensor,
    TensorData, UnaryKind, ValueId,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;

type Result<T, E = TfliteError> = std::result::Result<T, E>;

/// Depthwise weights: IR `[C*mult, kh, kw, 1]` <-> TFLite `[1, kh, kw, C*mult]`
/// (the permutation is its own inverse).
const DW_PERM: [usize; 4] = [3, 1, 2, 0];

/// Serializes `graph` as a TFLite model (schema version 3, subgraph 0 = the graph).
pub fn export(graph: &Graph) -> Result<Vec<u8>> {
    Ok(crate::finish_model(&export_model(graph)?))
}

/// Writes `graph` as a `.tflite` file atomically: a temporary file in the same
/// folder, synced, then renamed, so a crash never leaves a truncated model behind.
pub fn export_file(graph: &Graph, path: impl AsRef<Path>) -> Result<()> {
    let bytes = export(graph)?;
    let path = path.as_ref();
    edgeopt_ir::write_atomic(path, &bytes).map_err(|source| TfliteError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds the schema-level model of `graph` (for callers that edit it further).
pub fn export_model(graph: &Graph) -> Result<s::Model> {
    graph.validate()?;
    // The batch's shape arithmetic (SHAPE / STRIDED_SLICE / PACK into a RESHAPE, FILL
    // of a batch-sized state) is written as constants, with -1 where the batch goes:
    // TensorFlow Lite Micro takes neither an int32 EXPAND_DIMS nor a FILL with
    // computed dims, and the file keeps its dynamic batch (see `edgeopt_ir::batch`).
    let folded = edgeopt_ir::batch::fold_batch_shape_arithmetic(graph);
    let graph = folded.as_ref().unwrap_or(graph);
    if let Some(v) = graph
        .values
        .iter()
        .find(|v| v.quant.as_ref().is_some_and(|q| q.block_size.is_some()))
    {
        return Err(TfliteError::Unsupported(format!(
            "'{}' has group-wise (block) scales, which TFLite's CONV_2D and \
             FULLY_CONNECTED kernels do not take: quantize per channel, or write ONNX",
            v.name
        )));
    }
    let mut w = Writer::new(graph);
    w.fold_hybrid_dequantize();
    w.fold_shape_casts();
    w.fold_depthwise_transposes();
    for n in &graph.nodes {
        if w.skipped.contains(&n.outputs[0]) {
            continue;
        }
        w.node(n).map_err(|e| {
            e.context(&format!(
                "cannot export node '{}' ({}) to TFLite",
                n.name,
                n.op.name()
            ))
        })?;
    }
    let mut inputs = Vec::new();
    for &i in &graph.inputs {
        inputs.push(w.tensor(i)?);
    }
    let mut outputs = Vec::new();
    for &o in &graph.outputs {
        outputs.push(w.tensor(o)?);
    }
    Ok(w.finish(inputs, outputs))
}

struct Writer<'g> {
    g: &'g Graph,
    tensors: Vec<s::Tensor>,
    buffers: Vec<s::Buffer>,
    ops: Vec<s::Operator>,
    codes: Vec<B>,
    /// Value -> tensor index (as stored / in the depthwise TFLite layout).
    plain: HashMap<ValueId, i32>,
    depthwise: HashMap<ValueId, i32>,
    /// Output of a `Dequantize` folded into hybrid operators -> its int8 constant.
    hybrid: HashMap<ValueId, ValueId>,
    /// Values whose producer is not written (folded dequantizations, the int32 casts
    /// of a shape written as an int32 SHAPE, folded depthwise weight transposes).
    skipped: HashSet<ValueId>,
    /// Shape value (int64 in the IR) -> the int32 cast of it that the SHAPE writes
    /// directly (TFLite's default `out_type`; TFLite Micro has no int64 SHAPE).
    shape_i32: HashMap<ValueId, ValueId>,
    /// Run-time depthwise weights in the IR layout -> the value in TFLite's layout
    /// that a folded `Transpose` read.
    depthwise_source: HashMap<ValueId, ValueId>,
    /// Names in use, so helper tensors never take a value's name.
    taken: HashSet<String>,
}

impl<'g> Writer<'g> {
    fn new(g: &'g Graph) -> Writer<'g> {
        Writer {
            g,
            tensors: Vec::new(),
            // Buffer 0 is the empty sentinel every TFLite model starts with.
            buffers: vec![s::Buffer::default()],
            ops: Vec::new(),
            codes: Vec::new(),
            plain: HashMap::new(),
            depthwise: HashMap::new(),
            hybrid: HashMap::new(),
            skipped: HashSet::new(),
            shape_i32: HashMap::new(),
            depthwise_source: HashMap::new(),
            taken: g.values.iter().map(|v| v.name.clone()).collect(),
        }
    }

    fn finish(self, inputs: Vec<i32>, outputs: Vec<i32>) -> s::Model {
        let operator_codes = self.codes.iter().map(|&c| operator_code(c)).collect();
        let name = if self.g.name.is_empty() {
            "main".to_string()
        } else {
            self.g.name.clone()
        };
        s::Model {
            version: crate::SCHEMA_VERSION,
            operator_codes: Some(operator_codes),
            subgraphs: Some(vec![s::SubGraph {
                tensors: Some(self.tensors),
                inputs: Some(inputs),
                outputs: Some(outputs),
                operators: Some(self.ops),
                name: Some(name),
            }]),
            description: Some("edgeopt".into()),
            buffers: Some(self.buffers),
            ..Default::default()
        }
    }

    /// Finds `Dequantize` nodes of int8 / int4 constants whose every reader is the
    /// weight operand of a hybrid conv / fully-connected node (`hybrid` set): those
    /// are hybrid weights. A `Dequantize` read by a plain float operator stays a
    /// DEQUANTIZE operator, which LiteRT runs in float.
    fn fold_hybrid_dequantize(&mut self) {
        let g = self.g;
        let consumers = g.consumers();
        for n in &g.nodes {
            if n.op != Op::Dequantize {
                continue;
            }
            let (Some(x), Some(&y)) = (n.input(0), n.outputs.first()) else {
                continue;
            };
            let xv = &g.values[x];
            if !(xv.is_const() && matches!(xv.dtype, DType::I8 | DType::I4) && xv.quant.is_some()) {
                continue;
            }
            if g.outputs.contains(&y) || consumers[y].is_empty() {
                continue;
            }
            let all_weights = consumers[y].iter().all(|&c| {
                let c = &g.nodes[c];
                matches!(
                    &c.op,
                    Op::Conv(ConvAttrs {
                        hybrid: Some(_),
                        ..
                    }) | Op::FullyConnected {
                        hybrid: Some(_),
                        ..
                    }
                ) && c.input(1) == Some(y)
                    && c.inputs
                        .iter()
                        .enumerate()
                        .all(|(k, i)| k == 1 || *i != Some(y))
            });
            if all_weights {
                self.hybrid.insert(y, x);
                self.skipped.insert(y);
            }
        }
    }

    /// Finds `Transpose` nodes that only turn run-time depthwise weights from TFLite's
    /// `[1, kh, kw, C*mult]` into the IR's `[C*mult, kh, kw, 1]` (what the importer
    /// puts after the DEQUANTIZE of fp16 depthwise weights): the weights are written as
    /// the transpose's input and the transpose is not written. Without this an fp16
    /// Keras file could not be written back ("depthwise weights are computed at run
    /// time").
    fn fold_depthwise_transposes(&mut self) {
        let g = self.g;
        let consumers = g.consumers();
        for n in &g.nodes {
            let (Op::Transpose { perm }, Some(x), Some(&y)) =
                (&n.op, n.input(0), n.outputs.first())
            else {
                continue;
            };
            if perm[..] != DW_PERM || g.outputs.contains(&y) || consumers[y].is_empty() {
                continue;
            }
            let only_depthwise_weights = consumers[y].iter().all(|&c| {
                let c = &g.nodes[c];
                matches!(&c.op, Op::Conv(a) if a.group > 1)
                    && c.input(1) == Some(y)
                    && c.inputs
                        .iter()
                        .enumerate()
                        .all(|(k, i)| k == 1 || *i != Some(y))
            });
            if only_depthwise_weights {
                self.depthwise_source.insert(y, x);
                self.skipped.insert(y);
            }
        }
    }

    /// Finds `Shape` nodes read only by one int32 `Cast` (how the importer represents
    /// a TFLite SHAPE with the default `out_type`, the IR's Shape being int64): the
    /// SHAPE is written with an int32 output, the cast's, and the cast is not written.
    /// Without this a dynamic-batch conversion is written back with an int64 SHAPE,
    /// which TFLite Micro refuses ("Output type INT64 (4) not supported").
    fn fold_shape_casts(&mut self) {
        let g = self.g;
        let consumers = g.consumers();
        for n in &g.nodes {
            let (Op::Shape, Some(&s)) = (&n.op, n.outputs.first()) else {
                continue;
            };
            if g.outputs.contains(&s) || consumers[s].is_empty() {
                continue;
            }
            let [reader] = consumers[s][..] else {
                continue;
            };
            let cast = &g.nodes[reader];
            if let (Op::Cast { to: DType::I32 }, [Some(_)], [c]) =
                (&cast.op, cast.inputs.as_slice(), cast.outputs.as_slice())
            {
                self.skipped.insert(*c);
                self.shape_i32.insert(s, *c);
            }
        }
    }

    fn fresh(&mut self, base: &str) -> String {
        if self.taken.insert(base.to_string()) {
            return base.to_string();
        }
        let mut k = 1;
        loop {
            let n = format!("{base}_{k}");
            if self.taken.insert(n.clone()) {
                return n;
            }
            k += 1;
        }
    }

    fn code(&mut self, b: B) -> u32 {
        match self.codes.iter().position(|&c| c == b) {
            Some(i) => i as u32,
            None => {
                self.codes.push(b);
                self.codes.len() as u32 - 1
            }
        }
    }

    fn op(&mut self, b: B, inputs: Vec<i32>, output: i32, opts: Option<s::BuiltinOptions>) {
        let opcode_index = self.code(b);
        self.ops.push(s::Operator {
            opcode_index,
            inputs: Some(inputs),
            outputs: Some(vec![output]),
            builtin_options: opts,
            ..Default::default()
        });
    }

    fn push_tensor(&mut self, t: s::Tensor) -> i32 {
        self.tensors.push(t);
        self.tensors.len() as i32 - 1
    }

    fn push_buffer(&mut self, data: Vec<u8>) -> u32 {
        self.buffers.push(s::Buffer {
            data: Some(data),
            ..Default::default()
        });
        self.buffers.len() as u32 - 1
    }

    /// The tensor of value `id` as stored in the IR.
    fn tensor(&mut self, id: ValueId) -> Result<i32> {
        if let Some(&t) = self.plain.get(&id) {
            return Ok(t);
        }
        let v = &self.g.values[id];
        let (shape, signature) = match &v.shape {
            Some(dims) => {
                let shape = dims
                    .iter()
                    .map(|d| dim_i32(d.fixed().unwrap_or(1)))
                    .collect::<Result<Vec<i32>>>()?;
                let dynamic = dims.iter().any(|d| d.fixed().is_none());
                let sig = dynamic.then(|| {
                    dims.iter()
                        .zip(&shape)
                        .map(|(d, &s)| if d.fixed().is_none() { -1 } else { s })
                        .collect()
                });
                (Some(shape), sig)
            }
            None => (None, None),
        };
        let buffer = match &v.data {
            Some(t) => self.push_buffer(encode(&t.data)),
            None => 0,
        };
        let t = s::Tensor {
            has_rank: shape.is_some(),
            shape,
            shape_signature: signature,
            type_: tensor_type(v.dtype)?,
            buffer,
            name: Some(v.name.clone()),
            quantization: quant(v.dtype, v.quant.as_ref(), None),
            ..Default::default()
        };
        let i = self.push_tensor(t);
        self.plain.insert(id, i);
        Ok(i)
    }

    /// Constant depthwise weights in TFLite's `[1, kh, kw, C*mult]` layout.
    fn depthwise_tensor(&mut self, id: ValueId) -> Result<i32> {
        if let Some(&t) = self.depthwise.get(&id) {
            return Ok(t);
        }
        if let Some(&x) = self.depthwise_source.get(&id) {
            return self.tensor(x);
        }
        let v = &self.g.values[id];
        let Some(data) = &v.data else {
            return Err(unsupported(format!(
                "depthwise weights '{}' are computed at run time; TFLite export needs \
                 constant depthwise weights",
                v.name
            )));
        };
        if data.shape.len() != 4 || data.shape[3] != 1 {
            return Err(invalid(format!(
                "depthwise weights '{}' have shape {:?}, expected [C*mult, kh, kw, 1]",
                v.name, data.shape
            )));
        }
        let permuted = crate::tensor::permute(&data.data, &data.shape, &DW_PERM);
        let shape: Vec<i32> = DW_PERM
            .iter()
            .map(|&p| dim_i32(data.shape[p]))
            .collect::<Result<_>>()?;
        let axis_map = |a: usize| DW_PERM.iter().position(|&p| p == a).unwrap_or(a);
        let buffer = self.push_buffer(encode(&permuted));
        let name = if self.plain.contains_key(&id) {
            self.fresh(&format!("{}/hwio", v.name))
        } else {
            v.name.clone()
        };
        let t = s::Tensor {
            shape: Some(shape),
            type_: tensor_type(v.dtype)?,
            buffer,
            name: Some(name),
            quantization: quant(v.dtype, v.quant.as_ref(), Some(&axis_map)),
            has_rank: true,
            ..Default::default()
        };
        let i = self.push_tensor(t);
        self.depthwise.insert(id, i);
        Ok(i)
    }

    /// A helper int32 constant (axes, paddings, perm...).
    fn const_i32(&mut self, base: &str, shape: Vec<usize>, v: &[i64]) -> Result<i32> {
        let vals = v
            .iter()
            .map(|&x| {
                i32::try_from(x).map_err(|_| invalid(format!("{base}: {x} does not fit int32")))
            })
            .collect::<Result<Vec<i32>>>()?;
        let name = self.fresh(base);
        let buffer = self.push_buffer(vals.iter().flat_map(|x| x.to_le_bytes()).collect());
        let shape = shape.into_iter().map(dim_i32).collect::<Result<_>>()?;
        Ok(self.push_tensor(s::Tensor {
            shape: Some(shape),
            type_: s::TensorType::Int32,
            buffer,
            name: Some(name),
            has_rank: true,
            ..Default::default()
        }))
    }

    /// A non-constant helper tensor like value `like` but with `shape`.
    fn temp_like(&mut self, base: &str, like: ValueId, shape: &[usize]) -> Result<i32> {
        let v = &self.g.values[like];
        let name = self.fresh(base);
        let shape = shape.iter().map(|&d| dim_i32(d)).collect::<Result<_>>()?;
        Ok(self.push_tensor(s::Tensor {
            shape: Some(shape),
            type_: tensor_type(v.dtype)?,
            name: Some(name),
            quantization: quant(v.dtype, v.quant.as_ref(), None),
            has_rank: true,
            ..Default::default()
        }))
    }

    /// Tensor for input `k` of `n` (a folded hybrid dequantization reads its int8
    /// constant).
    fn input(&mut self, n: &Node, k: usize) -> Result<i32> {
        let id = n
            .input(k)
            .ok_or_else(|| invalid(format!("input {k} is missing")))?;
        let id = self.hybrid.get(&id).copied().unwrap_or(id);
        self.tensor(id)
    }

    fn fixed_shape(&self, id: ValueId) -> Option<Vec<usize>> {
        self.g.values[id].fixed_shape()
    }

    /// Fixed size of dimension `i` of a value (the batch may be symbolic).
    fn dim(&self, id: ValueId, i: usize) -> Option<usize> {
        let v = &self.g.values[id];
        match &v.data {
            Some(t) => t.shape.get(i).copied(),
            None => v.shape.as_ref()?.get(i)?.fixed(),
        }
    }

    fn rank(&self, id: ValueId) -> Option<usize> {
        self.g.values[id].shape.as_ref().map(Vec::len)
    }

    /// SPLIT_V: x, size_splits (int32), axis (int32 scalar) -> one output per piece.
    /// Split moves data, so the pieces keep x's quantization (TFLite requires it).
    fn split(&mut self, n: &Node, axis: i64, split: &[usize]) -> Result<()> {
        let x = n.input(0).ok_or_else(|| invalid("input 0 is missing"))?;
        let xi = self.input(n, 0)?;
        let r = self
            .rank(x)
            .ok_or_else(|| unsupported("Split of a tensor of unknown rank"))?;
        let a = if axis < 0 { axis + r as i64 } else { axis };
        let sizes: Vec<i64> = split.iter().map(|&v| v as i64).collect();
        let sz = self.const_i32(
            &format!("{}/size_splits", n.name),
            vec![sizes.len()],
            &sizes,
        )?;
        let ax = self.const_i32(&format!("{}/axis", n.name), vec![], &[a])?;
        let outputs = n
            .outputs
            .iter()
            .map(|&o| self.tensor(o))
            .collect::<Result<Vec<i32>>>()?;
        let opcode_index = self.code(B::SplitV);
        self.ops.push(s::Operator {
            opcode_index,
            inputs: Some(vec![xi, sz, ax]),
            outputs: Some(outputs),
            builtin_options: Some(s::BuiltinOptions::SplitVOptions(Box::new(
                s::SplitVOptions {
                    num_splits: dim_i32(split.len())?,
                },
            ))),
            ..Default::default()
        });
        Ok(())
    }

    /// ONNX Slice with positive steps → STRIDED_SLICE over every axis, begin and end
    /// resolved against the input's dimensions (axes not sliced keep everything through
    /// the end mask, so a dynamic batch is fine).
    fn slice(
        &mut self,
        n: &Node,
        (starts, ends, axes, steps): (&[i64], &[i64], &[i64], &[i64]),
        y: i32,
    ) -> Result<()> {
        let x = n.input(0).ok_or_else(|| invalid("input 0 is missing"))?;
        let r = self
            .rank(x)
            .ok_or_else(|| unsupported("Slice of a tensor of unknown rank"))?;
        let sliced: Vec<usize> = if axes.is_empty() {
            (0..starts.len()).collect()
        } else {
            axes.iter()
                .map(|&a| if a < 0 { a + r as i64 } else { a } as usize)
                .collect()
        };
        // Fixed sizes stand in for the dims that are not sliced (any value works).
        let shape: Vec<usize> = (0..r)
            .map(|i| match self.dim(x, i) {
                Some(d) => Ok(d),
                None if !sliced.contains(&i) => Ok(1),
                None => Err(unsupported("Slice along a dimension of dynamic size")),
            })
            .collect::<Result<_>>()?;
        let geo = edgeopt_ir::shape::slice_geometry(&shape, starts, ends, axes, steps)
            .map_err(|e| invalid(format!("node '{}': {e}", n.name)))?;
        if geo.step.iter().any(|&st| st < 1) {
            return Err(unsupported("Slice with a negative step"));
        }
        let mut end_mask = 0i32;
        let mut end = Vec::with_capacity(r);
        for i in 0..r {
            if sliced.contains(&i) {
                end.push(geo.begin[i] + geo.count[i] as i64 * geo.step[i]);
            } else {
                end.push(0);
                end_mask |= 1 << i;
            }
        }
        let xi = self.input(n, 0)?;
        let base = &n.name;
        let b = self.const_i32(&format!("{base}/begin"), vec![r], &geo.begin)?;
        let e = self.const_i32(&format!("{base}/end"), vec![r], &end)?;
        let st = self.const_i32(&format!("{base}/strides"), vec![r], &geo.step)?;
        let o = s::StridedSliceOptions {
            end_mask,
            ..Default::default()
        };
        let o = s::BuiltinOptions::StridedSliceOptions(Box::new(o));
        self.op(B::StridedSlice, vec![xi, b, e, st], y, Some(o));
        Ok(())
    }

    fn node(&mut self, n: &Node) -> Result<()> {
        let g = self.g;
        if let Op::Split { axis, split } = &n.op {
            return self.split(n, *axis, split);
        }
        if n.outputs.len() != 1 {
            return Err(unsupported(format!(
                "{} outputs (TFLite operators written here have one)",
                n.outputs.len()
            )));
        }
        let y_id = n.outputs[0];
        if let (Op::Shape, Some(&c)) = (&n.op, self.shape_i32.get(&y_id)) {
            let xi = self.input(n, 0)?;
            let y = self.tensor(c)?;
            let o = s::ShapeOptions {
                out_type: s::TensorType::Int32,
            };
            let o = Some(s::BuiltinOptions::ShapeOptions(Box::new(o)));
            self.op(B::Shape, vec![xi], y, o);
            return Ok(());
        }
        let y = self.tensor(y_id)?;
        let x0 = || n.input(0).ok_or_else(|| invalid("input 0 is missing"));
        match &n.op {
            Op::Conv(c) => self.conv(n, c, y)?,
            Op::FullyConnected {
                activation,
                keep_num_dims,
                hybrid,
            } => {
                let ins = vec![self.input(n, 0)?, self.input(n, 1)?, self.bias(n, 2, None)?];
                let opts = s::FullyConnectedOptions {
                    fused_activation_function: act(*activation),
                    keep_num_dims: *keep_num_dims,
                    asymmetric_quantize_inputs: hybrid.is_some_and(|h| h.asymmetric),
                    ..Default::default()
                };
                let ins = trim(ins);
                self.op(
                    B::FullyConnected,
                    ins,
                    y,
                    Some(s::BuiltinOptions::FullyConnectedOptions(Box::new(opts))),
                );
            }
            Op::Binary { kind, activation } => {
                let a = act(*activation);
                // int16 ADD/SUB: TFLite's default `pot_scale_int16 = true` selects a
                // kernel for power-of-two scales only (LSTM cells); the 16x8 scheme
                // (general scales) needs it false, as the TFLite converter writes.
                let pot_scale_int16 = g.values[y_id].dtype != DType::I16;
                let (b, opts) = match kind {
                    BinaryKind::Add => (
                        B::Add,
                        s::BuiltinOptions::AddOptions(Box::new(s::AddOptions {
                            fused_activation_function: a,
                            pot_scale_int16,
                        })),
                    ),
                    BinaryKind::Sub => (
                        B::Sub,
                        s::BuiltinOptions::SubOptions(Box::new(s::SubOptions {
                            fused_activation_function: a,
                            pot_scale_int16,
                        })),
                    ),
                    BinaryKind::Mul => (
                        B::Mul,
                        s::BuiltinOptions::MulOptions(Box::new(s::MulOptions {
                            fused_activation_function: a,
                        })),
                    ),
                    BinaryKind::Div => (
                        B::Div,
                        s::BuiltinOptions::DivOptions(Box::new(s::DivOptions {
                            fused_activation_function: a,
                        })),
                    ),
                    BinaryKind::Max | BinaryKind::Min if *activation == Activation::None => (
                        if *kind == BinaryKind::Max {
                            B::Maximum
                        } else {
                            B::Minimum
                        },
                        s::BuiltinOptions::MaximumMinimumOptions(Box::default()),
                    ),
                    other => {
                        return Err(unsupported(format!(
                            "binary {other:?} with fused activation {activation:?} has no \
                             TFLite operator"
                        )))
                    }
                };
                let ins = vec![self.input(n, 0)?, self.input(n, 1)?];
                self.op(b, ins, y, Some(opts));
            }
            Op::MaxPool(p) | Op::AveragePool(p) => {
                let max = matches!(n.op, Op::MaxPool(_));
                self.pool(n, p, max, y)?;
            }
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes,
                keepdims,
                noop_with_empty_axes,
            } => {
                let x = x0()?;
                let axes: Vec<i64> = match axes {
                    Some(a) if !a.is_empty() => a.clone(),
                    _ if *noop_with_empty_axes => {
                        return Err(unsupported("ReduceMean with noop_with_empty_axes"))
                    }
                    _ => {
                        let r = self.rank(x).ok_or_else(|| {
                            unsupported("MEAN over all axes of a tensor of unknown rank")
                        })?;
                        (0..r as i64).collect()
                    }
                };
                let xi = self.input(n, 0)?;
                let a = self.const_i32(&format!("{}/axes", n.name), vec![axes.len()], &axes)?;
                self.op(
                    B::Mean,
                    vec![xi, a],
                    y,
                    Some(s::BuiltinOptions::ReducerOptions(Box::new(
                        s::ReducerOptions {
                            keep_dims: *keepdims,
                        },
                    ))),
                );
            }
            Op::Reshape { allowzero } => self.reshape(n, *allowzero, y)?,
            Op::Flatten { axis } => {
                let x = x0()?;
                let r = self
                    .rank(x)
                    .ok_or_else(|| unsupported("Flatten of a tensor of unknown rank"))?;
                let dims: Vec<Option<usize>> = (0..r).map(|i| self.dim(x, i)).collect();
                let a = if *axis < 0 { axis + r as i64 } else { *axis };
                if !(0..=r as i64).contains(&a) {
                    return Err(invalid(format!("axis {axis} for rank {r}")));
                }
                // Each side's size, or -1 (RESHAPE infers it) when one side holds the
                // dynamic dims (a dynamic batch); both sides dynamic has no form.
                let side = |d: &[Option<usize>]| -> Option<i64> {
                    d.iter()
                        .map(|&v| v.map(|v| v as i64))
                        .product::<Option<i64>>()
                };
                let (lead, trail) = (&dims[..a as usize], &dims[a as usize..]);
                let target = match (side(lead), side(trail)) {
                    (Some(l), Some(t)) => [l, t],
                    (None, Some(t)) => [-1, t],
                    (Some(l), None) => [l, -1],
                    (None, None) => {
                        return Err(unsupported(
                            "Flatten with dynamic dimensions on both sides of its axis",
                        ))
                    }
                };
                let xi = self.input(n, 0)?;
                let shape = self.const_i32(&format!("{}/shape", n.name), vec![2], &target)?;
                self.op(
                    B::Reshape,
                    vec![xi, shape],
                    y,
                    Some(s::BuiltinOptions::ReshapeOptions(Box::default())),
                );
            }
            Op::Softmax { axis, beta } => {
                self.last_axis(x0()?, *axis)?;
                let xi = self.input(n, 0)?;
                self.op(
                    B::Softmax,
                    vec![xi],
                    y,
                    Some(s::BuiltinOptions::SoftmaxOptions(Box::new(
                        s::SoftmaxOptions { beta: *beta },
                    ))),
                );
            }
            Op::LogSoftmax { axis } => {
                self.last_axis(x0()?, *axis)?;
                let xi = self.input(n, 0)?;
                self.op(
                    B::LogSoftmax,
                    vec![xi],
                    y,
                    Some(s::BuiltinOptions::LogSoftmaxOptions(Box::default())),
                );
            }
            Op::Pad { mode, pads, value } => {
                if *mode != PadMode::Constant {
                    return Err(unsupported(format!("{mode:?} padding")));
                }
                let x = x0()?;
                self.pad(n, x, pads, *value, y)?;
            }
            Op::Concat { axis, activation } => {
                let mut ins = Vec::with_capacity(n.inputs.len());
                for k in 0..n.inputs.len() {
                    ins.push(self.input(n, k)?);
                }
                let axis = i32::try_from(*axis).map_err(|_| invalid("axis"))?;
                self.op(
                    B::Concatenation,
                    ins,
                    y,
                    Some(s::BuiltinOptions::ConcatenationOptions(Box::new(
                        s::ConcatenationOptions {
                            axis,
                            fused_activation_function: act(*activation),
                        },
                    ))),
                );
            }
            Op::Transpose { perm } => {
                let x = x0()?;
                let perm: Vec<i64> = if perm.is_empty() {
                    let r = self
                        .rank(x)
                        .ok_or_else(|| unsupported("Transpose of unknown rank"))?;
                    (0..r as i64).rev().collect()
                } else {
                    perm.iter().map(|&p| p as i64).collect()
                };
                let xi = self.input(n, 0)?;
                let p = self.const_i32(&format!("{}/perm", n.name), vec![perm.len()], &perm)?;
                self.op(
                    B::Transpose,
                    vec![xi, p],
                    y,
                    Some(s::BuiltinOptions::TransposeOptions(Box::default())),
                );
            }
            Op::Quantize => {
                let xi = self.input(n, 0)?;
                self.op(
                    B::Quantize,
                    vec![xi],
                    y,
                    Some(s::BuiltinOptions::QuantizeOptions(Box::default())),
                );
            }
            Op::Dequantize => {
                let xi = self.input(n, 0)?;
                self.op(
                    B::Dequantize,
                    vec![xi],
                    y,
                    Some(s::BuiltinOptions::DequantizeOptions(Box::default())),
                );
            }
            Op::Unary(k) => {
                let b = match k {
                    UnaryKind::Relu => B::Relu,
                    UnaryKind::Relu6 => B::Relu6,
                    UnaryKind::Sigmoid => B::Logistic,
                    UnaryKind::Tanh => B::Tanh,
                    UnaryKind::HardSwish => B::HardSwish,
                    UnaryKind::Gelu => B::Gelu,
                    UnaryKind::Sqrt => B::Sqrt,
                    other => {
                        return Err(unsupported(format!(
                            "unary {other:?} is not among the TFLite operators edgeopt writes"
                        )))
                    }
                };
                let opts = match b {
                    B::HardSwish => Some(s::BuiltinOptions::HardSwishOptions(Box::default())),
                    B::Gelu => Some(s::BuiltinOptions::GeluOptions(Box::new(s::GeluOptions {
                        approximate: false,
                    }))),
                    _ => None,
                };
                let xi = self.input(n, 0)?;
                self.op(b, vec![xi], y, opts);
            }
            Op::Clip { min, max } => {
                let b = match (min, max) {
                    (Some(lo), None) if *lo == 0.0 => B::Relu,
                    (Some(lo), Some(hi)) if *lo == 0.0 && *hi == 6.0 => B::Relu6,
                    (Some(lo), Some(hi)) if *lo == -1.0 && *hi == 1.0 => B::ReluN1To1,
                    _ => {
                        return Err(unsupported(format!(
                            "Clip to [{min:?}, {max:?}] (TFLite has RELU, RELU6 and \
                             RELU_N1_TO_1 only)"
                        )))
                    }
                };
                let xi = self.input(n, 0)?;
                self.op(b, vec![xi], y, None);
            }
            Op::LeakyRelu { alpha } => {
                let xi = self.input(n, 0)?;
                self.op(
                    B::LeakyRelu,
                    vec![xi],
                    y,
                    Some(s::BuiltinOptions::LeakyReluOptions(Box::new(
                        s::LeakyReluOptions { alpha: *alpha },
                    ))),
                );
            }
            Op::Squeeze { axes } => {
                let dims = axes
                    .iter()
                    .map(|&a| i32::try_from(a).map_err(|_| invalid("axis")))
                    .collect::<Result<Vec<i32>>>()?;
                let xi = self.input(n, 0)?;
                self.op(
                    B::Squeeze,
                    vec![xi],
                    y,
                    Some(s::BuiltinOptions::SqueezeOptions(Box::new(
                        s::SqueezeOptions {
                            squeeze_dims: Some(dims),
                        },
                    ))),
                );
            }
            Op::Unsqueeze { axes } => {
                if axes.len() != 1 {
                    return Err(unsupported(format!(
                        "Unsqueeze of {} axes (EXPAND_DIMS adds one)",
                        axes.len()
                    )));
                }
                let xi = self.input(n, 0)?;
                let a = self.const_i32(&format!("{}/axis", n.name), vec![1], axes)?;
                self.op(
                    B::ExpandDims,
                    vec![xi, a],
                    y,
                    Some(s::BuiltinOptions::ExpandDimsOptions(Box::default())),
                );
            }
            Op::MatMul => {
                // BATCH_MATMUL: numpy matmul with broadcast batch dimensions (float, or
                // int8 with per-tensor parameters on both operands).
                let ins = vec![self.input(n, 0)?, self.input(n, 1)?];
                let o = s::BatchMatMulOptions::default();
                let o = s::BuiltinOptions::BatchMatMulOptions(Box::new(o));
                self.op(B::BatchMatmul, ins, y, Some(o));
            }
            Op::LayerNorm { axis, epsilon } => self.layer_norm(n, *axis, *epsilon, y)?,
            Op::Gather { axis } => {
                let x = x0()?;
                let xi = self.input(n, 0)?;
                let idx = n.input(1).ok_or_else(|| invalid("input 1 is missing"))?;
                // TFLite's GATHER refuses negative indices (ONNX counts them from the
                // end, as PyTorch's `x[-1]` exports): constant ones are resolved here.
                let negative = g.values[idx]
                    .data
                    .as_ref()
                    .map(|t| (t.shape.clone(), t.to_i64_vec()))
                    .filter(|(_, v)| v.iter().any(|&i| i < 0));
                let ii = match negative {
                    Some((shape, v)) => {
                        let r = self
                            .rank(x)
                            .ok_or_else(|| unsupported("Gather of a tensor of unknown rank"))?
                            as i64;
                        let a = if *axis < 0 { axis + r } else { *axis };
                        let d = self.dim(x, a as usize).ok_or_else(|| {
                            unsupported("negative Gather indices along a dynamic dimension")
                        })? as i64;
                        let v: Vec<i64> =
                            v.iter().map(|&i| if i < 0 { i + d } else { i }).collect();
                        self.const_i32(&format!("{}/indices", n.name), shape, &v)?
                    }
                    None => self.input(n, 1)?,
                };
                let ins = vec![xi, ii];
                let axis = i32::try_from(*axis).map_err(|_| invalid("axis"))?;
                self.op(
                    B::Gather,
                    ins,
                    y,
                    Some(s::BuiltinOptions::GatherOptions(Box::new(
                        s::GatherOptions {
                            axis,
                            batch_dims: 0,
                        },
                    ))),
                );
            }
            Op::Resize(r) => self.resize(n, r, y)?,
            Op::Tile { repeats } => {
                let xi = self.input(n, 0)?;
                // A tile that only repeats size-1 dimensions of a static shape is a
                // broadcast, and written as BROADCAST_TO: TensorFlow Lite Micro has no
                // TILE kernel (Keras's UpSampling2D converts to RESHAPE, TILE, RESHAPE,
                // so no .tflite with it ran there) but has BROADCAST_TO. A dynamic
                // batch keeps TILE: BROADCAST_TO's shape is absolute.
                let x_shape = n.input(0).and_then(|v| self.g.values[v].fixed_shape());
                match x_shape.filter(|d| broadcasts(d, repeats)) {
                    Some(dims) => {
                        let to: Vec<i64> = dims
                            .iter()
                            .zip(repeats)
                            .map(|(&d, &k)| (d * k) as i64)
                            .collect();
                        let name = format!("{}/shape", n.name);
                        let shape = self.const_i32(&name, vec![to.len()], &to)?;
                        let o = s::BuiltinOptions::BroadcastToOptions(Box::default());
                        self.op(B::BroadcastTo, vec![xi, shape], y, Some(o));
                    }
                    None => {
                        let r: Vec<i64> = repeats.iter().map(|&k| k as i64).collect();
                        let name = format!("{}/multiples", n.name);
                        let m = self.const_i32(&name, vec![r.len()], &r)?;
                        let o = s::BuiltinOptions::TileOptions(Box::default());
                        self.op(B::Tile, vec![xi, m], y, Some(o));
                    }
                }
            }
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            } => self.slice(n, (starts, ends, axes, steps), y)?,
            Op::StridedSlice(a) => {
                let xi = self.input(n, 0)?;
                let k = a.begin.len();
                let base = &n.name;
                let b = self.const_i32(&format!("{base}/begin"), vec![k], &a.begin)?;
                let e = self.const_i32(&format!("{base}/end"), vec![k], &a.end)?;
                let st = self.const_i32(&format!("{base}/strides"), vec![k], &a.strides)?;
                let o = s::StridedSliceOptions {
                    begin_mask: a.begin_mask as i32,
                    end_mask: a.end_mask as i32,
                    ellipsis_mask: a.ellipsis_mask as i32,
                    new_axis_mask: a.new_axis_mask as i32,
                    shrink_axis_mask: a.shrink_axis_mask as i32,
                    offset: a.offset,
                };
                let o = s::BuiltinOptions::StridedSliceOptions(Box::new(o));
                self.op(B::StridedSlice, vec![xi, b, e, st], y, Some(o));
            }
            Op::Fill => {
                let ins = vec![self.input(n, 0)?, self.input(n, 1)?];
                self.op(
                    B::Fill,
                    ins,
                    y,
                    Some(s::BuiltinOptions::FillOptions(Box::default())),
                );
            }
            Op::Shape => {
                let xi = self.input(n, 0)?;
                let o = s::ShapeOptions {
                    out_type: tensor_type(g.values[y_id].dtype)?,
                };
                self.op(
                    B::Shape,
                    vec![xi],
                    y,
                    Some(s::BuiltinOptions::ShapeOptions(Box::new(o))),
                );
            }
            Op::Cast { to } if to.is_integer() && g.values[x0()?].dtype.is_integer() => {
                // Integer casts only (shape arithmetic); float casts are not written.
                let xi = self.input(n, 0)?;
                let o = s::CastOptions {
                    in_data_type: tensor_type(g.values[x0()?].dtype)?,
                    out_data_type: tensor_type(*to)?,
                };
                self.op(
                    B::Cast,
                    vec![xi],
                    y,
                    Some(s::BuiltinOptions::CastOptions(Box::new(o))),
                );
            }
            other @ (Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::Compare(_)
            | Op::Where
            | Op::HardSigmoid { .. }
            | Op::GlobalAveragePool
            | Op::BatchNorm { .. }
            | Op::Split { .. }
            | Op::Lstm { .. }
            | Op::TopK { .. }
            | Op::Gru { .. }
            | Op::Reduce { .. }
            | Op::Identity
            | Op::Cast { .. }
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger) => {
                return Err(unsupported(format!(
                    "{} has no TFLite equivalent that edgeopt writes",
                    other.name()
                )))
            }
        }
        let _ = (g, y_id);
        Ok(())
    }

    /// LayerNorm in float, as the TFLite converter decomposes it: MEAN, SUB, MUL
    /// (the squared difference), MEAN, ADD epsilon, SQRT, DIV, then MUL scale and ADD
    /// bias. Every one of them is a float builtin of LiteRT and TFLite Micro, and each
    /// reads back as the IR op of the same float arithmetic.
    fn layer_norm(&mut self, n: &Node, axis: i64, eps: f32, y: i32) -> Result<()> {
        let g = self.g;
        let x = n.input(0).ok_or_else(|| invalid("input 0 is missing"))?;
        let y_id = n.outputs[0];
        if g.values[x].dtype != DType::F32 {
            return Err(unsupported("LayerNorm on a non-float tensor"));
        }
        let r = self
            .rank(x)
            .ok_or_else(|| unsupported("LayerNorm of a tensor of unknown rank"))?;
        let a = if axis < 0 { axis + r as i64 } else { axis };
        if !(0..r as i64).contains(&a) {
            return Err(invalid(format!("axis {axis} for rank {r}")));
        }
        let shape: Vec<usize> = (0..r).map(|i| self.dim(x, i).unwrap_or(1)).collect();
        let mut reduced = shape.clone();
        for d in reduced.iter_mut().skip(a as usize) {
            *d = 1;
        }
        let axes: Vec<i64> = (a..r as i64).collect();
        let base = n.name.clone();
        let xi = self.input(n, 0)?;
        let mean = |w: &mut Self, src: i32, tag: &str| -> Result<i32> {
            let out = w.temp_like(&format!("{base}/{tag}"), y_id, &reduced)?;
            let ax = w.const_i32(&format!("{base}/{tag}_axes"), vec![axes.len()], &axes)?;
            let o =
                s::BuiltinOptions::ReducerOptions(Box::new(s::ReducerOptions { keep_dims: true }));
            w.op(B::Mean, vec![src, ax], out, Some(o));
            Ok(out)
        };
        let bin = |w: &mut Self, b: B, ins: Vec<i32>, out: i32| {
            let o = match b {
                B::Sub => s::BuiltinOptions::SubOptions(Box::default()),
                B::Mul => s::BuiltinOptions::MulOptions(Box::default()),
                B::Div => s::BuiltinOptions::DivOptions(Box::default()),
                _ => s::BuiltinOptions::AddOptions(Box::default()),
            };
            w.op(b, ins, out, Some(o));
        };
        let m = mean(self, xi, "mean")?;
        let d = self.temp_like(&format!("{base}/centered"), y_id, &shape)?;
        bin(self, B::Sub, vec![xi, m], d);
        let sq = self.temp_like(&format!("{base}/squared"), y_id, &shape)?;
        bin(self, B::Mul, vec![d, d], sq);
        let var = mean(self, sq, "variance")?;
        let e = self.const_f32(&format!("{base}/epsilon"), &[eps])?;
        let ve = self.temp_like(&format!("{base}/variance_eps"), y_id, &reduced)?;
        bin(self, B::Add, vec![var, e], ve);
        let sd = self.temp_like(&format!("{base}/std"), y_id, &reduced)?;
        self.op(B::Sqrt, vec![ve], sd, None);
        let normed = self.temp_like(&format!("{base}/normalized"), y_id, &shape)?;
        bin(self, B::Div, vec![d, sd], normed);
        let (scale, bias) = (n.input(1), n.input(2));
        let scaled = match (scale, bias) {
            (Some(_), Some(_)) => self.temp_like(&format!("{base}/scaled"), y_id, &shape)?,
            _ => y,
        };
        let mut cur = normed;
        if scale.is_some() {
            let si = self.input(n, 1)?;
            bin(self, B::Mul, vec![cur, si], scaled);
            cur = scaled;
        }
        match bias {
            Some(_) => {
                let bi = self.input(n, 2)?;
                bin(self, B::Add, vec![cur, bi], y);
            }
            None if scale.is_none() => {
                // Neither scale nor bias: the normalized tensor is the output.
                let one = self.const_f32(&format!("{base}/one"), &[1.0])?;
                bin(self, B::Mul, vec![cur, one], y);
            }
            None => {}
        }
        Ok(())
    }

    /// A helper float32 constant of shape `[len]`.
    fn const_f32(&mut self, base: &str, v: &[f32]) -> Result<i32> {
        let name = self.fresh(base);
        let buffer = self.push_buffer(v.iter().flat_map(|x| x.to_le_bytes()).collect());
        Ok(self.push_tensor(s::Tensor {
            shape: Some(vec![dim_i32(v.len())?]),
            type_: s::TensorType::Float32,
            buffer,
            name: Some(name),
            has_rank: true,
            ..Default::default()
        }))
    }

    fn last_axis(&self, x: ValueId, axis: i64) -> Result<()> {
        if axis == -1 || self.rank(x).is_some_and(|r| axis == r as i64 - 1) {
            Ok(())
        } else {
            Err(unsupported(format!(
                "axis {axis} (TFLite normalizes over the last axis only)"
            )))
        }
    }

    /// The bias operand `k` of a conv / fully-connected node, with TFLite's bias
    /// quantization (`input_scale * weight_scale[c]`) added to an int32 bias of a
    /// quantized node that has none. `-1` when absent.
    fn bias(&mut self, n: &Node, k: usize, dw: Option<()>) -> Result<i32> {
        let _ = dw;
        let Some(b) = n.input(k) else {
            return self.zero_bias(n, k);
        };
        let g = self.g;
        let bv = &g.values[b];
        if bv.dtype != DType::I32 || bv.quant.is_some() || bv.data.is_none() {
            return self.input(n, k);
        }
        let (Some(x), Some(w)) = (n.input(0), n.input(1)) else {
            return self.input(n, k);
        };
        let (Some(xq), Some(wq)) = (&g.values[x].quant, &g.values[w].quant) else {
            return self.input(n, k);
        };
        if self.plain.contains_key(&b) {
            return Ok(self.plain[&b]);
        }
        let nb = bv.data.as_ref().map_or(0, Tensor::len);
        let xs = xq.scale[0];
        let scales: Vec<f32> = (0..nb).map(|c| xs * wq.channel(c).0).collect();
        let q = if wq.is_per_tensor() {
            QuantParams::per_tensor(scales.first().copied().unwrap_or(xs), 0)
        } else {
            QuantParams::per_axis(scales, vec![0; nb], 0)
        };
        let t = self.tensor(b)?;
        self.tensors[t as usize].quantization = quant(DType::I32, Some(&q), None);
        Ok(t)
    }

    /// A zero bias for a conv / fully-connected node that has none. Why: LiteRT's
    /// CONV_2D refuses a node without one (`has_bias` in its Prepare) and the TFLite
    /// converter always writes one, so TFLite Micro and CMSIS-NN expect it too. Its type
    /// follows the kernel's: f32 for float (and hybrid) nodes, int32 for int8
    /// activations and int64 for int16 ones, quantized with `input_scale *
    /// weight_scale[c]`. The channel count is the weights' leading dimension.
    fn zero_bias(&mut self, n: &Node, k: usize) -> Result<i32> {
        let g = self.g;
        let (Some(x), Some(w)) = (n.input(0), n.input(1)) else {
            return Ok(-1);
        };
        let w_raw = self.hybrid.get(&w).copied().unwrap_or(w);
        let m = self
            .fixed_shape(w_raw)
            .and_then(|s| s.first().copied())
            .ok_or_else(|| unsupported("a bias-free layer needs weights of fixed shape"))?;
        let (xv, wv) = (&g.values[x], &g.values[w_raw]);
        let name = self.fresh(&format!("{}/zero_bias{k}", n.name));
        let (type_, data, quantization) = match (xv.dtype, &xv.quant, &wv.quant) {
            (DType::I8 | DType::U8 | DType::I16, Some(xq), Some(wq)) if wv.dtype.is_integer() => {
                let xs = xq.scale[0];
                let scales: Vec<f32> = (0..m).map(|c| xs * wq.channel(c).0).collect();
                let q = if wq.is_per_tensor() {
                    QuantParams::per_tensor(scales.first().copied().unwrap_or(xs), 0)
                } else {
                    QuantParams::per_axis(scales, vec![0; m], 0)
                };
                if xv.dtype == DType::I16 {
                    (
                        s::TensorType::Int64,
                        vec![0u8; m * 8],
                        quant(DType::I64, Some(&q), None),
                    )
                } else {
                    (
                        s::TensorType::Int32,
                        vec![0u8; m * 4],
                        quant(DType::I32, Some(&q), None),
                    )
                }
            }
            _ => (s::TensorType::Float32, vec![0u8; m * 4], None),
        };
        let buffer = self.push_buffer(data);
        Ok(self.push_tensor(s::Tensor {
            shape: Some(vec![dim_i32(m)?]),
            type_,
            buffer,
            name: Some(name),
            quantization,
            has_rank: true,
            ..Default::default()
        }))
    }

    /// A TFLite hybrid conv has no attribute for its input quantization: LiteRT
    /// derives it from the weights (see [`edgeopt_ir::Hybrid`]). Refuses what the file
    /// could not say, so a written model never computes differently from the graph.
    fn check_hybrid_conv(
        &self,
        h: edgeopt_ir::Hybrid,
        w_raw: ValueId,
        depthwise: bool,
        group: usize,
    ) -> Result<()> {
        if h.phases != [1, 1] {
            return Err(unsupported(
                "hybrid dilated conv folded from SPACE_TO_BATCH_ND: LiteRT quantized its \
                 input per phase, which a dilated CONV_2D does not reproduce (writing the \
                 SPACE_TO_BATCH_ND chain back is not supported)",
            ));
        }
        let scales = self.g.values[w_raw]
            .quant
            .as_ref()
            .map_or(&[][..], |q| &q.scale[..]);
        let per_channel = scales.iter().any(|&s| s != scales[0]);
        let litert_asymmetric = depthwise || per_channel || group > 1;
        if litert_asymmetric != h.asymmetric {
            return Err(unsupported(format!(
                "hybrid conv with {} input quantization, but LiteRT would use {} for these                  weights (depthwise or per-channel scales: asymmetric; one scale: symmetric)",
                if h.asymmetric { "asymmetric" } else { "symmetric" },
                if litert_asymmetric { "asymmetric" } else { "symmetric" },
            )));
        }
        Ok(())
    }

    fn conv(&mut self, n: &Node, c: &ConvAttrs, y: i32) -> Result<()> {
        if c.layout != Layout::Nhwc {
            return Err(unsupported(
                "NCHW convolution: TFLite convolutions are NHWC (export an NHWC graph, \
                 e.g. one imported from TFLite, or export ONNX instead)",
            ));
        }
        let x = n.input(0).ok_or_else(|| invalid("input is missing"))?;
        let w = n.input(1).ok_or_else(|| invalid("weights are missing"))?;
        let w_raw = self.hybrid.get(&w).copied().unwrap_or(w);
        let ws = self
            .fixed_shape(w_raw)
            .filter(|s| s.len() == 4)
            .ok_or_else(|| {
                unsupported("2-D convolution with 4-D weights of fixed shape is required")
            })?;
        let (kh, kw) = (ws[1], ws[2]);
        let strides = two(&c.strides, "strides")?;
        let dil = two(&c.dilations, "dilations")?;
        let cin = self.dim(x, 3).filter(|&c| c > 0);
        let depthwise = c.group > 1 && ws[3] == 1 && cin == Some(c.group);
        if let (Some(h), true) = (c.hybrid, w_raw != w) {
            self.check_hybrid_conv(h, w_raw, depthwise, c.group)?;
        }
        let padding = self.padding(n, x, c.auto_pad, &c.pads, [kh, kw], strides, dil)?;
        let xi = match &padding {
            Pre::Same | Pre::Valid => self.input(n, 0)?,
            Pre::Pad(pads) => self.explicit_pad(n, x, pads)?,
        };
        let pad = if matches!(padding, Pre::Same) {
            s::Padding::Same
        } else {
            s::Padding::Valid
        };
        let wi = if depthwise {
            self.depthwise_tensor(w_raw)?
        } else {
            self.tensor(w_raw)?
        };
        let bi = self.bias(n, 2, None)?;
        let ins = trim(vec![xi, wi, bi]);
        let (sh, sw) = (dim_i32(strides[0])?, dim_i32(strides[1])?);
        let (dh, dw) = (dim_i32(dil[0])?, dim_i32(dil[1])?);
        if depthwise {
            let mult = ws[0] / c.group;
            self.op(
                B::DepthwiseConv2d,
                ins,
                y,
                Some(s::BuiltinOptions::DepthwiseConv2DOptions(Box::new(
                    s::DepthwiseConv2DOptions {
                        padding: pad,
                        stride_w: sw,
                        stride_h: sh,
                        depth_multiplier: dim_i32(mult)?,
                        fused_activation_function: act(c.activation),
                        dilation_w_factor: dw,
                        dilation_h_factor: dh,
                    },
                ))),
            );
        } else {
            self.op(
                B::Conv2d,
                ins,
                y,
                Some(s::BuiltinOptions::Conv2DOptions(Box::new(
                    s::Conv2DOptions {
                        padding: pad,
                        stride_w: sw,
                        stride_h: sh,
                        fused_activation_function: act(c.activation),
                        dilation_w_factor: dw,
                        dilation_h_factor: dh,
                        ..Default::default()
                    },
                ))),
            );
        }
        Ok(())
    }

    fn pool(&mut self, n: &Node, p: &PoolAttrs, max: bool, y: i32) -> Result<()> {
        if p.layout != Layout::Nhwc {
            return Err(unsupported(
                "NCHW pooling: TFLite pools are NHWC (export ONNX instead)",
            ));
        }
        if p.kernel_shape.len() != 2 {
            return Err(unsupported(format!(
                "{}-D pooling (TFLite pools are 2-D)",
                p.kernel_shape.len()
            )));
        }
        if p.dilations.iter().any(|&d| d != 1) {
            return Err(unsupported("dilated pooling"));
        }
        let x = n.input(0).ok_or_else(|| invalid("input is missing"))?;
        let k = [p.kernel_shape[0], p.kernel_shape[1]];
        let strides = two(&p.strides, "strides")?;
        let padding = if p.ceil_mode {
            // ceil_mode adds windows that end in padding past the input: the same as
            // more end padding and floor mode (the shape rule gives the output size).
            self.ceil_pads(n, x, p, k, strides)?
        } else {
            self.padding(n, x, p.auto_pad, &p.pads, k, strides, [1, 1])?
        };
        let xi = match padding {
            // TFLite's average pool divides by the in-bounds count; max pool ignores
            // padding: SAME matches unless the IR counts the padding.
            Pre::Same if !max && p.count_include_pad => {
                return Err(unsupported(
                    "average pool that counts padding (TFLite excludes it)",
                ))
            }
            // Max pool: padding with the lowest value never wins a window (every
            // window holds at least one input element), so PADV2 + VALID is exact.
            Pre::Pad(ref pads) if max => self.explicit_pad_with(n, x, pads, f32::NEG_INFINITY)?,
            // Average pool that counts the padding: zero padding + VALID is exact.
            Pre::Pad(ref pads) if p.count_include_pad && !p.ceil_mode => {
                self.explicit_pad_with(n, x, pads, 0.0)?
            }
            Pre::Pad(_) => {
                return Err(unsupported(
                    "average pooling with explicit padding that is not counted \
                     (TFLite's average pool counts only SAME padding out)",
                ))
            }
            Pre::Same | Pre::Valid => self.input(n, 0)?,
        };
        let opts = s::Pool2DOptions {
            padding: if matches!(padding, Pre::Same) {
                s::Padding::Same
            } else {
                s::Padding::Valid
            },
            stride_w: dim_i32(strides[1])?,
            stride_h: dim_i32(strides[0])?,
            filter_width: dim_i32(k[1])?,
            filter_height: dim_i32(k[0])?,
            fused_activation_function: act(p.activation),
        };
        let b = if max { B::MaxPool2d } else { B::AveragePool2d };
        self.op(
            b,
            vec![xi],
            y,
            Some(s::BuiltinOptions::Pool2DOptions(Box::new(opts))),
        );
        Ok(())
    }

    /// How a conv / pool's padding is written: SAME, VALID, or a PAD in front (ONNX
    /// order pads of the 4-D NHWC input).
    #[allow(clippy::too_many_arguments)]
    fn padding(
        &self,
        n: &Node,
        x: ValueId,
        auto: AutoPad,
        pads: &[usize],
        k: [usize; 2],
        strides: [usize; 2],
        dil: [usize; 2],
    ) -> Result<Pre> {
        let _ = n;
        match auto {
            AutoPad::SameUpper => return Ok(Pre::Same),
            AutoPad::Valid => return Ok(Pre::Valid),
            AutoPad::SameLower | AutoPad::NotSet => {}
        }
        let spatial = match (self.rank(x), self.dim(x, 1), self.dim(x, 2)) {
            (Some(4), Some(h), Some(w)) => Some([h, w]),
            _ => None,
        };
        // TFLite SAME: total = max(0, (ceil(in/s) - 1) * s + (k-1)*d + 1 - in), the
        // smaller half at the beginning.
        let same = spatial.map(|sp| {
            let mut begin = [0usize; 2];
            let mut end = [0usize; 2];
            for i in 0..2 {
                let out = sp[i].div_ceil(strides[i]);
                let need = (out.saturating_sub(1)) * strides[i] + (k[i] - 1) * dil[i] + 1;
                let total = need.saturating_sub(sp[i]);
                begin[i] = total / 2;
                end[i] = total - total / 2;
            }
            (begin, end)
        });
        if auto == AutoPad::SameLower {
            return match same {
                Some((b, e)) if b == e => Ok(Pre::Same),
                // SAME_LOWER puts the larger half at the beginning.
                Some((b, e)) => Ok(Pre::Pad(
                    [0, e[0], e[1], 0, 0, b[0], b[1], 0]
                        .iter()
                        .map(|&v| v as i64)
                        .collect(),
                )),
                None => Err(unsupported(
                    "SAME_LOWER padding on an input of unknown shape",
                )),
            };
        }
        if pads.iter().all(|&p| p == 0) {
            return Ok(Pre::Valid);
        }
        if pads.len() != 4 {
            return Err(invalid(format!("{} pads for a 2-D op", pads.len())));
        }
        if let Some((b, e)) = same {
            if [pads[0], pads[1]] == b && [pads[2], pads[3]] == e {
                return Ok(Pre::Same);
            }
        }
        let p = |v: usize| v as i64;
        Ok(Pre::Pad(vec![
            0,
            p(pads[0]),
            p(pads[1]),
            0,
            0,
            p(pads[2]),
            p(pads[3]),
            0,
        ]))
    }

    /// A PAD of value 0 (the zero point of a quantized input) before a conv.
    fn explicit_pad(&mut self, n: &Node, x: ValueId, pads: &[i64]) -> Result<i32> {
        self.explicit_pad_with(n, x, pads, 0.0)
    }

    /// The explicit padding of a `ceil_mode` pool: the begin pads as given, the end
    /// pads grown so that floor-mode VALID pooling yields the output the IR's shape
    /// rule gives (ONNX: the last window must start inside the input or its begin
    /// padding). `Pre::Valid` when no padding is needed.
    fn ceil_pads(
        &self,
        n: &Node,
        x: ValueId,
        p: &PoolAttrs,
        k: [usize; 2],
        strides: [usize; 2],
    ) -> Result<Pre> {
        if !matches!(p.auto_pad, AutoPad::NotSet | AutoPad::Valid) {
            return Err(unsupported("ceil_mode pooling with SAME padding"));
        }
        let (Some(xs), Some(ys)) = (self.fixed_shape(x), self.fixed_shape(n.outputs[0])) else {
            return Err(unsupported(
                "ceil_mode pooling on a tensor of dynamic shape",
            ));
        };
        if xs.len() != 4 || ys.len() != 4 {
            return Err(invalid("ceil_mode pooling needs 4-D NHWC tensors"));
        }
        let begin = |i: usize| p.pads.get(i).copied().unwrap_or(0);
        let mut pads = vec![0i64; 8];
        for i in 0..2 {
            let (h, o, b) = (xs[1 + i], ys[1 + i], begin(i));
            if o == 0 || strides[i] == 0 {
                return Err(invalid("pooling with an empty output or zero stride"));
            }
            let span = (o - 1) * strides[i] + k[i];
            let end = span.saturating_sub(h + b);
            if (h + b + end - k[i]) / strides[i] + 1 != o {
                return Err(unsupported(format!(
                    "ceil_mode pooling whose output ({o}) no padding of input {h} gives"
                )));
            }
            pads[1 + i] = b as i64;
            pads[5 + i] = end as i64;
        }
        Ok(if pads.iter().all(|&v| v == 0) {
            Pre::Valid
        } else {
            Pre::Pad(pads)
        })
    }

    /// A PAD (PADV2 when `value` is not 0) of `x` into a fresh tensor.
    fn explicit_pad_with(&mut self, n: &Node, x: ValueId, pads: &[i64], value: f32) -> Result<i32> {
        let s = self
            .fixed_shape(x)
            .ok_or_else(|| unsupported("explicit padding on an input of dynamic shape"))?;
        let r = s.len();
        let padded: Vec<usize> = (0..r)
            .map(|i| s[i] + pads[i] as usize + pads[i + r] as usize)
            .collect();
        let t = self.temp_like(&format!("{}/padded", n.name), x, &padded)?;
        self.pad_op(n, x, pads, value, t)?;
        Ok(t)
    }

    fn pad(&mut self, n: &Node, x: ValueId, pads: &[i64], value: f32, y: i32) -> Result<()> {
        self.pad_op(n, x, pads, value, y)
    }

    fn pad_op(&mut self, n: &Node, x: ValueId, pads: &[i64], value: f32, y: i32) -> Result<()> {
        if pads.iter().any(|&p| p < 0) {
            return Err(unsupported(format!(
                "negative pads {pads:?} (cropping) have no TFLite PAD"
            )));
        }
        let r = pads.len() / 2;
        // ONNX [b0, b1, ..., e0, e1, ...] -> TFLite [[b0, e0], [b1, e1], ...].
        let tfl: Vec<i64> = (0..r).flat_map(|i| [pads[i], pads[i + r]]).collect();
        let xi = self.tensor(self.hybrid.get(&x).copied().unwrap_or(x))?;
        let p = self.const_i32(&format!("{}/paddings", n.name), vec![r, 2], &tfl)?;
        if value == 0.0 {
            self.op(
                B::Pad,
                vec![xi, p],
                y,
                Some(s::BuiltinOptions::PadOptions(Box::default())),
            );
            return Ok(());
        }
        // PADV2: the pad value in the input's own type (quantized form for integers).
        let xv = &self.g.values[x];
        let data = match (xv.dtype, &xv.quant) {
            (DType::F32, _) => TensorData::F32(vec![value]),
            (dt, Some(q)) if dt.is_integer() => {
                let (sc, zp) = q.channel(0);
                let (lo, hi) = dt.int_range().unwrap_or((i64::MIN, i64::MAX));
                let v = ((value / sc).round() as i64)
                    .saturating_add(zp)
                    .clamp(lo, hi);
                match dt {
                    DType::I8 => TensorData::I8(vec![v as i8]),
                    DType::U8 => TensorData::U8(vec![v as u8]),
                    DType::I16 => TensorData::I16(vec![v as i16]),
                    DType::I32 => TensorData::I32(vec![v as i32]),
                    _ => return Err(unsupported(format!("PADV2 of {dt}"))),
                }
            }
            (dt, _) => return Err(unsupported(format!("PADV2 of {dt} with value {value}"))),
        };
        let dt = data.dtype();
        let name = self.fresh(&format!("{}/constant_values", n.name));
        let buffer = self.push_buffer(encode(&data));
        let cv = self.push_tensor(s::Tensor {
            shape: Some(vec![1]),
            type_: tensor_type(dt)?,
            buffer,
            name: Some(name),
            quantization: quant(dt, xv.quant.as_ref(), None),
            has_rank: true,
            ..Default::default()
        });
        self.op(
            B::Padv2,
            vec![xi, p, cv],
            y,
            Some(s::BuiltinOptions::PadV2Options(Box::default())),
        );
        Ok(())
    }

    fn reshape(&mut self, n: &Node, allowzero: bool, y: i32) -> Result<()> {
        let x = n.input(0).ok_or_else(|| invalid("input is missing"))?;
        let xi = self.input(n, 0)?;
        let Some(sid) = n.input(1) else {
            return Err(invalid("shape input is missing"));
        };
        let sv = &self.g.values[sid];
        let Some(t) = &sv.data else {
            if sv.dtype == DType::I32 {
                let si = self.tensor(sid)?;
                self.op(
                    B::Reshape,
                    vec![xi, si],
                    y,
                    Some(s::BuiltinOptions::ReshapeOptions(Box::default())),
                );
                return Ok(());
            }
            return Err(unsupported(
                "Reshape to a shape computed at run time in int64",
            ));
        };
        let mut shape = t.to_i64_vec();
        if !allowzero && shape.contains(&0) {
            // ONNX: 0 copies the input dimension; TFLite has no such rule.
            let xs = self.g.values[x].shape.clone().unwrap_or_default();
            for (i, d) in shape.iter_mut().enumerate() {
                if *d == 0 {
                    *d = match xs.get(i).and_then(Dim::fixed) {
                        Some(k) => k as i64,
                        None => -1,
                    };
                }
            }
        }
        // The shape constant keeps its IR name (the importer names it after it).
        let name = sv.name.clone();
        let vals = shape
            .iter()
            .map(|&v| i32::try_from(v).map_err(|_| invalid(format!("shape entry {v}"))))
            .collect::<Result<Vec<i32>>>()?;
        let buffer = self.push_buffer(vals.iter().flat_map(|v| v.to_le_bytes()).collect());
        let name = if self.plain.contains_key(&sid) {
            self.fresh(&name)
        } else {
            name
        };
        let si = self.push_tensor(s::Tensor {
            shape: Some(vec![dim_i32(vals.len())?]),
            type_: s::TensorType::Int32,
            buffer,
            name: Some(name),
            has_rank: true,
            ..Default::default()
        });
        self.plain.entry(sid).or_insert(si);
        self.op(
            B::Reshape,
            vec![xi, si],
            y,
            Some(s::BuiltinOptions::ReshapeOptions(Box::default())),
        );
        Ok(())
    }

    fn resize(&mut self, n: &Node, r: &edgeopt_ir::ResizeAttrs, y: i32) -> Result<()> {
        let x = n.input(0).ok_or_else(|| invalid("input is missing"))?;
        if self.rank(x).is_some_and(|k| k != 4) {
            return Err(unsupported("resize of a tensor that is not 4-D NHWC"));
        }
        let sizes: Vec<usize> = match (&r.sizes, &r.axes) {
            (Some(s), Some(a)) if a.as_slice() == [1, 2] && s.len() == 2 => s.clone(),
            (Some(s), None) if s.len() == 4 => {
                let xs = self.fixed_shape(x);
                if xs.is_none_or(|xs| xs[0] != s[0] || xs[3] != s[3]) {
                    return Err(unsupported(
                        "resize of the batch or channel axis (TFLite resizes H and W)",
                    ));
                }
                vec![s[1], s[2]]
            }
            _ => {
                return Err(unsupported(
                    "resize by scales or over axes other than H and W of NHWC \
                     (TFLite takes the output size of H and W)",
                ))
            }
        };
        let (align, half) = match (r.mode, r.coord, r.nearest_mode) {
            (ResizeMode::Nearest, CoordTransform::AlignCorners, NearestMode::RoundPreferCeil) => {
                (true, false)
            }
            (ResizeMode::Nearest, CoordTransform::TfHalfPixelForNn, NearestMode::Floor) => {
                (false, true)
            }
            (ResizeMode::Nearest, CoordTransform::Asymmetric, NearestMode::Floor) => (false, false),
            (ResizeMode::Linear, CoordTransform::AlignCorners, _) => (true, false),
            (ResizeMode::Linear, CoordTransform::HalfPixel, _) => (false, true),
            (ResizeMode::Linear, CoordTransform::Asymmetric, _) => (false, false),
            (m, c, nm) => {
                return Err(unsupported(format!(
                    "resize {m:?} with {c:?} / {nm:?} has no TFLite equivalent"
                )))
            }
        };
        if r.antialias || r.roi.is_some() {
            return Err(unsupported("antialiased or ROI resize"));
        }
        let xi = self.input(n, 0)?;
        let sz: Vec<i64> = sizes.iter().map(|&d| d as i64).collect();
        let st = self.const_i32(&format!("{}/size", n.name), vec![2], &sz)?;
        let (b, opts) = if r.mode == ResizeMode::Linear {
            (
                B::ResizeBilinear,
                s::BuiltinOptions::ResizeBilinearOptions(Box::new(s::ResizeBilinearOptions {
                    align_corners: align,
                    half_pixel_centers: half,
                })),
            )
        } else {
            (
                B::ResizeNearestNeighbor,
                s::BuiltinOptions::ResizeNearestNeighborOptions(Box::new(
                    s::ResizeNearestNeighborOptions {
                        align_corners: align,
                        half_pixel_centers: half,
                    },
                )),
            )
        };
        self.op(b, vec![xi, st], y, Some(opts));
        Ok(())
    }
}

/// Padding decision for a conv / pool.
enum Pre {
    Same,
    Valid,
    /// ONNX-order pads of the NHWC input for a PAD in front, then VALID.
    Pad(Vec<i64>),
}

fn two(v: &[usize], what: &str) -> Result<[usize; 2]> {
    match v {
        [] => Ok([1, 1]),
        [a, b] if *a > 0 && *b > 0 => Ok([*a, *b]),
        _ => Err(unsupported(format!("{what} {v:?} (2-D ops only)"))),
    }
}

fn trim(mut v: Vec<i32>) -> Vec<i32> {
    while v.last() == Some(&-1) {
        v.pop();
    }
    v
}

fn dim_i32(d: usize) -> Result<i32> {
    i32::try_from(d).map_err(|_| invalid(format!("dimension {d} does not fit int32")))
}

fn act(a: Activation) -> s::ActivationFunctionType {
    match a {
        Activation::None => s::ActivationFunctionType::None,
        Activation::Relu => s::ActivationFunctionType::Relu,
        Activation::Relu6 => s::ActivationFunctionType::Relu6,
        Activation::ReluN1To1 => s::ActivationFunctionType::ReluN1To1,
    }
}

fn tensor_type(d: DType) -> Result<s::TensorType> {
    Ok(match d {
        DType::F32 => s::TensorType::Float32,
        DType::F16 => s::TensorType::Float16,
        DType::I8 => s::TensorType::Int8,
        DType::U8 => s::TensorType::Uint8,
        DType::I16 => s::TensorType::Int16,
        DType::U16 => s::TensorType::Uint16,
        DType::I32 => s::TensorType::Int32,
        DType::I64 => s::TensorType::Int64,
        DType::Bool => s::TensorType::Bool,
        DType::I4 => s::TensorType::Int4,
        DType::U4 => return Err(unsupported("uint4 tensors (TFLite has INT4 only)")),
    })
}

/// TFLite quantization parameters of a tensor (none for float tensors); `axis_map`
/// maps the IR's per-channel axis to the written layout's.
fn quant(
    dt: DType,
    q: Option<&QuantParams>,
    axis_map: Option<&dyn Fn(usize) -> usize>,
) -> Option<Box<s::QuantizationParameters>> {
    let q = q?;
    if dt.is_float() || q.scale.is_empty() {
        return None;
    }
    let per_channel = !q.is_per_tensor();
    let n = if per_channel { q.scale.len() } else { 1 };
    let axis = match (per_channel, q.axis) {
        (true, Some(a)) => axis_map.map_or(a, |f| f(a)) as i32,
        _ => 0,
    };
    Some(Box::new(s::QuantizationParameters {
        scale: Some(q.scale[..n].to_vec()),
        zero_point: Some((0..n).map(|c| q.channel(c).1).collect()),
        quantized_dimension: axis,
        ..Default::default()
    }))
}

/// Little-endian bytes of constant data in TFLite's layout (4-bit values packed two
/// per byte, low nibble first).
fn encode(d: &TensorData) -> Vec<u8> {
    fn pack(v: impl Iterator<Item = u8>) -> Vec<u8> {
        let nib: Vec<u8> = v.map(|b| b & 0x0f).collect();
        nib.chunks(2)
            .map(|c| c[0] | (c.get(1).copied().unwrap_or(0) << 4))
            .collect()
    }
    match d {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::I4(v) => pack(v.iter().map(|&x| x as u8)),
        TensorData::U4(v) => pack(v.iter().copied()),
    }
}

/// Whether tiling `dims` by `repeats` only repeats dimensions of size 1 (a broadcast).
fn broadcasts(dims: &[usize], repeats: &[usize]) -> bool {
    dims.len() == repeats.len() && dims.iter().zip(repeats).all(|(&d, &k)| k == 1 || d == 1)
}

/// The operator code table entry of builtin `c`, as converters write it: both code
/// fields (the byte-sized one saturates at 127, PLACEHOLDER_FOR_GREATER_OP_CODES) and
/// version 1 (every kernel edgeopt writes reads its types from the tensors), except
/// BROADCAST_TO, whose builtin kernel LiteRT registers from version 2 (1 was the Flex
/// op).
pub(crate) fn operator_code(c: s::BuiltinOperator) -> s::OperatorCode {
    let version = match c {
        s::BuiltinOperator::BroadcastTo => 2,
        _ => 1,
    };
    s::OperatorCode {
        deprecated_builtin_code: (c as i32).min(127) as i8,
        builtin_code: c,
        version,
        custom_code: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{all_ops_model, extra_ops_model};
    use crate::{finish_model, import};

    /// Import -> export -> import gives the same graph: same ops, attributes, value
    /// names, dtypes, shapes, quantization and constants.
    fn assert_round_trip(g: &Graph) {
        let bytes = export(g).unwrap();
        let back = import(&bytes).unwrap();
        assert_eq!(g.nodes.len(), back.nodes.len());
        for (a, b) in g.nodes.iter().zip(&back.nodes) {
            assert_eq!(a.op, b.op, "{}", a.name);
            let ia: Vec<_> = a.inputs.iter().map(|i| i.map(|i| &g.values[i])).collect();
            let ib: Vec<_> = b
                .inputs
                .iter()
                .map(|i| i.map(|i| &back.values[i]))
                .collect();
            assert_eq!(ia, ib, "inputs of {}", a.name);
            assert_eq!(
                g.values[a.outputs[0]], back.values[b.outputs[0]],
                "output of {}",
                a.name
            );
        }
    }

    #[test]
    fn all_ops_round_trip() {
        assert_round_trip(&import(&finish_model(&all_ops_model())).unwrap());
        assert_round_trip(&import(&finish_model(&extra_ops_model())).unwrap());
    }

    #[test]
    fn int4_packs_low_nibble_first() {
        assert_eq!(encode(&TensorData::I4(vec![-1, 7, -8])), vec![0x7f, 0x08]);
        let d = crate::tensor::decode(DType::I4, 3, &[0x7f, 0x08]).unwrap();
        assert_eq!(d, TensorData::I4(vec![-1, 7, -8]));
    }

    #[test]
    fn nchw_conv_is_rejected_naming_the_node() {
        let mut g = Graph::new("nchw");
        let x = g.add_value(
            "x",
            DType::F32,
            Some(vec![
                Dim::Fixed(1),
                Dim::Fixed(2),
                Dim::Fixed(4),
                Dim::Fixed(4),
            ]),
        );
        let w = g.add_const(
            "w",
            Tensor::from_f32(vec![3, 2, 1, 1], vec![0.5; 6]).unwrap(),
        );
        let y = g.add_value("y", DType::F32, None);
        g.add_node(
            "my_conv",
            Op::Conv(ConvAttrs {
                layout: Layout::Nchw,
                kernel_shape: vec![1, 1],
                strides: vec![],
                dilations: vec![],
                pads: vec![],
                auto_pad: AutoPad::NotSet,
                group: 1,
                activation: Activation::None,
                hybrid: None,
            }),
            vec![Some(x), Some(w), None],
            vec![y],
        );
        g.inputs.push(x);
        g.outputs.push(y);
        let err = export(&g).unwrap_err().to_string();
        assert!(err.contains("my_conv") && err.contains("NCHW"), "{err}");
    }

    /// A tile of size-1 dimensions of a static shape is written as BROADCAST_TO (which
    /// TFLite Micro has) and reads back as the same tile; with a dynamic batch it stays
    /// TILE.
    #[test]
    fn tile_of_size_one_dims_writes_broadcast_to() {
        for (batch, want) in [
            (Dim::Fixed(1), "BROADCAST_TO"),
            (Dim::Sym("N".into()), "TILE"),
        ] {
            let mut g = Graph::new("tile");
            let x = g.add_value(
                "x",
                DType::F32,
                Some(vec![
                    batch.clone(),
                    Dim::Fixed(3),
                    Dim::Fixed(1),
                    Dim::Fixed(2),
                ]),
            );
            let y = g.add_value("y", DType::F32, None);
            g.add_node(
                "up",
                Op::Tile {
                    repeats: vec![1, 1, 4, 1],
                },
                vec![Some(x)],
                vec![y],
            );
            g.inputs.push(x);
            g.outputs.push(y);
            let bytes = export(&g).unwrap();
            assert_eq!(crate::operator_names(&bytes).unwrap(), [want]);
            let back = import(&bytes).unwrap();
            assert_eq!(
                back.nodes[0].op,
                Op::Tile {
                    repeats: vec![1, 1, 4, 1]
                }
            );
        }
    }
}
