//! Conformance fixture: creates a file named after its argument and deletes it on revert,
//! failing when the file is already gone. A second revert of the same outcome (which the
//! host may do after a crash) therefore fails: the revert is not idempotent.

use flowhost_guest::{FlowFailure, Outcome, Task, TaskError, TaskInfo, export_task};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    name: String,
}

fn marker(name: &str) -> String {
    format!("/scratch/{name}")
}

struct CreateMarker;

impl Task for CreateMarker {
    type Args = Args;
    type Config = Map<String, Value>;
    type Output = String;

    fn info() -> TaskInfo {
        TaskInfo::new("create_marker", env!("CARGO_PKG_VERSION"))
            .description("Creates /scratch/<name>; revert deletes it.")
            .requires(["name"])
            .provides(["marker"])
    }

    fn execute(args: Args, _: Map<String, Value>) -> Result<String, TaskError> {
        let path = marker(&args.name);
        std::fs::write(&path, b"created")
            .map_err(|e| TaskError::new("io", format!("cannot create {path}: {e}")))?;
        Ok(path)
    }

    fn revert(
        args: Args,
        _: Map<String, Value>,
        _: Outcome<String>,
        _: Vec<FlowFailure>,
    ) -> Result<(), TaskError> {
        let path = marker(&args.name);
        std::fs::remove_file(&path)
            .map_err(|e| TaskError::new("io", format!("cannot delete {path}: {e}")))
    }
}

export_task!(CreateMarker);
