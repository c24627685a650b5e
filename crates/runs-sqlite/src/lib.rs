//! The SQLite run database: one file, WAL journal, numbered migrations. One writing
//! connection per process behind a mutex; writes take the write lock up front (`BEGIN
//! IMMEDIATE`) and wait for it (busy timeout), so concurrent runs and processes queue instead
//! of failing. Journal writes of concurrent runs share commits ([`journal`]). Reads (lists,
//! records, counts) go through read-only connections of their own: in WAL mode they never
//! wait for a writer, and a reader never holds up the journal.

mod journal;
mod rows;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use flowhost_core::events::{Event, FlowState};
use flowhost_runs::row::{LeaseColumns, RunRows, SummaryColumns, Write, json};
use flowhost_runs::unix_now;
use flowhost_runs::{
    Lease, LeaseHolder, NewRun, Origin, Owner, PruneFilter, Pruned, RestartLinks, RunCount, RunDb,
    RunDbError, RunFilter, RunRecord, RunSummary, ScheduleDb, ScheduleRecord,
};

use rows::{HOLDER, SUMMARY};

/// Marks the file as a flowhost run database (`PRAGMA application_id`, "FLWH").
const APPLICATION_ID: i64 = 0x464C_5748;

/// Schema migrations; the database's `user_version` is how many have been applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_leases.sql"),
    include_str!("migrations/0003_attempts.sql"),
    include_str!("migrations/0004_iterations.sql"),
    include_str!("migrations/0005_plugin_reports.sql"),
    include_str!("migrations/0006_run_counts.sql"),
    include_str!("migrations/0007_idempotency_keys.sql"),
    include_str!("migrations/0008_suspend_restart.sql"),
    include_str!("migrations/0009_maps_priorities.sql"),
    include_str!("migrations/0010_signals.sql"),
    include_str!("migrations/0011_schedules.sql"),
];

use journal::{Batch, GroupCommit};

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Read-only connections per process: enough that a few slow readers (a large record, a
/// listing) do not queue the rest.
const READERS: usize = 4;

/// SQL turning parameter `n`, a unix time in seconds, into UTC ISO 8601 text.
fn ts(n: u8) -> String {
    format!("strftime('%Y-%m-%dT%H:%M:%fZ', ?{n}, 'unixepoch')")
}

/// When a commit is forced to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: every commit survives a process crash; a power loss
    /// may lose the last commits (never corrupts). The default.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is on disk before the next task starts, at the cost
    /// of an fsync per transition.
    Full,
}

/// A run database in one SQLite file.
pub struct SqliteRunDb {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Read-only connections for lists, records and counts.
    readers: Vec<Mutex<Option<Connection>>>,
    /// Which reader the next read tries first.
    next_reader: AtomicUsize,
    /// Journal writes waiting for the next group commit.
    commits: GroupCommit,
}

impl SqliteRunDb {
    /// Opens the database at `path`, creating it (and its folder) when `create` is set, and
    /// brings its schema up to date.
    pub fn open(path: &Path, create: bool, durability: Durability) -> Result<Self, RunDbError> {
        let open_error = |reason: String| RunDbError::Open {
            path: path.to_path_buf(),
            reason,
        };
        if !path.exists() {
            if !create {
                return Err(RunDbError::Missing {
                    path: path.to_path_buf(),
                });
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    open_error(format!("cannot create folder {}: {e}", dir.display()))
                })?;
            }
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| classify(path, "opening", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| classify(path, "setting the busy timeout", e))?;
        // One snapshot for both reads: another process may be creating the schema right now,
        // and tables seen without the stamp written in the same transaction would look foreign.
        let (application, objects): (i64, i64) = retry_while_busy(|| {
            let snapshot = conn.unchecked_transaction()?;
            let application = snapshot.query_row("PRAGMA application_id", [], |r| r.get(0))?;
            let objects =
                snapshot.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            snapshot.finish()?;
            Ok((application, objects))
        })
        .map_err(|e| classify(path, "reading the header", e))?;
        if application != APPLICATION_ID && (application != 0 || objects > 0) {
            return Err(RunDbError::Foreign {
                path: path.to_path_buf(),
                reason: "it is another application's SQLite database".into(),
            });
        }
        let mode: String =
            retry_while_busy(|| conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)))
                .map_err(|e| classify(path, "switching to WAL", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_error(format!(
                "the file system does not support WAL (journal mode {mode})"
            )));
        }
        // Closing does not checkpoint: a checkpoint fsyncs the database file (~10 ms, a third
        // of a short `flowhost run`), and the WAL is kept for the next process instead of
        // being deleted and created again (a folder fsync each time). The WAL is fsynced when
        // the database is dropped ([`Drop`] below), so every commit is on disk when the
        // process ends, as a checkpoint would leave it; WAL pages still go to the database
        // file at SQLite's automatic checkpoints while it is open.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| classify(path, "configuring", e))?;
        let synchronous = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
        ))
        .map_err(|e| classify(path, "configuring", e))?;
        let mut db = Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
            commits: GroupCommit::default(),
        };
        db.migrate()?;
        db.readers = (0..READERS).map(|_| Mutex::new(None)).collect();
        Ok(db)
    }

    /// A read-only connection, opened when a read first needs it: a process that only
    /// writes (`flowhost run`) never opens one.
    fn open_reader(&self) -> rusqlite::Result<Connection> {
        let reader = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(BUSY_TIMEOUT)?;
        reader.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        Ok(reader)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<(), RunDbError> {
        let path = self.path.clone();
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        let known = MIGRATIONS.len() as i64;
        // IMMEDIATE: two processes opening a fresh file at once migrate one after the other.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&path, "locking for migration", e))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| classify(&path, "reading the version", e))?;
        if version > known {
            return Err(RunDbError::TooNew {
                path,
                found: version,
                known,
            });
        }
        for (number, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)
                .map_err(|e| classify(&path, &format!("applying migration {}", number + 1), e))?;
        }
        if version < known {
            tx.execute_batch(&format!(
                "PRAGMA user_version = {known}; PRAGMA application_id = {APPLICATION_ID};"
            ))
            .map_err(|e| classify(&path, "recording the schema version", e))?;
        }
        tx.commit()
            .map_err(|e| classify(&path, "committing the migration", e))
    }

    fn with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, RunDbError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|e| classify(&self.path, what, e))
    }

    /// Runs a read on a reader connection: the first free one, else waits for one.
    fn read_with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, RunDbError> {
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        let free = (0..n).find_map(|i| self.readers[(first + i) % n].try_lock().ok());
        let mut conn = match free {
            Some(conn) => conn,
            None => self.readers[first % n]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        };
        if conn.is_none() {
            *conn = Some(
                self.open_reader()
                    .map_err(|e| classify(&self.path, "opening a reader", e))?,
            );
        }
        let conn = conn.as_mut().expect("opened above");
        f(conn).map_err(|e| classify(&self.path, what, e))
    }
}

impl Drop for SqliteRunDb {
    /// Puts the WAL on disk before the connections close without a checkpoint: what was
    /// committed survives a power loss once the database is closed, as it did when closing
    /// checkpointed. Best effort: a WAL that cannot be synced now was written all the same.
    fn drop(&mut self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        if let Ok(file) = std::fs::File::open(&wal) {
            let _ = file.sync_data();
        }
    }
}

impl ScheduleDb for SqliteRunDb {
    fn schedule_seen(
        &self,
        flow: &str,
        index: usize,
        cron: &str,
        now: &str,
    ) -> Result<ScheduleRecord, RunDbError> {
        self.with("recording a schedule", |conn| {
            conn.execute(
                "INSERT INTO schedules (flow, idx, cron, since) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (flow, idx) DO UPDATE SET cron = excluded.cron
                 WHERE schedules.cron <> excluded.cron",
                params![flow, index as i64, cron, now],
            )?;
            conn.query_row(
                "SELECT flow, idx, cron, since, last_tick, last_run FROM schedules WHERE flow = ?1 AND idx = ?2",
                params![flow, index as i64],
                schedule_row,
            )
        })
    }

    fn schedule_ticked(
        &self,
        flow: &str,
        index: usize,
        tick: &str,
        run_id: &str,
    ) -> Result<(), RunDbError> {
        self.with("recording a schedule's tick", |conn| {
            conn.execute(
                "UPDATE schedules SET last_tick = ?3, last_run = ?4
                  WHERE flow = ?1 AND idx = ?2 AND (last_tick IS NULL OR last_tick < ?3)",
                params![flow, index as i64, tick, run_id],
            )
            .map(drop)
        })
    }

    fn schedules(&self) -> Result<Vec<ScheduleRecord>, RunDbError> {
        self.read_with("listing schedules", |conn| {
            let mut statement = conn.prepare(
                "SELECT flow, idx, cron, since, last_tick, last_run FROM schedules ORDER BY flow, idx",
            )?;
            statement
                .query_map([], schedule_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
    }
}

fn schedule_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        flow: row.get(0)?,
        index: row.get::<_, i64>(1)? as usize,
        cron: row.get(2)?,
        since: row.get(3)?,
        last_tick: row.get(4)?,
        last_run: row.get(5)?,
    })
}

/// Retries `op` while the database is busy, up to the busy timeout. Switching a fresh file to
/// WAL needs an exclusive lock, and SQLite returns BUSY at once — without waiting in the busy
/// handler — when another process is opening the same fresh file: two `flowhost run`s started
/// together in a new folder would otherwise fail with "database is locked".
fn retry_while_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let started = std::time::Instant::now();
    loop {
        match op() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::DatabaseBusy && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Turns an SQLite error into one that says what is wrong with the file.
fn classify(path: &Path, what: &str, error: rusqlite::Error) -> RunDbError {
    let path = path.to_path_buf();
    let reason = error.to_string();
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            RunDbError::Foreign { path, reason }
        }
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            RunDbError::Open { path, reason }
        }
        _ => RunDbError::Query {
            path,
            what: what.to_owned(),
            reason,
        },
    }
}

fn now() -> f64 {
    unix_now()
}

const FINISHED: &str = "('SUCCESS', 'REVERTED', 'FAILURE')";

impl SqliteRunDb {
    /// Creates `run` under its first `lease` with its tasks PENDING and `events` (its first
    /// transitions) recorded, in one commit: a new run costs one commit, not two. Refused
    /// with [`RunDbError::Exists`] when its idempotency key is taken.
    fn write_new(&self, run: &NewRun, lease: &Lease, events: &[Event]) -> Result<(), RunDbError> {
        let writes: Vec<Write> = events.iter().map(Write::of).collect();
        let existing = self.with("recording a new run", |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now();
            let inserted = tx
                .prepare_cached(&format!(
                    "INSERT INTO runs (id, flow, flow_path, flow_hash, plugins, initial_store, state, created_at, updated_at,
                                       lease_token, lease_owner, lease_host, lease_pid, lease_since, lease_expires, idempotency_key,
                                       priority)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'PENDING', {t}, {t}, ?12, ?8, ?9, ?10, ?7, ?11, ?13, ?14)
                     ON CONFLICT (flow, idempotency_key) DO NOTHING",
                    t = ts(7)
                ))?
                .execute(params![
                    run.id,
                    run.flow,
                    run.origin.flow_path.as_ref().map(|p| p.to_string_lossy().into_owned()),
                    run.origin.flow_hash,
                    json(&run.origin.plugins),
                    json(&run.initial_store),
                    now,
                    lease.owner.id,
                    lease.owner.host,
                    lease.owner.pid,
                    now + lease.ttl.as_secs_f64(),
                    lease.token,
                    run.key,
                    run.priority,
                ])?;
            if inserted == 0 {
                // The key is taken (the write lock held since BEGIN makes this the run that
                // holds it now).
                let existing: String = tx.query_row(
                    "SELECT id FROM runs WHERE flow = ?1 AND idempotency_key = ?2",
                    params![run.flow, run.key],
                    |row| row.get(0),
                )?;
                return Ok(Some(existing));
            }
            {
                let mut task = tx.prepare_cached(
                    "INSERT INTO tasks (run_id, idx, name, state) VALUES (?1, ?2, ?3, 'PENDING')",
                )?;
                for (index, name) in run.tasks.iter().enumerate() {
                    task.execute(params![run.id, index as i64, name])?;
                }
            }
            writes.iter().try_for_each(|write| journal::apply(write, &tx))?;
            tx.commit().map(|()| None)
        })?;
        match existing {
            Some(existing) => Err(RunDbError::Exists {
                flow: run.flow.clone(),
                key: run.key.clone().unwrap_or_default(),
                run: existing,
            }),
            None => Ok(()),
        }
    }

    /// Who holds `lease`'s run now, for the error of a write the fence refused.
    fn holder_now(&self, lease: &Lease) -> Option<LeaseHolder> {
        self.with("reading the run's lease", |conn| {
            conn.query_row(
                &format!("SELECT {HOLDER} FROM runs WHERE id = ?1"),
                [&lease.run_id],
                |row| rows::lease(row, 0),
            )
            .optional()
        })
        .ok()
        .flatten()
        .flatten()
        .map(|lease| lease.held().holder)
    }
}

impl RunDb for SqliteRunDb {
    fn create(&self, run: &NewRun, owner: &Owner, ttl: Duration) -> Result<Lease, RunDbError> {
        let lease = Lease::first(&run.id, owner, ttl);
        self.write_new(run, &lease, &[])?;
        Ok(lease)
    }

    fn record_new(&self, run: &NewRun, lease: &Lease, events: &[Event]) -> Result<(), RunDbError> {
        self.write_new(run, lease, events)
    }

    fn acquire(&self, run_id: &str, owner: &Owner, ttl: Duration) -> Result<Lease, RunDbError> {
        let taken = self.with("taking the run's lease", |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some((token, lease)) = tx
                .query_row(&format!("SELECT lease_token, {HOLDER} FROM runs WHERE id = ?1"), [run_id], |row| {
                    Ok((row.get::<_, i64>(0)?, rows::lease(row, 1)?))
                })
                .optional()?
            else {
                return Ok(Err(RunDbError::Query {
                    path: self.path.clone(),
                    what: "taking the run's lease".into(),
                    reason: format!("no run {run_id}"),
                }));
            };
            let now = now();
            if let Some(held) = lease.map(LeaseColumns::held)
                && held.live(now)
            {
                return Ok(Err(RunDbError::Held { run: run_id.to_owned(), holder: Box::new(held.holder) }));
            }
            let token = token + 1;
            tx.execute(
                "UPDATE runs SET lease_token = ?2, lease_owner = ?3, lease_host = ?4, lease_pid = ?5,
                   lease_since = ?6, lease_expires = ?7 WHERE id = ?1",
                params![run_id, token, owner.id, owner.host, owner.pid, now, now + ttl.as_secs_f64()],
            )?;
            tx.commit()?;
            Ok(Ok(token))
        })??;
        Ok(Lease {
            run_id: run_id.to_owned(),
            token: taken,
            owner: owner.clone(),
            ttl,
        })
    }

    fn renew(&self, lease: &Lease) -> Result<(), RunDbError> {
        let held = self.with("renewing the run's lease", |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let held = fence(&tx, lease)?;
            tx.commit()?;
            Ok(held)
        })?;
        lease.written(held, || self.holder_now(lease))
    }

    fn release(&self, lease: &Lease) -> Result<(), RunDbError> {
        self.with("releasing the run's lease", |conn| {
            conn.execute(
                "UPDATE runs SET lease_owner = NULL, lease_host = NULL, lease_pid = NULL, lease_since = NULL,
                   lease_expires = NULL WHERE id = ?1 AND lease_token = ?2 AND lease_owner = ?3",
                params![lease.run_id, lease.token, lease.owner.id],
            )
            .map(drop)
        })
    }

    fn record(&self, events: &[Event], lease: &Lease) -> Result<(), RunDbError> {
        let what = match events {
            [only] => format!("recording {}", only.transition),
            _ => format!("recording {} transitions", events.len()),
        };
        let writes = events.iter().map(Write::of).collect();
        match self.commits.commit(
            self,
            Batch {
                lease: lease.clone(),
                writes,
            },
        ) {
            Ok(held) => lease.written(held, || self.holder_now(lease)),
            Err(error) => Err(classify(&self.path, &what, error)),
        }
    }

    fn resumed(&self, lease: &Lease, origin: &Origin) -> Result<(), RunDbError> {
        let held = self.with("recording a resume", |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !fence(&tx, lease)? {
                return Ok(false);
            }
            tx.execute(
                &format!(
                    "UPDATE runs SET resumes = resumes + 1, updated_at = {t}, flow_hash = ?3, plugins = ?4,
                            suspend_requested = 0
                     WHERE id = ?1",
                    t = ts(2)
                ),
                params![lease.run_id, now(), origin.flow_hash, json(&origin.plugins)],
            )?;
            tx.commit()?;
            Ok(true)
        })?;
        lease.written(held, || self.holder_now(lease))
    }

    fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, RunDbError> {
        use rusqlite::types::Value as Sql;
        let flows = (0..filter.flows.len())
            .map(|i| format!("?{}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let by_flow = if filter.flows.is_empty() {
            String::new()
        } else {
            format!("AND flow IN ({flows})")
        };
        let mut values = vec![
            filter
                .state
                .map_or(Sql::Null, |s| Sql::Text(s.as_str().to_owned())),
            Sql::Integer(
                filter
                    .limit
                    .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            ),
        ];
        values.extend(filter.flows.iter().cloned().map(Sql::Text));
        self.read_with("listing runs", |conn| {
            let mut statement = conn.prepare(&format!(
                "SELECT {SUMMARY} FROM runs
                 WHERE (?1 IS NULL OR state = ?1) {by_flow}
                 ORDER BY created_at DESC, rowid DESC LIMIT ?2"
            ))?;
            let rows = statement.query_map(rusqlite::params_from_iter(values), rows::summary)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?
        .into_iter()
        .map(SummaryColumns::summary)
        .collect::<Result<_, _>>()
        .map_err(|e| e.query(&self.path, "listing runs"))
    }

    /// Read from the counts the schema's triggers keep: a few rows however many runs.
    fn request_suspend(&self, run_id: &str) -> Result<bool, RunDbError> {
        self.with("asking a run to suspend", |conn| {
            conn.execute(
                "UPDATE runs SET suspend_requested = 1 WHERE id = ?1 AND state IN ('PENDING', 'RUNNING')",
                [run_id],
            )
            .map(|n| n == 1)
        })
    }

    fn suspend_requested(&self, run_id: &str) -> Result<bool, RunDbError> {
        self.read_with("reading a suspend request", |conn| {
            conn.query_row(
                "SELECT suspend_requested FROM runs WHERE id = ?1",
                [run_id],
                |row| row.get::<_, bool>(0),
            )
            .optional()
            .map(|asked| asked.unwrap_or(false))
        })
    }

    fn link_restart(&self, lease: &Lease, from: &str) -> Result<(), RunDbError> {
        let held = self.with("linking a restarted run", |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !fence(&tx, lease)? {
                return Ok(false);
            }
            tx.execute(
                "UPDATE runs SET restarted_from = ?2 WHERE id = ?1",
                params![lease.run_id, from],
            )?;
            tx.commit()?;
            Ok(true)
        })?;
        lease.written(held, || self.holder_now(lease))
    }

    fn restart_links(&self, run_id: &str) -> Result<RestartLinks, RunDbError> {
        self.read_with("reading restart links", |conn| {
            let restarted_from = conn
                .query_row(
                    "SELECT restarted_from FROM runs WHERE id = ?1",
                    [run_id],
                    |row| row.get::<_, Option<String>>(0),
                )
                .optional()?
                .flatten();
            let mut statement = conn.prepare_cached(
                "SELECT id FROM runs WHERE restarted_from = ?1 ORDER BY created_at, id",
            )?;
            let restarts = statement
                .query_map([run_id], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(RestartLinks {
                restarted_from,
                restarts,
            })
        })
    }

    fn count(&self) -> Result<Vec<RunCount>, RunDbError> {
        let what = "counting runs";
        let counts = self.read_with(what, |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT flow, state, runs FROM run_counts WHERE runs > 0 ORDER BY flow, state",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        counts
            .into_iter()
            .map(|(flow, state, runs)| {
                Ok(RunCount {
                    flow,
                    state: flowhost_runs::row::state("run_counts.state", state)
                        .map_err(|e| e.query(&self.path, what))?,
                    runs: runs.max(0) as u64,
                })
            })
            .collect()
    }

    fn read(
        &self,
        id: &str,
        max_value_bytes: Option<usize>,
    ) -> Result<Option<RunRecord>, RunDbError> {
        let what = "reading a run";
        let bound = max_value_bytes.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.read_with(what, |conn| rows::read_run(conn, id, bound))?
            .map(RunRows::record)
            .transpose()
            .map_err(|e| e.query(&self.path, what))
    }

    fn signal(
        &self,
        run_id: &str,
        name: &str,
        data: &serde_json::Value,
    ) -> Result<Option<FlowState>, RunDbError> {
        let what = "sending a signal";
        let state = self.with(what, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let state: Option<String> = tx
                .query_row("SELECT state FROM runs WHERE id = ?1", [run_id], |r| {
                    r.get(0)
                })
                .optional()?;
            let unfinished = state.clone().is_some_and(|s| {
                flowhost_runs::row::state::<FlowState>("runs.state", s)
                    .is_ok_and(|s| !s.is_finished())
            });
            if unfinished {
                tx.execute(
                    &format!(
                        "INSERT INTO signals (run_id, name, data, at) VALUES (?1, ?2, ?3, {t})",
                        t = ts(4)
                    ),
                    params![run_id, name, data.to_string(), now()],
                )?;
            }
            tx.commit()?;
            Ok(state)
        })?;
        state
            .map(|text| flowhost_runs::row::state("runs.state", text))
            .transpose()
            .map_err(|e| RunDbError::Query {
                path: self.path.clone(),
                what: what.into(),
                reason: e.to_string(),
            })
    }

    fn take_signal(
        &self,
        run_id: &str,
        task: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, RunDbError> {
        let what = "taking a signal";
        let data = self.with(what, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The one this task took before, else the oldest nobody took.
            let found: Option<(i64, String)> = tx
                .query_row(
                    "SELECT seq, data FROM signals WHERE run_id = ?1 AND name = ?2
                       AND (taken_by = ?3 OR taken_by IS NULL)
                     ORDER BY taken_by IS NULL, seq LIMIT 1",
                    params![run_id, name, task],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((seq, _)) = &found {
                tx.execute(
                    "UPDATE signals SET taken_by = ?2 WHERE seq = ?1",
                    params![seq, task],
                )?;
            }
            tx.commit()?;
            Ok(found.map(|(_, data)| data))
        })?;
        data.map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| RunDbError::Query {
                path: self.path.clone(),
                what: what.into(),
                reason: format!("damaged JSON column `signals.data`: {e}"),
            })
    }

    fn prune(&self, filter: &PruneFilter) -> Result<usize, RunDbError> {
        Ok(self.prune_runs(filter, false)?.runs.len())
    }
}

impl SqliteRunDb {
    /// The runs `filter` matches, split into those deleted — or with `dry_run`, those that
    /// would be — and those kept because an executor holds their lease: a live lease is never
    /// pruned (live as for `runs resume`: unexpired, and its holder not known dead). Matching
    /// and deleting happen in one transaction, so what is reported is what was deleted.
    pub fn prune_runs(&self, filter: &PruneFilter, dry_run: bool) -> Result<Pruned, RunDbError> {
        let before = filter.older_than.map(|age| now() - age.as_secs_f64());
        self.with("pruning runs", |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let matched: Vec<SummaryColumns> = tx
                .prepare(&format!(
                    "SELECT {SUMMARY} FROM runs
                     WHERE (CASE WHEN ?1 IS NULL THEN state IN {FINISHED} ELSE state = ?1 END)
                       AND (?2 IS NULL OR updated_at < {t})
                     ORDER BY created_at, rowid",
                    t = ts(2)
                ))?
                .query_map(
                    params![filter.state.map(FlowState::as_str), before],
                    rows::summary,
                )?
                .collect::<rusqlite::Result<_>>()?;
            // A damaged row stops the pruning before anything is deleted.
            let matched = match matched
                .into_iter()
                .map(SummaryColumns::summary)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(matched) => matched,
                Err(damaged) => return Ok(Err(damaged)),
            };
            let (held, runs): (Vec<RunSummary>, Vec<RunSummary>) =
                matched.into_iter().partition(|run| run.lease.is_some());
            if !dry_run {
                let mut delete = tx.prepare("DELETE FROM runs WHERE id = ?1")?;
                for run in &runs {
                    delete.execute([&run.id])?;
                }
                drop(delete);
                tx.commit()?;
            }
            Ok(Ok(Pruned { runs, held }))
        })?
        .map_err(|e| e.query(&self.path, "pruning runs"))
    }
}

/// Checks inside a write transaction that `lease` is still the run's, and renews it. False
/// when it is not: the caller writes nothing.
fn fence(tx: &rusqlite::Transaction<'_>, lease: &Lease) -> rusqlite::Result<bool> {
    let renewed = tx
        .prepare_cached(
            "UPDATE runs SET lease_expires = ?4 WHERE id = ?1 AND lease_token = ?2 AND lease_owner = ?3",
        )?
        .execute(params![lease.run_id, lease.token, lease.owner.id, now() + lease.ttl.as_secs_f64()])?;
    Ok(renewed == 1)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use serde_json::json;

    use super::*;
    use flowhost_core::events::{Event, Transition};
    use flowhost_core::store::Store;

    fn run(db: &SqliteRunDb, id: &str, flow: &str, store: Store) -> Lease {
        let new = NewRun {
            id: id.into(),
            flow: flow.into(),
            origin: Origin {
                flow_path: None,
                flow_hash: None,
                plugins: Vec::new(),
            },
            initial_store: store,
            tasks: vec!["t".into()],
            key: None,
            priority: 0,
        };
        db.create(&new, &Owner::this_process(), Duration::from_secs(30))
            .unwrap()
    }

    fn finish(db: &SqliteRunDb, lease: &Lease, flow: &str) {
        let event = Event {
            run_id: lease.run_id.clone(),
            flow: flow.into(),
            at: SystemTime::now(),
            transition: Transition::Flow {
                from: FlowState::Pending,
                to: FlowState::Success,
                elapsed: Duration::ZERO,
                store: Some(Store::new()),
            },
        };
        db.record(&[event], lease).unwrap();
    }

    fn counts(db: &SqliteRunDb) -> Vec<(String, FlowState, u64)> {
        db.count()
            .unwrap()
            .into_iter()
            .map(|c| (c.flow, c.state, c.runs))
            .collect()
    }

    #[test]
    fn counts_follow_runs_as_they_are_created_finish_and_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteRunDb::open(&dir.path().join("runs.db"), true, Durability::Normal).unwrap();
        let a = run(&db, "a", "f", Store::new());
        run(&db, "b", "f", Store::new());
        run(&db, "c", "g", Store::new());
        assert_eq!(
            counts(&db),
            [
                ("f".into(), FlowState::Pending, 2),
                ("g".into(), FlowState::Pending, 1)
            ]
        );
        finish(&db, &a, "f");
        db.release(&a).unwrap();
        assert_eq!(
            counts(&db),
            [
                ("f".into(), FlowState::Pending, 1),
                ("f".into(), FlowState::Success, 1),
                ("g".into(), FlowState::Pending, 1)
            ]
        );
        assert_eq!(db.prune(&PruneFilter::default()).unwrap(), 1);
        assert_eq!(
            counts(&db),
            [
                ("f".into(), FlowState::Pending, 1),
                ("g".into(), FlowState::Pending, 1)
            ]
        );
    }

    #[test]
    fn a_bounded_read_leaves_long_values_out_and_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteRunDb::open(&dir.path().join("runs.db"), true, Durability::Normal).unwrap();
        let store: Store = [("big".to_owned(), json!("x".repeat(1000)))]
            .into_iter()
            .collect();
        run(&db, "a", "f", store.clone());
        let whole = db.read("a", None).unwrap().unwrap();
        assert_eq!(whole.initial_store, store);
        assert!(whole.omitted.is_empty());
        let bounded = db.read("a", Some(100)).unwrap().unwrap();
        assert_eq!(bounded.initial_store, Store::new());
        assert_eq!(bounded.omitted.len(), 1);
        assert_eq!(bounded.omitted[0].value, "initial_store");
        assert_eq!(bounded.omitted[0].bytes, json(&store).len() as u64);
        assert_eq!(db.read("a", Some(2000)).unwrap().unwrap(), whole);
    }

    #[test]
    fn a_list_stops_at_its_limit_and_filters_by_any_of_its_flows() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteRunDb::open(&dir.path().join("runs.db"), true, Durability::Normal).unwrap();
        for (id, flow) in [("a", "f"), ("b", "g"), ("c", "h")] {
            run(&db, id, flow, Store::new());
        }
        let ids = |filter: RunFilter| -> Vec<String> {
            db.list(&filter)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(ids(RunFilter::default()), ["c", "b", "a"]);
        let newest = RunFilter {
            limit: Some(1),
            ..RunFilter::default()
        };
        assert_eq!(ids(newest), ["c"]);
        let two_flows = RunFilter {
            flows: vec!["f".into(), "h".into()],
            ..RunFilter::default()
        };
        assert_eq!(ids(two_flows), ["c", "a"]);
    }
}
