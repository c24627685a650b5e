//! Limits and WASI context per task entry: what one invocation of a task may use and see.
//!
//! Deny by default: an instance gets no filesystem but its entry's granted directories, no
//! environment, no network (sockets and name lookup fail), and a memory cap and a deadline.
//! Clocks and randomness are allowed. The task's stdout and stderr are captured and forwarded
//! to the run's log, tagged with the task name.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::error::TaskError;
use crate::flow::Access;

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
}

impl EffectiveLimits {
    /// Built-in defaults: generous for real work, tight enough that a runaway task is stopped.
    pub const DEFAULT: Self = Self { deadline_ms: 30_000, memory_mib: 256, result_kib: 16 * 1024 };

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
}

impl Limits {
    /// Entry limits over flow limits over built-in defaults.
    pub fn resolve(&self, flow: &Limits) -> EffectiveLimits {
        let d = EffectiveLimits::DEFAULT;
        EffectiveLimits {
            deadline_ms: self.deadline_ms.or(flow.deadline_ms).unwrap_or(d.deadline_ms),
            memory_mib: self.memory_mib.or(flow.memory_mib).unwrap_or(d.memory_mib),
            result_kib: self.result_kib.or(flow.result_kib).unwrap_or(d.result_kib),
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

/// Everything one task entry's instances are allowed: limits and capability grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sandbox {
    /// The limits applied to each call.
    pub limits: EffectiveLimits,
    /// Granted directories.
    pub dirs: Vec<Preopen>,
}

/// Bytes of a task's stdout or stderr kept per call; beyond it output is cut.
const CAPTURE_BYTES: usize = 64 * 1024;

impl Sandbox {
    /// No grants and the default limits: how plugins are `describe()`d.
    pub fn bare() -> Self {
        Self { limits: EffectiveLimits::DEFAULT, dirs: Vec::new() }
    }

    /// Builds the per-instance host state. Fails if a granted directory cannot be opened.
    pub(crate) fn instance_state(&self) -> Result<InstanceState, TaskError> {
        let stdout = MemoryOutputPipe::new(CAPTURE_BYTES);
        let stderr = MemoryOutputPipe::new(CAPTURE_BYTES);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
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
