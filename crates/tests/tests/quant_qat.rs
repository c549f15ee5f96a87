//! Quantization-aware training (edgeopt_compress::quant::qat).
//!
//! - The QAT weight grids (training engine, `hooks::quantize_weights`) equal the weight
//!   quantizer of `apply` (int8, ternary, binary per channel), and the snapped weights
//!   QAT returns are a fixed point of `apply`'s quantizer for every format (int4's
//!   clipping search included), so the integer graph gets exactly the trained weights.
//! - Activation fake-quant uses `activation_params`' nudged parameters exactly.
//! - Short QAT of the MLPerf ResNet-8 at int4 weights on a train20k subset: the
//!   fake-quant accuracy predicts the integer graph's accuracy (within 2 pt on 500 test
//!   images) and QAT recovers accuracy lost by int4 PTQ.
//! - LSQ learned steps (`hooks::LearnedStep`): the forward pass is
//!   `clamp(round(w/s), ±qmax) * s` and the gradients are LSQ's (step: `round(w/s) -
//!   w/s` inside the grid, `±qmax` where clipped, times the gradient scale; weights:
//!   identity inside, zero where clipped), checked element by element.
//! - Short QAT with learned scales and distillation from the float model: the learned
//!   scales land in the plan, the returned graph carries no auxiliary values, and
//!   `apply` reproduces the snapped weights exactly (codes × learned scales).
//! - `QatConfig::recommended` picks LSQ + distillation for int weights (distillation
//!   only with class labels) and plain QAT for ternary/binary.
//! - Bad plans are errors.
//!
//! The full must-show figures (3 epochs int4 ResNet-8 on train20k, ternary LeNet-5 on
//! MNIST, full test sets) are recorded by bench/qat.py.

use edgeopt_compress::quant::qat::{self, Distill, QatConfig, QatData, RangeMode};
use edgeopt_compress::quant::{
    self, activation_params, ActivationFormat, CalibMethod, Granularity, QuantPlan, WeightFormat,
    WeightSpec,
};
use edgeopt_ir::{DType, Graph, Tensor};
use edgeopt_train::data::{
    find_dataset, load_pair, make_batch, Augment, Dataset, Normalize, Targets,
};
use edgeopt_train::hooks::{asymmetric_params, quantize_weights, LearnedStep, WeightGrid};
use edgeopt_train::trainer::{evaluate, Objective};
use edgeopt_train::{cpu, DynTensor, Model};
use rand::{Rng, SeedableRng};

fn random_weights(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Roughly Gaussian (sum of uniforms) with a few outliers, like trained weights.
    (0..n)
        .map(|i| {
            let g: f32 = (0..4).map(|_| rng.gen::<f32>() - 0.5).sum();
            if i % 97 == 0 {
                3.0 * g
            } else {
                0.1 * g
            }
        })
        .collect()
}

#[test]
fn weight_grids_match_apply_quantizer() {
    let shape = [16usize, 3, 3, 8];
    let n: usize = shape.iter().product();
    for seed in 0..5 {
        let w = random_weights(seed, n);
        for (format, grid) in [
            (WeightFormat::Int8, WeightGrid::Int { qmax: 127 }),
            (WeightFormat::Int4, WeightGrid::IntClipped { qmax: 7 }),
            (WeightFormat::Ternary, WeightGrid::Ternary),
            (WeightFormat::Binary, WeightGrid::Binary),
        ] {
            for gran in [Granularity::Channel, Granularity::Tensor] {
                let spec = WeightSpec {
                    format,
                    granularity: gran,
                };
                let axis = (gran == Granularity::Channel).then_some(0);
                let ours = quantize_weights(&w, &shape, grid, axis, None).unwrap();
                let theirs = quant::weights::quantize(&w, 16, spec)
                    .unwrap()
                    .dequantize(16);
                // apply sums scales in f32, QAT in f64: equal up to float rounding.
                let close = |a: &[f32], b: &[f32]| {
                    a.iter()
                        .zip(b)
                        .all(|(x, y)| (x - y).abs() <= 1e-4 * x.abs().max(y.abs()))
                };
                assert!(close(&ours, &theirs), "{format:?} {gran:?} seed {seed}");
                // The snapped weights are a fixed point of both quantizers.
                let again = quantize_weights(&ours, &shape, grid, axis, None).unwrap();
                assert!(close(&again, &ours), "QAT fixed point {format:?} {gran:?}");
                let applied = quant::weights::quantize(&ours, 16, spec)
                    .unwrap()
                    .dequantize(16);
                assert!(
                    close(&applied, &ours),
                    "apply fixed point {format:?} {gran:?}"
                );
                // And really on the grid.
                let levels = |v: &[f32]| {
                    let mut u: Vec<i64> = v.iter().map(|x| (x * 1e6).round() as i64).collect();
                    u.sort();
                    u.dedup();
                    u.len()
                };
                if gran == Granularity::Channel {
                    let per = n / 16;
                    let max_levels = match format {
                        WeightFormat::Int8 => 255,
                        WeightFormat::Int4 => 15,
                        WeightFormat::Ternary => 3,
                        _ => 2,
                    };
                    for c in ours.chunks(per) {
                        assert!(levels(c) <= max_levels, "{format:?}: {} levels", levels(c));
                    }
                }
            }
        }
    }
    // Group granularity: every block of 8 has its own scale.
    let w = random_weights(9, n);
    let q = quantize_weights(&w, &shape, WeightGrid::Ternary, Some(0), Some(8)).unwrap();
    let again = quantize_weights(&q, &shape, WeightGrid::Ternary, Some(0), Some(8)).unwrap();
    assert_eq!(q, again);
    assert!(quantize_weights(&w, &shape, WeightGrid::Ternary, Some(4), None).is_err());
    assert!(quantize_weights(&w[1..], &shape, WeightGrid::Binary, Some(0), None).is_err());
}

#[test]
fn activation_fake_quant_uses_apply_parameters() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..2000 {
        let a: f32 = rng.gen_range(-20.0..5.0);
        let b: f32 = a + rng.gen_range(0.0..30.0);
        let q = activation_params((a, b), -128, 127);
        let (s, z, lo, hi) = asymmetric_params((a, b), 8);
        assert_eq!(s, q.scale[0], "range ({a}, {b})");
        assert_eq!(z as i64, q.zero_point[0], "range ({a}, {b})");
        assert_eq!((lo, hi), (-128.0, 127.0));
    }
}

#[test]
fn learned_step_forward_and_lsq_gradients() {
    let dev = cpu();
    let ad = dev.clone().autodiff();
    let (c, per, qmax) = (4usize, 6usize, 7i32);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let w: Vec<f32> = (0..c * per).map(|_| rng.gen_range(-1.0..1.0)).collect();
    // Steps small enough that some weights clip (|w| up to 1 > 7 * 0.1).
    let init: Vec<f32> = (0..c).map(|k| 0.1 + 0.03 * k as f32).collect();
    let u: Vec<f32> = (0..c).map(|k| 1.0 + 0.05 * k as f32).collect();
    let up: Vec<f32> = (0..c * per).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let g = 0.37f32;
    let ls = LearnedStep {
        param: "u".into(),
        init: Tensor::from_f32(vec![c, 1], init.clone()).unwrap(),
        qmax,
        grad_scale: g,
    };
    let wt = DynTensor::from_vec(w.clone(), &[c, per], &ad)
        .unwrap()
        .require_grad();
    let ut = DynTensor::from_vec(u.clone(), &[c, 1], &ad)
        .unwrap()
        .require_grad();
    let q = ls.apply(wt.clone(), ut.clone()).unwrap();
    let qv = q.clone().to_vec().unwrap();
    let r = DynTensor::from_vec(up.clone(), &[c, per], &ad).unwrap();
    let grads = q.mul(r).unwrap().sum().backward();
    let gw = wt.grad(&grads).unwrap().to_vec().unwrap();
    let gu = ut.grad(&grads).unwrap().to_vec().unwrap();
    let steps = ls.steps(&u).unwrap();
    let mut clipped = 0;
    for k in 0..c {
        let s = steps[k];
        let mut want_gs = 0f64;
        for j in 0..per {
            let i = k * per + j;
            let x = w[i] / s;
            let code = x.round().clamp(-qmax as f32, qmax as f32);
            assert!((qv[i] - code * s).abs() <= 1e-6, "forward {i}");
            let inside = x.abs() <= qmax as f32;
            clipped += !inside as usize;
            let want_gw = if inside { up[i] } else { 0.0 };
            assert!((gw[i] - want_gw).abs() <= 1e-5, "weight grad {i}");
            let ds = if inside { code - x } else { code };
            want_gs += (up[i] * ds) as f64;
        }
        // d/du = d/ds * init (s = init * u), times the gradient scale.
        let want = want_gs as f32 * g * init[k];
        assert!(
            (gu[k] - want).abs() <= 1e-4 * want.abs().max(1.0),
            "step grad {k}: {} vs {want}",
            gu[k]
        );
    }
    assert!(clipped > 0, "the case must exercise clipping");
}

#[test]
fn recommended_recipe_follows_weight_formats() {
    let plan_of = |format| QuantPlan {
        activations: Some(ActivationFormat::Int8),
        weights: [(
            "w".to_string(),
            WeightSpec {
                format,
                granularity: Granularity::Channel,
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let data = || QatData::Dir("unused".into());
    let c = QatConfig::recommended(3, data(), &plan_of(WeightFormat::Int4), true);
    assert!(c.learn_scales && c.distill.is_some() && c.warmup_steps > 0);
    let c = QatConfig::recommended(3, data(), &plan_of(WeightFormat::Int4), false);
    assert!(
        c.learn_scales && c.distill.is_none(),
        "no labels, no distillation"
    );
    let c = QatConfig::recommended(3, data(), &plan_of(WeightFormat::Ternary), true);
    assert!(!c.learn_scales && c.distill.is_none() && c.lr == 1e-3);
}

fn data_or_skip() -> Option<std::path::PathBuf> {
    edgeopt_testkit::data_dir()
}

fn runtime_accuracy(graph: &Graph, d: &Dataset) -> f32 {
    let Targets::Classes(labels) = &d.y else {
        panic!("needs class labels")
    };
    let mut correct = 0;
    for start in (0..d.len()).step_by(250) {
        let n = 250.min(d.len() - start);
        let idx: Vec<usize> = (start..start + n).collect();
        let b = make_batch(d, &idx, &Normalize::identity(), &Augment::default(), None);
        let out = edgeopt_runtime::run(graph, &[Tensor::from_f32(b.shape, b.x).unwrap()]).unwrap();
        let logits = out[0].to_f32_vec();
        let k = logits.len() / n;
        for (i, row) in logits.chunks(k).enumerate() {
            let best = (0..k).fold(0, |m, j| if row[j] > row[m] { j } else { m });
            correct += (best == labels[start + i] as usize) as usize;
        }
    }
    correct as f32 / d.len() as f32
}

fn fake_quant_accuracy(g: &Graph, plan: &QuantPlan, d: &Dataset) -> f32 {
    let m = qat::qat_model(g, plan, RangeMode::Fixed).unwrap();
    let obj = Objective::Classification {
        label_smoothing: 0.0,
    };
    evaluate(&m, &obj, d, &Normalize::identity(), 250)
        .unwrap()
        .accuracy
        .unwrap()
}

#[test]
fn resnet8_int4_qat_fake_quant_predicts_integer() {
    let Some(data) = data_or_skip() else { return };
    edgeopt_train::with_threads(Some(2), || {
        let p = data.join(
            "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet.tflite",
        );
        let prepared = quant::prepare(&edgeopt_tflite::import_file(&p).unwrap()).unwrap();
        let shape = Model::new(prepared.clone(), &cpu())
            .unwrap()
            .input_shape(0)
            .unwrap();
        let files = find_dataset(&data.join("cifar10")).unwrap();
        let (tx, ty) = files.train.unwrap();
        let (sx, sy) = files.test.unwrap();
        let train = load_pair(&tx, &ty, &shape).unwrap();
        let test = load_pair(&sx, &sy, &shape).unwrap();
        // Every 20th test image: 500 images, 50 per class (the test set is class-sorted).
        let test = test.subset(&(0..test.len()).step_by(20).collect::<Vec<_>>());
        let samples: Vec<Vec<Tensor>> = (0..500)
            .step_by(50)
            .map(|s| {
                let idx: Vec<usize> = (s..s + 50).collect();
                let b = make_batch(
                    &train,
                    &idx,
                    &Normalize::identity(),
                    &Augment::default(),
                    None,
                );
                vec![Tensor::from_f32(b.shape, b.x).unwrap()]
            })
            .collect();
        let (ranges, _) = quant::calibrate(
            &prepared,
            &samples,
            CalibMethod::MinMax,
            ActivationFormat::Int8,
        )
        .unwrap();
        let spec = WeightSpec {
            format: WeightFormat::Int4,
            granularity: Granularity::Channel,
        };
        let plan = QuantPlan::uniform(&prepared, spec, ActivationFormat::Int8, ranges);

        // Bad plans are errors, not panics.
        let mut bad = plan.clone();
        bad.weights.insert("no_such_weight".into(), spec);
        assert!(qat::qat_model(&prepared, &bad, RangeMode::Fixed).is_err());
        let mut bad = plan.clone();
        bad.activations = None;
        assert!(qat::qat_model(&prepared, &bad, RangeMode::Fixed).is_err());
        let mut bad = plan.clone();
        bad.ranges.insert("no_such_value".into(), (0.0, 1.0));
        assert!(qat::qat_model(&prepared, &bad, RangeMode::Fixed).is_err());

        let ptq_int = runtime_accuracy(&quant::apply(&prepared, &plan).unwrap(), &test);
        // 40 batches of 64 = 2,560 train20k images (an eighth of an epoch), for CI time.
        let mut cfg = QatConfig::new(1, 1e-4, QatData::Loaded(train));
        cfg.seed = 1;
        cfg.max_batches = Some(40);
        cfg.augment = Augment {
            crop_pad: 4,
            hflip: true,
            ..Default::default()
        };
        let (g2, plan2) = qat::fine_tune(&prepared, &plan, &cfg).unwrap();
        assert_eq!(plan2, plan, "fixed ranges are returned unchanged");
        let fake = fake_quant_accuracy(&g2, &plan2, &test);
        let int = runtime_accuracy(&quant::apply(&g2, &plan2).unwrap(), &test);
        eprintln!(
            "ResNet-8 int4: PTQ integer {:.2}%, after 40 QAT steps fake-quant {:.2}%, integer {:.2}%",
            100.0 * ptq_int,
            100.0 * fake,
            100.0 * int
        );
        // The integer graph differs from fake-quant only by requantization rounding (one
        // step per layer), which flips a few borderline images: within 2 pt (10 of 500).
        assert!((fake - int).abs() <= 0.02, "fake {fake} vs integer {int}");
        // Even an eighth of an epoch of QAT recovers part of int4 PTQ's loss.
        assert!(int > ptq_int, "QAT {int} vs PTQ {ptq_int}");

        // Learned scales (LSQ) + distillation from the float model, same short run.
        let mut lcfg = cfg.clone();
        lcfg.max_batches = Some(20);
        lcfg.learn_scales = true;
        lcfg.distill = Some(Distill {
            temperature: 4.0,
            alpha: 0.9,
        });
        let (g3, plan3) = qat::fine_tune(&prepared, &plan, &lcfg).unwrap();
        // Deterministic for a seed (learned scales and distillation included): a shorter
        // run twice gives identical weights and scales.
        let mut dcfg = lcfg.clone();
        dcfg.max_batches = Some(3);
        let a = qat::fine_tune(&prepared, &plan, &dcfg).unwrap();
        let b = qat::fine_tune(&prepared, &plan, &dcfg).unwrap();
        assert_eq!(a.1, b.1, "same seed, same learned scales");
        assert!(
            a.0.values
                .iter()
                .zip(&b.0.values)
                .all(|(x, y)| x.data == y.data),
            "same seed, same weights"
        );
        assert_ne!(a.1.weight_scales, plan3.weight_scales);
        assert_eq!(
            g3.values.len(),
            prepared.values.len(),
            "no auxiliary values"
        );
        assert_eq!(plan3.weight_scales.len(), plan.weights.len());
        // The scales moved (they are learned) but stay near the PTQ scales.
        let mut moved = 0;
        for (name, scales) in &plan3.weight_scales {
            let w = prepared.find_value(name).unwrap();
            let t = prepared.values[w].data.as_ref().unwrap();
            let ptq = quant::weights::quantize(&t.to_f32_vec(), t.shape[0], spec).unwrap();
            for (a, b) in scales.iter().zip(&ptq.scales) {
                assert!((a / b - 1.0).abs() < 0.5, "{name}: {a} vs PTQ {b}");
                moved += (a != b) as usize;
            }
        }
        assert!(moved > 0, "LSQ left every scale at its initial value");
        // apply uses the learned scales: integer codes × scale = the snapped weights.
        let int3 = quant::apply(&g3, &plan3).unwrap();
        for (name, scales) in &plan3.weight_scales {
            let w = g3.find_value(name).unwrap();
            let t = g3.values[w].data.as_ref().unwrap();
            let per = t.len() / t.shape[0];
            let qw = quant::weights::quantize_planned(&t.to_f32_vec(), t.shape[0], spec, Some(scales))
                .unwrap();
            assert!(qw.codes.iter().all(|c| (-7..=7).contains(c)));
            for (i, (&code, &v)) in qw.codes.iter().zip(&t.to_f32_vec()).enumerate() {
                assert_eq!(
                    code as f32 * scales[i / per],
                    v,
                    "{name}[{i}] not on its grid"
                );
            }
            // The integer graph stores these scales.
            let stored = int3
                .values
                .iter()
                .find(|v| v.dtype == DType::I4 && v.name.starts_with(&format!("{name}_")))
                .and_then(|v| v.quant.as_ref())
                .unwrap();
            assert_eq!(&stored.scale, scales, "{name}");
        }
        // A plan with learned scales survives serialization.
        let json = serde_json::to_string(&plan3).unwrap();
        let back: QuantPlan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, plan3);
        let fake3 = fake_quant_accuracy(&g3, &plan3, &test);
        let int3 = runtime_accuracy(&int3, &test);
        eprintln!(
            "ResNet-8 int4 LSQ + KD, 20 steps: fake-quant {:.2}%, integer {:.2}%",
            100.0 * fake3,
            100.0 * int3
        );
        assert!(
            (fake3 - int3).abs() <= 0.02,
            "fake {fake3} vs integer {int3}"
        );
        assert!(int3 > ptq_int, "LSQ QAT {int3} vs PTQ {ptq_int}");
        // The point of the recipe: half the steps of plain QAT get further (measured here:
        // 80.2% vs 75.4% on these 500 images; 3 epochs on all data: 85.9% vs 82.8%).
        assert!(int3 > int, "LSQ + KD {int3} vs plain QAT {int}");
    })
    .unwrap()
}
