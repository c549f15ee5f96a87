//! What the `edgeopt` sub-commands do, as a library so tests call the same code as the
//! binary: loading a model ([`model`]), `inspect` ([`inspect`]), `eval` ([`eval`]),
//! `run` ([`run`]) and `bench` ([`bench`]).

pub mod bench;
pub mod compile;
pub mod eval;
pub mod inspect;
pub mod model;
pub mod quantize;
pub mod run;

pub use model::load_model;
