//! Small synthetic TFLite models built with the schema types, for tests.
//!
//! The MLPerf Tiny models exercise only a few ops; [`all_ops_model`] uses every
//! builtin op the importer maps, with shapes that LiteRT accepts (the integration
//! tests run it through LiteRT as the oracle), so import can be checked op by op
//! without shipping a binary model.

use crate::schema::{self as s, BuiltinOperator as B};

/// Collects tensors, buffers and operators of one subgraph.
#[derive(Default)]
pub struct ModelBuilder {
    tensors: Vec<s::Tensor>,
    buffers: Vec<s::Buffer>,
    ops: Vec<s::Operator>,
    codes: Vec<B>,
    /// Deterministic pseudo-random state for weights.
    seed: u64,
}

impl ModelBuilder {
    pub fn new() -> ModelBuilder {
        ModelBuilder {
            // Buffer 0 is the empty sentinel every TFLite model starts with.
            buffers: vec![s::Buffer::default()],
            seed: 0x2545_f491_4f6c_dd1d,
            ..Default::default()
        }
    }

    fn next(&mut self) -> f32 {
        // xorshift64*: deterministic weights in [-1, 1).
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        let v = self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        v as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn push(&mut self, t: s::Tensor) -> i32 {
        self.tensors.push(t);
        self.tensors.len() as i32 - 1
    }

    /// A float activation with a dynamic batch (shape_signature -1 on axis 0).
    pub fn activation(&mut self, name: &str, shape: &[i32]) -> i32 {
        self.typed_activation(name, shape, s::TensorType::Float32, None)
    }

    /// An activation of any type, optionally quantized (scale, zero point).
    pub fn typed_activation(
        &mut self,
        name: &str,
        shape: &[i32],
        ty: s::TensorType,
        quant: Option<(f32, i64)>,
    ) -> i32 {
        let mut sig = shape.to_vec();
        if let Some(b) = sig.first_mut() {
            *b = -1;
        }
        self.push(s::Tensor {
            shape: Some(shape.to_vec()),
            shape_signature: Some(sig),
            type_: ty,
            name: Some(name.into()),
            quantization: quant.map(|(scale, zp)| {
                Box::new(s::QuantizationParameters {
                    scale: Some(vec![scale]),
                    zero_point: Some(vec![zp]),
                    ..Default::default()
                })
            }),
            has_rank: true,
            ..Default::default()
        })
    }

    /// A constant with raw little-endian bytes.
    pub fn constant_bytes(
        &mut self,
        name: &str,
        shape: &[i32],
        ty: s::TensorType,
        data: Vec<u8>,
        quant: Option<s::QuantizationParameters>,
    ) -> i32 {
        self.buffers.push(s::Buffer {
            data: Some(data),
            ..Default::default()
        });
        let buffer = self.buffers.len() as u32 - 1;
        self.push(s::Tensor {
            shape: Some(shape.to_vec()),
            type_: ty,
            buffer,
            name: Some(name.into()),
            quantization: quant.map(Box::new),
            has_rank: true,
            ..Default::default()
        })
    }

    /// A float constant filled with deterministic pseudo-random values in [-1, 1).
    pub fn weights(&mut self, name: &str, shape: &[i32]) -> i32 {
        let n: i32 = shape.iter().product();
        let data: Vec<u8> = (0..n).flat_map(|_| self.next().to_le_bytes()).collect();
        self.constant_bytes(name, shape, s::TensorType::Float32, data, None)
    }

    pub fn constant_f32(&mut self, name: &str, shape: &[i32], v: &[f32]) -> i32 {
        let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.constant_bytes(name, shape, s::TensorType::Float32, data, None)
    }

    pub fn constant_i32(&mut self, name: &str, shape: &[i32], v: &[i32]) -> i32 {
        let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.constant_bytes(name, shape, s::TensorType::Int32, data, None)
    }

    /// Adds an operator (opcode entries are shared per builtin code).
    pub fn op(
        &mut self,
        code: B,
        inputs: &[i32],
        outputs: &[i32],
        options: Option<s::BuiltinOptions>,
    ) {
        let idx = match self.codes.iter().position(|&c| c == code) {
            Some(i) => i,
            None => {
                self.codes.push(code);
                self.codes.len() - 1
            }
        };
        self.ops.push(s::Operator {
            opcode_index: idx as u32,
            inputs: Some(inputs.to_vec()),
            outputs: Some(outputs.to_vec()),
            builtin_options: options,
            ..Default::default()
        });
    }

    /// The model with subgraph 0 reading `inputs` and producing `outputs`.
    pub fn finish(self, inputs: &[i32], outputs: &[i32]) -> s::Model {
        let operator_codes = self
            .codes
            .iter()
            .map(|&c| crate::export::operator_code(c))
            .collect();
        s::Model {
            version: crate::SCHEMA_VERSION,
            operator_codes: Some(operator_codes),
            subgraphs: Some(vec![s::SubGraph {
                tensors: Some(self.tensors),
                inputs: Some(inputs.to_vec()),
                outputs: Some(outputs.to_vec()),
                operators: Some(self.ops),
                name: Some("main".into()),
            }]),
            description: Some("edgeopt synthetic test model".into()),
            buffers: Some(self.buffers),
            ..Default::default()
        }
    }
}

fn pool(filter: i32, stride: i32, padding: s::Padding) -> Option<s::BuiltinOptions> {
    Some(s::BuiltinOptions::Pool2DOptions(Box::new(
        s::Pool2DOptions {
            padding,
            stride_w: stride,
            stride_h: stride,
            filter_width: filter,
            filter_height: filter,
            fused_activation_function: s::ActivationFunctionType::None,
        },
    )))
}

/// A float model using every builtin op the importer maps (CONV_2D,
/// DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, AVERAGE_POOL_2D, MAX_POOL_2D,
/// MEAN, RESHAPE, SOFTMAX, LOG_SOFTMAX, PAD, PADV2, CONCATENATION, TRANSPOSE,
/// QUANTIZE, DEQUANTIZE, LOGISTIC, TANH, RELU, RELU6, HARD_SWISH,
/// RESIZE_NEAREST_NEIGHBOR), input `x` `[N, 8, 8, 4]`, four outputs.
pub fn all_ops_model() -> s::Model {
    use s::ActivationFunctionType as A;
    use s::BuiltinOptions as O;
    let mut m = ModelBuilder::new();
    let x = m.activation("x", &[1, 8, 8, 4]);

    let pads = m.constant_i32("pads", &[4, 2], &[0, 0, 1, 1, 1, 1, 0, 0]);
    let p1 = m.activation("pad", &[1, 10, 10, 4]);
    m.op(
        B::Pad,
        &[x, pads],
        &[p1],
        Some(O::PadOptions(Box::default())),
    );

    let cw = m.weights("conv/w", &[8, 3, 3, 4]);
    let cb = m.weights("conv/b", &[8]);
    let c1 = m.activation("conv", &[1, 8, 8, 8]);
    let conv = s::Conv2DOptions {
        padding: s::Padding::Valid,
        stride_w: 1,
        stride_h: 1,
        fused_activation_function: A::Relu,
        dilation_w_factor: 1,
        dilation_h_factor: 1,
        quantized_bias_type: s::TensorType::Float32,
    };
    m.op(
        B::Conv2d,
        &[p1, cw, cb],
        &[c1],
        Some(O::Conv2DOptions(Box::new(conv))),
    );

    let dw = m.weights("dw/w", &[1, 3, 3, 16]);
    let db = m.weights("dw/b", &[16]);
    let d1 = m.activation("dw", &[1, 8, 8, 16]);
    let dwo = s::DepthwiseConv2DOptions {
        padding: s::Padding::Same,
        stride_w: 1,
        stride_h: 1,
        depth_multiplier: 2,
        fused_activation_function: A::Relu6,
        dilation_w_factor: 1,
        dilation_h_factor: 1,
    };
    m.op(
        B::DepthwiseConv2d,
        &[c1, dw, db],
        &[d1],
        Some(O::DepthwiseConv2DOptions(Box::new(dwo))),
    );

    let m1 = m.activation("maxpool", &[1, 4, 4, 16]);
    m.op(B::MaxPool2d, &[d1], &[m1], pool(2, 2, s::Padding::Valid));

    let size = m.constant_i32("size", &[2], &[8, 8]);
    let r1 = m.activation("resize", &[1, 8, 8, 16]);
    let ro = s::ResizeNearestNeighborOptions {
        align_corners: false,
        half_pixel_centers: true,
    };
    m.op(
        B::ResizeNearestNeighbor,
        &[m1, size],
        &[r1],
        Some(O::ResizeNearestNeighborOptions(Box::new(ro))),
    );

    let k1 = m.activation("concat", &[1, 8, 8, 32]);
    let co = s::ConcatenationOptions {
        axis: -1,
        fused_activation_function: A::None,
    };
    m.op(
        B::Concatenation,
        &[r1, d1],
        &[k1],
        Some(O::ConcatenationOptions(Box::new(co))),
    );

    let a1 = m.activation("avgpool", &[1, 4, 4, 32]);
    m.op(B::AveragePool2d, &[k1], &[a1], pool(2, 2, s::Padding::Same));

    let perm = m.constant_i32("perm", &[4], &[0, 3, 1, 2]);
    let t1 = m.activation("transpose", &[1, 32, 4, 4]);
    m.op(
        B::Transpose,
        &[a1, perm],
        &[t1],
        Some(O::TransposeOptions(Box::default())),
    );

    let axes = m.constant_i32("axes", &[2], &[2, 3]);
    let mn = m.activation("mean", &[1, 32]);
    m.op(
        B::Mean,
        &[t1, axes],
        &[mn],
        Some(O::ReducerOptions(Box::new(s::ReducerOptions {
            keep_dims: false,
        }))),
    );

    let fw = m.weights("fc/w", &[10, 32]);
    let fb = m.weights("fc/b", &[10]);
    let f1 = m.activation("fc", &[1, 10]);
    m.op(
        B::FullyConnected,
        &[mn, fw, fb],
        &[f1],
        Some(O::FullyConnectedOptions(Box::default())),
    );

    let mut chain = f1;
    let mut unary = |m: &mut ModelBuilder, code: B, name: &str| {
        let y = m.activation(name, &[1, 10]);
        m.op(code, &[chain], &[y], None);
        chain = y;
        y
    };
    let sg = unary(&mut m, B::Logistic, "logistic");
    let th = unary(&mut m, B::Tanh, "tanh");
    unary(&mut m, B::HardSwish, "hard_swish");
    unary(&mut m, B::Relu, "relu");
    let r6 = unary(&mut m, B::Relu6, "relu6");

    let sb = m.activation("sub", &[1, 10]);
    m.op(
        B::Sub,
        &[r6, f1],
        &[sb],
        Some(O::SubOptions(Box::default())),
    );
    let ml = m.activation("mul", &[1, 10]);
    m.op(
        B::Mul,
        &[sb, sg],
        &[ml],
        Some(O::MulOptions(Box::default())),
    );
    let ad = m.activation("add", &[1, 10]);
    let addo = s::AddOptions {
        fused_activation_function: A::Relu,
        pot_scale_int16: true,
    };
    m.op(
        B::Add,
        &[ml, th],
        &[ad],
        Some(O::AddOptions(Box::new(addo))),
    );

    let shape = m.constant_i32("new_shape", &[2], &[-1, 10]);
    let rs = m.activation("reshape", &[1, 10]);
    let reo = s::ReshapeOptions {
        new_shape: Some(vec![-1, 10]),
    };
    m.op(
        B::Reshape,
        &[ad, shape],
        &[rs],
        Some(O::ReshapeOptions(Box::new(reo))),
    );

    let sm = m.activation("softmax", &[1, 10]);
    m.op(
        B::Softmax,
        &[rs],
        &[sm],
        Some(O::SoftmaxOptions(Box::new(s::SoftmaxOptions { beta: 1.0 }))),
    );
    let ls = m.activation("log_softmax", &[1, 10]);
    m.op(
        B::LogSoftmax,
        &[rs],
        &[ls],
        Some(O::LogSoftmaxOptions(Box::default())),
    );

    let q = m.typed_activation("quantized", &[1, 10], s::TensorType::Int8, Some((0.05, 3)));
    m.op(
        B::Quantize,
        &[rs],
        &[q],
        Some(O::QuantizeOptions(Box::default())),
    );
    let dq = m.activation("dequantized", &[1, 10]);
    m.op(
        B::Dequantize,
        &[q],
        &[dq],
        Some(O::DequantizeOptions(Box::default())),
    );

    let pads2 = m.constant_i32("pads2", &[4, 2], &[0, 0, 0, 1, 2, 0, 0, 0]);
    let value = m.constant_f32("pad_value", &[1], &[0.5]);
    let pv = m.activation("padv2", &[1, 9, 10, 4]);
    m.op(
        B::Padv2,
        &[x, pads2, value],
        &[pv],
        Some(O::PadV2Options(Box::default())),
    );

    m.finish(&[x], &[sm, ls, dq, pv])
}

/// A float model with the ops imported beyond the MLPerf Tiny set: RESIZE_BILINEAR,
/// DIV, MAXIMUM, MINIMUM, LEAKY_RELU, RELU_N1_TO_1, EXPAND_DIMS, SQUEEZE, GATHER.
/// Input `x` `[N, 6, 6, 3]`; outputs the gathered `[N, 12, 12, 2]` and `[N, 12, 12, 3]`.
pub fn extra_ops_model() -> s::Model {
    use s::BuiltinOptions as O;
    let mut m = ModelBuilder::new();
    let x = m.activation("x", &[1, 6, 6, 3]);

    let size = m.constant_i32("size", &[2], &[12, 12]);
    let rb = m.activation("resize_bilinear", &[1, 12, 12, 3]);
    let ro = s::ResizeBilinearOptions {
        align_corners: false,
        half_pixel_centers: true,
    };
    m.op(
        B::ResizeBilinear,
        &[x, size],
        &[rb],
        Some(O::ResizeBilinearOptions(Box::new(ro))),
    );

    let divisor = m.constant_f32("divisor", &[3], &[2.0, 4.0, 8.0]);
    let dv = m.activation("div", &[1, 12, 12, 3]);
    m.op(
        B::Div,
        &[rb, divisor],
        &[dv],
        Some(O::DivOptions(Box::default())),
    );

    let lo = m.constant_f32("lo", &[1], &[-0.1]);
    let mx = m.activation("maximum", &[1, 12, 12, 3]);
    m.op(
        B::Maximum,
        &[dv, lo],
        &[mx],
        Some(O::MaximumMinimumOptions(Box::default())),
    );
    let hi = m.constant_f32("hi", &[1], &[0.9]);
    let mi = m.activation("minimum", &[1, 12, 12, 3]);
    m.op(
        B::Minimum,
        &[mx, hi],
        &[mi],
        Some(O::MaximumMinimumOptions(Box::default())),
    );

    let lr = m.activation("leaky_relu", &[1, 12, 12, 3]);
    let lo_opts = s::LeakyReluOptions { alpha: 0.2 };
    m.op(
        B::LeakyRelu,
        &[mi],
        &[lr],
        Some(O::LeakyReluOptions(Box::new(lo_opts))),
    );
    let rn = m.activation("relu_n1_to_1", &[1, 12, 12, 3]);
    m.op(B::ReluN1To1, &[lr], &[rn], None);

    let axis = m.constant_i32("axis", &[1], &[0]);
    let ed = m.activation("expand_dims", &[1, 1, 12, 12, 3]);
    m.op(
        B::ExpandDims,
        &[rn, axis],
        &[ed],
        Some(O::ExpandDimsOptions(Box::default())),
    );
    let sq = m.activation("squeeze", &[1, 12, 12, 3]);
    let so = s::SqueezeOptions {
        squeeze_dims: Some(vec![0]),
    };
    m.op(
        B::Squeeze,
        &[ed],
        &[sq],
        Some(O::SqueezeOptions(Box::new(so))),
    );

    let indices = m.constant_i32("indices", &[2], &[2, 0]);
    let ga = m.activation("gather", &[1, 12, 12, 2]);
    let go = s::GatherOptions {
        axis: 3,
        batch_dims: 0,
    };
    m.op(
        B::Gather,
        &[sq, indices],
        &[ga],
        Some(O::GatherOptions(Box::new(go))),
    );

    m.finish(&[x], &[ga, rn])
}
