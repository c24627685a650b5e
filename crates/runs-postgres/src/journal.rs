//! Journal writes, grouped: every write a run makes under its lease (its transitions, its
//! creation, its lease's release) goes to a channel; a few committer tasks each take every
//! write pending, commit them together in one transaction, and answer each caller on its
//! own. A group is one round trip: BEGIN, the statements and COMMIT are sent pipelined,
//! without waiting between them, and the statements cover the whole group (one lease check
//! for every run of it, one update of its tasks' rows, one upsert of its map elements' rows,
//! one insert of every transition), so concurrent runs share a commit and its statements
//! instead of queueing for connections.
//!
//! **Fencing per run, in the same round trip.** The lease check renews every lease of the
//! group at once and returns the leases it found current; every write of the group carries
//! its lease and applies only where that lease is still the run's (checked again in the
//! write itself, in the same transaction). A stale executor's write is thus dropped — and its
//! caller told it was fenced — while the rest of the group commits. The check cannot change
//! its answer between statements: a matching lease's row is locked by the renewal until the
//! commit, and a token that no longer matches never matches again (tokens only grow).
//!
//! Separate because it is the hot path of every run and the only code that turns a [`Write`]
//! into SQL.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::try_join_all;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use flowhost_runs::row::{Write, json};
use flowhost_runs::{Lease, NewRun, RunDbError};

use crate::QUERY_DEADLINE;
use crate::bridge::Shared;

/// Committer tasks: groups in flight at once, each on a pooled connection.
const COMMITTERS: usize = 4;

/// The most writes one group takes: bounds a transaction's size and its statements'
/// parameters.
const MAX_GROUP: usize = 256;

/// What a caller asks to be committed under its lease.
pub(crate) enum Work {
    /// Transitions, after creating the run (with its first lease) when it is new.
    Record {
        create: Option<Box<NewRun>>,
        writes: Vec<Write>,
    },
    /// Giving the lease up.
    Release,
}

/// How a caller's work went.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// Committed.
    Done,
    /// Nothing written: the lease is no longer the run's.
    Fenced,
    /// Nothing written: another run of the flow, this one, holds the new run's idempotency
    /// key.
    Exists(String),
}

struct Job {
    lease: Lease,
    work: Work,
    done: oneshot::Sender<Result<Outcome, RunDbError>>,
}

/// The entry of grouped writes: hands work to the committer tasks.
#[derive(Clone)]
pub(crate) struct Committer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts the committer tasks on the current runtime.
    pub(crate) fn start(s: &Shared) -> Self {
        let (jobs, pending) = mpsc::unbounded_channel();
        let pending = Arc::new(Mutex::new(pending));
        for _ in 0..COMMITTERS {
            tokio::spawn(commit_loop(s.clone(), pending.clone()));
        }
        Self { jobs }
    }

    /// Commits `work` under `lease` with whatever else is pending, and answers when the
    /// group's transaction committed (or failed).
    pub(crate) async fn commit(
        &self,
        s: &Shared,
        what: &str,
        lease: Lease,
        work: Work,
    ) -> Result<Outcome, RunDbError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job { lease, work, done })
            .map_err(|_| s.error(what, "the database runtime stopped"))?;
        answer
            .await
            .unwrap_or_else(|_| Err(s.error(what, "the database runtime stopped")))
    }
}

/// Takes every pending job (up to [`MAX_GROUP`]) and commits them as one group, until the
/// channel closes. Committers share the channel: while one group is in flight, the next
/// committer gathers the writes that arrived meanwhile.
async fn commit_loop(s: Shared, pending: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    loop {
        let jobs = {
            let mut pending = pending.lock().await;
            let Some(first) = pending.recv().await else {
                return;
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match pending.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            jobs
        };
        let what = match jobs.len() {
            1 => "recording a run's transitions".to_owned(),
            n => format!("recording the transitions of {n} runs"),
        };
        // A group that hangs (a lock held elsewhere, a server gone quiet) fails its callers
        // and frees its committer, as any query does after [`QUERY_DEADLINE`].
        let committed = tokio::time::timeout(QUERY_DEADLINE, commit(&s, &what, &jobs))
            .await
            .unwrap_or_else(|_| {
                Err(s.error(
                    &what,
                    format!("no answer within {} s", QUERY_DEADLINE.as_secs()),
                ))
            });
        match committed {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.done.send(Ok(outcome));
                }
            }
            Err(error) => {
                // Every caller of the group gets the group's error.
                let reason = match &error {
                    RunDbError::Query { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                for job in jobs {
                    let _ = job.done.send(Err(s.error(&what, &reason)));
                }
            }
        }
    }
}

/// How a group's transaction starts: with the planner told to plan each statement once per
/// connection, as index lookups.
///
/// The group statements take their rows as arrays (`unnest`), whose length a generic plan
/// cannot know, so PostgreSQL's default planned them again at every execution (custom plans:
/// binding one took 0.08–0.22 ms against 0.02 ms with a cached plan), or, once the tables'
/// small size made it look cheap, switched after five executions to a generic plan that
/// scans and hashes the whole `tasks` table, kept until the tables' statistics change. Every
/// statement of a group reaches its rows by key, so the one plan wanted at any size is a
/// nested loop of index lookups: for the group's transaction only, plans are generic (made
/// once per connection) and sequential scans, hash and merge joins are priced out (not
/// forbidden).
const BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; \
                     SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
                     SET LOCAL enable_mergejoin = off";

/// The statements a group uses, prepared once per connection.
struct Statements {
    insert_run: Statement,
    insert_tasks: Statement,
    holder_of_key: Statement,
    fence: Statement,
    flow: Statement,
    reason: Statement,
    progress: Statement,
    tasks: Statement,
    elements: Statement,
    transitions: Statement,
    release: Statement,
}

/// Whether the lease `$token`, `$owner` is still run `$id`'s: appended to each write.
/// Owners are compared with `IS NOT DISTINCT FROM` (the same for the owners written, never
/// NULL) so that the planner looks runs up by id: matched on `lease_owner` it walks the
/// owner's index, where every run an executor ever held stays until vacuumed.
macro_rules! leased {
    ($id:literal, $token:literal, $owner:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM runs l WHERE l.id = ",
            $id,
            " AND l.lease_token = ",
            $token,
            " AND l.lease_owner IS NOT DISTINCT FROM ",
            $owner,
            ")"
        )
    };
}

impl Statements {
    async fn prepare(client: &deadpool_postgres::Object) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            insert_run: client
                .prepare_cached(
                    "INSERT INTO runs (id, flow, flow_path, flow_hash, plugins, initial_store, state, created_at, updated_at,
                                       queued, lease_token, lease_owner, lease_host, lease_pid, lease_since, lease_expires,
                                       idempotency_key, priority)
                     VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', flowhost_ts(flowhost_now()), flowhost_ts(flowhost_now()),
                             false, $7, $8, $9, $10, flowhost_now(), flowhost_now() + $11::float8, $12, $13)
                     ON CONFLICT (flow, idempotency_key) DO NOTHING",
                )
                .await?,
            // Nothing when the run was not inserted (its key is another run's).
            insert_tasks: client
                .prepare_cached(concat!(
                    "INSERT INTO tasks (run_id, idx, name, state)
                     SELECT $1, (n - 1)::integer, name, 'PENDING' FROM unnest($2::text[]) WITH ORDINALITY AS t(name, n)
                      WHERE ",
                    leased!("$1", "$3", "$4")
                ))
                .await?,
            // A statement of its own sees the other run's committed row (read committed).
            holder_of_key: client
                .prepare_cached("SELECT id FROM runs WHERE flow = $1 AND idempotency_key = $2")
                .await?,
            fence: client
                .prepare_cached(
                    "UPDATE runs r SET lease_expires = flowhost_now() + w.ttl
                       FROM unnest($1::text[], $2::bigint[], $3::text[], $4::float8[]) AS w(id, token, owner, ttl)
                      WHERE r.id = w.id AND r.lease_token = w.token AND r.lease_owner IS NOT DISTINCT FROM w.owner
                     RETURNING r.id, r.lease_token",
                )
                .await?,
            flow: client
                .prepare_cached(
                    "UPDATE runs SET state = $2, updated_at = $3,
                       finished_at = CASE WHEN $4 THEN $3 ELSE finished_at END,
                       final_store = COALESCE($5, final_store),
                       exit_reason = CASE WHEN $6::text IS NULL THEN exit_reason
                                          WHEN exit_reason IS NULL OR $2 = 'SUCCESS' THEN $6
                                          ELSE $6 || ': ' || exit_reason END
                     WHERE id = $1 AND lease_token = $7 AND lease_owner = $8",
                )
                .await?,
            reason: client
                .prepare_cached(
                    "UPDATE runs SET updated_at = $2,
                       exit_reason = CASE WHEN exit_reason IS NULL THEN $3 ELSE exit_reason || '; ' || $3 END
                     WHERE id = $1 AND lease_token = $4 AND lease_owner = $5",
                )
                .await?,
            progress: client
                .prepare_cached(concat!(
                    "UPDATE tasks SET progress = $3 WHERE run_id = $1 AND idx = $2 AND ",
                    leased!("$1", "$4", "$5")
                ))
                .await?,
            tasks: client
                .prepare_cached(concat!(
                    "UPDATE tasks t SET state = w.state,
                       args = COALESCE(w.args, t.args), outcome = COALESCE(w.outcome, t.outcome),
                       result = COALESCE(w.result, t.result),
                       error = CASE WHEN w.state IN ('RUNNING', 'PENDING') THEN NULL ELSE COALESCE(w.error, t.error) END,
                       revert_error = COALESCE(w.revert_error, t.revert_error),
                       duration_ms = COALESCE(w.run_ms, t.duration_ms),
                       revert_duration_ms = COALESCE(w.revert_ms, t.revert_duration_ms),
                       executions = t.executions + CASE WHEN w.state = 'RUNNING' THEN 1 ELSE 0 END,
                       reverts = t.reverts + CASE WHEN w.state = 'REVERTING' THEN 1 ELSE 0 END,
                       attempt = w.attempt,
                       retry_at = CASE WHEN w.state IN ('RUNNING', 'PENDING', 'SUCCESS', 'FAILURE') THEN NULL ELSE COALESCE(w.retry_at, t.retry_at) END,
                       iterations = COALESCE(w.iterations, t.iterations),
                       revert_result = COALESCE(w.revert_result, t.revert_result)
                     FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                 $8::text[], $9::float8[], $10::float8[], $11::integer[], $12::float8[], $13::text[],
                                 $14::text[], $15::bigint[], $16::text[])
                       AS w(run_id, idx, state, args, outcome, result, error, revert_error, run_ms, revert_ms, attempt,
                            retry_at, iterations, revert_result, token, owner)
                     WHERE t.run_id = w.run_id AND t.idx = w.idx AND ",
                    leased!("w.run_id", "w.token", "w.owner")
                ))
                .await?,
            // One element's call of a map's task writes the element's row, not the task's.
            elements: client
                .prepare_cached(concat!(
                    "INSERT INTO elements (run_id, idx, element, state, args, outcome, result, error)
                     SELECT w.run_id, w.idx, w.element, w.state, w.args, w.outcome, w.result, w.error
                       FROM unnest($1::text[], $2::integer[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                                   $7::text[], $8::text[], $9::bigint[], $10::text[])
                            AS w(run_id, idx, element, state, args, outcome, result, error, token, owner)
                      WHERE ",
                    leased!("w.run_id", "w.token", "w.owner"),
                    " ON CONFLICT (run_id, idx, element) DO UPDATE SET state = excluded.state,
                       args = COALESCE(excluded.args, elements.args),
                       outcome = COALESCE(excluded.outcome, elements.outcome),
                       result = COALESCE(excluded.result, elements.result),
                       error = CASE WHEN excluded.state = 'RUNNING' THEN NULL
                                    ELSE COALESCE(excluded.error, elements.error) END"
                ))
                .await?,
            transitions: client
                .prepare_cached(concat!(
                    "INSERT INTO transitions (run_id, task_idx, task, from_state, to_state, at, duration_ms,
                       attempt, error, retry_at, backoff_ms, iterations, element)
                     SELECT w.run_id, w.task_idx, w.task, w.from_state, w.to_state, w.at, w.duration_ms,
                            w.attempt, w.error, w.retry_at, w.backoff_ms, w.iterations, w.element
                       FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::text[],
                                   $7::float8[], $8::integer[], $9::text[], $10::float8[], $11::float8[], $12::text[],
                                   $13::bigint[], $14::bigint[], $15::text[])
                            WITH ORDINALITY AS w(run_id, task_idx, task, from_state, to_state, at, duration_ms,
                                                 attempt, error, retry_at, backoff_ms, iterations, element, token,
                                                 owner, n)
                      WHERE ",
                    leased!("w.run_id", "w.token", "w.owner"),
                    " ORDER BY w.n"
                ))
                .await?,
            release: client
                .prepare_cached(
                    "UPDATE runs r SET lease_owner = NULL, lease_host = NULL, lease_pid = NULL, lease_since = NULL,
                       lease_expires = NULL
                       FROM unnest($1::text[], $2::bigint[], $3::text[]) AS w(id, token, owner)
                      WHERE r.id = w.id AND r.lease_token = w.token AND r.lease_owner IS NOT DISTINCT FROM w.owner",
                )
                .await?,
        })
    }
}

/// One round of the group's writes of task and element rows: the first write of each task
/// (or element) in the group, then, in the next round, the second, and so on.
#[derive(Default)]
struct Round<'a> {
    tasks: TaskRows<'a>,
    elements: ElementRows<'a>,
}

/// The rows of the group's one update of task rows (or of one of them, when a task has
/// several writes in the group: each update sets a task once).
#[derive(Default)]
struct TaskRows<'a> {
    run_id: Vec<&'a str>,
    idx: Vec<i32>,
    state: Vec<&'a str>,
    args: Vec<Option<&'a str>>,
    outcome: Vec<Option<&'a str>>,
    result: Vec<Option<&'a str>>,
    error: Vec<Option<&'a str>>,
    revert_error: Vec<Option<&'a str>>,
    run_ms: Vec<Option<f64>>,
    revert_ms: Vec<Option<f64>>,
    attempt: Vec<i32>,
    retry_at: Vec<Option<f64>>,
    iterations: Vec<Option<&'a str>>,
    revert_result: Vec<Option<&'a str>>,
    token: Vec<i64>,
    owner: Vec<&'a str>,
}

/// The rows of the group's one insert of transitions, in order.
#[derive(Default)]
struct TransitionRows<'a> {
    run_id: Vec<&'a str>,
    task_idx: Vec<Option<i32>>,
    task: Vec<Option<&'a str>>,
    from: Vec<&'a str>,
    to: Vec<&'a str>,
    at: Vec<String>,
    duration_ms: Vec<f64>,
    attempt: Vec<Option<i32>>,
    error: Vec<Option<&'a str>>,
    retry_at: Vec<Option<f64>>,
    backoff_ms: Vec<Option<f64>>,
    iterations: Vec<Option<&'a str>>,
    element: Vec<Option<i64>>,
    token: Vec<i64>,
    owner: Vec<&'a str>,
}

/// The rows of the group's one upsert of map elements' rows (or of one of them, when an
/// element has several writes in the group: an upsert may set a row only once).
#[derive(Default)]
struct ElementRows<'a> {
    run_id: Vec<&'a str>,
    idx: Vec<i32>,
    element: Vec<i64>,
    state: Vec<&'a str>,
    args: Vec<Option<&'a str>>,
    outcome: Vec<Option<&'a str>>,
    result: Vec<Option<&'a str>>,
    error: Vec<Option<&'a str>>,
    token: Vec<i64>,
    owner: Vec<&'a str>,
}

/// A statement of the group with its parameters, and what to keep of its answer.
struct Call<'a> {
    statement: &'a Statement,
    params: Vec<&'a (dyn ToSql + Sync)>,
    rows: bool,
}

/// The answer of one call.
enum Answer {
    Count,
    Rows(Vec<Row>),
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<Answer, tokio_postgres::Error>> + Send + 'a>>;

/// The leases of the `jobs` whose work `is`, in run order: groups write leases sorted, so
/// that two groups committing at once take their rows' locks in the same order.
fn leases(jobs: &[Job], is: impl Fn(&Work) -> bool) -> Vec<&Lease> {
    let mut leases: Vec<&Lease> = jobs
        .iter()
        .filter(|j| is(&j.work))
        .map(|j| &j.lease)
        .collect();
    leases.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    leases
}

/// Leases as statement parameters: one array per column, in the leases' order.
struct LeaseParams<'l> {
    runs: Vec<&'l str>,
    tokens: Vec<i64>,
    owners: Vec<&'l str>,
}

impl<'l> LeaseParams<'l> {
    fn of(leases: &[&'l Lease]) -> Self {
        Self {
            runs: leases.iter().map(|l| l.run_id.as_str()).collect(),
            tokens: leases.iter().map(|l| l.token).collect(),
            owners: leases.iter().map(|l| l.owner.id.as_str()).collect(),
        }
    }
}

/// Commits `jobs` in one transaction sent in one round trip; each job's outcome, in order.
async fn commit(s: &Shared, what: &str, jobs: &[Job]) -> Result<Vec<Outcome>, RunDbError> {
    let failed = |e: tokio_postgres::Error| s.error(what, e);
    let client = s.client(what).await?;
    let st = Statements::prepare(&client).await.map_err(failed)?;

    // Every value the statements bind, owned here so that the calls can borrow them.
    // New runs are inserted in the order of their flow and idempotency key, and leases are
    // renewed and released in the order of their run ids, so that two groups take the locks
    // of the rows they share (a key's unique index entry, a run's row) in the same order and
    // cannot deadlock: inserting keys `a, b` against `b, a` would each wait for the other's.
    let mut new_runs: Vec<NewRunValues> = jobs
        .iter()
        .filter_map(|j| match &j.work {
            Work::Record {
                create: Some(run), ..
            } => Some(NewRunValues::of(run, &j.lease)),
            _ => None,
        })
        .collect();
    new_runs.sort_by(|a, b| (&a.flow, &a.key, &a.id).cmp(&(&b.flow, &b.key, &b.id)));
    let recorded = leases(jobs, |work| matches!(work, Work::Record { .. }));
    let fence = (
        LeaseParams::of(&recorded),
        recorded
            .iter()
            .map(|l| l.ttl.as_secs_f64())
            .collect::<Vec<_>>(),
    );
    let release = LeaseParams::of(&leases(jobs, |work| matches!(work, Work::Release)));
    let mut rounds: Vec<Round> = Vec::new();
    let mut transitions = TransitionRows::default();
    // Writes of the run row and progress, each a statement of its own, in order.
    let mut singles: Vec<(&Statement, Single)> = Vec::new();
    let mut seen: Vec<(&str, i64, Option<i64>)> = Vec::new();
    for job in jobs {
        let Work::Record { writes, .. } = &job.work else {
            continue;
        };
        let lease = &job.lease;
        for write in writes {
            collect(
                write,
                lease,
                &st,
                &mut rounds,
                &mut transitions,
                &mut singles,
                &mut seen,
            );
        }
    }

    let mut calls: Vec<Call> = Vec::new();
    for run in &new_runs {
        calls.push(Call {
            statement: &st.insert_run,
            params: run.insert_params(),
            rows: false,
        });
        calls.push(Call {
            statement: &st.insert_tasks,
            params: vec![&run.id, &run.tasks, &run.token, &run.owner],
            rows: false,
        });
        if run.key.is_some() {
            calls.push(Call {
                statement: &st.holder_of_key,
                params: vec![&run.flow, &run.key],
                rows: true,
            });
        }
    }
    let fence_call = calls.len();
    if !recorded.is_empty() {
        calls.push(Call {
            statement: &st.fence,
            params: vec![&fence.0.runs, &fence.0.tokens, &fence.0.owners, &fence.1],
            rows: true,
        });
    }
    for (statement, single) in &singles {
        calls.push(Call {
            statement,
            params: single.params(),
            rows: false,
        });
    }
    for (round, elements) in rounds.iter().map(|r| (&r.tasks, &r.elements)) {
        if !elements.run_id.is_empty() {
            let e = elements;
            calls.push(Call {
                statement: &st.elements,
                params: vec![
                    &e.run_id, &e.idx, &e.element, &e.state, &e.args, &e.outcome, &e.result,
                    &e.error, &e.token, &e.owner,
                ],
                rows: false,
            });
        }
        if round.run_id.is_empty() {
            continue;
        }
        calls.push(Call {
            statement: &st.tasks,
            params: vec![
                &round.run_id,
                &round.idx,
                &round.state,
                &round.args,
                &round.outcome,
                &round.result,
                &round.error,
                &round.revert_error,
                &round.run_ms,
                &round.revert_ms,
                &round.attempt,
                &round.retry_at,
                &round.iterations,
                &round.revert_result,
                &round.token,
                &round.owner,
            ],
            rows: false,
        });
    }
    if !transitions.run_id.is_empty() {
        let t = &transitions;
        calls.push(Call {
            statement: &st.transitions,
            params: vec![
                &t.run_id,
                &t.task_idx,
                &t.task,
                &t.from,
                &t.to,
                &t.at,
                &t.duration_ms,
                &t.attempt,
                &t.error,
                &t.retry_at,
                &t.backoff_ms,
                &t.iterations,
                &t.element,
                &t.token,
                &t.owner,
            ],
            rows: false,
        });
    }
    if !release.runs.is_empty() {
        calls.push(Call {
            statement: &st.release,
            params: vec![&release.runs, &release.tokens, &release.owners],
            rows: false,
        });
    }

    // BEGIN, the calls and COMMIT, all sent before any answer is awaited: one round trip.
    // A statement that fails aborts the transaction, so COMMIT rolls everything back.
    let mut pending: Vec<Pending> = Vec::with_capacity(calls.len() + 2);
    pending.push(Box::pin(async {
        client.batch_execute(BEGIN).await.map(|()| Answer::Count)
    }));
    for call in &calls {
        let client = &**client;
        pending.push(if call.rows {
            Box::pin(async move {
                client
                    .query(call.statement, &call.params)
                    .await
                    .map(Answer::Rows)
            })
        } else {
            Box::pin(async move {
                client
                    .execute_raw(call.statement, call.params.iter().copied())
                    .await
                    .map(|_| Answer::Count)
            })
        });
    }
    pending.push(Box::pin(async {
        client.batch_execute("COMMIT").await.map(|()| Answer::Count)
    }));
    let mut answers = try_join_all(pending).await.map_err(failed)?;
    // Drop BEGIN's answer; calls are then at their own index.
    answers.remove(0);

    let current: Vec<(String, i64)> = match answers.get(fence_call) {
        Some(Answer::Rows(rows)) if !recorded.is_empty() => {
            rows.iter().map(|row| (row.get(0), row.get(1))).collect()
        }
        _ => Vec::new(),
    };
    // The holders of new runs' keys, by the new run's id.
    let holders: Vec<(&str, Option<String>)> = new_runs
        .iter()
        .filter(|run| run.key.is_some())
        .map(|run| run.id.as_str())
        .zip(answers[..fence_call].iter().filter_map(|a| match a {
            Answer::Rows(rows) => Some(rows.first().map(|row| row.get::<_, String>(0))),
            Answer::Count => None,
        }))
        .collect();
    Ok(jobs
        .iter()
        .map(|job| {
            let lease = &job.lease;
            match &job.work {
                Work::Release => Outcome::Done,
                Work::Record { create, .. } => {
                    if let Some(run) = create
                        && let Some((_, Some(holder))) =
                            holders.iter().find(|(id, _)| *id == run.id)
                        && *holder != run.id
                    {
                        return Outcome::Exists(holder.clone());
                    }
                    if current
                        .iter()
                        .any(|(id, token)| *id == lease.run_id && *token == lease.token)
                    {
                        Outcome::Done
                    } else {
                        Outcome::Fenced
                    }
                }
            }
        })
        .collect())
}

/// A new run's values, as the insert binds them.
struct NewRunValues {
    id: String,
    flow: String,
    flow_path: Option<String>,
    flow_hash: Option<String>,
    plugins: String,
    initial_store: String,
    token: i64,
    owner: String,
    host: String,
    pid: i64,
    ttl: f64,
    key: Option<String>,
    priority: i64,
    tasks: Vec<String>,
}

impl NewRunValues {
    fn of(run: &NewRun, lease: &Lease) -> Self {
        Self {
            id: run.id.clone(),
            flow: run.flow.clone(),
            flow_path: run
                .origin
                .flow_path
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            flow_hash: run.origin.flow_hash.clone(),
            plugins: json(&run.origin.plugins),
            initial_store: json(&run.initial_store),
            token: lease.token,
            owner: lease.owner.id.clone(),
            host: lease.owner.host.clone(),
            pid: i64::from(lease.owner.pid),
            ttl: lease.ttl.as_secs_f64(),
            key: run.key.clone(),
            priority: i64::from(run.priority),
            tasks: run.tasks.clone(),
        }
    }

    fn insert_params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.flow,
            &self.flow_path,
            &self.flow_hash,
            &self.plugins,
            &self.initial_store,
            &self.token,
            &self.owner,
            &self.host,
            &self.pid,
            &self.ttl,
            &self.key,
            &self.priority,
        ]
    }
}

/// The parameters of a write of its own (the run row, progress), owned.
enum Single {
    Flow {
        run_id: String,
        to: &'static str,
        at: String,
        ended: bool,
        final_store: Option<String>,
        reason: Option<&'static str>,
        token: i64,
        owner: String,
    },
    Reason {
        run_id: String,
        at: String,
        reason: String,
        token: i64,
        owner: String,
    },
    Progress {
        run_id: String,
        index: i32,
        progress: String,
        token: i64,
        owner: String,
    },
}

impl Single {
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        match self {
            Single::Flow {
                run_id,
                to,
                at,
                ended,
                final_store,
                reason,
                token,
                owner,
            } => vec![run_id, to, at, ended, final_store, reason, token, owner],
            Single::Reason {
                run_id,
                at,
                reason,
                token,
                owner,
            } => vec![run_id, at, reason, token, owner],
            Single::Progress {
                run_id,
                index,
                progress,
                token,
                owner,
            } => vec![run_id, index, progress, token, owner],
        }
    }
}

/// Files `write` (under `lease`) into the group's statements.
fn collect<'a>(
    write: &'a Write,
    lease: &'a Lease,
    st: &'a Statements,
    rounds: &mut Vec<Round<'a>>,
    transitions: &mut TransitionRows<'a>,
    singles: &mut Vec<(&'a Statement, Single)>,
    seen: &mut Vec<(&'a str, i64, Option<i64>)>,
) {
    let (token, owner) = (lease.token, lease.owner.id.as_str());
    let small = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
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
            singles.push((
                &st.flow,
                Single::Flow {
                    run_id: run_id.clone(),
                    to,
                    at: timestamp(*at),
                    ended: *ended,
                    final_store: final_store.clone(),
                    reason: *reason,
                    token,
                    owner: owner.to_owned(),
                },
            ));
            let t = transitions;
            t.run_id.push(run_id);
            t.task_idx.push(None);
            t.task.push(None);
            t.from.push(from);
            t.to.push(to);
            t.at.push(timestamp(*at));
            t.duration_ms.push(*elapsed_ms);
            t.attempt.push(None);
            t.error.push(None);
            t.retry_at.push(None);
            t.backoff_ms.push(None);
            t.iterations.push(None);
            t.element.push(None);
            t.token.push(token);
            t.owner.push(owner);
        }
        Write::Progress {
            run_id,
            index,
            progress,
        } => singles.push((
            &st.progress,
            Single::Progress {
                run_id: run_id.clone(),
                index: small(*index),
                progress: progress.clone(),
                token,
                owner: owner.to_owned(),
            },
        )),
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
            // A task (or a map's element) written twice in the group is written by a later
            // statement.
            let round = seen
                .iter()
                .filter(|(id, i, e)| *id == run_id.as_str() && *i == *index && e == element)
                .count();
            seen.push((run_id, *index, *element));
            if rounds.len() <= round {
                rounds.push(Round::default());
            }
            let attempt = i32::try_from(*attempt).unwrap_or(i32::MAX);
            if let Some(element) = element {
                // One element's call of a map's task writes the element's row, not the task's.
                let r = &mut rounds[round].elements;
                r.run_id.push(run_id);
                r.idx.push(small(*index));
                r.element.push(*element);
                r.state.push(to);
                r.args.push(args.as_deref());
                r.outcome.push(outcome.as_deref());
                r.result.push(result.as_deref());
                r.error.push(carried.as_deref());
                r.token.push(token);
                r.owner.push(owner);
            } else {
                let r = &mut rounds[round].tasks;
                r.run_id.push(run_id);
                r.idx.push(small(*index));
                r.state.push(to);
                r.args.push(args.as_deref());
                r.outcome.push(outcome.as_deref());
                r.result.push(result.as_deref());
                r.error.push(error.as_deref());
                r.revert_error.push(revert_error.as_deref());
                r.run_ms.push(*run_ms);
                r.revert_ms.push(*revert_ms);
                r.attempt.push(attempt);
                r.retry_at.push(*retry_at);
                r.iterations.push(iterations.as_deref());
                r.revert_result.push(revert_result.as_deref());
                r.token.push(token);
                r.owner.push(owner);
            }
            if let Some(reason) = reason {
                singles.push((
                    &st.reason,
                    Single::Reason {
                        run_id: run_id.clone(),
                        at: timestamp(*at),
                        reason: reason.clone(),
                        token,
                        owner: owner.to_owned(),
                    },
                ));
            }
            let t = transitions;
            t.run_id.push(run_id);
            t.task_idx.push(Some(small(*index)));
            t.task.push(Some(task));
            t.from.push(from);
            t.to.push(to);
            t.at.push(timestamp(*at));
            t.duration_ms.push(*duration_ms);
            t.attempt.push(Some(attempt));
            t.error.push(carried.as_deref());
            t.retry_at.push(*retry_at);
            t.backoff_ms.push(*backoff_ms);
            t.iterations.push(iterations.as_deref());
            t.element.push(*element);
            t.token.push(token);
            t.owner.push(owner);
        }
    }
}

/// Unix seconds as the text timestamps the schema stores (`flowhost_ts`'s format: UTC,
/// milliseconds), formatted here rather than by the server, which runs `flowhost_ts` as a
/// query of its own for every value.
fn timestamp(at: f64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(at.max(0.0));
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_the_servers_flowhost_ts_writes_them() {
        assert_eq!(timestamp(1_765_000_000.123_456), "2025-12-06T05:46:40.123Z");
        assert_eq!(timestamp(0.0), "1970-01-01T00:00:00.000Z");
    }
}
