//! Fetching rows in SQLite's dialect: the queries for a run's summary, its lease, its tasks
//! and transitions, their rows handed to the shared readers ([`flowhost_runs::row`]), which
//! know which column is where and turn them into records. Separate because this is all of
//! the read side that is SQLite's own: how timestamps are formatted in SQL, whose clock
//! judges a lease (this host's), and how integers come out of a row.

use rusqlite::{Connection, OptionalExtension, Row, params};

use flowhost_runs::row::{
    Columns, ELEMENT_COLUMNS, ElementColumns, LeaseColumns, RunColumns, RunRows, SUMMARY_WIDTH,
    SummaryColumns, TRANSITION_COLUMNS, TaskColumns, TransitionColumns, origin_columns,
    task_columns,
};

use crate::now;

/// The lease holder's columns, in the order [`lease`] reads them.
pub(crate) const HOLDER: &str = "lease_owner, lease_host, lease_pid, strftime('%Y-%m-%dT%H:%M:%fZ', lease_since, 'unixepoch'), \
                      strftime('%Y-%m-%dT%H:%M:%fZ', lease_expires, 'unixepoch'), lease_token, lease_expires";

/// The columns [`summary`] reads, first in a row.
pub(crate) const SUMMARY: &str = "id, flow, state, created_at, updated_at, finished_at, exit_reason, resumes, \
                       lease_owner, lease_host, lease_pid, strftime('%Y-%m-%dT%H:%M:%fZ', lease_since, 'unixepoch'), \
                       strftime('%Y-%m-%dT%H:%M:%fZ', lease_expires, 'unixepoch'), lease_token, lease_expires, idempotency_key, priority";

/// A run's summary columns, [`SUMMARY`], its lease judged by this host's clock now.
pub(crate) fn summary(row: &Row<'_>) -> rusqlite::Result<SummaryColumns> {
    SummaryColumns::read(&Sqlite(row), now())
}

/// The lease columns ([`HOLDER`]'s) starting at `at`; `None` when nobody holds the lease.
pub(crate) fn lease(row: &Row<'_>, at: usize) -> rusqlite::Result<Option<LeaseColumns>> {
    LeaseColumns::read(&Sqlite(row), at)
}

/// Every row of run `id`, if there is such a run, its values longer than `bound` bytes left
/// unread.
pub(crate) fn read_run(
    conn: &Connection,
    id: &str,
    bound: Option<i64>,
) -> rusqlite::Result<Option<RunRows>> {
    let run = conn
        .query_row(
            &format!(
                "SELECT {SUMMARY}, {} FROM runs WHERE id = ?1",
                origin_columns("?2")
            ),
            params![id, bound],
            |row| RunColumns::read(&Sqlite(row), now(), SUMMARY_WIDTH),
        )
        .optional()?;
    let Some(run) = run else { return Ok(None) };
    let transitions = conn
        .prepare_cached(&format!(
            "SELECT {TRANSITION_COLUMNS}
             FROM transitions WHERE run_id = ?1 AND task_idx IS NOT NULL ORDER BY seq"
        ))?
        .query_map([id], |row| TransitionColumns::read(&Sqlite(row)))?
        .collect::<rusqlite::Result<_>>()?;
    let tasks = conn
        .prepare_cached(&format!(
            "SELECT {} FROM tasks WHERE run_id = ?1 ORDER BY idx",
            task_columns("?2")
        ))?
        .query_map(params![id, bound], |row| TaskColumns::read(&Sqlite(row)))?
        .collect::<rusqlite::Result<_>>()?;
    let elements = conn
        .prepare_cached(&format!(
            "SELECT {ELEMENT_COLUMNS} FROM elements WHERE run_id = ?1 ORDER BY idx, element"
        ))?
        .query_map([id], |row| ElementColumns::read(&Sqlite(row)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(RunRows {
        run,
        transitions,
        tasks,
        elements,
    }))
}

/// A fetched row as the shared readers take it: SQLite's integers are 64-bit, converted
/// with an error where a value does not fit.
struct Sqlite<'a, 'r>(&'a Row<'r>);

impl Columns for Sqlite<'_, '_> {
    type Error = rusqlite::Error;

    fn text(&self, at: usize) -> rusqlite::Result<String> {
        self.0.get(at)
    }

    fn maybe_text(&self, at: usize) -> rusqlite::Result<Option<String>> {
        self.0.get(at)
    }

    fn real(&self, at: usize) -> rusqlite::Result<f64> {
        self.0.get(at)
    }

    fn maybe_real(&self, at: usize) -> rusqlite::Result<Option<f64>> {
        self.0.get(at)
    }

    fn index(&self, at: usize) -> rusqlite::Result<usize> {
        Ok(self.0.get::<_, i64>(at)? as usize)
    }

    fn count(&self, at: usize) -> rusqlite::Result<u32> {
        self.0.get(at)
    }

    fn maybe_count(&self, at: usize) -> rusqlite::Result<Option<u32>> {
        self.0.get(at)
    }

    fn pid(&self, at: usize) -> rusqlite::Result<Option<u32>> {
        self.0.get(at)
    }

    fn token(&self, at: usize) -> rusqlite::Result<i64> {
        self.0.get(at)
    }

    fn maybe_bytes(&self, at: usize) -> rusqlite::Result<Option<i64>> {
        self.0.get(at)
    }
}
