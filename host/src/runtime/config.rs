//! How an [`Engine`](crate::Engine) is set up: where compiled components are cached, how
//! instance memory is allocated, and whether code counts fuel. `Engine::new()` takes the defaults; a process that wants
//! otherwise (a test suite sharing one cache, a CLI flag) builds an [`EngineConfig`].

use std::path::PathBuf;

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
}

impl Default for EngineConfig {
    /// The cache in `FLOWHOST_CACHE_DIR` or the user's cache directory, pooling, no fuel.
    fn default() -> Self {
        Self { cache_dir: super::cache::default_dir(), pooling: true, fuel: false }
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

    /// Turns fuel metering on, which a flow with `limits.fuel` needs.
    pub fn fuel(mut self, fuel: bool) -> Self {
        self.fuel = fuel;
        self
    }
}
