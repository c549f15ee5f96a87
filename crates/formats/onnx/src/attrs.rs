//! Typed access to the attributes of an ONNX node, with errors that name the node.

use crate::error::{OnnxError, Result};
use crate::proto::{AttributeProto, NodeProto, TensorProto};

// AttributeProto.AttributeType codes.
const A_FLOAT: i32 = 1;
const A_INT: i32 = 2;
const A_STRING: i32 = 3;
const A_TENSOR: i32 = 4;
const A_FLOATS: i32 = 6;
const A_INTS: i32 = 7;

/// Largest value accepted for geometric attributes (kernel sizes, strides, pads,
/// dilations, axes): far beyond any real model, small enough that shape arithmetic on
/// it cannot overflow.
pub const MAX_GEOMETRY: i64 = 1 << 31;

/// One ONNX node with the name used in messages (its own, or `op_type#index`).
pub struct NodeView<'a> {
    pub node: &'a NodeProto,
    pub name: String,
    pub op_type: &'a str,
}

impl<'a> NodeView<'a> {
    pub fn new(node: &'a NodeProto, index: usize) -> Self {
        let op_type = node.op_type.as_deref().unwrap_or("");
        let name = match node.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => format!("{op_type}#{index}"),
        };
        NodeView {
            node,
            name,
            op_type,
        }
    }

    /// An error naming this node.
    pub fn err(&self, msg: impl Into<String>) -> OnnxError {
        OnnxError::Node {
            node: self.name.clone(),
            op: self.op_type.to_string(),
            msg: msg.into(),
        }
    }

    pub fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    /// Checks the declared attribute type when the producer set it.
    fn typed(&self, name: &str, want: i32, what: &str) -> Result<Option<&'a AttributeProto>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => match a.r#type {
                Some(t) if t != want && t != 0 => {
                    Err(self.err(format!("attribute '{name}' should be {what} (type {t})")))
                }
                _ => Ok(Some(a)),
            },
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn i_opt(&self, name: &str) -> Result<Option<i64>> {
        match self.typed(name, A_INT, "an int")? {
            None => Ok(None),
            Some(a) => {
                a.i.map(Some)
                    .ok_or_else(|| self.err(format!("attribute '{name}' has no int value")))
            }
        }
    }

    pub fn i(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.i_opt(name)?.unwrap_or(default))
    }

    pub fn f_opt(&self, name: &str) -> Result<Option<f32>> {
        match self.typed(name, A_FLOAT, "a float")? {
            None => Ok(None),
            Some(a) => {
                a.f.map(Some)
                    .ok_or_else(|| self.err(format!("attribute '{name}' has no float value")))
            }
        }
    }

    pub fn f(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.f_opt(name)?.unwrap_or(default))
    }

    pub fn ints(&self, name: &str) -> Result<Option<&'a [i64]>> {
        Ok(self
            .typed(name, A_INTS, "a list of ints")?
            .map(|a| a.ints.as_slice()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<&'a [f32]>> {
        Ok(self
            .typed(name, A_FLOATS, "a list of floats")?
            .map(|a| a.floats.as_slice()))
    }

    pub fn s(&self, name: &str) -> Result<Option<String>> {
        match self.typed(name, A_STRING, "a string")? {
            None => Ok(None),
            Some(a) => {
                let b = a.s.as_deref().unwrap_or(&[]);
                String::from_utf8(b.to_vec())
                    .map(Some)
                    .map_err(|_| self.err(format!("attribute '{name}' is not UTF-8")))
            }
        }
    }

    pub fn t(&self, name: &str) -> Result<Option<&'a TensorProto>> {
        match self.typed(name, A_TENSOR, "a tensor")? {
            None => Ok(None),
            Some(a) => {
                a.t.as_ref()
                    .map(Some)
                    .ok_or_else(|| self.err(format!("attribute '{name}' has no tensor value")))
            }
        }
    }

    /// Non-negative geometric values (kernel, strides, pads...) as usize.
    pub fn usizes(&self, name: &str) -> Result<Vec<usize>> {
        match self.ints(name)? {
            None => Ok(Vec::new()),
            Some(v) => v
                .iter()
                .map(|&x| {
                    if (0..=MAX_GEOMETRY).contains(&x) {
                        Ok(x as usize)
                    } else {
                        Err(self.err(format!("attribute '{name}' has invalid value {x}")))
                    }
                })
                .collect(),
        }
    }

    /// Like [`Self::usizes`], but every value must be at least 1 (strides, dilations).
    pub fn positive(&self, name: &str) -> Result<Vec<usize>> {
        let v = self.usizes(name)?;
        if v.contains(&0) {
            return Err(self.err(format!("attribute '{name}' must be positive, got {v:?}")));
        }
        Ok(v)
    }

    /// Signed axis-like values, bounded.
    pub fn axes(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.ints(name)? {
            None => Ok(None),
            Some(v) => {
                if let Some(x) = v.iter().find(|x| x.abs() > MAX_GEOMETRY) {
                    return Err(self.err(format!("attribute '{name}' has invalid value {x}")));
                }
                Ok(Some(v.to_vec()))
            }
        }
    }

    /// Number of present (non-empty) outputs.
    pub fn present_outputs(&self) -> usize {
        self.node.output.iter().filter(|s| !s.is_empty()).count()
    }
}
