//! Hostile fixture: `describe()` sleeps for an hour. The sleep waits in the host (a WASI
//! clock subscription), where no wasm runs, so only a host-side deadline can end it.

use flowhost_guest::bindings::exports::flowhost::task::task::{
    FlowFailure, Guest, Outcome, TaskError, TaskInfo,
};

struct Sleeper;

impl Guest for Sleeper {
    fn describe() -> TaskInfo {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        TaskInfo {
            name: "sleeper".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Never answers describe() in time.".into(),
            requires: vec![],
            optional: vec![],
            provides: vec!["never".into()],
        }
    }

    fn execute(_args: String, _config: String) -> Result<String, TaskError> {
        Ok("null".into())
    }

    fn revert(_: String, _: String, _: Outcome, _: Vec<FlowFailure>) -> Result<Option<String>, TaskError> {
        Ok(None)
    }
}

flowhost_guest::bindings::export!(Sleeper with_types_in flowhost_guest::bindings);
