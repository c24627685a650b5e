//! The PostgreSQL run database: one database shared by every host, so that `flowhost submit`
//! can queue runs and `flowhost worker`s on many machines can claim, lease and resume them.
//! Chosen by URL (`--db postgres://user@host:port/db`); the schema is the SQLite one plus the
//! queue, the blobs (flow files and plugins by SHA-256) and the workers, in numbered
//! migrations (`migrations/`) applied under an advisory lock so that workers starting together
//! migrate once.
//!
//! **Why a synchronous [`RunDb`] over an async driver.** The engine's journal and heartbeat
//! already call [`RunDb`] from tokio's blocking threads (SQLite blocks), and the resume and
//! CLI code call it synchronously; making the trait async would change every backend and
//! caller for no gain. So this backend runs tokio-postgres and its pool (deadpool) on a small
//! runtime of its own: each synchronous call hands its query to that runtime and waits on a
//! channel, which is safe from any thread, a blocking thread or an async worker alike, and
//! never nests runtimes. The worker loop, which is async, awaits the same futures directly
//! ([`PgRunDb::claim`] and friends) without tying up a thread.
//!
//! **Same promises as SQLite.** Every transition is committed before the run moves on; every
//! write on behalf of a run renews its lease with `WHERE lease_token = $token AND lease_owner =
//! $owner` in the same transaction, and applies only under it, so a fenced executor writes
//! nothing. Journal writes of concurrent runs are grouped: one transaction, sent in one round
//! trip, commits the writes pending at that moment, each run fenced on its own (`journal`). Lease times are on the database's clock, so hosts whose clocks
//! drift still agree on who holds a run. Every query has a deadline ([`QUERY_DEADLINE`]) and
//! TCP a user timeout, so a cut link fails a write instead of hanging the run.
//!
//! TLS is not offered yet: the connection is plain TCP or a Unix socket (`host=/run/postgresql`
//! in the URL's query), so keep the database on a trusted network or tunnel it.
//!
//! The pieces: `bridge` is the private runtime serving the synchronous trait, `migrate` the
//! schema, `storage` the [`RunDb`] implementation, `journal` its grouped transition
//! writes, `rows` the reading of rows into records, `queue` what only a shared database
//! does (submitting, claiming, workers), `limits` the queue limits the claim enforces and the
//! schedules' records.

mod bridge;
mod journal;
mod limits;
mod migrate;
mod queue;
mod rows;
mod signal;
mod storage;

use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

#[cfg(doc)]
use flowhost_runs::RunDb;
use flowhost_runs::{RunDbError, mask_passwords};

pub use limits::FlowLimitState;
pub use queue::{Claimed, WorkerRecord};

use bridge::Shared;
use journal::Committer;
use migrate::migrate;

/// How long any one database operation may take before it fails (and with it the run's
/// write, which stops the run at its last committed transition).
pub const QUERY_DEADLINE: Duration = Duration::from_secs(20);

/// Connections kept per process.
const POOL_SIZE: usize = 16;

/// Connections kept per process for reads (lists, records, counts) besides [`POOL_SIZE`]:
/// readers never wait for a connection behind the journal's writes.
const READ_POOL_SIZE: usize = 4;

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A run database in PostgreSQL.
pub struct PgRunDb {
    shared: Shared,
    committer: Committer,
    config: tokio_postgres::Config,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl PgRunDb {
    /// Connects to the database at `url` and brings its schema up to date.
    pub fn connect(url: &str) -> Result<Self, RunDbError> {
        let shown = PathBuf::from(mask_passwords(url).into_owned());
        let open = |reason: String| RunDbError::Open {
            path: shown.clone(),
            reason,
        };
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| open(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A link cut mid-query must fail the query, not hang it for the kernel's 15 minutes.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5));
        #[cfg(target_os = "linux")]
        config.tcp_user_timeout(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("flowhost");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flowhost-postgres")
            .enable_all()
            .build()
            .map_err(|e| open(format!("cannot start the database runtime: {e}")))?;
        let pool = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(Duration::from_secs(15)))
                .wait_timeout(Some(QUERY_DEADLINE))
                .build()
                .map_err(|e| open(e.to_string()))
        };
        let (writes, reads) = (pool(POOL_SIZE)?, pool(READ_POOL_SIZE)?);
        let handle = runtime.handle().clone();
        let shared = Shared {
            pool: writes,
            reads,
            url: shown.clone(),
        };
        let committer = {
            let _entered = runtime.enter();
            Committer::start(&shared)
        };
        let db = Self {
            shared,
            committer,
            config,
            runtime: Some(runtime),
            handle,
        };
        db.block("migrating", |s| async move { migrate(&s).await })
            .map_err(|error| match error {
                RunDbError::Query { reason, .. } => RunDbError::Open {
                    path: shown.clone(),
                    reason,
                },
                other => other,
            })?;
        Ok(db)
    }

    /// The database's URL, without its password.
    pub fn url(&self) -> &std::path::Path {
        &self.shared.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_are_told_from_sqlite_files() {
        assert!(is_postgres_url("postgresql://db/runs") && !is_postgres_url("./runs.db"));
    }
}
