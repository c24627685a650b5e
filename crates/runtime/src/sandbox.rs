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

use std::collections::BTreeMap;

use super::grant::{self, PinnedDir};
use super::net::{NetAccess, Redactor};
use flowhost_core::flow::{
    Access, EffectiveLimits, FlowSpec, MIN_SECRET_BYTES, SecretSource, TaskSpec,
};

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
    /// A secret of the flow (`secrets_env`): the task can read it.
    Secret,
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
    /// Granted HTTP origins and TCP endpoints, and the secrets requests may carry.
    pub net: NetAccess,
    /// Every secret value of the run, cut out of whatever the task returns or prints.
    #[serde(skip)]
    pub redact: Redactor,
}

impl Sandbox {
    /// No grants and the default limits: how plugins are `describe()`d.
    pub fn bare() -> Self {
        Self {
            limits: EffectiveLimits::DEFAULT,
            dirs: Vec::new(),
            env: Vec::new(),
            net: NetAccess::default(),
            redact: Redactor::default(),
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
        let secrets = read_secrets(flow, &mut problems);
        let mut granted = BTreeMap::new();
        for name in &spec.secrets {
            match secrets.get(name) {
                Some(value) => {
                    granted.insert(name.clone(), value.clone());
                }
                None if flow.secrets.contains_key(name) => {}
                None => problems.push(format!(
                    "`secrets` names `{name}`, which the flow's [secrets] does not declare"
                )),
            }
        }
        for (var, name) in &spec.secrets_env {
            if let Some(problem) = bad_env_name(var) {
                problems.push(format!("`secrets_env` entry `{var}`: {problem}"));
                continue;
            }
            match secrets.get(name) {
                Some(value) => env.push(EnvVar {
                    name: var.clone(),
                    source: EnvSource::Secret,
                    value: value.clone(),
                }),
                None if flow.secrets.contains_key(name) => {}
                None => problems.push(format!(
                    "`secrets_env` hands `{var}` the secret `{name}`, which the flow's [secrets] does not declare"
                )),
            }
        }
        let net = spec.net.resolve(&flow.net);
        let (net, net_problems) = NetAccess::new(
            net.http.as_deref().unwrap_or_default(),
            net.tcp.as_deref().unwrap_or_default(),
            granted,
        );
        problems.extend(net_problems);
        if !net.secrets.is_empty() && net.http.is_empty() {
            problems.push(
                "`secrets` are carried only by HTTP requests, and the entry grants no `net.http` origin"
                    .to_string(),
            );
        }
        (
            Self {
                limits: spec.limits.resolve(&flow.limits),
                dirs,
                env,
                net,
                redact: Redactor::new(secrets.into_iter().collect()),
            },
            problems,
        )
    }
}

/// Reads every secret of the flow, now: from flowhost's environment or a file (relative to
/// the flow's folder; one trailing newline dropped). A secret that cannot be read, is empty
/// or too short to redact is a problem naming it, never its value.
fn read_secrets(flow: &FlowSpec, problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for (name, source) in &flow.secrets {
        let value = match source {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(value) => value,
                Err(_) => {
                    problems.push(format!(
                        "secret `{name}`: variable `{var}` is not set (or not UTF-8) in flowhost's environment"
                    ));
                    continue;
                }
            },
            SecretSource::File(path) => {
                let path = flow.resolve(path);
                match std::fs::read_to_string(&path) {
                    Ok(text) => text
                        .strip_suffix('\n')
                        .map(|t| t.strip_suffix('\r').unwrap_or(t))
                        .unwrap_or(&text)
                        .to_owned(),
                    Err(error) => {
                        problems.push(format!(
                            "secret `{name}`: cannot read {}: {error}",
                            path.display()
                        ));
                        continue;
                    }
                }
            }
        };
        if value.len() < MIN_SECRET_BYTES {
            problems.push(format!(
                "secret `{name}` is shorter than {MIN_SECRET_BYTES} bytes: too short to be redacted reliably"
            ));
            continue;
        }
        values.insert(name.clone(), value);
    }
    values
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
