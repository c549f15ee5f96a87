//! Training engine: lowers any edgeopt IR graph to a burn autodiff model, trains or
//! fine-tunes it, and writes the weights back into the IR.
//!
//! - [`model`]: the lowering ([`Model`]) and its hook points ([`hooks`]).
//! - [`loss`], [`optim`]: losses, optimizers, learning-rate schedules.
//! - [`data`]: dataset loaders (npy, npy.gz, idx, csv), normalization, augmentation,
//!   seeded shuffling and background prefetch.
//! - [`trainer`]: the training loop with validation, early stopping and checkpoints.
//! - [`vibration`]: the built-in machine-vibration dataset of `edgeopt demo`.
//! - [`cli`]: `edgeopt train` / `edgeopt demo` arguments and entry points.

pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod dyn_tensor;
pub mod hooks;
pub mod loss;
pub mod model;
pub mod optim;
pub mod trainer;
pub mod vibration;

pub use burn;
pub use cli::{demo_command, train_command, DemoArgs, TrainArgs};
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
