//! Cancelling a run from outside it (an operator's request through `flowhost serve`, or a
//! worker that read the request from its run database): nothing new starts, and a task
//! executing at that moment is stopped at once — its call's future is dropped with its
//! instance, exactly as at a deadline (wasm that computes yields at every epoch tick, so
//! the drop takes effect within one tick). That task fails with `cancelled` and, like any
//! failed task, is reverted with that error as its outcome (its plugin may have been half-way
//! through a side effect only its own `revert` knows how to undo); every task that ran before
//! is reverted too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use flowhost_core::contract::TaskError;

/// The error code of a task a cancelled run stopped (in flight) or stopped before.
pub const CANCELLED: &str = "cancelled";

/// Cancellation requests for the runs of one engine (shared by its clones), by run id: one
/// flag per run, which the run and its calls in flight watch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancellations(Arc<Mutex<HashMap<String, watch::Sender<bool>>>>);

impl Cancellations {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<bool>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks run `run_id` to stop: its calls in flight are dropped, nothing new starts. A
    /// request made before the run starts on this engine is kept for it.
    pub(crate) fn request(&self, run_id: &str) {
        self.map()
            .entry(run_id.to_owned())
            .or_insert_with(|| watch::channel(false).0)
            .send_replace(true);
    }

    /// Whether run `run_id` was asked to stop.
    pub(crate) fn is_requested(&self, run_id: &str) -> bool {
        self.map().get(run_id).is_some_and(|flag| *flag.borrow())
    }

    /// The flag of run `run_id`, to wait on while its calls are in flight.
    pub(crate) fn watch(&self, run_id: &str) -> Signal {
        Signal(
            self.map()
                .entry(run_id.to_owned())
                .or_insert_with(|| watch::channel(false).0)
                .subscribe(),
        )
    }

    /// Drops the request once the run ended (it is never started again under this engine
    /// with the same id, except by a resume, which must not inherit an old cancel).
    pub(crate) fn forget(&self, run_id: &str) {
        self.map().remove(run_id);
    }
}

/// One run's cancellation flag, as its scheduler and its calls wait on it.
#[derive(Debug, Clone)]
pub(crate) struct Signal(watch::Receiver<bool>);

impl Signal {
    /// Completes once the run is asked to stop; never, when it is not (nor once the run's
    /// flag is forgotten).
    pub(crate) async fn requested(&mut self) {
        if self.0.wait_for(|&requested| requested).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The failure recorded for a task a cancelled run stopped before: the plugin was never
/// called, so the task is not reverted; every task before it is.
pub(crate) fn cancelled(task: &str) -> TaskError {
    TaskError {
        code: CANCELLED.to_owned(),
        message: format!("the run was cancelled before task `{task}` started"),
        details: None,
    }
}

/// The failure of a task whose call was in flight when the run was cancelled: its instance
/// was dropped, and the task is reverted with this error as its outcome.
pub(crate) fn cancelled_in_flight(task: &str) -> TaskError {
    TaskError {
        code: CANCELLED.to_owned(),
        message: format!(
            "the run was cancelled while task `{task}` was executing; its call was stopped"
        ),
        details: None,
    }
}
