//! Hook points and training-loop features: masks keep pruned weights at zero, frozen
//! parameters do not move, fake-quant puts weights on the integer grid while training
//! still updates them (STE), taps and extra losses work, BatchNorm statistics update
//! only in train mode, checkpoints resume bit-exactly, early stopping restores the
//! best weights.

use edgeopt_train::data::{Dataset, Normalize};
use edgeopt_train::hooks::{FakeQuant, L1Penalty};
use edgeopt_train::trainer::{fit, Objective, TrainConfig};
use edgeopt_train::vibration::{generate, VibrationConfig};
use edgeopt_train::{cpu, DynTensor, Mode, Model, ParamRole};
use edgeopt_zoo::{ArchSpec, BuildOptions};

fn setup() -> (Model, Dataset, Normalize) {
    edgeopt_train::with_threads(Some(2), || {
        let data = generate(VibrationConfig {
            per_class: 24,
            seed: 11,
        });
        let g = ArchSpec::parse("cnn1d", "widths=8:8,kernel=5")
            .unwrap()
            .build(BuildOptions {
                seed: 1,
                softmax: false,
            })
            .unwrap();
        let model = Model::new(g, &cpu()).unwrap();
        let norm = Normalize::fit(&data, 1.0);
        (model, data, norm)
    })
    .unwrap()
}

fn cfg(epochs: usize) -> TrainConfig {
    let mut c = TrainConfig::new(epochs, 0.02);
    c.batch_size = 20;
    c.seed = 5;
    c
}

const CE: Objective = Objective::Classification {
    label_smoothing: 0.0,
};

fn weights(m: &Model, i: usize) -> Vec<f32> {
    m.param(i).to_vec().unwrap()
}

fn first_weight(m: &Model) -> usize {
    m.params
        .iter()
        .position(|p| matches!(p.role, ParamRole::Weight { .. }))
        .unwrap()
}

#[test]
fn masks_and_frozen_parameters() {
    let (mut m, data, norm) = setup();
    let w = first_weight(&m);
    let name = m.params[w].name.clone();
    let shape = m.params[w].shape.clone();
    let n: usize = shape.iter().product();
    let mask: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
    m.hooks.mask(
        name,
        edgeopt_ir::Tensor::from_f32(shape, mask.clone()).unwrap(),
    );
    let frozen = m
        .params
        .iter()
        .position(|p| p.role == ParamRole::Bias)
        .unwrap();
    let fname = m.params[frozen].name.clone();
    m.hooks.freeze(fname);
    let before_w = weights(&m, w);
    let before_f = weights(&m, frozen);
    fit(&mut m, &CE, &data, None, &norm, &cfg(2)).unwrap();
    let after_w = weights(&m, w);
    for i in 0..n {
        if mask[i] == 0.0 {
            assert_eq!(after_w[i], 0.0, "pruned weight {i} revived");
        }
    }
    assert!(
        (0..n).any(|i| mask[i] == 1.0 && after_w[i] != before_w[i]),
        "kept weights did not train"
    );
    assert_eq!(weights(&m, frozen), before_f, "frozen parameter moved");
}

#[test]
fn fake_quant_ste_taps_and_extra_loss() {
    let (mut m, data, norm) = setup();
    let w = first_weight(&m);
    let name = m.params[w].name.clone();
    let fq = FakeQuant {
        bits: 4,
        ..FakeQuant::int8_weights()
    };
    m.hooks.quantize_weight(name.clone(), fq);
    // Quantize and tap the first conv's output activation.
    let conv_out = m.graph().nodes[0].outputs[0];
    let vname = m.graph().values[conv_out].name.clone();
    m.hooks
        .quantize_activation(vname.clone(), FakeQuant::int8_activations());
    m.hooks.tap(vname.clone());
    m.hooks.add_loss(Box::new(L1Penalty {
        params: vec![name.clone()],
        weight: 1e-3,
    }));
    let before = weights(&m, w);
    fit(&mut m, &CE, &data, None, &norm, &cfg(1)).unwrap();
    assert_ne!(weights(&m, w), before, "STE passed no gradient");
    assert!(
        m.act_ranges.contains_key(&conv_out),
        "activation observer not updated"
    );
    // The effective weights of the forward pass lie on a 4-bit grid per channel.
    let x = DynTensor::from_vec(vec![0.1; 3 * 512], &[1, 3, 512], m.device()).unwrap();
    let out = m.forward(vec![x], Mode::Eval, false).unwrap();
    assert!(out.taps.contains_key(&vname));
    let eff = out
        .params
        .get(&name)
        .expect("effective params exposed with extra losses");
    let v = eff.to_vec().unwrap();
    let per = v.len() / m.params[w].shape[0];
    for ch in v.chunks(per) {
        let mut levels: Vec<i64> = ch.iter().map(|x| (x * 1e5).round() as i64).collect();
        levels.sort_unstable();
        levels.dedup();
        assert!(
            levels.len() <= 15,
            "{} levels for a 4-bit narrow grid",
            levels.len()
        );
    }
}

#[test]
fn batchnorm_statistics_follow_the_mode() {
    let (mut m, data, norm) = setup();
    let mean = m
        .params
        .iter()
        .position(|p| p.role == ParamRole::BnMean)
        .unwrap();
    let before = weights(&m, mean);
    m.bn_frozen = true;
    fit(&mut m, &CE, &data, None, &norm, &cfg(1)).unwrap();
    assert_eq!(weights(&m, mean), before, "frozen BN statistics changed");
    m.bn_frozen = false;
    fit(&mut m, &CE, &data, None, &norm, &cfg(1)).unwrap();
    assert_ne!(
        weights(&m, mean),
        before,
        "BN running mean not updated in train mode"
    );
}

#[test]
fn checkpoint_resume_is_bit_exact() {
    let dir = edgeopt_testkit::scratch_dir("train_resume");
    let ck = dir.join("run.ckpt");
    let (mut a, data, norm) = setup();
    fit(&mut a, &CE, &data, None, &norm, &cfg(3)).unwrap();
    // Same run, interrupted after one epoch and resumed in a fresh process state.
    let (mut b, _, _) = setup();
    let mut c1 = cfg(3);
    c1.checkpoint = Some(ck.clone());
    c1.stop_after = Some(1);
    fit(&mut b, &CE, &data, None, &norm, &c1).unwrap();
    assert!(ck.exists());
    let (mut b2, _, _) = setup();
    let mut c2 = cfg(3);
    c2.checkpoint = Some(ck.clone());
    c2.resume = true;
    let r = fit(&mut b2, &CE, &data, None, &norm, &c2).unwrap();
    assert_eq!(r.resumed_from, Some(1));
    assert_eq!(r.epochs.len(), 3);
    for i in 0..a.params.len() {
        assert_eq!(
            weights(&a, i),
            weights(&b2, i),
            "parameter {} differs after resume",
            a.params[i].name
        );
    }
    // A different configuration refuses the checkpoint.
    let mut c3 = cfg(4);
    c3.checkpoint = Some(ck.clone());
    c3.resume = true;
    let (mut b3, _, _) = setup();
    assert!(fit(&mut b3, &CE, &data, None, &norm, &c3).is_err());
    // A truncated checkpoint is an error, not a panic.
    let bytes = std::fs::read(&ck).unwrap();
    std::fs::write(&ck, &bytes[..bytes.len() / 2]).unwrap();
    let (mut b4, _, _) = setup();
    assert!(fit(&mut b4, &CE, &data, None, &norm, &c2).is_err());
}

#[test]
fn early_stopping_restores_best() {
    let (mut m, data, norm) = setup();
    let (train, val) = data.split(0.3, 1).unwrap();
    let mut c = cfg(6);
    // A learning rate this high makes validation worse after the first epochs.
    c.schedule.base_lr = 0.5;
    c.patience = Some(1);
    let r = fit(&mut m, &CE, &train, Some(&val), &norm, &c).unwrap();
    let best = r.best_epoch.unwrap();
    let e = edgeopt_train::trainer::evaluate(&m, &CE, &val, &norm, 64).unwrap();
    let best_acc = r.epochs[best - 1].val_accuracy.unwrap();
    assert_eq!(
        e.accuracy.unwrap(),
        best_acc,
        "weights are not the best epoch's"
    );
}

#[test]
fn autoencoder_regression_reduces_reconstruction_error() {
    use edgeopt_ir::{Tensor, TensorData};
    use edgeopt_train::trainer::evaluate;
    // Rank-4 data in 64 dims: an 8-wide bottleneck can reconstruct it.
    let n = 512;
    let mut x = Vec::with_capacity(n * 64);
    for i in 0..n {
        let z: Vec<f32> = (0..4)
            .map(|k| ((i * (k + 3) * 7919) % 97) as f32 / 48.0 - 1.0)
            .collect();
        for j in 0..64 {
            x.push(
                (0..4)
                    .map(|k| z[k] * ((j * (k + 1)) as f32 * 0.1).sin())
                    .sum(),
            );
        }
    }
    let xt = Tensor::from_f32(vec![n, 64], x).unwrap();
    let yt = Tensor::new(vec![n], TensorData::U8(vec![0; n])).unwrap();
    let data = Dataset::from_arrays(xt, yt, &[64]).unwrap().reconstruct();
    let g = ArchSpec::parse("autoencoder", "input=64,hidden=32,depth=1,bottleneck=8")
        .unwrap()
        .build(BuildOptions {
            seed: 2,
            softmax: false,
        })
        .unwrap();
    let mut m = Model::new(g, &cpu()).unwrap();
    let norm = Normalize::fit(&data, 1.0);
    let obj = Objective::Regression;
    let before = evaluate(&m, &obj, &data, &norm, 128).unwrap().loss;
    let mut c = TrainConfig::new(15, 3e-3);
    c.optim.kind = edgeopt_train::optim::OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    c.batch_size = 32;
    fit(&mut m, &obj, &data, None, &norm, &c).unwrap();
    let after = evaluate(&m, &obj, &data, &norm, 128).unwrap().loss;
    assert!(after < 0.3 * before, "MSE {before} -> {after}");
}

#[test]
fn distillation_trains_a_student() {
    use edgeopt_train::trainer::evaluate;
    let (mut teacher, data, norm) = setup();
    fit(&mut teacher, &CE, &data, None, &norm, &cfg(3)).unwrap();
    let teacher_acc = evaluate(&teacher, &CE, &data, &norm, 64)
        .unwrap()
        .accuracy
        .unwrap();
    let student_g = ArchSpec::parse("cnn1d", "widths=6,kernel=5")
        .unwrap()
        .build(BuildOptions {
            seed: 9,
            softmax: false,
        })
        .unwrap();
    let mut student = Model::new(student_g, &cpu()).unwrap();
    let obj = Objective::Distillation {
        teacher: Box::new(teacher),
        temperature: 4.0,
        alpha: 0.7,
    };
    let before = evaluate(&student, &CE, &data, &norm, 64)
        .unwrap()
        .accuracy
        .unwrap();
    let mut c = cfg(10);
    c.optim.kind = edgeopt_train::optim::OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    c.schedule.base_lr = 5e-3;
    let r = fit(&mut student, &obj, &data, None, &norm, &c).unwrap();
    assert!(r.epochs.iter().all(|e| e.train_loss.is_finite()));
    let after = evaluate(&student, &CE, &data, &norm, 64)
        .unwrap()
        .accuracy
        .unwrap();
    eprintln!("teacher {teacher_acc}, student {before} -> {after}");
    assert!(
        after > before + 0.3,
        "student accuracy {before} -> {after} (teacher {teacher_acc})"
    );
}

#[test]
fn activation_statistics_per_channel() {
    let (mut m, data, norm) = setup();
    let conv_out = m.graph().nodes[0].outputs[0];
    let name = m.graph().values[conv_out].name.clone();
    let s = edgeopt_train::trainer::channel_activation_means(&mut m, &data, &norm, 32, &[&name])
        .unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        s[0].len(),
        8,
        "one mean per output channel of the first conv"
    );
    assert!(s[0].iter().all(|v| v.is_finite() && *v > 0.0));
    assert!(m.hooks.taps.is_empty(), "taps restored");
    assert!(
        edgeopt_train::trainer::channel_activation_means(&mut m, &data, &norm, 32, &["nope"])
            .is_err()
    );
}

#[test]
fn malformed_graphs_are_errors_not_panics() {
    use edgeopt_ir::*;
    let conv = |strides: Vec<usize>, k: usize| {
        let mut g = Graph::new("bad");
        let x = g.add_value(
            "x",
            DType::F32,
            Some(vec![
                Dim::Sym("N".into()),
                Dim::Fixed(2),
                Dim::Fixed(4),
                Dim::Fixed(4),
            ]),
        );
        g.inputs.push(x);
        let w = g.add_const(
            "w",
            Tensor::from_f32(vec![3, 2, k, k], vec![0.1; 6 * k * k]).unwrap(),
        );
        let y = g.add_value("y", DType::F32, None);
        let attrs = ConvAttrs {
            layout: Layout::Nchw,
            kernel_shape: vec![],
            strides,
            dilations: vec![],
            pads: vec![],
            auto_pad: AutoPad::NotSet,
            group: 1,
            activation: Activation::None,
            hybrid: None,
        };
        g.add_node("c", Op::Conv(attrs), vec![Some(x), Some(w), None], vec![y]);
        g.outputs.push(y);
        g
    };
    let x = || DynTensor::from_vec(vec![0.5; 2 * 32], &[2, 2, 4, 4], &cpu()).unwrap();
    for g in [conv(vec![0, 0], 3), conv(vec![1, 1], 5), conv(vec![1], 3)] {
        let m = Model::new(g, &cpu()).unwrap();
        assert!(m.forward(vec![x()], Mode::Eval, false).is_err());
    }
    // Wrong input shape at run time.
    let m = Model::new(conv(vec![1, 1], 3), &cpu()).unwrap();
    let bad = DynTensor::from_vec(vec![0.5; 3 * 16], &[1, 3, 4, 4], &cpu()).unwrap();
    assert!(m.forward(vec![bad], Mode::Eval, false).is_err());
    // An op outside the trainable subset is rejected at lowering time.
    let mut g = conv(vec![1, 1], 3);
    let y = g.outputs[0];
    let z = g.add_value("z", DType::F32, None);
    g.add_node("f", Op::Unary(UnaryKind::Floor), vec![Some(y)], vec![z]);
    g.outputs[0] = z;
    assert!(Model::new(g, &cpu()).is_err());
}
