//! Row code both run databases share: a transition turned into the values their statements
//! bind ([`Write`]), and the encodings of times, durations and JSON columns. The SQL differs
//! per backend; what is written does not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowhost_core::events::{Event, FlowState, TaskState, Transition};

/// Unix seconds, as the databases store times.
pub fn seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Milliseconds, as the databases store durations.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A JSON column's text (`null` for a value that cannot be serialised, which values built
/// from JSON never are).
pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

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
                let reason = match (to, error, revert_error) {
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

/// The select-list text reading JSON column `column` only when its text is at most `bound`
/// bytes (a bind parameter, such as `?2` or `$2::bigint`; NULL reads it whatever its
/// length), followed by its length. `octet_length` is answered from the row's header in
/// SQLite and from the TOAST pointer in PostgreSQL: a value left out is never read.
pub fn bounded(column: &str, bound: &str) -> String {
    format!(
        "CASE WHEN {bound} IS NULL OR octet_length({column}) <= {bound} THEN {column} END, CAST(octet_length({column}) AS BIGINT)"
    )
}

/// A value read through [`bounded`]: the text, or `None` — noted in `omitted` as `name`
/// when it exists but was longer than the bound.
pub fn unbounded(
    text: Option<String>,
    bytes: Option<i64>,
    name: impl FnOnce() -> String,
    omitted: &mut Vec<crate::Omitted>,
) -> Option<String> {
    if text.is_none()
        && let Some(bytes) = bytes
    {
        omitted.push(crate::Omitted {
            value: name(),
            bytes: u64::try_from(bytes).unwrap_or_default(),
        });
    }
    text
}
