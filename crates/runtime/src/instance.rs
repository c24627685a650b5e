//! One live instance: its wasmtime store, the WASI context built from its sandbox, the
//! limiter that caps its memory, the cap on its WASI handles, and its captured output.

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use std::sync::Arc;

use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::capture::Capture;
use super::host::CallContext;
use super::net::{HttpHooks, TcpAccess, Tls};
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
    pub(super) _slot: Option<crate::slots::Slot>,
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
    http_ctx: WasiHttpCtx,
    /// The task's HTTP grants and what the call spent of its HTTP limits.
    pub(crate) http: HttpHooks,
    /// The task's TCP grants, when it has any.
    pub(crate) tcp: Option<Arc<TcpAccess>>,
}

impl InstanceState {
    /// Builds the per-instance host state. Each granted directory is opened through its run's
    /// pinned handle, never by its path; this fails only if that handle cannot be reopened.
    pub(crate) fn new(sandbox: &Sandbox, tls: &Arc<Tls>) -> Result<InstanceState, TaskError> {
        let stdout = Capture::default();
        let stderr = Capture::default();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        // wasmtime-wasi denies these by default; saying so here keeps the guarantee from
        // depending on a library default. TCP and name lookup open only for granted
        // endpoints (`net.tcp`), checked per address; UDP never.
        let tcp = sandbox.net.has_tcp().then(|| TcpAccess::new(&sandbox.net));
        wasi.allow_tcp(tcp.is_some())
            .allow_udp(false)
            .allow_ip_name_lookup(tcp.is_some());
        match &tcp {
            Some(access) => {
                let access = access.clone();
                wasi.socket_addr_check(move |addr, usage| {
                    let allowed = access.check(addr, usage);
                    if !allowed {
                        tracing::warn!(target: "flowhost::net", "socket use denied: {usage:?} {addr} is not a granted TCP endpoint");
                    }
                    Box::pin(std::future::ready(allowed))
                });
            }
            None => {
                wasi.socket_addr_check(|_, _| Box::pin(std::future::ready(false)));
            }
        }
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
            http_ctx: WasiHttpCtx::new(),
            http: HttpHooks {
                task: String::new(),
                access: sandbox.net.clone(),
                redact: sandbox.redact.clone(),
                tls: tls.clone(),
                max_requests: sandbox.limits.http_requests,
                max_body: sandbox.limits.http_body_bytes(),
                spend: Arc::default(),
            },
            tcp,
        })
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http,
            table: &mut self.table,
            ctx: &mut self.http_ctx,
        }
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
