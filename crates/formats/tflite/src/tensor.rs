//! Tensor-level decoding: dtypes, constant buffers, quantization parameters, and the
//! memory budget that bounds what a file can make the importer allocate.

use crate::error::{invalid, unsupported, TfliteError};
use crate::generated::tflite as fb;
use edgeopt_ir::{DType, Dim, QuantParams, TensorData};
use half::f16;

type Result<T, E = TfliteError> = std::result::Result<T, E>;

/// Largest rank accepted. TFLite kernels handle at most 6 dimensions (a few ops 8);
/// more than that in a file means corruption.
pub(crate) const MAX_RANK: usize = 8;

/// Largest element count of one tensor, declared or constant. 2^32 elements is far
/// beyond any model edgeopt targets (a few MB) and keeps every byte-size product of
/// an element count and an element size well inside `u64`.
pub(crate) const MAX_ELEMENTS: u64 = 1 << 32;

/// Bounds the memory an import may allocate from what the file says.
///
/// Flatbuffers let many vector entries point at the same table, so a small file can
/// reference one large constant buffer or one long name from thousands of tensors;
/// decoding each reference would multiply memory without bound. Every allocation
/// whose size comes from the file (values, names, shapes, quant params, decoded
/// constants, nodes) is charged here first, against a limit proportional to the
/// file size. Real models stay far below it: each constant is decoded once (f32 data
/// keeps its size, int4 doubles) plus small per-tensor overhead.
pub(crate) struct Budget {
    used: u64,
    limit: u64,
    /// Whether [`Budget::allow_unrolling`] raised the limit.
    unrolling: bool,
}

/// What unrolling WHILE loops may add on top of the file's budget: the inlined trips
/// legitimately grow the graph by trips x body (a 49-step Keras GRU over a 150 KB file
/// needs about 2.5 MB of names, values and nodes), so the limit cannot stay
/// proportional to the file; this fixed amount keeps it bounded.
const UNROLL_ALLOWANCE: u64 = 64 << 20;

impl Budget {
    pub(crate) fn for_file(file_len: usize) -> Budget {
        Budget {
            used: 0,
            limit: (file_len as u64).saturating_mul(8).saturating_add(1 << 20),
            unrolling: false,
        }
    }

    /// Raises the limit once by [`UNROLL_ALLOWANCE`], for unrolling loops.
    pub(crate) fn allow_unrolling(&mut self) {
        if !self.unrolling {
            self.unrolling = true;
            self.limit = self.limit.saturating_add(UNROLL_ALLOWANCE);
        }
    }

    pub(crate) fn charge(&mut self, bytes: u64) -> Result<()> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            let loops = if self.unrolling {
                " plus 64 MiB for unrolled loops"
            } else {
                ""
            };
            return Err(invalid(format!(
                "importing would allocate more than {} bytes, 8x the file size plus 1 MiB{loops} \
                 (the file references the same data or names many times)",
                self.limit
            )));
        }
        Ok(())
    }
}

/// The IR dtype of a TFLite tensor type, or an error for types edgeopt has no kernels
/// or representation for.
pub(crate) fn dtype(t: fb::TensorType) -> Result<DType> {
    Ok(match t {
        fb::TensorType::Float32 => DType::F32,
        fb::TensorType::Float16 => DType::F16,
        fb::TensorType::Int32 => DType::I32,
        fb::TensorType::Uint8 => DType::U8,
        fb::TensorType::Int64 => DType::I64,
        fb::TensorType::Bool => DType::Bool,
        fb::TensorType::Int16 => DType::I16,
        fb::TensorType::Uint16 => DType::U16,
        fb::TensorType::Int8 => DType::I8,
        fb::TensorType::Int4 => DType::I4,
        other => return Err(unsupported(format!("tensor type {other:?}"))),
    })
}

/// Bytes one element occupies once decoded into [`TensorData`] (4-bit types take a
/// byte each there).
pub(crate) fn mem_bytes(d: DType) -> u64 {
    match d {
        DType::I4 | DType::U4 => 1,
        d => (d.bits() / 8) as u64,
    }
}

/// Element count of a shape's fixed dimensions (dynamic ones count as 1), rejecting
/// absurd totals.
pub(crate) fn checked_elements(dims: &[Dim]) -> Result<u64> {
    let mut n: u64 = 1;
    for d in dims {
        let k = d.fixed().unwrap_or(1) as u64;
        n = n
            .checked_mul(k)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| {
                invalid(format!(
                    "shape {} has more than 2^32 elements",
                    crate::tensor::fmt_dims(dims)
                ))
            })?;
    }
    Ok(n)
}

pub(crate) fn fmt_dims(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Decodes a little-endian constant buffer of exactly `n` elements of `dt`. The
/// caller has checked `raw.len()` against the packed size and charged the budget.
pub(crate) fn decode(dt: DType, n: usize, raw: &[u8]) -> Result<TensorData> {
    let expected = packed_bytes(dt, n as u64)?;
    if raw.len() as u64 != expected {
        return Err(invalid(format!(
            "buffer holds {} bytes, {n} elements of {dt} need {expected}",
            raw.len()
        )));
    }
    fn le<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        raw.chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    Ok(match dt {
        DType::F32 => TensorData::F32(le(raw, f32::from_le_bytes)),
        DType::F16 => TensorData::F16(le(raw, |b| f16::from_bits(u16::from_le_bytes(b)))),
        DType::I32 => TensorData::I32(le(raw, i32::from_le_bytes)),
        DType::I64 => TensorData::I64(le(raw, i64::from_le_bytes)),
        DType::I16 => TensorData::I16(le(raw, i16::from_le_bytes)),
        DType::U16 => TensorData::U16(le(raw, u16::from_le_bytes)),
        DType::I8 => TensorData::I8(raw.iter().map(|&b| b as i8).collect()),
        DType::U8 => TensorData::U8(raw.to_vec()),
        DType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        // TFLite packs int4 two per byte, low nibble first; sign-extend each nibble.
        DType::I4 => {
            let mut v = Vec::with_capacity(n);
            for (i, &b) in raw.iter().enumerate() {
                v.push(((b << 4) as i8) >> 4);
                if 2 * i + 1 < n {
                    v.push((b as i8) >> 4);
                }
            }
            TensorData::I4(v)
        }
        DType::U4 => {
            let mut v = Vec::with_capacity(n);
            for (i, &b) in raw.iter().enumerate() {
                v.push(b & 0x0f);
                if 2 * i + 1 < n {
                    v.push(b >> 4);
                }
            }
            TensorData::U4(v)
        }
    })
}

/// Bytes `n` elements of `dt` occupy in the file (4-bit types packed two per byte).
pub(crate) fn packed_bytes(dt: DType, n: u64) -> Result<u64> {
    n.checked_mul(dt.bits() as u64)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| invalid("tensor byte size overflows"))
}

/// Reads a tensor's quantization parameters.
///
/// Float tensors ignore them (TFLite's float kernels do; converters leave min/max
/// there). Per-channel parameters need `quantized_dimension` to index a fixed
/// dimension whose size is the number of scales. Scales must be finite and positive
/// and zero points inside the dtype's range: kernels derive fixed-point multipliers
/// from them, and a NaN or zero scale is a corrupt file, not a model.
pub(crate) fn quant(
    q: Option<fb::QuantizationParametersRef<'_>>,
    dt: DType,
    shape: Option<&[Dim]>,
    budget: &mut Budget,
) -> Result<Option<QuantParams>> {
    let Some(q) = q else { return Ok(None) };
    if q.details()?.is_some() {
        return Err(unsupported("custom quantization details"));
    }
    let Some(scale) = q.scale()? else {
        return Ok(None);
    };
    if scale.is_empty() || !dt.is_integer() {
        return Ok(None);
    }
    let n = scale.len();
    let zp = q.zero_point()?;
    let zp_len = zp.map_or(0, |z| z.len());
    if zp_len != 0 && zp_len != n {
        return Err(invalid(format!(
            "{n} quantization scales but {zp_len} zero points"
        )));
    }
    budget.charge(n as u64 * 12 + 64)?;
    let mut scales = Vec::with_capacity(n);
    for s in scale.iter() {
        if !(s.is_finite() && s > 0.0) {
            return Err(invalid(format!(
                "quantization scale {s} is not a positive number"
            )));
        }
        scales.push(s);
    }
    let (lo, hi) = dt.int_range().unwrap_or((i64::MIN, i64::MAX));
    let mut zps = Vec::with_capacity(n);
    match zp {
        Some(z) if zp_len > 0 => {
            for v in z.iter() {
                if v < lo || v > hi {
                    return Err(invalid(format!(
                        "zero point {v} is outside the range of {dt}"
                    )));
                }
                zps.push(v);
            }
        }
        _ => zps.resize(n, 0),
    }
    if n == 1 {
        return Ok(Some(QuantParams::per_tensor(scales[0], zps[0])));
    }
    let axis = q.quantized_dimension()?;
    let Some(shape) = shape else {
        return Err(invalid(
            "per-channel quantization on a tensor of unknown rank",
        ));
    };
    let ax = usize::try_from(axis)
        .ok()
        .filter(|&a| a < shape.len())
        .ok_or_else(|| {
            invalid(format!(
                "quantized_dimension {axis} out of range for rank {}",
                shape.len()
            ))
        })?;
    if shape[ax].fixed() != Some(n) {
        return Err(invalid(format!(
            "{n} per-channel scales along dimension {ax} of shape {}",
            fmt_dims(shape)
        )));
    }
    Ok(Some(QuantParams::per_axis(scales, zps, ax)))
}

/// `data` (row-major, `shape`) with its axes permuted: output axis `i` is input axis
/// `perm[i]`. `perm` is a valid permutation of `0..shape.len()` and `data` matches.
pub(crate) fn permute(data: &TensorData, shape: &[usize], perm: &[usize]) -> TensorData {
    fn go<T: Copy>(v: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
        let rank = shape.len();
        let mut in_strides = vec![1usize; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            in_strides[i] = in_strides[i + 1] * shape[i + 1];
        }
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let mut out = Vec::with_capacity(v.len());
        let mut idx = vec![0usize; rank];
        for _ in 0..v.len() {
            let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
            out.push(v[off]);
            for a in (0..rank).rev() {
                idx[a] += 1;
                if idx[a] < out_shape[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        out
    }
    match data {
        TensorData::F32(v) => TensorData::F32(go(v, shape, perm)),
        TensorData::F16(v) => TensorData::F16(go(v, shape, perm)),
        TensorData::I8(v) => TensorData::I8(go(v, shape, perm)),
        TensorData::U8(v) => TensorData::U8(go(v, shape, perm)),
        TensorData::I16(v) => TensorData::I16(go(v, shape, perm)),
        TensorData::U16(v) => TensorData::U16(go(v, shape, perm)),
        TensorData::I32(v) => TensorData::I32(go(v, shape, perm)),
        TensorData::I64(v) => TensorData::I64(go(v, shape, perm)),
        TensorData::Bool(v) => TensorData::Bool(go(v, shape, perm)),
        TensorData::I4(v) => TensorData::I4(go(v, shape, perm)),
        TensorData::U4(v) => TensorData::U4(go(v, shape, perm)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_unpacks_low_nibble_first_with_sign() {
        // 0x7F: low nibble 0xF = -1, high nibble 0x7 = 7; 0x08: low 8 = -8.
        let d = decode(DType::I4, 3, &[0x7f, 0x08]).unwrap();
        assert_eq!(d, TensorData::I4(vec![-1, 7, -8]));
    }

    #[test]
    fn decode_rejects_wrong_length() {
        assert!(decode(DType::F32, 2, &[0; 7]).is_err());
    }

    #[test]
    fn permute_depthwise_layout() {
        // [1, 1, 2, 3] -> perm [3, 1, 2, 0] -> [3, 1, 2, 1]
        let d = TensorData::I32((0..6).collect());
        let p = permute(&d, &[1, 1, 2, 3], &[3, 1, 2, 0]);
        assert_eq!(p, TensorData::I32(vec![0, 3, 1, 4, 2, 5]));
    }

    #[test]
    fn budget_trips() {
        let mut b = Budget::for_file(0);
        assert!(b.charge(1 << 20).is_ok());
        assert!(b.charge(1).is_err());
    }
}
