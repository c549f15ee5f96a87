//! Softmax / LogSoftmax over one axis (ONNX >= 13), with TFLite's `beta`.

use super::util::{f32_of, f32_tensor, KResult};
use edgeopt_ir::shape::norm_axis;
use edgeopt_ir::Tensor;

pub fn softmax(x: &Tensor, axis: i64, beta: f32, log: bool) -> KResult<Tensor> {
    let xs = f32_of(x)?;
    let a = norm_axis(axis, x.rank())?;
    let d = x.shape[a];
    let inner: usize = x.shape[a + 1..].iter().product();
    let outer: usize = x.shape[..a].iter().product();
    let mut y = vec![0.0f32; xs.len()];
    let mut buf = vec![0.0f32; d];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * d + k) * inner + i;
            let mx = (0..d).map(|k| xs[at(k)]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for k in 0..d {
                // exp(beta * (x - max)): the max shift keeps exp finite.
                buf[k] = beta * (xs[at(k)] - mx);
                sum += buf[k].exp();
            }
            if log {
                let ls = sum.ln();
                for k in 0..d {
                    y[at(k)] = buf[k] - ls;
                }
            } else {
                for k in 0..d {
                    y[at(k)] = buf[k].exp() / sum;
                }
            }
        }
    }
    f32_tensor(x.shape.clone(), y)
}
