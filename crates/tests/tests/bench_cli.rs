//! `edgeopt bench --per-layer` on the MLPerf DS-CNN: one timing per node, in graph
//! order, named after the nodes; end-to-end figures are there as before. (Timings
//! themselves are not asserted: speed is for `bench/`, not tests.)

use edgeopt_cli::bench::{bench, BenchConfig};
use edgeopt_testkit::data_dir;

const KWS: &str =
    "mlperf-tiny/benchmark/training/keyword_spotting/trained_models/kws_ref_model.tflite";

#[test]
fn per_layer_times_every_node() {
    let Some(data) = data_dir() else { return };
    let g = edgeopt_tflite::import_file(data.join(KWS)).unwrap();
    let cfg = BenchConfig {
        runs: 5,
        per_layer: true,
        ..BenchConfig::default()
    };
    let r = bench(&g, "kws", &cfg).unwrap();
    let layers = r.layers.expect("per-layer times requested");
    assert_eq!(layers.len(), g.nodes.len());
    for (l, n) in layers.iter().zip(&g.nodes) {
        assert_eq!(l.name, n.name);
        assert_eq!(l.op, n.op.name());
        assert!(l.mean_ms.is_finite() && l.mean_ms >= 0.0, "{l:?}");
    }
    // The convolutions do the work: they cannot all read as zero.
    assert!(layers.iter().any(|l| l.op == "Conv" && l.mean_ms > 0.0));
    assert!(r.median_ms > 0.0 && r.min_ms <= r.median_ms);

    // Without the flag, no per-layer series.
    let r = bench(&g, "kws", &BenchConfig::default()).unwrap();
    assert!(r.layers.is_none());
}
