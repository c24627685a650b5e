//! How an [`Engine`](crate::Engine) is set up: where compiled components are cached, how
//! instance memory is allocated, and whether code counts fuel. `Engine::new()` takes the defaults; a process that wants
//! otherwise (a test suite sharing one cache, a CLI flag) builds an [`EngineConfig`].

use std::path::PathBuf;
use std::time::Duration;

/// Engine settings, decided once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Directory of the compiled-component cache; `None` compiles every plugin on each load.
    pub cache_dir: Option<PathBuf>,
    /// Use wasmtime's pooling allocator (preallocated instance slots, the fastest way to get a
    /// fresh instance) when the machine's address space allows it; otherwise, or when
    /// `false`, memory is allocated on demand per instance.
    pub pooling: bool,
    /// Compile plugins with fuel metering so that entries may set `limits.fuel`. Off by
    /// default: metering slows every instruction of every task, budget or not.
    pub fuel: bool,
    /// Wall-clock deadline of a plugin's `describe()` call, instantiation included, when it
    /// is loaded. A plugin that blocks there fails to load instead of hanging validation.
    pub describe_deadline: Duration,
    /// Paths no task may be granted, nor a directory holding them: the run database, for
    /// instance. The compiled-code cache and its key are always protected.
    pub protected: Vec<PathBuf>,
    /// A PEM file of CA certificates trusted for `https` besides the system's roots (a
    /// private CA); `FLOWHOST_CA_FILE` by default.
    pub ca_file: Option<PathBuf>,
}

impl Default for EngineConfig {
    /// The cache in `FLOWHOST_CACHE_DIR` or the user's cache directory, pooling, no fuel, a
    /// 30 s describe deadline, nothing protected beyond the cache, the CA file in
    /// `FLOWHOST_CA_FILE` if set.
    fn default() -> Self {
        Self {
            cache_dir: super::cache::default_dir(),
            pooling: true,
            fuel: false,
            describe_deadline: Duration::from_secs(30),
            protected: Vec::new(),
            ca_file: std::env::var_os("FLOWHOST_CA_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

impl EngineConfig {
    /// Caches compiled components in `dir`.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Neither reads nor writes the compiled-component cache.
    pub fn no_cache(mut self) -> Self {
        self.cache_dir = None;
        self
    }

    /// Turns the pooling allocator on (when the address space allows) or off.
    pub fn pooling(mut self, pooling: bool) -> Self {
        self.pooling = pooling;
        self
    }

    /// Sets the deadline of `describe()` at load.
    pub fn describe_deadline(mut self, deadline: Duration) -> Self {
        self.describe_deadline = deadline;
        self
    }

    /// Refuses, at validation, any grant that reaches `path` (e.g. the run database).
    pub fn protect(mut self, path: impl Into<PathBuf>) -> Self {
        self.protected.push(path.into());
        self
    }

    /// Trusts the CA certificates in the PEM file `path` for `https`, besides the system's.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Turns fuel metering on, which a flow with `limits.fuel` needs.
    pub fn fuel(mut self, fuel: bool) -> Self {
        self.fuel = fuel;
        self
    }
}
