//! Journal writes: the transitions of one `record` call committed in one transaction behind
//! the lease check, their statements prepared once per connection and sent pipelined, so a
//! write costs the same round trips however many transitions it holds. Separate because it
//! is the hot path of every run and the only code that turns a [`Write`] into SQL.

use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use flowhost_runs::row::Write;
use flowhost_runs::{Lease, RunDbError};

use crate::bridge::Shared;
use crate::storage::FENCE;

/// The statements a journal write uses, prepared once per connection.
struct Journaling {
    fence: Statement,
    flow: Statement,
    flow_transition: Statement,
    task: Statement,
    task_reason: Statement,
    task_transition: Statement,
    element: Statement,
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
                       retry_at = CASE WHEN $3 IN ('RUNNING', 'PENDING', 'SUCCESS', 'FAILURE') THEN NULL ELSE COALESCE($12, retry_at) END,
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
            element: tx
                .prepare_cached(
                    "INSERT INTO elements (run_id, idx, element, state, args, outcome, result, error)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (run_id, idx, element) DO UPDATE SET state = excluded.state,
                       args = COALESCE(excluded.args, elements.args),
                       outcome = COALESCE(excluded.outcome, elements.outcome),
                       result = COALESCE(excluded.result, elements.result),
                       error = CASE WHEN excluded.state = 'RUNNING' THEN NULL
                                    ELSE COALESCE(excluded.error, elements.error) END",
                )
                .await?,
            progress: tx
                .prepare_cached("UPDATE tasks SET progress = $3 WHERE run_id = $1 AND idx = $2")
                .await?,
            task_transition: tx
                .prepare_cached(
                    "INSERT INTO transitions (run_id, task_idx, task, from_state, to_state, at, duration_ms,
                       attempt, error, retry_at, backoff_ms, iterations, element)
                     VALUES ($1, $2, $3, $4, $5, flowhost_ts($6), $7, $8, $9, $10, $11, $12, $13)",
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
                element,
                ..
            } => {
                // One element's call of a map's task writes the element's row, not the task's.
                let row = match element {
                    Some(_) => (
                        &self.element,
                        vec![
                            run_id as &(dyn ToSql + Sync),
                            index,
                            element,
                            to,
                            args,
                            outcome,
                            result,
                            carried,
                        ],
                    ),
                    None => (
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
                    ),
                };
                let mut calls = vec![row];
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
                        element,
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
pub(crate) async fn journal(
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
