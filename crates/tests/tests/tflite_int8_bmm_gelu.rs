//! The int8 ops a quantized transformer adds, one small .tflite each, run by edgeopt
//! and by the oracles on the same samples, every output byte compared:
//! - BATCH_MATMUL of two activations with different parameters (lhs x, rhs x
//!   requantized and reshaped), batched over a leading dimension: edgeopt under
//!   `Numerics::LiteRt` vs LiteRT's builtin kernel and under `Numerics::Tflm` vs
//!   TensorFlow Lite Micro, at three output scales (so the output stage rounds,
//!   saturates and lands on ties differently);
//! - GELU (exact form) vs LiteRT's lookup table at four input/output parameter pairs,
//!   sample 0 a ramp over all 256 int8 values (the whole table). TensorFlow Lite Micro
//!   has no GELU kernel (its interpreter refuses the op), so there is no TFLM case.
//!
//! The last BATCH_MATMUL case has a real multiplier of 0.3 (a right shift of 1, so
//! half of the odd products are ties) on inputs within 3 of their zero point (nothing
//! saturates): found this way, LiteRT's builtin int8 BATCH_MATMUL rounds negative ties
//! away from zero like its reference MultiplyByQuantizedMultiplier, not upwards like
//! its FULLY_CONNECTED through ruy (rounding upwards: 29 of 128 values differ).

use edgeopt_ir::{Tensor, TensorData};
use edgeopt_runtime::kernels::quantized::Numerics;
use edgeopt_runtime::ExecOptions;
use edgeopt_testkit::{data_dir, oracle_available, run_oracle, scratch_dir, tflm_available};
use edgeopt_tflite::fixtures::ModelBuilder;
use edgeopt_tflite::schema::{self as s, BuiltinOperator as B};
use std::path::Path;

const SAMPLES: usize = 4;
/// BATCH_MATMUL input parameters.
const BMM_X: (f32, i64) = (0.043, -5);

fn act(b: &mut ModelBuilder, name: &str, shape: &[i32], q: (f32, i64)) -> i32 {
    b.typed_activation(name, shape, s::TensorType::Int8, Some(q))
}

/// x [1, 2, 4, 16] -> QUANTIZE (other parameters) -> RESHAPE [1, 2, 16, 4] = rhs;
/// y = BATCH_MATMUL(x, rhs) [1, 2, 4, 4].
fn bmm(out_q: (f32, i64)) -> (s::Model, Vec<usize>) {
    let mut b = ModelBuilder::new();
    let x = act(&mut b, "x", &[1, 2, 4, 16], BMM_X);
    let xr = act(&mut b, "x_requantized", &[1, 2, 4, 16], (0.031, 7));
    b.op(
        B::Quantize,
        &[x],
        &[xr],
        Some(s::BuiltinOptions::QuantizeOptions(Box::default())),
    );
    let shape = b.constant_i32("rhs_shape", &[4], &[1, 2, 16, 4]);
    let rhs = act(&mut b, "rhs", &[1, 2, 16, 4], (0.031, 7));
    b.op(
        B::Reshape,
        &[xr, shape],
        &[rhs],
        Some(s::BuiltinOptions::ReshapeOptions(Box::default())),
    );
    let y = act(&mut b, "y", &[1, 2, 4, 4], out_q);
    let o = s::BuiltinOptions::BatchMatMulOptions(Box::default());
    b.op(B::BatchMatmul, &[x, rhs], &[y], Some(o));
    (b.finish(&[x], &[y]), vec![2, 4, 16])
}

fn gelu(in_q: (f32, i64), out_q: (f32, i64)) -> (s::Model, Vec<usize>) {
    let mut b = ModelBuilder::new();
    let x = act(&mut b, "x", &[1, 256], in_q);
    let y = act(&mut b, "y", &[1, 256], out_q);
    let o = s::BuiltinOptions::GeluOptions(Box::new(s::GeluOptions { approximate: false }));
    b.op(B::Gelu, &[x], &[y], Some(o));
    (b.finish(&[x], &[y]), vec![256])
}

/// SAMPLES int8 samples of `shape`: sample 0 a ramp over every int8 value, the others
/// deterministic pseudo-random.
/// With `narrow`, every value is within 3 of the BATCH_MATMUL input's zero point.
fn samples(shape: &[usize], seed: u64, narrow: bool) -> Tensor {
    let per: usize = shape.iter().product();
    let mut st = seed | 1;
    let v: Vec<i8> = (0..SAMPLES * per)
        .map(|i| {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            if narrow {
                return (BMM_X.1 + (st >> 24) as i64 % 7 - 3) as i8;
            }
            if i < per {
                return (i % 256) as u8 as i8;
            }
            (st >> 24) as i8
        })
        .collect();
    let dims: Vec<usize> = [SAMPLES].into_iter().chain(shape.iter().copied()).collect();
    Tensor::new(dims, TensorData::I8(v)).unwrap()
}

fn ours(path: &Path, x: &Tensor, num: Numerics) -> Vec<i8> {
    let g = edgeopt_cli::load_model(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let y =
        edgeopt_runtime::run_per_sample(&g, std::slice::from_ref(x), ExecOptions::numerics(num))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    y[0].as_i8().unwrap().to_vec()
}

fn differ(a: &[i8], b: &[i8]) -> usize {
    a.iter().zip(b).filter(|(p, q)| p != q).count() + a.len().abs_diff(b.len())
}

#[test]
fn int8_batch_matmul_and_gelu_match_litert_and_tflm() {
    if data_dir().is_none() || !oracle_available() {
        return;
    }
    let dir = scratch_dir("tflite_int8_bmm_gelu");
    let mut cases = Vec::new();
    // 0.043 * 0.031 / 0.3: a real multiplier of 0.3.
    let ties = (0.043f32 * 0.031 / 0.3, 0i64);
    for (k, q) in [(0.37f32, 3i64), (0.11, -20), (1.3, 0), ties]
        .into_iter()
        .enumerate()
    {
        cases.push((format!("bmm{k}"), bmm(q), true));
    }
    let gq = [
        ((0.05f32, 0i64), (0.04f32, -80i64)),
        ((0.021, -7), (0.013, -100)),
        ((0.11, 30), (0.09, -110)),
        ((0.0123, 100), (0.006, -128)),
    ];
    for (k, (i, o)) in gq.into_iter().enumerate() {
        cases.push((format!("gelu{k}"), gelu(i, o), false));
    }
    let mut bad = Vec::new();
    for (k, (name, (m, shape), tflm)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("{name}.tflite"));
        std::fs::write(&path, edgeopt_tflite::finish_model(&m)).unwrap();
        let x = samples(&shape, 0x51ed_270b ^ k as u64, name == "bmm3");
        let (xin, yout) = (
            dir.join(format!("{name}_x.npy")),
            dir.join(format!("{name}_y.npy")),
        );
        edgeopt_npy::write(&xin, &x).unwrap();
        run_oracle("litert_run.py", &[&path, &xin, &yout]);
        let want = edgeopt_npy::read(&yout).unwrap();
        let d = differ(&ours(&path, &x, Numerics::LiteRt), want.as_i8().unwrap());
        println!("{name}: {d} of {} values differ from LiteRT", want.len());
        if d > 0 {
            bad.push(format!("{name} vs LiteRT: {d}"));
        }
        if tflm && tflm_available() {
            let want = edgeopt_tests::tflm::run(&path, &x, &dir.join(format!("{name}_tflm")));
            let d = differ(&ours(&path, &x, Numerics::Tflm), want.as_i8().unwrap());
            println!(
                "{name}: {d} of {} values differ from TFLite Micro",
                want.len()
            );
            if d > 0 {
                bad.push(format!("{name} vs TFLite Micro: {d}"));
            }
        }
    }
    assert!(bad.is_empty(), "differences: {bad:?}");
}
