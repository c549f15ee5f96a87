//! What the `edgeopt` sub-commands do, as a library so tests call the same code as the
//! binary: loading a model ([`model`]), `inspect` ([`inspect`]), `eval` ([`eval`]),
//! `run` ([`run`]), `bench` ([`bench`]) and `train` / `demo` ([`train`]).

pub mod apply;
pub mod bench;
pub mod compile;
pub mod eval;
pub mod inspect;
pub mod model;
pub mod quantize;
pub mod run;
pub mod train;

pub use model::load_model;

use edgeopt_runtime::kernels::fast::Kernels;
use edgeopt_runtime::kernels::quantized::Numerics;
use edgeopt_runtime::ExecOptions;

/// The value parser of `--layout` (nhwc or nchw): the evaluator's
/// [`edgeopt_eval::DataLayout`], listed as possible values in `--help`.
pub fn layout_parser() -> impl clap::builder::TypedValueParser<Value = edgeopt_eval::DataLayout> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(edgeopt_eval::DataLayout::NAMES)
        .map(|s| s.parse().expect("a possible value names a layout"))
}

/// `--numerics`: which runtime's integer results `run`, `eval`, `bench` and
/// `quantize` reproduce bit for bit where TFLite's kernels disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NumericsArg {
    /// LiteRT's builtin CPU kernels (without the XNNPACK delegate): what a .tflite
    /// gives on a phone or a Linux board.
    #[default]
    Litert,
    /// TensorFlow Lite Micro's kernels (and CMSIS-NN's): what the microcontroller,
    /// and the C `edgeopt compile` writes, computes.
    Tflm,
}

impl NumericsArg {
    pub fn numerics(self) -> Numerics {
        match self {
            NumericsArg::Litert => Numerics::LiteRt,
            NumericsArg::Tflm => Numerics::Tflm,
        }
    }

    /// The execution options of a command: these numerics, on the kernels
    /// `EDGEOPT_KERNELS` names (native by default; results do not depend on it).
    pub fn options(self) -> ExecOptions {
        ExecOptions {
            numerics: self.numerics(),
            kernels: Kernels::from_env(),
        }
    }
}

/// The lines `edgeopt eval --top-k K --per-class` adds below the top-1 line (empty
/// without those options).
pub fn render_eval_extras(r: &eval::EvalReport) -> String {
    let mut out = String::new();
    if let Some(k) = &r.top_k {
        out += &format!(
            "top-{} accuracy {:.2}% ({} / {})\n",
            k.k, k.accuracy, k.correct, r.samples
        );
    }
    for c in &r.per_class {
        out += &format!(
            "class {:>4}: {:6.2}% ({} / {})\n",
            c.class, c.accuracy, c.correct, c.samples
        );
    }
    out
}
