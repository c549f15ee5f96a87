//! Runs passes in order over one graph, checking the budget after every step.

use super::budget::Tracker;
use super::{Budget, Context, Metrics, Pass, PassError, Progress};
use edgeopt_ir::Graph;
use serde::Serialize;

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 0-based.
    pub step: usize,
    pub pass: String,
    pub params: serde_json::Value,
    /// The pass's own report.
    pub report: serde_json::Value,
    /// Whether the graph differs from the step's input.
    pub changed: bool,
    /// Measured after the step (what the budget or `Context::measure` asked for).
    pub metrics: Metrics,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub graph: Graph,
    /// The input model's metrics (the accuracy baseline).
    pub input: Metrics,
    pub steps: Vec<StepReport>,
}

/// Applies `passes` to `graph` in order. Before any work: every pass's data needs are
/// checked against `ctx`, the budget against what can measure it, and the graph is
/// validated. After each step: the output is validated (an invalid output is an
/// internal error of that pass), then measured and checked against `budget`.
pub fn run(
    graph: Graph,
    passes: &[Box<dyn Pass>],
    budget: &Budget,
    ctx: &mut Context<'_>,
) -> Result<RunResult, PassError> {
    check_setup(passes, budget, ctx)?;
    graph.validate().map_err(|e| PassError::InvalidModel {
        pass: None,
        reason: e.to_string(),
        cause: Some(Box::new(e.into())),
    })?;
    let total = passes.len();
    let input = measure(&graph, budget, ctx, None, None, true)?;
    let mut metrics = input.clone();
    let mut tracker = Tracker::new(budget, &input);
    let mut graph = graph;
    let mut steps = Vec::with_capacity(total);
    for (step, pass) in passes.iter().enumerate() {
        let name = pass.name().to_string();
        if let Some(p) = ctx.progress.as_mut() {
            p(&Progress::Started {
                step,
                total,
                pass: name.clone(),
            });
        }
        let before = graph.clone();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pass.apply(graph, ctx)))
            .map_err(|payload| PassError::Internal {
                pass: name.clone(),
                reason: format!("it panicked: {}", panic_message(&*payload)),
                cause: None,
            })??;
        out.graph.validate().map_err(|e| PassError::Internal {
            pass: name.clone(),
            reason: format!("it produced an invalid graph from a valid one: {e}"),
            cause: None,
        })?;
        let changed = out.graph != before;
        drop(before);
        graph = out.graph;
        metrics = measure(
            &graph,
            budget,
            ctx,
            Some(&metrics),
            input.score,
            changed && !pass.exact(),
        )
        .map_err(|e| match e {
            PassError::Recipe(m) => {
                PassError::Recipe(format!("after step {} ('{name}'): {m}", step + 1))
            }
            e => e,
        })?;
        if let Some(v) = tracker.step(budget, &metrics, step, &name) {
            return Err(PassError::Budget(Box::new(v)));
        }
        steps.push(StepReport {
            step,
            pass: name.clone(),
            params: pass.params(),
            report: out.report,
            changed,
            metrics: metrics.clone(),
        });
        if let Some(p) = ctx.progress.as_mut() {
            p(&Progress::Finished {
                step,
                total,
                pass: name,
            });
        }
    }
    let last = total.checked_sub(1);
    if let Some(v) = last.and_then(|k| tracker.finish(budget, &metrics, k, passes[k].name())) {
        return Err(PassError::Budget(Box::new(v)));
    }
    Ok(RunResult {
        graph,
        input,
        steps,
    })
}

/// Every pass's data is there and every budget limit can be measured.
fn check_setup(
    passes: &[Box<dyn Pass>],
    budget: &Budget,
    ctx: &Context<'_>,
) -> Result<(), PassError> {
    for (i, p) in passes.iter().enumerate() {
        let n = p.needs();
        let missing = [
            (
                n.calibration && ctx.calibration.is_empty(),
                "calibration data (--calib)",
            ),
            (
                n.training && ctx.training.is_none(),
                "training data (--train)",
            ),
            (
                n.evaluator && ctx.evaluator.is_none(),
                "evaluation data (--eval-data)",
            ),
        ];
        if let Some((_, what)) = missing.iter().find(|(m, _)| *m) {
            return Err(PassError::Recipe(format!(
                "step {} ('{}') needs {what}",
                i + 1,
                p.name()
            )));
        }
    }
    let estimator = "no cost estimator is available to this run (latency and energy come \
                     from the cost model, which is not plugged in here): remove the limit or \
                     run with an estimator";
    if budget.latency_ms.is_some() && ctx.estimator.is_none() {
        return Err(PassError::Recipe(format!(
            "a latency budget needs latency estimates, but {estimator}"
        )));
    }
    if budget.energy_mj.is_some() && ctx.estimator.is_none() {
        return Err(PassError::Recipe(format!(
            "an energy budget needs energy estimates, but {estimator}"
        )));
    }
    if budget.accuracy_drop.is_some() && ctx.evaluator.is_none() {
        return Err(PassError::Recipe(
            "an accuracy-drop budget needs evaluation data (--eval-data and --eval-labels)".into(),
        ));
    }
    Ok(())
}

/// Measures what `budget` limits (everything available when `ctx.measure`).
/// `prev`: the previous step's metrics, reused for the score when `rescore` is false
/// (the step kept the function) and for estimates when the graph did not change.
fn measure(
    g: &Graph,
    budget: &Budget,
    ctx: &Context<'_>,
    prev: Option<&Metrics>,
    baseline: Option<f64>,
    rescore: bool,
) -> Result<Metrics, PassError> {
    let mut m = Metrics::default();
    if budget.ram.is_some() || budget.flash.is_some() || ctx.measure {
        match edgeopt_runtime::profile::profile_batch(g, 1) {
            Ok(p) => {
                m.ram = Some(p.peak_arena_bytes);
                m.flash = Some(p.total_weight_bytes + p.folded_bytes);
            }
            Err(e) if budget.ram.is_some() || budget.flash.is_some() => {
                return Err(PassError::Recipe(format!(
                    "cannot measure RAM and flash (memory plan): {e}"
                )))
            }
            Err(_) => {}
        }
    }
    let want_cost = budget.latency_ms.is_some() || budget.energy_mj.is_some() || ctx.measure;
    if let (true, Some(est)) = (want_cost, ctx.estimator) {
        match prev {
            Some(p) if !rescore && (p.latency_ms.is_some() || p.energy_mj.is_some()) => {
                m.latency_ms = p.latency_ms;
                m.energy_mj = p.energy_mj;
            }
            _ => {
                let c = est
                    .estimate(g, ctx.device)
                    .map_err(|e| PassError::Recipe(format!("the cost estimator failed: {e}")))?;
                m.latency_ms = c.latency_ms;
                m.energy_mj = c.energy_mj;
            }
        }
        if budget.latency_ms.is_some() && m.latency_ms.is_none() {
            return Err(PassError::Recipe(
                "the cost estimator gives no latency for this model and device".into(),
            ));
        }
        if budget.energy_mj.is_some() && m.energy_mj.is_none() {
            return Err(PassError::Recipe(
                "the cost estimator gives no energy for this model and device".into(),
            ));
        }
    }
    let want_score = budget.accuracy_drop.is_some() || ctx.measure;
    if let (true, Some(ev)) = (want_score, ctx.evaluator) {
        m.score = match prev {
            Some(p) if !rescore => p.score,
            _ => Some(
                ev.evaluate(g, ctx.exec)
                    .map_err(|e| PassError::Recipe(format!("evaluation failed: {e}")))?,
            ),
        };
        m.accuracy_drop = match (baseline, m.score) {
            (Some(b), Some(s)) => Some(b - s),
            _ => None,
        };
    }
    Ok(m)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}
