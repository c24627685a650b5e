//! `flowhost runs`: the run database — where it is (`--db`, `FLOWHOST_DB`, `--no-db`), and
//! listing, showing, fetching from, resuming and pruning recorded runs.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use flowhost::runs::{PruneFilter, ResumeFailure, Resumption, RunDb, RunFilter, RunRecord};
use flowhost::{FlowState, escape};
use serde_json::Value;

use super::db::{AnyDb, DbArgs, parse_duration};
use super::exit::{self, UsageError};
use super::output::{errln, outln};
use super::{Context, print_json};

/// Arguments of `flowhost runs`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost runs list --state RUNNING          # interrupted runs, resumable\n  \
flowhost runs show 1a21e28ec81-7188-0        # tasks, durations, errors, final store\n  \
flowhost runs fetch 1a21e28ec81-7188-0 volume\n  \
flowhost runs resume 1a21e28ec81-7188-0\n  \
flowhost runs prune --older-than 7d --dry-run\n  \
flowhost runs list --db ./runs.db            # another database (or FLOWHOST_DB)")]
pub struct RunsArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(subcommand)]
    pub command: RunsCommand,
}

/// The `runs` subcommands.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List recorded runs, newest first.
    List {
        /// Only runs in this state (PENDING, RUNNING, SUCCESS, REVERTING, REVERTED, FAILURE);
        /// RUNNING or REVERTING means interrupted: resumable.
        #[arg(long, value_parser = parse_state)]
        state: Option<FlowState>,
        /// Only runs of this flow (its name).
        #[arg(long)]
        flow: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: its tasks with states, durations and errors, and its final store.
    Show {
        /// The run's id.
        id: String,
        /// Print the whole record as JSON (arguments, outcomes, every transition).
        #[arg(long)]
        json: bool,
    },
    /// Print one value of a run's final store as JSON.
    Fetch {
        /// The run's id.
        id: String,
        /// The store name.
        name: String,
    },
    /// Continue an interrupted run: succeeded tasks are not executed again, a task caught
    /// running is executed again, a run caught reverting goes on reverting. Refused (exit 75)
    /// while another process holds the run's lease.
    Resume {
        /// The run's id.
        id: String,
        /// Resume even though the flow file or a plugin changed since the run was recorded
        /// (never overrides another process's live lease).
        #[arg(long)]
        force: bool,
        /// Print one JSON report, as `flowhost run --json` does.
        #[arg(long)]
        json: bool,
    },
    /// Delete finished runs (SUCCESS, REVERTED, FAILURE), or the runs in --state. A run
    /// whose lease a live executor holds is never deleted: it is named, and the exit code is
    /// 75.
    Prune {
        /// Only runs whose last transition is older than this: 30s, 15m, 12h, 7d.
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        older_than: Option<Duration>,
        /// Only runs in this state (which may be RUNNING or REVERTING: those records are then
        /// lost for resume).
        #[arg(long, value_parser = parse_state)]
        state: Option<FlowState>,
        /// Show which runs would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON: { dry_run, deleted, runs: [ids], kept: [{id, held_by}] }.
        #[arg(long)]
        json: bool,
    },
}

fn parse_state(text: &str) -> Result<FlowState, String> {
    serde_json::from_value(Value::String(text.to_ascii_uppercase())).map_err(|_| {
        format!(
            "unknown state `{text}`; one of PENDING, RUNNING, SUCCESS, REVERTING, REVERTED, FAILURE"
        )
    })
}

/// Runs one `runs` subcommand.
pub async fn runs(ctx: &Context, args: RunsArgs) -> anyhow::Result<ExitCode> {
    let any = args.db.open_any(false)?;
    let db = any.shared();
    match args.command {
        RunsCommand::List { state, flow, json } => {
            let runs = db.list(&RunFilter {
                state,
                flows: flow.into_iter().collect(),
                limit: None,
            })?;
            if json {
                print_json(&runs)?;
            } else {
                match &any {
                    AnyDb::Postgres(pg) => outln!("run database: {}", pg.url().display())?,
                    AnyDb::Sqlite(_) => outln!("run database: {}", args.db.shown())?,
                }
                outln!(
                    "{:<28} {:<24} {:<10} {:<24} EXIT REASON / HELD BY",
                    "ID",
                    "FLOW",
                    "STATE",
                    "CREATED"
                )?;
                for run in runs {
                    let reason = match (&run.lease, &run.exit_reason) {
                        (Some(holder), _) => format!(
                            "running on host {} pid {} since {} (executor {})",
                            holder.host, holder.pid, holder.since, holder.owner
                        ),
                        (None, Some(reason)) => reason.clone(),
                        (None, None) => String::new(),
                    };
                    outln!(
                        "{:<28} {:<24} {:<10} {:<24} {reason}",
                        run.id,
                        run.flow,
                        run.state.to_string(),
                        run.created_at
                    )?;
                }
            }
        }
        RunsCommand::Show { id, json } => {
            let run = get(db.as_ref(), &id)?;
            if json {
                print_json(&run.document()?)?
            } else {
                show(&run)?
            }
        }
        RunsCommand::Fetch { id, name } => {
            let run = get(db.as_ref(), &id)?;
            let Some(store) = &run.final_store else {
                bail!(UsageError(format!(
                    "run {id} has no final store: it is {}",
                    run.summary.state
                )));
            };
            let Some(value) = store.fetch(&name) else {
                let names: Vec<&String> = store.names().collect();
                bail!(UsageError(format!(
                    "run {id}'s final store has no `{name}` (it holds {names:?})"
                )));
            };
            print_json(value)?;
        }
        RunsCommand::Resume { id, force, json } => {
            let executor = ctx.traced(args.db.executor(db));
            let resumption = Resumption::open(executor.db().as_ref(), &id)?;
            let mut ctx = ctx.clone();
            ctx.protect(args.db.path());
            let engine = ctx.engine(resumption.flow().needs_fuel())?;
            let report = resumption.run(&executor, &engine, force).await?;
            return super::run::print_report(&report, &super::run::Fetch::default(), json);
        }
        RunsCommand::Prune {
            older_than,
            state,
            dry_run,
            json,
        } => return prune(&any, &PruneFilter { older_than, state }, dry_run, json),
    }
    Ok(ExitCode::SUCCESS)
}

/// Deletes (or with `dry_run` lists) the matching runs; a run held by a live executor is
/// kept and named, and makes the exit code 75 (retry later), as `runs resume` does.
fn prune(db: &AnyDb, filter: &PruneFilter, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let pruned = db.prune_runs(filter, dry_run)?;
    if json {
        let kept: Vec<Value> = pruned
            .held
            .iter()
            .map(
                |run| serde_json::json!({ "id": run.id, "state": run.state, "held_by": run.lease }),
            )
            .collect();
        print_json(&serde_json::json!({
            "dry_run": dry_run,
            "deleted": if dry_run { 0 } else { pruned.runs.len() },
            "runs": pruned.runs.iter().map(|run| &run.id).collect::<Vec<_>>(),
            "kept": kept,
        }))?;
    } else {
        let verb = if dry_run { "would delete" } else { "deleted" };
        outln!("{verb} {} run(s)", pruned.runs.len())?;
        for run in &pruned.runs {
            outln!(
                "  {:<28} {:<24} {:<10} updated {}",
                run.id,
                run.flow,
                run.state.to_string(),
                run.updated_at
            )?;
        }
    }
    for run in &pruned.held {
        if let Some(holder) = &run.lease {
            errln!(
                "kept run {} ({}): held by a live executor on host {} pid {} since {}; stop it, or let its lease expire",
                run.id,
                run.state,
                holder.host,
                holder.pid,
                holder.since
            );
        }
    }
    Ok(ExitCode::from(if pruned.held.is_empty() {
        exit::SUCCESS
    } else {
        exit::TEMPFAIL
    }))
}

fn get(db: &dyn RunDb, id: &str) -> anyhow::Result<RunRecord> {
    Ok(db
        .get(id)?
        .ok_or_else(|| ResumeFailure::Unknown(id.to_owned()))?)
}

/// Nested controllers' iterations, outermost first: `2` or `2.1`.
fn iterations(its: &[u32]) -> String {
    its.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Why an IGNORE task was ignored, from what its transition recorded: its `when` was
/// false, or a task whose results it needs was ignored.
fn ignored_because(result: Option<&serde_json::Value>) -> Option<String> {
    let result = result?;
    if let Some(when) = result["when"].as_str() {
        return Some(format!("when `{when}` was false"));
    }
    let with = result["ignored_with"].as_str()?;
    Some(format!("it needs task `{with}`, which was ignored"))
}

/// A map's task: how many elements its calls reached, by state, and each failed element
/// with its error (a list of thousands shows its counts, not every element).
fn mapped(run: &RunRecord, index: usize) -> anyhow::Result<()> {
    let mut states: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut failed = Vec::new();
    for element in run.elements.iter().filter(|e| e.index == index) {
        *states.entry(element.state.as_str()).or_default() += 1;
        if let Some(error) = &element.error {
            failed.push((element.element, element.state, error));
        }
    }
    if states.is_empty() {
        return Ok(());
    }
    let counts: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
    outln!("      mapped elements: {}", counts.join(", "))?;
    for (element, state, error) in failed {
        outln!("      element {element} {state}  {error}")?;
    }
    Ok(())
}

fn show(run: &RunRecord) -> anyhow::Result<()> {
    let s = &run.summary;
    outln!("run {}  flow `{}`  {}", s.id, s.flow, s.state)?;
    if s.priority != 0 {
        outln!("priority {} among queued runs", s.priority)?;
    }
    outln!(
        "created {}  updated {}  resumed {} time(s)",
        s.created_at,
        s.updated_at,
        s.resumes
    )?;
    if let Some(holder) = &s.lease {
        outln!(
            "held by executor {} on host {} pid {} since {} (lease expires {})",
            holder.owner,
            holder.host,
            holder.pid,
            holder.since,
            holder.expires
        )?;
    }
    if let Some(path) = &run.origin.flow_path {
        outln!("flow file {}", path.display())?;
    }
    if let Some(reason) = &s.exit_reason {
        outln!("exit: {reason}")?;
    }
    outln!()?;
    outln!(
        "{:<3} {:<28} {:<15} {:>12} {:>5}  ERROR",
        "#",
        "TASK",
        "STATE",
        "DURATION ms",
        "RUNS"
    )?;
    for task in &run.tasks {
        let ms = task
            .duration_ms
            .map(|d| format!("{d:.1}"))
            .unwrap_or_default();
        let error = [task.error.as_ref(), task.revert_error.as_ref()]
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; revert: ");
        // Numbered from 1 for people, like `flowhost check`; `--json` keeps the 0-based index.
        outln!(
            "{:<3} {:<28} {:<15} {ms:>12} {:>5}  {error}",
            task.index + 1,
            task.name,
            task.state.to_string(),
            task.executions
        )?;
        // What a 0.2 plugin reported beside its result, one indented line each.
        if let Some(progress) = &task.progress {
            let details = progress
                .details
                .as_ref()
                .map(|d| format!(" {}", escape(&d.to_string())))
                .unwrap_or_default();
            outln!("    progress {:.0}%{details}", progress.fraction * 100.0)?;
        }
        if let Some(result) = &task.revert_result {
            outln!("    revert result {}", escape(&result.to_string()))?;
        }
        if task.state == flowhost::TaskState::Ignore
            && let Some(why) = ignored_because(task.result.as_ref())
        {
            outln!("    ignored: {}", escape(&why))?;
        }
        if !task.iterations.is_empty() {
            outln!(
                "      in iteration {} of its subflow's retry controller",
                iterations(&task.iterations)
            )?;
        }
        mapped(run, task.index)?;
        let attempts = task.attempts();
        // A task run once shows nothing more; a retried one (or one run again after a crash)
        // lists each execution under its row.
        if attempts.len() > 1 {
            for attempt in &attempts {
                let ms = attempt
                    .duration_ms
                    .map(|d| format!("{d:.1}"))
                    .unwrap_or_default();
                let error = attempt
                    .error
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let next = attempt
                    .backoff_ms
                    .map(|b| format!("; next attempt after {b:.0} ms"))
                    .unwrap_or_default();
                let iteration = match attempt.iterations.is_empty() {
                    true => String::new(),
                    false => format!(" (iteration {})", iterations(&attempt.iterations)),
                };
                outln!(
                    "      attempt {:<3} {:<26} {ms:>12}        {error}{next}{iteration}",
                    attempt.attempt,
                    format!("{} {}", attempt.started_at, attempt.state)
                )?;
            }
        }
        if let Some(due) = task.retry_at {
            outln!("      next attempt due at unix time {due:.3}")?;
        }
    }
    outln!()?;
    match &run.final_store {
        Some(store) => {
            outln!("final store:")?;
            print_json(store)
        }
        None => {
            outln!(
                "no final store yet: the run did not finish (resume it with `flowhost runs resume {}`)",
                s.id
            )?;
            Ok(())
        }
    }
}
