//! The limits a recipe must stay within, checked after every step: RAM (the memory
//! planner's peak arena), flash (weight bytes plus constants folded at build time, as
//! `inspect --device` counts them), latency and energy (through a [`CostEstimator`]
//! in the context), and the accuracy drop against the input model (through the
//! [`Evaluator`]).
//!
//! [`CostEstimator`]: super::CostEstimator
//! [`Evaluator`]: super::Evaluator

use serde::{Deserialize, Serialize};

/// Upper limits; `None` is no limit. Sizes in bytes, latency in milliseconds, energy
/// in millijoules per inference, accuracy drop in points of the evaluator's score
/// (top-1 percentage points).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(
        default,
        deserialize_with = "de_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub ram: Option<u64>,
    #[serde(
        default,
        deserialize_with = "de_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub flash: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_mj: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_drop: Option<f64>,
}

/// One budgeted quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    Ram,
    Flash,
    Latency,
    Energy,
    AccuracyDrop,
}

impl Limit {
    pub fn describe(self) -> &'static str {
        match self {
            Limit::Ram => "RAM (peak arena)",
            Limit::Flash => "flash (weights + folded constants)",
            Limit::Latency => "latency",
            Limit::Energy => "energy per inference",
            Limit::AccuracyDrop => "accuracy drop",
        }
    }

    fn unit(self, v: f64) -> String {
        match self {
            Limit::Ram | Limit::Flash => format!("{} B", v as u64),
            Limit::Latency => format!("{v:.3} ms"),
            Limit::Energy => format!("{v:.4} mJ"),
            Limit::AccuracyDrop => format!("{v:.2} points"),
        }
    }
}

/// What was measured after a step (only what the budget or the caller asked for).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ram: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flash: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_mj: Option<f64>,
    /// The evaluator's score of the step's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Input model's score − this score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_drop: Option<f64>,
}

/// Which step broke which limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// 0-based step index in the recipe.
    pub step: usize,
    pub pass: String,
    pub limit: Limit,
    pub value: f64,
    pub max: f64,
    /// The input model exceeded the limit already, and no step brought it within.
    pub since_input: bool,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "budget exceeded after step {} ('{}'): {} is {}, the limit is {}",
            self.step + 1,
            self.pass,
            self.limit.describe(),
            self.limit.unit(self.value),
            self.limit.unit(self.max)
        )?;
        if self.since_input {
            write!(
                f,
                " (the input model exceeded it already and no step brought it within)"
            )?;
        }
        Ok(())
    }
}

impl Budget {
    /// No limit at all.
    pub fn is_empty(&self) -> bool {
        self == &Budget::default()
    }

    /// RAM and flash limits of a device profile (what it has).
    pub fn from_device(d: &edgeopt_device::Device) -> Budget {
        Budget {
            ram: d.ram_bytes.as_ref().map(|f| f.value),
            flash: d.flash_bytes.as_ref().map(|f| f.value),
            ..Budget::default()
        }
    }

    /// `self`'s limits, with `other`'s where `other` sets one.
    pub fn overridden_by(&self, other: &Budget) -> Budget {
        Budget {
            ram: other.ram.or(self.ram),
            flash: other.flash.or(self.flash),
            latency_ms: other.latency_ms.or(self.latency_ms),
            energy_mj: other.energy_mj.or(self.energy_mj),
            accuracy_drop: other.accuracy_drop.or(self.accuracy_drop),
        }
    }

    /// Every limit `m` exceeds: (limit, value, max), in the order RAM, flash,
    /// latency, energy, accuracy.
    pub fn exceeded(&self, m: &Metrics) -> Vec<(Limit, f64, f64)> {
        let pairs = [
            (
                Limit::Ram,
                m.ram.map(|v| v as f64),
                self.ram.map(|v| v as f64),
            ),
            (
                Limit::Flash,
                m.flash.map(|v| v as f64),
                self.flash.map(|v| v as f64),
            ),
            (Limit::Latency, m.latency_ms, self.latency_ms),
            (Limit::Energy, m.energy_mj, self.energy_mj),
            (Limit::AccuracyDrop, m.accuracy_drop, self.accuracy_drop),
        ];
        pairs
            .into_iter()
            .filter_map(|(limit, v, max)| match (v, max) {
                (Some(v), Some(max)) if v > max => Some((limit, v, max)),
                _ => None,
            })
            .collect()
    }
}

/// Tracks which limits hold along a run. A step *breaks* a limit when the quantity
/// was within it before the step and is over it after: the run stops there, naming
/// the step. A quantity the input model already exceeds (a float model over the flash
/// limit that quantization is meant to bring within) may stay over it until a step
/// brings it within; if none does, the run fails after its last step
/// ([`Violation::since_input`]).
#[derive(Debug, Clone)]
pub struct Tracker {
    over: Vec<Limit>,
}

impl Tracker {
    /// The limits the input model already exceeds.
    pub fn new(budget: &Budget, input: &Metrics) -> Tracker {
        Tracker {
            over: budget
                .exceeded(input)
                .into_iter()
                .map(|(l, _, _)| l)
                .collect(),
        }
    }

    /// After step `step` (`pass`) measured `m`: the first limit it broke.
    pub fn step(
        &mut self,
        budget: &Budget,
        m: &Metrics,
        step: usize,
        pass: &str,
    ) -> Option<Violation> {
        let now = budget.exceeded(m);
        let broke =
            now.iter()
                .find(|(l, _, _)| !self.over.contains(l))
                .map(|&(limit, value, max)| Violation {
                    step,
                    pass: pass.to_string(),
                    limit,
                    value,
                    max,
                    since_input: false,
                });
        self.over = now.into_iter().map(|(l, _, _)| l).collect();
        broke
    }

    /// After the last step: a limit still exceeded (the input exceeded it and no step
    /// brought it within).
    pub fn finish(
        &self,
        budget: &Budget,
        m: &Metrics,
        step: usize,
        pass: &str,
    ) -> Option<Violation> {
        budget
            .exceeded(m)
            .first()
            .map(|&(limit, value, max)| Violation {
                step,
                pass: pass.to_string(),
                limit,
                value,
                max,
                since_input: true,
            })
    }
}

/// A byte size: an integer, or a string with a unit (`"256KiB"`, `"1 MiB"`, `"512kB"`,
/// `"1000 B"`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 262144, \"256KiB\", \"1MiB\")"))?;
    let mul = match unit.trim() {
        "" | "B" => 1.0,
        "KiB" | "K" => 1024.0,
        "MiB" | "M" => 1024.0 * 1024.0,
        "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        u => {
            return Err(format!(
                "'{s}': unknown size unit '{u}' (B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    let v = n * mul;
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 {
        return Err(format!("'{s}' is not a whole number of bytes"));
    }
    Ok(v as u64)
}

fn de_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Int(n)) => Ok(Some(n)),
        Some(Size::Text(s)) => parse_bytes(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("256KiB"), Ok(262144));
        assert_eq!(parse_bytes("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("512kB"), Ok(512_000));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("-1").is_err());
        let b: Budget = toml::from_str("ram = \"2KiB\"\nflash = 1000\n").unwrap();
        assert_eq!((b.ram, b.flash), (Some(2048), Some(1000)));
        assert!(toml::from_str::<Budget>("rom = 1").is_err());
    }

    #[test]
    fn a_step_breaks_a_limit_it_pushes_over() {
        let b = Budget {
            flash: Some(100),
            ram: Some(10),
            ..Budget::default()
        };
        let m = |ram, flash| Metrics {
            ram: Some(ram),
            flash: Some(flash),
            ..Metrics::default()
        };
        // The input is over flash: steps may stay over it until one brings it within.
        let mut t = Tracker::new(&b, &m(5, 400));
        assert!(t.step(&b, &m(5, 300), 0, "a").is_none());
        assert!(t.step(&b, &m(5, 90), 1, "b").is_none());
        let v = t.step(&b, &m(5, 101), 2, "c").unwrap();
        assert_eq!((v.limit, v.step, v.since_input), (Limit::Flash, 2, false));
        assert!(v.to_string().contains("step 3 ('c')"), "{v}");
        let v = t.step(&b, &m(11, 50), 3, "d").unwrap();
        assert_eq!(v.limit, Limit::Ram);
        // Never brought within: the last step reports it.
        let t = Tracker::new(&b, &m(5, 400));
        let v = t.finish(&b, &m(5, 200), 4, "e").unwrap();
        assert!(
            v.since_input && v.to_string().contains("exceeded it already"),
            "{v}"
        );
    }
}
