//! One live instance: its wasmtime store, the WASI context built from its sandbox, the
//! limiter that caps its memory, the cap on its WASI handles, and its captured output.

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::capture::Capture;
use super::host::CallContext;
use super::sandbox::Sandbox;
use super::wit::Guest;
use flowhost_core::contract::{HostFault, TaskError};
use flowhost_core::flow::Access;

/// A live instance with its store, holding its pooling slot until dropped.
pub(crate) struct Live {
    pub(super) store: wasmtime::Store<InstanceState>,
    pub(super) guest: Guest,
    /// Calls this instance has served.
    pub(super) calls: u32,
    /// Dropped after the store, so the slot is free before another call takes it.
    pub(super) _slot: Option<OwnedSemaphorePermit>,
}

impl Live {
    /// Whether the instance may serve another call: it must not have hit its memory cap, and
    /// it is retired after [`REUSE_CALLS`] calls so that whatever a plugin accumulates across
    /// calls (memory fragments, leaked handles) stays bounded.
    pub(super) fn reusable(&self) -> bool {
        self.calls < REUSE_CALLS && self.store.data().memory.denied.is_none()
    }
}

/// Calls after which a warm instance is retired and replaced by a fresh one.
const REUSE_CALLS: u32 = 64;

/// The data of one wasmtime store: one task invocation's WASI context and limiter.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
    /// The call being served, for the `host` import.
    pub(crate) call: CallContext,
}

impl InstanceState {
    /// Builds the per-instance host state. Each granted directory is opened through its run's
    /// pinned handle, never by its path; this fails only if that handle cannot be reopened.
    pub(crate) fn new(sandbox: &Sandbox) -> Result<InstanceState, TaskError> {
        let stdout = Capture::default();
        let stderr = Capture::default();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        // wasmtime-wasi denies these by default; saying so here keeps the guarantee from
        // depending on a library default.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for var in &sandbox.env {
            wasi.env(&var.name, &var.value);
        }
        for dir in &sandbox.dirs {
            let perms = match dir.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            wasi.preopened_dir(dir.dir.handle_path(), &dir.guest, perms)
                .map_err(|e| {
                    HostFault::GrantUnavailable.error(format!(
                        "cannot open pinned granted directory {}: {e}",
                        dir.host.display()
                    ))
                })?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(sandbox.limits.handle_count());
        Ok(InstanceState {
            wasi: wasi.build(),
            table,
            memory: MemoryCap {
                max_bytes: sandbox.limits.memory_bytes(),
                denied: None,
            },
            stdout,
            stderr,
            call: CallContext::default(),
        })
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
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
