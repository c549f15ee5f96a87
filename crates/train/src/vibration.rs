//! A code-generated, seeded dataset of tri-axial accelerometer windows from a
//! rotating machine (motor + shaft + rolling-element bearings), for machine-fault
//! classification. Each class has its textbook vibration signature (see e.g. ISO
//! 13373-1, and Randall, "Vibration-based Condition Monitoring", 2011):
//!
//! | class | signature |
//! |---|---|
//! | healthy | small 1x residual unbalance, weak 2x, broadband noise |
//! | imbalance | strong 1x, radial (x, y in quadrature: a rotating force), small axial; amplitude grows with speed^2 |
//! | misalignment | strong 2x (and 1x), large axial (z) 1x/2x, some 3x |
//! | bearing fault | impacts at a bearing defect frequency (outer race BPFO ~ 3.58x, inner race BPFI ~ 5.42x modulated by 1x) ringing a structural resonance (1.5-3 kHz scaled to the band) |
//! | looseness | many 1x harmonics and half-harmonics (0.5x, 1.5x...), clipped/truncated waveform |
//!
//! Every window also has: a random shaft speed (1200-2700 rpm) with a slow speed
//! drift inside the window, random phases, a per-sensor gain error, broadband noise at
//! a random level, and 50 Hz electrical pickup. Severity varies so that mild faults
//! overlap healthy machines.

use crate::data::{gauss, Dataset, Samples, Targets};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::f32::consts::PI;

pub const CLASSES: [&str; 5] = [
    "healthy",
    "imbalance",
    "misalignment",
    "bearing",
    "looseness",
];
/// Sample rate (Hz).
pub const FS: f32 = 2048.0;
/// Samples per window (0.25 s).
pub const LEN: usize = 512;
/// Accelerometer axes: x, y radial; z axial.
pub const AXES: usize = 3;

/// Generator settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VibrationConfig {
    pub per_class: usize,
    pub seed: u64,
}

/// Bearing geometry ratios to shaft speed (a 6205-type deep-groove bearing).
const BPFO: f32 = 3.585;
const BPFI: f32 = 5.415;

/// One window `[AXES, LEN]` of class `class`.
pub fn window(class: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut out = vec![0f32; AXES * LEN];
    let rpm: f32 = rng.gen_range(1200.0..2700.0);
    let f0 = rpm / 60.0;
    // Linear speed drift of up to ±2% over the window.
    let drift: f32 = rng.gen_range(-0.02..0.02);
    let severity: f32 = rng.gen_range(0.2..1.0);
    let noise: f32 = rng.gen_range(0.04..0.2);
    let gains: [f32; AXES] = std::array::from_fn(|_| rng.gen_range(0.85..1.15));
    let mains_phase: f32 = rng.gen_range(0.0..2.0 * PI);
    let mains_amp: f32 = rng.gen_range(0.0..0.05);
    // Shaft angle at each sample (integrated instantaneous frequency).
    let mut theta = vec![0f32; LEN];
    let mut th = rng.gen_range(0.0..2.0 * PI);
    for (i, t) in theta.iter_mut().enumerate() {
        let f = f0 * (1.0 + drift * (i as f32 / LEN as f32 - 0.5));
        th += 2.0 * PI * f / FS;
        *t = th;
    }
    // Harmonic helper: amplitude per axis of harmonic order k with a random phase.
    let add_harmonic = |out: &mut [f32], k: f32, amp: [f32; AXES], quad: bool, rng: &mut StdRng| {
        let ph: f32 = rng.gen_range(0.0..2.0 * PI);
        for a in 0..AXES {
            // Radial x/y in quadrature for rotating forces.
            let extra = if quad && a == 1 {
                PI / 2.0
            } else {
                rng.gen_range(-0.3..0.3)
            };
            for i in 0..LEN {
                out[a * LEN + i] += amp[a] * (k * theta[i] + ph + extra).sin();
            }
        }
    };
    // Residual unbalance and misalignment every real machine has.
    let base = rng.gen_range(0.05..0.2);
    add_harmonic(&mut out, 1.0, [base, base, base * 0.3], true, rng);
    add_harmonic(
        &mut out,
        2.0,
        [base * 0.3, base * 0.3, base * 0.2],
        false,
        rng,
    );
    let speed2 = (f0 / 35.0).powi(2);
    match class {
        0 => {}
        1 => {
            let a = severity * 0.9 * speed2 + 0.15;
            add_harmonic(&mut out, 1.0, [a, a, a * 0.15], true, rng);
        }
        2 => {
            let a = severity * 0.6 + 0.1;
            add_harmonic(&mut out, 1.0, [a * 0.5, a * 0.5, a * 1.2], false, rng);
            add_harmonic(&mut out, 2.0, [a, a, a * 0.9], false, rng);
            add_harmonic(&mut out, 3.0, [a * 0.3, a * 0.3, a * 0.3], false, rng);
        }
        3 => {
            // Impacts at the defect frequency, each ringing a damped resonance.
            let inner = rng.gen_bool(0.5);
            let ratio = if inner { BPFI } else { BPFO };
            let fr: f32 = rng.gen_range(550.0..850.0);
            let zeta: f32 = rng.gen_range(0.03..0.08);
            let decay = zeta * 2.0 * PI * fr / FS;
            let amp = severity * 1.2 + 0.2;
            // Impacts happen each time the count of defect periods passes the next
            // (jittered) integer, starting at a random phase.
            let mut next_impact: f32 = rng.gen_range(0.0..1.0);
            let th0 = theta[0];
            let mut ring = [0f32; AXES];
            let mut ring_phase = 0f32;
            let dir: [f32; AXES] = [1.0, rng.gen_range(0.4..0.9), rng.gen_range(0.1..0.4)];
            for i in 0..LEN {
                let revs = (theta[i] - th0) / (2.0 * PI);
                if revs * ratio >= next_impact {
                    // Inner-race impacts are modulated by the load zone (1x).
                    let m = if inner {
                        0.6 + 0.4 * (theta[i]).cos()
                    } else {
                        1.0
                    };
                    // Jitter (slip) of 1-2% between impacts.
                    let jitter: f32 = rng.gen_range(-0.02..0.02);
                    for a in 0..AXES {
                        ring[a] = amp * m * dir[a];
                    }
                    ring_phase = 0.0;
                    next_impact += 1.0 + jitter;
                }
                ring_phase += 2.0 * PI * fr / FS;
                for a in 0..AXES {
                    out[a * LEN + i] += ring[a] * ring_phase.sin();
                    ring[a] *= (-decay).exp();
                }
            }
        }
        4 => {
            let a = severity * 0.5 + 0.1;
            for k in 1..=8 {
                add_harmonic(
                    &mut out,
                    k as f32,
                    [a / k as f32 * 1.5, a / k as f32, a * 0.2 / k as f32],
                    false,
                    rng,
                );
            }
            for k in [0.5f32, 1.5, 2.5] {
                add_harmonic(&mut out, k, [a * 0.4, a * 0.3, a * 0.1], false, rng);
            }
            // Truncation: the loose part hits a stop on one side.
            let clip = a * rng.gen_range(0.8..1.2);
            for v in out[..LEN].iter_mut() {
                *v = v.min(clip);
            }
        }
        _ => unreachable!("5 classes"),
    }
    for a in 0..AXES {
        for i in 0..LEN {
            let t = i as f32 / FS;
            let v = &mut out[a * LEN + i];
            *v = gains[a] * (*v + mains_amp * (2.0 * PI * 50.0 * t + mains_phase).sin())
                + noise * gauss(rng);
        }
    }
    out
}

/// `per_class` windows of every class, interleaved (class i % 5), as a dataset
/// with samples `[3, 512]` in g units.
pub fn generate(cfg: VibrationConfig) -> Dataset {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let n = cfg.per_class * CLASSES.len();
    let mut x = Vec::with_capacity(n * AXES * LEN);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % CLASSES.len();
        x.extend(window(c, &mut rng));
        y.push(c as u32);
    }
    Dataset {
        x: Samples::F32(x),
        shape: vec![AXES, LEN],
        channel_axis: Some(0),
        y: Targets::Classes(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Power of `x` at frequency `f` (single-bin DFT).
    fn power(x: &[f32], f: f32) -> f32 {
        let (mut re, mut im) = (0f32, 0f32);
        for (i, &v) in x.iter().enumerate() {
            let w = 2.0 * PI * f * i as f32 / FS;
            re += v * w.cos();
            im += v * w.sin();
        }
        (re * re + im * im) / (x.len() * x.len()) as f32
    }

    #[test]
    fn generation_is_seeded() {
        let a = generate(VibrationConfig {
            per_class: 3,
            seed: 5,
        });
        let b = generate(VibrationConfig {
            per_class: 3,
            seed: 5,
        });
        let (Samples::F32(xa), Samples::F32(xb)) = (&a.x, &b.x) else {
            panic!()
        };
        assert_eq!(xa, xb);
        assert_eq!(a.len(), 15);
        assert!(xa.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bearing_fault_has_high_frequency_energy() {
        // Energy in the resonance band (550-850 Hz) is much higher for bearing faults.
        let band = |c: usize| -> f32 {
            let mut rng = StdRng::seed_from_u64(9);
            let mut e = 0.0;
            for _ in 0..10 {
                let w = window(c, &mut rng);
                e += (550..850)
                    .step_by(25)
                    .map(|f| power(&w[..LEN], f as f32))
                    .sum::<f32>();
            }
            e
        };
        assert!(band(3) > 10.0 * band(0), "{} vs {}", band(3), band(0));
    }
}
