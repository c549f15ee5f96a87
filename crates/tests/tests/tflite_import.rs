//! TFLite import of the six MLPerf Tiny reference models, checked against LiteRT.
//!
//! Everything expected comes from the model file through the oracle
//! `scripts/oracle/tflite_details.py` (LiteRT's interpreter and the official
//! flatbuffers reader): the operator list, the input/output details, every tensor's
//! dtype, shape and quantization parameters, and checksums of every constant.

use edgeopt_ir::{
    Activation, AutoPad, CoordTransform, DType, Dim, Graph, Layout, Op, PadMode, QuantParams,
    ReduceKind, ResizeMode, Source, UnaryKind,
};
use edgeopt_testkit::{data_dir, oracle_available, run_oracle, scratch_dir};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const MODELS: [&str; 6] = [
    "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet.tflite",
    "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet_quant.tflite",
    "mlperf-tiny/benchmark/training/keyword_spotting/trained_models/kws_ref_model.tflite",
    "mlperf-tiny/benchmark/training/keyword_spotting/trained_models/kws_ref_model_float32.tflite",
    "mlperf-tiny/benchmark/training/anomaly_detection/trained_models/ad01_fp32.tflite",
    "mlperf-tiny/benchmark/training/anomaly_detection/trained_models/ad01_int8.tflite",
];

fn models() -> Option<Vec<PathBuf>> {
    let dir = data_dir()?;
    Some(MODELS.iter().map(|m| dir.join(m)).collect())
}

fn oracle(path: &Path) -> Json {
    serde_json::from_str(&run_oracle("tflite_details.py", &[path])).expect("oracle JSON")
}

fn dtype_of(name: &str) -> DType {
    match name {
        "float32" => DType::F32,
        "float16" => DType::F16,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "int16" => DType::I16,
        "int32" => DType::I32,
        "int64" => DType::I64,
        "bool" => DType::Bool,
        other => panic!("oracle dtype {other}"),
    }
}

fn ints(j: &Json) -> Vec<i64> {
    j.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn floats(j: &Json) -> Vec<f32> {
    j.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Expected IR shape from LiteRT's shape signature (-1 = dynamic).
fn expected_shape(sig: &[i64]) -> Vec<Option<usize>> {
    sig.iter()
        .map(|&d| if d < 0 { None } else { Some(d as usize) })
        .collect()
}

fn shape_of(g: &Graph, v: usize) -> Vec<Option<usize>> {
    g.values[v]
        .shape
        .as_ref()
        .expect("declared shape")
        .iter()
        .map(Dim::fixed)
        .collect()
}

/// Expected quant params from an oracle tensor entry, with the per-channel axis
/// moved by `perm` (depthwise weights are transposed by the importer).
fn expected_quant(t: &Json, perm: Option<&[usize]>) -> Option<QuantParams> {
    let scales = floats(&t["scales"]);
    if scales.is_empty() {
        return None;
    }
    let zps = ints(&t["zero_points"]);
    if scales.len() == 1 {
        return Some(QuantParams::per_tensor(scales[0], zps[0]));
    }
    let mut axis = t["quantized_dimension"].as_u64().unwrap() as usize;
    if let Some(p) = perm {
        axis = p.iter().position(|&a| a == axis).unwrap();
    }
    Some(QuantParams::per_axis(scales, zps, axis))
}

#[test]
fn mlperf_tiny_tflite_models_import() {
    let Some(paths) = models() else { return };
    for path in &paths {
        let g =
            edgeopt_tflite::import_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        g.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(matches!(g.source, Source::Tflite { version: 3 }));
        assert!(!g.nodes.is_empty() && !g.inputs.is_empty() && !g.outputs.is_empty());
        // Every value carries a dtype and a declared shape (TFLite declares them all).
        for v in &g.values {
            assert!(
                v.shape.is_some(),
                "{}: '{}' has no shape",
                path.display(),
                v.name
            );
        }
        // Shape inference runs over the whole graph at batch 1 and 4, and the inferred
        // output shapes agree with the declared ones (dynamic batch bound).
        for batch in [1, 4] {
            let shapes = edgeopt_ir::shape::bind_input_shapes(&g, batch).unwrap();
            let facts = edgeopt_ir::shape::infer_graph(&g, &shapes)
                .unwrap_or_else(|e| panic!("{}: batch {batch}: {e}", path.display()));
            for &o in &g.outputs {
                let f = facts[o].as_ref().expect("output inferred");
                let declared = g.values[o].shape.as_ref().unwrap();
                let want: Vec<usize> = declared
                    .iter()
                    .map(|d| d.fixed().unwrap_or(batch))
                    .collect();
                assert_eq!(
                    f.shape,
                    want,
                    "{}: output shape at batch {batch}",
                    path.display()
                );
                assert_eq!(f.dtype, g.values[o].dtype);
            }
        }
        // No constant is left unused (the parameter count is the model's).
        let consumers = g.consumers();
        for (i, v) in g.values.iter().enumerate() {
            if v.is_const() {
                assert!(
                    !consumers[i].is_empty(),
                    "{}: unused constant '{}'",
                    path.display(),
                    v.name
                );
            }
        }
    }
}

#[test]
fn mlperf_tiny_tflite_models_match_litert() {
    let Some(paths) = models() else { return };
    if !oracle_available() {
        return;
    }
    for path in &paths {
        check_against_oracle(path);
    }
}

fn check_against_oracle(path: &Path) {
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let bytes = std::fs::read(path).unwrap();
    let g = edgeopt_tflite::import(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
    let o = oracle(path);
    assert_eq!(o["version"].as_u64(), Some(3));

    // Operators: the same list, in order, as LiteRT's interpreter.
    let ops: Vec<String> = o["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        edgeopt_tflite::operator_names(&bytes).unwrap(),
        ops,
        "{file}"
    );
    // One IR node per operator, named <OP>_<index>, plus only helper nodes
    // (named after a tensor, containing '/').
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_index: HashMap<usize, &edgeopt_ir::Node> = HashMap::new();
    for n in &g.nodes {
        if n.name.contains('/') {
            assert!(
                matches!(n.op, Op::Dequantize | Op::Transpose { .. }),
                "{file}: unexpected helper node {} ({})",
                n.name,
                n.op.name()
            );
            continue;
        }
        let (op, idx) = n.name.rsplit_once('_').expect("node name <OP>_<k>");
        *counts.entry(op.to_string()).or_default() += 1;
        by_index.insert(idx.parse().unwrap(), n);
    }
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for op in &ops {
        *expected.entry(op.clone()).or_default() += 1;
    }
    assert_eq!(counts, expected, "{file}: op counts");
    eprintln!("{file}: {counts:?}");

    let tensors: HashMap<i64, &Json> = o["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["index"].as_i64().unwrap(), t))
        .collect();
    let names = g.name_index();
    let value_of = |t: &Json| -> usize {
        let name = t["name"].as_str().unwrap();
        *names
            .get(name)
            .unwrap_or_else(|| panic!("{file}: tensor '{name}' not in the graph"))
    };

    let const_values = |t: i64| -> Vec<f64> {
        tensors[&t]["const_values"]
            .as_array()
            .expect("small constant")
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let const_ints = |t: i64| -> Vec<i64> { const_values(t).iter().map(|&x| x as i64).collect() };

    // Depthwise weights are stored transposed; remember them. Constant operands that
    // become attributes (paddings, perm, axes, sizes) are not graph values; the
    // reshape target becomes an i64 constant.
    let mut dw_weights = Vec::new();
    let mut attr_tensors = Vec::new();
    let mut reshape_shapes = Vec::new();
    for (k, op) in ops.iter().enumerate() {
        let node = by_index[&k];
        let ins = ints(&o["op_inputs"][k]);
        let outs = ints(&o["op_outputs"][k]);
        assert_eq!(
            g.values[node.outputs[0]].name,
            tensors[&outs[0]]["name"].as_str().unwrap()
        );
        // The operator's builtin options as the flatbuffers reader sees them.
        let opt = &o["op_options"][k];
        let oi = |f: &str| {
            opt[f]
                .as_i64()
                .unwrap_or_else(|| panic!("{file}: {op}.{f}"))
        };
        let act = || match opt["fusedActivationFunction"].as_i64() {
            None | Some(0) => Activation::None,
            Some(1) => Activation::Relu,
            Some(2) => Activation::ReluN1To1,
            Some(3) => Activation::Relu6,
            Some(a) => panic!("{file}: activation {a}"),
        };
        let pad = || {
            if oi("padding") == 0 {
                AutoPad::SameUpper
            } else {
                AutoPad::Valid
            }
        };
        match op.as_str() {
            "CONV_2D" | "DEPTHWISE_CONV_2D" => {
                let Op::Conv(a) = &node.op else {
                    panic!("{file}: {op} -> {}", node.op.name())
                };
                assert_eq!(a.layout, Layout::Nhwc);
                assert_eq!(a.strides, [oi("strideH") as usize, oi("strideW") as usize]);
                let dil = [
                    oi("dilationHFactor") as usize,
                    oi("dilationWFactor") as usize,
                ];
                assert_eq!(a.dilations, dil);
                assert_eq!(a.auto_pad, pad());
                assert_eq!(a.activation, act(), "{file}: #{k}");
                let x = &tensors[&ins[0]];
                let w = &tensors[&ins[1]];
                let c = *ints(&x["shape"]).last().unwrap() as usize;
                let ws = ints(&w["shape"]);
                assert_eq!(a.kernel_shape, vec![ws[1] as usize, ws[2] as usize]);
                assert_eq!(
                    a.hybrid.is_some(),
                    x["dtype"] == "float32" && w["dtype"] == "int8",
                    "{file}: #{k} hybrid = float input with int8 weights"
                );
                if op == "DEPTHWISE_CONV_2D" {
                    assert_eq!(a.group, c, "{file}: depthwise group = input channels");
                    dw_weights.push(ins[1]);
                } else {
                    assert_eq!(a.group, c / ws[3] as usize);
                }
            }
            "FULLY_CONNECTED" => {
                let keep_num_dims = opt["keepNumDims"].as_bool().unwrap();
                // Float input with int8 weights: a hybrid operator.
                let hybrid = (tensors[&ins[0]]["dtype"] == "float32"
                    && tensors[&ins[1]]["dtype"] == "int8")
                    .then(|| {
                        edgeopt_ir::Hybrid::new(
                            opt["asymmetricQuantizeInputs"].as_bool().unwrap_or(false),
                        )
                    });
                let want = Op::FullyConnected {
                    activation: act(),
                    keep_num_dims,
                    hybrid,
                };
                assert_eq!(node.op, want, "{file}: #{k}");
            }
            "ADD" | "SUB" | "MUL" | "DIV" => {
                let Op::Binary { activation, .. } = node.op else {
                    panic!("{file}: {op}")
                };
                let name = match op.as_str() {
                    "ADD" => "Add",
                    "SUB" => "Sub",
                    "MUL" => "Mul",
                    _ => "Div",
                };
                assert_eq!(node.op.name(), name);
                assert_eq!(activation, act(), "{file}: #{k}");
            }
            "AVERAGE_POOL_2D" | "MAX_POOL_2D" => {
                let (Op::AveragePool(p) | Op::MaxPool(p)) = &node.op else {
                    panic!("{file}: {op}")
                };
                assert_eq!(
                    node.op.name(),
                    if op == "MAX_POOL_2D" {
                        "MaxPool"
                    } else {
                        "AveragePool"
                    }
                );
                assert_eq!(p.layout, Layout::Nhwc);
                assert_eq!(
                    p.kernel_shape,
                    [oi("filterHeight") as usize, oi("filterWidth") as usize]
                );
                assert_eq!(p.strides, [oi("strideH") as usize, oi("strideW") as usize]);
                assert_eq!(p.auto_pad, pad());
                assert_eq!(p.activation, act());
                assert!(
                    !p.count_include_pad,
                    "TFLite averages over in-bounds elements"
                );
            }
            "RESHAPE" => {
                assert!(matches!(node.op, Op::Reshape { .. }));
                // The target shape is an i64 constant input holding the model's values.
                let s = g
                    .const_data(node.input(1).unwrap())
                    .expect("constant shape");
                let sig = ints(&tensors[&outs[0]]["shape_signature"]);
                assert_eq!(
                    s.as_i64().unwrap(),
                    sig.as_slice(),
                    "{file}: reshape target"
                );
                if ins.len() > 1 {
                    assert_eq!(const_ints(ins[1]), sig);
                    reshape_shapes.push(ins[1]);
                }
            }
            "SOFTMAX" => {
                let beta = opt["beta"].as_f64().unwrap() as f32;
                assert_eq!(node.op, Op::Softmax { axis: -1, beta });
            }
            "LOG_SOFTMAX" => assert_eq!(node.op, Op::LogSoftmax { axis: -1 }),
            "LOGISTIC" => assert_eq!(node.op, Op::Unary(UnaryKind::Sigmoid)),
            "TANH" => assert_eq!(node.op, Op::Unary(UnaryKind::Tanh)),
            "RELU" => assert_eq!(node.op, Op::Unary(UnaryKind::Relu)),
            "RELU6" => assert_eq!(node.op, Op::Unary(UnaryKind::Relu6)),
            "HARD_SWISH" => assert_eq!(node.op, Op::Unary(UnaryKind::HardSwish)),

            "QUANTIZE" => assert_eq!(node.op, Op::Quantize),
            "DEQUANTIZE" => assert_eq!(node.op, Op::Dequantize),
            "CONCATENATION" => {
                assert_eq!(
                    node.op,
                    Op::Concat {
                        axis: oi("axis"),
                        activation: act()
                    }
                )
            }
            "PAD" | "PADV2" => {
                let p = const_ints(ins[1]);
                let r = p.len() / 2;
                let mut onnx: Vec<i64> = (0..r).map(|i| p[2 * i]).collect();
                onnx.extend((0..r).map(|i| p[2 * i + 1]));
                let value = if op == "PADV2" {
                    const_values(ins[2])[0] as f32
                } else {
                    0.0
                };
                assert_eq!(
                    node.op,
                    Op::Pad {
                        mode: PadMode::Constant,
                        pads: onnx,
                        value
                    },
                    "{file}"
                );
                attr_tensors.extend(&ins[1..]);
            }
            "TRANSPOSE" => {
                let perm: Vec<usize> = const_ints(ins[1]).iter().map(|&a| a as usize).collect();
                assert_eq!(node.op, Op::Transpose { perm });
                attr_tensors.push(ins[1]);
            }
            "MEAN" => {
                let Op::Reduce {
                    kind: ReduceKind::Mean,
                    axes,
                    keepdims,
                    ..
                } = &node.op
                else {
                    panic!("{file}: MEAN -> {}", node.op.name())
                };
                assert_eq!(axes.as_deref(), Some(const_ints(ins[1]).as_slice()));
                assert_eq!(*keepdims, opt["keepDims"].as_bool().unwrap());
                attr_tensors.push(ins[1]);
            }
            "RESIZE_NEAREST_NEIGHBOR" | "RESIZE_BILINEAR" => {
                let Op::Resize(a) = &node.op else {
                    panic!("{file}: resize")
                };
                let mode = if op == "RESIZE_BILINEAR" {
                    ResizeMode::Linear
                } else {
                    ResizeMode::Nearest
                };
                assert_eq!(a.mode, mode);
                let size: Vec<usize> = const_ints(ins[1]).iter().map(|&d| d as usize).collect();
                assert_eq!(a.sizes.as_ref(), Some(&size));
                assert_eq!(a.axes.as_deref(), Some(&[1i64, 2][..]));
                let align = opt["alignCorners"].as_bool().unwrap();
                let half = opt["halfPixelCenters"].as_bool().unwrap();
                let coord = match (align, half, a.mode) {
                    (true, _, _) => CoordTransform::AlignCorners,
                    (false, true, ResizeMode::Linear) => CoordTransform::HalfPixel,
                    (false, true, _) => CoordTransform::TfHalfPixelForNn,
                    (false, false, _) => CoordTransform::Asymmetric,
                };
                assert_eq!(a.coord, coord);
                attr_tensors.push(ins[1]);
            }
            "MAXIMUM" => assert_eq!(node.op.name(), "Max"),
            "MINIMUM" => assert_eq!(node.op.name(), "Min"),
            "LEAKY_RELU" => {
                let alpha = opt["alpha"].as_f64().unwrap() as f32;
                assert_eq!(node.op, Op::LeakyRelu { alpha });
            }
            "RELU_N1_TO_1" => assert_eq!(
                node.op,
                Op::Clip {
                    min: Some(-1.0),
                    max: Some(1.0)
                }
            ),
            "SQUEEZE" => assert_eq!(
                node.op,
                Op::Squeeze {
                    axes: ints(&opt["squeezeDims"])
                }
            ),
            "EXPAND_DIMS" => {
                assert_eq!(
                    node.op,
                    Op::Unsqueeze {
                        axes: const_ints(ins[1])
                    }
                );
                attr_tensors.push(ins[1]);
            }
            "GATHER" => assert_eq!(node.op, Op::Gather { axis: oi("axis") }),
            other => panic!("{file}: the test does not know {other}"),
        }
    }

    // Graph inputs and outputs: names, dtypes, shapes and quantization as LiteRT sees them.
    for (key, ids) in [("inputs", &g.inputs), ("outputs", &g.outputs)] {
        let d = o[key].as_array().unwrap();
        assert_eq!(d.len(), ids.len(), "{file}: {key}");
        for (t, &v) in d.iter().zip(ids.iter()) {
            let val = &g.values[v];
            assert_eq!(val.name, t["name"].as_str().unwrap());
            assert_eq!(
                val.dtype,
                dtype_of(t["dtype"].as_str().unwrap()),
                "{file}: {}",
                val.name
            );
            assert_eq!(
                shape_of(&g, v),
                expected_shape(&ints(&t["shape_signature"]))
            );
            assert_eq!(
                val.quant,
                expected_quant(t, None),
                "{file}: {key} '{}'",
                val.name
            );
            if let Some(q) = &val.quant {
                // LiteRT's (scale, zero_point) pair for per-tensor quantization.
                assert_eq!(q.scale[0], t["scale"].as_f64().unwrap() as f32);
                assert_eq!(q.zero_point[0], t["zero_point"].as_i64().unwrap());
            }
        }
    }

    // Every tensor: dtype, shape, quantization, and constant contents.
    const DW_PERM: [usize; 4] = [3, 1, 2, 0];
    let mut const_elems = 0usize;
    for (&idx, t) in &tensors {
        if attr_tensors.contains(&idx) {
            continue;
        }
        let v = value_of(t);
        let val = &g.values[v];
        let dw = dw_weights.contains(&idx);
        let perm = dw.then_some(&DW_PERM[..]);
        let dtype = dtype_of(t["dtype"].as_str().unwrap());
        let is_reshape_shape = reshape_shapes.contains(&idx);
        if is_reshape_shape {
            assert_eq!(val.dtype, DType::I64, "{file}: '{}'", val.name);
        } else {
            assert_eq!(val.dtype, dtype, "{file}: '{}'", val.name);
        }
        let mut want = expected_shape(&ints(&t["shape_signature"]));
        if let Some(p) = perm {
            want = p.iter().map(|&a| want[a]).collect();
        }
        assert_eq!(shape_of(&g, v), want, "{file}: '{}' shape", val.name);
        if !is_reshape_shape {
            assert_eq!(
                val.quant,
                expected_quant(t, perm),
                "{file}: '{}' quant",
                val.name
            );
        }
        match t["const_count"].as_u64() {
            None => assert!(
                !val.is_const(),
                "{file}: '{}' should not be constant",
                val.name
            ),
            Some(n) => {
                let data = val
                    .data
                    .as_ref()
                    .unwrap_or_else(|| panic!("{file}: '{}' not constant", val.name));
                assert_eq!(data.len() as u64, n);
                const_elems += data.len();
                let (mut sum, mut abs) = (0f64, 0f64);
                for i in 0..data.len() {
                    let x = data.data.get_f64(i);
                    sum += x;
                    abs += x.abs();
                }
                let want_sum = t["const_sum"].as_f64().unwrap();
                let want_abs = t["const_abs_sum"].as_f64().unwrap();
                let tol = 1e-9 * want_abs.max(1.0);
                assert!(
                    (sum - want_sum).abs() <= tol,
                    "{file}: '{}' sum {sum} vs {want_sum}",
                    val.name
                );
                assert!(
                    (abs - want_abs).abs() <= tol,
                    "{file}: '{}' abs sum",
                    val.name
                );
            }
        }
    }
    assert_eq!(g.param_count(), const_elems, "{file}: parameter count");

    // Hybrid models: a float op never reads a quantized integer tensor directly; the
    // importer puts a Dequantize in between.
    for n in &g.nodes {
        if matches!(n.op, Op::Dequantize | Op::Quantize) {
            continue;
        }
        let float_out = n.outputs.iter().all(|&o| g.values[o].dtype.is_float());
        for i in n.present_inputs() {
            let v = &g.values[i];
            assert!(
                !(float_out && v.quant.is_some() && v.dtype.is_integer()),
                "{file}: float node {} reads quantized '{}'",
                n.name,
                v.name
            );
        }
    }
    if file == "kws_ref_model_float32.tflite" {
        let deq = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Dequantize))
            .count();
        let int8_consts = tensors
            .values()
            .filter(|t| t["dtype"] == "int8" && t["const_count"].is_number())
            .count();
        assert!(int8_consts > 0, "the hybrid model has int8 weights");
        assert_eq!(deq, int8_consts, "one Dequantize per int8 weight tensor");
    }
}

/// The synthetic model with every op the importer maps, checked the same way: LiteRT
/// must accept it (allocate_tensors runs every op's shape checks) and the import must
/// agree with LiteRT tensor by tensor.
#[test]
fn all_ops_model_matches_litert() {
    if !oracle_available() {
        return;
    }
    let bytes = edgeopt_tflite::finish_model(&edgeopt_tflite::fixtures::all_ops_model());
    let path = scratch_dir("tflite_all_ops").join("all_ops.tflite");
    std::fs::write(&path, &bytes).unwrap();
    check_against_oracle(&path);
}

/// The synthetic model with the ops imported beyond the MLPerf Tiny set.
#[test]
fn extra_ops_model_matches_litert() {
    if !oracle_available() {
        return;
    }
    let bytes = edgeopt_tflite::finish_model(&edgeopt_tflite::fixtures::extra_ops_model());
    let path = scratch_dir("tflite_extra_ops").join("extra_ops.tflite");
    std::fs::write(&path, &bytes).unwrap();
    check_against_oracle(&path);
}
