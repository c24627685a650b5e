//! Conformance fixture: a task built against `flowhost:task@1.0.0`, a contract version this
//! host does not accept. `wit/task.wit` is `wit/task.wit` of the repository with the package
//! version changed.

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
});

use exports::flowhost::task::task::{FlowFailure, Guest, Outcome, TaskError, TaskInfo};

struct FromTheFuture;

impl Guest for FromTheFuture {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: "from_the_future".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Built against a newer contract.".into(),
            requires: vec![],
            optional: vec![],
            provides: vec!["answer".into()],
        }
    }

    fn execute(_args: String, _config: String) -> Result<String, TaskError> {
        Ok("42".into())
    }

    fn revert(_: String, _: String, _: Outcome, _: Vec<FlowFailure>) -> Result<(), TaskError> {
        Ok(())
    }
}

export!(FromTheFuture);
