//! WHILE loops at TFLite import (crates/formats/tflite/src/import/while_loop.rs): the
//! Keras GRU of the exporter corpus (`gru_kws.batch1.fp32.tflite`, a WHILE over 49
//! time steps) unrolls into 49 trips whose weights are shared, and runs like LiteRT
//! (its reference outputs); the same file mutated into a data-dependent loop, a loop
//! of 2^30 trips and a condition that is not a boolean is refused with a clear error
//! (never a hang or a panic).

use edgeopt_ir::Op;
use edgeopt_tflite::schema as s;
use edgeopt_tflite::{decode_model, finish_model, import};

const FILE: &str = "exporters/tflite/gru_kws.batch1.fp32.tflite";

fn model() -> Option<(Vec<u8>, s::Model)> {
    let data = edgeopt_testkit::data_dir()?;
    let bytes = std::fs::read(data.join(FILE)).expect("read the GRU file");
    let m = decode_model(&bytes).expect("decode");
    Some((bytes, m))
}

/// The condition subgraph's operators and the constant its counters are compared with
/// (the trip count).
fn cond(m: &mut s::Model) -> &mut s::SubGraph {
    &mut m.subgraphs.as_mut().unwrap()[1]
}

#[test]
fn keras_gru_while_unrolls_and_matches_litert() {
    let Some((bytes, _)) = model() else { return };
    let g = import(&bytes).expect("import");
    let fc = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::FullyConnected { .. }))
        .count();
    // Two per trip (input and recurrent projections) and the classifier.
    assert_eq!(fc, 2 * 49 + 1);
    // The weights are imported once: the 49 trips read the same constants (the
    // per-trip constants are the step indices, one element each).
    let weights: Vec<_> = g
        .values
        .iter()
        .filter(|v| v.data.as_ref().is_some_and(|t| t.len() > 64))
        .map(|v| v.name.clone())
        .collect();
    assert!(
        weights.len() <= 6,
        "the body's weights were copied per trip: {weights:?}"
    );
    let data = edgeopt_testkit::data_dir().unwrap();
    let x = edgeopt_npy::read(&data.join("exporters/tflite/kws_mfcc49x10.input.npy")).unwrap();
    let want = edgeopt_npy::read(&data.join("exporters/tflite/gru_kws.batch1.fp32.expected_0.npy"))
        .unwrap();
    let got = edgeopt_runtime::run_per_sample(
        &g,
        std::slice::from_ref(&x),
        edgeopt_runtime::ExecOptions::default(),
    )
    .expect("run");
    let (a, b) = (got[0].to_f32_vec(), want.to_f32_vec());
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(worst <= 1e-4, "{worst}");
}

#[test]
fn loops_that_cannot_be_unrolled_are_refused_clearly() {
    let Some((_, m)) = model() else { return };
    // The condition compares a float loop value (the GRU state, input 3) instead of a
    // counter: a data-dependent loop.
    let mut data_dependent = m.clone();
    cond(&mut data_dependent).operators.as_mut().unwrap()[0]
        .inputs
        .as_mut()
        .unwrap()[0] = 3;
    // The trip count raised to 2^30.
    let mut endless = m.clone();
    let max = cond(&mut endless).operators.as_ref().unwrap()[0]
        .inputs
        .as_ref()
        .unwrap()[1] as usize;
    let buffer = cond(&mut endless).tensors.as_ref().unwrap()[max].buffer as usize;
    endless.buffers.as_mut().unwrap()[buffer].data = Some((1i32 << 30).to_le_bytes().to_vec());
    // The condition's output is the int32 counter, not a boolean.
    let mut not_bool = m.clone();
    cond(&mut not_bool).outputs = Some(vec![0]);
    for (what, model, expect) in [
        ("data-dependent", data_dependent, "run-time values"),
        ("2^30 trips", endless, "WHILE"),
        ("int32 condition", not_bool, "boolean"),
    ] {
        let err = import(&finish_model(&model))
            .err()
            .unwrap_or_else(|| panic!("{what}: imported"))
            .to_string();
        assert!(
            err.contains(expect) && err.contains("WHILE"),
            "{what}: {err}"
        );
        println!("{what}: {err}");
    }
}
