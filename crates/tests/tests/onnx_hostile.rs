//! Hostile input for the ONNX importer: thousands of seeded mutations of real model
//! files (the MLPerf Tiny ONNX models and a few backend node-test models). Every import
//! must end in `Ok` or `Err` - never a panic - and must not allocate beyond a cap tied
//! to the file size; whatever imports must survive `Graph::validate` (Ok or Err), and
//! one mutant in three that imports also goes through export to both formats, C
//! generation and quantization without a panic (`edgeopt_tests::hostile`).
//!
//! Mutations: bit flips; byte overwrites (0x00, 0xFF, random); truncation; deleted or
//! duplicated chunks; protobuf varints (lengths, dims, enum values, attribute ints)
//! replaced by huge or random values; and structural edits of the decoded model
//! (absurd dims and dtypes on initializers and inputs, wrong attributes, renamed or
//! dangling inputs, duplicate outputs, swapped or removed nodes, bad opsets).
//!
//! A counting global allocator records, while each import runs, the peak of live bytes
//! above the level before the import and the largest single allocation.

use edgeopt_onnx::proto::{tensor_shape_proto, type_proto, AttributeProto, ModelProto};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
    LARGEST.fetch_max(n, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged (so
// `System`'s guarantees hold) and only updates atomic counters besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: `l` comes from our caller, who upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`: the caller's contract is `System`'s.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by `System` (every allocation here is) with layout `l`,
        // as the caller of `dealloc` guarantees.
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: `p` was allocated by `System` with layout `l` and `new` is valid, as the
        // caller of `realloc` guarantees.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
                LARGEST.fetch_max(new, Relaxed);
            } else {
                CURRENT.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Mutations of each MLPerf Tiny model (6 models: 30,000 in all).
const PER_MODEL: usize = 5000;
/// Mutations of each node-test model.
const PER_NODE_TEST: usize = 500;
/// One mutant in this many, when it imports, also goes through export, C generation
/// and quantization.
const DOWNSTREAM_EVERY: usize = 3;
const NODE_TESTS: &[&str] = &[
    "test_basic_conv_with_padding",
    "test_convtranspose_3d",
    "test_qlinearconv",
    "test_dequantizelinear_int4",
    "test_quantizelinear_blocked_asymmetric",
    "test_gemm_all_attributes",
    "test_softmax_axis_1_expanded",
    "test_maxpool_3d_dilations",
    "test_clip_default_int8_min_expanded",
    "test_gather_negative_indices",
];

/// Cap on the memory one import may use: 16 bytes per byte of file, plus 16 MiB.
fn cap(len: usize) -> usize {
    16 * len + (16 << 20)
}

/// Positions of the varints of a protobuf message, found by walking its wire format
/// (and every nested length-delimited payload that parses as a message).
fn scan_varints(
    buf: &[u8],
    start: usize,
    end: usize,
    depth: usize,
    out: &mut Vec<(usize, usize)>,
) -> bool {
    fn varint(buf: &[u8], mut p: usize, end: usize) -> Option<(u64, usize)> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(p).filter(|_| p < end)?;
            p += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some((v, p));
            }
        }
        None
    }
    let mut p = start;
    let mut found = Vec::new();
    while p < end {
        let Some((tag, q)) = varint(buf, p, end) else {
            return false;
        };
        if tag >> 3 == 0 {
            return false;
        }
        p = q;
        match tag & 7 {
            0 => {
                let Some((_, q)) = varint(buf, p, end) else {
                    return false;
                };
                found.push((p, q - p));
                p = q;
            }
            1 => p += 8,
            5 => p += 4,
            2 => {
                let Some((len, q)) = varint(buf, p, end) else {
                    return false;
                };
                found.push((p, q - p));
                let Some(e) = q.checked_add(len as usize).filter(|&e| e <= end) else {
                    return false;
                };
                if depth < 12 {
                    let mut inner = Vec::new();
                    if scan_varints(buf, q, e, depth + 1, &mut inner) {
                        found.extend(inner);
                    }
                }
                p = e;
            }
            _ => return false,
        }
    }
    out.extend(found);
    p == end
}

fn encode_varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn huge(rng: &mut StdRng) -> i64 {
    *[
        i64::MAX,
        i64::MIN,
        -1,
        0,
        1 << 31,
        (1 << 31) - 1,
        1 << 40,
        1 << 62,
        u32::MAX as i64,
        rng.gen::<i64>(),
        rng.gen_range(-10..100_000),
    ]
    .get(rng.gen_range(0..11))
    .unwrap_or(&0)
}

const OPS: &[&str] = &[
    "Conv",
    "MatMul",
    "Gemm",
    "Add",
    "Reshape",
    "Transpose",
    "Softmax",
    "Pad",
    "Resize",
    "Concat",
    "Gather",
    "Slice",
    "Shape",
    "ConstantOfShape",
    "Range",
    "Expand",
    "Constant",
    "Cast",
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "MaxPool",
    "AveragePool",
    "Squeeze",
    "Unsqueeze",
    "ReduceMean",
    "Clip",
    "Where",
    "BatchNormalization",
    "NoSuchOp",
];

/// Edits the decoded model; returns a description.
fn structural(rng: &mut StdRng, m: &mut ModelProto) -> String {
    let Some(g) = m.graph.as_mut() else {
        return "no graph".into();
    };
    match rng.gen_range(0..14) {
        0 if !g.initializer.is_empty() => {
            let i = rng.gen_range(0..g.initializer.len());
            let t = &mut g.initializer[i];
            let v = huge(rng);
            if t.dims.is_empty() || rng.gen_bool(0.3) {
                t.dims.push(v);
            } else {
                let k = rng.gen_range(0..t.dims.len());
                t.dims[k] = v;
            }
            format!("initializer {i} dims -> {:?}", t.dims)
        }
        1 if !g.initializer.is_empty() => {
            let i = rng.gen_range(0..g.initializer.len());
            let d = rng.gen_range(0..30);
            g.initializer[i].data_type = Some(d);
            format!("initializer {i} data_type -> {d}")
        }
        2 if !g.initializer.is_empty() => {
            let i = rng.gen_range(0..g.initializer.len());
            let t = &mut g.initializer[i];
            if let Some(r) = t.raw_data.as_mut() {
                let n = rng.gen_range(0..=r.len());
                r.truncate(n);
            }
            if rng.gen_bool(0.3) {
                t.data_location = Some(1);
            }
            if rng.gen_bool(0.3) {
                t.raw_data = None;
                t.int64_data = vec![huge(rng); rng.gen_range(0..8)];
            }
            format!("initializer {i} data cut")
        }
        3 if !g.node.is_empty() => {
            let i = rng.gen_range(0..g.node.len());
            let op = OPS[rng.gen_range(0..OPS.len())];
            g.node[i].op_type = Some(op.into());
            format!("node {i} op_type -> {op}")
        }
        4 if !g.node.is_empty() => {
            let i = rng.gen_range(0..g.node.len());
            let names: Vec<String> = g.node.iter().flat_map(|n| n.output.clone()).collect();
            let n = &mut g.node[i];
            let pick = match rng.gen_range(0..4) {
                0 => String::new(),
                1 => "nowhere".into(),
                _ => names
                    .get(rng.gen_range(0..names.len().max(1)))
                    .cloned()
                    .unwrap_or_default(),
            };
            if n.input.is_empty() || rng.gen_bool(0.2) {
                n.input.push(pick.clone());
            } else {
                let k = rng.gen_range(0..n.input.len());
                n.input[k] = pick.clone();
            }
            format!("node {i} input -> '{pick}'")
        }
        5 if !g.node.is_empty() => {
            let i = rng.gen_range(0..g.node.len());
            let n = &mut g.node[i];
            let v = huge(rng);
            if n.attribute.is_empty() || rng.gen_bool(0.3) {
                let name = [
                    "axis",
                    "perm",
                    "pads",
                    "kernel_shape",
                    "strides",
                    "group",
                    "to",
                    "axes",
                    "dilations",
                ][rng.gen_range(0..9)];
                n.attribute.push(AttributeProto {
                    name: Some(name.into()),
                    r#type: Some(rng.gen_range(0..12)),
                    i: Some(v),
                    ints: vec![v; rng.gen_range(0..6)],
                    ..Default::default()
                });
                format!("node {i} new attribute {name} = {v}")
            } else {
                let k = rng.gen_range(0..n.attribute.len());
                let a = &mut n.attribute[k];
                match rng.gen_range(0..3) {
                    0 => a.i = Some(v),
                    1 => {
                        if a.ints.is_empty() {
                            a.ints.push(v)
                        } else {
                            let j = rng.gen_range(0..a.ints.len());
                            a.ints[j] = v;
                        }
                    }
                    _ => a.r#type = Some(rng.gen_range(0..15)),
                }
                format!("node {i} attribute {:?} -> {v}", a.name)
            }
        }
        6 if !g.input.is_empty() => {
            let i = rng.gen_range(0..g.input.len());
            let v = huge(rng);
            if let Some(type_proto::Value::TensorType(tt)) =
                g.input[i].r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                if rng.gen_bool(0.3) {
                    tt.elem_type = Some(rng.gen_range(0..30));
                } else if let Some(s) = tt.shape.as_mut() {
                    let d = tensor_shape_proto::Dimension {
                        value: Some(tensor_shape_proto::dimension::Value::DimValue(v)),
                        ..Default::default()
                    };
                    if s.dim.is_empty() {
                        s.dim.push(d);
                    } else {
                        let k = rng.gen_range(0..s.dim.len());
                        s.dim[k] = d;
                    }
                }
            }
            format!("graph input {i} type -> {v}")
        }
        7 => {
            let v = rng.gen_range(-2..40);
            for o in &mut m.opset_import {
                o.version = Some(v);
            }
            format!("opset -> {v}")
        }
        8 if g.node.len() >= 2 => {
            let (i, j) = (
                rng.gen_range(0..g.node.len()),
                rng.gen_range(0..g.node.len()),
            );
            let o = g.node[j].output.first().cloned().unwrap_or_default();
            if let Some(x) = g.node[i].output.first_mut() {
                *x = o.clone();
            }
            format!("node {i} output -> '{o}' (also produced by node {j})")
        }
        9 if g.node.len() >= 2 => {
            let (i, j) = (
                rng.gen_range(0..g.node.len()),
                rng.gen_range(0..g.node.len()),
            );
            g.node.swap(i, j);
            format!("nodes {i} and {j} swapped")
        }
        10 if !g.node.is_empty() => {
            let i = rng.gen_range(0..g.node.len());
            g.node.remove(i);
            format!("node {i} removed")
        }
        11 if !g.initializer.is_empty() => {
            let i = rng.gen_range(0..g.initializer.len());
            g.initializer.remove(i);
            format!("initializer {i} removed")
        }
        12 if !g.node.is_empty() => {
            // A cycle: a node reads the output of a later one (or its own).
            let i = rng.gen_range(0..g.node.len());
            let j = rng.gen_range(i..g.node.len());
            let o = g.node[j].output.first().cloned().unwrap_or_default();
            g.node[i].input.insert(0, o.clone());
            format!("node {i} reads '{o}' of node {j}")
        }
        _ => {
            // Make a big Constant/shape chain request.
            let v = huge(rng);
            g.node.insert(
                0,
                edgeopt_onnx::proto::NodeProto {
                    op_type: Some("ConstantOfShape".into()),
                    input: vec![g
                        .initializer
                        .first()
                        .and_then(|t| t.name.clone())
                        .unwrap_or_default()],
                    output: vec![format!("big{v}")],
                    ..Default::default()
                },
            );
            format!("ConstantOfShape inserted ({v})")
        }
    }
}

/// One seeded mutation of `base`: (description, bytes).
fn mutate(
    rng: &mut StdRng,
    base: &[u8],
    model: &ModelProto,
    varints: &[(usize, usize)],
) -> (String, Vec<u8>) {
    let mut b = base.to_vec();
    let n = b.len().max(1);
    match rng.gen_range(0..7) {
        0 => {
            let k = rng.gen_range(1..=8);
            for _ in 0..k {
                let p = rng.gen_range(0..n);
                if let Some(x) = b.get_mut(p) {
                    *x ^= 1 << rng.gen_range(0..8);
                }
            }
            (format!("{k} bit flips"), b)
        }
        1 => {
            let k = rng.gen_range(1..=16);
            let val = rng.gen_range(0..3);
            for _ in 0..k {
                let p = rng.gen_range(0..n);
                if let Some(x) = b.get_mut(p) {
                    *x = match val {
                        0 => 0,
                        1 => 0xff,
                        _ => rng.gen(),
                    };
                }
            }
            (format!("{k} bytes overwritten ({val})"), b)
        }
        2 => {
            let p = rng.gen_range(0..n);
            b.truncate(p);
            (format!("truncated at {p}"), b)
        }
        3 | 4 if !varints.is_empty() => {
            let (p, len) = varints[rng.gen_range(0..varints.len())];
            let v = huge(rng) as u64;
            let enc = encode_varint(v);
            b.splice(p..p + len, enc);
            (format!("varint at {p} -> {v}"), b)
        }
        5 => {
            let p = rng.gen_range(0..n);
            let len = rng.gen_range(1..=64).min(n - p);
            if rng.gen_bool(0.5) {
                b.drain(p..p + len);
                (format!("deleted {len} bytes at {p}"), b)
            } else {
                let chunk: Vec<u8> = b[p..p + len].to_vec();
                b.splice(p..p, chunk);
                (format!("duplicated {len} bytes at {p}"), b)
            }
        }
        _ => {
            let mut m = model.clone();
            let d = structural(rng, &mut m);
            (format!("structural: {d}"), m.encode_to_vec())
        }
    }
}

struct Stats {
    runs: usize,
    ok: usize,
    worst_ratio: f64,
    worst: String,
    largest: usize,
    /// Imported mutants taken through export, compile and quantize.
    downstream: usize,
}

/// Imports one mutated file; returns a failure description, if any.
/// With `downstream`, a mutant that imports also goes through export, C generation and
/// quantization (`edgeopt_tests::hostile`); a panic there is a failure too.
fn attempt(bytes: &[u8], desc: &str, stats: &mut Stats, downstream: bool) -> Option<String> {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    LARGEST.store(0, Relaxed);
    let r = std::panic::catch_unwind(|| {
        let g = edgeopt_onnx::import(bytes);
        if let Ok(g) = &g {
            let _ = g.validate();
        }
        g
    });
    // The downstream stages run outside the import's allocation accounting (they
    // legitimately allocate activations and packed weights).
    let r = r.map(|g| match g {
        Ok(g) if downstream && g.validate().is_ok() => {
            stats.downstream += 1;
            edgeopt_tests::hostile::downstream(&g, bytes.len() as u64).map(|_| true)
        }
        g => Ok(g.is_ok()),
    });
    let r = match r {
        Ok(Err(e)) => return Some(format!("{desc}: {e}")),
        Ok(Ok(ok)) => Ok(ok),
        Err(p) => Err(p),
    };
    let peak = PEAK.load(Relaxed).saturating_sub(base);
    let largest = LARGEST.load(Relaxed);
    stats.runs += 1;
    stats.largest = stats.largest.max(largest);
    let ratio = peak as f64 / cap(bytes.len()) as f64;
    if ratio > stats.worst_ratio {
        stats.worst_ratio = ratio;
        stats.worst = desc.to_string();
    }
    match r {
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Some(format!("{desc}: panicked: {msg}"))
        }
        Ok(ok) => {
            stats.ok += ok as usize;
            (peak > cap(bytes.len())).then(|| {
                format!(
                    "{desc}: used {peak} bytes (cap {} for {} bytes)",
                    cap(bytes.len()),
                    bytes.len()
                )
            })
        }
    }
}

#[test]
fn mutated_onnx_files_never_panic_or_overallocate() {
    let Some(data) = edgeopt_testkit::data_dir() else {
        return;
    };
    let mut files: Vec<(PathBuf, usize)> =
        std::fs::read_dir(data.join("mlperf-tiny/onnx/tf2onnx_from_tflite"))
            .unwrap()
            .map(|e| (e.unwrap().path(), PER_MODEL))
            .collect();
    files.sort();
    for t in NODE_TESTS {
        files.push((
            data.join("onnx-node-tests/node").join(t).join("model.onnx"),
            PER_NODE_TEST,
        ));
    }
    // Panics inside the importer (even ones it catches itself) are failures too.
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {
        PANICS.fetch_add(1, Relaxed);
    }));
    let mut failures = Vec::new();
    let mut total = 0;
    for (path, count) in &files {
        let base = std::fs::read(path).unwrap();
        let model = ModelProto::decode(base.as_slice()).unwrap();
        let mut varints = Vec::new();
        assert!(
            scan_varints(&base, 0, base.len(), 0, &mut varints),
            "{}: not a protobuf",
            path.display()
        );
        let name = path
            .strip_prefix(&data)
            .unwrap_or(path)
            .display()
            .to_string();
        let mut stats = Stats {
            runs: 0,
            ok: 0,
            worst_ratio: 0.0,
            worst: String::new(),
            largest: 0,
            downstream: 0,
        };
        // The unmutated file imports.
        let orig = attempt(&base, "original", &mut stats, true);
        if orig.is_some() || stats.ok != 1 {
            std::panic::set_hook(hook);
            panic!("{name}: the original does not import: {orig:?}");
        }
        let mut rng = StdRng::seed_from_u64(0x0dd5eed ^ base.len() as u64);
        for k in 0..*count {
            let (desc, bytes) = mutate(&mut rng, &base, &model, &varints);
            let before = PANICS.load(Relaxed);
            if let Some(f) = attempt(&bytes, &desc, &mut stats, k % DOWNSTREAM_EVERY == 0) {
                failures.push(format!("{name} #{k} {f}"));
            } else if PANICS.load(Relaxed) != before {
                failures.push(format!(
                    "{name} #{k} {desc}: a panic was caught inside the importer"
                ));
            }
        }
        total += stats.runs - 1;
        println!(
            "{name}: {} mutations, {} imported Ok ({} through export/compile/quantize), peak memory <= {:.1}% of the cap ({}), largest allocation {} bytes (file {} bytes)",
            stats.runs - 1,
            stats.ok - 1,
            stats.downstream,
            100.0 * stats.worst_ratio,
            stats.worst,
            stats.largest,
            base.len()
        );
    }
    std::panic::set_hook(hook);
    println!("{total} mutations in all, {} failures", failures.len());
    assert!(total >= 2000);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
