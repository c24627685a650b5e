//! `flowhost run`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use flowhost::FlowState;
use serde_json::{Map, Value, json};

use super::db::RecordArgs;
use super::exit::{self, UsageError};
use super::{Context, StoreArgs, print_json, read_flow};

mod batch;

/// Arguments of `flowhost run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The flow file (TOML).
    pub flow: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print only these names of the final store (checked before the flow runs). Repeatable.
    #[arg(long, value_name = "NAME")]
    pub fetch: Vec<String>,
    /// Print one JSON report on stdout: flow, run_id, state, store, tasks (and fetched).
    #[arg(long, conflicts_with = "batch")]
    pub json: bool,
    /// Run the flow once per line of this JSON Lines file, each line an initial store (over
    /// the flow's [store], --store-file and --store); print one JSON line per run on stdout
    /// and a summary on stderr.
    #[arg(long, value_name = "INPUTS.jsonl")]
    pub batch: Option<PathBuf>,
    /// With --batch: how many runs are in flight at once.
    #[arg(long, value_name = "N", default_value_t = 64, requires = "batch")]
    pub concurrency: usize,
    #[command(flatten)]
    pub record: RecordArgs,
}

/// Validates, runs, prints; the exit code tells success (0), reverted (1), revert failed (2).
pub async fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<ExitCode> {
    let flow = read_flow(&args.flow)?;
    let store = args.store.store()?;
    let executor = args.record.executor()?;
    // A task granted the run database could rewrite any run's record and lease.
    let mut ctx = ctx.clone();
    if executor.is_some() {
        ctx.protect(args.record.db.path());
    }
    let ctx = &ctx;
    if let Some(inputs) = &args.batch {
        return batch::run(ctx, &flow, store, inputs, &args, executor).await;
    }
    let mut loaded = ctx.engine(flow.needs_fuel())?.load(&flow, store).await?;
    let unknown: Vec<&String> = args.fetch.iter().filter(|n| !loaded.will_provide(n)).collect();
    if !unknown.is_empty() {
        bail!(UsageError(format!(
            "--fetch {unknown:?}: flow `{}` never stores such a name (neither the initial store nor any task's provides)",
            flow.name
        )));
    }
    if let Some(executor) = &executor {
        flowhost::runs::record(executor, &mut loaded, Some(&args.flow))?;
    }
    let report = loaded.run().await?;
    print_report(&report, &args.fetch, args.json)
}

/// Prints a finished run's report (the final store, the fetched names, or with `json` the
/// whole report) and turns its state into the exit code.
pub fn print_report(report: &flowhost::RunReport, fetch: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let fetched: Option<Map<String, Value>> = (!fetch.is_empty()).then(|| {
        fetch
            .iter()
            .map(|n| (n.clone(), report.fetch(n).cloned().unwrap_or(Value::Null)))
            .collect()
    });
    // The errors' Display escapes what the plugin wrote.
    if report.state != FlowState::Success {
        for task in &report.tasks {
            if let Some(error) = &task.error {
                eprintln!("flow `{}` {}: task `{}` failed: {error}", report.flow, report.state, task.name);
            }
            if let Some(error) = &task.revert_error {
                eprintln!("task `{}` could not be reverted: {error}", task.name);
            }
        }
    }
    if json {
        let mut doc = serde_json::to_value(report)?;
        if let Some(fetched) = &fetched {
            doc["fetched"] = Value::Object(fetched.clone());
        }
        print_json(&doc)?;
    } else {
        match fetched {
            Some(fetched) => print_json(&fetched)?,
            None => print_json(&json!(report.store))?,
        }
    }
    Ok(ExitCode::from(exit::for_state(report.state)))
}
