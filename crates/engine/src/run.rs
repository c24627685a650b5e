//! The run state machine: the states of the flow and its tasks and the moves between them;
//! what runs when is the scheduler's (`super::schedule`).
//!
//! Every state change goes through [`Run::task_to`] or [`Run::flow_to`] and waits in the run's
//! pending transitions until the next [`Run::flush`], which comes before every plugin call and
//! at the end: the journal commits the pending transitions together, then the listeners hear
//! of them (TaskFlow's order: storage before notifier). So nothing reaches a plugin, a
//! listener or the caller before it is recorded — and a task's SUCCESS and the next task's
//! RUNNING (or the RUNNING of tasks starting together) cost one commit, not two. A failed commit stops the run at once: no further task
//! executes or reverts.
//!
//! A failed attempt that the entry's retry policy tries again moves the task to RETRYING with
//! the due time of the next attempt, which is committed before the pause begins: a run
//! killed during the pause resumes it where it stood.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tracing::Instrument;

use super::LoadedFlow;
use super::cancel::Stop;
use super::journal::RunError;
use super::report::{RunReport, SubflowReport, TaskReport};
use flowhost_core::contract::{HostFault, Outcome, Progress, TaskError};
use flowhost_core::events::{Event, FlowState, TaskState, Transition, notify};
use flowhost_core::plan::tree::Tree;
use flowhost_core::store::{Store, quoted};
use flowhost_runtime::ProgressSink;

/// What happened to one task so far in a run. What most tasks never have (an error, a
/// revert's result, progress) is boxed: every run in flight holds one record per task.
pub(super) struct Record {
    pub(super) state: TaskState,
    since: Instant,
    pub(super) args: String,
    pub(super) outcome: Option<Outcome>,
    pub(super) duration: Duration,
    pub(super) error: Option<Box<TaskError>>,
    pub(super) revert_error: Option<Box<TaskError>>,
    revert_result: Option<Box<Value>>,
    progress: Option<Box<Progress>>,
    /// The attempt last started, from 1; 0 before the first.
    pub(super) attempt: u32,
    /// When the next attempt is due, while the task is RETRYING (or reverted between
    /// attempts).
    pub(super) retry_at: Option<SystemTime>,
    /// Why the last attempt failed, while another is to come: what a revert between attempts
    /// hands the plugin as the flow's failure.
    pub(super) attempt_error: Option<Box<TaskError>>,
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
    /// When the wait ends, on entering WAITING.
    due: Option<SystemTime>,
}

/// How one attempt of `execute` failed: what its revert would get, why, and whether the
/// plugin was called at all.
pub(super) struct Failed {
    pub(super) outcome: Option<Outcome>,
    pub(super) error: TaskError,
    pub(super) called: bool,
}

/// One execution of a loaded flow.
pub(super) struct Run {
    pub(super) loaded: LoadedFlow,
    pub(super) store: Store,
    pub(super) records: Vec<Record>,
    pub(super) state: FlowState,
    /// Each retry controller's iteration (of `loaded.scopes`), from 1.
    pub(super) iteration: Vec<u32>,
    started: Instant,
    /// When the run is stopped with `run-timeout` (the flow's `timeout_ms`), if ever.
    pub(super) deadline: Option<SystemTime>,
    /// Transitions made but not yet journaled (and not yet told to listeners).
    pending: Vec<Event>,
    /// Where each map (of `loaded.maps`) stands, element by element.
    pub(super) maps: Vec<super::map::MapState>,
    /// The run's place in line for instance slots: runs of this process number themselves
    /// as they start, and when calls wait for slots the earliest run's go first (see the
    /// runtime's `slots`).
    pub(super) order: u64,
}

/// The next run's [`Run::order`].
static NEXT_ORDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A transition could not be journaled: the run stops where it stands.
pub(super) type Stopped = Result<(), RunError>;

impl Run {
    pub(super) fn new(mut loaded: LoadedFlow) -> Self {
        let now = Instant::now();
        // The run's store starts as the initial store, which nothing reads once it runs.
        let store = std::mem::take(&mut loaded.initial);
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
                revert_result: None,
                progress: None,
                attempt: 0,
                retry_at: None,
                attempt_error: None,
            })
            .collect();
        let maps = std::iter::repeat_with(Default::default)
            .take(loaded.maps.len())
            .collect();
        Self {
            store,
            iteration: vec![1; loaded.scopes.len()],
            deadline: loaded.timeout.map(|timeout| SystemTime::now() + timeout),
            loaded,
            records,
            state: FlowState::Pending,
            started: now,
            pending: Vec::new(),
            maps,
            order: NEXT_ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The task whose execute failed, with its error.
    pub(super) fn failure(&self) -> Option<(usize, TaskError)> {
        self.records
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.error.as_deref().map(|e| (i, e.clone())))
    }

    pub(super) fn emit(&mut self, transition: Transition, at: SystemTime) {
        self.pending.push(Event {
            run_id: self.loaded.id.clone(),
            flow: self.loaded.flow.clone(),
            at,
            transition,
        });
    }

    /// Journals the pending transitions in one commit, then tells the listeners. Called
    /// before every plugin call and when the run ends.
    pub(super) async fn flush(&mut self) -> Stopped {
        if self.pending.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.pending);
        if let Some(journal) = &self.loaded.journal {
            journal.append(&events).await.map_err(|error| RunError {
                run: self.loaded.id.clone(),
                transition: events
                    .iter()
                    .map(|e| e.transition.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                error,
            })?;
        }
        for event in &events {
            // Listeners heard of progress while the task ran (see `Run::progress`).
            if !matches!(event.transition, Transition::Progress { .. }) {
                notify(&self.loaded.listeners, event);
            }
        }
        Ok(())
    }

    /// Where task `index`'s progress reports go during one call: to the listeners at once —
    /// progress is not a state change, and a web console wants it while the task runs — and
    /// into the returned slot, whose last report [`Run::progressed`] journals with the
    /// task's next transition.
    pub(super) fn progress(&self, index: usize) -> (ProgressSink, Arc<Mutex<Option<Progress>>>) {
        let last = Arc::new(Mutex::new(None));
        let kept = last.clone();
        let listeners = self.loaded.listeners.clone();
        let (run_id, flow, task) = (
            self.loaded.id.clone(),
            self.loaded.flow.clone(),
            self.loaded.tasks[index].name.clone(),
        );
        let sink: ProgressSink = Arc::new(move |progress: Progress| {
            let event = Event {
                run_id: run_id.clone(),
                flow: flow.clone(),
                at: SystemTime::now(),
                transition: Transition::Progress {
                    task: task.clone(),
                    index,
                    progress: progress.clone(),
                },
            };
            notify(&listeners, &event);
            *kept.lock().unwrap_or_else(|p| p.into_inner()) = Some(progress);
        });
        (sink, last)
    }

    /// Journals the last progress task `index` reported during a call, if any.
    pub(super) fn progressed(&mut self, index: usize, last: &Mutex<Option<Progress>>) {
        let Some(progress) = last.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        self.records[index].progress = Some(Box::new(progress.clone()));
        let task = self.loaded.tasks[index].name.clone();
        self.emit(
            Transition::Progress {
                task,
                index,
                progress,
            },
            SystemTime::now(),
        );
    }

    pub(super) fn flow_to(&mut self, to: FlowState) {
        let from = self.state;
        let store = to.is_finished().then(|| self.store.clone());
        self.emit(
            Transition::Flow {
                from,
                to,
                elapsed: self.started.elapsed(),
                store,
            },
            SystemTime::now(),
        );
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
        let Detail {
            result,
            error,
            args,
            outcome,
            retry_in,
            due,
        } = detail;
        // The due time is exactly the transition's time plus the pause, as journaled.
        let at = SystemTime::now();
        let retry_at = retry_in.map(|pause| at + pause).or(due);
        record.retry_at = retry_at.or(record
            .retry_at
            .filter(|_| to != TaskState::Running && from != TaskState::Waiting));
        let task = self.loaded.tasks[index].name.clone();
        let iterations = self.iterations(index);
        let transition = Transition::Task {
            task,
            index,
            from,
            to,
            duration,
            result,
            error,
            args,
            outcome,
            attempt,
            retry_at,
            iterations,
            element: None,
        };
        self.emit(transition, at);
    }

    /// Moves task `index` as a whole to `to`, with what the transition carries: a map's
    /// task, whose elements' calls have records of their own.
    pub(super) fn whole_task_to(
        &mut self,
        index: usize,
        to: TaskState,
        result: Option<Value>,
        error: Option<TaskError>,
        outcome: Option<Outcome>,
    ) {
        let detail = Detail {
            result,
            error,
            outcome,
            ..Detail::default()
        };
        self.task_to(index, to, detail);
    }

    /// The iterations task `index` runs in, one per controller around it, outermost first.
    pub(super) fn iterations(&self, index: usize) -> Vec<u32> {
        let mut its: Vec<u32> = Tree::scopes_of(&self.loaded.scopes, index)
            .map(|s| self.iteration[s])
            .collect();
        its.reverse();
        its
    }

    /// Runs (or goes on running) to the end, or until the journal fails. Everything logged
    /// meanwhile — transitions, the plugins' own output — is in a `run` span carrying the
    /// run's id, so the lines of runs going on at once can be told apart.
    pub(super) async fn execute(mut self) -> Result<RunReport, RunError> {
        let span = tracing::info_span!("run", id = %self.loaded.id);
        let deadline = self.deadline.map(|at| {
            let (cancellations, id) = (self.loaded.cancellations.clone(), self.loaded.id.clone());
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            // Past already (a run resumed late): stopped before it looks at anything, so
            // that a run with only waits left does not park instead.
            if left.is_zero() {
                cancellations.request(&id, Stop::Deadline);
            }
            tokio::spawn(async move {
                tokio::time::sleep(left).await;
                tracing::warn!(run = %id, "the run's deadline passed: stopping it");
                cancellations.request(&id, Stop::Deadline);
            })
        });
        let ended = self.drive().instrument(span).await;
        if let Some(timer) = deadline {
            timer.abort();
        }
        if let Some(journal) = &self.loaded.journal {
            journal.close().await;
        }
        self.loaded.cancellations.forget(&self.loaded.id);
        self.loaded.suspensions.forget(&self.loaded.id);
        ended.map(|()| self.report())
    }

    async fn drive(&mut self) -> Stopped {
        if matches!(self.state, FlowState::Suspending | FlowState::Suspended) {
            self.wake();
        }
        let failed = if self.state == FlowState::Reverting {
            true
        } else {
            if matches!(self.state, FlowState::Pending | FlowState::Waiting) {
                self.flow_to(FlowState::Running);
            }
            loop {
                let failed = self.execute_tasks().await?;
                if failed || self.state == FlowState::Suspended || self.waiting().is_empty() {
                    break failed;
                }
                // Only waits are left: the run is left WAITING, unless a signal just came.
                if self.park().await? {
                    return Ok(());
                }
            }
        };
        if failed {
            self.revert_tasks().await?;
        } else if self.state != FlowState::Suspended {
            self.flow_to(FlowState::Success);
        }
        self.flush().await
    }

    /// A suspended run goes on: RUNNING again, and each task that failed for good (and
    /// suspended the run, `on_failure = "suspend"`) back to PENDING to be tried again, as its
    /// next attempt. Nothing that succeeded runs again.
    fn wake(&mut self) {
        self.flow_to(FlowState::Running);
        for index in 0..self.records.len() {
            let record = &mut self.records[index];
            if record.state == TaskState::Failure && record.error.is_some() {
                record.error = None;
                record.outcome = None;
                self.task_to(index, TaskState::Pending, Detail::default());
            }
        }
    }

    /// Turns an unfinished run to reverting what it did, with nothing more executed (a
    /// person chose to revert a suspended run).
    pub(super) fn reverting_from_here(&mut self) {
        if self.state != FlowState::Reverting {
            self.flow_to(FlowState::Reverting);
        }
    }

    /// Builds a task's arguments from the store: every required name (a missing one is an
    /// error), the optional ones present, within the entry's `args_kib`.
    pub(super) fn arguments(&self, index: usize) -> Result<String, TaskError> {
        let task = &self.loaded.tasks[index];
        task.binding
            .arguments(&self.store)
            .map_err(|missing| {
                let names: Vec<String> = missing.into_iter().map(|(_, key)| key).collect();
                HostFault::MissingArguments.error(format!("store lacks {}", quoted(&names)))
            })
            .map(|args| args.to_string())
            .and_then(|args| task.sandbox.limits.check_args(&args).map(|()| args))
    }

    /// Puts into the store what the controllers around task `index` give their current
    /// iteration (a `for_each` value), or says why they cannot (a `parameterized_for_each`
    /// list missing from the store or too short).
    pub(super) fn give(&mut self, index: usize) -> Result<(), TaskError> {
        for s in Tree::scopes_of(&self.loaded.scopes, index) {
            let scope = &self.loaded.scopes[s];
            match scope.given(self.iteration[s], &self.store) {
                Ok(Some((name, value))) => {
                    let name = name.to_owned();
                    self.store.insert(name, value);
                }
                Ok(None) => {}
                Err(message) => return Err(HostFault::MissingArguments.error(message)),
            }
        }
        Ok(())
    }

    /// Puts task `index` back to PENDING for its subflow's next iteration: whatever it did is
    /// reverted (or it never ran), so it starts over from its first attempt.
    pub(super) fn reset(&mut self, index: usize) {
        let record = &mut self.records[index];
        record.attempt = 0;
        record.outcome = None;
        record.error = None;
        record.revert_error = None;
        record.retry_at = None;
        record.attempt_error = None;
        record.args.clear();
        if record.state != TaskState::Pending {
            self.task_to(index, TaskState::Pending, Detail::default());
        }
    }

    /// Moves task `index` to IGNORE, never to be executed or reverted; `why` (journaled as
    /// the transition's result) is `{"when": EXPRESSION}` when its condition was false, or
    /// `{"ignored_with": TASK}` when a task it needs was ignored.
    pub(super) fn ignore(&mut self, index: usize, why: Value) {
        self.task_to(
            index,
            TaskState::Ignore,
            Detail {
                result: Some(why),
                ..Detail::default()
            },
        );
    }

    /// Moves wait entry `index` to WAITING for `what` (journaled as the transition's result),
    /// until `due` when the wait has an end.
    pub(super) fn enter_waiting(&mut self, index: usize, what: Value, due: Option<SystemTime>) {
        let detail = Detail {
            result: Some(what),
            due,
            ..Detail::default()
        };
        self.task_to(index, TaskState::Waiting, detail);
    }

    /// Ends wait entry `index`: SUCCESS with `data` as its result, and as the outcome a
    /// resumed run puts back into the store.
    pub(super) fn succeed_wait(&mut self, index: usize, data: Value) {
        let outcome = Outcome::Result(data.to_string());
        let detail = Detail {
            result: Some(data),
            outcome: Some(outcome.clone()),
            ..Detail::default()
        };
        self.task_to(index, TaskState::Success, detail);
        self.records[index].outcome = Some(outcome);
    }

    /// Moves task `index` to RUNNING for attempt `attempt`, with the arguments it will get.
    pub(super) fn start(&mut self, index: usize, attempt: u32, args: Option<String>) {
        let record = &mut self.records[index];
        record.attempt = attempt;
        record.attempt_error = None;
        record.outcome = None;
        self.task_to(
            index,
            TaskState::Running,
            Detail {
                args: args.clone(),
                ..Detail::default()
            },
        );
        if let Some(args) = args {
            self.records[index].args = args;
        }
    }

    /// Takes what `execute` returned: on valid JSON holding the provided names, SUCCESS and
    /// the results go into the store; otherwise how the attempt failed.
    pub(super) fn executed(
        &mut self,
        index: usize,
        result: Result<String, TaskError>,
    ) -> Option<Failed> {
        let text = match result {
            Ok(text) => text,
            Err(error) => {
                return Some(Failed {
                    outcome: None,
                    error,
                    called: true,
                });
            }
        };
        let task = &self.loaded.tasks[index];
        let stored = serde_json::from_str::<Value>(&text)
            .map_err(|e| HostFault::InvalidResult.error(format!("result is not valid JSON: {e}")))
            .and_then(|value| Ok((task.binding.outputs(value.clone())?, value)));
        match stored {
            Ok((outputs, value)) => {
                let outcome = Outcome::Result(text);
                let detail = Detail {
                    result: Some(value),
                    outcome: Some(outcome.clone()),
                    ..Detail::default()
                };
                self.task_to(index, TaskState::Success, detail);
                for (name, value) in outputs {
                    self.store.insert(name, value);
                }
                self.records[index].outcome = Some(outcome);
                None
            }
            // The task did run: its revert gets the raw result to undo whatever it did.
            Err(error) => Some(Failed {
                outcome: Some(Outcome::Result(text)),
                error,
                called: true,
            }),
        }
    }

    /// Moves a failed attempt to RETRYING, the next attempt due after `pause`.
    pub(super) fn retrying(&mut self, index: usize, failed: Failed, pause: Duration) {
        let Failed { outcome, error, .. } = failed;
        let outcome = outcome.unwrap_or_else(|| Outcome::Error(error.clone()));
        let detail = Detail {
            error: Some(error.clone()),
            outcome: Some(outcome.clone()),
            retry_in: Some(pause),
            ..Detail::default()
        };
        self.task_to(index, TaskState::Retrying, detail);
        let record = &mut self.records[index];
        record.outcome = Some(outcome);
        record.attempt_error = Some(Box::new(error));
    }

    /// Marks task `index` FAILURE for good; returns nothing, the error stays on its record.
    /// A task whose plugin was never called (its arguments could not be built or were over
    /// the cap) did nothing, so it has no outcome and is not reverted.
    pub(super) fn fail(&mut self, index: usize, failed: Failed) {
        let Failed {
            outcome,
            error,
            called,
        } = failed;
        let outcome = called.then(|| outcome.unwrap_or_else(|| Outcome::Error(error.clone())));
        let detail = Detail {
            error: Some(error.clone()),
            outcome: outcome.clone(),
            ..Detail::default()
        };
        self.task_to(index, TaskState::Failure, detail);
        let record = &mut self.records[index];
        record.outcome = outcome;
        record.error = Some(Box::new(error));
    }

    /// Takes what a `revert` returned: REVERTED, its results out of the store (unless it only
    /// undid a failed attempt, which stored nothing), or REVERT_FAILURE.
    pub(super) fn reverted(
        &mut self,
        index: usize,
        result: Result<Option<String>, TaskError>,
    ) -> Result<(), TaskError> {
        match result {
            Ok(result) => {
                // A revert result that is not JSON is kept as text: the revert did succeed.
                let result =
                    result.map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text)));
                self.records[index].revert_result = result.clone().map(Box::new);
                self.task_to(
                    index,
                    TaskState::Reverted,
                    Detail {
                        result,
                        ..Detail::default()
                    },
                );
                if self.records[index].retry_at.is_none() {
                    for name in &self.loaded.tasks[index].binding.provides {
                        self.store.remove(name);
                    }
                }
                Ok(())
            }
            Err(error) => {
                self.task_to(
                    index,
                    TaskState::RevertFailure,
                    Detail {
                        error: Some(error.clone()),
                        ..Detail::default()
                    },
                );
                self.records[index].revert_error = Some(Box::new(error.clone()));
                Err(error)
            }
        }
    }

    /// Moves task `index` to REVERTING.
    pub(super) fn reverting(&mut self, index: usize) {
        self.task_to(index, TaskState::Reverting, Detail::default());
    }

    /// Ends the revert: REVERTED when every revert succeeded, else FAILURE.
    pub(super) fn reverts_done(&mut self) {
        let all_reverted = self
            .records
            .iter()
            .all(|r| r.state != TaskState::RevertFailure);
        self.flow_to(if all_reverted {
            FlowState::Reverted
        } else {
            FlowState::Failure
        });
    }

    fn report(self) -> RunReport {
        let maps = self.map_reports();
        let iterations: Vec<Vec<u32>> = (0..self.records.len())
            .map(|i| self.iterations(i))
            .collect();
        let subflows = self
            .loaded
            .scopes
            .iter()
            .zip(&self.iteration)
            .map(|(scope, &iteration)| SubflowReport {
                path: scope.path.clone(),
                iteration,
            })
            .collect();
        let tasks = self
            .loaded
            .tasks
            .iter()
            .zip(self.records)
            .zip(iterations)
            .map(|((task, record), iterations)| TaskReport {
                waiting: task
                    .wait
                    .as_ref()
                    .filter(|_| record.state == TaskState::Waiting)
                    .map(|wait| {
                        let mut what = super::wait::describe(wait);
                        if let Some(due) = record.retry_at {
                            what["due"] = flowhost_core::flow::format_rfc3339(due).into();
                        }
                        what
                    }),
                name: task.name.clone(),
                state: record.state,
                duration: record.duration,
                error: record.error.map(|e| *e),
                revert_error: record.revert_error.map(|e| *e),
                revert_result: record.revert_result.map(|r| *r),
                progress: record.progress.map(|p| *p),
                attempt: record.attempt,
                iterations,
                limits: task.sandbox.limits,
            })
            .collect();
        RunReport {
            run_id: self.loaded.id,
            flow: self.loaded.flow,
            state: self.state,
            store: self.store,
            tasks,
            subflows,
            maps,
            duration: self.started.elapsed(),
        }
    }
}
