//! The per-op shape rules behind [`crate::shape::infer_node`].

use crate::graph::Node;
use crate::op::*;
use crate::shape::{InputFact, OutputFact};

/// One rule per op. Returns a plain message; the caller adds the node's name.
pub(crate) fn infer(node: &Node, inputs: &[Option<InputFact>]) -> Result<Vec<OutputFact>, String> {
    let _ = (node, inputs);
    Err("shape rule not implemented yet".into())
}
