//! `flowhost run`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use flowhost::{FlowState, RunReport, TaskState};
use serde_json::{Map, Value, json};

use super::db::RecordArgs;
use super::exit::{self, UsageError};
use super::output::errln;
use super::{Context, StoreArgs, print_invalid, print_json, read_flow};

mod batch;

/// Arguments of `flowhost run`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost run flow.toml                                   # print the final store\n  \
flowhost run flow.toml --store raw_size=20 --fetch volume\n  \
flowhost run flow.toml --store-file request.json --json  # one JSON report\n  \
flowhost run flow.toml --batch inputs.jsonl --concurrency 16 --fetch volume\n  \
producer | flowhost run flow.toml --batch -              # inputs on stdin\n  \
flowhost run flow.toml --no-db -q                        # record nothing, warnings only
  \
flowhost run flow.toml --key order-1042                  # at most one run per key")]
pub struct RunArgs {
    /// The flow file (TOML).
    pub flow: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print only these names of the final store (checked before the flow runs). Repeatable.
    #[arg(long, value_name = "NAME")]
    pub fetch: Vec<String>,
    /// Print one JSON report on stdout: flow, run_id, state, store, tasks (and fetched); for
    /// an invalid flow, { state: "INVALID", problems: [{task, field, message}] }.
    #[arg(long, conflicts_with = "batch")]
    pub json: bool,
    /// Run the flow once per line of this JSON Lines file (`-`: standard input), each line an
    /// initial store (over the flow's [store], --store-file and --store); print one JSON line
    /// per run on stdout and a summary on stderr.
    #[arg(long, value_name = "INPUTS.jsonl")]
    pub batch: Option<PathBuf>,
    /// With --batch: how many runs are in flight at once.
    #[arg(long, value_name = "N", default_value_t = 64, requires = "batch")]
    pub concurrency: usize,
    /// Idempotency key: when a run of this flow was already started with this key (and not
    /// pruned since), start nothing and print that run's id instead. Needs the run database.
    #[arg(long, value_name = "KEY", conflicts_with_all = ["batch", "no_db"])]
    pub key: Option<String>,
    #[command(flatten)]
    pub record: RecordArgs,
}

/// The names to print instead of the whole store, and which task stores each, to say why
/// one is missing after a revert.
#[derive(Debug, Default)]
pub struct Fetch {
    names: Vec<String>,
    providers: BTreeMap<String, String>,
}

impl Fetch {
    /// `names`, checked against what `loaded` will store: a name the flow never stores is a
    /// usage error before anything runs.
    fn check(names: &[String], loaded: &flowhost::LoadedFlow) -> anyhow::Result<Self> {
        let unknown: Vec<&String> = names.iter().filter(|n| !loaded.will_provide(n)).collect();
        if !unknown.is_empty() {
            bail!(UsageError(format!(
                "--fetch {unknown:?}: flow `{}` never stores such a name (neither the initial store nor any task's provides)",
                loaded.name()
            )));
        }
        let providers = loaded
            .plan()
            .flat_map(|task| {
                task.provides
                    .iter()
                    .map(move |name| (name.clone(), task.name.to_owned()))
            })
            .collect();
        Ok(Self {
            names: names.to_vec(),
            providers,
        })
    }

    /// Why `name` is not in the report's final store, naming the task that stores it.
    fn missing(&self, name: &str, report: &RunReport) -> String {
        let provider = self.providers.get(name);
        let state = provider
            .and_then(|task| report.tasks.iter().find(|t| &t.name == task))
            .map(|t| t.state);
        match (provider, state) {
            (Some(task), Some(TaskState::Reverted)) => {
                format!(
                    "`{name}` was reverted: task `{task}` stored it, then was reverted, so the final store does not hold it"
                )
            }
            (Some(task), Some(state)) => {
                format!("`{name}` is not in the final store: task `{task}` ended {state}")
            }
            _ => format!("`{name}` is not in the final store"),
        }
    }
}

/// Validates, runs, prints; the exit code tells success (0), reverted (1), revert failed (2).
pub async fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<ExitCode> {
    let flow = match read_flow(&args.flow) {
        Ok(flow) => flow,
        Err(error) => return invalid(args.json, None, error),
    };
    let store = args.store.store()?;
    // A task granted the run database could rewrite any run's record and lease.
    let mut ctx = ctx.clone();
    if !args.record.no_db {
        ctx.protect(args.record.db.path());
    }
    let ctx = &ctx;
    if let Some(inputs) = &args.batch {
        return batch::run(ctx, &flow, store, inputs, &args).await;
    }
    let mut loaded = match ctx.engine(flow.needs_fuel())?.load(&flow, store).await {
        Ok(loaded) => loaded,
        Err(error) => return invalid(args.json, Some(&flow.name), error.into()),
    };
    let fetch = Fetch::check(&args.fetch, &loaded)?;
    // Opened (and created) only once the run is known to be able to start.
    if let Some(executor) = &args.record.executor()? {
        flowhost::runs::record(executor, &mut loaded, Some(&args.flow), args.key.as_deref())?;
    }
    ctx.trace(&mut loaded);
    let flow_name = loaded.name().to_owned();
    match loaded.run().await {
        Ok(report) => print_report(&report, &fetch, args.json),
        Err(stopped) => match (flowhost::runs::already_started(&stopped), &args.key) {
            (Some(existing), Some(key)) => {
                print_already_started(&flow_name, existing, key, args.json)
            }
            _ => Err(stopped.into()),
        },
    }
}

/// A start whose idempotency key a run of the flow holds: nothing ran; stdout names that run
/// as a start would (its id, or `--json`'s `run_id`), and the exit code is success.
pub fn print_already_started(
    flow: &str,
    run_id: &str,
    key: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    errln!(
        "flow `{flow}` was already started with idempotency key `{key}`: run {run_id}; nothing was started"
    );
    if json {
        print_json(&json!({ "flow": flow, "run_id": run_id, "already_started": true }))?;
    } else {
        super::output::outln!("{run_id}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// With `--json`, an invalid flow is reported on stdout too; the error still sets the exit
/// code and goes to stderr.
fn invalid(json: bool, flow: Option<&str>, error: anyhow::Error) -> anyhow::Result<ExitCode> {
    if json {
        print_invalid(flow, &error)?;
    }
    Err(error)
}

/// Prints a finished run's report (the final store, the fetched names, or with `json` the
/// whole report) and turns its state into the exit code. A fetched name that the run does
/// not hold in the end is `null` on stdout, and stderr says why (e.g. it was reverted).
pub fn print_report(report: &RunReport, fetch: &Fetch, json: bool) -> anyhow::Result<ExitCode> {
    let fetched: Option<Map<String, Value>> = (!fetch.names.is_empty()).then(|| {
        fetch
            .names
            .iter()
            .map(|n| (n.clone(), report.fetch(n).cloned().unwrap_or(Value::Null)))
            .collect()
    });
    if report.state == FlowState::Waiting {
        for task in &report.tasks {
            if let Some(wait) = &task.waiting {
                let until = wait["due"]
                    .as_str()
                    .map(|due| format!(" until {due}"))
                    .unwrap_or_default();
                let what = match wait["signal"].as_str() {
                    Some(name) => format!(
                        "signal `{name}`{until}: send it with `flowhost runs signal {} {name} [--data JSON]`, then `flowhost runs resume {}` goes on",
                        report.run_id, report.run_id
                    ),
                    None => format!(
                        "its timer{until}: `flowhost runs resume {}` goes on from there",
                        report.run_id
                    ),
                };
                errln!(
                    "flow `{}` is WAITING: task `{}` waits for {what}",
                    report.flow,
                    task.name
                );
            }
        }
    }
    // The errors' Display escapes what the plugin wrote.
    if !matches!(report.state, FlowState::Success | FlowState::Waiting) {
        for task in &report.tasks {
            if let Some(error) = &task.error {
                errln!(
                    "flow `{}` {}: task `{}` failed: {error}",
                    report.flow,
                    report.state,
                    task.name
                );
            }
            if let Some(error) = &task.revert_error {
                errln!("task `{}` could not be reverted: {error}", task.name);
            }
        }
        for map in report.maps.iter().filter(|m| !m.failed.is_empty()) {
            let failed: Vec<String> = map.failed.iter().map(ToString::to_string).collect();
            errln!(
                "map `{}`: element {} of {} failed",
                map.path,
                failed.join(", "),
                map.elements
            );
        }
    }
    for name in fetch.names.iter().filter(|n| report.fetch(n).is_none()) {
        errln!("{}", fetch.missing(name, report));
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
