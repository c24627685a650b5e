//! Cancelling a run from outside it (an operator's request through `flowhost serve`): the
//! run stops before its next task starts and reverts what ran, exactly as if that task had
//! failed. A task already executing is never interrupted — its plugin may be half-way
//! through a side effect that only its own `revert` knows how to undo, and that revert needs
//! the task's outcome.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use flowhost_core::contract::TaskError;

/// The error code of the task a cancelled run stopped before.
pub const CANCELLED: &str = "cancelled";

/// Cancellation requests for the runs of one engine (shared by its clones), by run id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancellations(Arc<Mutex<HashSet<String>>>);

impl Cancellations {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks run `run_id` to stop before its next task.
    pub(crate) fn request(&self, run_id: &str) {
        self.set().insert(run_id.to_owned());
    }

    /// Whether run `run_id` was asked to stop.
    pub(crate) fn is_requested(&self, run_id: &str) -> bool {
        self.set().contains(run_id)
    }

    /// Drops the request once the run ended (it is never started again under this engine
    /// with the same id, except by a resume, which must not inherit an old cancel).
    pub(crate) fn forget(&self, run_id: &str) {
        self.set().remove(run_id);
    }
}

/// The failure recorded for the task a cancelled run stopped before: the plugin was never
/// called, so the task is not reverted; every task before it is.
pub(crate) fn cancelled(task: &str) -> TaskError {
    TaskError {
        code: CANCELLED.to_owned(),
        message: format!("the run was cancelled before task `{task}` started"),
        details: None,
    }
}
