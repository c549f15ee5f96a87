//! TFLite AVERAGE_POOL_2D / MAX_POOL_2D on quantized NHWC tensors.
//!
//! Neither op requantizes: TFLite requires the output to share the input's
//! quantization, so the window is averaged (or maxed) on raw values, and the fused
//! activation narrows the clamp range.

use super::super::NodeCtx;
use super::common::*;
use super::conv::{window_axes, Axis};
use super::fixedpoint::rounding_div_away;
use crate::error::Result;
use edgeopt_ir::{Layout, PoolAttrs, Tensor};

pub fn tflite_pool<T: QInt>(
    ctx: &NodeCtx,
    a: &PoolAttrs,
    is_max: bool,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    if a.layout != Layout::Nhwc || x.shape.len() != 4 {
        return Err(ctx.error(format!(
            "quantized pooling supports NHWC 2-D inputs, got {:?} {:?}",
            a.layout, x.shape
        )));
    }
    let qx = per_tensor(ctx, ctx.in_quant(0), "input")?;
    let qy = per_tensor(ctx, ctx.out_quant(0), "output")?;
    if qx != qy {
        return Err(ctx.error(format!(
            "quantized pooling needs identical input and output quantization, got {qx:?} and {qy:?}"
        )));
    }
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    if a.dilations.iter().any(|&d| d != 1) {
        return Err(ctx.error("quantized pooling with dilation is not supported"));
    }
    let axes = window_axes(
        ctx,
        &[h, w],
        &a.kernel_shape,
        &a.strides,
        &a.dilations,
        &a.pads,
        a.auto_pad,
        a.ceil_mode,
    )?;
    let (ay, ax) = (axes[0], axes[1]);
    let range = activation_range::<T>(a.activation, qy);
    let xv = data::<T>(ctx, x, "input")?;
    let shape = vec![n, ay.output, ax.output, c];
    let total = numel(ctx, &shape)?;
    let mut out = vec![T::from_i32(0); total];
    let mut acc = vec![0i32; c];
    if !pool_windows(is_max, range, &x.shape, ay, ax, xv, &mut acc, &mut out) {
        return Err(ctx.error("pooling window lies entirely in the padding"));
    }
    Ok(vec![make(shape, out)])
}

/// The window loop over an NHWC input of shape `xs`, writing `y` (`[n, oy, ox, c]`)
/// and using `acc` (`c` accumulators). Shared with the fast kernel, which compiles it
/// with the vector instruction set enabled. Returns false when a window lies entirely
/// in the padding (no element to average).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pool_windows<T: QInt>(
    is_max: bool,
    (min, max): (i32, i32),
    xs: &[usize],
    ay: Axis,
    ax: Axis,
    xv: &[T],
    acc: &mut [i32],
    y: &mut [T],
) -> bool {
    let (n, h, w, c) = (xs[0], xs[1], xs[2], xs[3]);
    let mut yrows = y.chunks_exact_mut(c.max(1));
    for b in 0..n {
        for oy in 0..ay.output {
            let y0 = (oy * ay.stride) as isize - ay.pad_begin as isize;
            let ys = y0.max(0) as usize;
            let ye = ((y0 + ay.kernel as isize).min(h as isize)).max(0) as usize;
            for ox in 0..ax.output {
                let x0 = (ox * ax.stride) as isize - ax.pad_begin as isize;
                let xs = x0.max(0) as usize;
                let xe = ((x0 + ax.kernel as isize).min(w as isize)).max(0) as usize;
                let count = (ye.saturating_sub(ys) * xe.saturating_sub(xs)) as i32;
                if count == 0 {
                    return false;
                }
                acc.fill(if is_max { i32::MIN } else { 0 });
                for iy in ys..ye {
                    for ix in xs..xe {
                        let base = ((b * h + iy) * w + ix) * c;
                        let row = &xv[base..base + c];
                        if is_max {
                            for (a, &v) in acc.iter_mut().zip(row) {
                                *a = (*a).max(v.to_i32());
                            }
                        } else {
                            for (a, &v) in acc.iter_mut().zip(row) {
                                *a += v.to_i32();
                            }
                        }
                    }
                }
                let Some(yr) = yrows.next() else { return true };
                // The divisor counts only in-bounds elements (TFLite excludes padding).
                for (o, &a) in yr.iter_mut().zip(&*acc) {
                    let v = if is_max {
                        a
                    } else {
                        rounding_div_away(a, count)
                    };
                    *o = T::from_i32(v.clamp(min, max));
                }
            }
        }
    }
    true
}
