//! The event stream's payloads: one JSON object per transition, the same whether it comes
//! live from the engine or is read back from the run database. Store values (arguments,
//! results) are never in it: a stream is readable without the token.

use std::time::SystemTime;

use serde_json::{Value, json};

use flowhost_core::contract::TaskError;
use flowhost_core::events::{Event, Transition};
use flowhost_runs::RunRecord;

/// A transition as the stream sends it: `{kind: "flow", from, to, at, duration_ms}` or
/// `{kind: "task", task, index, from, to, at, duration_ms, error?}`. None for a task's
/// progress: the stream numbers transitions so that a client reconnecting after the run
/// ended reads the same numbers from the run database, which keeps no progress history.
pub(crate) fn payload(event: &Event) -> Option<Value> {
    let at = timestamp(event.at);
    match &event.transition {
        Transition::Flow {
            from, to, elapsed, ..
        } => Some(
            json!({ "kind": "flow", "from": from, "to": to, "at": at, "duration_ms": elapsed.as_secs_f64() * 1000.0 }),
        ),
        Transition::Task {
            task,
            index,
            from,
            to,
            duration,
            error,
            ..
        } => {
            let mut payload = json!({
                "kind": "task", "task": task, "index": index, "from": from, "to": to, "at": at,
                "duration_ms": duration.as_secs_f64() * 1000.0,
            });
            if let Some(error) = error {
                payload["error"] = shown(error);
            }
            Some(payload)
        }
        Transition::Progress { .. } => None,
    }
}

/// An error as a stream shows it: its code and message; its details are the plugin's and
/// may hold anything.
fn shown(error: &TaskError) -> Value {
    json!({ "code": error.code, "message": error.message })
}

/// The run database's time format: UTC, ISO 8601, milliseconds.
fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// The task transitions of a recorded run, in the order they happened, skipping the first
/// `sent[i]` of task `i` (already sent); `sent` is updated.
///
/// The record keeps each task's history apart, with millisecond times, so two transitions
/// of different tasks may share a time. They are then put in the order the engine makes
/// them: a task's own transitions in their order, executing work (up to SUCCESS or FAILURE)
/// before reverting work, executing in flow order, reverting in reverse flow order.
pub(crate) fn recorded(record: &RunRecord, sent: &mut Vec<usize>) -> Vec<Value> {
    sent.resize(record.tasks.len(), 0);
    let mut events = Vec::new();
    for task in &record.tasks {
        for (step, change) in task.history.iter().enumerate().skip(sent[task.index]) {
            let reverting = matches!(
                change.to.as_str(),
                "REVERTING" | "REVERTED" | "REVERT_FAILURE"
            );
            let order = if reverting {
                -(task.index as i64)
            } else {
                task.index as i64
            };
            let mut payload = json!({
                "kind": "task", "task": task.name, "index": task.index, "from": change.from, "to": change.to,
                "at": change.at, "duration_ms": change.duration_ms,
            });
            let error = match change.to.as_str() {
                "FAILURE" => task.error.as_ref(),
                "REVERT_FAILURE" => task.revert_error.as_ref(),
                _ => None,
            };
            if let Some(error) = error {
                payload["error"] = shown(error);
            }
            events.push(((change.at.clone(), reverting, order, step), payload));
        }
        sent[task.index] = task.history.len();
    }
    events.sort_by(|a, b| a.0.cmp(&b.0));
    events.into_iter().map(|(_, payload)| payload).collect()
}
