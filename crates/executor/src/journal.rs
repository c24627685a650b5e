//! The run database as a run's journal: each transition committed under the run's lease,
//! and the lease kept alive by a heartbeat while a task runs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::Executor;
use flowhost_core::events::Event;
use flowhost_engine::{Append, Close, Journal, LoadedFlow, RunError};
use flowhost_runs::FIRST_TOKEN;
use flowhost_runs::{Lease, NewRun, RunDb, RunDbError};

/// Makes `loaded` a recorded run of `executor`: hashes its flow file and plugins and makes the
/// run database the run's journal, with the executor holding the run's first lease. The run
/// itself is created in the database by the journal's first commit, before its first task
/// starts — off the async workers, like every journal write — so a database that cannot take
/// it stops the run before anything ran. Call it, then run the flow as usual.
///
/// With an idempotency `key`, the run is created only when no run of the flow holds the key
/// yet; otherwise the run stops before anything ran, with a [`RunError`] that
/// [`already_started`] reads the existing run's id from. Checking in that first commit, not
/// before the run, is what makes starts racing on one key start exactly one run.
pub fn record(
    executor: &Executor,
    loaded: &mut LoadedFlow,
    flow_file: Option<&Path>,
    key: Option<&str>,
) -> Result<(), RunDbError> {
    let run = NewRun {
        id: loaded.run_id().to_owned(),
        flow: loaded.name().to_owned(),
        origin: crate::origin_of(loaded, flow_file)?,
        initial_store: loaded.initial_store().clone(),
        tasks: loaded.plan().map(|t| t.name.to_owned()).collect(),
        key: key.map(str::to_owned),
    };
    let lease = Lease {
        run_id: run.id.clone(),
        token: FIRST_TOKEN,
        owner: executor.owner.clone(),
        ttl: executor.lease_ttl,
    };
    loaded.journal(Arc::new(DbJournal {
        db: executor.db.clone(),
        lease,
        create: Mutex::new(Some(run)),
        heartbeat: Mutex::new(None),
        every: executor.renew_every(),
    }));
    Ok(())
}

/// The run that holds the idempotency key of a run that stopped with `error` because the key
/// was taken ([`RunDbError::Exists`] at its creation); `None` for any other failure.
pub fn already_started(error: &RunError) -> Option<&str> {
    match error.error.downcast_ref::<RunDbError>() {
        Some(RunDbError::Exists { run, .. }) => Some(run),
        _ => None,
    }
}

/// A run's journal in a [`RunDb`], writing under its lease.
pub(super) struct DbJournal {
    db: Arc<dyn RunDb>,
    lease: Lease,
    /// A new run, created by the first append.
    create: Mutex<Option<NewRun>>,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
    /// How often the heartbeat renews the lease while a task runs.
    every: std::time::Duration,
}

impl DbJournal {
    /// Journals into `db` under `lease` of an existing run, renewing it every `every`
    /// meanwhile ([`Executor::renew_every`]).
    pub(super) fn start(db: Arc<dyn RunDb>, lease: Lease, every: std::time::Duration) -> Arc<Self> {
        let journal = Arc::new(Self {
            db,
            lease,
            create: Mutex::new(None),
            heartbeat: Mutex::new(None),
            every,
        });
        journal.keep_alive();
        journal
    }

    /// Starts the heartbeat, once the run exists (when called within a tokio runtime, as runs
    /// are).
    fn keep_alive(&self) {
        let mut heartbeat = self.heartbeat.lock().unwrap_or_else(|p| p.into_inner());
        if heartbeat.is_none() {
            let (db, lease, every) = (self.db.clone(), self.lease.clone(), self.every);
            *heartbeat = tokio::runtime::Handle::try_current()
                .ok()
                .map(|handle| handle.spawn(beat(db, lease, every)));
        }
    }

    fn stop_heartbeat(&self) {
        if let Some(beat) = self
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            beat.abort();
        }
    }
}

/// Renews the lease until aborted or fenced. A failed renewal is only logged: the run's next
/// journal write will fail the same way and stop the run.
async fn beat(db: Arc<dyn RunDb>, lease: Lease, every: std::time::Duration) {
    let mut every = tokio::time::interval(every);
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
            Ok(Err(error)) => {
                tracing::warn!(run = %lease.run_id, "cannot renew the run's lease: {error}")
            }
            Err(_) => return,
        }
    }
}

impl Journal for DbJournal {
    fn append<'a>(&'a self, events: &'a [Event]) -> Append<'a> {
        // The database calls block (a commit, or waiting for the connection while another
        // run's commit holds ours too): off the async workers, so other runs go on meanwhile.
        let create = self.create.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (db, lease, events) = (self.db.clone(), self.lease.clone(), events.to_vec());
        Box::pin(async move {
            let written = tokio::task::spawn_blocking(move || match &create {
                Some(run) => db.record_new(run, &lease, &events),
                None => db.record(&events, &lease),
            })
            .await;
            match written {
                Ok(recorded) => {
                    recorded?;
                    self.keep_alive();
                    Ok(())
                }
                Err(failed) => Err(format!("the journal write did not finish: {failed}").into()),
            }
        })
    }

    fn close(&self) -> Close<'_> {
        self.stop_heartbeat();
        let (db, lease) = (self.db.clone(), self.lease.clone());
        Box::pin(async move {
            let released = tokio::task::spawn_blocking(move || db.release(&lease)).await;
            if let Ok(Err(error)) = released {
                tracing::debug!(run = %self.lease.run_id, "cannot release the run's lease (it expires by itself): {error}");
            }
        })
    }
}

impl Drop for DbJournal {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}
