//! The contract's side of the host: the types that cross the WIT boundary (`wit/task.wit`)
//! and the codes of the errors the host raises about a task.
//!
//! This module is the leaf every other layer stands on — the engine, the runtime, the run
//! database and the conformance suite all speak of tasks in these words — so it depends on
//! nothing else of the crate.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The contract this host speaks (`wit/task.wit`): what new plugins export. Plugins of every
/// version in [`ACCEPTED_VERSIONS`] run as well.
pub const CONTRACT: &str = "flowhost:task/task@0.2.0";

/// The contract versions this host accepts, as `package@major.minor` prefixes of the export:
/// 0.1 (no revert result, no `host` import) and 0.2.
pub const ACCEPTED_VERSIONS: &[&str] = &["flowhost:task/task@0.1.", "flowhost:task/task@0.2."];

/// Whether a component's export name is the task interface at a version this host accepts.
pub fn accepts_export(export: &str) -> bool {
    ACCEPTED_VERSIONS
        .iter()
        .any(|prefix| export.starts_with(prefix))
}

/// What a plugin declares about itself through `describe()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The task's own name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// One line saying what it does.
    pub description: String,
    /// Argument names it needs.
    pub requires: Vec<String>,
    /// Argument names it takes when present.
    pub optional: Vec<String>,
    /// Names its result is stored under.
    pub provides: Vec<String>,
}

/// How a task's `execute` ended, as handed to its `revert`. Serialisable so that a run
/// database can keep it and a resumed run can still revert the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `execute` returned this JSON text.
    Result(String),
    /// `execute` failed.
    Error(TaskError),
}

/// How far a call has come, as a task reports it through the contract's `progress` import
/// (TaskFlow's `update_progress`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// From 0.0 to 1.0.
    pub fraction: f32,
    /// What the task said along with it (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Why a task failed or a revert failed: the contract's `task-error`, whether the task
/// returned it or the host produced it (see [`HostFault`]). Displayed with control
/// characters escaped ([`escape`]): a plugin's code and message are its own words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {}", escape(code), escape(message))]
pub struct TaskError {
    /// Machine-readable, kebab-case code.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Structured context, when the task or host gave any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl TaskError {
    /// The host's fault code this error carries, if it is one of the host's codes.
    pub fn host_fault(&self) -> Option<HostFault> {
        HostFault::from_code(&self.code)
    }
}

/// Every error the host itself raises about a task, with its code. One list, used by the
/// runtime (which raises them), the engine and the conformance suite (which must tell a
/// host's verdict from the plugin's own error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostFault {
    /// The instance trapped (`unreachable`, out-of-bounds access, a Rust panic).
    Trap,
    /// An exception of the plugin's language escaped the task (a Python `raise`, a
    /// JavaScript `throw new Error(…)`): the error names its type and message, and its
    /// `details` hold `{exception, message, language, traceback}`.
    UncaughtException,
    /// The call ran past its wall-clock deadline.
    DeadlineExceeded,
    /// The instance tried to grow its memory past its cap.
    MemoryLimit,
    /// The call burnt its fuel budget.
    FuelExhausted,
    /// The result was larger than the result cap.
    ResultTooLarge,
    /// The arguments were larger than the arguments cap; the task was not called.
    ArgsTooLarge,
    /// The result was not JSON.
    InvalidResult,
    /// The result lacked a provided name.
    MissingProvides,
    /// The store lacked a required name when the task was due (a resumed, edited run).
    MissingArguments,
    /// A granted directory could not be opened for the call.
    GrantUnavailable,
    /// The plugin called `exit` instead of returning.
    Exited,
    /// The instance held more WASI handles (open files, streams, …) than its cap.
    HandleLimit,
    /// The call sent more HTTP requests than `http_requests` allows.
    HttpRequestLimit,
    /// The call read more HTTP response bytes than `http_body_mib` allows.
    HttpBodyLimit,
    /// The host could not give the instance what it needs (memory, address space): the host's
    /// trouble, not the plugin's; retrying later may succeed.
    HostResources,
    /// Anything else that went wrong in the host around the call.
    HostError,
}

impl HostFault {
    /// Every host fault, for documentation and exhaustive checks.
    pub const ALL: [HostFault; 17] = [
        Self::Trap,
        Self::UncaughtException,
        Self::DeadlineExceeded,
        Self::MemoryLimit,
        Self::FuelExhausted,
        Self::ResultTooLarge,
        Self::ArgsTooLarge,
        Self::InvalidResult,
        Self::MissingProvides,
        Self::MissingArguments,
        Self::GrantUnavailable,
        Self::Exited,
        Self::HandleLimit,
        Self::HttpRequestLimit,
        Self::HttpBodyLimit,
        Self::HostResources,
        Self::HostError,
    ];

    /// The kebab-case code carried by the [`TaskError`].
    pub fn code(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::UncaughtException => "uncaught-exception",
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::MemoryLimit => "memory-limit",
            Self::FuelExhausted => "fuel-exhausted",
            Self::ResultTooLarge => "result-too-large",
            Self::ArgsTooLarge => "args-too-large",
            Self::InvalidResult => "invalid-result",
            Self::MissingProvides => "missing-provides",
            Self::MissingArguments => "missing-arguments",
            Self::GrantUnavailable => "grant-unavailable",
            Self::Exited => "exited",
            Self::HandleLimit => "handle-limit",
            Self::HttpRequestLimit => "http-request-limit",
            Self::HttpBodyLimit => "http-body-limit",
            Self::HostResources => "host-resources",
            Self::HostError => "host-error",
        }
    }

    /// The fault with this code, if the code is one of the host's.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|fault| fault.code() == code)
    }

    /// Whether the host ended the call against the plugin's will (it did not return): the
    /// conformance suite counts these as the plugin's failure to answer.
    pub fn stopped_by_host(self) -> bool {
        matches!(
            self,
            Self::Trap
                | Self::UncaughtException
                | Self::DeadlineExceeded
                | Self::MemoryLimit
                | Self::FuelExhausted
                | Self::ResultTooLarge
                | Self::Exited
                | Self::HandleLimit
                | Self::HostResources
                | Self::HostError
        )
    }

    /// Whether the fault is a configured limit being hit (deadline, memory, fuel, sizes,
    /// handles, HTTP requests and bodies).
    pub fn is_limit(self) -> bool {
        matches!(
            self,
            Self::DeadlineExceeded
                | Self::MemoryLimit
                | Self::FuelExhausted
                | Self::ResultTooLarge
                | Self::ArgsTooLarge
                | Self::HandleLimit
                | Self::HttpRequestLimit
                | Self::HttpBodyLimit
        )
    }

    /// A task error with this fault's code.
    pub fn error(self, message: impl Into<String>) -> TaskError {
        TaskError {
            code: self.code().to_owned(),
            message: message.into(),
            details: None,
        }
    }
}

impl fmt::Display for HostFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Plugin-provided text made safe to show on a terminal or in a log line: control
/// characters (newlines and escape sequences included), DEL, C1 controls (NEL, U+0085,
/// among them), the Unicode line and paragraph separators (U+2028, U+2029) and every
/// Unicode direction control (overrides, embeddings, isolates and the marks U+200E, U+200F,
/// U+061C) are written as escapes (`\n`, `\u{1b}`, `\u{2028}`), so a plugin can neither
/// forge a log line — in a terminal, or in a viewer that breaks lines at any Unicode line
/// separator —, nor move the cursor, clear the screen or reorder what is shown.
/// Everything else, backslashes included, is kept as is.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{2028}'
                    | '\u{2029}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{061c}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
            )
    }
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => shown.push_str("\\n"),
            '\r' => shown.push_str("\\r"),
            '\t' => shown.push_str("\\t"),
            c if unsafe_char(c) => shown.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => shown.push(c),
        }
    }
    std::borrow::Cow::Owned(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_text_is_shown_with_its_control_characters_escaped() {
        assert_eq!(escape("plain text, C:\\dir"), "plain text, C:\\dir");
        assert_eq!(
            escape("\u{1b}[2J\nFAKE LOG LINE\r\t"),
            "\\u{1b}[2J\\nFAKE LOG LINE\\r\\t"
        );
        assert_eq!(
            escape("a\u{202e}b\u{9b}c\u{7f}"),
            "a\\u{202e}b\\u{9b}c\\u{7f}"
        );
        assert_eq!(
            escape("a\u{2028}FAKE\u{2029}b\u{85}c\u{200f}d\u{61c}"),
            "a\\u{2028}FAKE\\u{2029}b\\u{85}c\\u{200f}d\\u{61c}"
        );
        let error = TaskError {
            code: "x\ny".into(),
            message: "\u{1b}[31mred".into(),
            details: None,
        };
        assert_eq!(error.to_string(), "x\\ny: \\u{1b}[31mred");
    }

    #[test]
    fn every_fault_code_reads_back_as_the_same_fault() {
        for fault in HostFault::ALL {
            assert_eq!(HostFault::from_code(fault.code()), Some(fault));
        }
        assert_eq!(
            HostFault::from_code("invalid-args"),
            None,
            "a plugin's own code is not the host's"
        );
    }

    #[test]
    fn only_the_contracts_minor_versions_are_accepted() {
        assert!(accepts_export("flowhost:task/task@0.1.0"));
        assert!(accepts_export("flowhost:task/task@0.1.7"));
        assert!(accepts_export("flowhost:task/task@0.2.0"));
        assert!(accepts_export("flowhost:task/task@0.2.3"));
        assert!(!accepts_export("flowhost:task/task@0.3.0"));
        assert!(!accepts_export("flowhost:task/task@1.0.0"));
    }
}
