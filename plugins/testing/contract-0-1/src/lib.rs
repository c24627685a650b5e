//! Fixture: a task built against contract 0.1 (`wit/v0.1/task.wit`), without the guest
//! helper (which speaks 0.2): a plugin built before 0.2 must still run. It doubles `n`,
//! and fails on purpose when `n` is negative, so that a flow reverts it.

wit_bindgen::generate!({
    path: "../../../wit/v0.1",
    world: "plugin",
});

use exports::flowhost::task::task::{FlowFailure, Guest, Outcome, TaskError, TaskInfo};

struct Doubler;

impl Guest for Doubler {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: "double_v01".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Doubles `n` (contract 0.1).".into(),
            requires: vec!["n".into()],
            optional: vec![],
            provides: vec!["doubled".into()],
        }
    }

    fn execute(args: String, _config: String) -> Result<String, TaskError> {
        let invalid = |message: String| TaskError { code: "invalid-args".into(), message, details: None };
        let args: serde_json::Value =
            serde_json::from_str(&args).map_err(|e| invalid(format!("arguments are not JSON: {e}")))?;
        let n = args.get("n").and_then(serde_json::Value::as_i64).ok_or_else(|| invalid("`n` must be an integer".into()))?;
        if n < 0 {
            return Err(TaskError { code: "negative".into(), message: format!("{n} is negative"), details: None });
        }
        Ok((n * 2).to_string())
    }

    fn revert(_: String, _: String, _: Outcome, _: Vec<FlowFailure>) -> Result<(), TaskError> {
        eprintln!("double_v01: reverted");
        Ok(())
    }
}

export!(Doubler);
