//! Plugins: the wasmtime engine, compiled components, and the calls into them.
//!
//! One [`Runtime`] per process owns the wasmtime `Engine`, the `Linker` offering WASI 0.2,
//! and the epoch ticker that enforces deadlines. A [`Plugin`] is a compiled component
//! pre-linked (`InstancePre`) and `describe()`d once; every `execute` or `revert` then runs
//! on a fresh instance in its own store, so no memory survives between calls — unless its
//! task entry opted into warm instances (see [`crate::pool`]).
//!
//! Compiled code comes from the on-disk [`ComponentCache`] when it holds the component, and
//! instances come from wasmtime's pooling allocator when the address space allows it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};

use crate::cache::ComponentCache;
use crate::config::EngineConfig;
use crate::error::{PluginError, SetupError, TaskError};
use crate::pool::{IdleBudget, WarmPool};
use crate::sandbox::{InstanceState, Sandbox};

/// The contract this host accepts: plugins must export this interface (any 0.1.x).
pub const CONTRACT: &str = "flowhost:task/task@0.1.0";

/// How often the epoch advances; deadlines are checked, and busy tasks yield to other runs,
/// at this granularity.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Component instances the pooling allocator keeps slots for; more calls at once wait for a
/// slot. Each slot reserves address space (not memory) for its linear memories and stack.
const POOL_SLOTS: u32 = 1000;

/// Idle warm instances an engine keeps, over all plugins: a quarter of the slots, so fresh
/// instances always find slots.
const IDLE_WARM: usize = POOL_SLOTS as usize / 4;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        exports: { default: async },
    });
}

use bindings::exports::flowhost::task::task as wit;

/// What a plugin declares about itself through `describe()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskInfo {
    /// The task's own name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// One line saying what it does.
    pub description: String,
    /// Argument names it needs.
    pub requires: Vec<String>,
    /// Argument names it takes when present.
    pub optional: Vec<String>,
    /// Names its result is stored under.
    pub provides: Vec<String>,
}

/// How a task's `execute` ended, as handed to its `revert`. Serialisable so that a run
/// database can keep it and a resumed run can still revert the task.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `execute` returned this JSON text.
    Result(String),
    /// `execute` failed.
    Error(TaskError),
}

/// Owns the wasmtime engine shared by every run in the process, and the loaded plugins.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InstanceState>,
    plugins: Mutex<HashMap<PathBuf, Arc<Plugin>>>,
    /// Serialises first loads, so that many runs starting at once compile a plugin once.
    loading: tokio::sync::Mutex<()>,
    cache: Option<ComponentCache>,
    /// With the pooling allocator, one permit per instance slot: a call waits for a free slot
    /// instead of failing when every slot is taken.
    slots: Option<Arc<Semaphore>>,
    idle_warm: Arc<IdleBudget>,
    /// Whether compiled code counts fuel, which `limits.fuel` needs.
    fuel: bool,
}

impl Runtime {
    /// The default configuration: see [`EngineConfig::default`].
    pub fn new() -> Result<Self, SetupError> {
        Self::with_config(&EngineConfig::default())
    }

    /// Configures wasmtime (epoch interruption for deadlines, fuel metering when asked — it is
    /// fixed at engine creation —, pooling when asked and possible), opens the
    /// compiled-component cache and starts the epoch ticker.
    pub fn with_config(settings: &EngineConfig) -> Result<Self, SetupError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(settings.fuel);
        let pooled = settings.pooling.then(|| {
            let mut pooled = config.clone();
            pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config()));
            Engine::new(&pooled)
        });
        let (engine, slots) = match pooled {
            Some(Ok(engine)) => (engine, Some(Arc::new(Semaphore::new(POOL_SLOTS as usize)))),
            Some(Err(error)) => {
                // Like Spin: machines with a small address space (some containers, 32-bit,
                // ulimit -v) cannot reserve the pool; on-demand allocation still works.
                tracing::debug!("pooling allocator unavailable ({error:#}); allocating on demand");
                (Engine::new(&config).map_err(|e| SetupError(format!("{e:#}")))?, None)
            }
            None => (Engine::new(&config).map_err(|e| SetupError(format!("{e:#}")))?, None),
        };
        let cache = match &settings.cache_dir {
            Some(dir) => match ComponentCache::open(dir, &engine) {
                Ok(cache) => Some(cache),
                Err(error) => {
                    tracing::warn!("{error}; compiling without a cache");
                    None
                }
            },
            None => None,
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SetupError(format!("cannot link WASI: {e:#}")))?;
        spawn_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker,
            plugins: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            cache,
            slots,
            idle_warm: IdleBudget::new(IDLE_WARM),
            fuel: settings.fuel,
        })
    }

    /// Whether compiled code counts fuel, which `limits.fuel` needs.
    pub fn fuel_metering(&self) -> bool {
        self.fuel
    }

    /// Whether instances come from the pooling allocator (false: allocated on demand).
    pub fn is_pooling(&self) -> bool {
        self.slots.is_some()
    }

    /// The compiled-component cache in use, if any.
    pub fn cache(&self) -> Option<&ComponentCache> {
        self.cache.as_ref()
    }

    /// Loads, checks and describes the component at `path`, once per path per runtime.
    pub async fn load(&self, path: &Path) -> Result<Arc<Plugin>, PluginError> {
        // The path as given first: every run of a batch loads the same paths, and resolving
        // them costs syscalls per task per run.
        if let Some(plugin) = self.plugins.lock().expect("plugin map poisoned").get(path) {
            return Ok(plugin.clone());
        }
        let _loading = self.loading.lock().await;
        if let Some(plugin) = self.plugins.lock().expect("plugin map poisoned").get(path) {
            return Ok(plugin.clone());
        }
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let known = self.plugins.lock().expect("plugin map poisoned").get(&key).cloned();
        if let Some(plugin) = known {
            self.plugins.lock().expect("plugin map poisoned").insert(path.to_path_buf(), plugin.clone());
            return Ok(plugin);
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| PluginError::Read { path: path.to_path_buf(), source })?;
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        let engine = self.engine.clone();
        let owned = path.to_path_buf();
        let cache = self.cache.clone();
        let component = tokio::task::spawn_blocking(move || {
            if let Some(component) = cache.as_ref().and_then(|c| c.load(&engine, &bytes)) {
                return Ok(component);
            }
            let component = compile(&engine, &owned, &bytes)?;
            if let Some(cache) = &cache {
                cache.store(&bytes, &component);
            }
            Ok(component)
        })
        .await
        .map_err(|e| PluginError::NotAComponent { path: path.to_path_buf(), reason: e.to_string() })??;
        let plugin = Arc::new(self.prepare(path, sha256, &component).await?);
        let mut plugins = self.plugins.lock().expect("plugin map poisoned");
        plugins.insert(path.to_path_buf(), plugin.clone());
        plugins.insert(key, plugin.clone());
        drop(plugins);
        Ok(plugin)
    }

    async fn prepare(&self, path: &Path, sha256: String, component: &Component) -> Result<Plugin, PluginError> {
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            PluginError::UnsupportedImport { path: path.to_path_buf(), import: missing_import(&e) }
        })?;
        let pre = bindings::PluginPre::new(instance_pre)
            .map_err(|e| PluginError::NotATask { path: path.to_path_buf(), reason: format!("{e:#}") })?;
        let mut plugin = Plugin {
            path: path.to_path_buf(),
            sha256,
            pre,
            slots: self.slots.clone(),
            idle_warm: self.idle_warm.clone(),
            warm: Mutex::new(Vec::new()),
            metered: self.fuel,
            info: TaskInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                requires: Vec::new(),
                optional: Vec::new(),
                provides: Vec::new(),
            },
        };
        plugin.info = plugin.describe().await?;
        Ok(plugin)
    }
}

/// Slots for [`POOL_SLOTS`] component instances, with room for the several core instances,
/// tables and memories a component holds (a Rust component: one memory, a few core
/// instances and tables). Memories may grow to 4 GiB; the per-task cap is the limiter's job.
fn pooling_config() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_SLOTS)
        .total_core_instances(10 * POOL_SLOTS)
        .total_memories(2 * POOL_SLOTS)
        .total_tables(4 * POOL_SLOTS)
        .total_stacks(POOL_SLOTS);
    pool
}

fn compile(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Component, PluginError> {
    let not_a_component = |reason: &str| PluginError::NotAComponent { path: path.to_path_buf(), reason: reason.into() };
    let is_text = path.extension().is_some_and(|ext| ext == "wat");
    if !is_text && !bytes.starts_with(b"\0asm") {
        return Err(not_a_component("not a WebAssembly binary (no `\\0asm` header)"));
    }
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err(not_a_component(
            "it is a core WebAssembly module; build for wasm32-wasip2 or wrap it with `wasm-tools component new`",
        ));
    }
    Component::new(engine, bytes).map_err(|e| not_a_component(&format!("{e:#}")))
}

/// Pulls the import's name out of wasmtime's linking error.
fn missing_import(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    text.split('`').nth(1).map(str::to_owned).unwrap_or(text)
}

fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("flowhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("cannot spawn the epoch ticker thread");
}

/// A compiled, pre-linked and described task component.
pub struct Plugin {
    path: PathBuf,
    sha256: String,
    pre: bindings::PluginPre<InstanceState>,
    slots: Option<Arc<Semaphore>>,
    idle_warm: Arc<IdleBudget>,
    /// Warm instances per sandbox, for task entries with `instances = "reuse"`.
    warm: Mutex<Vec<Arc<WarmPool>>>,
    /// Compiled on a fuel-metering engine: every call needs its fuel set.
    metered: bool,
    info: TaskInfo,
}

/// Which call into a plugin failed, for messages: "… by task `t` in execute".
enum Site<'a> {
    Describe,
    Execute(&'a str),
    Revert(&'a str),
}

impl std::fmt::Display for Site<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Site::Describe => f.write_str("in describe()"),
            Site::Execute(task) => write!(f, "by task `{task}` in execute"),
            Site::Revert(task) => write!(f, "by task `{task}` in revert"),
        }
    }
}

/// A live instance with its store, holding its pooling slot until dropped.
pub(crate) struct Live {
    store: Store<InstanceState>,
    guest: bindings::Plugin,
    /// Calls this instance has served.
    calls: u32,
    /// Dropped after the store, so the slot is free before another call takes it.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Live {
    /// Whether the instance may serve another call: it must not have hit its memory cap, and
    /// its captured output must have room for the next call's. Reading the captured output
    /// copies it, so an instance is also retired after [`REUSE_CALLS`] calls to keep that
    /// copy small.
    fn reusable(&self) -> bool {
        let state = self.store.data();
        self.calls < REUSE_CALLS
            && state.memory.denied.is_none()
            && [&state.stdout, &state.stderr].iter().all(|pipe| pipe.contents().len() < REUSE_OUTPUT_BYTES)
    }
}

/// Captured output after which a warm instance is retired rather than reused (half the
/// capture buffer, so the next call's output still fits).
const REUSE_OUTPUT_BYTES: usize = 32 * 1024;
/// Calls after which a warm instance is retired and replaced by a fresh one.
const REUSE_CALLS: u32 = 64;

/// The error a deadline callback raises, recognised when classifying a failed call.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

impl Plugin {
    /// What the plugin declared.
    pub fn info(&self) -> &TaskInfo {
        &self.info
    }

    /// SHA-256 (hex) of the component bytes as loaded: what a run record keeps, so that a
    /// resume can refuse a plugin that changed since, without reading the file again per run.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The component file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The warm-instance pool for task entries with this sandbox, shared by every run.
    pub(crate) fn warm_pool(&self, sandbox: &Sandbox) -> Arc<WarmPool> {
        let mut pools = self.warm.lock().expect("warm pools poisoned");
        if let Some(pool) = pools.iter().find(|p| p.sandbox() == sandbox) {
            return pool.clone();
        }
        let pool = Arc::new(WarmPool::new(sandbox.clone(), self.idle_warm.clone()));
        pools.push(pool.clone());
        pool
    }

    async fn describe(&self) -> Result<TaskInfo, PluginError> {
        let sandbox = Sandbox::bare();
        let fail = |reason: String| PluginError::Describe { path: self.path.clone(), reason };
        let Live { mut store, guest, _slot, .. } =
            self.instantiate(&sandbox, &Site::Describe).await.map_err(|e| fail(e.message))?;
        let info = guest.flowhost_task_task().call_describe(&mut store).await;
        let info = info.map_err(|e| fail(classify(&e, &store, &sandbox, &Site::Describe).message))?;
        Ok(TaskInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            requires: info.requires,
            optional: info.optional,
            provides: info.provides,
        })
    }

    /// Runs `execute` on a fresh instance, or a warm one from `warm`; any trap, deadline or
    /// cap becomes a [`TaskError`].
    pub(crate) async fn execute(
        &self,
        task: &str,
        sandbox: &Sandbox,
        warm: Option<&WarmPool>,
        args: &str,
        config: &str,
    ) -> Result<String, TaskError> {
        let site = Site::Execute(task);
        let (mut live, printed) = self.instance(sandbox, warm, &site).await?;
        let called = live.guest.flowhost_task_task().call_execute(&mut live.store, args, config).await;
        forward_output(task, &live.store, printed);
        let returned = called.is_ok();
        let ended = match called {
            Ok(Ok(result)) => sandbox.limits.check_result(&result).map(|()| result),
            Ok(Err(error)) => Err(from_wit(error)),
            Err(ref error) => Err(classify(error, &live.store, sandbox, &site)),
        };
        release(live, warm, returned);
        ended
    }

    /// Runs `revert` on a fresh instance, or a warm one from `warm`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn revert(
        &self,
        task: &str,
        sandbox: &Sandbox,
        warm: Option<&WarmPool>,
        args: &str,
        config: &str,
        outcome: &Outcome,
        failures: &[(String, TaskError)],
    ) -> Result<(), TaskError> {
        let outcome = match outcome {
            Outcome::Result(json) => wit::Outcome::Result(json.clone()),
            Outcome::Error(error) => wit::Outcome::Error(to_wit(error)),
        };
        let failures: Vec<wit::FlowFailure> = failures
            .iter()
            .map(|(task, error)| wit::FlowFailure { task: task.clone(), error: to_wit(error) })
            .collect();
        let site = Site::Revert(task);
        let (mut live, printed) = self.instance(sandbox, warm, &site).await?;
        let called = live
            .guest
            .flowhost_task_task()
            .call_revert(&mut live.store, args, config, &outcome, &failures)
            .await;
        forward_output(task, &live.store, printed);
        let returned = called.is_ok();
        let ended = match called {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(from_wit(error)),
            Err(ref error) => Err(classify(error, &live.store, sandbox, &site)),
        };
        release(live, warm, returned);
        ended
    }

    /// An instance for one call: a warm one when the entry reuses instances and one is idle,
    /// else a fresh one. Also returns how much output it had already captured, so only this
    /// call's output is forwarded.
    async fn instance(
        &self,
        sandbox: &Sandbox,
        warm: Option<&WarmPool>,
        site: &Site<'_>,
    ) -> Result<(Live, Printed), TaskError> {
        let Some(mut live) = warm.and_then(WarmPool::take) else {
            let mut live = self.instantiate(sandbox, site).await?;
            live.calls = 1;
            return Ok((live, Printed::default()));
        };
        live.calls += 1;
        self.arm_limits(&mut live.store, sandbox)?;
        let state = live.store.data();
        let printed = Printed { stdout: state.stdout.contents().len(), stderr: state.stderr.contents().len() };
        Ok((live, printed))
    }

    async fn instantiate(&self, sandbox: &Sandbox, site: &Site<'_>) -> Result<Live, TaskError> {
        let slot = match &self.slots {
            Some(slots) => Some(slots.clone().acquire_owned().await.expect("slot semaphore is never closed")),
            None => None,
        };
        let mut store = Store::new(self.pre.engine(), sandbox.instance_state()?);
        store.limiter(|state| &mut state.memory);
        self.arm_limits(&mut store, sandbox)?;
        match self.pre.instantiate_async(&mut store).await {
            Ok(guest) => Ok(Live { store, guest, calls: 0, _slot: slot }),
            Err(error) => Err(classify(&error, &store, sandbox, site)),
        }
    }

    /// Gives the call its fuel (on a metered engine) and starts its deadline.
    fn arm_limits(&self, store: &mut Store<InstanceState>, sandbox: &Sandbox) -> Result<(), TaskError> {
        if self.metered {
            // A metered engine traps at zero fuel, so an entry without a budget gets all of it.
            store
                .set_fuel(sandbox.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| TaskError::host("host-error", format!("cannot set fuel: {e:#}")))?;
        }
        arm_deadline(store, sandbox);
        Ok(())
    }
}

/// Starts the call's deadline now: the epoch callback fails the call once it has run longer
/// than the sandbox allows, and otherwise yields so other runs make progress.
fn arm_deadline(store: &mut Store<InstanceState>, sandbox: &Sandbox) {
    let started = Instant::now();
    let deadline = sandbox.limits.deadline();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if started.elapsed() >= deadline {
            Err(DeadlineExceeded.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// Hands a warm instance back to its pool after a call that returned normally; an instance
/// that trapped, hit a deadline or a cap, or filled its output buffers is dropped.
fn release(live: Live, warm: Option<&WarmPool>, returned: bool) {
    if let Some(pool) = warm
        && returned
        && live.reusable()
    {
        pool.put(live);
    }
}

/// Bytes of stdout and stderr an instance had captured before a call.
#[derive(Debug, Default, Clone, Copy)]
struct Printed {
    stdout: usize,
    stderr: usize,
}

/// Turns a failed wasm call into the reason an operator needs: the cap or deadline that was
/// hit, or the trap with the plugin's own last words (a Rust panic message) from stderr.
fn classify(error: &wasmtime::Error, store: &Store<InstanceState>, sandbox: &Sandbox, site: &Site<'_>) -> TaskError {
    let state = store.data();
    if error.chain().any(|cause| cause.is::<DeadlineExceeded>()) {
        return TaskError::host(
            "deadline-exceeded",
            format!("deadline of {} ms exceeded {site}", sandbox.limits.deadline_ms),
        );
    }
    if let (Some(Trap::OutOfFuel), Some(fuel)) = (error.downcast_ref::<Trap>(), sandbox.limits.fuel) {
        return TaskError::host("fuel-exhausted", format!("fuel budget of {fuel} exhausted {site}"));
    }
    // Checked after the deadline and fuel: a task may survive a refused growth and fail later
    // for another reason. A trap after a refusal is the allocator giving up.
    if let Some(wanted) = state.memory.denied {
        return TaskError::host(
            "memory-limit",
            format!(
                "memory cap of {} MiB exceeded {site} (it tried to grow its memory to {} MiB)",
                state.memory.max_bytes() >> 20,
                wanted.div_ceil(1 << 20)
            ),
        );
    }
    let last_words = panic_message(&String::from_utf8_lossy(&state.stderr.contents()));
    match error.downcast_ref::<Trap>() {
        Some(trap) => {
            let mut message = format!("trapped: {trap}");
            if let Some(words) = last_words {
                message.push_str(&format!("; plugin said: {words}"));
            }
            TaskError::host("trap", message)
        }
        None => TaskError::host("host-error", format!("{error:#}")),
    }
}

/// A Rust panic's location and message from a plugin's stderr, quoted after a trap so the
/// operator sees why the plugin gave up.
fn panic_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(at) = lines.iter().position(|l| l.contains("panicked at")) {
        let words: Vec<&str> = lines[at..]
            .iter()
            .take_while(|l| !l.starts_with("note: run with"))
            .copied()
            .collect();
        return Some(words.join(" "));
    }
    None
}

/// Forwards what the plugin printed during this call to the log, tagged with the task name.
fn forward_output(task: &str, store: &Store<InstanceState>, printed: Printed) {
    if !tracing::enabled!(target: "flowhost::plugin", tracing::Level::INFO) {
        return;
    }
    let state = store.data();
    for (stream, pipe, skip) in [("stdout", &state.stdout, printed.stdout), ("stderr", &state.stderr, printed.stderr)] {
        let bytes = pipe.contents();
        let bytes = bytes.get(skip..).unwrap_or_default();
        for line in String::from_utf8_lossy(bytes).lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(target: "flowhost::plugin", task, stream, "{line}");
        }
    }
}

fn from_wit(error: wit::TaskError) -> TaskError {
    let details = error.details.map(|d| serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d)));
    TaskError { code: error.code, message: error.message, details }
}

fn to_wit(error: &TaskError) -> wit::TaskError {
    wit::TaskError {
        code: error.code.clone(),
        message: error.message.clone(),
        details: error.details.as_ref().map(ToString::to_string),
    }
}
