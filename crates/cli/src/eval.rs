//! `edgeopt eval`: the evaluator is the `edgeopt-eval` crate (shared with `quantize`,
//! `train` and the passes); re-exported here for the CLI's callers.

pub use edgeopt_eval::*;
