//! TFLite model -> IR graph.
//!
//! Builtin ops: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, DIV,
//! MAXIMUM, MINIMUM, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, RESHAPE, SQUEEZE,
//! EXPAND_DIMS, SOFTMAX, LOG_SOFTMAX, PAD, PADV2, CONCATENATION, TRANSPOSE, GATHER,
//! QUANTIZE, DEQUANTIZE, LOGISTIC, TANH, RELU, RELU6, RELU_N1_TO_1, LEAKY_RELU,
//! HARD_SWISH, RESIZE_NEAREST_NEIGHBOR, RESIZE_BILINEAR, TILE, FILL, CAST; the shape
//! arithmetic the converter writes for a dynamic batch (SHAPE, STRIDED_SLICE, PACK,
//! and RESHAPE with a target computed at run time, evaluated by the IR's shape rules
//! once the batch is bound); SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND only as the
//! converter's dilated convolution, folded into the conv (see `dilated`). Fused
//! activations NONE, RELU, RELU_N1_TO_1, RELU6. Constant operands that the IR keeps
//! as attributes (paddings, perm, axes, sizes, slice bounds, multiples) are read from
//! the file and do not become values; RESHAPE's target becomes an i64 constant input
//! (or stays the tensor that computes it). Control-flow ops (IF, WHILE, CALL...) and
//! custom ops are rejected with a clear error: only subgraph 0 runs.
//!
//! Tensors become values lazily, when an operator or the subgraph's input/output list
//! first references them, so unused tensors cost nothing and every decoded constant
//! is used by the graph (the parameter count is the model's). Operators map one to
//! one onto IR nodes named `<TFLITE_OP>_<index>` (e.g. `CONV_2D_3`); the importer adds
//! only these helper nodes, named after the tensor they serve:
//! - `Dequantize` in front of int8 constants that a float operator consumes directly
//!   (hybrid models such as `kws_ref_model_float32.tflite`), so float kernels see f32;
//! - `Transpose` for depthwise weights that are not constants (constant ones are
//!   transposed in place to the IR's `[C*mult, kh, kw, 1]` layout);
//! - `Shape` in front of a `Cast` to int32 for SHAPE (the IR's Shape yields i64);
//! - `Unsqueeze` per input of PACK, whose node is then a `Concat`.

mod dilated;
mod while_loop;

use crate::error::{invalid, unsupported, TfliteError};
use crate::generated::tflite as fb;
use crate::tensor::{self, Budget, MAX_RANK};
use edgeopt_ir::{
    Activation, AspectRatioPolicy, AutoPad, BinaryKind, ConvAttrs, CoordTransform, DType, Dim,
    Graph, Hybrid, Layout, NearestMode, Node, Op, PadMode, PoolAttrs, QuantParams, ReduceKind,
    ResizeAttrs, ResizeMode, Source, StridedSliceAttrs, Tensor, TensorData, UnaryKind, Value,
    ValueId,
};
use planus::ReadAsRoot;
use std::collections::{HashMap, HashSet};
use std::path::Path;

type Result<T, E = TfliteError> = std::result::Result<T, E>;
type Vector<'a, T> = planus::Vector<'a, T>;

/// Imports subgraph 0 of a TFLite model.
pub fn import(bytes: &[u8]) -> Result<Graph> {
    let model = read_model(bytes)?;
    let imp = Importer::new(bytes, model)?;
    imp.run()
}

/// Reads and imports a `.tflite` file.
pub fn import_file(path: impl AsRef<Path>) -> Result<Graph> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| TfliteError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut g = import(&bytes)?;
    if g.name.is_empty() || g.name == "main" {
        if let Some(stem) = path.file_stem() {
            g.name = stem.to_string_lossy().into_owned();
        }
    }
    Ok(g)
}

/// The TFLite names of subgraph 0's operators in execution order (e.g. `CONV_2D`,
/// custom ops as `CUSTOM(name)`), read without importing: for `inspect` and tests.
pub fn operator_names(bytes: &[u8]) -> Result<Vec<String>> {
    let model = read_model(bytes)?;
    let sg = subgraph0(&model)?;
    let codes = model.operator_codes()?;
    let mut names = Vec::new();
    if let Some(ops) = sg.operators()? {
        for (k, op) in ops.iter().enumerate() {
            let op = op?;
            let (b, custom) =
                opcode(codes, &op).map_err(|e| e.context(&format!("operator #{k}")))?;
            names.push(match custom {
                Some(c) => format!("CUSTOM({c})"),
                None => op_name(b),
            });
        }
    }
    Ok(names)
}

/// Decodes the whole flatbuffer into the owned schema types (`schema::Model`), e.g.
/// to edit a model and write it back with [`crate::finish_model`].
pub fn decode_model(bytes: &[u8]) -> Result<crate::schema::Model> {
    let model = read_model(bytes)?;
    Ok(crate::schema::Model::try_from(model)?)
}

fn read_model(bytes: &[u8]) -> Result<fb::ModelRef<'_>> {
    if bytes.len() < 8 {
        return Err(invalid(format!(
            "{} bytes is too short for a TFLite model",
            bytes.len()
        )));
    }
    if &bytes[4..8] != b"TFL3" {
        return Err(invalid(format!(
            "file identifier is {:?}, expected \"TFL3\" (not a TFLite model?)",
            String::from_utf8_lossy(&bytes[4..8])
        )));
    }
    let model = fb::ModelRef::read_as_root(bytes)?;
    let version = model.version()?;
    if version != crate::SCHEMA_VERSION {
        return Err(unsupported(format!(
            "schema version {version} (this importer reads version {})",
            crate::SCHEMA_VERSION
        )));
    }
    Ok(model)
}

fn subgraph0<'a>(model: &fb::ModelRef<'a>) -> Result<fb::SubGraphRef<'a>> {
    let sgs = model
        .subgraphs()?
        .ok_or_else(|| invalid("model has no subgraphs"))?;
    Ok(sgs
        .get(0)
        .ok_or_else(|| invalid("model has no subgraphs"))??)
}

/// Resolves an operator's builtin code the way TFLite does: the larger of the
/// deprecated byte-sized code and the extended `builtin_code` field.
fn opcode<'a>(
    codes: Option<Vector<'a, planus::Result<fb::OperatorCodeRef<'a>>>>,
    op: &fb::OperatorRef<'a>,
) -> Result<(fb::BuiltinOperator, Option<&'a str>)> {
    let idx = op.opcode_index()?;
    let codes = codes.ok_or_else(|| invalid("model has no operator codes"))?;
    let code = codes.get(idx as usize).ok_or_else(|| {
        invalid(format!(
            "opcode index {idx} out of range ({} operator codes)",
            codes.len()
        ))
    })??;
    let deprecated = code.deprecated_builtin_code()? as i32;
    let extended = match code.builtin_code() {
        Ok(b) => b as i32,
        Err(e) => return Err(unsupported(format!("operator code: {e}"))),
    };
    let v = deprecated.max(extended);
    let b = fb::BuiltinOperator::try_from(v)
        .map_err(|_| unsupported(format!("unknown builtin operator code {v}")))?;
    let custom = if b == fb::BuiltinOperator::Custom {
        Some(code.custom_code()?.unwrap_or(""))
    } else {
        None
    };
    Ok((b, custom))
}

/// TFLite's name of a builtin operator (`CONV_2D`). Exact for the ops this importer
/// maps; the rest are derived from the generated enum's names for messages.
fn op_name(b: fb::BuiltinOperator) -> String {
    use fb::BuiltinOperator as B;
    let s = match b {
        B::Conv2d => "CONV_2D",
        B::DepthwiseConv2d => "DEPTHWISE_CONV_2D",
        B::FullyConnected => "FULLY_CONNECTED",
        B::Add => "ADD",
        B::Sub => "SUB",
        B::Mul => "MUL",
        B::AveragePool2d => "AVERAGE_POOL_2D",
        B::MaxPool2d => "MAX_POOL_2D",
        B::Mean => "MEAN",
        B::Reshape => "RESHAPE",
        B::Softmax => "SOFTMAX",
        B::LogSoftmax => "LOG_SOFTMAX",
        B::Pad => "PAD",
        B::Padv2 => "PADV2",
        B::Concatenation => "CONCATENATION",
        B::Transpose => "TRANSPOSE",
        B::Quantize => "QUANTIZE",
        B::Dequantize => "DEQUANTIZE",
        B::Logistic => "LOGISTIC",
        B::Tanh => "TANH",
        B::Relu => "RELU",
        B::Relu6 => "RELU6",
        B::ReluN1To1 => "RELU_N1_TO_1",
        B::HardSwish => "HARD_SWISH",
        B::Gelu => "GELU",
        B::Sqrt => "SQRT",
        B::BatchMatmul => "BATCH_MATMUL",
        B::ResizeNearestNeighbor => "RESIZE_NEAREST_NEIGHBOR",
        B::ResizeBilinear => "RESIZE_BILINEAR",
        B::Div => "DIV",
        B::Maximum => "MAXIMUM",
        B::Minimum => "MINIMUM",
        B::Squeeze => "SQUEEZE",
        B::ExpandDims => "EXPAND_DIMS",
        B::LeakyRelu => "LEAKY_RELU",
        B::Gather => "GATHER",
        B::Shape => "SHAPE",
        B::StridedSlice => "STRIDED_SLICE",
        B::Pack => "PACK",
        B::Unpack => "UNPACK",
        B::Tile => "TILE",
        B::Fill => "FILL",
        B::Cast => "CAST",
        B::Split => "SPLIT",
        B::SplitV => "SPLIT_V",
        B::SpaceToBatchNd => "SPACE_TO_BATCH_ND",
        B::BatchToSpaceNd => "BATCH_TO_SPACE_ND",
        B::Custom => "CUSTOM",
        B::If => "IF",
        B::While => "WHILE",
        B::Call => "CALL",
        B::CallOnce => "CALL_ONCE",
        other => {
            // CamelCase -> UPPER_SNAKE (approximate for names with digits).
            let dbg = format!("{other:?}");
            let mut out = String::with_capacity(dbg.len() + 4);
            for (i, c) in dbg.chars().enumerate() {
                if i > 0 && c.is_ascii_uppercase() {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            return out;
        }
    };
    s.to_string()
}

/// Ops that run other subgraphs; edgeopt executes subgraph 0 only.
fn is_control_flow(b: fb::BuiltinOperator) -> bool {
    use fb::BuiltinOperator as B;
    matches!(
        b,
        B::If
            | B::While
            | B::Call
            | B::CallOnce
            | B::Delegate
            | B::StablehloWhile
            | B::StablehloReduce
            | B::StablehloReduceWindow
            | B::StablehloSort
            | B::StablehloScatter
            | B::StablehloComposite
    )
}

/// How a TFLite tensor is presented to the IR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum View {
    /// As stored.
    Plain,
    /// Depthwise weights `[1, kh, kw, C*mult]` as `[C*mult, kh, kw, 1]`.
    Depthwise,
}

/// What the file says about one tensor, checked and decoded.
struct TensorInfo {
    name: String,
    dtype: DType,
    /// `None` when the rank is unknown.
    shape: Option<Vec<Dim>>,
    quant: Option<QuantParams>,
    data: Option<Tensor>,
}

struct Importer<'a> {
    file: &'a [u8],
    version: u32,
    codes: Option<Vector<'a, planus::Result<fb::OperatorCodeRef<'a>>>>,
    buffers: Option<Vector<'a, planus::Result<fb::BufferRef<'a>>>>,
    tensors: Option<Vector<'a, planus::Result<fb::TensorRef<'a>>>>,
    sg: fb::SubGraphRef<'a>,
    graph: Graph,
    /// (TFLite tensor index, view) -> value.
    values: HashMap<(usize, View), ValueId>,
    /// Quantized constant -> its dequantized f32 value (hybrid models).
    dequantized: HashMap<ValueId, ValueId>,
    names: HashSet<String>,
    /// Next numeric suffix to try per base name, so de-duplicating n equal names
    /// stays linear.
    suffix: HashMap<String, usize>,
    budget: Budget,
    /// Operators rewritten by a recognized pattern (dilated convolutions), by index.
    fold: HashMap<usize, dilated::Role>,
    /// Declared shapes that a rewrite changes (TFLite tensor index -> shape).
    shape_override: HashMap<usize, Vec<Dim>>,
    /// Every subgraph (WHILE loops read their condition and body).
    subgraphs: Option<Vector<'a, planus::Result<fb::SubGraphRef<'a>>>>,
    /// WHILE loops being unrolled around the operator being read.
    loop_depth: usize,
}

impl<'a> Importer<'a> {
    fn new(file: &'a [u8], model: fb::ModelRef<'a>) -> Result<Importer<'a>> {
        let sg = subgraph0(&model)?;
        let name = sg.name()?.unwrap_or("").to_string();
        let mut budget = Budget::for_file(file.len());
        budget.charge(name.len() as u64)?;
        Ok(Importer {
            file,
            version: model.version()?,
            codes: model.operator_codes()?,
            buffers: model.buffers()?,
            tensors: sg.tensors()?,
            sg,
            graph: Graph::new(if name.is_empty() { "main" } else { &name }),
            values: HashMap::new(),
            dequantized: HashMap::new(),
            names: HashSet::new(),
            suffix: HashMap::new(),
            budget,
            fold: HashMap::new(),
            shape_override: HashMap::new(),
            subgraphs: model.subgraphs()?,
            loop_depth: 0,
        })
    }

    fn run(mut self) -> Result<Graph> {
        let inputs = read_indices(self.sg.inputs()?, &mut self.budget)?;
        for &t in &inputs {
            let v = self
                .tensor_value(t, View::Plain)
                .map_err(|e| e.context("subgraph input"))?;
            if self.graph.values[v].is_const() {
                return Err(invalid(format!(
                    "subgraph input '{}' is a constant",
                    self.graph.values[v].name
                )));
            }
            self.graph.inputs.push(v);
        }
        self.find_dilated_convs()?;
        if let Some(ops) = self.sg.operators()? {
            for (k, op) in ops.iter().enumerate() {
                let op = op.map_err(|e| TfliteError::from(e).context(&format!("operator #{k}")))?;
                let (b, custom) =
                    opcode(self.codes, &op).map_err(|e| e.context(&format!("operator #{k}")))?;
                let ctx = format!("operator #{k} ({})", op_name(b));
                if let Some(c) = custom {
                    return Err(unsupported(format!("{ctx}: custom operator '{c}'")));
                }
                self.operator(k, b, &op).map_err(|e| e.context(&ctx))?;
            }
        }
        let outputs = read_indices(self.sg.outputs()?, &mut self.budget)?;
        for &t in &outputs {
            let v = self
                .tensor_value(t, View::Plain)
                .map_err(|e| e.context("subgraph output"))?;
            self.graph.outputs.push(v);
        }
        if self.graph.outputs.is_empty() {
            return Err(invalid("subgraph 0 has no outputs"));
        }
        self.graph.source = Source::Tflite {
            version: self.version,
        };
        self.graph.validate()?;
        let mut graph = self.graph;
        annotate(&mut graph)?;
        Ok(graph)
    }

    // ----- tensors -------------------------------------------------------------

    fn tensor_ref(&self, t: usize) -> Result<fb::TensorRef<'a>> {
        let tensors = self.tensors.ok_or_else(|| {
            invalid(format!(
                "tensor #{t} referenced but subgraph has no tensors"
            ))
        })?;
        Ok(tensors.get(t).ok_or_else(|| {
            invalid(format!(
                "tensor index {t} out of range ({} tensors)",
                tensors.len()
            ))
        })??)
    }

    /// The bytes of buffer `b`: inline `data`, or (schema 3c, models over 2 GB) the
    /// `size` bytes at `offset` from the start of the file.
    fn buffer_bytes(&self, b: u32) -> Result<&'a [u8]> {
        let Some(buffers) = self.buffers else {
            return if b == 0 {
                Ok(&[])
            } else {
                Err(invalid(format!(
                    "buffer index {b} but the model has no buffers"
                )))
            };
        };
        let buf = buffers.get(b as usize).ok_or_else(|| {
            invalid(format!(
                "buffer index {b} out of range ({} buffers)",
                buffers.len()
            ))
        })??;
        let data = buf.data()?.unwrap_or(&[]);
        let offset = buf.offset()?;
        // TFLite treats offsets 0 and 1 as "no external data".
        if offset > 1 {
            if !data.is_empty() {
                return Err(invalid(format!(
                    "buffer #{b} has both inline data and an external offset"
                )));
            }
            let size = buf.size()?;
            let end = offset
                .checked_add(size)
                .filter(|&e| e <= self.file.len() as u64);
            let Some(end) = end else {
                return Err(invalid(format!(
                    "buffer #{b} at offset {offset} size {size} lies outside the {}-byte file",
                    self.file.len()
                )));
            };
            return Ok(&self.file[offset as usize..end as usize]);
        }
        Ok(data)
    }

    fn read_tensor(&mut self, t: usize) -> Result<TensorInfo> {
        let tr = self.tensor_ref(t)?;
        let name = tr.name()?.unwrap_or("").to_string();
        let ctx = |e: TfliteError| e.context(&format!("tensor #{t} '{name}'"));
        self.read_tensor_fields(t, &tr, &name).map_err(ctx)
    }

    fn read_tensor_fields(
        &mut self,
        t: usize,
        tr: &fb::TensorRef<'a>,
        name: &str,
    ) -> Result<TensorInfo> {
        self.budget.charge(name.len() as u64 * 3 + 256)?;
        let dtype = tensor::dtype(tr.type_()?)?;
        if tr.sparsity()?.is_some() {
            return Err(unsupported("sparse tensors"));
        }
        if tr.is_variable()? {
            return Err(unsupported("variable (stateful) tensors"));
        }
        if tr.variant_tensors()?.is_some_and(|v| !v.is_empty()) {
            return Err(unsupported("variant tensors"));
        }
        let raw_shape = tr.shape()?;
        let has_rank = tr.has_rank()?;
        let raw = self.buffer_bytes(tr.buffer()?)?;
        let shape: Option<Vec<Dim>> = match raw_shape {
            Some(s) if !s.is_empty() => {
                if s.len() > MAX_RANK {
                    return Err(invalid(format!("rank {} exceeds {MAX_RANK}", s.len())));
                }
                let sig = tr.shape_signature()?;
                if let Some(sig) = sig {
                    if !sig.is_empty() && sig.len() != s.len() {
                        return Err(invalid(format!(
                            "shape has rank {} but shape_signature rank {}",
                            s.len(),
                            sig.len()
                        )));
                    }
                }
                let mut dims = Vec::with_capacity(s.len());
                for (i, d) in s.iter().enumerate() {
                    let dynamic = sig.and_then(|g| g.get(i)).is_some_and(|g| g == -1);
                    dims.push(match d {
                        _ if dynamic || d == -1 => {
                            // The batch (leading) dimension gets a name the executor binds.
                            Dim::Sym(if i == 0 {
                                "batch".into()
                            } else {
                                String::new()
                            })
                        }
                        d if d >= 0 => Dim::Fixed(d as usize),
                        d => return Err(invalid(format!("negative dimension {d}"))),
                    });
                }
                Some(dims)
            }
            // An empty shape is a scalar when the converter says so or the tensor holds
            // data; old converters left the rank of unknown-shape tensors empty too.
            _ if has_rank || !raw.is_empty() => Some(Vec::new()),
            _ => None,
        };
        let numel = match &shape {
            Some(s) => tensor::checked_elements(s)?,
            None => 1,
        };
        let quant = tensor::quant(
            tr.quantization()?,
            dtype,
            shape.as_deref(),
            &mut self.budget,
        )?;
        let data = if raw.is_empty() {
            None
        } else {
            let dims = shape.as_deref().unwrap_or(&[]);
            let fixed: Option<Vec<usize>> = dims.iter().map(Dim::fixed).collect();
            let Some(fixed) = fixed else {
                return Err(invalid("constant tensor with a dynamic dimension"));
            };
            let expected = tensor::packed_bytes(dtype, numel)?;
            if raw.len() as u64 != expected {
                return Err(invalid(format!(
                    "shape {} of {dtype} needs {expected} bytes, buffer #{} holds {}",
                    tensor::fmt_dims(dims),
                    tr.buffer()?,
                    raw.len()
                )));
            }
            self.budget.charge(numel * tensor::mem_bytes(dtype))?;
            let data = tensor::decode(dtype, numel as usize, raw)?;
            Some(Tensor::new(fixed, data)?)
        };
        let _ = t;
        Ok(TensorInfo {
            name: name.to_string(),
            dtype,
            shape,
            quant,
            data,
        })
    }

    /// A unique value name derived from `base` (TFLite names need not be unique).
    fn unique_name(&mut self, base: &str, fallback: impl FnOnce() -> String) -> String {
        let base = if base.is_empty() {
            fallback()
        } else {
            base.to_string()
        };
        if self.names.insert(base.clone()) {
            return base;
        }
        let mut k = self.suffix.get(&base).copied().unwrap_or(1);
        loop {
            let cand = format!("{base}_{k}");
            k += 1;
            if self.names.insert(cand.clone()) {
                self.suffix.insert(base, k);
                return cand;
            }
        }
    }

    fn push_value(&mut self, info: TensorInfo, t: usize) -> Result<ValueId> {
        let name = self.unique_name(&info.name, || format!("tensor_{t}"));
        self.budget
            .charge(std::mem::size_of::<Value>() as u64 + name.len() as u64 * 2 + 64)?;
        let id = self.graph.values.len();
        self.graph.values.push(Value {
            name,
            dtype: info.dtype,
            shape: info.shape,
            quant: info.quant,
            data: info.data,
        });
        Ok(id)
    }

    /// The value for TFLite tensor `t` in view `view`, created on first use.
    fn tensor_value(&mut self, t: i32, view: View) -> Result<ValueId> {
        let t = usize::try_from(t).map_err(|_| invalid(format!("tensor index {t}")))?;
        if let Some(&v) = self.values.get(&(t, view)) {
            return Ok(v);
        }
        let v = match view {
            View::Plain => {
                let mut info = self.read_tensor(t)?;
                if let Some(s) = self.shape_override.get(&t) {
                    info.shape = Some(s.clone());
                }
                self.push_value(info, t)?
            }
            View::Depthwise => self.depthwise_weights(t)?,
        };
        self.values.insert((t, view), v);
        Ok(v)
    }

    /// Depthwise weights `[1, kh, kw, C*mult]` in the IR layout `[C*mult, kh, kw, 1]`
    /// (axes permuted by [3, 1, 2, 0]; a per-channel quantization axis 3 becomes 0).
    fn depthwise_weights(&mut self, t: usize) -> Result<ValueId> {
        const PERM: [usize; 4] = [3, 1, 2, 0];
        let info = self.read_tensor(t)?;
        let shape = info
            .shape
            .as_ref()
            .filter(|s| s.len() == 4 && s[0] == Dim::Fixed(1))
            .ok_or_else(|| {
                invalid(format!(
                    "depthwise weights '{}' must have shape [1, kh, kw, C*mult], got {}",
                    info.name,
                    info.shape
                        .as_deref()
                        .map_or("unknown".into(), tensor::fmt_dims)
                ))
            })?
            .clone();
        let new_shape: Vec<Dim> = PERM.iter().map(|&p| shape[p].clone()).collect();
        let quant = info.quant.as_ref().map(|q| QuantParams {
            scale: q.scale.clone(),
            zero_point: q.zero_point.clone(),
            axis: q.axis.and_then(|a| PERM.iter().position(|&p| p == a)),
            block_size: q.block_size,
        });
        if let Some(data) = &info.data {
            self.budget
                .charge(data.len() as u64 * tensor::mem_bytes(info.dtype))?;
            let permuted = tensor::permute(&data.data, &data.shape, &PERM);
            let fixed: Vec<usize> = PERM.iter().map(|&p| data.shape[p]).collect();
            let t_new = Tensor::new(fixed, permuted)?;
            let info = TensorInfo {
                name: info.name,
                dtype: info.dtype,
                shape: Some(new_shape),
                quant,
                data: Some(t_new),
            };
            return self.push_value(info, t);
        }
        // Weights computed at run time: transpose them with a node.
        let src = self.tensor_value(t as i32, View::Plain)?;
        let base = format!("{}/ohwi", self.graph.values[src].name);
        let out = self.helper_value(&base, info.dtype, Some(new_shape), quant)?;
        let name = self.graph.values[out].name.clone();
        self.push_node(
            name,
            Op::Transpose {
                perm: PERM.to_vec(),
            },
            vec![Some(src)],
            out,
        )?;
        Ok(out)
    }

    /// For a float operator, a quantized integer constant input is dequantized by an
    /// inserted `Dequantize` node (hybrid models keep int8 weights with float
    /// activations); anything else is returned unchanged.
    fn float_operand(&mut self, v: ValueId, float_op: bool) -> Result<ValueId> {
        let val = &self.graph.values[v];
        if !float_op || !val.is_const() || !val.dtype.is_integer() || val.quant.is_none() {
            return Ok(v);
        }
        if let Some(&d) = self.dequantized.get(&v) {
            return Ok(d);
        }
        let shape = val.shape.clone();
        let base = format!("{}/dequantized", val.name);
        // The f32 copy exists at run time only; the helper charges the metadata.
        let out = self.helper_value(&base, DType::F32, shape, None)?;
        let name = self.graph.values[out].name.clone();
        self.push_node(name, Op::Dequantize, vec![Some(v)], out)?;
        self.dequantized.insert(v, out);
        Ok(out)
    }

    /// The weights' quantization when a float operator reads the int8 / int4 constant
    /// `raw` through the `Dequantize` that [`Importer::float_operand`] put in front of
    /// it (`w`): a TFLite hybrid operator, which LiteRT computes with its hybrid
    /// kernels (see [`Hybrid`]). Other dtypes (LiteRT reinterprets a uint8 hybrid
    /// weight as int8) stay float.
    fn hybrid_weights(&self, raw: ValueId, w: ValueId) -> Option<&QuantParams> {
        let v = &self.graph.values[raw];
        (w != raw && matches!(v.dtype, DType::I8 | DType::I4))
            .then_some(v.quant.as_ref())
            .flatten()
    }

    fn push_node(
        &mut self,
        name: String,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        out: ValueId,
    ) -> Result<()> {
        self.budget.charge(
            std::mem::size_of::<Node>() as u64 + name.len() as u64 + inputs.len() as u64 * 16 + 64,
        )?;
        self.graph.add_node(name, op, inputs, vec![out]);
        Ok(())
    }

    /// A helper value (not a TFLite tensor) named after `base`, for the nodes the
    /// importer adds itself; only its metadata is charged to the budget.
    fn helper_value(
        &mut self,
        base: &str,
        dtype: DType,
        shape: Option<Vec<Dim>>,
        quant: Option<QuantParams>,
    ) -> Result<ValueId> {
        let name = self.unique_name(base, String::new);
        self.budget
            .charge(std::mem::size_of::<Value>() as u64 + 2 * name.len() as u64 + 64)?;
        self.graph.values.push(Value {
            name,
            dtype,
            shape,
            quant,
            data: None,
        });
        Ok(self.graph.values.len() - 1)
    }

    /// Contents of a constant integer operand (shape, axes, paddings...).
    fn const_ints(info: &TensorInfo, what: &str) -> Result<Vec<i64>> {
        let Some(t) = &info.data else {
            return Err(unsupported(format!(
                "{what} '{}' is computed at run time; only constants are supported",
                info.name
            )));
        };
        match &t.data {
            TensorData::I32(d) => Ok(d.iter().map(|&x| x as i64).collect()),
            TensorData::I64(d) => Ok(d.clone()),
            _ => Err(invalid(format!(
                "{what} '{}' must be int32 or int64, got {}",
                info.name,
                t.dtype()
            ))),
        }
    }

    // ----- operators -----------------------------------------------------------

    fn operator(
        &mut self,
        k: usize,
        b: fb::BuiltinOperator,
        op: &fb::OperatorRef<'a>,
    ) -> Result<()> {
        use fb::BuiltinOperator as B;
        let ins = read_indices(op.inputs()?, &mut self.budget)?;
        let outs = read_indices(op.outputs()?, &mut self.budget)?;
        if b == B::While {
            return self.while_loop(k, op, &ins, &outs);
        }
        if is_control_flow(b) {
            return Err(unsupported(
                "control-flow operators other than WHILE with a constant trip count are \
                 not supported",
            ));
        }
        if matches!(b, B::Split | B::SplitV | B::Unpack) {
            return self.split(k, b, op, &ins, &outs);
        }
        if outs.len() != 1 {
            return Err(invalid(format!("{} outputs, expected 1", outs.len())));
        }
        let role = self.fold.get(&k).cloned();
        let mut out_tensor = outs[0];
        match role {
            Some(dilated::Role::Alias { from, to }) => {
                let v = self.tensor_value(to, View::Plain)?;
                self.values.insert((from, View::Plain), v);
                return Ok(());
            }
            Some(dilated::Role::Skip) => return Ok(()),
            Some(dilated::Role::Squeeze { axis, out }) => {
                let x = match ins.first() {
                    Some(&t) => self.tensor_value(t, View::Plain)?,
                    None => return Err(invalid("no inputs")),
                };
                let y = self.tensor_value(out, View::Plain)?;
                let op = Op::Squeeze { axes: vec![axis] };
                return self.push_node(format!("{}_{k}", op_name(b)), op, vec![Some(x)], y);
            }
            Some(dilated::Role::Conv { out: Some(t), .. }) => out_tensor = t,
            Some(dilated::Role::Conv { out: None, .. }) | None => {}
        }
        let opts = op.builtin_options()?;
        let y = self.tensor_value(out_tensor, View::Plain)?;
        if self.graph.values[y].is_const() {
            return Err(invalid(format!(
                "output '{}' is a constant tensor",
                self.graph.values[y].name
            )));
        }
        let float_op = self.graph.values[y].dtype.is_float();
        let mut cx = OpCx {
            imp: self,
            ins: &ins,
            float_op,
        };
        let (mut op_ir, inputs) = match b {
            B::SpaceToBatchNd | B::BatchToSpaceNd => {
                return Err(unsupported(
                    "SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND are supported only as the \
                     converter's dilated convolution (S2B -> [EXPAND_DIMS] -> CONV_2D or \
                     DEPTHWISE_CONV_2D, VALID, stride 1 -> [SQUEEZE/RESHAPE] -> B2S)",
                ))
            }
            B::Conv2d => cx.conv(opts, false)?,
            B::DepthwiseConv2d => cx.conv(opts, true)?,
            B::FullyConnected => cx.fully_connected(opts)?,
            B::Add | B::Sub | B::Mul => cx.binary(b, opts)?,
            B::AveragePool2d | B::MaxPool2d => cx.pool(b, opts)?,
            B::Mean => cx.mean(opts)?,
            B::Reshape => cx.reshape(opts, y)?,
            B::Softmax => {
                cx.arity(1, 1)?;
                let beta = match opts {
                    Some(fb::BuiltinOptionsRef::SoftmaxOptions(o)) => o.beta()?,
                    _ => return Err(invalid("missing SoftmaxOptions")),
                };
                if !beta.is_finite() {
                    return Err(invalid(format!("softmax beta {beta}")));
                }
                (Op::Softmax { axis: -1, beta }, vec![Some(cx.req(0)?)])
            }
            B::LogSoftmax => {
                cx.arity(1, 1)?;
                (Op::LogSoftmax { axis: -1 }, vec![Some(cx.req(0)?)])
            }
            B::Pad | B::Padv2 => cx.pad(b)?,
            B::Concatenation => cx.concat(opts)?,
            B::Transpose => cx.transpose()?,
            B::Quantize => {
                cx.arity(1, 1)?;
                (Op::Quantize, vec![Some(cx.req_raw(0)?)])
            }
            B::Dequantize => {
                cx.arity(1, 1)?;
                (Op::Dequantize, vec![Some(cx.req_raw(0)?)])
            }
            B::Logistic => cx.unary(UnaryKind::Sigmoid)?,
            B::Tanh => cx.unary(UnaryKind::Tanh)?,
            B::Relu => cx.unary(UnaryKind::Relu)?,
            B::Relu6 => cx.unary(UnaryKind::Relu6)?,
            B::HardSwish => cx.unary(UnaryKind::HardSwish)?,
            B::Sqrt => cx.unary(UnaryKind::Sqrt)?,
            B::Gelu => {
                if let Some(fb::BuiltinOptionsRef::GeluOptions(o)) = opts {
                    if o.approximate()? {
                        return Err(unsupported("GELU with approximate = true"));
                    }
                }
                cx.unary(UnaryKind::Gelu)?
            }
            B::BatchMatmul => {
                cx.arity(2, 2)?;
                if let Some(fb::BuiltinOptionsRef::BatchMatMulOptions(o)) = opts {
                    if o.adj_x()? || o.adj_y()? {
                        return Err(unsupported("BATCH_MATMUL with adj_x or adj_y"));
                    }
                }
                (Op::MatMul, vec![Some(cx.req(0)?), Some(cx.req(1)?)])
            }
            B::ResizeNearestNeighbor => cx.resize(opts, false)?,
            // Beyond the ops of the MLPerf Tiny models, a few common ones whose IR op
            // has the same semantics.
            B::ResizeBilinear => cx.resize(opts, true)?,
            B::Div | B::Maximum | B::Minimum => cx.binary(b, opts)?,
            B::ReluN1To1 => {
                cx.arity(1, 1)?;
                let op = Op::Clip {
                    min: Some(-1.0),
                    max: Some(1.0),
                };
                (op, vec![Some(cx.req(0)?)])
            }
            B::LeakyRelu => {
                cx.arity(1, 1)?;
                let alpha = match opts {
                    Some(fb::BuiltinOptionsRef::LeakyReluOptions(o)) => o.alpha()?,
                    _ => return Err(invalid("missing LeakyReluOptions")),
                };
                if !alpha.is_finite() {
                    return Err(invalid(format!("leaky relu alpha {alpha}")));
                }
                (Op::LeakyRelu { alpha }, vec![Some(cx.req(0)?)])
            }
            B::Squeeze => cx.squeeze(opts)?,
            B::ExpandDims => cx.expand_dims()?,
            B::Gather => cx.gather(opts)?,
            // Shape arithmetic that the converter writes for a dynamic batch.
            B::Shape => cx.shape(opts, y)?,
            B::StridedSlice => cx.strided_slice(opts)?,
            B::Pack => cx.pack(opts, y)?,
            B::Tile => cx.tile()?,
            B::BroadcastTo => cx.broadcast_to()?,
            B::Cast => {
                // TFLite CAST converts values (static_cast), ignoring quantization, as
                // the IR's Cast does; the target is the declared output dtype.
                cx.arity(1, 1)?;
                let to = cx.imp.graph.values[y].dtype;
                (Op::Cast { to }, vec![Some(cx.req_raw(0)?)])
            }
            B::Fill => {
                cx.arity(2, 2)?;
                (Op::Fill, vec![Some(cx.req_raw(0)?), Some(cx.req_raw(1)?)])
            }
            _ => return Err(unsupported("operator not supported by the importer")),
        };
        if let (
            Some(dilated::Role::Conv {
                dilations,
                pads,
                phase_offset,
                ..
            }),
            Op::Conv(a),
        ) = (&role, &mut op_ir)
        {
            a.dilations = dilations.to_vec();
            a.pads = pads.to_vec();
            a.auto_pad = AutoPad::NotSet;
            if let Some(h) = &mut a.hybrid {
                h.phases = *dilations;
                h.phase_offset = *phase_offset;
            }
        }
        self.push_node(format!("{}_{k}", op_name(b)), op_ir, inputs, y)
    }
}

impl<'a> Importer<'a> {
    /// SPLIT (axis, x; `num_splits` equal pieces), SPLIT_V (x, size_splits, axis; one
    /// size may be -1) and UNPACK (x; `num` pieces of width 1 along `axis`, each with
    /// that axis removed): one IR `Split` (data movement, every dtype; a quantized
    /// tensor keeps its parameters as TFLite requires), plus a Squeeze per output for
    /// UNPACK.
    fn split(
        &mut self,
        k: usize,
        b: fb::BuiltinOperator,
        op: &fb::OperatorRef<'a>,
        ins: &[i32],
        outs: &[i32],
    ) -> Result<()> {
        use fb::BuiltinOperator as B;
        if outs.is_empty() || outs.len() > MAX_SPLIT_OUTPUTS {
            return Err(invalid(format!("{} outputs", outs.len())));
        }
        let opts = op.builtin_options()?;
        let mut cx = OpCx {
            imp: self,
            ins,
            float_op: false,
        };
        let (x, axis, count) = match (b, opts) {
            (B::Split, Some(fb::BuiltinOptionsRef::SplitOptions(o))) => {
                cx.arity(2, 2)?;
                let axis = Importer::const_ints(&cx.attr_input(0, "axis")?, "axis")?;
                (cx.req_raw(1)?, axis, o.num_splits()?)
            }
            (B::SplitV, Some(fb::BuiltinOptionsRef::SplitVOptions(o))) => {
                cx.arity(3, 3)?;
                let axis = Importer::const_ints(&cx.attr_input(2, "axis")?, "axis")?;
                (cx.req_raw(0)?, axis, o.num_splits()?)
            }
            (B::Unpack, Some(fb::BuiltinOptionsRef::UnpackOptions(o))) => {
                cx.arity(1, 1)?;
                (cx.req_raw(0)?, vec![o.axis()? as i64], o.num()?)
            }
            _ => return Err(invalid("missing or wrong builtin options")),
        };
        if count < 1 || count as usize != outs.len() {
            return Err(invalid(format!(
                "{count} pieces declared, {} outputs",
                outs.len()
            )));
        }
        // Only the split axis must be fixed: other dimensions (a dynamic batch) are
        // carried over to the pieces as they are.
        let dims: Vec<Dim> = cx.imp.graph.values[x]
            .shape
            .clone()
            .ok_or_else(|| unsupported("splitting a tensor of unknown rank"))?;
        let [axis] = axis[..] else {
            return Err(invalid(format!(
                "axis has {} values, expected 1",
                axis.len()
            )));
        };
        check_axes(&[axis], Some(dims.len()))?;
        let a = if axis < 0 {
            axis + dims.len() as i64
        } else {
            axis
        } as usize;
        let dim = dims[a].fixed().ok_or_else(|| {
            unsupported(format!(
                "splitting axis {a}, whose size is only known at run time"
            ))
        })?;
        let n = outs.len();
        let split: Vec<usize> = match b {
            B::SplitV => {
                let sizes = Importer::const_ints(&cx.attr_input(1, "size_splits")?, "size_splits")?;
                if sizes.len() != n {
                    return Err(invalid(format!(
                        "{} size_splits for {n} outputs",
                        sizes.len()
                    )));
                }
                let known: i64 = sizes.iter().filter(|&&v| v >= 0).sum();
                let unknown = sizes.iter().filter(|&&v| v == -1).count();
                if sizes.iter().any(|&v| v < -1) || unknown > 1 || known > dim as i64 {
                    return Err(invalid(format!(
                        "size_splits {sizes:?} for dimension {dim}"
                    )));
                }
                sizes
                    .iter()
                    .map(|&v| {
                        if v == -1 {
                            dim - known as usize
                        } else {
                            v as usize
                        }
                    })
                    .collect()
            }
            _ => {
                if dim % n != 0 {
                    return Err(invalid(format!("dimension {dim} does not split into {n}")));
                }
                vec![dim / n; n]
            }
        };
        if split.iter().sum::<usize>() != dim {
            return Err(invalid(format!("pieces {split:?} do not add up to {dim}")));
        }
        let mut ys = Vec::with_capacity(n);
        for &t in outs {
            let y = self.tensor_value(t, View::Plain)?;
            if self.graph.values[y].is_const() {
                return Err(invalid("an output is a constant tensor"));
            }
            ys.push(y);
        }
        let name = format!("{}_{k}", op_name(b));
        let pieces = if b == B::Unpack {
            let mut pieces = Vec::with_capacity(n);
            for (i, &y) in ys.iter().enumerate() {
                let mut s = dims.clone();
                s[a] = Dim::Fixed(1);
                let (dt, q) = (
                    self.graph.values[x].dtype,
                    self.graph.values[x].quant.clone(),
                );
                let piece = self.helper_value(&format!("{name}_piece{i}"), dt, Some(s), q)?;
                pieces.push((piece, y));
            }
            pieces
        } else {
            ys.iter().map(|&y| (y, y)).collect()
        };
        let op = Op::Split {
            axis: a as i64,
            split,
        };
        self.budget.charge(64 * n as u64 + name.len() as u64)?;
        self.graph.add_node(
            name.clone(),
            op,
            vec![Some(x)],
            pieces.iter().map(|p| p.0).collect(),
        );
        if b == B::Unpack {
            for (i, (piece, y)) in pieces.into_iter().enumerate() {
                let squeeze = Op::Squeeze {
                    axes: vec![a as i64],
                };
                self.push_node(format!("{name}_squeeze{i}"), squeeze, vec![Some(piece)], y)?;
            }
        }
        Ok(())
    }
}

/// More pieces than any real SPLIT / UNPACK has (a recurrent layer unrolled over its
/// time steps writes one per step): a bound for hostile files.
const MAX_SPLIT_OUTPUTS: usize = 4096;

/// One operator's inputs while it is being converted.
struct OpCx<'i, 'a> {
    imp: &'i mut Importer<'a>,
    ins: &'i [i32],
    /// The operator computes in float (its output is float): quantized constant
    /// operands get dequantized (hybrid models).
    float_op: bool,
}

impl OpCx<'_, '_> {
    fn arity(&self, min: usize, max: usize) -> Result<()> {
        let n = self.ins.len();
        if n < min || n > max {
            return Err(invalid(if min == max {
                format!("{n} inputs, expected {min}")
            } else {
                format!("{n} inputs, expected {min} to {max}")
            }));
        }
        Ok(())
    }

    fn index(&self, i: usize) -> Result<Option<i32>> {
        match self.ins.get(i).copied() {
            None | Some(-1) => Ok(None),
            Some(t) if t >= 0 => Ok(Some(t)),
            Some(t) => Err(invalid(format!("input {i} has tensor index {t}"))),
        }
    }

    /// Required input `i`, as stored (no hybrid dequantization).
    fn req_raw(&mut self, i: usize) -> Result<ValueId> {
        let t = self
            .index(i)?
            .ok_or_else(|| invalid(format!("required input {i} is missing")))?;
        self.imp.tensor_value(t, View::Plain)
    }

    /// Required input `i`, dequantized if the op is float and it is a quantized constant.
    fn req(&mut self, i: usize) -> Result<ValueId> {
        let v = self.req_raw(i)?;
        self.imp.float_operand(v, self.float_op)
    }

    /// A constant operand that becomes an attribute (axes, paddings, perm, sizes...):
    /// read from the file without adding a graph value, so the graph holds no unused
    /// constants.
    fn attr_input(&mut self, i: usize, what: &str) -> Result<TensorInfo> {
        let t = self
            .index(i)?
            .ok_or_else(|| invalid(format!("{what} input {i} is missing")))?;
        let t = usize::try_from(t).map_err(|_| invalid(format!("tensor index {t}")))?;
        let info = self.imp.read_tensor(t)?;
        if info.data.is_none() {
            return Err(unsupported(format!(
                "{what} '{}' is computed at run time; only constants are supported",
                info.name
            )));
        }
        Ok(info)
    }

    fn opt(&mut self, i: usize) -> Result<Option<ValueId>> {
        match self.index(i)? {
            None => Ok(None),
            Some(t) => {
                let v = self.imp.tensor_value(t, View::Plain)?;
                Ok(Some(self.imp.float_operand(v, self.float_op)?))
            }
        }
    }

    fn fixed_shape(&self, v: ValueId) -> Option<Vec<usize>> {
        self.imp.graph.values[v].fixed_shape()
    }

    /// Channels (last dimension) of an NHWC activation, if declared.
    fn channels(&self, v: ValueId) -> Option<usize> {
        self.imp.graph.values[v]
            .shape
            .as_ref()
            .and_then(|s| s.last())
            .and_then(Dim::fixed)
    }

    fn conv(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
        depthwise: bool,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(2, 3)?;
        let (padding, sw, sh, dw, dh, act, mult) = match (depthwise, opts) {
            (false, Some(fb::BuiltinOptionsRef::Conv2DOptions(o))) => (
                o.padding()?,
                o.stride_w()?,
                o.stride_h()?,
                o.dilation_w_factor()?,
                o.dilation_h_factor()?,
                o.fused_activation_function()?,
                0,
            ),
            (true, Some(fb::BuiltinOptionsRef::DepthwiseConv2DOptions(o))) => (
                o.padding()?,
                o.stride_w()?,
                o.stride_h()?,
                o.dilation_w_factor()?,
                o.dilation_h_factor()?,
                o.fused_activation_function()?,
                o.depth_multiplier()?,
            ),
            (false, _) => return Err(invalid("missing Conv2DOptions")),
            (true, _) => return Err(invalid("missing DepthwiseConv2DOptions")),
        };
        let strides = vec![positive(sh, "stride_h")?, positive(sw, "stride_w")?];
        let dilations = vec![positive(dh, "dilation_h")?, positive(dw, "dilation_w")?];
        let x = self.req(0)?;
        let wt = self
            .index(1)?
            .ok_or_else(|| invalid("weights input is missing"))?;
        let view = if depthwise {
            View::Depthwise
        } else {
            View::Plain
        };
        let w_raw = self.imp.tensor_value(wt, view)?;
        let w = self.imp.float_operand(w_raw, self.float_op)?;
        let b = self.opt(2)?;
        // LiteRT's choice of input quantization for a hybrid conv (conv.cc Prepare /
        // EvalImpl, depthwise_conv.cc): depthwise always asymmetric; CONV_2D
        // asymmetric with per-channel scales that are not all equal, symmetric with
        // one scale.
        let hybrid = self.imp.hybrid_weights(w_raw, w).map(|q| {
            let first = q.scale.first().copied();
            let per_channel = q.scale.iter().any(|&s| Some(s) != first);
            Hybrid::new(depthwise || per_channel)
        });
        let ws = self.imp.graph.values[w_raw]
            .shape
            .clone()
            .filter(|s| s.len() == 4)
            .ok_or_else(|| invalid("weights must be 4-D"))?;
        let (Some(m), Some(kh), Some(kw), Some(cg)) =
            (ws[0].fixed(), ws[1].fixed(), ws[2].fixed(), ws[3].fixed())
        else {
            return Err(invalid("weights must have a fixed shape"));
        };
        if m == 0 || kh == 0 || kw == 0 || cg == 0 {
            return Err(invalid(format!(
                "empty weights shape [{m}, {kh}, {kw}, {cg}]"
            )));
        }
        let group = if depthwise {
            // group = input channels; the multiplier is output / input channels.
            let c = match self.channels(x) {
                Some(c) => c,
                None if mult > 0 && m % mult as usize == 0 => m / mult as usize,
                None => return Err(invalid("input channels unknown")),
            };
            if c == 0 || m % c != 0 {
                return Err(invalid(format!(
                    "depthwise output channels {m} are not a multiple of input channels {c}"
                )));
            }
            c
        } else {
            match self.channels(x) {
                Some(c) if c % cg == 0 && c > 0 => c / cg,
                Some(c) => {
                    return Err(invalid(format!(
                        "input channels {c} are not a multiple of weight channels {cg}"
                    )))
                }
                None => 1,
            }
        };
        if m % group != 0 {
            return Err(invalid(format!(
                "output channels {m} are not a multiple of the group count {group}"
            )));
        }
        let attrs = ConvAttrs {
            layout: Layout::Nhwc,
            kernel_shape: vec![kh, kw],
            strides,
            dilations,
            pads: Vec::new(),
            auto_pad: auto_pad(padding),
            group,
            activation: activation(act)?,
            // Grouped hybrid convs run LiteRT's per-channel (asymmetric) kernel.
            hybrid: hybrid.map(|h| Hybrid::new(h.asymmetric || (group > 1 && !depthwise))),
        };
        Ok((Op::Conv(attrs), vec![Some(x), Some(w), b]))
    }

    fn fully_connected(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(2, 3)?;
        let (act, keep, asymmetric) = match opts {
            Some(fb::BuiltinOptionsRef::FullyConnectedOptions(o)) => {
                if o.weights_format()? != fb::FullyConnectedOptionsWeightsFormat::Default {
                    return Err(unsupported("shuffled FULLY_CONNECTED weights format"));
                }
                (
                    o.fused_activation_function()?,
                    o.keep_num_dims()?,
                    o.asymmetric_quantize_inputs()?,
                )
            }
            None => (fb::ActivationFunctionType::None, false, false),
            Some(_) => return Err(invalid("builtin options are not FullyConnectedOptions")),
        };
        let x = self.req(0)?;
        let w_raw = self.req_raw(1)?;
        let w = self.imp.float_operand(w_raw, self.float_op)?;
        let hybrid = self
            .imp
            .hybrid_weights(w_raw, w)
            .map(|_| Hybrid::new(asymmetric));
        let b = self.opt(2)?;
        if let Some(s) = &self.imp.graph.values[w].shape {
            if s.len() != 2 {
                return Err(invalid(format!(
                    "weights must be 2-D, got {}",
                    tensor::fmt_dims(s)
                )));
            }
        }
        Ok((
            Op::FullyConnected {
                activation: activation(act)?,
                keep_num_dims: keep,
                hybrid,
            },
            vec![Some(x), Some(w), b],
        ))
    }

    fn binary(
        &mut self,
        b: fb::BuiltinOperator,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        use fb::BuiltinOperator as B;
        self.arity(2, 2)?;
        let (kind, act) = match (b, opts) {
            (B::Add, Some(fb::BuiltinOptionsRef::AddOptions(o))) => {
                (BinaryKind::Add, o.fused_activation_function()?)
            }
            (B::Sub, Some(fb::BuiltinOptionsRef::SubOptions(o))) => {
                (BinaryKind::Sub, o.fused_activation_function()?)
            }
            (B::Mul, Some(fb::BuiltinOptionsRef::MulOptions(o))) => {
                (BinaryKind::Mul, o.fused_activation_function()?)
            }
            (B::Div, Some(fb::BuiltinOptionsRef::DivOptions(o))) => {
                (BinaryKind::Div, o.fused_activation_function()?)
            }
            (B::Maximum | B::Minimum, Some(fb::BuiltinOptionsRef::MaximumMinimumOptions(_))) => (
                if b == B::Maximum {
                    BinaryKind::Max
                } else {
                    BinaryKind::Min
                },
                fb::ActivationFunctionType::None,
            ),
            (_, Some(_)) => return Err(invalid("mismatched builtin options")),
            (b, None) => {
                let kind = match b {
                    B::Add => BinaryKind::Add,
                    B::Sub => BinaryKind::Sub,
                    B::Mul => BinaryKind::Mul,
                    B::Div => BinaryKind::Div,
                    B::Maximum => BinaryKind::Max,
                    _ => BinaryKind::Min,
                };
                (kind, fb::ActivationFunctionType::None)
            }
        };
        let a = self.req(0)?;
        let c = self.req(1)?;
        Ok((
            Op::Binary {
                kind,
                activation: activation(act)?,
            },
            vec![Some(a), Some(c)],
        ))
    }

    fn pool(
        &mut self,
        b: fb::BuiltinOperator,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(1, 1)?;
        let Some(fb::BuiltinOptionsRef::Pool2DOptions(o)) = opts else {
            return Err(invalid("missing Pool2DOptions"));
        };
        let attrs = PoolAttrs {
            layout: Layout::Nhwc,
            kernel_shape: vec![
                positive(o.filter_height()?, "filter_height")?,
                positive(o.filter_width()?, "filter_width")?,
            ],
            strides: vec![
                positive(o.stride_h()?, "stride_h")?,
                positive(o.stride_w()?, "stride_w")?,
            ],
            dilations: Vec::new(),
            pads: Vec::new(),
            auto_pad: auto_pad(o.padding()?),
            ceil_mode: false,
            // TFLite's average pool divides by the number of in-bounds elements.
            count_include_pad: false,
            activation: activation(o.fused_activation_function()?)?,
        };
        let x = self.req(0)?;
        let op = if b == fb::BuiltinOperator::MaxPool2d {
            Op::MaxPool(attrs)
        } else {
            Op::AveragePool(attrs)
        };
        Ok((op, vec![Some(x)]))
    }

    fn mean(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(2, 2)?;
        let keepdims = match opts {
            Some(fb::BuiltinOptionsRef::ReducerOptions(o)) => o.keep_dims()?,
            None => false,
            Some(_) => return Err(invalid("builtin options are not ReducerOptions")),
        };
        let x = self.req(0)?;
        let a = self.attr_input(1, "axes")?;
        let axes = Importer::const_ints(&a, "axes")?;
        check_axes(&axes, self.rank(x))?;
        Ok((
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: Some(axes),
                keepdims,
                noop_with_empty_axes: false,
            },
            vec![Some(x)],
        ))
    }

    fn rank(&self, v: ValueId) -> Option<usize> {
        self.imp.graph.values[v].shape.as_ref().map(Vec::len)
    }

    fn reshape(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
        y: ValueId,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(1, 2)?;
        let x = self.req(0)?;
        // TFLite takes the shape from the shape tensor when present, else from
        // ReshapeOptions.new_shape; we fall back to the declared output shape.
        let mut shape: Option<Vec<i64>> = None;
        let mut shape_name = None;
        if let Some(t) = self.index(1)? {
            let t_us = usize::try_from(t).map_err(|_| invalid(format!("tensor index {t}")))?;
            let buffer = self.imp.tensor_ref(t_us)?.buffer()?;
            if self.imp.buffer_bytes(buffer)?.is_empty() {
                // A target computed at run time (SHAPE -> STRIDED_SLICE -> PACK for a
                // dynamic batch): the IR's Reshape takes it as an input, and the shape
                // rules evaluate that arithmetic once the batch is bound.
                let v = self.imp.tensor_value(t, View::Plain)?;
                let val = &self.imp.graph.values[v];
                if !val.dtype.is_integer() || val.shape.as_ref().is_some_and(|s| s.len() != 1) {
                    return Err(invalid(format!(
                        "shape input '{}' must be a 1-D integer tensor",
                        val.name
                    )));
                }
                return Ok((Op::Reshape { allowzero: true }, vec![Some(x), Some(v)]));
            }
            let info = self.attr_input(1, "shape")?;
            shape = Some(Importer::const_ints(&info, "shape")?);
            shape_name = Some(info.name);
        }
        if shape.is_none() {
            if let Some(fb::BuiltinOptionsRef::ReshapeOptions(o)) = opts {
                if let Some(ns) = o.new_shape()? {
                    if ns.len() > MAX_RANK {
                        return Err(invalid(format!("new_shape has rank {}", ns.len())));
                    }
                    shape = Some(ns.iter().map(i64::from).collect());
                }
            }
        }
        let shape = match shape {
            Some(s) => s,
            None => {
                let declared = self.imp.graph.values[y].shape.as_ref().ok_or_else(|| {
                    invalid("no target shape (no shape tensor, new_shape or output shape)")
                })?;
                declared
                    .iter()
                    .map(|d| d.fixed().map_or(-1, |n| n as i64))
                    .collect()
            }
        };
        // Legacy converters wrote [0] for a scalar target.
        let shape = if shape == [0]
            && self
                .fixed_shape(x)
                .is_some_and(|s| s.iter().product::<usize>() == 1)
        {
            Vec::new()
        } else {
            shape
        };
        if shape.len() > MAX_RANK {
            return Err(invalid(format!("target shape has rank {}", shape.len())));
        }
        if shape.iter().any(|&d| d < -1) || shape.iter().filter(|&&d| d == -1).count() > 1 {
            return Err(invalid(format!("target shape {shape:?}")));
        }
        // The shape constant keeps the TFLite tensor's name; it is i64 as the IR wants.
        let name = match shape_name {
            Some(n) if !n.is_empty() => n,
            _ => format!("{}/shape", self.imp.graph.values[y].name),
        };
        let name = self.imp.unique_name(&name, String::new);
        self.imp.budget.charge(
            std::mem::size_of::<Value>() as u64 + 2 * name.len() as u64 + 8 * shape.len() as u64,
        )?;
        let n = shape.len();
        let s = self
            .imp
            .graph
            .add_const(name, Tensor::from_i64(vec![n], shape)?);
        // TFLite copies no dimension from the input: a 0 means an empty dimension.
        Ok((Op::Reshape { allowzero: true }, vec![Some(x), Some(s)]))
    }

    fn pad(&mut self, b: fb::BuiltinOperator) -> Result<(Op, Vec<Option<ValueId>>)> {
        if b == fb::BuiltinOperator::Padv2 {
            self.arity(2, 3)?;
        } else {
            self.arity(2, 2)?;
        }
        let x = self.req(0)?;
        let p = self.attr_input(1, "paddings")?;
        let pads = Importer::const_ints(&p, "paddings")?;
        let ps = p.data.as_ref().map(|t| t.shape.clone()).unwrap_or_default();
        let rank = ps.first().copied().unwrap_or(0);
        if ps.len() != 2 || ps[1] != 2 || pads.len() != 2 * rank || rank > MAX_RANK {
            return Err(invalid(format!("paddings must be [rank, 2], got {ps:?}")));
        }
        if let Some(r) = self.rank(x) {
            if r != rank {
                return Err(invalid(format!(
                    "paddings for rank {rank}, input has rank {r}"
                )));
            }
        }
        if pads.iter().any(|&v| v < 0) {
            return Err(invalid(format!("negative paddings {pads:?}")));
        }
        // TFLite [[b0, e0], [b1, e1], ...] -> ONNX [b0, b1, ..., e0, e1, ...].
        let mut onnx = Vec::with_capacity(2 * rank);
        onnx.extend((0..rank).map(|i| pads[2 * i]));
        onnx.extend((0..rank).map(|i| pads[2 * i + 1]));
        let mut value = 0.0f32;
        if self.index(2)?.is_some() {
            let cv = self.attr_input(2, "constant_values")?;
            let Some(ct) = &cv.data else {
                return Err(unsupported("PADV2 with a non-constant pad value"));
            };
            if ct.len() != 1 {
                return Err(invalid("pad value must have one element"));
            }
            let raw = ct.data.get_f64(0);
            // A quantized pad value is stored in its tensor's quantized form.
            value = match &cv.quant {
                Some(q) if cv.dtype.is_integer() => {
                    let (s, z) = q.channel(0);
                    (s as f64 * (raw - z as f64)) as f32
                }
                _ => raw as f32,
            };
        }
        Ok((
            Op::Pad {
                mode: PadMode::Constant,
                pads: onnx,
                value,
            },
            vec![Some(x)],
        ))
    }

    fn concat(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        if self.ins.is_empty() {
            return Err(invalid("no inputs"));
        }
        let Some(fb::BuiltinOptionsRef::ConcatenationOptions(o)) = opts else {
            return Err(invalid("missing ConcatenationOptions"));
        };
        let axis = o.axis()? as i64;
        let act = activation(o.fused_activation_function()?)?;
        let mut inputs = Vec::with_capacity(self.ins.len());
        for i in 0..self.ins.len() {
            inputs.push(Some(self.req(i)?));
        }
        if let Some(r) = self.rank(inputs[0].unwrap_or_default()) {
            check_axes(&[axis], Some(r))?;
        }
        Ok((
            Op::Concat {
                axis,
                activation: act,
            },
            inputs,
        ))
    }

    fn transpose(&mut self) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(2, 2)?;
        let x = self.req(0)?;
        let p = self.attr_input(1, "perm")?;
        let perm = Importer::const_ints(&p, "perm")?;
        let n = perm.len();
        let mut seen = vec![false; n.min(MAX_RANK + 1)];
        let valid = n <= MAX_RANK
            && perm.iter().all(|&a| {
                usize::try_from(a)
                    .ok()
                    .filter(|&a| a < n)
                    .is_some_and(|a| !std::mem::replace(&mut seen[a], true))
            });
        if !valid {
            return Err(invalid(format!("perm {perm:?} is not a permutation")));
        }
        if let Some(r) = self.rank(x) {
            if r != n {
                return Err(invalid(format!("perm has {n} axes, input has rank {r}")));
            }
        }
        let perm = perm.into_iter().map(|a| a as usize).collect();
        Ok((Op::Transpose { perm }, vec![Some(x)]))
    }

    fn unary(&mut self, kind: UnaryKind) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(1, 1)?;
        Ok((Op::Unary(kind), vec![Some(self.req(0)?)]))
    }

    /// RESIZE_NEAREST_NEIGHBOR, or RESIZE_BILINEAR when `bilinear`.
    fn resize(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
        bilinear: bool,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(2, 2)?;
        let (align, half) = match (bilinear, opts) {
            (false, Some(fb::BuiltinOptionsRef::ResizeNearestNeighborOptions(o))) => {
                (o.align_corners()?, o.half_pixel_centers()?)
            }
            (true, Some(fb::BuiltinOptionsRef::ResizeBilinearOptions(o))) => {
                (o.align_corners()?, o.half_pixel_centers()?)
            }
            (_, None) => (false, false),
            (_, Some(_)) => return Err(invalid("mismatched builtin options")),
        };
        if align && half {
            // TensorFlow rejects this combination; its meaning is not defined.
            return Err(unsupported(
                "align_corners together with half_pixel_centers",
            ));
        }
        let x = self.req(0)?;
        if let Some(r) = self.rank(x) {
            if r != 4 {
                return Err(invalid(format!("input must be 4-D NHWC, has rank {r}")));
            }
        }
        let s = self.attr_input(1, "size")?;
        let size = Importer::const_ints(&s, "size")?;
        if size.len() != 2 || size.iter().any(|&d| d <= 0 || d > i32::MAX as i64) {
            return Err(invalid(format!(
                "size {size:?} must be two positive integers"
            )));
        }
        // TFLite: align_corners rounds half away from zero (for these non-negative
        // coordinates, round-prefer-ceil); otherwise it floors, with or without the
        // half-pixel offset.
        // Bilinear: TF's half-pixel source coordinate (out + 0.5) / scale - 0.5 is
        // ONNX's half_pixel.
        let (coord, nearest_mode) = if align {
            (CoordTransform::AlignCorners, NearestMode::RoundPreferCeil)
        } else if half && bilinear {
            (CoordTransform::HalfPixel, NearestMode::Floor)
        } else if half {
            (CoordTransform::TfHalfPixelForNn, NearestMode::Floor)
        } else {
            (CoordTransform::Asymmetric, NearestMode::Floor)
        };
        let attrs = ResizeAttrs {
            mode: if bilinear {
                ResizeMode::Linear
            } else {
                ResizeMode::Nearest
            },
            coord,
            nearest_mode,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            keep_aspect_ratio_policy: AspectRatioPolicy::Stretch,
            axes: Some(vec![1, 2]),
            scales: None,
            sizes: Some(size.iter().map(|&d| d as usize).collect()),
            roi: None,
        };
        Ok((Op::Resize(attrs), vec![Some(x)]))
    }
}

impl OpCx<'_, '_> {
    fn squeeze(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(1, 1)?;
        let axes: Vec<i64> = match opts {
            Some(fb::BuiltinOptionsRef::SqueezeOptions(o)) => match o.squeeze_dims()? {
                Some(d) if d.len() > MAX_RANK => {
                    return Err(invalid(format!("{} squeeze_dims", d.len())))
                }
                Some(d) => d.iter().map(i64::from).collect(),
                None => Vec::new(),
            },
            None => Vec::new(),
            Some(_) => return Err(invalid("builtin options are not SqueezeOptions")),
        };
        let x = self.req(0)?;
        check_axes(&axes, self.rank(x))?;
        // Empty squeeze_dims removes every size-1 dimension, as the IR's empty axes.
        Ok((Op::Squeeze { axes }, vec![Some(x)]))
    }

    fn expand_dims(&mut self) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(2, 2)?;
        let x = self.req(0)?;
        let a = self.attr_input(1, "axis")?;
        let axis = Importer::const_ints(&a, "axis")?;
        if axis.len() != 1 {
            return Err(invalid(format!(
                "axis must have one element, has {}",
                axis.len()
            )));
        }
        // TFLite's negative axis counts from the end of the output (input rank + 1),
        // as ONNX Unsqueeze does.
        check_axes(&axis, self.rank(x).map(|r| r + 1))?;
        Ok((Op::Unsqueeze { axes: axis }, vec![Some(x)]))
    }

    fn gather(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(2, 2)?;
        let axis = match opts {
            Some(fb::BuiltinOptionsRef::GatherOptions(o)) => {
                if o.batch_dims()? != 0 {
                    return Err(unsupported("GATHER with batch_dims"));
                }
                o.axis()? as i64
            }
            None => 0,
            Some(_) => return Err(invalid("builtin options are not GatherOptions")),
        };
        let x = self.req(0)?;
        let idx = self.req_raw(1)?;
        check_axes(&[axis], self.rank(x))?;
        Ok((Op::Gather { axis }, vec![Some(x), Some(idx)]))
    }

    /// SHAPE: the IR's Shape yields i64; TFLite's `out_type` (int32 by default) is
    /// reached with a Cast, so the declared tensor keeps its dtype.
    fn shape(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
        y: ValueId,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(1, 1)?;
        if let Some(fb::BuiltinOptionsRef::ShapeOptions(o)) = opts {
            let want = tensor::dtype(o.out_type()?)?;
            if want != DType::I32 && want != DType::I64 {
                return Err(invalid(format!("SHAPE out_type {want}")));
            }
        }
        let x = self.req_raw(0)?;
        let out_dt = self.imp.graph.values[y].dtype;
        if out_dt != DType::I32 && out_dt != DType::I64 {
            return Err(invalid(format!(
                "SHAPE output is {out_dt}, expected int32 or int64"
            )));
        }
        if out_dt == DType::I64 {
            return Ok((Op::Shape, vec![Some(x)]));
        }
        let rank = self.rank(x);
        let base = format!("{}/i64", self.imp.graph.values[y].name);
        let s =
            self.imp
                .helper_value(&base, DType::I64, rank.map(|r| vec![Dim::Fixed(r)]), None)?;
        let name = self.imp.graph.values[s].name.clone();
        self.imp.push_node(name, Op::Shape, vec![Some(x)], s)?;
        Ok((Op::Cast { to: DType::I32 }, vec![Some(s)]))
    }

    fn strided_slice(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(4, 4)?;
        let Some(fb::BuiltinOptionsRef::StridedSliceOptions(o)) = opts else {
            return Err(invalid("missing StridedSliceOptions"));
        };
        let mask = |m: i32| m as u32;
        let x = self.req_raw(0)?;
        let begin = Importer::const_ints(&self.attr_input(1, "begin")?, "begin")?;
        let end = Importer::const_ints(&self.attr_input(2, "end")?, "end")?;
        let strides = Importer::const_ints(&self.attr_input(3, "strides")?, "strides")?;
        if begin.len() != end.len() || begin.len() != strides.len() || begin.len() > MAX_RANK {
            return Err(invalid(format!(
                "begin/end/strides have {}/{}/{} entries",
                begin.len(),
                end.len(),
                strides.len()
            )));
        }
        if strides.contains(&0) {
            return Err(invalid("stride 0"));
        }
        let attrs = StridedSliceAttrs {
            begin,
            end,
            strides,
            begin_mask: mask(o.begin_mask()?),
            end_mask: mask(o.end_mask()?),
            ellipsis_mask: mask(o.ellipsis_mask()?),
            new_axis_mask: mask(o.new_axis_mask()?),
            shrink_axis_mask: mask(o.shrink_axis_mask()?),
            offset: o.offset()?,
        };
        Ok((Op::StridedSlice(attrs), vec![Some(x)]))
    }

    /// PACK(axis) of N tensors = Concat(axis) of the N tensors each unsqueezed at
    /// `axis`: expressed with the IR's own ops rather than a new one.
    fn pack(
        &mut self,
        opts: Option<fb::BuiltinOptionsRef<'_>>,
        y: ValueId,
    ) -> Result<(Op, Vec<Option<ValueId>>)> {
        if self.ins.is_empty() {
            return Err(invalid("no inputs"));
        }
        let (count, axis) = match opts {
            Some(fb::BuiltinOptionsRef::PackOptions(o)) => (o.values_count()?, o.axis()? as i64),
            _ => return Err(invalid("missing PackOptions")),
        };
        if count as usize != self.ins.len() {
            return Err(invalid(format!(
                "values_count {count} but {} inputs",
                self.ins.len()
            )));
        }
        let mut inputs = Vec::with_capacity(self.ins.len());
        for i in 0..self.ins.len() {
            let x = self.req(i)?;
            check_axes(&[axis], self.rank(x).map(|r| r + 1))?;
            let v = &self.imp.graph.values[x];
            let shape = v.shape.as_ref().map(|s| {
                let r = s.len() as i64 + 1;
                let a = if axis < 0 { axis + r } else { axis } as usize;
                let mut s = s.clone();
                s.insert(a.min(s.len()), Dim::Fixed(1));
                s
            });
            let (dtype, quant) = (v.dtype, v.quant.clone());
            let base = format!("{}/packed{i}", self.imp.graph.values[y].name);
            let u = self.imp.helper_value(&base, dtype, shape, quant)?;
            let name = self.imp.graph.values[u].name.clone();
            self.imp
                .push_node(name, Op::Unsqueeze { axes: vec![axis] }, vec![Some(x)], u)?;
            inputs.push(Some(u));
        }
        Ok((
            Op::Concat {
                axis,
                activation: Activation::None,
            },
            inputs,
        ))
    }

    fn tile(&mut self) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(2, 2)?;
        let x = self.req_raw(0)?;
        let m = Importer::const_ints(&self.attr_input(1, "multiples")?, "multiples")?;
        if let Some(r) = self.rank(x) {
            if r != m.len() {
                return Err(invalid(format!("{} multiples for rank {r}", m.len())));
            }
        }
        let repeats = m
            .iter()
            .map(|&k| usize::try_from(k).map_err(|_| invalid(format!("multiples {m:?}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok((Op::Tile { repeats }, vec![Some(x)]))
    }

    /// BROADCAST_TO as the tile that repeats the size-1 dimensions: the input must have
    /// the target's rank and a declared shape (a dynamic dimension, the batch, only
    /// where the target is 1: it is kept); anything else is refused by name.
    fn broadcast_to(&mut self) -> Result<(Op, Vec<Option<ValueId>>)> {
        self.arity(2, 2)?;
        let x = self.req_raw(0)?;
        let to = Importer::const_ints(&self.attr_input(1, "shape")?, "shape")?;
        let dims = self.imp.graph.values[x].shape.clone().ok_or_else(|| {
            invalid("BROADCAST_TO of a tensor without a declared shape is not supported")
        })?;
        if dims.len() != to.len() {
            return Err(invalid(format!(
                "BROADCAST_TO from rank {} to rank {} is not supported (only equal ranks)",
                dims.len(),
                to.len()
            )));
        }
        let repeats = dims
            .iter()
            .zip(&to)
            .map(|(d, &t)| match (d.fixed(), usize::try_from(t)) {
                (None, Ok(1)) => Ok(1),
                (Some(d), Ok(t)) if t == d => Ok(1),
                (Some(1), Ok(t)) if t > 0 => Ok(t),
                _ => Err(invalid(format!("BROADCAST_TO {dims:?} to {to:?}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((Op::Tile { repeats }, vec![Some(x)]))
    }
}

fn check_axes(axes: &[i64], rank: Option<usize>) -> Result<()> {
    if axes.len() > MAX_RANK {
        return Err(invalid(format!("{} axes", axes.len())));
    }
    if let Some(r) = rank {
        let r = r as i64;
        if let Some(a) = axes.iter().find(|&&a| a < -r || a >= r.max(1)) {
            return Err(invalid(format!("axis {a} out of range for rank {r}")));
        }
    }
    Ok(())
}

fn read_indices(v: Option<Vector<'_, i32>>, budget: &mut Budget) -> Result<Vec<i32>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    budget.charge(v.len() as u64 * 4)?;
    Ok(v.iter().collect())
}

fn positive(v: i32, what: &str) -> Result<usize> {
    if v >= 1 {
        Ok(v as usize)
    } else {
        Err(invalid(format!("{what} is {v}, must be at least 1")))
    }
}

fn auto_pad(p: fb::Padding) -> AutoPad {
    match p {
        fb::Padding::Same => AutoPad::SameUpper,
        fb::Padding::Valid => AutoPad::Valid,
    }
}

fn activation(a: fb::ActivationFunctionType) -> Result<Activation> {
    Ok(match a {
        fb::ActivationFunctionType::None => Activation::None,
        fb::ActivationFunctionType::Relu => Activation::Relu,
        fb::ActivationFunctionType::ReluN1To1 => Activation::ReluN1To1,
        fb::ActivationFunctionType::Relu6 => Activation::Relu6,
        other => return Err(unsupported(format!("fused activation {other:?}"))),
    })
}

/// Runs the IR's shape inference over the imported graph and checks it against what
/// the file declares.
///
/// TFLite declares every tensor's dtype and shape, so inference adds shapes only
/// where the rank was unknown; its real use here is the cross-check: a declared
/// dtype or fixed dimension that contradicts the op rules means the file contradicts
/// itself (a corrupt or hostile model), and is an error rather than a surprise in
/// the executor. Dynamic (symbolic) dimensions are not compared: inference binds them
/// to 1. A rule that is not implemented (yet) is tolerated so that import does not
/// depend on every rule being present.
fn annotate(graph: &mut Graph) -> Result<()> {
    use edgeopt_ir::{shape, IrError};
    let facts =
        shape::bind_input_shapes(graph, 1).and_then(|shapes| shape::infer_graph(graph, &shapes));
    let facts = match facts {
        Ok(f) => f,
        Err(IrError::Node { msg, .. }) if msg.contains("not implemented") => return Ok(()),
        Err(IrError::Unsupported(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for (v, f) in graph.values.iter_mut().zip(facts) {
        let Some(f) = f else { continue };
        if v.data.is_some() {
            continue;
        }
        if v.dtype != f.dtype {
            return Err(invalid(format!(
                "tensor '{}' is declared {} but its producer yields {}",
                v.name, v.dtype, f.dtype
            )));
        }
        match &v.shape {
            None => v.shape = Some(f.shape.into_iter().map(Dim::Fixed).collect()),
            Some(declared) => {
                let agrees = declared.len() == f.shape.len()
                    && declared
                        .iter()
                        .zip(&f.shape)
                        .all(|(d, &n)| d.fixed().is_none_or(|k| k == n));
                if !agrees {
                    return Err(invalid(format!(
                        "tensor '{}' is declared {} but its producer yields {:?}",
                        v.name,
                        tensor::fmt_dims(declared),
                        f.shape
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::all_ops_model;
    use crate::{finish_model, schema};

    #[test]
    fn all_ops_model_imports() {
        let bytes = finish_model(&all_ops_model());
        let g = import(&bytes).unwrap();
        g.validate().unwrap();
        let names: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
        for op in [
            "Pad",
            "Conv",
            "MaxPool",
            "Resize",
            "Concat",
            "AveragePool",
            "Transpose",
            "ReduceMean",
            "FullyConnected",
            "Sigmoid",
            "Tanh",
            "HardSwish",
            "Relu",
            "Relu6",
            "Sub",
            "Mul",
            "Add",
            "Reshape",
            "Softmax",
            "LogSoftmax",
            "Quantize",
            "Dequantize",
        ] {
            assert!(names.contains(&op), "{op} missing from {names:?}");
        }
        assert_eq!(g.outputs.len(), 4);
        // Depthwise weights are stored [C*mult, kh, kw, 1] with group = C.
        let dw = g
            .nodes
            .iter()
            .find(|n| n.name.starts_with("DEPTHWISE_CONV_2D"))
            .unwrap();
        let Op::Conv(a) = &dw.op else { panic!() };
        assert_eq!(a.group, 8);
        let w = g.const_data(dw.input(1).unwrap()).unwrap();
        assert_eq!(w.shape, vec![16, 3, 3, 1]);
        // PADV2's value and PAD's paddings became attributes (ONNX order).
        let pads: Vec<&Op> = g
            .nodes
            .iter()
            .map(|n| &n.op)
            .filter(|o| matches!(o, Op::Pad { .. }))
            .collect();
        assert_eq!(
            pads[0],
            &Op::Pad {
                mode: PadMode::Constant,
                pads: vec![0, 1, 1, 0, 0, 1, 1, 0],
                value: 0.0
            }
        );
        assert_eq!(
            pads[1],
            &Op::Pad {
                mode: PadMode::Constant,
                pads: vec![0, 0, 2, 0, 0, 1, 0, 0],
                value: 0.5
            }
        );
        // No unused constants: perm/axes/size/paddings are attributes, not values.
        let consumers = g.consumers();
        for (i, v) in g.values.iter().enumerate() {
            assert!(
                !v.is_const() || !consumers[i].is_empty(),
                "unused constant {}",
                v.name
            );
        }
        assert!(matches!(g.source, Source::Tflite { version: 3 }));
    }

    #[test]
    fn extra_ops_model_imports() {
        let g = import(&finish_model(&crate::fixtures::extra_ops_model())).unwrap();
        g.validate().unwrap();
        let names: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(
            names,
            [
                "Resize",
                "Div",
                "Max",
                "Min",
                "LeakyRelu",
                "Clip",
                "Unsqueeze",
                "Squeeze",
                "Gather"
            ]
        );
        let Op::Resize(r) = &g.nodes[0].op else {
            panic!()
        };
        assert_eq!(
            (r.mode, r.coord),
            (ResizeMode::Linear, CoordTransform::HalfPixel)
        );
        assert_eq!(g.nodes[6].op, Op::Unsqueeze { axes: vec![0] });
        assert_eq!(g.nodes[8].op, Op::Gather { axis: 3 });
    }

    #[test]
    fn rejects_non_tflite_and_truncated_input() {
        assert!(import(b"").is_err());
        assert!(import(b"12345678").is_err());
        let bytes = finish_model(&all_ops_model());
        for cut in [8, 12, 64, bytes.len() / 2, bytes.len() - 1] {
            assert!(import(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn duplicate_tensor_names_are_made_unique() {
        let mut model = all_ops_model();
        for t in model.subgraphs.as_mut().unwrap()[0]
            .tensors
            .as_mut()
            .unwrap()
        {
            t.name = Some("same".into());
        }
        let g = import(&finish_model(&model)).unwrap();
        g.validate().unwrap();
        assert!(g.find_value("same").is_some() && g.find_value("same_1").is_some());
    }

    #[test]
    fn buffer_size_must_match_shape() {
        let mut model = all_ops_model();
        let bufs = model.buffers.as_mut().unwrap();
        let b = bufs
            .iter_mut()
            .find(|b| b.data.as_ref().is_some_and(|d| d.len() > 100))
            .unwrap();
        b.data.as_mut().unwrap().pop();
        let err = import(&finish_model(&model)).unwrap_err().to_string();
        assert!(err.contains("needs") && err.contains("bytes"), "{err}");
    }

    #[test]
    fn external_buffers_are_read_from_the_file() {
        // Schema 3c: a buffer's data may sit outside the flatbuffer at `offset`.
        let model = all_ops_model();
        let inline = import(&finish_model(&model)).unwrap();
        let mut model = model;
        let bufs = model.buffers.as_mut().unwrap();
        let (i, data) = bufs
            .iter()
            .enumerate()
            .find_map(|(i, b)| b.data.clone().filter(|d| d.len() > 100).map(|d| (i, d)))
            .unwrap();
        // Lay out: flatbuffer, then the data; the offset must be known before
        // serializing, so serialize twice (the size does not depend on the value).
        bufs[i] = schema::Buffer {
            data: None,
            offset: 2,
            size: data.len() as u64,
        };
        let probe = finish_model(&model).len() as u64;
        model.buffers.as_mut().unwrap()[i].offset = probe;
        let mut bytes = finish_model(&model);
        assert_eq!(bytes.len() as u64, probe);
        bytes.extend_from_slice(&data);
        let external = import(&bytes).unwrap();
        assert_eq!(external.values.len(), inline.values.len());
        for (a, b) in external.values.iter().zip(&inline.values) {
            assert_eq!(a.data, b.data, "{}", a.name);
        }
        // Pointing past the end of the file is an error, not a panic.
        bytes.truncate(bytes.len() - 1);
        assert!(import(&bytes).is_err());
    }

    #[test]
    fn control_flow_and_unknown_ops_are_rejected_clearly() {
        let mut model = all_ops_model();
        model.operator_codes.as_mut().unwrap()[0].builtin_code = schema::BuiltinOperator::If;
        model.operator_codes.as_mut().unwrap()[0].deprecated_builtin_code =
            schema::BuiltinOperator::If as i8;
        let err = import(&finish_model(&model)).unwrap_err().to_string();
        assert!(err.contains("control-flow") && err.contains("IF"), "{err}");
        model.operator_codes.as_mut().unwrap()[0].builtin_code = schema::BuiltinOperator::While;
        model.operator_codes.as_mut().unwrap()[0].deprecated_builtin_code =
            schema::BuiltinOperator::While as i8;
        let err = import(&finish_model(&model)).unwrap_err().to_string();
        assert!(
            err.contains("WHILE") && err.contains("WhileOptions"),
            "{err}"
        );
        model.operator_codes.as_mut().unwrap()[0].builtin_code = schema::BuiltinOperator::Svdf;
        model.operator_codes.as_mut().unwrap()[0].deprecated_builtin_code =
            schema::BuiltinOperator::Svdf as i8;
        let err = import(&finish_model(&model)).unwrap_err().to_string();
        assert!(
            err.contains("SVDF") && err.contains("not supported"),
            "{err}"
        );
    }

    #[test]
    fn hybrid_int8_weights_get_a_dequantize() {
        // Replace the FC weights by int8 with a per-tensor scale: a hybrid model.
        let mut model = all_ops_model();
        let sg = &mut model.subgraphs.as_mut().unwrap()[0];
        let t = sg
            .tensors
            .as_mut()
            .unwrap()
            .iter_mut()
            .find(|t| t.name.as_deref() == Some("fc/w"))
            .unwrap();
        t.type_ = schema::TensorType::Int8;
        t.quantization = Some(Box::new(schema::QuantizationParameters {
            scale: Some(vec![0.01]),
            zero_point: Some(vec![0]),
            ..Default::default()
        }));
        let b = t.buffer as usize;
        model.buffers.as_mut().unwrap()[b].data = Some((0..320).map(|i| (i % 200) as u8).collect());
        let g = import(&finish_model(&model)).unwrap();
        let fc = g
            .nodes
            .iter()
            .find(|n| n.name.starts_with("FULLY_CONNECTED"))
            .unwrap();
        let w = fc.input(1).unwrap();
        assert_eq!(g.values[w].dtype, DType::F32);
        assert_eq!(g.values[w].name, "fc/w/dequantized");
        let producer = g.producers()[w].unwrap();
        assert_eq!(g.nodes[producer].op, Op::Dequantize);
        assert_eq!(
            g.values[g.nodes[producer].input(0).unwrap()].quant,
            Some(QuantParams::per_tensor(0.01, 0))
        );
    }
}
