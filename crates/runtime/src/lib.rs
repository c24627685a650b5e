//! The wasmtime layer: everything that knows about components, instances and WASI.
//!
//! One [`Runtime`] per process owns the wasmtime `Engine`, the `Linker` offering WASI 0.2,
//! and the epoch ticker that enforces deadlines ([`ticker`]). A [`Plugin`] is a compiled
//! component pre-linked (`InstancePre`) and `describe()`d once; every `execute` or `revert`
//! then runs on a fresh instance in its own store ([`instance`]), so no memory survives
//! between calls — unless its task entry opted into warm instances ([`warm`]). What an
//! instance may see and use is its [`Sandbox`]; how a failed call is reported is [`fault`].
//!
//! Compiled code comes from the on-disk [`ComponentCache`] when it holds the component, and
//! instances come from wasmtime's pooling allocator when the address space allows it. Either
//! way the number of instances alive at once is bounded: a call waits for a slot.
//!
//! This is the only crate that uses wasmtime's unsafe API (loading precompiled code, in
//! `cache`); it depends on `flowhost-core` alone, and the engine builds on it.

mod cache;
mod capture;
mod config;
mod direct;
mod fault;
mod grant;
mod host;
mod instance;
mod net;
mod plugin;
mod sandbox;
mod slots;
mod ticker;
mod warm;
mod wit;

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use cache::ComponentCache;
pub use cache::check_private;
pub use config::EngineConfig;
pub use direct::DirectCall;
pub use host::ProgressSink;
pub use net::{NetAccess, Redactor};
pub use plugin::Invocation;
pub use plugin::Plugin;
pub use sandbox::{EnvSource, EnvVar, GrantError, Pinned, Preopen, Sandbox};
pub use ticker::EPOCH_TICK;
pub use warm::WarmPool;

use flowhost_core::class::{Classify, ErrorClass};
use flowhost_core::contract::TaskInfo;
use instance::InstanceState;
use warm::IdleBudget;
use wit::GuestPre;

/// A plugin could not be loaded as a flowhost task.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read plugin {}: {source}", path.display())]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The path is not a regular file of a plausible size (a device, a FIFO, a directory, a
    /// file over [`MAX_PLUGIN_BYTES`]); it was not read.
    #[error("plugin {} refused: {reason}", path.display())]
    NotAPluginFile {
        /// The plugin path.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The file's bytes are not the plugin expected: their SHA-256 differs from the one the
    /// caller holds (a worker's copy of a submitted plugin that was replaced or damaged).
    #[error("plugin {} is not the expected one: its SHA-256 is {found}, not {expected}", path.display())]
    Mismatch {
        /// The plugin file.
        path: PathBuf,
        /// The hash expected.
        expected: String,
        /// The hash of the bytes read.
        found: String,
    },
    /// The host could not instantiate the plugin (memory or address space exhausted): the
    /// host's trouble, not the plugin's or the flow's.
    #[error("cannot instantiate plugin {} on this host now: {reason}", path.display())]
    Unavailable {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The bytes are not a valid WebAssembly component (a core module, or garbage).
    #[error("plugin {} is not a WebAssembly component: {reason}", path.display())]
    NotAComponent {
        /// The plugin file.
        path: PathBuf,
        /// What the validator said.
        reason: String,
    },
    /// The component imports something the host does not provide.
    #[error("plugin {} imports `{import}`, which the host does not provide (only standard WASI 0.2 and the contract's `flowhost:task/host` are offered)", path.display())]
    UnsupportedImport {
        /// The plugin file.
        path: PathBuf,
        /// The offending import's name.
        import: String,
    },
    /// The component does not export `flowhost:task/task` at a version the host accepts.
    #[error("plugin {} does not export the flowhost task contract (`{}`): {reason}", path.display(), flowhost_core::contract::CONTRACT)]
    NotATask {
        /// The plugin file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// `describe()` trapped or returned something unusable.
    #[error("plugin {} failed in describe(): {reason}", path.display())]
    Describe {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The engine could not be set up (wasmtime configuration, cache directory).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the engine: {0}")]
pub struct SetupError(pub String);

/// The wasmtime version plugins run with (compiled plugins are cached per wasmtime
/// version), read from the workspace's Cargo.lock by the build script.
pub const WASMTIME_VERSION: &str = env!("FLOWHOST_WASMTIME_VERSION");

/// The tracing target of the compile span and its log lines: a command line can show a
/// spinner while the span is open.
pub const COMPILE_TARGET: &str = "flowhost::compile";

/// Component instances the pooling allocator keeps slots for; more calls at once wait for a
/// slot. Each slot reserves address space (not memory) for its linear memories and stack.
const POOL_SLOTS: u32 = 1000;

/// Instances allocated on demand (no pooling) that may be alive at once; more calls wait.
/// Each reserves address space for its memory as it grows rather than 4 GiB up front, but
/// memory is still memory: this bounds what concurrent runs can take together.
const ON_DEMAND_SLOTS: usize = 64;

/// The largest plugin file flowhost reads: components of interpreted languages (Python,
/// JavaScript) weigh tens of MiB; anything past this is not a plugin.
pub const MAX_PLUGIN_BYTES: u64 = 512 << 20;

/// Owns the wasmtime engine shared by every run in the process, and the loaded plugins.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InstanceState>,
    plugins: Mutex<HashMap<PathBuf, Arc<Plugin>>>,
    /// Serialises first loads of each path, so that many runs starting at once compile a
    /// plugin once, while the plugins of one flow load side by side.
    loading: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    cache: Option<ComponentCache>,
    /// One permit per instance that may be alive at once (a pooling slot, or one of
    /// [`ON_DEMAND_SLOTS`]): a call waits for a free slot instead of failing when every slot
    /// is taken.
    slots: Arc<slots::Slots>,
    pooling: bool,
    idle_warm: Arc<IdleBudget>,
    /// Whether compiled code counts fuel, which `limits.fuel` needs.
    fuel: bool,
    describe_deadline: Duration,
    /// Paths no grant may reach: the cache, its key, and what the embedder protects.
    protected: Vec<PathBuf>,
    /// The TLS client configuration of `https` requests, made on first use.
    tls: Arc<net::Tls>,
}

impl Runtime {
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
        let on_demand = || {
            // Machines without room for the pool have little address space: reserve each
            // memory as it grows (explicit bounds checks) instead of 4 GiB plus guards up front.
            let mut small = config.clone();
            small
                .memory_reservation(0)
                .memory_guard_size(0)
                .memory_reservation_for_growth(1 << 20);
            Engine::new(&small).map_err(|e| SetupError(format!("{e:#}")))
        };
        let (engine, slots, pooling) = match pooled {
            Some(Ok(engine)) => (engine, POOL_SLOTS as usize, true),
            Some(Err(error)) => {
                // Like Spin: machines with a small address space (some containers, 32-bit,
                // ulimit -v) cannot reserve the pool; on-demand allocation still works.
                tracing::debug!("pooling allocator unavailable ({error:#}); allocating on demand");
                (on_demand()?, ON_DEMAND_SLOTS, false)
            }
            None => (on_demand()?, ON_DEMAND_SLOTS, false),
        };
        let key = cache::key_path();
        let cache = match (&settings.cache_dir, &key) {
            (Some(dir), Some(key)) => match ComponentCache::open(dir, key, &engine) {
                Ok(cache) => Some(cache),
                Err(error) => {
                    tracing::warn!("{error}; compiling without a cache (--no-cache silences this)");
                    None
                }
            },
            (Some(dir), None) => {
                tracing::warn!(
                    "no place for the key of cache {} (no data directory); compiling without a cache",
                    dir.display()
                );
                None
            }
            (None, _) => None,
        };
        let mut protected = settings.protected.clone();
        protected.extend(settings.cache_dir.iter().cloned());
        protected.extend(key);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SetupError(format!("cannot link WASI: {e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| SetupError(format!("cannot link WASI HTTP: {e:#}")))?;
        // Name lookup answers granted names only: wasmtime-wasi's, behind a check.
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::add_to_linker::<
            InstanceState,
            net::GrantedLookupData,
        >(&mut linker, |state: &mut InstanceState| {
            net::GrantedLookup {
                access: state
                    .tcp
                    .clone()
                    .unwrap_or_else(|| net::TcpAccess::new(&NetAccess::default())),
                sockets: wasmtime_wasi::sockets::WasiSocketsView::sockets(state),
            }
        })
        .map_err(|e| SetupError(format!("cannot link name lookup: {e:#}")))?;
        linker.allow_shadowing(false);
        wit::host_import::add_to_linker::<_, wasmtime::component::HasSelf<host::CallContext>>(
            &mut linker,
            |state: &mut InstanceState| &mut state.call,
        )
        .map_err(|e| SetupError(format!("cannot link the contract's host interface: {e:#}")))?;
        ticker::spawn_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker,
            plugins: Mutex::new(HashMap::new()),
            loading: Mutex::default(),
            cache,
            slots: slots::Slots::new(slots),
            pooling,
            // Idle warm instances, over all plugins: a quarter of the slots, so that fresh
            // instances always find slots.
            idle_warm: IdleBudget::new(slots / 4),
            fuel: settings.fuel,
            describe_deadline: settings.describe_deadline,
            protected,
            tls: net::Tls::new(settings.ca_file.clone()),
        })
    }

    /// Paths no grant may reach: the compiled-code cache and its key, and whatever the
    /// embedder protects ([`EngineConfig::protect`], e.g. the run database).
    pub fn protected(&self) -> &[PathBuf] {
        &self.protected
    }

    /// Whether compiled code counts fuel, which `limits.fuel` needs.
    pub fn fuel_metering(&self) -> bool {
        self.fuel
    }

    /// Whether instances come from the pooling allocator (false: allocated on demand).
    pub fn is_pooling(&self) -> bool {
        self.pooling
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
        let _loading = self.loading_lock(path).lock_owned().await;
        if let Some(plugin) = self.plugins.lock().expect("plugin map poisoned").get(path) {
            return Ok(plugin.clone());
        }
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let known = self
            .plugins
            .lock()
            .expect("plugin map poisoned")
            .get(&key)
            .cloned();
        if let Some(plugin) = known {
            self.plugins
                .lock()
                .expect("plugin map poisoned")
                .insert(path.to_path_buf(), plugin.clone());
            return Ok(plugin);
        }
        let owned = path.to_path_buf();
        // Hashed on the blocking thread that read it: plugins loaded side by side are hashed
        // side by side, not one after another on the thread that awaits them all.
        let (bytes, sha256) = tokio::task::spawn_blocking(move || {
            read_plugin(&owned, false).map(|bytes| {
                let sha256 = format!("{:x}", Sha256::digest(&bytes));
                (bytes, sha256)
            })
        })
        .await
        .map_err(|e| PluginError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })??;
        let plugin = self
            .compile_and_prepare(path, key.clone(), bytes, sha256)
            .await?;
        let mut plugins = self.plugins.lock().expect("plugin map poisoned");
        plugins.insert(path.to_path_buf(), plugin.clone());
        plugins.insert(key, plugin.clone());
        drop(plugins);
        Ok(plugin)
    }

    /// The lock first loads of `path` take. (Two paths naming one file may both compile it
    /// once; the second load then finds the first by the file's canonical path.)
    fn loading_lock(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.loading
            .lock()
            .expect("loading locks poisoned")
            .entry(path.to_path_buf())
            .or_default()
            .clone()
    }

    /// The plugin loaded for `path` (as a flow names it), if any, without loading anything.
    pub fn loaded(&self, path: &Path) -> Option<Arc<Plugin>> {
        self.plugins
            .lock()
            .expect("plugin map poisoned")
            .get(path)
            .cloned()
    }

    /// Loads the component at `path` only if its bytes have the SHA-256 `sha256` (hex), for
    /// files that a name promises but nothing else vouches for (a worker's plugin folder).
    /// The file is opened without following a symlink, checked to be a regular file, its
    /// bytes hashed, and those very bytes compiled: no check-then-use gap in which the file
    /// could be swapped. A symlink is refused ([`PluginError::NotAPluginFile`]), other bytes
    /// are refused ([`PluginError::Mismatch`]). A plugin this runtime already loaded from
    /// bytes with that hash at that path is reused: it is in memory, where nothing can swap
    /// it; later plain [`Runtime::load`]s of the path get it too.
    pub async fn load_verified(
        &self,
        path: &Path,
        sha256: &str,
    ) -> Result<Arc<Plugin>, PluginError> {
        let _loading = self.loading_lock(path).lock_owned().await;
        if let Some(plugin) = self.plugins.lock().expect("plugin map poisoned").get(path)
            && plugin.sha256 == sha256
        {
            return Ok(plugin.clone());
        }
        let owned = path.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || read_plugin(&owned, true))
            .await
            .map_err(|e| PluginError::Read {
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            })??;
        self.load_bytes_locked(path, bytes, sha256).await
    }

    /// Loads `bytes`, which must have the SHA-256 `sha256` (hex), as the plugin at `path`
    /// (where they were just written, say), without reading the file: later loads of `path`
    /// get this plugin.
    pub async fn load_bytes(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        sha256: &str,
    ) -> Result<Arc<Plugin>, PluginError> {
        let _loading = self.loading_lock(path).lock_owned().await;
        self.load_bytes_locked(path, bytes, sha256).await
    }

    async fn load_bytes_locked(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        sha256: &str,
    ) -> Result<Arc<Plugin>, PluginError> {
        let found = format!("{:x}", Sha256::digest(&bytes));
        if found != sha256 {
            return Err(PluginError::Mismatch {
                path: path.to_path_buf(),
                expected: sha256.to_owned(),
                found,
            });
        }
        let plugin = self
            .compile_and_prepare(path, path.to_path_buf(), bytes, found)
            .await?;
        self.plugins
            .lock()
            .expect("plugin map poisoned")
            .insert(path.to_path_buf(), plugin.clone());
        Ok(plugin)
    }

    /// Compiles `bytes` (or takes them from the cache), links and describes them.
    async fn compile_and_prepare(
        &self,
        path: &Path,
        key: PathBuf,
        bytes: Vec<u8>,
        sha256: String,
    ) -> Result<Arc<Plugin>, PluginError> {
        let engine = self.engine.clone();
        let owned = path.to_path_buf();
        let cache = self.cache.clone();
        let hash = sha256.clone();
        let component = tokio::task::spawn_blocking(move || {
            if let Some(component) = cache.as_ref().and_then(|c| c.load(&engine, &hash)) {
                return Ok(component);
            }
            // Python and JavaScript components take tens of seconds: say what is happening.
            // The span lasts as long as the compile, so a terminal can show it while it does.
            let span = tracing::info_span!(target: COMPILE_TARGET, "compile", plugin = %owned.display());
            let _compiling = span.enter();
            tracing::info!(
                target: COMPILE_TARGET,
                "compiling plugin {} ({:.1} MB){}",
                owned.display(),
                bytes.len() as f64 / 1e6,
                if cache.is_some() { "; it is cached for later runs" } else { "" }
            );
            let started = std::time::Instant::now();
            let component = compile(&engine, &owned, &bytes)?;
            tracing::debug!(target: COMPILE_TARGET, "compiled {} in {:.1} s", owned.display(), started.elapsed().as_secs_f64());
            if let Some(cache) = &cache {
                cache.store(&hash, &component);
            }
            Ok(component)
        })
        .await
        .map_err(|e| PluginError::NotAComponent { path: path.to_path_buf(), reason: e.to_string() })??;
        Ok(Arc::new(self.prepare(path, key, sha256, &component).await?))
    }

    async fn prepare(
        &self,
        path: &Path,
        file: PathBuf,
        sha256: String,
        component: &Component,
    ) -> Result<Plugin, PluginError> {
        let instance_pre =
            self.linker
                .instantiate_pre(component)
                .map_err(|e| PluginError::UnsupportedImport {
                    path: path.to_path_buf(),
                    import: missing_import(&e),
                })?;
        let pre = GuestPre::new(instance_pre).map_err(|e| PluginError::NotATask {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        })?;
        let mut plugin = Plugin {
            path: path.to_path_buf(),
            file,
            sha256,
            pre,
            slots: self.slots.clone(),
            describe_deadline: self.describe_deadline,
            idle_warm: self.idle_warm.clone(),
            warm: Mutex::new(Vec::new()),
            tls: self.tls.clone(),
            metered: self.fuel,
            initial_memory: component
                .resources_required()
                .and_then(|r| r.max_initial_memory_size)
                .map(|pages| pages.saturating_mul(WASM_PAGE)),
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
///
/// A freed slot is reset by `memset` over the pages its instance touched — up to
/// [`KEEP_RESIDENT`] per memory, the dirty pages found with the kernel's `PAGEMAP_SCAN` where
/// it has it (Linux 6.7+) — instead of `madvise`. The next instance in the slot still starts
/// from its module's initial memory, so nothing leaks between tasks; what changes is that
/// pages stay mapped: no page faults on reuse, and no `madvise`/`munmap` taking the process's
/// memory-map lock, which made fresh instances stop scaling past one core (BENCHMARKS.md).
/// The price is up to [`KEEP_RESIDENT`] of resident memory per slot that was ever used.
fn pooling_config() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_SLOTS)
        .total_core_instances(10 * POOL_SLOTS)
        .total_memories(2 * POOL_SLOTS)
        .total_tables(4 * POOL_SLOTS)
        .total_stacks(POOL_SLOTS)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT / 16)
        .pagemap_scan(Enabled::Auto);
    pool
}

/// Bytes of each pooled linear memory reset in place rather than given back to the kernel.
const KEEP_RESIDENT: usize = 4 << 20;

/// Reads a plugin file after checking, on the opened file itself, that it is a regular file
/// within [`MAX_PLUGIN_BYTES`]: `/dev/zero`, a FIFO or a huge sparse file is refused before a
/// byte is read. Opened non-blocking, so that opening a FIFO does not wait for a writer.
/// With `no_symlink`, a symlink in the last component is refused rather than followed.
fn read_plugin(path: &Path, no_symlink: bool) -> Result<Vec<u8>, PluginError> {
    use rustix::fs::{FileType, Mode, OFlags};
    let read_error = |source: std::io::Error| PluginError::Read {
        path: path.to_path_buf(),
        source,
    };
    let refuse = |reason: String| PluginError::NotAPluginFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    if no_symlink {
        flags |= OFlags::NOFOLLOW;
    }
    let fd: OwnedFd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) if no_symlink => {
            return Err(refuse("it is a symlink, which is not followed here".into()));
        }
        Err(e) => return Err(read_error(e.into())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| read_error(e.into()))?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("a directory"),
        FileType::Fifo => Some("a FIFO (named pipe)"),
        FileType::CharacterDevice => Some("a character device"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Socket => Some("a socket"),
        _ => Some("not a regular file"),
    };
    if let Some(kind) = kind {
        return Err(refuse(format!("it is {kind}, not a regular file")));
    }
    let size = stat.st_size as u64;
    if size > MAX_PLUGIN_BYTES {
        return Err(refuse(format!(
            "it is {size} bytes, over the {} MiB cap on plugin files",
            MAX_PLUGIN_BYTES >> 20
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The cap again while reading: a file may grow after it was measured.
    std::fs::File::from(fd)
        .take(MAX_PLUGIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(refuse(format!(
            "it grew past the {} MiB cap on plugin files while being read",
            MAX_PLUGIN_BYTES >> 20
        )));
    }
    Ok(bytes)
}
/// Bytes in a WebAssembly page, the unit of linear memory sizes.
const WASM_PAGE: u64 = 64 * 1024;

fn compile(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Component, PluginError> {
    let not_a_component = |reason: &str| PluginError::NotAComponent {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let is_text = path.extension().is_some_and(|ext| ext == "wat");
    if !is_text && !bytes.starts_with(b"\0asm") {
        return Err(not_a_component(
            "not a WebAssembly binary (no `\\0asm` header)",
        ));
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

impl Classify for PluginError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Read { .. } => ErrorClass::Unreadable,
            Self::Unavailable { .. } => ErrorClass::Unavailable,
            Self::Mismatch { .. } => ErrorClass::Mismatch,
            _ => ErrorClass::Invalid,
        }
    }
}
