//! NumPy `.npy` (format 1.0/2.0/3.0, C order) and gzip-compressed `.npy.gz` files,
//! read into and written from [`edgeopt_ir::Tensor`].
//!
//! Reading never allocates more than the bytes actually present: element data is read
//! through a length-limited reader, so a header that claims a huge shape fails with
//! "truncated" instead of allocating.

use edgeopt_ir::{checked_numel, DType, Tensor, TensorData};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The OS error is part of this message and not a `source()`, so a printed error
    /// chain names it once.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{0}: not a .npy file (bad magic)")]
    Magic(String),
    #[error("{0}: bad .npy header: {1}")]
    Header(String, String),
    #[error(
        "{0}: unsupported dtype '{1}' (supported: f4 f2 f8 i1 u1 i2 u2 i4 i8 b1, little-endian)"
    )]
    DType(String, String),
    #[error("{0}: truncated: header promises {1} data bytes, file has {2}")]
    Truncated(String, usize, usize),
}

pub type Result<T> = std::result::Result<T, NpyError>;

/// Longest header we accept; real headers are < 200 bytes.
const MAX_HEADER: usize = 1 << 16;

/// Reads a `.npy` or `.npy.gz` file (gzip detected by its magic bytes).
pub fn read(path: &Path) -> Result<Tensor> {
    let name = path.display().to_string();
    let io = |e| NpyError::Io {
        path: name.clone(),
        error: e,
    };
    let mut f = BufReader::new(File::open(path).map_err(io)?);
    let mut magic = [0u8; 2];
    f.read_exact(&mut magic).map_err(io)?;
    let f = BufReader::new(File::open(path).map_err(io)?);
    if magic == [0x1f, 0x8b] {
        read_from(flate2::read::GzDecoder::new(f), &name)
    } else {
        read_from(f, &name)
    }
}

/// Reads a `.npy` stream; `name` is used in error messages.
pub fn read_from<R: Read>(mut r: R, name: &str) -> Result<Tensor> {
    let io = |e| NpyError::Io {
        path: name.to_string(),
        error: e,
    };
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(io)?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(NpyError::Magic(name.into()));
    }
    let major = pre[6];
    let hlen = match major {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(io)?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(io)?;
            u32::from_le_bytes(b) as usize
        }
        v => {
            return Err(NpyError::Header(
                name.into(),
                format!("version {v} unknown"),
            ))
        }
    };
    if hlen > MAX_HEADER {
        return Err(NpyError::Header(
            name.into(),
            format!("header of {hlen} bytes"),
        ));
    }
    let mut hbuf = Vec::new();
    r.by_ref()
        .take(hlen as u64)
        .read_to_end(&mut hbuf)
        .map_err(io)?;
    if hbuf.len() != hlen {
        return Err(NpyError::Truncated(name.into(), hlen, hbuf.len()));
    }
    let header = String::from_utf8_lossy(&hbuf);
    let descr = dict_str(&header, "descr")
        .ok_or_else(|| NpyError::Header(name.into(), "no descr".into()))?;
    let fortran = dict_raw(&header, "fortran_order")
        .ok_or_else(|| NpyError::Header(name.into(), "no fortran_order".into()))?;
    if fortran.starts_with("True") {
        return Err(NpyError::Header(
            name.into(),
            "Fortran order is not supported".into(),
        ));
    }
    let shape =
        parse_shape(&header).ok_or_else(|| NpyError::Header(name.into(), "bad shape".into()))?;
    let (dtype, elem) =
        parse_descr(&descr).ok_or_else(|| NpyError::DType(name.into(), descr.clone()))?;
    let n = checked_numel(&shape).map_err(|e| NpyError::Header(name.into(), e.to_string()))?;
    let nbytes = n
        .checked_mul(elem)
        .ok_or_else(|| NpyError::Header(name.into(), "size overflows".into()))?;
    let mut raw = Vec::new();
    r.take(nbytes as u64).read_to_end(&mut raw).map_err(io)?;
    if raw.len() != nbytes {
        return Err(NpyError::Truncated(name.into(), nbytes, raw.len()));
    }
    let data = decode(&descr, dtype, &raw);
    Tensor::new(shape, data).map_err(|e| NpyError::Header(name.into(), e.to_string()))
}

fn decode(descr: &str, dtype: DType, raw: &[u8]) -> TensorData {
    fn chunks<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().unwrap()))
            .collect()
    }
    match (descr.trim_start_matches(['<', '|', '=']), dtype) {
        ("f8", _) => TensorData::F32(chunks::<8, _>(raw, |b| f64::from_le_bytes(b) as f32)),
        ("f4", _) => TensorData::F32(chunks::<4, _>(raw, f32::from_le_bytes)),
        ("f2", _) => TensorData::F16(chunks::<2, _>(raw, half::f16::from_le_bytes)),
        ("i1", _) => TensorData::I8(raw.iter().map(|&b| b as i8).collect()),
        ("u1", _) => TensorData::U8(raw.to_vec()),
        ("b1", _) => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        ("i2", _) => TensorData::I16(chunks::<2, _>(raw, i16::from_le_bytes)),
        ("u2", _) => TensorData::U16(chunks::<2, _>(raw, u16::from_le_bytes)),
        ("i4", _) => TensorData::I32(chunks::<4, _>(raw, i32::from_le_bytes)),
        ("i8", _) => TensorData::I64(chunks::<8, _>(raw, i64::from_le_bytes)),
        _ => unreachable!("parse_descr accepted {descr}"),
    }
}

/// dtype and element size for a descr; f8 is narrowed to f32 (documented in `read`).
fn parse_descr(d: &str) -> Option<(DType, usize)> {
    if d.starts_with('>') {
        return None;
    }
    Some(match d.trim_start_matches(['<', '|', '=']) {
        "f8" => (DType::F32, 8),
        "f4" => (DType::F32, 4),
        "f2" => (DType::F16, 2),
        "i1" => (DType::I8, 1),
        "u1" => (DType::U8, 1),
        "b1" => (DType::Bool, 1),
        "i2" => (DType::I16, 2),
        "u2" => (DType::U16, 2),
        "i4" => (DType::I32, 4),
        "i8" => (DType::I64, 8),
        _ => return None,
    })
}

/// The text after `'key':` up to the end of the header.
fn dict_raw<'a>(h: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}'");
    let i = h.find(&pat)? + pat.len();
    let rest = h[i..].trim_start();
    Some(rest.strip_prefix(':')?.trim_start())
}

fn dict_str(h: &str, key: &str) -> Option<String> {
    let r = dict_raw(h, key)?;
    let r = r.strip_prefix('\'')?;
    Some(r[..r.find('\'')?].to_string())
}

fn parse_shape(h: &str) -> Option<Vec<usize>> {
    let r = dict_raw(h, "shape")?.strip_prefix('(')?;
    let inner = &r[..r.find(')')?];
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().ok())
        .collect()
}

fn descr_of(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::I4 | DType::U4 => return None,
    })
}

/// Serializes a tensor as `.npy` (format 1.0). 4-bit tensors are widened to i1/u1.
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let descr = descr_of(t.dtype()).unwrap_or(if t.dtype() == DType::I4 { "|i1" } else { "|u1" });
    let shape = match t.shape.len() {
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that magic (6) + version (2) + len (2) + header is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.storage_bytes());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match &t.data {
        TensorData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::F16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I8(v) | TensorData::I4(v) => out.extend(v.iter().map(|&x| x as u8)),
        TensorData::U8(v) | TensorData::U4(v) => out.extend_from_slice(v),
        TensorData::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
        TensorData::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
    out
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename, so
/// a failure never leaves a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    edgeopt_ir::write_atomic(path, bytes)
}

/// Writes a tensor as `.npy` atomically.
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    write_atomic(path, &to_bytes(t)).map_err(|e| NpyError::Io {
        path: path.display().to_string(),
        error: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_dtypes() {
        let cases = vec![
            Tensor::new(
                vec![2, 3],
                TensorData::F32(vec![1.0, -2.5, 3.0, 0.0, 1e-9, 7.0]),
            )
            .unwrap(),
            Tensor::new(vec![4], TensorData::I8(vec![-128, 0, 5, 127])).unwrap(),
            Tensor::new(vec![2, 1], TensorData::I64(vec![i64::MIN, 42])).unwrap(),
            Tensor::new(vec![], TensorData::I32(vec![-7])).unwrap(),
            Tensor::new(vec![0, 3], TensorData::U8(vec![])).unwrap(),
        ];
        for t in cases {
            let b = to_bytes(&t);
            assert_eq!(b.len() % 64, (t.storage_bytes()) % 64);
            let back = read_from(&b[..], "mem").unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn truncated_and_hostile_headers_error() {
        let t = Tensor::from_f32(vec![8], vec![1.0; 8]).unwrap();
        let b = to_bytes(&t);
        for cut in [0, 5, 9, 40, b.len() - 1] {
            assert!(read_from(&b[..cut], "mem").is_err(), "cut {cut}");
        }
        // A header claiming an absurd shape must fail without allocating it.
        let with_header = |h: &str| {
            let mut v = b"\x93NUMPY\x01\x00".to_vec();
            v.extend_from_slice(&(h.len() as u16).to_le_bytes());
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(&[0u8; 32]);
            v
        };
        let evil =
            with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999,), }");
        assert!(matches!(
            read_from(&evil[..], "mem"),
            Err(NpyError::Truncated(..))
        ));
        let evil = with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }");
        assert!(read_from(&evil[..], "mem").is_err());
        let evil = with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }");
        assert!(matches!(
            read_from(&evil[..], "mem"),
            Err(NpyError::DType(..))
        ));
    }

    #[test]
    fn reads_shared_mnist_labels() {
        let Some(p) = edgeopt_testkit::data_file("mnist/test_y.npy") else {
            return;
        };
        let t = read(&p).unwrap();
        assert_eq!(t.shape, vec![10000]);
        assert_eq!(t.dtype(), DType::U8);
        let Some(p) = edgeopt_testkit::data_file("mnist/train_x.npy.gz") else {
            return;
        };
        let t = read(&p).unwrap();
        assert_eq!(t.shape, vec![60000, 28, 28]);
    }
}
