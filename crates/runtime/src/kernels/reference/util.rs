//! Helpers shared by the reference kernels: dtype-generic element access, broadcasting
//! index maps, fused activations, and a safe wrapper around the `gemm` crate.

use edgeopt_ir::{Activation, Tensor, TensorData};
use half::f16;

/// Kernel-internal result: a plain message; `eval` adds the node's name.
pub type KResult<T> = std::result::Result<T, String>;

/// Element types the generic data-movement kernels handle.
pub trait Elem: Copy + PartialOrd + Send + Sync + 'static {
    /// Conversion from a real value (pad values, Clip bounds); saturating for integers.
    fn from_f64(x: f64) -> Self;
    /// The smallest value (identity of max).
    fn lowest() -> Self;
}

macro_rules! elem_int {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn from_f64(x: f64) -> Self { x as $t }
            fn lowest() -> Self { <$t>::MIN }
        }
    )*};
}
elem_int!(i8, u8, i16, u16, i32, i64);

impl Elem for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn lowest() -> Self {
        f32::NEG_INFINITY
    }
}
impl Elem for f16 {
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
    }
    fn lowest() -> Self {
        f16::NEG_INFINITY
    }
}
impl Elem for bool {
    fn from_f64(x: f64) -> Self {
        x != 0.0
    }
    fn lowest() -> Self {
        false
    }
}

/// `TensorData::V(body)` for the variant of `$data`, with `$v` bound to its `Vec`.
/// `$body` is generic code that works for every element type.
macro_rules! map_same {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            ::edgeopt_ir::TensorData::F32($v) => ::edgeopt_ir::TensorData::F32($body),
            ::edgeopt_ir::TensorData::F16($v) => ::edgeopt_ir::TensorData::F16($body),
            ::edgeopt_ir::TensorData::I8($v) => ::edgeopt_ir::TensorData::I8($body),
            ::edgeopt_ir::TensorData::U8($v) => ::edgeopt_ir::TensorData::U8($body),
            ::edgeopt_ir::TensorData::I16($v) => ::edgeopt_ir::TensorData::I16($body),
            ::edgeopt_ir::TensorData::U16($v) => ::edgeopt_ir::TensorData::U16($body),
            ::edgeopt_ir::TensorData::I32($v) => ::edgeopt_ir::TensorData::I32($body),
            ::edgeopt_ir::TensorData::I64($v) => ::edgeopt_ir::TensorData::I64($body),
            ::edgeopt_ir::TensorData::Bool($v) => ::edgeopt_ir::TensorData::Bool($body),
            ::edgeopt_ir::TensorData::I4($v) => ::edgeopt_ir::TensorData::I4($body),
            ::edgeopt_ir::TensorData::U4($v) => ::edgeopt_ir::TensorData::U4($body),
        }
    };
}
pub(crate) use map_same;

/// Expands `$m!(Variant)` for the `TensorData` variant of dtype `$dt`.
macro_rules! for_variant {
    ($dt:expr, $m:ident) => {
        match $dt {
            ::edgeopt_ir::DType::F32 => $m!(F32),
            ::edgeopt_ir::DType::F16 => $m!(F16),
            ::edgeopt_ir::DType::I8 => $m!(I8),
            ::edgeopt_ir::DType::U8 => $m!(U8),
            ::edgeopt_ir::DType::I16 => $m!(I16),
            ::edgeopt_ir::DType::U16 => $m!(U16),
            ::edgeopt_ir::DType::I32 => $m!(I32),
            ::edgeopt_ir::DType::I64 => $m!(I64),
            ::edgeopt_ir::DType::Bool => $m!(Bool),
            ::edgeopt_ir::DType::I4 => $m!(I4),
            ::edgeopt_ir::DType::U4 => $m!(U4),
        }
    };
}
pub(crate) use for_variant;

/// Gathers elements: `out[i] = data[idx[i]]`, or `fill` where `idx[i] == NONE`.
pub const NONE: usize = usize::MAX;

pub fn take(data: &TensorData, idx: &[usize], fill: f64) -> TensorData {
    map_same!(data, v => {
        let f = Elem::from_f64(fill);
        idx.iter().map(|&i| if i == NONE { f } else { v[i] }).collect()
    })
}

/// Row-major strides.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// For every element of `out` (row-major), the flat index into a tensor of shape `input`
/// broadcast to `out` (numpy rules, right-aligned).
pub fn bcast_map(input: &[usize], out: &[usize]) -> Vec<usize> {
    let st = edgeopt_ir::shape::bcast_strides(input, out);
    let n: usize = out.iter().product();
    let mut idx = Vec::with_capacity(n);
    if n == 0 {
        return idx;
    }
    let r = out.len();
    let mut pos = vec![0usize; r];
    let mut cur = 0usize;
    for _ in 0..n {
        idx.push(cur);
        // odometer increment
        for d in (0..r).rev() {
            pos[d] += 1;
            cur += st[d];
            if pos[d] < out[d] {
                break;
            }
            cur -= st[d] * out[d];
            pos[d] = 0;
        }
    }
    idx
}

/// Clamp range of a fused activation.
pub fn act_range(a: Activation) -> (f32, f32) {
    match a {
        Activation::None => (f32::NEG_INFINITY, f32::INFINITY),
        Activation::Relu => (0.0, f32::INFINITY),
        Activation::Relu6 => (0.0, 6.0),
        Activation::ReluN1To1 => (-1.0, 1.0),
    }
}

/// Applies a fused activation in place.
pub fn apply_act(y: &mut [f32], a: Activation) {
    if a == Activation::None {
        return;
    }
    let (lo, hi) = act_range(a);
    for v in y {
        *v = v.max(lo).min(hi);
    }
}

pub fn f32_tensor(shape: Vec<usize>, v: Vec<f32>) -> KResult<Tensor> {
    Tensor::new(shape, TensorData::F32(v)).map_err(|e| e.to_string())
}

pub fn f32_of(t: &Tensor) -> KResult<&[f32]> {
    t.as_f32().map_err(|e| e.to_string())
}

/// `c[m×n] (+)= a[m×k] · b[k×n]` with arbitrary row/column strides, single-threaded
/// (the evaluator parallelizes across samples). Strides are in elements. Panics (a bug,
/// not bad input) if a stride pattern would read or write outside the slices.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    c_rs: usize,
    c_cs: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, n, c_rs, c_cs) < c.len(), "sgemm: dst out of bounds");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c[i * c_rs + j * c_cs] = 0.0;
                }
            }
        }
        return;
    }
    assert!(last(m, k, a_rs, a_cs) < a.len(), "sgemm: lhs out of bounds");
    assert!(last(k, n, b_rs, b_cs) < b.len(), "sgemm: rhs out of bounds");
    // SAFETY: every element the kernel touches lies inside the slices (asserted above),
    // `c` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs as isize,
            c_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// [`sgemm`] with float64 accumulation: operands are widened, multiplied by the f64
/// kernel, and the result rounded once to f32. Used for fully connected layers
/// (MatMul, Gemm, FullyConnected), where models such as the MLPerf AD autoencoder chain
/// ten 640-wide products whose f32 summation error the next layers amplify; the cost is
/// small there (no im2col, the weights are read once per call).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_f64acc(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    c_rs: usize,
    c_cs: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        last(m, n, c_rs, c_cs) < c.len(),
        "sgemm_f64acc: dst out of bounds"
    );
    let mut dst = vec![0.0f64; m * n];
    if accumulate {
        for i in 0..m {
            for j in 0..n {
                dst[i * n + j] = c[i * c_rs + j * c_cs] as f64;
            }
        }
    }
    if k > 0 {
        assert!(
            last(m, k, a_rs, a_cs) < a.len(),
            "sgemm_f64acc: lhs out of bounds"
        );
        assert!(
            last(k, n, b_rs, b_cs) < b.len(),
            "sgemm_f64acc: rhs out of bounds"
        );
        let aw: Vec<f64> = (0..m * k)
            .map(|q| a[(q / k) * a_rs + (q % k) * a_cs] as f64)
            .collect();
        let bw: Vec<f64> = (0..k * n)
            .map(|q| b[(q / n) * b_rs + (q % n) * b_cs] as f64)
            .collect();
        // SAFETY: the packed buffers are contiguous row-major m×k, k×n and m×n.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                accumulate,
                aw.as_ptr(),
                1,
                k as isize,
                bw.as_ptr(),
                1,
                n as isize,
                1.0f64,
                1.0f64,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    for i in 0..m {
        for j in 0..n {
            c[i * c_rs + j * c_cs] = dst[i * n + j] as f32;
        }
    }
}

/// Precomputed sliding-window addressing for conv/pool (and, with roles swapped, the
/// scatter of a transposed conv): for every kernel offset `k` (row-major over the kernel
/// dims) and every position `p` (row-major over `iter` dims), the flat offset of
/// coordinate `p*stride - pad_begin + k*dilation` inside `bound` dims, or [`NONE`].
/// Stored `[k][p]` so that im2col rows are contiguous.
pub struct WindowTable {
    pub positions: usize,
    pub taps: usize,
    pub offsets: Vec<usize>,
}

pub fn window_table(
    iter: &[usize],
    bound: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads_begin: &[usize],
) -> KResult<WindowTable> {
    let nd = iter.len();
    let positions: usize = iter.iter().product();
    let taps: usize = kernel.iter().product();
    check_scratch(positions, taps)?;
    // Per dim: coordinate of (position o, tap j), or None.
    let per_dim: Vec<Vec<Option<usize>>> = (0..nd)
        .map(|d| {
            let mut v = Vec::with_capacity(iter[d] * kernel[d]);
            for j in 0..kernel[d] {
                for o in 0..iter[d] {
                    let c = (o * strides[d] + j * dilations[d]) as isize - pads_begin[d] as isize;
                    v.push((c >= 0 && (c as usize) < bound[d]).then_some(c as usize));
                }
            }
            v
        })
        .collect();
    let bstr = strides_of(bound);
    let mut offsets = Vec::with_capacity(positions * taps);
    let mut kpos = vec![0usize; nd];
    for _ in 0..taps {
        let mut ppos = vec![0usize; nd];
        for _ in 0..positions {
            let mut off = 0usize;
            let mut ok = true;
            for d in 0..nd {
                match per_dim[d][kpos[d] * iter[d] + ppos[d]] {
                    Some(c) => off += c * bstr[d],
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            offsets.push(if ok { off } else { NONE });
            inc(&mut ppos, iter);
        }
        inc(&mut kpos, kernel);
    }
    Ok(WindowTable {
        positions,
        taps,
        offsets,
    })
}

/// Largest scratch buffer (elements) a kernel allocates for addressing or im2col: far
/// beyond any real model, but a corrupt one (huge kernel over a huge output) must get
/// an error, not an aborted allocation.
const MAX_SCRATCH: usize = 1 << 31;

/// Checks that an `a × b` scratch buffer stays under [`MAX_SCRATCH`] elements.
pub fn check_scratch(a: usize, b: usize) -> KResult<()> {
    match a.checked_mul(b) {
        Some(n) if n <= MAX_SCRATCH => Ok(()),
        _ => Err(format!("scratch buffer of {a} x {b} elements is too large")),
    }
}

fn strides_of(shape: &[usize]) -> Vec<usize> {
    strides(shape)
}

/// Row-major odometer increment.
pub fn inc(pos: &mut [usize], shape: &[usize]) {
    for d in (0..shape.len()).rev() {
        pos[d] += 1;
        if pos[d] < shape[d] {
            return;
        }
        pos[d] = 0;
    }
}

/// Upcasts f16 data to f32 (other dtypes unchanged).
pub fn upcast(t: &Tensor) -> Tensor {
    match &t.data {
        TensorData::F16(v) => Tensor {
            shape: t.shape.clone(),
            data: TensorData::F32(v.iter().map(|x| x.to_f32()).collect()),
        },
        _ => t.clone(),
    }
}

/// Rounds f32 data to f16.
pub fn downcast(t: Tensor) -> Tensor {
    match t.data {
        TensorData::F32(v) => Tensor {
            shape: t.shape,
            data: TensorData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        },
        _ => t,
    }
}

/// The Gauss error function, accurate to a few ulp of f64 (so exact after rounding to
/// f32 in all but rare ties). Rust's std has no erf.
///
/// Uses `erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (1*3*...*(2n+1))`, whose
/// terms are all positive (no cancellation); beyond |x| = 6, 1 - erf(|x|) < 1e-17.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= 6.0 {
        return 1.0f64.copysign(x);
    }
    let two_x2 = 2.0 * a * a;
    let (mut term, mut sum) = (a, a);
    let mut n = 0.0;
    // Terms grow until n ~ x^2 (at most 36 here), then shrink geometrically.
    while term > sum * 1e-17 {
        n += 1.0;
        term *= two_x2 / (2.0 * n + 1.0);
        sum += term;
    }
    let r = std::f64::consts::FRAC_2_SQRT_PI * (-a * a).exp() * sum;
    r.min(1.0).copysign(x)
}

/// The logistic function, split by sign so `exp` never overflows.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let t = x.exp();
        t / (1.0 + t)
    }
}
