//! States, transitions and listeners: everything that happens in a run is an [`Event`],
//! journaled by the engine first and then handed to every [`Listener`] — logging, progress
//! and metrics are listeners; persistence is not (see `crate::engine::Journal`).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::{Outcome, Progress, TaskError};
use crate::store::Store;

/// A task's state, as in TaskFlow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Not started.
    Pending,
    /// `execute` in progress.
    Running,
    /// `execute` succeeded and its result is in the store.
    Success,
    /// `execute` failed.
    Failure,
    /// `revert` in progress.
    Reverting,
    /// `revert` succeeded.
    Reverted,
    /// `revert` failed: a person must look at what the task left behind.
    RevertFailure,
    /// An attempt of `execute` failed and its retry policy tries again at a due time (after
    /// reverting the attempt first, when the policy says `revert_between`).
    Retrying,
    /// Never executed: its entry's `when` was false once what it depends on was done, or a
    /// task whose results it needs was itself ignored (TaskFlow's IGNORE). Not reverted; its
    /// results are absent.
    Ignore,
    /// An entry without a plugin waits, durably, for a signal or a due time (`wait = {...}`):
    /// the run holds no executor meanwhile.
    Waiting,
}

/// A flow's state, as in TaskFlow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlowState {
    /// Not started.
    Pending,
    /// Tasks executing.
    Running,
    /// Every task succeeded.
    Success,
    /// A task failed; reverting.
    Reverting,
    /// A task failed and every revert succeeded: nothing is left half done.
    Reverted,
    /// A task failed and at least one revert failed: the run needs a person.
    Failure,
    /// A suspend was asked for: tasks in flight finish, nothing new starts.
    Suspending,
    /// Stopped between tasks, by a suspend or by a failure whose entry says `on_failure =
    /// "suspend"`: holds no executor and no lease until it is resumed (or reverted).
    Suspended,
    /// Every task that can go on waits for a signal or a due time: the run holds no executor
    /// until one arrives.
    Waiting,
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for FlowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TaskState {
    /// The state's name, as TaskFlow spells it and the run database stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Running => "RUNNING",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Reverting => "REVERTING",
            TaskState::Reverted => "REVERTED",
            TaskState::RevertFailure => "REVERT_FAILURE",
            TaskState::Retrying => "RETRYING",
            TaskState::Ignore => "IGNORE",
            TaskState::Waiting => "WAITING",
        }
    }

    /// Whether the task is done with for the execute phase: what depends on it may go on
    /// (and finds out, if it was ignored, whether it is ignored too).
    pub fn is_done(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Ignore)
    }

    /// Whether TaskFlow's state machine allows the move from `self` to `to` (a task caught
    /// RUNNING by a crash starts over from PENDING on resume, so RUNNING is entered again
    /// only that way). A retried task goes `RUNNING -> RETRYING -> RUNNING`, or with
    /// `revert_between` `RUNNING -> RETRYING -> REVERTING -> REVERTED -> RUNNING`.
    pub fn can_move_to(self, to: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, to),
            (Pending, Running)
                | (Running, Success | Failure | Retrying)
                | (Success | Failure | Retrying, Reverting)
                | (Reverting, Reverted | RevertFailure)
                | (Retrying | Reverted, Running)
                | (Pending, Ignore)
                | (Pending, Waiting)
                | (Waiting, Success | Failure)
                // The flow stopped (failed elsewhere, or cancelled) while it waited: it is
                // back where it was, never reached.
                | (Waiting, Pending)
                // A map's task as a whole, once its elements' iterations were reverted.
                | (Running, Reverted | RevertFailure)
                // A subflow's controller starts its next iteration.
                | (Reverted | Failure | Ignore, Pending)
        )
    }
}

impl FlowState {
    /// The state's name, as TaskFlow spells it and the run database stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Pending => "PENDING",
            FlowState::Running => "RUNNING",
            FlowState::Success => "SUCCESS",
            FlowState::Reverting => "REVERTING",
            FlowState::Reverted => "REVERTED",
            FlowState::Failure => "FAILURE",
            FlowState::Suspending => "SUSPENDING",
            FlowState::Suspended => "SUSPENDED",
            FlowState::Waiting => "WAITING",
        }
    }

    /// Whether the flow has ended: SUCCESS, REVERTED or FAILURE. An unfinished run can be
    /// resumed.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            FlowState::Success | FlowState::Reverted | FlowState::Failure
        )
    }
}

/// One state transition of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The run's id.
    pub run_id: String,
    /// The flow's name.
    pub flow: String,
    /// When the transition happened.
    pub at: SystemTime,
    /// What changed.
    pub transition: Transition,
}

/// What changed in an [`Event`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one event per transition, handed to listeners by reference"
)]
pub enum Transition {
    /// The flow changed state.
    Flow {
        /// Previous state.
        from: FlowState,
        /// New state.
        to: FlowState,
        /// Time since the run started.
        elapsed: Duration,
        /// The final store, on entering SUCCESS, REVERTED or FAILURE.
        #[serde(skip_serializing_if = "Option::is_none")]
        store: Option<Store>,
    },
    /// A task changed state.
    Task {
        /// The task entry's name.
        task: String,
        /// Its position in the flow, from 0.
        index: usize,
        /// Previous state.
        from: TaskState,
        /// New state.
        to: TaskState,
        /// Time spent in the previous state (e.g. how long `execute` took).
        duration: Duration,
        /// The result, on entering SUCCESS; what `revert` returned, on entering REVERTED
        /// (contract 0.2).
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// The error, on entering FAILURE or REVERT_FAILURE.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<TaskError>,
        /// The arguments (a JSON object's text), on entering RUNNING: what `revert` will get.
        #[serde(skip_serializing_if = "Option::is_none")]
        args: Option<String>,
        /// The raw outcome `revert` will get, on entering SUCCESS, FAILURE or RETRYING.
        #[serde(skip_serializing_if = "Option::is_none")]
        outcome: Option<Outcome>,
        /// Which execution of the task this transition belongs to, from 1 (0 before the
        /// first): more than one when its retry policy tried again.
        attempt: u32,
        /// When the next attempt is due, on entering RETRYING; on entering WAITING, when the
        /// wait ends (a timer's due time, a signal wait's timeout).
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_at: Option<SystemTime>,
        /// Inside subflows with a retry controller: each controller's iteration, from 1,
        /// outermost first. Empty elsewhere.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        iterations: Vec<u32>,
        /// Inside a map: the element (from 0) whose iteration this transition belongs to.
        /// Each element's tasks have their own record; without it the transition is the
        /// task's as a whole.
        #[serde(skip_serializing_if = "Option::is_none")]
        element: Option<u32>,
    },
    /// A running task reported how far it has come (contract 0.2's `progress`). Not a state
    /// change: listeners hear of it as it happens; the journal records the last one of each
    /// call with the task's next transition.
    Progress {
        /// The task entry's name.
        task: String,
        /// Its position in the flow, from 0.
        index: usize,
        /// What it reported.
        progress: Progress,
    },
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transition::Flow { from, to, .. } => write!(f, "flow {from} -> {to}"),
            Transition::Task { task, from, to, .. } => write!(f, "task `{task}` {from} -> {to}"),
            Transition::Progress { task, progress, .. } => {
                write!(
                    f,
                    "task `{task}` progress {:.0}%",
                    progress.fraction * 100.0
                )
            }
        }
    }
}

/// Receives every transition of the runs it is registered with, after the run's journal
/// recorded it. Called synchronously, in order, before the run moves on. A listener is an
/// observer: one that errors or panics is logged and skipped; it never breaks the run.
pub trait Listener: Send + Sync {
    /// Handles one event.
    fn on_event(&self, event: &Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Hands an event to each listener, containing their errors and panics.
pub fn notify(listeners: &[Arc<dyn Listener>], event: &Event) {
    for listener in listeners {
        match catch_unwind(AssertUnwindSafe(|| listener.on_event(event))) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(run = %event.run_id, "listener failed: {error}"),
            Err(_) => {
                tracing::warn!(run = %event.run_id, "listener panicked; event skipped for it")
            }
        }
    }
}

/// One log line per transition, in the spirit of TaskFlow's `DynamicLoggingListener`:
/// task name, old → new state, duration; failures (with the error's `details`) and reverts
/// at WARN. Results go to DEBUG only: they may hold secrets, and INFO lands in every log.
/// The run's id is not repeated per line: the engine logs each run inside a `run` span
/// carrying it, so subscribers show it with every line of the run, the plugins' included.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogListener;

impl Listener for LogListener {
    fn on_event(&self, event: &Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match &event.transition {
            Transition::Flow {
                from, to, elapsed, ..
            } => {
                let took = match to {
                    FlowState::Pending | FlowState::Running | FlowState::Reverting => String::new(),
                    _ => format!(" in {}", millis(*elapsed)),
                };
                let line = format!("flow `{}` {from} -> {to}{took}", event.flow);
                match to {
                    FlowState::Reverting | FlowState::Reverted | FlowState::Failure => {
                        tracing::warn!("{line}")
                    }
                    _ => tracing::info!("{line}"),
                }
            }
            Transition::Task {
                task,
                from,
                to,
                duration,
                result,
                error,
                attempt,
                retry_at,
                iterations,
                element,
                ..
            } => {
                // Time spent is worth reading only for work done: execute and revert.
                let took = match from {
                    TaskState::Running | TaskState::Reverting => {
                        format!(" ({})", millis(*duration))
                    }
                    _ => String::new(),
                };
                let retry = match retry_at {
                    _ if *to == TaskState::Waiting => waiting_for(result.as_ref(), *retry_at),
                    Some(due) => format!(
                        " (attempt {attempt} failed; attempt {} in {})",
                        attempt + 1,
                        millis(due.duration_since(event.at).unwrap_or_default())
                    ),
                    None if *to == TaskState::Running && *attempt > 1 => {
                        format!(" (attempt {attempt})")
                    }
                    None => String::new(),
                };
                let iteration = match (element, iterations.last()) {
                    (Some(element), _) => format!(" (element {element})"),
                    (None, Some(n)) if *to == TaskState::Running || *to == TaskState::Pending => {
                        format!(" (iteration {n})")
                    }
                    _ => String::new(),
                };
                // Why a task was ignored is the flow's, not the task's: safe at INFO.
                let ignored = match (to, result) {
                    (TaskState::Ignore, Some(why)) => {
                        match (why["when"].as_str(), why["ignored_with"].as_str()) {
                            (Some(when), _) => format!(" (when `{when}` is false)"),
                            (None, Some(with)) => format!(" (it needs `{with}`, which is IGNORE)"),
                            _ => String::new(),
                        }
                    }
                    _ => String::new(),
                };
                let line = format!("task `{task}` {from} -> {to}{took}{retry}{iteration}{ignored}");
                match (to, error) {
                    (_, Some(error)) => match &error.details {
                        Some(details) => tracing::warn!("{line}: {error} (details: {details})"),
                        None => tracing::warn!("{line}: {error}"),
                    },
                    (TaskState::Reverting | TaskState::Reverted | TaskState::Retrying, _) => {
                        tracing::warn!("{line}")
                    }
                    _ => tracing::info!("{line}"),
                }
                if let Some(result) = result.as_ref().filter(|_| *to != TaskState::Ignore) {
                    tracing::debug!("task `{task}` result: {}", preview(result));
                }
            }
            Transition::Progress { progress, .. } => match &progress.details {
                Some(details) => tracing::info!("{} ({})", event.transition, preview(details)),
                None => tracing::info!("{}", event.transition),
            },
        }
        Ok(())
    }
}

/// What a task entering WAITING waits for, for its log line: ` (signal `approved`, until
/// …)`; the transition's result names the signal (see `flowhost_engine`'s waits).
fn waiting_for(result: Option<&Value>, due: Option<SystemTime>) -> String {
    let signal = result.and_then(|r| r["signal"].as_str());
    let due = due.map(crate::flow::format_rfc3339);
    match (signal, due) {
        (Some(name), Some(due)) => format!(" (signal `{name}`, until {due})"),
        (Some(name), None) => format!(" (signal `{name}`)"),
        (None, Some(due)) => format!(" (until {due})"),
        (None, None) => String::new(),
    }
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A result shortened for one log line.
fn preview(value: &Value) -> String {
    const MAX: usize = 200;
    let text = value.to_string();
    if text.len() <= MAX {
        return text;
    }
    let cut = (0..=MAX)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}… ({} bytes)", &text[..cut], text.len())
}
