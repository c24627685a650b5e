//! Limits per task entry: what one call of a task may spend. Data only: the engine resolves
//! them (entry over flow over built-in defaults) and the runtime enforces them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contract::{HostFault, TaskError};

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
    /// WASI handles (open files and directories, streams, pollables, …) one instance may hold
    /// at once. Each open file is also a host file descriptor, so this bounds what one task
    /// can take from the process's descriptor table.
    pub handles: Option<u64>,
    /// HTTP requests one call may send.
    pub http_requests: Option<u64>,
    /// Response body bytes one call may read over HTTP, in MiB (all its responses together).
    pub http_body_mib: Option<u64>,
}

/// The longest `deadline_ms` a flow may set: 24 hours. A call that may take longer belongs
/// to a run whose executor cannot drain, hand back or be stopped in any useful time; split
/// the work instead.
pub const MAX_DEADLINE_MS: u64 = 24 * 60 * 60 * 1000;

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
    /// WASI handles per instance.
    pub handles: u64,
    /// HTTP requests per call.
    pub http_requests: u64,
    /// HTTP response body MiB per call.
    pub http_body_mib: u64,
}

impl EffectiveLimits {
    /// Built-in defaults: generous for real work, tight enough that a runaway task is stopped.
    pub const DEFAULT: Self = Self {
        deadline_ms: 30_000,
        memory_mib: 256,
        result_kib: 16 * 1024,
        args_kib: 16 * 1024,
        fuel: None,
        handles: 1024,
        http_requests: 64,
        http_body_mib: 64,
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

    /// The handle cap as a table size.
    pub fn handle_count(&self) -> usize {
        usize::try_from(self.handles).unwrap_or(usize::MAX)
    }

    /// The HTTP response body cap in bytes.
    pub fn http_body_bytes(&self) -> u64 {
        self.http_body_mib.saturating_mul(1 << 20)
    }

    /// The arguments cap in bytes.
    pub fn args_bytes(&self) -> usize {
        usize::try_from(self.args_kib.saturating_mul(1 << 10)).unwrap_or(usize::MAX)
    }

    /// Refuses an arguments object over the cap before any instance is made: a store value
    /// that grew out of bounds is a fault of the flow, not something to copy into a task.
    pub fn check_args(&self, args: &str) -> Result<(), TaskError> {
        if args.len() <= self.args_bytes() {
            return Ok(());
        }
        Err(HostFault::ArgsTooLarge.error(format!(
            "arguments of {} bytes exceed the arguments cap of {} KiB",
            args.len(),
            self.args_kib
        )))
    }

    /// Refuses a result over the cap.
    pub fn check_result(&self, result: &str) -> Result<(), TaskError> {
        if result.len() <= self.result_bytes() {
            return Ok(());
        }
        Err(HostFault::ResultTooLarge.error(format!(
            "result of {} bytes exceeds the result cap of {} KiB",
            result.len(),
            self.result_kib
        )))
    }
}

impl Limits {
    /// Entry limits over flow limits over built-in defaults.
    pub fn resolve(&self, flow: &Limits) -> EffectiveLimits {
        let d = EffectiveLimits::DEFAULT;
        EffectiveLimits {
            deadline_ms: self
                .deadline_ms
                .or(flow.deadline_ms)
                .unwrap_or(d.deadline_ms),
            memory_mib: self.memory_mib.or(flow.memory_mib).unwrap_or(d.memory_mib),
            result_kib: self.result_kib.or(flow.result_kib).unwrap_or(d.result_kib),
            args_kib: self.args_kib.or(flow.args_kib).unwrap_or(d.args_kib),
            fuel: self.fuel.or(flow.fuel),
            handles: self.handles.or(flow.handles).unwrap_or(d.handles),
            http_requests: self
                .http_requests
                .or(flow.http_requests)
                .unwrap_or(d.http_requests),
            http_body_mib: self
                .http_body_mib
                .or(flow.http_body_mib)
                .unwrap_or(d.http_body_mib),
        }
    }
}
