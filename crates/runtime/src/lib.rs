//! edgeopt's executor: kernels, the plain executor, and (see `planner`) a static
//! memory plan with an executor that proves it.

pub mod arena;
pub mod error;
pub mod executor;
pub mod kernels;
pub mod options;
pub mod planner;
pub mod profile;

pub use error::{Result, RuntimeError};
pub use executor::{run, run_per_sample, run_with, Session};
pub use options::ExecOptions;
