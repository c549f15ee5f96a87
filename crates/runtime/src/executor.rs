//! The plain executor: runs a graph node by node, freeing each intermediate after its
//! last use, on any batch size; and [`Session`], which prepares a graph once (packed
//! weights, output stages, reused buffers) for repeated runs.

use crate::error::{Result, RuntimeError};
use crate::kernels::fast::{self, Prepared};
use crate::kernels::{eval_node, NodeCtx};
use crate::options::ExecOptions;
use edgeopt_ir::{Graph, Tensor, TensorData};

/// Checks that `inputs` fit the graph's declared inputs (count, dtype, fixed dims).
pub fn check_inputs(graph: &Graph, inputs: &[Tensor]) -> Result<()> {
    if inputs.len() != graph.inputs.len() {
        return Err(RuntimeError::Input(format!(
            "model has {} inputs, {} given",
            graph.inputs.len(),
            inputs.len()
        )));
    }
    for (&id, t) in graph.inputs.iter().zip(inputs) {
        let v = &graph.values[id];
        if t.dtype() != v.dtype {
            return Err(RuntimeError::Input(format!(
                "input '{}' is {}, got {}",
                v.name,
                v.dtype,
                t.dtype()
            )));
        }
        if let Some(shape) = &v.shape {
            let ok = shape.len() == t.shape.len()
                && shape
                    .iter()
                    .zip(&t.shape)
                    .all(|(d, &n)| d.fixed().is_none_or(|f| f == n));
            if !ok {
                let want: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                return Err(RuntimeError::Input(format!(
                    "input '{}' has shape [{}], got {:?}",
                    v.name,
                    want.join(", "),
                    t.shape
                )));
            }
        }
    }
    Ok(())
}

/// The batch `N > 1` of `inputs` when the graph is declared for batch 1 and the inputs
/// are `N` such samples stacked on axis 0 (every input's leading dimension is a fixed 1
/// in the graph and `N` in the data, the other dimensions fit): such a batch runs
/// sample by sample ([`run_per_sample`]). `None` otherwise.
pub fn per_sample_batch(graph: &Graph, inputs: &[Tensor]) -> Option<usize> {
    if inputs.len() != graph.inputs.len() || inputs.is_empty() {
        return None;
    }
    let n = *inputs[0].shape.first()?;
    if n <= 1 {
        return None;
    }
    let fits = graph.inputs.iter().zip(inputs).all(|(&id, t)| {
        let v = &graph.values[id];
        let Some(shape) = &v.shape else { return false };
        t.dtype() == v.dtype
            && shape.len() == t.shape.len()
            && shape[0].fixed() == Some(1)
            && t.shape[0] == n
            && shape[1..]
                .iter()
                .zip(&t.shape[1..])
                .all(|(d, &m)| d.fixed().is_none_or(|f| f == m))
    });
    fits.then_some(n)
}

/// Runs a batch of `N` samples through a graph declared for batch 1, one sample at a
/// time in one [`Session`], and stacks each output's per-sample results on axis 0
/// (every output must then have a leading dimension). Inputs that already fit the
/// graph run in one call.
pub fn run_per_sample(graph: &Graph, inputs: &[Tensor], opts: ExecOptions) -> Result<Vec<Tensor>> {
    if per_sample_batch(graph, inputs).is_none() {
        return run_with(graph, inputs, opts);
    }
    let mut session = Session::with_options(graph, opts);
    per_sample_with(graph, inputs, |sample| session.run(sample))
}

/// Runs `run` on each sample of a batch given to a batch-1 graph ([`per_sample_batch`];
/// the whole inputs at once otherwise) and stacks each output's results on axis 0:
/// the batching of [`run_per_sample`] for any executor (e.g. the arena one).
pub fn per_sample_with(
    graph: &Graph,
    inputs: &[Tensor],
    mut run: impl FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Vec<Tensor>> {
    let Some(n) = per_sample_batch(graph, inputs) else {
        return run(inputs);
    };
    let mut per_output: Vec<Vec<Tensor>> = vec![Vec::with_capacity(n); graph.outputs.len()];
    for i in 0..n {
        let sample = inputs
            .iter()
            .map(|t| t.rows(i, 1))
            .collect::<edgeopt_ir::Result<Vec<_>>>()
            .map_err(|e| RuntimeError::Input(e.to_string()))?;
        for (k, t) in run(&sample)?.into_iter().enumerate() {
            per_output[k].push(t);
        }
    }
    per_output
        .iter()
        .zip(&graph.outputs)
        .map(|(parts, &o)| {
            if parts.iter().any(|t| t.shape.first() != Some(&1)) {
                return Err(RuntimeError::Input(format!(
                    "output '{}' has no leading batch dimension of 1 ({:?}): a batch of {n} \
                     cannot be run sample by sample",
                    graph.values[o].name,
                    parts.first().map(|t| t.shape.clone()).unwrap_or_default()
                )));
            }
            Tensor::concat_rows(parts).map_err(|e| {
                RuntimeError::Input(format!(
                    "output '{}' cannot be stacked over the batch: {e}",
                    graph.values[o].name
                ))
            })
        })
        .collect()
}

/// Runs `graph` on `inputs` (one per graph input, in order) and returns its outputs,
/// with the default options (LiteRT numerics, native kernels).
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    run_with(graph, inputs, ExecOptions::default())
}

/// [`run`] with explicit options.
pub fn run_with(graph: &Graph, inputs: &[Tensor], opts: ExecOptions) -> Result<Vec<Tensor>> {
    check_inputs(graph, inputs)?;
    let nv = graph.values.len();
    // Remaining number of reads per value, so intermediates are dropped early.
    let mut reads = vec![0usize; nv];
    for n in &graph.nodes {
        for i in n.present_inputs() {
            reads[i] += 1;
        }
    }
    for &o in &graph.outputs {
        reads[o] += 1; // graph outputs are never freed
    }
    let mut slots: Vec<Option<Tensor>> = vec![None; nv];
    for (&id, t) in graph.inputs.iter().zip(inputs) {
        slots[id] = Some(t.clone());
    }
    for node in &graph.nodes {
        let outs = {
            let ins: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|x| x.map(|id| slots[id].as_ref().or(graph.values[id].data.as_ref())))
                .map(|x| x.flatten())
                .collect();
            for (k, x) in node.inputs.iter().enumerate() {
                if let (Some(id), None) = (x, ins[k]) {
                    return Err(NodeCtx::new(graph, node, opts)
                        .error(format!("input '{}' has no value", graph.values[*id].name)));
                }
            }
            eval_node(&NodeCtx::new(graph, node, opts), &ins)?
        };
        if outs.len() < node.outputs.len() {
            return Err(NodeCtx::new(graph, node, opts).error("kernel returned too few outputs"));
        }
        for (&o, t) in node.outputs.iter().zip(outs) {
            slots[o] = Some(t);
        }
        for i in node.present_inputs() {
            reads[i] -= 1;
            if reads[i] == 0 && graph.values[i].data.is_none() {
                slots[i] = None;
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|&o| output_or_const(graph, o, slots[o].take()))
        .collect()
}

/// Graph output `o`: the computed tensor, else the value's constant, else an error.
fn output_or_const(graph: &Graph, o: usize, computed: Option<Tensor>) -> Result<Tensor> {
    match computed {
        Some(t) => Ok(t),
        None => const_output(graph, o).cloned(),
    }
}

/// Graph output `o` that no node computed: the value's constant, else an error.
fn const_output(graph: &Graph, o: usize) -> Result<&Tensor> {
    graph.values[o].data.as_ref().ok_or_else(|| {
        RuntimeError::Input(format!(
            "output '{}' was not computed",
            graph.values[o].name
        ))
    })
}

/// A graph prepared for repeated inference: every node with a fast kernel has its
/// weights packed and its output stage computed once, and every intermediate tensor
/// keeps its allocation from one run to the next (a steady-state run of a model whose
/// nodes all have fast kernels allocates only its outputs).
///
/// Memory: intermediates are not freed between nodes (their buffers are what is
/// reused), so a session holds every activation of the graph at once; for the small
/// models this targets that is a few hundred kB. Use [`run`] or the arena executor
/// for minimal memory.
pub struct Session<'g> {
    graph: &'g Graph,
    opts: ExecOptions,
    prepared: Vec<Option<Box<dyn Prepared>>>,
    /// Every node's inputs resolved once (`plan_starts[k]..plan_starts[k + 1]`), and
    /// its single output's slot: a steady-state run reads these compact arrays and the
    /// slots, not the graph's value table. Why: a model whose weights stream through
    /// L1 on every run (the AD autoencoder: 264 KiB) finds the graph's metadata evicted
    /// at each node, and the pointer chase through it cost about 0.1 us per node.
    plan: Vec<Source<'g>>,
    plan_starts: Vec<usize>,
    single_out: Vec<Option<usize>>,
    slots: Vec<Option<Tensor>>,
    /// Per node: seconds spent in it over the profiled runs, when profiling is on.
    node_secs: Option<Vec<f64>>,
    profiled_runs: usize,
}

impl<'g> Session<'g> {
    /// Prepares `graph` with the default options (LiteRT numerics, native kernels).
    pub fn new(graph: &'g Graph) -> Session<'g> {
        Session::with_options(graph, ExecOptions::default())
    }

    /// Prepares `graph` for the given numerics and kernels.
    pub fn with_options(graph: &'g Graph, opts: ExecOptions) -> Session<'g> {
        let prepared = graph
            .nodes
            .iter()
            .map(|node| {
                let fast::Kernels::Fast(isa) = opts.kernels else {
                    return None;
                };
                let consts: Vec<Option<&Tensor>> = node
                    .inputs
                    .iter()
                    .map(|x| x.and_then(|id| graph.values[id].data.as_ref()))
                    .collect();
                fast::prepare(&NodeCtx::new(graph, node, opts), &consts, isa)
            })
            .collect();
        let (plan, plan_starts) = plan_sources(graph);
        Session {
            graph,
            opts,
            prepared,
            plan,
            plan_starts,
            single_out: graph
                .nodes
                .iter()
                .map(|n| match n.outputs.as_slice() {
                    [o] => Some(*o),
                    _ => None,
                })
                .collect(),
            slots: vec![None; graph.values.len()],
            node_secs: None,
            profiled_runs: 0,
        }
    }

    /// Turns per-node timing on (and resets it) or off. Off by default: it costs two
    /// clock reads per node.
    pub fn set_profiling(&mut self, on: bool) {
        self.node_secs = on.then(|| vec![0.0; self.graph.nodes.len()]);
        self.profiled_runs = 0;
    }

    /// Mean seconds per run of every node (graph order) since profiling was turned
    /// on; `None` when it is off or no run completed.
    pub fn node_times(&self) -> Option<Vec<f64>> {
        let secs = self.node_secs.as_ref()?;
        (self.profiled_runs > 0)
            .then(|| secs.iter().map(|s| s / self.profiled_runs as f64).collect())
    }

    /// Number of nodes that run on a prepared fast kernel.
    pub fn fast_nodes(&self) -> usize {
        self.prepared.iter().filter(|p| p.is_some()).count()
    }

    /// Runs the graph on `inputs` (one per graph input, in order); same results as
    /// [`run`].
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.run_in_place(inputs)?;
        (0..self.graph.outputs.len())
            .map(|i| self.output(i).cloned())
            .collect()
    }

    /// Runs the graph on `inputs` and leaves the outputs in the session, to be read
    /// with [`Session::output`] (as an interpreter's output tensors are): a steady-state
    /// run of a model whose nodes all have fast kernels allocates nothing.
    pub fn run_in_place(&mut self, inputs: &[Tensor]) -> Result<()> {
        let graph = self.graph;
        check_inputs(graph, inputs)?;
        for (&id, t) in graph.inputs.iter().zip(inputs) {
            match &mut self.slots[id] {
                Some(s) if s.dtype() == t.dtype() && s.len() == t.len() => {
                    s.shape.clone_from(&t.shape);
                    copy_data(&mut s.data, &t.data);
                }
                s => *s = Some(t.clone()),
            }
        }
        for k in 0..graph.nodes.len() {
            let start = self.node_secs.is_some().then(std::time::Instant::now);
            self.run_node(k)?;
            if let (Some(secs), Some(t)) = (&mut self.node_secs, start) {
                secs[k] += t.elapsed().as_secs_f64();
            }
        }
        if self.node_secs.is_some() {
            self.profiled_runs += 1;
        }
        Ok(())
    }

    /// Graph output `i` of the last [`Session::run_in_place`]: the computed tensor,
    /// else the value's constant, else an error.
    pub fn output(&self, i: usize) -> Result<&Tensor> {
        let o = *self.graph.outputs.get(i).ok_or_else(|| {
            RuntimeError::Input(format!(
                "output {i} of a model with {}",
                self.graph.outputs.len()
            ))
        })?;
        match &self.slots[o] {
            Some(t) => Ok(t),
            None => const_output(self.graph, o),
        }
    }

    /// Runs node `k` on the current slots.
    fn run_node(&mut self, k: usize) -> Result<()> {
        let graph = self.graph;
        let node = &graph.nodes[k];
        let sources = &self.plan[self.plan_starts[k]..self.plan_starts[k + 1]];
        {
            let ctx = NodeCtx::new(graph, node, self.opts);
            if let (Some(p), Some(o)) = (&mut self.prepared[k], self.single_out[k]) {
                // The output's previous tensor is taken out so the inputs can borrow
                // the other slots (a node never reads its own output).
                let mut out = self.slots[o].take();
                let r = {
                    let ins = gather_planned(&ctx, sources, &self.slots)?;
                    p.run(&ctx, ins.as_slice(), &mut out)
                };
                self.slots[o] = out;
                return r;
            }
            let outs = {
                let ins = gather_planned(&ctx, sources, &self.slots)?;
                eval_node(&ctx, ins.as_slice())?
            };
            if outs.len() < node.outputs.len() {
                return Err(ctx.error("kernel returned too few outputs"));
            }
            for (&o, t) in node.outputs.iter().zip(outs) {
                self.slots[o] = Some(t);
            }
        }
        Ok(())
    }
}

/// `dst = src.clone()`, reusing `dst`'s allocation when both hold the same type (the
/// derived `clone_from` of an enum reallocates).
fn copy_data(dst: &mut TensorData, src: &TensorData) {
    use TensorData as D;
    match (dst, src) {
        (D::F32(d), D::F32(s)) => d.clone_from(s),
        (D::F16(d), D::F16(s)) => d.clone_from(s),
        (D::I8(d), D::I8(s)) | (D::I4(d), D::I4(s)) => d.clone_from(s),
        (D::U8(d), D::U8(s)) | (D::U4(d), D::U4(s)) => d.clone_from(s),
        (D::I16(d), D::I16(s)) => d.clone_from(s),
        (D::U16(d), D::U16(s)) => d.clone_from(s),
        (D::I32(d), D::I32(s)) => d.clone_from(s),
        (D::I64(d), D::I64(s)) => d.clone_from(s),
        (D::Bool(d), D::Bool(s)) => d.clone_from(s),
        (d, s) => *d = s.clone(),
    }
}

/// A node's input list, on the stack for the usual few inputs (a steady-state
/// session run should not allocate per node).
enum Inputs<'a> {
    Stack([Option<&'a Tensor>; 6], usize),
    Heap(Vec<Option<&'a Tensor>>),
}

impl<'a> Inputs<'a> {
    fn as_slice(&self) -> &[Option<&'a Tensor>] {
        match self {
            Inputs::Stack(a, n) => &a[..*n],
            Inputs::Heap(v) => v,
        }
    }
}

/// Where a node's input comes from in a [`Session`] run.
#[derive(Debug, Clone, Copy)]
enum Source<'g> {
    /// An optional input left out.
    Absent,
    /// A constant of the graph (no node writes it and it is not a graph input).
    Const(&'g Tensor),
    /// A value computed by the run (or given as input), else the graph's data.
    Slot(usize),
}

/// Every node's input sources, flattened, and where each node's start.
fn plan_sources(graph: &Graph) -> (Vec<Source<'_>>, Vec<usize>) {
    let mut written = vec![false; graph.values.len()];
    for &i in &graph.inputs {
        written[i] = true;
    }
    for n in &graph.nodes {
        for &o in &n.outputs {
            written[o] = true;
        }
    }
    let mut plan = Vec::new();
    let mut starts = vec![0];
    for n in &graph.nodes {
        plan.extend(n.inputs.iter().map(|x| match *x {
            None => Source::Absent,
            Some(id) => match &graph.values[id].data {
                Some(t) if !written[id] => Source::Const(t),
                _ => Source::Slot(id),
            },
        }));
        starts.push(plan.len());
    }
    (plan, starts)
}

/// The input tensors of a node from its planned sources: computed values from
/// `slots`, constants from the graph.
fn gather_planned<'a>(
    ctx: &NodeCtx<'a>,
    sources: &[Source<'a>],
    slots: &'a [Option<Tensor>],
) -> Result<Inputs<'a>> {
    let one = |s: &Source<'a>| match *s {
        Source::Absent => Ok(None),
        Source::Const(t) => Ok(Some(t)),
        Source::Slot(id) => slots[id]
            .as_ref()
            .or(ctx.graph.values[id].data.as_ref())
            .map(Some)
            .ok_or_else(|| {
                ctx.error(format!(
                    "input '{}' has no value",
                    ctx.graph.values[id].name
                ))
            }),
    };
    if sources.len() <= 6 {
        let mut a = [None; 6];
        for (d, s) in a.iter_mut().zip(sources) {
            *d = one(s)?;
        }
        return Ok(Inputs::Stack(a, sources.len()));
    }
    sources
        .iter()
        .map(one)
        .collect::<Result<_>>()
        .map(Inputs::Heap)
}
