//! The call journal at `/journal/calls.jsonl`: one JSON line per call, so a test can check
//! which calls happened, in which order, with what.

use std::fs::OpenOptions;
use std::io::Write;

use flowhost_guest::bindings::exports::flowhost::task::task::{FlowFailure, Outcome, TaskError};
use serde_json::{Value, json};

use crate::error;

const PATH: &str = "/journal/calls.jsonl";

/// Appends `entry` as one line, in a single write so concurrent probes never interleave.
pub fn append(entry: &Value) -> Result<(), TaskError> {
    let line = format!("{entry}\n");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(PATH)
        .and_then(|mut file| file.write_all(line.as_bytes()))
        .map_err(|e| error("io", format!("{PATH}: {e}")))
}

/// `text` parsed as JSON, or as a string when it is not JSON.
pub fn json_or_raw(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()))
}

pub fn outcome(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Result(text) => json!({ "result": json_or_raw(text) }),
        Outcome::Error(e) => json!({ "error": { "code": e.code, "message": e.message } }),
    }
}

pub fn failures(failures: &[FlowFailure]) -> Value {
    failures
        .iter()
        .map(|f| json!({ "task": f.task, "code": f.error.code, "message": f.error.message }))
        .collect()
}

/// Counts one more call of the probe labelled `label` in `/journal/<label>.calls` and
/// returns the count, this call included.
pub fn count_call(label: &str) -> Result<u64, TaskError> {
    let path = format!("/journal/{label}.calls");
    let seen: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    std::fs::write(&path, (seen + 1).to_string())
        .map_err(|e| error("io", format!("{path}: {e}")))?;
    Ok(seen + 1)
}
