//! AVX2 fully-connected kernel for CPUs without VNNI on `vpmaddubsw`, for the weights
//! it provably cannot saturate on.
//!
//! Why: on AVX2 the i16 GEMM ([`super::avx2`]) spends one `vpmaddwd` (the multiply
//! pipe's one instruction per cycle on Zen 2) per 16 MACs. `vpmaddubsw` multiplies 32
//! u8 x i8 pairs per instruction, but adds each two products into a *saturating* i16,
//! and a further `vpmaddwd` by ones is needed to widen to i32: no gain, unless several
//! `vpmaddubsw` results are added in i16 first. With `G` quads per i16 partial sum a
//! group of `4G` inputs costs `G + 1` multiplies instead of `2G` (G = 2: 25% fewer,
//! G = 4: 37% fewer). Measured on Zen 2 with the weights streaming from L2: 1.02
//! cycles per 16 MACs for the i16 GEMM, 0.80 for G = 2, 0.68 for G = 4.
//!
//! Exactness: the activations are u8 `u = x - T::MIN` in `[0, 255]` (the zero-point
//! correction `zu · Σ w` is folded into the bias, as for VNNI's [`super::gemm::PackedW8`]).
//! An i16 lane of a group sums the products of `u` with `2G` weights of one channel;
//! if the positive weights add up to at most 128, and the negative ones to at least
//! -128, the lane lies in `[-255 · 128, 255 · 128] ⊂ i16` whatever the inputs, and so
//! does every `vpmaddubsw` pair sum inside it: no saturation, no wrap, every sum exact.
//! The packing splits each weight `w = m + r`: the dense part `m` meets that bound
//! (filled greedily up to it), and the rare remainder `r` is kept as sparse entries of
//! one quad and 8 channels, each again within the bound for one pair (`G = 1`), added
//! to the accumulators' start values before the dense pass (the split puts what
//! exceeds the budget on one quad of the group where it can, so that few quads carry a
//! remainder: each costs an entry). Trained weights are small next to their
//! per-channel maximum, so the remainder is rare (under 4% of the 8-channel groups on
//! the MLPerf anomaly-detection model at G = 2, none on most layers); when it is not,
//! the cost model ([`MaddubsW::new`]) declines and the i16 GEMM runs.

use super::avx2::{with_epi_kind, EpiKind, Stage, Wide8};
use super::gemm::NR;
use super::Isa;
use std::arch::x86_64::*;

/// Blocks of 16 output channels per weight group (a tile spans at most this many).
const GROUP: usize = 4;
/// Bytes of one quad of 8 channels (`[8][4]`), one AVX2 register.
const QREG: usize = 32;
/// Most a group's positive (or negative) weights of one i16 lane may add up to:
/// `255 · 128 = 32640 <= i16::MAX`.
const LANE_BUDGET: i32 = 128;

/// A remainder of the dense split: one quad of 8 channels (`[8][4]`, the dense
/// layout), within the budget for one pair per lane.
#[derive(Debug, Clone)]
struct Residual {
    /// 8-channel register index (channel / 8).
    reg: usize,
    quad: usize,
    w: [i8; QREG],
}

/// Fully-connected weights `[n, k]` for [`gemv`]: the dense part in blocks of 16
/// channels, grouped by [`GROUP`] blocks, each group `[k/4][blocks][2][8][4]` (one
/// sequential stream per tile, as in [`super::avx2::PackedPairs`]); the remainder as
/// sparse entries; the bias with the zero-point correction folded in.
#[derive(Debug, Clone)]
pub struct MaddubsW {
    pub n: usize,
    pub k: usize,
    /// Quads per i16 partial sum.
    g: usize,
    /// k in quads, rounded up to a multiple of `g`.
    k4: usize,
    nblk: usize,
    /// The u8 value of a zero activation (pads the input rows).
    pub zu: u8,
    dense: Vec<i8>,
    residual: Vec<Residual>,
    bias: Vec<i32>,
    /// The registers with remainder entries, each once.
    res_regs: Vec<usize>,
    /// Accumulator start values of a row: the bias, plus the remainder's sums in
    /// `res_regs` (reset from `bias` at each row, so no row copies the whole bias).
    start: Vec<i32>,
}

/// Splits `w` (one i16 lane's weights) into a part whose positive weights add up to
/// at most [`LANE_BUDGET`] and negative ones to at least `-LANE_BUDGET` (greedily, in
/// order) and the remainder, left in `w`.
fn take_within_budget(w: &mut [i32], part: &mut [i32]) {
    let (mut pos, mut neg) = (LANE_BUDGET, LANE_BUDGET);
    for (v, p) in w.iter_mut().zip(part.iter_mut()) {
        *p = if *v > 0 {
            let t = (*v).min(pos);
            pos -= t;
            t
        } else {
            let t = (*v).max(-neg);
            neg += t;
            t
        };
        *v -= *p;
    }
}

/// Splits the weights of one 8-channel register and one group of `g` quads into the
/// dense part and the remainder.
struct GroupSplit<'a, W, A> {
    /// Weight of channel `c`, input `k` (0 outside the matrix).
    wt: &'a W,
    /// Index of (register, quad, channel in register, byte in quad) in `dense`/`rest`.
    at: &'a A,
    g: usize,
    lane: Vec<i32>,
    part: Vec<i32>,
    dense: &'a mut [i32],
    rest: &'a mut [i32],
}

impl<W: Fn(usize, usize) -> i32, A: Fn(usize, usize, usize, usize) -> usize> GroupSplit<'_, W, A> {
    /// Splits every lane with the quad `q0 + sink` last in its fill order, so that what
    /// exceeds the budget lands on the sink's weights first. Returns the bit mask of
    /// the group's quads left with a remainder.
    fn run(&mut self, reg: usize, q0: usize, sink: usize) -> u32 {
        let g = self.g;
        // i-th weight of a lane: quad (the sink last), byte within the lane's pair.
        let order = |i: usize| {
            let j = i / 2;
            let q = if j + 1 == g {
                sink
            } else {
                j + usize::from(j >= sink)
            };
            (q0 + q, i % 2)
        };
        let mut with_rest = 0u32;
        for l in 0..8 {
            for half in 0..2 {
                // The i16 lane `half` of channel `l` sums inputs 4q + 2·half + {0, 1}
                // over the group's quads.
                for (i, v) in self.lane.iter_mut().enumerate() {
                    let (q, b) = order(i);
                    *v = (self.wt)(reg * 8 + l, 4 * q + 2 * half + b);
                }
                take_within_budget(&mut self.lane, &mut self.part);
                for i in 0..2 * g {
                    let (q, b) = order(i);
                    let ix = (self.at)(reg, q, l, 2 * half + b);
                    self.dense[ix] = self.part[i];
                    self.rest[ix] = self.lane[i];
                    if self.lane[i] != 0 {
                        with_rest |= 1 << (q - q0);
                    }
                }
            }
        }
        with_rest
    }
}

impl MaddubsW {
    /// The packing with the cheaper of G = 2 and G = 4, or `None` when neither beats
    /// the i16 GEMM by a clear margin (the estimate counts multiply instructions: the
    /// pipe both kernels are bound by), or a weight (zero point subtracted) is not i8.
    pub fn new(w: &[i16], n: usize, k: usize, bias: &[i32], zu: u8) -> Option<MaddubsW> {
        // The i16 GEMM also computes whole blocks of 16 channels.
        let i16_gemm = (n.div_ceil(NR) * 2 * k.div_ceil(2)) as f64;
        [2, 4]
            .into_iter()
            .filter_map(|g| MaddubsW::with_group(w, n, k, bias, zu, g))
            .map(|p| (p.cost(), p))
            .filter(|(c, _)| *c < 0.85 * i16_gemm)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, p)| p)
    }

    /// The packing with `g` (1, 2 or 4) quads per i16 partial sum.
    pub fn with_group(
        w: &[i16],
        n: usize,
        k: usize,
        bias: &[i32],
        zu: u8,
        g: usize,
    ) -> Option<MaddubsW> {
        assert_eq!(w.len(), n * k, "weights are [n, k]");
        assert_eq!(bias.len(), n, "one bias per output channel");
        assert!([1, 2, 4].contains(&g), "1, 2 or 4 quads per partial sum");
        if w.iter().any(|&v| i8::try_from(v).is_err()) {
            return None;
        }
        let k4 = k.div_ceil(4).div_ceil(g) * g;
        let nblk = n.div_ceil(NR);
        let nregs = nblk * 2;
        let wt = |c: usize, kk: usize| {
            if c < n && kk < k {
                w[c * k + kk] as i32
            } else {
                0
            }
        };
        // Dense part and remainder per channel, quad-major: [reg][quad][8][4].
        let mut dense_rq = vec![0i32; nregs * k4 * QREG];
        let mut rest = vec![0i32; nregs * k4 * QREG];
        let at = |reg: usize, q: usize, l: usize, b: usize| ((reg * k4 + q) * 8 + l) * 4 + b;
        let mut split = GroupSplit {
            wt: &wt,
            at: &at,
            g,
            lane: vec![0; 2 * g],
            part: vec![0; 2 * g],
            dense: &mut dense_rq,
            rest: &mut rest,
        };
        for reg in 0..nregs {
            for q0 in (0..k4).step_by(g) {
                // Each remainder quad costs an entry: keep the sink leaving the fewest.
                let mut best = (0, u32::MAX);
                let mut last = 0;
                for sink in 0..g {
                    let quads = split.run(reg, q0, sink).count_ones();
                    last = sink;
                    if quads < best.1 {
                        best = (sink, quads);
                    }
                    if quads <= 1 {
                        break;
                    }
                }
                if last != best.0 {
                    split.run(reg, q0, best.0);
                }
            }
        }
        // The remainder as entries of one quad and 8 channels, each within the budget
        // of one pair per lane: split until nothing is left.
        let mut residual = Vec::new();
        for reg in 0..nregs {
            for q in 0..k4 {
                let base = at(reg, q, 0, 0);
                let r = &mut rest[base..base + QREG];
                while r.iter().any(|&v| v != 0) {
                    let mut e = [0i8; QREG];
                    for (pair, ep) in r.chunks_exact_mut(2).zip(e.chunks_exact_mut(2)) {
                        let mut p = [0i32; 2];
                        take_within_budget(pair, &mut p);
                        (ep[0], ep[1]) = (p[0] as i8, p[1] as i8);
                    }
                    residual.push(Residual { reg, quad: q, w: e });
                }
            }
        }
        let mut res_regs: Vec<usize> = residual.iter().map(|e| e.reg).collect();
        res_regs.sort_unstable();
        res_regs.dedup();
        residual.sort_by_key(|e| (e.quad, e.reg));
        // Dense stream: groups of GROUP blocks, [quad][block in group][2 regs][8][4].
        let mut dense = vec![0i8; nregs * k4 * QREG];
        for blk in 0..nblk {
            let (gi, j) = (blk / GROUP, blk % GROUP);
            let gsize = (nblk - gi * GROUP).min(GROUP);
            for h in 0..2 {
                let reg = blk * 2 + h;
                for q in 0..k4 {
                    let dst = gi * GROUP * 2 * k4 * QREG + ((q * gsize + j) * 2 + h) * QREG;
                    let src = at(reg, q, 0, 0);
                    for (d, s) in dense[dst..dst + QREG]
                        .iter_mut()
                        .zip(&dense_rq[src..src + QREG])
                    {
                        *d = *s as i8;
                    }
                }
            }
        }
        let mut b = vec![0i32; nblk * NR];
        for c in 0..n {
            let sum = (0..k).fold(0i32, |s, kk| s.wrapping_add(wt(c, kk)));
            b[c] = bias[c].wrapping_sub((zu as i32).wrapping_mul(sum));
        }
        Some(MaddubsW {
            n,
            k,
            g,
            k4,
            nblk,
            zu,
            dense,
            residual,
            res_regs,
            start: b.clone(),
            bias: b,
        })
    }

    /// Estimated multiply instructions per row (the i16 GEMM needs one per 8 channels
    /// and input pair); a remainder entry costs a multiply pair and an addition, and
    /// is not pipelined as well.
    fn cost(&self) -> f64 {
        let dense = (self.nblk * 2 * (self.k4 / self.g) * (self.g + 1)) as f64;
        dense + 3.0 * self.residual.len() as f64
    }

    /// Row stride (in bytes) of the u8 input: k rounded up to whole groups.
    pub fn k_pad(&self) -> usize {
        self.k4 * 4
    }

    /// Remainder entries (tests).
    pub fn residual_len(&self) -> usize {
        self.residual.len()
    }
}

/// `y[r, c] = stage(bias[c] + Σ_k (x[r, k] - zp) · W[c, k])` for the `rows` rows of
/// `u` (u8 inputs `x - T::MIN`, rows `w.k_pad()` bytes apart, padding anything: it
/// meets zero weights). Rows of `y` are `w.n` bytes; `signed` says whether they are
/// i8. `w` is mutable for its row start values only.
pub fn gemv(
    isa: Isa,
    u: &[u8],
    rows: usize,
    w: &mut MaddubsW,
    rq: &Wide8,
    signed: bool,
    y: &mut [u8],
) {
    assert!(isa.is_avx2(), "the maddubs kernel needs AVX2");
    let kp = w.k_pad();
    assert!(u.len() >= rows * kp, "input too short");
    assert!(y.len() >= rows * w.n, "output too short");
    assert!(rq.channels() == w.n);
    assert!(w.dense.len() == w.nblk * 2 * w.k4 * QREG && w.bias.len() == w.nblk * NR);
    assert!(w.start.len() == w.bias.len());
    for r in 0..rows {
        let (ur, yr) = (&u[r * kp..(r + 1) * kp], &mut y[r * w.n..(r + 1) * w.n]);
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2; the row, the weights,
        // the remainder entries (quad < k4, reg < 2 nblk: built so) and the output
        // are within the bounds asserted above.
        unsafe { with_epi_kind!(rq, signed, K => gemv_row::<K>(ur, w, rq, signed, yr)) };
    }
}

#[target_feature(enable = "avx2")]
unsafe fn gemv_row<K: EpiKind>(u: &[u8], w: &mut MaddubsW, rq: &Wide8, signed: bool, y: &mut [u8]) {
    // SAFETY: the CPU has AVX2 (the caller checked `Isa::Avx2`); the row `u`, the
    // packed weights of `w`, its scratch accumulators and `y` have the lengths the
    // caller asserted, and every offset below is a whole block inside them.
    unsafe {
        let s = w.start.as_mut_ptr();
        for &reg in &w.res_regs {
            let b = _mm256_loadu_si256(w.bias.as_ptr().add(8 * reg) as *const __m256i);
            _mm256_storeu_si256(s.add(8 * reg) as *mut __m256i, b);
        }
        // One flat loop, no data-dependent branch. Entries are sorted by quad, so
        // consecutive ones mostly update different registers' sums and the stores and
        // reloads do not chain (each register's sum kept in a register instead costs a
        // mispredicted branch per register).
        let ones = _mm256_set1_epi16(1);
        for e in &w.residual {
            let a = (u.as_ptr().add(4 * e.quad) as *const i32).read_unaligned();
            let wv = _mm256_loadu_si256(e.w.as_ptr() as *const __m256i);
            let t = _mm256_maddubs_epi16(_mm256_set1_epi32(a), wv);
            let p = s.add(8 * e.reg) as *mut __m256i;
            _mm256_storeu_si256(
                p,
                _mm256_add_epi32(_mm256_loadu_si256(p), _mm256_madd_epi16(t, ones)),
            );
        }
        let init = w.start.as_ptr();
        let w = &*w;
        let st = Stage::<K>::new(rq, signed);
        let row = Row {
            u: u.as_ptr(),
            w,
            init,
            st: &st,
            y: y.as_mut_ptr(),
        };
        let mut b0 = 0;
        while b0 < w.nblk {
            let left = (GROUP - b0 % GROUP).min(w.nblk - b0);
            let nb = match left {
                4.. => 4,
                2 | 3 => 2,
                _ => 1,
            };
            match (w.g, nb) {
                (2, 4) => tile::<K, 2, 4>(&row, b0),
                (2, 2) => tile::<K, 2, 2>(&row, b0),
                (2, _) => tile::<K, 2, 1>(&row, b0),
                (4, 4) => tile::<K, 4, 4>(&row, b0),
                (4, 2) => tile::<K, 4, 2>(&row, b0),
                (4, _) => tile::<K, 4, 1>(&row, b0),
                (_, 4) => tile::<K, 1, 4>(&row, b0),
                (_, 2) => tile::<K, 1, 2>(&row, b0),
                _ => tile::<K, 1, 1>(&row, b0),
            }
            b0 += nb;
        }
    }
}

/// One row's operands.
struct Row<'a, K> {
    u: *const u8,
    w: &'a MaddubsW,
    /// Accumulator start values (`n_pad` i32).
    init: *const i32,
    st: &'a Stage<'a, K>,
    y: *mut u8,
}

/// `NB` blocks of 16 channels from block `b0` (all in one group), `G` quads per i16
/// partial sum.
#[inline(always)]
unsafe fn tile<K: EpiKind, const G: usize, const NB: usize>(row: &Row<K>, b0: usize) {
    // SAFETY: the CPU has AVX2 (this function is only called, inlined, from the
    // `#[target_feature(enable = "avx2")]` kernels, which run only under `Isa::Avx2`);
    // blocks `b0 .. b0 + NB` are inside the weights, accumulators and outputs of `row`
    // (checked by the caller before `gemv_row`).
    unsafe {
        let w = row.w;
        debug_assert_eq!(w.g, G);
        let ones = _mm256_set1_epi16(1);
        let mut acc: [[__m256i; 2]; NB] = std::array::from_fn(|j| {
            let p = row.init.add((b0 + j) * NR);
            [
                _mm256_loadu_si256(p as *const __m256i),
                _mm256_loadu_si256(p.add(8) as *const __m256i),
            ]
        });
        let (gi, j0) = (b0 / GROUP, b0 % GROUP);
        debug_assert!(j0 + NB <= GROUP);
        let gsize = (w.nblk - gi * GROUP).min(GROUP);
        let qs = gsize * 2 * QREG;
        let mut wq = w
            .dense
            .as_ptr()
            .add(gi * GROUP * 2 * w.k4 * QREG + j0 * 2 * QREG);
        let mut up = row.u;
        for _ in 0..w.k4 / G {
            let a: [__m256i; G] = std::array::from_fn(|i| {
                _mm256_set1_epi32((up.add(4 * i) as *const i32).read_unaligned())
            });
            for (j, accj) in acc.iter_mut().enumerate() {
                for (h, acch) in accj.iter_mut().enumerate() {
                    let p = wq.add((j * 2 + h) * QREG);
                    let mut t = _mm256_maddubs_epi16(a[0], _mm256_loadu_si256(p as *const __m256i));
                    for (i, ai) in a.iter().enumerate().skip(1) {
                        let wv = _mm256_loadu_si256(p.add(i * qs) as *const __m256i);
                        t = _mm256_add_epi16(t, _mm256_maddubs_epi16(*ai, wv));
                    }
                    *acch = _mm256_add_epi32(*acch, _mm256_madd_epi16(t, ones));
                }
            }
            wq = wq.add(G * qs);
            up = up.add(4 * G);
        }
        for (j, a) in acc.iter().enumerate() {
            let blk = b0 + j;
            row.st
                .store16(blk, a[0], a[1], row.y.add(blk * NR), w.n - blk * NR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quantized::common::OutputStage;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Trained-like weights: mostly small, a few at the i8 extremes.
    fn weights(r: &mut StdRng, len: usize, spread: i32) -> Vec<i16> {
        (0..len)
            .map(|_| {
                if r.gen_bool(0.02) {
                    if r.gen_bool(0.5) {
                        127
                    } else {
                        -127
                    }
                } else {
                    r.gen_range(-spread..=spread) as i16
                }
            })
            .collect()
    }

    #[test]
    fn matches_scalar_sums_for_every_group_size() {
        let Some(isa) = Isa::avx2() else {
            eprintln!("skipped: no AVX2");
            return;
        };
        let r = &mut StdRng::seed_from_u64(7);
        let mut with_remainder = 0;
        for case in 0..60 {
            let (n, k) = (r.gen_range(1..=70), r.gen_range(1..=90));
            let rows = r.gen_range(1..=3);
            let spread = [3, 20, 127][case % 3];
            let w = weights(r, n * k, spread);
            let bias: Vec<i32> = (0..n).map(|_| r.gen_range(-20000..20000)).collect();
            let zp = r.gen_range(-128..=127);
            let zu = (zp + 128) as u8;
            // Multipliers 2^-16 .. 2^-4: most outputs inside the clamp for every spread.
            let scales: Vec<f32> = (0..n)
                .map(|_| 2f32.powf(r.gen_range(-16.0..-4.0)))
                .collect();
            let out = crate::kernels::quantized::common::Affine { scale: 1.0, zp: 3 };
            let stage = OutputStage::new(1.0, &scales, out, (-128, 127));
            let rq = Wide8::new(&stage).expect("one-step stage");
            let x: Vec<i8> = (0..rows * k).map(|_| r.gen()).collect();
            for g in [1, 2, 4] {
                let mut p = MaddubsW::with_group(&w, n, k, &bias, zu, g).unwrap();
                with_remainder += usize::from(p.residual_len() > 0);
                let kp = p.k_pad();
                let mut u = vec![0xA5u8; rows * kp];
                for rr in 0..rows {
                    for kk in 0..k {
                        u[rr * kp + kk] = (x[rr * k + kk] as i32 + 128) as u8;
                    }
                }
                let mut y = vec![0u8; rows * n];
                gemv(isa, &u, rows, &mut p, &rq, true, &mut y);
                for rr in 0..rows {
                    for c in 0..n {
                        let acc = (0..k).fold(bias[c], |s, kk| {
                            s.wrapping_add((x[rr * k + kk] as i32 - zp) * w[c * k + kk] as i32)
                        });
                        let want = rq.apply(acc, c) as i8;
                        assert_eq!(
                            y[rr * n + c] as i8,
                            want,
                            "case {case} g {g} n {n} k {k} row {rr} channel {c}"
                        );
                    }
                }
            }
        }
        assert!(
            with_remainder > 40,
            "the remainder path ran {with_remainder} times"
        );
    }

    #[test]
    fn small_weights_need_no_remainder_and_pass_the_cost_model() {
        let r = &mut StdRng::seed_from_u64(3);
        let (n, k) = (64, 128);
        let w: Vec<i16> = (0..n * k).map(|_| r.gen_range(-8..=8)).collect();
        let p = MaddubsW::new(&w, n, k, &vec![0; n], 128).expect("cheaper than the i16 GEMM");
        assert_eq!(p.residual_len(), 0);
        let full: Vec<i16> = (0..n * k).map(|_| r.gen_range(-127..=127)).collect();
        assert!(MaddubsW::new(&full, n, k, &vec![0; n], 128).is_none());
    }
}
