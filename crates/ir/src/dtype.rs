//! Element types and quantization parameters.

use serde::{Deserialize, Serialize};

/// Element type of a tensor.
///
/// `I4`/`U4` are 4-bit integers. In memory (`TensorData`) they are held one value per
/// byte so kernels stay simple; every size computation (flash, arena) and every file
/// format packs them two per byte, low nibble first, as ONNX and TFLite do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    F16,
    I8,
    U8,
    I16,
    U16,
    I32,
    I64,
    Bool,
    I4,
    U4,
}

impl DType {
    /// Storage size in bits of one element.
    pub fn bits(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 32,
            DType::F16 | DType::I16 | DType::U16 => 16,
            DType::I8 | DType::U8 | DType::Bool => 8,
            DType::I64 => 64,
            DType::I4 | DType::U4 => 4,
        }
    }

    /// Bytes needed to store `n` elements (4-bit types packed two per byte).
    pub fn storage_bytes(self, n: usize) -> usize {
        (n * self.bits()).div_ceil(8)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }

    pub fn is_integer(self) -> bool {
        !self.is_float() && self != DType::Bool
    }

    /// Inclusive value range of an integer type (used for saturation).
    pub fn int_range(self) -> Option<(i64, i64)> {
        Some(match self {
            DType::I8 => (-128, 127),
            DType::U8 => (0, 255),
            DType::I16 => (-32768, 32767),
            DType::U16 => (0, 65535),
            DType::I32 => (i32::MIN as i64, i32::MAX as i64),
            DType::I64 => (i64::MIN, i64::MAX),
            DType::I4 => (-8, 7),
            DType::U4 => (0, 15),
            DType::Bool => (0, 1),
            DType::F32 | DType::F16 => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
            DType::I4 => "i4",
            DType::U4 => "u4",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Affine quantization: `real = scale * (q - zero_point)`.
///
/// One scale/zero-point for the whole tensor (`axis == None`, vectors of length 1) or
/// one per slice along `axis` (per-channel, e.g. output channels of conv weights).
/// With `block_size`, each slice along `axis` is further split into blocks of that
/// many consecutive elements in storage order (the last one may be shorter), each
/// with its own scale/zero point: slice-major, `scale[c * blocks + b]`. For conv
/// weights `[M, kh, kw, C]` and FC weights `[N, K]` with `axis == 0` the blocks run
/// along the reduction dimension in im2col order (group-wise quantization).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantParams {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub axis: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
}

impl QuantParams {
    pub fn per_tensor(scale: f32, zero_point: i64) -> Self {
        QuantParams {
            scale: vec![scale],
            zero_point: vec![zero_point],
            axis: None,
            block_size: None,
        }
    }

    pub fn per_axis(scale: Vec<f32>, zero_point: Vec<i64>, axis: usize) -> Self {
        QuantParams {
            scale,
            zero_point,
            axis: Some(axis),
            block_size: None,
        }
    }

    /// Blocks per slice along `axis` for a tensor with `slice_len` elements per
    /// slice (1 without `block_size`).
    pub fn blocks_per_slice(&self, slice_len: usize) -> usize {
        match self.block_size {
            Some(b) if b > 0 => slice_len.div_ceil(b).max(1),
            _ => 1,
        }
    }

    pub fn is_per_tensor(&self) -> bool {
        self.axis.is_none() || self.scale.len() == 1
    }

    /// Scale and zero point that apply to slice `channel` (the single pair when per tensor).
    pub fn channel(&self, channel: usize) -> (f32, i64) {
        if self.scale.len() == 1 {
            (self.scale[0], self.zero_point.first().copied().unwrap_or(0))
        } else {
            let zp = if self.zero_point.len() == 1 {
                self.zero_point[0]
            } else {
                self.zero_point.get(channel).copied().unwrap_or(0)
            };
            (self.scale[channel], zp)
        }
    }
}
