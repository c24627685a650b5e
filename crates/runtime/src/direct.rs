//! One plugin function called outside any flow, as `flowhost call` does it: the same
//! instance, sandbox, limits and fault handling as a task of a flow, without a store, a run
//! or a journal. For trying a plugin while writing it, and for replaying a recorded call.

use super::host::ProgressSink;
use super::plugin::{Invocation, Plugin};
use super::sandbox::Sandbox;
use flowhost_core::contract::{Outcome, TaskError};

/// What one direct call hands the plugin.
#[derive(Clone)]
pub struct DirectCall {
    /// The task name the plugin and the log see (a flow's entry name, or the plugin's own).
    pub task: String,
    /// The run id the plugin sees through the contract's `invocation()`.
    pub run_id: String,
    /// The attempt it sees, from 1.
    pub attempt: u32,
    /// Limits and grants of the call.
    pub sandbox: Sandbox,
    /// The arguments object's JSON text.
    pub args: String,
    /// The config object's JSON text.
    pub config: String,
    /// Where the plugin's progress reports go.
    pub progress: Option<ProgressSink>,
}

impl DirectCall {
    fn invocation(&self) -> Invocation<'_> {
        Invocation {
            task: &self.task,
            sandbox: &self.sandbox,
            warm: None,
            args: &self.args,
            config: &self.config,
            run_id: &self.run_id,
            attempt: self.attempt,
            progress: self.progress.as_ref(),
            order: 0,
        }
    }

    /// Calls `execute` on a fresh instance; returns its raw result text (not checked to be
    /// JSON: showing what the plugin returned is the point).
    pub async fn execute(&self, plugin: &Plugin) -> Result<String, TaskError> {
        plugin.execute(self.invocation()).await
    }

    /// Calls `revert` on a fresh instance with `outcome` and the flow's `failures`; returns
    /// the revert's result text, if the plugin gave one.
    pub async fn revert(
        &self,
        plugin: &Plugin,
        outcome: &Outcome,
        failures: &[(String, TaskError)],
    ) -> Result<Option<String>, TaskError> {
        plugin.revert(self.invocation(), outcome, failures).await
    }
}
