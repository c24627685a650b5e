//! The on-disk cache of compiled components, shared by every process on the machine.
//!
//! Compiling a component costs 0.1 s (Rust) to 10 s (Python, JavaScript); loading the same
//! code precompiled costs well under a millisecond. So every component the engine compiles is
//! also written here, and every later process loads it instead of compiling again.
//!
//! An entry's file name is the SHA-256 of the component's bytes plus a fingerprint of the
//! wasmtime version and engine configuration — the entry's *key* —, so a changed plugin or a
//! new flowhost never picks up stale code. The file holds a header (magic, payload length,
//! tag) and then wasmtime's serialized component. Entries are written to a temporary file in
//! the same directory and renamed into place, so concurrent processes never see a
//! half-written entry; when two compile the same component at once, both write the same
//! content and the last rename wins.
//!
//! **Trust.** An entry is machine code that runs in the host, so it is accepted only when its
//! tag is the keyed BLAKE3 hash (a MAC), under a per-user secret key, of its key and payload.
//! BLAKE3 rather than HMAC-SHA256 because every process checks every entry it loads: on a
//! cached `flowhost run` the tags of a few megabytes of compiled code were a tenth of the
//! process's CPU time with SHA-256, and BLAKE3 is several times faster at the same strength. The key
//! ([`key_path`]) lives outside the cache directory, is created on first use readable by its
//! owner only, and no task may be granted it. So a corrupted entry, one forged with a
//! recomputed checksum, or an entry copied under another plugin's key fails the check, is
//! logged, removed and compiled again. The directory itself must belong to the user running
//! flowhost and be writable by no one else; otherwise the cache is refused (with a warning)
//! and plugins are compiled afresh.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::SetupError;

/// Environment variable that moves the cache (the CLI's `--cache-dir` wins over it).
pub const CACHE_DIR_ENV: &str = "FLOWHOST_CACHE_DIR";

/// Environment variable that moves the cache's secret key file.
pub const CACHE_KEY_ENV: &str = "FLOWHOST_CACHE_KEY";

/// First bytes of every entry; bump the digit when the layout changes.
const MAGIC: &[u8; 8] = b"FHCC\x00\x00\x00\x03";
/// Magic, payload length (u64 little endian), keyed BLAKE3 tag.
const HEADER_LEN: usize = MAGIC.len() + 8 + 32;
/// Bytes of the secret key.
const KEY_LEN: usize = 32;

/// A directory of compiled components for one engine configuration.
#[derive(Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_tag: String,
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for ComponentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentCache")
            .field("dir", &self.dir)
            .field("engine_tag", &self.engine_tag)
            .finish()
    }
}

/// Where the cache's secret key is: `FLOWHOST_CACHE_KEY`, else `flowhost/cache.key` in the
/// user's data directory (`~/.local/share` on Linux). Never inside the cache directory.
pub fn key_path() -> Option<PathBuf> {
    match std::env::var_os(CACHE_KEY_ENV) {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => dirs::data_dir().map(|dir| dir.join("flowhost").join("cache.key")),
    }
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
    /// Opens (creating it if needed, private to this user) the cache at `dir` for components
    /// compiled by `engine`, with the secret key at `key` (created on first use). Refuses a
    /// directory another user owns or others may write, and a key inside the cache.
    pub fn open(dir: &Path, key: &Path, engine: &Engine) -> Result<Self, SetupError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                SetupError(format!(
                    "cannot create cache directory {}: {e}",
                    dir.display()
                ))
            })?;
        check_private(dir, "cache directory")?;
        if absolute(key).starts_with(absolute(dir)) {
            return Err(SetupError(format!(
                "the cache key {} lies inside the cache directory {}; it must be kept apart",
                key.display(),
                dir.display()
            )));
        }
        let key = read_or_create_key(key)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // The hash covers the wasmtime version, target, compiler flags and engine features.
        let engine_tag = format!("{:016x}", hasher.finish());
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_tag,
            key,
        })
    }

    /// The directory entries live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry key (and file stem) for a component whose bytes have the SHA-256 `sha256`
    /// (hex): the caller hashed them already, to know the plugin by.
    fn entry_key(&self, sha256: &str) -> String {
        format!("{sha256}-{}", self.engine_tag)
    }

    /// The entry file for a component whose bytes have the SHA-256 `sha256` (hex).
    pub fn entry_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{}.cwasm", self.entry_key(sha256)))
    }

    /// The tag that binds `payload` to the entry `key` and to this user's secret.
    fn tag(&self, key: &str, payload: &[u8]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(&(key.len() as u64).to_le_bytes());
        mac.update(key.as_bytes());
        mac.update(payload);
        mac.finalize()
    }

    /// The cached component for the bytes with SHA-256 `sha256` (hex), or `None` when there is no usable entry (missing,
    /// corrupt, forged, another component's, or built by an incompatible engine); a bad entry
    /// is logged and removed.
    pub(crate) fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.entry_path(sha256);
        let entry = std::fs::read(&path).ok()?;
        let key = self.entry_key(sha256);
        let loaded = self
            .verified_payload(&key, &entry)
            .and_then(|payload| deserialize(engine, payload));
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

    /// Writes the compiled `component` for the bytes with SHA-256 `sha256` (hex). Failing to write only costs a later
    /// recompilation, so errors are logged, not returned.
    pub(crate) fn store(&self, sha256: &str, component: &Component) {
        let path = self.entry_path(sha256);
        let key = self.entry_key(sha256);
        let written = component
            .serialize()
            .map_err(|e| format!("cannot serialize: {e:#}"))
            .and_then(|payload| {
                self.write_atomically(&path, &key, &payload)
                    .map_err(|e| e.to_string())
            });
        match written {
            Ok(()) => {
                tracing::debug!(entry = %path.display(), "stored compiled component in the cache")
            }
            Err(reason) => {
                tracing::warn!(entry = %path.display(), "cannot write cache entry: {reason}")
            }
        }
    }

    fn write_atomically(&self, path: &Path, key: &str, payload: &[u8]) -> std::io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(MAGIC)?;
        file.write_all(&(payload.len() as u64).to_le_bytes())?;
        file.write_all(self.tag(key, payload).as_bytes())?;
        file.write_all(payload)?;
        file.as_file().sync_data()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Checks the header and the tag, and returns the serialized component they guard.
    fn verified_payload<'e>(&self, key: &str, entry: &'e [u8]) -> Result<&'e [u8], String> {
        if entry.len() < HEADER_LEN || &entry[..MAGIC.len()] != MAGIC {
            return Err("not a flowhost cache entry".into());
        }
        let (len, rest) = entry[MAGIC.len()..].split_at(8);
        let (tag, payload) = rest.split_at(32);
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        if payload.len() as u64 != len {
            return Err(format!("truncated: {} of {len} bytes", payload.len()));
        }
        let tag: [u8; 32] = tag.try_into().expect("32 bytes");
        // `blake3::Hash` compares in constant time.
        if self.tag(key, payload) != blake3::Hash::from_bytes(tag) {
            return Err(
                "integrity tag mismatch: corrupted, forged, or another component's entry".into(),
            );
        }
        Ok(payload)
    }
}

/// Refuses a file or directory that another user owns or that others may write (or, for
/// the key, read): whoever can write the cache can run code as this user. `what` names it
/// in the message ("cache directory", "plugin folder"). The same check guards every folder
/// flowhost loads code from: a worker's plugin folder too.
pub fn check_private(path: &Path, what: &str) -> Result<(), SetupError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| SetupError(format!("cannot inspect {what} {}: {e}", path.display())))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(SetupError(format!(
            "refusing {what} {}: it is owned by uid {}, not by the user running flowhost (uid {me}); whoever owns it can plant code that flowhost would run",
            path.display(),
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(SetupError(format!(
            "refusing {what} {}: others may write to it (mode {mode:03o}), and could plant code that flowhost would run; fix with `chmod go-w {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Reads the secret key, creating it (random, mode 0600, atomically) on first use.
fn read_or_create_key(path: &Path) -> Result<[u8; KEY_LEN], SetupError> {
    let fail = |what: &str, e: std::io::Error| {
        SetupError(format!("cannot {what} cache key {}: {e}", path.display()))
    };
    if !path.exists() {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("create the folder of the", e))?;
        let mut secret = [0u8; KEY_LEN];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut r| r.read_exact(&mut secret))
            .map_err(|e| fail("make", e))?;
        let mut file = tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| fail("create", e))?;
        file.write_all(&secret)
            .and_then(|()| file.as_file().sync_all())
            .map_err(|e| fail("write", e))?;
        // Another process may have created it meanwhile: then its key stands.
        if let Err(error) = file.persist_noclobber(path)
            && error.error.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(fail("store", error.error));
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    let mut file = options.open(path).map_err(|e| fail("open", e))?;
    check_private(path, "cache key")?;
    let mode = file
        .metadata()
        .map_err(|e| fail("inspect", e))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(SetupError(format!(
            "refusing cache key {}: others may read it (mode {mode:03o}); fix with `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let mut key = [0u8; KEY_LEN];
    let mut extra = [0u8; 1];
    file.read_exact(&mut key).map_err(|e| fail("read", e))?;
    if file.read(&mut extra).map_err(|e| fail("read", e))? != 0 {
        return Err(SetupError(format!(
            "cache key {} is not a flowhost key ({KEY_LEN} bytes expected)",
            path.display()
        )));
    }
    Ok(key)
}

/// `path` made absolute and, where it exists, canonical, to compare locations.
fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (
        path.parent().and_then(|p| p.canonicalize().ok()),
        path.file_name(),
    ) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => path,
    }
}

/// Loads wasmtime's serialized component.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> Result<Component, String> {
    // SAFETY: wasmtime requires that the bytes were produced by `Component::serialize` of a
    // compatible engine, because they hold machine code that is run as is. The bytes passed
    // here carry a keyed BLAKE3 tag over the entry's key (the component's SHA-256 and the
    // engine fingerprint) and the payload, under a secret only this user can read and that no
    // task may be granted: only `ComponentCache::store` of this user, for this very component,
    // can have produced them. The directory is checked to be this user's and writable by no
    // one else. wasmtime itself rejects bytes from another wasmtime version or engine
    // configuration.
    unsafe { Component::deserialize(engine, payload) }.map_err(|e| format!("{e:#}"))
}
