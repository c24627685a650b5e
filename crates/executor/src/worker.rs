//! Submitted runs and the workers that execute them, on a shared PostgreSQL run database.
//!
//! [`submit`] queues a run of a validated flow: the flow file's bytes and every plugin go into
//! the database by SHA-256, so a worker on another machine needs nothing but the database URL.
//! A [`Worker`] claims queued runs (new ones, and unfinished ones whose lease expired), takes
//! each run's lease in the claiming transaction, fetches the plugins it lacks into its plugin
//! folder, and runs or resumes the run with the database as its journal — the same
//! `DbJournal`, heartbeat and fencing as every recorded run. It wakes on `NOTIFY` and polls as
//! a fallback, and stops claiming and finishes its runs when asked to drain.
//!
//! Directory grants are host paths: a worker resolves a relative grant against the folder the
//! flow file was submitted from, on its own machine. Workers of a flow that grants folders
//! must see them at the same paths (a shared mount, or the same layout on every host).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::journal::DbJournal;
use crate::Executor;
use flowhost_core::class::{Classify, ErrorClass};
use flowhost_core::events::FlowState;
use flowhost_core::flow::FlowSpec;
use flowhost_core::plan::ValidationError;
use flowhost_engine::{Engine, LoadedFlow, ResumeError, RunError};
use flowhost_runs::{Lease, NewRun, RunDb, RunDbError, RunRecord, sha256_hex};
use flowhost_runs_postgres::Claimed;
use flowhost_runs_postgres::PgRunDb;
use flowhost_runtime::{EngineConfig, PluginError};
use std::os::unix::fs::DirBuilderExt;

use crate::Policy;

/// The longest timer (`wait = { for_ms | until }`) a worker sleeps out holding its run; a
/// longer one leaves the run WAITING, released, for any worker to claim when it is due.
pub const HOLD_TIMERS: Duration = Duration::from_secs(1);

/// How often at most a busy worker reads which of its runs were asked to cancel: a cancel
/// reaches a run within this (or within the poll interval, when no run ends meanwhile).
const READ_CANCELS_EVERY: Duration = Duration::from_millis(100);

/// Why a submission, or one run of a worker, failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The run database failed.
    #[error(transparent)]
    Db(#[from] RunDbError),
    /// The flow does not validate (on this worker: a grant or variable it lacks).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The flow file cannot be read.
    #[error("cannot read flow file {}: {source}", path.display())]
    FlowFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A submitted run's stored flow or plugin is missing or damaged.
    #[error("run {run}: {problem}")]
    Stored {
        /// The run.
        run: String,
        /// What is wrong.
        problem: String,
    },
    /// The run's grants fall outside this worker's policy: it is refused for good.
    #[error("run {run} is refused by this worker's policy: {reasons}")]
    Refused {
        /// The run.
        run: String,
        /// Each grant outside the policy, naming its task.
        reasons: String,
    },
    /// A plugin could not be loaded from this worker's copy or the database's.
    #[error(transparent)]
    Plugin(#[from] flowhost_runtime::PluginError),
    /// The plugin folder cannot be written.
    #[error("plugin folder {}: {source}", path.display())]
    PluginDir {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The engine could not start.
    #[error("starting the engine: {0}")]
    Engine(String),
    /// The run's journal failed (fenced, or the database failed): it stopped at its last
    /// recorded transition.
    #[error(transparent)]
    Stopped(#[from] RunError),
    /// The record could not be resumed.
    #[error(transparent)]
    Resume(#[from] ResumeError),
}

/// Queues a run of `loaded` (loaded, so validated, from `flow_file`) in `db`: stores the flow
/// file's bytes and each plugin's by SHA-256 (once, however many runs use them), records the
/// run PENDING and unleased, and notifies the workers. Returns the run's id. The flow's queue
/// limits (`concurrency`, `rate`) are recorded as this submission declares them.
///
/// With an idempotency `key` that a run of the flow already holds, nothing is stored or
/// queued: [`RunDbError::Exists`] names that run.
/// A `traceparent` (see [`crate::is_traceparent`]) is kept with the run: the worker's
/// listeners get it, so its spans join the submitter's trace. Workers claim queued runs by
/// `priority`, higher first, then in submission order.
pub async fn submit(
    db: &PgRunDb,
    loaded: &LoadedFlow,
    flow_file: &Path,
    key: Option<&str>,
    traceparent: Option<&str>,
    priority: i32,
) -> Result<String, WorkerError> {
    let text = std::fs::read(flow_file).map_err(|source| WorkerError::FlowFile {
        path: flow_file.to_path_buf(),
        source,
    })?;
    let mut origin = crate::origin_of(loaded, Some(flow_file))?;
    // The hash of the bytes stored: what the workers will run is the flow that validated here.
    origin.flow_hash = Some(sha256_hex(&text));
    let plugins = origin
        .plugins
        .iter()
        .map(|p| (p.sha256.clone(), p.path.clone()))
        .collect();
    let run = NewRun {
        id: loaded.run_id().to_owned(),
        flow: loaded.name().to_owned(),
        origin,
        initial_store: loaded.initial_store().clone(),
        tasks: loaded.plan().map(|t| t.name.to_owned()).collect(),
        key: key.map(str::to_owned),
        priority,
    };
    // The flow's queue limits, as this submission declares them, for the workers' claims.
    if let Ok(spec) = FlowSpec::from_toml(&String::from_utf8_lossy(&text)) {
        db.set_flow_limits(&run.flow, spec.concurrency, spec.rate)
            .await?;
    }
    db.submit(&run, text, plugins, traceparent).await?;
    Ok(run.id)
}

/// A worker: claims queued runs from a PostgreSQL run database and executes them.
pub struct Worker {
    db: Arc<PgRunDb>,
    executor: Executor,
    config: EngineConfig,
    concurrency: usize,
    flows: Vec<String>,
    poll: Duration,
    heartbeat: Duration,
    plugin_dir: PathBuf,
    policy: Policy,
    /// One engine without fuel metering and, once a flow needs it, one with.
    engines: Mutex<Vec<(bool, Engine)>>,
    /// Flow files fetched and checked against their hash, by hash: the runs of one flow
    /// fetch it once.
    flow_texts: Mutex<HashMap<String, String>>,
}

/// What a worker did, when it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Runs it took (claimed).
    pub claimed: usize,
    /// Runs it finished (any final state).
    pub finished: usize,
    /// Runs it abandoned: fenced, stopped by a database failure, or handed back (another
    /// worker resumes them).
    pub abandoned: usize,
}

impl Worker {
    /// A worker on `db` executing as `executor` (whose lease ttl its leases get), with engines
    /// built from `config`, its fetched plugins kept in `plugin_dir`. The plugin folder is
    /// protected as the compiled cache is: no task of any flow may be granted a directory
    /// reaching it (a task that could write there could replace another flow's plugin).
    pub fn new(
        db: Arc<PgRunDb>,
        executor: Executor,
        config: EngineConfig,
        plugin_dir: impl Into<PathBuf>,
    ) -> Self {
        let plugin_dir = plugin_dir.into();
        // Absolute: flows name their plugins by this path, which must not depend on a flow's
        // folder.
        let plugin_dir = std::path::absolute(&plugin_dir).unwrap_or(plugin_dir);
        Self {
            db,
            executor,
            config: config.protect(plugin_dir.clone()),
            concurrency: 8,
            flows: Vec::new(),
            poll: Duration::from_secs(1),
            heartbeat: Duration::from_secs(10),
            plugin_dir,
            policy: Policy::default(),
            engines: Mutex::new(Vec::new()),
            flow_texts: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts only runs whose grants lie within `policy`; the others end FAILURE when
    /// claimed, naming each grant outside it. By default every grant is accepted.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Runs at most `n` runs at once (at least one).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Claims only runs of these flows (by name); none: every flow.
    pub fn flows(mut self, flows: Vec<String>) -> Self {
        self.flows = flows;
        self
    }

    /// How often it looks for work without a notification: runs whose lease expired wake
    /// nobody, and a notification may be lost while the listening connection is down.
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(10));
        self
    }

    /// How often it records that it is alive (`flowhost workers`).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(100));
        self
    }

    /// Claims and executes runs until `drain` completes, then stops claiming, lets the runs in
    /// flight finish, and returns — unless `hand_back` completes first: then the runs in
    /// flight are stopped where they stand and their leases released, so that other workers
    /// resume them at once instead of after the lease expires (the task each was executing is
    /// executed again there). Database failures are logged and retried: the worker outlives a
    /// database restart.
    pub async fn run(
        self,
        drain: impl Future<Output = ()>,
        hand_back: impl Future<Output = ()>,
    ) -> Result<WorkerSummary, WorkerError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.plugin_dir)
            .map_err(|source| WorkerError::PluginDir {
                path: self.plugin_dir.clone(),
                source,
            })?;
        // Whoever can write the folder can make every later run of a plugin run their code,
        // were the files not checked; they are, but a folder open to others is a mistake to
        // refuse, not to work around.
        flowhost_runtime::check_private(&self.plugin_dir, "plugin folder").map_err(|e| {
            WorkerError::PluginDir {
                path: self.plugin_dir.clone(),
                source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.0),
            }
        })?;
        if !self.policy.is_restricted() {
            tracing::warn!(
                "no --allow-dir, --allow-env or --allow-net: whoever can submit runs may grant their tasks any directory, variable or network destination of this host"
            );
        }
        let owner = self.executor.owner().clone();
        let this = Arc::new(self);
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(this.db.clone(), wake.clone()));
        let beat = tokio::spawn({
            let this = this.clone();
            async move {
                loop {
                    if let Err(error) = this
                        .db
                        .worker_beat(this.executor.owner(), this.concurrency, &this.flows)
                        .await
                    {
                        tracing::warn!("{error}");
                    }
                    tokio::time::sleep(this.heartbeat).await;
                }
            }
        });
        tracing::info!(worker = %owner.id, "worker started: up to {} runs at once", this.concurrency);
        let mut running: JoinSet<bool> = JoinSet::new();
        // The leases of the runs in flight, to release when they are handed back.
        let held: Arc<Mutex<HashMap<String, Lease>>> = Arc::default();
        let mut summary = WorkerSummary::default();
        let mut backoff = Duration::from_millis(100);
        let mut read_cancels_at = tokio::time::Instant::now();
        tokio::pin!(drain);
        loop {
            let free = this.concurrency.saturating_sub(running.len());
            let mut claimed_now = 0;
            if free > 0 {
                match this
                    .db
                    .claim(&owner, this.executor.lease_ttl, free as i64, &this.flows)
                    .await
                {
                    Ok(claimed) => {
                        backoff = Duration::from_millis(100);
                        claimed_now = claimed.len();
                        for claim in claimed {
                            summary.claimed += 1;
                            let (this, held) = (this.clone(), held.clone());
                            let id = claim.lease.run_id.clone();
                            lock(&held).insert(id.clone(), claim.lease.clone());
                            running.spawn(async move {
                                let finished = this.execute(claim).await;
                                lock(&held).remove(&id);
                                finished
                            });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(
                            "cannot claim runs (retrying in {} ms): {error}",
                            backoff.as_millis()
                        );
                        tokio::select! {
                            _ = &mut drain => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            // Not at every turn of the loop: with many runs finishing, a read per turn made
            // the loop — and so the claims — wait on it.
            if !running.is_empty() && tokio::time::Instant::now() >= read_cancels_at {
                this.forward_cancels(&held).await;
                read_cancels_at = tokio::time::Instant::now() + READ_CANCELS_EVERY;
            }
            // All slots were filled: more may be waiting, so look again as soon as one frees.
            let more = claimed_now == free && free > 0;
            tokio::select! {
                _ = &mut drain => break,
                Some(done) = running.join_next(), if !running.is_empty() => {
                    count(&mut summary, done);
                    // Every run that ended meanwhile too: the next claim fills all their slots
                    // in one statement instead of one claim per run.
                    while let Some(done) = running.try_join_next() {
                        count(&mut summary, done);
                    }
                }
                _ = wake.notified(), if !more => {}
                _ = tokio::time::sleep(this.poll), if !more => {}
                _ = std::future::ready(()), if more => {}
            }
        }
        tracing::info!(worker = %owner.id, "draining: {} run(s) in flight", running.len());
        listener.abort();
        tokio::pin!(hand_back);
        loop {
            tokio::select! {
                done = running.join_next() => match done {
                    Some(done) => count(&mut summary, done),
                    None => break,
                },
                // A run cancelled while the worker drains stops at once too: draining never
                // waits on a task its operator asked to stop.
                _ = tokio::time::sleep(this.poll) => this.forward_cancels(&held).await,
                _ = &mut hand_back, if !running.is_empty() => {
                    running.abort_all();
                    while let Some(done) = running.join_next().await {
                        count(&mut summary, done);
                    }
                    let leases: Vec<Lease> = lock(&held).drain().map(|(_, lease)| lease).collect();
                    tracing::info!(worker = %owner.id, "handing back {} run(s)", leases.len());
                    for lease in leases {
                        // A write still in flight for the stopped run is fenced by the release.
                        let db = this.db.clone();
                        let run = lease.run_id.clone();
                        match tokio::task::spawn_blocking(move || db.release(&lease)).await {
                            Ok(Ok(())) => tracing::info!(run = %run, "handed back"),
                            Ok(Err(error)) => tracing::warn!(run = %run, "cannot hand back (its lease expires by itself): {error}"),
                            Err(error) => tracing::warn!(run = %run, "cannot hand back: {error}"),
                        }
                    }
                    break;
                }
            }
        }
        beat.abort();
        if let Err(error) = this.db.worker_stopped(&owner).await {
            tracing::warn!("{error}");
        }
        Ok(summary)
    }

    /// Cancels, on this worker's engines, the runs it holds that were asked to cancel
    /// (through `flowhost serve`, from any host): each stops its task in flight at once and
    /// reverts what ran.
    async fn forward_cancels(&self, held: &Mutex<HashMap<String, Lease>>) {
        match self.db.cancel_requests(self.executor.owner()).await {
            Ok(ids) => {
                for id in ids.into_iter().filter(|id| lock(held).contains_key(id)) {
                    for engine in lock(&self.engines).iter().map(|(_, engine)| engine) {
                        engine.cancel(&id);
                    }
                }
            }
            Err(error) => tracing::warn!("cannot read cancel requests: {error}"),
        }
    }

    /// Executes one claimed run; true when it reached a final state here. A run refused for
    /// good — outside this worker's policy, or its stored flow or plugin missing or failing
    /// its hash — ends FAILURE at once with the reason, rather than being claimed and
    /// refused again at every lease expiry.
    async fn execute(&self, claim: Claimed) -> bool {
        let id = claim.lease.run_id.clone();
        let lease = claim.lease.clone();
        let span = tracing::info_span!("run", id = %id);
        match tracing::Instrument::instrument(self.execute_claimed(claim), span).await {
            // Done with here too: released, for any worker to claim when it can go on.
            Ok(FlowState::Waiting) => {
                tracing::info!(run = %id, "run WAITING: released until its signal or due time");
                true
            }
            Ok(state) => {
                tracing::info!(run = %id, "run ended {state}");
                true
            }
            Err(error @ (WorkerError::Refused { .. } | WorkerError::Stored { .. })) => {
                let reason = match &error {
                    WorkerError::Refused { reasons, .. } => {
                        format!(
                            "refused by the policy of worker {}: {reasons}",
                            lease.owner.id
                        )
                    }
                    _ => error.to_string(),
                };
                match self.db.fail(&lease, &reason).await {
                    Ok(true) => {
                        tracing::warn!(run = %id, "run ended FAILURE: {reason}");
                        true
                    }
                    Ok(false) => {
                        tracing::warn!(run = %id, "run abandoned ({reason}); this worker no longer holds it");
                        false
                    }
                    Err(db) => {
                        tracing::warn!(run = %id, "run abandoned ({reason}); cannot record its failure: {db}");
                        false
                    }
                }
            }
            Err(error) => {
                tracing::warn!(run = %id, "run abandoned: {error}");
                false
            }
        }
    }

    async fn execute_claimed(&self, claim: Claimed) -> Result<FlowState, WorkerError> {
        let lease = claim.lease;
        let id = lease.run_id.clone();
        let record = self.read(&id).await?;
        let mut flow = self.flow_of(&record).await?;
        let problems = self.policy.check(&flow);
        if !problems.is_empty() {
            let reasons: Vec<String> = problems
                .iter()
                .map(|p| match &p.task {
                    Some(task) => format!("task `{task}`: {}", p.message),
                    None => p.message.clone(),
                })
                .collect();
            return Err(WorkerError::Refused {
                run: id,
                reasons: reasons.join("; "),
            });
        }
        let engine = self.engine(flow.needs_fuel())?;
        let hashes = self.plugins_of(&engine, &record, &mut flow).await?;
        let journal = DbJournal::start(
            self.executor.db().clone(),
            lease.clone(),
            self.executor.renew_every(),
        );
        // Not valid here (a grant or variable this host lacks): the lease is kept, not released,
        // so that no worker picks the run up again before it expires; the heartbeat stops with
        // the journal.
        let mut loaded = engine.load(&flow, record.initial_store.clone()).await?;
        // The plugins the flow loaded are those verified above (the engine reuses them by
        // path); checked again, from the hashes of the bytes that were compiled.
        for task in loaded.plan().filter(|task| task.wait.is_none()) {
            if hashes.get(task.name).map(String::as_str) != task.plugin_sha256 {
                return Err(WorkerError::Stored {
                    run: id,
                    problem: format!(
                        "task `{}` loaded plugin {} instead of the submitted one",
                        task.name,
                        task.plugin_sha256.unwrap_or_default()
                    ),
                });
            }
        }
        loaded.set_run_id(&id);
        journal.follow(loaded.suspender());
        loaded.journal(journal);
        // A timer longer than a claim takes leaves the run WAITING, holding no worker; any
        // worker claims it when it is due.
        loaded.hold_timers(HOLD_TIMERS);
        self.executor
            .attach(&mut loaded, claim.traceparent.as_deref());
        tracing::info!(run = %id, "claimed run of flow `{}` ({} after it was queued, token {})", flow.name, seconds(claim.waited), lease.token);
        if record.summary.state == FlowState::Pending {
            Ok(loaded.run().await?.state)
        } else {
            let db = self.executor.db().clone();
            let (held, origin) = (lease.clone(), record.origin.clone());
            tokio::task::spawn_blocking(move || db.resumed(&held, &origin))
                .await
                .map_err(|e| WorkerError::Stored {
                    run: id.clone(),
                    problem: e.to_string(),
                })??;
            tracing::info!(run = %id, "resuming from {}", record.summary.state);
            Ok(loaded.resume(record.checkpoint()).await?.state)
        }
    }

    async fn read(&self, id: &str) -> Result<RunRecord, WorkerError> {
        let (db, run) = (self.db.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || db.get(&run))
            .await
            .map_err(|e| WorkerError::Stored {
                run: id.to_owned(),
                problem: e.to_string(),
            })??
            .ok_or_else(|| WorkerError::Stored {
                run: id.to_owned(),
                problem: "the run was deleted".into(),
            })
    }

    /// The run's flow as submitted (its plugins still the submitter's paths).
    async fn flow_of(&self, record: &RunRecord) -> Result<FlowSpec, WorkerError> {
        let run = &record.summary.id;
        let stored = |problem: String| WorkerError::Stored {
            run: run.clone(),
            problem,
        };
        let hash = record
            .origin
            .flow_hash
            .as_deref()
            .ok_or_else(|| stored("it has no stored flow file".into()))?;
        let known = lock(&self.flow_texts).get(hash).cloned();
        let text = match known {
            Some(text) => text,
            None => {
                let text = self.db.blob(hash).await?.ok_or_else(|| {
                    stored(format!("its flow file {hash} is not in the database"))
                })?;
                if sha256_hex(&text) != hash {
                    return Err(stored(format!(
                        "its stored flow file does not match its hash {hash}"
                    )));
                }
                let text = String::from_utf8(text)
                    .map_err(|_| stored("its stored flow file is not UTF-8".into()))?;
                lock(&self.flow_texts).insert(hash.to_owned(), text.clone());
                text
            }
        };
        let path = record.origin.flow_path.clone().unwrap_or_default();
        let mut flow = FlowSpec::from_toml(&text)
            .map_err(|e| stored(format!("its flow file {}: {e}", path.display())))?;
        flow.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(flow)
    }

    /// Points each task of `flow` at this worker's copy of its submitted plugin, loaded into
    /// `engine` verified; returns each task's plugin hash.
    async fn plugins_of(
        &self,
        engine: &Engine,
        record: &RunRecord,
        flow: &mut FlowSpec,
    ) -> Result<HashMap<String, String>, WorkerError> {
        let run = &record.summary.id;
        let by_task: HashMap<&str, &str> = record
            .origin
            .plugins
            .iter()
            .map(|p| (p.task.as_str(), p.sha256.as_str()))
            .collect();
        let mut hashes = HashMap::new();
        // A wait entry has no plugin to fetch.
        for (path, task) in flow
            .task_paths_mut()
            .into_iter()
            .filter(|(_, task)| task.wait.is_none())
        {
            let hash = by_task
                .get(path.as_str())
                .ok_or_else(|| WorkerError::Stored {
                    run: run.clone(),
                    problem: format!("task `{path}` has no recorded plugin"),
                })?;
            task.plugin = Some(self.plugin(engine, run, hash).await?);
            hashes.insert(path, (*hash).to_owned());
        }
        Ok(hashes)
    }

    /// This worker's copy of plugin `hash`, loaded into `engine` from bytes whose hash was
    /// checked — every time the file is read, not only when it is fetched: the file is read
    /// without following a symlink, hashed, and those very bytes compiled. A copy that is
    /// missing, a symlink, or holds other bytes is (re)fetched from the database, checked,
    /// written to a temporary file renamed over it (so concurrent runs never see half a
    /// plugin, and a symlink is replaced, not followed), and the fetched bytes are loaded.
    async fn plugin(&self, engine: &Engine, run: &str, hash: &str) -> Result<PathBuf, WorkerError> {
        let path = self.plugin_dir.join(format!("{hash}.wasm"));
        match engine.plugin_verified(&path, hash).await {
            Ok(_) => return Ok(path),
            Err(PluginError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(refused @ (PluginError::Mismatch { .. } | PluginError::NotAPluginFile { .. })) => {
                tracing::warn!("{refused}; replacing it with the database's copy");
            }
            Err(other) => return Err(other.into()),
        }
        let stored = |problem: String| WorkerError::Stored {
            run: run.to_owned(),
            problem,
        };
        let bytes = self
            .db
            .blob(hash)
            .await?
            .ok_or_else(|| stored(format!("plugin {hash} is not in the database")))?;
        if sha256_hex(&bytes) != hash {
            return Err(stored(format!(
                "its stored plugin does not match its hash {hash}"
            )));
        }
        let dir_error = |source| WorkerError::PluginDir {
            path: self.plugin_dir.clone(),
            source,
        };
        let mut file = tempfile::NamedTempFile::new_in(&self.plugin_dir).map_err(dir_error)?;
        std::io::Write::write_all(&mut file, &bytes).map_err(dir_error)?;
        file.persist(&path).map_err(|e| dir_error(e.error))?;
        tracing::debug!("fetched plugin {hash} into {}", path.display());
        engine.plugin_from_bytes(&path, bytes, hash).await?;
        Ok(path)
    }

    fn engine(&self, fuel: bool) -> Result<Engine, WorkerError> {
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, engine)) = engines.iter().find(|(f, _)| *f == fuel) {
            return Ok(engine.clone());
        }
        let engine = Engine::with_config(&self.config.clone().fuel(fuel))
            .map_err(|e| WorkerError::Engine(e.to_string()))?;
        engines.push((fuel, engine.clone()));
        Ok(engine)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn count(summary: &mut WorkerSummary, done: Result<bool, tokio::task::JoinError>) {
    match done {
        Ok(true) => summary.finished += 1,
        _ => summary.abandoned += 1,
    }
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}

/// Keeps a LISTEN connection open, reconnecting after a pause when it breaks.
async fn listen(db: Arc<PgRunDb>, wake: Arc<Notify>) {
    loop {
        if let Err(error) = db.listen(wake.clone()).await {
            tracing::debug!("listening for submissions stopped: {error}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        wake.notify_one();
    }
}

impl Classify for WorkerError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Db(db) => db.class(),
            Self::Invalid(_) | Self::Resume(_) | Self::Refused { .. } => ErrorClass::Invalid,
            Self::Plugin(plugin) => plugin.class(),
            Self::FlowFile { .. } | Self::PluginDir { .. } => ErrorClass::Unreadable,
            Self::Stopped(_) => ErrorClass::Unavailable,
            Self::Stored { .. } | Self::Engine(_) => ErrorClass::Internal,
        }
    }
}
