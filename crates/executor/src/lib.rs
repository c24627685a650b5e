//! The executor: what turns the engine's runs into recorded runs. [`record`] creates a run in
//! a run database with this executor holding its [`Lease`](flowhost_runs::Lease), and the run
//! database becomes the run's journal — each transition is committed, fenced by the lease,
//! before listeners hear of it and before the run moves on; a failed write stops the run.
//! [`resume`] continues an interrupted run under a new lease. With PostgreSQL, [`submit`]
//! queues runs and [`Worker`]s claim and execute them on many hosts.
//!
//! It depends on the engine and on the run database contract (`flowhost-runs`), never the other
//! way round; the backends come in by feature (`sqlite`, `postgres`).

mod journal;
mod policy;
mod restart;
mod resume;
#[cfg(feature = "postgres")]
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flowhost_core::events::Listener;
use flowhost_engine::LoadedFlow;
use flowhost_runs::{DEFAULT_LEASE_TTL, Origin, Owner, PluginHash, RunDb, RunDbError, hash_file};

pub use journal::{already_started, record};
pub use policy::Policy;
pub use restart::{Restart, Restarted};
pub use resume::{ResumeFailure, Resumption, resume};
#[cfg(feature = "postgres")]
pub use worker::{Worker, WorkerError, WorkerSummary, submit};

/// Where `loaded` comes from: the flow file (when there is one) and every plugin, hashed, as
/// its run record keeps them for resume to compare against.
pub fn origin_of(loaded: &LoadedFlow, flow_file: Option<&Path>) -> Result<Origin, RunDbError> {
    let (flow_path, flow_hash) = match flow_file {
        Some(path) => {
            let path = absolute(path);
            let hash = hash_file(&path)?;
            (Some(path), Some(hash))
        }
        None => (None, None),
    };
    // The plugins were hashed when they were loaded, from the very bytes that run; a wait
    // entry has none.
    let plugins = loaded
        .plan()
        .filter_map(|task| {
            Some(PluginHash {
                task: task.name.to_owned(),
                sha256: task.plugin_sha256?.to_owned(),
                path: task.plugin_file?.to_path_buf(),
            })
        })
        .collect();
    Ok(Origin {
        flow_path,
        flow_hash,
        plugins,
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Makes a listener for one run as an executor starts or resumes it, given the W3C
/// `traceparent` the run was started under, if any: how a trace exporter puts the spans of a
/// run that a worker executes into the submitter's trace, without the executor knowing of
/// traces.
pub type RunListener = Arc<dyn Fn(Option<&str>) -> Arc<dyn Listener> + Send + Sync>;

/// Whether `text` is a W3C trace-context `traceparent` of version 00 that names a span:
/// `00-<32 hex digits, not all zero>-<16 hex digits, not all zero>-<2 hex digits>`, lower
/// case. What is kept with a submitted run for its worker, checked where it comes in.
pub fn is_traceparent(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |part: &str| part.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, span, flags]
        if *version == "00" && hex(trace, 32) && nonzero(trace)
            && hex(span, 16) && nonzero(span) && hex(flags, 2))
}

/// An executor: what records and resumes runs in a run database under its own leases.
#[derive(Clone)]
pub struct Executor {
    db: Arc<dyn RunDb>,
    owner: Owner,
    lease_ttl: Duration,
    heartbeat: Option<Duration>,
    run_listener: Option<RunListener>,
}

impl Executor {
    /// An executor of this process on `db`, with leases of [`DEFAULT_LEASE_TTL`].
    pub fn new(db: Arc<dyn RunDb>) -> Self {
        Self {
            db,
            owner: Owner::this_process(),
            lease_ttl: DEFAULT_LEASE_TTL,
            heartbeat: None,
            run_listener: None,
        }
    }

    /// Gives every run it starts or resumes a listener made by `make` (e.g. a trace of the
    /// run), over the engine's own listeners.
    pub fn run_listener(mut self, make: RunListener) -> Self {
        self.run_listener = Some(make);
        self
    }

    /// Adds the run's own listener (see [`Self::run_listener`]) to `loaded`, a run started
    /// under `traceparent` if any. Resuming and workers do it themselves; whoever starts a
    /// run through [`record`] calls it.
    pub fn attach(&self, loaded: &mut LoadedFlow, traceparent: Option<&str>) {
        if let Some(make) = &self.run_listener {
            loaded.listen(make(traceparent));
        }
    }

    /// Leases last `ttl` without renewal; they are renewed at every write and every third
    /// of it while a task runs. A paused or partitioned executor loses its runs after `ttl`.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(100));
        self
    }

    /// Renews its leases every `every` while a task runs (by default a third of the lease
    /// ttl; more than half of it risks losing a run to a slow renewal).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every.max(Duration::from_millis(10)));
        self
    }

    /// How often its leases are renewed while a task runs.
    pub fn renew_every(&self) -> Duration {
        self.heartbeat.unwrap_or(self.lease_ttl / 3)
    }

    /// The run database.
    pub fn db(&self) -> &Arc<dyn RunDb> {
        &self.db
    }

    /// Who this executor is.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }
}

#[cfg(test)]
mod tests {
    use super::is_traceparent;

    #[test]
    fn a_traceparent_is_version_00_with_ids_that_are_not_zero() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-abc",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }
}
