//! The model edge of a quantized graph: float inputs and outputs (a `Quantize` after
//! each float input, a `Dequantize` before each output: the TFLite converter's default)
//! or integer ones (its `inference_input_type` / `inference_output_type` = int8).
//!
//! Integer I/O is what a microcontroller wants: the caller writes quantized samples and
//! reads quantized scores, the model holds no float buffer, and the arena is a quarter
//! of the float input smaller. [`integer_io`] turns a float-edge graph into that form.

use super::util::compact;
use crate::{CompressError, Result};
use edgeopt_ir::{DType, Graph, Op};

/// Makes every float graph input that is read only by a float→integer `Quantize` an
/// integer input (that Quantize's output, with its quantization parameters), and
/// every graph output computed by an integer→float `Dequantize` an integer output.
/// The new inputs and outputs take the old ones' names, so the model's interface keeps
/// its names and changes only its dtypes. An input read by anything else stays float
/// (an error if `strict`, as a user who asked for integer I/O should hear of it).
pub fn integer_io(g: &mut Graph, strict: bool) -> Result<()> {
    let mut readers = vec![Vec::new(); g.values.len()];
    for (ni, n) in g.nodes.iter().enumerate() {
        for x in n.present_inputs() {
            readers[x].push(ni);
        }
    }
    let producers = g.producers();
    let mut dropped = vec![false; g.nodes.len()];
    for k in 0..g.inputs.len() {
        let i = g.inputs[k];
        let quantize = match readers[i].as_slice() {
            [q] if matches!(g.nodes[*q].op, Op::Quantize)
                && g.values[i].dtype == DType::F32
                && g.nodes[*q].outputs.len() == 1
                && g.values[g.nodes[*q].outputs[0]].dtype.is_integer() =>
            {
                Some(*q)
            }
            _ => None,
        };
        let Some(q) = quantize else {
            if strict && g.values[i].dtype == DType::F32 {
                return Err(CompressError::Unsupported(format!(
                    "input '{}' is not quantized at the model edge (it feeds float \
                     operators), so it cannot be an integer input",
                    g.values[i].name
                )));
            }
            continue;
        };
        let qi = g.nodes[q].outputs[0];
        swap_names(g, i, qi);
        let shape = g.values[i].shape.clone();
        g.values[qi].shape = shape;
        g.inputs[k] = qi;
        dropped[q] = true;
    }
    for k in 0..g.outputs.len() {
        let o = g.outputs[k];
        let dequantize = producers[o].filter(|&p| {
            matches!(g.nodes[p].op, Op::Dequantize)
                && g.nodes[p]
                    .input(0)
                    .is_some_and(|x| g.values[x].dtype.is_integer())
        });
        let Some(p) = dequantize else {
            if strict && g.values[o].dtype == DType::F32 {
                return Err(CompressError::Unsupported(format!(
                    "output '{}' is computed in float, so it cannot be an integer output",
                    g.values[o].name
                )));
            }
            continue;
        };
        let x = g.nodes[p].input(0).expect("checked");
        if g.outputs.contains(&x) || g.inputs.contains(&x) {
            continue;
        }
        swap_names(g, o, x);
        g.outputs[k] = x;
    }
    let mut k = 0;
    g.nodes.retain(|_| {
        k += 1;
        !dropped[k - 1]
    });
    compact(g);
    g.validate()?;
    Ok(())
}

fn swap_names(g: &mut Graph, a: usize, b: usize) {
    let na = std::mem::take(&mut g.values[a].name);
    let nb = std::mem::replace(&mut g.values[b].name, na);
    g.values[a].name = nb;
}
