//! Cancelling a run from outside it (an operator's request through `flowhost serve`, or a
//! worker that read the request from its run database): nothing new starts, and a task
//! executing at that moment is stopped at once — its call's future is dropped with its
//! instance, exactly as at a deadline (wasm that computes yields at every epoch tick, so
//! the drop takes effect within one tick). That task fails with `cancelled` and, like any
//! failed task, is reverted with that error as its outcome (its plugin may have been half-way
//! through a side effect only its own `revert` knows how to undo); every task that ran before
//! is reverted too.
//!
//! A run's deadline (the flow's `timeout_ms`) stops it the same way, with its own error code,
//! [`RUN_TIMEOUT`]: the flag carries why the run is stopped ([`Stop`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use flowhost_core::contract::TaskError;

/// The error code of a task a cancelled run stopped (in flight) or stopped before.
pub const CANCELLED: &str = "cancelled";

/// The error code of a task a run's deadline (the flow's `timeout_ms`) stopped (in flight)
/// or stopped before.
pub const RUN_TIMEOUT: &str = "run-timeout";

/// Why a run is stopped from outside its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// An operator cancelled it.
    Cancelled,
    /// Its deadline passed.
    Deadline,
}

impl Stop {
    fn code(self) -> &'static str {
        match self {
            Self::Cancelled => CANCELLED,
            Self::Deadline => RUN_TIMEOUT,
        }
    }
}

/// Cancellation requests for the runs of one engine (shared by its clones), by run id: one
/// flag per run, which the run and its calls in flight watch. The first reason to stop a run
/// is the one its tasks fail with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancellations(Arc<Mutex<HashMap<String, watch::Sender<Option<Stop>>>>>);

impl Cancellations {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Option<Stop>>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks run `run_id` to stop, for `why`: its calls in flight are dropped, nothing new
    /// starts. A request made before the run starts on this engine is kept for it; a run
    /// already asked to stop keeps its first reason.
    pub(crate) fn request(&self, run_id: &str, why: Stop) {
        self.map()
            .entry(run_id.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .send_if_modified(|stop| {
                if stop.is_some() {
                    return false;
                }
                *stop = Some(why);
                true
            });
    }

    /// Why run `run_id` was asked to stop, if it was.
    pub(crate) fn requested(&self, run_id: &str) -> Option<Stop> {
        self.map().get(run_id).and_then(|flag| *flag.borrow())
    }

    /// The flag of run `run_id`, to wait on while its calls are in flight.
    pub(crate) fn watch(&self, run_id: &str) -> Signal {
        Signal(
            self.map()
                .entry(run_id.to_owned())
                .or_insert_with(|| watch::channel(None).0)
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
pub(crate) struct Signal(watch::Receiver<Option<Stop>>);

impl Signal {
    /// Completes, with why, once the run is asked to stop; never, when it is not (nor once
    /// the run's flag is forgotten).
    pub(crate) async fn requested(&mut self) -> Stop {
        let why = self.0.wait_for(Option::is_some).await.map(|stop| *stop);
        match why {
            Ok(why) => why.unwrap_or(Stop::Cancelled),
            Err(_) => std::future::pending().await,
        }
    }
}

/// How the run was stopped, as a task's error message says it.
fn stopped(why: Stop) -> &'static str {
    match why {
        Stop::Cancelled => "the run was cancelled",
        Stop::Deadline => "the run's deadline (the flow's `timeout_ms`) passed",
    }
}

/// The failure recorded for a task a stopped run did not start: the plugin was never
/// called, so the task is not reverted; every task before it is.
pub(crate) fn stopped_before(task: &str, why: Stop) -> TaskError {
    TaskError {
        code: why.code().to_owned(),
        message: format!("{} before task `{task}` started", stopped(why)),
        details: None,
    }
}

/// The failure of a task whose call was in flight when the run was stopped: its instance
/// was dropped, and the task is reverted with this error as its outcome.
pub(crate) fn stopped_in_flight(task: &str, why: Stop) -> TaskError {
    TaskError {
        code: why.code().to_owned(),
        message: format!(
            "{} while task `{task}` was executing; its call was stopped",
            stopped(why)
        ),
        details: None,
    }
}
