//! Resuming a recorded run: reload its flow, check that nothing changed, take its lease, and
//! continue from the journal.

use std::path::PathBuf;

use super::journal::DbJournal;
use crate::Executor;
use flowhost_core::checkpoint::Checkpoint;
use flowhost_core::class::{Classify, ErrorClass};
use flowhost_core::events::FlowState;
use flowhost_core::flow::{FlowFileError, FlowSpec};
use flowhost_core::plan::ValidationError;
use flowhost_engine::{Engine, LoadedFlow, ResumeError, RunReport};
use flowhost_runs::{RunDb, RunDbError, RunRecord};

/// Why a run was not resumed, or why its resumed run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResumeFailure {
    /// The run database has no such run.
    #[error("no run {0} in the run database")]
    Unknown(String),
    /// The run's flow was built in code: there is no flow file to reload.
    #[error(
        "run {0} was started from a flow built in code; resume it through the library (`LoadedFlow::resume`)"
    )]
    BuiltInCode(String),
    /// The flow file or a plugin changed since the run was recorded (and no `force`).
    #[error("run {id} is not resumed because its flow changed since it was recorded:\n  - {}", changes.join("\n  - "))]
    Changed {
        /// The run's id.
        id: String,
        /// One line per change.
        changes: Vec<String>,
    },
    /// The run database failed, or another executor holds the run.
    #[error(transparent)]
    Db(#[from] RunDbError),
    /// The flow file cannot be read any more.
    #[error(transparent)]
    FlowFile(#[from] FlowFileError),
    /// The flow no longer validates.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Only a SUSPENDED (or SUSPENDING) run is reverted by a person's decision.
    #[error("run {id} is {state}; only a SUSPENDED run is reverted this way")]
    NotSuspended {
        /// The run's id.
        id: String,
        /// Its state.
        state: FlowState,
    },
    /// Only a run that ended SUCCESS or is SUSPENDED can be restarted from a step.
    #[error("run {id} is {state}; only a run that ended SUCCESS or is SUSPENDED can be restarted")]
    NotRestartable {
        /// The run's id.
        id: String,
        /// Its state.
        state: FlowState,
    },
    /// The step to restart from is not a task of the run.
    #[error("run {id} has no task `{task}`; its tasks are {}", tasks.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "))]
    UnknownTask {
        /// The run's id.
        id: String,
        /// The name given.
        task: String,
        /// The run's tasks, in flow order.
        tasks: Vec<String>,
    },
    /// The record cannot be resumed (finished, tasks changed, damaged), or the resumed run's
    /// journal failed.
    #[error(transparent)]
    Resume(#[from] ResumeError),
}

/// A recorded run about to be resumed: its record and its flow, read again from the flow
/// file. Opened first so that the caller can build an engine fit for the flow (e.g. with
/// fuel metering) before running it.
pub struct Resumption {
    record: RunRecord,
    flow: FlowSpec,
    flow_path: PathBuf,
}

impl Resumption {
    /// Reads run `id` and its flow file; refuses a finished run.
    pub fn open(db: &dyn RunDb, id: &str) -> Result<Self, ResumeFailure> {
        let record = db
            .get(id)?
            .ok_or_else(|| ResumeFailure::Unknown(id.to_owned()))?;
        let state = record.summary.state;
        if state.is_finished() {
            return Err(ResumeError::Finished {
                run: id.to_owned(),
                state,
            }
            .into());
        }
        let flow_path = record
            .origin
            .flow_path
            .clone()
            .ok_or_else(|| ResumeFailure::BuiltInCode(id.to_owned()))?;
        let flow = FlowSpec::from_file(&flow_path)?;
        Ok(Self {
            record,
            flow,
            flow_path,
        })
    }

    /// The flow the run will continue with.
    pub fn flow(&self) -> &FlowSpec {
        &self.flow
    }

    /// The run's record as it was opened.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Validates the flow again, refuses a changed flow file or plugin unless `force`, takes
    /// the run's lease for `executor` (refused while another executor's is live, whatever
    /// `force` says) and continues the run from its journal.
    pub async fn run(
        self,
        executor: &Executor,
        engine: &Engine,
        force: bool,
    ) -> Result<RunReport, ResumeFailure> {
        let (loaded, checkpoint) = self.take_over(executor, engine, force).await?;
        Ok(loaded.resume(checkpoint).await?)
    }

    /// Reverts the SUSPENDED run instead of resuming it (a person decided not to go on):
    /// takes its lease as [`Self::run`] does, then reverts every task that did something, as
    /// the failure would have, and ends the run REVERTED (or FAILURE when a revert failed).
    /// Nothing is executed.
    pub async fn revert(
        self,
        executor: &Executor,
        engine: &Engine,
        force: bool,
    ) -> Result<RunReport, ResumeFailure> {
        let state = self.record.summary.state;
        if !matches!(state, FlowState::Suspended | FlowState::Suspending) {
            return Err(ResumeFailure::NotSuspended {
                id: self.record.summary.id.clone(),
                state,
            });
        }
        let (loaded, checkpoint) = self.take_over(executor, engine, force).await?;
        Ok(loaded.revert(checkpoint).await?)
    }

    /// Validates the flow again, checks what changed, takes the lease and reads the record
    /// again under it: the run, journaled under the new lease, and where it stood.
    async fn take_over(
        self,
        executor: &Executor,
        engine: &Engine,
        force: bool,
    ) -> Result<(LoadedFlow, Checkpoint), ResumeFailure> {
        let id = self.record.summary.id.clone();
        let mut loaded = engine
            .load(&self.flow, self.record.initial_store.clone())
            .await?;
        loaded.set_run_id(&id);
        let origin = crate::origin_of(&loaded, Some(&self.flow_path))?;
        let changes = origin.changes_since(&self.record.origin);
        if !changes.is_empty() {
            if !force {
                return Err(ResumeFailure::Changed { id, changes });
            }
            for change in &changes {
                tracing::warn!(run = %id, "resuming although {change}, as forced");
            }
        }
        let lease = executor
            .db
            .acquire(&id, &executor.owner, executor.lease_ttl)?;
        // Read again under the lease: the previous holder may have moved on (or finished)
        // between the first read and the take-over.
        let journal = DbJournal::start(executor.db.clone(), lease.clone(), executor.renew_every());
        let record = match executor.db.get(&id)? {
            Some(record) if !record.summary.state.is_finished() => record,
            Some(record) => {
                flowhost_engine::Journal::close(journal.as_ref()).await;
                return Err(ResumeError::Finished {
                    run: id,
                    state: record.summary.state,
                }
                .into());
            }
            None => return Err(ResumeFailure::Unknown(id)),
        };
        executor.db.resumed(&lease, &origin)?;
        journal.follow(loaded.suspender());
        loaded.journal(journal);
        executor.attach(&mut loaded, None);
        tracing::info!(run = %id, "taking over flow `{}` from {}", self.flow.name, record.summary.state);
        Ok((loaded, record.checkpoint()))
    }
}

/// Resumes run `id` in one step: [`Resumption::open`], then [`Resumption::run`].
pub async fn resume(
    executor: &Executor,
    engine: &Engine,
    id: &str,
    force: bool,
) -> Result<RunReport, ResumeFailure> {
    Resumption::open(executor.db.as_ref(), id)?
        .run(executor, engine, force)
        .await
}

impl Classify for ResumeFailure {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Unknown(_) | Self::UnknownTask { .. } => ErrorClass::NotFound,
            Self::NotSuspended { .. } | Self::NotRestartable { .. } => ErrorClass::Conflict,
            Self::BuiltInCode(_) => ErrorClass::Usage,
            Self::Changed { .. } => ErrorClass::Mismatch,
            Self::Invalid(invalid) => invalid.class(),
            Self::Db(db) => db.class(),
            Self::FlowFile(file) => file.class(),
            Self::Resume(resume) => resume.class(),
        }
    }
}
