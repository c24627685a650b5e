//! The run state machine: execute in order, revert in reverse on the first failure.
//!
//! Every state change goes through [`Run::task_to`] or [`Run::flow_to`] and waits in the run's
//! pending transitions until the next [`Run::flush`], which comes before every plugin call and
//! at the end: the journal commits the pending transitions together, then the listeners hear
//! of them (TaskFlow's order: storage before notifier). So nothing reaches a plugin, a
//! listener or the caller before it is recorded — and a task's SUCCESS and the next task's
//! RUNNING cost one commit, not two. A failed commit stops the run at once: no further task
//! executes or reverts.
//!
//! A failed attempt that the entry's retry policy tries again moves the task to RETRYING with
//! the due time of the next attempt, which is committed before the pause begins: a run
//! killed during the pause resumes it where it stood.

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
    /// The attempt last started, from 1; 0 before the first.
    pub(super) attempt: u32,
    /// When the next attempt is due, while the task is RETRYING (or reverted between
    /// attempts).
    pub(super) retry_at: Option<SystemTime>,
    /// Why the last attempt failed, while another is to come: what a revert between attempts
    /// hands the plugin as the flow's failure.
    pub(super) attempt_error: Option<TaskError>,
}

/// What a task transition carries besides its states.
#[derive(Default)]
struct Detail {
    result: Option<Value>,
    error: Option<TaskError>,
    args: Option<String>,
    outcome: Option<Outcome>,
    /// The pause before the next attempt, on entering RETRYING.
    retry_in: Option<Duration>,
}

/// How one attempt of `execute` failed: what its revert would get, why, and whether the
/// plugin was called at all.
struct Failed {
    outcome: Option<Outcome>,
    error: TaskError,
    called: bool,
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
                attempt: 0,
                retry_at: None,
                attempt_error: None,
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

    fn emit(&mut self, transition: Transition, at: SystemTime) {
        self.pending.push(Event { run_id: self.loaded.id.clone(), flow: self.loaded.flow.clone(), at, transition });
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
        self.emit(Transition::Flow { from, to, elapsed: self.started.elapsed(), store }, SystemTime::now());
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
        let attempt = record.attempt;
        let Detail { result, error, args, outcome, retry_in } = detail;
        // The due time is exactly the transition's time plus the pause, as journaled.
        let at = SystemTime::now();
        let retry_at = retry_in.map(|pause| at + pause);
        record.retry_at = retry_at.or(record.retry_at.filter(|_| to != TaskState::Running));
        let task = self.loaded.tasks[index].name.clone();
        self.emit(Transition::Task { task, index, from, to, duration, result, error, args, outcome, attempt, retry_at }, at);
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
            let record = &self.records[index];
            let between_attempts = record.retry_at.is_some() && record.state == TaskState::Reverted;
            match record.state {
                TaskState::Pending | TaskState::Retrying => {}
                _ if between_attempts => {}
                TaskState::Success => continue,
                // Resumed after a failure was recorded but before the revert began.
                _ => return Ok(self.failure()),
            }
            if let Some(error) = self.execute_task(index).await? {
                return Ok(Some((index, error)));
            }
        }
        Ok(None)
    }

    /// Executes one task, trying again as its retry policy allows; `Some(error)` when its
    /// last attempt failed. Picks up where a resumed run stood: in a pause between attempts,
    /// or with a failed attempt still to revert.
    async fn execute_task(&mut self, index: usize) -> Result<Option<TaskError>, RunError> {
        loop {
            if self.records[index].state == TaskState::Retrying {
                if self.loaded.tasks[index].retry.revert_between
                    && let Some(error) = self.revert_attempt(index).await?
                {
                    return Ok(Some(error));
                }
                self.wait_for_retry(index).await?;
            } else if self.records[index].state == TaskState::Reverted {
                self.wait_for_retry(index).await?;
            }
            let attempt = self.records[index].attempt + 1;
            let Err(Failed { outcome, error, called }) = self.attempt(index, attempt).await? else {
                return Ok(None);
            };
            // A plugin that was never called did nothing another attempt could change.
            let delay = called.then(|| self.loaded.tasks[index].retry.delay_after(attempt, &error.code)).flatten();
            match delay {
                Some(delay) => {
                    let outcome = outcome.unwrap_or_else(|| Outcome::Error(error.clone()));
                    let detail = Detail {
                        error: Some(error.clone()),
                        outcome: Some(outcome.clone()),
                        retry_in: Some(delay),
                        ..Detail::default()
                    };
                    self.task_to(index, TaskState::Retrying, detail);
                    let record = &mut self.records[index];
                    record.outcome = Some(outcome);
                    record.attempt_error = Some(error);
                }
                None if called => return Ok(Some(self.fail(index, outcome, error))),
                None => return Ok(Some(self.fail_uncalled(index, error))),
            }
        }
    }

    /// Reverts a failed attempt before the next one (`revert_between`). `Some(error)` when the
    /// revert failed: the attempt's effects stay, so no further attempt is made and the flow
    /// reverts with the attempt's error.
    async fn revert_attempt(&mut self, index: usize) -> Result<Option<TaskError>, RunError> {
        let record = &self.records[index];
        let (Some(outcome), Some(attempt_error)) = (record.outcome.clone(), record.attempt_error.clone()) else {
            return Ok(None);
        };
        self.task_to(index, TaskState::Reverting, Detail::default());
        self.flush().await?;
        let task = &self.loaded.tasks[index];
        let failures = vec![(task.name.clone(), attempt_error.clone())];
        match task.revert(&self.records[index].args, &outcome, &failures).await {
            Ok(()) => {
                self.task_to(index, TaskState::Reverted, Detail::default());
                Ok(None)
            }
            Err(error) => {
                self.task_to(index, TaskState::RevertFailure, Detail { error: Some(error.clone()), ..Detail::default() });
                let record = &mut self.records[index];
                record.revert_error = Some(error);
                record.error = Some(attempt_error.clone());
                record.retry_at = None;
                Ok(Some(attempt_error))
            }
        }
    }

    /// Journals where the task stands, then waits until its next attempt is due. The due
    /// time is wall-clock time from the journal, so a resumed run waits only what is left.
    async fn wait_for_retry(&mut self, index: usize) -> Stopped {
        self.flush().await?;
        if let Some(due) = self.records[index].retry_at {
            let left = due.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(left).await;
        }
        Ok(())
    }

    /// Runs attempt `attempt` of a task: RUNNING, the call, then SUCCESS with its results in
    /// the store. A failed attempt is returned without a transition: whether it is retried
    /// is the caller's decision.
    async fn attempt(&mut self, index: usize, attempt: u32) -> Result<Result<(), Failed>, RunError> {
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
        let record = &mut self.records[index];
        record.attempt = attempt;
        record.attempt_error = None;
        record.outcome = None;
        self.task_to(index, TaskState::Running, detail);
        let args = match args {
            Ok(args) => args,
            Err(error) => return Ok(Err(Failed { outcome: None, error, called: false })),
        };
        self.records[index].args = args;
        self.flush().await?;
        let task = &self.loaded.tasks[index];
        let text = match task.execute(&self.records[index].args, attempt).await {
            Ok(text) => text,
            Err(error) => return Ok(Err(Failed { outcome: None, error, called: true })),
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
                Ok(Ok(()))
            }
            // The task did run: its revert gets the raw result to undo whatever it did.
            Err(error) => Ok(Err(Failed { outcome: Some(Outcome::Result(text)), error, called: true })),
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
                attempts: record.attempt,
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
