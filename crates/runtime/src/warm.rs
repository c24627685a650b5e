//! Warm instances: for task entries that declare `instances = "reuse"`, instances that
//! finished a call are kept and serve later calls, across runs, instead of being rebuilt.
//!
//! Only for plugins that keep no state between calls: whatever a call leaves in the
//! instance's memory, the next call sees. The engine still protects itself: an instance that
//! trapped, hit its deadline or memory cap, or filled its output capture is dropped, never
//! reused, and every call gets its own deadline. A pool belongs to one plugin and one
//! sandbox (limits and grants), because an instance's WASI context is built from its
//! sandbox; it keeps at most [`IDLE_CAP`] idle instances, and all pools of an engine share an
//! [`IdleBudget`] so that idle instances never hold the slots fresh instances need.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::instance::Live;
use super::sandbox::Sandbox;

/// Idle instances kept per pool: enough for every worker thread to find one, few enough
/// that idle instances do not hold many pooling-allocator slots.
const IDLE_CAP: usize = 64;

/// How many idle warm instances all the pools of one engine may keep together.
#[derive(Debug)]
pub(crate) struct IdleBudget {
    max: usize,
    used: AtomicUsize,
}

impl IdleBudget {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
        })
    }

    fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Idle warm instances of one plugin under one sandbox.
pub struct WarmPool {
    sandbox: Sandbox,
    idle: Mutex<Vec<Live>>,
    budget: Arc<IdleBudget>,
}

impl WarmPool {
    pub(crate) fn new(sandbox: Sandbox, budget: Arc<IdleBudget>) -> Self {
        Self {
            sandbox,
            idle: Mutex::new(Vec::new()),
            budget,
        }
    }

    /// The sandbox every instance of this pool was built for.
    pub(crate) fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// An idle instance, if there is one.
    pub(crate) fn take(&self) -> Option<Live> {
        let live = self.idle.lock().expect("warm pool poisoned").pop()?;
        self.budget.give_back();
        Some(live)
    }

    /// Keeps an instance that ended its call cleanly; beyond the caps it is dropped.
    pub(crate) fn put(&self, live: Live) {
        let mut idle = self.idle.lock().expect("warm pool poisoned");
        if idle.len() < IDLE_CAP && self.budget.try_take() {
            idle.push(live);
            return;
        }
        drop(idle);
        drop(live);
    }
}
