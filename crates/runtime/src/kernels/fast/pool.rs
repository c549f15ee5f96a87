//! Fast TFLite AVERAGE_POOL_2D / MAX_POOL_2D on 8-bit NHWC tensors: the reference
//! loops (`quantized::pool`), compiled for the instruction set and writing into the
//! reused output buffer. Anything unusual (a window entirely in the padding, other
//! layouts) goes to the reference kernel, which reports it.

use super::{out_buffer, Isa, Prepared};
use crate::error::Result;
use crate::kernels::quantized::common::{activation_range, input, per_tensor, QInt};
use crate::kernels::quantized::conv::{window_axes, Axis};
use crate::kernels::quantized::pool::{pool_windows, tflite_pool};
use crate::kernels::NodeCtx;
use edgeopt_ir::{Layout, PoolAttrs, Tensor};
use std::marker::PhantomData;

pub struct PoolKernel<T> {
    attrs: PoolAttrs,
    is_max: bool,
    isa: Isa,
    min: i32,
    max: i32,
    geom: Option<(Vec<usize>, Axis, Axis)>,
    acc: Vec<i32>,
    _t: PhantomData<T>,
}

impl<T: QInt> PoolKernel<T> {
    pub fn new(ctx: &NodeCtx, a: &PoolAttrs, is_max: bool, isa: Isa) -> Option<Self> {
        if a.layout != Layout::Nhwc || a.dilations.iter().any(|&d| d != 1) {
            return None;
        }
        let qx = per_tensor(ctx, ctx.in_quant(0), "input").ok()?;
        let qy = per_tensor(ctx, ctx.out_quant(0), "output").ok()?;
        if qx != qy {
            return None;
        }
        let (min, max) = activation_range::<T>(a.activation, qy);
        Some(PoolKernel {
            attrs: a.clone(),
            is_max,
            isa,
            min,
            max,
            geom: None,
            acc: Vec::new(),
            _t: PhantomData,
        })
    }

    fn reference(
        &self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let mut r = tflite_pool::<T>(ctx, &self.attrs, self.is_max, inputs)?;
        *out = Some(r.remove(0));
        Ok(())
    }
}

impl<T: QInt> Prepared for PoolKernel<T> {
    fn run(
        &mut self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let x = input(ctx, inputs, 0)?;
        let Some(xv) = T::slice(x).filter(|_| x.shape.len() == 4) else {
            return self.reference(ctx, inputs, out);
        };
        let (ay, ax) = match &self.geom {
            Some((s, ay, ax)) if *s == x.shape => (*ay, *ax),
            _ => {
                let a = &self.attrs;
                let axes = window_axes(
                    ctx,
                    &x.shape[1..3],
                    &a.kernel_shape,
                    &a.strides,
                    &a.dilations,
                    &a.pads,
                    a.auto_pad,
                    a.ceil_mode,
                )?;
                // A window entirely in the padding is an error the reference reports.
                let empty = |ax: &Axis| {
                    (0..ax.output).any(|o| {
                        let s = (o * ax.stride) as isize - ax.pad_begin as isize;
                        s + ax.kernel as isize <= 0 || s >= ax.input as isize
                    })
                };
                if empty(&axes[0]) || empty(&axes[1]) {
                    return self.reference(ctx, inputs, out);
                }
                self.geom = Some((x.shape.clone(), axes[0], axes[1]));
                (axes[0], axes[1])
            }
        };
        let (n, c) = (x.shape[0], x.shape[3]);
        let shape = [n, ay.output, ax.output, c];
        let y = out_buffer::<T>(out, &shape, n * ay.output * ax.output * c);
        self.acc.resize(c, 0);
        pool(
            self.isa,
            self.is_max,
            (self.min, self.max),
            &x.shape,
            ay,
            ax,
            xv,
            &mut self.acc,
            y,
        );
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn pool<T: QInt>(
    isa: Isa,
    is_max: bool,
    range: (i32, i32),
    xs: &[usize],
    ay: Axis,
    ax: Axis,
    xv: &[T],
    acc: &mut [i32],
    y: &mut [T],
) {
    // The reference loop itself; windows entirely in the padding were sent to the
    // reference kernel when the geometry was prepared, so the result is always true.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body<T: QInt>(
        is_max: bool,
        range: (i32, i32),
        xs: &[usize],
        ay: Axis,
        ax: Axis,
        xv: &[T],
        acc: &mut [i32],
        y: &mut [T],
    ) {
        pool_windows(is_max, range, xs, ay, ax, xv, acc, y);
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2<T: QInt>(
        is_max: bool,
        range: (i32, i32),
        xs: &[usize],
        ay: Axis,
        ax: Axis,
        xv: &[T],
        acc: &mut [i32],
        y: &mut [T],
    ) {
        body(is_max, range, xs, ay, ax, xv, acc, y)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
        return unsafe { avx2(is_max, range, xs, ay, ax, xv, acc, y) };
    }
    let _ = isa;
    body(is_max, range, xs, ay, ax, xv, acc, y)
}
