//! The bound task: a task entry validated and bound to its loaded plugin, sandbox and store
//! binding. It is the one seam between the run state machine and the runtime — the state
//! machine asks it to execute or revert with JSON text and never sees wasmtime.

use std::sync::Arc;

use flowhost_core::contract::{HostFault, Outcome, TaskError};
use flowhost_core::flow::{RetryPolicy, TaskSpec, WaitFor};
use flowhost_core::store::Binding;
use flowhost_runtime::{Invocation, Plugin, ProgressSink, Sandbox, WarmPool};

use crate::condition::Condition;

/// Which call of a task this is, as the task sees it through the contract's `host` import.
#[derive(Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// The run's id.
    pub(crate) run_id: &'a str,
    /// The attempt of the task, from 1.
    pub(crate) number: u32,
    /// Where the task's progress reports go.
    pub(crate) progress: Option<&'a ProgressSink>,
    /// The run's place in line for an instance slot (`Run::order`).
    pub(crate) order: u64,
}

/// A task entry ready to be called, or a wait entry ready to wait.
pub(crate) struct BoundTask {
    pub(crate) name: String,
    config: String,
    /// The plugin it runs; `None` for a wait entry, which calls nothing.
    pub(crate) plugin: Option<Arc<Plugin>>,
    /// What a wait entry waits for.
    pub(crate) wait: Option<WaitFor>,
    pub(crate) binding: Binding,
    pub(crate) sandbox: Sandbox,
    /// The warm instances this entry's calls use, when it reuses instances.
    warm: Option<Arc<WarmPool>>,
    /// When a failed execute is tried again.
    pub(crate) retry: RetryPolicy,
    /// Orders it among tasks ready together that `max_parallel` holds back.
    pub(crate) priority: i32,
    /// Its `when`: false leaves it IGNORE.
    pub(crate) condition: Option<Condition>,
    /// Whether its failing for good suspends the run (`on_failure = "suspend"`) instead of
    /// reverting it.
    pub(crate) suspends: bool,
}

impl BoundTask {
    pub(crate) fn new(
        spec: &TaskSpec,
        plugin: Option<Arc<Plugin>>,
        binding: Binding,
        sandbox: Sandbox,
        warm: Option<Arc<WarmPool>>,
        retry: RetryPolicy,
        condition: Option<Condition>,
    ) -> Self {
        Self {
            name: spec.name.clone(),
            config: spec.config.to_string(),
            plugin,
            wait: None,
            binding,
            sandbox,
            warm,
            retry,
            priority: spec.priority,
            condition,
            suspends: false,
        }
    }

    /// The same entry with a run's own sandbox (and the warm pool that goes with it); every
    /// other field is the prepared entry's. The pattern names every field, so a field added
    /// to the entry cannot be left out here (the prepared sandbox and pool are not cloned
    /// only to be dropped).
    pub(crate) fn with_sandbox(&self, sandbox: Sandbox, warm: Option<Arc<WarmPool>>) -> Self {
        let Self {
            name,
            config,
            plugin,
            wait,
            binding,
            sandbox: _,
            warm: _,
            retry,
            priority,
            condition,
            suspends,
        } = self;
        Self {
            name: name.clone(),
            config: config.clone(),
            plugin: plugin.clone(),
            wait: wait.clone(),
            binding: binding.clone(),
            sandbox,
            warm,
            retry: retry.clone(),
            priority: *priority,
            condition: condition.clone(),
            suspends: *suspends,
        }
    }

    /// Makes it a wait entry waiting for `wait` (when given).
    pub(crate) fn waiting(mut self, wait: Option<WaitFor>) -> Self {
        self.wait = wait;
        self
    }

    /// Calls `execute` with these arguments (a JSON object's text); returns the raw result.
    pub(crate) async fn execute(
        &self,
        args: &str,
        attempt: Attempt<'_>,
    ) -> Result<String, TaskError> {
        match &self.plugin {
            Some(plugin) => plugin.execute(self.invocation(args, attempt)).await,
            None => Err(HostFault::HostError.error(format!(
                "`{}` is a wait entry: it has no plugin to execute",
                self.name
            ))),
        }
    }

    /// Calls `revert` with the arguments `execute` had, its outcome and the flow's failures;
    /// returns the revert's result (JSON text), if the plugin gave one. A wait entry did
    /// nothing outside the run, so it has nothing to undo: only its data leaves the store.
    pub(crate) async fn revert(
        &self,
        args: &str,
        attempt: Attempt<'_>,
        outcome: &Outcome,
        failures: &[(String, TaskError)],
    ) -> Result<Option<String>, TaskError> {
        match &self.plugin {
            Some(plugin) => {
                plugin
                    .revert(self.invocation(args, attempt), outcome, failures)
                    .await
            }
            None => Ok(None),
        }
    }

    fn invocation<'a>(&'a self, args: &'a str, attempt: Attempt<'a>) -> Invocation<'a> {
        Invocation {
            task: &self.name,
            sandbox: &self.sandbox,
            warm: self.warm.as_deref(),
            args,
            config: &self.config,
            run_id: attempt.run_id,
            attempt: attempt.number,
            progress: attempt.progress,
            order: attempt.order,
        }
    }
}
