//! Passes and recipes (issue 15 item 4): the committed PTQ recipe
//! (`recipes/ptq-int8.toml`) run by `edgeopt apply` writes the same bytes as `edgeopt
//! quantize` on real models (.tflite and .onnx outputs); errors tell a pass's limits
//! from a malformed model from an internal bug; a budget violation names the step and
//! the limit.

use edgeopt_cli::apply::{apply_command, ApplyArgs};
use edgeopt_cli::eval::{evaluate, EvalConfig};
use edgeopt_cli::quantize::{quantize_command, QuantizeArgs};
use edgeopt_compress::pass::{
    self, Budget, Context, CostEstimate, CostEstimator, Evaluator, Limit, Pass, PassError,
    PassInfo, PassOutput, PassSpec, Recipe, Registry,
};
use edgeopt_ir::{Graph, Tensor};
use edgeopt_runtime::ExecOptions;
use edgeopt_testkit as tk;
use std::path::{Path, PathBuf};

const IC: &str = "mlperf-tiny/benchmark/training/image_classification";

fn recipe_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/ptq-int8.toml")
}

fn resnet8(data: &Path) -> PathBuf {
    data.join(format!("{IC}/trained_models/pretrainedResnet.tflite"))
}

fn build(r: &Recipe) -> Vec<Box<dyn Pass>> {
    r.build(&Registry::builtin()).expect("recipe builds")
}

fn run_recipe(
    g: Graph,
    r: &Recipe,
    budget: &Budget,
    ctx: &mut Context<'_>,
) -> Result<pass::RunResult, PassError> {
    pass::run(g, &build(r), budget, ctx)
}

/// The recipe file is `quantize`'s default flow, pass for pass and parameter for
/// parameter (as `quantize` builds it from its command-line defaults).
#[test]
fn ptq_recipe_file_is_quantizes_flow() {
    let file = Recipe::load(&recipe_file()).unwrap();
    let flow = QuantizeArgs::new("m.onnx", "c.npy")
        .options()
        .unwrap()
        .recipe();
    let describe = |r: &Recipe| -> Vec<(String, serde_json::Value)> {
        build(r)
            .iter()
            .map(|p| (p.name().to_string(), p.params()))
            .collect()
    };
    assert_eq!(describe(&file), describe(&flow));
    assert!(file.budget.is_empty());
}

/// `edgeopt apply recipes/ptq-int8.toml` == `edgeopt quantize`, byte for byte, on the
/// MLPerf ResNet-8 (.tflite, 100 MLPerf calibration images), and on PyTorch exports
/// of the corpus (NCHW ResNet-20 with BatchNorm: fold-bn and to-nhwc work; an LSTM:
/// canonicalize unrolls it), each written as .tflite and as .onnx.
#[test]
fn ptq_recipe_reproduces_quantize_bytes() {
    let Some(data) = tk::data_dir() else { return };
    let dir = tk::scratch_dir("pass_recipes_bytes");
    let ex = data.join("exporters/onnx");
    struct Case {
        name: &'static str,
        model: PathBuf,
        calib: PathBuf,
        names: Option<(PathBuf, PathBuf)>,
    }
    let cases = [
        Case {
            name: "resnet8",
            model: resnet8(&data),
            calib: data.join("cifar10/test_x.npy"),
            names: Some((
                data.join("cifar10/test_filenames.txt"),
                data.join(format!("{IC}/calibration_samples.txt")),
            )),
        },
        Case {
            name: "resnet20",
            model: ex.join("resnet20.dynamo18.onnx"),
            calib: ex.join("cifar32.calib.npy"),
            names: None,
        },
        Case {
            name: "lstm",
            model: ex.join("lstm.ts17.onnx"),
            calib: ex.join("sensor_50x3.calib.npy"),
            names: None,
        },
    ];
    for c in &cases {
        for ext in ["tflite", "onnx"] {
            let q_out = dir.join(format!("{}.quantize.{ext}", c.name));
            let a_out = dir.join(format!("{}.apply.{ext}", c.name));
            let (names, select) = c.names.clone().unzip();
            let limit = names.as_ref().map(|_| 100);
            quantize_command(&QuantizeArgs {
                output: Some(q_out.clone()),
                calib_names: names.clone(),
                calib_select: select.clone(),
                calib_limit: limit,
                ..QuantizeArgs::new(&c.model, &c.calib)
            })
            .unwrap_or_else(|e| panic!("quantize {} .{ext}: {e:#}", c.name));
            let s = apply_command(
                &ApplyArgs {
                    calib: vec![c.calib.clone()],
                    calib_names: names,
                    calib_select: select,
                    calib_limit: limit,
                    ..ApplyArgs::new(recipe_file(), &c.model, &a_out)
                },
                false,
            )
            .unwrap_or_else(|e| panic!("apply {} .{ext}: {e:#}", c.name));
            let (q, a) = (
                std::fs::read(&q_out).unwrap(),
                std::fs::read(&a_out).unwrap(),
            );
            assert!(!q.is_empty());
            assert!(
                q == a,
                "{} .{ext}: {} vs {} bytes differ",
                c.name,
                q.len(),
                a.len()
            );
            eprintln!("{} .{ext}: {} bytes identical", c.name, q.len());
            // Every step is reported; int8 weights take less flash than f32 ones (the
            // unrolled LSTM is the exception: its per-step constants grow it).
            assert_eq!(s.steps.len(), 9);
            let (f0, f1) = (s.input.flash.unwrap(), s.steps[8].metrics.flash.unwrap());
            assert!(
                c.name == "lstm" || f1 < f0,
                "{}: flash {f0} -> {f1}",
                c.name
            );
        }
    }
}

fn mnist(data: &Path) -> Graph {
    edgeopt_cli::load_model(&data.join("exporters/onnx/mnist_cnn.ts17.onnx")).unwrap()
}

fn one(name: &str) -> Recipe {
    Recipe {
        passes: vec![PassSpec::new(name)],
        ..Recipe::default()
    }
}

/// A pass that panics, and one that returns an invalid graph: bugs, reported as such.
struct Panics;
impl Pass for Panics {
    fn name(&self) -> &str {
        "panics"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn apply(&self, _: Graph, _: &mut Context<'_>) -> Result<PassOutput, PassError> {
        let v: Vec<usize> = Vec::new();
        let _ = v[std::hint::black_box(3)];
        unreachable!()
    }
}

struct Breaks;
impl Pass for Breaks {
    fn name(&self) -> &str {
        "breaks"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn apply(&self, mut g: Graph, _: &mut Context<'_>) -> Result<PassOutput, PassError> {
        duplicate_a_name(&mut g);
        Ok(PassOutput::new(g, serde_json::json!({})))
    }
}

/// Two values with one name: what `Graph::validate` refuses.
fn duplicate_a_name(g: &mut Graph) {
    let n = g.values[0].name.clone();
    let last = g.values.len() - 1;
    g.values[last].name = n;
}

#[test]
fn errors_tell_pass_limits_from_bad_models_from_bugs() {
    let Some(data) = tk::data_dir() else { return };
    let g = mnist(&data);
    let mut ctx = Context::new();

    // Integer I/O of a float model: the pass does not apply.
    let e = run_recipe(g.clone(), &one("integer-io"), &Budget::default(), &mut ctx).unwrap_err();
    assert!(
        matches!(&e, PassError::NotApplicable { pass, .. } if pass == "integer-io"),
        "{e:?}"
    );
    assert!(e.to_string().contains("does not apply"), "{e}");

    // A malformed model: refused before any pass runs.
    let mut bad = g.clone();
    duplicate_a_name(&mut bad);
    let e = run_recipe(bad, &one("fold-bn"), &Budget::default(), &mut ctx).unwrap_err();
    assert!(
        matches!(&e, PassError::InvalidModel { pass: None, .. }),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("invalid model"), "{e}");

    // Bugs: a panic and an invalid output, each named by its pass.
    let mut reg = Registry::builtin();
    for (name, build) in [
        (
            "panics",
            (|_| Ok(Box::new(Panics) as Box<dyn Pass>)) as pass::registry::Build,
        ),
        (
            "breaks",
            (|_| Ok(Box::new(Breaks) as Box<dyn Pass>)) as pass::registry::Build,
        ),
    ] {
        reg.register(PassInfo {
            name,
            summary: "test",
            params: vec![],
            build,
        })
        .unwrap();
    }
    assert!(matches!(
        reg.register(PassInfo {
            name: "fold-bn",
            summary: "again",
            params: vec![],
            build: |_| Ok(Box::new(Breaks)),
        }),
        Err(PassError::Recipe(_))
    ));
    for (name, words) in [("panics", "panicked"), ("breaks", "invalid graph")] {
        let r = Recipe {
            passes: vec![PassSpec::new("fold-bn"), PassSpec::new(name)],
            ..Recipe::default()
        };
        let passes = r.build(&reg).unwrap();
        let e = pass::run(g.clone(), &passes, &Budget::default(), &mut ctx).unwrap_err();
        assert!(
            matches!(&e, PassError::Internal { pass, .. } if pass == name),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(words) && e.to_string().contains("bug"),
            "{e}"
        );
    }

    // Recipe mistakes: named, before any work.
    let recipe_err = |text: &str| match Recipe::from_toml(text).and_then(|r| {
        let p = r.build(&Registry::builtin())?;
        pass::run(g.clone(), &p, &r.budget, &mut Context::new())
    }) {
        Err(PassError::Recipe(m)) => m,
        other => panic!("{text}: {:?}", other.map(|r| r.steps.len())),
    };
    let m = recipe_err("[[pass]]\nname = \"fold-batchnorm\"");
    assert!(
        m.contains("unknown pass 'fold-batchnorm'") && m.contains("fold-bn"),
        "{m}"
    );
    let m = recipe_err("[[pass]]\nname = \"calibrate\"\nmethd = \"minmax\"");
    assert!(m.contains("calibrate") && m.contains("methd"), "{m}");
    let m = recipe_err("[[pass]]\nname = \"calibrate\"\nmethod = \"median\"");
    assert!(m.contains("median"), "{m}");
    let m = recipe_err("[[pass]]\nname = \"plan\"\ngranularity = \"group:0\"");
    assert!(m.contains("group:N"), "{m}");
    let m = recipe_err("[[pass]]\nname = \"calibrate\"");
    assert!(
        m.contains("step 1 ('calibrate') needs calibration data"),
        "{m}"
    );
    let m = recipe_err("[[pass]]\nname = \"plan\"");
    assert!(m.contains("needs a 'calibrate' step"), "{m}");
    let m = recipe_err("[budget]\nlatency_ms = 5.0\n[[pass]]\nname = \"fold-bn\"");
    assert!(
        m.contains("latency budget") && m.contains("cost estimator"),
        "{m}"
    );
    let m = recipe_err("[budget]\naccuracy_drop = 1.0\n[[pass]]\nname = \"fold-bn\"");
    assert!(m.contains("evaluation data"), "{m}");
    let m = recipe_err("[budget]\nrom = 1\n[[pass]]\nname = \"fold-bn\"");
    assert!(m.contains("rom"), "{m}");
    let m = recipe_err("");
    assert!(m.contains("no pass"), "{m}");

    // The CLI: a bad extension and a recipe error are clear, and nothing is written.
    let dir = tk::scratch_dir("pass_recipes_cli");
    let out = dir.join("out.tflite");
    let bad_recipe = dir.join("bad.toml");
    std::fs::write(&bad_recipe, "[[pass]]\nname = \"calibrate\"\n").unwrap();
    let model = data.join("exporters/onnx/mnist_cnn.ts17.onnx");
    let e = apply_command(&ApplyArgs::new(&bad_recipe, &model, &out), false).unwrap_err();
    assert!(
        format!("{e:#}").contains("needs calibration data (--calib)"),
        "{e:#}"
    );
    assert!(!out.exists());
    let e = apply_command(
        &ApplyArgs::new(recipe_file(), &model, dir.join("o.bin")),
        false,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains(".onnx or .tflite"), "{e:#}");
}

/// A latency budget works once an estimator is plugged in (here a stand-in: 1 µs
/// per node).
struct PerNode;
impl CostEstimator for PerNode {
    fn estimate(
        &self,
        g: &Graph,
        _: Option<&edgeopt_device::Device>,
    ) -> Result<CostEstimate, String> {
        Ok(CostEstimate {
            latency_ms: Some(g.nodes.len() as f64 * 1e-3),
            energy_mj: None,
        })
    }
}

#[test]
fn budget_violation_names_the_step_and_the_limit() {
    let Some(data) = tk::data_dir() else { return };

    // A step that pushes a quantity over its limit breaks it. The preparation steps
    // of a PyTorch 1-D CNN add a few constants (reshape targets of the layout change
    // and of the 2-D lifting: flash grows by some bytes); with the input's flash as the
    // limit, the first step that adds any is the one named.
    let cnn = edgeopt_cli::load_model(&data.join("exporters/onnx/cnn1d.ts17.onnx")).unwrap();
    let prep = Recipe {
        passes: edgeopt_compress::pass::quant::PREPARE
            .iter()
            .map(|(_, n, _)| PassSpec::new(n))
            .collect(),
        ..Recipe::default()
    };
    let mut ctx = Context::new();
    ctx.measure = true;
    let free = run_recipe(cnn.clone(), &prep, &Budget::default(), &mut ctx).unwrap();
    let input_flash = free.input.flash.unwrap();
    let culprit = free
        .steps
        .iter()
        .find(|s| s.metrics.flash.unwrap() > input_flash)
        .expect("some preparation step adds a constant to this model");
    let budget = Budget {
        flash: Some(input_flash),
        ..Budget::default()
    };
    let e = run_recipe(cnn, &prep, &budget, &mut Context::new()).unwrap_err();
    let PassError::Budget(v) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        (v.step, v.pass.as_str(), v.limit),
        (culprit.step, culprit.pass.as_str(), Limit::Flash)
    );
    assert_eq!(v.value, culprit.metrics.flash.unwrap() as f64);
    assert!(!v.since_input, "{v}");
    assert!(
        e.to_string()
            .contains(&format!("step {} ('{}')", v.step + 1, v.pass)),
        "{e}"
    );
    eprintln!("{e}");

    // The accuracy drop: measured where a step can change the function (not after
    // the exact preparation steps); ternary weights break a 5-point limit at
    // 'quantize', int8 weights keep within it.
    let g = edgeopt_cli::load_model(&resnet8(&data)).unwrap();
    let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).unwrap();
    let y = edgeopt_npy::read(&data.join("cifar10/test_y.npy")).unwrap();
    struct Top1 {
        x: Tensor,
        y: Tensor,
    }
    impl Evaluator for Top1 {
        fn evaluate(&self, g: &Graph, exec: ExecOptions) -> Result<f64, String> {
            let cfg = EvalConfig {
                limit: Some(200),
                exec,
                ..EvalConfig::default()
            };
            evaluate(g, "", &self.x, &self.y, &cfg)
                .map(|r| r.accuracy)
                .map_err(|e| e.to_string())
        }
    }
    let ev = Top1 { x, y };
    let calib: Vec<Vec<Tensor>> = {
        let rows = edgeopt_tests::cifar::spread(64);
        let t = edgeopt_tests::cifar::images(&data, &rows);
        t.into_iter()
            .map(|px| vec![Tensor::from_f32(vec![1, 32, 32, 3], px).unwrap()])
            .collect()
    };
    let budget = Budget {
        accuracy_drop: Some(5.0),
        ..Budget::default()
    };
    let mut recipe = Recipe::load(&recipe_file()).unwrap();
    let mut ctx = Context::new().with_calibration(&calib);
    ctx.evaluator = Some(&ev);
    let ok = run_recipe(g.clone(), &recipe, &budget, &mut ctx).unwrap();
    let base = ok.input.score.unwrap();
    for s in &ok.steps[..8] {
        assert_eq!(s.metrics.score, Some(base), "{} is exact", s.pass);
    }
    let drop = ok.steps[8].metrics.accuracy_drop.unwrap();
    assert!(drop <= 5.0, "int8 drop {drop}");
    eprintln!("ResNet-8 top-1 on 200 images: float {base:.2}%, int8 drop {drop:.2} points");

    let plan = recipe.passes.iter_mut().find(|p| p.name == "plan").unwrap();
    *plan = PassSpec::new("plan").with("weights", "ternary");
    let mut ctx = Context::new().with_calibration(&calib);
    ctx.evaluator = Some(&ev);
    let e = run_recipe(g.clone(), &recipe, &budget, &mut ctx).unwrap_err();
    let PassError::Budget(v) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        (v.step, v.pass.as_str(), v.limit),
        (8, "quantize", Limit::AccuracyDrop)
    );
    assert!(v.value > 5.0);
    eprintln!("{e}");

    // Latency: an error without an estimator (above), checked with one. The input is
    // over a limit no step brings it under: reported after the last step.
    let nodes = g.nodes.len() as f64;
    let r = one("fold-bn");
    let budget = Budget {
        latency_ms: Some(nodes * 1e-3 / 2.0),
        ..Budget::default()
    };
    let mut ctx = Context::new();
    ctx.estimator = Some(&PerNode);
    let e = run_recipe(g, &r, &budget, &mut ctx).unwrap_err();
    let PassError::Budget(v) = &e else {
        panic!("{e:?}")
    };
    assert_eq!((v.limit, v.since_input), (Limit::Latency, true));
}

/// Every registered pass describes its parameters, and its defaults build it.
#[test]
fn registry_describes_every_pass() {
    let reg = Registry::builtin();
    let names: Vec<&str> = reg.infos().map(|i| i.name).collect();
    for n in [
        "canonicalize",
        "fold-bn",
        "to-fc",
        "to-nhwc",
        "fuse-activations",
        "lift-1d",
        "equalize",
        "calibrate",
        "plan",
        "bias-correction",
        "quantize",
        "report",
        "integer-io",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    for info in reg.infos() {
        let p = reg.build(&PassSpec::new(info.name)).unwrap();
        let params = p.params();
        for spec in &info.params {
            assert_eq!(
                params.get(spec.name),
                (!spec.default.is_null()).then_some(&spec.default),
                "{}.{}",
                info.name,
                spec.name
            );
        }
        assert!(serde_json::to_value(info).is_ok());
    }
}
