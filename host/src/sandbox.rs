//! Limits and WASI context per task entry: what one invocation of a task may use and see.
//!
//! Deny by default: an instance gets no filesystem but its entry's granted directories, no
//! environment but its granted variables, no network (sockets and name lookup fail), and a
//! memory cap and a deadline. Clocks and randomness are allowed: tasks legitimately need
//! timestamps and unique ids, and neither reaches anything of the host. The task's stdout and
//! stderr are captured and forwarded to the run's log, tagged with the task name.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::error::TaskError;
use crate::flow::{Access, FlowSpec, TaskSpec};

/// Per-call limits. Every field is optional so a task entry can override only some of the
/// flow's `[limits]`, which in turn fall back to the built-in defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock deadline for each `execute` and each `revert` call, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Linear memory cap per instance, in MiB.
    pub memory_mib: Option<u64>,
    /// Largest result a task may return, in KiB of JSON text.
    pub result_kib: Option<u64>,
    /// Largest arguments object handed to a task, in KiB of JSON text.
    pub args_kib: Option<u64>,
    /// Fuel (roughly one unit per wasm instruction) each call may burn: a CPU budget that,
    /// unlike the deadline, ends a runaway task at the same point on every machine. Unset means
    /// no budget; setting it needs an engine built with fuel metering.
    pub fuel: Option<u64>,
}

/// Limits with every field decided, as applied to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EffectiveLimits {
    /// Deadline per call, in milliseconds.
    pub deadline_ms: u64,
    /// Memory cap per instance, in MiB.
    pub memory_mib: u64,
    /// Result cap, in KiB.
    pub result_kib: u64,
    /// Arguments cap, in KiB.
    pub args_kib: u64,
    /// Fuel budget per call, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
}

impl EffectiveLimits {
    /// Built-in defaults: generous for real work, tight enough that a runaway task is stopped.
    pub const DEFAULT: Self = Self {
        deadline_ms: 30_000,
        memory_mib: 256,
        result_kib: 16 * 1024,
        args_kib: 16 * 1024,
        fuel: None,
    };

    /// The deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }

    /// The result cap in bytes.
    pub fn result_bytes(&self) -> usize {
        usize::try_from(self.result_kib.saturating_mul(1 << 10)).unwrap_or(usize::MAX)
    }

    /// The arguments cap in bytes.
    pub fn args_bytes(&self) -> usize {
        usize::try_from(self.args_kib.saturating_mul(1 << 10)).unwrap_or(usize::MAX)
    }

    /// Refuses an arguments object over the cap before any instance is made: a store value
    /// that grew out of bounds is a fault of the flow, not something to copy into a task.
    pub(crate) fn check_args(&self, args: &str) -> Result<(), TaskError> {
        if args.len() <= self.args_bytes() {
            return Ok(());
        }
        Err(TaskError::host(
            "args-too-large",
            format!("arguments of {} bytes exceed the arguments cap of {} KiB", args.len(), self.args_kib),
        ))
    }

    /// Refuses a result over the cap.
    pub(crate) fn check_result(&self, result: &str) -> Result<(), TaskError> {
        if result.len() <= self.result_bytes() {
            return Ok(());
        }
        Err(TaskError::host(
            "result-too-large",
            format!("result of {} bytes exceeds the result cap of {} KiB", result.len(), self.result_kib),
        ))
    }
}

impl Limits {
    /// Entry limits over flow limits over built-in defaults.
    pub fn resolve(&self, flow: &Limits) -> EffectiveLimits {
        let d = EffectiveLimits::DEFAULT;
        EffectiveLimits {
            deadline_ms: self.deadline_ms.or(flow.deadline_ms).unwrap_or(d.deadline_ms),
            memory_mib: self.memory_mib.or(flow.memory_mib).unwrap_or(d.memory_mib),
            result_kib: self.result_kib.or(flow.result_kib).unwrap_or(d.result_kib),
            args_kib: self.args_kib.or(flow.args_kib).unwrap_or(d.args_kib),
            fuel: self.fuel.or(flow.fuel),
        }
    }
}

/// A granted directory with its host path resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preopen {
    /// Absolute or flow-relative host directory.
    pub host: PathBuf,
    /// Path the task sees.
    pub guest: String,
    /// Read-only or read-write.
    pub access: Access,
}

/// A granted environment variable. Its value is never serialised: `flowhost check --json`
/// and reports show which variables a task sees, not the secrets they may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    /// The variable's name.
    pub name: String,
    /// Where its value comes from.
    pub source: EnvSource,
    #[serde(skip)]
    value: String,
}

/// Where a granted environment variable's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvSource {
    /// The host's environment when the flow was loaded (`env`).
    Host,
    /// A fixed value in the flow (`env_set`).
    Flow,
}

/// Everything one task entry's instances are allowed: limits and capability grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sandbox {
    /// The limits applied to each call.
    pub limits: EffectiveLimits,
    /// Granted directories.
    pub dirs: Vec<Preopen>,
    /// Granted environment variables.
    pub env: Vec<EnvVar>,
}

/// Bytes of a task's stdout or stderr kept per call; beyond it output is cut.
const CAPTURE_BYTES: usize = 64 * 1024;

impl Sandbox {
    /// No grants and the default limits: how plugins are `describe()`d.
    pub fn bare() -> Self {
        Self { limits: EffectiveLimits::DEFAULT, dirs: Vec::new(), env: Vec::new() }
    }

    /// Resolves a task entry's limits and grants against its flow: paths against the flow's
    /// folder, `env` names against the host's environment now. Returns the sandbox and every
    /// problem found with the grants, so validation can report them all at once.
    pub fn for_entry(spec: &TaskSpec, flow: &FlowSpec) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let dirs: Vec<Preopen> = spec
            .dirs
            .iter()
            .map(|d| Preopen { host: flow.resolve(&d.host), guest: d.guest.clone(), access: d.mode })
            .collect();
        for dir in &dirs {
            if !dir.host.is_dir() {
                problems.push(format!("granted directory {} does not exist", dir.host.display()));
            }
            if !dir.guest.starts_with('/') {
                problems.push(format!("guest path `{}` of a granted directory must be absolute", dir.guest));
            }
        }
        let mut env = Vec::new();
        for name in spec.env.iter().filter(|n| !spec.env_set.contains_key(*n)) {
            if let Some(problem) = bad_env_name(name) {
                problems.push(format!("`env` entry `{name}`: {problem}"));
                continue;
            }
            match std::env::var(name) {
                Ok(value) => env.push(EnvVar { name: name.clone(), source: EnvSource::Host, value }),
                Err(std::env::VarError::NotPresent) => problems.push(format!(
                    "`env` grants variable `{name}`, which is not set in flowhost's environment"
                )),
                Err(std::env::VarError::NotUnicode(_)) => {
                    problems.push(format!("`env` grants variable `{name}`, whose value is not UTF-8"))
                }
            }
        }
        for (name, value) in &spec.env_set {
            match bad_env_name(name) {
                Some(problem) => problems.push(format!("`env_set` entry `{name}`: {problem}")),
                None => env.push(EnvVar { name: name.clone(), source: EnvSource::Flow, value: value.clone() }),
            }
        }
        (Self { limits: spec.limits.resolve(&flow.limits), dirs, env }, problems)
    }

    /// Builds the per-instance host state. Fails if a granted directory cannot be opened.
    pub(crate) fn instance_state(&self) -> Result<InstanceState, TaskError> {
        let stdout = MemoryOutputPipe::new(CAPTURE_BYTES);
        let stderr = MemoryOutputPipe::new(CAPTURE_BYTES);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        // wasmtime-wasi denies these by default; saying so here keeps the guarantee from
        // depending on a library default.
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        for var in &self.env {
            wasi.env(&var.name, &var.value);
        }
        for dir in &self.dirs {
            let perms = match dir.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms).map_err(|e| {
                TaskError::host(
                    "grant-unavailable",
                    format!("cannot open granted directory {}: {e}", dir.host.display()),
                )
            })?;
        }
        Ok(InstanceState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryCap { max_bytes: self.limits.memory_bytes(), denied: None },
            stdout,
            stderr,
        })
    }
}

/// Why `name` cannot be an environment variable's name, if it cannot.
fn bad_env_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a variable name cannot be empty")
    } else if name.contains(['=', '\0']) {
        Some("a variable name cannot contain `=` or NUL")
    } else {
        None
    }
}

/// The data of one wasmtime store: one task invocation's WASI context and limiter.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Caps linear memory and remembers a denied growth, so a failure can name the cap.
pub(crate) struct MemoryCap {
    max_bytes: usize,
    /// The size a denied growth asked for.
    pub(crate) denied: Option<usize>,
}

impl MemoryCap {
    /// The cap, for messages.
    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        const MAX_TABLE_ELEMENTS: usize = 1 << 20;
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
