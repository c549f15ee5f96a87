//! Model zoo: parameterized builders that emit edgeopt IR graphs.
//!
//! Every architecture takes its width, depth, kernel size and (where it applies)
//! expansion as parameters, because architecture search drives them. Graphs use ONNX
//! semantics ([`edgeopt_ir::Layout::Nchw`]), a symbolic batch dimension, and end in
//! logits (an output named `logits`, or `reconstruction` for the autoencoder); pass
//! `softmax=true` to append a Softmax. Weights are freshly initialised from `seed`.
//!
//! From the command line an architecture is a name plus `key=value` arguments, lists
//! separated by `:` (`--arch resnet8 --arch-args widths=16:32:64,blocks=1`), see
//! [`ArchSpec::parse`].

pub mod builder;

use builder::{Builder, ConvSpec};
use edgeopt_ir::{Graph, ValueId};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    #[error("model config: {0}")]
    Config(String),
    #[error("unknown architecture '{0}' (known: {1})")]
    UnknownArch(String, String),
    #[error("architecture '{arch}': {msg}")]
    Arg { arch: String, msg: String },
}

/// Names accepted by [`ArchSpec::parse`].
pub const ARCH_NAMES: &[&str] = &[
    "lenet300100",
    "lenet5",
    "resnet8",
    "dscnn",
    "mobilenetv1",
    "cnn1d",
    "autoencoder",
];

/// Multi-layer perceptron; the defaults are LeNet-300-100 (LeCun et al. 1998, the
/// Deep Compression baseline: 266,610 parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// Input shape without batch (flattened by the first node).
    pub input: Vec<usize>,
    pub hidden: Vec<usize>,
    pub classes: usize,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            input: vec![1, 28, 28],
            hidden: vec![300, 100],
            classes: 10,
        }
    }
}

/// LeNet-5 as in Caffe's MNIST example and Deep Compression (conv 20 5x5, pool,
/// conv 50 5x5, pool, fc 500, fc 10: 431,080 parameters), with a ReLU after each
/// conv (`conv_relu`, on by default; Caffe's original has none, the count is the same).
#[derive(Debug, Clone, PartialEq)]
pub struct Lenet5Config {
    pub input: Vec<usize>,
    pub conv1: usize,
    pub conv2: usize,
    pub fc: usize,
    pub kernel: usize,
    pub classes: usize,
    pub conv_relu: bool,
}

impl Default for Lenet5Config {
    fn default() -> Self {
        Lenet5Config {
            input: vec![1, 28, 28],
            conv1: 20,
            conv2: 50,
            fc: 500,
            kernel: 5,
            classes: 10,
            conv_relu: true,
        }
    }
}

/// MLPerf Tiny image-classification ResNet (resnet_v1_eembc: ResNet-8 with widths
/// 16/32/64, one basic block per stage; 78,666 parameters with BN unfolded).
/// `blocks` is the number of basic blocks per stage (depth).
#[derive(Debug, Clone, PartialEq)]
pub struct ResnetConfig {
    pub input: Vec<usize>,
    pub widths: Vec<usize>,
    pub blocks: usize,
    pub kernel: usize,
    pub classes: usize,
}

impl Default for ResnetConfig {
    fn default() -> Self {
        ResnetConfig {
            input: vec![3, 32, 32],
            widths: vec![16, 32, 64],
            blocks: 1,
            kernel: 3,
            classes: 10,
        }
    }
}

/// MLPerf Tiny keyword-spotting DS-CNN: conv (10x4, stride 2) then `blocks`
/// depthwise-separable blocks of `width` channels, average pool, fc.
#[derive(Debug, Clone, PartialEq)]
pub struct DsCnnConfig {
    /// `[1, frames, mfcc]`, MLPerf: 49 frames x 10 coefficients.
    pub input: Vec<usize>,
    pub width: usize,
    pub blocks: usize,
    pub kernel: usize,
    pub classes: usize,
}

impl Default for DsCnnConfig {
    fn default() -> Self {
        DsCnnConfig {
            input: vec![1, 49, 10],
            width: 64,
            blocks: 4,
            kernel: 3,
            classes: 12,
        }
    }
}

/// MobileNetV1 (Howard et al. 2017) with width multiplier `alpha` and input
/// `resolution`; `repeats` is the number of stride-1 512-wide blocks (5 in the paper).
#[derive(Debug, Clone, PartialEq)]
pub struct MobileNetConfig {
    pub alpha: f32,
    pub resolution: usize,
    pub in_channels: usize,
    pub repeats: usize,
    pub kernel: usize,
    pub classes: usize,
}

impl Default for MobileNetConfig {
    fn default() -> Self {
        MobileNetConfig {
            alpha: 1.0,
            resolution: 224,
            in_channels: 3,
            repeats: 5,
            kernel: 3,
            classes: 1000,
        }
    }
}

/// 1-D CNN for multi-channel sensor windows `[channels, length]`: one stage per entry
/// of `widths` (conv k, BN, ReLU, max-pool 2), global average pool, fc. With
/// `expansion > 1` each stage's conv becomes an inverted bottleneck (1x1 expand by
/// `expansion`, depthwise k, 1x1 project, residual when the width is unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct Cnn1dConfig {
    pub channels: usize,
    pub length: usize,
    pub widths: Vec<usize>,
    pub kernel: usize,
    pub expansion: usize,
    pub classes: usize,
}

impl Default for Cnn1dConfig {
    fn default() -> Self {
        Cnn1dConfig {
            channels: 3,
            length: 512,
            widths: vec![16, 32, 32],
            kernel: 7,
            expansion: 1,
            classes: 5,
        }
    }
}

/// Fully connected autoencoder (MLPerf Tiny anomaly detection: 640 -> 4x128 -> 8 ->
/// 4x128 -> 640, each hidden layer Dense + BN + ReLU).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderConfig {
    pub input: usize,
    pub hidden: usize,
    /// Hidden layers on each side of the bottleneck.
    pub depth: usize,
    pub bottleneck: usize,
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        AutoencoderConfig {
            input: 640,
            hidden: 128,
            depth: 4,
            bottleneck: 8,
        }
    }
}

/// One architecture with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchSpec {
    Mlp(MlpConfig),
    Lenet5(Lenet5Config),
    Resnet(ResnetConfig),
    DsCnn(DsCnnConfig),
    MobileNetV1(MobileNetConfig),
    Cnn1d(Cnn1dConfig),
    Autoencoder(AutoencoderConfig),
}

/// `key=value` arguments, parsed lazily so each architecture reports unknown keys.
struct Args {
    arch: String,
    map: BTreeMap<String, String>,
}

impl Args {
    fn parse(arch: &str, s: &str) -> Result<Args, ZooError> {
        let mut map = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| ZooError::Arg {
                arch: arch.into(),
                msg: format!("'{part}' is not key=value"),
            })?;
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(Args {
            arch: arch.into(),
            map,
        })
    }

    fn err(&self, msg: String) -> ZooError {
        ZooError::Arg {
            arch: self.arch.clone(),
            msg,
        }
    }

    fn usize(&mut self, key: &str, default: usize) -> Result<usize, ZooError> {
        match self.map.remove(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| self.err(format!("{key}={v} is not a non-negative integer"))),
        }
    }

    fn f32(&mut self, key: &str, default: f32) -> Result<f32, ZooError> {
        match self.map.remove(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .ok()
                .filter(|x: &f32| x.is_finite() && *x > 0.0)
                .ok_or_else(|| self.err(format!("{key}={v} is not a positive number"))),
        }
    }

    fn bool(&mut self, key: &str, default: bool) -> Result<bool, ZooError> {
        match self.map.remove(key).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => Err(self.err(format!("{key}={v} is not a boolean"))),
        }
    }

    fn list(&mut self, key: &str, default: &[usize]) -> Result<Vec<usize>, ZooError> {
        match self.map.remove(key) {
            None => Ok(default.to_vec()),
            Some(v) => v
                .split(':')
                .map(|x| x.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| self.err(format!("{key}={v} is not a ':'-separated list"))),
        }
    }

    fn done(self) -> Result<(), ZooError> {
        if let Some(k) = self.map.keys().next() {
            return Err(self.err(format!("unknown argument '{k}'")));
        }
        Ok(())
    }
}

/// Build options shared by all architectures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BuildOptions {
    pub seed: u64,
    /// Append a Softmax to classifiers (training uses the logits either way).
    pub softmax: bool,
}

impl ArchSpec {
    /// Parses `name` and comma-separated `key=value` arguments (lists use `:`).
    ///
    /// | arch | keys (defaults) |
    /// |---|---|
    /// | lenet300100 | input=1:28:28 hidden=300:100 classes=10 |
    /// | lenet5 | input=1:28:28 conv1=20 conv2=50 fc=500 kernel=5 classes=10 conv_relu=true |
    /// | resnet8 | input=3:32:32 widths=16:32:64 blocks=1 kernel=3 classes=10 |
    /// | dscnn | input=1:49:10 width=64 blocks=4 kernel=3 classes=12 |
    /// | mobilenetv1 | alpha=1.0 resolution=224 in_channels=3 repeats=5 kernel=3 classes=1000 |
    /// | cnn1d | channels=3 length=512 widths=16:32:32 kernel=7 expansion=1 classes=5 |
    /// | autoencoder | input=640 hidden=128 depth=4 bottleneck=8 |
    pub fn parse(name: &str, args: &str) -> Result<ArchSpec, ZooError> {
        let name_l = name.to_ascii_lowercase().replace(['-', '_'], "");
        let mut a = Args::parse(name, args)?;
        let spec = match name_l.as_str() {
            "lenet300100" | "mlp" => {
                let d = MlpConfig::default();
                ArchSpec::Mlp(MlpConfig {
                    input: a.list("input", &d.input)?,
                    hidden: a.list("hidden", &d.hidden)?,
                    classes: a.usize("classes", d.classes)?,
                })
            }
            "lenet5" => {
                let d = Lenet5Config::default();
                ArchSpec::Lenet5(Lenet5Config {
                    input: a.list("input", &d.input)?,
                    conv1: a.usize("conv1", d.conv1)?,
                    conv2: a.usize("conv2", d.conv2)?,
                    fc: a.usize("fc", d.fc)?,
                    kernel: a.usize("kernel", d.kernel)?,
                    classes: a.usize("classes", d.classes)?,
                    conv_relu: a.bool("conv_relu", d.conv_relu)?,
                })
            }
            "resnet8" | "resnet" => {
                let d = ResnetConfig::default();
                ArchSpec::Resnet(ResnetConfig {
                    input: a.list("input", &d.input)?,
                    widths: a.list("widths", &d.widths)?,
                    blocks: a.usize("blocks", d.blocks)?,
                    kernel: a.usize("kernel", d.kernel)?,
                    classes: a.usize("classes", d.classes)?,
                })
            }
            "dscnn" => {
                let d = DsCnnConfig::default();
                ArchSpec::DsCnn(DsCnnConfig {
                    input: a.list("input", &d.input)?,
                    width: a.usize("width", d.width)?,
                    blocks: a.usize("blocks", d.blocks)?,
                    kernel: a.usize("kernel", d.kernel)?,
                    classes: a.usize("classes", d.classes)?,
                })
            }
            "mobilenetv1" | "mobilenet" => {
                let d = MobileNetConfig::default();
                ArchSpec::MobileNetV1(MobileNetConfig {
                    alpha: a.f32("alpha", d.alpha)?,
                    resolution: a.usize("resolution", d.resolution)?,
                    in_channels: a.usize("in_channels", d.in_channels)?,
                    repeats: a.usize("repeats", d.repeats)?,
                    kernel: a.usize("kernel", d.kernel)?,
                    classes: a.usize("classes", d.classes)?,
                })
            }
            "cnn1d" => {
                let d = Cnn1dConfig::default();
                ArchSpec::Cnn1d(Cnn1dConfig {
                    channels: a.usize("channels", d.channels)?,
                    length: a.usize("length", d.length)?,
                    widths: a.list("widths", &d.widths)?,
                    kernel: a.usize("kernel", d.kernel)?,
                    expansion: a.usize("expansion", d.expansion)?,
                    classes: a.usize("classes", d.classes)?,
                })
            }
            "autoencoder" | "fcae" => {
                let d = AutoencoderConfig::default();
                ArchSpec::Autoencoder(AutoencoderConfig {
                    input: a.usize("input", d.input)?,
                    hidden: a.usize("hidden", d.hidden)?,
                    depth: a.usize("depth", d.depth)?,
                    bottleneck: a.usize("bottleneck", d.bottleneck)?,
                })
            }
            _ => {
                return Err(ZooError::UnknownArch(
                    name.to_string(),
                    ARCH_NAMES.join(", "),
                ))
            }
        };
        a.done()?;
        Ok(spec)
    }

    /// Input shape without the batch dimension.
    pub fn input_shape(&self) -> Vec<usize> {
        match self {
            ArchSpec::Mlp(c) => c.input.clone(),
            ArchSpec::Lenet5(c) => c.input.clone(),
            ArchSpec::Resnet(c) => c.input.clone(),
            ArchSpec::DsCnn(c) => c.input.clone(),
            ArchSpec::MobileNetV1(c) => vec![c.in_channels, c.resolution, c.resolution],
            ArchSpec::Cnn1d(c) => vec![c.channels, c.length],
            ArchSpec::Autoencoder(c) => vec![c.input],
        }
    }

    /// Whether the model is a classifier (else a regressor / autoencoder).
    pub fn is_classifier(&self) -> bool {
        !matches!(self, ArchSpec::Autoencoder(_))
    }

    pub fn build(&self, opts: BuildOptions) -> Result<Graph, ZooError> {
        match self {
            ArchSpec::Mlp(c) => mlp(c, opts),
            ArchSpec::Lenet5(c) => lenet5(c, opts),
            ArchSpec::Resnet(c) => resnet(c, opts),
            ArchSpec::DsCnn(c) => dscnn(c, opts),
            ArchSpec::MobileNetV1(c) => mobilenet_v1(c, opts),
            ArchSpec::Cnn1d(c) => cnn1d(c, opts),
            ArchSpec::Autoencoder(c) => autoencoder(c, opts),
        }
    }
}

fn check_nonzero(what: &str, v: &[usize]) -> Result<(), ZooError> {
    if v.is_empty() || v.contains(&0) {
        return Err(ZooError::Config(format!(
            "{what} must be non-empty and positive, got {v:?}"
        )));
    }
    // Keep builders from being asked for absurd sizes (an allocation bomb).
    if v.iter().any(|&d| d > 1 << 16) {
        return Err(ZooError::Config(format!(
            "{what} {v:?} is implausibly large"
        )));
    }
    Ok(())
}

fn finish_classifier(
    mut b: Builder,
    logits: ValueId,
    opts: BuildOptions,
) -> Result<Graph, ZooError> {
    b.rename(logits, "logits");
    let out = if opts.softmax {
        let p = b.softmax(logits);
        b.rename(p, "probabilities");
        p
    } else {
        logits
    };
    b.output(out);
    b.finish()
}

/// LeNet-300-100 and any MLP: Flatten, (Gemm, ReLU) per hidden layer, Gemm.
pub fn mlp(c: &MlpConfig, opts: BuildOptions) -> Result<Graph, ZooError> {
    check_nonzero("input", &c.input)?;
    check_nonzero("classes", &[c.classes])?;
    if c.hidden.contains(&0) {
        return Err(ZooError::Config("hidden widths must be > 0".into()));
    }
    let name = if *c == MlpConfig::default() {
        "lenet300100"
    } else {
        "mlp"
    };
    let mut b = Builder::new(name, opts.seed);
    let x = b.input("input", &c.input);
    let mut h = b.flatten(x);
    for &w in &c.hidden {
        h = b.dense(h, w)?;
        h = b.relu(h);
    }
    let y = b.dense(h, c.classes)?;
    finish_classifier(b, y, opts)
}

pub fn lenet5(c: &Lenet5Config, opts: BuildOptions) -> Result<Graph, ZooError> {
    check_nonzero("input", &c.input)?;
    check_nonzero("widths", &[c.conv1, c.conv2, c.fc, c.kernel, c.classes])?;
    let mut b = Builder::new("lenet5", opts.seed);
    let x = b.input("input", &c.input);
    let mut h = b.conv(x, ConvSpec::new(c.conv1, c.kernel).valid())?;
    if c.conv_relu {
        h = b.relu(h);
    }
    h = b.max_pool(h, 2, 2)?;
    h = b.conv(h, ConvSpec::new(c.conv2, c.kernel).valid())?;
    if c.conv_relu {
        h = b.relu(h);
    }
    h = b.max_pool(h, 2, 2)?;
    h = b.flatten(h);
    h = b.dense(h, c.fc)?;
    h = b.relu(h);
    let y = b.dense(h, c.classes)?;
    finish_classifier(b, y, opts)
}

/// Conv + BN (+ ReLU).
fn conv_bn(b: &mut Builder, x: ValueId, spec: ConvSpec, relu: bool) -> Result<ValueId, ZooError> {
    let h = b.conv(x, spec)?;
    let h = b.batch_norm(h);
    Ok(if relu { b.relu(h) } else { h })
}

pub fn resnet(c: &ResnetConfig, opts: BuildOptions) -> Result<Graph, ZooError> {
    check_nonzero("input", &c.input)?;
    check_nonzero("widths", &c.widths)?;
    check_nonzero("blocks/kernel/classes", &[c.blocks, c.kernel, c.classes])?;
    let mut b = Builder::new("resnet8", opts.seed);
    let x = b.input("input", &c.input);
    let mut h = conv_bn(&mut b, x, ConvSpec::new(c.widths[0], c.kernel), true)?;
    for (stage, &w) in c.widths.iter().enumerate() {
        for blk in 0..c.blocks {
            // The first block of every stage but the first halves the resolution.
            let stride = if stage > 0 && blk == 0 { 2 } else { 1 };
            let y = conv_bn(&mut b, h, ConvSpec::new(w, c.kernel).stride(stride), true)?;
            let y = conv_bn(&mut b, y, ConvSpec::new(w, c.kernel), false)?;
            let shortcut = if stride != 1 || b.shape(h)[0] != w {
                // MLPerf's projection shortcut: a 1x1 conv without BN.
                b.conv(h, ConvSpec::new(w, 1).stride(stride))?
            } else {
                h
            };
            let s = b.add(y, shortcut)?;
            h = b.relu(s);
        }
    }
    h = b.global_avg_pool(h);
    h = b.flatten(h);
    let y = b.dense(h, c.classes)?;
    finish_classifier(b, y, opts)
}

pub fn dscnn(c: &DsCnnConfig, opts: BuildOptions) -> Result<Graph, ZooError> {
    check_nonzero("input", &c.input)?;
    check_nonzero(
        "width/blocks/kernel/classes",
        &[c.width, c.kernel, c.classes],
    )?;
    if c.input.len() != 3 {
        return Err(ZooError::Config(format!(
            "dscnn input must be [1, frames, coefficients], got {:?}",
            c.input
        )));
    }
    let mut b = Builder::new("dscnn", opts.seed);
    let x = b.input("input", &c.input);
    // MLPerf: 10x4 kernel, stride 2, same padding (clamped to small inputs).
    let kh = 10.min(c.input[1]);
    let kw = 4.min(c.input[2]);
    let mut h = conv_bn(
        &mut b,
        x,
        ConvSpec::new(c.width, 1).kernel_dims(&[kh, kw]).stride(2),
        true,
    )?;
    for _ in 0..c.blocks {
        h = conv_bn(
            &mut b,
            h,
            ConvSpec::new(c.width, c.kernel).group(c.width),
            true,
        )?;
        h = conv_bn(&mut b, h, ConvSpec::new(c.width, 1), true)?;
    }
    h = b.global_avg_pool(h);
    h = b.flatten(h);
    let y = b.dense(h, c.classes)?;
    finish_classifier(b, y, opts)
}

pub fn mobilenet_v1(c: &MobileNetConfig, opts: BuildOptions) -> Result<Graph, ZooError> {
    check_nonzero(
        "resolution/in_channels/kernel/classes",
        &[c.resolution, c.in_channels, c.kernel, c.classes],
    )?;
    if !(c.alpha.is_finite() && c.alpha > 0.0 && c.alpha <= 4.0) {
        return Err(ZooError::Config(format!("alpha {} not in (0, 4]", c.alpha)));
    }
    // Channel counts as in Keras: int(filters * alpha), at least 1.
    let ch = |f: usize| ((f as f32 * c.alpha) as usize).max(1);
    let mut b = Builder::new("mobilenetv1", opts.seed);
    let x = b.input("input", &[c.in_channels, c.resolution, c.resolution]);
    let conv_bn6 = |b: &mut Builder, x, spec| -> Result<ValueId, ZooError> {
        let h = b.conv(x, spec)?;
        let h = b.batch_norm(h);
        Ok(b.relu6(h))
    };
    let mut h = conv_bn6(&mut b, x, ConvSpec::new(ch(32), 3).stride(2).no_bias())?;
    let mut plan: Vec<(usize, usize)> =
        vec![(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)];
    plan.extend(std::iter::repeat_n((512, 1), c.repeats));
    plan.extend([(1024, 2), (1024, 1)]);
    for (f, s) in plan {
        let cin = b.shape(h)[0];
        h = conv_bn6(
            &mut b,
            h,
            ConvSpec::new(cin, c.kernel).stride(s).group(cin).no_bias(),
        )?;
        h = conv_bn6(&mut b, h, ConvSpec::new(ch(f), 1).no_bias())?;
    }
    h = b.global_avg_pool(h);
    h = b.flatten(h);
    let y = b.dense(h, c.classes)?;
    finish_classifier(b, y, opts)
}

pub fn cnn1d(c: &Cnn1dConfig, opts: BuildOptions) -> Result<Graph, ZooError> {
    check_nonzero(
        "channels/length/kernel/classes",
        &[c.channels, c.length, c.kernel, c.classes],
    )?;
    check_nonzero("widths", &c.widths)?;
    check_nonzero("expansion", &[c.expansion])?;
    let mut b = Builder::new("cnn1d", opts.seed);
    let x = b.input("input", &[c.channels, c.length]);
    let mut h = x;
    for (i, &w) in c.widths.iter().enumerate() {
        if c.expansion == 1 || i == 0 {
            // Plain conv; the first stage is always plain since the raw axes are few.
            h = conv_bn(&mut b, h, ConvSpec::new(w, c.kernel), true)?;
        } else {
            let cin = b.shape(h)[0];
            let e = cin * c.expansion;
            let mut y = conv_bn(&mut b, h, ConvSpec::new(e, 1), true)?;
            y = conv_bn(&mut b, y, ConvSpec::new(e, c.kernel).group(e), true)?;
            y = conv_bn(&mut b, y, ConvSpec::new(w, 1), false)?;
            h = if cin == w { b.add(y, h)? } else { y };
        }
        if b.shape(h)[1] >= 2 {
            h = b.max_pool(h, 2, 2)?;
        }
    }
    h = b.global_avg_pool(h);
    h = b.flatten(h);
    let y = b.dense(h, c.classes)?;
    finish_classifier(b, y, opts)
}

pub fn autoencoder(c: &AutoencoderConfig, opts: BuildOptions) -> Result<Graph, ZooError> {
    check_nonzero(
        "input/hidden/bottleneck",
        &[c.input, c.hidden, c.bottleneck],
    )?;
    let mut b = Builder::new("autoencoder", opts.seed);
    let x = b.input("input", &[c.input]);
    let mut h = x;
    let mut widths = vec![c.hidden; c.depth];
    widths.push(c.bottleneck);
    widths.extend(std::iter::repeat_n(c.hidden, c.depth));
    for w in widths {
        h = b.dense(h, w)?;
        h = b.batch_norm(h);
        h = b.relu(h);
    }
    let y = b.dense(h, c.input)?;
    b.rename(y, "reconstruction");
    b.output(y);
    b.finish()
}

/// Parameter count of a built graph (all constants; BN statistics included).
pub fn count_params(g: &Graph) -> usize {
    g.param_count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Conv/dense weights and biases, excluding BatchNorm parameters and statistics
    /// (the MLPerf reference files have BN folded into the convs).
    fn weights(g: &Graph) -> usize {
        g.values
            .iter()
            .filter(|v| v.name.starts_with("conv_") || v.name.starts_with("fc_"))
            .filter_map(|v| v.data.as_ref())
            .map(|t| t.len())
            .sum()
    }

    #[test]
    fn known_parameter_counts() {
        let o = BuildOptions::default();
        // LeNet-300-100: 784*300+300 + 300*100+100 + 100*10+10.
        let g = ArchSpec::parse("lenet300100", "")
            .unwrap()
            .build(o)
            .unwrap();
        assert_eq!(weights(&g), 266_610);
        // LeNet-5 (Caffe): 20*25+20 + 50*20*25+50 + 800*500+500 + 500*10+10.
        let g = ArchSpec::parse("lenet5", "").unwrap().build(o).unwrap();
        assert_eq!(weights(&g), 431_080);
        // The next three are the float initializer counts of the MLPerf Tiny reference
        // models in ../shared/data/mlperf-tiny/onnx (BN folded; counted with onnx):
        // pretrainedResnet.onnx 77,706; kws_ref_model_float32.onnx 22,604 (+6 QDQ
        // scalars); ad01_fp32.onnx 265,864.
        let g = ArchSpec::parse("resnet8", "").unwrap().build(o).unwrap();
        assert_eq!(weights(&g), 77_706);
        let g = ArchSpec::parse("dscnn", "").unwrap().build(o).unwrap();
        assert_eq!(weights(&g), 22_604);
        let g = ArchSpec::parse("autoencoder", "")
            .unwrap()
            .build(o)
            .unwrap();
        assert_eq!(weights(&g), 265_864);
        // MobileNetV1 1.0/224: "4.2 million" parameters (Howard et al. 2017, Table 8).
        let g = ArchSpec::parse("mobilenetv1", "")
            .unwrap()
            .build(o)
            .unwrap();
        let w = weights(&g);
        assert!((4_150_000..4_250_000).contains(&w), "{w}");
    }

    #[test]
    fn all_archs_build_and_validate() {
        for name in ARCH_NAMES {
            let args = if *name == "mobilenetv1" {
                "alpha=0.25,resolution=96"
            } else {
                ""
            };
            let spec = ArchSpec::parse(name, args).unwrap();
            let g = spec
                .build(BuildOptions {
                    seed: 1,
                    softmax: true,
                })
                .unwrap();
            g.validate().unwrap();
            assert_eq!(g.inputs.len(), 1);
            assert_eq!(g.outputs.len(), 1);
        }
    }

    #[test]
    fn seeded_builds_are_reproducible() {
        let s = ArchSpec::parse("cnn1d", "expansion=2,widths=8:16:16").unwrap();
        let a = s
            .build(BuildOptions {
                seed: 7,
                softmax: false,
            })
            .unwrap();
        let b = s
            .build(BuildOptions {
                seed: 7,
                softmax: false,
            })
            .unwrap();
        let c = s
            .build(BuildOptions {
                seed: 8,
                softmax: false,
            })
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn bad_args_are_errors() {
        assert!(ArchSpec::parse("resnet8", "widths=16:x").is_err());
        assert!(ArchSpec::parse("resnet8", "depth=3").is_err());
        assert!(ArchSpec::parse("nope", "").is_err());
        assert!(ArchSpec::parse("lenet5", "kernel=0")
            .unwrap()
            .build(BuildOptions::default())
            .is_err());
        assert!(ArchSpec::parse("lenet5", "kernel=40")
            .unwrap()
            .build(BuildOptions::default())
            .is_err());
        assert!(ArchSpec::parse("mobilenetv1", "alpha=-1").is_err());
    }
}
