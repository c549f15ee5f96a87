//! `edgeopt_ir::batch::fold_batch_shape_arithmetic`: the shape arithmetic of a
//! dynamic batch (a Reshape target, Fill dims computed from the batch) becomes
//! constants where that is exact, and is left alone where it is not.
//!
//! Each graph is built here as the converters write it (Shape -> Gather -> Unsqueeze
//! -> Concat into a Reshape or a Fill). Where the rewrite applies, the rewritten graph
//! gives bit-identical outputs to the original at batch 1 and 3 (edgeopt's runtime
//! runs both) and the written .tflite / .onnx read back with a dynamic batch and no
//! Shape left. Where it must not apply (a target that depends on another dynamic
//! dimension, two entries that grow with the batch, a filled state that is reduced
//! over the batch or is a graph output), nothing is rewritten.

use edgeopt_ir::batch::fold_batch_shape_arithmetic;
use edgeopt_ir::{
    Activation, BinaryKind, DType, Dim, Graph, Op, ReduceKind, Tensor, TensorData, ValueId,
};

fn sym(n: &str) -> Dim {
    Dim::Sym(n.into())
}

fn fixed(dims: &[Dim]) -> Option<Vec<Dim>> {
    Some(dims.to_vec())
}

fn i64s(g: &mut Graph, name: &str, v: &[i64]) -> ValueId {
    g.add_const(name, Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap())
}

fn f32s(g: &mut Graph, name: &str, shape: &[usize], seed: u32) -> ValueId {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    g.add_const(name, Tensor::from_f32(shape.to_vec(), v).unwrap())
}

fn node(g: &mut Graph, name: &str, op: Op, ins: &[ValueId], dtype: DType) -> ValueId {
    let y = g.add_value(name, dtype, None);
    g.add_node(name, op, ins.iter().map(|&i| Some(i)).collect(), vec![y]);
    y
}

/// Entry `k` of `x`'s shape as a 1-element i64 tensor (Shape -> Gather -> Unsqueeze).
fn dim_of(g: &mut Graph, x: ValueId, k: i64, tag: &str) -> ValueId {
    let s = node(g, &format!("{tag}_shape"), Op::Shape, &[x], DType::I64);
    let idx = g.add_const(
        format!("{tag}_idx"),
        Tensor::new(vec![], TensorData::I64(vec![k])).unwrap(),
    );
    let d = node(
        g,
        &format!("{tag}_gather"),
        Op::Gather { axis: 0 },
        &[s, idx],
        DType::I64,
    );
    node(
        g,
        &format!("{tag}_unsq"),
        Op::Unsqueeze { axes: vec![0] },
        &[d],
        DType::I64,
    )
}

fn concat(g: &mut Graph, name: &str, parts: &[ValueId]) -> ValueId {
    let op = Op::Concat {
        axis: 0,
        activation: Activation::None,
    };
    node(g, name, op, parts, DType::I64)
}

/// Sets the outputs and declares every computed value's shape as importers do: the
/// leading dimension symbolic where it carries the batch (doubles from batch 1 to 2).
fn finish(mut g: Graph, outputs: &[ValueId]) -> Graph {
    use edgeopt_ir::shape::{bind_input_shapes, infer_graph};
    g.outputs = outputs.to_vec();
    let f1 = infer_graph(&g, &bind_input_shapes(&g, 1).unwrap()).unwrap();
    let f2 = infer_graph(&g, &bind_input_shapes(&g, 2).unwrap()).unwrap();
    for (i, v) in g.values.iter_mut().enumerate() {
        let (Some(a), Some(b)) = (&f1[i], &f2[i]) else {
            continue;
        };
        if v.data.is_some() || v.shape.is_some() {
            continue;
        }
        let mut shape: Vec<Dim> = a.shape.iter().map(|&d| Dim::Fixed(d)).collect();
        if !shape.is_empty() && b.shape.len() == a.shape.len() && b.shape[0] == 2 * a.shape[0] {
            shape[0] = sym("N");
        }
        v.shape = Some(shape);
        v.dtype = a.dtype;
    }
    g.validate().unwrap();
    g
}

fn input(g: &mut Graph, name: &str, dims: &[Dim]) -> ValueId {
    let x = g.add_value(name, DType::F32, fixed(dims));
    g.inputs.push(x);
    x
}

/// x [N, 4, 5] -> Reshape to [N, 20], the target computed from x's shape.
fn reshape_batch_times_const() -> Graph {
    let mut g = Graph::new("reshape");
    let x = input(&mut g, "x", &[sym("N"), Dim::Fixed(4), Dim::Fixed(5)]);
    let n = dim_of(&mut g, x, 0, "n");
    let c = i64s(&mut g, "twenty", &[20]);
    let t = concat(&mut g, "target", &[n, c]);
    let y = node(
        &mut g,
        "y",
        Op::Reshape { allowzero: true },
        &[x, t],
        DType::F32,
    );
    finish(g, &[y])
}

/// x [N, 4, 5] -> Reshape to [-1, 5], the 5 read from x's shape (no batch in it).
fn reshape_batch_free() -> Graph {
    let mut g = Graph::new("reshape_free");
    let x = input(&mut g, "x", &[sym("N"), Dim::Fixed(4), Dim::Fixed(5)]);
    let five = dim_of(&mut g, x, 2, "w");
    let m1 = i64s(&mut g, "minus_one", &[-1]);
    let t = concat(&mut g, "target", &[m1, five]);
    let y = node(
        &mut g,
        "y",
        Op::Reshape { allowzero: false },
        &[x, t],
        DType::F32,
    );
    finish(g, &[y])
}

/// x [N, T, 8] (T dynamic too) -> Reshape to [N, T*8]: the target depends on T.
fn reshape_other_dynamic_dim() -> Graph {
    let mut g = Graph::new("reshape_t");
    let x = input(&mut g, "x", &[sym("N"), sym("T"), Dim::Fixed(8)]);
    let n = dim_of(&mut g, x, 0, "n");
    let t = dim_of(&mut g, x, 1, "t");
    let eight = i64s(&mut g, "eight", &[8]);
    let mul = Op::Binary {
        kind: BinaryKind::Mul,
        activation: Activation::None,
    };
    let t8 = node(&mut g, "t8", mul, &[t, eight], DType::I64);
    let target = concat(&mut g, "target", &[n, t8]);
    let y = node(
        &mut g,
        "y",
        Op::Reshape { allowzero: true },
        &[x, target],
        DType::F32,
    );
    finish(g, &[y])
}

/// a, b [N, 4] -> a b^T [N, N] -> Reshape to [N, N]: two entries grow with the batch.
fn reshape_two_entries_vary() -> Graph {
    let mut g = Graph::new("reshape_nn");
    let a = input(&mut g, "a", &[sym("N"), Dim::Fixed(4)]);
    let b = input(&mut g, "b", &[sym("N"), Dim::Fixed(4)]);
    let bt = node(
        &mut g,
        "bt",
        Op::Transpose { perm: vec![1, 0] },
        &[b],
        DType::F32,
    );
    let p = node(&mut g, "p", Op::MatMul, &[a, bt], DType::F32);
    let n1 = dim_of(&mut g, a, 0, "n1");
    let n2 = dim_of(&mut g, b, 0, "n2");
    let t = concat(&mut g, "target", &[n1, n2]);
    let y = node(
        &mut g,
        "y",
        Op::Reshape { allowzero: true },
        &[p, t],
        DType::F32,
    );
    finish(g, &[y])
}

fn fc() -> Op {
    Op::FullyConnected {
        activation: Activation::None,
        keep_num_dims: false,
        hybrid: None,
    }
}

fn binary(kind: BinaryKind) -> Op {
    Op::Binary {
        kind,
        activation: Activation::None,
    }
}

/// The converter's initial RNN state: h0 = Fill([N, 3], 0.25) from x [N, 4]; then
/// r = FC(h0), u = FC(x), y = u * h0 + r (h0 and r broadcast back over the batch).
/// `sink` decides what else reads h0: nothing, a sum over the batch, or the outputs.
fn fill_state(sink: &str) -> Graph {
    let mut g = Graph::new("fill");
    let x = input(&mut g, "x", &[sym("N"), Dim::Fixed(4)]);
    let n = dim_of(&mut g, x, 0, "n");
    let three = i64s(&mut g, "three", &[3]);
    let dims = concat(&mut g, "dims", &[n, three]);
    let v = g.add_const("value", Tensor::scalar_f32(0.25));
    let h0 = node(&mut g, "h0", Op::Fill, &[dims, v], DType::F32);
    let wr = f32s(&mut g, "wr", &[3, 3], 1);
    let br = f32s(&mut g, "br", &[3], 2);
    let r = node(&mut g, "r", fc(), &[h0, wr, br], DType::F32);
    let wx = f32s(&mut g, "wx", &[3, 4], 3);
    let u = node(&mut g, "u", fc(), &[x, wx], DType::F32);
    let uh = node(&mut g, "uh", binary(BinaryKind::Mul), &[u, h0], DType::F32);
    let mut y = node(&mut g, "y", binary(BinaryKind::Add), &[uh, r], DType::F32);
    let mut outputs = vec![];
    match sink {
        "none" => {}
        "batch_sum" => {
            let red = Op::Reduce {
                kind: ReduceKind::Sum,
                axes: Some(vec![0]),
                keepdims: true,
                noop_with_empty_axes: false,
            };
            let s = node(&mut g, "sum", red, &[h0], DType::F32);
            y = node(&mut g, "y2", binary(BinaryKind::Add), &[y, s], DType::F32);
        }
        "output" => outputs.push(h0),
        other => panic!("{other}"),
    }
    outputs.insert(0, y);
    finish(g, &outputs)
}

fn inputs(g: &Graph, batch: usize) -> Vec<Tensor> {
    g.inputs
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let shape: Vec<usize> = g.values[i].shape.as_ref().unwrap()[1..]
                .iter()
                .map(|d| d.fixed().unwrap())
                .collect();
            let mut s = vec![batch];
            s.extend(shape);
            let n: usize = s.iter().product();
            let v = (0..n)
                .map(|j| ((j * 7919 + k * 31) % 613) as f32 / 300.0 - 1.0)
                .collect();
            Tensor::from_f32(s, v).unwrap()
        })
        .collect()
}

/// Same outputs (bit for bit) at batch 1 and 3.
fn assert_same_results(a: &Graph, b: &Graph) {
    for batch in [1, 3] {
        let x = inputs(a, batch);
        let ra = edgeopt_runtime::run(a, &x).unwrap();
        let rb = edgeopt_runtime::run(b, &x).unwrap();
        assert_eq!(ra.len(), rb.len());
        for (p, q) in ra.iter().zip(&rb) {
            assert_eq!(p.shape, q.shape, "batch {batch}");
            assert_eq!(p.to_f32_vec(), q.to_f32_vec(), "batch {batch}");
        }
    }
}

fn ops(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

fn const_input(g: &Graph, op: &str, k: usize) -> Option<Vec<i64>> {
    let n = g.nodes.iter().find(|n| n.op.name() == op)?;
    g.const_data(n.input(k)?).map(Tensor::to_i64_vec)
}

/// Both writers keep the dynamic batch and write no shape arithmetic.
fn assert_written_without_shape_ops(g: &Graph) {
    let tfl = edgeopt_tflite::export(g).unwrap();
    let back = edgeopt_tflite::import(&tfl).unwrap();
    assert!(!ops(&back).contains(&"Shape"), "{:?}", ops(&back));
    assert!(back.values[back.inputs[0]].shape.as_ref().unwrap()[0]
        .fixed()
        .is_none());
    assert_same_results(g, &back);
    let onnx = edgeopt_onnx::export(g).unwrap();
    let back = edgeopt_onnx::import(&onnx).unwrap();
    assert!(!ops(&back).contains(&"Shape"), "{:?}", ops(&back));
    assert!(back.values[back.inputs[0]].shape.as_ref().unwrap()[0]
        .fixed()
        .is_none());
    assert_same_results(g, &back);
}

#[test]
fn reshape_target_proportional_to_the_batch_becomes_minus_one() {
    let g = reshape_batch_times_const();
    let f = fold_batch_shape_arithmetic(&g).expect("folded");
    assert_eq!(const_input(&f, "Reshape", 1), Some(vec![-1, 20]));
    assert_eq!(ops(&f), ["Reshape"], "the shape arithmetic is gone");
    let y = f.outputs[0];
    assert_eq!(
        f.values[y].shape.as_ref().unwrap()[0],
        g.values[g.outputs[0]].shape.as_ref().unwrap()[0]
    );
    assert_same_results(&g, &f);
    assert_written_without_shape_ops(&g);
}

#[test]
fn reshape_target_without_the_batch_becomes_its_constant() {
    let g = reshape_batch_free();
    let f = fold_batch_shape_arithmetic(&g).expect("folded");
    assert_eq!(const_input(&f, "Reshape", 1), Some(vec![-1, 5]));
    assert_eq!(ops(&f), ["Reshape"]);
    assert_same_results(&g, &f);
}

#[test]
fn reshape_target_with_another_dynamic_dim_is_left_alone() {
    // Bound to 1 when the batch varies, T would look constant: nothing is folded.
    assert!(fold_batch_shape_arithmetic(&reshape_other_dynamic_dim()).is_none());
}

#[test]
fn reshape_target_with_two_entries_growing_with_the_batch_is_left_alone() {
    let g = reshape_two_entries_vary();
    assert!(fold_batch_shape_arithmetic(&g).is_none());
}

#[test]
fn batch_sized_fill_broadcast_back_becomes_batch_one() {
    let g = fill_state("none");
    let f = fold_batch_shape_arithmetic(&g).expect("folded");
    assert_eq!(const_input(&f, "Fill", 0), Some(vec![1, 3]));
    assert!(!ops(&f).contains(&"Shape"));
    // The state and what is computed from it alone are one row; the output keeps
    // the batch.
    let by_name = |n: &str| f.values[f.find_value(n).unwrap()].shape.clone().unwrap();
    assert_eq!(by_name("h0"), [Dim::Fixed(1), Dim::Fixed(3)]);
    assert_eq!(by_name("r"), [Dim::Fixed(1), Dim::Fixed(3)]);
    assert!(by_name("y")[0].fixed().is_none());
    assert_same_results(&g, &f);
    assert_written_without_shape_ops(&g);
}

#[test]
fn batch_sized_fill_reduced_over_the_batch_is_left_alone() {
    // The sum over the batch of the state is N * 0.25: one row would give 0.25.
    assert!(fold_batch_shape_arithmetic(&fill_state("batch_sum")).is_none());
}

#[test]
fn batch_sized_fill_that_is_an_output_is_left_alone() {
    assert!(fold_batch_shape_arithmetic(&fill_state("output")).is_none());
}

// ---------------------------------------------------------------------------------
// ONNX Expand with a shape computed at run time (any ONNX file may hold one).

/// A batch-sized Fill that must stay (it is summed over the batch) is written as a
/// run-time Expand; the .onnx reads back and gives the original's results.
#[test]
fn onnx_run_time_expand_of_a_scalar_reads_back_as_fill() {
    let g = fill_state("batch_sum");
    let onnx = edgeopt_onnx::export(&g).unwrap();
    let back = edgeopt_onnx::import(&onnx).expect("a run-time Expand imports");
    assert!(ops(&back).contains(&"Fill"), "{:?}", ops(&back));
    assert_same_results(&g, &back);
}

mod onnx_expand {
    use edgeopt_ir::{Tensor, TensorData};
    use edgeopt_onnx::proto::{
        tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
        TensorShapeProto, TypeProto, ValueInfoProto,
    };
    use prost::Message;

    /// `dims`: Some(d) fixed, None the symbolic batch.
    fn vi(name: &str, elem: i32, dims: &[Option<i64>]) -> ValueInfoProto {
        use tensor_shape_proto::{dimension::Value, Dimension};
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Some(k) => Value::DimValue(*k),
                    None => Value::DimParam("N".into()),
                }),
                ..Default::default()
            })
            .collect();
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(elem),
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(op: &str, ins: &[&str], out: &str) -> NodeProto {
        NodeProto {
            name: Some(format!("{op}_{out}")),
            op_type: Some(op.into()),
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            ..Default::default()
        }
    }

    /// z = Expand(x [N, 1, 3], shape) with the shape read from y [N, 4, 3] at run
    /// time (`Shape(y)`, or `Cast(Shape(y))` to `shape_type`).
    fn model(shape_type: i32) -> Vec<u8> {
        let mut nodes = vec![node("Shape", &["y"], "s64")];
        let s = if shape_type == 7 {
            "s64"
        } else {
            let mut c = node("Cast", &["s64"], "s");
            c.attribute.push(edgeopt_onnx::proto::AttributeProto {
                name: Some("to".into()),
                r#type: Some(2),
                i: Some(shape_type as i64),
                ..Default::default()
            });
            nodes.push(c);
            "s"
        };
        nodes.push(node("Expand", &["x", s], "z"));
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            graph: Some(GraphProto {
                name: Some("g".into()),
                node: nodes,
                input: vec![
                    vi("x", 1, &[None, Some(1), Some(3)]),
                    vi("y", 1, &[None, Some(4), Some(3)]),
                ],
                output: vec![vi("z", 1, &[None, Some(4), Some(3)])],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn multi_element_run_time_expand_broadcasts_like_onnx() {
        let g = edgeopt_onnx::import(&model(7)).expect("imports");
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
        assert!(ops.contains(&"Where"), "{ops:?}");
        for n in [1usize, 3] {
            let xv: Vec<f32> = (0..n * 3).map(|i| i as f32 - 2.5).collect();
            let x = Tensor::from_f32(vec![n, 1, 3], xv.clone()).unwrap();
            let y = Tensor::new(vec![n, 4, 3], TensorData::F32(vec![0.0; n * 12])).unwrap();
            let z = edgeopt_runtime::run(&g, &[x, y]).expect("runs");
            assert_eq!(z[0].shape, [n, 4, 3]);
            let want: Vec<f32> = (0..n * 12).map(|i| xv[(i / 12) * 3 + i % 3]).collect();
            assert_eq!(z[0].to_f32_vec(), want);
        }
    }

    #[test]
    fn run_time_expand_with_an_int32_shape_is_refused_clearly() {
        let err = edgeopt_onnx::import(&model(6)).expect_err("int32 shape");
        assert!(format!("{err:#}").contains("must be int64"), "{err:#}");
    }
}
