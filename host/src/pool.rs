//! Warm instances: for task entries that declare `instances = "reuse"`, instances that
//! finished a call are kept and serve later calls, across runs, instead of being rebuilt.
//!
//! Only for plugins that keep no state between calls: whatever a call leaves in the
//! instance's memory, the next call sees. The engine still protects itself: an instance that
//! trapped, hit its deadline or memory cap, or filled its output capture is dropped, never
//! reused, and every call gets its own deadline. A pool belongs to one plugin and one
//! sandbox (limits and grants), because an instance's WASI context is built from its
//! sandbox; it keeps at most [`IDLE_CAP`] idle instances.

use std::sync::Mutex;

use crate::plugin::Live;
use crate::sandbox::Sandbox;

/// Idle instances kept per pool: enough for every worker thread to find one, few enough
/// that idle instances do not hold many pooling-allocator slots.
const IDLE_CAP: usize = 64;

/// Idle warm instances of one plugin under one sandbox.
pub(crate) struct WarmPool {
    sandbox: Sandbox,
    idle: Mutex<Vec<Live>>,
}

impl WarmPool {
    pub(crate) fn new(sandbox: Sandbox) -> Self {
        Self { sandbox, idle: Mutex::new(Vec::new()) }
    }

    /// The sandbox every instance of this pool was built for.
    pub(crate) fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// An idle instance, if there is one.
    pub(crate) fn take(&self) -> Option<Live> {
        self.idle.lock().expect("warm pool poisoned").pop()
    }

    /// Keeps an instance that ended its call cleanly; beyond the cap it is dropped.
    pub(crate) fn put(&self, live: Live) {
        let mut idle = self.idle.lock().expect("warm pool poisoned");
        if idle.len() < IDLE_CAP {
            idle.push(live);
            return;
        }
        drop(idle);
        drop(live);
    }
}
