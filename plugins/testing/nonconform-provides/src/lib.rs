//! Conformance fixture: declares that it provides `volume` and `reservation` but returns an
//! object holding only `volume`.

use flowhost_guest::{Task, TaskError, TaskInfo, export_task};
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    size: u64,
}

struct HalfDone;

impl Task for HalfDone {
    type Args = Args;
    type Config = Map<String, Value>;
    type Output = Value;

    fn info() -> TaskInfo {
        TaskInfo::new("reserve_volume", env!("CARGO_PKG_VERSION"))
            .description("Reserves a volume but forgets to return the reservation.")
            .requires(["size"])
            .provides(["volume", "reservation"])
    }

    fn execute(args: Args, _: Map<String, Value>) -> Result<Value, TaskError> {
        Ok(json!({ "volume": { "size": args.size } }))
    }
}

export_task!(HalfDone);
