//! The arena executor: runs a graph with every activation stored in ONE byte buffer
//! of exactly [`MemoryPlan::arena_bytes`], each at its planned offset.
//!
//! It proves a memory plan. Node by node, the inputs are decoded from their slots in
//! the arena, the kernel ([`crate::kernels::eval_node`]) runs, and its outputs are
//! encoded back into the arena at their offsets; the graph outputs are decoded from
//! the arena at the end. If the plan let two live tensors overlap, a later write
//! would clobber an earlier value and the outputs would differ from the plain
//! executor's ([`crate::run`]); equal outputs, bit for bit, show the plan is sound for
//! that graph.
//!
//! Tensors are stored as they would be on a device: little-endian, 4-bit types packed
//! two per byte (low nibble first), bool as one byte. Constants are read from the graph
//! (flash), not from the arena. Kernel-internal temporaries (im2col buffers,
//! accumulators, the decoded copies of the inputs made here) live outside the arena:
//! the plan covers tensors, not kernel scratch. Values the plan folds (computed from
//! constants only, see [`crate::planner::PlanOptions::fold_constants`]) are computed
//! once before the first node and kept beside the constants, outside the arena.

use crate::error::{Result, RuntimeError};
use crate::executor::check_inputs;
use crate::kernels::{eval_node, NodeCtx};
use crate::options::ExecOptions;
use crate::planner::{plan, MemoryPlan};
use edgeopt_ir::{DType, Graph, Tensor, TensorData};
use half::f16;

/// Plans the graph for the shapes of `inputs`, then runs it inside the planned arena.
pub fn run_in_arena(graph: &Graph, inputs: &[Tensor], opts: ExecOptions) -> Result<Vec<Tensor>> {
    check_inputs(graph, inputs)?;
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let p = plan(graph, &shapes)?;
    run_with_plan(graph, &p, inputs, opts)
}

/// Runs `graph` on `inputs` with every activation at its offset in one buffer of
/// `plan.arena_bytes` bytes. `plan` must have been made for these input shapes.
pub fn run_with_plan(
    graph: &Graph,
    plan: &MemoryPlan,
    inputs: &[Tensor],
    opts: ExecOptions,
) -> Result<Vec<Tensor>> {
    check_inputs(graph, inputs)?;
    if plan.offsets.len() != graph.values.len() {
        return Err(RuntimeError::Input(
            "memory plan was made for another graph".into(),
        ));
    }
    for (t, s) in inputs.iter().zip(&plan.input_shapes) {
        if &t.shape != s {
            return Err(RuntimeError::Input(format!(
                "memory plan was made for input shape {s:?}, got {:?}",
                t.shape
            )));
        }
    }
    let mut arena = vec![0u8; plan.arena_bytes];
    for (&id, t) in graph.inputs.iter().zip(inputs) {
        if plan.offsets[id].is_some() {
            store(&mut arena, plan, graph, id, t)?;
        }
    }
    // Values computed from constants only: once, up front, kept beside the weights.
    let is_folded = |node: &edgeopt_ir::Node| {
        !node.outputs.is_empty()
            && node
                .outputs
                .iter()
                .all(|&o| plan.folded.get(o) == Some(&true))
    };
    let mut folded: Vec<Option<Tensor>> = vec![None; graph.values.len()];
    for node in graph.nodes.iter().filter(|n| is_folded(n)) {
        let ctx = NodeCtx::new(graph, node, opts);
        // A folded Shape reads only its input's planned shape.
        if let (edgeopt_ir::Op::Shape, Some(x), [o]) =
            (&node.op, node.input(0), node.outputs.as_slice())
        {
            let shape = plan.shapes.get(x).cloned().flatten().ok_or_else(|| {
                ctx.error("the plan has no shape for the input of a folded Shape")
            })?;
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            folded[*o] = Some(Tensor::from_i64(vec![dims.len()], dims)?);
            continue;
        }
        let ins: Vec<Option<&Tensor>> = node
            .inputs
            .iter()
            .map(|x| x.and_then(|id| graph.const_data(id).or(folded[id].as_ref())))
            .collect();
        if ins
            .iter()
            .zip(&node.inputs)
            .any(|(t, x)| x.is_some() && t.is_none())
        {
            return Err(ctx.error("folded node reads a value that is not constant"));
        }
        let outs = eval_node(&ctx, &ins)?;
        if outs.len() < node.outputs.len() {
            return Err(ctx.error("kernel returned too few outputs"));
        }
        for (&o, t) in node.outputs.iter().zip(outs) {
            folded[o] = Some(t);
        }
    }
    for node in graph.nodes.iter().filter(|n| !is_folded(n)) {
        let ctx = NodeCtx::new(graph, node, opts);
        let mut owned: Vec<Option<Tensor>> = Vec::with_capacity(node.inputs.len());
        for x in &node.inputs {
            owned.push(match x {
                Some(id) if plan.offsets.get(*id).copied().flatten().is_some() => {
                    Some(load(&arena, plan, graph, *id)?)
                }
                _ => None,
            });
        }
        let ins: Vec<Option<&Tensor>> = node
            .inputs
            .iter()
            .zip(&owned)
            .map(|(x, o)| {
                o.as_ref()
                    .or_else(|| x.and_then(|id| graph.const_data(id).or(folded[id].as_ref())))
            })
            .collect();
        for (k, x) in node.inputs.iter().enumerate() {
            if let (Some(id), None) = (x, ins[k]) {
                return Err(ctx.error(format!("input '{}' has no value", graph.values[*id].name)));
            }
        }
        let outs = eval_node(&ctx, &ins)?;
        if outs.len() < node.outputs.len() {
            return Err(ctx.error("kernel returned too few outputs"));
        }
        // Decoded copies are dropped before writing, as an in-place kernel would be
        // done reading by then.
        drop(owned);
        for (&o, t) in node.outputs.iter().zip(&outs) {
            if plan.offsets[o].is_some() {
                store(&mut arena, plan, graph, o, t)?;
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|&o| {
            if plan.offsets[o].is_some() {
                load(&arena, plan, graph, o)
            } else {
                let known = graph.values[o].data.clone().or_else(|| folded[o].clone());
                known.ok_or_else(|| {
                    RuntimeError::Input(format!(
                        "output '{}' was not computed",
                        graph.values[o].name
                    ))
                })
            }
        })
        .collect()
}

/// The slot of value `id`: (offset, bytes, dtype, shape).
fn slot<'p>(
    plan: &'p MemoryPlan,
    graph: &Graph,
    id: usize,
) -> Result<(usize, usize, DType, &'p [usize])> {
    let name = &graph.values[id].name;
    let missing = || RuntimeError::Input(format!("tensor '{name}' has no slot in the plan"));
    let offset = plan.offsets[id].ok_or_else(missing)?;
    let dtype = plan.dtypes[id].ok_or_else(missing)?;
    let shape = plan.shapes[id].as_deref().ok_or_else(missing)?;
    Ok((offset, plan.sizes[id], dtype, shape))
}

/// Encodes `t` into the slot of value `id`, checking it is what the plan expects.
fn store(arena: &mut [u8], plan: &MemoryPlan, graph: &Graph, id: usize, t: &Tensor) -> Result<()> {
    let (offset, size, dtype, shape) = slot(plan, graph, id)?;
    if t.dtype() != dtype || t.shape != shape {
        return Err(RuntimeError::Input(format!(
            "tensor '{}': planned as {dtype} {shape:?}, computed {} {:?} (shape inference \
             and kernel disagree)",
            graph.values[id].name,
            t.dtype(),
            t.shape
        )));
    }
    let dst = arena
        .get_mut(offset..offset + size)
        .ok_or_else(|| RuntimeError::Input("slot outside the arena".into()))?;
    encode(&t.data, dst);
    Ok(())
}

/// Decodes value `id` from its slot.
fn load(arena: &[u8], plan: &MemoryPlan, graph: &Graph, id: usize) -> Result<Tensor> {
    let (offset, size, dtype, shape) = slot(plan, graph, id)?;
    let src = arena
        .get(offset..offset + size)
        .ok_or_else(|| RuntimeError::Input("slot outside the arena".into()))?;
    let n = edgeopt_ir::checked_numel(shape)?;
    Ok(Tensor::new(shape.to_vec(), decode(dtype, n, src))?)
}

/// Writes elements little-endian into `dst` (exactly `dtype.storage_bytes(len)` bytes).
pub fn encode(data: &TensorData, dst: &mut [u8]) {
    fn le<const W: usize, T: Copy>(v: &[T], dst: &mut [u8], f: impl Fn(T) -> [u8; W]) {
        for (c, &x) in dst.chunks_exact_mut(W).zip(v) {
            c.copy_from_slice(&f(x));
        }
    }
    match data {
        TensorData::F32(v) => le(v, dst, f32::to_le_bytes),
        TensorData::F16(v) => le(v, dst, f16::to_le_bytes),
        TensorData::I8(v) => le(v, dst, i8::to_le_bytes),
        TensorData::U8(v) => dst[..v.len()].copy_from_slice(v),
        TensorData::I16(v) => le(v, dst, i16::to_le_bytes),
        TensorData::U16(v) => le(v, dst, u16::to_le_bytes),
        TensorData::I32(v) => le(v, dst, i32::to_le_bytes),
        TensorData::I64(v) => le(v, dst, i64::to_le_bytes),
        TensorData::Bool(v) => le(v, dst, |b| [b as u8]),
        TensorData::I4(v) => pack_nibbles(v.iter().map(|&x| x as u8), dst),
        TensorData::U4(v) => pack_nibbles(v.iter().copied(), dst),
    }
}

/// Two 4-bit values per byte, the first in the low nibble (ONNX / TFLite order).
fn pack_nibbles(v: impl Iterator<Item = u8>, dst: &mut [u8]) {
    dst.fill(0);
    for (i, x) in v.enumerate() {
        dst[i / 2] |= (x & 0x0f) << (4 * (i % 2));
    }
}

/// Reads `n` elements of `dtype` from `src` (as written by [`encode`]).
pub fn decode(dtype: DType, n: usize, src: &[u8]) -> TensorData {
    fn le<const W: usize, T>(src: &[u8], n: usize, f: impl Fn([u8; W]) -> T) -> Vec<T> {
        src.chunks_exact(W)
            .take(n)
            .map(|c| f(c.try_into().expect("chunk of W bytes")))
            .collect()
    }
    let nibble = |i: usize| (src[i / 2] >> (4 * (i % 2))) & 0x0f;
    match dtype {
        DType::F32 => TensorData::F32(le(src, n, f32::from_le_bytes)),
        DType::F16 => TensorData::F16(le(src, n, f16::from_le_bytes)),
        DType::I8 => TensorData::I8(le(src, n, i8::from_le_bytes)),
        DType::U8 => TensorData::U8(src[..n].to_vec()),
        DType::I16 => TensorData::I16(le(src, n, i16::from_le_bytes)),
        DType::U16 => TensorData::U16(le(src, n, u16::from_le_bytes)),
        DType::I32 => TensorData::I32(le(src, n, i32::from_le_bytes)),
        DType::I64 => TensorData::I64(le(src, n, i64::from_le_bytes)),
        DType::Bool => TensorData::Bool(src[..n].iter().map(|&b| b != 0).collect()),
        // Sign-extend the nibble: shift it to the top of an i8, then back.
        DType::I4 => TensorData::I4((0..n).map(|i| ((nibble(i) << 4) as i8) >> 4).collect()),
        DType::U4 => TensorData::U4((0..n).map(nibble).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::plan_for_batch;
    use edgeopt_ir::{
        Activation, AutoPad, BinaryKind, ConvAttrs, Dim, Layout, Op, UnaryKind, ValueId,
    };
    use rand::{Rng, SeedableRng};

    fn conv(group: usize) -> Op {
        Op::Conv(ConvAttrs {
            layout: Layout::Nchw,
            kernel_shape: vec![],
            strides: vec![],
            dilations: vec![],
            pads: vec![1, 1, 1, 1],
            auto_pad: AutoPad::NotSet,
            group,
            activation: Activation::None,
            hybrid: None,
        })
    }

    /// Conv(3->8) -> Relu -> depthwise Conv -> Add(residual) -> Reshape -> FC(512->10),
    /// dynamic batch, random weights.
    fn net() -> Graph {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut rand_t = |shape: Vec<usize>| {
            let n = shape.iter().product();
            Tensor::from_f32(shape, (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()).unwrap()
        };
        let mut g = Graph::new("net");
        let batch = Dim::Sym("n".into());
        let x = g.add_value(
            "x",
            DType::F32,
            Some(vec![batch, Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)]),
        );
        let w1 = g.add_const("w1", rand_t(vec![8, 3, 3, 3]));
        let b1 = g.add_const("b1", rand_t(vec![8]));
        let wd = g.add_const("wd", rand_t(vec![8, 1, 3, 3]));
        let shape = g.add_const("shape", Tensor::from_i64(vec![2], vec![-1, 512]).unwrap());
        let wf = g.add_const("wf", rand_t(vec![10, 512]));
        let bf = g.add_const("bf", rand_t(vec![10]));
        let v = |g: &mut Graph, name: &str| -> ValueId { g.add_value(name, DType::F32, None) };
        let (a, r, d, s, f, y) = (
            v(&mut g, "a"),
            v(&mut g, "r"),
            v(&mut g, "d"),
            v(&mut g, "s"),
            v(&mut g, "f"),
            v(&mut g, "y"),
        );
        g.inputs = vec![x];
        g.add_node("conv", conv(1), vec![Some(x), Some(w1), Some(b1)], vec![a]);
        g.add_node("relu", Op::Unary(UnaryKind::Relu), vec![Some(a)], vec![r]);
        g.add_node("dw", conv(8), vec![Some(r), Some(wd), None], vec![d]);
        let add = Op::Binary {
            kind: BinaryKind::Add,
            activation: Activation::None,
        };
        g.add_node("add", add, vec![Some(d), Some(r)], vec![s]);
        let reshape = Op::Reshape { allowzero: false };
        g.add_node("flat", reshape, vec![Some(s), Some(shape)], vec![f]);
        let fc = Op::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
            hybrid: None,
        };
        g.add_node("fc", fc, vec![Some(f), Some(wf), Some(bf)], vec![y]);
        g.outputs = vec![y];
        g
    }

    #[test]
    fn arena_run_equals_plain_run() {
        let g = net();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for batch in [1, 3] {
            let n = batch * 3 * 64;
            let x = Tensor::from_f32(
                vec![batch, 3, 8, 8],
                (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect(),
            )
            .unwrap();
            let plan = plan_for_batch(&g, batch).unwrap();
            plan.check().unwrap();
            // relu in place over conv's output, the reshape aliases the add's output.
            assert!(plan.shared_with.iter().flatten().count() >= 2);
            assert!(plan.arena_bytes < plan.naive_bytes);
            let plain = crate::run(&g, std::slice::from_ref(&x)).unwrap();
            let opts = ExecOptions::default();
            let arena = run_with_plan(&g, &plan, std::slice::from_ref(&x), opts).unwrap();
            assert_eq!(plain, arena);
            assert_eq!(run_in_arena(&g, &[x], opts).unwrap(), plain);
        }
    }

    #[test]
    fn plan_for_other_shapes_is_rejected() {
        let g = net();
        let plan = plan_for_batch(&g, 1).unwrap();
        let x = Tensor::zeros(DType::F32, vec![2, 3, 8, 8]).unwrap();
        let e = run_with_plan(&g, &plan, &[x], ExecOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("made for input shape"), "{e}");
    }

    #[test]
    fn encode_decode_round_trip() {
        let cases = vec![
            TensorData::F32(vec![1.5, -0.0, f32::MIN_POSITIVE, f32::NAN]),
            TensorData::F16(vec![f16::from_f32(0.5), f16::MAX]),
            TensorData::I8(vec![-128, 0, 127]),
            TensorData::U8(vec![0, 255, 7]),
            TensorData::I16(vec![-32768, 1, 32767]),
            TensorData::U16(vec![65535, 3]),
            TensorData::I32(vec![i32::MIN, -1, i32::MAX]),
            TensorData::I64(vec![i64::MIN, 42]),
            TensorData::Bool(vec![true, false, true]),
            TensorData::I4(vec![-8, -1, 0, 7, 3]),
            TensorData::U4(vec![15, 0, 9]),
        ];
        for d in cases {
            let bytes = d.dtype().storage_bytes(d.len());
            let mut buf = vec![0xAAu8; bytes];
            encode(&d, &mut buf);
            let back = decode(d.dtype(), d.len(), &buf);
            // Compare bit patterns (NaN != NaN as floats).
            let mut again = vec![0u8; bytes];
            encode(&back, &mut again);
            assert_eq!(buf, again, "{:?}", d.dtype());
            assert_eq!(back.len(), d.len());
            if d.dtype() != DType::F32 {
                assert_eq!(back, d);
            }
        }
        // Packing order: low nibble first.
        let mut b = [0u8; 1];
        encode(&TensorData::U4(vec![0x1, 0x2]), &mut b);
        assert_eq!(b[0], 0x21);
    }
}
