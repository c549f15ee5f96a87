//! `edgeopt compile`: an int8 graph -> self-contained C99 for a microcontroller.
//!
//! Output (see [`Generated::files`]):
//! - `model.h`: the API (`edgeopt_model_init`, `edgeopt_model_input`,
//!   `edgeopt_model_invoke`, `edgeopt_model_output`), input/output shapes and
//!   quantization parameters, the arena size;
//! - `model.c`: weights, biases and requantization parameters as `const` arrays (flash),
//!   the layers in order, one `static` arena of exactly the static memory planner's size
//!   ([`edgeopt_runtime::planner`]) with every tensor at its planned offset (aliases and
//!   in-place decisions included);
//! - `edgeopt_kernels.c/.h`: portable C99 int8 kernels with Cortex-M DSP (SMLAD) fast
//!   paths under `__ARM_FEATURE_DSP` (crates/codegen/c/);
//! - `README.md`: how to drop the files into a firmware project.
//!
//! Numerics: `tflm` (DESIGN.md), bit-exact with TensorFlow Lite Micro's reference
//! kernels (and so with CMSIS-NN), checked against TFLM's own interpreter on the MLPerf
//! models (crates/tests/tests/codegen_vs_tflm.rs) and op by op
//! (codegen_ops_vs_tflm.rs): fixed point everywhere, no float at run time except
//! DEQUANTIZE outputs and the float islands a quantized model keeps (LayerNorm between
//! DEQUANTIZE and QUANTIZE: float ADD / SUB / MUL / DIV / SQRT / MEAN as TFLM's
//! reference float kernels compute them, no libm). Every requantization parameter is
//! computed here with the
//! runtime's own functions (`quantize_multiplier`, `OutputStage`, `activation_range`,
//! ...), and element-wise int8 -> int8 ops (ReLU, ReLU6, logistic, tanh, hard-swish,
//! requantizing QUANTIZE) become 256-entry tables, filled by running the runtime's
//! kernel on all 256 inputs, except where TFLM's op differs from LiteRT's ([`tflm`]).
//!
//! Where edgeopt's runtime differs from the C under `Numerics::Reference` (LiteRT's
//! reference kernels):
//! - FULLY_CONNECTED: LiteRT rounds the requantization once, TFLM (and the C) twice
//!   (`MultiplyByQuantizedMultiplier`: doubling high multiply, then a ties-away shift);
//! - RELU6 with input and output parameters that differ: TFLM clamps in the input's
//!   units without requantizing, LiteRT requantizes ([`activation::tflm_relu6_table`]);
//! - RELU: TFLM derives the multiplier from a double division of the scales, LiteRT
//!   from a float one (another table for ~1 scale pair in 1500; [`activation::tflm_relu_table`]).
//!
//! Under `Numerics::LiteRt` (the default of `edgeopt run`) also CONV_2D (ruy's ties-up
//! final shift), FULLY_CONNECTED (ties-up) and SOFTMAX (a float exp table).

pub mod target;

use edgeopt_ir::{
    Activation, BinaryKind, DType, Graph, Node, Op, PadMode, ReduceKind, Tensor, TensorData,
    UnaryKind, ValueId,
};
use edgeopt_runtime::kernels::quantized::activation;
use edgeopt_runtime::kernels::quantized::common::{
    activation_range, per_channel, per_tensor, Affine, OutputStage,
};
use edgeopt_runtime::kernels::quantized::conv::{conv_geom, window_axes};
use edgeopt_runtime::kernels::quantized::fixedpoint::{
    calculate_input_radius, quantize_multiplier, quantize_multiplier_smaller_than_one_exp,
};
use edgeopt_runtime::kernels::quantized::movement::requantize_if_needed;
use edgeopt_runtime::kernels::quantized::reduce;
use edgeopt_runtime::kernels::quantized::Numerics;
use edgeopt_runtime::kernels::{eval_node, NodeCtx};
use edgeopt_runtime::planner::{self, MemoryPlan};
use edgeopt_runtime::ExecOptions;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
pub use target::{targets, Target};

/// The portable kernels, shipped verbatim with every generated model.
pub const KERNELS_C: &str = include_str!("../c/edgeopt_kernels.c");
pub const KERNELS_H: &str = include_str!("../c/edgeopt_kernels.h");

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("node '{node}' ({op}): {msg}")]
    Unsupported {
        node: String,
        op: String,
        msg: String,
    },
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Runtime(#[from] edgeopt_runtime::RuntimeError),
    #[error(transparent)]
    Ir(#[from] edgeopt_ir::IrError),
    #[error("the model does not fit {target}: {detail}")]
    DoesNotFit { target: String, detail: String },
    /// The OS error is in the message, not a `source()`: a printed chain names it once.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

pub type Result<T, E = CodegenError> = std::result::Result<T, E>;

/// Flash and RAM the generated code needs, against the target's budget.
#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    pub target: String,
    /// `const` data: weights, biases, requantization parameters, tables, layer params.
    pub weights_bytes: u64,
    /// Estimated machine code of the kernels used plus one call per layer (Thumb-2,
    /// -Os; see [`CODE_BYTES`]).
    pub code_bytes_estimate: u64,
    pub flash_bytes: u64,
    /// The static arena: exactly the memory planner's peak.
    pub arena_bytes: u64,
    /// Kernel scratch outside the arena (the int16 receptive field / input row).
    pub scratch_bytes: u64,
    /// Deepest kernel call chain (measured with gcc -fstack-usage; see [`STACK_BYTES`]).
    pub stack_bytes_estimate: u64,
    pub ram_bytes: u64,
    pub flash_budget: Option<u64>,
    pub ram_budget: Option<u64>,
}

impl Footprint {
    /// One line per resource: need vs budget.
    pub fn render(&self) -> String {
        let b = |v: Option<u64>| v.map_or("unbounded".to_string(), |v| format!("{v} B"));
        format!(
            "target {}\n  flash: {} B needed (weights+params {} B, code ~{} B) of {}\n  \
             RAM:   {} B needed (arena {} B = planner peak, scratch {} B, stack ~{} B) of {}\n",
            self.target,
            self.flash_bytes,
            self.weights_bytes,
            self.code_bytes_estimate,
            b(self.flash_budget),
            self.ram_bytes,
            self.arena_bytes,
            self.scratch_bytes,
            self.stack_bytes_estimate,
            b(self.ram_budget),
        )
    }

    /// An error naming the budget and the need when the model does not fit.
    pub fn check(&self) -> Result<()> {
        let mut over = Vec::new();
        if let Some(f) = self.flash_budget {
            if self.flash_bytes > f {
                over.push(format!(
                    "flash needs {} B (weights+params {} B + code ~{} B) but the budget is {} B",
                    self.flash_bytes, self.weights_bytes, self.code_bytes_estimate, f
                ));
            }
        }
        if let Some(r) = self.ram_budget {
            if self.ram_bytes > r {
                over.push(format!(
                    "RAM needs {} B (arena {} B + scratch {} B + stack ~{} B) but the budget is {} B",
                    self.ram_bytes, self.arena_bytes, self.scratch_bytes, self.stack_bytes_estimate, r
                ));
            }
        }
        if over.is_empty() {
            Ok(())
        } else {
            Err(CodegenError::DoesNotFit {
                target: self.target.clone(),
                detail: over.join("; "),
            })
        }
    }
}

/// Code size of each kernel: bytes of Thumb-2 at -O2 (the harness's level) with the DSP
/// path, from `arm-none-eabi-nm -S` on edgeopt_kernels.o for cortex-m4 (gcc 12.2),
/// rounded up; "common" holds the fixed-point helpers, the dot products and
/// memset/memmove. Re-measure when the kernels change (see bench/codegen.py).
pub const CODE_BYTES: &[(&str, u64)] = &[
    ("common", 700),
    ("conv", 1400),
    ("fc", 400), // 378 B since FC shares eo_mbqm (was 618 with its own one-rounding requantization)
    ("binary", 500),
    ("pool", 450),
    ("softmax", 1500),
    ("lut", 50),
    ("dequantize", 50),
    ("quantize", 120),
    ("transpose", 130),
    ("pad", 230),
    ("concat", 110),
    ("copy", 20),
    // Estimates until re-measured with bench/codegen.py (the loops are the size of
    // transpose's / concat's; resize has its tap arithmetic and an int64 sum).
    ("slice", 160),
    ("split", 60),
    ("tile", 200),
    ("resize", 500),
    // Measured (arm-none-eabi-nm -S, cortex-m4 -O2, gcc 12.2): eo_mean_s8 290 B,
    // eo_mean_f32 312, eo_batch_matmul_s8 404; "float" = eo_binary_f32 374 +
    // eo_sqrtf 164 + eo_unary_f32 34.
    ("mean", 300),
    ("mean_f32", 320),
    ("batch_matmul", 410),
    ("float", 580),
];
/// Bytes per layer call in `edgeopt_model_invoke` (argument set-up and the call;
/// measured ~20 on the IC model).
pub const CALL_BYTES: u64 = 24;
/// Stack of invoke -> kernel -> helper: gcc -fstack-usage (cortex-m4, -O2) gives
/// invoke 24 + eo_conv_s8 160 + eo_dot2 56 + fixed-point helpers <= 28 = 268 bytes;
/// 512 leaves room for an interrupt frame and libc's memmove.
pub const STACK_BYTES: u64 = 512;

/// The generated sources and what they need.
#[derive(Debug, Clone)]
pub struct Generated {
    /// (file name, contents).
    pub files: Vec<(String, String)>,
    pub footprint: Footprint,
    pub layers: usize,
    pub plan: MemoryPlan,
}

/// Compiles `graph` (batch 1) for `target`. Does not check the budget: see
/// [`Footprint::check`].
pub fn compile(graph: &Graph, target: &Target) -> Result<Generated> {
    let plan = planner::plan_for_batch(graph, 1)?;
    let mut e = Emitter::new(graph, &plan);
    e.fold_constants()?;
    for node in &graph.nodes {
        if node
            .outputs
            .iter()
            .all(|&o| plan.folded.get(o) == Some(&true))
        {
            continue;
        }
        e.node(node)?;
    }
    let model_h = e.model_h()?;
    let model_c = e.model_c();
    let readme = readme(target, &plan);
    e.kernels.insert("common");
    let code = CALL_BYTES * e.layers as u64
        + e.kernels
            .iter()
            .map(|k| {
                CODE_BYTES
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or(0, |(_, b)| *b)
            })
            .sum::<u64>();
    let scratch_bytes = (e.scratch_i16.max(1) * 2 + e.acc_i32.max(1) * 4) as u64;
    let footprint = Footprint {
        target: target.name.to_string(),
        weights_bytes: e.const_bytes,
        code_bytes_estimate: code,
        flash_bytes: e.const_bytes + code,
        arena_bytes: plan.arena_bytes as u64,
        scratch_bytes,
        stack_bytes_estimate: STACK_BYTES,
        ram_bytes: plan.arena_bytes as u64 + scratch_bytes + STACK_BYTES,
        flash_budget: target.flash_bytes,
        ram_budget: target.ram_bytes,
    };
    Ok(Generated {
        files: vec![
            ("model.h".into(), model_h),
            ("model.c".into(), model_c),
            ("edgeopt_kernels.h".into(), KERNELS_H.into()),
            ("edgeopt_kernels.c".into(), KERNELS_C.into()),
            ("README.md".into(), readme),
        ],
        footprint,
        layers: e.layers,
        plan,
    })
}

/// Writes the files into `dir` atomically: everything goes to a sibling temporary
/// directory first, which then replaces `dir` (an existing `dir` is moved aside and
/// removed only after the rename succeeded).
pub fn write_dir(gen: &Generated, dir: &Path) -> Result<()> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |error| CodegenError::Io { path: p, error }
    };
    let name = dir
        .file_name()
        .ok_or_else(|| CodegenError::Model(format!("{} is not a directory name", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    for (f, text) in &gen.files {
        let p = tmp.join(f);
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    if dir.exists() {
        if !dir.is_dir() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(CodegenError::Model(format!(
                "{} exists and is not a directory",
                dir.display()
            )));
        }
        let old = parent.join(format!(".{name}.old-{pid}"));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old).map_err(io(dir))?;
        if let Err(e) = std::fs::rename(&tmp, dir) {
            let _ = std::fs::rename(&old, dir);
            return Err(io(dir)(e));
        }
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------

struct Emitter<'g> {
    g: &'g Graph,
    plan: &'g MemoryPlan,
    /// Constant arrays (flash).
    data: String,
    /// Layer parameter structs (flash).
    params: String,
    /// Statements of `edgeopt_model_invoke`.
    body: String,
    const_bytes: u64,
    /// Emitted constant activations (a constant operand of Add, ...), by value.
    const_names: HashMap<ValueId, String>,
    /// Values computed from constants at compile time (the planner folds them).
    folded: HashMap<ValueId, Tensor>,
    scratch_i16: usize,
    /// int32 accumulators of the widest depthwise convolution.
    acc_i32: usize,
    kernels: BTreeSet<&'static str>,
    layers: usize,
}

fn c_i32(v: i32) -> String {
    if v == i32::MIN {
        "(-2147483647 - 1)".into()
    } else {
        v.to_string()
    }
}

/// `Some(false)` for RELU, `Some(true)` for RELU6 (and the Clips the TFLite exporter
/// writes as them), else `None`.
fn tflm_relu(op: &Op) -> Option<bool> {
    // A recognizer, not a facet: every other op is "not a RELU".
    if let Op::Unary(k) = op {
        return match k {
            UnaryKind::Relu => Some(false),
            UnaryKind::Relu6 => Some(true),
            _ => None,
        };
    }
    let Op::Clip { min: Some(lo), max } = op else {
        return None;
    };
    match max {
        _ if *lo != 0.0 => None,
        None => Some(false),
        Some(hi) if *hi == 6.0 => Some(true),
        Some(_) => None,
    }
}

fn c_f32(v: f32) -> String {
    let s = format!("{v:?}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        format!("{s}f")
    } else {
        format!("{s}.0f")
    }
}

/// A C array literal body, `per_line` values a line.
fn c_list<T>(v: &[T], per_line: usize, f: impl Fn(&T) -> String) -> String {
    let mut s = String::new();
    for (i, chunk) in v.chunks(per_line.max(1)).enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str("    ");
        let items: Vec<String> = chunk.iter().map(&f).collect();
        s.push_str(&items.join(", "));
        s.push(',');
    }
    s
}

/// A comment-safe string (no `*/`).
fn cc(s: &str) -> String {
    s.replace("*/", "* /")
}

fn i32s(v: &[i32]) -> String {
    let mut s = String::from("{");
    s.push_str(&v.iter().map(|&x| c_i32(x)).collect::<Vec<_>>().join(", "));
    s.push('}');
    s
}

/// Pads a small per-dim list to EO_MAX_RANK entries.
fn dims(v: &[usize]) -> Vec<i32> {
    let mut out: Vec<i32> = v.iter().map(|&d| d as i32).collect();
    out.resize(MAX_RANK, 0);
    out
}

const MAX_RANK: usize = 6;

/// A reduction as two strided walks over the input: the kept dims (one output each,
/// row-major) and the reduced dims (summed per output). Size-1 dims are dropped and
/// dims contiguous in the input merged, so a global average pool over [1, H, W, C]
/// walks C outputs of H*W elements with one stride each.
struct ReduceGeom {
    kept_shape: Vec<usize>,
    kept_stride: Vec<usize>,
    red_shape: Vec<usize>,
    red_stride: Vec<usize>,
    /// Outputs.
    count: usize,
    /// Elements summed per output.
    red_count: usize,
}

impl ReduceGeom {
    fn new(xs: &[usize], red: &[usize]) -> Result<Self, String> {
        let mut stride = vec![1usize; xs.len()];
        for d in (0..xs.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * xs[d + 1];
        }
        let walk = |reduced: bool| {
            let mut sh: Vec<usize> = Vec::new();
            let mut st: Vec<usize> = Vec::new();
            for d in (0..xs.len()).filter(|d| red.contains(d) == reduced && xs[*d] != 1) {
                if st.last() == Some(&(stride[d] * xs[d])) {
                    // Contiguous with the previous (outer) dim: one longer walk.
                    let last = sh.len() - 1;
                    sh[last] *= xs[d];
                    st[last] = stride[d];
                } else {
                    sh.push(xs[d]);
                    st.push(stride[d]);
                }
            }
            (sh, st)
        };
        let (kept_shape, kept_stride) = walk(false);
        let (red_shape, red_stride) = walk(true);
        if kept_shape.len() > MAX_RANK || red_shape.len() > MAX_RANK {
            return Err(format!("reduction needs more than {MAX_RANK} dims"));
        }
        Ok(ReduceGeom {
            count: kept_shape.iter().product(),
            red_count: red_shape.iter().product(),
            kept_shape,
            kept_stride,
            red_shape,
            red_stride,
        })
    }
}

impl<'g> Emitter<'g> {
    fn new(g: &'g Graph, plan: &'g MemoryPlan) -> Self {
        Emitter {
            g,
            plan,
            data: String::new(),
            params: String::new(),
            body: String::new(),
            const_bytes: 0,
            const_names: HashMap::new(),
            folded: HashMap::new(),
            scratch_i16: 0,
            acc_i32: 0,
            kernels: BTreeSet::new(),
            layers: 0,
        }
    }

    /// The runtime's view of `node` under TFLite Micro's numerics: what the emitted C
    /// computes, so the tables and folded constants taken from the runtime's kernels
    /// are TFLM's.
    fn ctx<'n>(&self, node: &'n Node) -> NodeCtx<'n>
    where
        'g: 'n,
    {
        NodeCtx::new(self.g, node, ExecOptions::numerics(Numerics::Tflm))
    }

    fn unsupported(&self, node: &Node, msg: impl Into<String>) -> CodegenError {
        CodegenError::Unsupported {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            msg: msg.into(),
        }
    }

    /// Evaluates the nodes whose outputs the planner folds (computed from constants
    /// only) with the runtime, so they become flash constants like the weights.
    fn fold_constants(&mut self) -> Result<()> {
        for node in &self.g.nodes {
            if !node
                .outputs
                .iter()
                .all(|&o| self.plan.folded.get(o) == Some(&true))
            {
                continue;
            }
            // A folded Shape reads only its input's planned shape.
            if let (Op::Shape, Some(x), [o]) = (&node.op, node.input(0), node.outputs.as_slice()) {
                let s: Vec<i64> = self.shape(x)?.iter().map(|&d| d as i64).collect();
                self.folded.insert(*o, Tensor::from_i64(vec![s.len()], s)?);
                continue;
            }
            let ins: Vec<Option<Tensor>> = node
                .inputs
                .iter()
                .map(|x| x.and_then(|id| self.const_tensor(id).cloned()))
                .collect();
            let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
            let outs = eval_node(&self.ctx(node), &refs)?;
            for (&o, t) in node.outputs.iter().zip(outs) {
                self.folded.insert(o, t);
            }
        }
        Ok(())
    }

    fn const_tensor(&self, id: ValueId) -> Option<&Tensor> {
        self.g.values[id]
            .data
            .as_ref()
            .or_else(|| self.folded.get(&id))
    }

    fn shape(&self, id: ValueId) -> Result<Vec<usize>> {
        if let Some(t) = self.const_tensor(id) {
            return Ok(t.shape.clone());
        }
        self.plan.shapes.get(id).cloned().flatten().ok_or_else(|| {
            CodegenError::Model(format!("no shape for '{}'", self.g.values[id].name))
        })
    }

    fn dtype(&self, id: ValueId) -> DType {
        self.const_tensor(id)
            .map(|t| t.dtype())
            .or_else(|| self.plan.dtypes.get(id).copied().flatten())
            .unwrap_or(self.g.values[id].dtype)
    }

    fn emit_i8(&mut self, name: &str, comment: &str, v: &[i8]) {
        let _ = writeln!(
            self.data,
            "/* {} */\nstatic const int8_t {name}[{}] = {{\n{}\n}};\n",
            cc(comment),
            v.len().max(1),
            if v.is_empty() {
                "    0,".to_string()
            } else {
                c_list(v, 24, |x| x.to_string())
            }
        );
        self.const_bytes += v.len() as u64;
    }

    fn emit_i32(&mut self, name: &str, comment: &str, v: &[i32]) {
        let _ = writeln!(
            self.data,
            "/* {} */\nstatic const int32_t {name}[{}] = {{\n{}\n}};\n",
            cc(comment),
            v.len().max(1),
            if v.is_empty() {
                "    0,".to_string()
            } else {
                c_list(v, 8, |x| c_i32(*x))
            }
        );
        self.const_bytes += 4 * v.len() as u64;
    }

    fn emit_f32(&mut self, name: &str, comment: &str, v: &[f32]) {
        let _ = writeln!(
            self.data,
            "/* {} */\nstatic const float {name}[{}] = {{\n{}\n}};\n",
            cc(comment),
            v.len().max(1),
            c_list(v, 6, |x| c_f32(*x))
        );
        self.const_bytes += 4 * v.len() as u64;
    }

    fn emit_params(&mut self, ty: &str, name: &str, fields: &str, bytes: u64) {
        let _ = writeln!(self.params, "static const {ty} {name} = {{{fields}}};");
        self.const_bytes += bytes;
    }

    /// C expression for an int8 operand: an arena slot or a flash constant.
    fn ptr_i8(&mut self, id: ValueId) -> Result<String> {
        if let Some(Some(off)) = self.plan.offsets.get(id) {
            return Ok(format!("(int8_t *)(eo_arena + {off})"));
        }
        if let Some(n) = self.const_names.get(&id) {
            return Ok(n.clone());
        }
        let t = self.const_tensor(id).ok_or_else(|| {
            CodegenError::Model(format!("'{}' has no memory", self.g.values[id].name))
        })?;
        let TensorData::I8(v) = &t.data else {
            return Err(CodegenError::Model(format!(
                "constant operand '{}' is {}, int8 expected",
                self.g.values[id].name,
                t.dtype()
            )));
        };
        let v = v.clone();
        let name = format!("eo_const{id}");
        let comment = format!("constant '{}'", self.g.values[id].name);
        self.emit_i8(&name, &comment, &v);
        self.const_names.insert(id, name.clone());
        Ok(name)
    }

    fn out_ptr(&self, node: &Node, dtype: DType) -> Result<String> {
        let o = node.outputs[0];
        let off = self
            .plan
            .offsets
            .get(o)
            .copied()
            .flatten()
            .ok_or_else(|| self.unsupported(node, "output has no arena slot"))?;
        Ok(match dtype {
            DType::F32 => format!("(float *)(void *)(eo_arena + {off})"),
            _ => format!("(int8_t *)(eo_arena + {off})"),
        })
    }

    fn require_i8(&self, node: &Node, id: ValueId, what: &str) -> Result<()> {
        let dt = self.dtype(id);
        if dt != DType::I8 {
            return Err(self.unsupported(
                node,
                format!("{what} is {dt}; generated code supports int8 activations"),
            ));
        }
        Ok(())
    }

    fn stmt(&mut self, node: &Node, call: String) {
        let _ = writeln!(
            self.body,
            "    /* {}: {} */\n    {call};",
            cc(&node.name),
            node.op.name()
        );
    }

    fn node(&mut self, node: &Node) -> Result<()> {
        let x = node
            .input(0)
            .ok_or_else(|| self.unsupported(node, "missing input 0"))?;
        let k = self.layers;
        match &node.op {
            Op::Conv(a) => self.conv(node, a, k)?,
            Op::FullyConnected { activation, .. } => self.fc(node, *activation, k)?,
            Op::Binary { kind, activation } => self.binary(node, *kind, *activation, k)?,
            Op::AveragePool(a) => self.pool(node, a, false, k)?,
            Op::MaxPool(a) => self.pool(node, a, true, k)?,
            Op::Softmax { axis, beta } => self.softmax(node, *axis, *beta, k)?,
            // The float edge of a model quantized with float I/O (the TFLite
            // converter's default): the caller writes floats, the model quantizes.
            Op::Quantize if self.dtype(x) == DType::F32 => self.quantize_f32(node, x, k)?,
            // A float island (DEQUANTIZE ... QUANTIZE) of a quantized model.
            Op::Unary(kind) if self.dtype(x) == DType::F32 => self.unary_f32(node, *kind, x, k)?,
            Op::Unary(_) | Op::Clip { .. } | Op::Quantize => {
                self.require_i8(node, x, "input")?;
                self.require_i8(node, node.outputs[0], "output")?;
                let table = match tflm_relu(&node.op) {
                    // TFLM's RELU / RELU6 Prepare differs from LiteRT's (tflm.rs).
                    Some(six) => {
                        let (qx, qy) = self.act_in_out(node)?;
                        if six {
                            activation::tflm_relu6_table(qx)
                        } else {
                            activation::tflm_relu_table(qx, qy)
                        }
                    }
                    None => self.table_by_runtime(node, false)?,
                };
                self.lut(node, x, table, k)?;
            }
            Op::Dequantize => self.dequantize(node, x, k)?,
            Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity => self.reshape(node, x, k)?,
            Op::Transpose { perm } => self.transpose(node, perm, k)?,
            Op::Pad { mode, pads, value } => self.pad(node, *mode, pads, *value, k)?,
            Op::Concat { axis, activation } => self.concat(node, *axis, *activation, k)?,
            Op::StridedSlice(a) => {
                let xs = self.shape(x)?;
                let p = edgeopt_ir::shape::strided_slice_plan(a, &xs)
                    .map_err(|m| self.unsupported(node, m))?;
                self.slice(node, x, &p.dims, &p.start, &p.step, &p.len, k)?;
                self.requant_like_runtime(node, k)?;
            }
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            } => {
                let xs = self.shape(x)?;
                let g = edgeopt_ir::shape::slice_geometry(&xs, starts, ends, axes, steps)
                    .map_err(|m| self.unsupported(node, m))?;
                self.slice(node, x, &xs, &g.begin, &g.step, &g.count, k)?;
            }
            Op::Split { axis, split } => self.split(node, x, *axis, split, k)?,
            Op::Tile { .. } => self.tile(node, x, k)?,
            Op::Resize(a) => self.resize(node, x, a, k)?,
            Op::Gather { axis } => self.gather(node, *axis, k)?,
            Op::MatMul => self.batch_matmul(node, k)?,
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes,
                keepdims: _,
                noop_with_empty_axes,
            } => self.mean(node, x, axes.as_deref(), *noop_with_empty_axes, k)?,
            Op::Reduce { kind, .. } => {
                return Err(self.unsupported(
                    node,
                    format!("Reduce{kind:?} is not supported by the C generator"),
                ))
            }
            op @ (Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::Compare(_)
            | Op::Where
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::LogSoftmax { .. }
            | Op::GlobalAveragePool
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Fill
            | Op::Lstm { .. }
            | Op::TopK { .. }
            | Op::Gru { .. }
            | Op::Shape
            | Op::Cast { .. }
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::ConvInteger(_)
            | Op::MatMulInteger) => {
                return Err(self.unsupported(
                    node,
                    format!("{} is not supported by the C generator", op.name()),
                ))
            }
        }
        let _ = writeln!(self.body, "    EO_LAYER_DONE({k});");
        self.layers += 1;
        Ok(())
    }

    fn act_in_out(&self, node: &Node) -> Result<(Affine, Affine)> {
        let ctx = self.ctx(node);
        Ok((
            per_tensor(&ctx, ctx.in_quant(0), "input")?,
            per_tensor(&ctx, ctx.out_quant(0), "output")?,
        ))
    }

    fn conv(&mut self, node: &Node, a: &edgeopt_ir::ConvAttrs, k: usize) -> Result<()> {
        let ctx = self.ctx(node);
        let (x, w) = (node.input(0).unwrap(), node.input(1));
        let w = w.ok_or_else(|| self.unsupported(node, "missing weights"))?;
        self.require_i8(node, x, "input")?;
        self.require_i8(node, node.outputs[0], "output")?;
        if a.layout != edgeopt_ir::Layout::Nhwc {
            return Err(self.unsupported(node, "quantized Conv must be NHWC (TFLite layout)"));
        }
        let wt = self
            .const_tensor(w)
            .ok_or_else(|| self.unsupported(node, "weights must be constant"))?
            .clone();
        let TensorData::I8(wv) = &wt.data else {
            return Err(
                self.unsupported(node, format!("weights are {}, int8 expected", wt.dtype()))
            );
        };
        let xs = self.shape(x)?;
        let g = conv_geom(&ctx, a, &xs, &wt.shape)?;
        let (xq, yq) = self.act_in_out(node)?;
        let (wscales, wzps) = per_channel(&ctx, ctx.in_quant(1), g.m, "weights")?;
        if wzps.iter().any(|&z| z != 0) {
            return Err(self.unsupported(
                node,
                "weights with a nonzero zero point (TFLite int8 weights are symmetric)",
            ));
        }
        let stage = OutputStage::new(
            xq.scale,
            &wscales,
            yq,
            activation_range::<i8>(a.activation, yq),
        );
        let depthwise = g.cg() == 1 && g.group > 1;
        let pre = format!("eo_l{k}");
        if depthwise {
            // [M, kh, kw, 1] -> [kh, kw, M]: a tap's weights contiguous over channels.
            self.acc_i32 = self.acc_i32.max(g.m);
            let taps = g.h.kernel * g.w.kernel;
            let mut t = vec![0i8; wv.len()];
            for oc in 0..g.m {
                for tap in 0..taps {
                    t[tap * g.m + oc] = wv[oc * taps + tap];
                }
            }
            self.emit_i8(
                &format!("{pre}_w"),
                &format!(
                    "{}: depthwise weights [kh, kw, M] from {:?}",
                    node.name, wt.shape
                ),
                &t,
            );
        } else {
            self.scratch_i16 = self.scratch_i16.max(g.k_len());
            self.emit_i8(
                &format!("{pre}_w"),
                &format!("{}: weights {:?}", node.name, wt.shape),
                wv,
            );
        }
        let bias = match node.input(2) {
            Some(b) => {
                let bt = self
                    .const_tensor(b)
                    .ok_or_else(|| self.unsupported(node, "bias must be constant"))?;
                let TensorData::I32(bv) = &bt.data else {
                    return Err(self.unsupported(node, "bias must be int32"));
                };
                if bv.len() != g.m {
                    return Err(self.unsupported(node, "bias length differs from output channels"));
                }
                let bv = bv.clone();
                self.emit_i32(&format!("{pre}_b"), &format!("{}: bias", node.name), &bv);
                format!("{pre}_b")
            }
            None => "NULL".into(),
        };
        self.emit_i32(
            &format!("{pre}_m"),
            "requantization multipliers",
            &stage.multiplier,
        );
        self.emit_i32(&format!("{pre}_s"), "requantization shifts", &stage.shift);
        let f = format!(
            "{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {pre}_w, {bias}, {pre}_m, {pre}_s",
            g.n, g.h.input, g.w.input, g.c, g.h.output, g.w.output, g.m, g.h.kernel, g.w.kernel,
            g.h.stride, g.w.stride, g.h.dilation, g.w.dilation, g.h.pad_begin, g.w.pad_begin,
            g.group, depthwise as i32, xq.zp, yq.zp, stage.min, stage.max
        );
        self.emit_params("eo_conv_params", &format!("{pre}_p"), &f, 21 * 4 + 16);
        let xin = self.ptr_i8(x)?;
        let y = self.out_ptr(node, DType::I8)?;
        self.kernels.insert("conv");
        self.stmt(
            node,
            format!("eo_conv_s8(&{pre}_p, {xin}, {y}, eo_scratch, eo_acc)"),
        );
        Ok(())
    }

    fn fc(&mut self, node: &Node, act: Activation, k: usize) -> Result<()> {
        let ctx = self.ctx(node);
        let x = node.input(0).unwrap();
        let w = node
            .input(1)
            .ok_or_else(|| self.unsupported(node, "missing weights"))?;
        self.require_i8(node, x, "input")?;
        self.require_i8(node, node.outputs[0], "output")?;
        let wt = self
            .const_tensor(w)
            .ok_or_else(|| self.unsupported(node, "weights must be constant"))?
            .clone();
        let TensorData::I8(wv) = &wt.data else {
            return Err(
                self.unsupported(node, format!("weights are {}, int8 expected", wt.dtype()))
            );
        };
        if wt.shape.len() != 2 {
            return Err(self.unsupported(node, "weights must be [N, K]"));
        }
        let (nout, kk) = (wt.shape[0], wt.shape[1]);
        let xlen: usize = self.shape(x)?.iter().product();
        if kk == 0 || !xlen.is_multiple_of(kk) {
            return Err(self.unsupported(node, "input does not split into rows of K"));
        }
        let rows = xlen / kk;
        let (xq, yq) = self.act_in_out(node)?;
        let (wscales, wzps) = per_channel(&ctx, ctx.in_quant(1), nout, "weights")?;
        if wzps.iter().any(|&z| z != 0) {
            return Err(self.unsupported(node, "weights with a nonzero zero point"));
        }
        let stage = OutputStage::new(xq.scale, &wscales, yq, activation_range::<i8>(act, yq));
        self.scratch_i16 = self.scratch_i16.max(kk);
        let pre = format!("eo_l{k}");
        self.emit_i8(
            &format!("{pre}_w"),
            &format!("{}: weights {:?}", node.name, wt.shape),
            wv,
        );
        let bias = match node.input(2) {
            Some(b) => {
                let bt = self
                    .const_tensor(b)
                    .ok_or_else(|| self.unsupported(node, "bias must be constant"))?;
                let TensorData::I32(bv) = &bt.data else {
                    return Err(self.unsupported(node, "bias must be int32"));
                };
                if bv.len() != nout {
                    return Err(self.unsupported(node, "bias length differs from outputs"));
                }
                let bv = bv.clone();
                self.emit_i32(&format!("{pre}_b"), &format!("{}: bias", node.name), &bv);
                format!("{pre}_b")
            }
            None => "NULL".into(),
        };
        self.emit_i32(
            &format!("{pre}_m"),
            "requantization multipliers",
            &stage.multiplier,
        );
        self.emit_i32(&format!("{pre}_s"), "requantization shifts", &stage.shift);
        let f = format!(
            "{rows}, {kk}, {nout}, {}, {}, {}, {}, {pre}_w, {bias}, {pre}_m, {pre}_s",
            xq.zp, yq.zp, stage.min, stage.max
        );
        self.emit_params("eo_fc_params", &format!("{pre}_p"), &f, 7 * 4 + 16);
        let xin = self.ptr_i8(x)?;
        let y = self.out_ptr(node, DType::I8)?;
        self.kernels.insert("fc");
        self.stmt(node, format!("eo_fc_s8(&{pre}_p, {xin}, {y}, eo_scratch)"));
        Ok(())
    }

    fn binary(&mut self, node: &Node, kind: BinaryKind, act: Activation, k: usize) -> Result<()> {
        let ctx = self.ctx(node);
        let a = node.input(0).unwrap();
        let b = node
            .input(1)
            .ok_or_else(|| self.unsupported(node, "missing input 1"))?;
        if self.dtype(a) == DType::F32 {
            return self.binary_f32(node, kind, act, a, b, k);
        }
        for (id, what) in [(a, "input 0"), (b, "input 1"), (node.outputs[0], "output")] {
            self.require_i8(node, id, what)?;
        }
        let qa = per_tensor(&ctx, ctx.in_quant(0), "input 0")?;
        let qb = per_tensor(&ctx, ctx.in_quant(1), "input 1")?;
        let qy = per_tensor(&ctx, ctx.out_quant(0), "output")?;
        let (min, max) = activation_range::<i8>(act, qy);
        let (sa, sb) = (self.shape(a)?, self.shape(b)?);
        let out =
            edgeopt_runtime::kernels::quantized::elementwise::broadcast_shape(&ctx, &sa, &sb)?;
        if out.len() > MAX_RANK {
            return Err(self.unsupported(node, format!("rank {} > {MAX_RANK}", out.len())));
        }
        let count: usize = out.iter().product();
        let bc = !(sa == out && sb == out);
        let st = |s: &[usize]| {
            edgeopt_runtime::kernels::quantized::elementwise::broadcast_strides(s, &out)
        };
        // Kernel params as elementwise::tflite_binary computes them.
        let (kind_c, ls, m1, s1, m2, s2, mo, so) = match kind {
            BinaryKind::Add | BinaryKind::Sub => {
                let left_shift = 20;
                let twice_max = (2.0f32 * qa.scale.max(qb.scale)) as f64;
                let (m1, s1) =
                    quantize_multiplier_smaller_than_one_exp(qa.scale as f64 / twice_max);
                let (m2, s2) =
                    quantize_multiplier_smaller_than_one_exp(qb.scale as f64 / twice_max);
                let (mo, so) = quantize_multiplier_smaller_than_one_exp(
                    twice_max / (((1i32 << left_shift) as f32) * qy.scale) as f64,
                );
                let kc = if kind == BinaryKind::Sub { 1 } else { 0 };
                (kc, left_shift, m1, s1, m2, s2, mo, so)
            }
            BinaryKind::Mul => {
                let (m, s) =
                    quantize_multiplier(qa.scale as f64 * qb.scale as f64 / qy.scale as f64);
                (2, 0, 0, 0, 0, 0, m, s)
            }
            other => {
                return Err(self.unsupported(node, format!("quantized {other:?} is not supported")))
            }
        };
        let pre = format!("eo_l{k}");
        let f = format!(
            "{kind_c}, {count}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {ls}, {}, {}, {}, {}, {}, {}",
            out.len(),
            i32s(&dims(&out)),
            i32s(&dims(&st(&sa))),
            i32s(&dims(&st(&sb))),
            bc as i32,
            qa.zp,
            qb.zp,
            qy.zp,
            min,
            max,
            c_i32(m1),
            c_i32(s1),
            c_i32(m2),
            c_i32(s2),
            c_i32(mo),
            c_i32(so)
        );
        self.emit_params(
            "eo_binary_params",
            &format!("{pre}_p"),
            &f,
            (3 + 3 * MAX_RANK as u64 + 13) * 4,
        );
        let pa = self.ptr_i8(a)?;
        let pb = self.ptr_i8(b)?;
        let y = self.out_ptr(node, DType::I8)?;
        self.kernels.insert("binary");
        self.stmt(node, format!("eo_binary_s8(&{pre}_p, {pa}, {pb}, {y})"));
        Ok(())
    }

    fn pool(
        &mut self,
        node: &Node,
        a: &edgeopt_ir::PoolAttrs,
        is_max: bool,
        k: usize,
    ) -> Result<()> {
        let ctx = self.ctx(node);
        let x = node.input(0).unwrap();
        self.require_i8(node, x, "input")?;
        self.require_i8(node, node.outputs[0], "output")?;
        let xs = self.shape(x)?;
        if a.layout != edgeopt_ir::Layout::Nhwc || xs.len() != 4 {
            return Err(self.unsupported(node, "quantized pooling must be NHWC 2-D"));
        }
        if a.dilations.iter().any(|&d| d != 1) {
            return Err(self.unsupported(node, "pooling with dilation"));
        }
        let (qx, qy) = self.act_in_out(node)?;
        if qx != qy {
            return Err(self.unsupported(
                node,
                "pooling needs identical input and output quantization",
            ));
        }
        let axes = window_axes(
            &ctx,
            &[xs[1], xs[2]],
            &a.kernel_shape,
            &a.strides,
            &a.dilations,
            &a.pads,
            a.auto_pad,
            a.ceil_mode,
        )?;
        let (ay, ax) = (axes[0], axes[1]);
        // The runtime errors on a window lying entirely in the padding; refuse it here.
        for (ax_, n) in [(ay, xs[1]), (ax, xs[2])] {
            for o in 0..ax_.output {
                let s = (o * ax_.stride) as isize - ax_.pad_begin as isize;
                if s + ax_.kernel as isize <= 0 || s >= n as isize {
                    return Err(
                        self.unsupported(node, "a pooling window lies entirely in the padding")
                    );
                }
            }
        }
        let (min, max) = activation_range::<i8>(a.activation, qy);
        let pre = format!("eo_l{k}");
        let f = format!(
            "{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {min}, {max}",
            xs[0],
            xs[1],
            xs[2],
            xs[3],
            ay.output,
            ax.output,
            ay.kernel,
            ax.kernel,
            ay.stride,
            ax.stride,
            ay.pad_begin,
            ax.pad_begin,
            is_max as i32
        );
        self.emit_params("eo_pool_params", &format!("{pre}_p"), &f, 15 * 4);
        self.call_i8(node, x, &pre, "pool", "eo_pool_s8")?;
        Ok(())
    }

    fn softmax(&mut self, node: &Node, axis: i64, beta: f32, k: usize) -> Result<()> {
        let x = node.input(0).unwrap();
        self.require_i8(node, x, "input")?;
        self.require_i8(node, node.outputs[0], "output")?;
        let xs = self.shape(x)?;
        let r = xs.len() as i64;
        if r == 0 || !(axis == -1 || axis == r - 1) {
            return Err(self.unsupported(node, "softmax over an axis other than the last"));
        }
        let (qx, _qy) = self.act_in_out(node)?;
        // activation::softmax, Numerics::Reference: the same parameter computation.
        const SCALED_DIFF_INTEGER_BITS: i32 = 5;
        let max_real = ((1i64 << 31) - 1) as f64;
        let real =
            (beta as f64 * qx.scale as f64 * (1i64 << (31 - SCALED_DIFF_INTEGER_BITS)) as f64)
                .min(max_real);
        let (im, ils) = quantize_multiplier(real);
        let diff_min = -calculate_input_radius(SCALED_DIFF_INTEGER_BITS, ils, 31);
        let depth = *xs.last().unwrap();
        let rows = xs.iter().product::<usize>() / depth.max(1);
        let pre = format!("eo_l{k}");
        let f = format!(
            "{rows}, {depth}, {}, {}, {}",
            c_i32(im),
            c_i32(ils),
            c_i32(diff_min)
        );
        self.emit_params("eo_softmax_params", &format!("{pre}_p"), &f, 5 * 4);
        self.call_i8(node, x, &pre, "softmax", "eo_softmax_s8")?;
        Ok(())
    }

    /// The node's kernel applied to the 256 int8 values (element-wise ops), or the
    /// runtime's requantization (`requant_only`: a reshape/transpose whose output
    /// parameters differ from its input's).
    fn table_by_runtime(&self, node: &Node, requant_only: bool) -> Result<Vec<i8>> {
        let all = Tensor::new(vec![256], TensorData::I8((-128..=127).collect()))?;
        let ctx = self.ctx(node);
        let out = if requant_only {
            requantize_if_needed::<i8>(&ctx, all)?
        } else {
            let ins: Vec<Option<Tensor>> = node
                .inputs
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    if i == 0 {
                        Some(all.clone())
                    } else {
                        x.and_then(|id| self.const_tensor(id).cloned())
                    }
                })
                .collect();
            let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
            eval_node(&ctx, &refs)?.remove(0)
        };
        match out.data {
            TensorData::I8(v) if v.len() == 256 => Ok(v),
            _ => Err(self.unsupported(node, "not an element-wise int8 -> int8 op")),
        }
    }

    fn lut(&mut self, node: &Node, x: ValueId, table: Vec<i8>, k: usize) -> Result<()> {
        let pre = format!("eo_l{k}");
        self.emit_i8(
            &format!("{pre}_t"),
            &format!("{}: output for each input -128..127", node.name),
            &table,
        );
        let count: usize = self.shape(node.outputs[0])?.iter().product();
        self.emit_params(
            "eo_lut_params",
            &format!("{pre}_p"),
            &format!("{count}, {pre}_t"),
            8,
        );
        self.call_i8(node, x, &pre, "lut", "eo_lut_s8")?;
        Ok(())
    }

    /// QUANTIZE float -> int8 (per tensor): `round(x / scale) + zp` in f32, ties away
    /// from zero, saturated: TFLite's `AffineQuantize`, as the runtime computes it.
    fn quantize_f32(&mut self, node: &Node, x: ValueId, k: usize) -> Result<()> {
        self.require_i8(node, node.outputs[0], "output")?;
        let ctx = self.ctx(node);
        let q = per_tensor(&ctx, ctx.out_quant(0), "output")?;
        let pre = format!("eo_l{k}");
        let count: usize = self.shape(node.outputs[0])?.iter().product();
        self.emit_params(
            "eo_quant_params",
            &format!("{pre}_p"),
            &format!("{count}, {}, {}", c_f32(q.scale), q.zp),
            12,
        );
        let off = self
            .plan
            .offsets
            .get(x)
            .copied()
            .flatten()
            .ok_or_else(|| self.unsupported(node, "float input has no arena slot"))?;
        let xin = format!("(const float *)(const void *)(eo_arena + {off})");
        let y = self.out_ptr(node, DType::I8)?;
        self.kernels.insert("quantize");
        self.stmt(node, format!("eo_quantize_f32_s8(&{pre}_p, {xin}, {y})"));
        Ok(())
    }

    fn dequantize(&mut self, node: &Node, x: ValueId, k: usize) -> Result<()> {
        self.require_i8(node, x, "input")?;
        let o = node.outputs[0];
        if self.dtype(o) != DType::F32 {
            return Err(self.unsupported(node, "DEQUANTIZE must produce float32"));
        }
        let all = Tensor::new(vec![256], TensorData::I8((-128..=127).collect()))?;
        let out = eval_node(&self.ctx(node), &[Some(&all)])?.remove(0);
        let TensorData::F32(table) = out.data else {
            return Err(self.unsupported(node, "DEQUANTIZE did not produce float32"));
        };
        let pre = format!("eo_l{k}");
        self.emit_f32(
            &format!("{pre}_t"),
            &format!("{}: value of each input -128..127", node.name),
            &table,
        );
        let count: usize = self.shape(o)?.iter().product();
        self.emit_params(
            "eo_dequant_params",
            &format!("{pre}_p"),
            &format!("{count}, {pre}_t"),
            8,
        );
        let xin = self.ptr_i8(x)?;
        let y = self.out_ptr(node, DType::F32)?;
        self.kernels.insert("dequantize");
        self.stmt(node, format!("eo_dequantize_s8(&{pre}_p, {xin}, {y})"));
        Ok(())
    }

    /// `func(&<pre>_p, x, y)`: a kernel of file `kernel` on the int8 input `x` and the
    /// node's int8 output, its parameters emitted as `<pre>_p` before.
    fn call_i8(
        &mut self,
        node: &Node,
        x: ValueId,
        pre: &str,
        kernel: &'static str,
        func: &str,
    ) -> Result<()> {
        let xin = self.ptr_i8(x)?;
        let y = self.out_ptr(node, DType::I8)?;
        self.kernels.insert(kernel);
        self.stmt(node, format!("{func}(&{pre}_p, {xin}, {y})"));
        Ok(())
    }

    /// The runtime requantizes a data-movement op (transpose, tile, slice, resize)
    /// whose output parameters differ from its input's: the C applies the same table
    /// after the move.
    fn requant_like_runtime(&mut self, node: &Node, k: usize) -> Result<()> {
        if self.needs_requant(node) {
            let t = self.table_by_runtime(node, true)?;
            self.lut(node, node.outputs[0], t, k)?;
        }
        Ok(())
    }

    fn needs_requant(&self, node: &Node) -> bool {
        let ctx = self.ctx(node);
        ctx.out_quant(0).is_some() && ctx.in_quant(0) != ctx.out_quant(0)
    }

    fn reshape(&mut self, node: &Node, x: ValueId, k: usize) -> Result<()> {
        let o = node.outputs[0];
        let dt = self.dtype(x);
        let bytes = self.plan.sizes.get(o).copied().unwrap_or(0);
        let xin = if dt == DType::I8 {
            self.ptr_i8(x)?
        } else {
            match self.plan.offsets.get(x).copied().flatten() {
                Some(off) => format!("(eo_arena + {off})"),
                None => return Err(self.unsupported(node, format!("{dt} constant input"))),
            }
        };
        let y = self.out_ptr(node, dt)?;
        self.kernels.insert("copy");
        if self.plan.offsets.get(x).copied().flatten()
            == self.plan.offsets.get(o).copied().flatten()
        {
            let _ = writeln!(
                self.body,
                "    /* {}: {} aliases its input (no copy) */",
                cc(&node.name),
                node.op.name()
            );
        } else {
            self.stmt(node, format!("eo_copy({xin}, {y}, {bytes})"));
        }
        if self.needs_requant(node) {
            self.require_i8(node, x, "input")?;
            let t = self.table_by_runtime(node, true)?;
            self.lut(node, o, t, k)?;
        }
        Ok(())
    }

    fn transpose(&mut self, node: &Node, perm: &[usize], k: usize) -> Result<()> {
        let x = node.input(0).unwrap();
        self.require_i8(node, x, "input")?;
        let xs = self.shape(x)?;
        let r = xs.len();
        let perm: Vec<usize> = if perm.is_empty() {
            (0..r).rev().collect()
        } else {
            perm.to_vec()
        };
        let mut seen = vec![false; r];
        if r > MAX_RANK
            || perm.len() != r
            || perm
                .iter()
                .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
        {
            return Err(self.unsupported(node, format!("perm {perm:?} for rank {r}")));
        }
        let mut ist = vec![1usize; r];
        for d in (0..r.saturating_sub(1)).rev() {
            ist[d] = ist[d + 1] * xs[d + 1];
        }
        let out: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
        let pst: Vec<usize> = perm.iter().map(|&p| ist[p]).collect();
        let count: usize = out.iter().product();
        let pre = format!("eo_l{k}");
        let f = format!("{r}, {count}, {}, {}", i32s(&dims(&out)), i32s(&dims(&pst)));
        self.emit_params(
            "eo_transpose_params",
            &format!("{pre}_p"),
            &f,
            (2 + 2 * MAX_RANK as u64) * 4,
        );
        self.call_i8(node, x, &pre, "transpose", "eo_transpose_s8")?;
        self.requant_like_runtime(node, k)?;
        Ok(())
    }

    fn pad(
        &mut self,
        node: &Node,
        mode: PadMode,
        pads: &[i64],
        value: f32,
        k: usize,
    ) -> Result<()> {
        let x = node.input(0).unwrap();
        self.require_i8(node, x, "input")?;
        if mode != PadMode::Constant {
            return Err(self.unsupported(node, format!("{mode:?} padding")));
        }
        let (qx, qy) = self.act_in_out(node)?;
        if qx != qy {
            return Err(self.unsupported(
                node,
                "quantized Pad needs identical input and output quantization",
            ));
        }
        let xs = self.shape(x)?;
        let r = xs.len();
        if r > MAX_RANK || pads.len() != 2 * r || pads.iter().any(|&p| p < 0) {
            return Err(self.unsupported(
                node,
                format!("pads {pads:?} for rank {r} (negative pads are not supported)"),
            ));
        }
        let out: Vec<usize> = (0..r)
            .map(|d| xs[d] + pads[d] as usize + pads[d + r] as usize)
            .collect();
        // movement::pad: the real value quantized with the output's parameters.
        let fill = (qy.zp + (value / qy.scale).round() as i32).clamp(-128, 127);
        let before: Vec<usize> = pads[..r].iter().map(|&p| p as usize).collect();
        let pre = format!("eo_l{k}");
        let f = format!(
            "{r}, {}, {}, {}, {fill}",
            i32s(&dims(&xs)),
            i32s(&dims(&out)),
            i32s(&dims(&before))
        );
        self.emit_params(
            "eo_pad_params",
            &format!("{pre}_p"),
            &f,
            (2 + 3 * MAX_RANK as u64) * 4,
        );
        self.call_i8(node, x, &pre, "pad", "eo_pad_s8")?;
        Ok(())
    }

    /// GATHER of constant indices (data movement; the output keeps the input's
    /// parameters): one strided copy per index, as [`Self::split`] copies a piece
    /// (`eo_split_part`).
    fn gather(&mut self, node: &Node, axis: i64, k: usize) -> Result<()> {
        let x = node
            .input(0)
            .ok_or_else(|| self.unsupported(node, "missing input 0"))?;
        let o = node.outputs[0];
        self.require_i8(node, x, "input")?;
        self.require_i8(node, o, "output")?;
        let idx = node
            .input(1)
            .and_then(|i| self.const_tensor(i))
            .map(|t| t.to_i64_vec())
            .ok_or_else(|| self.unsupported(node, "indices computed at run time"))?;
        let xs = self.shape(x)?;
        let ax =
            edgeopt_ir::shape::norm_axis(axis, xs.len()).map_err(|m| self.unsupported(node, m))?;
        let ctx = self.ctx(node);
        if per_tensor(&ctx, ctx.in_quant(0), "input")?
            != per_tensor(&ctx, ctx.out_quant(0), "output")?
        {
            return Err(self.unsupported(node, "output parameters differ from the input's"));
        }
        let outer: usize = xs[..ax].iter().product();
        let inner: usize = xs[ax + 1..].iter().product();
        if outer != 1 && idx.len() != 1 {
            return Err(self.unsupported(
                node,
                "several indices along an inner axis (one copy per index needs outer = 1)",
            ));
        }
        let in_chunk = xs[ax] * inner;
        let xin = self.ptr_i8(x)?;
        let y = self.ptr_i8(o)?;
        for (j, &i) in idx.iter().enumerate() {
            let d = xs[ax] as i64;
            let i = if i < 0 { i + d } else { i };
            if !(0..d).contains(&i) {
                return Err(self.unsupported(node, format!("index {i} out of 0..{d}")));
            }
            let pre = format!("eo_l{k}_{j}");
            let offset = i as usize * inner;
            let f = format!("{outer}, {inner}, {in_chunk}, {offset}");
            self.emit_params("eo_split_part", &format!("{pre}_p"), &f, 4 * 4);
            self.stmt(
                node,
                format!("eo_split_part_s8(&{pre}_p, {xin}, {y} + {})", j * inner),
            );
        }
        self.kernels.insert("split");
        Ok(())
    }

    fn concat(&mut self, node: &Node, axis: i64, act: Activation, k: usize) -> Result<()> {
        let ctx = self.ctx(node);
        let o = node.outputs[0];
        self.require_i8(node, o, "output")?;
        let oshape = self.shape(o)?;
        let ax = edgeopt_ir::shape::norm_axis(axis, oshape.len())
            .map_err(|m| self.unsupported(node, m))?;
        let qy = per_tensor(&ctx, ctx.out_quant(0), "output")?;
        let (amin, amax) = activation_range::<i8>(act, qy);
        let outer: usize = oshape[..ax].iter().product();
        let inner: usize = oshape[ax + 1..].iter().product();
        let out_chunk = oshape[ax] * inner;
        let y = self.out_ptr(node, DType::I8)?;
        let mut offset = 0usize;
        for (i, xi) in node.inputs.iter().enumerate() {
            let Some(xi) = *xi else { continue };
            self.require_i8(node, xi, "input")?;
            let xs = self.shape(xi)?;
            let chunk = xs.get(ax).copied().unwrap_or(0) * inner;
            let qx = per_tensor(&ctx, ctx.in_quant(i), "input")?;
            let pre = format!("eo_l{k}_{i}");
            let table = if qx == qy {
                "NULL".to_string()
            } else {
                // movement::concat's float rescale (TFLite ConcatenationWithScaling).
                let inverse_output_scale = 1.0f32 / qy.scale;
                let scale = qx.scale * inverse_output_scale;
                let bias = -(qx.zp as f32) * scale;
                let t: Vec<i8> = (-128..=127i32)
                    .map(|e| {
                        let q = (e as f32 * scale + bias).round() as i32 + qy.zp;
                        q.clamp(-128, 127).clamp(amin, amax) as i8
                    })
                    .collect();
                self.emit_i8(&format!("{pre}_t"), "rescale table", &t);
                format!("{pre}_t")
            };
            let f = format!("{outer}, {chunk}, {out_chunk}, {offset}, {table}, {amin}, {amax}");
            self.emit_params("eo_concat_part", &format!("{pre}_p"), &f, 7 * 4);
            let xin = self.ptr_i8(xi)?;
            self.stmt(node, format!("eo_concat_part_s8(&{pre}_p, {xin}, {y})"));
            offset += chunk;
        }
        self.kernels.insert("concat");
        Ok(())
    }

    /// STRIDED_SLICE / SLICE: the elements `start[d] + i * step[d]`, `i < count[d]`, of
    /// an input of shape `dims` (row-major), gathered by `eo_slice_s8`. Dims of extent 1
    /// only move the base; adjacent dims that stay contiguous merge, so the kernel's
    /// last dim is as long a run as the slice allows.
    #[allow(clippy::too_many_arguments)]
    fn slice(
        &mut self,
        node: &Node,
        x: ValueId,
        dims: &[usize],
        start: &[i64],
        step: &[i64],
        count: &[usize],
        k: usize,
    ) -> Result<()> {
        self.require_i8(node, x, "input")?;
        self.require_i8(node, node.outputs[0], "output")?;
        let r = dims.len();
        if start.len() != r || step.len() != r || count.len() != r {
            return Err(self.unsupported(node, "slice geometry does not match the input rank"));
        }
        let mut stride = vec![1i64; r];
        for d in (0..r.saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * dims[d + 1] as i64;
        }
        let total: usize = count.iter().product();
        let mut base = 0i64;
        // (extent, input stride) of the dims that move, outermost first.
        let mut kept: Vec<(i64, i64)> = Vec::new();
        for d in 0..r {
            base += start[d] * stride[d];
            if count[d] != 1 {
                kept.push((count[d] as i64, step[d] * stride[d]));
            }
        }
        // Merge dim d into d+1 when stepping d equals running through d+1 entirely.
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for (n, st) in kept {
            match merged.last_mut() {
                Some(last) if last.1 == n * st => *last = (last.0 * n, st),
                _ => merged.push((n, st)),
            }
        }
        if merged.len() > MAX_RANK {
            return Err(self.unsupported(
                node,
                format!("a slice of rank {} (at most {MAX_RANK})", merged.len()),
            ));
        }
        let fits = |v: i64| i32::try_from(v).is_ok();
        if total > 0
            && (!fits(base)
                || merged
                    .iter()
                    .any(|&(n, st)| !fits(n) || !fits(st) || !fits(n * st)))
        {
            return Err(self.unsupported(node, "slice offsets exceed int32"));
        }
        let shape: Vec<i32> = merged.iter().map(|&(n, _)| n as i32).collect();
        let strides: Vec<i32> = merged.iter().map(|&(_, st)| st as i32).collect();
        let pad = |mut v: Vec<i32>| {
            v.resize(MAX_RANK, 0);
            v
        };
        let pre = format!("eo_l{k}");
        let f = format!(
            "{}, {total}, {}, {}, {}",
            merged.len(),
            if total > 0 { base } else { 0 },
            i32s(&pad(shape)),
            i32s(&pad(strides))
        );
        self.emit_params(
            "eo_slice_params",
            &format!("{pre}_p"),
            &f,
            (3 + 2 * MAX_RANK as u64) * 4,
        );
        self.call_i8(node, x, &pre, "slice", "eo_slice_s8")?;
        Ok(())
    }

    /// SPLIT: one `eo_split_part_s8` per output (the runtime copies; TFLite Micro's SPLIT
    /// too: the outputs carry the input's parameters).
    fn split(
        &mut self,
        node: &Node,
        x: ValueId,
        axis: i64,
        split: &[usize],
        k: usize,
    ) -> Result<()> {
        let ctx = self.ctx(node);
        self.require_i8(node, x, "input")?;
        let xs = self.shape(x)?;
        let ax =
            edgeopt_ir::shape::norm_axis(axis, xs.len()).map_err(|m| self.unsupported(node, m))?;
        if split.len() != node.outputs.len() || split.iter().sum::<usize>() != xs[ax] {
            return Err(self.unsupported(
                node,
                format!(
                    "split {split:?} of axis {ax} (size {}) into {} outputs",
                    xs[ax],
                    node.outputs.len()
                ),
            ));
        }
        let qx = ctx.in_quant(0);
        let outer: usize = xs[..ax].iter().product();
        let inner: usize = xs[ax + 1..].iter().product();
        let in_chunk = xs[ax] * inner;
        let xin = self.ptr_i8(x)?;
        let mut offset = 0usize;
        for (i, (&o, &w)) in node.outputs.iter().zip(split).enumerate() {
            self.require_i8(node, o, "output")?;
            if ctx.out_quant(i).is_some() && ctx.out_quant(i) != qx {
                return Err(self.unsupported(
                    node,
                    "a SPLIT output whose quantization differs from the input's",
                ));
            }
            let chunk = w * inner;
            let off =
                self.plan.offsets.get(o).copied().flatten().ok_or_else(|| {
                    self.unsupported(node, format!("output {i} has no arena slot"))
                })?;
            let pre = format!("eo_l{k}_{i}");
            let f = format!("{outer}, {chunk}, {in_chunk}, {offset}");
            self.emit_params("eo_split_part", &format!("{pre}_p"), &f, 4 * 4);
            self.stmt(
                node,
                format!("eo_split_part_s8(&{pre}_p, {xin}, (int8_t *)(eo_arena + {off}))"),
            );
            offset += chunk;
        }
        self.kernels.insert("split");
        Ok(())
    }

    /// TILE: `eo_tile_s8` over the input and output shapes (leading dims of extent 1 on
    /// both sides dropped).
    fn tile(&mut self, node: &Node, x: ValueId, k: usize) -> Result<()> {
        self.require_i8(node, x, "input")?;
        self.require_i8(node, node.outputs[0], "output")?;
        let xs = self.shape(x)?;
        let ys = self.shape(node.outputs[0])?;
        if xs.len() != ys.len()
            || xs
                .iter()
                .zip(&ys)
                .any(|(&i, &o)| i == 0 || !o.is_multiple_of(i))
        {
            return Err(self.unsupported(node, format!("tile of {xs:?} to {ys:?}")));
        }
        let lead = xs
            .iter()
            .zip(&ys)
            .take_while(|(&i, &o)| i == 1 && o == 1)
            .count()
            .min(xs.len().saturating_sub(1));
        let (xs, ys) = (&xs[lead..], &ys[lead..]);
        if xs.len() > MAX_RANK {
            return Err(self.unsupported(node, format!("rank {} > {MAX_RANK}", xs.len())));
        }
        let pre = format!("eo_l{k}");
        let f = format!("{}, {}, {}", xs.len(), i32s(&dims(xs)), i32s(&dims(ys)));
        self.emit_params(
            "eo_tile_params",
            &format!("{pre}_p"),
            &f,
            (1 + 2 * MAX_RANK as u64) * 4,
        );
        self.call_i8(node, x, &pre, "tile", "eo_tile_s8")?;
        self.requant_like_runtime(node, k)?;
        Ok(())
    }

    /// RESIZE_BILINEAR (int8, NHWC): `eo_resize_bilinear_s8` with the 10-bit scales of
    /// TFLite's `ResizeBilinearInteger` (the kernel TFLite Micro runs), computed here as
    /// the runtime's `movement::resize_bilinear` does.
    fn resize(
        &mut self,
        node: &Node,
        x: ValueId,
        a: &edgeopt_ir::ResizeAttrs,
        k: usize,
    ) -> Result<()> {
        use edgeopt_ir::{CoordTransform, ResizeMode};
        self.require_i8(node, x, "input")?;
        self.require_i8(node, node.outputs[0], "output")?;
        if a.mode != ResizeMode::Linear {
            return Err(self.unsupported(node, format!("{:?} resize (bilinear only)", a.mode)));
        }
        let (align, half) = match a.coord {
            CoordTransform::AlignCorners => (true, false),
            CoordTransform::HalfPixel => (false, true),
            CoordTransform::Asymmetric => (false, false),
            c => {
                return Err(self.unsupported(
                    node,
                    format!("bilinear resize with {c:?} coordinates (TFLite has align_corners / half_pixel_centers)"),
                ))
            }
        };
        let xs = self.shape(x)?;
        let ys = self.shape(node.outputs[0])?;
        if xs.len() != 4 || ys.len() != 4 || xs[0] != ys[0] || xs[3] != ys[3] {
            return Err(self.unsupported(
                node,
                format!("bilinear resize of {xs:?} to {ys:?} (NHWC, H and W only)"),
            ));
        }
        let (n, ih, iw, c, oh, ow) = (xs[0], xs[1], xs[2], xs[3], ys[1], ys[2]);
        // The runtime's bound: coordinates are int32 with 10 fractional bits.
        let limit = (i32::MAX >> 11) as usize;
        if [ih, iw, oh, ow].iter().any(|&d| d == 0 || d > limit) {
            return Err(self.unsupported(node, format!("resize {ih}x{iw} to {oh}x{ow}")));
        }
        let scale_10 = |i: usize, o: usize| -> i32 {
            let (i, o) = (i as i32, o as i32);
            if align && o > 1 {
                ((1 << 10) * (i - 1) + (o - 1) / 2) / (o - 1)
            } else {
                ((1 << 10) * i + o / 2) / o
            }
        };
        let pre = format!("eo_l{k}");
        let f = format!(
            "{n}, {ih}, {iw}, {c}, {oh}, {ow}, {}, {}, {}",
            scale_10(ih, oh),
            scale_10(iw, ow),
            half as i32
        );
        self.emit_params("eo_resize_bilinear_params", &format!("{pre}_p"), &f, 9 * 4);
        self.call_i8(node, x, &pre, "resize", "eo_resize_bilinear_s8")?;
        self.requant_like_runtime(node, k)?;
        Ok(())
    }

    /// MEAN over `axes` (keep_dims only changes the output's shape, not its layout):
    /// TFLite Micro's `QuantizedMeanOrSum`, with the requantization of
    /// [`reduce::mean_multiplier`], the runtime's own.
    fn mean(
        &mut self,
        node: &Node,
        x: ValueId,
        axes: Option<&[i64]>,
        noop_with_empty_axes: bool,
        k: usize,
    ) -> Result<()> {
        let xs = self.shape(x)?;
        let red = edgeopt_ir::shape::reduce_axes(xs.len(), axes, noop_with_empty_axes)
            .map_err(|m| self.unsupported(node, m))?;
        if xs.contains(&0) {
            return Err(self.unsupported(node, "MEAN of an empty tensor"));
        }
        let g = ReduceGeom::new(&xs, &red).map_err(|m| self.unsupported(node, m))?;
        let geom = format!(
            "{}, {}, {}, {}, {}, {}, {}, {}",
            g.kept_shape.len(),
            g.count,
            i32s(&dims(&g.kept_shape)),
            i32s(&dims(&g.kept_stride)),
            g.red_shape.len(),
            g.red_count,
            i32s(&dims(&g.red_shape)),
            i32s(&dims(&g.red_stride)),
        );
        let bytes = (8 + 4 * MAX_RANK as u64) * 4;
        let pre = format!("eo_l{k}");
        if self.dtype(x) == DType::F32 && self.dtype(node.outputs[0]) == DType::F32 {
            self.emit_params(
                "eo_mean_params",
                &format!("{pre}_p"),
                &format!("{geom}, 0, 0, 0, 0"),
                bytes,
            );
            let xin = self.ptr_f32(node, x)?;
            let y = self.out_ptr(node, DType::F32)?;
            self.kernels.insert("mean_f32");
            self.stmt(node, format!("eo_mean_f32(&{pre}_p, {xin}, {y})"));
            return Ok(());
        }
        self.require_i8(node, x, "input")?;
        self.require_i8(node, node.outputs[0], "output")?;
        let (qx, qy) = self.act_in_out(node)?;
        let (mult, shift) = reduce::mean_multiplier(qx, qy, g.red_count);
        if !(-31..=31).contains(&shift) {
            return Err(self.unsupported(
                node,
                format!(
                    "MEAN rescale shift {shift} out of range (input / output scales too far apart)"
                ),
            ));
        }
        let zp_sum = (qx.zp as i64).wrapping_mul(g.red_count as i64) as i32;
        let f = format!(
            "{geom}, {}, {}, {}, {}",
            c_i32(zp_sum),
            qy.zp,
            c_i32(mult),
            c_i32(shift)
        );
        self.emit_params("eo_mean_params", &format!("{pre}_p"), &f, bytes);
        self.call_i8(node, x, &pre, "mean", "eo_mean_s8")?;
        Ok(())
    }

    /// C expression for a float operand: an arena slot or a flash constant.
    fn ptr_f32(&mut self, node: &Node, id: ValueId) -> Result<String> {
        if self.dtype(id) != DType::F32 {
            return Err(self.unsupported(
                node,
                format!("operand is {}, float32 expected", self.dtype(id)),
            ));
        }
        if let Some(Some(off)) = self.plan.offsets.get(id) {
            return Ok(format!("(const float *)(const void *)(eo_arena + {off})"));
        }
        if let Some(n) = self.const_names.get(&id) {
            return Ok(n.clone());
        }
        let t = self.const_tensor(id).ok_or_else(|| {
            CodegenError::Model(format!("'{}' has no memory", self.g.values[id].name))
        })?;
        let TensorData::F32(v) = &t.data else {
            return Err(self.unsupported(node, "float constant expected"));
        };
        let v = v.clone();
        let name = format!("eo_const{id}");
        let comment = format!("constant '{}'", self.g.values[id].name);
        self.emit_f32(&name, &comment, &v);
        self.const_names.insert(id, name.clone());
        Ok(name)
    }

    /// int8 BATCH_MATMUL of two activations (attention's Q·Kᵀ and P·V): TFLite Micro's
    /// reference BatchMatMul, with the runtime's output stage ([`OutputStage`], as
    /// `fc::batch_matmul` builds it under `Numerics::Tflm`).
    fn batch_matmul(&mut self, node: &Node, k: usize) -> Result<()> {
        let ctx = self.ctx(node);
        let a = node.input(0).unwrap();
        let b = node
            .input(1)
            .ok_or_else(|| self.unsupported(node, "missing input 1"))?;
        for (id, what) in [(a, "lhs"), (b, "rhs"), (node.outputs[0], "output")] {
            self.require_i8(node, id, what)?;
        }
        let (sa, sb) = (self.shape(a)?, self.shape(b)?);
        if sa.len() < 2 || sb.len() < 2 {
            return Err(self.unsupported(node, "BATCH_MATMUL needs operands of rank >= 2"));
        }
        let (m, kk) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        if kk != k2 {
            return Err(self.unsupported(node, format!("inner dims differ: {sa:?} x {sb:?}")));
        }
        let (ab, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
        let batch = edgeopt_ir::shape::broadcast(ab, bb).map_err(|m| self.unsupported(node, m))?;
        if batch.len() > MAX_RANK {
            return Err(self.unsupported(node, format!("{} batch dims > {MAX_RANK}", batch.len())));
        }
        let st = |s: &[usize], mat: usize| -> Vec<usize> {
            edgeopt_runtime::kernels::quantized::elementwise::broadcast_strides(s, &batch)
                .into_iter()
                .map(|x| x * mat)
                .collect()
        };
        let qa = per_tensor(&ctx, ctx.in_quant(0), "lhs")?;
        let qb = per_tensor(&ctx, ctx.in_quant(1), "rhs")?;
        let qy = per_tensor(&ctx, ctx.out_quant(0), "output")?;
        let stage = OutputStage::new(
            qa.scale,
            &[qb.scale],
            qy,
            activation_range::<i8>(Activation::None, qy),
        );
        self.scratch_i16 = self.scratch_i16.max(kk);
        let pre = format!("eo_l{k}");
        let f = format!(
            "{}, {}, {}, {}, {}, {m}, {kk}, {n}, {}, {}, {}, {}, {}, {}, {}",
            batch.len(),
            batch.iter().product::<usize>(),
            i32s(&dims(&batch)),
            i32s(&dims(&st(ab, m * kk))),
            i32s(&dims(&st(bb, kk * n))),
            qa.zp,
            qb.zp,
            qy.zp,
            stage.min,
            stage.max,
            c_i32(stage.multiplier[0]),
            c_i32(stage.shift[0])
        );
        self.emit_params(
            "eo_batch_matmul_params",
            &format!("{pre}_p"),
            &f,
            (12 + 3 * MAX_RANK as u64) * 4,
        );
        let pa = self.ptr_i8(a)?;
        let pb = self.ptr_i8(b)?;
        let y = self.out_ptr(node, DType::I8)?;
        self.kernels.insert("batch_matmul");
        self.stmt(
            node,
            format!("eo_batch_matmul_s8(&{pre}_p, {pa}, {pb}, {y}, eo_scratch)"),
        );
        Ok(())
    }

    /// Float ADD / SUB / MUL / DIV (a float island): TFLite Micro's reference float
    /// kernels, one IEEE operation per element, then the fused activation's clamp.
    fn binary_f32(
        &mut self,
        node: &Node,
        kind: BinaryKind,
        act: Activation,
        a: ValueId,
        b: ValueId,
        k: usize,
    ) -> Result<()> {
        let y_id = node.outputs[0];
        for id in [b, y_id] {
            if self.dtype(id) != DType::F32 {
                return Err(self.unsupported(node, "float op with a non-float operand"));
            }
        }
        let kind_c = match kind {
            BinaryKind::Add => 0,
            BinaryKind::Sub => 1,
            BinaryKind::Mul => 2,
            BinaryKind::Div => 3,
            other => {
                return Err(self.unsupported(node, format!("float {other:?} is not supported")))
            }
        };
        let (clamp, lo, hi) = match act {
            Activation::None => (0, 0.0, 0.0),
            Activation::Relu => (1, 0.0, f32::MAX),
            Activation::Relu6 => (1, 0.0, 6.0),
            Activation::ReluN1To1 => (1, -1.0, 1.0),
        };
        let (sa, sb) = (self.shape(a)?, self.shape(b)?);
        let out = edgeopt_ir::shape::broadcast(&sa, &sb).map_err(|m| self.unsupported(node, m))?;
        if out.len() > MAX_RANK {
            return Err(self.unsupported(node, format!("rank {} > {MAX_RANK}", out.len())));
        }
        let count: usize = out.iter().product();
        let bc = !(sa == out && sb == out);
        let st = |s: &[usize]| {
            edgeopt_runtime::kernels::quantized::elementwise::broadcast_strides(s, &out)
        };
        let pre = format!("eo_l{k}");
        let f = format!(
            "{kind_c}, {count}, {}, {}, {}, {}, {}, {clamp}, {}, {}",
            out.len(),
            i32s(&dims(&out)),
            i32s(&dims(&st(&sa))),
            i32s(&dims(&st(&sb))),
            bc as i32,
            c_f32(lo),
            c_f32(hi)
        );
        self.emit_params(
            "eo_binary_f32_params",
            &format!("{pre}_p"),
            &f,
            (6 + 3 * MAX_RANK as u64) * 4,
        );
        let pa = self.ptr_f32(node, a)?;
        let pb = self.ptr_f32(node, b)?;
        let y = self.out_ptr(node, DType::F32)?;
        self.kernels.insert("float");
        self.stmt(node, format!("eo_binary_f32(&{pre}_p, {pa}, {pb}, {y})"));
        Ok(())
    }

    /// Float SQRT (a float island): correctly rounded, as TFLite Micro's `std::sqrt`.
    fn unary_f32(&mut self, node: &Node, kind: UnaryKind, x: ValueId, k: usize) -> Result<()> {
        let kind_c = match kind {
            UnaryKind::Sqrt => 0,
            other => {
                return Err(self.unsupported(
                    node,
                    format!("float {other:?} is not supported by the C generator"),
                ))
            }
        };
        if self.dtype(node.outputs[0]) != DType::F32 {
            return Err(self.unsupported(node, "float op with a non-float output"));
        }
        let count: usize = self.shape(node.outputs[0])?.iter().product();
        let pre = format!("eo_l{k}");
        self.emit_params(
            "eo_unary_f32_params",
            &format!("{pre}_p"),
            &format!("{kind_c}, {count}"),
            8,
        );
        let xin = self.ptr_f32(node, x)?;
        let y = self.out_ptr(node, DType::F32)?;
        self.kernels.insert("float");
        self.stmt(node, format!("eo_unary_f32(&{pre}_p, {xin}, {y})"));
        Ok(())
    }

    /// Name, shape, dtype, per-tensor quantization and arena offset of a graph input/output.
    #[allow(clippy::type_complexity)]
    fn io_desc(&self, id: ValueId) -> Result<(String, Vec<usize>, DType, Option<Affine>, usize)> {
        let v = &self.g.values[id];
        let shape = self.shape(id)?;
        let dt = self.dtype(id);
        let q = v.quant.as_ref().and_then(|q| {
            (q.scale.len() == 1).then(|| Affine {
                scale: q.scale[0],
                zp: q.zero_point.first().copied().unwrap_or(0) as i32,
            })
        });
        let off = self
            .plan
            .offsets
            .get(id)
            .copied()
            .flatten()
            .ok_or_else(|| {
                CodegenError::Model(format!(
                    "graph input/output '{}' is not in the arena",
                    v.name
                ))
            })?;
        Ok((v.name.clone(), shape, dt, q, off))
    }

    fn model_h(&self) -> Result<String> {
        let mut h = String::new();
        let _ = writeln!(
            h,
            "/* model.h: generated by `edgeopt compile` from '{}'. Do not edit. */\n\
             #ifndef EDGEOPT_MODEL_H\n#define EDGEOPT_MODEL_H\n\n#include <stdint.h>\n\n\
             /* One static arena holds every activation (the static memory planner's peak). */\n\
             #define EDGEOPT_ARENA_BYTES {}\n/* Kernel scratch outside the arena (int16 elements). */\n\
             #define EDGEOPT_SCRATCH_ELEMS {}\n#define EDGEOPT_ACC_ELEMS {}\n#define EDGEOPT_NUM_LAYERS {}\n\
             #define EDGEOPT_NUM_INPUTS {}\n#define EDGEOPT_NUM_OUTPUTS {}\n",
            cc(&self.g.name),
            self.plan.arena_bytes,
            self.scratch_i16.max(1),
            self.acc_i32.max(1),
            self.layers,
            self.g.inputs.len(),
            self.g.outputs.len()
        );
        for (kind, ids) in [("INPUT", &self.g.inputs), ("OUTPUT", &self.g.outputs)] {
            for (i, &id) in ids.iter().enumerate() {
                let (name, shape, dt, q, _off) = self.io_desc(id)?;
                let n: usize = shape.iter().product();
                let _ = writeln!(h, "/* {kind} {i}: '{}', {dt} {shape:?} */", cc(&name));
                let _ = writeln!(h, "#define EDGEOPT_{kind}{i}_ELEMS {n}");
                let _ = writeln!(h, "#define EDGEOPT_{kind}{i}_BYTES {}", dt.storage_bytes(n));
                let _ = writeln!(
                    h,
                    "#define EDGEOPT_{kind}{i}_IS_FLOAT {}",
                    (dt == DType::F32) as i32
                );
                let dimsz: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                let _ = writeln!(h, "#define EDGEOPT_{kind}{i}_RANK {}", shape.len());
                let _ = writeln!(
                    h,
                    "#define EDGEOPT_{kind}{i}_SHAPE {{{}}}",
                    dimsz.join(", ")
                );
                if let Some(q) = q {
                    let _ = writeln!(h, "#define EDGEOPT_{kind}{i}_SCALE {}", c_f32(q.scale));
                    let _ = writeln!(h, "#define EDGEOPT_{kind}{i}_ZERO_POINT {}", q.zp);
                }
                h.push('\n');
            }
        }
        h.push_str(
            "/* Clears the arena. */\nvoid edgeopt_model_init(void);\n\
             /* Where to write input `index` before each invoke (the arena reuses it during\n \
             * inference, so refill it every time). */\nvoid *edgeopt_model_input(int index);\n\
             /* Runs the layers in order. Returns 0. */\nint edgeopt_model_invoke(void);\n\
             /* Output `index`, valid until the next invoke. */\nconst void *edgeopt_model_output(int index);\n\n\
             #endif /* EDGEOPT_MODEL_H */\n",
        );
        Ok(h)
    }

    fn model_c(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(
            c,
            "/* model.c: generated by `edgeopt compile` from '{}'. Do not edit.\n * \
             {} layers; const data {} bytes (flash); arena {} bytes. */\n\
             #include \"model.h\"\n#include \"edgeopt_kernels.h\"\n\n#include <string.h>\n",
            cc(&self.g.name),
            self.layers,
            self.const_bytes,
            self.plan.arena_bytes
        );
        c.push_str(
            "/* Define EDGEOPT_PROFILE and provide edgeopt_layer_done() to time each layer. */\n\
             #ifdef EDGEOPT_PROFILE\nvoid edgeopt_layer_done(int layer);\n\
             #define EO_LAYER_DONE(k) edgeopt_layer_done(k)\n#else\n\
             #define EO_LAYER_DONE(k) ((void)0)\n#endif\n\n",
        );
        c.push_str(&self.data);
        c.push_str(&self.params);
        let _ = writeln!(
            c,
            "\n/* Every activation lives at its planned offset in this one arena. */\n\
             #if defined(__GNUC__)\nstatic uint8_t eo_arena[EDGEOPT_ARENA_BYTES] __attribute__((aligned(16)));\n\
             #else\nstatic uint8_t eo_arena[EDGEOPT_ARENA_BYTES];\n#endif\n\
             static int16_t eo_scratch[EDGEOPT_SCRATCH_ELEMS];\n\
             static int32_t eo_acc[EDGEOPT_ACC_ELEMS];\n"
        );
        let offs = |ids: &[ValueId]| -> String {
            ids.iter()
                .map(|&id| {
                    self.plan
                        .offsets
                        .get(id)
                        .copied()
                        .flatten()
                        .unwrap_or(0)
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            c,
            "static const uint32_t eo_input_offsets[{}] = {{{}}};\nstatic const uint32_t eo_output_offsets[{}] = {{{}}};\n",
            self.g.inputs.len().max(1),
            offs(&self.g.inputs),
            self.g.outputs.len().max(1),
            offs(&self.g.outputs)
        );
        c.push_str(
            "void edgeopt_model_init(void) { memset(eo_arena, 0, sizeof eo_arena); }\n\n\
             void *edgeopt_model_input(int index) {\n    if (index < 0 || index >= EDGEOPT_NUM_INPUTS) return 0;\n    \
             return eo_arena + eo_input_offsets[index];\n}\n\n\
             const void *edgeopt_model_output(int index) {\n    if (index < 0 || index >= EDGEOPT_NUM_OUTPUTS) return 0;\n    \
             return eo_arena + eo_output_offsets[index];\n}\n\nint edgeopt_model_invoke(void) {\n",
        );
        c.push_str(&self.body);
        c.push_str("    (void)eo_scratch;\n    (void)eo_acc;\n    return 0;\n}\n");
        c
    }
}

fn readme(target: &Target, plan: &MemoryPlan) -> String {
    let flags = if target.gcc_flags.is_empty() {
        "-std=c99 -O2".to_string()
    } else {
        format!("{} -std=c99 -Os", target.gcc_flags.join(" "))
    };
    format!(
        "# Generated by `edgeopt compile` (target {name})\n\n\
         Files: `model.h` (API, shapes, quantization parameters, arena size), `model.c` (weights\n\
         as `const` arrays, the layers, one static arena of {arena} bytes), `edgeopt_kernels.c/.h`\n\
         (portable C99 int8 kernels; SMLAD fast paths when `__ARM_FEATURE_DSP` is defined).\n\n\
         ## Use in a firmware project\n\n\
         1. Copy the four `.c`/`.h` files into the project and compile them with the rest, e.g.\n   \
         `arm-none-eabi-gcc {flags} -c model.c edgeopt_kernels.c`. No libm, no heap, no\n   \
         RTOS: the code only needs `<stdint.h>`, `<stddef.h>` and `memset`/`memmove`/`memcpy`.\n\
         2. Call `edgeopt_model_init()` once.\n\
         3. For each inference: write the quantized input into `edgeopt_model_input(0)`\n   \
         (`EDGEOPT_INPUT0_BYTES` bytes; quantize real values as\n   \
         `clamp(round(x / EDGEOPT_INPUT0_SCALE) + EDGEOPT_INPUT0_ZERO_POINT, -128, 127)`), call\n   \
         `edgeopt_model_invoke()`, read `edgeopt_model_output(0)`. The arena reuses the input's\n   \
         memory during inference: refill it before every invoke.\n\
         4. Define `EO_NO_DSP` to force the portable kernels (same results, slower).\n\n\
         The results are bit-exact with TensorFlow Lite Micro's reference kernels (and\n\
         CMSIS-NN) running the same int8 model. Weights are `static const` so the linker puts them\n\
         in flash (`.rodata`); the arena and the kernel scratch are in `.bss`.\n",
        name = target.name,
        arena = plan.arena_bytes,
    )
}
