//! Leases: one executor per run.
//!
//! Executing or resuming a run takes its lease in the run database: who holds it (owner id,
//! host, pid), since when, until when, and a fencing token that grows by one at every
//! take-over. The holder renews it with every journal write and by heartbeat while a task
//! runs. Every write checks the token inside its own transaction, so an executor whose lease
//! was taken (it was paused, partitioned, or presumed dead) can never write again: its next
//! write fails fenced and it stops.
//!
//! A lease is *live* while it has not expired and its holder is not known to be dead; a
//! holder on this host whose process is gone is dead at once, so a run whose process was
//! killed can be resumed without waiting for the expiry. Nothing overrides a live lease.
//! The rules are the database's, not the process's, so workers on many hosts share them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::RunDbError;

/// The fencing token of a new run's first lease ([`super::RunDb::create`]); every take-over
/// adds one.
pub const FIRST_TOKEN: i64 = 1;

/// How long a lease lasts without renewal unless the executor says otherwise.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Who executes: an executor's identity, recorded with the lease it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// Unique per executor: host, pid and a per-process counter.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
}

impl Owner {
    /// A new executor identity for this process; each call gives a distinct id.
    pub fn this_process() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let host = host_name();
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self {
            id: format!("{host}/{pid}/{n}"),
            host,
            pid,
        }
    }
}

/// The machine's host name, as leases record it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A lease held by an executor: what its writes present to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The run it is for.
    pub run_id: String,
    /// The fencing token: the database accepts writes only with the current one.
    pub token: i64,
    /// The holder.
    pub owner: Owner,
    /// How long it lasts after each renewal.
    pub ttl: Duration,
}

impl Lease {
    /// The lease a run gets when it is recorded for `owner` ([`super::RunDb::create`]): the
    /// first token, [`FIRST_TOKEN`].
    pub fn first(run_id: &str, owner: &Owner, ttl: Duration) -> Self {
        Self {
            run_id: run_id.to_owned(),
            token: FIRST_TOKEN,
            owner: owner.clone(),
            ttl,
        }
    }

    /// What a write under this lease comes to: done when the fence `held`; otherwise
    /// [`RunDbError::Fenced`], naming who holds the run's lease now as `holder` reads it from
    /// the database (left out when that read fails: the write is refused either way).
    pub fn written(
        &self,
        held: bool,
        holder: impl FnOnce() -> Option<LeaseHolder>,
    ) -> Result<(), RunDbError> {
        if held {
            return Ok(());
        }
        Err(RunDbError::Fenced {
            run: self.run_id.clone(),
            token: self.token,
            holder: holder().map(Box::new),
        })
    }
}

/// Who holds a run's lease, as the database says: for messages and `runs list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseHolder {
    /// The holder's executor id.
    pub owner: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it took the lease (UTC, ISO 8601).
    pub since: String,
    /// When the lease expires unless renewed (UTC, ISO 8601).
    pub expires: String,
    /// The fencing token it holds.
    pub token: i64,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host {} pid {} since {} (lease expires {})",
            self.host, self.pid, self.since, self.expires
        )
    }
}

/// Whether a recorded holder must be presumed alive: a holder on this host whose process is
/// gone (or a zombie) is dead; one on another host, or this very process, may be running.
pub fn holder_may_be_alive(host: &str, pid: u32) -> bool {
    if host != host_name() || pid == std::process::id() {
        return true;
    }
    process_alive(pid)
}

#[cfg(target_os = "linux")]
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses; `Z` is a zombie, `X` dead.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: u32) -> bool {
    // No cheap, safe liveness check: wait for the expiry.
    true
}

/// Unix time in seconds, as the SQLite database stores lease times.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_executor_of_a_process_has_its_own_id() {
        let (a, b) = (Owner::this_process(), Owner::this_process());
        assert_ne!(a.id, b.id);
        assert_eq!((a.host.as_str(), a.pid), (b.host.as_str(), b.pid));
    }

    #[test]
    fn a_holder_is_presumed_alive_unless_its_process_on_this_host_is_gone() {
        assert!(
            holder_may_be_alive(&host_name(), std::process::id()),
            "this process"
        );
        assert!(
            holder_may_be_alive("some-other-host", 1),
            "another host: wait for the expiry"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(
            !holder_may_be_alive(&host_name(), pid),
            "a reaped process is dead"
        );
    }
}
