//! Suspending a run from outside it (an operator's `flowhost runs suspend`, the service's
//! `POST /v1/runs/{id}/suspend`, or the executor holding the run, which reads the request
//! from its run database): unlike a cancel, nothing is stopped and nothing is reverted. Calls
//! in flight finish (or fail at their deadline), nothing new starts, a pause before a retry
//! ends without its attempt, and once nothing is in flight the flow goes `SUSPENDING ->
//! SUSPENDED` and the run ends here, releasing its executor. Resuming it later goes on from
//! the record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::cancel::Flag;

/// Suspend requests for the runs of one engine (shared by its clones), by run id: one flag
/// per run, which its scheduler watches.
#[derive(Debug, Clone, Default)]
pub(crate) struct Suspensions(Arc<Mutex<HashMap<String, Arc<Flag>>>>);

impl Suspensions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Flag>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn flag(&self, run_id: &str) -> Arc<Flag> {
        self.map().entry(run_id.to_owned()).or_default().clone()
    }

    /// Asks run `run_id` to suspend. A request made before the run starts on this engine is
    /// kept for it.
    pub(crate) fn request(&self, run_id: &str) {
        self.flag(run_id).set(1);
    }

    /// Whether run `run_id` was asked to suspend.
    pub(crate) fn requested(&self, run_id: &str) -> bool {
        self.map().get(run_id).is_some_and(|flag| flag.get() != 0)
    }

    /// The flag of run `run_id`, to wait on while its calls are in flight.
    pub(crate) fn watch(&self, run_id: &str) -> SuspendSignal {
        SuspendSignal(self.flag(run_id))
    }

    /// Drops the request once the run ended or suspended: a resume must not inherit it.
    pub(crate) fn forget(&self, run_id: &str) {
        self.map().remove(run_id);
    }
}

/// One run's suspend flag, as its scheduler waits on it.
#[derive(Debug)]
pub(crate) struct SuspendSignal(Arc<Flag>);

impl SuspendSignal {
    /// Completes once the run is asked to suspend; never, when it is not.
    pub(crate) async fn requested(&mut self) {
        self.0.wait().await;
    }
}

/// A handle that suspends one run, for whoever learns of a request the engine cannot see
/// itself (the executor reading its run database). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Suspender {
    suspensions: Suspensions,
    run_id: String,
}

impl Suspender {
    pub(crate) fn new(suspensions: Suspensions, run_id: String) -> Self {
        Self {
            suspensions,
            run_id,
        }
    }

    /// Asks the run to suspend: its calls in flight finish, nothing new starts.
    pub fn suspend(&self) {
        self.suspensions.request(&self.run_id);
    }

    /// Whether the run was asked to suspend already.
    pub fn is_requested(&self) -> bool {
        self.suspensions.requested(&self.run_id)
    }
}
