//! ONNX integer operators: QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger.
//!
//! Semantics follow the ONNX reference implementation: integer accumulation of
//! zero-point-subtracted operands, then (for the QLinear ops) a float requantization
//! `acc * (a_scale * b_scale / y_scale)` (scale product in f32, product with the
//! accumulator in f64) rounded half to even and saturated.

use super::super::NodeCtx;
use super::common::*;
use super::conv::{accumulate_nhwc, conv_geom, nchw_to_nhwc, nhwc_to_nchw, ConvGeom};
use crate::error::Result;
use edgeopt_ir::{ConvAttrs, DType, Layout, Tensor, TensorData};

/// Integer values of an 8-bit (or 4-bit) tensor as i32.
fn int_values(ctx: &NodeCtx, t: &Tensor, what: &str) -> Result<Vec<i32>> {
    match &t.data {
        TensorData::I8(v) | TensorData::I4(v) => Ok(v.iter().map(|&e| e as i32).collect()),
        TensorData::U8(v) | TensorData::U4(v) => Ok(v.iter().map(|&e| e as i32).collect()),
        d => Err(ctx.error(format!("{what} must be 8-bit integer, got {}", d.dtype()))),
    }
}

/// Zero point(s) of an optional input: empty (none), one, or per channel.
fn zero_points(ctx: &NodeCtx, t: Option<&Tensor>, what: &str) -> Result<Vec<i32>> {
    match t {
        None => Ok(vec![0]),
        Some(t) => {
            let v = int_values(ctx, t, what)?;
            if v.is_empty() {
                return Err(ctx.error(format!("{what} is empty")));
            }
            Ok(v)
        }
    }
}

fn floats(ctx: &NodeCtx, t: &Tensor, what: &str) -> Result<Vec<f32>> {
    match &t.data {
        TensorData::F32(v) => Ok(v.clone()),
        TensorData::F16(v) => Ok(v.iter().map(|h| h.to_f32()).collect()),
        d => Err(ctx.error(format!("{what} must be float, got {}", d.dtype()))),
    }
}

fn sub_i16(ctx: &NodeCtx, v: &[i32], zp: &[i32], inner: usize) -> Result<Vec<i16>> {
    v.iter()
        .enumerate()
        .map(|(i, &e)| {
            let z = if zp.len() == 1 {
                zp[0]
            } else {
                zp[(i / inner) % zp.len()]
            };
            i16::try_from(e - z).map_err(|_| ctx.error("operand minus zero point exceeds 16 bits"))
        })
        .collect()
}

/// Shared conv accumulation for NCHW ONNX integer convs: returns NCHW i32 accumulators.
fn conv_acc(
    ctx: &NodeCtx,
    a: &ConvAttrs,
    x: &Tensor,
    x_zp: &[i32],
    w: &Tensor,
    w_zp: &[i32],
    bias: Option<&Tensor>,
) -> Result<(ConvGeom, Vec<i32>, Vec<usize>)> {
    if a.layout != Layout::Nchw {
        return Err(ctx.error("ONNX integer conv expects NCHW"));
    }
    let g = conv_geom(ctx, a, &x.shape, &w.shape)?;
    if x_zp.len() != 1 {
        return Err(ctx.error("x zero point must be a scalar"));
    }
    if w_zp.len() != 1 && w_zp.len() != g.m {
        return Err(ctx.error("w zero point must be a scalar or per output channel"));
    }
    let hw_in = g.h.input * g.w.input;
    let xv = int_values(ctx, x, "x")?;
    let xo = sub_i16(ctx, &xv, x_zp, 1)?;
    let x_nhwc = nchw_to_nhwc(&xo, g.n, g.c, hw_in);
    // Weights [M, C/g, k...] -> [M, k..., C/g].
    let wv = int_values(ctx, w, "w")?;
    let k_sp = g.h.kernel * g.w.kernel;
    let per_m = w.len() / g.m.max(1);
    let wo = sub_i16(ctx, &wv, w_zp, per_m)?;
    let w_nhwc = nchw_to_nhwc(&wo, g.m, g.cg(), k_sp);
    let b = match bias {
        None => vec![0; g.m],
        Some(t) => {
            if t.len() != g.m {
                return Err(ctx.error("bias length differs from output channels"));
            }
            t.to_i64_vec()
                .into_iter()
                .map(|v| i32::try_from(v).map_err(|_| ctx.error("bias exceeds 32 bits")))
                .collect::<Result<_>>()?
        }
    };
    let acc = accumulate_nhwc(&g, &x_nhwc, &w_nhwc, &b);
    let hw_out = g.h.output * g.w.output;
    let acc = nhwc_to_nchw(&acc, g.n, g.m, hw_out);
    let shape = if x.shape.len() == 4 {
        vec![g.n, g.m, g.h.output, g.w.output]
    } else {
        vec![g.n, g.m, g.w.output]
    };
    Ok((g, acc, shape))
}

/// Float requantization of ONNX QLinear ops.
fn requant_onnx(acc: i32, scale: f32, zp: i32, lo: i64, hi: i64) -> i64 {
    let r = acc as f64 * scale as f64 + zp as f64;
    (r.round_ties_even() as i64).clamp(lo, hi)
}

fn typed_output(ctx: &NodeCtx, dtype: DType, shape: Vec<usize>, v: Vec<i64>) -> Result<Tensor> {
    let data = match dtype {
        DType::I8 => TensorData::I8(v.iter().map(|&e| e as i8).collect()),
        DType::U8 => TensorData::U8(v.iter().map(|&e| e as u8).collect()),
        d => return Err(ctx.error(format!("unsupported output type {d}"))),
    };
    Ok(Tensor::new(shape, data)?)
}

fn opt<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// QLinearConv: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, [B].
pub fn qlinear_conv(
    ctx: &NodeCtx,
    a: &ConvAttrs,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let x_scale = floats(ctx, input(ctx, inputs, 1)?, "x_scale")?;
    let x_zp = zero_points(ctx, opt(inputs, 2), "x_zero_point")?;
    let w = input(ctx, inputs, 3)?;
    let w_scale = floats(ctx, input(ctx, inputs, 4)?, "w_scale")?;
    let w_zp = zero_points(ctx, opt(inputs, 5), "w_zero_point")?;
    let y_scale = floats(ctx, input(ctx, inputs, 6)?, "y_scale")?;
    let y_zp_t = opt(inputs, 7);
    let y_zp = zero_points(ctx, y_zp_t, "y_zero_point")?;
    if x_scale.len() != 1 || y_scale.len() != 1 || y_zp.len() != 1 {
        return Err(ctx.error("x/y scales and zero points must be scalars"));
    }
    let (g, acc, shape) = conv_acc(ctx, a, x, &x_zp, w, &w_zp, opt(inputs, 8))?;
    if w_scale.len() != 1 && w_scale.len() != g.m {
        return Err(ctx.error("w_scale must be a scalar or per output channel"));
    }
    let out_dtype = y_zp_t.map(|t| t.dtype()).unwrap_or(x.dtype());
    let (lo, hi) = out_dtype
        .int_range()
        .ok_or_else(|| ctx.error("bad output type"))?;
    let scales: Vec<f32> = (0..g.m)
        .map(|c| x_scale[0] * w_scale[if w_scale.len() == 1 { 0 } else { c }] / y_scale[0])
        .collect();
    let hw = g.h.output * g.w.output;
    let out: Vec<i64> = acc
        .iter()
        .enumerate()
        .map(|(i, &v)| requant_onnx(v, scales[(i / hw) % g.m], y_zp[0], lo, hi))
        .collect();
    Ok(vec![typed_output(ctx, out_dtype, shape, out)?])
}

/// ConvInteger: x, w, [x_zp], [w_zp] -> i32.
pub fn conv_integer(
    ctx: &NodeCtx,
    a: &ConvAttrs,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(ctx, inputs, 0)?;
    let w = input(ctx, inputs, 1)?;
    let x_zp = zero_points(ctx, opt(inputs, 2), "x_zero_point")?;
    let w_zp = zero_points(ctx, opt(inputs, 3), "w_zero_point")?;
    let (_, acc, shape) = conv_acc(ctx, a, x, &x_zp, w, &w_zp, None)?;
    Ok(vec![Tensor::new(shape, TensorData::I32(acc))?])
}

/// numpy matmul of i32 operands with batch broadcasting; 1-D operands are promoted
/// and the added dimension removed from the result, as numpy does.
fn matmul_i32(
    ctx: &NodeCtx,
    a: &[i32],
    ash: &[usize],
    b: &[i32],
    bsh: &[usize],
) -> Result<(Vec<i32>, Vec<usize>)> {
    if ash.is_empty() || bsh.is_empty() {
        return Err(ctx.error("matmul operands must have rank >= 1"));
    }
    let a2: Vec<usize> = if ash.len() == 1 {
        vec![1, ash[0]]
    } else {
        ash.to_vec()
    };
    let b2: Vec<usize> = if bsh.len() == 1 {
        vec![bsh[0], 1]
    } else {
        bsh.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(ctx.error(format!("matmul inner dimensions differ: {ash:?} x {bsh:?}")));
    }
    let abatch = &a2[..a2.len() - 2];
    let bbatch = &b2[..b2.len() - 2];
    let batch = super::elementwise::broadcast_shape(ctx, abatch, bbatch)?;
    let nb: usize = batch.iter().product();
    let mut out = vec![0i32; numel(ctx, &[nb, m, n])?];
    let mut bt = vec![0i32; k * n];
    let mut idx = 0;
    super::elementwise::for_each_broadcast(abatch, bbatch, &batch, |bi, ia, ib| {
        let _ = bi;
        let am = &a[ia * m * k..(ia + 1) * m * k];
        let bm = &b[ib * k * n..(ib + 1) * k * n];
        // B transposed so the inner loop runs over contiguous rows.
        for kk in 0..k {
            for j in 0..n {
                bt[j * k + kk] = bm[kk * n + j];
            }
        }
        for i in 0..m {
            let ar = &am[i * k..(i + 1) * k];
            for j in 0..n {
                let br = &bt[j * k..(j + 1) * k];
                out[idx] = ar
                    .iter()
                    .zip(br)
                    .fold(0i32, |s, (&x, &y)| s.wrapping_add(x.wrapping_mul(y)));
                idx += 1;
            }
        }
    });
    let mut shape = batch;
    if ash.len() > 1 {
        shape.push(m);
    }
    if bsh.len() > 1 {
        shape.push(n);
    }
    Ok((out, shape))
}

/// Subtracts zero points: scalar, or per row of A (`axis_from_end = 2`: dim M) / per
/// column of B (`axis_from_end = 1`: dim N).
fn sub_zp_matrix(
    ctx: &NodeCtx,
    v: &mut [i32],
    shape: &[usize],
    zp: &[i32],
    per_row: bool,
) -> Result<()> {
    if zp.len() == 1 {
        v.iter_mut().for_each(|e| *e -= zp[0]);
        return Ok(());
    }
    let r = shape.len();
    let (rows, cols) = if r >= 2 {
        (shape[r - 2], shape[r - 1])
    } else {
        (1, shape[0])
    };
    let want = if per_row { rows } else { cols };
    if zp.len() != want {
        return Err(ctx.error(format!(
            "zero point of length {} does not match {want}",
            zp.len()
        )));
    }
    for (i, e) in v.iter_mut().enumerate() {
        let within = i % (rows * cols);
        let k = if per_row {
            within / cols
        } else {
            within % cols
        };
        *e -= zp[k];
    }
    Ok(())
}

/// MatMulInteger: a, b, [a_zp], [b_zp] -> i32.
pub fn matmul_integer(ctx: &NodeCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = input(ctx, inputs, 0)?;
    let b = input(ctx, inputs, 1)?;
    let mut av = int_values(ctx, a, "A")?;
    let mut bv = int_values(ctx, b, "B")?;
    sub_zp_matrix(
        ctx,
        &mut av,
        &a.shape,
        &zero_points(ctx, opt(inputs, 2), "a_zero_point")?,
        true,
    )?;
    sub_zp_matrix(
        ctx,
        &mut bv,
        &b.shape,
        &zero_points(ctx, opt(inputs, 3), "b_zero_point")?,
        false,
    )?;
    let (out, shape) = matmul_i32(ctx, &av, &a.shape, &bv, &b.shape)?;
    Ok(vec![Tensor::new(shape, TensorData::I32(out))?])
}

/// QLinearMatMul: a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp.
pub fn qlinear_matmul(ctx: &NodeCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = input(ctx, inputs, 0)?;
    let a_scale = floats(ctx, input(ctx, inputs, 1)?, "a_scale")?;
    let b = input(ctx, inputs, 3)?;
    let b_scale = floats(ctx, input(ctx, inputs, 4)?, "b_scale")?;
    let y_scale = floats(ctx, input(ctx, inputs, 6)?, "y_scale")?;
    let y_zp_t = opt(inputs, 7);
    let y_zp = zero_points(ctx, y_zp_t, "y_zero_point")?;
    if a_scale.len() != 1 || b_scale.len() != 1 || y_scale.len() != 1 || y_zp.len() != 1 {
        return Err(ctx.error("per-axis QLinearMatMul is not supported"));
    }
    let mut av = int_values(ctx, a, "a")?;
    let mut bv = int_values(ctx, b, "b")?;
    sub_zp_matrix(
        ctx,
        &mut av,
        &a.shape,
        &zero_points(ctx, opt(inputs, 2), "a_zero_point")?,
        true,
    )?;
    sub_zp_matrix(
        ctx,
        &mut bv,
        &b.shape,
        &zero_points(ctx, opt(inputs, 5), "b_zero_point")?,
        false,
    )?;
    let (acc, shape) = matmul_i32(ctx, &av, &a.shape, &bv, &b.shape)?;
    let out_dtype = y_zp_t.map(|t| t.dtype()).unwrap_or(a.dtype());
    let (lo, hi) = out_dtype
        .int_range()
        .ok_or_else(|| ctx.error("bad output type"))?;
    // The reference computes the combined scale in the scales' own precision.
    let f16 = matches!(input(ctx, inputs, 1)?.data, TensorData::F16(_));
    let scale = if f16 {
        let h = |v: f32| half::f16::from_f32(v);
        (h((h(a_scale[0]) * h(b_scale[0])).to_f32()) / h(y_scale[0])).to_f32()
    } else {
        a_scale[0] * b_scale[0] / y_scale[0]
    };
    let out: Vec<i64> = acc
        .iter()
        .map(|&v| requant_onnx(v, scale, y_zp[0], lo, hi))
        .collect();
    Ok(vec![typed_output(ctx, out_dtype, shape, out)?])
}
