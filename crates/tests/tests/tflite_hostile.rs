//! Hostile input: the six MLPerf Tiny `.tflite` files mutated thousands of times
//! (bit flips, byte overwrites, truncation, and targeted corruption of flatbuffer
//! offsets, vtables, vector lengths, tensor dimensions, indices and quantization
//! fields). Every import must end in `Ok` or `Err`, never panic, and never allocate
//! more than a cap tied to the file size; whatever imports must pass
//! `Graph::validate` without panicking.
//!
//! A counting global allocator measures, per thread, the peak live bytes and the
//! largest single allocation during each import.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

// ----- counting allocator ---------------------------------------------------------

struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            LIVE.with(|l| {
                let v = l.get() + size as isize;
                l.set(v);
                PEAK.with(|p| p.set(p.get().max(v)));
            });
            LARGEST.with(|m| m.set(m.get().max(size)));
        }
    });
}

fn on_dealloc(size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            LIVE.with(|l| l.set(l.get() - size as isize));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a new block alive next to the old one (the worst case).
        on_alloc(new_size);
        let p = System.realloc(ptr, layout, new_size);
        on_dealloc(layout.size());
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` with this thread's allocations counted; returns (result, peak live
/// bytes, largest single allocation).
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    LARGEST.with(|m| m.set(0));
    TRACK.with(|t| t.set(true));
    let r = f();
    TRACK.with(|t| t.set(false));
    (
        r,
        PEAK.with(Cell::get).max(0) as usize,
        LARGEST.with(Cell::get),
    )
}

// ----- where the flatbuffer's structure lives -------------------------------------

/// Byte positions of structural fields of one valid model, found by walking its
/// flatbuffer with the TFLite schema's field layout.
#[derive(Default)]
struct Targets {
    /// u32 forward offsets (root, table fields, vector elements).
    offsets: Vec<usize>,
    /// i32 table-to-vtable offsets.
    soffsets: Vec<usize>,
    /// u16 vtable words (size, object size, field entries).
    vtable: Vec<usize>,
    /// u32 vector / string lengths.
    lengths: Vec<usize>,
    /// i32 tensor dimensions (shape and shape_signature elements).
    dims: Vec<usize>,
    /// i32/u32 indices and small scalars (tensor, buffer and opcode indices,
    /// quantized_dimension, version, option fields such as strides).
    ints: Vec<usize>,
    /// f32 quantization scales.
    floats: Vec<usize>,
    /// i64/u64 zero points and buffer offset/size.
    longs: Vec<usize>,
    /// u8 fields (tensor types, union tags, activation/padding enums, booleans).
    bytes: Vec<usize>,
}

struct Walker<'a> {
    b: &'a [u8],
    t: Targets,
}

impl Walker<'_> {
    fn u32(&self, p: usize) -> usize {
        u32::from_le_bytes(self.b[p..p + 4].try_into().unwrap()) as usize
    }
    fn u16(&self, p: usize) -> usize {
        u16::from_le_bytes(self.b[p..p + 2].try_into().unwrap()) as usize
    }
    fn deref(&mut self, p: usize) -> usize {
        self.t.offsets.push(p);
        p + self.u32(p)
    }
    /// Field positions of the table at `pos` (None = absent), recording its vtable.
    fn table(&mut self, pos: usize) -> Vec<Option<usize>> {
        self.t.soffsets.push(pos);
        let so = i32::from_le_bytes(self.b[pos..pos + 4].try_into().unwrap());
        let vt = (pos as i64 - so as i64) as usize;
        let vsize = self.u16(vt);
        let mut fields = Vec::new();
        for w in (0..vsize).step_by(2) {
            self.t.vtable.push(vt + w);
            if w >= 4 {
                let off = self.u16(vt + w);
                fields.push((off != 0).then_some(pos + off));
            }
        }
        fields
    }
    fn field(f: &[Option<usize>], i: usize) -> Option<usize> {
        f.get(i).copied().flatten()
    }
    /// A vector's element start positions (elements of `width` bytes).
    fn vector(&mut self, field: usize, width: usize) -> Vec<usize> {
        let v = self.deref(field);
        self.t.lengths.push(v);
        let n = self.u32(v);
        (0..n).map(|i| v + 4 + i * width).collect()
    }
    fn tables(&mut self, field: usize) -> Vec<usize> {
        let elems = self.vector(field, 4);
        elems.into_iter().map(|e| self.deref(e)).collect()
    }
    fn string(&mut self, field: usize) {
        let s = self.deref(field);
        self.t.lengths.push(s);
    }

    fn model(&mut self) {
        let root = self.deref(0);
        let f = self.table(root);
        if let Some(p) = Self::field(&f, 0) {
            self.t.ints.push(p); // version
        }
        if let Some(p) = Self::field(&f, 1) {
            for oc in self.tables(p) {
                let g = self.table(oc);
                if let Some(q) = Self::field(&g, 0) {
                    self.t.bytes.push(q); // deprecated_builtin_code
                }
                if let Some(q) = Self::field(&g, 1) {
                    self.string(q);
                }
                for i in [2, 3] {
                    if let Some(q) = Self::field(&g, i) {
                        self.t.ints.push(q); // version, builtin_code
                    }
                }
            }
        }
        if let Some(p) = Self::field(&f, 2) {
            for sg in self.tables(p) {
                self.subgraph(sg);
            }
        }
        if let Some(p) = Self::field(&f, 3) {
            self.string(p);
        }
        if let Some(p) = Self::field(&f, 4) {
            for buf in self.tables(p) {
                let g = self.table(buf);
                if let Some(q) = Self::field(&g, 0) {
                    self.vector(q, 1);
                }
                for i in [1, 2] {
                    if let Some(q) = Self::field(&g, i) {
                        self.t.longs.push(q);
                    }
                }
            }
        }
    }

    fn subgraph(&mut self, sg: usize) {
        let f = self.table(sg);
        if let Some(p) = Self::field(&f, 0) {
            for t in self.tables(p) {
                self.tensor(t);
            }
        }
        for i in [1, 2] {
            if let Some(p) = Self::field(&f, i) {
                let e = self.vector(p, 4);
                self.t.ints.extend(e);
            }
        }
        if let Some(p) = Self::field(&f, 3) {
            for op in self.tables(p) {
                self.operator(op);
            }
        }
        if let Some(p) = Self::field(&f, 4) {
            self.string(p);
        }
    }

    fn tensor(&mut self, t: usize) {
        let f = self.table(t);
        for i in [0, 7] {
            // shape, shape_signature
            if let Some(p) = Self::field(&f, i) {
                let e = self.vector(p, 4);
                self.t.dims.extend(e);
            }
        }
        for i in [1, 5, 8] {
            if let Some(p) = Self::field(&f, i) {
                self.t.bytes.push(p); // type, is_variable, has_rank
            }
        }
        if let Some(p) = Self::field(&f, 2) {
            self.t.ints.push(p); // buffer index
        }
        if let Some(p) = Self::field(&f, 3) {
            self.string(p);
        }
        if let Some(p) = Self::field(&f, 4) {
            let q = self.deref(p);
            let g = self.table(q);
            for i in [0, 1, 2] {
                // min, max, scale
                if let Some(r) = Self::field(&g, i) {
                    let e = self.vector(r, 4);
                    self.t.floats.extend(e);
                }
            }
            if let Some(r) = Self::field(&g, 3) {
                let e = self.vector(r, 8);
                self.t.longs.extend(e);
            }
            if let Some(r) = Self::field(&g, 4) {
                self.t.bytes.push(r); // details type
            }
            if let Some(r) = Self::field(&g, 6) {
                self.t.ints.push(r); // quantized_dimension
            }
        }
    }

    fn operator(&mut self, op: usize) {
        let f = self.table(op);
        if let Some(p) = Self::field(&f, 0) {
            self.t.ints.push(p); // opcode_index
        }
        for i in [1, 2] {
            if let Some(p) = Self::field(&f, i) {
                let e = self.vector(p, 4);
                self.t.ints.extend(e);
            }
        }
        if let Some(p) = Self::field(&f, 3) {
            self.t.bytes.push(p); // builtin_options_type
        }
        if let Some(p) = Self::field(&f, 4) {
            // Options tables: every present field, whatever its type, as bytes and
            // (when 4 bytes fit before the next field) as an int.
            let o = self.deref(p);
            let g = self.table(o);
            for q in g.into_iter().flatten() {
                self.t.bytes.push(q);
                if q + 4 <= self.b.len() {
                    self.t.ints.push(q);
                }
            }
        }
    }
}

fn targets(bytes: &[u8]) -> Targets {
    let mut w = Walker {
        b: bytes,
        t: Targets::default(),
    };
    w.model();
    w.t
}

// ----- mutations ------------------------------------------------------------------

fn put(b: &mut [u8], p: usize, v: &[u8]) {
    let end = (p + v.len()).min(b.len());
    if p < end {
        b[p..end].copy_from_slice(&v[..end - p]);
    }
}

fn pick<'a, T>(rng: &mut StdRng, v: &'a [T]) -> Option<&'a T> {
    if v.is_empty() {
        None
    } else {
        Some(&v[rng.gen_range(0..v.len())])
    }
}

/// Applies one random mutation to `b`, returning a description of it.
fn mutate(rng: &mut StdRng, b: &mut Vec<u8>, t: &Targets) -> String {
    let kind = rng.gen_range(0..100);
    apply(kind, rng, b, t)
}

/// Mutation `kind` (0..100 picks the family, weighted by range width).
fn apply(kind: u32, rng: &mut StdRng, b: &mut Vec<u8>, t: &Targets) -> String {
    let len = b.len();
    let interesting_u32: [u32; 10] = [
        0,
        1,
        4,
        len as u32,
        len as u32 - 4,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_fff8,
        0xffff_ffff,
        1 << 20,
    ];
    match kind {
        0..=14 => {
            let n = rng.gen_range(1..=8);
            let mut at = Vec::new();
            for _ in 0..n {
                let p = rng.gen_range(0..len);
                let bit = rng.gen_range(0..8);
                b[p] ^= 1 << bit;
                at.push(format!("{p}.{bit}"));
            }
            format!("bit flips at {}", at.join(","))
        }
        15..=24 => {
            let p = rng.gen_range(0..len);
            let n = rng.gen_range(1..=16).min(len - p);
            let fill: u8 = *pick(rng, &[0x00, 0xff, 0x7f, 0x80]).unwrap();
            let random = rng.gen_bool(0.5);
            for x in &mut b[p..p + n] {
                *x = if random { rng.gen() } else { fill };
            }
            format!(
                "overwrite {n} bytes at {p} ({})",
                if random {
                    "random".into()
                } else {
                    format!("{fill:#x}")
                }
            )
        }
        25..=32 => {
            let cut = match rng.gen_range(0..4) {
                0 => rng.gen_range(0..16.min(len)),
                1 => len - rng.gen_range(1..=16.min(len)),
                _ => rng.gen_range(0..len),
            };
            b.truncate(cut);
            format!("truncate to {cut}")
        }
        33..=44 => {
            let Some(&p) = pick(rng, &t.offsets) else {
                return "noop".into();
            };
            let v = if rng.gen_bool(0.6) {
                *pick(rng, &interesting_u32).unwrap()
            } else {
                let cur = u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
                cur.wrapping_add(rng.gen_range(-64i32..64) as u32 & !3)
            };
            put(b, p, &v.to_le_bytes());
            format!("offset at {p} := {v:#x}")
        }
        45..=52 => {
            let Some(&p) = pick(rng, &t.soffsets) else {
                return "noop".into();
            };
            let v: i32 = match rng.gen_range(0..4) {
                0 => *pick(rng, &[0, 4, -4, i32::MAX, i32::MIN, p as i32, -(p as i32)]).unwrap(),
                1 => rng.gen(),
                _ => {
                    let cur = i32::from_le_bytes(b[p..p + 4].try_into().unwrap());
                    cur.wrapping_add(rng.gen_range(-32..32) * 2)
                }
            };
            put(b, p, &v.to_le_bytes());
            format!("vtable soffset at {p} := {v}")
        }
        53..=62 => {
            let Some(&p) = pick(rng, &t.vtable) else {
                return "noop".into();
            };
            let v: u16 = match rng.gen_range(0..3) {
                0 => *pick(rng, &[0, 1, 2, 3, 4, 0x7fff, 0xfffe, 0xffff]).unwrap(),
                1 => rng.gen(),
                _ => {
                    let cur = u16::from_le_bytes(b[p..p + 2].try_into().unwrap());
                    cur.wrapping_add(rng.gen_range(1..16))
                }
            };
            put(b, p, &v.to_le_bytes());
            format!("vtable word at {p} := {v}")
        }
        63..=72 => {
            let Some(&p) = pick(rng, &t.lengths) else {
                return "noop".into();
            };
            let cur = u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
            let v = match rng.gen_range(0..3) {
                0 => *pick(rng, &interesting_u32).unwrap(),
                1 => cur.wrapping_mul(rng.gen_range(2..1000)),
                _ => cur.wrapping_add(rng.gen_range(1..64)),
            };
            put(b, p, &v.to_le_bytes());
            format!("length at {p} := {v}")
        }
        73..=82 => {
            let Some(&p) = pick(rng, &t.dims) else {
                return "noop".into();
            };
            let v: i32 = *pick(
                rng,
                &[
                    0,
                    -1,
                    -2,
                    -1000,
                    1,
                    2,
                    3,
                    7,
                    65536,
                    46341,
                    1 << 20,
                    1 << 30,
                    i32::MAX,
                    i32::MIN,
                ],
            )
            .unwrap();
            put(b, p, &v.to_le_bytes());
            format!("dimension at {p} := {v}")
        }
        83..=89 => {
            let Some(&p) = pick(rng, &t.ints) else {
                return "noop".into();
            };
            let cur = i32::from_le_bytes(b[p..p + 4].try_into().unwrap());
            let v: i32 = match rng.gen_range(0..3) {
                0 => *pick(
                    rng,
                    &[0, -1, -2, 1, 2, 3, 4, 255, 256, 65535, i32::MAX, i32::MIN],
                )
                .unwrap(),
                1 => cur.wrapping_add(rng.gen_range(-3..=3)),
                _ => rng.gen(),
            };
            put(b, p, &v.to_le_bytes());
            format!("int at {p} := {v}")
        }
        90..=92 => {
            let Some(&p) = pick(rng, &t.floats) else {
                return "noop".into();
            };
            let v: f32 = *pick(
                rng,
                &[
                    0.0,
                    -1.0,
                    f32::NAN,
                    f32::INFINITY,
                    -f32::INFINITY,
                    1e38,
                    1e-45,
                    f32::MAX,
                ],
            )
            .unwrap();
            put(b, p, &v.to_le_bytes());
            format!("scale at {p} := {v}")
        }
        93..=95 => {
            let Some(&p) = pick(rng, &t.longs) else {
                return "noop".into();
            };
            let v: i64 = *pick(
                rng,
                &[
                    -129,
                    128,
                    256,
                    -1,
                    2,
                    i64::MAX,
                    i64::MIN,
                    1 << 40,
                    len as i64,
                    len as i64 - 8,
                ],
            )
            .unwrap();
            put(b, p, &v.to_le_bytes());
            format!("long at {p} := {v}")
        }
        96..=97 => {
            let Some(&p) = pick(rng, &t.bytes) else {
                return "noop".into();
            };
            let v: u8 = if rng.gen_bool(0.5) {
                rng.gen()
            } else {
                *pick(rng, &[0, 1, 2, 3, 4, 5, 9, 17, 18, 127, 200, 255]).unwrap()
            };
            b[p] = v;
            format!("byte field at {p} := {v}")
        }
        _ => {
            // Several targeted corruptions at once.
            let n = rng.gen_range(2..=5);
            let mut parts = Vec::new();
            for _ in 0..n {
                // Targeted families only (no truncation, no nesting).
                let k = rng.gen_range(33..98);
                parts.push(apply(k, rng, b, t));
            }
            parts.join("; ")
        }
    }
}

// ----- the test -------------------------------------------------------------------

const MODELS: [&str; 6] = [
    "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet.tflite",
    "mlperf-tiny/benchmark/training/image_classification/trained_models/pretrainedResnet_quant.tflite",
    "mlperf-tiny/benchmark/training/keyword_spotting/trained_models/kws_ref_model.tflite",
    "mlperf-tiny/benchmark/training/keyword_spotting/trained_models/kws_ref_model_float32.tflite",
    "mlperf-tiny/benchmark/training/anomaly_detection/trained_models/ad01_fp32.tflite",
    "mlperf-tiny/benchmark/training/anomaly_detection/trained_models/ad01_int8.tflite",
];

/// Mutations per file.
const PER_FILE: usize = 2000;

fn cap(file_len: usize) -> usize {
    16 * file_len + (16 << 20)
}

#[derive(Default)]
struct Outcome {
    ok: usize,
    err: usize,
    failures: Vec<String>,
    peak: usize,
    largest: usize,
}

fn attack(name: &str, original: &[u8], seed: u64) -> Outcome {
    let t = targets(original);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Outcome::default();
    for i in 0..PER_FILE {
        let mut b = original.to_vec();
        let what = mutate(&mut rng, &mut b, &t);
        let (r, peak, largest) =
            measured(|| catch_unwind(AssertUnwindSafe(|| edgeopt_tflite::import(&b))));
        let limit = cap(b.len());
        out.peak = out.peak.max(peak);
        out.largest = out.largest.max(largest);
        if peak > limit || largest > limit {
            out.failures.push(format!(
                "{name} #{i} [{what}]: allocated peak {peak} B, largest {largest} B > cap {limit} B"
            ));
        }
        match r {
            Err(_) => out
                .failures
                .push(format!("{name} #{i} [{what}]: import panicked")),
            Ok(Err(_)) => out.err += 1,
            Ok(Ok(g)) => {
                out.ok += 1;
                match catch_unwind(AssertUnwindSafe(|| g.validate())) {
                    Err(_) => out
                        .failures
                        .push(format!("{name} #{i} [{what}]: validate panicked")),
                    Ok(Err(e)) => out
                        .failures
                        .push(format!("{name} #{i} [{what}]: imported but invalid: {e}")),
                    Ok(Ok(())) => {}
                }
            }
        }
    }
    out
}

#[test]
fn mutated_tflite_files_never_panic_or_overallocate() {
    let Some(dir) = edgeopt_testkit::data_dir() else {
        return;
    };
    // Panics are caught and reported with their mutation; keep their messages short.
    let files: Vec<(String, Vec<u8>)> = MODELS
        .iter()
        .map(|m| {
            let p = dir.join(m);
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    // The unmutated files import (so mutations start from valid models), and the walker
    // found their structure.
    for (name, b) in &files {
        edgeopt_tflite::import(b).unwrap_or_else(|e| panic!("{name}: {e}"));
        let t = targets(b);
        assert!(
            !t.offsets.is_empty() && !t.dims.is_empty() && !t.vtable.is_empty(),
            "{name}: walker found no structure"
        );
    }
    let results: Vec<(String, usize, Outcome)> = files
        .par_iter()
        .enumerate()
        .map(|(k, (name, b))| {
            (
                name.clone(),
                b.len(),
                attack(name, b, 0x7f1e_0000 + k as u64),
            )
        })
        .collect();
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, len, o) in &results {
        total += o.ok + o.err;
        eprintln!(
            "{name} ({len} B): {} mutations, {} imported, {} rejected, {} failures; \
             peak live {} B, largest allocation {} B (cap {} B)",
            o.ok + o.err + o.failures.len(),
            o.ok,
            o.err,
            o.failures.len(),
            o.peak,
            o.largest,
            cap(*len)
        );
        failures.extend(o.failures.iter().cloned());
    }
    assert!(total >= MODELS.len() * PER_FILE - failures.len());
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(30).collect();
        panic!(
            "{} failures:\n{}",
            failures.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
