//! Cast between every pair of dtypes (C-like: float -> int truncates toward zero and
//! saturates, int -> int wraps, anything -> bool is `!= 0`).

use super::util::KResult;
use edgeopt_ir::{DType, Tensor, TensorData};
use half::f16;

pub fn cast(x: &Tensor, to: DType) -> KResult<Tensor> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    let n = x.len();
    let data = if x.dtype().is_float() {
        let v: Vec<f64> = match &x.data {
            TensorData::F32(v) => v.iter().map(|&e| e as f64).collect(),
            d => (0..n).map(|i| d.get_f64(i)).collect(),
        };
        match to {
            DType::F32 => TensorData::F32(v.iter().map(|&e| e as f32).collect()),
            DType::F16 => TensorData::F16(v.iter().map(|&e| f16::from_f64(e)).collect()),
            DType::Bool => TensorData::Bool(v.iter().map(|&e| e != 0.0).collect()),
            DType::I8 => TensorData::I8(v.iter().map(|&e| e as i8).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&e| e as u8).collect()),
            DType::I16 => TensorData::I16(v.iter().map(|&e| e as i16).collect()),
            DType::U16 => TensorData::U16(v.iter().map(|&e| e as u16).collect()),
            DType::I32 => TensorData::I32(v.iter().map(|&e| e as i32).collect()),
            DType::I64 => TensorData::I64(v.iter().map(|&e| e as i64).collect()),
            DType::I4 => TensorData::I4(v.iter().map(|&e| (e as i64).clamp(-8, 7) as i8).collect()),
            DType::U4 => TensorData::U4(v.iter().map(|&e| (e as i64).clamp(0, 15) as u8).collect()),
        }
    } else {
        let v = x.to_i64_vec();
        match to {
            // i64 -> f32 directly (one rounding), not through f64.
            DType::F32 => TensorData::F32(v.iter().map(|&e| e as f32).collect()),
            DType::F16 => TensorData::F16(v.iter().map(|&e| f16::from_f32(e as f32)).collect()),
            DType::Bool => TensorData::Bool(v.iter().map(|&e| e != 0).collect()),
            DType::I8 => TensorData::I8(v.iter().map(|&e| e as i8).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&e| e as u8).collect()),
            DType::I16 => TensorData::I16(v.iter().map(|&e| e as i16).collect()),
            DType::U16 => TensorData::U16(v.iter().map(|&e| e as u16).collect()),
            DType::I32 => TensorData::I32(v.iter().map(|&e| e as i32).collect()),
            DType::I64 => TensorData::I64(v),
            DType::I4 => TensorData::I4(v.iter().map(|&e| ((e as i8) << 4) >> 4).collect()),
            DType::U4 => TensorData::U4(v.iter().map(|&e| (e as u8) & 15).collect()),
        }
    };
    Tensor::new(x.shape.clone(), data).map_err(|e| e.to_string())
}
