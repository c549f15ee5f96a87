//! `prepare` on the exporter corpus's sequence models (PyTorch's LSTM and transformer
//! encoder, TorchScript and dynamo exports) rewrites them into the form quantization
//! and the TFLite writer take, and the prepared float graph still computes what the
//! export means: outputs within 1e-4 of the output range of onnxruntime's (the
//! manifest's expected outputs), on the 4 corpus samples.
//! - LSTM: unrolled (no `Op::Lstm` left; one FullyConnected per step and input);
//! - transformer: PyTorch's erf-form GELU fused into `Gelu` (no `Erf` left), the
//!   Linear layers on `[batch, seq, features]` as FullyConnected with `keep_num_dims`,
//!   the constant attention-scale arithmetic of the TorchScript export folded.

use edgeopt_compress::quant::prepare;
use edgeopt_ir::{Op, UnaryKind};
use edgeopt_testkit as tk;
use edgeopt_tests::exporters;

#[test]
fn prepared_sequence_models_match_onnxruntime() {
    let Some(data) = tk::data_dir() else { return };
    let mut checked = 0;
    for e in exporters::entries(&data) {
        let stem = e.name();
        let lstm = stem.starts_with("lstm.");
        if !(lstm || stem.starts_with("transformer.")) {
            continue;
        }
        let g = edgeopt_cli::load_model(&e.path(&data)).expect("corpus model loads");
        let p = prepare(&g).unwrap_or_else(|err| panic!("{stem}: prepare: {err}"));
        let count = |f: &dyn Fn(&Op) -> bool| p.nodes.iter().filter(|n| f(&n.op)).count();
        assert_eq!(
            count(&|o| matches!(o, Op::Lstm { .. })),
            0,
            "{stem}: LSTM left"
        );
        assert_eq!(
            count(&|o| *o == Op::Unary(UnaryKind::Erf)),
            0,
            "{stem}: Erf left"
        );
        let fc = |keep: bool| {
            count(
                &|o| matches!(o, Op::FullyConnected { keep_num_dims, .. } if *keep_num_dims == keep),
            )
        };
        if lstm {
            // 50 steps: one input and (after the first) one recurrent projection each.
            assert!(fc(false) >= 99, "{stem}: {} FullyConnected", fc(false));
        } else {
            assert_eq!(
                count(&|o| *o == Op::Unary(UnaryKind::Gelu)),
                2,
                "{stem}: GELU"
            );
            assert!(fc(true) >= 4, "{stem}: {} keep_num_dims FC", fc(true));
            assert_eq!(
                count(&|o| *o == Op::Unary(UnaryKind::Sqrt)),
                0,
                "{stem}: Sqrt"
            );
        }
        let x = edgeopt_npy::read(e.input_float.as_ref().unwrap_or(&e.input)).unwrap();
        let want = edgeopt_npy::read(&e.expected[0]).unwrap();
        let opts = edgeopt_runtime::ExecOptions::default();
        let got = edgeopt_runtime::run_per_sample(&p, std::slice::from_ref(&x), opts).unwrap();
        let (a, b) = (got[0].to_f32_vec(), want.to_f32_vec());
        assert_eq!(a.len(), b.len(), "{stem}: output size");
        let range = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        println!(
            "{stem}: max |prepared - onnxruntime| = {:.1e} of the range",
            worst / range
        );
        assert!(worst <= 1e-4 * range, "{stem}: {worst} of range {range}");
        checked += 1;
    }
    assert_eq!(
        checked, 6,
        "the corpus has 3 LSTM and 3 transformer exports"
    );
}
