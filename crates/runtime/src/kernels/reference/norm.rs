//! BatchNormalization (inference form, channel axis 1) and LayerNormalization.

use super::util::{f32_of, f32_tensor, KResult};
use edgeopt_ir::shape::{bcast_strides, norm_axis};
use edgeopt_ir::Tensor;

pub fn batch_norm(inputs: &[Option<&Tensor>], eps: f32) -> KResult<Tensor> {
    let get = |i: usize| {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("input {i} is missing"))
            .and_then(f32_of)
    };
    let x = inputs[0].ok_or("input 0 is missing")?;
    let xs = get(0)?;
    let (scale, bias, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
    let c = x.shape[1];
    let inner: usize = x.shape[2..].iter().product();
    // y = (x - mean) / sqrt(var + eps) * scale + bias, folded to x * a + b per channel.
    let a: Vec<f32> = (0..c).map(|k| scale[k] / (var[k] + eps).sqrt()).collect();
    let b: Vec<f32> = (0..c).map(|k| bias[k] - mean[k] * a[k]).collect();
    let mut y = vec![0.0f32; xs.len()];
    for (blk, (yo, xo)) in y
        .chunks_exact_mut(inner.max(1))
        .zip(xs.chunks_exact(inner.max(1)))
        .enumerate()
    {
        let k = blk % c;
        for (d, &s) in yo.iter_mut().zip(xo) {
            *d = s * a[k] + b[k];
        }
    }
    f32_tensor(x.shape.clone(), y)
}

/// ONNX LayerNormalization: every slice over the axes `axis..` is normalized with its
/// own mean and biased variance, then scaled and shifted (scale and bias broadcast to
/// the slice shape). Statistics are accumulated in f64 so long rows lose nothing.
pub fn layer_norm(inputs: &[Option<&Tensor>], axis: i64, eps: f32) -> KResult<Tensor> {
    let x = inputs
        .first()
        .copied()
        .flatten()
        .ok_or("input 0 is missing")?;
    let xs = f32_of(x)?;
    let a = norm_axis(axis, x.rank())?;
    let inner_shape = &x.shape[a..];
    let inner: usize = inner_shape.iter().product();
    // Scale and bias expanded to one value per position of the normalized slice.
    let expand = |i: usize, default: f32| -> KResult<Vec<f32>> {
        let Some(t) = inputs.get(i).copied().flatten() else {
            return Ok(vec![default; inner]);
        };
        let v = f32_of(t)?;
        let st = bcast_strides(&t.shape, inner_shape);
        let mut out = Vec::with_capacity(inner);
        let mut pos = vec![0usize; inner_shape.len()];
        for _ in 0..inner {
            out.push(v[pos.iter().zip(&st).map(|(p, s)| p * s).sum::<usize>()]);
            super::util::inc(&mut pos, inner_shape);
        }
        Ok(out)
    };
    let (scale, bias) = (expand(1, 1.0)?, expand(2, 0.0)?);
    let mut y = vec![0.0f32; xs.len()];
    if inner > 0 {
        for (yo, xo) in y.chunks_exact_mut(inner).zip(xs.chunks_exact(inner)) {
            let n = inner as f64;
            let mean = xo.iter().map(|&e| e as f64).sum::<f64>() / n;
            let var = xo.iter().map(|&e| (e as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + eps as f64).sqrt();
            for (k, (d, &e)) in yo.iter_mut().zip(xo).enumerate() {
                *d = (((e as f64 - mean) * inv) as f32) * scale[k] + bias[k];
            }
        }
    }
    f32_tensor(x.shape.clone(), y)
}
