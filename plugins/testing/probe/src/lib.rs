//! `probe`: a test task whose every behaviour, from a plain echo to traps, runaway loops and
//! resource abuse, is chosen by its config, so integration tests and the fault matrix need
//! one plugin rather than one per case. Written against the raw bindings so it can return
//! anything, including invalid JSON.

mod config;
mod faults;
mod journal;

use flowhost_guest::bindings::exports::flowhost::task::task::{
    FlowFailure, Guest, Outcome, TaskError, TaskInfo,
};
use flowhost_guest::bindings::flowhost::task::host;
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

use config::{Config, Phase};

fn error(code: &str, message: impl Into<String>) -> TaskError {
    TaskError {
        code: code.into(),
        message: message.into(),
        details: None,
    }
}

/// The arguments object, which must hold `value` and may hold `extra`.
fn parse_args(args: &str) -> Result<Map<String, Value>, TaskError> {
    match serde_json::from_str(args) {
        Ok(Value::Object(map)) if map.contains_key("value") => Ok(map),
        Ok(_) => Err(error(
            "invalid-args",
            "arguments must be an object holding `value`",
        )),
        Err(e) => Err(error(
            "invalid-args",
            format!("arguments are not JSON: {e}"),
        )),
    }
}

/// Reports the configured progress and log record of one call (contract 0.2's `host`).
fn report(config: &Config, call: &str) {
    for (step, fraction) in config.progress.iter().enumerate() {
        host::progress(*fraction, Some(&json!({ "step": step, "call": call }).to_string()));
    }
    if let Some(message) = &config.log {
        let fields = [("label".to_owned(), config.label().to_owned()), ("call".to_owned(), call.to_owned())];
        host::log(host::Level::Warn, message, &fields);
    }
}

struct Probe;

/// `execute` calls this instance has served; only a reused instance counts past one.
static CALLS: AtomicU64 = AtomicU64::new(0);

impl Guest for Probe {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: "probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Echoes its arguments or misbehaves on request; for testing the host."
                .into(),
            requires: vec!["value".into()],
            optional: vec!["extra".into()],
            provides: vec!["echo".into()],
        }
    }

    /// Journals, then applies (in this order) a fault, `fail`, `raw_result`, else echoes
    /// `{value, extra?, label}`. Faults come first so that e.g. `wait_file` + `fail` fails at
    /// a moment the test chooses.
    fn execute(args: String, config: String) -> Result<String, TaskError> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let config = Config::parse(&config)?;
        eprintln!("probe {}: execute", config.label());
        if config.journal {
            journal::append(&json!({
                "call": "execute",
                "label": config.label,
                "args": journal::json_or_raw(&args),
            }))?;
        }
        let mut args = parse_args(&args)?;
        report(&config, "execute");
        if config.mode_in == Phase::Execute
            && let Some(result) = faults::apply(&config)?
        {
            return Ok(result);
        }
        let failing = match config.fail_times {
            0 => true,
            times => journal::count_call(config.label())? <= times,
        };
        if let Some(code) = config.fail.filter(|_| failing) {
            let details = json!({ "label": config.label }).to_string();
            return Err(TaskError {
                details: Some(details),
                ..error(&code, config.message.as_deref().unwrap_or("probe was told to fail"))
            });
        }
        if let Some(raw) = config.raw_result {
            return Ok(raw);
        }
        let mut echo = Map::new();
        echo.insert("value".into(), args.remove("value").unwrap_or_default());
        if let Some(extra) = args.remove("extra") {
            echo.insert("extra".into(), extra);
        }
        echo.insert("label".into(), config.label.into());
        if config.calls {
            echo.insert("calls".into(), calls.into());
        }
        if config.invocation {
            let call = host::invocation();
            let call = json!({ "run_id": call.run_id, "task": call.task, "attempt": call.attempt });
            echo.insert("invocation".into(), call);
        }
        Ok(Value::Object(echo).to_string())
    }

    /// Journals, then applies a fault if `mode_in` is `revert`, then `fail_revert`.
    fn revert(
        args: String,
        config: String,
        outcome: Outcome,
        failures: Vec<FlowFailure>,
    ) -> Result<Option<String>, TaskError> {
        let config = Config::parse(&config)?;
        eprintln!("probe {}: revert", config.label());
        report(&config, "revert");
        if config.journal {
            journal::append(&json!({
                "call": "revert",
                "label": config.label,
                "args": journal::json_or_raw(&args),
                "outcome": journal::outcome(&outcome),
                "failures": journal::failures(&failures),
            }))?;
        }
        if config.mode_in == Phase::Revert {
            faults::apply(&config)?;
        }
        match config.fail_revert {
            Some(code) => Err(error(&code, "probe was told to fail its revert")),
            None => Ok(config.revert_result.map(|v| v.to_string())),
        }
    }
}

flowhost_guest::bindings::export!(Probe with_types_in flowhost_guest::bindings);
