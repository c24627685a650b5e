//! The engine: validates a flow against its plugins, then runs it — execute in order,
//! revert in reverse on the first failure.
//!
//! One [`Engine`] serves the whole process: it is cheap to clone, and every run it starts is
//! an independent future, so many flows run at once on a tokio runtime while each flow's
//! tasks stay strictly sequential.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::checkpoint::{Checkpoint, ResumeError};
use crate::config::EngineConfig;
use crate::error::{Problem, SetupError, TaskError, ValidationError};
use crate::events::{Event, FlowState, Listener, TaskState, Transition, notify};
use crate::flow::{FlowSpec, Instances};
use crate::plugin::{Outcome, Plugin, Runtime, TaskInfo};
use crate::pool::WarmPool;
use crate::report::{RunReport, TaskReport};
use crate::sandbox::Sandbox;
use crate::store::{Binding, Store, quoted};

/// Loads and runs flows. Clone it freely: clones share the wasmtime engine, the loaded
/// plugins and the engine-wide listeners.
#[derive(Clone)]
pub struct Engine {
    runtime: Arc<Runtime>,
    listeners: Vec<Arc<dyn Listener>>,
}

impl Engine {
    /// Sets up wasmtime and the deadline ticker with the default [`EngineConfig`]: the
    /// compiled-component cache in `FLOWHOST_CACHE_DIR` or the user's cache directory, and
    /// the pooling allocator when the address space allows it.
    pub fn new() -> Result<Self, SetupError> {
        Self::with_config(&EngineConfig::default())
    }

    /// Sets up an engine with these settings (cache directory, pooling).
    pub fn with_config(config: &EngineConfig) -> Result<Self, SetupError> {
        Ok(Self { runtime: Arc::new(Runtime::with_config(config)?), listeners: Vec::new() })
    }

    /// Where compiled components are cached, if anywhere.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.runtime.cache().map(|cache| cache.dir())
    }

    /// Whether instances come from the pooling allocator (false: allocated on demand).
    pub fn is_pooling(&self) -> bool {
        self.runtime.is_pooling()
    }

    /// Registers a listener for every run this engine (and its later clones) starts.
    pub fn listen(&mut self, listener: Arc<dyn Listener>) {
        self.listeners.push(listener);
    }

    /// Loads and describes one plugin, e.g. for `flowhost describe`.
    pub async fn plugin(&self, path: &std::path::Path) -> Result<Arc<Plugin>, crate::PluginError> {
        self.runtime.load(path).await
    }

    /// Validates `flow` with `store` as the initial store (over the flow's `[store]`
    /// defaults). Every plugin is loaded and described and every requirement checked; all
    /// problems are reported together and nothing runs when there is any.
    pub async fn load(&self, flow: &FlowSpec, store: Store) -> Result<LoadedFlow, ValidationError> {
        let mut initial: Store = flow.store.clone().into();
        initial.extend(store);
        let mut problems = Vec::new();
        let mut problem = |task: Option<&str>, message: String| {
            problems.push(Problem { task: task.map(str::to_owned), message })
        };
        if flow.tasks.is_empty() {
            problem(None, "the flow has no tasks".into());
        }
        // Where each store name comes from, as validation walks the flow in order.
        let mut sources: BTreeMap<String, String> =
            initial.names().map(|n| (n.clone(), "the initial store".to_owned())).collect();
        let declared_later = |from: usize, key: &str| {
            flow.tasks[from..]
                .iter()
                .find(|t| t.provides.as_ref().is_some_and(|p| p.iter().any(|n| n == key)))
                .map(|t| t.name.clone())
        };
        let mut blind = false;
        let mut names = HashSet::new();
        let mut entries = Vec::with_capacity(flow.tasks.len());
        for (index, spec) in flow.tasks.iter().enumerate() {
            let task = Some(spec.name.as_str());
            if !names.insert(spec.name.as_str()) {
                problem(task, "duplicate task name; every entry needs its own name".into());
            }
            let (sandbox, grant_problems) = Sandbox::for_entry(spec, flow);
            grant_problems.into_iter().for_each(|p| problem(task, p));
            if sandbox.limits.fuel.is_some() && !self.runtime.fuel_metering() {
                problem(
                    task,
                    "`limits.fuel` needs an engine with fuel metering (`EngineConfig::default().fuel(true)`); the CLI turns it on when a flow sets fuel".into(),
                );
            }
            if !spec.config.is_object() {
                problem(task, "`config` must be a table (a JSON object)".into());
            }
            let plugin = match self.runtime.load(&flow.resolve(&spec.plugin)).await {
                Ok(plugin) => plugin,
                Err(error) => {
                    problem(task, error.to_string());
                    // Without the plugin's declaration, later "missing name" findings could be
                    // false: report them only when this entry names its provides itself.
                    match &spec.provides {
                        Some(provides) => provides.iter().for_each(|n| {
                            sources.insert(n.clone(), format!("task `{}`", spec.name));
                        }),
                        None => blind = true,
                    }
                    continue;
                }
            };
            let info = plugin.info();
            let accepts = |arg: &String| info.requires.contains(arg) || info.optional.contains(arg);
            for (field, args) in [
                ("rebind", spec.rebind.keys().collect::<Vec<_>>()),
                ("inject", spec.inject.keys().collect()),
            ] {
                for arg in args.into_iter().filter(|a| !accepts(a)) {
                    problem(
                        task,
                        format!(
                            "`{field}` names argument `{arg}`, which plugin `{}` neither requires nor accepts (it takes: {})",
                            info.name,
                            takes(info)
                        ),
                    );
                }
            }
            let bind = |args: &[String]| -> Vec<(String, String)> {
                args.iter()
                    .filter(|a| !spec.inject.contains_key(*a))
                    .map(|a| (a.clone(), spec.rebind.get(a).unwrap_or(a).clone()))
                    .collect()
            };
            let binding = Binding {
                required: bind(&info.requires),
                optional: bind(&info.optional),
                inject: spec.inject.clone(),
                provides: spec.provides.clone().unwrap_or_else(|| info.provides.clone()),
            };
            for (arg, key) in &binding.required {
                if sources.contains_key(key) || blind {
                    continue;
                }
                let via = if arg == key { String::new() } else { format!(" (rebound from `{arg}`)") };
                let hint = match declared_later(index + 1, key) {
                    Some(later) => format!("; task `{later}` provides it but runs later"),
                    None => String::new(),
                };
                problem(
                    task,
                    format!(
                        "argument `{arg}` needs store key `{key}`{via}, which neither the initial store nor an earlier task provides{hint}"
                    ),
                );
            }
            let mut own = HashSet::new();
            for name in &binding.provides {
                if !own.insert(name) {
                    problem(task, format!("provides `{name}` twice"));
                } else if let Some(source) = sources.get(name) {
                    problem(
                        task,
                        format!(
                            "provides `{name}`, which {source} already provides; set `provides` on this entry to store the result under another name"
                        ),
                    );
                } else {
                    sources.insert(name.clone(), format!("task `{}`", spec.name));
                }
            }
            entries.push(Entry {
                name: spec.name.clone(),
                config: spec.config.to_string(),
                warm: (spec.instances == Instances::Reuse).then(|| plugin.warm_pool(&sandbox)),
                plugin,
                binding,
                sandbox,
            });
        }
        if !problems.is_empty() {
            return Err(ValidationError { flow: flow.name.clone(), problems });
        }
        Ok(LoadedFlow {
            id: next_run_id(),
            flow: flow.name.clone(),
            entries,
            initial,
            provided: sources.into_keys().collect(),
            listeners: self.listeners.clone(),
        })
    }

    /// Loads and runs in one step.
    pub async fn run(&self, flow: &FlowSpec, store: Store) -> Result<RunReport, ValidationError> {
        Ok(self.load(flow, store).await?.run().await)
    }
}

fn takes(info: &TaskInfo) -> String {
    let all: Vec<String> = info.requires.iter().chain(&info.optional).cloned().collect();
    if all.is_empty() { "no arguments".into() } else { quoted(&all) }
}

/// A task entry, validated and bound to its loaded plugin.
struct Entry {
    name: String,
    config: String,
    plugin: Arc<Plugin>,
    binding: Binding,
    sandbox: Sandbox,
    /// The warm instances this entry's calls use, when it reuses instances.
    warm: Option<Arc<WarmPool>>,
}

/// A validated flow with its initial store, ready to run (once).
pub struct LoadedFlow {
    id: String,
    flow: String,
    entries: Vec<Entry>,
    initial: Store,
    provided: HashSet<String>,
    listeners: Vec<Arc<dyn Listener>>,
}

/// A task entry as validation resolved it, for `flowhost check` and tooling.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskPlan<'a> {
    /// Entry name.
    pub name: &'a str,
    /// The plugin's declaration.
    pub info: &'a TaskInfo,
    /// Component file.
    pub plugin: &'a std::path::Path,
    /// SHA-256 (hex) of the component as loaded.
    pub plugin_sha256: &'a str,
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
}

impl LoadedFlow {
    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.flow
    }

    /// Each entry as it will run.
    pub fn plan(&self) -> impl Iterator<Item = TaskPlan<'_>> {
        self.entries.iter().map(|e| TaskPlan {
            name: &e.name,
            info: e.plugin.info(),
            plugin: e.plugin.path(),
            plugin_sha256: e.plugin.sha256(),
            required: &e.binding.required,
            optional: &e.binding.optional,
            inject: &e.binding.inject,
            provides: &e.binding.provides,
            sandbox: &e.sandbox,
        })
    }

    /// Whether a successful run's final store will hold `name` (initial store or provides):
    /// lets a caller reject a fetch of a name that can never exist before running.
    pub fn will_provide(&self, name: &str) -> bool {
        self.provided.contains(name)
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

    /// Adds a listener for this run only.
    pub fn listen(&mut self, listener: Arc<dyn Listener>) {
        self.listeners.push(listener);
    }

    /// Runs the flow to its end and reports. Task failures are not errors of this call: they
    /// are the report's state (REVERTED or FAILURE) with every task's outcome.
    pub async fn run(self) -> RunReport {
        Run::new(self).execute().await
    }

    /// Continues an interrupted run from its recorded `checkpoint`: SUCCESS tasks are not
    /// executed again and their recorded results go back into the store; a task caught
    /// RUNNING is executed again (at least once); a run caught REVERTING goes on reverting,
    /// skipping tasks already REVERTED. Set the recorded id first with [`Self::set_run_id`].
    pub async fn resume(self, checkpoint: Checkpoint) -> Result<RunReport, ResumeError> {
        Ok(Run::restore(self, checkpoint)?.execute().await)
    }
}

/// What happened to one task so far in a run.
struct Record {
    state: TaskState,
    since: Instant,
    args: String,
    outcome: Option<Outcome>,
    duration: Duration,
    error: Option<TaskError>,
    revert_error: Option<TaskError>,
}

/// What a task transition carries besides its states.
#[derive(Default)]
struct Detail {
    result: Option<Value>,
    error: Option<TaskError>,
    args: Option<String>,
    outcome: Option<Outcome>,
}

/// One execution of a loaded flow.
struct Run {
    id: String,
    loaded: LoadedFlow,
    store: Store,
    records: Vec<Record>,
    state: FlowState,
    started: Instant,
}

fn next_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{ms:x}-{:x}-{n}", std::process::id())
}

impl Run {
    fn new(loaded: LoadedFlow) -> Self {
        let now = Instant::now();
        let records = loaded
            .entries
            .iter()
            .map(|_| Record {
                state: TaskState::Pending,
                since: now,
                args: String::new(),
                outcome: None,
                duration: Duration::ZERO,
                error: None,
                revert_error: None,
            })
            .collect();
        Self {
            id: loaded.id.clone(),
            store: loaded.initial.clone(),
            loaded,
            records,
            state: FlowState::Pending,
            started: now,
        }
    }

    fn restore(loaded: LoadedFlow, checkpoint: Checkpoint) -> Result<Self, ResumeError> {
        let run = loaded.id.clone();
        if matches!(checkpoint.state, FlowState::Success | FlowState::Reverted | FlowState::Failure) {
            return Err(ResumeError::Finished { run, state: checkpoint.state });
        }
        let current: Vec<String> = loaded.entries.iter().map(|e| e.name.clone()).collect();
        let recorded: Vec<String> = checkpoint.tasks.iter().map(|t| t.name.clone()).collect();
        if current != recorded {
            return Err(ResumeError::TasksChanged { run, recorded, current });
        }
        let mut this = Self::new(loaded);
        this.state = checkpoint.state;
        for (index, task) in checkpoint.tasks.into_iter().enumerate() {
            let incomplete = |problem: &str| ResumeError::Incomplete {
                run: run.clone(),
                task: task.name.clone(),
                state: task.state,
                problem: problem.to_owned(),
            };
            let ran = !matches!(task.state, TaskState::Pending | TaskState::Running);
            if ran && task.outcome.is_none() {
                return Err(incomplete("its outcome was not recorded"));
            }
            // A succeeded task whose results are still in effect puts them back in the store.
            if matches!(task.state, TaskState::Success | TaskState::Reverting)
                && task.error.is_none()
                && let Some(Outcome::Result(text)) = &task.outcome
            {
                let value = serde_json::from_str(text)
                    .map_err(|e| incomplete(&format!("its recorded result is not JSON: {e}")))?;
                let outputs = this.loaded.entries[index]
                    .binding
                    .outputs(value)
                    .map_err(|e| incomplete(&format!("its recorded result does not fit: {e}")))?;
                for (name, value) in outputs {
                    this.store.insert(name, value);
                }
            }
            let record = &mut this.records[index];
            // Caught RUNNING: it may have run partly, so it runs again from the start.
            record.state = if task.state == TaskState::Running { TaskState::Pending } else { task.state };
            record.args = task.args.unwrap_or_default();
            record.outcome = if ran { task.outcome } else { None };
            record.error = task.error;
            record.revert_error = task.revert_error;
            record.duration = task.duration;
        }
        if this.state == FlowState::Reverting && this.failure().is_none() {
            return Err(ResumeError::Incomplete {
                run,
                task: String::new(),
                state: TaskState::Failure,
                problem: "the run is REVERTING and no task's failure was recorded".into(),
            });
        }
        Ok(this)
    }

    /// The task whose execute failed, with its error.
    fn failure(&self) -> Option<(usize, TaskError)> {
        self.records.iter().enumerate().find_map(|(i, r)| r.error.clone().map(|e| (i, e)))
    }

    fn emit(&self, transition: Transition) {
        let event = Event {
            run_id: self.id.clone(),
            flow: self.loaded.flow.clone(),
            at: SystemTime::now(),
            transition,
        };
        notify(&self.loaded.listeners, &event);
    }

    fn flow_to(&mut self, to: FlowState) {
        let from = std::mem::replace(&mut self.state, to);
        let ended = matches!(to, FlowState::Success | FlowState::Reverted | FlowState::Failure);
        let store = ended.then(|| self.store.clone());
        self.emit(Transition::Flow { from, to, elapsed: self.started.elapsed(), store });
    }

    fn task_to(&mut self, index: usize, to: TaskState, detail: Detail) {
        let record = &mut self.records[index];
        let from = std::mem::replace(&mut record.state, to);
        let duration = std::mem::replace(&mut record.since, Instant::now()).elapsed();
        if from == TaskState::Running {
            record.duration = duration;
        }
        let task = self.loaded.entries[index].name.clone();
        let Detail { result, error, args, outcome } = detail;
        self.emit(Transition::Task { task, index, from, to, duration, result, error, args, outcome });
    }

    async fn execute(mut self) -> RunReport {
        let failed = if self.state == FlowState::Reverting {
            self.failure()
        } else {
            self.flow_to(FlowState::Running);
            self.execute_tasks().await
        };
        match failed {
            None => self.flow_to(FlowState::Success),
            Some((index, error)) => self.revert_from(index, error).await,
        }
        self.report()
    }

    /// Executes every task not yet done, in order, up to the first failure.
    async fn execute_tasks(&mut self) -> Option<(usize, TaskError)> {
        for index in 0..self.loaded.entries.len() {
            match self.records[index].state {
                TaskState::Pending => {
                    if let Err(error) = self.execute_task(index).await {
                        return Some((index, error));
                    }
                }
                TaskState::Success => {}
                // Resumed after a failure was recorded but before the revert began.
                _ => return self.failure(),
            }
        }
        None
    }

    async fn execute_task(&mut self, index: usize) -> Result<(), TaskError> {
        let entry = &self.loaded.entries[index];
        let args = entry
            .binding
            .arguments(&self.store)
            .map_err(|missing| {
                let names: Vec<String> = missing.into_iter().map(|(_, key)| key).collect();
                TaskError::host("missing-arguments", format!("store lacks {}", quoted(&names)))
            })
            .map(|args| args.to_string())
            .and_then(|args| entry.sandbox.limits.check_args(&args).map(|()| args));
        let detail = Detail { args: args.as_ref().ok().cloned(), ..Detail::default() };
        self.task_to(index, TaskState::Running, detail);
        let args = match args {
            Ok(args) => args,
            Err(error) => return self.fail(index, None, error),
        };
        self.records[index].args = args;
        let entry = &self.loaded.entries[index];
        let args = &self.records[index].args;
        let called =
            entry.plugin.execute(&entry.name, &entry.sandbox, entry.warm.as_deref(), args, &entry.config).await;
        let text = match called {
            Ok(text) => text,
            Err(error) => return self.fail(index, None, error),
        };
        let stored = serde_json::from_str::<Value>(&text)
            .map_err(|e| TaskError::host("invalid-result", format!("result is not valid JSON: {e}")))
            .and_then(|value| Ok((entry.binding.outputs(value.clone())?, value)));
        match stored {
            Ok((outputs, value)) => {
                for (name, value) in outputs {
                    self.store.insert(name, value);
                }
                let outcome = Outcome::Result(text);
                self.records[index].outcome = Some(outcome.clone());
                let detail = Detail { result: Some(value), outcome: Some(outcome), ..Detail::default() };
                self.task_to(index, TaskState::Success, detail);
                Ok(())
            }
            // The task did run: its revert gets the raw result to undo whatever it did.
            Err(error) => self.fail(index, Some(Outcome::Result(text)), error),
        }
    }

    fn fail(&mut self, index: usize, outcome: Option<Outcome>, error: TaskError) -> Result<(), TaskError> {
        let record = &mut self.records[index];
        let outcome = outcome.unwrap_or_else(|| Outcome::Error(error.clone()));
        record.outcome = Some(outcome.clone());
        record.error = Some(error.clone());
        let detail = Detail { error: Some(error.clone()), outcome: Some(outcome), ..Detail::default() };
        self.task_to(index, TaskState::Failure, detail);
        Err(error)
    }

    /// Reverts the failed task, then every task that succeeded, in reverse order. A revert
    /// that fails is recorded and the rest are still reverted. A resumed revert skips the
    /// tasks already reverted (or whose revert already failed).
    async fn revert_from(&mut self, failed: usize, error: TaskError) {
        if self.state != FlowState::Reverting {
            self.flow_to(FlowState::Reverting);
        }
        let failures = vec![(self.loaded.entries[failed].name.clone(), error)];
        let mut all_reverted = true;
        for index in (0..=failed).rev() {
            match self.records[index].state {
                TaskState::Reverted => continue,
                TaskState::RevertFailure => {
                    all_reverted = false;
                    continue;
                }
                _ => {}
            }
            let Some(outcome) = self.records[index].outcome.clone() else { continue };
            self.task_to(index, TaskState::Reverting, Detail::default());
            let entry = &self.loaded.entries[index];
            let record = &self.records[index];
            let reverted = entry
                .plugin
                .revert(
                    &entry.name,
                    &entry.sandbox,
                    entry.warm.as_deref(),
                    &record.args,
                    &entry.config,
                    &outcome,
                    &failures,
                )
                .await;
            match reverted {
                Ok(()) => {
                    for name in &self.loaded.entries[index].binding.provides {
                        self.store.remove(name);
                    }
                    self.task_to(index, TaskState::Reverted, Detail::default());
                }
                Err(error) => {
                    all_reverted = false;
                    self.records[index].revert_error = Some(error.clone());
                    self.task_to(index, TaskState::RevertFailure, Detail { error: Some(error), ..Detail::default() });
                }
            }
        }
        self.flow_to(if all_reverted { FlowState::Reverted } else { FlowState::Failure });
    }

    fn report(self) -> RunReport {
        let tasks = self
            .loaded
            .entries
            .iter()
            .zip(self.records)
            .map(|(entry, record)| TaskReport {
                name: entry.name.clone(),
                state: record.state,
                duration: record.duration,
                error: record.error,
                revert_error: record.revert_error,
                limits: entry.sandbox.limits,
            })
            .collect();
        RunReport {
            run_id: self.id,
            flow: self.loaded.flow,
            state: self.state,
            store: self.store,
            tasks,
            duration: self.started.elapsed(),
        }
    }
}
