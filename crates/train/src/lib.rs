//! Training engine: lowers any edgeopt IR graph to a burn autodiff model, trains or
//! fine-tunes it, and writes the weights back into the IR.
//!
//! - [`model`]: the lowering ([`Model`]) and its hook points ([`hooks`]).
//! - [`loss`], [`optim`]: losses, optimizers, learning-rate schedules.
//! - [`data`]: dataset loaders (npy, npy.gz, idx, csv), normalization, augmentation,
//!   seeded shuffling and background prefetch.
//! - [`trainer`]: the training loop with validation, early stopping and checkpoints.
//! - [`vibration`]: the built-in machine-vibration dataset of `edgeopt demo`.
//! - [`normalization`]: the input normalization embedded into exported graphs.
//!
//! The `edgeopt train` / `edgeopt demo` commands are in the cli crate; model files are
//! read and written there too, so this crate knows no file format but its datasets'.

pub mod checkpoint;
pub mod data;
pub mod dyn_tensor;
pub mod hooks;
pub mod loss;
pub mod model;
pub mod normalization;
pub mod optim;
pub mod trainer;
pub mod vibration;

pub use burn;
pub use dyn_tensor::DynTensor;
pub use hooks::{FakeQuant, Hooks, LossTerm};
pub use model::{Mode, Model, ParamInfo, ParamRole};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("lowering: {0}")]
    Lowering(String),
    #[error("config: {0}")]
    Config(String),
    #[error("data: {0}")]
    Data(String),
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: String, msg: String },
    #[error(transparent)]
    Ir(#[from] edgeopt_ir::IrError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The plain CPU device training runs on (burn's pure-Rust flex backend).
pub fn cpu() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

/// Runs `f` on a thread pool of `threads` threads built for it (burn's CPU backend
/// parallelizes on the current rayon pool), or, with None, on the caller's current pool
/// (rayon's default: one thread per core). The pool is local: nothing process-global
/// is configured, so two trainings in one process may use different thread counts.
pub fn with_threads<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, TrainError> {
    let Some(n) = threads else {
        return Ok(f());
    };
    if n == 0 {
        return Err(TrainError::Config("threads must be at least 1".into()));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .map_err(|e| TrainError::Config(format!("cannot start {n} threads: {e}")))?;
    Ok(pool.install(f))
}
