//! Waits: entries without a plugin (`wait = { signal | for_ms | until }`) that hold their
//! run until a signal arrives or a due time passes, durably.
//!
//! A wait goes `PENDING → WAITING → SUCCESS | FAILURE`. Entering WAITING journals when the
//! wait ends — a timer's due time, a signal wait's timeout — as the transition's `retry_at`
//! (the column retried tasks use for their next attempt), and what it waits for as the
//! transition's result (`{"signal": "approved"}`), so a resumed run waits only what is left
//! and readers of the record can say what a run waits for.
//!
//! Independent tasks go on meanwhile. A timer with little enough left
//! ([`crate::LoadedFlow::hold_timers`]) is waited for in this process; once nothing else can
//! run and only signals and longer timers remain, the flow goes WAITING and the run returns,
//! holding no executor (its lease is released with the journal). Whoever resumes it —
//! `runs resume`, a worker claiming a run whose signal came or whose due time passed, `serve`
//! on a signal — finds the signal through the journal ([`crate::Journal::take_signal`]) or the
//! due time in the record. A signal wait's timeout is checked whenever the run looks at its
//! waits: when nothing else runs, and when it is resumed.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::journal::RunError;
use super::run::{Failed, Run};
use super::schedule::{Done, Work};
use flowhost_core::contract::TaskError;
use flowhost_core::events::{FlowState, TaskState};
use flowhost_core::flow::{WaitFor, format_rfc3339};

/// The error code of a signal wait whose `timeout_ms` passed before its signal came.
pub const SIGNAL_TIMEOUT: &str = "signal-timeout";

/// What a wait waits for, as the plan shows it and its WAITING transition records it.
pub(crate) fn describe(wait: &WaitFor) -> Value {
    match wait {
        WaitFor::Signal { name, timeout } => match timeout {
            Some(timeout) => json!({ "signal": name, "timeout_ms": timeout.as_millis() as u64 }),
            None => json!({ "signal": name }),
        },
        WaitFor::For(pause) => json!({ "for_ms": pause.as_millis() as u64 }),
        WaitFor::Until(at) => json!({ "until": format_rfc3339(*at) }),
    }
}

/// How long until `due`, nothing when it passed.
fn left(due: Option<SystemTime>) -> Duration {
    due.and_then(|due| due.duration_since(SystemTime::now()).ok())
        .unwrap_or_default()
}

impl Run {
    /// Whether task `index` is a wait entry (it calls no plugin).
    pub(super) fn is_wait(&self, index: usize) -> bool {
        self.loaded.tasks[index].wait.is_some()
    }

    /// The tasks waiting now.
    pub(super) fn waiting(&self) -> Vec<usize> {
        (0..self.records.len())
            .filter(|&i| self.records[i].state == TaskState::Waiting)
            .collect()
    }

    /// Starts wait entry `index`: WAITING with its end (due time, timeout) and what it waits
    /// for journaled, then watched ([`Self::watch`]).
    pub(super) fn begin_wait(&mut self, index: usize, work: &mut Work) {
        let Some(wait) = self.loaded.tasks[index].wait.clone() else {
            return;
        };
        let now = SystemTime::now();
        let due = match &wait {
            WaitFor::Signal { timeout, .. } => timeout.map(|timeout| now + timeout),
            WaitFor::For(pause) => Some(now + *pause),
            WaitFor::Until(at) => Some(*at),
        };
        self.enter_waiting(index, describe(&wait), due);
        self.watch(index, work);
    }

    /// Watches waiting task `index`: a signal wait asks the journal for its signal (once the
    /// WAITING transition is committed: the call runs after the next flush); a timer sleeps
    /// out what is left of it when that is within [`crate::LoadedFlow::hold_timers`], and
    /// otherwise leaves the run to park.
    pub(super) fn watch(&self, index: usize, work: &mut Work) {
        match &self.loaded.tasks[index].wait {
            Some(WaitFor::Signal { name, .. }) => {
                let journal = self.loaded.journal.clone();
                let (task, name) = (self.loaded.tasks[index].name.clone(), name.clone());
                work.watch(Box::pin(async move {
                    let taken = match &journal {
                        Some(journal) => journal.take_signal(&task, &name).await,
                        None => Ok(None),
                    };
                    Done::Signalled { index, taken }
                }));
            }
            Some(WaitFor::For(_) | WaitFor::Until(_)) => {
                let due = self.records[index].retry_at;
                if left(due) <= self.loaded.hold_timers {
                    work.wake(index, due);
                }
            }
            None => {}
        }
    }

    /// Ends waiting task `index` with `data` (a signal's; `null` for a timer): SUCCESS, the
    /// data in the store under its `provides`.
    pub(super) fn waited(&mut self, index: usize, data: Value) {
        match self.loaded.tasks[index].binding.outputs(data.clone()) {
            Ok(outputs) => {
                self.succeed_wait(index, data);
                for (name, value) in outputs {
                    self.store.insert(name, value);
                }
            }
            Err(error) => self.fail(
                index,
                Failed {
                    outcome: None,
                    error,
                    called: false,
                },
            ),
        }
    }

    /// Takes what a watch reported: true when task `index` is done waiting (SUCCESS).
    pub(super) fn signalled(
        &mut self,
        index: usize,
        taken: Result<Option<Value>, super::JournalError>,
    ) -> Result<bool, RunError> {
        let data = taken.map_err(|error| RunError {
            run: self.loaded.id.clone(),
            transition: format!(
                "taking a signal for task `{}`",
                self.loaded.tasks[index].name
            ),
            error,
        })?;
        match data {
            Some(data) if self.records[index].state == TaskState::Waiting => {
                self.waited(index, data);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// A timer's due time came: true when task `index` is done waiting.
    pub(super) fn woken(&mut self, index: usize) -> bool {
        if self.records[index].state != TaskState::Waiting {
            return false;
        }
        self.waited(index, Value::Null);
        true
    }

    /// Looks at every wait once nothing else runs: a signal that came (taken now, after the
    /// WAITING transitions are committed) or a due time that passed ends its wait; a signal
    /// wait past its timeout fails `signal-timeout`; a timer now within the hold is slept
    /// out. Returns the tasks that are done waiting, and those that failed.
    pub(super) async fn settle_waits(
        &mut self,
        work: &mut Work,
    ) -> Result<(Vec<usize>, Vec<usize>), RunError> {
        self.flush().await?;
        let (mut done, mut failed) = (Vec::new(), Vec::new());
        for index in self.waiting() {
            let due = self.records[index].retry_at;
            match self.loaded.tasks[index].wait.clone() {
                Some(WaitFor::Signal { name, timeout }) => {
                    let taken = match self.loaded.journal.clone() {
                        Some(journal) => {
                            journal
                                .take_signal(&self.loaded.tasks[index].name, &name)
                                .await
                        }
                        None => Ok(None),
                    };
                    if self.signalled(index, taken)? {
                        done.push(index);
                    } else if due.is_some_and(|due| due <= SystemTime::now()) {
                        let waited = timeout.unwrap_or_default().as_millis();
                        let error = TaskError {
                            code: SIGNAL_TIMEOUT.to_owned(),
                            message: format!(
                                "no signal `{name}` came within {waited} ms (the wait's `timeout_ms`)"
                            ),
                            details: Some(json!({ "signal": name, "timeout_ms": waited as u64 })),
                        };
                        self.fail(
                            index,
                            Failed {
                                outcome: None,
                                error,
                                called: false,
                            },
                        );
                        failed.push(index);
                    }
                }
                Some(WaitFor::For(_) | WaitFor::Until(_)) => {
                    if left(due).is_zero() {
                        self.waited(index, Value::Null);
                        done.push(index);
                    } else if left(due) <= self.loaded.hold_timers {
                        work.wake(index, due);
                    }
                }
                None => {}
            }
        }
        Ok((done, failed))
    }

    /// The flow stops short of its waits (a task failed for good, or the run was stopped):
    /// each waiting task goes back to PENDING, never reached.
    pub(super) fn abandon_waits(&mut self) {
        for index in self.waiting() {
            self.reset(index);
        }
    }

    /// Nothing can run but waits: the flow goes WAITING, committed, and the run is left to
    /// whoever resumes it. Then the signals are looked at once more — a signal sent while the
    /// run was still RUNNING found nobody to wake it — and true is returned only when none of
    /// them came: the run stays parked. Otherwise the flow goes RUNNING again (false).
    pub(super) async fn park(&mut self) -> Result<bool, RunError> {
        self.flow_to(FlowState::Waiting);
        self.flush().await?;
        let Some(journal) = self.loaded.journal.clone() else {
            return Ok(true);
        };
        for index in self.waiting() {
            if let Some(WaitFor::Signal { name, .. }) = &self.loaded.tasks[index].wait {
                let taken = journal
                    .take_signal(&self.loaded.tasks[index].name, name)
                    .await;
                let came = taken.map_err(|error| RunError {
                    run: self.loaded.id.clone(),
                    transition: format!(
                        "taking a signal for task `{}`",
                        self.loaded.tasks[index].name
                    ),
                    error,
                })?;
                // Taken for this task: its watch takes it again when the run goes on.
                if came.is_some() {
                    self.flow_to(FlowState::Running);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}
