//! The engine: validates a flow against its plugins, then runs it — execute by the flow's
//! pattern (in order, or independent tasks at once), retry by each entry's policy, revert in
//! reverse dependency order on a failure — journaling every transition before listeners
//! hear of it.
//!
//! One [`Engine`] serves the whole process: it is cheap to clone, and every run it starts is
//! an independent future, so many flows run at once on a tokio runtime, each flow's tasks
//! ordered by its pattern. The pieces, in TaskFlow's terms: `validate` is the compiler's
//! check (over the plan of `flowhost_core::plan`: the tree of subflows and the dependency
//! graph), `task` the executor seam (a bound task calls the runtime), `schedule` the
//! scheduler and completer, `run` the state machine, `journal` the storage it writes before
//! notifying, `resume` the restore of a recorded run. [`conform`] checks a plugin against the
//! contract; [`scaffold`] writes new plugin projects.
//!
//! It depends on `flowhost-core` and `flowhost-runtime` only: run databases implement its
//! [`Journal`] from above (`flowhost-executor`), never the other way round.

mod batch;
mod cancel;
mod condition;
pub mod conform;
mod journal;
mod map;
mod prepared;
mod report;
mod resume;
mod run;
pub mod scaffold;
mod schedule;
mod suspend;
mod task;
mod validate;
mod wait;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub use batch::{Batch, BatchError, BatchInput, BatchOutcome, BatchSummary, Prepare};
pub use cancel::{CANCELLED, RUN_TIMEOUT};
pub use condition::CONDITION_FAILED;
pub use journal::{Append, Close, Journal, JournalError, RunError, Signalled};
pub use prepared::{PREPARED_FLOWS, Prepared};
pub use report::{MapReport, RunReport, SubflowReport, TaskReport};
pub use resume::ResumeError;
pub use suspend::Suspender;
pub use wait::SIGNAL_TIMEOUT;

use cancel::{Cancellations, Stop};
use flowhost_core::checkpoint::Checkpoint;
use flowhost_core::contract::TaskInfo;
use flowhost_core::events::Listener;
use flowhost_core::flow::{Controller, FlowSpec, RetryPolicy};
use flowhost_core::plan::{Problem, ValidationError};
use flowhost_core::store::Store;
use flowhost_runtime::{EngineConfig, Plugin, PluginError, Runtime, Sandbox, SetupError};
use prepared::PreparedCache;
use run::Run;
use suspend::Suspensions;
use task::BoundTask;

/// Loads and runs flows. Clone it freely: clones share the wasmtime engine, the loaded
/// plugins and the engine-wide listeners.
#[derive(Clone)]
pub struct Engine {
    runtime: Arc<Runtime>,
    listeners: Vec<Arc<dyn Listener>>,
    cancellations: Cancellations,
    prepared: Arc<PreparedCache>,
    suspensions: Suspensions,
}

impl Engine {
    /// Sets up wasmtime and the deadline ticker with the default [`EngineConfig`]: the
    /// compiled-component cache in `FLOWHOST_CACHE_DIR` or the user's cache directory, and
    /// the pooling allocator when the address space allows it.
    pub fn new() -> Result<Self, SetupError> {
        Self::with_config(&EngineConfig::default())
    }

    /// Sets up an engine with these settings (cache directory, pooling, fuel).
    pub fn with_config(config: &EngineConfig) -> Result<Self, SetupError> {
        Ok(Self {
            runtime: Arc::new(Runtime::with_config(config)?),
            listeners: Vec::new(),
            cancellations: Cancellations::default(),
            prepared: Arc::default(),
            suspensions: Suspensions::default(),
        })
    }

    /// Where compiled components are cached, if anywhere.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.runtime.cache().map(|cache| cache.dir())
    }

    /// Whether instances come from the pooling allocator (false: allocated on demand).
    pub fn is_pooling(&self) -> bool {
        self.runtime.is_pooling()
    }

    /// Paths no grant may reach (the compiled-code cache, its key, what the embedder
    /// protects): for building a [`crate::Sandbox`] outside a flow, as `flowhost call` does.
    pub fn protected(&self) -> &[std::path::PathBuf] {
        self.runtime.protected()
    }

    /// Registers a listener for every run this engine (and its later clones) starts.
    pub fn listen(&mut self, listener: Arc<dyn Listener>) {
        self.listeners.push(listener);
    }

    /// Asks the run `run_id` that this engine (or a clone) is running to stop and revert
    /// what ran: a task executing now is stopped at once (its instance dropped, as at a
    /// deadline) and fails with the error code [`CANCELLED`], then is reverted like any
    /// failed task; with nothing executing, the next task fails `cancelled` without being
    /// called. Nothing new starts, and pauses between attempts end. Ask only for a run that
    /// is going on, or about to start on this engine: the request is dropped when it ends.
    pub fn cancel(&self, run_id: &str) {
        self.cancellations.request(run_id, Stop::Cancelled);
    }

    /// Asks the run `run_id` that this engine (or a clone) is running to suspend: calls in
    /// flight finish (or fail at their deadline), nothing new starts, pauses between attempts
    /// end without their attempt, and once nothing is in flight the flow goes `SUSPENDING ->
    /// SUSPENDED` and its run returns, releasing its lease. Nothing is reverted; resuming the
    /// run goes on from its record. A request for a run about to start on this engine is kept
    /// for it.
    pub fn suspend(&self, run_id: &str) {
        self.suspensions.request(run_id);
    }

    /// Loads and describes one plugin, e.g. for `flowhost describe`.
    pub async fn plugin(&self, path: &Path) -> Result<Arc<Plugin>, PluginError> {
        self.runtime.load(path).await
    }

    /// Loads the plugin at `path` only if its bytes have the SHA-256 `sha256`, hashing the
    /// very bytes it compiles and never following a symlink ([`Runtime::load_verified`]);
    /// flows naming `path` then run that plugin.
    pub async fn plugin_verified(
        &self,
        path: &Path,
        sha256: &str,
    ) -> Result<Arc<Plugin>, PluginError> {
        self.runtime.load_verified(path, sha256).await
    }

    /// Loads `bytes` (whose SHA-256 must be `sha256`) as the plugin at `path` without
    /// reading the file ([`Runtime::load_bytes`]); flows naming `path` then run it.
    pub async fn plugin_from_bytes(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        sha256: &str,
    ) -> Result<Arc<Plugin>, PluginError> {
        self.runtime.load_bytes(path, bytes, sha256).await
    }

    /// Validates `flow` with `store` as the initial store (over the flow's `[store]`
    /// defaults). Every plugin is loaded and described and every requirement checked; all
    /// problems are reported together and nothing runs when there is any. The flow is
    /// prepared once ([`Self::prepare`]): loading it again, with any store, re-checks only
    /// what depends on that run.
    pub async fn load(&self, flow: &FlowSpec, store: Store) -> Result<LoadedFlow, ValidationError> {
        let prepared = self.prepare(flow).await;
        self.load_prepared(&prepared, store)
    }

    /// `flow` prepared for many runs: validated as far as no store matters, its plugins
    /// loaded and described, its entries bound. Kept by the engine (and its clones) while
    /// its plugins stay the ones loaded, so that another call with an equal flow returns it
    /// without describing or binding anything again. Never fails: what is wrong with the
    /// flow is reported when a run is loaded from it.
    pub async fn prepare(&self, flow: &FlowSpec) -> Arc<Prepared> {
        self.prepared.get(&self.runtime, flow).await
    }

    /// How many flows this engine (and its clones) prepared: a flow run many times counts
    /// once, unless it or a plugin of it changed.
    pub fn preparations(&self) -> u64 {
        self.prepared.made()
    }

    /// One run of a prepared flow with `store` as its initial store: the checks that depend
    /// on the store, and the sandboxes that read the host when a run loads (granted
    /// directories pinned for this run), are done now; everything else is shared.
    pub fn load_prepared(
        &self,
        prepared: &Prepared,
        store: Store,
    ) -> Result<LoadedFlow, ValidationError> {
        let (initial, tasks) = prepared.check_run(&self.runtime, store)?;
        Ok(LoadedFlow {
            id: next_run_id(),
            flow: prepared.flow.name.clone(),
            tasks,
            deps: prepared.deps.clone(),
            ignored_with: prepared.ignored_with.clone(),
            scopes: prepared.scopes.clone(),
            maps: prepared.maps.clone(),
            max_parallel: prepared.max_parallel,
            initial,
            provided: prepared.provided.clone(),
            listeners: self.listeners.clone(),
            journal: None,
            cancellations: self.cancellations.clone(),
            suspensions: self.suspensions.clone(),
            timeout: prepared.timeout,
            hold_timers: Duration::MAX,
        })
    }

    /// Every name a successful run of `flow` stores besides the initial store: each entry's
    /// `provides`, or what its plugin declares. Loads and describes the plugins that need it
    /// (the loads are kept for the runs); an unloadable one is a problem of the flow. Lets a
    /// caller check names before any run starts, when the initial stores are not known yet
    /// (a batch).
    pub async fn provided_names(
        &self,
        flow: &FlowSpec,
    ) -> Result<BTreeSet<String>, ValidationError> {
        let mut names = BTreeSet::new();
        let mut problems = Vec::new();
        let mut host_unavailable = false;
        for spec in flow.task_specs() {
            let plugin = spec.plugin.as_deref().filter(|_| spec.wait.is_none());
            match (&spec.provides, plugin) {
                (Some(provides), _) => names.extend(provides.iter().cloned()),
                (None, None) => {}
                (None, Some(plugin)) => match self.runtime.load(&flow.resolve(plugin)).await {
                    Ok(plugin) => names.extend(plugin.info().provides.iter().cloned()),
                    Err(error) => {
                        host_unavailable |= matches!(error, PluginError::Unavailable { .. });
                        problems.push(Problem {
                            task: Some(spec.name.clone()),
                            field: Some("plugin".into()),
                            message: error.to_string(),
                        });
                    }
                },
            }
        }
        // A map provides its `collect` besides what its tasks provide.
        for map in flowhost_core::plan::tree::Tree::of(flow).maps {
            names.insert(map.map.collect);
        }
        if problems.is_empty() {
            return Ok(names);
        }
        Err(ValidationError {
            flow: flow.name.clone(),
            problems,
            host_unavailable,
        })
    }

    /// Loads and runs in one step, in memory (no journal).
    pub async fn run(&self, flow: &FlowSpec, store: Store) -> Result<RunReport, FlowError> {
        Ok(self.load(flow, store).await?.run().await?)
    }
}

/// Why [`Engine::run`] produced no report: the flow is invalid, or its run stopped.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Validation found problems; nothing ran.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The run's journal failed; the run stopped at its last recorded transition.
    #[error(transparent)]
    Stopped(#[from] RunError),
}

/// A validated flow with its initial store, ready to run (once).
pub struct LoadedFlow {
    id: String,
    flow: String,
    /// The bound tasks: the prepared flow's, shared, except those with a sandbox of their
    /// own for this run.
    tasks: Arc<[Arc<BoundTask>]>,
    /// For each task, the tasks that must succeed before it starts (the flow's pattern as a
    /// graph; a linear flow is a chain).
    deps: Arc<flowhost_core::plan::graph::Deps>,
    /// For each task, the tasks whose IGNORE makes it IGNORE too.
    ignored_with: Arc<flowhost_core::plan::graph::Deps>,
    /// The subflows with a retry controller, each over a range of `tasks`.
    scopes: Arc<[flowhost_core::plan::tree::Scope]>,
    /// The subflows that map over a list, each over a range of `tasks`.
    maps: Arc<[flowhost_core::plan::tree::MapScope]>,
    /// Most calls of the run in flight at once.
    max_parallel: usize,
    initial: Store,
    /// The names the tasks and controllers provide (the initial store's come on top).
    provided: Arc<HashSet<String>>,
    listeners: Vec<Arc<dyn Listener>>,
    journal: Option<Arc<dyn Journal>>,
    cancellations: Cancellations,
    suspensions: Suspensions,
    /// The flow's `timeout_ms`: how long after it starts the run is stopped.
    timeout: Option<Duration>,
    /// Timers (`wait = { for_ms | until }`) with at most this long left are waited for in
    /// this process; a longer one leaves the run WAITING, holding no executor.
    hold_timers: Duration,
}

/// A task entry as validation resolved it, for `flowhost check` and tooling.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskPlan<'a> {
    /// Entry name.
    pub name: &'a str,
    /// The plugin's declaration; `None` for a wait entry.
    pub info: Option<&'a TaskInfo>,
    /// Component file, as the flow names it; `None` for a wait entry.
    pub plugin: Option<&'a Path>,
    /// The same file with symlinks resolved.
    pub plugin_file: Option<&'a Path>,
    /// SHA-256 (hex) of the component as loaded.
    pub plugin_sha256: Option<&'a str>,
    /// What a wait entry waits for: `{"signal", "timeout_ms"}`, `{"for_ms"}` or `{"until"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<Value>,
    /// `(argument, store name)` of each required argument drawn from the store.
    pub required: &'a [(String, String)],
    /// `(argument, store name)` of each optional argument.
    pub optional: &'a [(String, String)],
    /// Injected arguments.
    pub inject: &'a BTreeMap<String, Value>,
    /// Store names the result goes to.
    pub provides: &'a [String],
    /// Limits and grants.
    pub sandbox: &'a Sandbox,
    /// The entries that must succeed before this one starts, by the flow's pattern.
    pub depends_on: Vec<&'a str>,
    /// When a failed execute is tried again.
    pub retry: &'a RetryPolicy,
    /// Its `when` (a CEL expression): false leaves the task IGNORE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<&'a str>,
    /// The store names its `when` reads.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub when_reads: &'a [String],
    /// Its priority among tasks ready together.
    pub priority: i32,
}

/// A subflow that maps over a list as validation resolved it, for `flowhost check`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MapPlan<'a> {
    /// The subflow's path (`attach`).
    pub path: &'a str,
    /// What it maps over, each element's name, where the results go.
    pub map: &'a flowhost_core::flow::Map,
    /// The tasks each element's iteration runs, in order, by path.
    pub tasks: Vec<&'a str>,
}

/// A subflow with a retry controller as validation resolved it, for `flowhost check`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubflowPlan<'a> {
    /// The subflow's path (`schedule`, `reserve/quota`).
    pub path: &'a str,
    /// Its controller.
    pub retry: &'a Controller,
    /// The tasks it runs again, by path.
    pub tasks: Vec<&'a str>,
}

impl LoadedFlow {
    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.flow
    }

    /// Each entry as it will run.
    pub fn plan(&self) -> impl Iterator<Item = TaskPlan<'_>> {
        self.tasks
            .iter()
            .zip(self.deps.iter())
            .map(|(t, deps)| TaskPlan {
                name: &t.name,
                info: t.plugin.as_ref().map(|p| p.info()),
                plugin: t.plugin.as_ref().map(|p| p.path()),
                plugin_file: t.plugin.as_ref().map(|p| p.file()),
                plugin_sha256: t.plugin.as_ref().map(|p| p.sha256()),
                wait: t.wait.as_ref().map(wait::describe),
                required: &t.binding.required,
                optional: &t.binding.optional,
                inject: &t.binding.inject,
                provides: &t.binding.provides,
                sandbox: &t.sandbox,
                depends_on: deps.iter().map(|&d| self.tasks[d].name.as_str()).collect(),
                retry: &t.retry,
                when: t.condition.as_ref().map(|c| c.source.as_str()),
                when_reads: &t.binding.condition,
                priority: t.priority,
            })
    }

    /// Each subflow with a retry controller, outer ones first.
    pub fn subflows(&self) -> impl Iterator<Item = SubflowPlan<'_>> {
        self.scopes.iter().map(|scope| SubflowPlan {
            path: &scope.path,
            retry: &scope.controller,
            tasks: scope
                .tasks
                .clone()
                .map(|i| self.tasks[i].name.as_str())
                .collect(),
        })
    }

    /// Each subflow that maps over a list, in file order.
    pub fn maps(&self) -> impl Iterator<Item = MapPlan<'_>> {
        self.maps.iter().map(|scope| MapPlan {
            path: &scope.path,
            map: &scope.map,
            tasks: scope
                .tasks
                .clone()
                .map(|i| self.tasks[i].name.as_str())
                .collect(),
        })
    }

    /// Whether a successful run's final store will hold `name` (initial store or provides):
    /// lets a caller reject a fetch of a name that can never exist before running.
    pub fn will_provide(&self, name: &str) -> bool {
        self.initial.contains(name) || self.provided.contains(name)
    }

    /// The id the run will have: known before it starts, so a run database can record the
    /// run (flow file, hashes, initial store) before its first transition.
    pub fn run_id(&self) -> &str {
        &self.id
    }

    /// Gives the run a chosen id, e.g. the recorded id of a run being resumed.
    pub fn set_run_id(&mut self, id: impl Into<String>) {
        self.id = id.into();
    }

    /// The initial store the run starts from (the flow's `[store]` under the given store).
    pub fn initial_store(&self) -> &Store {
        &self.initial
    }

    /// What suspends this run from outside ([`Engine::suspend`] for its id): for an executor
    /// that reads suspend requests from its run database. Take it once the id is final
    /// ([`Self::set_run_id`]).
    pub fn suspender(&self) -> Suspender {
        Suspender::new(self.suspensions.clone(), self.id.clone())
    }

    /// Adds a listener for this run only.
    pub fn listen(&mut self, listener: Arc<dyn Listener>) {
        self.listeners.push(listener);
    }

    /// Waits for timers (`wait = { for_ms | until }`) with at most `max` left in this
    /// process, and leaves the run WAITING — holding no executor, its report's state
    /// WAITING — at a longer one, for whoever resumes it when it is due (a worker claims it
    /// then). By default every timer is waited for in-process. Signal waits never hold the
    /// process: a run with nothing left but waits for signals is always left WAITING.
    pub fn hold_timers(&mut self, max: Duration) {
        self.hold_timers = max;
    }

    /// Makes `journal` this run's durable record: every transition is appended to it before
    /// listeners hear of it, and a failed append stops the run. `flowhost_executor::record` sets
    /// this up with a run database.
    pub fn journal(&mut self, journal: Arc<dyn Journal>) {
        self.journal = Some(journal);
    }

    /// Runs the flow to its end — or until only waits are left ([`Self::hold_timers`]): the
    /// report's state is then WAITING — and reports. Task failures are not errors of this
    /// call: they are the report's state (REVERTED or FAILURE) with every task's outcome. The call fails
    /// only when the journal could not record a transition; the run then stopped there.
    ///
    /// With the flow's `timeout_ms`, the run's deadline is that long after this call: when
    /// it passes, the run is stopped as a cancel stops it, its tasks failing [`RUN_TIMEOUT`].
    pub async fn run(self) -> Result<RunReport, RunError> {
        Run::new(self).execute().await
    }

    /// Continues an interrupted run from its recorded `checkpoint`: SUCCESS tasks are not
    /// executed again and their recorded results go back into the store; a task caught
    /// RUNNING is executed again (at least once); a run caught REVERTING goes on reverting,
    /// skipping tasks already REVERTED. Set the recorded id first with [`Self::set_run_id`].
    ///
    /// The run keeps its deadline: `timeout_ms` after the checkpoint's `created_at` (the
    /// run's creation), however long it was interrupted; a deadline already past stops it at
    /// once (what ran is reverted). A checkpoint without `created_at` gets a fresh deadline.
    pub async fn resume(self, checkpoint: Checkpoint) -> Result<RunReport, ResumeError> {
        Ok(Run::restore(self, checkpoint)?.execute().await?)
    }

    /// Reverts an unfinished run from its recorded `checkpoint` without executing anything:
    /// every task that did something is reverted, in reverse dependency order, as a failure
    /// would have reverted it, and the flow ends REVERTED (or FAILURE when a revert failed).
    /// For a SUSPENDED run a person decided not to go on with (`flowhost runs revert`).
    pub async fn revert(self, checkpoint: Checkpoint) -> Result<RunReport, ResumeError> {
        let mut run = Run::restore(self, checkpoint)?;
        run.reverting_from_here();
        Ok(run.execute().await?)
    }

    /// Runs the flow as a new run whose record starts with `copied`: tasks of an earlier run
    /// that succeeded, with the arguments and results recorded there, as if they had just
    /// run (their results go into the store; they are not executed). Every other task runs.
    /// How `flowhost runs restart --from TASK` goes on from a step without repeating the
    /// steps before it.
    pub async fn restart(self, copied: Vec<CopiedTask>) -> Result<RunReport, ResumeError> {
        Ok(Run::copying(self, copied)?.execute().await?)
    }
}

/// A task a restarted run takes over from the run it restarts: what it executed with and
/// what it returned, there.
#[derive(Debug, Clone)]
pub struct CopiedTask {
    /// The entry's name.
    pub name: String,
    /// The arguments it executed with (a JSON object's text).
    pub args: String,
    /// What its `execute` returned (JSON text).
    pub result: String,
    /// The attempt that succeeded.
    pub attempt: u32,
}

/// A run id unique across processes and time: milliseconds, process id, a counter.
fn next_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{ms:x}-{:x}-{n}", std::process::id())
}
