//! The bound task: a task entry validated and bound to its loaded plugin, sandbox and store
//! binding. It is the one seam between the run state machine and the runtime — the state
//! machine asks it to execute or revert with JSON text and never sees wasmtime.

use std::sync::Arc;

use crate::contract::{Outcome, TaskError};
use crate::flow::{RetryPolicy, TaskSpec};
use crate::runtime::{Invocation, Plugin, Sandbox, WarmPool};
use crate::store::Binding;

/// A task entry ready to be called.
pub(crate) struct BoundTask {
    pub(crate) name: String,
    config: String,
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) binding: Binding,
    pub(crate) sandbox: Sandbox,
    /// The warm instances this entry's calls use, when it reuses instances.
    warm: Option<Arc<WarmPool>>,
    /// When a failed execute is tried again.
    pub(crate) retry: RetryPolicy,
}

impl BoundTask {
    pub(crate) fn new(
        spec: &TaskSpec,
        plugin: Arc<Plugin>,
        binding: Binding,
        sandbox: Sandbox,
        warm: Option<Arc<WarmPool>>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            name: spec.name.clone(),
            config: spec.config.to_string(),
            plugin,
            binding,
            sandbox,
            warm,
            retry,
        }
    }

    /// Calls `execute` with these arguments (a JSON object's text) as attempt `attempt`
    /// (from 1) of this task in its run; returns the raw result.
    pub(crate) async fn execute(&self, args: &str, attempt: u32) -> Result<String, TaskError> {
        self.plugin
            .execute(Invocation {
                attempt,
                ..self.invocation(args)
            })
            .await
    }

    /// Calls `revert` with the arguments `execute` had, its outcome and the flow's failures.
    pub(crate) async fn revert(
        &self,
        args: &str,
        outcome: &Outcome,
        failures: &[(String, TaskError)],
    ) -> Result<(), TaskError> {
        self.plugin
            .revert(self.invocation(args), outcome, failures)
            .await
    }

    fn invocation<'a>(&'a self, args: &'a str) -> Invocation<'a> {
        Invocation {
            task: &self.name,
            sandbox: &self.sandbox,
            warm: self.warm.as_deref(),
            args,
            config: &self.config,
            attempt: 1,
        }
    }
}
