//! What validation reports: every problem of a flow at once, each naming the task and the
//! flow-file field at fault. Planning (the tree, the graph) and the engine's checks both
//! produce them, so they live below both.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::class::{Classify, ErrorClass};
use crate::contract::escape;

/// Everything wrong with a flow, found before any task ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The flow's name.
    pub flow: String,
    /// Every problem found, in flow order.
    pub problems: Vec<Problem>,
    /// Some problem is the host's, not the flow's: a plugin could not be instantiated for
    /// want of memory or address space. Retrying later may succeed.
    pub host_unavailable: bool,
}

/// One problem found by validation. Serialises as `{task, field, message}`: what
/// `flowhost check --json` and `run --json` print for an invalid flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The task entry at fault, when there is one.
    pub task: Option<String>,
    /// The entry's flow-file field at fault, when one is: `plugin`, `name`, `rebind`,
    /// `inject`, `provides`, `config`, or a limit as `limits.memory_mib` (whether set on the
    /// entry or in the flow's `[limits]`).
    pub field: Option<String>,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "flow `{}` is invalid ({n} problem{}):",
            escape(&self.flow),
            if n == 1 { "" } else { "s" }
        )?;
        // Messages quote names and text a plugin declared: escaped, one line per problem.
        for problem in &self.problems {
            match &problem.task {
                Some(task) => write!(
                    f,
                    "\n  - task `{}`: {}",
                    escape(task),
                    escape(&problem.message)
                )?,
                None => write!(f, "\n  - {}", escape(&problem.message))?,
            }
        }
        Ok(())
    }
}

impl Classify for ValidationError {
    /// The host, not the flow, lacked memory or address space for a plugin: that passes.
    fn class(&self) -> ErrorClass {
        if self.host_unavailable {
            ErrorClass::Unavailable
        } else {
            ErrorClass::Invalid
        }
    }
}
