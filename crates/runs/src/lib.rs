//! The run database: every run's record (flow, hashes, initial store, every transition,
//! arguments, results, errors) and its lease, so that an interrupted run can be resumed by
//! exactly one executor and operators can inspect runs afterwards.
//!
//! Backends implement [`RunDb`]; [`SqliteRunDb`] is the default, [`PgRunDb`] the one many
//! hosts share, where [`submit`] queues runs for [`Worker`]s. An [`Executor`] (a CLI
//! process, a worker) records a run with [`record`]: the run is created with the executor
//! holding its [`Lease`], and the run database becomes the run's journal — each transition is
//! committed, fenced by the lease, before listeners hear of it and before the run moves on; a
//! failed write stops the run. [`resume`] continues an interrupted run under a new lease.

mod lease;
pub mod row;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use flowhost_core::checkpoint::{Checkpoint, ElementCheckpoint, TaskCheckpoint};
use flowhost_core::class::{Classify, ErrorClass};
use flowhost_core::contract::{Outcome, Progress, TaskError};
use flowhost_core::events::{Event, FlowState, TaskState};
use flowhost_core::store::Store;

pub use lease::{
    DEFAULT_LEASE_TTL, FIRST_TOKEN, Lease, LeaseHolder, Owner, holder_may_be_alive, host_name,
    unix_now,
};

/// A journal write in flight, awaited by a caller on an async runtime.
pub type Writing<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RunDbError>> + Send + 'a>>;

/// [`RunDb::record`] and [`RunDb::record_new`] for a caller on an async runtime, from a
/// backend whose driver is async. Awaiting the write where it is made saves the hand-offs
/// a blocking call costs an async caller — to a blocking thread, from it to the backend's
/// runtime, and back again — which on a lone run were most of a commit's time.
pub trait AsyncWrites: Send + Sync {
    /// [`RunDb::record`], awaited.
    fn record<'a>(&'a self, events: &'a [Event], lease: &'a Lease) -> Writing<'a>;
    /// [`RunDb::record_new`], awaited.
    fn record_new<'a>(
        &'a self,
        run: &'a NewRun,
        lease: &'a Lease,
        events: &'a [Event],
    ) -> Writing<'a>;
}

/// Storage for run records. Implementations must be safe to share between the runs of a
/// process and must not lose records when several processes use the same storage.
///
/// Every write on behalf of a running run presents its [`Lease`] and must fail with
/// [`RunDbError::Fenced`] — writing nothing — when the lease's token is no longer the run's
/// current one or the lease was released.
pub trait RunDb: Send + Sync {
    /// Records a run about to start, with its tasks PENDING, and gives `owner` its first
    /// lease, whose token is [`FIRST_TOKEN`]. A run with an idempotency key is refused with
    /// [`RunDbError::Exists`] — writing nothing — when a run of the same flow already holds
    /// that key; of runs created at once with one key, exactly one is recorded.
    fn create(&self, run: &NewRun, owner: &Owner, ttl: Duration) -> Result<Lease, RunDbError>;
    /// Takes the lease of an existing run for `owner`: refused with [`RunDbError::Held`]
    /// while another holder's lease is live; otherwise the token grows by one, fencing out
    /// every earlier holder.
    fn acquire(&self, run_id: &str, owner: &Owner, ttl: Duration) -> Result<Lease, RunDbError>;
    /// Extends the lease by its ttl from now, or fails fenced.
    fn renew(&self, lease: &Lease) -> Result<(), RunDbError>;
    /// Gives the lease up (the run finished or stopped); a lease already taken is left alone.
    fn release(&self, lease: &Lease) -> Result<(), RunDbError>;
    /// Commits transitions (and the arguments, results or errors they carry) durably, all or
    /// none, and renews the lease, in one transaction; fails fenced without writing.
    fn record(&self, events: &[Event], lease: &Lease) -> Result<(), RunDbError>;
    /// Records a new run ([`RunDb::create`], under `lease`, its first) and its first
    /// transitions ([`RunDb::record`]): a backend that can commits both at once, so that a
    /// run's start costs one commit and the run never exists without them.
    fn record_new(&self, run: &NewRun, lease: &Lease, events: &[Event]) -> Result<(), RunDbError> {
        let created = self.create(run, &lease.owner, lease.ttl)?;
        debug_assert_eq!(&created, lease, "a new run's first lease");
        self.record(events, lease)
    }
    /// This database's journal writes for callers on an async runtime, when its driver is
    /// async (PostgreSQL). `None` when its calls block (SQLite): callers then move
    /// [`Self::record`] off their async threads themselves.
    fn async_writes(&self) -> Option<std::sync::Arc<dyn AsyncWrites>> {
        None
    }
    /// Notes that a run is being resumed, with the origin it is resumed from (hashes may
    /// differ from the recorded ones when resuming with force).
    fn resumed(&self, lease: &Lease, origin: &Origin) -> Result<(), RunDbError>;
    /// Runs matching `filter`, newest first, at most `filter.limit` of them: the database
    /// stops reading there, so a short list of a large database stays cheap.
    fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, RunDbError>;
    /// One run's full record, if there is such a run.
    fn get(&self, id: &str) -> Result<Option<RunRecord>, RunDbError> {
        self.read(id, None)
    }
    /// One run's record with every store value, argument, result and progress report longer
    /// than `max_value_bytes` (as JSON text) left out — `None`, and named in
    /// [`RunRecord::omitted`] — without reading it: a reader that only needs the run's
    /// states never loads a plugin's 100 MB result. `None` reads everything.
    fn read(
        &self,
        id: &str,
        max_value_bytes: Option<usize>,
    ) -> Result<Option<RunRecord>, RunDbError>;
    /// How many runs there are, by flow and state, counted by the database.
    fn count(&self) -> Result<Vec<RunCount>, RunDbError>;
    /// Deletes finished runs matching `filter` (or runs in `filter.state` when given), never
    /// one whose lease is live; returns how many.
    fn prune(&self, filter: &PruneFilter) -> Result<usize, RunDbError>;
    /// Asks run `run_id`, PENDING or RUNNING, to suspend: whichever executor holds it (on any
    /// host) reads the request ([`Self::suspend_requested`]) and suspends it. False when there
    /// is no such run in those states. The request lasts until the run is resumed
    /// ([`Self::resumed`] clears it).
    fn request_suspend(&self, run_id: &str) -> Result<bool, RunDbError>;
    /// Whether run `run_id` was asked to suspend since it was last resumed.
    fn suspend_requested(&self, run_id: &str) -> Result<bool, RunDbError>;
    /// Records that the run `lease.run_id` (just created, under its lease) restarts run
    /// `from`: both records then link to each other ([`Self::restart_links`]).
    fn link_restart(&self, lease: &Lease, from: &str) -> Result<(), RunDbError>;
    /// The run that run `run_id` restarts, and the runs restarting it, oldest first.
    fn restart_links(&self, run_id: &str) -> Result<RestartLinks, RunDbError>;
    /// Sends signal `name` with `data` to run `run_id`: kept, with the time it came, until a
    /// wait of the run takes it — a signal sent before the run reaches its wait is kept for
    /// it. Only an unfinished run keeps a signal. Returns the run's state when the signal was
    /// stored (a finished run's state when it was not); `None` when there is no such run.
    fn signal(
        &self,
        run_id: &str,
        name: &str,
        data: &Value,
    ) -> Result<Option<FlowState>, RunDbError>;
    /// Takes, for wait entry `task` of run `run_id`, the oldest signal `name` no other wait
    /// of the run took, and returns its data; `None` while none came. Idempotent per task: a
    /// signal `task` took before is given again (see `flowhost_engine::Journal::take_signal`).
    fn take_signal(
        &self,
        run_id: &str,
        task: &str,
        name: &str,
    ) -> Result<Option<Value>, RunDbError>;
}

/// How a run is linked to the runs it restarts or that restart it (`flowhost runs restart
/// --from TASK`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestartLinks {
    /// The run this one restarts, if it is a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarted_from: Option<String>,
    /// The runs restarting this one, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<String>,
}

/// Where each flow schedule stands, kept in the run database so that every `serve` sharing
/// it sees how far a schedule got: which tick last started a run (for catching up on ticks
/// missed while no serve ran) and since when it is known. Exactly one run per tick is not
/// this record's doing: the run a tick starts carries the idempotency key
/// [`tick_key`](flowhost_core::flow::tick_key), which at most one run of a flow holds.
pub trait ScheduleDb: Send + Sync {
    /// Notes schedule `index` of `flow` with its cron expression (updated when it changed)
    /// and returns its record; the first time, `since` is `now`.
    fn schedule_seen(
        &self,
        flow: &str,
        index: usize,
        cron: &str,
        now: &str,
    ) -> Result<ScheduleRecord, RunDbError>;
    /// Records that `tick` (RFC 3339, UTC) of schedule `index` of `flow` started run
    /// `run_id`, unless a later tick is recorded already: the last tick only moves forward.
    fn schedule_ticked(
        &self,
        flow: &str,
        index: usize,
        tick: &str,
        run_id: &str,
    ) -> Result<(), RunDbError>;
    /// Every schedule recorded, by flow and position.
    fn schedules(&self) -> Result<Vec<ScheduleRecord>, RunDbError>;
}

/// A schedule as the run database records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleRecord {
    /// The flow's name.
    pub flow: String,
    /// The entry's position in the flow's `schedule`, from 0.
    pub index: usize,
    /// Its cron expression, as last seen.
    pub cron: String,
    /// When a serve first saw it (UTC, RFC 3339): no tick before was ever due.
    pub since: String,
    /// The latest tick that started a run.
    pub last_tick: Option<String>,
    /// The run that tick started.
    pub last_run: Option<String>,
}

/// Why the run database failed.
#[derive(Debug, thiserror::Error)]
pub enum RunDbError {
    /// There is no database at the path (only inspection refuses to create one).
    #[error("no run database at {}", masked_path(path))]
    Missing {
        /// The database file.
        path: PathBuf,
    },
    /// The database could not be opened or created there, e.g. a read-only folder.
    #[error(
        "cannot open run database {}: {}",
        masked_path(path),
        mask_passwords(reason)
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is corrupt, not SQLite, or another application's database.
    #[error("{} is not a flowhost run database: {reason}", masked_path(path))]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// The schema is newer than this flowhost understands.
    #[error(
        "run database {} has schema version {found}, newer than this flowhost's {known}; use a newer flowhost",
        masked_path(path)
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// A read or write failed.
    #[error(
        "run database {}: {what}: {}",
        masked_path(path),
        mask_passwords(reason)
    )]
    Query {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// Another executor holds the run's lease and may be running it.
    #[error(
        "run {run} is held by another executor: {holder}; it is refused while that lease is live (retry later)"
    )]
    Held {
        /// The run's id.
        run: String,
        /// Who holds it.
        holder: Box<LeaseHolder>,
    },
    /// This executor's lease was taken over (or released): it must not write again.
    #[error("run {run}: this executor lost its lease (token {token}){}; it stops without writing", match holder { Some(h) => format!(" to {h}"), None => String::new() })]
    Fenced {
        /// The run's id.
        run: String,
        /// The token this executor held.
        token: i64,
        /// Who holds the lease now, if anyone.
        holder: Option<Box<LeaseHolder>>,
    },
    /// A run of the flow was already started with this idempotency key: nothing was
    /// recorded, and `run` is the run that was.
    #[error("run {run} of flow `{flow}` was already started with idempotency key `{key}`")]
    Exists {
        /// The flow's name.
        flow: String,
        /// The idempotency key.
        key: String,
        /// The run that holds the key.
        run: String,
    },
    /// A flow file or plugin could not be read to hash it.
    #[error("cannot hash {}: {source}", path.display())]
    Hash {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// `text` with every password it may hold replaced by `***`: the password of a URL's
/// userinfo (`postgres://app:PASS@db/runs`), a `password=` query parameter
/// (`postgres://app@db/runs?password=PASS`) and a `password=` pair of a key/value
/// connection string (`host=db password=PASS`, `password='PASS WITH SPACES'`), the key in any
/// case. The one function every message naming a database goes through — errors, logs, API
/// answers —, so that no form of a password is shown anywhere.
pub fn mask_passwords(text: &str) -> std::borrow::Cow<'_, str> {
    const MASK: &str = "***";
    let lower = text.to_ascii_lowercase();
    let userinfo = text.find("://").and_then(|scheme| {
        let rest = scheme + 3;
        let authority_end = text[rest..]
            .find(['/', '?', '#', ' '])
            .map_or(text.len(), |n| rest + n);
        let at = text[rest..authority_end].rfind('@')? + rest;
        let colon = text[rest..at].find(':')? + rest;
        Some((colon + 1, at))
    });
    let mut spans: Vec<(usize, usize)> = userinfo.into_iter().collect();
    let mut from = 0;
    while let Some(found) = lower[from..].find("password") {
        let key = from + found;
        from = key + "password".len();
        let starts_key = key == 0
            || matches!(
                lower.as_bytes()[key - 1],
                b'?' | b'&' | b';' | b' ' | b'\t' | b'\n'
            );
        let rest = lower[from..].trim_start_matches([' ', '\t']);
        if !starts_key || !rest.starts_with('=') {
            continue;
        }
        let mut start = text.len() - rest.len() + 1;
        start += text[start..].len() - text[start..].trim_start_matches([' ', '\t']).len();
        let end = if text[start..].starts_with('\'') {
            // A quoted value, with `\'` and `\\` escapes, runs to its closing quote.
            let bytes = text.as_bytes();
            let mut i = start + 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            (i + 1).min(text.len())
        } else {
            let end = text[start..]
                .find(['&', ' ', '\t', '\n', '#', ';'])
                .map_or(text.len(), |n| start + n);
            // A URL quoted in a message is followed by `: why`; that colon is the message's.
            if end > start + 1 && text[..end].ends_with(':') {
                end - 1
            } else {
                end
            }
        };
        if end > start {
            spans.push((start, end));
        }
        from = end.max(from);
    }
    if spans.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut masked = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            continue;
        }
        masked.push_str(&text[at..start]);
        masked.push_str(MASK);
        at = end;
    }
    masked.push_str(&text[at..]);
    std::borrow::Cow::Owned(masked)
}

/// A database's path or URL as messages show it: without its password.
fn masked_path(path: &Path) -> String {
    mask_passwords(&path.to_string_lossy()).into_owned()
}

/// Where a run's flow came from, with content hashes: what resume compares to refuse a run
/// whose flow file or plugins changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The flow file, absolute; `None` for flows built in code.
    pub flow_path: Option<PathBuf>,
    /// SHA-256 of the flow file's bytes, hex.
    pub flow_hash: Option<String>,
    /// Each task's plugin and its hash, in flow order.
    pub plugins: Vec<PluginHash>,
}

/// One task's plugin file and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginHash {
    /// The task entry.
    pub task: String,
    /// The component file, absolute.
    pub path: PathBuf,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

impl Origin {
    /// What differs from `recorded`, one line per change; empty when nothing did.
    pub fn changes_since(&self, recorded: &Origin) -> Vec<String> {
        let mut changes = Vec::new();
        if self.flow_hash != recorded.flow_hash {
            let path = recorded.flow_path.as_deref().unwrap_or(Path::new("?"));
            changes.push(format!(
                "flow file {} changed since the run was recorded",
                path.display()
            ));
        }
        for old in &recorded.plugins {
            match self.plugins.iter().find(|p| p.task == old.task) {
                Some(new) if new.path != old.path => changes.push(format!(
                    "task `{}` now uses plugin {} instead of {}",
                    old.task,
                    new.path.display(),
                    old.path.display()
                )),
                Some(new) if new.sha256 != old.sha256 => changes.push(format!(
                    "plugin {} of task `{}` changed since the run was recorded",
                    old.path.display(),
                    old.task
                )),
                _ => {}
            }
        }
        changes
    }
}

/// SHA-256 of a file's bytes, hex.
pub fn hash_file(path: &Path) -> Result<String, RunDbError> {
    let bytes = std::fs::read(path).map_err(|source| RunDbError::Hash {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(sha256_hex(&bytes))
}

/// SHA-256 of `bytes`, hex: how flow files and plugins are named by content.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id ([`LoadedFlow::run_id`]).
    pub id: String,
    /// The flow's name.
    pub flow: String,
    /// Flow file and hashes.
    pub origin: Origin,
    /// The store the run starts from.
    pub initial_store: Store,
    /// Task entry names, in flow order.
    pub tasks: Vec<String>,
    /// The idempotency key the run is started with: at most one run of a flow holds a key,
    /// until it is pruned, so a start repeated with the key starts nothing.
    pub key: Option<String>,
    /// Its priority among the runs waiting for a worker (higher first, then submission
    /// order); 0 by default.
    pub priority: i32,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs in this state.
    pub state: Option<FlowState>,
    /// Only runs of one of these flows; every flow when empty.
    pub flows: Vec<String>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

/// How many runs of one flow are in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunCount {
    /// The flow's name.
    pub flow: String,
    /// The state.
    pub state: FlowState,
    /// How many runs.
    pub runs: u64,
}

/// Which runs to delete.
#[derive(Debug, Clone, Default)]
pub struct PruneFilter {
    /// Only runs last updated longer ago than this.
    pub older_than: Option<Duration>,
    /// Only runs in this state; by default every finished run (SUCCESS, REVERTED, FAILURE),
    /// never one that could still be resumed.
    pub state: Option<FlowState>,
}

/// What pruning matched: the runs deleted (or that a dry run would delete) and those kept
/// because an executor holds them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pruned {
    /// Deleted, or to be deleted.
    pub runs: Vec<RunSummary>,
    /// Matched but kept: a live executor holds their lease (see [`RunSummary::lease`]).
    pub held: Vec<RunSummary>,
}

/// A run in a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub id: String,
    /// The flow's name.
    pub flow: String,
    /// Last recorded state; RUNNING or REVERTING after a crash means it can be resumed.
    pub state: FlowState,
    /// When it was recorded (UTC, ISO 8601).
    pub created_at: String,
    /// Its last transition.
    pub updated_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Why it ended, in a line.
    pub exit_reason: Option<String>,
    /// How often it was resumed.
    pub resumes: u32,
    /// The idempotency key it was started with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Its priority among the runs waiting for a worker: higher first, then submission
    /// order. 0 unless it was submitted or started with another.
    pub priority: i32,
    /// Who holds its lease, while the lease is live: the executor running it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseHolder>,
}

/// A run's full record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// Id, flow, state and times.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// Flow file and hashes it was recorded with.
    pub origin: Origin,
    /// The store it started from.
    pub initial_store: Store,
    /// The store it ended with.
    pub final_store: Option<Store>,
    /// Every task, in flow order.
    pub tasks: Vec<TaskRecord>,
    /// Inside maps: each element's call of each task, by task then element.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<ElementRecord>,
    /// The values a bounded [`RunDb::read`] left out because they were longer than its
    /// bound, with their length in bytes; they read as `null` (an empty initial store).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<Omitted>,
}

/// A value a bounded read left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Omitted {
    /// Which: `final_store`, `tasks[2].result`, …
    pub value: String,
    /// Its length as JSON text, in bytes.
    pub bytes: u64,
}

/// One task's record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// Position in the flow, from 0.
    pub index: usize,
    /// Entry name.
    pub name: String,
    /// Last recorded state.
    pub state: TaskState,
    /// The arguments (JSON text) it executed with.
    pub args: Option<String>,
    /// What its revert gets: the raw result or the error.
    pub outcome: Option<Outcome>,
    /// Its result, once it succeeded.
    pub result: Option<Value>,
    /// Why execute failed.
    pub error: Option<TaskError>,
    /// Why revert failed.
    pub revert_error: Option<TaskError>,
    /// How long execute took, in milliseconds.
    pub duration_ms: Option<f64>,
    /// How long revert took, in milliseconds.
    pub revert_duration_ms: Option<f64>,
    /// How many times execute started (more than one after a crash caught it RUNNING).
    pub executions: u32,
    /// How many times revert started.
    pub reverts: u32,
    /// What revert returned (contract 0.2), once it succeeded.
    pub revert_result: Option<Value>,
    /// The last progress the task reported.
    pub progress: Option<Progress>,
    /// The attempt last started, from 1 (0 before the first); above 1 when its retry policy
    /// tried again.
    pub attempt: u32,
    /// When its next attempt is due (unix seconds), while it waits to be retried.
    pub retry_at: Option<f64>,
    /// Inside subflows with a retry controller: each controller's iteration last recorded,
    /// outermost first (recorded since schema 4).
    pub iterations: Vec<u32>,
    /// Every state change, oldest first.
    pub history: Vec<StateChange>,
}

/// One element's call of a task inside a map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElementRecord {
    /// The task's position in the flow.
    pub index: usize,
    /// The element's position in the list, from 0.
    pub element: u32,
    /// Last recorded state.
    pub state: TaskState,
    /// The arguments (JSON text) it executed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// What its revert gets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Its result, once it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why execute (or revert) failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
}

/// One execution of a task, as its transitions recorded it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// From 1.
    pub attempt: u32,
    /// When it started (UTC, ISO 8601).
    pub started_at: String,
    /// How it ended: SUCCESS, FAILURE or RETRYING; RUNNING while (or when a crash left it)
    /// unfinished.
    pub state: TaskState,
    /// How long it ran, in milliseconds, once it ended.
    pub duration_ms: Option<f64>,
    /// Why it failed.
    pub error: Option<TaskError>,
    /// The pause before the next attempt, in milliseconds, when it was retried.
    pub backoff_ms: Option<f64>,
    /// The subflow controllers' iterations it ran in, outermost first: attempts count from 1
    /// again in each iteration.
    pub iterations: Vec<u32>,
}

impl TaskRecord {
    /// Every execution, in order, read from the history: an execution repeated after a crash
    /// caught it RUNNING appears twice under one attempt number.
    pub fn attempts(&self) -> Vec<Attempt> {
        let mut attempts: Vec<Attempt> = Vec::new();
        // A map's element calls are not attempts of the task: they are listed by element.
        for change in self.history.iter().filter(|c| c.element.is_none()) {
            if change.to == TaskState::Running {
                attempts.push(Attempt {
                    attempt: change.attempt.unwrap_or(attempts.len() as u32 + 1),
                    started_at: change.at.clone(),
                    state: TaskState::Running,
                    duration_ms: None,
                    error: None,
                    backoff_ms: None,
                    iterations: change.iterations.clone(),
                });
            } else if change.from == TaskState::Running
                && let Some(last) = attempts.last_mut()
            {
                last.state = change.to;
                last.duration_ms = Some(change.duration_ms);
                last.error = change.error.clone();
                last.backoff_ms = change.backoff_ms;
            }
        }
        attempts
    }
}

/// One recorded transition of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateChange {
    /// Previous state.
    pub from: TaskState,
    /// New state.
    pub to: TaskState,
    /// When (UTC, ISO 8601).
    pub at: String,
    /// Time spent in the previous state, in milliseconds.
    pub duration_ms: f64,
    /// The attempt it belongs to, from 1 (recorded since schema 3).
    pub attempt: Option<u32>,
    /// The error it carries, on FAILURE, RETRYING and REVERT_FAILURE.
    pub error: Option<TaskError>,
    /// On RETRYING: the pause until the next attempt is due, in milliseconds.
    pub backoff_ms: Option<f64>,
    /// The subflow controllers' iterations it belongs to, outermost first.
    pub iterations: Vec<u32>,
    /// Inside a map: the element (from 0) whose call it belongs to (recorded since schema 9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element: Option<u32>,
}

impl RunRecord {
    /// The record as `flowhost runs show --json` and the service's `GET /v1/runs/{id}` give
    /// it: the record with each task's `attempts` (read from its history) beside it.
    pub fn document(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut value = serde_json::to_value(self)?;
        if let Some(tasks) = value
            .get_mut("tasks")
            .and_then(serde_json::Value::as_array_mut)
        {
            for (json, task) in tasks.iter_mut().zip(&self.tasks) {
                json["attempts"] = serde_json::to_value(task.attempts())?;
            }
        }
        Ok(value)
    }

    /// Where the run stood, for [`LoadedFlow::resume`]; its creation time is what a resumed
    /// run's deadline counts from.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            state: self.summary.state,
            created_at: humantime::parse_rfc3339_weak(&self.summary.created_at).ok(),
            tasks: self
                .tasks
                .iter()
                .map(|t| TaskCheckpoint {
                    name: t.name.clone(),
                    state: t.state,
                    args: t.args.clone(),
                    outcome: t.outcome.clone(),
                    error: t.error.clone(),
                    revert_error: t.revert_error.clone(),
                    duration: Duration::from_secs_f64(
                        t.duration_ms.unwrap_or(0.0).max(0.0) / 1000.0,
                    ),
                    attempt: t.attempt,
                    retry_at: t
                        .retry_at
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(|s| std::time::UNIX_EPOCH + Duration::from_secs_f64(s)),
                    iterations: t.iterations.clone(),
                })
                .collect(),
            elements: self
                .elements
                .iter()
                .map(|e| ElementCheckpoint {
                    index: e.index,
                    element: e.element,
                    state: e.state,
                    args: e.args.clone(),
                    outcome: e.outcome.clone(),
                    error: e.error.clone(),
                })
                .collect(),
        }
    }
}

impl Classify for RunDbError {
    /// A database that cannot be opened is an unreadable input; one that fails while in
    /// use, or a lease this executor lost, is unavailable for now; a run another executor
    /// holds is held.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Missing { .. }
            | Self::Open { .. }
            | Self::Foreign { .. }
            | Self::TooNew { .. }
            | Self::Hash { .. } => ErrorClass::Unreadable,
            Self::Query { .. } | Self::Fenced { .. } => ErrorClass::Unavailable,
            Self::Held { .. } => ErrorClass::Held,
            Self::Exists { .. } => ErrorClass::Conflict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mask_passwords;

    #[test]
    fn every_form_of_a_password_is_masked() {
        for (given, shown) in [
            (
                "postgres://app:s3cret@db:5432/runs",
                "postgres://app:***@db:5432/runs",
            ),
            (
                "postgres://app@db/runs?password=s3cret&sslmode=disable",
                "postgres://app@db/runs?password=***&sslmode=disable",
            ),
            (
                "postgresql://db/runs?user=app&PASSWORD=s3cret",
                "postgresql://db/runs?user=app&PASSWORD=***",
            ),
            (
                "host=db user=app password=s3cret dbname=runs",
                "host=db user=app password=*** dbname=runs",
            ),
            (
                "host=db password = 'two words\\' quote' dbname=runs",
                "host=db password = *** dbname=runs",
            ),
            (
                "cannot open run database postgres://a:b@h/d?password=c: refused",
                "cannot open run database postgres://a:***@h/d?password=***: refused",
            ),
        ] {
            assert_eq!(mask_passwords(given), shown, "{given}");
        }
        for kept in [
            "postgres://app@db/runs",
            "/var/lib/flowhost/runs.db",
            "password authentication failed for user \"app\"",
            "mypassword=x is another key",
        ] {
            assert_eq!(mask_passwords(kept), kept);
        }
    }
}
