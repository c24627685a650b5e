//! Reading rows into records: a run's summary and lease holder, its full record with every
//! task and transition, the JSON and state columns parsed. Separate because it is the read
//! side that `list`, `get`, `prune`, the lease checks and the fence all share.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_postgres::Row;

use flowhost_runs::holder_may_be_alive;
use flowhost_runs::row::{bounded, unbounded};
use flowhost_runs::{
    LeaseHolder, Origin, RunDbError, RunRecord, RunSummary, StateChange, TaskRecord,
};

use crate::bridge::Shared;

/// One run's record, its values longer than `bound` bytes left out ([`RunDb::read`]).
///
/// [`RunDb::read`]: flowhost_runs::RunDb::read
pub(crate) async fn read_run(
    s: &Shared,
    id: &str,
    bound: Option<i64>,
) -> Result<Option<RunRecord>, RunDbError> {
    let what = "reading a run";
    let err = |e: &dyn std::fmt::Display| s.error(what, e);
    let mut omitted = Vec::new();
    let client = s.reader(what).await?;
    let Some(row) = client
        .query_opt(
            &format!(
                "SELECT {SUMMARY}, flow_path, flow_hash, plugins, {}, {} FROM runs WHERE id = $1",
                bounded("initial_store", "$2::bigint"),
                bounded("final_store", "$2::bigint"),
            ),
            &[&id, &bound],
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
    let initial = unbounded(
        row.get(at + 3),
        row.get(at + 4),
        || "initial_store".into(),
        &mut omitted,
    );
    let initial_store = parse(initial).map_err(|e| err(&e))?.unwrap_or_default();
    let last = unbounded(
        row.get(at + 5),
        row.get(at + 6),
        || "final_store".into(),
        &mut omitted,
    );
    let final_store = parse(last).map_err(|e| err(&e))?;
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
            &format!(
                "SELECT idx, name, state, error, revert_error, duration_ms,
                        revert_duration_ms, executions, reverts, attempt, retry_at, iterations,
                        {}, {}, {}, {}, {}
                 FROM tasks WHERE run_id = $1 ORDER BY idx",
                bounded("args", "$2::bigint"),
                bounded("outcome", "$2::bigint"),
                bounded("result", "$2::bigint"),
                bounded("revert_result", "$2::bigint"),
                bounded("progress", "$2::bigint"),
            ),
            &[&id, &bound],
        )
        .await
        .map_err(|e| err(&e))?
        .iter()
        .map(|row| {
            let index = row.get::<_, i32>(0) as usize;
            let mut value = |at: usize, name: &str| {
                unbounded(
                    row.get(at),
                    row.get(at + 1),
                    || format!("tasks[{index}].{name}"),
                    &mut omitted,
                )
            };
            let args = value(12, "args");
            let outcome = value(14, "outcome");
            let result = value(16, "result");
            let revert_result = value(18, "revert_result");
            let progress = value(20, "progress");
            Ok(TaskRecord {
                index,
                name: row.get(1),
                state: state(row.get(2))?,
                args,
                outcome: parse(outcome)?,
                result: parse(result)?,
                error: parse(row.get(3))?,
                revert_error: parse(row.get(4))?,
                duration_ms: row.get(5),
                revert_duration_ms: row.get(6),
                executions: row.get::<_, i32>(7).max(0) as u32,
                reverts: row.get::<_, i32>(8).max(0) as u32,
                attempt: row.get::<_, i32>(9).max(0) as u32,
                retry_at: row.get(10),
                iterations: parse(row.get(11))?.unwrap_or_default(),
                revert_result: parse(revert_result)?,
                progress: parse(progress)?,
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
        omitted,
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
pub(crate) const HOLDER: &str = "lease_owner, lease_host, lease_pid, flowhost_ts(lease_since), flowhost_ts(lease_expires), lease_token, lease_expires";
pub(crate) const HOLDER_COLUMNS: usize = 7;

/// The columns [`summary`] reads, first in a row.
pub(crate) const SUMMARY: &str = "id, flow, state, created_at, updated_at, finished_at, exit_reason, resumes, \
     lease_owner, lease_host, lease_pid, flowhost_ts(lease_since), flowhost_ts(lease_expires), lease_token, lease_expires, \
     flowhost_now()";
pub(crate) const SUMMARY_COLUMNS: usize = 16;

pub(crate) fn summary(row: &Row) -> Result<RunSummary, String> {
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
pub(crate) fn holder(row: &Row, at: usize) -> Option<(LeaseHolder, f64)> {
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
