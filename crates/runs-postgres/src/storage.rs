//! The [`RunDb`] implementation: creating runs, leases and their fence, resumes, listing,
//! reading and pruning, each on a pooled connection. Separate from the journal's hot
//! path and from the reading of rows, which it calls.

use std::sync::Arc;
use std::time::Duration;

use flowhost_core::events::Event;
use flowhost_runs::row::{LeaseColumns, Write, json};
use flowhost_runs::{
    AsyncWrites, Lease, LeaseHolder, NewRun, Origin, Owner, PruneFilter, Pruned, RestartLinks,
    RunCount, RunDb, RunDbError, RunFilter, RunRecord, RunSummary,
};

use crate::PgRunDb;
use crate::bridge::{Shared, deadline};
use crate::journal::{Committer, Outcome, Work};
use crate::rows::{self, HOLDER, HOLDER_COLUMNS, SUMMARY, read_run, summary};

impl PgRunDb {
    /// Commits `work` under `lease`, grouped with the writes of other runs pending meanwhile.
    fn write(&self, what: &str, lease: &Lease, work: Work) -> Result<Outcome, RunDbError> {
        let (committer, held, label) = (self.committer.clone(), lease.clone(), what.to_owned());
        self.block(what, move |s| async move {
            committer.commit(&s, &label, held, work).await
        })
    }

    /// Creates `run` (its first lease `lease`) and commits `events` with it.
    fn write_new(&self, run: &NewRun, lease: &Lease, events: &[Event]) -> Result<(), RunDbError> {
        let held = created(run, self.write(CREATING, lease, creating(run, events))?)?;
        lease.written(held, || self.holder_now(lease))
    }

    /// Who holds `lease`'s run now, for the error of a write the fence refused.
    fn holder_now(&self, lease: &Lease) -> Option<LeaseHolder> {
        let id = lease.run_id.clone();
        self.block("reading the run's lease", move |s| async move {
            Ok(holder_of(&s, &id).await)
        })
        .ok()
        .flatten()
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
            let matched = rows.iter().map(summary).collect::<Result<Vec<_>, _>>().map_err(|e| s.error(what, e))?;
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

/// Renews `lease` inside a write transaction: one row when it is still the run's.
pub(crate) const FENCE: &str = "UPDATE runs SET lease_expires = flowhost_now() + $4 WHERE id = $1 AND lease_token = $2 AND lease_owner = $3";
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

/// Inserts run `run` with its tasks PENDING, queued for the workers and unleased.
/// Inserts nothing when another run of the flow holds `run`'s idempotency key, and returns
/// that run's id: the unique index makes a concurrent insert with the key wait for the first
/// to commit (or roll back), so of runs racing on one key exactly one is inserted.
pub(crate) async fn insert_run(
    tx: &deadpool_postgres::Transaction<'_>,
    run: &NewRun,
) -> Result<Option<String>, tokio_postgres::Error> {
    let inserted = tx.execute(
        "INSERT INTO runs (id, flow, flow_path, flow_hash, plugins, initial_store, state, created_at, updated_at, queued,
                           lease_token, idempotency_key, priority)
         VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', flowhost_ts(flowhost_now()), flowhost_ts(flowhost_now()), true,
                 0, $7, $8)
         ON CONFLICT (flow, idempotency_key) DO NOTHING",
        &[
            &run.id,
            &run.flow,
            &run.origin.flow_path.as_ref().map(|p| p.to_string_lossy().into_owned()),
            &run.origin.flow_hash,
            &json(&run.origin.plugins),
            &json(&run.initial_store),
            &run.key,
            &i64::from(run.priority),
        ],
    )
    .await?;
    if inserted == 0 {
        // A statement of its own sees the other run's committed row (read committed).
        let existing = tx
            .query_one(
                "SELECT id FROM runs WHERE flow = $1 AND idempotency_key = $2",
                &[&run.flow, &run.key],
            )
            .await?;
        return Ok(Some(existing.get(0)));
    }
    tx.execute(
        "INSERT INTO tasks (run_id, idx, name, state)
         SELECT $1, (n - 1)::integer, name, 'PENDING' FROM unnest($2::text[]) WITH ORDINALITY AS t(name, n)",
        &[&run.id, &run.tasks],
    )
    .await?;
    Ok(None)
}

/// Who holds run `id`'s lease now, if anyone (and if it can be read).
async fn holder_of(s: &Shared, id: &str) -> Option<LeaseHolder> {
    let client = s.client("reading the run's lease").await.ok()?;
    let row = client
        .query_opt(
            &format!("SELECT {HOLDER}, flowhost_now() FROM runs WHERE id = $1"),
            &[&id],
        )
        .await
        .ok()?;
    row.and_then(|row| rows::lease(&row, 0))
        .map(|lease| lease.held().holder)
}

/// The journal writes of [`PgRunDb`] for async callers: straight to the committer tasks,
/// awaited on the caller's own runtime (the committer answers on a channel that works
/// across runtimes), under the same deadline as every group.
struct PgWrites {
    shared: Shared,
    committer: Committer,
}

impl PgWrites {
    async fn commit(&self, what: &str, lease: &Lease, work: Work) -> Result<Outcome, RunDbError> {
        let commit = self
            .committer
            .commit(&self.shared, what, lease.clone(), work);
        deadline(self.shared.clone(), what.to_owned(), commit).await
    }

    /// A write's result: done, or fenced naming who holds the run now.
    async fn written(&self, held: bool, lease: &Lease) -> Result<(), RunDbError> {
        let holder = match held {
            true => None,
            false => holder_of(&self.shared, &lease.run_id).await,
        };
        lease.written(held, || holder)
    }
}

impl AsyncWrites for PgWrites {
    fn record<'a>(&'a self, events: &'a [Event], lease: &'a Lease) -> flowhost_runs::Writing<'a> {
        Box::pin(async move {
            let (what, work) = recording(events);
            let outcome = self.commit(&what, lease, work).await?;
            self.written(outcome == Outcome::Done, lease).await
        })
    }

    fn record_new<'a>(
        &'a self,
        run: &'a NewRun,
        lease: &'a Lease,
        events: &'a [Event],
    ) -> flowhost_runs::Writing<'a> {
        Box::pin(async move {
            let outcome = self.commit(CREATING, lease, creating(run, events)).await?;
            self.written(created(run, outcome)?, lease).await
        })
    }
}

/// What a write creating a run is called in errors.
const CREATING: &str = "recording a new run";

/// The work of creating `run` with its first transitions `events`.
fn creating(run: &NewRun, events: &[Event]) -> Work {
    Work::Record {
        create: Some(Box::new(run.clone())),
        writes: events.iter().map(Write::of).collect(),
    }
}

/// The work of recording `events`, and what it is called in errors.
fn recording(events: &[Event]) -> (String, Work) {
    let what = match events {
        [only] => format!("recording {}", only.transition),
        _ => format!("recording {} transitions", events.len()),
    };
    let work = Work::Record {
        create: None,
        writes: events.iter().map(Write::of).collect(),
    };
    (what, work)
}

/// Whether a run's creation was recorded (false: fenced), or the error of a taken key.
fn created(run: &NewRun, outcome: Outcome) -> Result<bool, RunDbError> {
    match outcome {
        Outcome::Done => Ok(true),
        Outcome::Exists(existing) => Err(exists(run, existing)),
        Outcome::Fenced => Ok(false),
    }
}

/// The error of a run not inserted because run `existing` holds its idempotency key.
pub(crate) fn exists(run: &NewRun, existing: String) -> RunDbError {
    RunDbError::Exists {
        flow: run.flow.clone(),
        key: run.key.clone().unwrap_or_default(),
        run: existing,
    }
}

impl RunDb for PgRunDb {
    fn create(&self, run: &NewRun, owner: &Owner, ttl: Duration) -> Result<Lease, RunDbError> {
        let lease = Lease::first(&run.id, owner, ttl);
        self.write_new(run, &lease, &[])?;
        Ok(lease)
    }

    fn record_new(&self, run: &NewRun, lease: &Lease, events: &[Event]) -> Result<(), RunDbError> {
        self.write_new(run, lease, events)
    }

    fn async_writes(&self) -> Option<Arc<dyn AsyncWrites>> {
        Some(Arc::new(PgWrites {
            shared: self.shared.clone(),
            committer: self.committer.clone(),
        }))
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
            if let Some(held) = rows::lease(&row, 1).map(LeaseColumns::held)
                && held.live(row.get(HOLDER_COLUMNS + 1))
            {
                return Err(RunDbError::Held { run: id, holder: Box::new(held.holder) });
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
        lease.written(renewed, || self.holder_now(lease))
    }

    fn release(&self, lease: &Lease) -> Result<(), RunDbError> {
        self.write("releasing the run's lease", lease, Work::Release)
            .map(drop)
    }

    fn record(&self, events: &[Event], lease: &Lease) -> Result<(), RunDbError> {
        let (what, work) = recording(events);
        let outcome = self.write(&what, lease, work)?;
        lease.written(outcome == Outcome::Done, || self.holder_now(lease))
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
                "UPDATE runs SET resumes = resumes + 1, updated_at = flowhost_ts(flowhost_now()), flow_hash = $2, plugins = $3,
                        suspend_requested = false
                 WHERE id = $1",
                &[&held.run_id, &hash, &plugins],
            )
            .await
            .map_err(|e| s.error(what, e))?;
            tx.commit().await.map_err(|e| s.error(what, e))?;
            Ok(true)
        })?;
        lease.written(recorded, || self.holder_now(lease))
    }

    fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, RunDbError> {
        let (state, flows, limit) = (
            filter.state.map(|s| s.as_str().to_owned()),
            filter.flows.clone(),
            filter.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        );
        self.block("listing runs", move |s| async move {
            let what = "listing runs";
            let client = s.reader(what).await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {SUMMARY} FROM runs
                         WHERE ($1::text IS NULL OR state = $1) AND (cardinality($2::text[]) = 0 OR flow = ANY($2))
                         ORDER BY seq DESC LIMIT $3"
                    ),
                    &[&state, &flows, &limit],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            rows.iter().map(summary).collect::<Result<_, _>>().map_err(|e| s.error(what, e))
        })
    }

    fn request_suspend(&self, run_id: &str) -> Result<bool, RunDbError> {
        let id = run_id.to_owned();
        self.block("asking a run to suspend", move |s| async move {
            let what = "asking a run to suspend";
            let client = s.client(what).await?;
            let n = client
                .execute(
                    "UPDATE runs SET suspend_requested = true WHERE id = $1 AND state IN ('PENDING', 'RUNNING')",
                    &[&id],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(n == 1)
        })
    }

    fn suspend_requested(&self, run_id: &str) -> Result<bool, RunDbError> {
        let id = run_id.to_owned();
        self.block("reading a suspend request", move |s| async move {
            let what = "reading a suspend request";
            let client = s.reader(what).await?;
            let row = client
                .query_opt("SELECT suspend_requested FROM runs WHERE id = $1", &[&id])
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(row.is_some_and(|row| row.get::<_, bool>(0)))
        })
    }

    fn link_restart(&self, lease: &Lease, from: &str) -> Result<(), RunDbError> {
        let (held, from) = (lease.clone(), from.to_owned());
        let linked = self.block("linking a restarted run", move |s| async move {
            let what = "linking a restarted run";
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            if !fence(&tx, &held).await.map_err(|e| s.error(what, e))? {
                return Ok(false);
            }
            tx.execute(
                "UPDATE runs SET restarted_from = $2 WHERE id = $1",
                &[&held.run_id, &from],
            )
            .await
            .map_err(|e| s.error(what, e))?;
            tx.commit().await.map_err(|e| s.error(what, e))?;
            Ok(true)
        })?;
        lease.written(linked, || self.holder_now(lease))
    }

    fn restart_links(&self, run_id: &str) -> Result<RestartLinks, RunDbError> {
        let id = run_id.to_owned();
        self.block("reading restart links", move |s| async move {
            let what = "reading restart links";
            let client = s.reader(what).await?;
            let restarted_from = client
                .query_opt("SELECT restarted_from FROM runs WHERE id = $1", &[&id])
                .await
                .map_err(|e| s.error(what, e))?
                .and_then(|row| row.get::<_, Option<String>>(0));
            let restarts = client
                .query(
                    "SELECT id FROM runs WHERE restarted_from = $1 ORDER BY seq",
                    &[&id],
                )
                .await
                .map_err(|e| s.error(what, e))?
                .iter()
                .map(|row| row.get(0))
                .collect();
            Ok(RestartLinks {
                restarted_from,
                restarts,
            })
        })
    }

    fn count(&self) -> Result<Vec<RunCount>, RunDbError> {
        self.block("counting runs", move |s| async move {
            let what = "counting runs";
            let client = s.reader(what).await?;
            let rows = client
                .query(
                    "SELECT flow, state, count(*) FROM runs GROUP BY flow, state ORDER BY flow, state",
                    &[],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            rows.iter()
                .map(|row| {
                    Ok(RunCount {
                        flow: row.get(0),
                        state: flowhost_runs::row::state("runs.state", row.get(1))
                            .map_err(|e| s.error(what, e))?,
                        runs: row.get::<_, i64>(2).max(0) as u64,
                    })
                })
                .collect()
        })
    }

    fn read(
        &self,
        id: &str,
        max_value_bytes: Option<usize>,
    ) -> Result<Option<RunRecord>, RunDbError> {
        let id = id.to_owned();
        let bound = max_value_bytes.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.block("reading a run", move |s| async move {
            read_run(&s, &id, bound).await
        })
    }

    fn prune(&self, filter: &PruneFilter) -> Result<usize, RunDbError> {
        Ok(self.prune_runs(filter, false)?.runs.len())
    }

    fn signal(
        &self,
        run_id: &str,
        name: &str,
        data: &serde_json::Value,
    ) -> Result<Option<flowhost_core::events::FlowState>, RunDbError> {
        self.send_signal(run_id, name, data)
    }

    fn take_signal(
        &self,
        run_id: &str,
        task: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, RunDbError> {
        self.take_signal_for(run_id, task, name)
    }
}
