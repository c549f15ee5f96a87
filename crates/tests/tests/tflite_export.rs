//! TFLite export (`edgeopt_tflite::export`) on the real MLPerf Tiny models.
//!
//! - Every MLPerf Tiny `.tflite` (fp32, int8, hybrid) is imported, exported, and the
//!   export is run in LiteRT (builtin kernels, no delegates) on real inputs next to
//!   the original file: the outputs must be bit-identical. The export imports back
//!   into edgeopt as the same graph (same ops, names, dtypes, shapes, quantization,
//!   constants) and edgeopt gives bit-identical outputs on it.
//! - Low bit widths, built from the int8 ResNet-8 by rewriting its weights: int4
//!   weights (written as TFLite INT4, packed two per byte), ternary weights (int8
//!   tensors holding -1/0/1 with per-channel scales); and fp16 weights of the fp32
//!   ResNet-8 (FLOAT16 constants + DEQUANTIZE). Each export runs in LiteRT; the
//!   integer ones bit-exact with edgeopt's integer kernels, the fp16 one within float
//!   rounding of edgeopt's float kernels with the same top-1.
//!
//! Inputs: 50 CIFAR-10 test images (5 per class) for ResNet-8; the 40 real log-mel
//! slices of the AD sample; 50 seeded random inputs over the int8 input range for KWS
//! (no MFCC features ship with the data).

use edgeopt_ir::{DType, Graph, Op, QuantParams, Tensor, TensorData, Value};
use edgeopt_testkit::{data_dir, oracle_available, run_oracle, scratch_dir};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

const TRAINING: &str = "mlperf-tiny/benchmark/training";
const MODELS: [&str; 6] = [
    "image_classification/trained_models/pretrainedResnet.tflite",
    "image_classification/trained_models/pretrainedResnet_quant.tflite",
    "keyword_spotting/trained_models/kws_ref_model.tflite",
    "keyword_spotting/trained_models/kws_ref_model_float32.tflite",
    "anomaly_detection/trained_models/ad01_fp32.tflite",
    "anomaly_detection/trained_models/ad01_int8.tflite",
];

/// TFLite's float -> int8 quantization: round half away from zero, then clamp.
fn quantize(x: f32, scale: f32, zp: i64) -> i8 {
    ((x / scale).round() as i64 + zp).clamp(-128, 127) as i8
}

fn input_quant(g: &Graph) -> Option<(f32, i64)> {
    g.values[g.inputs[0]]
        .quant
        .as_ref()
        .map(|q| (q.scale[0], q.zero_point[0]))
}

/// Real inputs (batch on axis 0) in the model's input dtype.
fn inputs_for(dir: &Path, stem: &str, g: &Graph) -> Tensor {
    let v = &g.values[g.inputs[0]];
    let sample: Vec<usize> = v.shape.as_ref().expect("input shape")[1..]
        .iter()
        .map(|d| d.fixed().expect("fixed sample dims"))
        .collect();
    let per: usize = sample.iter().product();
    let reals: Vec<Vec<f32>> = if stem.starts_with("pretrainedResnet") {
        // Class-sorted file (1000 per class): 5 images of each class.
        let rows: Vec<usize> = (0..10)
            .flat_map(|c| (0..5).map(move |k| c * 1000 + k * 173))
            .collect();
        edgeopt_tests::cifar::images(dir, &rows)
    } else if stem.starts_with("ad01") {
        let vals = edgeopt_tests::toycar::values(dir);
        vals.chunks_exact(640).map(<[f32]>::to_vec).collect()
    } else {
        // KWS: the int8 model's input range (scale 0.584703, zero point 83).
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b7773);
        (0..50)
            .map(|_| {
                (0..per)
                    .map(|_| (rng.gen_range(-128i32..=127) - 83) as f32 * 0.584_703)
                    .collect()
            })
            .collect()
    };
    let n = reals.len();
    let mut shape = vec![n];
    shape.extend_from_slice(&sample);
    let flat: Vec<f32> = reals.concat();
    let data = match (v.dtype, input_quant(g)) {
        (DType::F32, _) => TensorData::F32(flat),
        // The int8 ResNet takes pixel - 128 (scale 1, zero point -128).
        (DType::I8, Some((s, z))) => {
            TensorData::I8(flat.iter().map(|&x| quantize(x, s, z)).collect())
        }
        (d, _) => panic!("unexpected input dtype {d}"),
    };
    Tensor::new(shape, data).unwrap()
}

fn litert(model: &Path, inputs: &Path, out: &Path) -> Tensor {
    run_oracle(
        "litert_run.py",
        &[
            model,
            inputs,
            out,
            Path::new("--resolver"),
            Path::new("builtin"),
        ],
    );
    edgeopt_npy::read(out).expect("LiteRT output")
}

fn sample(batch: &Tensor, i: usize) -> Tensor {
    let per: usize = batch.shape[1..].iter().product();
    let mut shape = vec![1];
    shape.extend_from_slice(&batch.shape[1..]);
    let data = match &batch.data {
        TensorData::I8(v) => TensorData::I8(v[i * per..(i + 1) * per].to_vec()),
        TensorData::F32(v) => TensorData::F32(v[i * per..(i + 1) * per].to_vec()),
        _ => unreachable!("inputs are i8 or f32"),
    };
    Tensor::new(shape, data).unwrap()
}

/// edgeopt's outputs for every sample, concatenated (sample by sample, batch 1).
fn edgeopt_outputs(g: &Graph, batch: &Tensor) -> Vec<Tensor> {
    (0..batch.shape[0])
        .map(|i| {
            edgeopt_runtime::run(g, &[sample(batch, i)])
                .expect("run")
                .remove(0)
        })
        .collect()
}

/// Bit patterns of a tensor's elements (f32 compared by bits).
fn bits(t: &Tensor) -> Vec<i64> {
    match &t.data {
        TensorData::F32(v) => v.iter().map(|x| x.to_bits() as i64).collect(),
        _ => t.to_i64_vec(),
    }
}

fn flat_bits(ts: &[Tensor]) -> Vec<i64> {
    ts.iter().flat_map(bits).collect()
}

/// Same structure and contents, value by value along the nodes (names included).
/// Node names are compared only when `names` (the importer names nodes after their
/// TFLite operator and index, so graphs built here get new node names).
fn assert_same_graph(stem: &str, a: &Graph, b: &Graph, names: bool) {
    assert_eq!(a.nodes.len(), b.nodes.len(), "{stem}: node count");
    let val = |g: &Graph, i: Option<usize>| -> Option<Value> { i.map(|i| g.values[i].clone()) };
    for (x, y) in a.nodes.iter().zip(&b.nodes) {
        assert_eq!(x.op, y.op, "{stem}: op of {}", x.name);
        if names {
            assert_eq!(x.name, y.name, "{stem}: node name");
        }
        for (i, j) in x.inputs.iter().zip(&y.inputs) {
            assert_eq!(val(a, *i), val(b, *j), "{stem}: input of {}", x.name);
        }
        assert_eq!(
            a.values[x.outputs[0]], b.values[y.outputs[0]],
            "{stem}: output of {}",
            x.name
        );
    }
    assert_eq!(a.inputs.len(), b.inputs.len());
    assert_eq!(a.outputs.len(), b.outputs.len());
}

#[test]
fn mlperf_models_round_trip_through_tflite_export() {
    let Some(dir) = data_dir() else { return };
    if !oracle_available() {
        return;
    }
    let mut report = Vec::new();
    for rel in MODELS {
        let path: PathBuf = dir.join(TRAINING).join(rel);
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let g = edgeopt_tflite::import_file(&path).expect("import");
        let scratch = scratch_dir(&format!("tflite_export/{stem}"));
        let exported = scratch.join(format!("{stem}.export.tflite"));
        edgeopt_tflite::export_file(&g, &exported)
            .unwrap_or_else(|e| panic!("{stem}: export: {e}"));

        // LiteRT: original vs export, bit for bit.
        let inputs = inputs_for(&dir, &stem, &g);
        let in_npy = scratch.join("inputs.npy");
        edgeopt_npy::write(&in_npy, &inputs).unwrap();
        let want = litert(&path, &in_npy, &scratch.join("original.npy"));
        let got = litert(&exported, &in_npy, &scratch.join("export.npy"));
        assert_eq!(got.shape, want.shape, "{stem}: output shape");
        assert_eq!(got.dtype(), want.dtype(), "{stem}: output dtype");
        let differ = bits(&got)
            .iter()
            .zip(bits(&want))
            .filter(|(a, b)| **a != *b)
            .count();
        assert_eq!(
            differ,
            0,
            "{stem}: {differ} of {} LiteRT output elements differ between the export and the original",
            want.len()
        );

        // Back into edgeopt: the same graph, the same outputs.
        let back = edgeopt_tflite::import_file(&exported).expect("re-import");
        assert_same_graph(&stem, &g, &back, true);
        let ours = edgeopt_outputs(&g, &inputs);
        let again = edgeopt_outputs(&back, &inputs);
        assert_eq!(
            flat_bits(&ours),
            flat_bits(&again),
            "{stem}: edgeopt outputs differ after the round trip"
        );
        let size_in = std::fs::metadata(&path).unwrap().len();
        let size_out = std::fs::metadata(&exported).unwrap().len();
        report.push(format!(
            "{stem}: {} samples, LiteRT(export) == LiteRT(original) bit for bit, \
             re-import identical; {size_in} -> {size_out} bytes",
            inputs.shape[0]
        ));
    }
    eprintln!("{}", report.join("\n"));
}

// ----- low bit widths --------------------------------------------------------------

/// Rewrites every int8 per-channel weight of conv / fully-connected nodes with
/// `f(weights of one output channel, scale) -> (new values, new scale)`, stored as
/// `dtype`; the int32 bias is rescaled to the new `input_scale * weight_scale`.
fn rewrite_weights(g: &mut Graph, dtype: DType, f: impl Fn(&[i8], f32) -> (Vec<i8>, f32)) -> usize {
    let mut count = 0;
    for ni in 0..g.nodes.len() {
        let n = g.nodes[ni].clone();
        if !matches!(n.op, Op::Conv(_) | Op::FullyConnected { .. }) {
            continue;
        }
        let (Some(x), Some(w)) = (n.input(0), n.input(1)) else {
            continue;
        };
        let wv = &g.values[w];
        let (Some(t), Some(q)) = (&wv.data, &wv.quant) else {
            continue;
        };
        let Ok(vals) = t.as_i8() else { continue };
        let m = t.shape[0];
        let per = vals.len() / m;
        // Depthwise weights are [C*mult, kh, kw, 1], per channel along axis 0 too.
        assert!(q.axis.unwrap_or(0) == 0, "per-channel axis 0");
        let mut new_vals = Vec::with_capacity(vals.len());
        let mut new_scales = Vec::with_capacity(m);
        for c in 0..m {
            let (v, s) = f(&vals[c * per..(c + 1) * per], q.channel(c).0);
            new_vals.extend(v);
            new_scales.push(s);
        }
        let old_scales: Vec<f32> = (0..m).map(|c| q.channel(c).0).collect();
        let data = match dtype {
            DType::I4 => TensorData::I4(new_vals),
            _ => TensorData::I8(new_vals),
        };
        let shape = t.shape.clone();
        let wv = &mut g.values[w];
        wv.dtype = dtype;
        wv.data = Some(Tensor::new(shape, data).unwrap());
        wv.quant = Some(QuantParams::per_axis(new_scales.clone(), vec![0; m], 0));
        let in_scale = g.values[x].quant.as_ref().unwrap().scale[0];
        if let Some(b) = n.input(2) {
            let bv = &mut g.values[b];
            let old: Vec<i32> = bv.data.as_ref().unwrap().as_i32().unwrap().to_vec();
            let new: Vec<i32> = old
                .iter()
                .enumerate()
                .map(|(c, &v)| {
                    let (o, s) = if old_scales.len() == old.len() {
                        (old_scales[c], new_scales[c])
                    } else {
                        (old_scales[0], new_scales[0])
                    };
                    (v as f64 * o as f64 / s as f64).round() as i32
                })
                .collect();
            let len = new.len();
            bv.data = Some(Tensor::new(vec![len], TensorData::I32(new)).unwrap());
            let scales: Vec<f32> = (0..len)
                .map(|c| in_scale * new_scales[c.min(m - 1)])
                .collect();
            bv.quant = Some(QuantParams::per_axis(scales, vec![0; len], 0));
        }
        count += 1;
    }
    count
}

/// int8 weights on the 4-bit grid: scale x (127/7), values round(w * 7/127) in [-7, 7].
fn to_int4(g: &mut Graph) -> usize {
    rewrite_weights(g, DType::I4, |w, s| {
        let v = w
            .iter()
            .map(|&x| ((x as f32 * 7.0 / 127.0).round() as i8).clamp(-7, 7))
            .collect();
        (v, s * 127.0 / 7.0)
    })
}

/// Ternary weights: -1/0/1 (|w| above half the channel's largest magnitude), scale =
/// the mean magnitude of the kept weights.
fn to_ternary(g: &mut Graph) -> usize {
    rewrite_weights(g, DType::I8, |w, s| {
        let max = w
            .iter()
            .map(|&x| (x as i32).abs())
            .max()
            .unwrap_or(0)
            .max(1) as f32;
        let keep: Vec<i8> = w
            .iter()
            .map(|&x| {
                if (x as f32).abs() > max / 2.0 {
                    x.signum()
                } else {
                    0
                }
            })
            .collect();
        let (sum, cnt) = w
            .iter()
            .zip(&keep)
            .filter(|(_, &k)| k != 0)
            .fold((0f32, 0usize), |(a, n), (&x, _)| {
                (a + (x as f32).abs(), n + 1)
            });
        let mag = if cnt > 0 { sum / cnt as f32 } else { max };
        (keep, s * mag)
    })
}

/// fp32 weights of conv / fully-connected nodes as f16 constants behind a Dequantize.
fn to_fp16(g: &mut Graph) -> usize {
    let mut count = 0;
    for ni in 0..g.nodes.len() {
        if !matches!(g.nodes[ni].op, Op::Conv(_) | Op::FullyConnected { .. }) {
            continue;
        }
        let Some(w) = g.nodes[ni].input(1) else {
            continue;
        };
        let Some(t) = g.values[w].data.clone() else {
            continue;
        };
        let Ok(f) = t.as_f32() else { continue };
        let h: Vec<half::f16> = f.iter().map(|&x| half::f16::from_f32(x)).collect();
        let name = format!("{}/fp16", g.values[w].name);
        let c = g.add_const(
            name,
            Tensor::new(t.shape.clone(), TensorData::F16(h)).unwrap(),
        );
        let wv = &mut g.values[w];
        wv.data = None;
        // The Dequantize output keeps the weight's name and shape.
        let node_name = format!("{}/dequantize", wv.name);
        g.add_node(node_name, Op::Dequantize, vec![Some(c)], vec![w]);
        count += 1;
    }
    g.sort_topologically().unwrap();
    count
}

/// `g` with every Dequantize of an f16 constant replaced by the f32 constant it
/// computes (f16 -> f32 is exact), for running in edgeopt: its runtime does not
/// execute Dequantize of f16 tensors (yet).
fn expand_fp16(g: &Graph) -> Graph {
    let mut g = g.clone();
    let mut keep = Vec::new();
    for n in std::mem::take(&mut g.nodes) {
        let src = n.input(0).and_then(|i| g.values[i].data.clone());
        match (&n.op, src) {
            (Op::Dequantize, Some(t)) if t.dtype() == DType::F16 => {
                let f = Tensor::from_f32(t.shape.clone(), t.to_f32_vec()).unwrap();
                let v = &mut g.values[n.outputs[0]];
                v.dtype = DType::F32;
                v.data = Some(f);
            }
            _ => keep.push(n),
        }
    }
    g.nodes = keep;
    g
}

#[test]
fn low_bit_weights_export_to_tflite_and_run_in_litert() {
    let Some(dir) = data_dir() else { return };
    if !oracle_available() {
        return;
    }
    let int8 = edgeopt_tflite::import_file(dir.join(TRAINING).join(MODELS[1])).unwrap();
    let fp32 = edgeopt_tflite::import_file(dir.join(TRAINING).join(MODELS[0])).unwrap();
    let mut report = Vec::new();
    type Rewrite = fn(&mut Graph) -> usize;
    let cases: [(&str, &Graph, Rewrite); 3] = [
        ("int4", &int8, to_int4),
        ("ternary", &int8, to_ternary),
        ("fp16", &fp32, to_fp16),
    ];
    for (what, base, rewrite) in cases {
        let mut g = base.clone();
        let n = rewrite(&mut g);
        assert!(n >= 9, "{what}: only {n} weights rewritten");
        g.validate().unwrap();
        let scratch = scratch_dir(&format!("tflite_export/lowbit-{what}"));
        let path = scratch.join(format!("resnet8-{what}.tflite"));
        edgeopt_tflite::export_file(&g, &path).unwrap_or_else(|e| panic!("{what}: export: {e}"));
        let inputs = inputs_for(&dir, "pretrainedResnet", &g);
        let in_npy = scratch.join("inputs.npy");
        edgeopt_npy::write(&in_npy, &inputs).unwrap();
        let lite = litert(&path, &in_npy, &scratch.join("litert.npy"));
        let ours = edgeopt_outputs(&expand_fp16(&g), &inputs);
        let ours_flat: Vec<f64> = ours
            .iter()
            .flat_map(|t| (0..t.len()).map(|i| t.data.get_f64(i)).collect::<Vec<_>>())
            .collect();
        let lite_flat: Vec<f64> = (0..lite.len()).map(|i| lite.data.get_f64(i)).collect();
        assert_eq!(ours_flat.len(), lite_flat.len(), "{what}: output size");
        let max_diff = ours_flat
            .iter()
            .zip(&lite_flat)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let back = edgeopt_tflite::import_file(&path).expect("re-import");
        assert_same_graph(what, &g, &back, false);
        if what == "fp16" {
            // Float kernels sum in different orders: equal within float rounding.
            assert!(
                max_diff <= 1e-5,
                "{what}: max |edgeopt - LiteRT| = {max_diff}"
            );
        } else {
            assert_eq!(max_diff, 0.0, "{what}: edgeopt and LiteRT differ");
        }
        report.push(format!(
            "{what}: {n} weight tensors, {} bytes; max |edgeopt - LiteRT| = {max_diff:e} over {} samples",
            std::fs::metadata(&path).unwrap().len(),
            inputs.shape[0]
        ));
    }
    eprintln!("{}", report.join("\n"));
}
