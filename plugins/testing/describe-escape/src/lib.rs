//! Hostile fixture: its declaration and its error carry a clear-screen escape sequence and a
//! newline followed by text shaped like a log line, to forge what an operator reads.

use flowhost_guest::bindings::exports::flowhost::task::task::{
    FlowFailure, Guest, Outcome, TaskError, TaskInfo,
};

/// Clears the screen, then starts a line that looks like flowhost's own.
const FORGED: &str = "\x1b[2J\nFAKE LOG LINE";

struct Forger;

impl Guest for Forger {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: format!("forger{FORGED}"),
            version: "1.0.0\x1b[31m".into(),
            description: format!("looks harmless{FORGED}"),
            requires: vec![],
            optional: vec![],
            provides: vec!["forged".into()],
        }
    }

    fn execute(_args: String, _config: String) -> Result<String, TaskError> {
        print!("out{FORGED}\n");
        Err(TaskError {
            code: format!("bad{FORGED}"),
            message: format!("failed{FORGED}"),
            details: None,
        })
    }

    fn revert(_: String, _: String, _: Outcome, _: Vec<FlowFailure>) -> Result<Option<String>, TaskError> {
        Ok(None)
    }
}

flowhost_guest::bindings::export!(Forger with_types_in flowhost_guest::bindings);
