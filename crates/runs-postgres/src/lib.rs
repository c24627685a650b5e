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
//! **Same promises as SQLite.** Every transition is committed (one transaction per journal
//! write) before the run moves on; every write on behalf of a run first renews its lease with
//! `WHERE lease_token = $token AND lease_owner = $owner` in the same transaction, so a fenced
//! executor writes nothing. Lease times are on the database's clock, so hosts whose clocks
//! drift still agree on who holds a run. Every query has a deadline ([`QUERY_DEADLINE`]) and
//! TCP a user timeout, so a cut link fails a write instead of hanging the run.
//!
//! TLS is not offered yet: the connection is plain TCP or a Unix socket (`host=/run/postgresql`
//! in the URL's query), so keep the database on a trusted network or tunnel it.

mod queue;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use flowhost_core::events::Event;
use flowhost_runs::row::{Write, json};
use flowhost_runs::{FIRST_TOKEN, holder_may_be_alive};
use flowhost_runs::{
    Lease, LeaseHolder, NewRun, Origin, Owner, PruneFilter, Pruned, RunDb, RunDbError, RunFilter,
    RunRecord, RunSummary, StateChange, TaskRecord,
};

pub use queue::{Claimed, WorkerRecord};

/// Schema migrations, applied in order; `flowhost_schema.version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_attempts.sql"),
    include_str!("migrations/0003_cancel.sql"),
    include_str!("migrations/0004_plugin_reports.sql"),
];

/// The advisory lock that serialises migrations ("FLWH").
const MIGRATION_LOCK: i64 = 0x464C_5748;

/// How long any one database operation may take before it fails (and with it the run's
/// write, which stops the run at its last committed transition).
pub const QUERY_DEADLINE: Duration = Duration::from_secs(20);

/// Connections kept per process.
const POOL_SIZE: usize = 16;

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A run database in PostgreSQL.
pub struct PgRunDb {
    shared: Shared,
    config: tokio_postgres::Config,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

/// What every query needs: the pool, and the URL (without password) to name in errors.
#[derive(Clone)]
struct Shared {
    pool: Pool,
    url: PathBuf,
}

impl Shared {
    fn error(&self, what: &str, reason: impl std::fmt::Display) -> RunDbError {
        RunDbError::Query {
            path: self.url.clone(),
            what: what.to_owned(),
            reason: reason.to_string(),
        }
    }

    async fn client(&self, what: &str) -> Result<deadpool_postgres::Object, RunDbError> {
        self.pool.get().await.map_err(|e| self.error(what, e))
    }
}

impl PgRunDb {
    /// Connects to the database at `url` and brings its schema up to date.
    pub fn connect(url: &str) -> Result<Self, RunDbError> {
        let shown = PathBuf::from(redact(url));
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
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flowhost-postgres")
            .enable_all()
            .build()
            .map_err(|e| open(format!("cannot start the database runtime: {e}")))?;
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(Duration::from_secs(15)))
                .wait_timeout(Some(QUERY_DEADLINE))
                .build()
                .map_err(|e| open(e.to_string()))?
        };
        let handle = runtime.handle().clone();
        let db = Self {
            shared: Shared {
                pool,
                url: shown.clone(),
            },
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

    /// Runs `op` on the database runtime and waits for it, from any thread.
    fn block<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RunDbError>
    where
        T: Send + 'static,
        F: FnOnce(Shared) -> Fut,
        Fut: Future<Output = Result<T, RunDbError>> + Send + 'static,
    {
        let (send, receive) = std::sync::mpsc::sync_channel(1);
        let work = deadline(
            self.shared.clone(),
            what.to_owned(),
            op(self.shared.clone()),
        );
        self.handle.spawn(async move {
            let _ = send.send(work.await);
        });
        receive
            .recv()
            .unwrap_or_else(|_| Err(self.shared.error(what, "the database runtime stopped")))
    }

    /// Runs `op` on the database runtime and awaits it.
    async fn spawn<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RunDbError>
    where
        T: Send + 'static,
        F: FnOnce(Shared) -> Fut,
        Fut: Future<Output = Result<T, RunDbError>> + Send + 'static,
    {
        let work = deadline(
            self.shared.clone(),
            what.to_owned(),
            op(self.shared.clone()),
        );
        self.handle
            .spawn(work)
            .await
            .unwrap_or_else(|e| Err(self.shared.error(what, e)))
    }

    /// The error for a write refused by the fence, naming who holds the lease now.
    fn fenced(&self, lease: &Lease) -> RunDbError {
        let id = lease.run_id.clone();
        let holder = self
            .block("reading the run's lease", move |s| async move {
                let client = s.client("reading the run's lease").await?;
                let row = client
                    .query_opt(
                        &format!("SELECT {HOLDER}, flowhost_now() FROM runs WHERE id = $1"),
                        &[&id],
                    )
                    .await
                    .map_err(|e| s.error("reading the run's lease", e))?;
                Ok(row
                    .and_then(|row| holder(&row, 0))
                    .map(|(holder, _)| holder))
            })
            .ok()
            .flatten()
            .map(Box::new);
        RunDbError::Fenced {
            run: lease.run_id.clone(),
            token: lease.token,
            holder,
        }
    }

    /// The runs `filter` matches, split into those deleted — or with `dry_run`, those that
    /// would be — and those kept because a live executor holds them, in one transaction.
    pub fn prune_runs(&self, filter: &PruneFilter, dry_run: bool) -> Result<Pruned, RunDbError> {
        let state = filter.state.map(|s| s.as_str().to_owned());
        let older = filter.older_than.map(|age| age.as_secs_f64());
        self.block("pruning runs", move |s| async move {
            let what = "pruning runs";
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            let rows = tx
                .query(
                    &format!(
                        "SELECT {SUMMARY} FROM runs
                         WHERE (CASE WHEN $1::text IS NULL THEN state IN ('SUCCESS', 'REVERTED', 'FAILURE') ELSE state = $1 END)
                           AND ($2::float8 IS NULL OR updated_at < flowhost_ts(flowhost_now() - $2))
                         ORDER BY seq FOR UPDATE"
                    ),
                    &[&state, &older],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            let matched = rows.iter().map(summary).collect::<Result<Vec<_>, String>>().map_err(|e| s.error(what, e))?;
            let (held, runs): (Vec<RunSummary>, Vec<RunSummary>) = matched.into_iter().partition(|r| r.lease.is_some());
            if !dry_run {
                let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
                tx.execute("DELETE FROM runs WHERE id = ANY($1)", &[&ids]).await.map_err(|e| s.error(what, e))?;
                tx.commit().await.map_err(|e| s.error(what, e))?;
            }
            Ok(Pruned { runs, held })
        })
    }
}

impl Drop for PgRunDb {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which is refused inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `op`, failing after [`QUERY_DEADLINE`].
async fn deadline<T>(
    s: Shared,
    what: String,
    op: impl Future<Output = Result<T, RunDbError>>,
) -> Result<T, RunDbError> {
    match tokio::time::timeout(QUERY_DEADLINE, op).await {
        Ok(done) => done,
        Err(_) => Err(s.error(
            &what,
            format!("no answer within {} s", QUERY_DEADLINE.as_secs()),
        )),
    }
}

/// The URL with its password replaced, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            format!(
                "{scheme}://{}:***@{host}",
                user.split_once(':').map(|(u, _)| u).unwrap_or(user)
            )
        }
        _ => url.to_owned(),
    }
}

async fn migrate(s: &Shared) -> Result<(), RunDbError> {
    let what = "migrating the schema";
    let mut client = s.client(what).await?;
    let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| s.error(what, e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS flowhost_schema (version integer NOT NULL)")
        .await
        .map_err(|e| s.error(what, e))?;
    let version: i32 = match tx
        .query_opt("SELECT version FROM flowhost_schema", &[])
        .await
        .map_err(|e| s.error(what, e))?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO flowhost_schema VALUES (0)", &[])
                .await
                .map_err(|e| s.error(what, e))?;
            0
        }
    };
    let known = MIGRATIONS.len() as i32;
    if version > known {
        return Err(RunDbError::TooNew {
            path: s.url.clone(),
            found: version.into(),
            known: known.into(),
        });
    }
    for (number, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| s.error(&format!("applying migration {}", number + 1), e))?;
    }
    tx.execute("UPDATE flowhost_schema SET version = $1", &[&known])
        .await
        .map_err(|e| s.error(what, e))?;
    tx.commit().await.map_err(|e| s.error(what, e))
}

/// Renews `lease` inside a write transaction: one row when it is still the run's.
const FENCE: &str = "UPDATE runs SET lease_expires = flowhost_now() + $4 WHERE id = $1 AND lease_token = $2 AND lease_owner = $3";

async fn fence(
    tx: &deadpool_postgres::Transaction<'_>,
    lease: &Lease,
) -> Result<bool, tokio_postgres::Error> {
    let statement = tx.prepare_cached(FENCE).await?;
    let renewed = tx
        .execute(
            &statement,
            &[
                &lease.run_id,
                &lease.token,
                &lease.owner.id,
                &lease.ttl.as_secs_f64(),
            ],
        )
        .await?;
    Ok(renewed == 1)
}

/// Inserts run `run` with its tasks PENDING; leased to `owner` when given, else queued.
async fn insert_run(
    tx: &deadpool_postgres::Transaction<'_>,
    run: &NewRun,
    owner: Option<(&Owner, Duration)>,
) -> Result<(), tokio_postgres::Error> {
    let (owner_id, host, pid, ttl) = match owner {
        Some((owner, ttl)) => (
            Some(owner.id.as_str()),
            Some(owner.host.as_str()),
            Some(i64::from(owner.pid)),
            Some(ttl.as_secs_f64()),
        ),
        None => (None, None, None, None),
    };
    tx.execute(
        "INSERT INTO runs (id, flow, flow_path, flow_hash, plugins, initial_store, state, created_at, updated_at, queued,
                           lease_token, lease_owner, lease_host, lease_pid, lease_since, lease_expires)
         VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', flowhost_ts(flowhost_now()), flowhost_ts(flowhost_now()), $7,
                 $8, $9, $10, $11, CASE WHEN $9::text IS NULL THEN NULL ELSE flowhost_now() END,
                 flowhost_now() + $12::float8)",
        &[
            &run.id,
            &run.flow,
            &run.origin.flow_path.as_ref().map(|p| p.to_string_lossy().into_owned()),
            &run.origin.flow_hash,
            &json(&run.origin.plugins),
            &json(&run.initial_store),
            &owner.is_none(),
            &if owner.is_some() { FIRST_TOKEN } else { 0 },
            &owner_id,
            &host,
            &pid,
            &ttl,
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO tasks (run_id, idx, name, state)
         SELECT $1, (n - 1)::integer, name, 'PENDING' FROM unnest($2::text[]) WITH ORDINALITY AS t(name, n)",
        &[&run.id, &run.tasks],
    )
    .await?;
    Ok(())
}

/// The statements a journal write uses, prepared once per connection.
struct Journaling {
    fence: Statement,
    flow: Statement,
    flow_transition: Statement,
    task: Statement,
    task_reason: Statement,
    task_transition: Statement,
    progress: Statement,
}

impl Journaling {
    async fn prepare(
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            fence: tx.prepare_cached(FENCE).await?,
            flow: tx
                .prepare_cached(
                    "UPDATE runs SET state = $2, updated_at = flowhost_ts($3),
                       finished_at = CASE WHEN $4 THEN flowhost_ts($3) ELSE finished_at END,
                       final_store = COALESCE($5, final_store),
                       exit_reason = CASE WHEN $6::text IS NULL THEN exit_reason
                                          WHEN exit_reason IS NULL OR $2 = 'SUCCESS' THEN $6
                                          ELSE $6 || ': ' || exit_reason END
                     WHERE id = $1",
                )
                .await?,
            flow_transition: tx
                .prepare_cached(
                    "INSERT INTO transitions (run_id, from_state, to_state, at, duration_ms)
                     VALUES ($1, $2, $3, flowhost_ts($4), $5)",
                )
                .await?,
            task: tx
                .prepare_cached(
                    "UPDATE tasks SET state = $3,
                       args = COALESCE($4, args), outcome = COALESCE($5, outcome),
                       result = COALESCE($6, result),
                       error = CASE WHEN $3 IN ('RUNNING', 'PENDING') THEN NULL ELSE COALESCE($7, error) END,
                       revert_error = COALESCE($8, revert_error),
                       duration_ms = COALESCE($9, duration_ms),
                       revert_duration_ms = COALESCE($10, revert_duration_ms),
                       executions = executions + CASE WHEN $3 = 'RUNNING' THEN 1 ELSE 0 END,
                       reverts = reverts + CASE WHEN $3 = 'REVERTING' THEN 1 ELSE 0 END,
                       attempt = $11,
                       retry_at = CASE WHEN $3 IN ('RUNNING', 'PENDING') THEN NULL ELSE COALESCE($12, retry_at) END,
                       iterations = COALESCE($13, iterations),
                       revert_result = COALESCE($14, revert_result)
                     WHERE run_id = $1 AND idx = $2",
                )
                .await?,
            task_reason: tx
                .prepare_cached(
                    "UPDATE runs SET updated_at = flowhost_ts($2),
                       exit_reason = CASE WHEN exit_reason IS NULL THEN $3 ELSE exit_reason || '; ' || $3 END
                     WHERE id = $1",
                )
                .await?,
            progress: tx
                .prepare_cached("UPDATE tasks SET progress = $3 WHERE run_id = $1 AND idx = $2")
                .await?,
            task_transition: tx
                .prepare_cached(
                    "INSERT INTO transitions (run_id, task_idx, task, from_state, to_state, at, duration_ms,
                       attempt, error, retry_at, backoff_ms, iterations)
                     VALUES ($1, $2, $3, $4, $5, flowhost_ts($6), $7, $8, $9, $10, $11, $12)",
                )
                .await?,
        })
    }

    /// The statements (with their parameters) that record `write`; `index` and `attempt` are
    /// its task's index and attempt as the columns' type.
    fn calls<'a>(
        &'a self,
        write: &'a Write,
        (index, attempt): &'a (i32, i32),
    ) -> Vec<(&'a Statement, Vec<&'a (dyn ToSql + Sync)>)> {
        match write {
            Write::Flow {
                run_id,
                from,
                to,
                at,
                elapsed_ms,
                ended,
                final_store,
                reason,
            } => vec![
                (&self.flow, vec![run_id, to, at, ended, final_store, reason]),
                (
                    &self.flow_transition,
                    vec![run_id, from, to, at, elapsed_ms],
                ),
            ],
            Write::Progress {
                run_id, progress, ..
            } => vec![(&self.progress, vec![run_id, index, progress])],
            Write::Task {
                run_id,
                task,
                from,
                to,
                at,
                duration_ms,
                args,
                outcome,
                result,
                error,
                revert_error,
                run_ms,
                revert_ms,
                reason,
                carried,
                retry_at,
                backoff_ms,
                iterations,
                revert_result,
                ..
            } => {
                let mut calls = vec![(
                    &self.task,
                    vec![
                        run_id as &(dyn ToSql + Sync),
                        index,
                        to,
                        args,
                        outcome,
                        result,
                        error,
                        revert_error,
                        run_ms,
                        revert_ms,
                        attempt,
                        retry_at,
                        iterations,
                        revert_result,
                    ],
                )];
                if let Some(reason) = reason {
                    calls.push((&self.task_reason, vec![run_id, at, reason]));
                }
                calls.push((
                    &self.task_transition,
                    vec![
                        run_id,
                        index,
                        task,
                        from,
                        to,
                        at,
                        duration_ms,
                        attempt,
                        carried,
                        retry_at,
                        backoff_ms,
                        iterations,
                    ],
                ));
                calls
            }
        }
    }
}

/// Records `writes` under `lease` in one transaction: false, with nothing written, when the
/// lease is no longer the run's. The lease check and the writes are sent together in one
/// round trip (pipelined) and the transaction is rolled back when the check failed, so a
/// journal write costs three round trips (BEGIN, the statements, COMMIT) however many
/// transitions it holds.
async fn journal(
    s: &Shared,
    what: &str,
    lease: &Lease,
    writes: &[Write],
) -> Result<bool, RunDbError> {
    let failed = |e: tokio_postgres::Error| s.error(what, e);
    let mut client = s.client(what).await?;
    let tx = client.transaction().await.map_err(failed)?;
    let prepared = Journaling::prepare(&tx).await.map_err(failed)?;
    let ttl = lease.ttl.as_secs_f64();
    let indexes: Vec<(i32, i32)> = writes
        .iter()
        .map(|w| match w {
            Write::Task { index, attempt, .. } => (
                i32::try_from(*index).unwrap_or(i32::MAX),
                i32::try_from(*attempt).unwrap_or(i32::MAX),
            ),
            Write::Progress { index, .. } => (i32::try_from(*index).unwrap_or(i32::MAX), 0),
            Write::Flow { .. } => (0, 0),
        })
        .collect();
    let mut calls: Vec<(&Statement, Vec<&(dyn ToSql + Sync)>)> = vec![(
        &prepared.fence,
        vec![&lease.run_id, &lease.token, &lease.owner.id, &ttl],
    )];
    for (write, index) in writes.iter().zip(&indexes) {
        calls.extend(prepared.calls(write, index));
    }
    let done = futures_util::future::try_join_all(
        calls
            .into_iter()
            .map(|(statement, params)| tx.execute_raw(statement, params)),
    )
    .await
    .map_err(failed)?;
    if done.first() != Some(&1) {
        // Dropping the transaction rolls the writes back.
        return Ok(false);
    }
    tx.commit().await.map_err(failed)?;
    Ok(true)
}

impl RunDb for PgRunDb {
    fn create(&self, run: &NewRun, owner: &Owner, ttl: Duration) -> Result<Lease, RunDbError> {
        let (new, leased) = (run.clone(), owner.clone());
        self.block("recording a new run", move |s| async move {
            let what = "recording a new run";
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            insert_run(&tx, &new, Some((&leased, ttl)))
                .await
                .map_err(|e| s.error(what, e))?;
            tx.commit().await.map_err(|e| s.error(what, e))
        })?;
        Ok(Lease {
            run_id: run.id.clone(),
            token: FIRST_TOKEN,
            owner: owner.clone(),
            ttl,
        })
    }

    fn acquire(&self, run_id: &str, owner: &Owner, ttl: Duration) -> Result<Lease, RunDbError> {
        let (id, taker) = (run_id.to_owned(), owner.clone());
        let token = self.block("taking the run's lease", move |s| async move {
            let what = "taking the run's lease";
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            let row = tx
                .query_opt(
                    &format!("SELECT lease_token, {HOLDER}, flowhost_now() FROM runs WHERE id = $1 FOR UPDATE"),
                    &[&id],
                )
                .await
                .map_err(|e| s.error(what, e))?
                .ok_or_else(|| s.error(what, format!("no run {id}")))?;
            let token: i64 = row.get(0);
            if let Some((holder, expires)) = holder(&row, 1)
                && expires > row.get::<_, f64>(HOLDER_COLUMNS + 1)
                && holder_may_be_alive(&holder.host, holder.pid)
            {
                return Err(RunDbError::Held { run: id, holder: Box::new(holder) });
            }
            tx.execute(
                "UPDATE runs SET lease_token = $2, lease_owner = $3, lease_host = $4, lease_pid = $5,
                   lease_since = flowhost_now(), lease_expires = flowhost_now() + $6 WHERE id = $1",
                &[&id, &(token + 1), &taker.id, &taker.host, &i64::from(taker.pid), &ttl.as_secs_f64()],
            )
            .await
            .map_err(|e| s.error(what, e))?;
            tx.commit().await.map_err(|e| s.error(what, e))?;
            Ok(token + 1)
        })?;
        Ok(Lease {
            run_id: run_id.to_owned(),
            token,
            owner: owner.clone(),
            ttl,
        })
    }

    fn renew(&self, lease: &Lease) -> Result<(), RunDbError> {
        let held = lease.clone();
        let renewed = self.block("renewing the run's lease", move |s| async move {
            let what = "renewing the run's lease";
            let client = s.client(what).await?;
            let statement = client
                .prepare_cached(FENCE)
                .await
                .map_err(|e| s.error(what, e))?;
            let n = client
                .execute(
                    &statement,
                    &[
                        &held.run_id,
                        &held.token,
                        &held.owner.id,
                        &held.ttl.as_secs_f64(),
                    ],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(n == 1)
        })?;
        if renewed {
            Ok(())
        } else {
            Err(self.fenced(lease))
        }
    }

    fn release(&self, lease: &Lease) -> Result<(), RunDbError> {
        let held = lease.clone();
        self.block("releasing the run's lease", move |s| async move {
            let what = "releasing the run's lease";
            let client = s.client(what).await?;
            client
                .execute(
                    "UPDATE runs SET lease_owner = NULL, lease_host = NULL, lease_pid = NULL, lease_since = NULL,
                       lease_expires = NULL WHERE id = $1 AND lease_token = $2 AND lease_owner = $3",
                    &[&held.run_id, &held.token, &held.owner.id],
                )
                .await
                .map_err(|e| s.error(what, e))
                .map(drop)
        })
    }

    fn record(&self, events: &[Event], lease: &Lease) -> Result<(), RunDbError> {
        let what = match events {
            [only] => format!("recording {}", only.transition),
            _ => format!("recording {} transitions", events.len()),
        };
        let writes: Vec<Write> = events.iter().map(Write::of).collect();
        let held = lease.clone();
        let label = what.clone();
        let recorded = self.block(&what, move |s| async move {
            journal(&s, &label, &held, &writes).await
        })?;
        if recorded {
            Ok(())
        } else {
            Err(self.fenced(lease))
        }
    }

    fn resumed(&self, lease: &Lease, origin: &Origin) -> Result<(), RunDbError> {
        let (held, hash, plugins) = (
            lease.clone(),
            origin.flow_hash.clone(),
            json(&origin.plugins),
        );
        let recorded = self.block("recording a resume", move |s| async move {
            let what = "recording a resume";
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            if !fence(&tx, &held).await.map_err(|e| s.error(what, e))? {
                return Ok(false);
            }
            tx.execute(
                "UPDATE runs SET resumes = resumes + 1, updated_at = flowhost_ts(flowhost_now()), flow_hash = $2, plugins = $3
                 WHERE id = $1",
                &[&held.run_id, &hash, &plugins],
            )
            .await
            .map_err(|e| s.error(what, e))?;
            tx.commit().await.map_err(|e| s.error(what, e))?;
            Ok(true)
        })?;
        if recorded {
            Ok(())
        } else {
            Err(self.fenced(lease))
        }
    }

    fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, RunDbError> {
        let (state, flow) = (
            filter.state.map(|s| s.as_str().to_owned()),
            filter.flow.clone(),
        );
        self.block("listing runs", move |s| async move {
            let what = "listing runs";
            let client = s.client(what).await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {SUMMARY} FROM runs WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR flow = $2)
                         ORDER BY seq DESC"
                    ),
                    &[&state, &flow],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            rows.iter().map(summary).collect::<Result<_, _>>().map_err(|e| s.error(what, e))
        })
    }

    fn get(&self, id: &str) -> Result<Option<RunRecord>, RunDbError> {
        let id = id.to_owned();
        self.block(
            "reading a run",
            move |s| async move { read_run(&s, &id).await },
        )
    }

    fn prune(&self, filter: &PruneFilter) -> Result<usize, RunDbError> {
        Ok(self.prune_runs(filter, false)?.runs.len())
    }
}

/// One run's full record.
async fn read_run(s: &Shared, id: &str) -> Result<Option<RunRecord>, RunDbError> {
    let what = "reading a run";
    let err = |e: &dyn std::fmt::Display| s.error(what, e);
    let client = s.client(what).await?;
    let Some(row) = client
        .query_opt(
            &format!(
                "SELECT {SUMMARY}, flow_path, flow_hash, plugins, initial_store, final_store FROM runs WHERE id = $1"
            ),
            &[&id],
        )
        .await
        .map_err(|e| err(&e))?
    else {
        return Ok(None);
    };
    let summary = summary(&row).map_err(|e| err(&e))?;
    let at = SUMMARY_COLUMNS;
    let origin = Origin {
        flow_path: row.get::<_, Option<String>>(at).map(PathBuf::from),
        flow_hash: row.get(at + 1),
        plugins: parse(row.get(at + 2))
            .map_err(|e| err(&e))?
            .unwrap_or_default(),
    };
    let initial_store = parse(row.get(at + 3))
        .map_err(|e| err(&e))?
        .unwrap_or_default();
    let final_store = parse(row.get(at + 4)).map_err(|e| err(&e))?;
    let changes = client
        .query(
            "SELECT task_idx, from_state, to_state, at, duration_ms, attempt, error, backoff_ms, iterations FROM transitions
             WHERE run_id = $1 AND task_idx IS NOT NULL ORDER BY seq",
            &[&id],
        )
        .await
        .map_err(|e| err(&e))?
        .iter()
        .map(|row| {
            Ok((
                row.get::<_, i32>(0) as usize,
                StateChange {
                    from: state(row.get(1))?,
                    to: state(row.get(2))?,
                    at: row.get(3),
                    duration_ms: row.get(4),
                    attempt: row.get::<_, Option<i32>>(5).map(|a| a.max(0) as u32),
                    error: parse(row.get(6))?,
                    backoff_ms: row.get(7),
                    iterations: parse(row.get(8))?.unwrap_or_default(),
                },
            ))
        })
        .collect::<Result<Vec<(usize, StateChange)>, String>>()
        .map_err(|e| err(&e))?;
    let tasks = client
        .query(
            "SELECT idx, name, state, args, outcome, result, error, revert_error, duration_ms,
                    revert_duration_ms, executions, reverts, attempt, retry_at, iterations,
                    revert_result, progress
             FROM tasks WHERE run_id = $1 ORDER BY idx",
            &[&id],
        )
        .await
        .map_err(|e| err(&e))?
        .iter()
        .map(|row| {
            let index = row.get::<_, i32>(0) as usize;
            Ok(TaskRecord {
                index,
                name: row.get(1),
                state: state(row.get(2))?,
                args: row.get(3),
                outcome: parse(row.get(4))?,
                result: parse(row.get(5))?,
                error: parse(row.get(6))?,
                revert_error: parse(row.get(7))?,
                duration_ms: row.get(8),
                revert_duration_ms: row.get(9),
                executions: row.get::<_, i32>(10).max(0) as u32,
                reverts: row.get::<_, i32>(11).max(0) as u32,
                attempt: row.get::<_, i32>(12).max(0) as u32,
                retry_at: row.get(13),
                iterations: parse(row.get(14))?.unwrap_or_default(),
                revert_result: parse(row.get(15))?,
                progress: parse(row.get(16))?,
                history: changes
                    .iter()
                    .filter(|(i, _)| *i == index)
                    .map(|(_, c)| c.clone())
                    .collect(),
            })
        })
        .collect::<Result<Vec<TaskRecord>, String>>()
        .map_err(|e| err(&e))?;
    Ok(Some(RunRecord {
        summary,
        origin,
        initial_store,
        final_store,
        tasks,
    }))
}

/// Reads a JSON column; a damaged value is an error naming it.
fn parse<T: DeserializeOwned>(text: Option<String>) -> Result<Option<T>, String> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| format!("damaged JSON column: {e}")))
        .transpose()
}

fn state<T: DeserializeOwned>(text: String) -> Result<T, String> {
    serde_json::from_value(Value::String(text.clone()))
        .map_err(|_| format!("unknown state `{text}`"))
}

/// The lease holder's columns, in the order [`holder`] reads them.
const HOLDER: &str = "lease_owner, lease_host, lease_pid, flowhost_ts(lease_since), flowhost_ts(lease_expires), lease_token, lease_expires";
const HOLDER_COLUMNS: usize = 7;

/// The columns [`summary`] reads, first in a row.
const SUMMARY: &str = "id, flow, state, created_at, updated_at, finished_at, exit_reason, resumes, \
     lease_owner, lease_host, lease_pid, flowhost_ts(lease_since), flowhost_ts(lease_expires), lease_token, lease_expires, \
     flowhost_now()";
const SUMMARY_COLUMNS: usize = 16;

fn summary(row: &Row) -> Result<RunSummary, String> {
    let now: f64 = row.get(15);
    let lease = holder(row, 8).filter(|(holder, expires)| {
        *expires > now && holder_may_be_alive(&holder.host, holder.pid)
    });
    Ok(RunSummary {
        id: row.get(0),
        flow: row.get(1),
        state: state(row.get(2))?,
        created_at: row.get(3),
        updated_at: row.get(4),
        finished_at: row.get(5),
        exit_reason: row.get(6),
        resumes: row.get::<_, i32>(7).max(0) as u32,
        lease: lease.map(|(holder, _)| holder),
    })
}

/// The lease holder read from [`HOLDER`]'s columns starting at `at`, with its expiry in unix
/// seconds of the database's clock; `None` when nobody holds the lease.
fn holder(row: &Row, at: usize) -> Option<(LeaseHolder, f64)> {
    let owner: String = row.get::<_, Option<String>>(at)?;
    let holder = LeaseHolder {
        owner,
        host: row.get::<_, Option<String>>(at + 1).unwrap_or_default(),
        pid: row.get::<_, Option<i64>>(at + 2).unwrap_or_default() as u32,
        since: row.get::<_, Option<String>>(at + 3).unwrap_or_default(),
        expires: row.get::<_, Option<String>>(at + 4).unwrap_or_default(),
        token: row.get(at + 5),
    };
    Some((
        holder,
        row.get::<_, Option<f64>>(at + 6).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/runs"),
            "postgres://app:***@db:5432/runs"
        );
        assert_eq!(redact("postgres://app@db/runs"), "postgres://app@db/runs");
        assert!(is_postgres_url("postgresql://db/runs") && !is_postgres_url("./runs.db"));
    }
}
