//! Fast integer kernels: the same arithmetic as [`super::quantized`], reorganised for
//! speed, bit for bit.
//!
//! Why they are bit-exact: every quantized kernel is "exact i32 accumulation, then a
//! fixed-point output stage". The accumulators here are computed in a different order
//! (GEMM micro-kernels over packed weights, SIMD lanes) but i32 sums of products are
//! exact (wrapping, like the reference), so any order gives the same integers. The
//! output stages ([`requant`]) evaluate the very formulas of
//! [`super::quantized::common::OutputStage`] and `fixedpoint`, rewritten branch-free
//! so they vectorize; property tests compare them with the reference on random data.
//!
//! Instruction sets: every kernel has one portable Rust body. [`Isa::Avx2`] runs the
//! GEMM through hand-written AVX2 micro-kernels (`vpmaddwd` on i16 operands, which
//! cannot saturate for 8-bit data minus an 8-bit zero point), fully-connected layers
//! whose weights allow it through [`maddubs`] (`vpmaddubsw` with partial sums the
//! weights bound), and compiles the other bodies with AVX2 enabled so LLVM vectorizes
//! them; [`Isa::Portable`] runs the same
//! bodies without it. AVX-VNNI adds a 256-bit u8 x i8 `vpdpbusd` GEMM. AVX-512
//! (F/BW/VL/VNNI, [`avx512`]) runs convolutions and fully-connected layers as an
//! implicit 512-bit `vpdpbusd` GEMM reading a padded copy of the input in place (no
//! im2col) with the output stage fused in the micro-kernel's epilogue (accumulators
//! never stored), depthwise convolutions with `vpdpwssd` and the same epilogue, and
//! add/sub/mul 16 lanes at a time; its output stage is the one-step 64-bit form of
//! [`requant::Wide`]. Every instruction set is detected at run time
//! (`is_x86_feature_detected!`), and `EDGEOPT_KERNELS` pins one ([`Kernels::from_env`])
//! so each path can be run (and is tested: [`Isa::available`]) on one machine.
//!
//! Preparation: [`prepare`] builds a [`Prepared`] kernel for one node from its
//! constant weights (packed once) and quantization parameters; the kernel keeps its
//! scratch buffers between runs. [`crate::executor::Session`] prepares every node
//! once; the stateless [`crate::run`] prepares and runs in one go (`eval_once`).

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod conv;
pub mod elementwise;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
pub mod maddubs;
pub mod pool;
pub mod requant;
pub mod reshape;
pub mod softmax;
#[cfg(test)]
mod tests;
pub mod winograd;

use super::quantized::common::{is_qint, QInt};
use super::NodeCtx;
use crate::error::Result;
use edgeopt_ir::{DType, Op, Tensor, TensorData};

/// Instruction set a fast kernel runs on. `Avx2` can only be obtained when the CPU
/// has it, so the `unsafe` calls into `#[target_feature]` code are sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isa(IsaKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IsaKind {
    Portable,
    Avx2,
    /// AVX2 plus AVX-VNNI (`vpdpbusd`: u8 x i8 dot products of 4 into i32).
    AvxVnni,
    /// AVX2 plus AVX-512 F/BW/VL/VNNI: 512-bit `vpdpbusd` GEMMs with the output stage
    /// fused in their epilogue ([`avx512`]). Does not imply AVX-VNNI (Ice Lake has
    /// AVX512-VNNI only), so the 256-bit VNNI kernels are never run under it.
    Avx512,
}

impl Isa {
    /// Plain Rust, no target features beyond the compilation target's baseline.
    pub const PORTABLE: Isa = Isa(IsaKind::Portable);

    /// AVX2 (and FMA-era x86_64) when the running CPU supports it.
    pub fn avx2() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return Some(Isa(IsaKind::Avx2));
            }
        }
        None
    }

    /// AVX2 + AVX-VNNI when the running CPU supports both.
    pub fn avx_vnni() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("avxvnni")
            {
                return Some(Isa(IsaKind::AvxVnni));
            }
        }
        None
    }

    /// AVX2 + AVX-512 F/BW/VL/VNNI when the running CPU supports them.
    pub fn avx512() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Some(Isa(IsaKind::Avx512));
            }
        }
        None
    }

    /// The best instruction set of this CPU.
    pub fn detect() -> Isa {
        Isa::avx512()
            .or_else(Isa::avx_vnni)
            .or_else(Isa::avx2)
            .unwrap_or(Isa::PORTABLE)
    }

    /// Every instruction set this CPU can run, portable first (what the bit-exactness
    /// tests iterate over).
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::PORTABLE];
        v.extend(Isa::avx2());
        v.extend(Isa::avx_vnni());
        v.extend(Isa::avx512());
        v
    }

    /// Whether AVX2 code may run (also true with AVX-VNNI and AVX-512).
    pub fn is_avx2(self) -> bool {
        matches!(self.0, IsaKind::Avx2 | IsaKind::AvxVnni | IsaKind::Avx512)
    }

    /// Whether the AVX-512 (F/BW/VL/VNNI) kernels may run.
    pub fn is_avx512(self) -> bool {
        self.0 == IsaKind::Avx512
    }

    /// AVX2 without VNNI of any width: the `vpmaddwd` kernels of [`avx2`] (implicit
    /// GEMM, Winograd, depthwise) run. With AVX-VNNI the u8 GEMM is kept (not measured
    /// against them), with AVX-512 its own kernels.
    pub fn is_avx2_only(self) -> bool {
        self.0 == IsaKind::Avx2
    }

    /// Whether the AVX-VNNI u8 x i8 GEMM may run.
    pub fn is_vnni(self) -> bool {
        self.0 == IsaKind::AvxVnni
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            IsaKind::Portable => "portable",
            IsaKind::Avx2 => "avx2",
            IsaKind::AvxVnni => "avx-vnni",
            IsaKind::Avx512 => "avx512",
        }
    }
}

/// Which kernels a session (or the stateless executor) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Only the reference kernels (`quantized`, `reference`).
    Reference,
    /// Fast kernels on the given instruction set where they apply, reference elsewhere.
    Fast(Isa),
}

impl Kernels {
    /// Fast kernels on the best instruction set of this CPU.
    pub fn native() -> Kernels {
        Kernels::Fast(Isa::detect())
    }

    /// By name: `reference`, `portable`, `avx2` (no VNNI), `avx-vnni` (256-bit VNNI,
    /// no AVX-512), `avx512`, or anything else / `None` for native (the best this CPU
    /// has). An instruction set the CPU lacks falls back to the next lower one. The
    /// command line passes `EDGEOPT_KERNELS` here, so a whole-model run can be repeated
    /// on any path without recompiling; the runtime itself never reads it.
    pub fn from_name(name: Option<&str>) -> Kernels {
        let avx2 = || Isa::avx2().unwrap_or(Isa::PORTABLE);
        match name {
            Some("reference") => Kernels::Reference,
            Some("portable") => Kernels::Fast(Isa::PORTABLE),
            Some("avx2") => Kernels::Fast(avx2()),
            Some("avx-vnni") => Kernels::Fast(Isa::avx_vnni().unwrap_or_else(avx2)),
            Some("avx512") => Kernels::Fast(Isa::avx512().unwrap_or_else(avx2)),
            _ => Kernels::native(),
        }
    }

    /// [`Kernels::from_name`] of the `EDGEOPT_KERNELS` environment variable: for
    /// programs (the command line, examples, benchmarks), never called by the runtime.
    pub fn from_env() -> Kernels {
        Kernels::from_name(std::env::var("EDGEOPT_KERNELS").ok().as_deref())
    }
}

/// A node's kernel with its constants prepared (weights packed, output stages
/// computed) and its scratch buffers kept between runs.
pub trait Prepared: Send {
    /// Runs the node. `out` holds the tensor of the previous run (if any); kernels
    /// overwrite it in place when its type fits, so a steady-state run allocates
    /// nothing.
    fn run(
        &mut self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()>;
}

/// A prepared fast kernel for `ctx.node`, if one applies. `consts[i]` is input `i`
/// when it is a constant (weights, bias) known at preparation time.
pub fn prepare(ctx: &NodeCtx, consts: &[Option<&Tensor>], isa: Isa) -> Option<Box<dyn Prepared>> {
    let node = ctx.node;
    let x = node.input(0)?;
    let xv = &ctx.graph.values[x];
    if !is_qint(xv.dtype) || xv.quant.is_none() {
        return None;
    }
    let num = ctx.numerics();
    macro_rules! by8 {
        ($f:ident ( $($arg:expr),* )) => {
            match xv.dtype {
                DType::I8 => $f::<i8>($($arg),*),
                DType::U8 => $f::<u8>($($arg),*),
                _ => None,
            }
        };
    }
    match &node.op {
        Op::Conv(a) => by8!(prep_conv(ctx, a, consts, num, isa)),
        Op::FullyConnected {
            activation,
            keep_num_dims,
            ..
        } => by8!(prep_fc(ctx, *activation, *keep_num_dims, consts, num, isa)),
        Op::Binary { kind, activation } => {
            by8!(prep_binary(ctx, *kind, *activation, isa))
        }
        Op::AveragePool(a) => by8!(prep_pool(ctx, a, false, isa)),
        Op::MaxPool(a) => by8!(prep_pool(ctx, a, true, isa)),
        Op::Softmax { axis, beta } => by8!(prep_softmax(ctx, *axis, *beta, num)),
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity => by8!(prep_reshape(ctx)),
        Op::ConvTranspose(_)
        | Op::Gemm { .. }
        | Op::MatMul
        | Op::Compare(_)
        | Op::Where
        | Op::Unary(_)
        | Op::Clip { .. }
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::LogSoftmax { .. }
        | Op::GlobalAveragePool
        | Op::BatchNorm { .. }
        | Op::LayerNorm { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::StridedSlice(_)
        | Op::Tile { .. }
        | Op::Fill
        | Op::Gather { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Lstm { .. }
        | Op::TopK { .. }
        | Op::Gru { .. }
        | Op::Reduce { .. }
        | Op::Resize(_)
        | Op::Shape
        | Op::Cast { .. }
        | Op::QuantizeLinear { .. }
        | Op::DequantizeLinear { .. }
        | Op::QLinearConv(_)
        | Op::QLinearMatMul
        | Op::ConvInteger(_)
        | Op::MatMulInteger
        | Op::Quantize
        | Op::Dequantize => None,
    }
}

fn prep_conv<T: QInt>(
    ctx: &NodeCtx,
    a: &edgeopt_ir::ConvAttrs,
    consts: &[Option<&Tensor>],
    num: super::quantized::Numerics,
    isa: Isa,
) -> Option<Box<dyn Prepared>> {
    conv::ConvKernel::<T>::new(ctx, a, consts, num, isa).map(|k| Box::new(k) as Box<dyn Prepared>)
}
fn prep_fc<T: QInt>(
    ctx: &NodeCtx,
    act: edgeopt_ir::Activation,
    keep: bool,
    consts: &[Option<&Tensor>],
    num: super::quantized::Numerics,
    isa: Isa,
) -> Option<Box<dyn Prepared>> {
    conv::FcKernel::<T>::new(ctx, act, keep, consts, num, isa)
        .map(|k| Box::new(k) as Box<dyn Prepared>)
}
fn prep_binary<T: QInt>(
    ctx: &NodeCtx,
    kind: edgeopt_ir::BinaryKind,
    act: edgeopt_ir::Activation,
    isa: Isa,
) -> Option<Box<dyn Prepared>> {
    elementwise::BinaryKernel::<T>::new(ctx, kind, act, isa)
        .map(|k| Box::new(k) as Box<dyn Prepared>)
}
fn prep_pool<T: QInt>(
    ctx: &NodeCtx,
    a: &edgeopt_ir::PoolAttrs,
    is_max: bool,
    isa: Isa,
) -> Option<Box<dyn Prepared>> {
    pool::PoolKernel::<T>::new(ctx, a, is_max, isa).map(|k| Box::new(k) as Box<dyn Prepared>)
}

fn prep_softmax<T: QInt>(
    ctx: &NodeCtx,
    axis: i64,
    beta: f32,
    num: super::quantized::Numerics,
) -> Option<Box<dyn Prepared>> {
    softmax::SoftmaxKernel::<T>::new(ctx, axis, beta, num).map(|k| Box::new(k) as Box<dyn Prepared>)
}

fn prep_reshape<T: QInt>(ctx: &NodeCtx) -> Option<Box<dyn Prepared>> {
    reshape::ReshapeKernel::<T>::new(ctx).map(|k| Box::new(k) as Box<dyn Prepared>)
}

/// Prepares and runs a node in one go (the stateless executor's path): `None` when no
/// fast kernel applies.
pub fn eval_once(
    ctx: &NodeCtx,
    inputs: &[Option<&Tensor>],
    isa: Isa,
) -> Option<Result<Vec<Tensor>>> {
    let mut k = prepare(ctx, inputs, isa)?;
    let mut out = None;
    Some(k.run(ctx, inputs, &mut out).and_then(|()| {
        out.map(|t| vec![t])
            .ok_or_else(|| ctx.error("fast kernel produced no output"))
    }))
}

/// The `[T]` buffer of `out` resized to `n` elements with shape `shape`, reusing the
/// previous run's allocation when it has the same element type.
pub(crate) fn out_buffer<'o, T: QInt>(
    out: &'o mut Option<Tensor>,
    shape: &[usize],
    n: usize,
) -> &'o mut [T] {
    let reuse = matches!(out, Some(t) if t.dtype() == T::DTYPE);
    if !reuse {
        *out = Some(Tensor {
            shape: shape.to_vec(),
            data: T::into_data(vec![T::from_i32(0); n]),
        });
    }
    let t = out.as_mut().expect("set above");
    // Element by element: `!=` on slices calls `memcmp`, a library call per node for
    // shapes of a few dimensions.
    if t.shape.len() != shape.len() || t.shape.iter().zip(shape).any(|(a, b)| a != b) {
        t.shape.clear();
        t.shape.extend_from_slice(shape);
    }
    let v = T::vec_mut(&mut t.data).expect("dtype checked above");
    v.resize(n, T::from_i32(0));
    &mut v[..]
}

/// An 8-bit slice as bytes (`T` is i8 or u8).
pub(crate) fn bytes<T: QInt>(v: &[T]) -> &[u8] {
    assert_eq!(std::mem::size_of::<T>(), 1, "8-bit values only");
    // SAFETY: same length in bytes, alignment 1, every bit pattern valid.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len()) }
}

/// A zero-initialised buffer whose slice starts on a 64-byte boundary (a cache
/// line). The AVX2 kernels load 32 bytes at a time at multiples of 32 bytes from
/// their i16 buffers; from a `Vec`'s 16-byte alignment a quarter of those loads cross
/// a cache line, which cost DS-CNN's depthwise layers about 4% (measured on Zen 2).
#[derive(Debug, Default)]
pub struct Aligned<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    const LINE: usize = 64;

    /// `len` default (zero) values.
    pub fn zeroed(len: usize) -> Aligned<T> {
        let size = std::mem::size_of::<T>().max(1);
        let buf = vec![T::default(); len + Self::LINE / size];
        // The allocation is aligned for T, so the distance to the next line is a
        // whole number of elements.
        let start = (Self::LINE - buf.as_ptr() as usize % Self::LINE) % Self::LINE / size;
        Aligned { buf, start, len }
    }

    /// A copy of `v`, aligned.
    pub fn from_slice(v: &[T]) -> Aligned<T> {
        let mut a = Aligned::zeroed(v.len());
        a.as_mut_slice().copy_from_slice(v);
        a
    }

    pub fn as_slice(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// A clone is a new allocation, aligned anew (a derived clone would keep the old
/// offset into a buffer at another address).
impl<T: Copy + Default> Clone for Aligned<T> {
    fn clone(&self) -> Self {
        Aligned::from_slice(self.as_slice())
    }
}

/// An 8-bit output buffer as bytes (`T` is i8 or u8: every bit pattern is valid).
pub(crate) fn bytes_mut<T: QInt>(v: &mut [T]) -> &mut [u8] {
    assert_eq!(std::mem::size_of::<T>(), 1, "8-bit values only");
    // SAFETY: same length in bytes, alignment 1, and u8 has no invalid values.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len()) }
}

/// Whether `t` holds integer data (used for weights: 8-bit and 4-bit types).
pub(crate) fn weight_dtype_ok(t: &Tensor) -> bool {
    matches!(
        t.data,
        TensorData::I8(_) | TensorData::U8(_) | TensorData::I4(_) | TensorData::U4(_)
    )
}
