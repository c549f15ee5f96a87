//! Float convolution and transposed convolution, any number of spatial dims, both
//! layouts, groups (incl. depthwise), dilations, pads.
//!
//! The fast path is im2col + `gemm` (direct loops for depthwise); [`conv_naive`] is the
//! plain six-loop definition that tests compare the fast path against.

use super::util::{apply_act, f32_of, f32_tensor, sgemm, window_table, KResult, NONE};
use edgeopt_ir::shape::{conv_geometry, conv_transpose_geometry, OutputFact};
use edgeopt_ir::{ConvAttrs, ConvTransposeAttrs, Layout, Tensor};

fn check_float(x: &Tensor, w: &Tensor) -> KResult<()> {
    if x.dtype() != edgeopt_ir::DType::F32 || w.dtype() != edgeopt_ir::DType::F32 {
        return Err(format!(
            "float convolution needs f32 input and weights, got {} and {} (integer \
             convolutions need quantization parameters)",
            x.dtype(),
            w.dtype()
        ));
    }
    Ok(())
}

pub fn conv(
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out: &OutputFact,
) -> KResult<Tensor> {
    check_float(x, w)?;
    let bias = b.map(f32_of).transpose()?;
    let y = conv_f32(a, &x.shape, f32_of(x)?, &w.shape, f32_of(w)?, bias)?;
    f32_tensor(out.shape.clone(), y)
}

/// Fast float convolution: returns the output in `a.layout`.
pub fn conv_f32(
    a: &ConvAttrs,
    x_shape: &[usize],
    x: &[f32],
    w_shape: &[usize],
    w: &[f32],
    bias: Option<&[f32]>,
) -> KResult<Vec<f32>> {
    let g = conv_geometry(a, x_shape, w_shape)?;
    let win = &g.window;
    let (n, c, m, groups) = (g.batch, g.in_channels, g.out_channels, g.group);
    let (cg, mg) = (c / groups, m / groups);
    let s_in: usize = win.input.iter().product();
    let p_out: usize = win.output.iter().product();
    let taps: usize = win.kernel.iter().product();
    if x.len() != n * c * s_in || w.len() != m * cg * taps {
        return Err("input or weight data does not match its shape".into());
    }
    if let Some(b) = bias {
        if b.len() != m {
            return Err(format!("bias has {} elements, expected {m}", b.len()));
        }
    }
    let mut y = vec![0.0f32; n * m * p_out];
    let identity_window = taps == 1
        && win.strides.iter().all(|&s| s == 1)
        && win.pads_begin.iter().all(|&p| p == 0)
        && win.output == win.input;
    let tab = if identity_window {
        None
    } else {
        Some(window_table(
            &win.output,
            &win.input,
            &win.kernel,
            &win.strides,
            &win.dilations,
            &win.pads_begin,
        )?)
    };
    let kk = cg * taps; // reduction length
    super::util::check_scratch(kk, p_out)?;
    let depthwise = cg == 1 && groups > 1;
    match a.layout {
        Layout::Nchw => {
            let mut cols = if identity_window || depthwise {
                Vec::new()
            } else {
                vec![0.0f32; kk * p_out]
            };
            for ni in 0..n {
                let xb = &x[ni * c * s_in..(ni + 1) * c * s_in];
                let yb = &mut y[ni * m * p_out..(ni + 1) * m * p_out];
                if depthwise {
                    let tab = tab.as_ref().map(|t| &t.offsets[..]);
                    for mi in 0..m {
                        let plane = &xb[(mi / mg) * s_in..(mi / mg + 1) * s_in];
                        let yp = &mut yb[mi * p_out..(mi + 1) * p_out];
                        let wk = &w[mi * taps..(mi + 1) * taps];
                        match tab {
                            None => {
                                for (o, &v) in yp.iter_mut().zip(plane) {
                                    *o = v * wk[0];
                                }
                            }
                            Some(t) => {
                                for (k, &wv) in wk.iter().enumerate() {
                                    let row = &t[k * p_out..(k + 1) * p_out];
                                    for (o, &off) in yp.iter_mut().zip(row) {
                                        if off != NONE {
                                            *o += wv * plane[off];
                                        }
                                    }
                                }
                            }
                        }
                    }
                    continue;
                }
                for gi in 0..groups {
                    let xg = &xb[gi * cg * s_in..(gi + 1) * cg * s_in];
                    let rhs: &[f32] = match &tab {
                        None => xg,
                        Some(t) => {
                            for ci in 0..cg {
                                let plane = &xg[ci * s_in..(ci + 1) * s_in];
                                for k in 0..taps {
                                    let row = &t.offsets[k * p_out..(k + 1) * p_out];
                                    let dst = &mut cols
                                        [(ci * taps + k) * p_out..(ci * taps + k + 1) * p_out];
                                    for (d, &off) in dst.iter_mut().zip(row) {
                                        *d = if off == NONE { 0.0 } else { plane[off] };
                                    }
                                }
                            }
                            &cols
                        }
                    };
                    let wg = &w[gi * mg * kk..(gi + 1) * mg * kk];
                    let yg = &mut yb[gi * mg * p_out..(gi + 1) * mg * p_out];
                    sgemm(mg, p_out, kk, wg, kk, 1, rhs, p_out, 1, yg, p_out, 1, false);
                }
            }
            if let Some(b) = bias {
                for ni in 0..n {
                    for (mi, &bv) in b.iter().enumerate() {
                        let base = (ni * m + mi) * p_out;
                        for v in &mut y[base..base + p_out] {
                            *v += bv;
                        }
                    }
                }
            }
        }
        Layout::Nhwc => {
            let mut cols = if identity_window || depthwise {
                Vec::new()
            } else {
                vec![0.0f32; p_out * kk]
            };
            let mut plane_out = if depthwise {
                vec![0.0f32; p_out]
            } else {
                Vec::new()
            };
            for ni in 0..n {
                let xb = &x[ni * s_in * c..(ni + 1) * s_in * c];
                let yb = &mut y[ni * p_out * m..(ni + 1) * p_out * m];
                if depthwise {
                    for mi in 0..m {
                        let ci = mi / mg;
                        let wk = &w[mi * taps..(mi + 1) * taps];
                        plane_out.iter_mut().for_each(|v| *v = 0.0);
                        match &tab {
                            None => {
                                for (p, o) in plane_out.iter_mut().enumerate() {
                                    *o = xb[p * c + ci] * wk[0];
                                }
                            }
                            Some(t) => {
                                for (k, &wv) in wk.iter().enumerate() {
                                    let row = &t.offsets[k * p_out..(k + 1) * p_out];
                                    for (o, &off) in plane_out.iter_mut().zip(row) {
                                        if off != NONE {
                                            *o += wv * xb[off * c + ci];
                                        }
                                    }
                                }
                            }
                        }
                        for (p, &v) in plane_out.iter().enumerate() {
                            yb[p * m + mi] = v;
                        }
                    }
                    continue;
                }
                for gi in 0..groups {
                    // lhs: [p_out, kk] with columns (tap, channel) like the weights.
                    let (lhs, l_rs): (&[f32], usize) = match &tab {
                        None => (&xb[gi * cg..], c),
                        Some(t) => {
                            for k in 0..taps {
                                let row = &t.offsets[k * p_out..(k + 1) * p_out];
                                for (p, &off) in row.iter().enumerate() {
                                    let dst = &mut cols[p * kk + k * cg..p * kk + (k + 1) * cg];
                                    if off == NONE {
                                        dst.iter_mut().for_each(|v| *v = 0.0);
                                    } else {
                                        dst.copy_from_slice(
                                            &xb[off * c + gi * cg..off * c + (gi + 1) * cg],
                                        );
                                    }
                                }
                            }
                            (&cols, kk)
                        }
                    };
                    let wg = &w[gi * mg * kk..(gi + 1) * mg * kk];
                    // y[p, gi*mg + j] = sum_q lhs[p, q] * wg[j, q]
                    sgemm(
                        p_out,
                        mg,
                        kk,
                        lhs,
                        l_rs,
                        1,
                        wg,
                        1,
                        kk,
                        &mut yb[gi * mg..],
                        m,
                        1,
                        false,
                    );
                }
            }
            if let Some(b) = bias {
                for row in y.chunks_exact_mut(m) {
                    for (v, &bv) in row.iter_mut().zip(b) {
                        *v += bv;
                    }
                }
            }
        }
    }
    apply_act(&mut y, a.activation);
    Ok(y)
}

/// The definition of convolution, loop by loop, for tests: no tables, no gemm.
pub fn conv_naive(
    a: &ConvAttrs,
    x_shape: &[usize],
    x: &[f32],
    w_shape: &[usize],
    w: &[f32],
    bias: Option<&[f32]>,
) -> KResult<Vec<f32>> {
    let g = conv_geometry(a, x_shape, w_shape)?;
    let win = &g.window;
    let nd = win.input.len();
    let (cg, mg) = (g.in_channels / g.group, g.out_channels / g.group);
    let sp_str = super::util::strides(&win.input);
    let k_str = super::util::strides(&win.kernel);
    let o_str = super::util::strides(&win.output);
    let s_in: usize = win.input.iter().product();
    let p_out: usize = win.output.iter().product();
    let taps: usize = win.kernel.iter().product();
    let (c, m) = (g.in_channels, g.out_channels);
    let x_at = |n: usize, ch: usize, sp: usize| match a.layout {
        Layout::Nchw => x[(n * c + ch) * s_in + sp],
        Layout::Nhwc => x[(n * s_in + sp) * c + ch],
    };
    let w_at = |mo: usize, ci: usize, k: usize| match a.layout {
        Layout::Nchw => w[(mo * cg + ci) * taps + k],
        Layout::Nhwc => w[(mo * taps + k) * cg + ci],
    };
    let mut y = vec![0.0f32; g.batch * m * p_out];
    for n in 0..g.batch {
        for mo in 0..m {
            let gi = mo / mg;
            for p in 0..p_out {
                let mut acc = bias.map_or(0.0, |b| b[mo]);
                for ci in 0..cg {
                    for k in 0..taps {
                        let mut sp = 0usize;
                        let mut inside = true;
                        for d in 0..nd {
                            let o = (p / o_str[d]) % win.output[d];
                            let j = (k / k_str[d]) % win.kernel[d];
                            let pos = (o * win.strides[d] + j * win.dilations[d]) as isize
                                - win.pads_begin[d] as isize;
                            if pos < 0 || pos as usize >= win.input[d] {
                                inside = false;
                                break;
                            }
                            sp += pos as usize * sp_str[d];
                        }
                        if inside {
                            acc += x_at(n, gi * cg + ci, sp) * w_at(mo, ci, k);
                        }
                    }
                }
                let at = match a.layout {
                    Layout::Nchw => (n * m + mo) * p_out + p,
                    Layout::Nhwc => (n * p_out + p) * m + mo,
                };
                y[at] = acc;
            }
        }
    }
    apply_act(&mut y, a.activation);
    Ok(y)
}

pub fn conv_transpose(
    a: &ConvTransposeAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out: &OutputFact,
) -> KResult<Tensor> {
    check_float(x, w)?;
    let (_, g) = conv_transpose_geometry(a, &x.shape, &w.shape, b.map(|b| &b.shape[..]))?;
    let win = &g.window;
    let (n, c, m, groups) = (g.batch, g.in_channels, g.out_channels, g.group);
    let (cg, mg) = (c / groups, m / groups);
    let p_in: usize = win.input.iter().product();
    let p_out: usize = win.output.iter().product();
    let taps: usize = win.kernel.iter().product();
    let nd = win.input.len();
    // Work in NCHW with weights [C, M/g, *k]; NHWC is transposed in and out.
    let nchw = a.conv.layout == Layout::Nchw;
    let xs = f32_of(x)?;
    let ws = f32_of(w)?;
    let (xv, wv);
    let (xd, wd): (&[f32], &[f32]) = if nchw {
        (xs, ws)
    } else {
        xv = to_nchw(xs, n, p_in, c);
        // [C, taps, Mg] -> [C, Mg, taps]
        wv = {
            let mut t = vec![0.0f32; ws.len()];
            for ci in 0..c {
                for k in 0..taps {
                    for j in 0..mg {
                        t[(ci * mg + j) * taps + k] = ws[(ci * taps + k) * mg + j];
                    }
                }
            }
            t
        };
        (&xv, &wv)
    };
    let tab = window_table(
        &win.input,
        &win.output,
        &win.kernel,
        &win.strides,
        &win.dilations,
        &win.pads_begin,
    )?;
    let _ = nd;
    let mgk = mg * taps;
    super::util::check_scratch(mgk, p_in)?;
    let mut cols = vec![0.0f32; mgk * p_in];
    let mut y = vec![0.0f32; n * m * p_out];
    for ni in 0..n {
        for gi in 0..groups {
            let xg = &xd[(ni * c + gi * cg) * p_in..(ni * c + (gi + 1) * cg) * p_in];
            let wg = &wd[gi * cg * mgk..(gi + 1) * cg * mgk];
            // cols[(j, k), p] = sum_ci wg[ci, (j, k)] * xg[ci, p]
            sgemm(
                mgk, p_in, cg, wg, 1, mgk, xg, p_in, 1, &mut cols, p_in, 1, false,
            );
            for j in 0..mg {
                let yp = &mut y[(ni * m + gi * mg + j) * p_out..(ni * m + gi * mg + j + 1) * p_out];
                for k in 0..taps {
                    let row = &tab.offsets[k * p_in..(k + 1) * p_in];
                    let src = &cols[(j * taps + k) * p_in..(j * taps + k + 1) * p_in];
                    for (&off, &v) in row.iter().zip(src) {
                        if off != NONE {
                            yp[off] += v;
                        }
                    }
                }
            }
        }
    }
    if let Some(b) = b {
        let bv = f32_of(b)?;
        for ni in 0..n {
            for (mi, &bb) in bv.iter().enumerate() {
                for v in &mut y[(ni * m + mi) * p_out..(ni * m + mi + 1) * p_out] {
                    *v += bb;
                }
            }
        }
    }
    apply_act(&mut y, a.conv.activation);
    let y = if nchw { y } else { from_nchw(&y, n, p_out, m) };
    f32_tensor(out.shape.clone(), y)
}

fn to_nchw(x: &[f32], n: usize, p: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; x.len()];
    for ni in 0..n {
        for pi in 0..p {
            for ci in 0..c {
                t[(ni * c + ci) * p + pi] = x[(ni * p + pi) * c + ci];
            }
        }
    }
    t
}

fn from_nchw(x: &[f32], n: usize, p: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; x.len()];
    for ni in 0..n {
        for ci in 0..c {
            for pi in 0..p {
                t[(ni * p + pi) * c + ci] = x[(ni * c + ci) * p + pi];
            }
        }
    }
    t
}
