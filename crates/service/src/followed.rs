//! Runs executed elsewhere — by another process on the same database, by a worker, or
//! finished — followed from their record: one reader per run, however many event streams
//! follow it. The reader polls the run's states (never its values, which may be large) and
//! feeds a [`RunLog`] that the streams read as they read a run executing here; it stops when
//! the run ends, when the last stream following it goes away, or when the service stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use flowhost_core::events::FlowState;

use super::AppState;
use super::events;
use super::live::RunLog;

/// How often a followed run's record is read again.
const POLL: Duration = Duration::from_millis(250);

/// The runs followed now.
#[derive(Default)]
pub(crate) struct Watchers {
    runs: Mutex<HashMap<String, Weak<RunLog>>>,
}

impl Watchers {
    /// Whether some stream follows run `id` now (it is then known to exist).
    pub(crate) fn following(&self, id: &str) -> bool {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(id).is_some_and(|log| log.strong_count() > 0)
    }

    /// The log of run `id`, shared with every stream already following it; its reader is
    /// started when there is none.
    pub(crate) fn follow(&self, state: &Arc<AppState>, id: &str) -> Arc<RunLog> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = runs.get(id).and_then(Weak::upgrade) {
            return log;
        }
        runs.retain(|_, log| log.strong_count() > 0);
        let log = Arc::new(RunLog::followed(FlowState::Pending));
        runs.insert(id.to_owned(), Arc::downgrade(&log));
        tokio::spawn(read_along(
            state.clone(),
            id.to_owned(),
            Arc::downgrade(&log),
        ));
        log
    }
}

/// Reads run `id`'s record into `log` until the run ends or nobody follows it.
async fn read_along(state: Arc<AppState>, id: String, log: Weak<RunLog>) {
    let mut sent = Vec::new();
    let mut last = FlowState::Pending;
    let mut shutdown = state.shutdown.clone();
    loop {
        let Some(followed) = log.upgrade() else {
            return;
        };
        let (db, key) = (state.db.clone(), id.clone());
        let read = tokio::task::spawn_blocking(move || db.read(&key, Some(0))).await;
        let record = match read {
            Ok(Ok(Some(record))) => record,
            Ok(Ok(None)) => return followed.end(last, Some(format!("run {id} was deleted"))),
            Ok(Err(_)) | Err(_) => {
                return followed.end(last, Some("the run database cannot be read".into()));
            }
        };
        last = record.summary.state;
        followed.extend(events::recorded(&record, &mut sent));
        if last.is_finished() {
            return followed.end(last, None);
        }
        if record.summary.lease.is_none() {
            let (starter, key) = (state.starter.clone(), id.clone());
            let waits = tokio::task::spawn_blocking(move || starter.awaits_worker(&key))
                .await
                .is_ok_and(|waits| waits.unwrap_or(false));
            if !waits {
                // Interrupted and held by nobody: nothing will happen until it is resumed.
                return followed.end(last, None);
            }
        }
        drop(followed);
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            // The streams end by themselves.
            return;
        }
    }
}
