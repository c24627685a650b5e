//! The run state machine: execute in order, revert in reverse on the first failure.
//!
//! Every state change goes through [`Run::task_to`] or [`Run::flow_to`] and waits in the run's
//! pending transitions until the next [`Run::flush`], which comes before every plugin call and
//! at the end: the journal commits the pending transitions together, then the listeners hear
//! of them (TaskFlow's order: storage before notifier). So nothing reaches a plugin, a
//! listener or the caller before it is recorded — and a task's SUCCESS and the next task's
//! RUNNING cost one commit, not two. A failed commit stops the run at once: no further task
//! executes or reverts.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tracing::Instrument;

use super::LoadedFlow;
use super::journal::RunError;
use super::report::{RunReport, TaskReport};
use crate::contract::{HostFault, Outcome, TaskError};
use crate::events::{Event, FlowState, TaskState, Transition, notify};
use crate::store::{Store, quoted};

/// What happened to one task so far in a run.
pub(super) struct Record {
    pub(super) state: TaskState,
    since: Instant,
    pub(super) args: String,
    pub(super) outcome: Option<Outcome>,
    pub(super) duration: Duration,
    pub(super) error: Option<TaskError>,
    pub(super) revert_error: Option<TaskError>,
}

/// What a task transition carries besides its states.
#[derive(Default)]
struct Detail {
    result: Option<Value>,
    error: Option<TaskError>,
    args: Option<String>,
    outcome: Option<Outcome>,
}

/// One execution of a loaded flow.
pub(super) struct Run {
    pub(super) loaded: LoadedFlow,
    pub(super) store: Store,
    pub(super) records: Vec<Record>,
    pub(super) state: FlowState,
    started: Instant,
    /// Transitions made but not yet journaled (and not yet told to listeners).
    pending: Vec<Event>,
}

/// A transition could not be journaled: the run stops where it stands.
type Stopped = Result<(), RunError>;

impl Run {
    pub(super) fn new(loaded: LoadedFlow) -> Self {
        let now = Instant::now();
        let records = loaded
            .tasks
            .iter()
            .map(|_| Record {
                state: TaskState::Pending,
                since: now,
                args: String::new(),
                outcome: None,
                duration: Duration::ZERO,
                error: None,
                revert_error: None,
            })
            .collect();
        Self {
            store: loaded.initial.clone(),
            loaded,
            records,
            state: FlowState::Pending,
            started: now,
            pending: Vec::new(),
        }
    }

    /// The task whose execute failed, with its error.
    pub(super) fn failure(&self) -> Option<(usize, TaskError)> {
        self.records.iter().enumerate().find_map(|(i, r)| r.error.clone().map(|e| (i, e)))
    }

    fn emit(&mut self, transition: Transition) {
        self.pending.push(Event {
            run_id: self.loaded.id.clone(),
            flow: self.loaded.flow.clone(),
            at: SystemTime::now(),
            transition,
        });
    }

    /// Journals the pending transitions in one commit, then tells the listeners. Called
    /// before every plugin call and when the run ends.
    async fn flush(&mut self) -> Stopped {
        if self.pending.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.pending);
        if let Some(journal) = &self.loaded.journal {
            journal.append(&events).await.map_err(|error| RunError {
                run: self.loaded.id.clone(),
                transition: events.iter().map(|e| e.transition.to_string()).collect::<Vec<_>>().join(", "),
                error,
            })?;
        }
        for event in &events {
            notify(&self.loaded.listeners, event);
        }
        Ok(())
    }

    fn flow_to(&mut self, to: FlowState) {
        let from = self.state;
        let store = to.is_finished().then(|| self.store.clone());
        self.emit(Transition::Flow { from, to, elapsed: self.started.elapsed(), store });
        self.state = to;
    }

    fn task_to(&mut self, index: usize, to: TaskState, detail: Detail) {
        let record = &mut self.records[index];
        let from = record.state;
        debug_assert!(from.can_move_to(to), "task transition {from} -> {to}");
        let duration = record.since.elapsed();
        record.state = to;
        record.since = Instant::now();
        if from == TaskState::Running {
            record.duration = duration;
        }
        let task = self.loaded.tasks[index].name.clone();
        let Detail { result, error, args, outcome } = detail;
        self.emit(Transition::Task { task, index, from, to, duration, result, error, args, outcome });
    }

    /// Runs (or goes on running) to the end, or until the journal fails. Everything logged
    /// meanwhile — transitions, the plugins' own output — is in a `run` span carrying the
    /// run's id, so the lines of runs going on at once can be told apart.
    pub(super) async fn execute(mut self) -> Result<RunReport, RunError> {
        let span = tracing::info_span!("run", id = %self.loaded.id);
        let ended = self.drive().instrument(span).await;
        if let Some(journal) = &self.loaded.journal {
            journal.close().await;
        }
        self.loaded.cancellations.forget(&self.loaded.id);
        ended.map(|()| self.report())
    }

    async fn drive(&mut self) -> Stopped {
        let failed = if self.state == FlowState::Reverting {
            self.failure()
        } else {
            if self.state == FlowState::Pending {
                self.flow_to(FlowState::Running);
            }
            self.execute_tasks().await?
        };
        match failed {
            None => self.flow_to(FlowState::Success),
            Some((index, error)) => self.revert_from(index, error).await?,
        }
        self.flush().await
    }

    /// Executes every task not yet done, in order, up to the first failure.
    async fn execute_tasks(&mut self) -> Result<Option<(usize, TaskError)>, RunError> {
        for index in 0..self.loaded.tasks.len() {
            match self.records[index].state {
                TaskState::Pending => {
                    if self.loaded.cancellations.is_requested(&self.loaded.id) {
                        self.task_to(index, TaskState::Running, Detail::default());
                        let error = super::cancel::cancelled(&self.loaded.tasks[index].name);
                        return Ok(Some((index, self.fail_uncalled(index, error))));
                    }
                    if let Some(error) = self.execute_task(index).await? {
                        return Ok(Some((index, error)));
                    }
                }
                TaskState::Success => {}
                // Resumed after a failure was recorded but before the revert began.
                _ => return Ok(self.failure()),
            }
        }
        Ok(None)
    }

    /// Executes one task; `Some(error)` when it failed.
    async fn execute_task(&mut self, index: usize) -> Result<Option<TaskError>, RunError> {
        let task = &self.loaded.tasks[index];
        let args = task
            .binding
            .arguments(&self.store)
            .map_err(|missing| {
                let names: Vec<String> = missing.into_iter().map(|(_, key)| key).collect();
                HostFault::MissingArguments.error(format!("store lacks {}", quoted(&names)))
            })
            .map(|args| args.to_string())
            .and_then(|args| task.sandbox.limits.check_args(&args).map(|()| args));
        let detail = Detail { args: args.as_ref().ok().cloned(), ..Detail::default() };
        self.task_to(index, TaskState::Running, detail);
        let args = match args {
            Ok(args) => args,
            Err(error) => return Ok(Some(self.fail_uncalled(index, error))),
        };
        self.records[index].args = args;
        self.flush().await?;
        let task = &self.loaded.tasks[index];
        let text = match task.execute(&self.records[index].args).await {
            Ok(text) => text,
            Err(error) => return Ok(Some(self.fail(index, None, error))),
        };
        let stored = serde_json::from_str::<Value>(&text)
            .map_err(|e| HostFault::InvalidResult.error(format!("result is not valid JSON: {e}")))
            .and_then(|value| Ok((task.binding.outputs(value.clone())?, value)));
        match stored {
            Ok((outputs, value)) => {
                let outcome = Outcome::Result(text);
                let detail = Detail { result: Some(value), outcome: Some(outcome.clone()), ..Detail::default() };
                self.task_to(index, TaskState::Success, detail);
                for (name, value) in outputs {
                    self.store.insert(name, value);
                }
                self.records[index].outcome = Some(outcome);
                Ok(None)
            }
            // The task did run: its revert gets the raw result to undo whatever it did.
            Err(error) => Ok(Some(self.fail(index, Some(Outcome::Result(text)), error))),
        }
    }

    /// Fails a task whose plugin was never called (its arguments could not be built or were
    /// over the cap): it did nothing, so it has no outcome and is not reverted. Returns its
    /// error.
    fn fail_uncalled(&mut self, index: usize, error: TaskError) -> TaskError {
        self.task_to(index, TaskState::Failure, Detail { error: Some(error.clone()), ..Detail::default() });
        self.records[index].error = Some(error.clone());
        error
    }

    /// Marks task `index` FAILURE after its plugin was called; returns its error.
    fn fail(&mut self, index: usize, outcome: Option<Outcome>, error: TaskError) -> TaskError {
        let outcome = outcome.unwrap_or_else(|| Outcome::Error(error.clone()));
        let detail = Detail { error: Some(error.clone()), outcome: Some(outcome.clone()), ..Detail::default() };
        self.task_to(index, TaskState::Failure, detail);
        let record = &mut self.records[index];
        record.outcome = Some(outcome);
        record.error = Some(error.clone());
        error
    }

    /// Reverts the failed task, then every task that succeeded, in reverse order. A revert
    /// that fails is recorded and the rest are still reverted. A resumed revert skips the
    /// tasks already reverted (or whose revert already failed).
    async fn revert_from(&mut self, failed: usize, error: TaskError) -> Stopped {
        if self.state != FlowState::Reverting {
            self.flow_to(FlowState::Reverting);
        }
        let failures = vec![(self.loaded.tasks[failed].name.clone(), error)];
        let mut all_reverted = true;
        for index in (0..=failed).rev() {
            match self.records[index].state {
                TaskState::Reverted => continue,
                TaskState::RevertFailure => {
                    all_reverted = false;
                    continue;
                }
                _ => {}
            }
            // No outcome: the task never ran (or was never called), so there is nothing to undo.
            let Some(outcome) = self.records[index].outcome.clone() else { continue };
            self.task_to(index, TaskState::Reverting, Detail::default());
            self.flush().await?;
            let task = &self.loaded.tasks[index];
            match task.revert(&self.records[index].args, &outcome, &failures).await {
                Ok(()) => {
                    self.task_to(index, TaskState::Reverted, Detail::default());
                    for name in &self.loaded.tasks[index].binding.provides {
                        self.store.remove(name);
                    }
                }
                Err(error) => {
                    all_reverted = false;
                    self.task_to(index, TaskState::RevertFailure, Detail { error: Some(error.clone()), ..Detail::default() });
                    self.records[index].revert_error = Some(error);
                }
            }
        }
        self.flow_to(if all_reverted { FlowState::Reverted } else { FlowState::Failure });
        Ok(())
    }

    fn report(self) -> RunReport {
        let tasks = self
            .loaded
            .tasks
            .iter()
            .zip(self.records)
            .map(|(task, record)| TaskReport {
                name: task.name.clone(),
                state: record.state,
                duration: record.duration,
                error: record.error,
                revert_error: record.revert_error,
                limits: task.sandbox.limits,
            })
            .collect();
        RunReport {
            run_id: self.loaded.id,
            flow: self.loaded.flow,
            state: self.state,
            store: self.store,
            tasks,
            duration: self.started.elapsed(),
        }
    }
}
