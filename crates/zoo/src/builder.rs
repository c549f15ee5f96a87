//! A small graph builder that tracks shapes itself, so the zoo does not depend on the
//! shape-inference rules and every builder gets exact shapes for free.
//!
//! Activations are NCHW (ONNX semantics, [`Layout::Nchw`]); the batch dimension is
//! symbolic (`Dim::Sym("N")`). Weights are initialised as PyTorch does by default
//! (Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
//! weights and biases), from a seeded RNG, so a builder call is reproducible.

use crate::ZooError;
use edgeopt_ir::{
    Activation, AutoPad, BinaryKind, ConvAttrs, DType, Dim, Graph, Layout, Op, PoolAttrs, Tensor,
    UnaryKind, ValueId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Builder state: the graph, the per-value shapes without the batch dimension, a
/// name counter and the initialiser RNG.
pub struct Builder {
    pub graph: Graph,
    /// Shape of each value *without* the leading batch dimension (activations), or
    /// the full shape (constants); indexed by `ValueId`.
    shapes: Vec<Vec<usize>>,
    counter: usize,
    rng: StdRng,
}

/// Conv geometry for [`Builder::conv`].
#[derive(Debug, Clone)]
pub struct ConvSpec {
    pub out_channels: usize,
    /// Kernel size per spatial dim; one entry means the same for all dims.
    pub kernel: Vec<usize>,
    /// Stride per spatial dim; one entry means the same for all dims.
    pub stride: Vec<usize>,
    /// "same" padding (`kernel / 2` on both sides for odd kernels, TF-style split
    /// for even kernels) when true; no padding when false.
    pub same: bool,
    pub group: usize,
    pub bias: bool,
}

impl ConvSpec {
    pub fn new(out_channels: usize, kernel: usize) -> Self {
        ConvSpec {
            out_channels,
            kernel: vec![kernel],
            stride: vec![1],
            same: true,
            group: 1,
            bias: true,
        }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = vec![s];
        self
    }
    /// Per-dimension kernel (e.g. DS-CNN's 10x4 first layer).
    pub fn kernel_dims(mut self, k: &[usize]) -> Self {
        self.kernel = k.to_vec();
        self
    }
    pub fn stride_dims(mut self, s: &[usize]) -> Self {
        self.stride = s.to_vec();
        self
    }
    pub fn valid(mut self) -> Self {
        self.same = false;
        self
    }
    pub fn group(mut self, g: usize) -> Self {
        self.group = g;
        self
    }
    pub fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
}

impl Builder {
    pub fn new(name: &str, seed: u64) -> Self {
        Builder {
            graph: Graph::new(name),
            shapes: Vec::new(),
            counter: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn track(&mut self, id: ValueId, shape: Vec<usize>) {
        if self.shapes.len() <= id {
            self.shapes.resize(id + 1, Vec::new());
        }
        self.shapes[id] = shape;
    }

    /// Shape of an activation without the batch dimension.
    pub fn shape(&self, id: ValueId) -> &[usize] {
        &self.shapes[id]
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    /// Adds the graph input `[N, *shape]`.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> ValueId {
        let mut dims = vec![Dim::Sym("N".into())];
        dims.extend(shape.iter().map(|&d| Dim::Fixed(d)));
        let id = self.graph.add_value(name, DType::F32, Some(dims));
        self.graph.inputs.push(id);
        self.track(id, shape.to_vec());
        id
    }

    /// Declares `id` a graph output.
    pub fn output(&mut self, id: ValueId) {
        self.graph.outputs.push(id);
    }

    /// New activation value of shape `[N, *shape]`.
    fn act(&mut self, prefix: &str, shape: Vec<usize>) -> ValueId {
        let name = self.fresh(prefix);
        let mut dims = vec![Dim::Sym("N".into())];
        dims.extend(shape.iter().map(|&d| Dim::Fixed(d)));
        let id = self.graph.add_value(name, DType::F32, Some(dims));
        self.track(id, shape);
        id
    }

    fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.gen_range(-bound..=bound)).collect()
    }

    fn constant(&mut self, name: String, shape: Vec<usize>, data: Vec<f32>) -> ValueId {
        // Shapes here come from validated configs; the element count always matches.
        let t = Tensor::from_f32(shape.clone(), data).expect("builder constant shape");
        let id = self.graph.add_const(name, t);
        self.track(id, shape);
        id
    }

    /// Convolution over an NCHW/NCW activation (1-D or 2-D, from the input rank).
    pub fn conv(&mut self, x: ValueId, spec: ConvSpec) -> Result<ValueId, ZooError> {
        let xs = self.shape(x).to_vec();
        if xs.len() < 2 {
            return Err(ZooError::Config(format!(
                "conv needs [C, *spatial], got {xs:?}"
            )));
        }
        let cin = xs[0];
        let spatial = &xs[1..];
        let nd = spatial.len();
        if spec.group == 0
            || !cin.is_multiple_of(spec.group)
            || !spec.out_channels.is_multiple_of(spec.group)
        {
            return Err(ZooError::Config(format!(
                "group {} must divide in {cin} and out {} channels",
                spec.group, spec.out_channels
            )));
        }
        let per_dim = |v: &[usize], what: &str| -> Result<Vec<usize>, ZooError> {
            match v.len() {
                1 => Ok(vec![v[0]; nd]),
                n if n == nd => Ok(v.to_vec()),
                _ => Err(ZooError::Config(format!(
                    "{what} {v:?} does not match {nd} spatial dims"
                ))),
            }
        };
        let ks = per_dim(&spec.kernel, "kernel")?;
        let ss = per_dim(&spec.stride, "stride")?;
        if ks.contains(&0) || ss.contains(&0) || spec.out_channels == 0 {
            return Err(ZooError::Config(
                "kernel, stride and width must be > 0".into(),
            ));
        }
        let mut pads_begin = vec![0; nd];
        let mut pads_end = vec![0; nd];
        let mut out = Vec::with_capacity(nd);
        for (d, &len) in spatial.iter().enumerate() {
            let (k, stride) = (ks[d], ss[d]);
            if spec.same {
                // TF "SAME": output = ceil(len / stride), extra padding at the end.
                let o = len.div_ceil(stride);
                let total = ((o - 1) * stride + k).saturating_sub(len);
                pads_begin[d] = total / 2;
                pads_end[d] = total - total / 2;
                out.push(o);
            } else {
                if len < k {
                    return Err(ZooError::Config(format!(
                        "kernel {k} larger than input length {len}"
                    )));
                }
                out.push((len - k) / stride + 1);
            }
        }
        let cpg = cin / spec.group;
        let fan_in = cpg * ks.iter().product::<usize>();
        let bound = 1.0 / (fan_in as f32).sqrt();
        let mut wshape = vec![spec.out_channels, cpg];
        wshape.extend(&ks);
        let n: usize = wshape.iter().product();
        let base = self.fresh("conv");
        let wdata = self.uniform(n, bound);
        let w = self.constant(format!("{base}.weight"), wshape, wdata);
        let b = if spec.bias {
            let bdata = self.uniform(spec.out_channels, bound);
            Some(self.constant(format!("{base}.bias"), vec![spec.out_channels], bdata))
        } else {
            None
        };
        let mut pads = pads_begin;
        pads.extend(pads_end);
        let attrs = ConvAttrs {
            layout: Layout::Nchw,
            kernel_shape: ks,
            strides: ss,
            dilations: vec![1; nd],
            pads,
            auto_pad: AutoPad::NotSet,
            group: spec.group,
            activation: Activation::None,
            hybrid: None,
        };
        let mut yshape = vec![spec.out_channels];
        yshape.extend(out);
        let y = self.act(&format!("{base}.out"), yshape);
        self.graph
            .add_node(base, Op::Conv(attrs), vec![Some(x), Some(w), b], vec![y]);
        Ok(y)
    }

    /// Inference-form BatchNormalization (scale 1, bias 0, mean 0, var 1).
    pub fn batch_norm(&mut self, x: ValueId) -> ValueId {
        let c = self.shape(x)[0];
        let base = self.fresh("bn");
        let s = self.constant(format!("{base}.scale"), vec![c], vec![1.0; c]);
        let b = self.constant(format!("{base}.bias"), vec![c], vec![0.0; c]);
        let m = self.constant(format!("{base}.mean"), vec![c], vec![0.0; c]);
        let v = self.constant(format!("{base}.var"), vec![c], vec![1.0; c]);
        let shape = self.shape(x).to_vec();
        let y = self.act(&format!("{base}.out"), shape);
        self.graph.add_node(
            base,
            Op::BatchNorm { epsilon: 1e-5 },
            vec![Some(x), Some(s), Some(b), Some(m), Some(v)],
            vec![y],
        );
        y
    }

    pub fn unary(&mut self, x: ValueId, kind: UnaryKind) -> ValueId {
        let shape = self.shape(x).to_vec();
        let base = self.fresh(&Op::Unary(kind).name().to_lowercase());
        let y = self.act(&format!("{base}.out"), shape);
        self.graph
            .add_node(base, Op::Unary(kind), vec![Some(x)], vec![y]);
        y
    }

    pub fn relu(&mut self, x: ValueId) -> ValueId {
        self.unary(x, UnaryKind::Relu)
    }

    /// ONNX Clip(0, 6), the form PyTorch exports ReLU6 as.
    pub fn relu6(&mut self, x: ValueId) -> ValueId {
        let shape = self.shape(x).to_vec();
        let base = self.fresh("relu6");
        let y = self.act(&format!("{base}.out"), shape);
        self.graph.add_node(
            base,
            Op::Clip {
                min: Some(0.0),
                max: Some(6.0),
            },
            vec![Some(x)],
            vec![y],
        );
        y
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, ZooError> {
        if self.shape(a) != self.shape(b) {
            return Err(ZooError::Config(format!(
                "residual add of {:?} and {:?}",
                self.shape(a),
                self.shape(b)
            )));
        }
        let shape = self.shape(a).to_vec();
        let base = self.fresh("add");
        let y = self.act(&format!("{base}.out"), shape);
        self.graph.add_node(
            base,
            Op::Binary {
                kind: BinaryKind::Add,
                activation: Activation::None,
            },
            vec![Some(a), Some(b)],
            vec![y],
        );
        Ok(y)
    }

    fn pool(
        &mut self,
        x: ValueId,
        k: usize,
        stride: usize,
        max: bool,
    ) -> Result<ValueId, ZooError> {
        let xs = self.shape(x).to_vec();
        let nd = xs.len() - 1;
        let mut out = vec![xs[0]];
        for &len in &xs[1..] {
            if len < k || k == 0 || stride == 0 {
                return Err(ZooError::Config(format!(
                    "pool kernel {k} does not fit input length {len}"
                )));
            }
            out.push((len - k) / stride + 1);
        }
        let attrs = PoolAttrs {
            layout: Layout::Nchw,
            kernel_shape: vec![k; nd],
            strides: vec![stride; nd],
            dilations: vec![],
            pads: vec![0; 2 * nd],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
            count_include_pad: false,
            activation: Activation::None,
        };
        let base = self.fresh(if max { "maxpool" } else { "avgpool" });
        let y = self.act(&format!("{base}.out"), out);
        let op = if max {
            Op::MaxPool(attrs)
        } else {
            Op::AveragePool(attrs)
        };
        self.graph.add_node(base, op, vec![Some(x)], vec![y]);
        Ok(y)
    }

    pub fn max_pool(&mut self, x: ValueId, k: usize, stride: usize) -> Result<ValueId, ZooError> {
        self.pool(x, k, stride, true)
    }

    pub fn avg_pool(&mut self, x: ValueId, k: usize, stride: usize) -> Result<ValueId, ZooError> {
        self.pool(x, k, stride, false)
    }

    pub fn global_avg_pool(&mut self, x: ValueId) -> ValueId {
        let xs = self.shape(x).to_vec();
        let mut out = vec![xs[0]];
        out.extend(std::iter::repeat_n(1, xs.len() - 1));
        let base = self.fresh("gap");
        let y = self.act(&format!("{base}.out"), out);
        self.graph
            .add_node(base, Op::GlobalAveragePool, vec![Some(x)], vec![y]);
        y
    }

    /// ONNX Flatten(axis = 1): `[N, ...] -> [N, prod(...)]`.
    pub fn flatten(&mut self, x: ValueId) -> ValueId {
        let n: usize = self.shape(x).iter().product();
        let base = self.fresh("flatten");
        let y = self.act(&format!("{base}.out"), vec![n]);
        self.graph
            .add_node(base, Op::Flatten { axis: 1 }, vec![Some(x)], vec![y]);
        y
    }

    /// Fully connected layer as ONNX Gemm (trans_b = 1, weight `[out, in]`).
    pub fn dense(&mut self, x: ValueId, out: usize) -> Result<ValueId, ZooError> {
        let xs = self.shape(x).to_vec();
        if xs.len() != 1 || out == 0 {
            return Err(ZooError::Config(format!(
                "dense needs a flat [features] input and out > 0, got {xs:?} -> {out}"
            )));
        }
        let fan_in = xs[0];
        let bound = 1.0 / (fan_in as f32).sqrt();
        let base = self.fresh("fc");
        let wdata = self.uniform(out * fan_in, bound);
        let w = self.constant(format!("{base}.weight"), vec![out, fan_in], wdata);
        let bdata = self.uniform(out, bound);
        let b = self.constant(format!("{base}.bias"), vec![out], bdata);
        let y = self.act(&format!("{base}.out"), vec![out]);
        self.graph.add_node(
            base,
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: true,
            },
            vec![Some(x), Some(w), Some(b)],
            vec![y],
        );
        Ok(y)
    }

    /// Softmax over the last axis (the zoo's classifiers end in logits; callers that
    /// want probabilities add this).
    pub fn softmax(&mut self, x: ValueId) -> ValueId {
        let shape = self.shape(x).to_vec();
        let base = self.fresh("softmax");
        let y = self.act(&format!("{base}.out"), shape);
        self.graph.add_node(
            base,
            Op::Softmax {
                axis: -1,
                beta: 1.0,
            },
            vec![Some(x)],
            vec![y],
        );
        y
    }

    /// Renames a value (used to give graph outputs stable names like "logits").
    pub fn rename(&mut self, id: ValueId, name: &str) {
        self.graph.values[id].name = name.to_string();
    }

    pub fn finish(self) -> Result<Graph, ZooError> {
        self.graph
            .validate()
            .map_err(|e| ZooError::Config(format!("built graph is invalid: {e}")))?;
        Ok(self.graph)
    }
}
