//! The runs this service executes, as they happen: each run's transitions in order, kept
//! from its start (or, for a resumed run, from its record) to its end, so an event stream
//! that connects late replays what happened and then follows — one list, one cursor, no
//! duplicates and no gaps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::{oneshot, watch};

use super::error::StartError;
use super::events;
use super::metrics::Metrics;
use flowhost_core::events::{Event, FlowState, Listener, Transition};

/// What a starter learns when a run it spawned either made its first (journaled)
/// transition or ended before that.
pub(crate) type StartSignal = oneshot::Receiver<Result<(), StartError>>;

/// One run going on in this process.
pub(crate) struct RunLog {
    /// Whether it runs on the fuel-metered engine (the one to ask for a cancel).
    pub(crate) fuel: bool,
    inner: Mutex<LogInner>,
    /// Bumped at every change, for the streams waiting on it.
    version: watch::Sender<u64>,
}

struct LogInner {
    /// Event payloads, oldest first.
    events: Vec<Value>,
    /// The flow's state as of the last flow transition.
    state: FlowState,
    /// Set when the run ended (or stopped): its last state, and why it stopped if it did.
    ended: Option<(FlowState, Option<String>)>,
    /// Told once: at the first transition, or when the run ends before one.
    started: Option<oneshot::Sender<Result<(), StartError>>>,
}

/// What a stream reads at its cursor.
pub(crate) enum Next {
    /// The event at the cursor.
    Event(Value),
    /// The run ended with this state (and why it stopped early, if it did).
    Ended(FlowState, Option<String>),
    /// Nothing yet.
    Wait,
}

impl RunLog {
    /// An empty log of a run followed from its record (see [`crate::followed`]).
    pub(crate) fn followed(state: FlowState) -> Self {
        Self {
            fuel: false,
            inner: Mutex::new(LogInner {
                events: Vec::new(),
                state,
                ended: None,
                started: None,
            }),
            version: watch::channel(0).0,
        }
    }

    /// Appends event payloads read back from the record.
    pub(crate) fn extend(&self, events: Vec<Value>) {
        if events.is_empty() {
            return;
        }
        self.lock().events.extend(events);
        self.version.send_modify(|v| *v += 1);
    }

    /// The run ended in `state` (or stopped being followed, saying `why`).
    pub(crate) fn end(&self, state: FlowState, why: Option<String>) {
        self.lock().ended = Some((state, why));
        self.version.send_modify(|v| *v += 1);
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What comes at position `cursor`.
    pub(crate) fn at(&self, cursor: usize) -> Next {
        let inner = self.lock();
        match (inner.events.get(cursor), &inner.ended) {
            (Some(event), _) => Next::Event(event.clone()),
            (None, Some((state, why))) => Next::Ended(*state, why.clone()),
            (None, None) => Next::Wait,
        }
    }

    /// A receiver that sees every later change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn push(&self, event: &Event) {
        let Some(payload) = events::payload(event) else {
            return;
        };
        let mut inner = self.lock();
        if let Transition::Flow { to, .. } = &event.transition {
            inner.state = *to;
        }
        inner.events.push(payload);
        if let Some(started) = inner.started.take() {
            let _ = started.send(Ok(()));
        }
        drop(inner);
        self.version.send_modify(|v| *v += 1);
    }
}

/// Every run this service executes now; also the listener that feeds them and the metrics.
pub(crate) struct Live {
    runs: Mutex<HashMap<String, Arc<RunLog>>>,
    /// How many runs are going on.
    active: watch::Sender<usize>,
    metrics: Arc<Metrics>,
}

impl Live {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            runs: Mutex::new(HashMap::new()),
            active: watch::channel(0).0,
            metrics,
        }
    }

    fn runs(&self) -> MutexGuard<'_, HashMap<String, Arc<RunLog>>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts following run `id`, whose recorded transitions so far are `recorded` (a
    /// resumed run's) in state `state`. Refused (`None`) while this service already runs it.
    pub(crate) fn track(
        &self,
        id: &str,
        recorded: Vec<Value>,
        state: FlowState,
        fuel: bool,
    ) -> Option<StartSignal> {
        let (started, signal) = oneshot::channel();
        let log = Arc::new(RunLog {
            fuel,
            inner: Mutex::new(LogInner {
                events: recorded,
                state,
                ended: None,
                started: Some(started),
            }),
            version: watch::channel(0).0,
        });
        let mut runs = self.runs();
        if runs.contains_key(id) {
            return None;
        }
        runs.insert(id.to_owned(), log);
        self.active.send_replace(runs.len());
        self.metrics.runs_in_flight(runs.len());
        Some(signal)
    }

    /// The run `id`, while this service runs it.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<RunLog>> {
        self.runs().get(id).cloned()
    }

    /// Run `id` ended: with its report (`Ok`), or stopped by `error` (its journal failed, or
    /// it never started). Streams following it end after its last event.
    pub(crate) fn finish(&self, id: &str, outcome: Result<FlowState, StartError>) {
        let Some(log) = self.runs().remove(id) else {
            return;
        };
        let mut inner = log.lock();
        let (state, why) = match &outcome {
            Ok(state) => (*state, None),
            Err(error) => (inner.state, Some(error.to_string())),
        };
        inner.ended = Some((state, why));
        if let Some(started) = inner.started.take() {
            let _ = started.send(outcome.map(drop));
        }
        drop(inner);
        log.version.send_modify(|v| *v += 1);
        let left = self.runs().len();
        self.active.send_replace(left);
        self.metrics.runs_in_flight(left);
    }

    /// How many runs are going on.
    pub(crate) fn running(&self) -> usize {
        *self.active.borrow()
    }

    /// Resolves when no run is going on.
    pub(crate) async fn idle(&self) {
        let mut active = self.active.subscribe();
        let _ = active.wait_for(|n| *n == 0).await;
    }
}

impl Listener for Live {
    fn on_event(&self, event: &Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.metrics.observe(event);
        if let Some(log) = self.get(&event.run_id) {
            log.push(event);
        }
        Ok(())
    }
}
