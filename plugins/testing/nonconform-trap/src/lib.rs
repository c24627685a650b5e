//! Conformance fixture: trusts its input. Malformed arguments make it panic (a trap) where
//! the contract asks for an `invalid-args` task-error.

use flowhost_guest::bindings::exports::flowhost::task::task::{
    FlowFailure, Guest, Outcome, TaskError, TaskInfo,
};
use serde_json::Value;

struct Trusting;

impl Guest for Trusting {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: "double".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Doubles `n`, unwrapping whatever it is given.".into(),
            requires: vec!["n".into()],
            optional: vec![],
            provides: vec!["doubled".into()],
        }
    }

    fn execute(args: String, _config: String) -> Result<String, TaskError> {
        let args: Value = serde_json::from_str(&args).unwrap();
        let n = args["n"].as_u64().expect("n must be a number");
        Ok((n * 2).to_string())
    }

    fn revert(_: String, _: String, _: Outcome, _: Vec<FlowFailure>) -> Result<Option<String>, TaskError> {
        Ok(None)
    }
}

flowhost_guest::bindings::export!(Trusting with_types_in flowhost_guest::bindings);
