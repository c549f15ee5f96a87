//! Fast TFLite ADD / SUB / MUL on 8-bit tensors of identical shapes (the residual adds
//! of ResNets); broadcasting goes to the reference kernel. The per-element formulas
//! are those of `quantized::elementwise::tflite_binary`, with the fixed-point helpers
//! in their branch-free form ([`super::requant::high_mul`], [`super::requant::div_pot`])
//! so the loop vectorizes.

#[cfg(target_arch = "x86_64")]
use super::avx512::{self, BinaryWide};
use super::requant::{div_pot, high_mul, Wide};
use super::{bytes, bytes_mut};
use super::{out_buffer, Isa, Prepared};
use crate::error::Result;
use crate::kernels::quantized::common::{activation_range, input, per_tensor, QInt};
use crate::kernels::quantized::common::{OutputStage, Rounding};
use crate::kernels::quantized::elementwise::tflite_binary;
use crate::kernels::quantized::fixedpoint::{
    quantize_multiplier, quantize_multiplier_smaller_than_one_exp,
};
use crate::kernels::NodeCtx;
use edgeopt_ir::{Activation, BinaryKind, Tensor};
use std::marker::PhantomData;

/// A multiplier as (m, left shift, right shift, rounding mask).
#[derive(Debug, Clone, Copy)]
struct Mult {
    m: i32,
    left: u32,
    right: u32,
    mask: i32,
}

impl Mult {
    /// From `(multiplier, shift)`; the left part is used only by `Mul`
    /// (`MultiplyByQuantizedMultiplier`), the `SmallerThanOneExp` form has none.
    fn new((m, shift): (i32, i32), allow_left: bool) -> Option<Mult> {
        if m == i32::MIN {
            return None;
        }
        let right = (-shift).clamp(0, 31) as u32;
        Some(Mult {
            m,
            left: if allow_left {
                (shift.max(0) as u32) & 31
            } else {
                0
            },
            right,
            mask: ((1i64 << right) - 1) as i32,
        })
    }

    #[inline(always)]
    fn apply(self, x: i32) -> i32 {
        div_pot(
            high_mul(x.wrapping_shl(self.left), self.m),
            self.right,
            self.mask,
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Plan {
    AddSub {
        sub: bool,
        left_shift: u32,
        za: i32,
        zb: i32,
        m1: Mult,
        m2: Mult,
        mo: Mult,
    },
    Mul {
        za: i32,
        zb: i32,
        m: Mult,
    },
}

pub struct BinaryKernel<T> {
    kind: BinaryKind,
    activation: Activation,
    isa: Isa,
    plan: Plan,
    /// The AVX-512 form of the same arithmetic, when the ISA has it.
    #[cfg(target_arch = "x86_64")]
    wide: Option<avx512::BinaryWide>,
    /// Every result of the op, indexed by the two input bytes (`a << 8 | b`): an 8-bit
    /// binary op is a function of two bytes, so a 64 KiB table holds all of it, and a
    /// lookup per element beats evaluating three fixed-point rescales without
    /// 512-bit vectors.
    lut: Option<Box<[u8; 1 << 16]>>,
    zp: i32,
    min: i32,
    max: i32,
    _t: PhantomData<T>,
}

impl<T: QInt> BinaryKernel<T> {
    pub fn new(ctx: &NodeCtx, kind: BinaryKind, activation: Activation, isa: Isa) -> Option<Self> {
        if std::mem::size_of::<T>() != 1 {
            return None;
        }
        let qa = per_tensor(ctx, ctx.in_quant(0), "input 0").ok()?;
        let qb = per_tensor(ctx, ctx.in_quant(1), "input 1").ok()?;
        let qy = per_tensor(ctx, ctx.out_quant(0), "output").ok()?;
        let (min, max) = activation_range::<T>(activation, qy);
        // The raw (multiplier, shift) pairs: input rescales and output (add/sub), or
        // the output only (mul).
        let (plan, mults) = match kind {
            BinaryKind::Add | BinaryKind::Sub => {
                // Constants exactly as the reference computes them (8-bit: shift 20).
                let left_shift = 20;
                let twice_max = (2.0f32 * qa.scale.max(qb.scale)) as f64;
                let m1 = quantize_multiplier_smaller_than_one_exp(qa.scale as f64 / twice_max);
                let m2 = quantize_multiplier_smaller_than_one_exp(qb.scale as f64 / twice_max);
                let mo = quantize_multiplier_smaller_than_one_exp(
                    twice_max / (((1i32 << left_shift) as f32) * qy.scale) as f64,
                );
                let plan = Plan::AddSub {
                    sub: kind == BinaryKind::Sub,
                    left_shift,
                    za: qa.zp,
                    zb: qb.zp,
                    m1: Mult::new(m1, false)?,
                    m2: Mult::new(m2, false)?,
                    mo: Mult::new(mo, false)?,
                };
                (plan, [m1, m2, mo])
            }
            BinaryKind::Mul => {
                let m = quantize_multiplier(qa.scale as f64 * qb.scale as f64 / qy.scale as f64);
                let plan = Plan::Mul {
                    za: qa.zp,
                    zb: qb.zp,
                    m: Mult::new(m, true)?,
                };
                (plan, [m, m, m])
            }
            _ => return None,
        };
        #[cfg(target_arch = "x86_64")]
        let wide = if isa.is_avx512() {
            binary_wide(plan, mults, qy.zp, min, max)
        } else {
            None
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = mults;
        let lut = (!isa.is_avx512()).then(|| table::<T>(plan, qy.zp, min, max));
        Some(BinaryKernel {
            kind,
            activation,
            isa,
            plan,
            #[cfg(target_arch = "x86_64")]
            wide,
            lut,
            zp: qy.zp,
            min,
            max,
            _t: PhantomData,
        })
    }
}

/// `y[i] = lut[a[i] << 8 | b[i]]` (bytes). With AVX2 the indices of 32 elements are
/// formed by one byte interleave (`b` low, `a` high) and the lookups are scalar loads
/// from a small index buffer, about 1.3 cycles an element on Zen 2 (the 64 KiB table
/// lives in L2; `vpgatherdd` was 1.6x slower).
fn lookup(isa: Isa, lut: &[u8; 1 << 16], a: &[u8], b: &[u8], y: &mut [u8]) {
    assert!(a.len() == y.len() && b.len() == y.len(), "same shapes");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: AVX2 proven by `isa`; 32-byte loads and stores below `main`.
        done = unsafe { lookup_avx2(lut, a, b, y) };
    }
    let _ = isa;
    for ((o, &x), &z) in y[done..].iter_mut().zip(&a[done..]).zip(&b[done..]) {
        *o = lut[(x as usize) << 8 | z as usize];
    }
}

/// The first multiple of 32 elements; returns how many.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lookup_avx2(lut: &[u8; 1 << 16], a: &[u8], b: &[u8], y: &mut [u8]) -> usize {
    // SAFETY: the CPU has AVX2 (the caller checked `Isa::Avx2`); the 32-byte loads of
    // `a`, `b` and stores to `y` stay below `main <= y.len()` (and `a`, `b` are as long
    // as `y`), and the table lookups index `lut` with 16-bit values, all below its `1 << 16`
    // entries.
    unsafe {
        use std::arch::x86_64::*;
        let main = y.len() / 32 * 32;
        let mut idx = [0u64; 8];
        let mut i = 0;
        while i < main {
            let va = _mm256_loadu_si256(a.as_ptr().add(i) as *const __m256i);
            let vb = _mm256_loadu_si256(b.as_ptr().add(i) as *const __m256i);
            // Per 128-bit lane: lo = elements 0-7 | 16-23, hi = 8-15 | 24-31.
            let lo = _mm256_unpacklo_epi8(vb, va);
            let hi = _mm256_unpackhi_epi8(vb, va);
            _mm256_storeu_si256(idx.as_mut_ptr() as *mut __m256i, lo);
            _mm256_storeu_si256(idx.as_mut_ptr().add(4) as *mut __m256i, hi);
            let out = y.as_mut_ptr().add(i);
            // Four indices per 64-bit load, four results per 32-bit store (a load and a
            // store per element was 10% slower: the table misses L1 either way). Index
            // words 0, 1 = elements 0-7; 2, 3 = 16-23; 4, 5 = 8-15; 6, 7 = 24-31.
            for (w, at) in [
                (0, 0),
                (1, 4),
                (2, 16),
                (3, 20),
                (4, 8),
                (5, 12),
                (6, 24),
                (7, 28),
            ] {
                let q = idx[w];
                let v = lut[(q & 0xffff) as usize] as u32
                    | (lut[((q >> 16) & 0xffff) as usize] as u32) << 8
                    | (lut[((q >> 32) & 0xffff) as usize] as u32) << 16
                    | (lut[(q >> 48) as usize] as u32) << 24;
                (out.add(at) as *mut u32).write_unaligned(v);
            }
            i += 32;
        }
        main
    }
}

/// `plan` evaluated on every pair of 8-bit inputs, indexed by their bytes `a << 8 | b`.
fn table<T: QInt>(plan: Plan, zp: i32, lo: i32, hi: i32) -> Box<[u8; 1 << 16]> {
    let value = |byte: usize| {
        T::from_i32(if T::MIN < 0 {
            byte as u8 as i8 as i32
        } else {
            byte as i32
        })
    };
    let a: Vec<T> = (0..1 << 16).map(|i| value(i >> 8)).collect();
    let b: Vec<T> = (0..1 << 16).map(|i| value(i & 0xFF)).collect();
    let mut y = vec![T::from_i32(0); 1 << 16];
    binary(Isa::PORTABLE, plan, zp, lo, hi, &a, &b, &mut y);
    let mut t = Box::new([0u8; 1 << 16]);
    for (t, v) in t.iter_mut().zip(&y) {
        *t = v.to_i32() as u8;
    }
    t
}

/// The AVX-512 form of `plan` (`None` if a stage has no one-step [`Wide`] form).
/// `mults` are the raw `(multiplier, shift)` pairs of `plan`: input 1, input 2 and
/// output rescales for add/sub, the output one (three times) for mul.
#[cfg(target_arch = "x86_64")]
fn binary_wide(
    plan: Plan,
    mults: [(i32, i32); 3],
    zp: i32,
    min: i32,
    max: i32,
) -> Option<BinaryWide> {
    // A per-tensor stage as a `Wide` of one channel repeated over a block.
    // `smaller_than_one`: TFLite's `...SmallerThanOneExp`, which ignores a positive
    // shift.
    let wide = |(m, shift): (i32, i32), smaller_than_one: bool, zp, lo, hi| {
        let shift = if smaller_than_one {
            shift.min(0)
        } else {
            shift
        };
        Wide::new(&OutputStage {
            multiplier: vec![m; 16],
            shift: vec![shift; 16],
            out_zp: zp,
            min: lo,
            max: hi,
            rounding: Rounding::TiesAway,
        })
    };
    let [m1, m2, mo] = mults;
    Some(match plan {
        Plan::AddSub {
            sub,
            left_shift,
            za,
            zb,
            ..
        } => {
            let (lo32, hi32) = (i32::MIN, i32::MAX);
            BinaryWide {
                za,
                zb,
                addsub: Some((
                    wide(m1, true, 0, lo32, hi32)?,
                    wide(m2, true, 0, lo32, hi32)?,
                    sub,
                )),
                so: wide(mo, true, zp, min, max)?,
                left_shift,
                exact: [
                    avx512::exact_rescale(m1, left_shift),
                    avx512::exact_rescale(m2, left_shift),
                ],
            }
        }
        Plan::Mul { za, zb, .. } => BinaryWide {
            za,
            zb,
            addsub: None,
            so: wide(mo, false, zp, min, max)?,
            left_shift: 0,
            exact: [None; 2],
        },
    })
}

impl<T: QInt> Prepared for BinaryKernel<T> {
    fn run(
        &mut self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let a = input(ctx, inputs, 0)?;
        let b = input(ctx, inputs, 1)?;
        let (av, bv) = match (T::slice(a), T::slice(b)) {
            (Some(av), Some(bv)) if a.shape == b.shape => (av, bv),
            _ => {
                // Broadcasting (or a type error): the reference kernel.
                let mut r = tflite_binary::<T>(ctx, self.kind, self.activation, inputs)?;
                *out = Some(r.remove(0));
                return Ok(());
            }
        };
        let y = out_buffer::<T>(out, &a.shape, av.len());
        if let Some(lut) = &self.lut {
            lookup(self.isa, lut, bytes(av), bytes(bv), bytes_mut(y));
            return Ok(());
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(bw) = &self.wide {
            let signed = T::MIN < 0;
            avx512::binary(self.isa, bw, signed, bytes(av), bytes(bv), bytes_mut(y));
            return Ok(());
        }
        let (zp, lo, hi) = (self.zp, self.min, self.max);
        binary(self.isa, self.plan, zp, lo, hi, av, bv, y);
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn binary<T: QInt>(isa: Isa, plan: Plan, zp: i32, lo: i32, hi: i32, a: &[T], b: &[T], y: &mut [T]) {
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body<T: QInt>(plan: Plan, zp: i32, lo: i32, hi: i32, a: &[T], b: &[T], y: &mut [T]) {
        match plan {
            Plan::AddSub {
                sub,
                left_shift,
                za,
                zb,
                m1,
                m2,
                mo,
            } => {
                let sign = if sub { -1 } else { 1 };
                for ((o, &x), &z) in y.iter_mut().zip(a).zip(b) {
                    let x1 = (x.to_i32() - za) << left_shift;
                    let x2 = (z.to_i32() - zb) << left_shift;
                    let raw = m1.apply(x1) + sign * m2.apply(x2);
                    *o = T::from_i32((mo.apply(raw) + zp).clamp(lo, hi));
                }
            }
            Plan::Mul { za, zb, m } => {
                for ((o, &x), &z) in y.iter_mut().zip(a).zip(b) {
                    let p = (x.to_i32() - za) * (z.to_i32() - zb);
                    *o = T::from_i32((zp + m.apply(p)).clamp(lo, hi));
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2<T: QInt>(plan: Plan, zp: i32, lo: i32, hi: i32, a: &[T], b: &[T], y: &mut [T]) {
        body(plan, zp, lo, hi, a, b, y)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
        return unsafe { avx2(plan, zp, lo, hi, a, b, y) };
    }
    let _ = isa;
    body(plan, zp, lo, hi, a, b, y)
}
