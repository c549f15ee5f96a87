//! int8 MEAN and RESIZE_BILINEAR, one op per model, bit-exact with LiteRT's builtin
//! kernels (`litert_run.py`, no delegates) over shapes that take every code path:
//! MEAN over H/W with `keep_dims` (LiteRT's optimized 4-D kernel: 16-channel vector
//! groups and the scalar tail), without `keep_dims` and over other axes (the generic
//! `QuantizedMeanOrSum`), equal and different input/output parameters; bilinear resize
//! up and down with half-pixel centers, align-corners and neither.

use edgeopt_ir::{Tensor, TensorData};
use edgeopt_testkit::{data_dir, oracle_available, run_oracle, scratch_dir};
use edgeopt_tflite::fixtures::ModelBuilder;
use edgeopt_tflite::schema::{self as s, BuiltinOperator as B};

const IN_Q: (f32, i64) = (0.021, -7);
const OUT_Q: (f32, i64) = (0.0085, 11);

enum Case {
    Mean {
        shape: Vec<i32>,
        axes: Vec<i32>,
        keep: bool,
        same_q: bool,
    },
    Resize {
        shape: Vec<i32>,
        size: [i32; 2],
        align: bool,
        half: bool,
    },
}

fn model(case: &Case) -> (s::Model, Vec<i32>) {
    let mut b = ModelBuilder::new();
    let (shape, out_q) = match case {
        Case::Mean { shape, same_q, .. } => (shape.clone(), if *same_q { IN_Q } else { OUT_Q }),
        Case::Resize { shape, .. } => (shape.clone(), IN_Q),
    };
    let x = b.typed_activation("x", &shape, s::TensorType::Int8, Some(IN_Q));
    match case {
        Case::Mean { axes, keep, .. } => {
            let r = shape.len() as i32;
            let norm: Vec<i32> = axes
                .iter()
                .map(|&a| if a < 0 { a + r } else { a })
                .collect();
            let out: Vec<i32> = (0..r)
                .filter_map(|i| match (norm.contains(&i), keep) {
                    (false, _) => Some(shape[i as usize]),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect();
            let a = b.constant_i32("axes", &[axes.len() as i32], axes);
            let y = b.typed_activation("y", &out, s::TensorType::Int8, Some(out_q));
            let opts =
                s::BuiltinOptions::ReducerOptions(Box::new(s::ReducerOptions { keep_dims: *keep }));
            b.op(B::Mean, &[x, a], &[y], Some(opts));
            (b.finish(&[x], &[y]), shape)
        }
        Case::Resize {
            size, align, half, ..
        } => {
            let out = [shape[0], size[0], size[1], shape[3]];
            let sz = b.constant_i32("size", &[2], size);
            let y = b.typed_activation("y", &out, s::TensorType::Int8, Some(out_q));
            let opts =
                s::BuiltinOptions::ResizeBilinearOptions(Box::new(s::ResizeBilinearOptions {
                    align_corners: *align,
                    half_pixel_centers: *half,
                }));
            b.op(B::ResizeBilinear, &[x, sz], &[y], Some(opts));
            (b.finish(&[x], &[y]), shape)
        }
    }
}

fn cases() -> Vec<(&'static str, Case)> {
    let mean = |shape: &[i32], axes: &[i32], keep: bool, same_q: bool| Case::Mean {
        shape: shape.to_vec(),
        axes: axes.to_vec(),
        keep,
        same_q,
    };
    let resize = |shape: &[i32], size: [i32; 2], align: bool, half: bool| Case::Resize {
        shape: shape.to_vec(),
        size,
        align,
        half,
    };
    vec![
        (
            "mean_hw_keep_c256",
            mean(&[1, 3, 3, 256], &[1, 2], true, false),
        ),
        (
            "mean_hw_keep_c40",
            mean(&[1, 5, 5, 40], &[1, 2], true, false),
        ),
        ("mean_hw_keep_c8", mean(&[1, 7, 6, 8], &[2, 1], true, false)),
        (
            "mean_hw_keep_sameq",
            mean(&[1, 4, 4, 24], &[1, 2], true, true),
        ),
        // scale_in / (count * scale_out) > 1: a left shift in the vector lanes.
        (
            "mean_hw_keep_gain",
            mean(&[1, 1, 2, 20], &[1, 2], true, false),
        ),
        (
            "mean_hw_nokeep_c40",
            mean(&[1, 5, 5, 40], &[1, 2], false, false),
        ),
        (
            "mean_hw_nokeep_sameq",
            mean(&[1, 3, 5, 20], &[1, 2], false, true),
        ),
        ("mean_time_axis", mean(&[1, 32, 12], &[1], false, false)),
        ("mean_last_axis_keep", mean(&[1, 6, 10], &[-1], true, false)),
        (
            "mean_three_axes",
            mean(&[1, 3, 4, 5], &[1, 2, 3], false, false),
        ),
        (
            "resize_up_half",
            resize(&[1, 5, 7, 3], [9, 13], false, true),
        ),
        (
            "resize_up_align",
            resize(&[1, 5, 7, 3], [9, 13], true, false),
        ),
        (
            "resize_up_plain",
            resize(&[1, 5, 7, 3], [10, 14], false, false),
        ),
        (
            "resize_down_half",
            resize(&[1, 8, 9, 2], [3, 5], false, true),
        ),
        (
            "resize_down_plain",
            resize(&[1, 8, 9, 2], [3, 4], false, false),
        ),
    ]
}

/// 4 deterministic pseudo-random int8 samples of `shape` (batch dim dropped).
fn samples(shape: &[i32], seed: u64) -> Tensor {
    let per: usize = shape[1..].iter().map(|&d| d as usize).product();
    let mut st = seed | 1;
    let v: Vec<i8> = (0..4 * per)
        .map(|_| {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            (st >> 24) as i8
        })
        .collect();
    let mut dims = vec![4usize];
    dims.extend(shape[1..].iter().map(|&d| d as usize));
    Tensor::new(dims, TensorData::I8(v)).unwrap()
}

#[test]
fn int8_mean_and_resize_bilinear_match_litert() {
    if data_dir().is_none() || !oracle_available() {
        return;
    }
    let dir = scratch_dir("tflite_int8_mean_resize");
    let mut bad = Vec::new();
    for (k, (name, case)) in cases().into_iter().enumerate() {
        let (m, shape) = model(&case);
        let bytes = edgeopt_tflite::finish_model(&m);
        let path = dir.join(format!("{name}.tflite"));
        std::fs::write(&path, &bytes).unwrap();
        let x = samples(&shape, 0x9e37_79b9_7f4a_7c15 ^ k as u64);
        let (xin, yout) = (
            dir.join(format!("{name}_x.npy")),
            dir.join(format!("{name}_y.npy")),
        );
        edgeopt_npy::write(&xin, &x).unwrap();
        run_oracle("litert_run.py", &[&path, &xin, &yout]);
        let want = edgeopt_npy::read(&yout).unwrap();
        let g = edgeopt_tflite::import(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let xs = x.as_i8().unwrap();
        let per = xs.len() / 4;
        let mut got = Vec::new();
        for i in 0..4 {
            let mut dims = x.shape.clone();
            dims[0] = 1;
            let xi =
                Tensor::new(dims, TensorData::I8(xs[i * per..(i + 1) * per].to_vec())).unwrap();
            let y = edgeopt_runtime::run(&g, &[xi]).unwrap_or_else(|e| panic!("{name}: {e}"));
            got.extend_from_slice(y[0].as_i8().unwrap());
        }
        let w = want.as_i8().unwrap();
        let diff = got.iter().zip(w).filter(|(a, b)| a != b).count();
        println!("{name}: {diff} of {} values differ", w.len());
        if got.len() != w.len() || diff > 0 {
            bad.push(name);
        }
    }
    assert!(bad.is_empty(), "not bit-exact with LiteRT: {bad:?}");
}
