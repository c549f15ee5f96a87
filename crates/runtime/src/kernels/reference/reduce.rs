//! Reductions over any set of axes (f32 accumulated in f64; integers in i64).

use super::util::{bcast_map, KResult};
use edgeopt_ir::shape::{reduce_axes, OutputFact};
use edgeopt_ir::{DType, ReduceKind, Tensor, TensorData};

/// `f32_sums`: float MEAN / SUM accumulate in f32, in input order, and the mean
/// divides the f32 sum by the count in f32, as TensorFlow Lite Micro's reference
/// kernels do (`Numerics::Tflm`; the generated C's float MEAN does the same). Otherwise
/// the sums are f64, rounded once.
pub fn reduce(
    kind: ReduceKind,
    x: &Tensor,
    axes: Option<&[i64]>,
    noop_with_empty_axes: bool,
    f32_sums: bool,
    out: &OutputFact,
) -> KResult<Tensor> {
    let red = reduce_axes(x.rank(), axes, noop_with_empty_axes)?;
    // Shape of the output with reduced axes kept as 1: every input element maps to the
    // output slot of the broadcast "inverse".
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if red.contains(&i) { 1 } else { d })
        .collect();
    let m: usize = kept.iter().product();
    let count: usize = red.iter().map(|&a| x.shape[a]).product();
    // For each input element, its output slot.
    let slot = slots(&x.shape, &kept);
    if x.dtype().is_float() {
        let xs = x.to_f32_vec();
        let (init, f): (f64, fn(f64, f64) -> f64) = match kind {
            ReduceKind::Mean | ReduceKind::Sum => (0.0, |a, b| a + b),
            ReduceKind::Prod => (1.0, |a, b| a * b),
            ReduceKind::Max => (f64::NEG_INFINITY, f64::max),
            ReduceKind::Min => (f64::INFINITY, f64::min),
        };
        let v: Vec<f32> = if f32_sums && matches!(kind, ReduceKind::Mean | ReduceKind::Sum) {
            let mut acc = vec![0f32; m];
            for (&v, &s) in xs.iter().zip(&slot) {
                acc[s] += v;
            }
            if kind == ReduceKind::Mean {
                for a in &mut acc {
                    *a /= count as f32;
                }
            }
            acc
        } else {
            let mut acc = vec![init; m];
            for (&v, &s) in xs.iter().zip(&slot) {
                acc[s] = f(acc[s], v as f64);
            }
            acc.into_iter()
                .map(|a| if kind == ReduceKind::Mean { a / count as f64 } else { a } as f32)
                .collect()
        };
        let data = if x.dtype() == DType::F16 {
            TensorData::F16(v.iter().map(|&e| half::f16::from_f32(e)).collect())
        } else {
            TensorData::F32(v)
        };
        Tensor::new(out.shape.clone(), data).map_err(|e| e.to_string())
    } else if x.dtype().is_integer() {
        let xs = x.to_i64_vec();
        let (init, f): (i64, fn(i64, i64) -> i64) = match kind {
            ReduceKind::Mean | ReduceKind::Sum => (0, i64::wrapping_add),
            ReduceKind::Prod => (1, i64::wrapping_mul),
            ReduceKind::Max => (i64::MIN, i64::max),
            ReduceKind::Min => (i64::MAX, i64::min),
        };
        let mut acc = vec![init; m];
        for (&v, &s) in xs.iter().zip(&slot) {
            acc[s] = f(acc[s], v);
        }
        if kind == ReduceKind::Mean {
            for a in &mut acc {
                *a = if count == 0 { 0 } else { *a / count as i64 };
            }
        }
        let data = match x.dtype() {
            DType::I8 => TensorData::I8(acc.iter().map(|&e| e as i8).collect()),
            DType::U8 => TensorData::U8(acc.iter().map(|&e| e as u8).collect()),
            DType::I16 => TensorData::I16(acc.iter().map(|&e| e as i16).collect()),
            DType::U16 => TensorData::U16(acc.iter().map(|&e| e as u16).collect()),
            DType::I32 => TensorData::I32(acc.iter().map(|&e| e as i32).collect()),
            DType::I64 => TensorData::I64(acc),
            d => return Err(format!("reduction on {d}")),
        };
        Tensor::new(out.shape.clone(), data).map_err(|e| e.to_string())
    } else {
        Err(format!("reduction on {}", x.dtype()))
    }
}

/// For each element of a tensor of `shape`, the flat index into `kept` (same rank, 1 on
/// reduced axes).
fn slots(shape: &[usize], kept: &[usize]) -> Vec<usize> {
    // bcast_map maps output -> input for broadcasting input `kept` to `shape`, which is
    // exactly element -> slot here.
    bcast_map(kept, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TFLite Micro's float MEAN sums in f32 in input order: 2^24 + 1 + 1 stays 2^24
    /// there (each +1 rounds back to even), while an f64 sum keeps both.
    #[test]
    fn tflm_float_mean_sums_in_f32() {
        let x = Tensor::from_f32(vec![1, 3], vec![16_777_216.0, 1.0, 1.0]).unwrap();
        let out = OutputFact {
            dtype: DType::F32,
            shape: vec![1],
            value: None,
        };
        let mean = |f32_sums| {
            reduce(ReduceKind::Mean, &x, Some(&[1]), false, f32_sums, &out)
                .unwrap()
                .to_f32_vec()[0]
        };
        assert_eq!(mean(true), 16_777_216.0f32 / 3.0);
        assert_eq!(mean(false), (16_777_218.0f64 / 3.0) as f32);
        assert_ne!(mean(true), mean(false));
    }
}
