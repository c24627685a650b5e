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

use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

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
pub(crate) struct Cancellations(Arc<Mutex<HashMap<String, Arc<Flag>>>>);

impl Cancellations {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Flag>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn flag(&self, run_id: &str) -> Arc<Flag> {
        self.map().entry(run_id.to_owned()).or_default().clone()
    }

    /// Asks run `run_id` to stop, for `why`: its calls in flight are dropped, nothing new
    /// starts. A request made before the run starts on this engine is kept for it; a run
    /// already asked to stop keeps its first reason.
    pub(crate) fn request(&self, run_id: &str, why: Stop) {
        self.flag(run_id).set(match why {
            Stop::Cancelled => FLAG_CANCELLED,
            Stop::Deadline => FLAG_DEADLINE,
        });
    }

    /// Why run `run_id` was asked to stop, if it was.
    pub(crate) fn requested(&self, run_id: &str) -> Option<Stop> {
        self.map().get(run_id).and_then(|flag| stop_of(flag.get()))
    }

    /// The flag of run `run_id`, to wait on while its calls are in flight.
    pub(crate) fn watch(&self, run_id: &str) -> Signal {
        Signal(self.flag(run_id))
    }

    /// Drops the request once the run ended (it is never started again under this engine
    /// with the same id, except by a resume, which must not inherit an old cancel).
    pub(crate) fn forget(&self, run_id: &str) {
        self.map().remove(run_id);
    }
}

/// One run's cancellation flag, as its scheduler and its calls wait on it.
#[derive(Debug, Clone)]
pub(crate) struct Signal(Arc<Flag>);

impl Signal {
    /// Completes, with why, once the run is asked to stop; never, when it is not (nor once
    /// the run's flag is forgotten).
    pub(crate) async fn requested(&mut self) -> Stop {
        stop_of(self.0.wait().await).unwrap_or(Stop::Cancelled)
    }
}

/// [`Flag`] values of a stop request.
const FLAG_CANCELLED: u8 = 1;
const FLAG_DEADLINE: u8 = 2;

fn stop_of(value: u8) -> Option<Stop> {
    match value {
        0 => None,
        FLAG_DEADLINE => Some(Stop::Deadline),
        _ => Some(Stop::Cancelled),
    }
}

/// A run's request flag (to stop, to suspend): set once — the first value stays — and
/// waited for by the run and its calls. Not a `watch` channel: every run in flight holds
/// two of these, and a channel (its value lock and eight `Notify`s) is five times the size.
#[derive(Debug, Default)]
pub(crate) struct Flag {
    /// 0 until set.
    value: AtomicU8,
    set: Notify,
}

impl Flag {
    /// Sets the flag to `value` (not 0), unless it is set already.
    pub(crate) fn set(&self, value: u8) {
        debug_assert_ne!(value, 0, "0 is the unset flag");
        if self
            .value
            .compare_exchange(0, value, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.set.notify_waiters();
        }
    }

    /// The flag's value, 0 while unset.
    pub(crate) fn get(&self) -> u8 {
        self.value.load(Ordering::Acquire)
    }

    /// The flag's value once it is set.
    pub(crate) async fn wait(&self) -> u8 {
        loop {
            let notified = self.set.notified();
            tokio::pin!(notified);
            // Registered before the value is read: a `set` in between still wakes us.
            notified.as_mut().enable();
            match self.get() {
                0 => notified.await,
                value => return value,
            }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_stop_request_keeps_its_first_reason_and_wakes_every_waiter() {
        let cancellations = Cancellations::default();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let mut signal = cancellations.watch("run");
                tokio::spawn(async move { signal.requested().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        cancellations.request("run", Stop::Deadline);
        cancellations.request("run", Stop::Cancelled);
        for waiter in waiters {
            let why = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert_eq!(why.expect("woken").unwrap(), Stop::Deadline);
        }
        // Asked before anyone waits: a later wait ends at once.
        assert_eq!(cancellations.watch("run").requested().await, Stop::Deadline);
        assert_eq!(cancellations.requested("other"), None);
    }
}
