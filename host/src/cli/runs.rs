//! `flowhost runs`: the run database — where it is (`--db`, `FLOWHOST_DB`, `--no-db`), and
//! listing, showing, fetching from, resuming and pruning recorded runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use flowhost::runs::{self, Origin, PruneFilter, RunDb, RunFilter, RunRecord, SqliteRunDb, Sync};
use flowhost::{FlowState, ResumeError};
use serde_json::Value;

use super::{EXIT_INVALID, UsageError, engine, print_json, read_flow};

/// Where runs are recorded when neither --db nor FLOWHOST_DB says otherwise.
pub const DEFAULT_DB: &str = ".flowhost/runs.db";

/// Where the run database is.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// The run database file (SQLite). Default: .flowhost/runs.db in the working directory.
    #[arg(long, value_name = "PATH", env = "FLOWHOST_DB", global = true)]
    pub db: Option<PathBuf>,
}

/// Where `flowhost run` records, or whether it does.
#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Record nothing: a purely in-memory run that cannot be resumed or inspected later.
    #[arg(long, conflicts_with = "db")]
    pub no_db: bool,
}

impl DbArgs {
    fn path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DB))
    }

    /// Opens the database; `create` makes it (and its folder) when missing.
    pub fn open(&self, create: bool) -> anyhow::Result<Arc<SqliteRunDb>> {
        Ok(Arc::new(SqliteRunDb::open(&self.path(), create, Sync::Normal)?))
    }
}

impl RecordArgs {
    /// The database to record into, unless --no-db.
    pub fn open(&self) -> anyhow::Result<Option<Arc<SqliteRunDb>>> {
        if self.no_db { Ok(None) } else { self.db.open(true).map(Some) }
    }
}

/// Arguments of `flowhost runs`.
#[derive(Debug, Args)]
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
    /// running is executed again, a run caught reverting goes on reverting.
    Resume {
        /// The run's id.
        id: String,
        /// Resume even though the flow file or a plugin changed since the run was recorded.
        #[arg(long)]
        force: bool,
        /// Print one JSON report, as `flowhost run --json` does.
        #[arg(long)]
        json: bool,
    },
    /// Delete finished runs (SUCCESS, REVERTED, FAILURE), or the runs in --state.
    Prune {
        /// Only runs whose last transition is older than this: 30s, 15m, 12h, 7d.
        #[arg(long, value_parser = parse_age, value_name = "DURATION")]
        older_than: Option<Duration>,
        /// Only runs in this state (which may be RUNNING or REVERTING: those records are then
        /// lost for resume).
        #[arg(long, value_parser = parse_state)]
        state: Option<FlowState>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_state(text: &str) -> Result<FlowState, String> {
    serde_json::from_value(Value::String(text.to_ascii_uppercase()))
        .map_err(|_| format!("unknown state `{text}`; one of PENDING, RUNNING, SUCCESS, REVERTING, REVERTED, FAILURE"))
}

fn parse_age(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{text}`: expected a number and a unit, e.g. 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n * seconds))
}

/// A resume refused because the flow file or a plugin changed (exit 65).
#[derive(Debug, thiserror::Error)]
#[error("run {id} is not resumed because its flow changed since it was recorded:\n  - {}\nresume it anyway with --force", changes.join("\n  - "))]
pub struct Changed {
    id: String,
    changes: Vec<String>,
}

/// Exit code for the errors of this module, when they are of this module.
pub fn exit_code_for(error: &anyhow::Error) -> Option<u8> {
    if let Some(resume) = error.downcast_ref::<ResumeError>() {
        return Some(match resume {
            ResumeError::Finished { .. } => super::EXIT_USAGE,
            _ => EXIT_INVALID,
        });
    }
    if error.is::<Changed>() {
        return Some(EXIT_INVALID);
    }
    error.is::<runs::RunDbError>().then_some(super::EXIT_NOINPUT)
}

/// Runs one `runs` subcommand.
pub async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let db = args.db.open(false)?;
    match args.command {
        RunsCommand::List { state, flow, json } => {
            let runs = db.list(&RunFilter { state, flow })?;
            if json {
                print_json(&runs)?;
            } else {
                println!("{:<28} {:<24} {:<10} {:<24} EXIT REASON", "ID", "FLOW", "STATE", "CREATED");
                for run in runs {
                    let reason = run.exit_reason.as_deref().unwrap_or("");
                    println!("{:<28} {:<24} {:<10} {:<24} {reason}", run.id, run.flow, run.state.to_string(), run.created_at);
                }
            }
        }
        RunsCommand::Show { id, json } => {
            let run = get(db.as_ref(), &id)?;
            if json { print_json(&run)? } else { show(&run)? }
        }
        RunsCommand::Fetch { id, name } => {
            let run = get(db.as_ref(), &id)?;
            let Some(store) = &run.final_store else {
                bail!(UsageError(format!("run {id} has no final store: it is {}", run.summary.state)));
            };
            let Some(value) = store.fetch(&name) else {
                let names: Vec<&String> = store.names().collect();
                bail!(UsageError(format!("run {id}'s final store has no `{name}` (it holds {names:?})")));
            };
            print_json(value)?;
        }
        RunsCommand::Resume { id, force, json } => return resume(db, &id, force, json).await,
        RunsCommand::Prune { older_than, state, json } => {
            let deleted = db.prune(&PruneFilter { older_than, state })?;
            if json {
                print_json(&serde_json::json!({ "deleted": deleted }))?;
            } else {
                println!("deleted {deleted} run(s)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn get(db: &dyn RunDb, id: &str) -> anyhow::Result<RunRecord> {
    db.get(id)?.ok_or_else(|| UsageError(format!("no run {id} in the run database (see `flowhost runs list`)")).into())
}

fn show(run: &RunRecord) -> anyhow::Result<()> {
    let s = &run.summary;
    println!("run {}  flow `{}`  {}", s.id, s.flow, s.state);
    println!("created {}  updated {}  resumed {} time(s)", s.created_at, s.updated_at, s.resumes);
    if let Some(path) = &run.origin.flow_path {
        println!("flow file {}", path.display());
    }
    if let Some(reason) = &s.exit_reason {
        println!("exit: {reason}");
    }
    println!();
    println!("{:<3} {:<28} {:<15} {:>12} {:>5}  ERROR", "#", "TASK", "STATE", "DURATION ms", "RUNS");
    for task in &run.tasks {
        let ms = task.duration_ms.map(|d| format!("{d:.1}")).unwrap_or_default();
        let error = [task.error.as_ref(), task.revert_error.as_ref()]
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; revert: ");
        println!("{:<3} {:<28} {:<15} {ms:>12} {:>5}  {error}", task.index, task.name, task.state.to_string(), task.executions);
    }
    println!();
    match &run.final_store {
        Some(store) => {
            println!("final store:");
            print_json(store)
        }
        None => {
            println!("no final store yet: the run did not finish (resume it with `flowhost runs resume {}`)", s.id);
            Ok(())
        }
    }
}

async fn resume(db: Arc<SqliteRunDb>, id: &str, force: bool, json: bool) -> anyhow::Result<ExitCode> {
    let run = get(db.as_ref(), id)?;
    let checkpoint = run.checkpoint();
    if matches!(run.summary.state, FlowState::Success | FlowState::Reverted | FlowState::Failure) {
        bail!(ResumeError::Finished { run: id.to_owned(), state: run.summary.state });
    }
    let Some(flow_path) = &run.origin.flow_path else {
        bail!(UsageError(format!("run {id} was started from a flow built in code; resume it through the library")));
    };
    let flow = read_flow(flow_path)?;
    let mut loaded = engine(flow.needs_fuel())?.load(&flow, run.initial_store.clone()).await?;
    loaded.set_run_id(id);
    let origin = Origin::of(&loaded, Some(flow_path))?;
    let changes = origin.changes_since(&run.origin);
    if !changes.is_empty() {
        if !force {
            bail!(Changed { id: id.to_owned(), changes });
        }
        for change in &changes {
            tracing::warn!(run = id, "resuming with --force although {change}");
        }
    }
    db.resumed(id, &origin)?;
    loaded.listen(Arc::new(runs::Recorder::new(db)));
    tracing::info!(run = id, "resuming flow `{}` from {}", flow.name, run.summary.state);
    let report = loaded.resume(checkpoint).await?;
    super::run::print_report(&report, &[], json)
}
