//! Journal writes, and group commit: the transitions of every run in the process that are
//! waiting to be recorded share one SQLite transaction.
//!
//! A commit in WAL mode costs the same whether it holds one transition or a hundred: the
//! file lock, the frame write, the lock release. So a run that must record a transition
//! queues it and then waits for the connection; whoever gets the connection first commits
//! everything queued so far, each run's writes in a savepoint of their own behind their own
//! lease check, and hands every waiter its result. Nobody returns before the commit that holds
//! its writes, so the durability promise is unchanged; at one run at a time nothing changes,
//! at sixty-four runs one commit serves many of them. The JSON is prepared by each run on
//! its own thread ([`Write::of`]); the connection only executes statements.

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, TransactionBehavior, params};

use crate::{SqliteRunDb, fence, ts};
use flowhost_runs::Lease;
use flowhost_runs::row::Write;

/// Executes `write`'s statements in `tx`.
pub(super) fn apply(write: &Write, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
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
        } => {
            tx.prepare_cached(&format!(
                "UPDATE runs SET state = ?2, updated_at = {t},
                       finished_at = CASE WHEN ?4 THEN {t} ELSE finished_at END,
                       final_store = COALESCE(?5, final_store),
                       exit_reason = CASE WHEN ?6 IS NULL THEN exit_reason
                                          WHEN exit_reason IS NULL OR ?2 = 'SUCCESS' THEN ?6
                                          ELSE ?6 || ': ' || exit_reason END
                     WHERE id = ?1",
                t = ts(3)
            ))?
            .execute(params![run_id, to, at, ended, final_store, reason])?;
            tx.prepare_cached(&format!(
                "INSERT INTO transitions (run_id, from_state, to_state, at, duration_ms)
                     VALUES (?1, ?2, ?3, {t}, ?5)",
                t = ts(4)
            ))?
            .execute(params![run_id, from, to, at, elapsed_ms])?;
        }
        Write::Task {
            run_id,
            index,
            task,
            from,
            to,
            at,
            duration_ms,
            args,
            outcome,
            result,
            revert_result,
            error,
            revert_error,
            run_ms,
            revert_ms,
            reason,
            attempt,
            carried,
            retry_at,
            backoff_ms,
            iterations,
            element,
        } => {
            // One element's call of a map's task: the element's row, not the task's.
            if let Some(element) = element {
                tx.prepare_cached(
                    "INSERT INTO elements (run_id, idx, element, state, args, outcome, result, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (run_id, idx, element) DO UPDATE SET state = excluded.state,
                       args = COALESCE(excluded.args, args), outcome = COALESCE(excluded.outcome, outcome),
                       result = COALESCE(excluded.result, result),
                       error = CASE WHEN excluded.state = 'RUNNING' THEN NULL ELSE COALESCE(excluded.error, error) END",
                )?
                .execute(params![run_id, index, element, to, args, outcome, result, carried])?;
            }
            // A new attempt starts clean: the error and due time of the one before belong
            // to the history, not to the task's standing.
            if element.is_none() {
                tx.prepare_cached(
                    "UPDATE tasks SET state = ?3,
                       args = COALESCE(?4, args), outcome = COALESCE(?5, outcome),
                       result = COALESCE(?6, result),
                       error = CASE WHEN ?3 IN ('RUNNING', 'PENDING') THEN NULL ELSE COALESCE(?7, error) END,
                       revert_error = COALESCE(?8, revert_error),
                       duration_ms = COALESCE(?9, duration_ms),
                       revert_duration_ms = COALESCE(?10, revert_duration_ms),
                       executions = executions + (?3 = 'RUNNING'),
                       reverts = reverts + (?3 = 'REVERTING'),
                       attempt = ?11,
                       retry_at = CASE WHEN ?3 IN ('RUNNING', 'PENDING', 'SUCCESS', 'FAILURE') THEN NULL ELSE COALESCE(?12, retry_at) END,
                       iterations = COALESCE(?13, iterations),
                       revert_result = COALESCE(?14, revert_result)
                     WHERE run_id = ?1 AND idx = ?2",
                )?
                .execute(params![
                    run_id,
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
                    revert_result
                ])?;
            }
            if let Some(reason) = reason {
                tx.prepare_cached(&format!(
                        "UPDATE runs SET updated_at = {t},
                           exit_reason = CASE WHEN exit_reason IS NULL THEN ?3 ELSE exit_reason || '; ' || ?3 END
                         WHERE id = ?1",
                        t = ts(2)
                    ))?
                    .execute(params![run_id, at, reason])?;
            }
            tx.prepare_cached(&format!(
                    "INSERT INTO transitions (run_id, task_idx, task, from_state, to_state, at, duration_ms, attempt, error, retry_at, backoff_ms, iterations, element)
                     VALUES (?1, ?2, ?3, ?4, ?5, {t}, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    t = ts(6)
                ))?
                .execute(params![run_id, index, task, from, to, at, duration_ms, attempt, carried, retry_at, backoff_ms, iterations, element])?;
        }
        Write::Progress {
            run_id,
            index,
            progress,
        } => {
            tx.prepare_cached("UPDATE tasks SET progress = ?3 WHERE run_id = ?1 AND idx = ?2")?
                .execute(params![run_id, index, progress])?;
        }
    }
    Ok(())
}

/// One run's transitions to record together, under its lease.
pub(super) struct Batch {
    pub(super) lease: Lease,
    pub(super) writes: Vec<Write>,
}

/// What became of a batch: recorded (true), fenced (false), or the database failed.
type Outcome = rusqlite::Result<bool>;

/// A batch waiting for a commit, and the slot its result is left in.
struct Waiting {
    batch: Batch,
    result: Arc<Mutex<Option<Outcome>>>,
}

/// The queue of batches waiting for the next commit.
#[derive(Default)]
pub(super) struct GroupCommit {
    queue: Mutex<Vec<Waiting>>,
}

impl GroupCommit {
    /// Queues `batch` and returns once a commit holding it has ended.
    pub(super) fn commit(&self, db: &SqliteRunDb, batch: Batch) -> Outcome {
        let result = Arc::new(Mutex::new(None));
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Waiting {
                batch,
                result: result.clone(),
            });
        let mut conn = db.conn.lock().unwrap_or_else(|p| p.into_inner());
        // Whoever held the connection before may have committed this batch already: its
        // result is then waiting. A leader fills every result before it lets go of the
        // connection, so a batch is either done or still queued here.
        if let Some(done) = result.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return done;
        }
        let waiting = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        let outcomes = commit_all(&mut conn, &waiting);
        for (waiter, outcome) in waiting.iter().zip(outcomes) {
            *waiter.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        }
        drop(conn);
        let done = result.lock().unwrap_or_else(|p| p.into_inner()).take();
        done.expect("a batch is committed by the leader that took it from the queue")
    }
}

/// Writes every batch in one transaction, each in a savepoint behind its lease check; one
/// batch failing or fenced is rolled back alone. A failed commit fails them all.
fn commit_all(conn: &mut Connection, waiting: &[Waiting]) -> Vec<Outcome> {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => return waiting.iter().map(|_| Err(copy(&error))).collect(),
    };
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(waiting.len());
    for Waiting { batch, .. } in waiting {
        let written = (|| {
            tx.prepare_cached("SAVEPOINT batch")?.execute([])?;
            let held = fence(&tx, &batch.lease)?;
            if held {
                batch
                    .writes
                    .iter()
                    .try_for_each(|write| apply(write, &tx))?;
            }
            Ok(held)
        })();
        match written {
            Ok(true) => {
                outcomes.push(
                    tx.prepare_cached("RELEASE batch")
                        .and_then(|mut release| release.execute([]))
                        .map(|_| true),
                );
            }
            other => {
                let _ = ["ROLLBACK TO batch", "RELEASE batch"]
                    .into_iter()
                    .try_for_each(|sql| tx.prepare_cached(sql)?.execute([]).map(drop));
                outcomes.push(other);
            }
        }
    }
    match tx.commit() {
        Ok(()) => outcomes,
        Err(error) => waiting.iter().map(|_| Err(copy(&error))).collect(),
    }
}

/// The same error for every waiter of a failed commit.
fn copy(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use flowhost_core::events::{Event, FlowState, Transition};
    use flowhost_core::store::Store;
    use flowhost_runs::{NewRun, Origin, Owner, RunDb};

    fn running(run: &str) -> Write {
        Write::of(&Event {
            run_id: run.into(),
            flow: "f".into(),
            at: SystemTime::now(),
            transition: Transition::Flow {
                from: FlowState::Pending,
                to: FlowState::Running,
                elapsed: Duration::ZERO,
                store: None,
            },
        })
    }

    #[test]
    fn a_fenced_batch_in_a_shared_commit_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteRunDb::open(&dir.path().join("runs.db"), true, crate::Durability::Normal)
            .unwrap();
        let origin = Origin {
            flow_path: None,
            flow_hash: None,
            plugins: Vec::new(),
        };
        let new = |id: &str| NewRun {
            id: id.into(),
            flow: "f".into(),
            origin: origin.clone(),
            initial_store: Store::new(),
            tasks: vec![],
            key: None,
            priority: 0,
        };
        let ttl = Duration::from_secs(30);
        let kept = db
            .create(&new("kept"), &Owner::this_process(), ttl)
            .unwrap();
        let stale = db
            .create(&new("stale"), &Owner::this_process(), ttl)
            .unwrap();
        db.release(&stale).unwrap();
        let waiting = vec![
            Waiting {
                batch: Batch {
                    lease: kept,
                    writes: vec![running("kept")],
                },
                result: Arc::default(),
            },
            Waiting {
                batch: Batch {
                    lease: stale,
                    writes: vec![running("stale")],
                },
                result: Arc::default(),
            },
        ];
        let outcomes = commit_all(&mut db.conn.lock().unwrap(), &waiting);
        assert_eq!(
            outcomes
                .iter()
                .map(|o| *o.as_ref().unwrap())
                .collect::<Vec<_>>(),
            [true, false]
        );
        assert_eq!(
            db.get("kept").unwrap().unwrap().summary.state,
            FlowState::Running
        );
        assert_eq!(
            db.get("stale").unwrap().unwrap().summary.state,
            FlowState::Pending,
            "the fenced batch wrote nothing"
        );
    }
}
