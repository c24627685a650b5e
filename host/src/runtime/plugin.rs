//! A loaded plugin and the calls into it: `describe`, `execute` and `revert`, each on an
//! instance of its own (or a warm one) under the call's sandbox and limits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;
use wasmtime::{Store, UpdateDeadline};

use super::fault::{DeadlineExceeded, Site, classify};
use super::instance::{InstanceState, Live};
use super::sandbox::Sandbox;
use super::warm::{IdleBudget, WarmPool};
use super::wit::{bindings, from_wit, to_wit, wit};
use super::PluginError;
use crate::contract::{HostFault, Outcome, TaskError, TaskInfo};

/// One call's context: which task entry calls, under which sandbox, with which instances,
/// arguments and config.
#[derive(Clone, Copy)]
pub(crate) struct Invocation<'a> {
    /// The task entry's name, for messages and log lines.
    pub(crate) task: &'a str,
    /// Limits and grants of the call.
    pub(crate) sandbox: &'a Sandbox,
    /// The entry's warm instances, when it reuses instances.
    pub(crate) warm: Option<&'a WarmPool>,
    /// The arguments object's JSON text.
    pub(crate) args: &'a str,
    /// The entry's config object's JSON text.
    pub(crate) config: &'a str,
}

/// A compiled, pre-linked and described task component.
pub struct Plugin {
    pub(super) path: PathBuf,
    pub(super) sha256: String,
    pub(super) pre: bindings::PluginPre<InstanceState>,
    pub(super) slots: Option<Arc<Semaphore>>,
    pub(super) idle_warm: Arc<IdleBudget>,
    /// Warm instances per sandbox, for task entries with `instances = "reuse"`.
    pub(super) warm: Mutex<Vec<Arc<WarmPool>>>,
    /// Compiled on a fuel-metering engine: every call needs its fuel set.
    pub(super) metered: bool,
    /// The largest initial linear memory of its modules, in bytes, when known statically.
    pub(super) initial_memory: Option<u64>,
    pub(super) info: TaskInfo,
}

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

    /// The linear memory (bytes) the component starts with, when known: a memory cap below
    /// it fails every instantiation, which validation reports before anything runs.
    pub fn initial_memory_bytes(&self) -> Option<u64> {
        self.initial_memory
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

    pub(super) async fn describe(&self) -> Result<TaskInfo, PluginError> {
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

    /// Runs `execute` on a fresh instance, or a warm one from the entry's pool; any trap,
    /// deadline or cap becomes a [`TaskError`].
    pub(crate) async fn execute(&self, call: Invocation<'_>) -> Result<String, TaskError> {
        let Invocation { task, sandbox, warm, args, config } = call;
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

    /// Runs `revert` on a fresh instance, or a warm one from the entry's pool, handing it the
    /// outcome of its `execute` and the flow's failures.
    pub(crate) async fn revert(
        &self,
        call: Invocation<'_>,
        outcome: &Outcome,
        failures: &[(String, TaskError)],
    ) -> Result<(), TaskError> {
        let Invocation { task, sandbox, warm, args, config } = call;
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
        let mut store = Store::new(self.pre.engine(), InstanceState::new(sandbox)?);
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
                .map_err(|e| HostFault::HostError.error( format!("cannot set fuel: {e:#}")))?;
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
