//! ONNX node -> IR node(s). Attributes that ONNX passes as constant inputs (Clip
//! bounds, Squeeze/Unsqueeze/Reduce axes, Pad pads, Resize scales/sizes) are folded into
//! the IR attributes; each converter follows the opset's version of the operator.

use crate::attrs::{NodeView, MAX_GEOMETRY};
use crate::error::Result;
use crate::import::Importer;
use crate::tensor::dtype_from_onnx;
use edgeopt_ir::*;

/// ONNX op types the importer handles (some only when they can be folded to constants).
const KNOWN: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Not",
    "HardSwish",
    "Erf",
    "Gelu",
    "Clip",
    "LeakyRelu",
    "HardSigmoid",
    "Softmax",
    "LogSoftmax",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "BatchNormalization",
    "LayerNormalization",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Concat",
    "Gather",
    "Split",
    "Slice",
    "LSTM",
    "GRU",
    "TopK",
    "Tile",
    "Pad",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "Resize",
    "Identity",
    "Dropout",
    "Constant",
    "Shape",
    "Size",
    "Cast",
    "CastLike",
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Where",
    "Expand", // folded when constant, else Fill / Where
    // folded only:
    "Mod",
    "ConstantOfShape",
    "Range",
];

pub fn is_known(op_type: &str) -> bool {
    KNOWN.contains(&op_type)
}

/// Input `k`, required.
fn req(v: &NodeView, ins: &[Option<ValueId>], k: usize) -> Result<ValueId> {
    ins.get(k)
        .copied()
        .flatten()
        .ok_or_else(|| v.err(format!("required input {k} is missing")))
}

fn opt(ins: &[Option<ValueId>], k: usize) -> Option<ValueId> {
    ins.get(k).copied().flatten()
}

/// Fails if the node has more present outputs than the IR op produces.
fn max_outputs(v: &NodeView, n: usize, what: &str) -> Result<()> {
    let extra = v.node.output.iter().skip(n).any(|s| !s.is_empty());
    if extra {
        return Err(v.err(format!("{what} is not supported")));
    }
    Ok(())
}

/// Adds the IR node for `v` with output 0 named as the ONNX output 0.
fn emit(
    im: &mut Importer,
    v: &NodeView,
    op: Op,
    inputs: Vec<Option<ValueId>>,
    dtype: DType,
) -> Result<()> {
    let name = v
        .node
        .output
        .first()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| v.err("output 0 is missing"))?;
    let out = im.new_value(name, dtype, None)?;
    im.g.add_node(v.name.clone(), op, inputs, vec![out]);
    Ok(())
}

/// Adds an intermediate IR node (for ops that need several) and returns its output.
fn emit_tmp(
    im: &mut Importer,
    v: &NodeView,
    op: Op,
    inputs: Vec<Option<ValueId>>,
    dtype: DType,
) -> Result<ValueId> {
    let base = v.node.output.first().cloned().unwrap_or_default();
    let out = im.fresh_value(&base, dtype)?;
    im.g.add_node(format!("{}/{}", v.name, op.name()), op, inputs, vec![out]);
    Ok(out)
}

/// A constant input folded into an attribute; an error if it is computed at run time.
fn const_input<'a>(
    im: &'a Importer,
    v: &NodeView,
    ins: &[Option<ValueId>],
    k: usize,
    what: &str,
) -> Result<Option<&'a Tensor>> {
    match opt(ins, k) {
        None => Ok(None),
        Some(id) => im.const_of(id).map(Some).ok_or_else(|| {
            v.err(format!(
                "input {k} ({what}) is computed at run time; only constant {what} are supported"
            ))
        }),
    }
}

/// Integer values of a constant input (axes, pads, sizes).
fn const_ints(
    im: &Importer,
    v: &NodeView,
    ins: &[Option<ValueId>],
    k: usize,
    what: &str,
) -> Result<Option<Vec<i64>>> {
    match const_input(im, v, ins, k, what)? {
        None => Ok(None),
        Some(t) if matches!(t.dtype(), DType::I64 | DType::I32) => {
            let x = t.to_i64_vec();
            if x.iter().any(|a| a.abs() > MAX_GEOMETRY) {
                return Err(v.err(format!("{what} {x:?} out of range")));
            }
            Ok(Some(x))
        }
        Some(t) => Err(v.err(format!("{what} must be int64, got {}", t.dtype()))),
    }
}

fn auto_pad(v: &NodeView) -> Result<AutoPad> {
    Ok(match v.s("auto_pad")?.as_deref() {
        None | Some("NOTSET") | Some("") => AutoPad::NotSet,
        Some("SAME_UPPER") => AutoPad::SameUpper,
        Some("SAME_LOWER") => AutoPad::SameLower,
        Some("VALID") => AutoPad::Valid,
        Some(s) => return Err(v.err(format!("unknown auto_pad '{s}'"))),
    })
}

fn check_pads(v: &NodeView, pads: &[usize]) -> Result<()> {
    if pads.len() & 1 == 1 {
        return Err(v.err(format!(
            "pads {pads:?} must hold a begin and an end per axis"
        )));
    }
    Ok(())
}

fn conv_attrs(v: &NodeView) -> Result<ConvAttrs> {
    let pads = v.usizes("pads")?;
    check_pads(v, &pads)?;
    let group = v.i("group", 1)?;
    if !(1..=MAX_GEOMETRY).contains(&group) {
        return Err(v.err(format!("invalid group {group}")));
    }
    Ok(ConvAttrs {
        layout: Layout::Nchw,
        kernel_shape: v.usizes("kernel_shape")?,
        strides: v.positive("strides")?,
        dilations: v.positive("dilations")?,
        pads,
        auto_pad: auto_pad(v)?,
        group: group as usize,
        activation: Activation::None,
        hybrid: None,
    })
}

fn pool_attrs(v: &NodeView, average: bool) -> Result<PoolAttrs> {
    let kernel_shape = v.positive("kernel_shape")?;
    if kernel_shape.is_empty() {
        return Err(v.err("kernel_shape is required"));
    }
    let pads = v.usizes("pads")?;
    check_pads(v, &pads)?;
    if v.i("storage_order", 0)? != 0 {
        return Err(v.err("storage_order=1 (column-major indices) is not supported"));
    }
    Ok(PoolAttrs {
        layout: Layout::Nchw,
        kernel_shape,
        strides: v.positive("strides")?,
        dilations: v.positive("dilations")?,
        pads,
        auto_pad: auto_pad(v)?,
        ceil_mode: v.i("ceil_mode", 0)? != 0,
        count_include_pad: average && v.i("count_include_pad", 0)? != 0,
        activation: Activation::None,
    })
}

/// Scalar value of a constant bound (Clip min/max, Pad value).
fn scalar(v: &NodeView, t: &Tensor, what: &str) -> Result<f64> {
    if t.len() != 1 {
        return Err(v.err(format!("{what} must be a scalar, got shape {:?}", t.shape)));
    }
    Ok(t.data.get_f64(0))
}

/// Converts one ONNX node. `ins` are its resolved inputs.
pub fn convert(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let opset = im.opset;
    let x = || req(v, ins, 0);
    let dt0 = |im: &Importer| -> Result<DType> { Ok(im.dtype(req(v, ins, 0)?)) };
    match v.op_type {
        "Conv" => {
            let op = Op::Conv(conv_attrs(v)?);
            emit(im, v, op, vec![Some(x()?), Some(req(v, ins, 1)?), opt(ins, 2)], dt0(im)?)
        }
        "ConvTranspose" => {
            let output_padding = v.usizes("output_padding")?;
            let output_shape = match v.ints("output_shape")? {
                None => None,
                Some(_) => Some(v.usizes("output_shape")?),
            };
            let op = Op::ConvTranspose(ConvTransposeAttrs {
                conv: conv_attrs(v)?,
                output_padding,
                output_shape,
            });
            emit(im, v, op, vec![Some(x()?), Some(req(v, ins, 1)?), opt(ins, 2)], dt0(im)?)
        }
        "Gemm" => {
            let op = Op::Gemm {
                alpha: v.f("alpha", 1.0)?,
                beta: v.f("beta", 1.0)?,
                trans_a: v.i("transA", 0)? != 0,
                trans_b: v.i("transB", 0)? != 0,
            };
            emit(im, v, op, vec![Some(x()?), Some(req(v, ins, 1)?), opt(ins, 2)], dt0(im)?)
        }
        "MatMul" => emit(im, v, Op::MatMul, vec![Some(x()?), Some(req(v, ins, 1)?)], dt0(im)?),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" => {
            let kind = match v.op_type {
                "Add" => BinaryKind::Add,
                "Sub" => BinaryKind::Sub,
                "Mul" => BinaryKind::Mul,
                "Div" => BinaryKind::Div,
                _ => BinaryKind::Pow,
            };
            let op = Op::Binary { kind, activation: Activation::None };
            emit(im, v, op, vec![Some(x()?), Some(req(v, ins, 1)?)], dt0(im)?)
        }
        "Max" | "Min" | "Sum" => {
            let kind = match v.op_type {
                "Max" => BinaryKind::Max,
                "Min" => BinaryKind::Min,
                _ => BinaryKind::Add,
            };
            variadic(im, v, ins, kind)
        }
        "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Neg" | "Abs" | "Sqrt" | "Reciprocal"
        | "Floor" | "Ceil" | "Not" | "HardSwish" | "Erf" | "Gelu" => {
            if v.op_type == "Gelu" && v.s("approximate")?.is_some_and(|a| a != "none") {
                return Err(v.err("Gelu with approximate = 'tanh' is not supported"));
            }
            let k = match v.op_type {
                "Relu" => UnaryKind::Relu,
                "Sigmoid" => UnaryKind::Sigmoid,
                "Tanh" => UnaryKind::Tanh,
                "Exp" => UnaryKind::Exp,
                "Log" => UnaryKind::Log,
                "Neg" => UnaryKind::Neg,
                "Abs" => UnaryKind::Abs,
                "Sqrt" => UnaryKind::Sqrt,
                "Reciprocal" => UnaryKind::Reciprocal,
                "Floor" => UnaryKind::Floor,
                "Ceil" => UnaryKind::Ceil,
                "Not" => UnaryKind::Not,
                "Erf" => UnaryKind::Erf,
                "Gelu" => UnaryKind::Gelu,
                _ => UnaryKind::HardSwish,
            };
            emit(im, v, Op::Unary(k), vec![Some(x()?)], dt0(im)?)
        }
        "Clip" => clip(im, v, ins),
        "LeakyRelu" => {
            let op = Op::LeakyRelu { alpha: v.f("alpha", 0.01)? };
            emit(im, v, op, vec![Some(x()?)], dt0(im)?)
        }
        "HardSigmoid" => {
            let op = Op::HardSigmoid { alpha: v.f("alpha", 0.2)?, beta: v.f("beta", 0.5)? };
            emit(im, v, op, vec![Some(x()?)], dt0(im)?)
        }
        "Softmax" | "LogSoftmax" => softmax(im, v, ins),
        "MaxPool" => {
            max_outputs(v, 1, "the Indices output of MaxPool")?;
            emit(im, v, Op::MaxPool(pool_attrs(v, false)?), vec![Some(x()?)], dt0(im)?)
        }
        "AveragePool" => emit(im, v, Op::AveragePool(pool_attrs(v, true)?), vec![Some(x()?)], dt0(im)?),
        "GlobalAveragePool" => emit(im, v, Op::GlobalAveragePool, vec![Some(x()?)], dt0(im)?),
        "BatchNormalization" => {
            if v.i("training_mode", 0)? != 0 {
                return Err(v.err("training_mode=1 is not supported (inference only)"));
            }
            max_outputs(v, 1, "the running mean/variance outputs (training mode)")?;
            let op = Op::BatchNorm { epsilon: v.f("epsilon", 1e-5)? };
            let mut inputs = vec![Some(x()?)];
            for k in 1..5 {
                inputs.push(Some(req(v, ins, k)?));
            }
            emit(im, v, op, inputs, dt0(im)?)
        }
        "LayerNormalization" => layer_norm(im, v, ins),
        "Flatten" => emit(im, v, Op::Flatten { axis: v.i("axis", 1)? }, vec![Some(x()?)], dt0(im)?),
        "Reshape" => {
            let shape = req(v, ins, 1)?;
            if im.dtype(shape) != DType::I64 {
                return Err(v.err("the shape input must be int64"));
            }
            let op = Op::Reshape { allowzero: v.i("allowzero", 0)? != 0 };
            emit(im, v, op, vec![Some(x()?), Some(shape)], dt0(im)?)
        }
        "Transpose" => {
            let perm = v.usizes("perm")?;
            emit(im, v, Op::Transpose { perm }, vec![Some(x()?)], dt0(im)?)
        }
        "Squeeze" | "Unsqueeze" => {
            let axes = if opset >= 13 {
                const_ints(im, v, ins, 1, "axes")?
            } else {
                v.axes("axes")?
            };
            let op = if v.op_type == "Squeeze" {
                Op::Squeeze { axes: axes.unwrap_or_default() }
            } else {
                Op::Unsqueeze { axes: axes.ok_or_else(|| v.err("axes are required"))? }
            };
            emit(im, v, op, vec![Some(x()?)], dt0(im)?)
        }
        "Concat" => {
            let axis = v.i_opt("axis")?.ok_or_else(|| v.err("axis is required"))?;
            if ins.is_empty() || ins.iter().any(|i| i.is_none()) {
                return Err(v.err("Concat needs at least one input and no empty ones"));
            }
            let op = Op::Concat { axis, activation: Activation::None };
            emit(im, v, op, ins.to_vec(), dt0(im)?)
        }
        "Gather" => {
            let op = Op::Gather { axis: v.i("axis", 0)? };
            emit(im, v, op, vec![Some(x()?), Some(req(v, ins, 1)?)], dt0(im)?)
        }
        "Split" => split(im, v, ins),
        "LSTM" | "GRU" => rnn(im, v, ins),
        "TopK" => top_k(im, v, ins),
        "Tile" => {
            // `repeats` folded from its constant input (one count per axis).
            let r = const_ints(im, v, ins, 1, "repeats")?
                .ok_or_else(|| v.err("repeats must be a constant"))?;
            let repeats = r
                .iter()
                .map(|&n| usize::try_from(n).map_err(|_| v.err(format!("repeats {r:?}"))))
                .collect::<Result<Vec<_>>>()?;
            emit(im, v, Op::Tile { repeats }, vec![Some(x()?)], dt0(im)?)
        }
        "Slice" => slice(im, v, ins),
        "Pad" => pad(im, v, ins),
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" => reduce(im, v, ins),
        "Resize" => resize(im, v, ins),
        "Identity" => emit(im, v, Op::Identity, vec![Some(x()?)], dt0(im)?),
        "Dropout" => {
            // Inference: the identity. The mask output has no IR equivalent.
            max_outputs(v, 1, "the mask output of Dropout")?;
            emit(im, v, Op::Identity, vec![Some(x()?)], dt0(im)?)
        }
        "Shape" => {
            let start = v.i("start", 0)?;
            let end = v.i_opt("end")?;
            if start == 0 && end.is_none() {
                return emit(im, v, Op::Shape, vec![Some(x()?)], DType::I64);
            }
            // Opset 15's start/end clamp like Slice's.
            let shape = emit_tmp(im, v, Op::Shape, vec![Some(x()?)], DType::I64)?;
            let op = Op::Slice {
                starts: vec![start],
                ends: vec![end.unwrap_or(i64::MAX)],
                axes: vec![0],
                steps: vec![1],
            };
            emit(im, v, op, vec![Some(shape)], DType::I64)
        }
        "Cast" => {
            let to = v.i_opt("to")?.ok_or_else(|| v.err("attribute 'to' is required"))?;
            let to = dtype_from_onnx(to.clamp(0, 1000) as i32).map_err(|m| v.err(m))?;
            emit(im, v, Op::Cast { to }, vec![Some(x()?)], to)
        }
        "CastLike" => {
            let to = im.dtype(req(v, ins, 1)?);
            emit(im, v, Op::Cast { to }, vec![Some(x()?)], to)
        }
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" => {
            let k = match v.op_type {
                "Equal" => CompareKind::Equal,
                "Less" => CompareKind::Less,
                "LessOrEqual" => CompareKind::LessOrEqual,
                "Greater" => CompareKind::Greater,
                _ => CompareKind::GreaterOrEqual,
            };
            emit(im, v, Op::Compare(k), vec![Some(x()?), Some(req(v, ins, 1)?)], DType::Bool)
        }
        "Where" => {
            let dt = im.dtype(req(v, ins, 1)?);
            emit(im, v, Op::Where, vec![Some(x()?), Some(req(v, ins, 1)?), Some(req(v, ins, 2)?)], dt)
        }
        "QuantizeLinear" => {
            let zp = opt(ins, 2);
            let output_dtype = match zp {
                Some(z) => im.dtype(z),
                None => match v.i("output_dtype", 0)? {
                    0 => DType::U8,
                    c => dtype_from_onnx(c.clamp(0, 1000) as i32).map_err(|m| v.err(m))?,
                },
            };
            if output_dtype.is_float() || output_dtype == DType::Bool {
                return Err(v.err(format!("quantizing to {output_dtype} is not supported")));
            }
            let op = Op::QuantizeLinear {
                axis: v.i("axis", 1)?,
                block_size: v.i("block_size", 0)?,
                saturate: v.i("saturate", 1)? != 0,
                output_dtype,
            };
            emit(im, v, op, vec![Some(x()?), Some(req(v, ins, 1)?), zp], output_dtype)
        }
        "DequantizeLinear" => {
            let scale = req(v, ins, 1)?;
            let dt = im.dtype(scale);
            let op = Op::DequantizeLinear { axis: v.i("axis", 1)?, block_size: v.i("block_size", 0)? };
            emit(im, v, op, vec![Some(x()?), Some(scale), opt(ins, 2)], dt)
        }
        "QLinearConv" | "QLinearMatMul" => {
            let mut inputs = Vec::new();
            for k in 0..8 {
                // Zero points (2, 5, 7) are optional in the spec; scales and data are not.
                inputs.push(if matches!(k, 2 | 5 | 7) { opt(ins, k) } else { Some(req(v, ins, k)?) });
            }
            let dt = opt(ins, 7).map(|z| im.dtype(z)).unwrap_or(DType::U8);
            let op = if v.op_type == "QLinearConv" {
                inputs.push(opt(ins, 8));
                Op::QLinearConv(conv_attrs(v)?)
            } else {
                Op::QLinearMatMul
            };
            emit(im, v, op, inputs, dt)
        }
        "ConvInteger" => {
            let op = Op::ConvInteger(conv_attrs(v)?);
            let inputs = vec![Some(x()?), Some(req(v, ins, 1)?), opt(ins, 2), opt(ins, 3)];
            emit(im, v, op, inputs, DType::I32)
        }
        "MatMulInteger" => {
            let inputs = vec![Some(x()?), Some(req(v, ins, 1)?), opt(ins, 2), opt(ins, 3)];
            emit(im, v, Op::MatMulInteger, inputs, DType::I32)
        }
        "Expand" => expand(im, v, ins),
        "Constant" | "Mod" | "ConstantOfShape" | "Range" | "Size" => Err(v.err(
            "this op is only supported when it can be folded to a constant (its inputs are computed at run time)",
        )),
        other => Err(v.err(format!("op {other} is not supported"))),
    }
}

/// Expand whose target shape is computed at run time (a constant one is folded at
/// import): the output is `x` broadcast with the shape (ONNX's bidirectional rule).
/// An `x` of one element whose rank does not exceed the target's length is a `Fill`
/// of the target (what edgeopt's writer and converters write for a batch-sized
/// state); any other `x` is `Where(Fill(shape, true), x, x)`, which broadcasts the
/// same way and picks `x` everywhere. The output is sized at run time by the shape
/// rules like every other tensor (the executor's per-tensor limit applies).
fn expand(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let x = req(v, ins, 0)?;
    let shape = req(v, ins, 1)?;
    if im.dtype(shape) != DType::I64 {
        return Err(v.err(format!(
            "the shape input must be int64, got {}",
            im.dtype(shape)
        )));
    }
    let len = match im.static_shape(shape).as_deref() {
        Some([Dim::Fixed(n)]) => *n,
        _ => return Err(v.err("the shape input must be a 1-D tensor of known length")),
    };
    let dt = im.dtype(x);
    let one_element = im
        .static_shape(x)
        .is_some_and(|s| s.len() <= len && s.iter().all(|d| *d == Dim::Fixed(1)));
    if one_element {
        return emit(im, v, Op::Fill, vec![Some(shape), Some(x)], dt);
    }
    let yes = Tensor::new(vec![], TensorData::Bool(vec![true]))?;
    let base = format!("{}/true", v.name);
    let yes = im.fresh_const(&base, yes)?;
    let mask = emit_tmp(im, v, Op::Fill, vec![Some(shape), Some(yes)], DType::Bool)?;
    emit(im, v, Op::Where, vec![Some(mask), Some(x), Some(x)], dt)
}

/// Max/Min/Sum over any number of inputs as a chain of binary ops.
fn variadic(
    im: &mut Importer,
    v: &NodeView,
    ins: &[Option<ValueId>],
    kind: BinaryKind,
) -> Result<()> {
    let present: Vec<ValueId> = ins.iter().flatten().copied().collect();
    let dt = im.dtype(
        *present
            .first()
            .ok_or_else(|| v.err("needs at least one input"))?,
    );
    let op = Op::Binary {
        kind,
        activation: Activation::None,
    };
    match present.len() {
        1 => emit(im, v, Op::Identity, vec![Some(present[0])], dt),
        n => {
            let mut acc = present[0];
            for &p in &present[1..n - 1] {
                acc = emit_tmp(im, v, op.clone(), vec![Some(acc), Some(p)], dt)?;
            }
            emit(im, v, op, vec![Some(acc), Some(present[n - 1])], dt)
        }
    }
}

/// Clip: constant bounds become attributes when that is exact for the input dtype;
/// bounds computed at run time (or integers f32 cannot hold) become Max/Min nodes.
fn clip(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let x = req(v, ins, 0)?;
    let dt = im.dtype(x);
    if im.opset < 11 {
        let min = v.f("min", f32::NEG_INFINITY)?;
        let max = v.f("max", f32::INFINITY)?;
        let op = Op::Clip {
            min: (min != f32::NEG_INFINITY).then_some(min),
            max: (max != f32::INFINITY).then_some(max),
        };
        return emit(im, v, op, vec![Some(x)], dt);
    }
    // (bound as attribute, or the value to Max/Min with)
    enum Bound {
        None,
        Attr(f32),
        Node(ValueId),
    }
    let bound = |im: &Importer, k: usize, is_min: bool| -> Result<Bound> {
        let Some(id) = opt(ins, k) else {
            return Ok(Bound::None);
        };
        let Some(t) = im.const_of(id) else {
            return Ok(Bound::Node(id));
        };
        if t.dtype() != dt {
            return Err(v.err(format!("bound {k} is {}, the input is {dt}", t.dtype())));
        }
        if t.len() != 1 {
            return Err(v.err(format!(
                "bound {k} must be a scalar, got shape {:?}",
                t.shape
            )));
        }
        if dt.is_float() {
            return Ok(Bound::Attr(t.data.get_f64(0) as f32));
        }
        let b = t.data.get_i64(0);
        let (lo, hi) = dt.int_range().unwrap_or((i64::MIN, i64::MAX));
        if (is_min && b <= lo) || (!is_min && b >= hi) {
            return Ok(Bound::None); // no effect on this dtype
        }
        if (b as f32) as i64 == b && (b as f32) as f64 == b as f64 {
            Ok(Bound::Attr(b as f32))
        } else {
            Ok(Bound::Node(id))
        }
    };
    let (lo, hi) = (bound(im, 1, true)?, bound(im, 2, false)?);
    if matches!(lo, Bound::Node(_)) || matches!(hi, Bound::Node(_)) {
        // min(max(x, lo), hi): ONNX Clip for every bound that is not NaN.
        let id_of = |im: &mut Importer, b: &Bound| -> Result<Option<ValueId>> {
            Ok(match b {
                Bound::None => None,
                Bound::Node(id) => Some(*id),
                Bound::Attr(f) => {
                    let t = cast(&Tensor::scalar_f32(*f), dt);
                    Some(im.fresh_const(&format!("{}_bound", v.name), t)?)
                }
            })
        };
        let (l, h) = (id_of(im, &lo)?, id_of(im, &hi)?);
        let bin = |kind| Op::Binary {
            kind,
            activation: Activation::None,
        };
        return match (l, h) {
            (Some(l), Some(h)) => {
                let t = emit_tmp(im, v, bin(BinaryKind::Max), vec![Some(x), Some(l)], dt)?;
                emit(im, v, bin(BinaryKind::Min), vec![Some(t), Some(h)], dt)
            }
            (Some(l), None) => emit(im, v, bin(BinaryKind::Max), vec![Some(x), Some(l)], dt),
            (None, Some(h)) => emit(im, v, bin(BinaryKind::Min), vec![Some(x), Some(h)], dt),
            (None, None) => emit(im, v, Op::Identity, vec![Some(x)], dt),
        };
    }
    let attr = |b: &Bound| match b {
        Bound::Attr(f) => Some(*f),
        _ => None,
    };
    emit(
        im,
        v,
        Op::Clip {
            min: attr(&lo),
            max: attr(&hi),
        },
        vec![Some(x)],
        dt,
    )
}

fn cast(t: &Tensor, to: DType) -> Tensor {
    crate::fold::cast(t, to)
}

/// Softmax/LogSoftmax. Before opset 13 they coerce the input to 2-D at `axis`
/// (flatten) and normalise over everything after it; that is the IR's per-axis form
/// only when `axis` is the last axis, otherwise we emit Flatten -> op -> Reshape.
fn softmax(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let x = req(v, ins, 0)?;
    let dt = im.dtype(x);
    let log = v.op_type == "LogSoftmax";
    let make = |axis: i64| {
        if log {
            Op::LogSoftmax { axis }
        } else {
            Op::Softmax { axis, beta: 1.0 }
        }
    };
    if im.opset >= 13 {
        return emit(im, v, make(v.i("axis", -1)?), vec![Some(x)], dt);
    }
    let axis = v.i("axis", 1)?;
    let rank = im.rank(x);
    if let Some(r) = rank {
        let a = if axis < 0 { axis + r as i64 } else { axis };
        if a < 0 || a > r as i64 {
            return Err(v.err(format!("axis {axis} is out of range for rank {r}")));
        }
        if a == r as i64 - 1 {
            return emit(im, v, make(-1), vec![Some(x)], dt);
        }
    }
    let flat = emit_tmp(im, v, Op::Flatten { axis }, vec![Some(x)], dt)?;
    let sm = emit_tmp(im, v, make(1), vec![Some(flat)], dt)?;
    let shape = match im.fixed_shape(x) {
        Some(s) => {
            let t = Tensor::from_i64(vec![s.len()], s.iter().map(|&d| d as i64).collect())?;
            im.fresh_const(&format!("{}_shape", v.name), t)?
        }
        None => emit_tmp(im, v, Op::Shape, vec![Some(x)], DType::I64)?,
    };
    emit(
        im,
        v,
        Op::Reshape { allowzero: false },
        vec![Some(sm), Some(shape)],
        dt,
    )
}

fn pad(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let x = req(v, ins, 0)?;
    let dt = im.dtype(x);
    let mode = match v.s("mode")?.as_deref() {
        None | Some("constant") => PadMode::Constant,
        Some("reflect") => PadMode::Reflect,
        Some("edge") => PadMode::Edge,
        Some("wrap") => PadMode::Wrap,
        Some(m) => return Err(v.err(format!("unknown pad mode '{m}'"))),
    };
    let (pads, value, axes) = if im.opset < 11 {
        let pads = v.axes("pads")?.ok_or_else(|| v.err("pads are required"))?;
        (pads, v.f("value", 0.0)?, None)
    } else {
        let pads = const_ints(im, v, ins, 1, "pads")?.ok_or_else(|| v.err("pads are required"))?;
        let value = match const_input(im, v, ins, 2, "constant_value")? {
            None => 0.0,
            Some(t) if t.is_empty() => 0.0,
            Some(t) => scalar(v, t, "constant_value")? as f32,
        };
        (pads, value, const_ints(im, v, ins, 3, "axes")?)
    };
    let pads = match axes {
        None => pads,
        Some(axes) => {
            let r = im
                .rank(x)
                .ok_or_else(|| v.err("Pad with axes needs the input rank, which is unknown"))?;
            if pads.len() != 2 * axes.len() {
                return Err(v.err(format!("{} pads for {} axes", pads.len(), axes.len())));
            }
            let mut full = vec![0i64; 2 * r];
            for (k, &a) in axes.iter().enumerate() {
                let a2 = if a < 0 { a + r as i64 } else { a };
                if a2 < 0 || a2 >= r as i64 {
                    return Err(v.err(format!("axis {a} is out of range for rank {r}")));
                }
                full[a2 as usize] = pads[k];
                full[r + a2 as usize] = pads[axes.len() + k];
            }
            full
        }
    };
    if pads.len() & 1 == 1 {
        return Err(v.err(format!(
            "pads {pads:?} must hold a begin and an end per axis"
        )));
    }
    emit(im, v, Op::Pad { mode, pads, value }, vec![Some(x)], dt)
}

fn reduce(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let x = req(v, ins, 0)?;
    let dt = im.dtype(x);
    let kind = match v.op_type {
        "ReduceMean" => ReduceKind::Mean,
        "ReduceSum" => ReduceKind::Sum,
        "ReduceMax" => ReduceKind::Max,
        "ReduceMin" => ReduceKind::Min,
        _ => ReduceKind::Prod,
    };
    // ReduceSum took axes as an input from opset 13, the others from opset 18.
    let axes_input = im.opset >= if kind == ReduceKind::Sum { 13 } else { 18 };
    let axes = if axes_input {
        const_ints(im, v, ins, 1, "axes")?
    } else {
        v.axes("axes")?
    };
    let op = Op::Reduce {
        kind,
        axes: axes.filter(|a| !a.is_empty()),
        keepdims: v.i("keepdims", 1)? != 0,
        noop_with_empty_axes: v.i("noop_with_empty_axes", 0)? != 0,
    };
    emit(im, v, op, vec![Some(x)], dt)
}

fn resize(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let x = req(v, ins, 0)?;
    let dt = im.dtype(x);
    let mode = match v.s("mode")?.as_deref() {
        None | Some("nearest") => ResizeMode::Nearest,
        Some("linear") => ResizeMode::Linear,
        Some("cubic") => ResizeMode::Cubic,
        Some(m) => return Err(v.err(format!("unknown mode '{m}'"))),
    };
    let coord = match v.s("coordinate_transformation_mode")?.as_deref() {
        // Opset 10's Resize is asymmetric.
        None if im.opset < 11 => CoordTransform::Asymmetric,
        None | Some("half_pixel") => CoordTransform::HalfPixel,
        Some("half_pixel_symmetric") => CoordTransform::HalfPixelSymmetric,
        Some("pytorch_half_pixel") => CoordTransform::PytorchHalfPixel,
        Some("align_corners") => CoordTransform::AlignCorners,
        Some("asymmetric") => CoordTransform::Asymmetric,
        Some("tf_crop_and_resize") => CoordTransform::TfCropAndResize,
        Some("tf_half_pixel_for_nn") => CoordTransform::TfHalfPixelForNn,
        Some(m) => return Err(v.err(format!("unknown coordinate_transformation_mode '{m}'"))),
    };
    let nearest_mode = match v.s("nearest_mode")?.as_deref() {
        None | Some("round_prefer_floor") => NearestMode::RoundPreferFloor,
        Some("round_prefer_ceil") => NearestMode::RoundPreferCeil,
        Some("floor") => NearestMode::Floor,
        Some("ceil") => NearestMode::Ceil,
        Some(m) => return Err(v.err(format!("unknown nearest_mode '{m}'"))),
    };
    let keep_aspect_ratio_policy = match v.s("keep_aspect_ratio_policy")?.as_deref() {
        None | Some("stretch") => AspectRatioPolicy::Stretch,
        Some("not_larger") => AspectRatioPolicy::NotLarger,
        Some("not_smaller") => AspectRatioPolicy::NotSmaller,
        Some(m) => return Err(v.err(format!("unknown keep_aspect_ratio_policy '{m}'"))),
    };
    // Opset 10: (X, scales). Opset 11+: (X, roi, scales, sizes); an empty tensor stands
    // for an absent input.
    let (roi_k, scales_k, sizes_k) = if im.opset < 11 {
        (None, 1, None)
    } else {
        (Some(1), 2, Some(3))
    };
    let floats = |im: &Importer, k: usize, what: &str| -> Result<Option<Vec<f32>>> {
        Ok(const_input(im, v, ins, k, what)?
            .filter(|t| !t.is_empty())
            .map(|t| t.to_f32_vec()))
    };
    let scales = floats(im, scales_k, "scales")?;
    let sizes = match sizes_k {
        Some(k) => const_ints(im, v, ins, k, "sizes")?.filter(|s| !s.is_empty()),
        None => None,
    };
    let sizes = match sizes {
        None => None,
        Some(s) => Some(
            s.iter()
                .map(|&d| usize::try_from(d).map_err(|_| v.err(format!("invalid sizes {s:?}"))))
                .collect::<Result<Vec<usize>>>()?,
        ),
    };
    if scales.is_some() == sizes.is_some() {
        return Err(v.err("exactly one of scales and sizes must be given"));
    }
    if let Some(s) = &scales {
        if s.iter().any(|f| !f.is_finite() || *f <= 0.0) {
            return Err(v.err(format!("invalid scales {s:?}")));
        }
    }
    // Opset 10 has no nearest_mode: like Upsample, onnxruntime truncates when
    // upsampling and rounds up when downsampling (measured with onnxruntime 1.32).
    let nearest_mode = match (&scales, im.opset < 11 && mode == ResizeMode::Nearest) {
        (Some(s), true) if s.iter().all(|&f| f >= 1.0) => NearestMode::Floor,
        (Some(s), true) if s.iter().all(|&f| f <= 1.0) => NearestMode::Ceil,
        (_, true) => {
            return Err(
                v.err("opset-10 nearest Resize that both up- and downsamples is not supported")
            )
        }
        _ => nearest_mode,
    };
    let roi = match (coord, roi_k) {
        (CoordTransform::TfCropAndResize, Some(k)) => floats(im, k, "roi")?,
        _ => None,
    };
    let attrs = ResizeAttrs {
        mode,
        coord,
        nearest_mode,
        cubic_coeff_a: v.f("cubic_coeff_a", -0.75)?,
        exclude_outside: v.i("exclude_outside", 0)? != 0,
        extrapolation_value: v.f("extrapolation_value", 0.0)?,
        antialias: v.i("antialias", 0)? != 0,
        keep_aspect_ratio_policy,
        axes: v.axes("axes")?,
        scales,
        sizes,
        roi,
    };
    emit(im, v, Op::Resize(attrs), vec![Some(x)], dt)
}

/// LayerNormalization (opset 17). Only Y is produced: the Mean and InvStdDev outputs
/// are training aids with no IR equivalent.
fn layer_norm(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    max_outputs(v, 1, "the Mean/InvStdDev outputs of LayerNormalization")?;
    let x = req(v, ins, 0)?;
    // stash_type only picks the precision of the statistics; the reference kernel
    // accumulates them in f64, at least as precise as any choice.
    let op = Op::LayerNorm {
        axis: v.i("axis", -1)?,
        epsilon: v.f("epsilon", 1e-5)?,
    };
    let dt = im.dtype(x);
    emit(
        im,
        v,
        op,
        vec![Some(x), Some(req(v, ins, 1)?), opt(ins, 2)],
        dt,
    )
}

/// Split: sizes from the `split` attribute (before opset 13) or constant input (13+);
/// without them, equal parts, one per output, or with opset 18's `num_outputs`
/// `ceil(d / n)` each and a smaller last one.
fn split(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let x = req(v, ins, 0)?;
    let dt = im.dtype(x);
    let axis = v.i("axis", 0)?;
    let n_out = v.node.output.len();
    if n_out == 0 {
        return Err(v.err("Split has no outputs"));
    }
    let given = if im.opset >= 13 {
        const_ints(im, v, ins, 1, "split")?
    } else {
        v.ints("split")?.map(<[i64]>::to_vec)
    };
    let num_outputs = if im.opset >= 18 {
        v.i_opt("num_outputs")?
    } else {
        None
    };
    let split: Vec<usize> = match given {
        Some(s) => {
            if num_outputs.is_some() {
                return Err(v.err("both split and num_outputs are given"));
            }
            if s.len() != n_out {
                return Err(v.err(format!(
                    "split {s:?} has {} sizes for {n_out} outputs",
                    s.len()
                )));
            }
            s.iter()
                .map(|&w| {
                    usize::try_from(w).map_err(|_| v.err(format!("negative size in split {s:?}")))
                })
                .collect::<Result<_>>()?
        }
        None => {
            let n = match num_outputs {
                Some(n) if n >= 1 && n as usize == n_out => n_out,
                Some(n) => {
                    return Err(v.err(format!("num_outputs {n} but the node has {n_out} outputs")))
                }
                None => n_out,
            };
            let shape = im.static_shape(x).ok_or_else(|| {
                v.err("Split without sizes needs the input rank, which is unknown")
            })?;
            let a = edgeopt_ir::shape::norm_axis(axis, shape.len()).map_err(|m| v.err(m))?;
            let d = shape[a].fixed().ok_or_else(|| {
                v.err(format!(
                    "Split without sizes needs a static dimension {a}, it is dynamic"
                ))
            })?;
            if num_outputs.is_some() {
                let chunk = d.div_ceil(n);
                if chunk * (n - 1) > d {
                    return Err(v.err(format!("dimension {d} cannot be split into {n} parts")));
                }
                let mut s = vec![chunk; n - 1];
                s.push(d - chunk * (n - 1));
                s
            } else {
                if d % n != 0 {
                    return Err(v.err(format!("dimension {d} does not split into {n} equal parts")));
                }
                vec![d / n; n]
            }
        }
    };
    let mut outs = Vec::with_capacity(n_out);
    for name in &v.node.output {
        outs.push(if name.is_empty() {
            im.fresh_value(&v.name, dt)?
        } else {
            im.new_value(name, dt, None)?
        });
    }
    im.g.add_node(
        v.name.clone(),
        Op::Split { axis, split },
        vec![Some(x)],
        outs,
    );
    Ok(())
}

/// Slice with constant starts/ends/axes/steps (inputs from opset 10, attributes
/// before). Ends are often INT64_MAX ("to the end"): any i64 is accepted, the IR's
/// geometry clamps them.
fn slice(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let x = req(v, ins, 0)?;
    let dt = im.dtype(x);
    let ints = |k: usize, what: &str| -> Result<Option<Vec<i64>>> {
        match const_input(im, v, ins, k, what)? {
            None => Ok(None),
            Some(t) if matches!(t.dtype(), DType::I64 | DType::I32) => Ok(Some(t.to_i64_vec())),
            Some(t) => Err(v.err(format!("{what} must be int64 or int32, got {}", t.dtype()))),
        }
    };
    let (starts, ends, axes, steps) = if im.opset >= 10 {
        (
            ints(1, "starts")?.ok_or_else(|| v.err("starts are required"))?,
            ints(2, "ends")?.ok_or_else(|| v.err("ends are required"))?,
            ints(3, "axes")?,
            ints(4, "steps")?,
        )
    } else {
        let get = |n: &str| -> Result<Option<Vec<i64>>> { Ok(v.ints(n)?.map(<[i64]>::to_vec)) };
        (
            get("starts")?.ok_or_else(|| v.err("starts are required"))?,
            get("ends")?.ok_or_else(|| v.err("ends are required"))?,
            get("axes")?,
            None,
        )
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(v.err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
        )));
    }
    if let Some(r) = im.rank(x) {
        let shape = vec![1; r];
        edgeopt_ir::shape::slice_geometry(&shape, &starts, &ends, &axes, &steps)
            .map_err(|m| v.err(m))?;
    }
    let op = Op::Slice {
        starts,
        ends,
        axes,
        steps,
    };
    emit(im, v, op, vec![Some(x)], dt)
}

/// LSTM and GRU with the default activations (anything else is refused by name).
/// Every IR output exists; ONNX outputs left out get fresh names.
fn rnn(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let is_lstm = v.op_type == "LSTM";
    let x = req(v, ins, 0)?;
    let dt = im.dtype(x);
    let hidden = v
        .i_opt("hidden_size")?
        .ok_or_else(|| v.err("hidden_size is required"))?;
    if !(1..=MAX_GEOMETRY).contains(&hidden) {
        return Err(v.err(format!("invalid hidden_size {hidden}")));
    }
    let direction = match v.s("direction")?.as_deref() {
        None | Some("forward") => RnnDirection::Forward,
        Some("reverse") => RnnDirection::Reverse,
        Some("bidirectional") => RnnDirection::Bidirectional,
        Some(d) => return Err(v.err(format!("unknown direction '{d}'"))),
    };
    if let Some(a) = v.attr("activations") {
        let names: Vec<String> = a
            .strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
            .collect();
        let default: &[&str] = if is_lstm {
            &["sigmoid", "tanh", "tanh"]
        } else {
            &["sigmoid", "tanh"]
        };
        let ok = names.len() == default.len() * direction.count()
            && names
                .iter()
                .enumerate()
                .all(|(k, n)| n == default[k % default.len()]);
        if !ok {
            return Err(v.err(format!(
                "activations {names:?} are not supported (only the defaults {default:?})"
            )));
        }
    }
    let batch_first = match v.i("layout", 0)? {
        0 => false,
        1 => true,
        l => return Err(v.err(format!("invalid layout {l}"))),
    };
    let clip = v.f_opt("clip")?;
    if clip.is_some_and(|c| c.is_nan() || c <= 0.0) {
        return Err(v.err(format!("clip must be positive, got {clip:?}")));
    }
    let (op, n_in, n_out) = if is_lstm {
        let op = Op::Lstm {
            hidden_size: hidden as usize,
            direction,
            batch_first,
            clip,
            input_forget: v.i("input_forget", 0)? != 0,
        };
        (op, 8, 3)
    } else {
        let op = Op::Gru {
            hidden_size: hidden as usize,
            direction,
            batch_first,
            clip,
            linear_before_reset: v.i("linear_before_reset", 0)? != 0,
        };
        (op, 6, 2)
    };
    if ins.len() > n_in || v.node.output.len() > n_out {
        return Err(v.err(format!(
            "{} takes at most {n_in} inputs and {n_out} outputs",
            v.op_type
        )));
    }
    let mut inputs = vec![Some(x), Some(req(v, ins, 1)?), Some(req(v, ins, 2)?)];
    inputs.extend((3..n_in).map(|k| opt(ins, k)));
    let mut outs = Vec::with_capacity(n_out);
    for k in 0..n_out {
        outs.push(match v.node.output.get(k).filter(|s| !s.is_empty()) {
            Some(name) => im.new_value(name, dt, None)?,
            None => im.fresh_value(&format!("{}_out{k}", v.name), dt)?,
        });
    }
    im.g.add_node(v.name.clone(), op, inputs, outs);
    Ok(())
}

/// TopK: `k` from the constant input (opset 10+) or attribute (before). Its `sorted`
/// attribute is honoured by always sorting (unsorted order is unspecified).
fn top_k(im: &mut Importer, v: &NodeView, ins: &[Option<ValueId>]) -> Result<()> {
    let x = req(v, ins, 0)?;
    let dt = im.dtype(x);
    let k = if im.opset >= 10 {
        let k = const_ints(im, v, ins, 1, "k")?.ok_or_else(|| v.err("k is required"))?;
        match k.as_slice() {
            [k] => *k,
            _ => return Err(v.err(format!("k must hold one value, got {k:?}"))),
        }
    } else {
        v.i_opt("k")?
            .ok_or_else(|| v.err("attribute k is required"))?
    };
    let k = usize::try_from(k).map_err(|_| v.err(format!("invalid k {k}")))?;
    let op = Op::TopK {
        axis: v.i("axis", -1)?,
        k,
        largest: v.i("largest", 1)? != 0,
    };
    if v.node.output.len() > 2 {
        return Err(v.err("TopK has 2 outputs"));
    }
    let mut outs = Vec::with_capacity(2);
    for (j, d) in [dt, DType::I64].into_iter().enumerate() {
        outs.push(match v.node.output.get(j).filter(|s| !s.is_empty()) {
            Some(name) => im.new_value(name, d, None)?,
            None => im.fresh_value(&format!("{}_out{j}", v.name), d)?,
        });
    }
    im.g.add_node(v.name.clone(), op, vec![Some(x)], outs);
    Ok(())
}
