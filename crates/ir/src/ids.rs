//! Typed node and value ids.
//!
//! [`Graph`](crate::Graph)'s own fields still hold bare indices ([`ValueId`] is an
//! alias of `usize`, node indices are `usize`): moving every crate onto the newtypes is
//! a workspace-wide mechanical change left for a quiet moment. New APIs (the
//! [`Patch`](crate::patch::Patch)) take and return these types, so a node index can no
//! longer be passed where a value id is expected; `from` / [`index`](ValId::index)
//! convert at the boundary.

use crate::graph::ValueId;

/// A node: its index in [`Graph::nodes`](crate::Graph::nodes) (or, for a node a
/// patch adds, a patch-local id that [`Applied`](crate::patch::Applied) maps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// A value: its index in [`Graph::values`](crate::Graph::values) (or, for a value a
/// patch creates, a patch-local id that [`Applied`](crate::patch::Applied) maps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValId(pub ValueId);

impl NodeId {
    pub fn index(self) -> usize {
        self.0
    }
}

impl ValId {
    pub fn index(self) -> ValueId {
        self.0
    }
}

impl From<usize> for NodeId {
    fn from(i: usize) -> NodeId {
        NodeId(i)
    }
}

impl From<ValueId> for ValId {
    fn from(i: ValueId) -> ValId {
        ValId(i)
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node #{}", self.0)
    }
}

impl std::fmt::Display for ValId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "value #{}", self.0)
    }
}
