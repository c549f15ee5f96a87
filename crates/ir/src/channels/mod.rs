//! Channel dependencies: which channels of a graph must be removed together, and
//! [`prune_channels`], which removes them.
//!
//! Models: Torch-Pruning's dependency graph (a group of coupled layers with index
//! mappings through concat, split and flatten) and NNCF's pruning operations (one
//! mask-propagation rule per op kind, "stop" ops that make a group unprunable). The
//! difference: instead of one index-mapping function per op kind, coupling is computed
//! on *channel atoms*. Every tensor that carries channels gets a *space*: the axes that
//! hold them (one axis for a conv output; two after ShuffleNet's `Reshape [N, 2, C/2,
//! H, W]`; the one feature axis after a flatten, where each feature is an atom). An
//! atom is one index of a space. Each op rule unions atoms that must go together
//! (a conv output channel with its weight row and bias, an Add's operands
//! elementwise, a concat input with its offset range of the output, a flatten's
//! features with the channel they come from, a transposed or reshaped tensor with its
//! source by the element mapping). A *group* is a set of components (connected atoms)
//! with the same coupling structure: its channels are the components, and removing
//! channel `i` removes every atom of component `i` everywhere.
//!
//! Exactness over reach: an op that a rule does not understand, a constant used in an
//! unexpected way, a graph input or output, a reshape whose element mapping does not
//! keep channels apart, all *block* the atoms involved, with a reason; a group with a
//! blocked atom is not prunable. Torch-Pruning's flatten mapping assumes NCHW
//! (`stride = features / channels`) and skips reshapes it does not recognize; here the
//! reshape mapping is derived from the element strides (NCHW and NHWC flattens,
//! channel shuffles) and checked element by element, or blocked.
//!
//! Multi-axis spaces (ShuffleNet's `[2, C/2]` after the shuffle reshape) can only
//! shrink as a product (a reshape target can only say "2 × k"): the analysis couples
//! the atoms along every axis but the largest, so a removal is always a product set.

mod analyze;
mod prune;

pub use analyze::analyze;
pub use prune::{prune_channels, prune_groups, zero_channels};

use crate::graph::{Graph, ValueId};

/// What a space's tensor is to the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An activation (computed at run time); only its shape changes.
    Activation,
    /// A constant that produces the channel: conv / fully-connected weight rows,
    /// biases, BatchNorm parameters, constant operands of Add / Sub / Max / Min.
    /// Zeroing these makes the channel zero before the next op.
    Producer,
    /// A constant that reads the channel: conv / fully-connected weight columns.
    Consumer,
    /// A constant operand of Mul / Div / Pow (not zeroed: `0 / 0`).
    Operand,
    /// Per-channel quantization parameters (DequantizeLinear scale / zero point).
    QuantParam,
}

/// The channels of one tensor: `axes` of `value` (ascending), with their sizes in
/// the analysed graph. Atom `i` is the row-major index over `dims`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    pub value: ValueId,
    pub axes: Vec<usize>,
    pub dims: Vec<usize>,
    pub role: Role,
}

impl Space {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A set of coupled channels.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelGroup {
    /// Every space the group touches.
    pub spaces: Vec<Space>,
    /// One entry per channel: its atoms as (index into `spaces`, atom index).
    pub channels: Vec<Vec<(usize, usize)>>,
    /// Why the group cannot be pruned (empty: it can).
    pub blocked: Vec<String>,
    /// `None` when removing channels equals zeroing their [`Role::Producer`]
    /// parameters ([`zero_channels`]) in the original graph: every op between
    /// producers and consumers maps zero to zero. Otherwise the first op that does not.
    pub not_zero_exact: Option<String>,
}

impl ChannelGroup {
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    pub fn is_prunable(&self) -> bool {
        self.blocked.is_empty()
    }

    /// One line: channel count and the constants that produce the channels.
    pub fn describe(&self, graph: &Graph) -> String {
        let mut producers: Vec<String> = Vec::new();
        for s in &self.spaces {
            if s.role == Role::Producer {
                let n = &graph.values[s.value].name;
                if !producers.contains(n) {
                    producers.push(n.clone());
                }
            }
        }
        let acts = self
            .spaces
            .iter()
            .filter(|s| s.role == Role::Activation)
            .count();
        let shown: Vec<&str> = producers.iter().take(4).map(String::as_str).collect();
        format!(
            "{} channels, {} activations, producers [{}{}]",
            self.len(),
            acts,
            shown.join(", "),
            if producers.len() > 4 { ", ..." } else { "" }
        )
    }
}

/// All groups of a graph, in a deterministic order (by the first atom of their
/// first channel, i.e. roughly graph order).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelAnalysis {
    pub groups: Vec<ChannelGroup>,
}

impl ChannelAnalysis {
    pub fn prunable(&self) -> impl Iterator<Item = &ChannelGroup> {
        self.groups.iter().filter(|g| g.is_prunable())
    }
}

#[cfg(test)]
mod tests;
