//! What the instruction model sees of each generated layer: the kernel the C generator
//! calls for it and the counts its loops run (MACs, output elements, receptive-field
//! copies, ...). One layer per graph node the generator emits (every node whose outputs
//! are not all folded), in graph order: the same index as `EO_LAYER_DONE(k)` in model.c.

use edgeopt_ir::{shape, BinaryKind, DType, Graph, Node, Op, ReduceKind, ValueId};
use edgeopt_runtime::planner::MemoryPlan;
use serde::{Deserialize, Serialize};

/// The C kernel a layer runs (crates/codegen/c/edgeopt_kernels.c), as the instruction
/// model groups them: each kernel has its own loop structure, hence its own constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kernel {
    /// eo_conv_s8, not depthwise: receptive field to int16 scratch, then dot products
    /// (SMLAD on the DSP path).
    Conv,
    /// eo_fc_s8: one int16 row, then dot products.
    Fc,
    /// eo_depthwise_s8: channel loop innermost, no SMLAD.
    Depthwise,
    /// eo_binary_s8 without broadcasting (Add/Sub: three rescalings per element; Mul:
    /// one).
    Binary,
    /// eo_binary_s8 with broadcasting (index arithmetic per element).
    BinaryBroadcast,
    /// eo_pool_s8 (max and average).
    Pool,
    /// eo_softmax_s8.
    Softmax,
    /// eo_lut_s8: a 256-entry table per element (activations, requantization).
    Lut,
    /// eo_copy / eo_split_part_s8: memcpy of whole parts (nothing when the planner
    /// aliases a reshape), plus a requantizing table.
    Copy,
    /// eo_concat_part_s8.
    Concat,
    /// eo_pad_s8.
    Pad,
    /// eo_transpose_s8.
    Transpose,
    /// eo_slice_s8 (StridedSlice, Slice).
    Slice,
    /// eo_tile_s8.
    Tile,
    /// Gather.
    Gather,
    /// eo_resize_bilinear_s8 (and nearest).
    Resize,
    /// eo_mean_s8 / eo_mean_f32.
    Mean,
    /// eo_batch_matmul_s8.
    MatMul,
    /// eo_dequantize_s8.
    Dequantize,
    /// eo_quantize_f32_s8.
    QuantizeFloat,
    /// eo_unary_f32.
    FloatUnary,
    /// eo_binary_f32.
    FloatBinary,
}

impl Kernel {
    pub const ALL: [Kernel; 22] = [
        Kernel::Conv,
        Kernel::Fc,
        Kernel::Depthwise,
        Kernel::Binary,
        Kernel::BinaryBroadcast,
        Kernel::Pool,
        Kernel::Softmax,
        Kernel::Lut,
        Kernel::Copy,
        Kernel::Concat,
        Kernel::Pad,
        Kernel::Transpose,
        Kernel::Slice,
        Kernel::Tile,
        Kernel::Gather,
        Kernel::Resize,
        Kernel::Mean,
        Kernel::MatMul,
        Kernel::Dequantize,
        Kernel::QuantizeFloat,
        Kernel::FloatUnary,
        Kernel::FloatBinary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Conv => "conv",
            Kernel::Fc => "fc",
            Kernel::Depthwise => "depthwise",
            Kernel::Binary => "binary",
            Kernel::BinaryBroadcast => "binary_broadcast",
            Kernel::Pool => "pool",
            Kernel::Softmax => "softmax",
            Kernel::Lut => "lut",
            Kernel::Copy => "copy",
            Kernel::Concat => "concat",
            Kernel::Pad => "pad",
            Kernel::Transpose => "transpose",
            Kernel::Slice => "slice",
            Kernel::Tile => "tile",
            Kernel::Gather => "gather",
            Kernel::Resize => "resize",
            Kernel::Mean => "mean",
            Kernel::MatMul => "mat_mul",
            Kernel::Dequantize => "dequantize",
            Kernel::QuantizeFloat => "quantize_float",
            Kernel::FloatUnary => "float_unary",
            Kernel::FloatBinary => "float_binary",
        }
    }

    /// The features this kernel's instruction count is linear in (see [`Features`]).
    /// Kept small: a feature that no loop of the kernel runs would only fit noise.
    pub fn features(self) -> &'static [Feature] {
        use Feature::*;
        match self {
            // dot products (SMLAD over groups of 4, a scalar tail), the receptive field
            // copy, one requantization per output, one eo_dot2 call per channel pair.
            Kernel::Conv | Kernel::Fc => &[Call, MacsMain, MacsTail, Patch, Out, Pairs],
            // MACs in the channel loop, loop set-up per (pixel, tap), requantization.
            Kernel::Depthwise => &[Call, MacsMain, Taps, Out],
            // Add/Sub rescale both operands and the sum (3 eo_mbqm_small), Mul once:
            // measured 146 vs 73 instructions per element on the corpus.
            Kernel::Binary | Kernel::BinaryBroadcast => &[Call, Out, AddOut],
            // one read per in-bounds window element, one division/clamp per output.
            Kernel::Pool => &[Call, Taps, Out],
            Kernel::Softmax => &[Call, Out, Rows],
            Kernel::Lut
            | Kernel::Resize
            | Kernel::Dequantize
            | Kernel::QuantizeFloat
            | Kernel::FloatUnary
            | Kernel::FloatBinary
            | Kernel::Transpose
            | Kernel::Tile
            | Kernel::Gather => &[Call, Out],
            Kernel::Copy => &[Call, Bytes, Requant],
            Kernel::Concat | Kernel::Slice => &[Call, Out, Requant],
            Kernel::Pad => &[Call, Out, In],
            Kernel::Mean => &[Call, In, Out],
            Kernel::MatMul => &[Call, MacsMain, Out],
        }
    }
}

/// One count a layer's loops run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// 1 per call: argument set-up, prologue, loop set-up.
    Call,
    /// Conv/FC: MACs in whole groups of 4 along the dot product (SMLAD on the DSP
    /// path); depthwise and matmul: all MACs.
    MacsMain,
    /// Conv/FC: MACs of the dot product's tail (length mod 4), always scalar.
    MacsTail,
    /// Conv/FC: receptive-field elements copied to the int16 scratch (padding too).
    Patch,
    /// Output elements.
    Out,
    /// Conv/FC: eo_dot2 / eo_dot calls (output pixels x ceil(channels / 2) per group).
    Pairs,
    /// Depthwise: (output pixel, in-bounds tap) pairs; pool: in-bounds window elements
    /// over all outputs.
    Taps,
    /// Bytes moved by memcpy.
    Bytes,
    /// Elements passed through a requantizing table.
    Requant,
    /// Input elements.
    In,
    /// Softmax rows.
    Rows,
    /// Binary: output elements of an Add or Sub (more rescaling than Mul).
    AddOut,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::Call => "call",
            Feature::MacsMain => "macs_main",
            Feature::MacsTail => "macs_tail",
            Feature::Patch => "patch",
            Feature::Out => "out",
            Feature::Pairs => "pairs",
            Feature::Taps => "taps",
            Feature::Bytes => "bytes",
            Feature::Requant => "requant",
            Feature::In => "in",
            Feature::Rows => "rows",
            Feature::AddOut => "add_out",
        }
    }
}

/// One generated layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerFeatures {
    /// Index of the node in `graph.nodes`.
    pub node: usize,
    pub name: String,
    pub op: String,
    pub kernel: Kernel,
    /// (feature, count); only the kernel's features.
    pub counts: Vec<(Feature, f64)>,
    /// MACs (all), for reports.
    pub macs: u64,
    /// Bytes read from activations and constants and written, for the energy estimate.
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Constant bytes the layer reads (weights, biases, tables).
    pub weight_bytes: u64,
    /// Activation bytes of the layer's inputs and outputs.
    pub activation_bytes: u64,
}

impl LayerFeatures {
    pub fn count(&self, f: Feature) -> f64 {
        self.counts
            .iter()
            .find(|(g, _)| *g == f)
            .map_or(0.0, |(_, v)| *v)
    }
}

/// A node the instruction model has no kernel for (the C generator does not support it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("node '{node}' ({op}): {msg}")]
pub struct FeatureError {
    pub node: String,
    pub op: String,
    pub msg: String,
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

/// Sum over output positions of the in-bounds window taps along one axis.
fn valid_taps(
    input: usize,
    kernel: usize,
    stride: usize,
    dil: usize,
    pad: usize,
    out: usize,
) -> usize {
    let mut n = 0;
    for o in 0..out {
        for j in 0..kernel {
            let i = (o * stride + j * dil) as i64 - pad as i64;
            if i >= 0 && (i as usize) < input {
                n += 1;
            }
        }
    }
    n
}

fn window_valid(w: &shape::Window) -> usize {
    (0..w.kernel.len())
        .map(|d| {
            valid_taps(
                w.input[d],
                w.kernel[d],
                w.strides[d],
                w.dilations[d],
                w.pads_begin[d],
                w.output[d],
            )
        })
        .product()
}

/// The layers the C generator emits for `graph` with `plan` (batch 1), in order.
pub fn layers(graph: &Graph, plan: &MemoryPlan) -> Result<Vec<LayerFeatures>, FeatureError> {
    let mut out = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        if node
            .outputs
            .iter()
            .all(|&o| plan.folded.get(o) == Some(&true))
        {
            continue;
        }
        out.push(layer(graph, plan, i, node)?);
    }
    Ok(out)
}

fn layer(
    graph: &Graph,
    plan: &MemoryPlan,
    i: usize,
    node: &Node,
) -> Result<LayerFeatures, FeatureError> {
    let fail = |msg: String| FeatureError {
        node: node.name.clone(),
        op: node.op.name().to_string(),
        msg,
    };
    let shape_of = |v: ValueId| -> Result<Vec<usize>, FeatureError> {
        if let Some(t) = &graph.values[v].data {
            return Ok(t.shape.clone());
        }
        plan.shapes
            .get(v)
            .cloned()
            .flatten()
            .ok_or_else(|| fail(format!("no shape for '{}'", graph.values[v].name)))
    };
    let dtype_of = |v: ValueId| -> DType {
        plan.dtypes
            .get(v)
            .copied()
            .flatten()
            .unwrap_or(graph.values[v].dtype)
    };
    let bytes_of = |v: ValueId| -> Result<u64, FeatureError> {
        Ok(dtype_of(v).storage_bytes(numel(&shape_of(v)?)) as u64)
    };
    let x = node
        .input(0)
        .ok_or_else(|| fail("missing input 0".into()))?;
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| fail("no output".into()))?;
    let ys = shape_of(y)?;
    let out_elems = numel(&ys) as f64;
    let in_elems = numel(&shape_of(x)?) as f64;
    let is_const = |v: ValueId| graph.values[v].data.is_some() || plan.folded.get(v) == Some(&true);
    // Requantization: the output's parameters differ from the (first) input's.
    let requant = |v: ValueId| {
        graph.values[y].quant.is_some() && graph.values[v].quant != graph.values[y].quant
    };
    let mut weight_bytes = 0u64;
    let mut act_bytes = 0u64;
    for v in node.inputs.iter().flatten() {
        if is_const(*v) {
            weight_bytes += bytes_of(*v)?;
        } else {
            act_bytes += bytes_of(*v)?;
        }
    }
    let mut written = 0u64;
    for &o in &node.outputs {
        written += bytes_of(o)?;
    }
    use Feature::*;
    let mut macs = 0u64;
    let (kernel, counts): (Kernel, Vec<(Feature, f64)>) = match &node.op {
        Op::Conv(a) => {
            let w = node
                .input(1)
                .ok_or_else(|| fail("missing weights".into()))?;
            let g = shape::conv_geometry(a, &shape_of(x)?, &shape_of(w)?).map_err(fail)?;
            let px = g.batch * numel(&g.window.output);
            let cg = g.in_channels / g.group;
            let mg = g.out_channels / g.group;
            if cg == 1 && g.group > 1 {
                let taps = g.batch * window_valid(&g.window);
                macs = (taps * mg * g.group) as u64;
                (
                    Kernel::Depthwise,
                    vec![
                        (Call, 1.0),
                        (MacsMain, macs as f64),
                        (Taps, taps as f64),
                        (Out, out_elems),
                    ],
                )
            } else {
                let k = numel(&g.window.kernel) * cg;
                macs = (px * g.out_channels * k) as u64;
                conv_like(Kernel::Conv, px * g.group, k, mg, out_elems)
            }
        }
        Op::FullyConnected { .. } => {
            let w = node
                .input(1)
                .ok_or_else(|| fail("missing weights".into()))?;
            let ws = shape_of(w)?;
            if ws.len() != 2 || ws[1] == 0 {
                return Err(fail(format!("weights {ws:?}: [N, K] expected")));
            }
            let (n, k) = (ws[0], ws[1]);
            let rows = in_elems as usize / k;
            macs = (rows * n * k) as u64;
            conv_like(Kernel::Fc, rows, k, n, out_elems)
        }
        Op::Binary { .. } if dtype_of(x) == DType::F32 => {
            (Kernel::FloatBinary, vec![(Call, 1.0), (Out, out_elems)])
        }
        Op::Binary { kind, .. } => {
            let same = node
                .inputs
                .iter()
                .flatten()
                .map(|&v| shape_of(v))
                .collect::<Result<Vec<_>, _>>()?
                .iter()
                .all(|s| numel(s) == numel(&ys));
            let k = if same {
                Kernel::Binary
            } else {
                Kernel::BinaryBroadcast
            };
            let add = match kind {
                BinaryKind::Mul => 0.0,
                BinaryKind::Add
                | BinaryKind::Sub
                | BinaryKind::Div
                | BinaryKind::Max
                | BinaryKind::Min
                | BinaryKind::Pow => out_elems,
            };
            (k, vec![(Call, 1.0), (Out, out_elems), (AddOut, add)])
        }
        Op::AveragePool(p) | Op::MaxPool(p) => {
            let xs = shape_of(x)?;
            let (_, w) = shape::pool_geometry(p, &xs).map_err(fail)?;
            let c = *xs.last().unwrap_or(&1);
            let taps = xs[0] * window_valid(&w) * c;
            (
                Kernel::Pool,
                vec![(Call, 1.0), (Taps, taps as f64), (Out, out_elems)],
            )
        }
        Op::Softmax { .. } => {
            let last = *ys.last().unwrap_or(&1) as f64;
            (
                Kernel::Softmax,
                vec![
                    (Call, 1.0),
                    (Out, out_elems),
                    (Rows, out_elems / last.max(1.0)),
                ],
            )
        }
        Op::Quantize if dtype_of(x) == DType::F32 => {
            (Kernel::QuantizeFloat, vec![(Call, 1.0), (Out, out_elems)])
        }
        Op::Unary(_) if dtype_of(x) == DType::F32 => {
            (Kernel::FloatUnary, vec![(Call, 1.0), (Out, out_elems)])
        }
        Op::Unary(_) | Op::Clip { .. } | Op::Quantize => {
            (Kernel::Lut, vec![(Call, 1.0), (Out, out_elems)])
        }
        Op::Dequantize => (Kernel::Dequantize, vec![(Call, 1.0), (Out, out_elems)]),
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity => {
            let aliased =
                plan.offsets.get(x).copied().flatten() == plan.offsets.get(y).copied().flatten();
            let bytes = if aliased { 0.0 } else { written as f64 };
            let rq = if requant(x) { out_elems } else { 0.0 };
            (
                Kernel::Copy,
                vec![(Call, 1.0), (Bytes, bytes), (Requant, rq)],
            )
        }
        Op::Split { .. } => (
            Kernel::Copy,
            vec![(Call, 1.0), (Bytes, written as f64), (Requant, 0.0)],
        ),
        Op::Concat { .. } => {
            let mut rq = 0.0;
            for v in node.inputs.iter().flatten() {
                if requant(*v) {
                    rq += numel(&shape_of(*v)?) as f64;
                }
            }
            (
                Kernel::Concat,
                vec![(Call, 1.0), (Out, out_elems), (Requant, rq)],
            )
        }
        Op::StridedSlice(_) | Op::Slice { .. } => {
            let rq = if requant(x) { out_elems } else { 0.0 };
            (
                Kernel::Slice,
                vec![(Call, 1.0), (Out, out_elems), (Requant, rq)],
            )
        }
        Op::Pad { .. } => (
            Kernel::Pad,
            vec![(Call, 1.0), (Out, out_elems), (In, in_elems)],
        ),
        Op::Transpose { .. } => (Kernel::Transpose, vec![(Call, 1.0), (Out, out_elems)]),
        Op::Tile { .. } => (Kernel::Tile, vec![(Call, 1.0), (Out, out_elems)]),
        Op::Gather { .. } => (Kernel::Gather, vec![(Call, 1.0), (Out, out_elems)]),
        Op::Resize(_) => (Kernel::Resize, vec![(Call, 1.0), (Out, out_elems)]),
        Op::MatMul => {
            let b = node
                .input(1)
                .ok_or_else(|| fail("missing input 1".into()))?;
            let bs = shape_of(b)?;
            let k = if bs.len() >= 2 { bs[bs.len() - 2] } else { 1 };
            macs = (out_elems as usize * k) as u64;
            (
                Kernel::MatMul,
                vec![(Call, 1.0), (MacsMain, macs as f64), (Out, out_elems)],
            )
        }
        Op::Reduce {
            kind: ReduceKind::Mean,
            ..
        } => (
            Kernel::Mean,
            vec![(Call, 1.0), (In, in_elems), (Out, out_elems)],
        ),
        Op::Reduce { .. }
        | Op::ConvTranspose(_)
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
        | Op::MatMulInteger => {
            return Err(fail(format!(
                "{} has no C kernel, hence no instruction model",
                node.op.name()
            )))
        }
    };
    Ok(LayerFeatures {
        node: i,
        name: node.name.clone(),
        op: node.op.name().to_string(),
        kernel,
        counts,
        macs,
        bytes_read: act_bytes + weight_bytes,
        bytes_written: written,
        weight_bytes,
        activation_bytes: act_bytes + written,
    })
}

/// Conv and FC: `rows` receptive fields (output pixels x groups) of length `k`, each
/// against the group's `mg` output channels, written as `out` elements.
fn conv_like(
    kernel: Kernel,
    rows: usize,
    k: usize,
    mg: usize,
    out: f64,
) -> (Kernel, Vec<(Feature, f64)>) {
    use Feature::*;
    let rows = rows as f64;
    let dots = rows * mg.div_ceil(2) as f64;
    let macs = rows * mg as f64;
    (
        kernel,
        vec![
            (Call, 1.0),
            (MacsMain, macs * (k / 4 * 4) as f64),
            (MacsTail, macs * (k % 4) as f64),
            (Patch, rows * k as f64),
            (Out, out),
            (Pairs, dots),
        ],
    )
}
