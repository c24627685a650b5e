//! A loaded plugin and the calls into it: `describe`, `execute` and `revert`, each on an
//! instance of its own (or a warm one) under the call's sandbox and limits.
//!
//! **Deadlines.** Every call — instantiation included — runs under its wall-clock deadline
//! twice over: wasmtime's epoch callback stops wasm that computes past it, and a host timer
//! around the whole call future stops a call that waits in the host (a sleep, a poll on a
//! clock, a blocking read). When the timer fires, the call's future is dropped with its
//! instance: the store, its WASI context and every handle it held are gone, and a warm
//! instance is never handed back. A WASI operation that wasmtime-wasi runs on a blocking
//! thread (file I/O, e.g. opening a FIFO that no one writes) cannot be interrupted: that
//! thread is abandoned and finishes on its own when the operation does; the call has already
//! failed and nothing waits for it (the CLI does not wait for such threads when it exits).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::PluginError;
use super::capture::{CAPTURE_BYTES, Capture};
use super::fault::{DeadlineExceeded, Site, classify, deadline_exceeded};
use super::host::{CallContext, ProgressSink};
use super::instance::{InstanceState, Live};
use super::sandbox::Sandbox;
use super::warm::{IdleBudget, WarmPool};
use super::wit::GuestPre;
use flowhost_core::contract::{HostFault, Outcome, TaskError, TaskInfo, escape};

/// One call's context: which task entry calls, under which sandbox, with which instances,
/// arguments and config.
#[derive(Clone, Copy)]
pub struct Invocation<'a> {
    /// The task entry's name, for messages and log lines.
    pub task: &'a str,
    /// Limits and grants of the call.
    pub sandbox: &'a Sandbox,
    /// The entry's warm instances, when it reuses instances.
    pub warm: Option<&'a WarmPool>,
    /// The arguments object's JSON text.
    pub args: &'a str,
    /// The entry's config object's JSON text.
    pub config: &'a str,
    /// The run the call belongs to, as the task sees it through the `host` import.
    pub run_id: &'a str,
    /// The attempt of the task this call belongs to, from 1.
    pub attempt: u32,
    /// Where the task's progress reports go, if anywhere.
    pub progress: Option<&'a ProgressSink>,
    /// The run's place in line for an instance slot: when calls wait for slots, those of
    /// the run with the lowest `order` get them first (runs number themselves as they
    /// start; 0 goes before every run).
    pub order: u64,
}

impl Invocation<'_> {
    fn context(&self) -> CallContext {
        CallContext {
            run_id: self.run_id.to_owned(),
            task: self.task.to_owned(),
            attempt: self.attempt,
            progress: self.progress.cloned(),
            signals: Default::default(),
            redact: self.sandbox.redact.clone(),
            order: self.order,
        }
    }
}

/// A compiled, pre-linked and described task component.
pub struct Plugin {
    pub(super) path: PathBuf,
    /// The file with symlinks resolved, found once at load.
    pub(super) file: PathBuf,
    pub(super) sha256: String,
    pub(super) pre: GuestPre<InstanceState>,
    /// One slot per instance that may exist at once (pooling slots, or the bound on
    /// instances allocated on demand), handed out oldest run first.
    pub(super) slots: Arc<crate::slots::Slots>,
    /// The engine's TLS client configuration, for `https` requests of its instances.
    pub(super) tls: Arc<super::net::Tls>,
    /// The deadline of `describe()` (and its instantiation).
    pub(super) describe_deadline: Duration,
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

    /// The interfaces the plugin imports, by name (`wasi:http/outgoing-handler@0.2.6`, …).
    pub fn imports(&self) -> Vec<String> {
        self.pre.imports()
    }

    /// The contract version the plugin speaks, as `major.minor` (`0.1`, `0.2`).
    pub fn contract_version(&self) -> &'static str {
        self.pre.version()
    }

    /// The component file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The component file with symlinks resolved, as run records keep it: resolved once at
    /// load, not again for every recorded run.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The warm-instance pool for task entries with this sandbox, shared by every run.
    pub fn warm_pool(&self, sandbox: &Sandbox) -> Arc<WarmPool> {
        let mut pools = self.warm.lock().expect("warm pools poisoned");
        if let Some(pool) = pools.iter().find(|p| p.sandbox() == sandbox) {
            return pool.clone();
        }
        let pool = Arc::new(WarmPool::new(sandbox.clone(), self.idle_warm.clone()));
        pools.push(pool.clone());
        pool
    }

    pub(super) async fn describe(&self) -> Result<TaskInfo, PluginError> {
        let mut sandbox = Sandbox::bare();
        sandbox.limits.deadline_ms =
            u64::try_from(self.describe_deadline.as_millis()).unwrap_or(u64::MAX);
        let site = Site::Describe;
        let context = CallContext {
            task: self.path.display().to_string(),
            attempt: 1,
            ..CallContext::default()
        };
        let info = self
            .call(
                None,
                context,
                &sandbox,
                None,
                &site,
                async |live: &mut Live| live.guest.describe(&mut live.store).await,
            )
            .await;
        let info = info.map_err(|error| {
            let reason = escape(&error.message).into_owned();
            match error.host_fault() {
                Some(HostFault::HostResources) => PluginError::Unavailable {
                    path: self.path.clone(),
                    reason,
                },
                _ => PluginError::Describe {
                    path: self.path.clone(),
                    reason,
                },
            }
        })?;
        Ok(info)
    }

    /// Runs `execute` on a fresh instance, or a warm one from the entry's pool; any trap,
    /// deadline or cap becomes a [`TaskError`].
    pub async fn execute(&self, call: Invocation<'_>) -> Result<String, TaskError> {
        let Invocation {
            task,
            sandbox,
            warm,
            args,
            config,
            ..
        } = call;
        let site = Site::Execute(task);
        let called = self
            .call(
                Some(task),
                call.context(),
                sandbox,
                warm,
                &site,
                async |live: &mut Live| live.guest.execute(&mut live.store, args, config).await,
            )
            .await?;
        // A secret value never leaves the call: what the task returns is redacted first.
        let redact = &sandbox.redact;
        match called {
            Ok(result) => {
                let result = if redact.is_empty() {
                    result
                } else {
                    redact.text(&result)
                };
                sandbox.limits.check_result(&result).map(|()| result)
            }
            Err(error) => Err(redact.error(error)),
        }
    }

    /// Runs `revert` on a fresh instance, or a warm one from the entry's pool, handing it the
    /// outcome of its `execute` and the flow's failures. Returns the revert's result (JSON
    /// text) when the plugin gave one: a 0.2 plugin may, a 0.1 plugin cannot. It is held to
    /// the same cap as an `execute` result.
    pub async fn revert(
        &self,
        call: Invocation<'_>,
        outcome: &Outcome,
        failures: &[(String, TaskError)],
    ) -> Result<Option<String>, TaskError> {
        let Invocation {
            task,
            sandbox,
            warm,
            args,
            config,
            ..
        } = call;
        let site = Site::Revert(task);
        let called = self
            .call(
                Some(task),
                call.context(),
                sandbox,
                warm,
                &site,
                async |live: &mut Live| {
                    live.guest
                        .revert(&mut live.store, args, config, outcome, failures)
                        .await
                },
            )
            .await?;
        let redact = &sandbox.redact;
        match called.map_err(|error| redact.error(error))? {
            Some(result) => {
                let result = redact.text(&result);
                sandbox.limits.check_result(&result).map(|()| Some(result))
            }
            None => Ok(None),
        }
    }

    /// One call into the plugin under the sandbox's deadline: takes a warm instance or an
    /// instance slot and instantiates, runs `body`, forwards what the plugin printed (for
    /// `task`; describe's output is not forwarded), and hands a warm instance back when the
    /// call returned. A call past its deadline is dropped with its instance.
    async fn call<R>(
        &self,
        task: Option<&str>,
        context: CallContext,
        sandbox: &Sandbox,
        warm: Option<&WarmPool>,
        site: &Site<'_>,
        body: impl AsyncFnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, TaskError> {
        let ready = match warm.and_then(WarmPool::take) {
            Some(mut live) => {
                live.calls += 1;
                Ready::Warm(live)
            }
            // Waiting for a slot is the host's queue, not the plugin's time: the deadline
            // starts once the slot is taken.
            None => {
                let slot = self.slots.acquire(context.order).await;
                let mut store =
                    Store::new(self.pre.engine(), InstanceState::new(sandbox, &self.tls)?);
                store.limiter(|state| &mut state.memory);
                Ready::Fresh(store, slot)
            }
        };
        // The rest — instantiation, the call and its deadline — is boxed, so that it is
        // allocated only once the call has its instance: a run waiting above for a slot holds
        // this small future, not the call's whole state (with 100,000 runs in flight, tens of
        // thousands wait here at once).
        Box::pin(self.call_ready(ready, task, context, sandbox, warm, site, body)).await
    }

    /// The part of [`Self::call`] that runs once the call has its instance.
    #[allow(clippy::too_many_arguments)]
    async fn call_ready<R>(
        &self,
        ready: Ready,
        task: Option<&str>,
        context: CallContext,
        sandbox: &Sandbox,
        warm: Option<&WarmPool>,
        site: &Site<'_>,
        body: impl AsyncFnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, TaskError> {
        let deadline = Instant::now() + sandbox.limits.deadline();
        let output = match &ready {
            Ready::Warm(live) => Output::of(live.store.data()),
            Ready::Fresh(store, _) => Output::of(store.data()),
        };
        let run = async {
            let mut live = match ready {
                Ready::Warm(mut live) => {
                    self.arm_limits(&mut live.store, sandbox, deadline)?;
                    live.store.data_mut().http.new_call(&context.task);
                    live.store.data_mut().call = context;
                    live
                }
                Ready::Fresh(mut store, slot) => {
                    self.arm_limits(&mut store, sandbox, deadline)?;
                    store.data_mut().http.new_call(&context.task);
                    store.data_mut().call = context;
                    match self.pre.instantiate_async(&mut store).await {
                        Ok(guest) => Live {
                            store,
                            guest,
                            calls: 1,
                            _slot: Some(slot),
                        },
                        Err(error) => return Err(classify(&error, &store, sandbox, site)),
                    }
                }
            };
            let called = body(&mut live).await;
            // A call that hit an HTTP limit fails with it, whatever it made of the refusal.
            if let Some(fault) = live.store.data().http.fault() {
                return Err(fault);
            }
            Ok((live, called))
        };
        // Classified before the output is forwarded: a trap quotes the plugin's last words.
        let ended = match tokio::time::timeout_at(deadline.into(), run).await {
            Err(_elapsed) => Err(deadline_exceeded(sandbox, site)),
            Ok(Err(error)) => Err(error),
            Ok(Ok((live, Ok(value)))) => Ok((live, value)),
            Ok(Ok((live, Err(error)))) => Err(classify(&error, &live.store, sandbox, site)),
        };
        if let Some(task) = task {
            output.forward(task, &sandbox.redact);
        }
        // What the host says of a failed call may quote the task's output: redacted too.
        let (live, value) = ended.map_err(|error| sandbox.redact.error(error))?;
        release(live, warm);
        Ok(value)
    }

    /// Gives the call its fuel (on a metered engine) and arms its deadline.
    fn arm_limits(
        &self,
        store: &mut Store<InstanceState>,
        sandbox: &Sandbox,
        deadline: Instant,
    ) -> Result<(), TaskError> {
        if self.metered {
            // A metered engine traps at zero fuel, so an entry without a budget gets all of it.
            store
                .set_fuel(sandbox.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| HostFault::HostError.error(format!("cannot set fuel: {e:#}")))?;
        }
        arm_deadline(store, deadline);
        Ok(())
    }
}

/// An instance about to serve a call: a warm one, or a fresh store holding its slot.
enum Ready {
    Warm(Live),
    Fresh(Store<InstanceState>, crate::slots::Slot),
}

/// Starts the call's deadline: the epoch callback fails the call once wasm runs past
/// `deadline`, and otherwise yields so other runs make progress.
fn arm_deadline(store: &mut Store<InstanceState>, deadline: Instant) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(DeadlineExceeded.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// Hands a warm instance back to its pool after a call that returned normally; an instance
/// that trapped, hit a deadline or a cap is dropped.
fn release(live: Live, warm: Option<&WarmPool>) {
    if let Some(pool) = warm
        && live.reusable()
    {
        pool.put(live);
    }
}

/// The captured streams of the instance serving a call, kept outside the call's future so
/// that what a plugin printed before its deadline still reaches the log.
struct Output {
    stdout: Capture,
    stderr: Capture,
}

impl Output {
    fn of(state: &InstanceState) -> Self {
        Self {
            stdout: state.stdout.clone(),
            stderr: state.stderr.clone(),
        }
    }

    /// Forwards what the plugin printed during this call to the log, one line per line of
    /// output, escaped and tagged with the task name; then, if the capture overflowed, one
    /// line saying how much was dropped.
    fn forward(&self, task: &str, redact: &super::net::Redactor) {
        for (stream, capture) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let captured = capture.take();
            if !tracing::enabled!(target: "flowhost::plugin", tracing::Level::INFO) {
                continue;
            }
            for line in String::from_utf8_lossy(&captured.kept)
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                tracing::info!(target: "flowhost::plugin", task, stream, "{}", escape(&redact.text(line)));
            }
            if captured.dropped > 0 {
                tracing::warn!(
                    target: "flowhost::plugin",
                    task,
                    stream,
                    "… {} bytes of output dropped (the log keeps {} KiB per stream per call)",
                    captured.dropped,
                    CAPTURE_BYTES >> 10
                );
            }
        }
    }
}
