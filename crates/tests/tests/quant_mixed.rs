//! Mixed precision on the MLPerf Tiny ResNet-8 (fp32 .onnx): per-layer sensitivity
//! (output SQNR with one layer lowered to int4 or ternary) and a knapsack allocation
//! under a budget of 60% of the int8 weight bytes must beat uniform int4 PTQ (50% of
//! the int8 bytes) in top-1 accuracy. Evaluated on 2,000 CIFAR-10 test images (every
//! fifth: the array is class-sorted); bench/quant_vs_ort.py and the report record the
//! full-set figures.

use edgeopt_cli::eval::{evaluate, EvalConfig};
use edgeopt_cli::quantize::{calibration_samples, select_rows};
use edgeopt_compress::quant::ptq::{run, PtqOptions};
use edgeopt_compress::quant::{weight_size, CalibMethod, Granularity, WeightFormat, WeightSpec};
use edgeopt_ir::{Tensor, TensorData};
use edgeopt_testkit as tk;

const IC: &str = "mlperf-tiny/benchmark/training/image_classification";
const OX: &str = "mlperf-tiny/onnx/tf2onnx_from_tflite";

fn lines(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Every `step`-th sample of `t` ([N, ...] u8).
fn strided(t: &Tensor, step: usize) -> Tensor {
    let n = t.shape[0];
    let per = t.len() / n;
    let TensorData::U8(v) = &t.data else {
        panic!("u8 data")
    };
    let rows: Vec<usize> = (0..n).step_by(step).collect();
    let mut out = Vec::with_capacity(rows.len() * per);
    for &r in &rows {
        out.extend_from_slice(&v[r * per..(r + 1) * per]);
    }
    let mut shape = t.shape.clone();
    shape[0] = rows.len();
    Tensor::new(shape, TensorData::U8(out)).unwrap()
}

#[test]
fn resnet8_mixed_at_60_percent_beats_uniform_int4() {
    let Some(data) = tk::data_dir() else { return };
    let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap();
    let y = edgeopt_npy::read(&data.join("cifar10/test_y.npy")).unwrap();
    let names = lines(&data.join("cifar10/test_filenames.txt"));
    let rows = select_rows(
        &names,
        &lines(&data.join(format!("{IC}/calibration_samples.txt"))),
    )
    .unwrap();
    let rel = format!("{OX}/pretrainedResnet.onnx");
    let g = edgeopt_cli::load_model(&data.join(&rel)).unwrap();
    let samples = calibration_samples(&g, &x, &rows, &EvalConfig::default()).unwrap();
    let (xs, ys) = (strided(&x, 5), strided(&y, 5));
    let base = PtqOptions {
        method: CalibMethod::Percentile(99.999),
        ..PtqOptions::default()
    };

    let int4 = run(
        &g,
        &samples,
        &PtqOptions {
            weights: WeightSpec {
                format: WeightFormat::Int4,
                granularity: Granularity::Channel,
            },
            ..base.clone()
        },
    )
    .unwrap();
    let int8_bytes = {
        let mut p = int4.plan.clone();
        p.weights
            .values_mut()
            .for_each(|s| s.format = WeightFormat::Int8);
        weight_size(&int4.prepared, &p)
    };
    let int4_bytes = weight_size(&int4.prepared, &int4.plan);
    assert_eq!(int4_bytes * 2, int8_bytes);
    let budget = int8_bytes * 6 / 10;
    let mixed = run(
        &g,
        &samples,
        &PtqOptions {
            budget: Some(budget),
            ..base.clone()
        },
    )
    .unwrap();
    let m = mixed.mixed.as_ref().expect("mixed result");
    let mixed_bytes = weight_size(&mixed.prepared, &mixed.plan);
    assert!(mixed_bytes <= budget, "{mixed_bytes} > {budget}");
    assert_eq!(mixed_bytes, m.total_bytes);
    // The allocation uses the room: some layers below int8.
    assert!(m.layers.iter().any(|l| l.chosen != WeightFormat::Int8));
    for l in &m.layers {
        eprintln!(
            "{:<40} {:>6} params -> {:?}; sensitivity {:?}",
            l.node, l.params, l.chosen, l.sensitivity_db
        );
    }
    let cfg = EvalConfig::default();
    let a4 = evaluate(&int4.quantized, "int4", &xs, &ys, &cfg).unwrap();
    let am = evaluate(&mixed.quantized, "mixed", &xs, &ys, &cfg).unwrap();
    eprintln!(
        "ResNet-8 on {} images: uniform int4 {:.2}% ({} B), mixed {:.2}% ({} B, budget {} B = 60% of int8 {} B); output SQNR mixed {:.1} dB, all-int8 {:.1} dB",
        a4.samples, a4.accuracy, int4_bytes, am.accuracy, mixed_bytes, budget, int8_bytes, m.sqnr_db, m.int8_sqnr_db
    );
    assert!(
        am.accuracy > a4.accuracy,
        "mixed {:.2}% <= int4 {:.2}%",
        am.accuracy,
        a4.accuracy
    );
}
