//! Gemm, MatMul (numpy batched broadcasting) and TFLite FullyConnected on f32, all on
//! the `gemm` crate, accumulating in f64 (see [`super::util::sgemm_f64acc`]).

use super::util::{apply_act, bcast_map, f32_of, f32_tensor, sgemm_f64acc as sgemm, KResult};
use edgeopt_ir::shape::OutputFact;
use edgeopt_ir::{Activation, DType, Tensor};

fn need_f32(ts: &[&Tensor]) -> KResult<()> {
    for t in ts {
        if t.dtype() != DType::F32 {
            return Err(format!(
                "float matrix product needs f32 operands, got {} (integer products need \
                 quantization parameters or MatMulInteger)",
                t.dtype()
            ));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn gemm_op(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    out: &OutputFact,
) -> KResult<Tensor> {
    need_f32(&[a, b])?;
    let (m, n) = (out.shape[0], out.shape[1]);
    let k = if trans_a { a.shape[0] } else { a.shape[1] };
    let (av, bv) = (f32_of(a)?, f32_of(b)?);
    let (a_rs, a_cs) = if trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if trans_b { (1, k) } else { (n, 1) };
    let mut y = vec![0.0f32; m * n];
    sgemm(m, n, k, av, a_rs, a_cs, bv, b_rs, b_cs, &mut y, n, 1, false);
    if alpha != 1.0 {
        y.iter_mut().for_each(|v| *v *= alpha);
    }
    if let Some(c) = c.filter(|_| beta != 0.0) {
        // y = alpha*A*B + beta*C, in this order like onnxruntime.
        let cv = c.to_f32_vec();
        for (d, &i) in y.iter_mut().zip(&bcast_map(&c.shape, &out.shape)) {
            *d += beta * cv[i];
        }
    }
    f32_tensor(out.shape.clone(), y)
}

pub fn matmul(a: &Tensor, b: &Tensor, out: &OutputFact) -> KResult<Tensor> {
    need_f32(&[a, b])?;
    let a2: Vec<usize> = if a.rank() == 1 {
        vec![1, a.shape[0]]
    } else {
        a.shape.clone()
    };
    let b2: Vec<usize> = if b.rank() == 1 {
        vec![b.shape[0], 1]
    } else {
        b.shape.clone()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let n = b2[b2.len() - 1];
    let ab = &a2[..a2.len() - 2];
    let bb = &b2[..b2.len() - 2];
    let batch = edgeopt_ir::shape::broadcast(ab, bb)?;
    let ia = bcast_map(ab, &batch);
    let ib = bcast_map(bb, &batch);
    let (av, bv) = (f32_of(a)?, f32_of(b)?);
    let mut y = vec![0.0f32; ia.len() * m * n];
    for (bi, (&i, &j)) in ia.iter().zip(&ib).enumerate() {
        sgemm(
            m,
            n,
            k,
            &av[i * m * k..(i + 1) * m * k],
            k,
            1,
            &bv[j * k * n..(j + 1) * k * n],
            n,
            1,
            &mut y[bi * m * n..(bi + 1) * m * n],
            n,
            1,
            false,
        );
    }
    f32_tensor(out.shape.clone(), y)
}

pub fn fully_connected(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Activation,
    out: &OutputFact,
) -> KResult<Tensor> {
    need_f32(&[x, w])?;
    let (n, k) = (w.shape[0], w.shape[1]);
    let rows = x.len() / k.max(1);
    let mut y = vec![0.0f32; rows * n];
    if let Some(b) = b {
        let bv = f32_of(b)?;
        for row in y.chunks_exact_mut(n.max(1)) {
            row.copy_from_slice(bv);
        }
    }
    // y[r, j] += sum_q x[r, q] * w[j, q]
    sgemm(
        rows,
        n,
        k,
        f32_of(x)?,
        k,
        1,
        f32_of(w)?,
        1,
        k,
        &mut y,
        n,
        1,
        b.is_some(),
    );
    apply_act(&mut y, act);
    f32_tensor(out.shape.clone(), y)
}
