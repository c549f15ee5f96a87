//! Vectorizable output stage: i32 accumulators -> quantized values, the same integers
//! as [`OutputStage::apply`].
//!
//! The reference formulas, rewritten branch-free with per-channel constants:
//! - `srdhm(x, m)` for `m != i32::MIN` (never `MIN * MIN`, so no saturation) is
//!   `(x·m + 2^30) >> 31` (floor): for `x·m >= 0` that is the nudge-and-truncate of
//!   gemmlowp; for `x·m < 0` truncation of `x·m + 1 - 2^30` toward zero equals the floor
//!   of `x·m + 2^30` (add `2^31 - 1` before flooring).
//! - ties-up right shift by `r`: `(h >> r) + ((h >> (r-1)) & 1)` (no overflow, unlike
//!   `h + 2^(r-1)`), with the second term masked off for `r = 0`;
//! - `RoundingDivideByPOT(h, r)`: `(h >> r) + ((h & mask) > (mask >> 1) + (h < 0))`.

use super::Isa;
use crate::kernels::quantized::common::{OutputStage, QInt, Rounding};

/// Per-channel constants of an [`OutputStage`], laid out for the branch-free form.
#[derive(Debug, Clone)]
pub struct Requant {
    mult: Vec<i32>,
    left: Vec<u32>,
    right: Vec<u32>,
    /// Ties-up: shift of the rounding bit (`max(r-1, 0)`) and its mask (`r > 0`).
    rbit_shift: Vec<u32>,
    rbit_mask: Vec<i32>,
    /// Ties-away: `2^r - 1`.
    mask: Vec<i32>,
    out_zp: i32,
    min: i32,
    max: i32,
    /// Channels `0..ties_up_below` round ties up, the others ties away
    /// ([`Rounding::TiesUpBelow`]; `TiesUp`: all, `TiesAway`: none).
    ties_up_below: usize,
    /// Rounding modes without a branch-free form here (`Single`) use the stage itself.
    fallback: Option<OutputStage>,
}

impl Requant {
    pub fn new(stage: &OutputStage) -> Requant {
        let fallback = (stage.rounding == Rounding::Single || stage.multiplier.contains(&i32::MIN))
            .then(|| stage.clone());
        let n = stage.multiplier.len();
        let mut r = Requant {
            mult: stage.multiplier.clone(),
            left: Vec::with_capacity(n),
            right: Vec::with_capacity(n),
            rbit_shift: Vec::with_capacity(n),
            rbit_mask: Vec::with_capacity(n),
            mask: Vec::with_capacity(n),
            out_zp: stage.out_zp,
            min: stage.min,
            max: stage.max,
            ties_up_below: match stage.rounding {
                Rounding::TiesUp => n,
                Rounding::TiesUpBelow(b) => b.min(n),
                Rounding::TiesAway | Rounding::Single => 0,
            },
            fallback,
        };
        for &s in &stage.shift {
            // Same clamps as the reference: the left shift is applied with
            // `wrapping_shl` (amount mod 32), the right one is at most 31.
            let left = (s.max(0) as u32) & 31;
            let right = (-s).clamp(0, 31) as u32;
            r.left.push(left);
            r.right.push(right);
            r.rbit_shift.push(right.saturating_sub(1));
            r.rbit_mask.push(i32::from(right > 0));
            r.mask.push(((1i64 << right) - 1) as i32);
        }
        r
    }

    pub fn channels(&self) -> usize {
        self.mult.len()
    }

    /// `out[c] = stage(acc[c], c)` for `c < out.len()` (`acc` may be longer).
    #[inline]
    pub fn row<T: QInt>(&self, isa: Isa, acc: &[i32], out: &mut [T]) {
        if let Some(st) = &self.fallback {
            for (c, (o, &a)) in out.iter_mut().zip(acc).enumerate() {
                *o = T::from_i32(st.apply(a, c));
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx2() {
            // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
            unsafe { self.row_avx2(acc, out) };
            return;
        }
        let _ = isa;
        self.row_generic(acc, out);
    }

    /// Eight channels at a time with AVX2 intrinsics (the 64-bit products of
    /// `high_mul` need `vpmuldq` on even and odd lanes), the tail with the generic body.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2<T: QInt>(&self, acc: &[i32], out: &mut [T]) {
        // SAFETY: the CPU has AVX2 (the caller checked `Isa::Avx2`); the 8-lane loads
        // from `acc` and the per-channel `mult` / `left` / `right` arrays (one entry per
        // channel each) and the stores to `out` stay below `main <= n`, and `acc` and
        // `mult` are asserted at least `n` long first.
        unsafe {
            use std::arch::x86_64::*;
            let n = out.len();
            assert!(acc.len() >= n && self.mult.len() >= n);
            let main = if std::mem::size_of::<T>() == 1 {
                n / 8 * 8
            } else {
                0
            };
            let ld = |v: &[i32], c: usize| _mm256_loadu_si256(v.as_ptr().add(c) as *const __m256i);
            let ldu = |v: &[u32], c: usize| _mm256_loadu_si256(v.as_ptr().add(c) as *const __m256i);
            let (zp, lo, hi) = (
                _mm256_set1_epi32(self.out_zp),
                _mm256_set1_epi32(self.min),
                _mm256_set1_epi32(self.max),
            );
            let round = _mm256_set1_epi64x(1 << 30);
            let signed = T::MIN < 0;
            let mut c = 0;
            while c < main {
                // A block of 8 channels rounds one way (LiteRT's split is a multiple of 8);
                // one that straddles the bound goes to the generic body.
                let ties_up = c + 8 <= self.ties_up_below;
                if !ties_up && c < self.ties_up_below {
                    break;
                }
                let x = _mm256_sllv_epi32(ld(acc, c), ldu(&self.left, c));
                let m = ld(&self.mult, c);
                let even = _mm256_srli_epi64::<31>(_mm256_add_epi64(_mm256_mul_epi32(x, m), round));
                let odd = _mm256_slli_epi64::<1>(_mm256_add_epi64(
                    _mm256_mul_epi32(_mm256_srli_epi64::<32>(x), _mm256_srli_epi64::<32>(m)),
                    round,
                ));
                let h = _mm256_blend_epi32::<0b1010_1010>(even, odd);
                let right = ldu(&self.right, c);
                let v = if ties_up {
                    let bit = _mm256_and_si256(
                        _mm256_srav_epi32(h, ldu(&self.rbit_shift, c)),
                        ld(&self.rbit_mask, c),
                    );
                    _mm256_add_epi32(_mm256_srav_epi32(h, right), bit)
                } else {
                    let mask = ld(&self.mask, c);
                    let thr =
                        _mm256_add_epi32(_mm256_srai_epi32::<1>(mask), _mm256_srli_epi32::<31>(h));
                    let up = _mm256_cmpgt_epi32(_mm256_and_si256(h, mask), thr);
                    _mm256_sub_epi32(_mm256_srav_epi32(h, right), up)
                };
                let v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, zp), lo), hi);
                // Values are within T's range already: the packs only narrow.
                let w = _mm256_packs_epi32(v, v);
                let b = if signed {
                    _mm256_packs_epi16(w, w)
                } else {
                    _mm256_packus_epi16(w, w)
                };
                let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
                _mm_storel_epi64(
                    out.as_mut_ptr().add(c) as *mut __m128i,
                    _mm256_castsi256_si128(b),
                );
                c += 8;
            }
            if c < n {
                self.row_generic_from(c, acc, out);
            }
        }
    }

    #[inline(always)]
    fn row_generic<T: QInt>(&self, acc: &[i32], out: &mut [T]) {
        self.row_generic_from(0, acc, out)
    }

    /// Channels `start..out.len()`.
    #[inline(always)]
    fn row_generic_from<T: QInt>(&self, start: usize, acc: &[i32], out: &mut [T]) {
        let n = out.len();
        let (acc, mult, left, right) = (
            &acc[..n],
            &self.mult[..n],
            &self.left[..n],
            &self.right[..n],
        );
        let (zp, lo, hi) = (self.out_zp, self.min, self.max);
        let split = self.ties_up_below.clamp(start, n);
        let (rs, rm) = (&self.rbit_shift[..n], &self.rbit_mask[..n]);
        for c in start..split {
            let h = high_mul(acc[c].wrapping_shl(left[c]), mult[c]);
            let v = (h >> right[c]) + ((h >> rs[c]) & rm[c]);
            out[c] = T::from_i32((v + zp).clamp(lo, hi));
        }
        let mask = &self.mask[..n];
        for c in split..n {
            let h = high_mul(acc[c].wrapping_shl(left[c]), mult[c]);
            let v = div_pot(h, right[c], mask[c]);
            out[c] = T::from_i32((v + zp).clamp(lo, hi));
        }
    }
}

/// `srdhm(x, m)` for `m != i32::MIN` (see the module doc).
#[inline(always)]
pub fn high_mul(x: i32, m: i32) -> i32 {
    ((x as i64 * m as i64 + (1i64 << 30)) >> 31) as i32
}

/// `RoundingDivideByPOT(x, r)` with `mask = 2^r - 1`.
#[inline(always)]
pub fn div_pot(x: i32, r: u32, mask: i32) -> i32 {
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> r) + i32::from((x & mask) > threshold)
}

/// Per-channel constants of 16 channels in the one-step 64-bit form of [`Wide`],
/// laid out for 512-bit registers: `vpmuldq` multiplies the even 32-bit lanes, so
/// even channels use `m` directly and odd ones `m_odd` (channel `2j+1` at lane `2j`)
/// against the accumulators shifted down by 32 bits; the 64-bit constants are split
/// into even and odd channels the same way.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Block16 {
    pub m: [i32; 16],
    pub m_odd: [i32; 16],
    pub left: [u32; 16],
    pub add_e: [i64; 8],
    pub add_o: [i64; 8],
    pub sh_e: [u64; 8],
    pub sh_o: [u64; 8],
    pub corr_e: [i64; 8],
    pub corr_o: [i64; 8],
}

/// Whether the ties-away correction can never change an output of `stage`: it only
/// changes how a negative product rounds (`p < -2^30` needs `x < 0` when every
/// multiplier is non-negative), and any negative product gives at most the output
/// zero point, rounded either way (`RoundingDivideByPOT` of a non-positive value is
/// non-positive, and so is the ties-up form's `floor((p + 2^30 + 2^(30+r)) /
/// 2^(31+r))` for `p < 0`). When the clamp's lower bound is at least the zero point
/// (a fused ReLU), all of those outputs become that bound. The vector output stages
/// then skip the correction (4 instructions per 8 channels on AVX2).
fn relu_hides_away(stage: &OutputStage) -> bool {
    stage.min >= stage.out_zp && stage.multiplier.iter().all(|&m| m >= 0)
}

/// An [`OutputStage`] rewritten as one rounding step of a 64-bit product per channel:
///
/// `v = ((x << left) · m + add - [away && p < -2^30] · corr) >> sh`, then `+ zp_post`
/// and the clamp, with `p = (x << left) · m` (the shift wrapping in 32 bits, as the
/// reference's).
///
/// Why it is exact: `srdhm(x, m) = floor((p + 2^30) / 2^31)` for `m != i32::MIN`
/// (module doc), and nested floor divisions by powers of two compose
/// (`floor(floor(y / 2^a) / 2^b) = floor(y / 2^(a+b))`), integer addends passing
/// through the inner floor. So
/// - ties-up `floor((h + 2^(r-1)) / 2^r)` is `(p + 2^30 + 2^(30+r)) >> (31 + r)`;
/// - ties-away `RoundingDivideByPOT(h, r) = floor((h + 2^(r-1) - [h < 0]) / 2^r)` is
///   the same minus `2^31` in the numerator when `h < 0`, i.e. when `p + 2^30 < 0`;
///   `r = 0` needs no rounding term at all (`corr = 0`);
/// - the single rounding is `(x · m + 2^(t-1)) >> t` already;
/// - the output zero point is an integer addend too, folded into `add` as
///   `zp · 2^sh` whenever that cannot overflow 64 bits (`zp_post` is then 0).
///
/// `|p| <= 2^62`, and `add` is kept below `2^62 - 2^31` in magnitude, so nothing
/// overflows. A multiplier of `i32::MIN` (the one saturating case of `srdhm`, never
/// produced by `quantize_multiplier`) has no such form: [`Wide::new`] returns `None`.
#[derive(Debug, Clone)]
pub struct Wide {
    n: usize,
    pub blocks: Vec<Block16>,
    /// Some channel has a left shift (multiplier >= 1).
    pub any_left: bool,
    /// Ties-away rounding (the sign correction runs).
    pub away: bool,
    pub zp_post: i32,
    pub min: i32,
    pub max: i32,
}

impl Wide {
    pub fn new(stage: &OutputStage) -> Option<Wide> {
        let n = stage.multiplier.len();
        if stage.rounding != Rounding::Single && stage.multiplier.contains(&i32::MIN) {
            return None;
        }
        // (left, m, add without zp, sh, corr) per channel.
        let chans: Vec<(u32, i32, i64, u32, i64)> = stage
            .multiplier
            .iter()
            .zip(&stage.shift)
            .enumerate()
            .map(|(c, (&m, &s))| match stage.rounding {
                Rounding::Single => {
                    let t = (31 - s).clamp(1, 62) as u32;
                    (0, m, 1i64 << (t - 1), t, 0)
                }
                Rounding::TiesUp | Rounding::TiesAway | Rounding::TiesUpBelow(_) => {
                    let left = (s.max(0) as u32) & 31;
                    let r = (-s).clamp(0, 31) as u32;
                    let round = if r > 0 { 1i64 << (30 + r) } else { 0 };
                    let corr = if r > 0 && !stage.rounding.ties_up(c) {
                        1i64 << 31
                    } else {
                        0
                    };
                    (left, m, (1i64 << 30) + round, 31 + r, corr)
                }
            })
            .collect();
        let limit = (1i128 << 62) - (1i128 << 31);
        let fold = chans.iter().all(|&(_, _, add, sh, _)| {
            (add as i128 + stage.out_zp as i128 * (1i128 << sh)).abs() < limit
        });
        let mut blocks = vec![Block16::default(); n.div_ceil(16)];
        for (c, &(left, m, add, sh, corr)) in chans.iter().enumerate() {
            let b = &mut blocks[c / 16];
            let (j, h) = (c % 16, c % 16 / 2);
            let add = if fold {
                add + ((stage.out_zp as i64) << sh)
            } else {
                add
            };
            b.m[j] = m;
            b.left[j] = left;
            if j % 2 == 0 {
                (b.add_e[h], b.sh_e[h], b.corr_e[h]) = (add, sh as u64, corr);
            } else {
                b.m_odd[j - 1] = m;
                (b.add_o[h], b.sh_o[h], b.corr_o[h]) = (add, sh as u64, corr);
            }
        }
        Some(Wide {
            n,
            blocks,
            any_left: chans.iter().any(|c| c.0 != 0),
            away: (0..n).any(|c| !stage.rounding.ties_up(c))
                && stage.rounding != Rounding::Single
                && !relu_hides_away(stage),
            zp_post: if fold { 0 } else { stage.out_zp },
            min: stage.min,
            max: stage.max,
        })
    }

    pub fn channels(&self) -> usize {
        self.n
    }

    /// Scalar evaluation of the same formula (documentation and tests).
    pub fn apply(&self, acc: i32, c: usize) -> i32 {
        let b = &self.blocks[c / 16];
        let (j, h) = (c % 16, c % 16 / 2);
        let p = acc.wrapping_shl(b.left[j]) as i64 * b.m[j] as i64;
        let (add, sh, corr) = if j % 2 == 0 {
            (b.add_e[h], b.sh_e[h], b.corr_e[h])
        } else {
            (b.add_o[h], b.sh_o[h], b.corr_o[h])
        };
        let mut y = p + add;
        if self.away && p < -(1i64 << 30) {
            y -= corr;
        }
        (((y >> sh) as i32) + self.zp_post).clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod wide_tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The one-step form equals the reference output stage on random stages and
    /// accumulators, including the extremes of i32 and of the shifts.
    #[test]
    fn wide_matches_output_stage() {
        let mut r = StdRng::seed_from_u64(7);
        for case in 0..3000 {
            let n = r.gen_range(1..40);
            let rounding = [
                Rounding::TiesAway,
                Rounding::TiesUp,
                Rounding::Single,
                Rounding::litert_depthwise(n),
            ][case % 4];
            let multiplier: Vec<i32> = (0..n)
                .map(|_| match r.gen_range(0..10) {
                    0 => i32::MAX,
                    1 => 1 << 30,
                    _ => r.gen_range(1 << 30..i32::MAX),
                })
                .collect();
            let shift: Vec<i32> = (0..n)
                .map(|_| match r.gen_range(0..10) {
                    0 => r.gen_range(-40..40),
                    _ => r.gen_range(-14..3),
                })
                .collect();
            let (lo, hi) = if r.gen_bool(0.5) {
                (-128, 127)
            } else {
                (0, 255)
            };
            let stage = OutputStage {
                multiplier,
                shift,
                out_zp: r.gen_range(lo..=hi),
                min: lo + r.gen_range(0..20),
                max: hi - r.gen_range(0..20),
                rounding,
            };
            let w = Wide::new(&stage).expect("no i32::MIN multiplier");
            for _ in 0..50 {
                let acc = match r.gen_range(0..6) {
                    0 => i32::MIN,
                    1 => i32::MAX,
                    2 => r.gen(),
                    _ => r.gen_range(-100_000..100_000),
                };
                let c = r.gen_range(0..n);
                assert_eq!(
                    w.apply(acc, c),
                    stage.apply(acc, c),
                    "{stage:?} acc {acc} c {c}"
                );
            }
        }
    }

    /// With a fused ReLU (the lower bound at or above the zero point) the ties-away
    /// correction is dropped, and every accumulator, negative ones included, still
    /// gives the reference's output; below the zero point it is kept.
    #[test]
    fn relu_drops_the_ties_away_correction_exactly() {
        let mut r = StdRng::seed_from_u64(8);
        for _ in 0..2000 {
            let n = r.gen_range(1..20);
            let out_zp = r.gen_range(-128..100);
            let stage = OutputStage {
                multiplier: (0..n).map(|_| r.gen_range(1 << 30..i32::MAX)).collect(),
                shift: (0..n).map(|_| r.gen_range(-14..3)).collect(),
                out_zp,
                min: out_zp + r.gen_range(0..3),
                max: 127,
                rounding: Rounding::TiesAway,
            };
            let w = Wide::new(&stage).expect("no i32::MIN multiplier");
            assert!(!w.away, "a ReLU stage keeps the correction");
            for _ in 0..200 {
                let acc = r.gen_range(-300_000..300_000);
                let c = r.gen_range(0..n);
                assert_eq!(w.apply(acc, c), stage.apply(acc, c), "{stage:?} acc {acc}");
            }
            let below = OutputStage {
                min: out_zp - 1,
                ..stage
            };
            assert!(Wide::new(&below).expect("valid").away);
        }
    }

    /// `Requant::row` (AVX2 blocks of 8 and the generic tail) equals the reference
    /// output stage when the rounding changes between channels (LiteRT's depthwise:
    /// ties up below a multiple of 8, ties away above; and a bound inside a block).
    #[test]
    fn requant_row_splits_the_rounding_by_channel() {
        let mut r = StdRng::seed_from_u64(9);
        for case in 0..1000 {
            let n = r.gen_range(1..45);
            let rounding = if case % 2 == 0 {
                Rounding::litert_depthwise(n)
            } else {
                Rounding::TiesUpBelow(r.gen_range(0..=n))
            };
            let stage = OutputStage {
                multiplier: (0..n).map(|_| r.gen_range(1 << 30..i32::MAX)).collect(),
                shift: (0..n).map(|_| r.gen_range(-14..3)).collect(),
                out_zp: r.gen_range(-128..=127),
                min: -128,
                max: 127,
                rounding,
            };
            let rq = Requant::new(&stage);
            for isa in [Some(Isa::PORTABLE), Isa::avx2()].into_iter().flatten() {
                for _ in 0..20 {
                    // Small accumulators and exact ties (multiples of a power of two).
                    let acc: Vec<i32> = (0..n)
                        .map(|_| r.gen_range(-3000..3000) << r.gen_range(0..6))
                        .collect();
                    let mut out = vec![0i8; n];
                    rq.row(isa, &acc, &mut out);
                    for c in 0..n {
                        assert_eq!(out[c] as i32, stage.apply(acc[c], c), "{stage:?} c {c}");
                    }
                }
            }
        }
    }
}
