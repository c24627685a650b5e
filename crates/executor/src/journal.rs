//! The run database as a run's journal: each transition committed under the run's lease,
//! and the lease kept alive by a heartbeat while a task runs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::Executor;
use flowhost_core::events::Event;
use flowhost_engine::{Append, Close, Journal, LoadedFlow, RunError, Signalled, Suspender};
use flowhost_runs::FIRST_TOKEN;
use flowhost_runs::{AsyncWrites, Lease, NewRun, RunDb, RunDbError};

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
    record_linked(executor, loaded, flow_file, key, None)
}

/// [`record`], for a run that restarts run `restarted_from` when given: the link is written
/// right after the run is created, under its lease, before its first transition.
pub(crate) fn record_linked(
    executor: &Executor,
    loaded: &mut LoadedFlow,
    flow_file: Option<&Path>,
    key: Option<&str>,
    restarted_from: Option<String>,
) -> Result<(), RunDbError> {
    let run = NewRun {
        id: loaded.run_id().to_owned(),
        flow: loaded.name().to_owned(),
        origin: crate::origin_of(loaded, flow_file)?,
        initial_store: loaded.initial_store().clone(),
        tasks: loaded.plan().map(|t| t.name.to_owned()).collect(),
        key: key.map(str::to_owned),
        // A run this executor runs at once waits for nobody: no queue to order it in.
        priority: 0,
    };
    let lease = Lease {
        run_id: run.id.clone(),
        token: FIRST_TOKEN,
        owner: executor.owner.clone(),
        ttl: executor.lease_ttl,
    };
    let journal = Arc::new(DbJournal {
        db: executor.db.clone(),
        writes: executor.db.async_writes(),
        lease,
        create: Mutex::new(Some((run, restarted_from))),
        heartbeat: Mutex::new(None),
        every: executor.renew_every(),
        suspender: Mutex::new(None),
        requests: Mutex::new(None),
    });
    journal.follow(loaded.suspender());
    loaded.journal(journal);
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
    /// The database's writes for async callers, when it has them (PostgreSQL).
    writes: Option<Arc<dyn AsyncWrites>>,
    lease: Lease,
    /// A new run, created by the first append (with the run it restarts, if any).
    create: Mutex<Option<(NewRun, Option<String>)>>,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
    /// How often the heartbeat renews the lease while a task runs.
    every: std::time::Duration,
    /// What suspends the run when its record says it was asked to.
    suspender: Mutex<Option<Suspender>>,
    /// Reads the run's suspend request while the run exists and goes on.
    requests: Mutex<Option<JoinHandle<()>>>,
}

impl DbJournal {
    /// Journals into `db` under `lease` of an existing run, renewing it every `every`
    /// meanwhile ([`Executor::renew_every`]).
    pub(super) fn start(db: Arc<dyn RunDb>, lease: Lease, every: std::time::Duration) -> Arc<Self> {
        let journal = Arc::new(Self {
            writes: db.async_writes(),
            db,
            lease,
            create: Mutex::new(None),
            heartbeat: Mutex::new(None),
            every,
            suspender: Mutex::new(None),
            requests: Mutex::new(None),
        });
        journal.keep_alive();
        journal
    }

    /// Suspends the run through `suspender` once its record says it was asked to
    /// ([`RunDb::request_suspend`], from any process sharing the database): how `flowhost
    /// runs suspend` reaches a run that another process, or a worker on another host, holds.
    pub(crate) fn follow(&self, suspender: Suspender) {
        *self.suspender.lock().unwrap_or_else(|p| p.into_inner()) = Some(suspender);
        self.watch_requests();
    }

    /// Starts reading the run's suspend request, once the run exists and is followed.
    fn watch_requests(&self) {
        if self
            .create
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return;
        }
        let Some(suspender) = self
            .suspender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if requests.is_none() {
            let (db, run_id) = (self.db.clone(), self.lease.run_id.clone());
            let every = self.every.min(REQUESTS_EVERY);
            *requests = tokio::runtime::Handle::try_current()
                .ok()
                .map(|handle| handle.spawn(read_requests(db, run_id, suspender, every)));
        }
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
        for task in [&self.heartbeat, &self.requests] {
            if let Some(task) = task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                task.abort();
            }
        }
    }
}

/// How often a run's record is read for a suspend request at most: an operator waits about
/// this long for a run to start suspending, at the cost of one read of one row per run.
const REQUESTS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Reads run `run_id`'s suspend request every `every` until it is there, then suspends the
/// run. A failed read is only logged: the next one may work, and the run is unaffected.
async fn read_requests(
    db: Arc<dyn RunDb>,
    run_id: String,
    suspender: Suspender,
    every: std::time::Duration,
) {
    let mut every = tokio::time::interval(every);
    // The first tick is immediate: a run shorter than one period never reads its record.
    every.tick().await;
    loop {
        every.tick().await;
        if suspender.is_requested() {
            return;
        }
        let (db, id) = (db.clone(), run_id.clone());
        match tokio::task::spawn_blocking(move || db.suspend_requested(&id)).await {
            Ok(Ok(true)) => {
                tracing::info!(run = %run_id, "the run was asked to suspend");
                suspender.suspend();
                return;
            }
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::warn!(run = %run_id, "cannot read the run's suspend request: {error}")
            }
            Err(_) => return,
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
        let create = self.create.lock().unwrap_or_else(|p| p.into_inner()).take();
        Box::pin(async move {
            match (&self.writes, create) {
                // An async driver: the write is awaited here.
                (Some(writes), None) => writes.record(events, &self.lease).await?,
                (Some(writes), Some((run, None))) => {
                    writes.record_new(&run, &self.lease, events).await?
                }
                // The database calls block (a commit, or waiting for the connection while
                // another run's commit holds ours too): off the async workers, so other runs
                // go on meanwhile.
                (_, create) => {
                    let (db, lease, events) =
                        (self.db.clone(), self.lease.clone(), events.to_vec());
                    tokio::task::spawn_blocking(move || match &create {
                        Some((run, None)) => db.record_new(run, &lease, &events),
                        // A restart (rare) is created, linked under its first lease and only
                        // then given its first transitions, as `record_linked` promises.
                        Some((run, Some(from))) => {
                            let created = db.create(run, &lease.owner, lease.ttl)?;
                            debug_assert_eq!(created, lease, "a new run's first lease");
                            db.link_restart(&lease, from)?;
                            db.record(&events, &lease)
                        }
                        None => db.record(&events, &lease),
                    })
                    .await
                    .map_err(|failed| format!("the journal write did not finish: {failed}"))??
                }
            }
            self.keep_alive();
            self.watch_requests();
            Ok(())
        })
    }

    fn take_signal<'a>(&'a self, task: &'a str, name: &'a str) -> Signalled<'a> {
        let (db, run, task, name) = (
            self.db.clone(),
            self.lease.run_id.clone(),
            task.to_owned(),
            name.to_owned(),
        );
        Box::pin(async move {
            tokio::task::spawn_blocking(move || db.take_signal(&run, &task, &name))
                .await
                .map_err(|failed| format!("taking a signal did not finish: {failed}"))?
                .map_err(Into::into)
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
