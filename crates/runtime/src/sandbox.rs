//! What one task entry's instances may use and see: its limits and capability grants,
//! resolved against the flow (paths against the flow's folder, `env` names against the
//! host's environment) when its run is loaded. Granted directories are opened then and
//! pinned for the whole run ([`super::grant`]).
//!
//! Deny by default: an instance gets no filesystem but its entry's granted directories, no
//! environment but its granted variables, no network (sockets and name lookup fail), and a
//! memory cap and a deadline. Clocks and randomness are allowed: tasks legitimately need
//! timestamps and unique ids, and neither reaches anything of the host. The task's stdout and
//! stderr are captured and forwarded to the run's log, tagged with the task name.

use std::path::PathBuf;

use serde::Serialize;

use super::grant::{self, PinnedDir};
use flowhost_core::flow::{Access, EffectiveLimits, FlowSpec, TaskSpec};

/// A granted directory, opened and pinned when its run was loaded: every call of the run
/// reaches the directory object opened then, whatever happens to the path afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preopen {
    /// Absolute or flow-relative host directory, as it was pinned.
    pub host: PathBuf,
    /// Path the task sees.
    pub guest: String,
    /// Read-only or read-write.
    pub access: Access,
    /// The directory object the grant is pinned to.
    pub pinned: Pinned,
    #[serde(skip)]
    pub(crate) dir: PinnedDir,
}

/// Which directory object a grant is pinned to (device and inode numbers), as `flowhost
/// check` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pinned {
    /// Device number.
    pub device: u64,
    /// Inode number.
    pub inode: u64,
}

/// A granted directory could not be pinned: missing, a file, a symlink, or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("granted directory {}: {reason}", host.display())]
pub struct GrantError {
    /// The grant's host path.
    pub host: PathBuf,
    /// Why it cannot be granted.
    pub reason: String,
}

impl Preopen {
    /// Opens and pins `host` (no component may be a symlink) for instances to see at `guest`.
    pub fn pin(
        host: impl Into<PathBuf>,
        guest: impl Into<String>,
        access: Access,
    ) -> Result<Self, GrantError> {
        let host = host.into();
        let dir = grant::pin(&host).map_err(|e| GrantError {
            host: host.clone(),
            reason: e.to_string(),
        })?;
        let (device, inode) = dir.identity();
        Ok(Self {
            host,
            guest: guest.into(),
            access,
            pinned: Pinned { device, inode },
            dir,
        })
    }
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
    pub(crate) value: String,
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

impl Sandbox {
    /// No grants and the default limits: how plugins are `describe()`d.
    pub fn bare() -> Self {
        Self {
            limits: EffectiveLimits::DEFAULT,
            dirs: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Resolves a task entry's limits and grants against its flow: paths against the flow's
    /// folder, `env` names against the host's environment now. Each granted directory is
    /// opened and pinned now, for the run being loaded. A grant that reaches a `protected`
    /// path (the compiled-code cache, the run database) is refused: a task could otherwise
    /// plant code or rewrite records the host trusts. Returns the sandbox and every problem
    /// found with the grants, so validation can report them all at once.
    pub fn for_entry(
        spec: &TaskSpec,
        flow: &FlowSpec,
        protected: &[PathBuf],
    ) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let mut dirs: Vec<Preopen> = Vec::with_capacity(spec.dirs.len());
        for grant in &spec.dirs {
            let host = flow.resolve(&grant.host);
            if !grant.guest.starts_with('/') {
                problems.push(format!(
                    "guest path `{}` of a granted directory must be absolute",
                    grant.guest
                ));
            }
            let guest = guest_key(&grant.guest);
            if let Some(other) = dirs.iter().find(|d| guest_key(&d.guest) == guest) {
                problems.push(format!(
                    "two grants at guest path `{}`: {} and {}; each guest path takes one directory",
                    grant.guest,
                    other.host.display(),
                    host.display()
                ));
                continue;
            }
            // Pinned first: a symlink is refused as such, and the protection check then
            // compares a path without symlinks.
            let preopen = match Preopen::pin(host, grant.guest.clone(), grant.mode) {
                Ok(preopen) => preopen,
                Err(error) => {
                    problems.push(error.to_string());
                    continue;
                }
            };
            match protected.iter().find(|p| grant::covers(&preopen.host, p)) {
                Some(reached) => problems.push(format!(
                    "granted directory {} reaches {}, which flowhost protects (compiled-code cache or run database); grant a directory apart from it",
                    preopen.host.display(),
                    reached.display()
                )),
                None => dirs.push(preopen),
            }
        }
        let mut env = Vec::new();
        for name in spec.env.iter().filter(|n| !spec.env_set.contains_key(*n)) {
            if let Some(problem) = bad_env_name(name) {
                problems.push(format!("`env` entry `{name}`: {problem}"));
                continue;
            }
            match std::env::var(name) {
                Ok(value) => env.push(EnvVar {
                    name: name.clone(),
                    source: EnvSource::Host,
                    value,
                }),
                Err(std::env::VarError::NotPresent) => problems.push(format!(
                    "`env` grants variable `{name}`, which is not set in flowhost's environment"
                )),
                Err(std::env::VarError::NotUnicode(_)) => problems.push(format!(
                    "`env` grants variable `{name}`, whose value is not UTF-8"
                )),
            }
        }
        for (name, value) in &spec.env_set {
            match bad_env_name(name) {
                Some(problem) => problems.push(format!("`env_set` entry `{name}`: {problem}")),
                None => env.push(EnvVar {
                    name: name.clone(),
                    source: EnvSource::Flow,
                    value: value.clone(),
                }),
            }
        }
        (
            Self {
                limits: spec.limits.resolve(&flow.limits),
                dirs,
                env,
            },
            problems,
        )
    }
}

/// A guest path as the task resolves it: `/data/` and `/data` are one place.
fn guest_key(guest: &str) -> &str {
    match guest.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
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
