//! `flowhost run --batch`: one run per input line, results as JSON Lines.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use flowhost::runs::Executor;
use flowhost::{Batch, BatchError, BatchInput, BatchOutcome, FlowSpec, FlowState, LogListener, Store};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

use super::super::Context;
use super::super::exit::{self, InputError};
use super::RunArgs;

/// Runs every input line, each recorded as its own run when `executor` is given; exit 0 when
/// every run succeeded, 1 when some run was reverted or could not run (bad line, invalid
/// store), 2 when some revert failed, 75 when the run database failed for some run.
pub async fn run(
    ctx: &Context,
    flow: &FlowSpec,
    base: Store,
    inputs: &Path,
    args: &RunArgs,
    executor: Option<Executor>,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(inputs)
        .map_err(|e| InputError(format!("cannot read batch inputs {}: {e}", inputs.display())))?;
    let inputs: Vec<BatchInput> = BatchInput::parse_lines(&text)
        .into_iter()
        .map(|input| BatchInput {
            line: input.line,
            store: input.store.map(|line| {
                let mut store = base.clone();
                store.extend(line);
                store
            }),
        })
        .collect();
    let mut engine = ctx.batch_engine(flow.needs_fuel())?;
    // Thousands of runs would bury the summary under transitions: log them only when asked.
    if tracing::enabled!(tracing::Level::DEBUG) {
        engine.listen(std::sync::Arc::new(LogListener));
    }
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(inputs.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {per_sec}, eta {eta}")
                .expect("valid progress template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut write_error = None;
    let mut worst = 0u8;
    let mut batch = Batch::new(&engine, flow).concurrency(args.concurrency);
    if let Some(executor) = executor {
        let flow_file = args.flow.clone();
        batch = batch.prepare_each(move |loaded| Ok(flowhost::runs::record(&executor, loaded, Some(&flow_file))?));
    }
    let summary = batch
        .run(inputs, |outcome| {
            worst = worst.max(exit_code(outcome));
            let line = result_line(outcome, &args.fetch);
            if let Err(e) = writeln!(out, "{line}") {
                write_error.get_or_insert(e);
            }
            progress.inc(1);
        })
        .await;
    progress.finish_and_clear();
    out.flush()?;
    if let Some(error) = write_error {
        return Err(error.into());
    }
    eprintln!(
        "batch: {} runs: {} succeeded, {} reverted, {} failed in {:.2} s ({:.0} runs/s)",
        summary.total(),
        summary.succeeded,
        summary.reverted,
        summary.failed,
        summary.elapsed.as_secs_f64(),
        summary.runs_per_second()
    );
    Ok(ExitCode::from(worst))
}

fn exit_code(outcome: &BatchOutcome) -> u8 {
    match &outcome.result {
        Ok(report) => exit::for_state(report.state),
        Err(BatchError::Prepare { .. } | BatchError::Stopped(_)) => exit::TEMPFAIL,
        Err(_) => exit::REVERTED,
    }
}

/// `{line, run_id, state, fetched | store}` for a run; `{line, state: "INVALID", error}` for an
/// input that could not run. A failed run also names the failed task and its error.
fn result_line(outcome: &BatchOutcome, fetch: &[String]) -> Value {
    let report = match &outcome.result {
        Ok(report) => report,
        Err(error @ (BatchError::Prepare { .. } | BatchError::Stopped(_))) => {
            return json!({ "line": outcome.line, "state": "STOPPED", "error": error.to_string() });
        }
        Err(error) => return json!({ "line": outcome.line, "state": "INVALID", "error": error.to_string() }),
    };
    let mut line = json!({ "line": outcome.line, "run_id": report.run_id, "state": report.state });
    if fetch.is_empty() {
        line["store"] = report.store.to_json();
    } else {
        let fetched: Map<String, Value> =
            fetch.iter().map(|n| (n.clone(), report.fetch(n).cloned().unwrap_or(Value::Null))).collect();
        line["fetched"] = Value::Object(fetched);
    }
    if report.state != FlowState::Success
        && let Some(task) = report.tasks.iter().find(|t| t.error.is_some())
    {
        line["failed_task"] = json!(task.name);
        line["error"] = json!(task.error.as_ref().map(ToString::to_string));
    }
    if let Some(task) = report.tasks.iter().find(|t| t.revert_error.is_some()) {
        line["revert_error"] = json!({ "task": task.name, "error": task.revert_error.as_ref().map(ToString::to_string) });
    }
    line
}
