//! Typed errors of the library. Each names the file, task and field at fault so that the
//! CLI can print it as is and a library user can match on it.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A flow file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum FlowFileError {
    /// The file could not be read.
    #[error("cannot read flow file {}: {source}", path.display())]
    Read {
        /// The flow file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or holds unknown or mistyped keys.
    #[error("invalid flow file {}: {message}", path.display())]
    Parse {
        /// The flow file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
}

/// A plugin could not be loaded as a flowhost task.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read plugin {}: {source}", path.display())]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly component (a core module, or garbage).
    #[error("plugin {} is not a WebAssembly component: {reason}", path.display())]
    NotAComponent {
        /// The plugin file.
        path: PathBuf,
        /// What the validator said.
        reason: String,
    },
    /// The component imports something the host does not provide.
    #[error("plugin {} imports `{import}`, which the host does not provide (only standard WASI 0.2 is offered)", path.display())]
    UnsupportedImport {
        /// The plugin file.
        path: PathBuf,
        /// The offending import's name.
        import: String,
    },
    /// The component does not export `flowhost:task/task` at a version the host accepts.
    #[error("plugin {} does not export the flowhost task contract (`{}`): {reason}", path.display(), crate::plugin::CONTRACT)]
    NotATask {
        /// The plugin file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// `describe()` trapped or returned something unusable.
    #[error("plugin {} failed in describe(): {reason}", path.display())]
    Describe {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The engine could not be set up (wasmtime configuration, cache directory).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the engine: {0}")]
pub struct SetupError(pub String);

/// Everything wrong with a flow, found before any task ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The flow's name.
    pub flow: String,
    /// Every problem found, in flow order.
    pub problems: Vec<Problem>,
}

/// One problem found by validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The task entry at fault, when there is one.
    pub task: Option<String>,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "flow `{}` is invalid ({n} problem{}):", self.flow, if n == 1 { "" } else { "s" })?;
        for problem in &self.problems {
            match &problem.task {
                Some(task) => write!(f, "\n  - task `{task}`: {}", problem.message)?,
                None => write!(f, "\n  - {}", problem.message)?,
            }
        }
        Ok(())
    }
}

/// Why a task failed or a revert failed: the contract's `task-error`, whether the task
/// returned it or the host produced it (trap, deadline, bad result, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
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
    /// An error raised by the host about a task (as opposed to one the task returned).
    pub fn host(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into(), details: None }
    }
}
