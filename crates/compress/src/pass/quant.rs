//! The quantization flow as passes: the preparation steps ([`prepare::Step`]), cross-
//! layer equalization, then `calibrate` → `plan` → [`bias-correction`] → `quantize`
//! → [`report`] → [`integer-io`]. [`crate::quant::ptq::run`] is this list built from
//! its options, so `edgeopt quantize` and a recipe run the same code.

use super::registry::{params, Build, ParamKind, ParamSpec, PassInfo, Registry};
use super::{Context, InPass, Needs, Pass, PassError, PassOutput, PassSpec, Recipe};
use crate::quant::mixed::{self, MixedOptions};
use crate::quant::prepare::Step;
use crate::quant::ptq::PtqOptions;
use crate::quant::{
    self, equalize, ActivationFormat, CalibMethod, Granularity, QuantPlan, WeightFormat, WeightSpec,
};
use edgeopt_ir::Graph;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Registers every quantization pass.
pub fn register(r: &mut Registry) {
    let builds: [Build; 6] = [
        |m| prepare_pass(Step::Canonicalize, m),
        |m| prepare_pass(Step::FoldBatchNorm, m),
        |m| prepare_pass(Step::ToFullyConnected, m),
        |m| prepare_pass(Step::ToNhwc, m),
        |m| prepare_pass(Step::FuseActivations, m),
        |m| prepare_pass(Step::Lift1d, m),
    ];
    for ((_, name, summary), build) in PREPARE.into_iter().zip(builds) {
        r.register(PassInfo {
            name,
            summary,
            params: vec![],
            build,
        })
        .expect("quantization pass names are distinct");
    }
    let infos = [
        PassInfo {
            name: "equalize",
            summary: "cross-layer equalization of consecutive conv/FC pairs with a ReLU or no \
                      activation between them (Nagel et al. 2019): same function, channel \
                      ranges evened out for per-channel weights",
            params: vec![],
            build: |m| {
                params::<NoParams>("equalize", m)?;
                Ok(Box::new(Equalize))
            },
        },
        PassInfo {
            name: "calibrate",
            summary: "runs the float graph on the calibration samples and records every \
                      activation's range",
            params: vec![
                ParamSpec::choice(
                    "method",
                    "how observed values become a range",
                    &["minmax", "percentile", "entropy", "mse"],
                    "minmax",
                ),
                ParamSpec {
                    name: "percentile",
                    doc: "percentile of |x| kept by method = percentile",
                    kind: ParamKind::Float {
                        min: 50.0,
                        max: 100.0,
                    },
                    default: json!(DEFAULT_PERCENTILE),
                    searchable: true,
                },
                ParamSpec::choice(
                    "activations",
                    "activation type the ranges are for",
                    &["int8", "int16", "fp16", "float"],
                    "int8",
                ),
            ],
            build: |m| Ok(Box::new(Calibrate::new(params("calibrate", m)?)?)),
        },
        PassInfo {
            name: "plan",
            summary: "chooses every weight's format: uniform, or per layer by sensitivity \
                      under a weight byte budget (mixed precision)",
            params: vec![
                ParamSpec::choice(
                    "weights",
                    "weight format of every layer (without budget)",
                    &["int8", "int4", "ternary", "binary", "fp16"],
                    "int8",
                ),
                ParamSpec {
                    name: "granularity",
                    doc: "tensor, channel, or group:N",
                    kind: ParamKind::Choice {
                        values: vec!["tensor".into(), "channel".into(), "group:N".into()],
                    },
                    default: json!("channel"),
                    searchable: true,
                },
                ParamSpec {
                    name: "budget",
                    doc: "mixed precision: weight bytes allowed",
                    kind: ParamKind::Bytes,
                    default: Value::Null,
                    searchable: true,
                },
                ParamSpec {
                    name: "candidates",
                    doc: "mixed precision: formats a layer may get",
                    kind: ParamKind::Choice {
                        values: ["Int8", "Int4", "Ternary", "Binary", "Fp16", "Float"]
                            .map(String::from)
                            .to_vec(),
                    },
                    default: json!(MixedOptions::default().candidates),
                    searchable: true,
                },
                ParamSpec {
                    name: "mixed_samples",
                    doc: "calibration samples measuring sensitivities",
                    kind: ParamKind::Integer { min: 1, max: None },
                    default: json!(MixedOptions::default().samples),
                    searchable: false,
                },
            ],
            build: |m| Ok(Box::new(Plan::new(params("plan", m)?)?)),
        },
        PassInfo {
            name: "bias-correction",
            summary: "subtracts the mean output shift of weight quantization from each bias \
                      (integer activations)",
            params: vec![],
            build: |m| {
                params::<NoParams>("bias-correction", m)?;
                Ok(Box::new(BiasCorrection))
            },
        },
        PassInfo {
            name: "quantize",
            summary: "the planned integer graph (TFLite int8 / 16x8 scheme), or fp16",
            params: vec![],
            build: |m| {
                params::<NoParams>("quantize", m)?;
                Ok(Box::new(Quantize))
            },
        },
        PassInfo {
            name: "report",
            summary: "per-layer SQNR of the quantized graph against the float one on \
                      calibration samples (graph unchanged)",
            params: vec![],
            build: |m| {
                params::<NoParams>("report", m)?;
                Ok(Box::new(ReportPass))
            },
        },
        PassInfo {
            name: "integer-io",
            summary: "integer model inputs and outputs (the TFLite converter's \
                      inference_input_type = int8)",
            params: vec![ParamSpec {
                name: "strict",
                doc: "an input or output that stays float is an error",
                kind: ParamKind::Bool,
                default: json!(true),
                searchable: false,
            }],
            build: |m| Ok(Box::new(IntegerIo(params("integer-io", m)?))),
        },
    ];
    for i in infos {
        r.register(i).expect("quantization pass names are distinct");
    }
}

const DEFAULT_PERCENTILE: f32 = 99.999;

/// The preparation steps as passes, in [`prepare::Step::ALL`] order.
///
/// [`prepare::Step::ALL`]: crate::quant::prepare::Step::ALL
pub const PREPARE: [(Step, &str, &str); 6] = [
    (
        Step::Canonicalize,
        "canonicalize",
        "constant Dequantize and constant subgraphs folded, LSTMs unrolled, erf GELU fused",
    ),
    (
        Step::FoldBatchNorm,
        "fold-bn",
        "BatchNorm folded into the preceding Conv / FullyConnected",
    ),
    (
        Step::ToFullyConnected,
        "to-fc",
        "Gemm / MatMul with constant weights → FullyConnected; spatial means → pools",
    ),
    (
        Step::ToNhwc,
        "to-nhwc",
        "NCHW → NHWC for layout-sensitive ops (transposes only where needed)",
    ),
    (
        Step::FuseActivations,
        "fuse-activations",
        "Relu / Relu6 / Clip fused into the producer",
    ),
    (
        Step::Lift1d,
        "lift-1d",
        "1-D convs and pools as 2-D over a unit height; Reshape pairs merged",
    ),
];

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

fn prepare_pass(step: Step, m: &Map<String, Value>) -> Result<Box<dyn Pass>, PassError> {
    let p = PreparePass::new(step);
    params::<NoParams>(p.name, m)?;
    Ok(Box::new(p))
}

/// One preparation step.
pub struct PreparePass {
    step: Step,
    name: &'static str,
}

impl PreparePass {
    pub fn new(step: Step) -> PreparePass {
        let name = PREPARE
            .iter()
            .find(|(s, _, _)| *s == step)
            .map(|(_, n, _)| *n)
            .expect("every step is listed");
        PreparePass { step, name }
    }
}

impl Pass for PreparePass {
    fn name(&self) -> &str {
        self.name
    }
    fn params(&self) -> Value {
        json!({})
    }
    fn exact(&self) -> bool {
        true
    }
    fn apply(&self, graph: Graph, _: &mut Context<'_>) -> Result<PassOutput, PassError> {
        let (nodes, params) = (graph.nodes.len(), graph.param_count());
        let g = self.step.run(graph).in_pass(self.name)?;
        let report = json!({
            "nodes_before": nodes, "nodes_after": g.nodes.len(),
            "params_before": params, "params_after": g.param_count(),
        });
        Ok(PassOutput::new(g, report))
    }
}

struct Equalize;

impl Pass for Equalize {
    fn name(&self) -> &str {
        "equalize"
    }
    fn params(&self) -> Value {
        json!({})
    }
    fn exact(&self) -> bool {
        true
    }
    fn apply(&self, graph: Graph, _: &mut Context<'_>) -> Result<PassOutput, PassError> {
        let mut g = graph;
        let pairs = equalize::cross_layer_equalize(&mut g).in_pass("equalize")?;
        Ok(PassOutput::new(g, json!({ "pairs": pairs })))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodParam {
    Minmax,
    Percentile,
    Entropy,
    Mse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationsParam {
    Int8,
    Int16,
    Fp16,
    Float,
}

impl From<ActivationsParam> for ActivationFormat {
    fn from(a: ActivationsParam) -> Self {
        match a {
            ActivationsParam::Int8 => ActivationFormat::Int8,
            ActivationsParam::Int16 => ActivationFormat::Int16,
            ActivationsParam::Fp16 => ActivationFormat::Fp16,
            ActivationsParam::Float => ActivationFormat::Float,
        }
    }
}

fn activations_param(a: ActivationFormat) -> ActivationsParam {
    match a {
        ActivationFormat::Int8 => ActivationsParam::Int8,
        ActivationFormat::Int16 => ActivationsParam::Int16,
        ActivationFormat::Fp16 => ActivationsParam::Fp16,
        ActivationFormat::Float => ActivationsParam::Float,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalibrateParams {
    pub method: MethodParam,
    pub percentile: f32,
    pub activations: ActivationsParam,
}

impl Default for CalibrateParams {
    fn default() -> Self {
        CalibrateParams {
            method: MethodParam::Minmax,
            percentile: DEFAULT_PERCENTILE,
            activations: ActivationsParam::Int8,
        }
    }
}

pub struct Calibrate {
    p: CalibrateParams,
    method: CalibMethod,
}

impl Calibrate {
    pub fn new(p: CalibrateParams) -> Result<Calibrate, PassError> {
        let method = match p.method {
            MethodParam::Minmax => CalibMethod::MinMax,
            MethodParam::Percentile => {
                if !(p.percentile > 50.0 && p.percentile <= 100.0) {
                    return Err(PassError::Recipe(format!(
                        "pass 'calibrate': percentile must be in (50, 100], got {}",
                        p.percentile
                    )));
                }
                CalibMethod::Percentile(p.percentile)
            }
            MethodParam::Entropy => CalibMethod::Entropy,
            MethodParam::Mse => CalibMethod::Mse,
        };
        Ok(Calibrate { p, method })
    }
}

impl Pass for Calibrate {
    fn name(&self) -> &str {
        "calibrate"
    }
    fn params(&self) -> Value {
        serde_json::to_value(&self.p).expect("plain data")
    }
    fn needs(&self) -> Needs {
        Needs {
            calibration: true,
            ..Needs::default()
        }
    }
    fn apply(&self, graph: Graph, ctx: &mut Context<'_>) -> Result<PassOutput, PassError> {
        let act: ActivationFormat = self.p.activations.into();
        let (ranges, obs) =
            quant::calibrate(&graph, ctx.calibration, self.method, act).in_pass("calibrate")?;
        let report = json!({ "samples": ctx.calibration.len(), "ranges": ranges.len() });
        ctx.quant.activations = Some(act);
        ctx.quant.ranges = Some(ranges);
        ctx.quant.observed = Some(obs);
        Ok(PassOutput::new(graph, report))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightsParam {
    Int8,
    Int4,
    Ternary,
    Binary,
    Fp16,
}

impl From<WeightsParam> for WeightFormat {
    fn from(w: WeightsParam) -> Self {
        match w {
            WeightsParam::Int8 => WeightFormat::Int8,
            WeightsParam::Int4 => WeightFormat::Int4,
            WeightsParam::Ternary => WeightFormat::Ternary,
            WeightsParam::Binary => WeightFormat::Binary,
            WeightsParam::Fp16 => WeightFormat::Fp16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanParams {
    pub weights: WeightsParam,
    pub granularity: String,
    /// Mixed precision: weight bytes allowed.
    #[serde(
        deserialize_with = "de_opt_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub budget: Option<u64>,
    pub mixed_samples: usize,
    /// Mixed precision: the formats a layer may get (int8 is always allowed).
    pub candidates: Vec<WeightFormat>,
}

impl Default for PlanParams {
    fn default() -> Self {
        let m = MixedOptions::default();
        PlanParams {
            weights: WeightsParam::Int8,
            granularity: "channel".into(),
            budget: None,
            mixed_samples: m.samples,
            candidates: m.candidates,
        }
    }
}

fn de_opt_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Int(n)) => Ok(Some(n)),
        Some(Size::Text(s)) => super::budget::parse_bytes(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// `tensor`, `channel` or `group:N` (N > 0).
pub fn parse_granularity(s: &str) -> Option<Granularity> {
    match s {
        "tensor" => Some(Granularity::Tensor),
        "channel" => Some(Granularity::Channel),
        _ => match s.strip_prefix("group:").map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => Some(Granularity::Group(n)),
            _ => None,
        },
    }
}

fn granularity_param(g: Granularity) -> String {
    match g {
        Granularity::Tensor => "tensor".into(),
        Granularity::Channel => "channel".into(),
        Granularity::Group(n) => format!("group:{n}"),
    }
}

pub struct Plan {
    p: PlanParams,
    spec: WeightSpec,
}

impl Plan {
    pub fn new(p: PlanParams) -> Result<Plan, PassError> {
        let granularity = parse_granularity(&p.granularity).ok_or_else(|| {
            PassError::Recipe(format!(
                "pass 'plan': granularity must be tensor, channel or group:N (N > 0), got '{}'",
                p.granularity
            ))
        })?;
        if p.budget.is_some() && p.weights != WeightsParam::Int8 {
            return Err(PassError::Recipe(
                "pass 'plan': a budget chooses the weight formats itself; do not combine it \
                 with weights"
                    .into(),
            ));
        }
        if p.mixed_samples == 0 {
            return Err(PassError::Recipe(
                "pass 'plan': mixed_samples must be at least 1".into(),
            ));
        }
        let spec = WeightSpec {
            format: p.weights.into(),
            granularity,
        };
        Ok(Plan { p, spec })
    }
}

impl Pass for Plan {
    fn name(&self) -> &str {
        "plan"
    }
    fn params(&self) -> Value {
        serde_json::to_value(&self.p).expect("plain data")
    }
    fn needs(&self) -> Needs {
        Needs {
            calibration: self.p.budget.is_some(),
            ..Needs::default()
        }
    }
    fn apply(&self, graph: Graph, ctx: &mut Context<'_>) -> Result<PassOutput, PassError> {
        let (Some(act), Some(ranges)) = (ctx.quant.activations, ctx.quant.ranges.clone()) else {
            return Err(PassError::Recipe(
                "pass 'plan' needs a 'calibrate' step before it".into(),
            ));
        };
        if act == ActivationFormat::Fp16 && self.spec.format != WeightFormat::Fp16 {
            return Err(PassError::Recipe(
                "fp16 activations (calibrate) need fp16 weights (plan)".into(),
            ));
        }
        let (plan, mixed) = match self.p.budget {
            Some(budget) => {
                let base = QuantPlan::uniform(&graph, quant::DEFAULT_WEIGHT, act, ranges);
                let opts = MixedOptions {
                    samples: self.p.mixed_samples,
                    candidates: self.p.candidates.clone(),
                };
                let budget = usize::try_from(budget).map_err(|_| {
                    PassError::Recipe(format!("pass 'plan': budget {budget} is too large"))
                })?;
                let m = mixed::allocate(&graph, &base, ctx.calibration, budget, &opts, ctx.exec)
                    .in_pass("plan")?;
                (m.plan.clone(), Some(m))
            }
            None => (QuantPlan::uniform(&graph, self.spec, act, ranges), None),
        };
        let report = json!({
            "layers": plan.weights.len(),
            "weight_bytes": quant::weight_size(&graph, &plan),
            "mixed": mixed.as_ref().map(|m| json!({
                "budget": m.budget, "total_bytes": m.total_bytes, "sqnr_db": m.sqnr_db,
            })),
        });
        ctx.quant.plan = Some(plan);
        ctx.quant.mixed = mixed;
        Ok(PassOutput::new(graph, report))
    }
}

struct BiasCorrection;

impl Pass for BiasCorrection {
    fn name(&self) -> &str {
        "bias-correction"
    }
    fn params(&self) -> Value {
        json!({})
    }
    fn apply(&self, graph: Graph, ctx: &mut Context<'_>) -> Result<PassOutput, PassError> {
        let (Some(plan), Some(obs)) = (&ctx.quant.plan, &ctx.quant.observed) else {
            return Err(PassError::Recipe(
                "pass 'bias-correction' needs 'calibrate' and 'plan' steps before it".into(),
            ));
        };
        if !matches!(
            plan.activations,
            Some(ActivationFormat::Int8 | ActivationFormat::Int16)
        ) {
            return Err(PassError::not_applicable(
                "bias-correction",
                None,
                "bias correction is for integer activations (the plan's are float)",
            ));
        }
        let mut g = graph;
        let layers = equalize::correct_bias(&mut g, plan, obs).in_pass("bias-correction")?;
        Ok(PassOutput::new(g, json!({ "layers": layers })))
    }
}

struct Quantize;

impl Pass for Quantize {
    fn name(&self) -> &str {
        "quantize"
    }
    fn params(&self) -> Value {
        json!({})
    }
    fn apply(&self, graph: Graph, ctx: &mut Context<'_>) -> Result<PassOutput, PassError> {
        let Some(plan) = &ctx.quant.plan else {
            return Err(PassError::Recipe(
                "pass 'quantize' needs a 'plan' step before it".into(),
            ));
        };
        let q = quant::apply(&graph, plan).in_pass("quantize")?;
        let report = json!({
            "weight_bytes": quant::weight_size(&graph, plan),
            "nodes_before": graph.nodes.len(),
            "nodes_after": q.nodes.len(),
        });
        ctx.quant.prepared = Some(graph);
        Ok(PassOutput::new(q, report))
    }
}

struct ReportPass;

impl Pass for ReportPass {
    fn name(&self) -> &str {
        "report"
    }
    fn params(&self) -> Value {
        json!({})
    }
    fn needs(&self) -> Needs {
        Needs {
            calibration: true,
            ..Needs::default()
        }
    }
    fn exact(&self) -> bool {
        true
    }
    fn apply(&self, graph: Graph, ctx: &mut Context<'_>) -> Result<PassOutput, PassError> {
        let (Some(prepared), Some(plan)) = (&ctx.quant.prepared, &ctx.quant.plan) else {
            return Err(PassError::Recipe(
                "pass 'report' needs a 'quantize' step before it".into(),
            ));
        };
        let r = quant::report::build(
            prepared,
            &graph,
            plan,
            ctx.calibration,
            ctx.quant.mixed.as_ref(),
            ctx.exec,
        )
        .in_pass("report")?;
        let v = serde_json::to_value(&r).unwrap_or(Value::Null);
        ctx.quant.report = Some(r);
        Ok(PassOutput::new(graph, v))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegerIoParams {
    pub strict: bool,
}

impl Default for IntegerIoParams {
    fn default() -> Self {
        IntegerIoParams { strict: true }
    }
}

struct IntegerIo(IntegerIoParams);

impl Pass for IntegerIo {
    fn name(&self) -> &str {
        "integer-io"
    }
    fn params(&self) -> Value {
        serde_json::to_value(&self.0).expect("plain data")
    }
    fn apply(&self, graph: Graph, _: &mut Context<'_>) -> Result<PassOutput, PassError> {
        let mut g = graph;
        quant::edge::integer_io(&mut g, self.0.strict).in_pass("integer-io")?;
        Ok(PassOutput::new(g, json!({})))
    }
}

impl PtqOptions {
    /// The recipe this flow is: the preparation steps, [equalize], calibrate, plan,
    /// [bias-correction] (integer activations only), quantize, [report].
    pub fn recipe(&self) -> Recipe {
        let mut passes: Vec<PassSpec> = PREPARE.iter().map(|(_, n, _)| PassSpec::new(n)).collect();
        if self.equalize {
            passes.push(PassSpec::new("equalize"));
        }
        let (method, percentile) = match self.method {
            CalibMethod::MinMax => (MethodParam::Minmax, DEFAULT_PERCENTILE),
            CalibMethod::Percentile(p) => (MethodParam::Percentile, p),
            CalibMethod::Entropy => (MethodParam::Entropy, DEFAULT_PERCENTILE),
            CalibMethod::Mse => (MethodParam::Mse, DEFAULT_PERCENTILE),
        };
        let calib = CalibrateParams {
            method,
            percentile,
            activations: activations_param(self.activations),
        };
        passes.push(spec_of("calibrate", &calib));
        let weights = match self.weights.format {
            WeightFormat::Int8 | WeightFormat::Float => WeightsParam::Int8,
            WeightFormat::Int4 => WeightsParam::Int4,
            WeightFormat::Ternary => WeightsParam::Ternary,
            WeightFormat::Binary => WeightsParam::Binary,
            WeightFormat::Fp16 => WeightsParam::Fp16,
        };
        let plan = PlanParams {
            weights,
            granularity: granularity_param(self.weights.granularity),
            budget: self.budget.map(|b| b as u64),
            mixed_samples: self.mixed.samples,
            candidates: self.mixed.candidates.clone(),
        };
        passes.push(spec_of("plan", &plan));
        let integer = matches!(
            self.activations,
            ActivationFormat::Int8 | ActivationFormat::Int16
        );
        if self.bias_correction && integer {
            passes.push(PassSpec::new("bias-correction"));
        }
        passes.push(PassSpec::new("quantize"));
        if self.report {
            passes.push(PassSpec::new("report"));
        }
        Recipe {
            name: Some("ptq".into()),
            passes,
            ..Recipe::default()
        }
    }
}

fn spec_of<T: Serialize>(name: &str, p: &T) -> PassSpec {
    let Value::Object(params) = serde_json::to_value(p).expect("plain data") else {
        unreachable!("parameters serialize to an object")
    };
    PassSpec {
        name: name.to_string(),
        params,
    }
}
