//! edgeopt's one model representation.
//!
//! A [`Graph`] is a list of [`Node`]s in topological order over [`Value`]s (named
//! tensors). Ops are the closed [`Op`] enum; tensors carry a [`DType`], a shape and
//! optional [`QuantParams`]. Shape inference lives in [`shape`]; graph rewrites
//! are [`Patch`]es.

pub mod batch;
pub mod channels;
pub mod dtype;
pub mod error;
mod facets;
pub mod fsutil;
pub mod graph;
pub mod ids;
pub mod op;
pub mod patch;
pub mod quant;
pub mod shape;
mod shape_rules;
pub mod tensor;

pub use dtype::{DType, QuantParams};
pub use error::{IrError, Result};
pub use facets::Work;
pub use fsutil::write_atomic;
pub use graph::{Dim, Graph, Node, Renumbering, Source, Value, ValueId};
pub use ids::{NodeId, ValId};
pub use op::*;
pub use patch::{Applied, DeadNodes, Patch, Shapes};
pub use tensor::{checked_numel, Tensor, TensorData};
