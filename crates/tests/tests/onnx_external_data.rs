//! ONNX external data (`data_location = EXTERNAL`, PyTorch's dynamo exporter default):
//! a hand-built model whose weight lives in `<model>.onnx.data` imports and runs, and
//! hostile locations / offsets / lengths are refused with a clear error, never a panic
//! and never a read outside the model's folder. The real dynamo exports of the
//! exporter corpus must import to the same constants as their inline twins.

use edgeopt_ir::Tensor;
use edgeopt_onnx::proto::{
    tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use prost::Message;
use std::path::{Path, PathBuf};

const W: [f32; 4] = [1.5, -2.0, 0.25, 8.0];

fn vi(name: &str) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: vec![Dimension {
                        value: Some(Value::DimValue(4)),
                        ..Default::default()
                    }],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// y = x + w, with w (float[4]) described by the given external_data entries.
fn model(entries: &[(&str, &str)]) -> Vec<u8> {
    let w = TensorProto {
        name: Some("w".into()),
        dims: vec![4],
        data_type: Some(1),
        data_location: Some(1),
        external_data: entries
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(18),
        }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: vec![NodeProto {
                name: Some("add".into()),
                op_type: Some("Add".into()),
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer: vec![w],
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A folder `model/` holding `m.onnx` (with the given entries) and `m.onnx.data`
/// (16 junk bytes, then W), plus `secret.data` next to the folder (outside it).
fn setup(name: &str, entries: &[(&str, &str)]) -> PathBuf {
    let root = edgeopt_testkit::scratch_dir(&format!("onnx_external_data/{name}"));
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    let mut data = vec![0xAAu8; 16];
    data.extend(W.iter().flat_map(|x| x.to_le_bytes()));
    std::fs::write(dir.join("m.onnx.data"), &data).unwrap();
    std::fs::write(root.join("secret.data"), &data).unwrap();
    let path = dir.join("m.onnx");
    std::fs::write(&path, model(entries)).unwrap();
    path
}

fn import_err(path: &Path) -> String {
    match edgeopt_onnx::import_file(path) {
        Ok(_) => panic!("{}: imported, expected an error", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn external_weight_imports_and_runs() {
    let path = setup(
        "ok",
        &[
            ("location", "m.onnx.data"),
            ("offset", "16"),
            ("length", "16"),
        ],
    );
    let g = edgeopt_onnx::import_file(&path).expect("import");
    let x = Tensor::from_f32(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let y = edgeopt_runtime::run(&g, &[x]).expect("run");
    assert_eq!(y[0].to_f32_vec(), vec![2.5, 0.0, 3.25, 12.0]);
    // Without offset/length the data starts at 0 and is the tensor's size.
    let path = setup("default_offset", &[("location", "./m.onnx.data")]);
    let g = edgeopt_onnx::import_file(&path).expect("import");
    let w = g.values.iter().find_map(|v| v.data.as_ref()).unwrap();
    assert_eq!(w.shape, vec![4]);
    // A model found through a relative path resolves its data next to it.
    let rel = pathdiff(&path);
    if let Some(rel) = rel {
        edgeopt_onnx::import_file(rel).expect("import by relative path");
    }
}

/// The weight given by a Constant node (whose tensor is external) instead of an
/// initializer.
#[test]
fn external_constant_node_imports() {
    let path = setup("constant", &[("location", "m.onnx.data"), ("offset", "16")]);
    let mut m = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let w = g.initializer.remove(0);
    g.node.insert(
        0,
        NodeProto {
            name: Some("c".into()),
            op_type: Some("Constant".into()),
            output: vec!["w".into()],
            attribute: vec![AttributeProto {
                name: Some("value".into()),
                r#type: Some(4),
                t: Some(w),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let g = edgeopt_onnx::import_file(&path).expect("import");
    let x = Tensor::from_f32(vec![4], vec![0.0; 4]).unwrap();
    let y = edgeopt_runtime::run(&g, &[x]).expect("run");
    assert_eq!(y[0].to_f32_vec(), W.to_vec());
}

/// `path` relative to the current directory when it lies below it.
fn pathdiff(path: &Path) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    path.strip_prefix(&cwd).ok().map(Path::to_path_buf)
}

#[test]
fn hostile_external_data_is_refused() {
    // (case, external_data entries, what the error must say)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("escape", &[("location", "../secret.data")], "'..'"),
        (
            "escape_inner",
            &[("location", "sub/../../secret.data")],
            "'..'",
        ),
        ("absolute", &[("location", "/etc/passwd")], "absolute"),
        ("backslash", &[("location", "\\etc\\passwd")], "absolute"),
        ("empty", &[("location", "")], "empty"),
        ("no_location", &[("offset", "0")], "location"),
        ("missing", &[("location", "nope.data")], "nope.data"),
        ("directory", &[("location", ".")], "not a regular file"),
        (
            "offset_beyond",
            &[("location", "m.onnx.data"), ("offset", "1000")],
            "beyond the end",
        ),
        (
            "tail_short",
            &[("location", "m.onnx.data"), ("offset", "20")],
            "beyond the end",
        ),
        (
            "offset_overflow",
            &[
                ("location", "m.onnx.data"),
                ("offset", "18446744073709551615"),
            ],
            "overflows",
        ),
        (
            "offset_text",
            &[("location", "m.onnx.data"), ("offset", "-4")],
            "not a byte count",
        ),
        (
            "length_short",
            &[("location", "m.onnx.data"), ("length", "8")],
            "does not match",
        ),
        (
            "length_huge",
            &[("location", "m.onnx.data"), ("length", "1099511627776")],
            "does not match",
        ),
        (
            "twice",
            &[("location", "m.onnx.data"), ("location", "../secret.data")],
            "twice",
        ),
    ];
    let mut failures = Vec::new();
    for (name, entries, want) in cases {
        let path = setup(name, entries);
        let e = import_err(&path);
        println!("{name}: {e}");
        if !e.contains(want) || !e.contains("'w'") {
            failures.push(format!("{name}: expected '{want}' in: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[cfg(unix)]
#[test]
fn symlink_out_of_the_folder_is_refused() {
    let path = setup("symlink", &[("location", "link.data")]);
    let dir = path.parent().unwrap();
    std::os::unix::fs::symlink(
        dir.parent().unwrap().join("secret.data"),
        dir.join("link.data"),
    )
    .unwrap();
    let e = import_err(&path);
    assert!(e.contains("outside the model's folder"), "{e}");
    // A symlink that stays inside the folder is fine.
    let path = setup(
        "symlink_inside",
        &[("location", "link.data"), ("offset", "16")],
    );
    let dir = path.parent().unwrap();
    std::os::unix::fs::symlink(dir.join("m.onnx.data"), dir.join("link.data")).unwrap();
    edgeopt_onnx::import_file(&path).expect("symlink inside the folder");
}

#[test]
fn external_data_from_bytes_is_a_clear_error() {
    let bytes = model(&[("location", "m.onnx.data")]);
    let e = edgeopt_onnx::import(&bytes).unwrap_err().to_string();
    assert!(
        e.contains("'w'") && e.contains("import the model from its file"),
        "{e}"
    );
}

/// Every dynamo export with external data in the corpus imports to the same
/// constants as its inline twin.
#[test]
fn corpus_external_data_matches_inline() {
    let Some(data) = edgeopt_testkit::data_dir() else {
        return;
    };
    let dir = data.join("exporters/onnx");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        println!("skipped: {} not found", dir.display());
        return;
    };
    let mut n = 0;
    let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in names {
        let f = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = f.strip_suffix(".onnx.data") else {
            continue;
        };
        let ext = dir.join(format!("{stem}.onnx"));
        let inline = dir.join(format!("{stem}_inline.onnx"));
        if !inline.exists() {
            continue;
        }
        let bytes = std::fs::read(&ext).unwrap();
        let e = edgeopt_onnx::import(&bytes).unwrap_err().to_string();
        assert!(e.contains("external file"), "{f}: {e}");
        let consts = |p: &Path| -> Result<Vec<(String, Tensor)>, String> {
            let m = ModelProto::decode(std::fs::read(p).unwrap().as_slice()).unwrap();
            let d = p.parent().unwrap();
            let mut v = m
                .graph
                .unwrap()
                .initializer
                .iter()
                .map(|t| {
                    let x = edgeopt_onnx::tensor_from_proto_in(t, Some(d));
                    Ok((
                        t.name.clone().unwrap_or_default(),
                        x.map_err(|e| e.to_string())?,
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            v.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(v)
        };
        let (a, b) = (consts(&ext).unwrap(), consts(&inline).unwrap());
        assert_eq!(a, b, "{stem}: external and inline initializers differ");
        n += 1;
    }
    println!("{n} external-data models match their inline twins");
    assert!(
        n >= 5,
        "only {n} external-data models found in {}",
        dir.display()
    );
}
