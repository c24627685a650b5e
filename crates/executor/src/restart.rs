//! Restarting a run from a step (`flowhost runs restart ID --from TASK`, DBOS's
//! `fork_workflow`): a new run of the same flow, plugins unchanged, whose record starts with
//! the original's SUCCESS tasks before the step — their arguments, results and so their store
//! — and which runs from the step on. The original is left as it is; the two records link to
//! each other.

use std::path::PathBuf;

use crate::Executor;
use crate::journal::record_linked;
use crate::resume::ResumeFailure;
use flowhost_core::contract::Outcome;
use flowhost_core::events::{FlowState, TaskState};
use flowhost_core::flow::FlowSpec;
use flowhost_engine::{CopiedTask, Engine, LoadedFlow, ResumeError, RunReport};
use flowhost_runs::{RunDb, RunRecord};

/// A run about to be restarted from one of its tasks: its record, its flow (read again from
/// the flow file) and the step. Opened first so that the caller can pick an engine fit for
/// the flow (fuel metering) before loading it.
pub struct Restart {
    record: RunRecord,
    flow: FlowSpec,
    flow_path: PathBuf,
    from: usize,
}

impl Restart {
    /// Reads run `id` and its flow file; refuses a run that neither ended SUCCESS nor is
    /// SUSPENDED, and a `from` that is not one of its tasks.
    pub fn open(db: &dyn RunDb, id: &str, from: &str) -> Result<Self, ResumeFailure> {
        let record = db
            .get(id)?
            .ok_or_else(|| ResumeFailure::Unknown(id.to_owned()))?;
        let state = record.summary.state;
        if !matches!(state, FlowState::Success | FlowState::Suspended) {
            return Err(ResumeFailure::NotRestartable {
                id: id.to_owned(),
                state,
            });
        }
        let from = record
            .tasks
            .iter()
            .position(|t| t.name == from)
            .ok_or_else(|| ResumeFailure::UnknownTask {
                id: id.to_owned(),
                task: from.to_owned(),
                tasks: record.tasks.iter().map(|t| t.name.clone()).collect(),
            })?;
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
            from,
        })
    }

    /// The flow the new run runs.
    pub fn flow(&self) -> &FlowSpec {
        &self.flow
    }

    /// Validates the flow with the original's initial store, refuses it when the flow file or
    /// a plugin changed since the original was recorded (the new run must be the same flow),
    /// and records the new run for `executor`, linked to the original. Nothing runs yet.
    pub async fn load(
        self,
        executor: &Executor,
        engine: &Engine,
    ) -> Result<Restarted, ResumeFailure> {
        let id = self.record.summary.id.clone();
        let mut loaded = engine
            .load(&self.flow, self.record.initial_store.clone())
            .await?;
        let origin = crate::origin_of(&loaded, Some(&self.flow_path))?;
        let changes = origin.changes_since(&self.record.origin);
        if !changes.is_empty() {
            return Err(ResumeFailure::Changed { id, changes });
        }
        let current: Vec<&str> = loaded.plan().map(|t| t.name).collect();
        let recorded: Vec<&str> = self.record.tasks.iter().map(|t| t.name.as_str()).collect();
        if current != recorded {
            return Err(ResumeError::TasksChanged {
                run: id,
                recorded: recorded.into_iter().map(str::to_owned).collect(),
                current: current.into_iter().map(str::to_owned).collect(),
            }
            .into());
        }
        // Only what succeeded and still stands: a reverted task left nothing behind.
        let copied = self.record.tasks[..self.from]
            .iter()
            .filter(|t| t.state == TaskState::Success)
            .filter_map(|t| match (&t.args, &t.outcome) {
                (Some(args), Some(Outcome::Result(result))) => Some(CopiedTask {
                    name: t.name.clone(),
                    args: args.clone(),
                    result: result.clone(),
                    attempt: t.attempt,
                }),
                _ => None,
            })
            .collect();
        record_linked(
            executor,
            &mut loaded,
            Some(&self.flow_path),
            None,
            Some(id.clone()),
        )?;
        executor.attach(&mut loaded, None);
        tracing::info!(run = %loaded.run_id(), "restarting run {id} from task `{}`", self.record.tasks[self.from].name);
        Ok(Restarted { loaded, copied })
    }
}

/// The new run of a [`Restart`], recorded and ready to run.
pub struct Restarted {
    loaded: LoadedFlow,
    copied: Vec<CopiedTask>,
}

impl Restarted {
    /// The new run's id.
    pub fn run_id(&self) -> &str {
        self.loaded.run_id()
    }

    /// Runs it: the copied tasks are recorded as they were, then the flow goes on from the
    /// step.
    pub async fn run(self) -> Result<RunReport, ResumeError> {
        self.loaded.restart(self.copied).await
    }
}
