//! Device-aware search. For now: the cost model ([`cost`]) — latency, energy, RAM and
//! flash of a model on a device profile — with the features it reads from a graph
//! ([`features`]) and the fit of its constants to qemu instruction counts ([`fit`]).

pub mod cost;
pub mod features;
pub mod fit;

pub use cost::{estimate, predict_instructions, CostReport};
