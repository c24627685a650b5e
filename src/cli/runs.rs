//! `flowhost runs`: the run database — where it is (`--db`, `FLOWHOST_DB`, `--no-db`), and
//! listing, showing, fetching from, resuming and pruning recorded runs.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use flowhost::runs::{
    PruneFilter, Restart, RestartLinks, ResumeFailure, Resumption, RunDb, RunFilter, RunRecord,
};
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
flowhost runs suspend 1a21e28ec81-7188-0 --wait  # finish the tasks in flight, start nothing new\n  \
flowhost runs revert 1a21e28ec81-7188-0       # revert a SUSPENDED run instead of resuming it\n  \
flowhost runs restart 1a21e28ec81-7188-0 --from attach  # a new run, the steps before `attach` copied\n  \
flowhost runs signal 1a21e28ec81-7188-0 approved --data '{\"by\": \"ops\"}'\n  \
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
        /// Only runs in this state (PENDING, RUNNING, SUCCESS, REVERTING, REVERTED, FAILURE,
        /// SUSPENDING, SUSPENDED); RUNNING or REVERTING means interrupted: resumable.
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
    /// Suspend a run, wherever it runs (this host or a worker on another): its tasks in
    /// flight finish, nothing new starts, pauses before retries end, and the run goes
    /// SUSPENDING -> SUSPENDED, releasing its executor. Nothing is reverted; `runs resume`
    /// goes on from the record, `runs revert` reverts it.
    Suspend {
        /// The run's id.
        id: String,
        /// Wait until the run has suspended (or ended) and print its state.
        #[arg(long)]
        wait: bool,
    },
    /// Revert a SUSPENDED run instead of resuming it: every task that did something is
    /// reverted in reverse order, as the failure would have; the run ends REVERTED (exit 1)
    /// or FAILURE when a revert failed (exit 2). Nothing is executed.
    Revert {
        /// The run's id.
        id: String,
        /// Revert even though the flow file or a plugin changed since the run was recorded.
        #[arg(long)]
        force: bool,
        /// Print one JSON report, as `flowhost run --json` does.
        #[arg(long)]
        json: bool,
    },
    /// Start a new run of a run that ended SUCCESS or is SUSPENDED, from one of its tasks:
    /// the original's SUCCESS tasks before it are copied (results and store, not executed
    /// again), the rest runs. The flow file and plugins must be unchanged. The original is
    /// untouched; both records link to each other (`runs show`).
    Restart {
        /// The original run's id.
        id: String,
        /// The task to run from (its entry name).
        #[arg(long, value_name = "TASK")]
        from: String,
        /// Print one JSON report, as `flowhost run --json` does.
        #[arg(long)]
        json: bool,
    },
    /// Send a signal to a run: a wait entry `wait = { signal = NAME }` takes it, and its data
    /// goes into the store under the entry's `provides`. Kept until then, so it may come
    /// before the run reaches its wait. A WAITING run goes on once resumed (`runs resume`; on
    /// PostgreSQL a worker claims it by itself).
    Signal {
        /// The run's id.
        id: String,
        /// The signal's name, as the wait names it.
        name: String,
        /// The signal's data, as JSON (default: null).
        #[arg(long, value_name = "JSON")]
        data: Option<String>,
        /// Print JSON: { run_id, signal, state }.
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
            "unknown state `{text}`; one of PENDING, RUNNING, WAITING, SUCCESS, REVERTING, REVERTED, FAILURE, SUSPENDING, SUSPENDED"
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
            let links = db.restart_links(&id)?;
            if json {
                let mut doc = run.document()?;
                if let Value::Object(fields) = serde_json::to_value(&links)?
                    && let Some(doc) = doc.as_object_mut()
                {
                    doc.extend(fields);
                }
                print_json(&doc)?
            } else {
                show(&run, &links)?
            }
        }
        RunsCommand::Suspend { id, wait } => return suspend(db.as_ref(), &id, wait).await,
        RunsCommand::Revert { id, force, json } => {
            let executor = ctx.traced(args.db.executor(db));
            let resumption = Resumption::open(executor.db().as_ref(), &id)?;
            let mut ctx = ctx.clone();
            ctx.protect(args.db.path());
            let engine = ctx.engine(resumption.flow().needs_fuel())?;
            let report = resumption.revert(&executor, &engine, force).await?;
            return super::run::print_report(&report, &super::run::Fetch::default(), json);
        }
        RunsCommand::Restart { id, from, json } => {
            let executor = ctx.traced(args.db.executor(db));
            let restart = Restart::open(executor.db().as_ref(), &id, &from)?;
            let mut ctx = ctx.clone();
            ctx.protect(args.db.path());
            let engine = ctx.engine(restart.flow().needs_fuel())?;
            let restarted = restart.load(&executor, &engine).await?;
            errln!(
                "run {} restarts run {id} from task `{from}`",
                restarted.run_id()
            );
            let report = restarted.run().await?;
            return super::run::print_report(&report, &super::run::Fetch::default(), json);
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
            // A suspended run the workers ran goes back to them.
            if let AnyDb::Postgres(pg) = &any
                && pg.resume_queued(&id)?
            {
                outln!("run {id} is queued again: a worker resumes it")?;
                return Ok(ExitCode::SUCCESS);
            }
            let executor = ctx.traced(args.db.executor(db));
            let resumption = Resumption::open(executor.db().as_ref(), &id)?;
            let mut ctx = ctx.clone();
            ctx.protect(args.db.path());
            let engine = ctx.engine(resumption.flow().needs_fuel())?;
            let report = resumption.run(&executor, &engine, force).await?;
            return super::run::print_report(&report, &super::run::Fetch::default(), json);
        }
        RunsCommand::Signal {
            id,
            name,
            data,
            json,
        } => return signal(db.as_ref(), &id, &name, data.as_deref(), json),
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

/// Asks run `id` to suspend through the run database, where the executor holding it (this
/// host or another) reads it; with `wait`, polls until the run has suspended or ended.
async fn suspend(db: &dyn RunDb, id: &str, wait: bool) -> anyhow::Result<ExitCode> {
    if !db.request_suspend(id)? {
        let run = get(db, id)?;
        bail!(UsageError(format!(
            "run {id} is {}: only a PENDING or RUNNING run can be suspended",
            run.summary.state
        )));
    }
    if !wait {
        outln!("asked run {id} to suspend: its tasks in flight finish, nothing new starts")?;
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let state = get(db, id)?.summary.state;
        if !matches!(
            state,
            FlowState::Pending | FlowState::Running | FlowState::Suspending
        ) {
            outln!("run {id} is {state}")?;
            // Suspended as asked: done. Ended meanwhile: how it ended.
            return Ok(ExitCode::from(match state {
                FlowState::Suspended => exit::SUCCESS,
                ended => exit::for_state(ended),
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends signal `name` to run `id` and says where the run stands.
fn signal(
    db: &dyn RunDb,
    id: &str,
    name: &str,
    data: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if !flowhost::signal_name_ok(name) {
        bail!(UsageError(format!(
            "signal name `{}` is not allowed: it starts with a letter or digit and holds only ASCII letters, digits, `_`, `-` and `.` (at most 128)",
            escape(name)
        )));
    }
    let data: Value = match data {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|e| UsageError(format!("--data is not JSON ({e}); write text as '\"…\"'")))?,
    };
    let state = db
        .signal(id, name, &data)?
        .ok_or_else(|| ResumeFailure::Unknown(id.to_owned()))?;
    if state.is_finished() {
        bail!(UsageError(format!(
            "run {id} already finished ({state}): a signal is kept only for a run that can still wait for it"
        )));
    }
    if json {
        print_json(&serde_json::json!({ "run_id": id, "signal": name, "state": state }))?;
    } else {
        outln!("signal `{name}` sent to run {id} ({state})")?;
        if state == FlowState::Waiting {
            errln!(
                "run {id} is WAITING: `flowhost runs resume {id}` goes on with it (on PostgreSQL, a worker does)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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

fn show(run: &RunRecord, links: &RestartLinks) -> anyhow::Result<()> {
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
    if let Some(from) = &links.restarted_from {
        outln!("restarts run {from}")?;
    }
    if !links.restarts.is_empty() {
        outln!("restarted as run(s) {}", links.restarts.join(", "))?;
    }
    if matches!(s.state, FlowState::Suspended | FlowState::Suspending) {
        let failed = run
            .tasks
            .iter()
            .filter(|t| t.state == flowhost::TaskState::Failure)
            .filter_map(|t| t.error.as_ref().map(|e| (t, e)));
        for (task, error) in failed {
            outln!("suspended on the failure of task `{}`: {error}", task.name)?;
        }
        outln!(
            "go on with `flowhost runs resume {id}` (a failed task is tried again), or `flowhost runs revert {id}`",
            id = s.id
        )?;
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
        match task.retry_at {
            Some(due) if task.state == flowhost::TaskState::Waiting => {
                let due = std::time::UNIX_EPOCH + Duration::from_secs_f64(due.max(0.0));
                let what = task.result.as_ref().map(super::check::waits_for);
                let signal = task.result.as_ref().and_then(|r| r["signal"].as_str());
                match signal {
                    Some(_) => outln!(
                        "    waiting for {} until {}",
                        what.unwrap_or_default(),
                        flowhost::format_rfc3339(due)
                    )?,
                    None => outln!("    waiting until {}", flowhost::format_rfc3339(due))?,
                }
            }
            None if task.state == flowhost::TaskState::Waiting => {
                let what = task.result.as_ref().map(super::check::waits_for);
                outln!("    waiting for {}", what.unwrap_or_default())?;
            }
            Some(due) => outln!("      next attempt due at unix time {due:.3}")?,
            None => {}
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
