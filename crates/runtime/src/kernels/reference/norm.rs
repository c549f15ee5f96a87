//! BatchNormalization (inference form, channel axis 1).

use super::util::{f32_of, f32_tensor, KResult};
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
