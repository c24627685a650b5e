//! What one task entry's instances may use and see: its limits and capability grants,
//! resolved against the flow (paths against the flow's folder, `env` names against the
//! host's environment).
//!
//! Deny by default: an instance gets no filesystem but its entry's granted directories, no
//! environment but its granted variables, no network (sockets and name lookup fail), and a
//! memory cap and a deadline. Clocks and randomness are allowed: tasks legitimately need
//! timestamps and unique ids, and neither reaches anything of the host. The task's stdout and
//! stderr are captured and forwarded to the run's log, tagged with the task name.

use std::path::PathBuf;

use serde::Serialize;

use crate::flow::{Access, EffectiveLimits, FlowSpec, TaskSpec};

/// A granted directory with its host path resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preopen {
    /// Absolute or flow-relative host directory.
    pub host: PathBuf,
    /// Path the task sees.
    pub guest: String,
    /// Read-only or read-write.
    pub access: Access,
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

/// Bytes of a task's stdout or stderr kept per call; beyond it output is cut.
pub(crate) const CAPTURE_BYTES: usize = 64 * 1024;

impl Sandbox {
    /// No grants and the default limits: how plugins are `describe()`d.
    pub fn bare() -> Self {
        Self { limits: EffectiveLimits::DEFAULT, dirs: Vec::new(), env: Vec::new() }
    }

    /// Resolves a task entry's limits and grants against its flow: paths against the flow's
    /// folder, `env` names against the host's environment now. Returns the sandbox and every
    /// problem found with the grants, so validation can report them all at once.
    pub fn for_entry(spec: &TaskSpec, flow: &FlowSpec) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let dirs: Vec<Preopen> = spec
            .dirs
            .iter()
            .map(|d| Preopen { host: flow.resolve(&d.host), guest: d.guest.clone(), access: d.mode })
            .collect();
        for dir in &dirs {
            if !dir.host.is_dir() {
                problems.push(format!("granted directory {} does not exist", dir.host.display()));
            }
            if !dir.guest.starts_with('/') {
                problems.push(format!("guest path `{}` of a granted directory must be absolute", dir.guest));
            }
        }
        let mut env = Vec::new();
        for name in spec.env.iter().filter(|n| !spec.env_set.contains_key(*n)) {
            if let Some(problem) = bad_env_name(name) {
                problems.push(format!("`env` entry `{name}`: {problem}"));
                continue;
            }
            match std::env::var(name) {
                Ok(value) => env.push(EnvVar { name: name.clone(), source: EnvSource::Host, value }),
                Err(std::env::VarError::NotPresent) => problems.push(format!(
                    "`env` grants variable `{name}`, which is not set in flowhost's environment"
                )),
                Err(std::env::VarError::NotUnicode(_)) => {
                    problems.push(format!("`env` grants variable `{name}`, whose value is not UTF-8"))
                }
            }
        }
        for (name, value) in &spec.env_set {
            match bad_env_name(name) {
                Some(problem) => problems.push(format!("`env_set` entry `{name}`: {problem}")),
                None => env.push(EnvVar { name: name.clone(), source: EnvSource::Flow, value: value.clone() }),
            }
        }
        (Self { limits: spec.limits.resolve(&flow.limits), dirs, env }, problems)
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
