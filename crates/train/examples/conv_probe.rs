use edgeopt_train::burn::tensor::{module::conv2d, ops::ConvOptions, Distribution, Tensor};
use std::time::Instant;

/// stride-1, no-pad conv via im2col (narrow + cat) and batched matmul.
fn conv_mm(x: Tensor<4>, w: Tensor<4>) -> Tensor<4> {
    let [n, c, h, wd] = x.dims();
    let [m, _, k, _] = w.dims();
    let (ho, wo) = (h - k + 1, wd - k + 1);
    let mut cols = Vec::with_capacity(k * k);
    for i in 0..k {
        for j in 0..k {
            cols.push(x.clone().narrow(2, i, ho).narrow(3, j, wo).reshape([n, c, 1, ho * wo]));
        }
    }
    let cols = Tensor::cat(cols, 2).reshape([n, c * k * k, ho * wo]);
    let wm = w.reshape([1, m, c * k * k]);
    wm.matmul(cols).reshape([n, m, ho, wo])
}

fn main() {
    edgeopt_train::cli::set_threads(Some(2));
    let dev = edgeopt_train::cpu();
    for (n, c, h, m, k) in [(64usize, 1usize, 28usize, 20usize, 5usize), (64, 20, 12, 50, 5), (64, 16, 32, 16, 3)] {
        let x = Tensor::<4>::random([n, c, h, h], Distribution::Default, &dev);
        let w = Tensor::<4>::random([m, c, k, k], Distribution::Default, &dev);
        let o = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let a = conv2d(x.clone(), w.clone(), None, o.clone());
        let b = conv_mm(x.clone(), w.clone());
        let diff = (a - b).abs().max().into_scalar::<f32>();
        let ho = h - k + 1;
        let macs = (n * m * ho * ho * c * k * k) as f64;
        for (name, mm) in [("burn", false), ("im2col", true)] {
            let t = Instant::now();
            for _ in 0..10 {
                let y = if mm { conv_mm(x.clone(), w.clone()) } else { conv2d(x.clone(), w.clone(), None, o.clone()) };
                let _ = y.into_data();
            }
            let fwd = t.elapsed().as_secs_f64() / 10.0;
            let t = Instant::now();
            for _ in 0..5 {
                let xa = x.clone().autodiff().require_grad();
                let wa = w.clone().autodiff().require_grad();
                let y = if mm { conv_mm(xa.clone(), wa.clone()) } else { conv2d(xa.clone(), wa.clone(), None, o.clone()) };
                let g = y.sum().backward();
                let _ = wa.grad(&g).unwrap().into_data();
                let _ = xa.grad(&g).unwrap().into_data();
            }
            let fb = t.elapsed().as_secs_f64() / 5.0;
            println!("x[{n},{c},{h},{h}] w[{m},{c},{k},{k}] {name}: fwd {:.2} ms ({:.1} GMAC/s), fwd+bwd {:.2} ms  (diff {diff:e})", fwd * 1e3, macs / fwd / 1e9, fb * 1e3);
        }
    }
}
