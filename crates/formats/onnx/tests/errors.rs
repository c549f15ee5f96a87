//! Importer behaviour on small hand-built models: error messages, folding, opset forms.

use edgeopt_ir::{DType, Op, Tensor, TensorData};
use edgeopt_onnx::proto::{
    tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use edgeopt_onnx::tensor_to_proto;
use prost::Message;

fn vi(name: &str, elem: i32, dims: &[i64]) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(if d < 0 {
                                Value::DimParam("N".into())
                            } else {
                                Value::DimValue(d)
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(
    name: &str,
    op: &str,
    ins: &[&str],
    outs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(7),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(2),
        i: Some(v),
        ..Default::default()
    }
}

struct M {
    opset: i64,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<(&'static str, Tensor)>,
}

impl M {
    fn bytes(&self) -> Vec<u8> {
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(GraphProto {
                node: self.nodes.clone(),
                name: Some("g".into()),
                initializer: self
                    .inits
                    .iter()
                    .map(|(n, t)| tensor_to_proto(n, t))
                    .collect(),
                input: self.inputs.clone(),
                output: self.outputs.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn import(&self) -> Result<edgeopt_ir::Graph, String> {
        edgeopt_onnx::import(&self.bytes()).map_err(|e| e.to_string())
    }
}

const F32: i32 = 1;

#[test]
fn unsupported_ops_are_listed_in_one_error() {
    let m = M {
        opset: 13,
        nodes: vec![
            node("a", "NonMaxSuppression", &["x"], &["y1"], vec![]),
            node("b", "Relu", &["y1"], &["y2"], vec![]),
            node("c", "Einsum", &["y2"], &["y"], vec![]),
            node("d", "FusedConv", &["x"], &["z"], vec![]),
        ],
        inputs: vec![vi("x", F32, &[1, 4])],
        outputs: vec![vi("y", F32, &[1, 4])],
        inits: vec![],
    };
    let mut m = m;
    m.nodes[3].domain = Some("com.microsoft".into());
    let e = m.import().unwrap_err();
    assert!(
        e.contains("NonMaxSuppression")
            && e.contains("Einsum")
            && e.contains("com.microsoft.FusedConv"),
        "{e}"
    );
}

#[test]
fn errors_name_the_node_and_the_problem() {
    let w = Tensor::from_f32(vec![1, 1, 1, 1], vec![1.0]).unwrap();
    let m = M {
        opset: 13,
        nodes: vec![node(
            "conv1",
            "Conv",
            &["x", "w"],
            &["y"],
            vec![ints("strides", &[0, 1])],
        )],
        inputs: vec![vi("x", F32, &[1, 1, 4, 4])],
        outputs: vec![vi("y", F32, &[1, 1, 4, 4])],
        inits: vec![("w", w)],
    };
    let e = m.import().unwrap_err();
    assert!(e.contains("'conv1' (Conv)") && e.contains("strides"), "{e}");

    // A dangling input.
    let m = M {
        opset: 13,
        nodes: vec![node("r", "Relu", &["nowhere"], &["y"], vec![])],
        inputs: vec![vi("x", F32, &[1])],
        outputs: vec![vi("y", F32, &[1])],
        inits: vec![],
    };
    let e = m.import().unwrap_err();
    assert!(e.contains("'r' (Relu)") && e.contains("nowhere"), "{e}");

    // A cycle.
    let m = M {
        opset: 13,
        nodes: vec![
            node("p", "Add", &["x", "q_out"], &["p_out"], vec![]),
            node("q", "Relu", &["p_out"], &["q_out"], vec![]),
        ],
        inputs: vec![vi("x", F32, &[1])],
        outputs: vec![vi("q_out", F32, &[1])],
        inits: vec![],
    };
    assert!(m.import().unwrap_err().contains("cycle"));

    // Too-large folded constants are refused before they are allocated.
    let shape = Tensor::from_i64(vec![3], vec![1 << 20, 1 << 20, 1 << 20]).unwrap();
    let m = M {
        opset: 13,
        nodes: vec![node("big", "ConstantOfShape", &["s"], &["y"], vec![])],
        inputs: vec![],
        outputs: vec![vi("y", F32, &[])],
        inits: vec![("s", shape)],
    };
    let e = m.import().unwrap_err();
    assert!(
        e.contains("'big' (ConstantOfShape)") && e.contains("too large"),
        "{e}"
    );
}

#[test]
fn external_data_is_a_clear_error() {
    let m = M {
        opset: 13,
        nodes: vec![node("a", "Add", &["x", "w"], &["y"], vec![])],
        inputs: vec![vi("x", F32, &[2])],
        outputs: vec![vi("y", F32, &[2])],
        inits: vec![],
    };
    let mut model = ModelProto::decode(m.bytes().as_slice()).unwrap();
    let mut t = tensor_to_proto("w", &Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
    t.raw_data = None;
    t.data_location = Some(1);
    model.graph.as_mut().unwrap().initializer.push(t);
    let e = edgeopt_onnx::import(&model.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(e.contains("'w'") && e.contains("external"), "{e}");
}

#[test]
fn softmax_before_opset_13_flattens() {
    // Axis 1 of a rank-3 input: flatten, softmax over the flattened rows, reshape back.
    let m = M {
        opset: 11,
        nodes: vec![node("sm", "Softmax", &["x"], &["y"], vec![int("axis", 1)])],
        inputs: vec![vi("x", F32, &[2, 3, 4])],
        outputs: vec![vi("y", F32, &[2, 3, 4])],
        inits: vec![],
    };
    let g = m.import().unwrap();
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
    assert_eq!(ops, ["Flatten", "Softmax", "Reshape"]);
    // The last axis needs no rewrite.
    let m = M {
        nodes: vec![node("sm", "Softmax", &["x"], &["y"], vec![int("axis", 2)])],
        ..m
    };
    let g = m.import().unwrap();
    assert_eq!(g.nodes.len(), 1);
    assert!(matches!(g.nodes[0].op, Op::Softmax { axis: -1, .. }));
}

#[test]
fn clip_bounds_stay_exact_for_integers() {
    let i8t = |v: i8| Tensor::new(vec![], TensorData::I8(vec![v])).unwrap();
    let m = M {
        opset: 13,
        nodes: vec![node("c", "Clip", &["x", "lo", "hi"], &["y"], vec![])],
        inputs: vec![vi("x", 3, &[4])],
        outputs: vec![vi("y", 3, &[4])],
        inits: vec![("lo", i8t(-128)), ("hi", i8t(5))],
    };
    let g = m.import().unwrap();
    // -128 is no bound for int8; 5 is exact in f32.
    assert_eq!(
        g.nodes[0].op,
        Op::Clip {
            min: None,
            max: Some(5.0)
        }
    );

    // An int32 bound f32 cannot hold exactly becomes an integer Max node.
    let i32t = |v: i32| Tensor::new(vec![], TensorData::I32(vec![v])).unwrap();
    let m = M {
        opset: 13,
        nodes: vec![node("c", "Clip", &["x", "lo"], &["y"], vec![])],
        inputs: vec![vi("x", 6, &[4])],
        outputs: vec![vi("y", 6, &[4])],
        inits: vec![("lo", i32t(16_777_217))],
    };
    let g = m.import().unwrap();
    assert_eq!(g.nodes.len(), 1);
    assert!(matches!(
        g.nodes[0].op,
        Op::Binary {
            kind: edgeopt_ir::BinaryKind::Max,
            ..
        }
    ));
    assert_eq!(g.values[g.outputs[0]].dtype, DType::I32);
}

#[test]
fn frozen_inputs_become_constants() {
    let m = M {
        opset: 13,
        nodes: vec![node("p", "Pad", &["x", "pads"], &["y"], vec![])],
        inputs: vec![vi("x", F32, &[-1, 3]), vi("pads", 7, &[4])],
        outputs: vec![vi("y", F32, &[-1, 5])],
        inits: vec![],
    };
    let bytes = m.bytes();
    assert!(edgeopt_onnx::import(&bytes)
        .unwrap_err()
        .to_string()
        .contains("pads"));
    assert_eq!(
        edgeopt_onnx::constant_operand_inputs(&bytes).unwrap(),
        vec![(1, "pads".to_string())]
    );
    let opts = edgeopt_onnx::ImportOptions {
        constant_inputs: vec![(
            "pads".into(),
            Tensor::from_i64(vec![4], vec![0, 1, 0, 1]).unwrap(),
        )],
        ..Default::default()
    };
    let g = edgeopt_onnx::import_with(&bytes, &opts).unwrap();
    assert_eq!(g.inputs.len(), 1);
    assert!(matches!(&g.nodes[0].op, Op::Pad { pads, .. } if pads == &[0, 1, 0, 1]));
}
