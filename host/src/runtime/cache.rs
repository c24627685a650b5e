//! The on-disk cache of compiled components, shared by every process on the machine.
//!
//! Compiling a component costs 0.1 s (Rust) to 10 s (Python, JavaScript); loading the same
//! code precompiled costs well under a millisecond. So every component the engine compiles is
//! also written here, and every later process loads it instead of compiling again.
//!
//! An entry's file name is the SHA-256 of the component's bytes plus a fingerprint of the
//! wasmtime version and engine configuration, so a changed plugin or a new flowhost never
//! picks up stale code. The file holds a header (magic, payload length, payload SHA-256) and
//! then wasmtime's serialized component: a truncated or corrupted entry fails the check, is
//! logged and rebuilt. Entries are written to a temporary file in the same directory and
//! renamed into place, so concurrent processes never see a half-written entry; when two
//! compile the same component at once, both write the same content and the last rename wins.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::SetupError;

/// Environment variable that moves the cache (the CLI's `--cache-dir` wins over it).
pub const CACHE_DIR_ENV: &str = "FLOWHOST_CACHE_DIR";

/// First bytes of every entry; bump the digit when the layout changes.
const MAGIC: &[u8; 8] = b"FHCC\x00\x00\x00\x01";
/// Magic, payload length (u64 little endian), payload SHA-256.
const HEADER_LEN: usize = MAGIC.len() + 8 + 32;

/// A directory of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_tag: String,
}

/// The default cache directory: `FLOWHOST_CACHE_DIR`, else `flowhost` in the user's cache
/// directory (`~/.cache/flowhost` on Linux). `None` when neither is known.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os(CACHE_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => dirs::cache_dir().map(|dir| dir.join("flowhost")),
    }
}

impl ComponentCache {
    /// Opens (creating it if needed) the cache at `dir` for components compiled by `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, SetupError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SetupError(format!("cannot create cache directory {}: {e}", dir.display())))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // The hash covers the wasmtime version, target, compiler flags and engine features.
        let engine_tag = format!("{:016x}", hasher.finish());
        Ok(Self { dir: dir.to_path_buf(), engine_tag })
    }

    /// The directory entries live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry file for a component with these bytes.
    pub fn entry_path(&self, component_bytes: &[u8]) -> PathBuf {
        let digest = Sha256::digest(component_bytes);
        self.dir.join(format!("{}-{}.cwasm", hex(&digest), self.engine_tag))
    }

    /// The cached component for `bytes`, or `None` when there is no usable entry (missing,
    /// corrupt, or built by an incompatible engine); a bad entry is logged and removed.
    pub(crate) fn load(&self, engine: &Engine, bytes: &[u8]) -> Option<Component> {
        let path = self.entry_path(bytes);
        let entry = std::fs::read(&path).ok()?;
        let loaded = verified_payload(&entry).and_then(|payload| deserialize(engine, payload));
        match loaded {
            Ok(component) => {
                tracing::debug!(entry = %path.display(), "loaded compiled component from the cache");
                Some(component)
            }
            Err(reason) => {
                tracing::warn!(entry = %path.display(), "ignoring cache entry ({reason}); compiling again");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes the compiled `component` for `bytes`. Failing to write only costs a later
    /// recompilation, so errors are logged, not returned.
    pub(crate) fn store(&self, bytes: &[u8], component: &Component) {
        let path = self.entry_path(bytes);
        let written = component
            .serialize()
            .map_err(|e| format!("cannot serialize: {e:#}"))
            .and_then(|payload| self.write_atomically(&path, &payload).map_err(|e| e.to_string()));
        match written {
            Ok(()) => tracing::debug!(entry = %path.display(), "stored compiled component in the cache"),
            Err(reason) => tracing::warn!(entry = %path.display(), "cannot write cache entry: {reason}"),
        }
    }

    fn write_atomically(&self, path: &Path, payload: &[u8]) -> std::io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(MAGIC)?;
        file.write_all(&(payload.len() as u64).to_le_bytes())?;
        file.write_all(&Sha256::digest(payload))?;
        file.write_all(payload)?;
        file.as_file().sync_data()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Checks the header and returns the serialized component it guards.
fn verified_payload(entry: &[u8]) -> Result<&[u8], String> {
    if entry.len() < HEADER_LEN || &entry[..MAGIC.len()] != MAGIC {
        return Err("not a flowhost cache entry".into());
    }
    let (len, rest) = entry[MAGIC.len()..].split_at(8);
    let (digest, payload) = rest.split_at(32);
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    if payload.len() as u64 != len {
        return Err(format!("truncated: {} of {len} bytes", payload.len()));
    }
    if Sha256::digest(payload).as_slice() != digest {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

/// Loads wasmtime's serialized component.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> Result<Component, String> {
    // SAFETY: wasmtime requires that the bytes were produced by `Component::serialize` of a
    // compatible engine, because they hold machine code that is run as is. The cache
    // directory belongs to the user running flowhost (like `~/.cargo`): whoever can write
    // there can already run code as that user. Within that trust model the bytes passed here
    // are exactly what `ComponentCache::store` wrote: the header's length and SHA-256 were
    // checked above, so truncation and corruption are caught before this call, and wasmtime
    // itself rejects bytes from another wasmtime version or engine configuration.
    unsafe { Component::deserialize(engine, payload) }.map_err(|e| format!("{e:#}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
