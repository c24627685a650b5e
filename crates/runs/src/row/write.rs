//! The write side of the row code: one transition as the values its statements bind, states
//! named and JSON serialised by the run that recorded it, before any connection is taken.
//! Separate from the read side because it is the journal's hot path, which only the
//! backends' journals call.

use flowhost_core::events::{Event, FlowState, TaskState, Transition};

use super::{json, millis, seconds};

/// One transition, ready to be written: every value the statements bind, owned.
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived value per transition, written and dropped"
)]
#[allow(
    missing_docs,
    reason = "the values the statements bind, named after the columns they fill"
)]
pub enum Write {
    /// A flow transition: the run's row and a transitions row.
    Flow {
        run_id: String,
        from: &'static str,
        to: &'static str,
        at: f64,
        elapsed_ms: f64,
        ended: bool,
        final_store: Option<String>,
        reason: Option<&'static str>,
    },
    /// A task transition: the task's row and a transitions row.
    Task {
        run_id: String,
        index: i64,
        task: String,
        from: &'static str,
        to: &'static str,
        at: f64,
        duration_ms: f64,
        args: Option<String>,
        outcome: Option<String>,
        result: Option<String>,
        revert_result: Option<String>,
        error: Option<String>,
        revert_error: Option<String>,
        run_ms: Option<f64>,
        revert_ms: Option<f64>,
        /// A line for the run's exit reason, when the transition is a failure.
        reason: Option<String>,
        attempt: u32,
        /// The error the transition carries, whichever call it came from.
        carried: Option<String>,
        /// Unix seconds, on RETRYING.
        retry_at: Option<f64>,
        /// The pause until `retry_at`, in milliseconds.
        backoff_ms: Option<f64>,
        /// Subflow controllers' iterations (JSON array), inside subflows with one.
        iterations: Option<String>,
        /// Inside a map: the element whose call this is; the element's row is written
        /// instead of the task's.
        element: Option<i64>,
    },
    /// A task's last progress report.
    Progress {
        run_id: String,
        index: i64,
        progress: String,
    },
}

impl Write {
    /// Prepares `event`'s write: states named, JSON serialised.
    pub fn of(event: &Event) -> Self {
        let at = seconds(event.at);
        let run_id = event.run_id.clone();
        match &event.transition {
            Transition::Flow {
                from,
                to,
                elapsed,
                store,
            } => Write::Flow {
                run_id,
                from: from.as_str(),
                to: to.as_str(),
                at,
                elapsed_ms: millis(*elapsed),
                ended: to.is_finished(),
                final_store: store.as_ref().map(json),
                reason: match to {
                    FlowState::Success => Some("every task succeeded"),
                    FlowState::Reverted => Some("a task failed; every task was reverted"),
                    FlowState::Failure => Some("a task failed and a revert failed"),
                    _ => None,
                },
            },
            Transition::Task {
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
                element,
            } => {
                let carried = error.as_ref().map(json);
                let (error, revert_error) = match to {
                    TaskState::RevertFailure => (None, error.as_ref()),
                    _ => (error.as_ref(), None),
                };
                let (run_ms, revert_ms) = match from {
                    TaskState::Running => (Some(millis(*duration)), None),
                    TaskState::Reverting => (None, Some(millis(*duration))),
                    _ => (None, None),
                };
                // On REVERTED, the result is the revert's.
                let (result, revert_result) = match to {
                    TaskState::Reverted => (None, result.as_ref()),
                    _ => (result.as_ref(), None),
                };
                // A map's element call fails its task as a whole, whose transition says so.
                let reason = match (to, error, revert_error) {
                    _ if element.is_some() => None,
                    (TaskState::Failure, Some(e), _) => Some(format!("task `{task}` failed: {e}")),
                    (_, _, Some(e)) => Some(format!("revert of task `{task}` failed: {e}")),
                    _ => None,
                };
                Write::Task {
                    run_id,
                    index: *index as i64,
                    task: task.clone(),
                    from: from.as_str(),
                    to: to.as_str(),
                    at,
                    duration_ms: millis(*duration),
                    args: args.clone(),
                    outcome: outcome.as_ref().map(json),
                    result: result.map(json),
                    revert_result: revert_result.map(json),
                    error: error.map(json),
                    revert_error: revert_error.map(json),
                    run_ms,
                    revert_ms,
                    reason,
                    attempt: *attempt,
                    carried,
                    retry_at: retry_at.map(seconds),
                    backoff_ms: retry_at
                        .map(|due| millis(due.duration_since(event.at).unwrap_or_default())),
                    iterations: (!iterations.is_empty()).then(|| json(iterations)),
                    element: element.map(i64::from),
                }
            }
            Transition::Progress {
                index, progress, ..
            } => Write::Progress {
                run_id,
                index: *index as i64,
                progress: json(progress),
            },
        }
    }
}
