//! Dense tensors: constants (weights) in the graph and values at run time.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use half::f16;

/// Typed element storage. 4-bit types hold one value per element (see [`DType`]).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    I4(Vec<i8>),
    U4(Vec<u8>),
}

/// Calls `$body` with `$v` bound to the inner `Vec` of any variant.
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::F32($v) => $body,
            $crate::TensorData::F16($v) => $body,
            $crate::TensorData::I8($v) => $body,
            $crate::TensorData::U8($v) => $body,
            $crate::TensorData::I16($v) => $body,
            $crate::TensorData::U16($v) => $body,
            $crate::TensorData::I32($v) => $body,
            $crate::TensorData::I64($v) => $body,
            $crate::TensorData::Bool($v) => $body,
            $crate::TensorData::I4($v) => $body,
            $crate::TensorData::U4($v) => $body,
        }
    };
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::I16(_) => DType::I16,
            TensorData::U16(_) => DType::U16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::I4(_) => DType::I4,
            TensorData::U4(_) => DType::U4,
        }
    }

    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `a..b` as a new buffer of the same type (panics if out of range, as
    /// slicing does; callers check the range).
    pub fn slice(&self, a: usize, b: usize) -> TensorData {
        match self {
            TensorData::F32(x) => TensorData::F32(x[a..b].to_vec()),
            TensorData::F16(x) => TensorData::F16(x[a..b].to_vec()),
            TensorData::I8(x) => TensorData::I8(x[a..b].to_vec()),
            TensorData::U8(x) => TensorData::U8(x[a..b].to_vec()),
            TensorData::I16(x) => TensorData::I16(x[a..b].to_vec()),
            TensorData::U16(x) => TensorData::U16(x[a..b].to_vec()),
            TensorData::I32(x) => TensorData::I32(x[a..b].to_vec()),
            TensorData::I64(x) => TensorData::I64(x[a..b].to_vec()),
            TensorData::Bool(x) => TensorData::Bool(x[a..b].to_vec()),
            TensorData::I4(x) => TensorData::I4(x[a..b].to_vec()),
            TensorData::U4(x) => TensorData::U4(x[a..b].to_vec()),
        }
    }

    /// Appends `other`'s elements; an error if the types differ.
    pub fn extend_from(&mut self, other: &TensorData) -> Result<()> {
        let (want, got) = (self.dtype(), other.dtype());
        match (self, other) {
            (TensorData::F32(x), TensorData::F32(y)) => x.extend_from_slice(y),
            (TensorData::F16(x), TensorData::F16(y)) => x.extend_from_slice(y),
            (TensorData::I8(x), TensorData::I8(y)) => x.extend_from_slice(y),
            (TensorData::U8(x), TensorData::U8(y)) => x.extend_from_slice(y),
            (TensorData::I16(x), TensorData::I16(y)) => x.extend_from_slice(y),
            (TensorData::U16(x), TensorData::U16(y)) => x.extend_from_slice(y),
            (TensorData::I32(x), TensorData::I32(y)) => x.extend_from_slice(y),
            (TensorData::I64(x), TensorData::I64(y)) => x.extend_from_slice(y),
            (TensorData::Bool(x), TensorData::Bool(y)) => x.extend_from_slice(y),
            (TensorData::I4(x), TensorData::I4(y)) => x.extend_from_slice(y),
            (TensorData::U4(x), TensorData::U4(y)) => x.extend_from_slice(y),
            _ => {
                return Err(IrError::Invalid(format!(
                    "cannot append {got} elements to a {want} buffer"
                )))
            }
        }
        Ok(())
    }

    /// A zero-filled buffer of `n` elements.
    pub fn zeros(dtype: DType, n: usize) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::F16 => TensorData::F16(vec![f16::ZERO; n]),
            DType::I8 => TensorData::I8(vec![0; n]),
            DType::U8 => TensorData::U8(vec![0; n]),
            DType::I16 => TensorData::I16(vec![0; n]),
            DType::U16 => TensorData::U16(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
            DType::I4 => TensorData::I4(vec![0; n]),
            DType::U4 => TensorData::U4(vec![0; n]),
        }
    }

    /// Element `i` as f64 (exact for every type but i64 beyond 2^53).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            TensorData::F32(v) => v[i] as f64,
            TensorData::F16(v) => v[i].to_f64(),
            TensorData::I8(v) | TensorData::I4(v) => v[i] as f64,
            TensorData::U8(v) | TensorData::U4(v) => v[i] as f64,
            TensorData::I16(v) => v[i] as f64,
            TensorData::U16(v) => v[i] as f64,
            TensorData::I32(v) => v[i] as f64,
            TensorData::I64(v) => v[i] as f64,
            TensorData::Bool(v) => v[i] as u8 as f64,
        }
    }

    /// Element `i` as i64 (floats truncated toward zero).
    pub fn get_i64(&self, i: usize) -> i64 {
        match self {
            TensorData::F32(v) => v[i] as i64,
            TensorData::F16(v) => v[i].to_f32() as i64,
            TensorData::I8(v) | TensorData::I4(v) => v[i] as i64,
            TensorData::U8(v) | TensorData::U4(v) => v[i] as i64,
            TensorData::I16(v) => v[i] as i64,
            TensorData::U16(v) => v[i] as i64,
            TensorData::I32(v) => v[i] as i64,
            TensorData::I64(v) => v[i],
            TensorData::Bool(v) => v[i] as i64,
        }
    }
}

/// A dense, row-major tensor with a concrete shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Number of elements of a shape, or an error if it overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| IrError::Invalid(format!("shape {shape:?} overflows")))
    })
}

impl Tensor {
    /// Builds a tensor, checking that the data length matches the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if n != data.len() {
            return Err(IrError::Invalid(format!(
                "tensor of shape {shape:?} needs {n} elements, got {}",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        Ok(Tensor {
            shape,
            data: TensorData::zeros(dtype, n),
        })
    }

    pub fn from_f32(shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor> {
        Tensor::new(shape, TensorData::F32(v))
    }

    pub fn from_i64(shape: Vec<usize>, v: Vec<i64>) -> Result<Tensor> {
        Tensor::new(shape, TensorData::I64(v))
    }

    pub fn scalar_f32(x: f32) -> Tensor {
        Tensor {
            shape: vec![],
            data: TensorData::F32(vec![x]),
        }
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Bytes this tensor occupies in flash or in an arena.
    pub fn storage_bytes(&self) -> usize {
        self.dtype().storage_bytes(self.len())
    }

    pub fn as_f32(&self) -> Result<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Ok(v),
            d => Err(IrError::DType {
                expected: "f32".into(),
                got: d.dtype(),
            }),
        }
    }

    pub fn as_f32_mut(&mut self) -> Result<&mut [f32]> {
        match &mut self.data {
            TensorData::F32(v) => Ok(v),
            d => Err(IrError::DType {
                expected: "f32".into(),
                got: d.dtype(),
            }),
        }
    }

    pub fn as_i8(&self) -> Result<&[i8]> {
        match &self.data {
            TensorData::I8(v) => Ok(v),
            d => Err(IrError::DType {
                expected: "i8".into(),
                got: d.dtype(),
            }),
        }
    }

    pub fn as_i32(&self) -> Result<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Ok(v),
            d => Err(IrError::DType {
                expected: "i32".into(),
                got: d.dtype(),
            }),
        }
    }

    pub fn as_i64(&self) -> Result<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Ok(v),
            d => Err(IrError::DType {
                expected: "i64".into(),
                got: d.dtype(),
            }),
        }
    }

    /// All elements converted to f32 (lossy for wide integers).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            d => (0..d.len()).map(|i| d.get_f64(i) as f32).collect(),
        }
    }

    /// All elements converted to i64 (floats truncated).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            TensorData::I64(v) => v.clone(),
            d => (0..d.len()).map(|i| d.get_i64(i)).collect(),
        }
    }

    /// Same data, new shape (element count must match).
    /// Rows `start..start + count` along axis 0 (a batch slice), as a new tensor.
    pub fn rows(&self, start: usize, count: usize) -> Result<Tensor> {
        let n0 = *self
            .shape
            .first()
            .ok_or_else(|| IrError::Invalid("cannot take rows of a scalar".to_string()))?;
        if start.checked_add(count).is_none_or(|e| e > n0) {
            return Err(IrError::Invalid(format!(
                "rows {start}..{} out of range for shape {:?}",
                start.saturating_add(count),
                self.shape
            )));
        }
        let row = self.len().checked_div(n0).unwrap_or(0);
        let (a, b) = (start * row, (start + count) * row);
        let data = self.data.slice(a, b);
        let mut shape = self.shape.clone();
        shape[0] = count;
        Tensor::new(shape, data)
    }

    /// Concatenates tensors of one dtype along axis 0 (the inverse of [`Tensor::rows`]).
    pub fn concat_rows(parts: &[Tensor]) -> Result<Tensor> {
        let first = parts
            .first()
            .ok_or_else(|| IrError::Invalid("nothing to concatenate".to_string()))?;
        let mut n0 = 0usize;
        for p in parts {
            if p.dtype() != first.dtype()
                || p.shape.len() != first.shape.len()
                || p.shape.is_empty()
                || p.shape[1..] != first.shape[1..]
            {
                return Err(IrError::Invalid(format!(
                    "cannot concatenate {} {:?} and {} {:?} along axis 0",
                    first.dtype(),
                    first.shape,
                    p.dtype(),
                    p.shape
                )));
            }
            n0 += p.shape[0];
        }
        let mut data = TensorData::zeros(first.dtype(), 0);
        for p in parts {
            data.extend_from(&p.data)?;
        }
        let mut shape = first.shape.clone();
        shape[0] = n0;
        Tensor::new(shape, data)
    }

    pub fn reshaped(mut self, shape: Vec<usize>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if n != self.len() {
            return Err(IrError::Invalid(format!(
                "cannot reshape {:?} ({} elements) to {shape:?}",
                self.shape,
                self.len()
            )));
        }
        self.shape = shape;
        Ok(self)
    }
}
