//! Conformance fixture: imports two interfaces (`vault`, `telemetry`) that the host does not
//! provide, so it cannot be linked.

wit_bindgen::generate!({
    path: ["../../../wit", "wit"],
    world: "fixture:nonconform-import/plugin",
});

use exports::flowhost::task::task::{FlowFailure, Guest, Outcome, TaskError, TaskInfo};
use fixture::nonconform_import::{telemetry, vault};

struct NeedsSecrets;

impl Guest for NeedsSecrets {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: "needs_secrets".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Reads a password from a vault the host does not have.".into(),
            requires: vec![],
            optional: vec![],
            provides: vec!["password".into()],
        }
    }

    fn execute(_args: String, _config: String) -> Result<String, TaskError> {
        telemetry::emit("execute");
        Ok(format!("{:?}", vault::get("password").unwrap_or_default()))
    }

    fn revert(_: String, _: String, _: Outcome, _: Vec<FlowFailure>) -> Result<Option<String>, TaskError> {
        telemetry::emit("revert");
        Ok(None)
    }
}

export!(NeedsSecrets);
