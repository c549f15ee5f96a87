//! Hostile input: the six MLPerf Tiny `.tflite` files mutated thousands of times
//! (bit flips, byte overwrites, truncation, and targeted corruption of flatbuffer
//! offsets, vtables, vector lengths, tensor dimensions, indices and quantization
//! fields). Every import must end in `Ok` or `Err`, never panic, and never allocate
//! more than a cap tied to the file size; whatever imports must pass
//! `Graph::validate` without panicking, and one in three of those also goes through
//! export to both formats, C generation and quantization (Ok or Err, never a panic;
//! `edgeopt_tests::hostile`).
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

// SAFETY: every method forwards to `System` with the caller's arguments unchanged (so
// `System`'s guarantees hold) and only updates atomic counters besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: as in `alloc`: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        // SAFETY: `ptr` was allocated by `System` (every allocation here is) with
        // `layout`, as the caller of `dealloc` guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a new block alive next to the old one (the worst case).
        on_alloc(new_size);
        // SAFETY: `ptr` was allocated by `System` with `layout` and `new_size` is valid,
        // as the caller of `realloc` guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
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
    loop {
        let kind = rng.gen_range(0..100);
        let what = apply(kind, rng, b, t);
        // A family with no target in this file (e.g. no scales in a float model)
        // changed nothing: draw again so every attempt is a real mutation.
        if what != "noop" {
            return what;
        }
    }
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

// ----- semantic mutations ---------------------------------------------------------
//
// Byte-level corruption mostly stops at the flatbuffer verifier. These edit the
// decoded model (tensor shapes, types, buffer and tensor indices, quantization,
// operator wiring, options, small constant operands such as shapes, paddings, perms
// and axes) and re-serialize it, so the file is well-formed and the corruption
// reaches the importer's semantic checks and the IR's shape rules.

use edgeopt_tflite::schema::{self as fb, BuiltinOperator as Bop};

const WEIRD: [i32; 14] = [
    0,
    -1,
    -2,
    1,
    2,
    3,
    7,
    255,
    65536,
    46341,
    1 << 20,
    1 << 30,
    i32::MAX,
    i32::MIN,
];

fn weird(rng: &mut StdRng) -> i32 {
    if rng.gen_bool(0.8) {
        *pick(rng, &WEIRD).unwrap()
    } else {
        rng.gen()
    }
}

fn random_type(rng: &mut StdRng) -> fb::TensorType {
    *pick(rng, &fb::TensorType::ENUM_VALUES).unwrap()
}

const OPS: [Bop; 37] = [
    Bop::Conv2d,
    Bop::DepthwiseConv2d,
    Bop::FullyConnected,
    Bop::Add,
    Bop::Sub,
    Bop::Mul,
    Bop::AveragePool2d,
    Bop::MaxPool2d,
    Bop::Mean,
    Bop::Reshape,
    Bop::Softmax,
    Bop::LogSoftmax,
    Bop::Pad,
    Bop::Padv2,
    Bop::Concatenation,
    Bop::Transpose,
    Bop::Quantize,
    Bop::Dequantize,
    Bop::Logistic,
    Bop::Tanh,
    Bop::Relu,
    Bop::Relu6,
    Bop::HardSwish,
    Bop::ResizeNearestNeighbor,
    Bop::ResizeBilinear,
    Bop::Div,
    Bop::Maximum,
    Bop::Minimum,
    Bop::LeakyRelu,
    Bop::ReluN1To1,
    Bop::Squeeze,
    Bop::ExpandDims,
    Bop::Gather,
    Bop::While,
    Bop::Custom,
    Bop::Svdf,
    Bop::StablehloComposite,
];

fn random_options(rng: &mut StdRng) -> Option<fb::BuiltinOptions> {
    use fb::BuiltinOptions as O;
    let pad = if rng.gen_bool(0.5) {
        fb::Padding::Same
    } else {
        fb::Padding::Valid
    };
    let act = *pick(rng, &fb::ActivationFunctionType::ENUM_VALUES).unwrap();
    Some(match rng.gen_range(0..16) {
        0 => return None,
        1 => O::Conv2DOptions(Box::new(fb::Conv2DOptions {
            padding: pad,
            stride_w: weird(rng),
            stride_h: weird(rng),
            fused_activation_function: act,
            dilation_w_factor: weird(rng),
            dilation_h_factor: weird(rng),
            quantized_bias_type: random_type(rng),
        })),
        2 => O::DepthwiseConv2DOptions(Box::new(fb::DepthwiseConv2DOptions {
            padding: pad,
            stride_w: weird(rng),
            stride_h: weird(rng),
            depth_multiplier: weird(rng),
            fused_activation_function: act,
            dilation_w_factor: weird(rng),
            dilation_h_factor: weird(rng),
        })),
        3 => O::Pool2DOptions(Box::new(fb::Pool2DOptions {
            padding: pad,
            stride_w: weird(rng),
            stride_h: weird(rng),
            filter_width: weird(rng),
            filter_height: weird(rng),
            fused_activation_function: act,
        })),
        4 => O::ReshapeOptions(Box::new(fb::ReshapeOptions {
            new_shape: Some((0..rng.gen_range(0..10)).map(|_| weird(rng)).collect()),
        })),
        5 => O::ConcatenationOptions(Box::new(fb::ConcatenationOptions {
            axis: weird(rng),
            fused_activation_function: act,
        })),
        6 => O::SoftmaxOptions(Box::new(fb::SoftmaxOptions {
            beta: *pick(rng, &[f32::NAN, 0.0, -1.0, 1e30, f32::INFINITY]).unwrap(),
        })),
        7 => O::ReducerOptions(Box::new(fb::ReducerOptions {
            keep_dims: rng.gen(),
        })),
        8 => O::FullyConnectedOptions(Box::new(fb::FullyConnectedOptions {
            fused_activation_function: act,
            weights_format: *pick(rng, &fb::FullyConnectedOptionsWeightsFormat::ENUM_VALUES)
                .unwrap(),
            keep_num_dims: rng.gen(),
            asymmetric_quantize_inputs: rng.gen(),
            quantized_bias_type: random_type(rng),
        })),
        9 => O::ResizeNearestNeighborOptions(Box::new(fb::ResizeNearestNeighborOptions {
            align_corners: rng.gen(),
            half_pixel_centers: rng.gen(),
        })),
        11 => O::LeakyReluOptions(Box::new(fb::LeakyReluOptions {
            alpha: *pick(rng, &[f32::NAN, 0.0, -1.0, 1e30, f32::INFINITY]).unwrap(),
        })),
        12 => O::SqueezeOptions(Box::new(fb::SqueezeOptions {
            squeeze_dims: Some((0..rng.gen_range(0..10)).map(|_| weird(rng)).collect()),
        })),
        13 => O::GatherOptions(Box::new(fb::GatherOptions {
            axis: weird(rng),
            batch_dims: if rng.gen_bool(0.5) { 0 } else { weird(rng) },
        })),
        14 => O::ResizeBilinearOptions(Box::new(fb::ResizeBilinearOptions {
            align_corners: rng.gen(),
            half_pixel_centers: rng.gen(),
        })),
        _ => O::AddOptions(Box::new(fb::AddOptions {
            fused_activation_function: act,
            pot_scale_int16: rng.gen(),
        })),
    })
}

/// One random semantic edit of `m`, described.
fn semantic_edit(rng: &mut StdRng, m: &mut fb::Model) -> String {
    let nb = m.buffers.as_ref().map_or(0, Vec::len);
    let ncodes = m.operator_codes.as_ref().map_or(0, Vec::len);
    let sg = &mut m.subgraphs.as_mut().unwrap()[0];
    let nt = sg.tensors.as_ref().map_or(0, Vec::len) as i32;
    let no = sg.operators.as_ref().map_or(0, Vec::len);
    let ti = rng.gen_range(0..nt.max(1)) as usize;
    let oi = rng.gen_range(0..no.max(1));
    let tensor_index = |rng: &mut StdRng| -> i32 {
        if rng.gen_bool(0.85) {
            rng.gen_range(-1..nt)
        } else {
            weird(rng)
        }
    };
    match rng.gen_range(0..15) {
        0 => {
            let t = &mut sg.tensors.as_mut().unwrap()[ti];
            let shape = t.shape.get_or_insert_with(Vec::new);
            match rng.gen_range(0..4) {
                0 => shape.push(weird(rng)),
                1 => {
                    shape.pop();
                }
                _ if !shape.is_empty() => {
                    let k = rng.gen_range(0..shape.len());
                    shape[k] = weird(rng);
                }
                _ => shape.extend((0..rng.gen_range(1..12)).map(|_| weird(rng))),
            }
            format!("tensor {ti} shape := {shape:?}")
        }
        1 => {
            let ty = random_type(rng);
            sg.tensors.as_mut().unwrap()[ti].type_ = ty;
            format!("tensor {ti} type := {ty:?}")
        }
        2 => {
            let b = if rng.gen_bool(0.8) {
                rng.gen_range(0..nb as u32 + 2)
            } else {
                rng.gen()
            };
            sg.tensors.as_mut().unwrap()[ti].buffer = b;
            format!("tensor {ti} buffer := {b}")
        }
        3 => {
            let t = &mut sg.tensors.as_mut().unwrap()[ti];
            let n = *pick(rng, &[0usize, 1, 2, 3, 8, 16, 64, 640]).unwrap();
            let scale = *pick(rng, &[0.5f32, 0.0, -1.0, f32::NAN, 1e-30, 1e30]).unwrap();
            let zp = *pick(rng, &[0i64, -128, 127, 128, -129, 1 << 40]).unwrap();
            let zn = if rng.gen_bool(0.8) {
                n
            } else {
                rng.gen_range(0..3)
            };
            let axis = if rng.gen_bool(0.7) {
                rng.gen_range(0..5)
            } else {
                weird(rng)
            };
            t.quantization = Some(Box::new(fb::QuantizationParameters {
                scale: Some(vec![scale; n]),
                zero_point: Some(vec![zp; zn]),
                quantized_dimension: axis,
                ..Default::default()
            }));
            format!("tensor {ti} quant := {n} x scale {scale}, {zn} x zp {zp}, axis {axis}")
        }
        4 => {
            let t = &mut sg.tensors.as_mut().unwrap()[ti];
            let mut sig = t.shape.clone().unwrap_or_default();
            if rng.gen_bool(0.3) {
                sig.push(-1);
            }
            if !sig.is_empty() {
                let k = rng.gen_range(0..sig.len());
                sig[k] = if rng.gen_bool(0.5) { -1 } else { weird(rng) };
            }
            t.shape_signature = Some(sig.clone());
            format!("tensor {ti} shape_signature := {sig:?}")
        }
        5 | 6 => {
            let Some(op) = sg.operators.as_mut().and_then(|o| o.get_mut(oi)) else {
                return "no op".into();
            };
            let v = tensor_index(rng);
            let outputs = rng.gen_bool(0.3);
            let list = if outputs {
                &mut op.outputs
            } else {
                &mut op.inputs
            };
            let list = list.get_or_insert_with(Vec::new);
            if list.is_empty() {
                list.push(v);
            } else {
                let k = rng.gen_range(0..list.len());
                list[k] = v;
            }
            format!(
                "op {oi} {} := {list:?}",
                if outputs { "outputs" } else { "inputs" }
            )
        }
        7 => {
            let Some(op) = sg.operators.as_mut().and_then(|o| o.get_mut(oi)) else {
                return "no op".into();
            };
            let ins = op.inputs.get_or_insert_with(Vec::new);
            if rng.gen_bool(0.5) {
                ins.pop();
            } else {
                let v = tensor_index(rng);
                ins.push(v);
            }
            format!("op {oi} inputs := {ins:?}")
        }
        8 => {
            let Some(op) = sg.operators.as_mut().and_then(|o| o.get_mut(oi)) else {
                return "no op".into();
            };
            op.opcode_index = if rng.gen_bool(0.8) {
                rng.gen_range(0..ncodes as u32 + 2)
            } else {
                rng.gen()
            };
            format!("op {oi} opcode_index := {}", op.opcode_index)
        }
        9 => {
            let Some(op) = sg.operators.as_mut().and_then(|o| o.get_mut(oi)) else {
                return "no op".into();
            };
            op.builtin_options = random_options(rng);
            format!("op {oi} options := {:?}", op.builtin_options)
        }
        10 => {
            // Small int32 constants are the shapes, paddings, perms, axes and sizes.
            let bufs = m.buffers.as_mut().unwrap();
            let small: Vec<usize> = (0..bufs.len())
                .filter(|&i| {
                    bufs[i]
                        .data
                        .as_ref()
                        .is_some_and(|d| d.len() <= 64 && d.len() % 4 == 0 && !d.is_empty())
                })
                .collect();
            let Some(&b) = pick(rng, &small) else {
                return "no small buffer".into();
            };
            let d = bufs[b].data.as_mut().unwrap();
            let k = rng.gen_range(0..d.len() / 4);
            let v = weird(rng);
            d[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
            format!("buffer {b} int {k} := {v}")
        }
        11 => {
            let codes = m.operator_codes.as_mut().unwrap();
            let c = rng.gen_range(0..codes.len());
            let op = *pick(rng, &OPS).unwrap();
            codes[c].builtin_code = op;
            codes[c].deprecated_builtin_code = (op as i32).min(127) as i8;
            if op == Bop::Custom {
                codes[c].custom_code = Some("hostile".into());
            }
            format!("opcode {c} := {op:?}")
        }
        12 => {
            let v = tensor_index(rng);
            let list = if rng.gen_bool(0.5) {
                &mut sg.inputs
            } else {
                &mut sg.outputs
            };
            let list = list.get_or_insert_with(Vec::new);
            match rng.gen_range(0..3) {
                0 => list.clear(),
                1 => list.push(v),
                _ => {
                    if let Some(x) = list.first_mut() {
                        *x = v;
                    }
                }
            }
            format!("subgraph io := {list:?}")
        }
        13 => {
            let bufs = m.buffers.as_mut().unwrap();
            let b = rng.gen_range(0..bufs.len());
            let off = *pick(rng, &[0u64, 1, 2, 8, 1 << 20, u64::MAX, u64::MAX - 4]).unwrap();
            let size = *pick(rng, &[0u64, 4, 64, 1 << 30, u64::MAX]).unwrap();
            bufs[b].offset = off;
            bufs[b].size = size;
            if rng.gen_bool(0.5) {
                bufs[b].data = None;
            }
            format!("buffer {b} external offset {off} size {size}")
        }
        _ => {
            // Swap two operators: breaks the execution order.
            let Some(ops) = sg.operators.as_mut().filter(|o| o.len() > 1) else {
                return "no ops".into();
            };
            let j = rng.gen_range(0..ops.len());
            ops.swap(oi, j);
            format!("swap ops {oi} and {j}")
        }
    }
}

fn semantic_mutation(rng: &mut StdRng, model: &fb::Model) -> (Vec<u8>, String) {
    let mut m = model.clone();
    let n = if rng.gen_bool(0.7) {
        1
    } else {
        rng.gen_range(2..=4)
    };
    let parts: Vec<String> = (0..n).map(|_| semantic_edit(rng, &mut m)).collect();
    (
        edgeopt_tflite::finish_model(&m),
        format!("semantic: {}", parts.join("; ")),
    )
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

/// Byte-level mutations per file.
const PER_FILE: usize = 2000;
/// Semantic (schema-level) mutations per file, on top.
const SEMANTIC_PER_FILE: usize = 1000;
/// One mutant in this many, when it imports, also goes through the downstream stages.
const DOWNSTREAM_EVERY: usize = 3;

fn cap(file_len: usize) -> usize {
    16 * file_len + (16 << 20)
}

/// Mutation family of a description, for the coverage summary.
fn family(what: &str) -> String {
    if let Some(rest) = what.strip_prefix("semantic: ") {
        // "tensor 3 shape := [..]" -> "sem tensor shape"; numbers and values dropped.
        let first = rest.split("; ").next().unwrap_or("");
        let words: Vec<&str> = first
            .split(' ')
            .take_while(|w| *w != ":=")
            .filter(|w| !w.chars().all(|c| c.is_ascii_digit()))
            .take(2)
            .collect();
        return format!("sem {}", words.join(" "));
    }
    if what.contains("; ") {
        return "several targeted".into();
    }
    let mut w = what.split(' ');
    match w.next().unwrap_or("") {
        "vtable" => format!("vtable {}", w.next().unwrap_or("")),
        first => first.to_string(),
    }
}

#[derive(Default)]
struct Outcome {
    ok: usize,
    err: usize,
    /// Family -> (imported, rejected).
    families: std::collections::BTreeMap<String, (usize, usize)>,
    failures: Vec<String>,
    peak: usize,
    largest: usize,
    /// Imported mutants taken through export, compile and quantize.
    downstream: usize,
}

fn attack(name: &str, original: &[u8], seed: u64) -> Outcome {
    let t = targets(original);
    let model = edgeopt_tflite::decode_model(original).expect("valid model");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Outcome::default();
    for i in 0..PER_FILE + SEMANTIC_PER_FILE {
        let (b, what) = if i < PER_FILE {
            let mut b = original.to_vec();
            let what = mutate(&mut rng, &mut b, &t);
            (b, what)
        } else {
            semantic_mutation(&mut rng, &model)
        };
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
            Ok(Err(_)) => {
                out.err += 1;
                out.families.entry(family(&what)).or_default().1 += 1;
            }
            Ok(Ok(g)) => {
                out.ok += 1;
                out.families.entry(family(&what)).or_default().0 += 1;
                match catch_unwind(AssertUnwindSafe(|| g.validate())) {
                    Err(_) => out
                        .failures
                        .push(format!("{name} #{i} [{what}]: validate panicked")),
                    Ok(Err(e)) => out
                        .failures
                        .push(format!("{name} #{i} [{what}]: imported but invalid: {e}")),
                    // Every third mutant that imports also goes through export, C
                    // generation and quantization (the stages a user runs next).
                    Ok(Ok(())) if i % DOWNSTREAM_EVERY == 0 => {
                        out.downstream += 1;
                        if let Err(e) = edgeopt_tests::hostile::downstream(&g, seed ^ i as u64) {
                            out.failures.push(format!("{name} #{i} [{what}]: {e}"));
                        }
                    }
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
    let mut files: Vec<(String, Vec<u8>)> = MODELS
        .iter()
        .map(|m| {
            let p = dir.join(m);
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    // Plus the synthetic models that use every op the importer maps, so that every
    // op's conversion sees corrupted input too.
    files.push((
        "all_ops (synthetic)".into(),
        edgeopt_tflite::finish_model(&edgeopt_tflite::fixtures::all_ops_model()),
    ));
    files.push((
        "extra_ops (synthetic)".into(),
        edgeopt_tflite::finish_model(&edgeopt_tflite::fixtures::extra_ops_model()),
    ));
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
    let mut families: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (name, len, o) in &results {
        total += o.ok + o.err;
        eprintln!(
            "{name} ({len} B): {} mutations, {} imported ({} through export/compile/quantize), \
             {} rejected, {} failures; peak live {} B, largest allocation {} B (cap {} B)",
            o.ok + o.err + o.failures.len(),
            o.ok,
            o.downstream,
            o.err,
            o.failures.len(),
            o.peak,
            o.largest,
            cap(*len)
        );
        failures.extend(o.failures.iter().cloned());
        for (f, (ok, err)) in &o.families {
            let e = families.entry(f.clone()).or_default();
            e.0 += ok;
            e.1 += err;
        }
    }
    for (f, (ok, err)) in &families {
        eprintln!("  {f:>16}: {ok:>5} imported, {err:>5} rejected");
    }
    assert!(total >= files.len() * (PER_FILE + SEMANTIC_PER_FILE) - failures.len());
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
