//! The MLPerf Tiny ResNet-8 (imported from ONNX), fine-tuned for one epoch at a low
//! learning rate on CIFAR-10 train20k, keeps >= 86.5% on the CIFAR-10 test set
//! (87.19% before). About 2-3 minutes on 2 cores, so it is `#[ignore]`d in the quick
//! suite and recorded by bench/train_throughput.py; run it with
//!
//!     cargo test --release -p edgeopt-tests --test train_resnet_finetune -- --ignored

use edgeopt_train::data::{find_dataset, load_pair, Augment, Normalize};
use edgeopt_train::optim::OptimizerKind;
use edgeopt_train::trainer::{evaluate, fit, Objective, TrainConfig};
use edgeopt_train::{cpu, Model};

#[test]
#[ignore]
fn resnet8_finetune_keeps_accuracy() {
    let Some(p) =
        edgeopt_testkit::data_file("mlperf-tiny/onnx/tf2onnx_from_tflite/pretrainedResnet.onnx")
    else {
        return;
    };
    edgeopt_train::with_threads(Some(2), || {
        let g = edgeopt_onnx::import_file(&p).unwrap();
        let mut model = Model::new(g, &cpu()).unwrap();
        let shape = model.input_shape(0).unwrap();
        let files = find_dataset(&edgeopt_testkit::data_dir().unwrap().join("cifar10")).unwrap();
        let (tx, ty) = files.train.unwrap();
        let (sx, sy) = files.test.unwrap();
        let train = load_pair(&tx, &ty, &shape).unwrap();
        let test = load_pair(&sx, &sy, &shape).unwrap();
        // The reference model takes raw 0..255 pixels.
        let norm = Normalize::identity();
        let obj = Objective::Classification {
            label_smoothing: 0.0,
        };
        let mut cfg = TrainConfig::new(1, 2e-5);
        cfg.seed = 1;
        cfg.optim.kind = OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        cfg.optim.weight_decay = 0.0;
        cfg.augment = Augment {
            crop_pad: 4,
            hflip: true,
            ..Default::default()
        };
        fit(&mut model, &obj, &train, None, &norm, &cfg).unwrap();
        let acc = evaluate(&model, &obj, &test, &norm, 250)
            .unwrap()
            .accuracy
            .unwrap();
        eprintln!("ResNet-8 after 1 epoch of fine-tuning: {:.2}%", 100.0 * acc);
        assert!(acc >= 0.865, "test accuracy {acc}");
    })
    .unwrap()
}
