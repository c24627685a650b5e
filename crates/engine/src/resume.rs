//! Resume: where an interrupted run stood, as its journal recorded it, and how the state
//! machine is put back there without executing a succeeded task again.

use super::run::Run;
use super::{CopiedTask, LoadedFlow};
use flowhost_core::checkpoint::Checkpoint;
use flowhost_core::class::{Classify, ErrorClass};
use flowhost_core::contract::Outcome;
use flowhost_core::events::{FlowState, TaskState};
use flowhost_core::plan::tree::{Scope, Tree};

/// A checkpoint that cannot be resumed, or a resumed run that stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The run already ended; resuming would run nothing or undo a finished outcome.
    #[error("run {run} already finished ({state}); there is nothing to resume")]
    Finished {
        /// The run's id.
        run: String,
        /// How it ended.
        state: FlowState,
    },
    /// The flow's task entries are not those the run was recorded with.
    #[error("run {run} was recorded with tasks [{}] but the flow now has [{}]; it cannot be resumed", recorded.join(", "), current.join(", "))]
    TasksChanged {
        /// The run's id.
        run: String,
        /// Entry names in the record.
        recorded: Vec<String>,
        /// Entry names in the flow now.
        current: Vec<String>,
    },
    /// A task's record lacks what resuming it needs (a damaged or hand-edited record).
    #[error("run {run}: task `{task}` is recorded {state} but {problem}")]
    Incomplete {
        /// The run's id.
        run: String,
        /// The entry at fault.
        task: String,
        /// Its recorded state.
        state: TaskState,
        /// What is missing or wrong.
        problem: String,
    },
    /// The resumed run's journal failed; it stopped at its last recorded transition.
    #[error(transparent)]
    Stopped(#[from] super::journal::RunError),
}

impl Run {
    /// Puts a fresh run of `loaded` where `checkpoint` says the recorded run stood.
    pub(super) fn restore(loaded: LoadedFlow, checkpoint: Checkpoint) -> Result<Self, ResumeError> {
        let run = loaded.id.clone();
        if checkpoint.state.is_finished() {
            return Err(ResumeError::Finished {
                run,
                state: checkpoint.state,
            });
        }
        let current: Vec<String> = loaded.tasks.iter().map(|t| t.name.clone()).collect();
        let recorded: Vec<String> = checkpoint.tasks.iter().map(|t| t.name.clone()).collect();
        if current != recorded {
            return Err(ResumeError::TasksChanged {
                run,
                recorded,
                current,
            });
        }
        let mut this = Self::new(loaded);
        this.state = checkpoint.state;
        // The deadline is the run's, not this resumption's: kept across interruptions.
        if let (Some(created), Some(timeout)) = (checkpoint.created_at, this.loaded.timeout) {
            this.deadline = Some(created + timeout);
        }
        let iterations: Vec<Vec<u32>> = checkpoint
            .tasks
            .iter()
            .map(|t| t.iterations.clone())
            .collect();
        let Checkpoint {
            tasks: recorded_tasks,
            elements,
            ..
        } = checkpoint;
        for (index, task) in recorded_tasks.into_iter().enumerate() {
            if let Some(m) = Tree::map_of(&this.loaded.maps, index) {
                this.restore_map_task(m, index, task);
                continue;
            }
            let incomplete = |problem: &str| ResumeError::Incomplete {
                run: run.clone(),
                task: task.name.clone(),
                state: task.state,
                problem: problem.to_owned(),
            };
            let ran = !matches!(
                task.state,
                TaskState::Pending | TaskState::Running | TaskState::Ignore | TaskState::Waiting
            );
            let wait = this.loaded.tasks[index].wait.is_some();
            // A failure without an outcome is a task whose plugin was never called.
            let uncalled = task.state == TaskState::Failure && task.error.is_some();
            if ran && task.outcome.is_none() && !uncalled {
                return Err(incomplete("its outcome was not recorded"));
            }
            // A succeeded task whose results are still in effect puts them back in the store.
            if matches!(task.state, TaskState::Success | TaskState::Reverting)
                && task.error.is_none()
                && let Some(Outcome::Result(text)) = &task.outcome
            {
                let value = serde_json::from_str(text)
                    .map_err(|e| incomplete(&format!("its recorded result is not JSON: {e}")))?;
                let outputs = this.loaded.tasks[index]
                    .binding
                    .outputs(value)
                    .map_err(|e| incomplete(&format!("its recorded result does not fit: {e}")))?;
                for (name, value) in outputs {
                    this.store.insert(name, value);
                }
            }
            let record = &mut this.records[index];
            // Between two attempts of a retried task: a failed attempt, a due time, and the
            // flow still running.
            let retrying = task.retry_at.is_some()
                && !wait
                && checkpoint.state != FlowState::Reverting
                && matches!(
                    task.state,
                    TaskState::Retrying | TaskState::Reverting | TaskState::Reverted
                );
            // Caught RUNNING: it may have run partly, so it runs again from the start (the
            // same attempt). Caught REVERTING: it is reverted again, so it goes back to what it
            // was before.
            record.state = match task.state {
                TaskState::Running => TaskState::Pending,
                TaskState::Reverting if retrying => TaskState::Retrying,
                TaskState::Reverting if task.error.is_some() => TaskState::Failure,
                TaskState::Reverting => TaskState::Success,
                state => state,
            };
            record.attempt = match task.state {
                TaskState::Running => task.attempt.saturating_sub(1),
                _ => task.attempt,
            };
            record.args = task.args.unwrap_or_default();
            record.outcome = if ran { task.outcome } else { None };
            // The error of an attempt to be retried is not the task's failure.
            if retrying {
                record.retry_at = task.retry_at;
                record.attempt_error = task.error.map(Box::new);
            } else if task.state == TaskState::Waiting {
                // Waiting: until its journaled end, so only what is left is waited.
                record.retry_at = task.retry_at;
            } else if task.state != TaskState::Pending {
                // A PENDING task's recorded error, if any, is from an earlier iteration of its
                // subflow: not a failure of this one.
                record.error = task.error.map(Box::new);
            }
            record.revert_error = task.revert_error.map(Box::new);
            record.duration = task.duration;
        }
        for (m, scope) in this.loaded.maps.iter().enumerate() {
            let recorded: Vec<_> = elements
                .iter()
                .filter(|e| scope.tasks.contains(&e.index))
                .collect();
            this.maps[m].restore(scope.tasks.len(), scope.tasks.start, &recorded);
        }
        this.iteration = recorded_iterations(&this.loaded.scopes, &iterations);
        if this.state == FlowState::Reverting && this.failure().is_none() {
            return Err(ResumeError::Incomplete {
                run,
                task: String::new(),
                state: TaskState::Failure,
                problem: "the run is REVERTING and no task's failure was recorded".into(),
            });
        }
        Ok(this)
    }
}

impl Run {
    /// A new run of `loaded` whose record starts with `copied` — tasks of another run, taken
    /// over with their arguments and results as if they had just succeeded here.
    pub(super) fn copying(
        loaded: LoadedFlow,
        copied: Vec<CopiedTask>,
    ) -> Result<Self, ResumeError> {
        let run = loaded.id.clone();
        let mut this = Self::new(loaded);
        this.flow_to(FlowState::Running);
        for copy in copied {
            let incomplete = |problem: String| ResumeError::Incomplete {
                run: run.clone(),
                task: copy.name.clone(),
                state: TaskState::Success,
                problem,
            };
            let Some(index) = this.loaded.tasks.iter().position(|t| t.name == copy.name) else {
                return Err(incomplete("the flow has no such entry".into()));
            };
            this.start(index, copy.attempt.max(1), Some(copy.args));
            if let Some(failed) = this.executed(index, Ok(copy.result)) {
                return Err(incomplete(format!(
                    "its recorded result does not fit: {}",
                    failed.error.message
                )));
            }
        }
        Ok(this)
    }
}

/// Each scope's iteration from its tasks' recorded iterations. Iterations only move forward
/// (an outer controller's next iteration starts its inner ones from 1 again), so a scope
/// stands at the greatest record among its tasks, outer iterations first; a scope whose
/// tasks recorded an earlier iteration of an enclosing scope is at its first.
fn recorded_iterations(scopes: &[Scope], recorded: &[Vec<u32>]) -> Vec<u32> {
    let mut at: Vec<Vec<u32>> = Vec::with_capacity(scopes.len());
    for (s, scope) in scopes.iter().enumerate() {
        let depth = std::iter::successors(scope.parent, |&p| scopes[p].parent).count();
        let outer: Vec<u32> = scope.parent.map(|p| at[p].clone()).unwrap_or_default();
        let latest = recorded[scope.tasks.clone()]
            .iter()
            .filter(|its| its.len() > depth && its[..depth] == outer[..])
            .map(|its| its[depth])
            .max()
            .unwrap_or(1);
        let mut mine = outer;
        mine.push(latest);
        debug_assert_eq!(at.len(), s);
        at.push(mine);
    }
    at.into_iter()
        .map(|its| its.last().copied().unwrap_or(1))
        .collect()
}

impl Classify for ResumeError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Finished { .. } => ErrorClass::Conflict,
            Self::TasksChanged { .. } | Self::Incomplete { .. } => ErrorClass::Mismatch,
            Self::Stopped(stopped) => stopped.class(),
        }
    }
}
