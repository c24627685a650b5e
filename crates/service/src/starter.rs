//! How the service starts, resumes and cancels runs: the seam where running them in this
//! process gives way to queueing them for workers.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use super::error::StartError;
use super::events;
use super::live::Live;
use flowhost_core::events::FlowState;
use flowhost_core::flow::FlowSpec;
use flowhost_core::store::Store;
use flowhost_engine::Engine;
use flowhost_executor::{
    self as runs, Executor, Policy, Restart, ResumeFailure, Resumption, WorkerError,
};
use flowhost_runs::RunDbError;
use flowhost_runs_postgres::PgRunDb;

/// A future a [`RunStarter`] returns.
pub type StartFuture<'a> = Pin<Box<dyn Future<Output = Result<Started, StartError>> + Send + 'a>>;

/// A run that was accepted: it exists in the run database under `run_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The run's id.
    pub run_id: String,
    /// The start carried an idempotency key another run of the flow already held: nothing
    /// was started, and `run_id` is that run.
    pub existing: bool,
}

impl Started {
    fn new(run_id: String) -> Self {
        Self {
            run_id,
            existing: false,
        }
    }

    fn existing(run_id: String) -> Self {
        Self {
            run_id,
            existing: true,
        }
    }
}

/// Starts, resumes and cancels runs on behalf of the API.
pub trait RunStarter: Send + Sync {
    /// Validates the flow in `flow_file` with `store` as its initial store and starts a run
    /// of it; resolves once the run is recorded (or was refused). With an idempotency `key`
    /// a run of the flow already holds, nothing starts and that run is the answer
    /// ([`Started::existing`]). The run's trace is
    /// under the W3C `traceparent` given (a valid one, see
    /// [`flowhost_executor::is_traceparent`]). A run queued for workers is claimed by its
    /// `priority`, higher first, then in submission order.
    fn start<'a>(
        &'a self,
        flow_file: &'a Path,
        store: Store,
        key: Option<&'a str>,
        traceparent: Option<&'a str>,
        priority: i32,
    ) -> StartFuture<'a>;
    /// Continues the interrupted run `run_id`; resolves once it is under way again.
    fn resume<'a>(&'a self, run_id: &'a str) -> StartFuture<'a>;
    /// Asks run `run_id` to stop (its task in flight at once) and revert what ran; `false` when this
    /// starter is not running it.
    fn cancel(&self, run_id: &str) -> bool;
    /// Suspends at once run `run_id` if this starter executes it; the request the API wrote
    /// to the run database reaches it (and any other executor) anyway, within half a second.
    fn suspend(&self, _run_id: &str) {}
    /// Reverts the SUSPENDED run `run_id` instead of resuming it; resolves once the revert is
    /// under way.
    fn revert<'a>(&'a self, run_id: &'a str) -> StartFuture<'a>;
    /// Starts a new run of run `run_id` (ended SUCCESS, or SUSPENDED) from its task `from`,
    /// the tasks before it copied; resolves with the new run's id once it is recorded.
    fn restart<'a>(&'a self, run_id: &'a str, from: &'a str) -> StartFuture<'a>;
    /// A signal came for WAITING run `run_id`: go on with it. By default it is resumed
    /// here (the resumed run takes the signal from the run database).
    fn signalled<'a>(&'a self, run_id: &'a str) -> StartFuture<'a> {
        self.resume(run_id)
    }
    /// How many runs wait for a worker, when runs go to workers. Called off the async
    /// threads (it may ask the database).
    fn queue_depth(&self) -> Result<Option<i64>, RunDbError> {
        Ok(None)
    }
    /// Whether run `run_id`, unfinished and held by nobody, waits for a worker to claim it:
    /// its event stream then stays open. Called off the async threads.
    fn awaits_worker(&self, _run_id: &str) -> Result<bool, RunDbError> {
        Ok(false)
    }
}

/// Runs flows on this process's engines, recorded in the run database as `flowhost run` does
/// (the service is their executor and holds their leases).
#[derive(Clone)]
pub struct InProcess {
    executor: Executor,
    engine: Engine,
    fuel_engine: Engine,
    live: Arc<Live>,
}

impl InProcess {
    /// A starter running on `engine` (or `fuel_engine` for flows with a fuel budget), feeding
    /// `live`.
    pub(crate) fn new(
        executor: Executor,
        engine: Engine,
        fuel_engine: Engine,
        live: Arc<Live>,
    ) -> Self {
        Self {
            executor,
            engine,
            fuel_engine,
            live,
        }
    }

    fn engine_for(&self, flow: &FlowSpec) -> &Engine {
        if flow.needs_fuel() {
            &self.fuel_engine
        } else {
            &self.engine
        }
    }

    async fn start_run(
        &self,
        flow_file: &Path,
        store: Store,
        key: Option<&str>,
        traceparent: Option<&str>,
    ) -> Result<Started, StartError> {
        let flow = FlowSpec::from_file(flow_file)?;
        let engine = self.engine_for(&flow);
        let mut loaded = engine.load(&flow, store).await?;
        let flow_file = std::path::absolute(flow_file).unwrap_or_else(|_| PathBuf::from(flow_file));
        runs::record(&self.executor, &mut loaded, Some(&flow_file), key)?;
        self.executor.attach(&mut loaded, traceparent);
        let run_id = loaded.run_id().to_owned();
        let signal = self
            .live
            .track(&run_id, Vec::new(), FlowState::Pending, flow.needs_fuel())
            .ok_or_else(|| StartError::AlreadyRunning(run_id.clone()))?;
        let (live, id, this) = (self.live.clone(), run_id.clone(), self.clone());
        tokio::spawn(async move {
            let report = loaded.run().await;
            let timeout = report.as_ref().ok().and_then(wait_timeout);
            live.finish(&id, report.map(|r| r.state).map_err(StartError::from));
            if let Some(due) = timeout {
                this.resume_at(&id, due);
            }
        });
        match started(signal, run_id).await {
            Err(StartError::Stopped(stopped)) => match runs::already_started(&stopped) {
                Some(existing) => Ok(Started::existing(existing.to_owned())),
                None => Err(StartError::Stopped(stopped)),
            },
            started => started,
        }
    }

    async fn resume_run(&self, run_id: &str) -> Result<Started, StartError> {
        let resumption = Resumption::open(self.executor.db().as_ref(), run_id)?;
        let record = resumption.record();
        let recorded = events::recorded(record, &mut Vec::new());
        let signal = self
            .live
            .track(
                run_id,
                recorded,
                record.summary.state,
                resumption.flow().needs_fuel(),
            )
            .ok_or_else(|| StartError::AlreadyRunning(run_id.to_owned()))?;
        let engine = self.engine_for(resumption.flow()).clone();
        let (live, executor, id) = (self.live.clone(), self.executor.clone(), run_id.to_owned());
        let this = self.clone();
        tokio::spawn(async move {
            let report = resumption.run(&executor, &engine, false).await;
            let timeout = report.as_ref().ok().and_then(wait_timeout);
            live.finish(&id, report.map(|r| r.state).map_err(StartError::from));
            if let Some(due) = timeout {
                this.resume_at(&id, due);
            }
        });
        started(signal, run_id.to_owned()).await
    }

    async fn revert_run(&self, run_id: &str) -> Result<Started, StartError> {
        let resumption = Resumption::open(self.executor.db().as_ref(), run_id)?;
        let record = resumption.record();
        let recorded = events::recorded(record, &mut Vec::new());
        let signal = self
            .live
            .track(
                run_id,
                recorded,
                record.summary.state,
                resumption.flow().needs_fuel(),
            )
            .ok_or_else(|| StartError::AlreadyRunning(run_id.to_owned()))?;
        let engine = self.engine_for(resumption.flow()).clone();
        let (live, executor, id) = (self.live.clone(), self.executor.clone(), run_id.to_owned());
        tokio::spawn(async move {
            let outcome = resumption
                .revert(&executor, &engine, false)
                .await
                .map(|report| report.state)
                .map_err(StartError::from);
            live.finish(&id, outcome);
        });
        started(signal, run_id.to_owned()).await
    }

    async fn restart_run(&self, run_id: &str, from: &str) -> Result<Started, StartError> {
        let restart = Restart::open(self.executor.db().as_ref(), run_id, from)?;
        let fuel = restart.flow().needs_fuel();
        let engine = self.engine_for(restart.flow()).clone();
        let restarted = restart.load(&self.executor, &engine).await?;
        let new_id = restarted.run_id().to_owned();
        let signal = self
            .live
            .track(&new_id, Vec::new(), FlowState::Pending, fuel)
            .ok_or_else(|| StartError::AlreadyRunning(new_id.clone()))?;
        let (live, id) = (self.live.clone(), new_id.clone());
        tokio::spawn(async move {
            let outcome = restarted
                .run()
                .await
                .map(|report| report.state)
                .map_err(|e| StartError::from(ResumeFailure::from(e)));
            live.finish(&id, outcome);
        });
        started(signal, new_id).await
    }
}

/// When a run the engine left WAITING for a signal stops waiting: the earliest timeout of
/// its signal waits, if any has one.
fn wait_timeout(report: &flowhost_engine::RunReport) -> Option<std::time::SystemTime> {
    if report.state != FlowState::Waiting {
        return None;
    }
    report
        .tasks
        .iter()
        .filter_map(|t| t.waiting.as_ref()?["due"].as_str())
        .filter_map(|due| flowhost_core::flow::parse_rfc3339(due).ok())
        .min()
}

impl InProcess {
    /// Resumes WAITING run `run_id` here at `due`, its wait's timeout, so that the wait fails
    /// `signal-timeout` then and the flow reverts (a signal that comes first resumes it
    /// sooner, through the signal route). Kept in memory only: after a restart, the timeout
    /// is checked when the run is next resumed.
    fn resume_at(&self, run_id: &str, due: std::time::SystemTime) {
        let (this, id) = (self.clone(), run_id.to_owned());
        let wake: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            let left = due
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(left).await;
            // Already going on (a signal came), or finished: nothing to do.
            if let Err(error) = this.resume_run(&id).await {
                tracing::debug!(run = %id, "not resumed at its wait's timeout: {error}");
            }
        });
        tokio::spawn(wake);
    }
}

/// Waits for the run's first recorded transition (or its end before one).
async fn started(signal: super::live::StartSignal, run_id: String) -> Result<Started, StartError> {
    match signal.await {
        Ok(Ok(())) | Err(_) => Ok(Started::new(run_id)),
        Ok(Err(error)) => Err(error),
    }
}

impl RunStarter for InProcess {
    /// The run starts at once, so no queue orders it: `priority` has nothing to act on.
    fn start<'a>(
        &'a self,
        flow_file: &'a Path,
        store: Store,
        key: Option<&'a str>,
        traceparent: Option<&'a str>,
        _priority: i32,
    ) -> StartFuture<'a> {
        Box::pin(self.start_run(flow_file, store, key, traceparent))
    }

    fn resume<'a>(&'a self, run_id: &'a str) -> StartFuture<'a> {
        Box::pin(self.resume_run(run_id))
    }

    fn suspend(&self, run_id: &str) {
        match self.live.get(run_id) {
            Some(log) if log.fuel => self.fuel_engine.suspend(run_id),
            Some(_) => self.engine.suspend(run_id),
            None => {}
        }
    }

    fn revert<'a>(&'a self, run_id: &'a str) -> StartFuture<'a> {
        Box::pin(self.revert_run(run_id))
    }

    fn restart<'a>(&'a self, run_id: &'a str, from: &'a str) -> StartFuture<'a> {
        Box::pin(self.restart_run(run_id, from))
    }

    fn cancel(&self, run_id: &str) -> bool {
        match self.live.get(run_id) {
            Some(log) if log.fuel => self.fuel_engine.cancel(run_id),
            Some(_) => self.engine.cancel(run_id),
            None => return false,
        }
        true
    }
}

/// Queues runs in a shared PostgreSQL run database for `flowhost worker`s on any host, as
/// `flowhost submit` does: the service validates the flow, stores it and its plugins by hash
/// and returns at once; workers claim, execute, resume and cancel the runs.
pub struct Queue {
    db: Arc<PgRunDb>,
    engine: Engine,
    fuel_engine: Engine,
    policy: Policy,
}

impl Queue {
    /// A starter validating flows on `engine` (or `fuel_engine` for flows with a fuel
    /// budget) and queueing their runs in `db`.
    pub fn new(db: Arc<PgRunDb>, engine: Engine, fuel_engine: Engine) -> Self {
        Self {
            db,
            engine,
            fuel_engine,
            policy: Policy::default(),
        }
    }

    /// Refuses to queue runs whose grants fall outside `policy` (what the workers accept).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    async fn submit(
        &self,
        flow_file: &Path,
        store: Store,
        key: Option<&str>,
        traceparent: Option<&str>,
        priority: i32,
    ) -> Result<Started, StartError> {
        let flow = FlowSpec::from_file(flow_file)?;
        self.policy.validate(&flow)?;
        let engine = if flow.needs_fuel() {
            &self.fuel_engine
        } else {
            &self.engine
        };
        let loaded = engine.load(&flow, store).await?;
        let flow_file = std::path::absolute(flow_file).unwrap_or_else(|_| PathBuf::from(flow_file));
        match runs::submit(&self.db, &loaded, &flow_file, key, traceparent, priority).await {
            Ok(run_id) => Ok(Started::new(run_id)),
            Err(WorkerError::Db(RunDbError::Exists { run, .. })) => Ok(Started::existing(run)),
            Err(error) => Err(error.into()),
        }
    }

    async fn requeue(&self, run_id: &str) -> Result<Started, StartError> {
        let (db, id) = (self.db.clone(), run_id.to_owned());
        let queued = tokio::task::spawn_blocking(move || db.requeue(&id))
            .await
            .map_err(|e| StartError::NotQueueable(format!("{run_id} ({e})")))??;
        if queued {
            Ok(Started::new(run_id.to_owned()))
        } else {
            Err(StartError::NotQueueable(run_id.to_owned()))
        }
    }
}

impl RunStarter for Queue {
    fn start<'a>(
        &'a self,
        flow_file: &'a Path,
        store: Store,
        key: Option<&'a str>,
        traceparent: Option<&'a str>,
        priority: i32,
    ) -> StartFuture<'a> {
        Box::pin(self.submit(flow_file, store, key, traceparent, priority))
    }

    /// Workers resume a queued run by themselves once its lease expires; this hands a run
    /// that was not queued (run with `flowhost run --db`, its flow stored) to them as well.
    fn resume<'a>(&'a self, run_id: &'a str) -> StartFuture<'a> {
        Box::pin(self.requeue(run_id))
    }

    fn revert<'a>(&'a self, run_id: &'a str) -> StartFuture<'a> {
        let run = run_id.to_owned();
        Box::pin(async move {
            Err(StartError::NotForWorkers {
                run,
                what: "revert",
            })
        })
    }

    fn restart<'a>(&'a self, run_id: &'a str, _from: &'a str) -> StartFuture<'a> {
        let run = run_id.to_owned();
        Box::pin(async move {
            Err(StartError::NotForWorkers {
                run,
                what: "restart",
            })
        })
    }

    /// The signal's row woke the workers: one claims the run (see `PgRunDb::claim`).
    fn signalled<'a>(&'a self, run_id: &'a str) -> StartFuture<'a> {
        Box::pin(std::future::ready(Ok(Started::new(run_id.to_owned()))))
    }

    fn cancel(&self, run_id: &str) -> bool {
        // The request is a row update: wait for it on this thread without stalling the
        // runtime's other tasks.
        tokio::task::block_in_place(|| self.db.request_cancel(run_id)).unwrap_or_else(|error| {
            tracing::warn!(run = %run_id, "cannot ask the run to cancel: {error}");
            false
        })
    }

    fn queue_depth(&self) -> Result<Option<i64>, RunDbError> {
        self.db.waiting().map(Some)
    }

    fn awaits_worker(&self, run_id: &str) -> Result<bool, RunDbError> {
        self.db.awaits_worker(run_id)
    }
}
