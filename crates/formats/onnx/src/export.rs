//! IR graph -> ONNX model.
//!
//! Every IR op maps to standard ONNX ops at the lowest opset (13 or newer) that has
//! all the features the graph uses. Ops from TFLite graphs are lowered:
//! - NHWC convolutions and pools get Transposes around them (constant NHWC weights are
//!   permuted at export time instead);
//! - FullyConnected becomes Gemm (or MatMul + Add when it keeps the leading dims);
//! - fused activations become Relu / Clip nodes;
//! - tensors with quantization parameters become QDQ: each quantized operand goes
//!   through DequantizeLinear, the op runs in float, and each quantized result goes
//!   through QuantizeLinear (how ONNX Runtime expects quantized models; it fuses the
//!   pattern into integer kernels). Hybrid models (float activations, int8 weights)
//!   only get the DequantizeLinear on their weights: ONNX has no form of LiteRT's
//!   on-the-fly input quantization (`edgeopt_ir::Hybrid`), so the export has the
//!   float semantics, as tf2onnx's conversions do. For quantized NHWC convs and
//!   pools the layout Transposes run on the int8 tensors, outside the
//!   DequantizeLinear -> op -> QuantizeLinear group, and a fused activation that the
//!   output's quantized range already implies (ReLU into zero point -128) is left
//!   out, so onnxruntime sees the pattern it fuses. int4 weights become INT4
//!   initializers with DequantizeLinear (opset 21); f16 weights a Cast.

use crate::error::{OnnxError, Result};
use crate::fold::cast;
use crate::proto::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use crate::tensor::{dtype_to_onnx, tensor_to_proto};
use edgeopt_ir::*;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Choices of [`export_with`] beyond the graph itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Store int8 activations as uint8 with the zero point moved by +128: the same
    /// real values, but the form onnxruntime's x86 CPU kernels want. onnxruntime only
    /// fuses an int8-activation QDQ Conv on x86 after rewriting the pair to uint8,
    /// which it cannot do for a QuantizeLinear read by several DequantizeLinear (every
    /// residual branch point); those convs then run in float. Constants (weights),
    /// graph inputs/outputs and graphs with native ONNX integer ops keep their types.
    pub uint8_activations: bool,
}

/// Serializes `graph` as an ONNX model.
pub fn export(graph: &Graph) -> Result<Vec<u8>> {
    export_with(graph, &ExportOptions::default())
}

/// Serializes `graph` as an ONNX model with `opts`.
pub fn export_with(graph: &Graph, opts: &ExportOptions) -> Result<Vec<u8>> {
    // The batch's shape arithmetic (a Reshape target or Fill dims computed from the
    // batch) is written as constants: the file keeps its dynamic batch without a
    // run-time Expand or Shape chain (see `edgeopt_ir::batch`).
    let folded = edgeopt_ir::batch::fold_batch_shape_arithmetic(graph);
    let graph = folded.as_ref().unwrap_or(graph);
    let narrowed = narrow_int64_constants(graph);
    let graph = narrowed.as_ref().unwrap_or(graph);
    if opts.uint8_activations {
        if let Some(shifted) = uint8_activations(graph) {
            return Ok(export_model(&shifted)?.encode_to_vec());
        }
    }
    Ok(export_model(graph)?.encode_to_vec())
}

/// Writes `graph` as an ONNX model file atomically (temporary file in the same
/// folder, then rename), so a crash never leaves a truncated model behind.
pub fn export_file(graph: &Graph, path: impl AsRef<Path>) -> Result<()> {
    export_file_with(graph, path, &ExportOptions::default())
}

/// [`export_file`] with `opts`.
pub fn export_file_with(graph: &Graph, path: impl AsRef<Path>, opts: &ExportOptions) -> Result<()> {
    let bytes = export_with(graph, opts)?;
    let path = path.as_ref();
    edgeopt_ir::write_atomic(path, &bytes).map_err(|e| OnnxError::Io {
        path: path.display().to_string(),
        source: e,
    })
}

/// `graph` with its quantized int64 constants (the biases of TFLite's 16x8 scheme,
/// int16 activations) made valid for ONNX, whose DequantizeLinear takes int32 but not
/// int64: as int32 when every value fits (the QDQ bias form onnxruntime knows), else
/// dequantized to an f32 constant. `None` when the graph has none.
fn narrow_int64_constants(graph: &Graph) -> Option<Graph> {
    let wide = |v: &Value| v.dtype == DType::I64 && v.quant.is_some() && v.data.is_some();
    if !graph.values.iter().any(wide) {
        return None;
    }
    let mut g = graph.clone();
    for v in g.values.iter_mut().filter(|v| wide(v)) {
        let (Some(t), Some(q)) = (v.data.as_mut(), v.quant.as_ref()) else {
            continue;
        };
        let codes = t.to_i64_vec();
        if codes.iter().all(|&c| i32::try_from(c).is_ok()) {
            t.data = TensorData::I32(codes.iter().map(|&c| c as i32).collect());
            v.dtype = DType::I32;
            continue;
        }
        // Element i belongs to channel (i / inner) % dim of the quantized axis.
        let (inner, dim) = match q.axis.filter(|_| !q.is_per_tensor()) {
            Some(a) if a < t.shape.len() => (t.shape[a + 1..].iter().product(), t.shape[a]),
            _ => (1, 1),
        };
        let real = codes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let (s, z) = q.channel((i / inner.max(1)) % dim.max(1));
                ((c - z) as f64 * s as f64) as f32
            })
            .collect();
        t.data = TensorData::F32(real);
        v.dtype = DType::F32;
        v.quant = None;
    }
    Some(g)
}

/// `graph` with its int8 per-tensor activations stored as uint8 (see
/// [`ExportOptions::uint8_activations`]); `None` when nothing changes or the graph has
/// native ONNX integer ops, whose zero-point operands are separate int8 values.
fn uint8_activations(graph: &Graph) -> Option<Graph> {
    let native_integer = graph.nodes.iter().any(|n| {
        matches!(
            n.op,
            Op::QuantizeLinear { .. }
                | Op::DequantizeLinear { .. }
                | Op::QLinearConv(_)
                | Op::QLinearMatMul
                | Op::ConvInteger(_)
                | Op::MatMulInteger
        )
    });
    if native_integer {
        return None;
    }
    let boundary: HashSet<ValueId> = graph.inputs.iter().chain(&graph.outputs).copied().collect();
    let mut g = graph.clone();
    let mut changed = false;
    for (id, v) in g.values.iter_mut().enumerate() {
        let shiftable = v.dtype == DType::I8
            && v.data.is_none()
            && !boundary.contains(&id)
            && v.quant.as_ref().is_some_and(|q| q.is_per_tensor());
        if let (true, Some(q)) = (shiftable, v.quant.as_mut()) {
            for z in &mut q.zero_point {
                *z += 128;
            }
            v.dtype = DType::U8;
            changed = true;
        }
    }
    changed.then_some(g)
}

/// The ONNX IR version that goes with an opset.
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// The lowest opset (at least 13) that has every feature the graph uses.
fn required_opset(g: &Graph) -> i64 {
    let mut v = 13;
    for n in &g.nodes {
        let need = match &n.op {
            Op::Pad {
                mode: PadMode::Wrap,
                ..
            } => 19,
            Op::AveragePool(p) if p.dilations.iter().any(|&d| d != 1) => 19,
            Op::Resize(r) => {
                if r.coord == CoordTransform::HalfPixelSymmetric {
                    19
                } else if r.antialias
                    || r.axes.is_some()
                    || r.keep_aspect_ratio_policy != AspectRatioPolicy::Stretch
                {
                    18
                } else {
                    13
                }
            }
            Op::Reshape { allowzero: true } => 14,
            Op::QuantizeLinear {
                block_size,
                output_dtype,
                ..
            } if *block_size != 0
                || matches!(
                    output_dtype,
                    DType::I4 | DType::U4 | DType::I16 | DType::U16
                ) =>
            {
                21
            }
            Op::DequantizeLinear { block_size, .. } if *block_size != 0 => 21,
            // 16- and 4-bit inputs of DequantizeLinear and float16 scales of
            // QLinearMatMul arrived in opset 21.
            Op::DequantizeLinear { .. }
                if n.input(0).is_some_and(|x| {
                    matches!(
                        g.values[x].dtype,
                        DType::I16 | DType::U16 | DType::I4 | DType::U4
                    )
                }) =>
            {
                21
            }
            Op::QLinearMatMul if n.input(1).is_some_and(|s| g.values[s].dtype == DType::F16) => 21,
            // 8- and 16-bit integer arithmetic arrived in opset 14, HardSwish too.
            Op::Binary {
                kind: BinaryKind::Add | BinaryKind::Sub | BinaryKind::Mul | BinaryKind::Div,
                ..
            } if n.input(0).is_some_and(|x| {
                matches!(
                    g.values[x].dtype,
                    DType::I8 | DType::U8 | DType::I16 | DType::U16
                )
            }) =>
            {
                14
            }
            Op::Unary(UnaryKind::HardSwish) => 14,
            Op::Unary(UnaryKind::Gelu) => 20,
            Op::LayerNorm { .. } => 17,
            // The layout attribute of LSTM and GRU arrived in opset 14.
            Op::Lstm { .. } | Op::Gru { .. } => 14,
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::FullyConnected { .. }
            | Op::Binary { .. }
            | Op::Compare(_)
            | Op::Where
            | Op::Unary(_)
            | Op::Clip { .. }
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::GlobalAveragePool
            | Op::BatchNorm { .. }
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Concat { .. }
            | Op::StridedSlice(_)
            | Op::Tile { .. }
            | Op::Fill
            | Op::Gather { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::TopK { .. }
            | Op::Reduce { .. }
            | Op::Identity
            | Op::Shape
            | Op::Cast { .. }
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger
            | Op::Quantize
            | Op::Dequantize => 13,
        };
        v = v.max(need);
    }
    // 4-bit and 16-bit integer tensors and block-wise scales in Q/DQ need opset 21.
    let wide = g.values.iter().any(|x| {
        matches!(x.dtype, DType::I4 | DType::U4)
            || (x.quant.is_some() && matches!(x.dtype, DType::I16 | DType::U16))
            || x.quant.as_ref().is_some_and(|q| q.block_size.is_some())
    });
    if wide {
        v = v.max(21);
    }
    v
}

fn export_model(g: &Graph) -> Result<ModelProto> {
    g.validate()?;
    let opset = required_opset(g);
    let mut ex = Ex {
        g,
        opset,
        nodes: Vec::new(),
        inits: Vec::new(),
        taken: g.values.iter().map(|v| v.name.clone()).collect(),
        fresh: 0,
        emitted: HashSet::new(),
        dequantized: HashMap::new(),
        node_names: HashSet::new(),
        output_quantized: false,
    };
    for n in &g.nodes {
        ex.node(n)?;
    }
    let mut inputs = Vec::new();
    for &i in &g.inputs {
        inputs.push(value_info(&g.values[i]));
    }
    let mut outputs = Vec::new();
    for &o in &g.outputs {
        let v = &g.values[o];
        if v.data.is_some() {
            ex.use_value(o);
        }
        outputs.push(value_info(v));
    }
    let graph = GraphProto {
        node: ex.nodes,
        name: Some(if g.name.is_empty() {
            "edgeopt".into()
        } else {
            g.name.clone()
        }),
        initializer: ex.inits,
        input: inputs,
        output: outputs,
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: Some(ir_version(opset)),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        producer_name: Some("edgeopt".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    })
}

fn value_info(v: &Value) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value as DV, Dimension};
    let shape = v.shape.as_ref().map(|s| TensorShapeProto {
        dim: s
            .iter()
            .map(|d| Dimension {
                value: match d {
                    Dim::Fixed(n) => Some(DV::DimValue(*n as i64)),
                    Dim::Sym(s) if s.is_empty() => None,
                    Dim::Sym(s) => Some(DV::DimParam(s.clone())),
                },
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype_to_onnx(v.dtype)),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}
fn a_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        i: Some(i),
        ..attr(name, AttributeType::Int)
    }
}
fn a_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        f: Some(f),
        ..attr(name, AttributeType::Float)
    }
}
fn a_s(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        s: Some(s.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}
fn a_ints(name: &str, v: impl IntoIterator<Item = i64>) -> AttributeProto {
    AttributeProto {
        ints: v.into_iter().collect(),
        ..attr(name, AttributeType::Ints)
    }
}
fn usizes(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// Export state.
struct Ex<'g> {
    g: &'g Graph,
    opset: i64,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    /// Every name in use (values of the graph and names the exporter made).
    taken: HashSet<String>,
    fresh: usize,
    /// Constants already written as initializers.
    emitted: HashSet<ValueId>,
    /// Quantized value -> name of its DequantizeLinear output.
    dequantized: HashMap<ValueId, String>,
    node_names: HashSet<String>,
    /// Set by an op that already wrote the QuantizeLinear of its (wrapped) output, so
    /// [`Ex::node`] does not add another.
    output_quantized: bool,
}

impl Ex<'_> {
    fn fresh(&mut self, base: &str) -> String {
        loop {
            self.fresh += 1;
            let n = format!("{base}__{}", self.fresh);
            if self.taken.insert(n.clone()) {
                return n;
            }
        }
    }

    /// Name of a value, writing its initializer the first time a constant is used.
    fn use_value(&mut self, id: ValueId) -> String {
        let v = &self.g.values[id];
        if let Some(t) = &v.data {
            if self.emitted.insert(id) {
                self.inits.push(tensor_to_proto(&v.name, t));
            }
        }
        v.name.clone()
    }

    /// A new initializer with a fresh name.
    fn constant(&mut self, base: &str, t: &Tensor) -> String {
        let name = self.fresh(base);
        self.inits.push(tensor_to_proto(&name, t));
        name
    }

    fn i64s(&mut self, base: &str, v: &[i64]) -> Result<String> {
        let t = Tensor::from_i64(vec![v.len()], v.to_vec())?;
        Ok(self.constant(base, &t))
    }

    fn push(
        &mut self,
        name: &str,
        op: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) {
        // onnxruntime rejects repeated node names.
        let mut unique = name.to_string();
        let mut k = 1;
        while !self.node_names.insert(unique.clone()) {
            k += 1;
            unique = format!("{name}_{k}");
        }
        self.nodes.push(NodeProto {
            input: inputs,
            output: outputs,
            name: Some(unique),
            op_type: Some(op.to_string()),
            domain: Some(String::new()),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// `op` from `input` into a fresh value; returns its name.
    fn step(
        &mut self,
        node: &str,
        op: &str,
        inputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) -> String {
        let out = self.fresh(&format!("{node}_{op}"));
        self.push(
            &format!("{node}/{op}"),
            op,
            inputs,
            vec![out.clone()],
            attrs,
        );
        out
    }
}

/// Permutation NHWC -> NCHW (`[0, r-1, 1, ..., r-2]`) for rank `r`.
fn to_nchw(r: usize) -> Vec<usize> {
    let mut p = vec![0];
    if r >= 2 {
        p.push(r - 1);
        p.extend(1..r - 1);
    }
    p
}

/// Permutation NCHW -> NHWC (`[0, 2, ..., r-1, 1]`).
fn to_nhwc(r: usize) -> Vec<usize> {
    let mut p = vec![0];
    if r >= 2 {
        p.extend(2..r);
        p.push(1);
    }
    p
}

/// `t` with its axes permuted (`out.shape[i] = t.shape[perm[i]]`).
fn permute(t: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let r = t.rank();
    if perm.len() != r {
        return Err(OnnxError::Model(format!(
            "cannot permute rank {r} by {perm:?}"
        )));
    }
    let mut st = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        st[i] = st[i + 1] * t.shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    let n = t.len();
    let mut idx = Vec::with_capacity(n);
    let mut o = vec![0usize; r];
    for _ in 0..n {
        idx.push(o.iter().zip(perm).map(|(&i, &p)| i * st[p]).sum::<usize>());
        for k in (0..r).rev() {
            o[k] += 1;
            if o[k] < out_shape[k] {
                break;
            }
            o[k] = 0;
        }
    }
    let data = take(&t.data, &idx);
    Ok(Tensor::new(out_shape, data)?)
}

fn take(d: &TensorData, idx: &[usize]) -> TensorData {
    macro_rules! pick {
        ($($var:ident),*) => {
            match d {
                $(TensorData::$var(x) => TensorData::$var(idx.iter().map(|&i| x[i]).collect()),)*
            }
        };
    }
    pick!(F32, F16, I8, U8, I16, U16, I32, I64, Bool, I4, U4)
}

fn auto_pad_str(a: AutoPad) -> &'static str {
    match a {
        AutoPad::NotSet => "NOTSET",
        AutoPad::SameUpper => "SAME_UPPER",
        AutoPad::SameLower => "SAME_LOWER",
        AutoPad::Valid => "VALID",
    }
}

/// The explicit pads (ONNX order) that a conv's SAME `auto_pad` resolves to, from its
/// input's fixed shape.
fn same_pads(g: &Graph, n: &Node, c: &ConvAttrs) -> Result<Vec<i64>> {
    let fixed = |k: usize| n.input(k).and_then(|v| g.values[v].fixed_shape());
    let (Some(xs), Some(ws)) = (fixed(0), fixed(1)) else {
        return Err(OnnxError::Model(format!(
            "node '{}': SAME padding with dilation needs fixed input and weight shapes",
            n.name
        )));
    };
    let bad = |e: String| OnnxError::Model(format!("node '{}': {e}", n.name));
    let (_, _, spatial) = edgeopt_ir::shape::split_layout(&xs, c.layout).map_err(bad)?;
    let kernel = if c.kernel_shape.is_empty() {
        match c.layout {
            Layout::Nchw => ws.get(2..).unwrap_or_default().to_vec(),
            Layout::Nhwc => ws
                .get(1..ws.len().saturating_sub(1))
                .unwrap_or_default()
                .to_vec(),
        }
    } else {
        c.kernel_shape.clone()
    };
    let w = edgeopt_ir::shape::window(
        &spatial,
        &kernel,
        &c.strides,
        &c.dilations,
        &[],
        c.auto_pad,
        false,
    )
    .map_err(bad)?;
    Ok(w.pads_begin
        .iter()
        .chain(&w.pads_end)
        .map(|&p| p as i64)
        .collect())
}

fn conv_attrs(c: &ConvAttrs, with_group: bool) -> Vec<AttributeProto> {
    let mut a = Vec::new();
    if !c.kernel_shape.is_empty() {
        a.push(a_ints("kernel_shape", usizes(&c.kernel_shape)));
    }
    if !c.strides.is_empty() {
        a.push(a_ints("strides", usizes(&c.strides)));
    }
    if !c.dilations.is_empty() {
        a.push(a_ints("dilations", usizes(&c.dilations)));
    }
    if c.auto_pad != AutoPad::NotSet {
        a.push(a_s("auto_pad", auto_pad_str(c.auto_pad)));
    } else if !c.pads.is_empty() {
        a.push(a_ints("pads", usizes(&c.pads)));
    }
    if with_group {
        a.push(a_i("group", c.group as i64));
    }
    a
}

fn pool_attrs(p: &PoolAttrs, average: bool) -> Vec<AttributeProto> {
    let mut a = vec![a_ints("kernel_shape", usizes(&p.kernel_shape))];
    if !p.strides.is_empty() {
        a.push(a_ints("strides", usizes(&p.strides)));
    }
    if !p.dilations.is_empty() && (!average || p.dilations.iter().any(|&d| d != 1)) {
        a.push(a_ints("dilations", usizes(&p.dilations)));
    }
    if p.auto_pad != AutoPad::NotSet {
        a.push(a_s("auto_pad", auto_pad_str(p.auto_pad)));
    } else if !p.pads.is_empty() {
        a.push(a_ints("pads", usizes(&p.pads)));
    }
    if p.ceil_mode {
        a.push(a_i("ceil_mode", 1));
    }
    if average && p.count_include_pad {
        a.push(a_i("count_include_pad", 1));
    }
    a
}

/// The node's fused activation (TFLite semantics: a clamp of the quantized output to
/// the activation's range) changes nothing because the output's quantized range
/// already lies inside that range.
fn redundant_activation(g: &Graph, n: &Node) -> bool {
    // Concat keeps its activation: it is written as an op of its own after the Concat.
    if matches!(n.op, Op::Concat { .. }) {
        return false;
    }
    let Some(act) = n.op.fused_activation() else {
        return false;
    };
    let (lo, hi): (f64, f64) = match act {
        Activation::None => return false,
        Activation::Relu => (0.0, f64::INFINITY),
        Activation::Relu6 => (0.0, 6.0),
        Activation::ReluN1To1 => (-1.0, 1.0),
    };
    let [o] = n.outputs[..] else { return false };
    let v = &g.values[o];
    let (Some(q), Some((qmin, qmax))) = (&v.quant, v.dtype.int_range()) else {
        return false;
    };
    if !is_quantized(v) || !q.is_per_tensor() {
        return false;
    }
    let (s, zp) = q.channel(0);
    // Real values of the smallest and largest representable outputs.
    let rmin = (qmin - zp) as f64 * s as f64;
    let rmax = (qmax - zp) as f64 * s as f64;
    rmin >= lo && rmax <= hi
}

fn without_activation(n: &Node) -> Node {
    let mut n = n.clone();
    if let Some(a) = n.op.fused_activation_mut() {
        *a = Activation::None;
    }
    n
}

/// Constant weights with group-wise (block) scales.
fn has_blocks(v: &Value) -> bool {
    v.quant.as_ref().is_some_and(|q| q.block_size.is_some())
}

fn is_quantized(v: &Value) -> bool {
    v.quant.is_some() && !v.dtype.is_float()
}

impl Ex<'_> {
    /// Scale and zero-point initializers for `q` (zero point in dtype `dt`), plus the
    /// `axis` attribute when per channel.
    fn qparams(
        &mut self,
        base: &str,
        q: &QuantParams,
        dt: DType,
    ) -> Result<(String, String, Vec<AttributeProto>)> {
        if q.scale.is_empty() {
            return Err(OnnxError::Model(format!(
                "'{base}': quantization without a scale"
            )));
        }
        let per_axis = !q.is_per_tensor();
        let n = if per_axis { q.scale.len() } else { 1 };
        let shape = if per_axis { vec![n] } else { vec![] };
        let scale = Tensor::from_f32(shape.clone(), q.scale[..n].to_vec())?;
        let zps: Vec<i64> = (0..n).map(|c| q.channel(c).1).collect();
        let zp = cast(&Tensor::from_i64(shape, zps)?, dt);
        let s = self.constant(&format!("{base}_scale"), &scale);
        let z = self.constant(&format!("{base}_zero_point"), &zp);
        let attrs = match q.axis {
            Some(a) if per_axis => vec![a_i("axis", a as i64)],
            _ => vec![],
        };
        Ok((s, z, attrs))
    }

    /// Float value of constant weights with group-wise (block) scales, in the value's
    /// own shape: the codes as `[M, per]` (each output channel's weights in storage
    /// order), a block-wise DequantizeLinear along axis 1 (opset 21), then a Reshape
    /// back. (onnxruntime keeps DequantizeLinear of constants in the graph, so it
    /// dequantizes these weights on every run; edgeopt's planner folds them.)
    fn dequantize_blocks(&mut self, id: ValueId) -> Result<String> {
        if let Some(n) = self.dequantized.get(&id) {
            return Ok(n.clone());
        }
        let v = &self.g.values[id];
        let (Some(t), Some(q)) = (v.data.clone(), v.quant.clone()) else {
            return Err(OnnxError::Model(format!(
                "'{}': block-wise quantization is for constant weights",
                v.name
            )));
        };
        let (name, dtype) = (v.name.clone(), v.dtype);
        let m = t.shape.first().copied().unwrap_or(0);
        let per = t.len().checked_div(m).unwrap_or(0);
        let block = q.block_size.unwrap_or(0);
        let blocks = q.blocks_per_slice(per);
        if q.axis != Some(0) || block == 0 || m * per != t.len() || q.scale.len() != m * blocks {
            return Err(OnnxError::Model(format!(
                "'{name}': block-wise scales must be [channels along axis 0] x [blocks]"
            )));
        }
        let codes = Tensor::new(vec![m, per], t.data.clone())?;
        let x = self.constant(&name, &codes);
        let s = self.constant(
            &format!("{name}_scale"),
            &Tensor::from_f32(vec![m, blocks], q.scale.clone())?,
        );
        let zps = Tensor::from_i64(vec![m, blocks], vec![0; m * blocks])?;
        let z = self.constant(&format!("{name}_zero_point"), &cast(&zps, dtype));
        let attrs = vec![a_i("axis", 1), a_i("block_size", block as i64)];
        let flat = self.step(&name, "DequantizeLinear", vec![x, s, z], attrs);
        let shape = self.i64s(&format!("{name}_shape"), &usizes(&t.shape))?;
        let out = self.step(&name, "Reshape", vec![flat, shape], vec![]);
        self.dequantized.insert(id, out.clone());
        Ok(out)
    }

    /// DequantizeLinear of a quantized value (or of a quantized tensor `t` standing in
    /// for it, e.g. permuted weights), once per value.
    fn dequantize(
        &mut self,
        id: ValueId,
        replaced: Option<(Tensor, QuantParams)>,
    ) -> Result<String> {
        if has_blocks(&self.g.values[id]) {
            return self.dequantize_blocks(id);
        }
        if replaced.is_none() {
            if let Some(n) = self.dequantized.get(&id) {
                return Ok(n.clone());
            }
        }
        let v = &self.g.values[id];
        let (x, q) = match replaced {
            Some((t, q)) => (self.constant(&v.name, &t), q),
            None => {
                let q = v.quant.clone().ok_or_else(|| {
                    OnnxError::Model(format!("'{}' has no quantization parameters", v.name))
                })?;
                (self.use_value(id), q)
            }
        };
        let name = v.name.clone();
        let (s, z, attrs) = self.qparams(&name, &q, v.dtype)?;
        let out = self.step(&name, "DequantizeLinear", vec![x, s, z], attrs);
        self.dequantized.insert(id, out.clone());
        Ok(out)
    }

    /// Name under which the exported op reads input `id`.
    fn operand(&mut self, id: ValueId, wrap: bool) -> Result<String> {
        if wrap && is_quantized(&self.g.values[id]) {
            self.dequantize(id, None)
        } else {
            Ok(self.use_value(id))
        }
    }

    /// NHWC (TFLite) convolution weights as ONNX NCHW weights.
    fn weights_nchw(&mut self, node: &str, id: ValueId, wrap: bool) -> Result<String> {
        let v = &self.g.values[id];
        let rank = v.shape.as_ref().map(|s| s.len()).unwrap_or(4);
        let perm = to_nchw(rank);
        if wrap && has_blocks(v) {
            let x = self.dequantize_blocks(id)?;
            return Ok(self.step(
                node,
                "Transpose",
                vec![x],
                vec![a_ints("perm", usizes(&perm))],
            ));
        }
        if let Some(t) = &v.data {
            let p = permute(t, &perm)?;
            let q = v.quant.clone().map(|mut q| {
                q.axis = q.axis.and_then(|a| perm.iter().position(|&x| x == a));
                q
            });
            return match q {
                Some(q) if wrap && !v.dtype.is_float() => self.dequantize(id, Some((p, q))),
                _ => Ok(self.constant(&v.name, &p)),
            };
        }
        let x = self.operand(id, wrap)?;
        Ok(self.step(
            node,
            "Transpose",
            vec![x],
            vec![a_ints("perm", usizes(&perm))],
        ))
    }

    /// Fused activation on `x` (float unless the tensor is a plain integer one).
    fn activation(
        &mut self,
        node: &str,
        x: String,
        act: Activation,
        dt: DType,
        out: String,
    ) -> Result<()> {
        let bounds = |lo: f32, hi: f32| (lo, hi);
        let (lo, hi) = match act {
            Activation::None => {
                self.push(node, "Identity", vec![x], vec![out], vec![]);
                return Ok(());
            }
            Activation::Relu => {
                self.push(&format!("{node}/Relu"), "Relu", vec![x], vec![out], vec![]);
                return Ok(());
            }
            Activation::Relu6 => bounds(0.0, 6.0),
            Activation::ReluN1To1 => bounds(-1.0, 1.0),
        };
        let lo = self.constant(&format!("{node}_min"), &cast(&Tensor::scalar_f32(lo), dt));
        let hi = self.constant(&format!("{node}_max"), &cast(&Tensor::scalar_f32(hi), dt));
        self.push(
            &format!("{node}/Clip"),
            "Clip",
            vec![x, lo, hi],
            vec![out],
            vec![],
        );
        Ok(())
    }

    /// After an NCHW op wrote `y`: the fused activation, then (for NHWC graphs of rank
    /// `nhwc`) the transpose back, ending in `out`. Nothing when `y` already is `out`.
    fn post(
        &mut self,
        node: &str,
        y: String,
        act: Activation,
        nhwc: Option<usize>,
        dt: DType,
        out: String,
    ) -> Result<()> {
        let mut cur = y;
        if act != Activation::None {
            let t = if nhwc.is_some() {
                self.fresh(&format!("{node}_act"))
            } else {
                out.clone()
            };
            self.activation(node, cur, act, dt, t.clone())?;
            cur = t;
        }
        if let Some(rank) = nhwc {
            let perm = vec![a_ints("perm", usizes(&to_nhwc(rank)))];
            self.push(
                &format!("{node}/Transpose"),
                "Transpose",
                vec![cur],
                vec![out],
                perm,
            );
        }
        Ok(())
    }

    /// Input 0 of an NHWC op in NCHW order: `x` transposed, or (`q_in`: quantized
    /// per tensor) the int8 input transposed and then dequantized, which keeps the
    /// DequantizeLinear right in front of the op.
    fn nchw_input(&mut self, n: &Node, q_in: bool, rank: usize, x: String) -> Result<String> {
        let perm = vec![a_ints("perm", usizes(&to_nchw(rank)))];
        if !q_in {
            return Ok(self.step(&n.name, "Transpose", vec![x], perm));
        }
        let id = n
            .input(0)
            .ok_or_else(|| OnnxError::Model("missing input".into()))?;
        let raw = self.use_value(id);
        let t = self.step(&n.name, "Transpose", vec![raw], perm);
        let v = &self.g.values[id];
        let (q, dt, base) = (v.quant.clone(), v.dtype, format!("{}_nchw", v.name));
        let q = q.ok_or_else(|| OnnxError::Model("input lost its quantization".into()))?;
        let (s, z, attrs) = self.qparams(&base, &q, dt)?;
        Ok(self.step(&n.name, "DequantizeLinear", vec![t, s, z], attrs))
    }

    /// After a quantized NHWC op wrote float NCHW `y`: the fused activation, the
    /// QuantizeLinear, then the transpose back to NHWC on the int8 tensor into the
    /// output's own name (so the QDQ group is DequantizeLinear -> op -> Quantize).
    fn post_quantized(&mut self, n: &Node, y: String, act: Activation, rank: usize) -> Result<()> {
        let o = n.outputs[0];
        let v = &self.g.values[o];
        let (q, dt, out) = (v.quant.clone(), v.dtype, v.name.clone());
        let q = q.ok_or_else(|| OnnxError::Model("output lost its quantization".into()))?;
        let mut cur = y;
        if act != Activation::None {
            let t = self.fresh(&format!("{}_act", n.name));
            self.activation(&n.name, cur, act, DType::F32, t.clone())?;
            cur = t;
        }
        let (s, z, attrs) = self.qparams(&out, &q, dt)?;
        let qn = self.fresh(&format!("{out}_nchw"));
        self.push(
            &format!("{}/QuantizeLinear", n.name),
            "QuantizeLinear",
            vec![cur, s, z],
            vec![qn.clone()],
            attrs,
        );
        self.push(
            &format!("{}/Transpose", n.name),
            "Transpose",
            vec![qn],
            vec![out],
            vec![a_ints("perm", usizes(&to_nhwc(rank)))],
        );
        self.output_quantized = true;
        Ok(())
    }

    fn node(&mut self, n: &Node) -> Result<()> {
        let g = self.g;
        let native = matches!(
            n.op,
            Op::QuantizeLinear { .. }
                | Op::DequantizeLinear { .. }
                | Op::QLinearConv(_)
                | Op::QLinearMatMul
                | Op::ConvInteger(_)
                | Op::MatMulInteger
                | Op::Quantize
                | Op::Dequantize
                | Op::Shape
        );
        let quant_in = n.present_inputs().any(|i| is_quantized(&g.values[i]));
        let quant_out = n.outputs.iter().any(|&o| is_quantized(&g.values[o]));
        let wrap = !native && (quant_in || quant_out);
        // Float results of wrapped ops get fresh names; QuantizeLinear writes the real one.
        let mut outs = Vec::new();
        for &o in &n.outputs {
            let v = &g.values[o];
            outs.push(if wrap && is_quantized(v) {
                self.fresh(&v.name)
            } else {
                v.name.clone()
            });
        }
        // A fused activation that the output's quantization already implies (e.g. a
        // ReLU into int8 with zero point -128) is left out: the QuantizeLinear
        // saturates to the same values, and onnxruntime only fuses
        // DequantizeLinear -> Conv -> QuantizeLinear without anything in between.
        let stripped;
        let n = if wrap && redundant_activation(g, n) {
            stripped = without_activation(n);
            &stripped
        } else {
            n
        };
        self.op(n, &outs, wrap).map_err(|e| match e {
            OnnxError::Model(m) => OnnxError::Node {
                node: n.name.clone(),
                op: n.op.name().to_string(),
                msg: m,
            },
            e => e,
        })?;
        if wrap && !std::mem::take(&mut self.output_quantized) {
            for (&o, f) in n.outputs.iter().zip(&outs) {
                let v = &g.values[o];
                if let (true, Some(q)) = (is_quantized(v), &v.quant) {
                    let (s, z, attrs) = self.qparams(&v.name, q, v.dtype)?;
                    let name = v.name.clone();
                    self.push(
                        &format!("{}/QuantizeLinear", n.name),
                        "QuantizeLinear",
                        vec![f.clone(), s, z],
                        vec![name],
                        attrs,
                    );
                }
            }
        }
        Ok(())
    }

    /// Emits the ONNX node(s) of `n`, writing output k to `outs[k]`.
    fn op(&mut self, n: &Node, outs: &[String], wrap: bool) -> Result<()> {
        let g = self.g;
        let name = n.name.clone();
        let out = outs
            .first()
            .cloned()
            .ok_or_else(|| OnnxError::Model("node has no output".into()))?;
        // Inputs in order ("" for absent optional ones).
        // NHWC convolution weights are read (permuted) by the Conv case itself.
        let nhwc_weights = matches!(&n.op, Op::Conv(c) if c.layout == Layout::Nhwc);
        // Quantized NHWC conv / pool: the layout transposes run on the int8 tensors
        // (outside the DequantizeLinear -> op -> QuantizeLinear group), so onnxruntime
        // sees the canonical QDQ pattern and fuses it into an integer kernel.
        let nhwc_op = matches!(&n.op, Op::Conv(c) if c.layout == Layout::Nhwc)
            || matches!(&n.op, Op::MaxPool(p) | Op::AveragePool(p) if p.layout == Layout::Nhwc);
        let per_tensor_q = |id: ValueId| {
            let v = &g.values[id];
            is_quantized(v) && v.quant.as_ref().is_some_and(QuantParams::is_per_tensor)
        };
        let q_in = wrap && nhwc_op && n.input(0).is_some_and(per_tensor_q);
        let q_out = wrap && nhwc_op && n.outputs.len() == 1 && per_tensor_q(n.outputs[0]);
        let mut ins = Vec::with_capacity(n.inputs.len());
        for (k, x) in n.inputs.iter().enumerate() {
            ins.push(match x {
                Some(_) if nhwc_weights && k == 1 => String::new(),
                Some(_) if q_in && k == 0 => String::new(),
                Some(id) => self.operand(*id, wrap)?,
                None => String::new(),
            });
        }
        let inp = |k: usize| ins.get(k).cloned().unwrap_or_default();
        let out_dt = |k: usize| {
            let v = &g.values[n.outputs[k]];
            if wrap && is_quantized(v) {
                DType::F32
            } else {
                v.dtype
            }
        };
        let trim = |mut v: Vec<String>| {
            while v.last().is_some_and(|s| s.is_empty()) {
                v.pop();
            }
            v
        };
        let simple = |ex: &mut Self, op: &str, attrs: Vec<AttributeProto>| {
            ex.push(&name, op, trim(ins.clone()), vec![out.clone()], attrs);
        };
        match &n.op {
            Op::Conv(c) | Op::QLinearConv(c) | Op::ConvInteger(c) => {
                // The ONNX op of the same name.
                let onnx_op = n.op.name();
                let nhwc = c.layout == Layout::Nhwc;
                if nhwc && onnx_op != "Conv" {
                    return Err(OnnxError::Model(
                        "NHWC integer convolution cannot be exported".into(),
                    ));
                }
                // x and w are required; only an absent bias is trimmed (the NHWC case
                // fills the blanked x and w below).
                let mut cins = ins.clone();
                cins.resize(cins.len().max(2), String::new());
                while cins.len() > 2 && cins.last().is_some_and(|s| s.is_empty()) {
                    cins.pop();
                }
                let rank = c.kernel_shape.len().max(
                    n.input(1)
                        .and_then(|w| {
                            g.values[w]
                                .shape
                                .as_ref()
                                .map(|s| s.len().saturating_sub(2))
                        })
                        .unwrap_or(2),
                ) + 2;
                if nhwc {
                    cins[0] = self.nchw_input(n, q_in, rank, inp(0))?;
                    let w = n
                        .input(1)
                        .ok_or_else(|| OnnxError::Model("missing weights".into()))?;
                    cins[1] = self.weights_nchw(&name, w, wrap)?;
                }
                let mut attrs = conv_attrs(c, true);
                if nhwc && c.kernel_shape.is_empty() {
                    attrs.retain(|a| a.name.as_deref() != Some("kernel_shape"));
                }
                // onnxruntime refuses SAME auto_pad with a dilation ("Dilation not
                // supported for AutoPadType::SAME_UPPER"): write the pads SAME means.
                if matches!(c.auto_pad, AutoPad::SameUpper | AutoPad::SameLower)
                    && c.dilations.iter().any(|&d| d != 1)
                {
                    let pads = same_pads(g, n, c)?;
                    attrs.retain(|a| a.name.as_deref() != Some("auto_pad"));
                    attrs.push(a_ints("pads", pads));
                }
                let post = nhwc || c.activation != Activation::None;
                let y = if post {
                    self.fresh(&format!("{name}_conv"))
                } else {
                    out.clone()
                };
                self.push(&name, onnx_op, cins, vec![y.clone()], attrs);
                if q_out {
                    self.post_quantized(n, y, c.activation, rank)?;
                } else {
                    self.post(&name, y, c.activation, nhwc.then_some(rank), out_dt(0), out)?;
                }
            }
            Op::ConvTranspose(c) => {
                if c.conv.layout == Layout::Nhwc {
                    return Err(OnnxError::Model(
                        "NHWC ConvTranspose cannot be exported".into(),
                    ));
                }
                let mut attrs = conv_attrs(&c.conv, true);
                if !c.output_padding.is_empty() {
                    attrs.push(a_ints("output_padding", usizes(&c.output_padding)));
                }
                if let Some(s) = &c.output_shape {
                    attrs.push(a_ints("output_shape", usizes(s)));
                }
                if c.conv.activation == Activation::None {
                    simple(self, "ConvTranspose", attrs);
                } else {
                    let y = self.fresh(&format!("{name}_convt"));
                    self.push(
                        &name,
                        "ConvTranspose",
                        trim(ins.clone()),
                        vec![y.clone()],
                        attrs,
                    );
                    self.activation(&name, y, c.conv.activation, out_dt(0), out)?;
                }
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => simple(
                self,
                "Gemm",
                vec![
                    a_f("alpha", *alpha),
                    a_f("beta", *beta),
                    a_i("transA", *trans_a as i64),
                    a_i("transB", *trans_b as i64),
                ],
            ),
            Op::MatMul => simple(self, "MatMul", vec![]),
            Op::QLinearMatMul => simple(self, "QLinearMatMul", vec![]),
            Op::MatMulInteger => simple(self, "MatMulInteger", vec![]),
            Op::FullyConnected {
                activation,
                keep_num_dims,
                ..
            } => {
                let (x, w, b) = (inp(0), inp(1), inp(2));
                let wv = n.input(1).map(|i| &g.values[i]);
                let k = wv
                    .and_then(|v| v.fixed_shape())
                    .and_then(|s| s.get(1).copied())
                    .ok_or_else(|| {
                        OnnxError::Model("FullyConnected weights need a static [N, K] shape".into())
                    })?;
                let y = if *activation == Activation::None {
                    out.clone()
                } else {
                    self.fresh(&format!("{name}_fc"))
                };
                if *keep_num_dims {
                    let wt = self.step(&name, "Transpose", vec![w], vec![a_ints("perm", [1, 0])]);
                    if b.is_empty() {
                        self.push(&name, "MatMul", vec![x, wt], vec![y.clone()], vec![]);
                    } else {
                        let m = self.step(&name, "MatMul", vec![x, wt], vec![]);
                        self.push(
                            &format!("{name}/Add"),
                            "Add",
                            vec![m, b],
                            vec![y.clone()],
                            vec![],
                        );
                    }
                } else {
                    let shape = self.i64s(&format!("{name}_rows"), &[-1, k as i64])?;
                    let x2 = self.step(&name, "Reshape", vec![x, shape], vec![]);
                    let mut gi = vec![x2, w];
                    if !b.is_empty() {
                        gi.push(b);
                    }
                    self.push(&name, "Gemm", gi, vec![y.clone()], vec![a_i("transB", 1)]);
                }
                if *activation != Activation::None {
                    self.activation(&name, y, *activation, out_dt(0), out)?;
                }
            }
            Op::Binary { kind, activation } => {
                let op = match kind {
                    BinaryKind::Add => "Add",
                    BinaryKind::Sub => "Sub",
                    BinaryKind::Mul => "Mul",
                    BinaryKind::Div => "Div",
                    BinaryKind::Max => "Max",
                    BinaryKind::Min => "Min",
                    BinaryKind::Pow => "Pow",
                };
                if *activation == Activation::None {
                    simple(self, op, vec![]);
                } else {
                    let y = self.step(&name, op, trim(ins.clone()), vec![]);
                    self.activation(&name, y, *activation, out_dt(0), out)?;
                }
            }
            Op::Compare(k) => simple(
                self,
                match k {
                    CompareKind::Equal => "Equal",
                    CompareKind::Less => "Less",
                    CompareKind::LessOrEqual => "LessOrEqual",
                    CompareKind::Greater => "Greater",
                    CompareKind::GreaterOrEqual => "GreaterOrEqual",
                },
                vec![],
            ),
            Op::Where => simple(self, "Where", vec![]),
            Op::Unary(k) => {
                let op = match k {
                    UnaryKind::Relu6 => {
                        return self.activation(&name, inp(0), Activation::Relu6, out_dt(0), out)
                    }
                    UnaryKind::Relu => "Relu",
                    UnaryKind::Sigmoid => "Sigmoid",
                    UnaryKind::Tanh => "Tanh",
                    UnaryKind::HardSwish => "HardSwish",
                    UnaryKind::Exp => "Exp",
                    UnaryKind::Log => "Log",
                    UnaryKind::Neg => "Neg",
                    UnaryKind::Abs => "Abs",
                    UnaryKind::Sqrt => "Sqrt",
                    UnaryKind::Reciprocal => "Reciprocal",
                    UnaryKind::Floor => "Floor",
                    UnaryKind::Ceil => "Ceil",
                    UnaryKind::Not => "Not",
                    UnaryKind::Erf => "Erf",
                    UnaryKind::Gelu => "Gelu",
                };
                simple(self, op, vec![]);
            }
            Op::Clip { min, max } => {
                let dt = out_dt(0);
                let lo = match min {
                    Some(m) => {
                        self.constant(&format!("{name}_min"), &cast(&Tensor::scalar_f32(*m), dt))
                    }
                    None => String::new(),
                };
                let hi = match max {
                    Some(m) => {
                        self.constant(&format!("{name}_max"), &cast(&Tensor::scalar_f32(*m), dt))
                    }
                    None => String::new(),
                };
                self.push(&name, "Clip", trim(vec![inp(0), lo, hi]), vec![out], vec![]);
            }
            Op::LeakyRelu { alpha } => simple(self, "LeakyRelu", vec![a_f("alpha", *alpha)]),
            Op::HardSigmoid { alpha, beta } => simple(
                self,
                "HardSigmoid",
                vec![a_f("alpha", *alpha), a_f("beta", *beta)],
            ),
            Op::Softmax { axis, beta } => {
                let mut x = inp(0);
                if *beta != 1.0 {
                    let b = self.constant(
                        &format!("{name}_beta"),
                        &cast(&Tensor::scalar_f32(*beta), out_dt(0)),
                    );
                    x = self.step(&name, "Mul", vec![x, b], vec![]);
                }
                self.push(
                    &name,
                    "Softmax",
                    vec![x],
                    vec![out],
                    vec![a_i("axis", *axis)],
                );
            }
            Op::LogSoftmax { axis } => simple(self, "LogSoftmax", vec![a_i("axis", *axis)]),
            Op::MaxPool(p) | Op::AveragePool(p) => {
                let average = matches!(n.op, Op::AveragePool(_));
                let op = if average { "AveragePool" } else { "MaxPool" };
                let nhwc = p.layout == Layout::Nhwc;
                let rank = p.kernel_shape.len() + 2;
                let x = if nhwc {
                    self.nchw_input(n, q_in, rank, inp(0))?
                } else {
                    inp(0)
                };
                let post = nhwc || p.activation != Activation::None;
                let y = if post {
                    self.fresh(&format!("{name}_pool"))
                } else {
                    out.clone()
                };
                self.push(&name, op, vec![x], vec![y.clone()], pool_attrs(p, average));
                if q_out {
                    self.post_quantized(n, y, p.activation, rank)?;
                } else {
                    self.post(&name, y, p.activation, nhwc.then_some(rank), out_dt(0), out)?;
                }
            }
            Op::GlobalAveragePool => simple(self, "GlobalAveragePool", vec![]),
            Op::BatchNorm { epsilon } => {
                simple(self, "BatchNormalization", vec![a_f("epsilon", *epsilon)])
            }
            Op::LayerNorm { axis, epsilon } => simple(
                self,
                "LayerNormalization",
                vec![a_i("axis", *axis), a_f("epsilon", *epsilon)],
            ),
            Op::Flatten { axis } => simple(self, "Flatten", vec![a_i("axis", *axis)]),
            Op::Reshape { allowzero } => {
                let attrs = if *allowzero {
                    vec![a_i("allowzero", 1)]
                } else {
                    vec![]
                };
                let computed_i32 = n
                    .input(1)
                    .is_some_and(|v| !g.values[v].is_const() && g.values[v].dtype != DType::I64);
                if computed_i32 {
                    // A shape computed at run time in int32 (the SHAPE arithmetic of a
                    // dynamic-batch TFLite conversion): ONNX's Reshape takes int64.
                    let to = vec![a_i("to", dtype_to_onnx(DType::I64) as i64)];
                    let s64 = self.step(&name, "Cast", vec![inp(1)], to);
                    self.push(&name, "Reshape", vec![inp(0), s64], vec![out], attrs);
                } else {
                    simple(self, "Reshape", attrs);
                }
            }
            Op::Transpose { perm } => {
                let attrs = if perm.is_empty() {
                    vec![]
                } else {
                    vec![a_ints("perm", usizes(perm))]
                };
                simple(self, "Transpose", attrs);
            }
            Op::Squeeze { axes } | Op::Unsqueeze { axes } => {
                let op = if matches!(n.op, Op::Squeeze { .. }) {
                    "Squeeze"
                } else {
                    "Unsqueeze"
                };
                let mut i = vec![inp(0)];
                if !axes.is_empty() {
                    i.push(self.i64s(&format!("{name}_axes"), axes)?);
                }
                self.push(&name, op, i, vec![out], vec![]);
            }
            Op::Concat { axis, activation } => {
                if *activation == Activation::None {
                    simple(self, "Concat", vec![a_i("axis", *axis)]);
                } else {
                    let y = self.step(&name, "Concat", trim(ins.clone()), vec![a_i("axis", *axis)]);
                    self.activation(&name, y, *activation, out_dt(0), out)?;
                }
            }
            Op::Gather { axis } => simple(self, "Gather", vec![a_i("axis", *axis)]),
            Op::Lstm {
                hidden_size,
                direction,
                batch_first,
                clip,
                ..
            }
            | Op::Gru {
                hidden_size,
                direction,
                batch_first,
                clip,
                ..
            } => {
                let dir = match direction {
                    RnnDirection::Forward => "forward",
                    RnnDirection::Reverse => "reverse",
                    RnnDirection::Bidirectional => "bidirectional",
                };
                let mut attrs = vec![
                    a_i("hidden_size", *hidden_size as i64),
                    a_s("direction", dir),
                    a_i("layout", *batch_first as i64),
                ];
                if let Op::Lstm { input_forget, .. } = &n.op {
                    attrs.push(a_i("input_forget", *input_forget as i64))
                }
                if let Op::Gru {
                    linear_before_reset,
                    ..
                } = &n.op
                {
                    attrs.push(a_i("linear_before_reset", *linear_before_reset as i64))
                }
                if let Some(c) = clip {
                    attrs.push(a_f("clip", *c));
                }
                let op = n.op.name();
                self.push(&name, op, trim(ins.clone()), outs.to_vec(), attrs);
            }
            Op::TopK { axis, k, largest } => {
                let kk = self.i64s(&format!("{name}_k"), &[*k as i64])?;
                let attrs = vec![a_i("axis", *axis), a_i("largest", *largest as i64)];
                self.push(&name, "TopK", vec![inp(0), kk], outs.to_vec(), attrs);
            }
            Op::Split { axis, split } => {
                let sizes: Vec<i64> = split.iter().map(|&w| w as i64).collect();
                let s = self.i64s(&format!("{name}_split"), &sizes)?;
                self.push(
                    &name,
                    "Split",
                    vec![inp(0), s],
                    outs.to_vec(),
                    vec![a_i("axis", *axis)],
                );
            }
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            } => {
                let mut i = vec![inp(0)];
                for (what, v) in [
                    ("starts", starts),
                    ("ends", ends),
                    ("axes", axes),
                    ("steps", steps),
                ] {
                    i.push(self.i64s(&format!("{name}_{what}"), v)?);
                }
                self.push(&name, "Slice", i, vec![out], vec![]);
            }
            Op::Tile { repeats } => {
                let r: Vec<i64> = repeats.iter().map(|&r| r as i64).collect();
                let r = self.i64s(&format!("{name}_repeats"), &r)?;
                self.push(&name, "Tile", vec![inp(0), r], vec![out], vec![]);
            }
            Op::Fill => {
                // ONNX Expand broadcasts the value to the (run-time) dims.
                let dims = inp(0);
                let d64 = format!("{name}_dims_i64");
                self.push(
                    &format!("{name}_cast"),
                    "Cast",
                    vec![dims],
                    vec![d64.clone()],
                    vec![a_i("to", dtype_to_onnx(DType::I64) as i64)],
                );
                self.push(&name, "Expand", vec![inp(1), d64], vec![out], vec![]);
            }
            Op::StridedSlice(a) => {
                let (starts, ends, steps, shrunk) = strided_slice_as_onnx(a)
                    .map_err(|e| OnnxError::Model(format!("node '{name}': {e}")))?;
                let axes: Vec<i64> = (0..starts.len() as i64).collect();
                let mut i = vec![inp(0)];
                for (what, v) in [
                    ("starts", &starts),
                    ("ends", &ends),
                    ("axes", &axes),
                    ("steps", &steps),
                ] {
                    i.push(self.i64s(&format!("{name}_{what}"), v)?);
                }
                if shrunk.is_empty() {
                    self.push(&name, "Slice", i, vec![out], vec![]);
                } else {
                    let y = self.step(&name, "Slice", i, vec![]);
                    let sq = self.i64s(&format!("{name}_shrink_axes"), &shrunk)?;
                    self.push(
                        &format!("{name}_shrink"),
                        "Squeeze",
                        vec![y, sq],
                        vec![out],
                        vec![],
                    );
                }
            }
            Op::Pad { mode, pads, value } => {
                let m = match mode {
                    PadMode::Constant => "constant",
                    PadMode::Reflect => "reflect",
                    PadMode::Edge => "edge",
                    PadMode::Wrap => "wrap",
                };
                let p = self.i64s(&format!("{name}_pads"), pads)?;
                let mut i = vec![inp(0), p];
                if *mode == PadMode::Constant && *value != 0.0 {
                    i.push(self.constant(
                        &format!("{name}_value"),
                        &cast(&Tensor::scalar_f32(*value), out_dt(0)),
                    ));
                }
                self.push(&name, "Pad", i, vec![out], vec![a_s("mode", m)]);
            }
            Op::Reduce {
                kind,
                axes,
                keepdims,
                noop_with_empty_axes,
            } => {
                let op = match kind {
                    ReduceKind::Mean => "ReduceMean",
                    ReduceKind::Sum => "ReduceSum",
                    ReduceKind::Max => "ReduceMax",
                    ReduceKind::Min => "ReduceMin",
                    ReduceKind::Prod => "ReduceProd",
                };
                let axes_input = self.opset >= if *kind == ReduceKind::Sum { 13 } else { 18 };
                let mut attrs = vec![a_i("keepdims", *keepdims as i64)];
                let mut i = vec![inp(0)];
                if axes_input {
                    if *noop_with_empty_axes {
                        attrs.push(a_i("noop_with_empty_axes", 1));
                    }
                    if let Some(a) = axes {
                        i.push(self.i64s(&format!("{name}_axes"), a)?);
                    }
                } else if let Some(a) = axes {
                    attrs.push(a_ints("axes", a.iter().copied()));
                }
                self.push(&name, op, i, vec![out], attrs);
            }
            Op::Resize(r) => self.resize(n, r, inp(0), out)?,
            Op::Identity => simple(self, "Identity", vec![]),
            Op::Shape => simple(self, "Shape", vec![]),
            Op::Cast { to } => simple(self, "Cast", vec![a_i("to", dtype_to_onnx(*to) as i64)]),
            Op::QuantizeLinear {
                axis,
                block_size,
                saturate: _,
                output_dtype,
            } => {
                let mut attrs = vec![a_i("axis", *axis)];
                if *block_size != 0 {
                    attrs.push(a_i("block_size", *block_size));
                }
                let mut i = trim(ins.clone());
                if i.len() < 3 && *output_dtype != DType::U8 {
                    if self.opset >= 21 {
                        attrs.push(a_i("output_dtype", dtype_to_onnx(*output_dtype) as i64));
                    } else {
                        // Before opset 21 the zero point's type is the output type.
                        let z = self.constant(
                            &format!("{name}_zero_point"),
                            &cast(&Tensor::scalar_f32(0.0), *output_dtype),
                        );
                        i.truncate(2);
                        i.push(z);
                    }
                }
                self.push(&name, "QuantizeLinear", i, vec![out], attrs);
            }
            Op::DequantizeLinear { axis, block_size } => {
                let mut attrs = vec![a_i("axis", *axis)];
                if *block_size != 0 {
                    attrs.push(a_i("block_size", *block_size));
                }
                simple(self, "DequantizeLinear", attrs);
            }
            Op::Quantize => {
                // TFLite QUANTIZE: float (or quantized, requantize) -> quantized output.
                let o = n.outputs[0];
                let ov = &g.values[o];
                let q = ov.quant.clone().ok_or_else(|| {
                    OnnxError::Model("Quantize output has no quantization parameters".into())
                })?;
                let src = n
                    .input(0)
                    .ok_or_else(|| OnnxError::Model("missing input".into()))?;
                let x = if is_quantized(&g.values[src]) {
                    self.dequantize(src, None)?
                } else {
                    inp(0)
                };
                let (s, z, attrs) = self.qparams(&ov.name, &q, ov.dtype)?;
                self.push(&name, "QuantizeLinear", vec![x, s, z], vec![out], attrs);
            }
            Op::Dequantize => {
                let src = n
                    .input(0)
                    .ok_or_else(|| OnnxError::Model("missing input".into()))?;
                let sv = &g.values[src];
                if sv.dtype.is_float() {
                    self.push(
                        &name,
                        "Cast",
                        vec![inp(0)],
                        vec![out],
                        vec![a_i("to", dtype_to_onnx(out_dt(0)) as i64)],
                    );
                } else {
                    let x = self.dequantize(src, None)?;
                    self.push(&name, "Identity", vec![x], vec![out], vec![]);
                }
            }
        }
        Ok(())
    }

    fn resize(&mut self, n: &Node, r: &ResizeAttrs, x: String, out: String) -> Result<()> {
        let name = n.name.clone();
        let coord = match r.coord {
            CoordTransform::HalfPixel => "half_pixel",
            CoordTransform::HalfPixelSymmetric => "half_pixel_symmetric",
            CoordTransform::PytorchHalfPixel => "pytorch_half_pixel",
            CoordTransform::AlignCorners => "align_corners",
            CoordTransform::Asymmetric => "asymmetric",
            CoordTransform::TfCropAndResize => "tf_crop_and_resize",
            CoordTransform::TfHalfPixelForNn => {
                return Err(OnnxError::Model(
                    "tf_half_pixel_for_nn exists only in opsets 11-12 and cannot be exported"
                        .into(),
                ))
            }
        };
        let mut attrs = vec![
            a_s(
                "mode",
                match r.mode {
                    ResizeMode::Nearest => "nearest",
                    ResizeMode::Linear => "linear",
                    ResizeMode::Cubic => "cubic",
                },
            ),
            a_s("coordinate_transformation_mode", coord),
            a_s(
                "nearest_mode",
                match r.nearest_mode {
                    NearestMode::RoundPreferFloor => "round_prefer_floor",
                    NearestMode::RoundPreferCeil => "round_prefer_ceil",
                    NearestMode::Floor => "floor",
                    NearestMode::Ceil => "ceil",
                },
            ),
            a_f("cubic_coeff_a", r.cubic_coeff_a),
            a_i("exclude_outside", r.exclude_outside as i64),
            a_f("extrapolation_value", r.extrapolation_value),
        ];
        if r.antialias {
            attrs.push(a_i("antialias", 1));
        }
        if let Some(a) = &r.axes {
            attrs.push(a_ints("axes", a.iter().copied()));
        }
        match r.keep_aspect_ratio_policy {
            AspectRatioPolicy::Stretch => {}
            AspectRatioPolicy::NotLarger => {
                attrs.push(a_s("keep_aspect_ratio_policy", "not_larger"))
            }
            AspectRatioPolicy::NotSmaller => {
                attrs.push(a_s("keep_aspect_ratio_policy", "not_smaller"))
            }
        }
        let roi = match &r.roi {
            Some(v) => self.constant(
                &format!("{name}_roi"),
                &Tensor::from_f32(vec![v.len()], v.clone())?,
            ),
            None => String::new(),
        };
        let mut i = vec![x, roi];
        if let Some(s) = &r.scales {
            i.push(self.constant(
                &format!("{name}_scales"),
                &Tensor::from_f32(vec![s.len()], s.clone())?,
            ));
        } else if let Some(s) = &r.sizes {
            i.push(String::new());
            let v: Vec<i64> = s.iter().map(|&d| d as i64).collect();
            i.push(self.i64s(&format!("{name}_sizes"), &v)?);
        }
        self.push(&name, "Resize", i, vec![out], attrs);
        Ok(())
    }
}

/// ONNX Slice operands (starts, ends, steps; axes `0..n`) and the axes to squeeze.
type SliceOperands = (Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>);

/// TFLite STRIDED_SLICE as ONNX Slice (+ Squeeze of the shrunk axes): per entry `i`
/// (axis `i`), starts / ends / steps with the masks resolved as ONNX's clamping does
/// TFLite's (`i64::MAX` / `i64::MIN` for a masked end, as the ONNX spec advises for
/// "to the end" with positive / negative steps). Returns (starts, ends, steps, shrunk
/// axes). The ellipsis and new-axis masks need the input's rank to place entries and
/// are refused.
fn strided_slice_as_onnx(
    a: &edgeopt_ir::StridedSliceAttrs,
) -> std::result::Result<SliceOperands, String> {
    let k = a.begin.len();
    if a.end.len() != k || a.strides.len() != k || k > 32 {
        return Err(format!(
            "StridedSlice with {k} begin, {} end and {} strides entries",
            a.end.len(),
            a.strides.len()
        ));
    }
    if a.ellipsis_mask != 0 || a.new_axis_mask != 0 {
        return Err("StridedSlice with an ellipsis or new-axis mask has no ONNX export".into());
    }
    let bit = |m: u32, i: usize| m & (1 << i) != 0;
    let (mut starts, mut ends, mut steps, mut shrunk) = (vec![], vec![], vec![], vec![]);
    for i in 0..k {
        let s = a.strides[i];
        if s == 0 {
            return Err("StridedSlice with stride 0".into());
        }
        let masked_begin = if s > 0 { 0 } else { i64::MAX };
        let b = if bit(a.begin_mask, i) {
            masked_begin
        } else {
            a.begin[i]
        };
        if bit(a.shrink_axis_mask, i) {
            // One element at `b` (TFLite ignores end and stride there; a masked begin
            // is the first element, or the last one for a negative stride); -1 is the
            // last element, whose exclusive end is "to the end".
            let b = match (bit(a.begin_mask, i), s > 0) {
                (true, true) => 0,
                (true, false) => -1,
                (false, _) => a.begin[i],
            };
            let e = if b == -1 {
                i64::MAX
            } else {
                b.checked_add(1).ok_or("StridedSlice begin overflows")?
            };
            starts.push(b);
            ends.push(e);
            steps.push(1);
            shrunk.push(i as i64);
            continue;
        }
        let e = if bit(a.end_mask, i) {
            if s > 0 {
                i64::MAX
            } else {
                i64::MIN
            }
        } else if a.offset {
            a.begin[i]
                .checked_add(a.end[i])
                .ok_or("StridedSlice end overflows")?
        } else {
            a.end[i]
        };
        starts.push(b);
        ends.push(e);
        steps.push(s);
    }
    Ok((starts, ends, steps, shrunk))
}
