//! Element-wise ops with numpy broadcasting: Binary (float, and wrapping integer
//! arithmetic like numpy), Compare, Where (any dtype), unary math, Clip.

use super::util::{apply_act, bcast_map, f32_of, for_variant, KResult};
use edgeopt_ir::shape::OutputFact;
use edgeopt_ir::{Activation, BinaryKind, CompareKind, DType, Tensor, TensorData, UnaryKind};

/// `out[i] = f(x[ix], y[iy])` over the broadcast of the two shapes, with fast paths for
/// equal shapes and scalars.
fn bcast_apply<A: Copy, B: Copy, O>(
    x: &[A],
    xs: &[usize],
    y: &[B],
    ys: &[usize],
    out: &[usize],
    f: impl Fn(A, B) -> O,
) -> Vec<O> {
    let n: usize = out.iter().product();
    if x.len() == n && y.len() == n && xs == ys {
        return x.iter().zip(y).map(|(&a, &b)| f(a, b)).collect();
    }
    if y.len() == 1 && x.len() == n {
        let b = y[0];
        return x.iter().map(|&a| f(a, b)).collect();
    }
    if x.len() == 1 && y.len() == n {
        let a = x[0];
        return y.iter().map(|&b| f(a, b)).collect();
    }
    let ix = bcast_map(xs, out);
    let iy = bcast_map(ys, out);
    ix.iter().zip(&iy).map(|(&i, &j)| f(x[i], y[j])).collect()
}

/// Values of an integer or bool tensor as i64.
fn ints(t: &Tensor) -> Vec<i64> {
    t.to_i64_vec()
}

/// An integer tensor of `dtype` from i64 values, wrapping like numpy's fixed-width ints.
fn from_ints(dtype: DType, shape: Vec<usize>, v: Vec<i64>) -> KResult<Tensor> {
    let data = match dtype {
        DType::I8 => TensorData::I8(v.iter().map(|&e| e as i8).collect()),
        DType::U8 => TensorData::U8(v.iter().map(|&e| e as u8).collect()),
        DType::I16 => TensorData::I16(v.iter().map(|&e| e as i16).collect()),
        DType::U16 => TensorData::U16(v.iter().map(|&e| e as u16).collect()),
        DType::I32 => TensorData::I32(v.iter().map(|&e| e as i32).collect()),
        DType::I64 => TensorData::I64(v),
        DType::Bool => TensorData::Bool(v.iter().map(|&e| e != 0).collect()),
        DType::I4 => TensorData::I4(v.iter().map(|&e| ((e as i8) << 4) >> 4).collect()),
        DType::U4 => TensorData::U4(v.iter().map(|&e| (e as u8) & 15).collect()),
        DType::F32 | DType::F16 => return Err(format!("{dtype} is not an integer type")),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

pub fn binary(
    kind: BinaryKind,
    act: Activation,
    a: &Tensor,
    b: &Tensor,
    out: &OutputFact,
) -> KResult<Tensor> {
    let shape = out.shape.clone();
    match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            let mut v = match kind {
                BinaryKind::Add => bcast_apply(x, &a.shape, y, &b.shape, &shape, |p, q| p + q),
                BinaryKind::Sub => bcast_apply(x, &a.shape, y, &b.shape, &shape, |p, q| p - q),
                BinaryKind::Mul => bcast_apply(x, &a.shape, y, &b.shape, &shape, |p, q| p * q),
                BinaryKind::Div => bcast_apply(x, &a.shape, y, &b.shape, &shape, |p, q| p / q),
                BinaryKind::Max => bcast_apply(x, &a.shape, y, &b.shape, &shape, f32::max),
                BinaryKind::Min => bcast_apply(x, &a.shape, y, &b.shape, &shape, f32::min),
                BinaryKind::Pow => bcast_apply(x, &a.shape, y, &b.shape, &shape, f32::powf),
            };
            apply_act(&mut v, act);
            Tensor::new(shape, TensorData::F32(v)).map_err(|e| e.to_string())
        }
        (TensorData::F32(x), _) if kind == BinaryKind::Pow => {
            let y = b.to_f32_vec();
            let v = bcast_apply(x, &a.shape, &y, &b.shape, &shape, f32::powf);
            Tensor::new(shape, TensorData::F32(v)).map_err(|e| e.to_string())
        }
        _ if kind == BinaryKind::Pow && a.dtype().is_integer() => {
            let x = ints(a);
            let y: Vec<f64> = (0..b.len()).map(|i| b.data.get_f64(i)).collect();
            let v = bcast_apply(&x, &a.shape, &y, &b.shape, &shape, |p, q| {
                (p as f64).powf(q) as i64
            });
            from_ints(a.dtype(), shape, v)
        }
        _ if a.dtype().is_integer() && a.dtype() == b.dtype() => {
            if act != Activation::None {
                return Err("fused activation on plain integer arithmetic is not defined".into());
            }
            let x = ints(a);
            let y = ints(b);
            if kind == BinaryKind::Div && y.contains(&0) {
                return Err("integer division by zero".into());
            }
            let v = match kind {
                BinaryKind::Add => {
                    bcast_apply(&x, &a.shape, &y, &b.shape, &shape, i64::wrapping_add)
                }
                BinaryKind::Sub => {
                    bcast_apply(&x, &a.shape, &y, &b.shape, &shape, i64::wrapping_sub)
                }
                BinaryKind::Mul => {
                    bcast_apply(&x, &a.shape, &y, &b.shape, &shape, i64::wrapping_mul)
                }
                // Truncating division, as onnxruntime and the ONNX reference (cast of
                // the true quotient) do.
                BinaryKind::Div => {
                    bcast_apply(&x, &a.shape, &y, &b.shape, &shape, i64::wrapping_div)
                }
                BinaryKind::Max => bcast_apply(&x, &a.shape, &y, &b.shape, &shape, i64::max),
                BinaryKind::Min => bcast_apply(&x, &a.shape, &y, &b.shape, &shape, i64::min),
                BinaryKind::Pow => unreachable!("handled above"),
            };
            from_ints(a.dtype(), shape, v)
        }
        _ => Err(format!(
            "{kind:?} is not defined on {} and {} without quantization parameters",
            a.dtype(),
            b.dtype()
        )),
    }
}

pub fn compare(kind: CompareKind, a: &Tensor, b: &Tensor, out: &OutputFact) -> KResult<Tensor> {
    let f = move |o: std::cmp::Ordering| -> bool {
        use std::cmp::Ordering::*;
        match kind {
            CompareKind::Equal => o == Equal,
            CompareKind::Less => o == Less,
            CompareKind::LessOrEqual => o != Greater,
            CompareKind::Greater => o == Greater,
            CompareKind::GreaterOrEqual => o != Less,
        }
    };
    let v: Vec<bool> = if a.dtype().is_float() {
        let x = a.to_f32_vec();
        let y = b.to_f32_vec();
        // NaN compares false for everything (IEEE), including Equal.
        bcast_apply(&x, &a.shape, &y, &b.shape, &out.shape, |p, q| {
            p.partial_cmp(&q).is_some_and(f)
        })
    } else {
        let x = ints(a);
        let y = ints(b);
        bcast_apply(&x, &a.shape, &y, &b.shape, &out.shape, |p, q| f(p.cmp(&q)))
    };
    Tensor::new(out.shape.clone(), TensorData::Bool(v)).map_err(|e| e.to_string())
}

pub fn where_op(c: &Tensor, a: &Tensor, b: &Tensor, out: &OutputFact) -> KResult<Tensor> {
    let TensorData::Bool(cv) = &c.data else {
        return Err(format!("condition must be bool, got {}", c.dtype()));
    };
    let ic = bcast_map(&c.shape, &out.shape);
    let ia = bcast_map(&a.shape, &out.shape);
    let ib = bcast_map(&b.shape, &out.shape);
    macro_rules! go {
        ($V:ident) => {{
            let (TensorData::$V(x), TensorData::$V(y)) = (&a.data, &b.data) else {
                return Err(format!(
                    "inputs 1 and 2 differ in dtype: {} and {}",
                    a.dtype(),
                    b.dtype()
                ));
            };
            TensorData::$V(
                ic.iter()
                    .zip(ia.iter().zip(&ib))
                    .map(|(&k, (&i, &j))| if cv[k] { x[i] } else { y[j] })
                    .collect(),
            )
        }};
    }
    let data = for_variant!(a.dtype(), go);
    Tensor::new(out.shape.clone(), data).map_err(|e| e.to_string())
}

pub fn map_f32(x: &Tensor, f: impl Fn(f32) -> f32) -> KResult<Tensor> {
    let v: Vec<f32> = f32_of(x)?.iter().map(|&e| f(e)).collect();
    Tensor::new(x.shape.clone(), TensorData::F32(v)).map_err(|e| e.to_string())
}

pub fn unary(kind: UnaryKind, x: &Tensor) -> KResult<Tensor> {
    if kind == UnaryKind::Not {
        let TensorData::Bool(v) = &x.data else {
            return Err(format!("Not needs bool input, got {}", x.dtype()));
        };
        return Tensor::new(
            x.shape.clone(),
            TensorData::Bool(v.iter().map(|b| !b).collect()),
        )
        .map_err(|e| e.to_string());
    }
    if x.dtype().is_integer() {
        let f: fn(i64) -> i64 = match kind {
            UnaryKind::Relu => |e| e.max(0),
            UnaryKind::Relu6 => |e| e.clamp(0, 6),
            UnaryKind::Neg => i64::wrapping_neg,
            UnaryKind::Abs => i64::wrapping_abs,
            _ => {
                return Err(format!(
                    "{kind:?} is not defined on {} without quantization parameters",
                    x.dtype()
                ))
            }
        };
        return from_ints(
            x.dtype(),
            x.shape.clone(),
            ints(x).into_iter().map(f).collect(),
        );
    }
    let f: fn(f32) -> f32 = match kind {
        UnaryKind::Relu => |e| if e < 0.0 { 0.0 } else { e },
        UnaryKind::Relu6 => |e| e.clamp(0.0, 6.0),
        UnaryKind::Sigmoid => super::util::sigmoid,
        UnaryKind::Tanh => f32::tanh,
        UnaryKind::HardSwish => |e| e * (e / 6.0 + 0.5).clamp(0.0, 1.0),
        UnaryKind::Exp => f32::exp,
        UnaryKind::Log => f32::ln,
        UnaryKind::Neg => |e| -e,
        UnaryKind::Abs => f32::abs,
        UnaryKind::Sqrt => f32::sqrt,
        UnaryKind::Reciprocal => |e| 1.0 / e,
        UnaryKind::Floor => f32::floor,
        UnaryKind::Ceil => f32::ceil,
        UnaryKind::Erf => |e| super::util::erf(e as f64) as f32,
        UnaryKind::Gelu => |e| {
            let x = e as f64;
            (0.5 * x * (1.0 + super::util::erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
        },
        UnaryKind::Not => unreachable!("handled above"),
    };
    map_f32(x, f)
}

pub fn clip(x: &Tensor, min: Option<f32>, max: Option<f32>) -> KResult<Tensor> {
    if x.dtype().is_integer() {
        // Integer bounds were folded to f32 from integer constants: exact.
        let lo = min.map_or(i64::MIN, |m| m.ceil() as i64);
        let hi = max.map_or(i64::MAX, |m| m.floor() as i64);
        let v = ints(x).into_iter().map(|e| e.max(lo).min(hi)).collect();
        return from_ints(x.dtype(), x.shape.clone(), v);
    }
    let lo = min.unwrap_or(f32::NEG_INFINITY);
    let hi = max.unwrap_or(f32::INFINITY);
    // ONNX: min then max, so when min > max every element becomes max.
    map_f32(x, |e| e.max(lo).min(hi))
}
