//! The run database: every run's record (flow, hashes, initial store, every transition,
//! arguments, results, errors) kept so that an interrupted run can be resumed and operators
//! can inspect runs afterwards.
//!
//! Backends implement [`RunDb`]; [`SqliteRunDb`] is the default. A run is recorded by a
//! [`Recorder`] listener: since listeners are called before the run moves on, a transition
//! and a result are committed before the next task starts. [`record`] sets this up for one
//! run.

mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, TaskCheckpoint};
use crate::engine::LoadedFlow;
use crate::error::TaskError;
use crate::events::{Event, FlowState, Listener, TaskState};
use crate::plugin::Outcome;
use crate::store::Store;

pub use sqlite::{SqliteRunDb, Sync};

/// Storage for run records. Implementations must be safe to share between the runs of a
/// process and must not lose records when several processes use the same storage.
pub trait RunDb: Send + std::marker::Sync {
    /// Records a run about to start, with its tasks PENDING.
    fn create(&self, run: &NewRun) -> Result<(), RunDbError>;
    /// Commits one transition (and the arguments, result or error it carries) durably.
    fn record(&self, event: &Event) -> Result<(), RunDbError>;
    /// Notes that a run is being resumed, with the origin it is resumed from (hashes may
    /// differ from the recorded ones when resuming with force).
    fn resumed(&self, id: &str, origin: &Origin) -> Result<(), RunDbError>;
    /// Runs matching `filter`, newest first.
    fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, RunDbError>;
    /// One run's full record, if there is such a run.
    fn get(&self, id: &str) -> Result<Option<RunRecord>, RunDbError>;
    /// Deletes finished runs matching `filter` (or runs in `filter.state` when given);
    /// returns how many.
    fn prune(&self, filter: &PruneFilter) -> Result<usize, RunDbError>;
}

/// Why the run database failed.
#[derive(Debug, thiserror::Error)]
pub enum RunDbError {
    /// There is no database at the path (only inspection refuses to create one).
    #[error("no run database at {} (`flowhost run` creates it unless --no-db)", path.display())]
    Missing {
        /// The database file.
        path: PathBuf,
    },
    /// The database could not be opened or created there, e.g. a read-only folder.
    #[error("cannot open run database {}: {reason} (choose another place with --db or FLOWHOST_DB, or run with --no-db)", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is corrupt, not SQLite, or another application's database.
    #[error("{} is not a flowhost run database: {reason}", path.display())]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// The schema is newer than this flowhost understands.
    #[error("run database {} has schema version {found}, newer than this flowhost's {known}; use a newer flowhost", path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// A read or write failed.
    #[error("run database {}: {what}: {reason}", path.display())]
    Query {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A flow file or plugin could not be read to hash it.
    #[error("cannot hash {}: {source}", path.display())]
    Hash {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where a run's flow came from, with content hashes: what resume compares to refuse a run
/// whose flow file or plugins changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The flow file, absolute; `None` for flows built in code.
    pub flow_path: Option<PathBuf>,
    /// SHA-256 of the flow file's bytes, hex.
    pub flow_hash: Option<String>,
    /// Each task's plugin and its hash, in flow order.
    pub plugins: Vec<PluginHash>,
}

/// One task's plugin file and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginHash {
    /// The task entry.
    pub task: String,
    /// The component file, absolute.
    pub path: PathBuf,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

impl Origin {
    /// Hashes the flow file (when there is one) and every plugin of `loaded`.
    pub fn of(loaded: &LoadedFlow, flow_file: Option<&Path>) -> Result<Self, RunDbError> {
        let (flow_path, flow_hash) = match flow_file {
            Some(path) => {
                let path = absolute(path);
                let hash = hash_file(&path)?;
                (Some(path), Some(hash))
            }
            None => (None, None),
        };
        // The plugins were hashed when they were loaded, from the very bytes that run.
        let plugins = loaded
            .plan()
            .map(|task| PluginHash {
                task: task.name.to_owned(),
                sha256: task.plugin_sha256.to_owned(),
                path: absolute(task.plugin),
            })
            .collect();
        Ok(Self { flow_path, flow_hash, plugins })
    }

    /// What differs from `recorded`, one line per change; empty when nothing did.
    pub fn changes_since(&self, recorded: &Origin) -> Vec<String> {
        let mut changes = Vec::new();
        if self.flow_hash != recorded.flow_hash {
            let path = recorded.flow_path.as_deref().unwrap_or(Path::new("?"));
            changes.push(format!("flow file {} changed since the run was recorded", path.display()));
        }
        for old in &recorded.plugins {
            match self.plugins.iter().find(|p| p.task == old.task) {
                Some(new) if new.path != old.path => changes.push(format!(
                    "task `{}` now uses plugin {} instead of {}",
                    old.task,
                    new.path.display(),
                    old.path.display()
                )),
                Some(new) if new.sha256 != old.sha256 => changes.push(format!(
                    "plugin {} of task `{}` changed since the run was recorded",
                    old.path.display(),
                    old.task
                )),
                _ => {}
            }
        }
        changes
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// SHA-256 of a file's bytes, hex.
pub fn hash_file(path: &Path) -> Result<String, RunDbError> {
    let bytes = std::fs::read(path).map_err(|source| RunDbError::Hash { path: path.to_path_buf(), source })?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id ([`LoadedFlow::run_id`]).
    pub id: String,
    /// The flow's name.
    pub flow: String,
    /// Flow file and hashes.
    pub origin: Origin,
    /// The store the run starts from.
    pub initial_store: Store,
    /// Task entry names, in flow order.
    pub tasks: Vec<String>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs in this state.
    pub state: Option<FlowState>,
    /// Only runs of this flow.
    pub flow: Option<String>,
}

/// Which runs to delete.
#[derive(Debug, Clone, Default)]
pub struct PruneFilter {
    /// Only runs last updated longer ago than this.
    pub older_than: Option<Duration>,
    /// Only runs in this state; by default every finished run (SUCCESS, REVERTED, FAILURE),
    /// never one that could still be resumed.
    pub state: Option<FlowState>,
}

/// A run in a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub id: String,
    /// The flow's name.
    pub flow: String,
    /// Last recorded state; RUNNING or REVERTING after a crash means it can be resumed.
    pub state: FlowState,
    /// When it was recorded (UTC, ISO 8601).
    pub created_at: String,
    /// Its last transition.
    pub updated_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Why it ended, in a line.
    pub exit_reason: Option<String>,
    /// How often it was resumed.
    pub resumes: u32,
}

/// A run's full record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// Id, flow, state and times.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// Flow file and hashes it was recorded with.
    pub origin: Origin,
    /// The store it started from.
    pub initial_store: Store,
    /// The store it ended with.
    pub final_store: Option<Store>,
    /// Every task, in flow order.
    pub tasks: Vec<TaskRecord>,
}

/// One task's record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// Position in the flow, from 0.
    pub index: usize,
    /// Entry name.
    pub name: String,
    /// Last recorded state.
    pub state: TaskState,
    /// The arguments (JSON text) it executed with.
    pub args: Option<String>,
    /// What its revert gets: the raw result or the error.
    pub outcome: Option<Outcome>,
    /// Its result, once it succeeded.
    pub result: Option<Value>,
    /// Why execute failed.
    pub error: Option<TaskError>,
    /// Why revert failed.
    pub revert_error: Option<TaskError>,
    /// How long execute took, in milliseconds.
    pub duration_ms: Option<f64>,
    /// How long revert took, in milliseconds.
    pub revert_duration_ms: Option<f64>,
    /// How many times execute started (more than one after a crash caught it RUNNING).
    pub executions: u32,
    /// How many times revert started.
    pub reverts: u32,
    /// Every state change, oldest first.
    pub history: Vec<StateChange>,
}

/// One recorded transition of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateChange {
    /// Previous state.
    pub from: TaskState,
    /// New state.
    pub to: TaskState,
    /// When (UTC, ISO 8601).
    pub at: String,
    /// Time spent in the previous state, in milliseconds.
    pub duration_ms: f64,
}

impl RunRecord {
    /// Where the run stood, for [`LoadedFlow::resume`].
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            state: self.summary.state,
            tasks: self
                .tasks
                .iter()
                .map(|t| TaskCheckpoint {
                    name: t.name.clone(),
                    state: t.state,
                    args: t.args.clone(),
                    outcome: t.outcome.clone(),
                    error: t.error.clone(),
                    revert_error: t.revert_error.clone(),
                    duration: Duration::from_secs_f64(t.duration_ms.unwrap_or(0.0).max(0.0) / 1000.0),
                })
                .collect(),
        }
    }
}

/// The listener that writes a run's transitions to a [`RunDb`].
pub struct Recorder(Arc<dyn RunDb>);

impl Recorder {
    /// Records into `db`.
    pub fn new(db: Arc<dyn RunDb>) -> Self {
        Self(db)
    }
}

impl Listener for Recorder {
    fn on_event(&self, event: &Event) -> Result<(), Box<dyn std::error::Error + Send + std::marker::Sync>> {
        Ok(self.0.record(event)?)
    }
}

/// Makes `loaded` a recorded run: hashes its flow file and plugins, records the run in `db`
/// and attaches a [`Recorder`]. Call it, then run the flow as usual.
pub fn record(loaded: &mut LoadedFlow, db: Arc<dyn RunDb>, flow_file: Option<&Path>) -> Result<(), RunDbError> {
    let run = NewRun {
        id: loaded.run_id().to_owned(),
        flow: loaded.name().to_owned(),
        origin: Origin::of(loaded, flow_file)?,
        initial_store: loaded.initial_store().clone(),
        tasks: loaded.plan().map(|t| t.name.to_owned()).collect(),
    };
    db.create(&run)?;
    loaded.listen(Arc::new(Recorder::new(db)));
    Ok(())
}
