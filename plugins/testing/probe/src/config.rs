//! The probe's config: every field optional, unknown fields rejected so a typo in a test's
//! flow fails loudly instead of silently echoing.

use flowhost_guest::bindings::exports::flowhost::task::task::TaskError;
use serde::Deserialize;
use serde_json::Value;

use crate::error;

/// Which call a fault (`trap`, `panic`, `mode`) strikes in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Execute,
    Revert,
}

/// Ways to misbehave or touch the outside world; see [`crate::faults::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Loop,
    Grow,
    Recurse,
    Huge,
    ReadFile,
    WriteFile,
    Env,
    Tcp,
    Sleep,
    WaitFile,
    /// Open `path` `n` times, keeping every file open.
    OpenMany,
    /// Write `n` bytes to stdout, then `n` to stderr with `eprintln!`.
    Flood,
    /// Call `exit(n)`.
    Exit,
    /// Print `content` to stdout and to stderr.
    Print,
    /// Replace whatever is at `path` with a symlink to `content`.
    Symlink,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Names this probe in its output, journal and stderr.
    pub label: Option<String>,
    /// Append every call to `/journal/calls.jsonl`.
    pub journal: bool,
    /// Fail execute with this error code.
    pub fail: Option<String>,
    /// With `fail`: fail only the first `fail_times` calls, then go on as if `fail` were
    /// unset. Calls are counted in `/journal/<label>.calls`, so the count survives fresh
    /// instances and processes (grant `/journal` read-write).
    pub fail_times: u64,
    /// The message of the `fail` error, instead of the stock one.
    pub message: Option<String>,
    /// Fail revert with this error code.
    pub fail_revert: Option<String>,
    /// Trap with `unreachable`.
    pub trap: bool,
    /// Panic with this message.
    pub panic: Option<String>,
    /// Return this text verbatim from execute, valid JSON or not.
    pub raw_result: Option<String>,
    pub mode: Option<Mode>,
    pub mode_in: Phase,
    /// File for `read_file`, `write_file` and `wait_file`.
    pub path: Option<String>,
    /// Text for `write_file`.
    pub content: Option<String>,
    /// Variable for `env`.
    pub name: Option<String>,
    /// `host:port` for `tcp`.
    pub addr: Option<String>,
    /// Milliseconds for `sleep`.
    pub ms: u64,
    /// Count for `open_many`, bytes for `flood`, status for `exit`.
    pub n: u64,
    /// Add `calls` to the echo: how many `execute` calls this instance has served, which
    /// shows whether the host reused a warm instance.
    pub calls: bool,
    /// Add `invocation` to the echo: `{run_id, task, attempt}` as the host tells it
    /// (contract 0.2).
    pub invocation: bool,
    /// Report these fractions as progress, in order, in every call (contract 0.2); each with
    /// details `{"step": i}`.
    pub progress: Vec<f32>,
    /// Write one structured log record with this message in every call, with fields
    /// `label` and `call` (contract 0.2).
    pub log: Option<String>,
    /// Return this value, as JSON, from revert (contract 0.2's revert result).
    pub revert_result: Option<Value>,
}

impl Config {
    /// Parses the config, which must be a JSON object (serde alone would accept an array).
    pub fn parse(json: &str) -> Result<Self, TaskError> {
        let invalid =
            |e: &dyn std::fmt::Display| error("invalid-config", format!("config rejected: {e}"));
        match serde_json::from_str(json).map_err(|e| invalid(&e))? {
            value @ Value::Object(_) => serde_json::from_value(value).map_err(|e| invalid(&e)),
            _ => Err(invalid(&"not a JSON object")),
        }
    }

    /// The label for log lines, `-` when unset.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or("-")
    }

    /// A string parameter the chosen mode cannot do without.
    pub fn need<'a>(&self, value: &'a Option<String>, key: &str) -> Result<&'a str, TaskError> {
        value.as_deref().ok_or_else(|| {
            error(
                "invalid-config",
                format!("mode {:?} needs `{key}`", self.mode),
            )
        })
    }
}
