//! The run database as a run's journal: each transition committed under the run's lease,
//! and the lease kept alive by a heartbeat while a task runs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::{Executor, Lease, NewRun, Origin, RunDb, RunDbError};
use crate::engine::{Append, Journal, LoadedFlow};
use crate::events::Event;

/// Makes `loaded` a recorded run of `executor`: hashes its flow file and plugins, creates the
/// run in the database with the executor holding its lease, and makes the database the run's
/// journal. Call it, then run the flow as usual.
pub fn record(executor: &Executor, loaded: &mut LoadedFlow, flow_file: Option<&Path>) -> Result<(), RunDbError> {
    let run = NewRun {
        id: loaded.run_id().to_owned(),
        flow: loaded.name().to_owned(),
        origin: Origin::of(loaded, flow_file)?,
        initial_store: loaded.initial_store().clone(),
        tasks: loaded.plan().map(|t| t.name.to_owned()).collect(),
    };
    let lease = executor.db.create(&run, &executor.owner, executor.lease_ttl)?;
    loaded.journal(DbJournal::start(executor.db.clone(), lease));
    Ok(())
}

/// A run's journal in a [`RunDb`], writing under its lease.
pub(super) struct DbJournal {
    db: Arc<dyn RunDb>,
    lease: Lease,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
}

impl DbJournal {
    /// Journals into `db` under `lease`, renewing it every third of its ttl meanwhile (when
    /// called within a tokio runtime, as runs are).
    pub(super) fn start(db: Arc<dyn RunDb>, lease: Lease) -> Arc<Self> {
        let heartbeat = tokio::runtime::Handle::try_current().ok().map(|handle| {
            let (db, lease) = (db.clone(), lease.clone());
            handle.spawn(async move { beat(db, lease).await })
        });
        Arc::new(Self { db, lease, heartbeat: Mutex::new(heartbeat) })
    }

    fn stop_heartbeat(&self) {
        if let Some(beat) = self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()).take() {
            beat.abort();
        }
    }
}

/// Renews the lease until aborted or fenced. A failed renewal is only logged: the run's next
/// journal write will fail the same way and stop the run.
async fn beat(db: Arc<dyn RunDb>, lease: Lease) {
    let mut every = tokio::time::interval(lease.ttl / 3);
    every.tick().await;
    loop {
        every.tick().await;
        let (db, held) = (db.clone(), lease.clone());
        match tokio::task::spawn_blocking(move || db.renew(&held)).await {
            Ok(Ok(())) => {}
            Ok(Err(error @ RunDbError::Fenced { .. })) => {
                tracing::warn!(run = %lease.run_id, "{error}");
                return;
            }
            Ok(Err(error)) => tracing::warn!(run = %lease.run_id, "cannot renew the run's lease: {error}"),
            Err(_) => return,
        }
    }
}

impl Journal for DbJournal {
    fn append<'a>(&'a self, events: &'a [Event]) -> Append<'a> {
        // The database call blocks (a commit, or waiting for the connection while another
        // run's commit holds ours too): off the async workers, so other runs go on meanwhile.
        let (db, lease, events) = (self.db.clone(), self.lease.clone(), events.to_vec());
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || db.record(&events, &lease)).await {
                Ok(recorded) => Ok(recorded?),
                Err(failed) => Err(format!("the journal write did not finish: {failed}").into()),
            }
        })
    }

    fn close(&self) {
        self.stop_heartbeat();
        if let Err(error) = self.db.release(&self.lease) {
            tracing::debug!(run = %self.lease.run_id, "cannot release the run's lease (it expires by itself): {error}");
        }
    }
}

impl Drop for DbJournal {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}
