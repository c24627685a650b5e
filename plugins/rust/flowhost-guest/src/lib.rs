//! Write a flowhost task in Rust without touching JSON strings or generated bindings.
//!
//! A task is one [`Task`] impl with serde-typed arguments, config and output, plus one
//! [`export_task!`] line. The helper turns malformed arguments or config into a
//! `task-error` with code `invalid-args` / `invalid-config` instead of a trap, so every task
//! built on it honours the contract's "bad input is an error, not a crash" rule for free.
//!
//! During a call a task may also report [`progress`], write structured [`log()`] records and
//! read its [`invocation`] (run id, task name, attempt) for idempotency keys.
//!
//! ```ignore
//! use flowhost_guest::{export_task, Task, TaskError, TaskInfo, NoConfig};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Args { size: u64 }
//!
//! struct Double;
//! impl Task for Double {
//!     type Args = Args;
//!     type Config = NoConfig;
//!     type Output = u64;
//!     fn info() -> TaskInfo {
//!         TaskInfo::new("double", env!("CARGO_PKG_VERSION")).requires(["size"]).provides(["doubled"])
//!     }
//!     fn execute(args: Args, _: NoConfig) -> Result<u64, TaskError> { Ok(args.size * 2) }
//! }
//! export_task!(Double);
//! ```

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Generated bindings for the `flowhost:task` contract; reach for them only when the
/// [`Task`] trait does not fit.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "flowhost_guest::bindings",
    });
}

use bindings::exports::flowhost::task::task as wit;
use bindings::flowhost::task::host;

/// The contract version this helper speaks (`wit/task.wit`).
pub const CONTRACT: &str = "flowhost:task/task@0.2.0";

/// Accepts and ignores any config, for tasks that take none.
pub type NoConfig = serde::de::IgnoredAny;

/// What the task declares to the host; see the `task-info` record in the contract.
#[derive(Debug, Clone, Default)]
pub struct TaskInfo {
    name: String,
    version: String,
    description: String,
    requires: Vec<String>,
    optional: Vec<String>,
    provides: Vec<String>,
}

impl TaskInfo {
    /// Starts a declaration; `version` is usually `env!("CARGO_PKG_VERSION")`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into(), ..Self::default() }
    }

    /// One line for operators, shown by `flowhost describe`.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// Names that must be in the arguments; the flow is rejected before it runs otherwise.
    pub fn requires<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.requires = names.into_iter().map(Into::into).collect();
        self
    }

    /// Names passed only when the store holds them.
    pub fn optional<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.optional = names.into_iter().map(Into::into).collect();
        self
    }

    /// Names the result is stored under: one name stores the whole output, several make the
    /// output an object holding each.
    pub fn provides<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.provides = names.into_iter().map(Into::into).collect();
        self
    }
}

/// A task's failure: a stable machine-readable `code`, a sentence for the operator and
/// optional structured details.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    /// Kebab-case code, e.g. `over-quota`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Structured context, serialised as JSON for the host.
    pub details: Option<serde_json::Value>,
}

impl TaskError {
    /// A failure with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), details: None }
    }

    /// Attaches structured context (any serialisable value).
    pub fn with_details(mut self, details: impl Serialize) -> Self {
        self.details = serde_json::to_value(details).ok();
        self
    }

    fn from_wit(error: wit::TaskError) -> Self {
        let details = error.details.and_then(|d| serde_json::from_str(&d).ok());
        Self { code: error.code, message: error.message, details }
    }

    fn into_wit(self) -> wit::TaskError {
        wit::TaskError {
            code: self.code,
            message: self.message,
            details: self.details.map(|d| d.to_string()),
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// How this task's own `execute` ended, as handed to `revert`.
#[derive(Debug, Clone)]
pub enum Outcome<T> {
    /// `execute` returned this output.
    Success(T),
    /// `execute` failed (or the host stopped it) with this error.
    Failure(TaskError),
}

/// One failure of the flow that caused the revert.
#[derive(Debug, Clone)]
pub struct FlowFailure {
    /// The failed task entry's name in the flow.
    pub task: String,
    /// Its error.
    pub error: TaskError,
}

/// Who the current call serves: the run, the task entry and the attempt. Use it for
/// idempotency keys (`{run_id}/{task}`) so that a retried or resumed call finds its own work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The run's id.
    pub run_id: String,
    /// The task entry's name in the flow.
    pub task: String,
    /// The attempt of this task, from 1.
    pub attempt: u32,
}

/// The current call's run id, task entry name and attempt.
pub fn invocation() -> Invocation {
    let info = host::invocation();
    Invocation { run_id: info.run_id, task: info.task, attempt: info.attempt }
}

/// Reports how far the call has come: `fraction` from 0.0 to 1.0, with any serialisable
/// details. The operator sees it live and in `flowhost runs show`.
pub fn progress(fraction: f32, details: Option<impl Serialize>) {
    let details = details.and_then(|d| serde_json::to_string(&d).ok());
    host::progress(fraction, details.as_deref());
}

/// Severity of a [`log()`] record.
pub use host::Level;

/// Writes a structured log record to the operator's log, tagged with the task's name:
/// `log(Level::Info, "reserved", &[("volume", id.as_str())])`. Better than printing to
/// stderr: the level is kept and the fields stay separate.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    host::log(level, message, &fields);
}

/// A flowhost task. Implement it, then call [`export_task!`] once.
pub trait Task {
    /// The arguments object: the task's required and optional names.
    type Args: DeserializeOwned;
    /// The task entry's static `config` from the flow file.
    type Config: DeserializeOwned;
    /// The result; stored whole under a single provided name, or split by key for several.
    type Output: Serialize + DeserializeOwned;

    /// The declaration checked by the host before a flow runs.
    fn info() -> TaskInfo;

    /// Does the work.
    fn execute(args: Self::Args, config: Self::Config) -> Result<Self::Output, TaskError>;

    /// Undoes `execute`. The default does nothing, which is right for tasks without side
    /// effects. Must be idempotent: it may run again after a host crash.
    fn revert(
        args: Self::Args,
        config: Self::Config,
        outcome: Outcome<Self::Output>,
        failures: Vec<FlowFailure>,
    ) -> Result<(), TaskError> {
        let _ = (args, config, outcome, failures);
        Ok(())
    }

    /// Undoes `execute` and says what was undone: the value is kept in the run's report and
    /// record (TaskFlow's revert result). The default calls [`Task::revert`] and returns
    /// nothing; implement this one instead when there is something worth saying.
    fn revert_with_result(
        args: Self::Args,
        config: Self::Config,
        outcome: Outcome<Self::Output>,
        failures: Vec<FlowFailure>,
    ) -> Result<Option<serde_json::Value>, TaskError> {
        Self::revert(args, config, outcome, failures).map(|()| None)
    }
}

/// Bridges a [`Task`] to the generated bindings; used by [`export_task!`].
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

fn parse<T: DeserializeOwned>(json: &str, code: &str, what: &str) -> Result<T, wit::TaskError> {
    serde_json::from_str(json)
        .map_err(|e| TaskError::new(code, format!("{what} rejected: {e}")).into_wit())
}

impl<T: Task> wit::Guest for Adapter<T> {
    fn describe() -> wit::TaskInfo {
        let info = T::info();
        wit::TaskInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            requires: info.requires,
            optional: info.optional,
            provides: info.provides,
        }
    }

    fn execute(args: String, config: String) -> Result<String, wit::TaskError> {
        let args = parse(&args, "invalid-args", "arguments")?;
        let config = parse(&config, "invalid-config", "config")?;
        let output = T::execute(args, config).map_err(TaskError::into_wit)?;
        serde_json::to_string(&output).map_err(|e| {
            TaskError::new("invalid-output", format!("result could not be serialised: {e}"))
                .into_wit()
        })
    }

    fn revert(
        args: String,
        config: String,
        outcome: wit::Outcome,
        failures: Vec<wit::FlowFailure>,
    ) -> Result<Option<String>, wit::TaskError> {
        // `execute` got the same arguments and config: if they do not parse, it failed
        // right there and did nothing, so there is nothing to undo.
        let (Ok(args), Ok(config)) =
            (parse(&args, "invalid-args", "arguments"), parse(&config, "invalid-config", "config"))
        else {
            return Ok(None);
        };
        let outcome = match outcome {
            wit::Outcome::Result(json) => Outcome::Success(parse(&json, "invalid-outcome", "outcome")?),
            wit::Outcome::Error(error) => Outcome::Failure(TaskError::from_wit(error)),
        };
        let failures = failures
            .into_iter()
            .map(|f| FlowFailure { task: f.task, error: TaskError::from_wit(f.error) })
            .collect();
        let result = T::revert_with_result(args, config, outcome, failures).map_err(TaskError::into_wit)?;
        Ok(result.map(|value| value.to_string()))
    }
}

/// Exports a [`Task`] impl as the component's `flowhost:task/task` interface.
#[macro_export]
macro_rules! export_task {
    ($task:ty) => {
        type __FlowhostTaskExport = $crate::Adapter<$task>;
        $crate::bindings::export!(__FlowhostTaskExport with_types_in $crate::bindings);
    };
}
