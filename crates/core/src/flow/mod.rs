//! Flow files and the flow builder: what to run, in which order, with which data and grants.
//!
//! A flow is declared in TOML (see the README's flow-file reference) or built in Rust with
//! [`FlowSpec::linear`]. Both produce the same [`FlowSpec`], so the CLI and library users
//! validate and run exactly the same thing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod limits;
mod net;
mod retry;
mod schedule;
mod subflow;
mod wait;

pub use limits::{EffectiveLimits, Limits, MAX_DEADLINE_MS};
pub use net::{
    HostPattern, HttpGrant, MIN_SECRET_BYTES, Net, Port, Scheme, SecretSource, Secrets, TcpGrant,
    placeholder, redacted,
};
pub use retry::{NOT_RETRIED_BY_DEFAULT, Retry, RetryPolicy};
pub use schedule::{CatchUp, Cron, MAX_CATCH_UP, Rate, Schedule, parse_tick, tick_key, tick_text};
pub use subflow::{
    Controller, Entry, ForEach, Iterations, Map, ParameterizedForEach, Strategy, Subflow,
    SubflowHead,
};
pub use wait::{Wait, WaitFor, format_rfc3339, parse_rfc3339, signal_name_ok, unix_seconds};

/// A flow file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum FlowFileError {
    /// The file could not be read.
    #[error("cannot read flow file {}: {source}", path.display())]
    Read {
        /// The flow file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or holds unknown or mistyped keys.
    #[error("invalid flow file {}: {message}", path.display())]
    Parse {
        /// The flow file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
}

/// A named, ordered list of task entries and the store defaults they start from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// The flow's name, shown in logs and reports.
    pub name: String,
    /// How the entries are ordered: `linear` (file order, the default), `unordered` (all at
    /// once) or `graph` (by the data they need and `after`).
    #[serde(default)]
    pub pattern: Pattern,
    /// Most calls (execute or revert) of one run in flight at once; default: the number of
    /// cores. Only `unordered` and `graph` flows ever have more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
    /// The run's deadline, in milliseconds from its creation (kept when it is resumed): when
    /// it passes, nothing new starts, calls in flight are stopped and what ran is reverted;
    /// the stopped task fails `run-timeout`. Signed so that validation can name a negative
    /// value rather than the parser refusing it; 1 ms to 24 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    /// When `flowhost serve` starts runs of this flow by itself: cron ticks, each with the
    /// store its runs start from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Schedule>,
    /// Most runs of this flow the workers of a PostgreSQL run database execute at once,
    /// all workers together; enforced where they claim runs. Signed so that validation
    /// names a value below 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// Most runs of this flow the workers start per period, all workers together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Initial store values; `--store` and the library's initial store override them.
    #[serde(default)]
    pub store: BTreeMap<String, Value>,
    /// Default limits for every task entry that does not set its own.
    #[serde(default)]
    pub limits: Limits,
    /// Default retry policy for every entry; an entry's `retry` fields win over it. No
    /// retry when neither sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// What a task failing for good (after its retries) does to the run when its entry does
    /// not say: `"revert"` (the default: revert what ran) or `"suspend"` (revert nothing; the
    /// run goes SUSPENDED with the failure recorded, for a person to resume or revert). Text,
    /// so that validation can name an unknown value and the entry it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// Default network grants for every entry that does not set its own (list by list).
    #[serde(default, skip_serializing_if = "Net::is_empty")]
    pub net: Net,
    /// Secrets by name: where the host reads each value when a run loads. Entries name the
    /// ones they use (`secrets`, `secrets_env`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: Secrets,
    /// The entries (tasks and subflows), ordered by the pattern.
    #[serde(default, rename = "task")]
    pub tasks: Vec<Entry>,
    /// Directory that relative plugin and grant paths are resolved against: the flow file's
    /// folder, or the working directory for flows built in code.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `on_failure`'s default: a task failing for good reverts what ran.
pub const ON_FAILURE_REVERT: &str = "revert";
/// `on_failure = "suspend"`: a task failing for good suspends the run, reverting nothing.
pub const ON_FAILURE_SUSPEND: &str = "suspend";

/// One task placed in a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique name of this entry within the flow.
    pub name: String,
    /// Path of the component (`.wasm`), relative to the flow file; `None` for a wait entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PathBuf>,
    /// What the entry waits for instead of running a plugin (a signal or a due time); its
    /// run holds no executor meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
    /// Maps a task argument name to the store name it is read from.
    #[serde(default)]
    pub rebind: BTreeMap<String, String>,
    /// Fixed argument values; they win over the store.
    #[serde(default)]
    pub inject: BTreeMap<String, Value>,
    /// Static configuration handed to the task as a JSON object.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Store names for the result, replacing the names the plugin declares: lets one plugin
    /// appear twice in a flow, or a result be stored under the name a later task expects.
    #[serde(default)]
    pub provides: Option<Vec<String>>,
    /// Host directories this task may see; nothing else of the host filesystem is reachable.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Host environment variables passed through to the task by name, read when the flow is
    /// loaded; the task sees no other variable of the host.
    #[serde(default)]
    pub env: Vec<String>,
    /// Environment variables the task sees with fixed values; they win over `env`.
    #[serde(default)]
    pub env_set: BTreeMap<String, String>,
    /// Limits for this entry; unset fields fall back to the flow's `[limits]`.
    #[serde(default)]
    pub limits: Limits,
    /// Whether calls get a fresh instance (the default) or reuse warm ones.
    #[serde(default)]
    pub instances: Instances,
    /// How often a failed execute is tried again before the flow reverts; unset fields fall
    /// back to the flow's `[retry]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Entries this one runs after, besides those whose results it reads (`graph` flows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// HTTP origins and TCP endpoints this task may reach; each list falls back to the
    /// flow's `net`. Nothing without a grant.
    #[serde(default, skip_serializing_if = "Net::is_empty")]
    pub net: Net,
    /// The flow's secrets this task's HTTP requests may carry: a header value holding
    /// `{{secret:NAME}}` gets the value, filled in by the host on the way out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Secrets handed in as environment variables (variable -> secret name), for protocols
    /// the host does not speak: the task can read these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets_env: BTreeMap<String, String>,
    /// A condition (a CEL expression over store names), evaluated once what the entry
    /// depends on is done: false leaves the task IGNORE — not executed, never reverted, its
    /// results absent. The names it reads are dependencies, like required arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Among tasks ready at the same moment and held back by `max_parallel`, higher
    /// priorities start first (then file order). Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// What this task failing for good does to the run (`"revert"` or `"suspend"`); unset,
    /// the flow's `on_failure` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// How a flow orders its entries (TaskFlow's patterns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// One after the other in file order (TaskFlow's `linear_flow`).
    #[default]
    Linear,
    /// All at once, bounded by `max_parallel`; no entry may read another's results
    /// (TaskFlow's `unordered_flow`).
    Unordered,
    /// Each entry as soon as the entries it depends on succeeded: those providing a name it
    /// reads, and those it names in `after` (TaskFlow's `graph_flow`).
    Graph,
}

impl Pattern {
    /// The pattern's name, as the flow file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Linear => "linear",
            Pattern::Unordered => "unordered",
            Pattern::Graph => "graph",
        }
    }
}

/// How a task entry's calls get their instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Instances {
    /// A new instance per call: nothing survives between calls. Always safe.
    #[default]
    Fresh,
    /// Warm instances kept across calls and runs, several times faster to call; only for
    /// plugins that keep no state between calls. An instance that trapped or hit a limit is
    /// dropped, never reused.
    Reuse,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// A host directory preopened for one task entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the host, relative to the flow file. It must exist.
    pub host: PathBuf,
    /// Absolute path the task sees it under, e.g. `/state`.
    pub guest: String,
    /// Whether the task may write there. Read-only unless said otherwise.
    #[serde(default)]
    pub mode: Access,
}

/// What a task may do in a granted directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Read files and list directories.
    #[default]
    #[serde(rename = "ro")]
    ReadOnly,
    /// Also create, write, rename and delete.
    #[serde(rename = "rw")]
    ReadWrite,
}

impl FlowSpec {
    /// Starts an empty linear flow whose relative paths resolve against the working directory.
    pub fn linear(name: impl Into<String>) -> Self {
        Self::with_pattern(name, Pattern::Linear)
    }

    /// Starts an empty graph flow: each entry runs once the entries providing what it reads
    /// (and those named in its `after`) succeeded; independent entries run at once.
    pub fn graph(name: impl Into<String>) -> Self {
        Self::with_pattern(name, Pattern::Graph)
    }

    /// Starts an empty unordered flow: every entry may run at once.
    pub fn unordered(name: impl Into<String>) -> Self {
        Self::with_pattern(name, Pattern::Unordered)
    }

    /// Starts an empty flow of `pattern`.
    pub fn with_pattern(name: impl Into<String>, pattern: Pattern) -> Self {
        Self {
            name: name.into(),
            pattern,
            max_parallel: None,
            timeout_ms: None,
            schedule: Vec::new(),
            concurrency: None,
            rate: None,
            store: BTreeMap::new(),
            limits: Limits::default(),
            retry: None,
            on_failure: None,
            net: Net::default(),
            secrets: Secrets::new(),
            tasks: Vec::new(),
            base_dir: PathBuf::new(),
        }
    }

    /// Sets the default network grants of every entry.
    pub fn net(mut self, net: Net) -> Self {
        self.net = net;
        self
    }

    /// Declares a secret the host reads when a run loads.
    pub fn secret(mut self, name: impl Into<String>, source: SecretSource) -> Self {
        self.secrets.insert(name.into(), source);
        self
    }

    /// Appends an entry — a [`TaskSpec`] or a [`Subflow`] — in the order of a linear flow.
    /// Named after TaskFlow's `flow.add(...)`, which flow authors already know.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, entry: impl Into<Entry>) -> Self {
        self.tasks.push(entry.into());
        self
    }

    /// Every task entry, subflows' included, in file order (depth first).
    pub fn task_specs(&self) -> Vec<&TaskSpec> {
        fn walk<'a>(entries: &'a [Entry], out: &mut Vec<&'a TaskSpec>) {
            for entry in entries {
                match entry {
                    Entry::Task(task) => out.push(task),
                    Entry::Flow(flow) => walk(&flow.tasks, out),
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.tasks, &mut out);
        out
    }

    /// Every task entry with its path (`schedule/volume_cast` inside subflow `schedule`), the
    /// name runs and reports give it, in file order.
    pub fn task_paths(&self) -> Vec<(String, &TaskSpec)> {
        fn walk<'a>(entries: &'a [Entry], prefix: &str, out: &mut Vec<(String, &'a TaskSpec)>) {
            for entry in entries {
                match entry {
                    Entry::Task(task) => out.push((format!("{prefix}{}", task.name), task)),
                    Entry::Flow(flow) => walk(&flow.tasks, &format!("{prefix}{}/", flow.name), out),
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.tasks, "", &mut out);
        out
    }

    /// [`FlowSpec::task_paths`], to change the entries in place (a worker swapping plugin
    /// paths for its own copies).
    pub fn task_paths_mut(&mut self) -> Vec<(String, &mut TaskSpec)> {
        fn walk<'a>(
            entries: &'a mut [Entry],
            prefix: &str,
            out: &mut Vec<(String, &'a mut TaskSpec)>,
        ) {
            for entry in entries {
                match entry {
                    Entry::Task(task) => out.push((format!("{prefix}{}", task.name), task)),
                    Entry::Flow(flow) => {
                        let prefix = format!("{prefix}{}/", flow.name);
                        walk(&mut flow.tasks, &prefix, out)
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&mut self.tasks, "", &mut out);
        out
    }

    /// Sets a default store value (overridden by the initial store given at load).
    pub fn store_default(mut self, name: impl Into<String>, value: Value) -> Self {
        self.store.insert(name.into(), value);
        self
    }

    /// Sets the default limits for every entry.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Bounds how many calls of a run are in flight at once.
    pub fn max_parallel(mut self, max: usize) -> Self {
        self.max_parallel = Some(max);
        self
    }

    /// Sets the default retry policy of every entry.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The retry policy entry `task` runs under: its own fields, then the flow's, then the
    /// defaults; one attempt when neither sets a policy.
    pub fn retry_policy(&self, task: &TaskSpec) -> RetryPolicy {
        match (&task.retry, &self.retry) {
            (None, None) => RetryPolicy::none(),
            (own, flow) => own
                .clone()
                .unwrap_or_default()
                .over(&flow.clone().unwrap_or_default())
                .effective(),
        }
    }

    /// Whether a failure for good of `task` suspends the run (`on_failure = "suspend"` on the
    /// entry, or on the flow when the entry does not say) rather than reverting it.
    pub fn suspends_on_failure(&self, task: &TaskSpec) -> bool {
        task.on_failure.as_deref().or(self.on_failure.as_deref()) == Some(ON_FAILURE_SUSPEND)
    }

    /// Reads and parses a flow file; relative paths in it then resolve against its folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, FlowFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| FlowFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut flow = Self::from_toml(&text).map_err(|message| FlowFileError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        // A schedule that cannot tick is named with its file here, where the file is known:
        // `serve` reads schedules from files and never validates a flow that is not started.
        if let Some(message) = (flow.schedule.iter().enumerate()).find_map(|(i, s)| s.problem(i)) {
            return Err(FlowFileError::Parse {
                path: path.to_path_buf(),
                message,
            });
        }
        flow.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(flow)
    }

    /// Parses flow-file text. The error message carries line and column of the fault.
    /// An integer beyond 64 bits is refused with the message every way in uses
    /// ([`crate::store::InexactInteger`]).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let literal = e
                .span()
                .and_then(|span| text.get(span.clone()).map(|l| (span.start, l)));
            match literal {
                Some((start, literal)) if oversized(literal) => {
                    let before = &text[..start];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
                    format!(
                        "line {line}, column {column}: {}",
                        crate::store::inexact(&literal.trim().replace('_', ""))
                    )
                }
                _ => e.to_string().trim_end().to_owned(),
            }
        })
    }

    /// Whether any entry has a fuel budget, so the engine must be built with fuel metering
    /// (see [`crate::EngineConfig::fuel`]).
    pub fn needs_fuel(&self) -> bool {
        self.limits.fuel.is_some() || self.task_specs().iter().any(|t| t.limits.fuel.is_some())
    }

    /// Resolves a path from the flow file against the flow's folder, normalised
    /// ([`normalise`]) so that logs and reports name `plugins/x.wasm`, not
    /// `examples/demo/../../plugins/x.wasm`.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            normalise(path)
        } else {
            normalise(&self.base_dir.join(path))
        }
    }
}

/// `path` without `.` components, and with each `..` removed together with the folder
/// before it, unless that folder is a symbolic link: `link/..` is the link target's parent,
/// not the folder holding the link, so there the `..` stays and the path still names the
/// same file. Costs one `lstat` per `..`, and none for paths without one.
pub fn normalise(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    // How many trailing components of `out` are folders a `..` may cancel.
    let mut cancellable = 0usize;
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if cancellable > 0
                    && !out
                        .symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                out.pop();
                cancellable -= 1;
            }
            Component::Normal(name) => {
                out.push(name);
                cancellable += 1;
            }
            other => {
                out.push(other);
                cancellable = 0;
            }
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

impl TaskSpec {
    /// A task entry named `name` running the component at `plugin`.
    pub fn new(name: impl Into<String>, plugin: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            plugin: Some(plugin.into()),
            wait: None,
            rebind: BTreeMap::new(),
            inject: BTreeMap::new(),
            config: empty_object(),
            provides: None,
            dirs: Vec::new(),
            env: Vec::new(),
            env_set: BTreeMap::new(),
            limits: Limits::default(),
            instances: Instances::Fresh,
            retry: None,
            after: Vec::new(),
            net: Net::default(),
            secrets: Vec::new(),
            secrets_env: BTreeMap::new(),
            when: None,
            priority: 0,
            on_failure: None,
        }
    }

    /// A wait entry named `name`: no plugin; the run waits, durably, for what `wait` says
    /// (a signal, whose data it stores under the entry's `provides`, or a due time).
    pub fn wait(name: impl Into<String>, wait: Wait) -> Self {
        Self {
            plugin: None,
            wait: Some(wait),
            ..Self::new(name, PathBuf::new())
        }
    }

    /// The component's path, relative to the flow file; `None` for a wait entry.
    pub fn plugin_path(&self) -> Option<&Path> {
        self.plugin.as_deref()
    }

    /// Runs this entry only when `expression` (CEL over store names) holds; otherwise it is
    /// IGNORE.
    pub fn when(mut self, expression: impl Into<String>) -> Self {
        self.when = Some(expression.into());
        self
    }

    /// Starts this entry before lower priorities among tasks ready together.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Grants this entry network access (each list set here wins over the flow's).
    pub fn net(mut self, net: Net) -> Self {
        self.net = net;
        self
    }

    /// Lets this entry's HTTP requests carry the flow's secrets of these names.
    pub fn secrets<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.secrets.extend(names.into_iter().map(Into::into));
        self
    }

    /// Runs this entry after the entries named (in a graph flow).
    pub fn after<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tasks: I) -> Self {
        self.after.extend(tasks.into_iter().map(Into::into));
        self
    }

    /// Sets this entry's retry policy (unset fields fall back to the flow's).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sets how calls get their instance (fresh by default).
    pub fn instances(mut self, instances: Instances) -> Self {
        self.instances = instances;
        self
    }

    /// Reads the task's argument `arg` from the store name `store_name`.
    pub fn rebind(mut self, arg: impl Into<String>, store_name: impl Into<String>) -> Self {
        self.rebind.insert(arg.into(), store_name.into());
        self
    }

    /// Fixes argument `arg` to `value`, whatever the store holds.
    pub fn inject(mut self, arg: impl Into<String>, value: Value) -> Self {
        self.inject.insert(arg.into(), value);
        self
    }

    /// Sets the static configuration (a JSON object).
    pub fn config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    /// Stores the result under these names instead of the plugin's declared ones.
    pub fn provides<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.provides = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Grants the task a host directory at `guest`.
    pub fn grant_dir(
        mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<String>,
        mode: Access,
    ) -> Self {
        self.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
            mode,
        });
        self
    }

    /// Passes the host's environment variable `name` through to the task.
    pub fn env(mut self, name: impl Into<String>) -> Self {
        self.env.push(name.into());
        self
    }

    /// Sets the task's environment variable `name` to `value`.
    pub fn env_set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env_set.insert(name.into(), value.into());
        self
    }

    /// Sets this entry's limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

impl crate::class::Classify for FlowFileError {
    fn class(&self) -> crate::class::ErrorClass {
        match self {
            Self::Read { .. } => crate::class::ErrorClass::Unreadable,
            _ => crate::class::ErrorClass::Invalid,
        }
    }
}

/// Whether a TOML literal is a decimal integer that fits neither an `i64` nor a `u64`.
fn oversized(literal: &str) -> bool {
    let digits = literal.trim().replace('_', "");
    let unsigned = digits.strip_prefix(['-', '+']).unwrap_or(&digits);
    !unsigned.is_empty()
        && unsigned.bytes().all(|b| b.is_ascii_digit())
        && digits.trim_start_matches('+').parse::<i64>().is_err()
        && digits.trim_start_matches('+').parse::<u64>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_plugin_path_is_resolved_without_dot_dot() {
        let flow = FlowSpec {
            base_dir: PathBuf::from("examples/volume-create"),
            ..FlowSpec::linear("demo")
        };
        assert_eq!(
            flow.resolve(Path::new("../../plugins/./target/stamp.wasm")),
            Path::new("plugins/target/stamp.wasm")
        );
        assert_eq!(
            flow.resolve(Path::new("../../../x.wasm")),
            Path::new("../x.wasm")
        );
        assert_eq!(
            flow.resolve(Path::new("/opt/a/../b.wasm")),
            Path::new("/opt/b.wasm")
        );
        assert_eq!(normalise(Path::new("a/..")), Path::new("."));
    }

    #[test]
    fn dot_dot_after_a_symbolic_link_is_kept() {
        let dir = std::env::temp_dir().join(format!("flowhost-normalise-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real/inner")).unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("real/inner"), &link).unwrap();
        // link/.. is real/, not dir/: lexically dropping it would name another file.
        assert_eq!(
            normalise(&link.join("../x.wasm")),
            dir.join("link/../x.wasm")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
