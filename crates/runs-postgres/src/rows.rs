//! Fetching rows in PostgreSQL's dialect: the queries for a run's summary, its lease, its
//! tasks and transitions, their rows handed to the shared readers ([`flowhost_runs::row`]),
//! which know which column is where and turn them into records. Separate because this is
//! all of the read side that is PostgreSQL's own: timestamps formatted by `flowhost_ts`,
//! leases judged by the database's clock (`flowhost_now()` read in the same row), and the
//! integer columns' types.

use std::convert::Infallible;

use tokio_postgres::Row;

use flowhost_runs::row::{
    Columns, ELEMENT_COLUMNS, ElementColumns, LeaseColumns, RowError, RunColumns, RunRows,
    SUMMARY_WIDTH, SummaryColumns, TRANSITION_COLUMNS, TaskColumns, TransitionColumns,
    origin_columns, task_columns,
};
use flowhost_runs::{RunDbError, RunRecord, RunSummary};
use tokio_postgres::types::ToSql;

use crate::bridge::Shared;

/// The lease holder's columns, in the order [`lease`] reads them.
pub(crate) const HOLDER: &str = "lease_owner, lease_host, lease_pid, flowhost_ts(lease_since), flowhost_ts(lease_expires), lease_token, lease_expires";
pub(crate) const HOLDER_COLUMNS: usize = 7;

/// The columns [`summary`] reads, first in a row.
pub(crate) const SUMMARY: &str = "id, flow, state, created_at, updated_at, finished_at, exit_reason, resumes, \
     lease_owner, lease_host, lease_pid, flowhost_ts(lease_since), flowhost_ts(lease_expires), lease_token, lease_expires, \
     idempotency_key, priority, flowhost_now()";

/// Where `flowhost_now()` stands in a row of [`SUMMARY`]: right after the summary's columns.
const NOW: usize = SUMMARY_WIDTH;

/// One run's record, its values longer than `bound` bytes left out ([`RunDb::read`]).
///
/// [`RunDb::read`]: flowhost_runs::RunDb::read
pub(crate) async fn read_run(
    s: &Shared,
    id: &str,
    bound: Option<i64>,
) -> Result<Option<RunRecord>, RunDbError> {
    let what = "reading a run";
    let client = s.reader(what).await?;
    // The four reads are prepared once per connection and sent together: one round trip.
    let failed = |e: tokio_postgres::Error| s.error(what, e);
    let sql = [
        format!(
            "SELECT {SUMMARY}, {} FROM runs WHERE id = $1",
            origin_columns("$2::bigint")
        ),
        format!(
            "SELECT {TRANSITION_COLUMNS} FROM transitions
             WHERE run_id = $1 AND task_idx IS NOT NULL ORDER BY seq"
        ),
        format!(
            "SELECT {} FROM tasks WHERE run_id = $1 ORDER BY idx",
            task_columns("$2::bigint")
        ),
        format!("SELECT {ELEMENT_COLUMNS} FROM elements WHERE run_id = $1 ORDER BY idx, element"),
    ];
    let (run, transitions, tasks, elements) = tokio::try_join!(
        client.prepare_cached(&sql[0]),
        client.prepare_cached(&sql[1]),
        client.prepare_cached(&sql[2]),
        client.prepare_cached(&sql[3]),
    )
    .map_err(failed)?;
    let (by_run, by_task): ([&(dyn ToSql + Sync); 2], [&(dyn ToSql + Sync); 1]) =
        ([&id, &bound], [&id]);
    let (run, transitions, tasks, elements) = tokio::try_join!(
        client.query(&run, &by_run),
        client.query(&transitions, &by_task),
        client.query(&tasks, &by_run),
        client.query(&elements, &by_task),
    )
    .map_err(failed)?;
    let Some(row) = run.first() else {
        return Ok(None);
    };
    let Ok(run) = RunColumns::read(&Pg(row), row.get(NOW), NOW + 1);
    let transitions = transitions
        .iter()
        .map(|row| {
            let Ok(transition) = TransitionColumns::read(&Pg(row));
            transition
        })
        .collect();
    let tasks = tasks
        .iter()
        .map(|row| {
            let Ok(task) = TaskColumns::read(&Pg(row));
            task
        })
        .collect();
    let elements = elements
        .iter()
        .map(|row| {
            let Ok(element) = ElementColumns::read(&Pg(row));
            element
        })
        .collect();
    RunRows {
        run,
        transitions,
        tasks,
        elements,
    }
    .record()
    .map(Some)
    .map_err(|e| s.error(what, e))
}

/// A run's summary, from [`SUMMARY`]'s columns, its lease judged by the database's clock.
pub(crate) fn summary(row: &Row) -> Result<RunSummary, RowError> {
    let Ok(columns) = SummaryColumns::read(&Pg(row), row.get(NOW));
    columns.summary()
}

/// The lease columns ([`HOLDER`]'s) starting at `at`; `None` when nobody holds the lease.
pub(crate) fn lease(row: &Row, at: usize) -> Option<LeaseColumns> {
    let Ok(lease) = LeaseColumns::read(&Pg(row), at);
    lease
}

/// A fetched row as the shared readers take it, in the schema's column types: counts are
/// `integer` (a negative one, which no flowhost writes, reads as 0), the pid `bigint`. A
/// value of another type is a bug of this crate's queries, so it panics as
/// [`Row::get`] does rather than being an error.
struct Pg<'a>(&'a Row);

impl Columns for Pg<'_> {
    type Error = Infallible;

    fn text(&self, at: usize) -> Result<String, Infallible> {
        Ok(self.0.get(at))
    }

    fn maybe_text(&self, at: usize) -> Result<Option<String>, Infallible> {
        Ok(self.0.get(at))
    }

    fn real(&self, at: usize) -> Result<f64, Infallible> {
        Ok(self.0.get(at))
    }

    fn maybe_real(&self, at: usize) -> Result<Option<f64>, Infallible> {
        Ok(self.0.get(at))
    }

    fn maybe_bytes(&self, at: usize) -> Result<Option<i64>, Infallible> {
        Ok(self.0.get(at))
    }

    fn index(&self, at: usize) -> Result<usize, Infallible> {
        Ok(self.0.get::<_, i32>(at) as usize)
    }

    fn count(&self, at: usize) -> Result<u32, Infallible> {
        Ok(self.0.get::<_, i32>(at).max(0) as u32)
    }

    fn maybe_count(&self, at: usize) -> Result<Option<u32>, Infallible> {
        Ok(self.0.get::<_, Option<i32>>(at).map(|n| n.max(0) as u32))
    }

    fn pid(&self, at: usize) -> Result<Option<u32>, Infallible> {
        Ok(self.0.get::<_, Option<i64>>(at).map(|pid| pid as u32))
    }

    fn token(&self, at: usize) -> Result<i64, Infallible> {
        Ok(self.0.get(at))
    }
}
