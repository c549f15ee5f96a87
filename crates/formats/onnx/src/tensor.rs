//! ONNX `TensorProto` <-> [`Tensor`], and ONNX element-type codes <-> [`DType`].
//!
//! Reading is defensive: the declared dims are checked for overflow and must describe
//! exactly the amount of data present in the message before anything is allocated, so
//! a corrupted file can never make us allocate more than it holds.

use crate::error::{tensor_err, OnnxError, Result};
use crate::proto::{StringStringEntryProto, TensorProto};
use edgeopt_ir::{DType, Tensor, TensorData};
use half::f16;
use prost::Message;
use std::path::{Path, PathBuf};

// ONNX TensorProto.DataType codes.
pub const FLOAT: i32 = 1;
pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;
pub const UINT16: i32 = 4;
pub const INT16: i32 = 5;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;
pub const STRING: i32 = 8;
pub const BOOL: i32 = 9;
pub const FLOAT16: i32 = 10;
pub const DOUBLE: i32 = 11;
pub const UINT32: i32 = 12;
pub const UINT64: i32 = 13;
pub const BFLOAT16: i32 = 16;
pub const UINT4: i32 = 21;
pub const INT4: i32 = 22;

/// Human-readable name of an ONNX element type code (for messages).
pub fn onnx_type_name(code: i32) -> String {
    let s = match code {
        0 => "UNDEFINED",
        FLOAT => "FLOAT",
        UINT8 => "UINT8",
        INT8 => "INT8",
        UINT16 => "UINT16",
        INT16 => "INT16",
        INT32 => "INT32",
        INT64 => "INT64",
        STRING => "STRING",
        BOOL => "BOOL",
        FLOAT16 => "FLOAT16",
        DOUBLE => "DOUBLE",
        UINT32 => "UINT32",
        UINT64 => "UINT64",
        14 => "COMPLEX64",
        15 => "COMPLEX128",
        BFLOAT16 => "BFLOAT16",
        17 => "FLOAT8E4M3FN",
        18 => "FLOAT8E4M3FNUZ",
        19 => "FLOAT8E5M2",
        20 => "FLOAT8E5M2FNUZ",
        UINT4 => "UINT4",
        INT4 => "INT4",
        23 => "FLOAT4E2M1",
        _ => return format!("type code {code}"),
    };
    s.to_string()
}

/// The IR dtype of an ONNX element type, or a message saying it is not supported.
pub fn dtype_from_onnx(code: i32) -> std::result::Result<DType, String> {
    Ok(match code {
        FLOAT => DType::F32,
        FLOAT16 => DType::F16,
        UINT8 => DType::U8,
        INT8 => DType::I8,
        UINT16 => DType::U16,
        INT16 => DType::I16,
        INT32 => DType::I32,
        INT64 => DType::I64,
        BOOL => DType::Bool,
        UINT4 => DType::U4,
        INT4 => DType::I4,
        _ => {
            return Err(format!(
                "element type {} is not supported",
                onnx_type_name(code)
            ))
        }
    })
}

/// The ONNX element type code of an IR dtype.
pub fn dtype_to_onnx(dtype: DType) -> i32 {
    match dtype {
        DType::F32 => FLOAT,
        DType::F16 => FLOAT16,
        DType::I8 => INT8,
        DType::U8 => UINT8,
        DType::I16 => INT16,
        DType::U16 => UINT16,
        DType::I32 => INT32,
        DType::I64 => INT64,
        DType::Bool => BOOL,
        DType::I4 => INT4,
        DType::U4 => UINT4,
    }
}

/// Checked shape and element count of a proto's dims.
fn checked_shape(name: &str, dims: &[i64]) -> Result<(Vec<usize>, usize)> {
    let mut shape = Vec::with_capacity(dims.len());
    let mut n: usize = 1;
    for &d in dims {
        let d = usize::try_from(d)
            .map_err(|_| tensor_err(name, format!("negative dimension {d} in {dims:?}")))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| tensor_err(name, format!("dims {dims:?} overflow")))?;
        shape.push(d);
    }
    Ok((shape, n))
}

/// Fails unless `have` (elements or bytes present) is exactly `want`.
fn expect_len(name: &str, what: &str, have: usize, want: usize, shape: &[usize]) -> Result<()> {
    if have != want {
        return Err(tensor_err(
            name,
            format!("shape {shape:?} needs {want} {what}, the file holds {have}"),
        ));
    }
    Ok(())
}

/// Decodes `raw` little-endian elements of `size` bytes each with `f`.
fn from_raw<T>(raw: &[u8], size: usize, f: impl Fn(&[u8]) -> T) -> Vec<T> {
    raw.chunks_exact(size).map(f).collect()
}

fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Unpacks `n` 4-bit values, two per byte, low nibble first.
fn unpack_nibbles(packed: impl Iterator<Item = u8>, n: usize, signed: bool) -> Vec<i16> {
    let mut out = Vec::with_capacity(n);
    for b in packed {
        for nib in [b & 0x0f, b >> 4] {
            if out.len() < n {
                let v = nib as i16;
                out.push(if signed && v >= 8 { v - 16 } else { v });
            }
        }
    }
    out
}

/// Converts a `TensorProto` into a tensor. External data (see
/// [`tensor_from_proto_in`]), strings and types the IR has no dtype for (double,
/// bfloat16, float8, ...) are errors.
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor> {
    tensor_from_proto_in(t, None)
}

/// Converts a `TensorProto` into a tensor; tensors whose data is stored in an external
/// file (`data_location = EXTERNAL`) are read from `model_dir`, the folder of the model
/// file (see [`read_external`] for what is refused). Without a folder (a model given as
/// bytes) external tensors are an error.
pub fn tensor_from_proto_in(t: &TensorProto, model_dir: Option<&Path>) -> Result<Tensor> {
    let name = t.name.as_deref().unwrap_or("");
    if t.segment.is_some() {
        return Err(tensor_err(name, "segmented tensors are not supported"));
    }
    let code = t.data_type.unwrap_or(0);
    let dtype = dtype_from_onnx(code).map_err(|m| tensor_err(name, m))?;
    let (shape, n) = checked_shape(name, &t.dims)?;
    // Packed size of the data; checked before anything of that size is allocated.
    let want = n
        .checked_mul(dtype.bits())
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| tensor_err(name, format!("shape {shape:?} overflows")))?;
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        if t.data_location != Some(1) {
            return Err(tensor_err(
                name,
                "has external_data entries but data_location is not EXTERNAL",
            ));
        }
        let raw = read_external(name, &t.external_data, want, model_dir)?;
        return Ok(Tensor::new(shape, decode_raw(dtype, n, &raw))?);
    }
    let data = if let Some(raw) = &t.raw_data {
        // The byte count must match before we allocate the decoded vector (whose size is
        // then bounded by the raw bytes actually present).
        expect_len(name, "bytes", raw.len(), want, &shape)?;
        decode_raw(dtype, n, raw)
    } else {
        // Typed fields: the element count must match before converting.
        let i32s = &t.int32_data;
        match dtype {
            DType::F32 => {
                expect_len(name, "float_data values", t.float_data.len(), n, &shape)?;
                TensorData::F32(t.float_data.clone())
            }
            DType::I64 => {
                expect_len(name, "int64_data values", t.int64_data.len(), n, &shape)?;
                TensorData::I64(t.int64_data.clone())
            }
            DType::I4 | DType::U4 => {
                // Each int32 holds one byte of two packed nibbles.
                expect_len(name, "int32_data values", i32s.len(), n.div_ceil(2), &shape)?;
                let v = unpack_nibbles(i32s.iter().map(|&x| x as u8), n, dtype == DType::I4);
                if dtype == DType::I4 {
                    TensorData::I4(v.into_iter().map(|x| x as i8).collect())
                } else {
                    TensorData::U4(v.into_iter().map(|x| x as u8).collect())
                }
            }
            _ => {
                expect_len(name, "int32_data values", i32s.len(), n, &shape)?;
                let range = |lo: i64, hi: i64| -> Result<()> {
                    match i32s.iter().find(|&&x| (x as i64) < lo || (x as i64) > hi) {
                        Some(x) => Err(tensor_err(
                            name,
                            format!("value {x} out of range for {dtype}"),
                        )),
                        None => Ok(()),
                    }
                };
                match dtype {
                    DType::F16 => {
                        TensorData::F16(i32s.iter().map(|&x| f16::from_bits(x as u16)).collect())
                    }
                    DType::I8 => {
                        range(-128, 127)?;
                        TensorData::I8(i32s.iter().map(|&x| x as i8).collect())
                    }
                    DType::U8 => {
                        range(0, 255)?;
                        TensorData::U8(i32s.iter().map(|&x| x as u8).collect())
                    }
                    DType::I16 => {
                        range(-32768, 32767)?;
                        TensorData::I16(i32s.iter().map(|&x| x as i16).collect())
                    }
                    DType::U16 => {
                        range(0, 65535)?;
                        TensorData::U16(i32s.iter().map(|&x| x as u16).collect())
                    }
                    DType::I32 => TensorData::I32(i32s.clone()),
                    DType::Bool => TensorData::Bool(i32s.iter().map(|&x| x != 0).collect()),
                    // Handled above.
                    DType::F32 | DType::I64 | DType::I4 | DType::U4 => {
                        return Err(tensor_err(name, "internal: unreachable dtype"))
                    }
                }
            }
        }
    };
    Ok(Tensor::new(shape, data)?)
}

/// Decodes little-endian raw bytes (4-bit types packed two per byte, low nibble first)
/// whose length the caller has checked against `n` elements of `dtype`.
fn decode_raw(dtype: DType, n: usize, raw: &[u8]) -> TensorData {
    match dtype {
        DType::F32 => TensorData::F32(from_raw(raw, 4, |b| f32::from_le_bytes(le(b)))),
        DType::F16 => TensorData::F16(from_raw(raw, 2, |b| {
            f16::from_bits(u16::from_le_bytes(le(b)))
        })),
        DType::I8 => TensorData::I8(raw.iter().map(|&b| b as i8).collect()),
        DType::U8 => TensorData::U8(raw.to_vec()),
        DType::I16 => TensorData::I16(from_raw(raw, 2, |b| i16::from_le_bytes(le(b)))),
        DType::U16 => TensorData::U16(from_raw(raw, 2, |b| u16::from_le_bytes(le(b)))),
        DType::I32 => TensorData::I32(from_raw(raw, 4, |b| i32::from_le_bytes(le(b)))),
        DType::I64 => TensorData::I64(from_raw(raw, 8, |b| i64::from_le_bytes(le(b)))),
        DType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        DType::I4 => TensorData::I4(
            unpack_nibbles(raw.iter().copied(), n, true)
                .into_iter()
                .map(|v| v as i8)
                .collect(),
        ),
        DType::U4 => TensorData::U4(
            unpack_nibbles(raw.iter().copied(), n, false)
                .into_iter()
                .map(|v| v as u8)
                .collect(),
        ),
    }
}

/// Largest external data file read; far above any model edgeopt targets, and a cap on
/// what a hostile `length` can make us allocate even when the file is that large.
const MAX_EXTERNAL_BYTES: u64 = 1 << 34;

/// Reads the `want` bytes of an external tensor described by `entries` (`location`,
/// optional `offset` and `length`; `checksum` is ignored).
///
/// The location must be a relative path that stays inside `model_dir`: absolute paths,
/// `..` components, and anything that resolves outside the folder after
/// canonicalization (symlinks included) are refused, so that a model cannot make us
/// read arbitrary files. `offset + length` must lie within the file and `length` must
/// be the tensor's byte size; only then are `want` bytes allocated (at most what the
/// file holds).
pub fn read_external(
    name: &str,
    entries: &[StringStringEntryProto],
    want: usize,
    model_dir: Option<&Path>,
) -> Result<Vec<u8>> {
    let (mut location, mut offset, mut length) = (None, None, None);
    for e in entries {
        let key = e.key.as_deref().unwrap_or("");
        let value = e.value.as_deref().unwrap_or("");
        let slot = match key {
            "location" => &mut location,
            "offset" => &mut offset,
            "length" => &mut length,
            _ => continue, // "checksum" and future keys do not change where the data is
        };
        if slot.replace(value).is_some() {
            return Err(tensor_err(
                name,
                format!("external_data key '{key}' is given twice"),
            ));
        }
    }
    let location =
        location.ok_or_else(|| tensor_err(name, "external data without a 'location'"))?;
    let number = |what: &str, v: Option<&str>| -> Result<Option<u64>> {
        v.map(|s| {
            s.trim().parse::<u64>().map_err(|_| {
                tensor_err(
                    name,
                    format!("external data {what} '{s}' is not a byte count"),
                )
            })
        })
        .transpose()
    };
    let offset = number("offset", offset)?.unwrap_or(0);
    let length = number("length", length)?;
    let Some(dir) = model_dir else {
        return Err(tensor_err(
            name,
            format!(
                "its data is in the external file '{location}', which can only be found from \
                 the model's path: import the model from its file, not from bytes"
            ),
        ));
    };
    let file = resolve_inside(name, dir, location)?;
    let shown = file.display().to_string();
    let io = |e: std::io::Error| OnnxError::Io {
        path: shown.clone(),
        source: e,
    };
    let mut f = std::fs::File::open(&file).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let want64 = want as u64;
    if let Some(l) = length {
        if l != want64 {
            return Err(tensor_err(
                name,
                format!("external data length {l} does not match the tensor's {want} bytes"),
            ));
        }
    }
    let end = offset.checked_add(want64).ok_or_else(|| {
        tensor_err(
            name,
            format!("external data offset {offset} + length {want} overflows"),
        )
    })?;
    if end > size || end > MAX_EXTERNAL_BYTES {
        return Err(tensor_err(
            name,
            format!(
                "external data bytes {offset}..{end} lie beyond the end of '{location}' ({size} bytes)"
            ),
        ));
    }
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; want];
    // A file that shrank since we measured it fails here rather than reading short.
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

/// `dir/location` if `location` is a plain relative path and the file it names (after
/// resolving symlinks) lies inside `dir`.
fn resolve_inside(name: &str, dir: &Path, location: &str) -> Result<PathBuf> {
    use std::path::Component;
    let refuse = |why: &str| {
        tensor_err(
            name,
            format!("external data location '{location}' is refused: {why}"),
        )
    };
    if location.is_empty() {
        return Err(refuse("it is empty"));
    }
    let rel = Path::new(location);
    // Backslashes and drive letters are separators/roots on Windows; refuse them
    // everywhere so a model means the same file on every system.
    if rel.is_absolute() || location.starts_with(['/', '\\']) || location.contains(':') {
        return Err(refuse("absolute paths are not allowed"));
    }
    for c in rel.components() {
        match c {
            Component::Normal(p) if !p.to_string_lossy().contains('\\') => {}
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("'..' components are not allowed")),
            _ => {
                return Err(refuse(
                    "only a relative path inside the model's folder is allowed",
                ))
            }
        }
    }
    let io = |p: &Path, e: std::io::Error| OnnxError::Io {
        path: p.display().to_string(),
        source: e,
    };
    let base = dir.canonicalize().map_err(|e| io(dir, e))?;
    let joined = dir.join(rel);
    let real = joined.canonicalize().map_err(|e| {
        tensor_err(
            name,
            format!("external data file '{}': {e}", joined.display()),
        )
    })?;
    if !real.starts_with(&base) {
        return Err(refuse(
            "it resolves (through a symlink) outside the model's folder",
        ));
    }
    if !real.is_file() {
        return Err(refuse("it is not a regular file"));
    }
    Ok(real)
}

/// Decodes a serialized `TensorProto` (the `input_*.pb` / `output_*.pb` files of the
/// ONNX backend tests) into a tensor.
pub fn read_tensor_proto(bytes: &[u8]) -> Result<Tensor> {
    let t = TensorProto::decode(bytes).map_err(|e| OnnxError::Decode(e.to_string()))?;
    tensor_from_proto(&t)
}

/// Encodes a tensor as a `TensorProto` with little-endian `raw_data` (4-bit types
/// packed two per byte, low nibble first).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    let raw: Vec<u8> = match &t.data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::I4(v) => pack_nibbles(v.iter().map(|&x| x as u8)),
        TensorData::U4(v) => pack_nibbles(v.iter().copied()),
    };
    TensorProto {
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype_to_onnx(t.dtype())),
        name: Some(name.to_string()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn pack_nibbles(v: impl Iterator<Item = u8>) -> Vec<u8> {
    let v: Vec<u8> = v.map(|x| x & 0x0f).collect();
    v.chunks(2)
        .map(|c| c[0] | (c.get(1).copied().unwrap_or(0) << 4))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_dtype() {
        let cases = vec![
            Tensor::new(vec![2, 2], TensorData::F32(vec![1.0, -2.5, 3.0, 0.0])).unwrap(),
            Tensor::new(vec![3], TensorData::I4(vec![-8, 7, -1])).unwrap(),
            Tensor::new(vec![3], TensorData::U4(vec![0, 15, 9])).unwrap(),
            Tensor::new(vec![2], TensorData::Bool(vec![true, false])).unwrap(),
            Tensor::new(vec![1], TensorData::I64(vec![i64::MIN])).unwrap(),
            Tensor::new(
                vec![2],
                TensorData::F16(vec![f16::from_f32(1.5), f16::NEG_INFINITY]),
            )
            .unwrap(),
            Tensor::new(vec![0, 4], TensorData::U16(vec![])).unwrap(),
        ];
        for t in cases {
            let p = tensor_to_proto("t", &t);
            let back = read_tensor_proto(&p.encode_to_vec()).unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn dims_must_match_data() {
        let mut p = tensor_to_proto("w", &Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
        p.dims = vec![1 << 40, 1 << 40];
        let e = tensor_from_proto(&p).unwrap_err().to_string();
        assert!(e.contains("'w'"), "{e}");
        p.dims = vec![i64::MAX, i64::MAX];
        assert!(tensor_from_proto(&p).is_err());
        p.dims = vec![-1];
        assert!(tensor_from_proto(&p).is_err());
    }

    #[test]
    fn typed_fields() {
        let p = TensorProto {
            dims: vec![3],
            data_type: Some(INT8),
            int32_data: vec![-3, 0, 127],
            ..Default::default()
        };
        assert_eq!(
            tensor_from_proto(&p).unwrap().data,
            TensorData::I8(vec![-3, 0, 127])
        );
        let p = TensorProto {
            dims: vec![3],
            data_type: Some(INT4),
            int32_data: vec![0xf8, 0x07],
            ..Default::default()
        };
        assert_eq!(
            tensor_from_proto(&p).unwrap().data,
            TensorData::I4(vec![-8, -1, 7])
        );
    }
}
