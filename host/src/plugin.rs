//! Plugins: the wasmtime engine, compiled components, and the calls into them.
//!
//! One [`Runtime`] per process owns the wasmtime `Engine`, the `Linker` offering WASI 0.2,
//! and the epoch ticker that enforces deadlines. A [`Plugin`] is a compiled component
//! pre-linked (`InstancePre`) and `describe()`d once; every `execute` or `revert` then runs
//! on a fresh instance in its own store, so no memory survives between calls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, Trap, UpdateDeadline};

use crate::error::{PluginError, SetupError, TaskError};
use crate::sandbox::{InstanceState, Sandbox};

/// The contract this host accepts: plugins must export this interface (any 0.1.x).
pub const CONTRACT: &str = "flowhost:task/task@0.1.0";

/// How often the epoch advances; deadlines are checked, and busy tasks yield to other runs,
/// at this granularity.
const EPOCH_TICK: Duration = Duration::from_millis(10);

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
    fuel: bool,
}

impl Runtime {
    /// Configures wasmtime (epoch interruption for deadlines; fuel metering when asked, as it
    /// is fixed at engine creation) and starts the epoch ticker.
    pub fn new(fuel: bool) -> Result<Self, SetupError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        let engine = Engine::new(&config).map_err(|e| SetupError(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SetupError(format!("cannot link WASI: {e:#}")))?;
        spawn_epoch_ticker(&engine);
        Ok(Self { engine, linker, plugins: Mutex::new(HashMap::new()), fuel })
    }

    /// Whether compiled code counts fuel, which `limits.fuel` needs.
    pub fn fuel_metering(&self) -> bool {
        self.fuel
    }

    /// Loads, checks and describes the component at `path`, once per path per runtime.
    pub async fn load(&self, path: &Path) -> Result<Arc<Plugin>, PluginError> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(plugin) = self.plugins.lock().expect("plugin map poisoned").get(&key) {
            return Ok(plugin.clone());
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| PluginError::Read { path: path.to_path_buf(), source })?;
        let engine = self.engine.clone();
        let owned = path.to_path_buf();
        let component = tokio::task::spawn_blocking(move || compile(&engine, &owned, &bytes))
            .await
            .map_err(|e| PluginError::NotAComponent { path: path.to_path_buf(), reason: e.to_string() })??;
        let plugin = Arc::new(self.prepare(path, &component).await?);
        self.plugins.lock().expect("plugin map poisoned").insert(key, plugin.clone());
        Ok(plugin)
    }

    async fn prepare(&self, path: &Path, component: &Component) -> Result<Plugin, PluginError> {
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            PluginError::UnsupportedImport { path: path.to_path_buf(), import: missing_import(&e) }
        })?;
        let pre = bindings::PluginPre::new(instance_pre)
            .map_err(|e| PluginError::NotATask { path: path.to_path_buf(), reason: format!("{e:#}") })?;
        let mut plugin = Plugin {
            path: path.to_path_buf(),
            pre,
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
    pre: bindings::PluginPre<InstanceState>,
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

    /// The component file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn describe(&self) -> Result<TaskInfo, PluginError> {
        let sandbox = Sandbox::bare();
        let fail = |reason: String| PluginError::Describe { path: self.path.clone(), reason };
        let (mut store, guest) =
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

    /// Runs `execute` on a fresh instance; any trap, deadline or cap becomes a [`TaskError`].
    pub(crate) async fn execute(
        &self,
        task: &str,
        sandbox: &Sandbox,
        args: &str,
        config: &str,
    ) -> Result<String, TaskError> {
        let (mut store, guest) = self.instantiate(sandbox, &Site::Execute(task)).await?;
        let called = guest.flowhost_task_task().call_execute(&mut store, args, config).await;
        forward_output(task, &store);
        match called {
            Ok(Ok(result)) => sandbox.limits.check_result(&result).map(|()| result),
            Ok(Err(error)) => Err(from_wit(error)),
            Err(error) => Err(classify(&error, &store, sandbox, &Site::Execute(task))),
        }
    }

    /// Runs `revert` on a fresh instance.
    pub(crate) async fn revert(
        &self,
        task: &str,
        sandbox: &Sandbox,
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
        let (mut store, guest) = self.instantiate(sandbox, &Site::Revert(task)).await?;
        let called = guest
            .flowhost_task_task()
            .call_revert(&mut store, args, config, &outcome, &failures)
            .await;
        forward_output(task, &store);
        match called {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(from_wit(error)),
            Err(error) => Err(classify(&error, &store, sandbox, &Site::Revert(task))),
        }
    }

    async fn instantiate(
        &self,
        sandbox: &Sandbox,
        site: &Site<'_>,
    ) -> Result<(Store<InstanceState>, bindings::Plugin), TaskError> {
        let mut store = Store::new(self.pre.engine(), sandbox.instance_state()?);
        store.limiter(|state| &mut state.memory);
        if self.metered {
            // A metered engine traps at zero fuel, so an entry without a budget gets all of it.
            store
                .set_fuel(sandbox.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| TaskError::host("host-error", format!("cannot set fuel: {e:#}")))?;
        }
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
        match self.pre.instantiate_async(&mut store).await {
            Ok(guest) => Ok((store, guest)),
            Err(error) => Err(classify(&error, &store, sandbox, site)),
        }
    }
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

/// Forwards what the plugin printed to the log, tagged with the task name.
fn forward_output(task: &str, store: &Store<InstanceState>) {
    let state = store.data();
    for (stream, pipe) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let bytes = pipe.contents();
        for line in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.trim().is_empty()) {
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
