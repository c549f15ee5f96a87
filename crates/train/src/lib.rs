//! train
pub use burn;
