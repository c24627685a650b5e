//! `flowhost run --batch`: one run per input line, results as JSON Lines.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use flowhost::{
    Batch, BatchError, BatchInput, BatchOutcome, Engine, FlowSpec, FlowState, LogListener, Store,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

use super::super::Context;
use super::super::exit::{self, InputError, UsageError};
use super::super::output::{closed_is_fine, errln};
use super::RunArgs;

/// Runs every input line, each recorded as its own run unless --no-db; exit 0 when
/// every run succeeded, 1 when some run was reverted or could not run (bad line, invalid
/// store), 2 when some revert failed, 75 when the run database failed for some run.
pub async fn run(
    ctx: &Context,
    flow: &FlowSpec,
    base: Store,
    inputs: &Path,
    args: &RunArgs,
) -> anyhow::Result<ExitCode> {
    let text = read_inputs(inputs)?;
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
    check_fetch(&engine, flow, &inputs, &args.fetch).await?;
    let executor = args.record.executor()?;
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
    if executor.is_some() || ctx.traces.is_some() {
        let (flow_file, ctx) = (args.flow.clone(), ctx.clone());
        batch = batch.prepare_each(move |loaded| {
            if let Some(executor) = &executor {
                flowhost::runs::record(executor, loaded, Some(&flow_file), None)?;
            }
            ctx.trace(loaded);
            Ok(())
        });
    }
    let summary = batch
        .run(inputs, |outcome| {
            worst = worst.max(exit_code(outcome));
            let line = result_line(outcome, &args.fetch);
            // A reader that went away stops the output, not the runs: each is recorded.
            if let Err(e) = closed_is_fine(writeln!(out, "{line}")) {
                write_error.get_or_insert(e);
            }
            progress.inc(1);
        })
        .await;
    progress.finish_and_clear();
    closed_is_fine(out.flush())?;
    if let Some(error) = write_error {
        return Err(error.into());
    }
    errln!(
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

/// The inputs file's bytes, or standard input's for `-`. Bytes, not text: a line that is not
/// UTF-8 fails alone.
fn read_inputs(inputs: &Path) -> anyhow::Result<Vec<u8>> {
    if inputs == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map_err(|e| {
            InputError(format!("cannot read batch inputs from standard input: {e}"))
        })?;
        return Ok(bytes);
    }
    Ok(std::fs::read(inputs).map_err(|e| {
        InputError(format!(
            "cannot read batch inputs {}: {e}",
            inputs.display()
        ))
    })?)
}

/// Every `--fetch` name must be one that some run can store — a task's provides, the flow's
/// or the command line's store, or a key of some input line — checked before any run starts.
async fn check_fetch(
    engine: &Engine,
    flow: &FlowSpec,
    inputs: &[BatchInput],
    fetch: &[String],
) -> anyhow::Result<()> {
    if fetch.is_empty() {
        return Ok(());
    }
    let mut known = engine.provided_names(flow).await?;
    known.extend(flow.store.keys().cloned());
    for input in inputs {
        if let Ok(store) = &input.store {
            known.extend(store.names().cloned());
        }
    }
    let unknown: Vec<&String> = fetch.iter().filter(|name| !known.contains(*name)).collect();
    if !unknown.is_empty() {
        bail!(UsageError(format!(
            "--fetch {unknown:?}: flow `{}` never stores such a name (no task provides it and no input holds it)",
            flow.name
        )));
    }
    Ok(())
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
        Err(error @ BatchError::Invalid(invalid)) => {
            return json!({ "line": outcome.line, "state": "INVALID", "error": error.to_string(), "problems": invalid.problems });
        }
        Err(error) => {
            return json!({ "line": outcome.line, "state": "INVALID", "error": error.to_string() });
        }
    };
    let mut line = json!({ "line": outcome.line, "run_id": report.run_id, "state": report.state });
    if fetch.is_empty() {
        line["store"] = report.store.to_json();
    } else {
        let fetched: Map<String, Value> = fetch
            .iter()
            .map(|n| (n.clone(), report.fetch(n).cloned().unwrap_or(Value::Null)))
            .collect();
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
