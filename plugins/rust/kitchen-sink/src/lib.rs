//! The kitchen-sink task in Rust: appends its stamp to a ledger.
//!
//! It exercises every part of the flowhost task contract (0.2): required and optional
//! arguments, config, a result stored in the flow's store, error codes with details, log lines
//! on stderr, structured logs, progress, the invocation, and revert with a result. The same task exists in Python, JavaScript, C, Go and C++ (see
//! plugins/README.md); `flowhost_guest` turns malformed arguments and config into
//! `invalid-args` / `invalid-config` task-errors.

use flowhost_guest::{FlowFailure, Level, Outcome, Task, TaskError, TaskInfo, export_task, invocation, log, progress};
use serde::Deserialize;
use serde_json::json;

/// The arguments: the ledger so far and an optional note for this entry.
#[derive(Deserialize)]
struct Args {
    ledger: Vec<String>,
    note: Option<String>,
}

/// The task entry's config: the stamp to append, and whether to fail on purpose.
#[derive(Deserialize)]
struct Config {
    stamp: String,
    #[serde(default)]
    fail: bool,
}

impl Config {
    fn stamp(&self) -> Result<&str, TaskError> {
        if self.stamp.is_empty() {
            return Err(TaskError::new("invalid-config", "config `stamp` must be a non-empty string"));
        }
        Ok(&self.stamp)
    }
}

struct Stamp;

impl Task for Stamp {
    type Args = Args;
    type Config = Config;
    type Output = Vec<String>;

    fn info() -> TaskInfo {
        TaskInfo::new("stamp", env!("CARGO_PKG_VERSION"))
            .description("Appends its stamp to a ledger (kitchen-sink task, Rust)")
            .requires(["ledger"])
            .optional(["note"])
            .provides(["stamped"])
    }

    fn execute(args: Args, config: Config) -> Result<Vec<String>, TaskError> {
        let stamp = config.stamp()?;
        eprintln!("stamp {stamp} (rust): ledger of {} entries", args.ledger.len());
        let call = invocation();
        let entries = args.ledger.len().to_string();
        log(Level::Info, "stamping", &[("stamp", stamp), ("entries", &entries), ("run", &call.run_id)]);
        progress(0.5, Some(json!({ "stamp": stamp })));
        if config.fail {
            return Err(TaskError::new("asked-to-fail", "config `fail` is set: failing on purpose")
                .with_details(json!({ "stamp": stamp })));
        }
        let entry = match &args.note {
            Some(note) => format!("{stamp} ({note})"),
            None => stamp.to_owned(),
        };
        let mut ledger = args.ledger;
        ledger.push(entry);
        Ok(ledger)
    }

    fn revert_with_result(
        _args: Args,
        config: Config,
        outcome: Outcome<Vec<String>>,
        failures: Vec<FlowFailure>,
    ) -> Result<Option<serde_json::Value>, TaskError> {
        let stamp = match config.stamp() {
            Ok(stamp) => stamp,
            // execute got the same config, so it failed right there: nothing to undo.
            Err(rejected) => {
                eprintln!("stamp (rust): nothing to revert: {}", rejected.message);
                return Ok(None);
            }
        };
        let ended = match outcome {
            Outcome::Success(_) => "a result".to_owned(),
            Outcome::Failure(error) => format!("error {}", error.code),
        };
        let causes: Vec<String> = failures.iter().map(|f| format!("{}: {}", f.task, f.error.code)).collect();
        let causes = if causes.is_empty() { "none".to_owned() } else { causes.join(", ") };
        eprintln!("stamp {stamp} (rust): reverted after {ended}; flow failures: {causes}");
        Ok(Some(json!({ "unstamped": stamp })))
    }
}

export_task!(Stamp);
