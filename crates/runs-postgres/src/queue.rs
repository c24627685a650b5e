//! What only a shared database does: queueing submitted runs with their flow file and plugins
//! stored by SHA-256, claiming them with `SELECT … FOR UPDATE SKIP LOCKED`, waking workers
//! with `NOTIFY`, and the registry of workers.

use std::path::Path;
use std::time::Duration;

use flowhost_runs::sha256_hex;
use futures_util::StreamExt;
use serde::Serialize;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::PgRunDb;
use crate::limits::lock_limits;
use crate::storage::insert_run;
use flowhost_runs::{Lease, NewRun, Owner, RunDbError};

/// The channel `submit` notifies and workers listen on.
pub(crate) const CHANNEL: &str = "flowhost_runs";

/// A run a worker claimed: its lease, taken in the claiming transaction.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The lease (token grown by one over the previous holder's).
    pub lease: Lease,
    /// Seconds from submission to this claim, on the database's clock.
    pub waited: f64,
    /// The W3C traceparent the run was submitted under, if any.
    pub traceparent: Option<String>,
}

/// A worker as the database knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRecord {
    /// Its executor id (host/pid/n), the owner of the leases it holds.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started (UTC, ISO 8601).
    pub started: String,
    /// Its last heartbeat (UTC, ISO 8601).
    pub heartbeat: String,
    /// Seconds since that heartbeat.
    pub heartbeat_age_s: f64,
    /// Runs whose live lease it holds now.
    pub in_flight: i64,
    /// How many runs it executes at once.
    pub concurrency: i64,
    /// The flows it claims; empty: every flow.
    pub flows: Vec<String>,
    /// `running`, `stopped` (drained and gone) or `lost` (no heartbeat for three intervals
    /// and no live lease: killed, or cut off from the database).
    pub status: String,
}

impl PgRunDb {
    /// Queues `run` for the workers, storing the flow file's bytes and every plugin (read
    /// from `plugins`: hash and file) unless the database has them already, then notifies the
    /// workers; all in one transaction. A file whose bytes no longer match the hash it was
    /// validated with is refused, naming it; a run whose idempotency key another run of the
    /// flow holds is refused with [`RunDbError::Exists`], queueing nothing. The run keeps
    /// `traceparent` for the worker that claims it ([`Claimed::traceparent`]).
    pub async fn submit(
        &self,
        run: &NewRun,
        flow_text: Vec<u8>,
        plugins: Vec<(String, std::path::PathBuf)>,
        traceparent: Option<&str>,
    ) -> Result<(), RunDbError> {
        let new = run.clone();
        let traceparent = traceparent.map(str::to_owned);
        self.spawn("submitting a run", move |s| async move {
            let what = "submitting a run";
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            let mut blobs: Vec<(String, Option<std::path::PathBuf>)> = Vec::new();
            if let Some(hash) = &new.origin.flow_hash {
                blobs.push((hash.clone(), None));
            }
            for (hash, path) in plugins {
                if !blobs.iter().any(|(h, _)| *h == hash) {
                    blobs.push((hash, Some(path)));
                }
            }
            let hashes: Vec<&str> = blobs.iter().map(|(h, _)| h.as_str()).collect();
            let present: Vec<String> = tx
                .query("SELECT sha256 FROM blobs WHERE sha256 = ANY($1)", &[&hashes])
                .await
                .map_err(|e| s.error(what, e))?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for (hash, path) in &blobs {
                if present.contains(hash) {
                    continue;
                }
                let bytes = match path {
                    None => flow_text.clone(),
                    Some(path) => {
                        std::fs::read(path).map_err(|source| RunDbError::Hash { path: path.clone(), source })?
                    }
                };
                if sha256_hex(&bytes) != *hash {
                    let name = path.as_deref().unwrap_or(Path::new("the flow file"));
                    return Err(s.error(what, format!("{} changed while it was being submitted", name.display())));
                }
                tx.execute(
                    "INSERT INTO blobs (sha256, bytes, stored_at) VALUES ($1, $2, flowhost_ts(flowhost_now()))
                     ON CONFLICT (sha256) DO NOTHING",
                    &[hash, &bytes],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            }
            if let Some(existing) = insert_run(&tx, &new).await.map_err(|e| s.error(what, e))? {
                return Err(crate::storage::exists(&new, existing));
            }
            if traceparent.is_some() {
                tx.execute("UPDATE runs SET traceparent = $2 WHERE id = $1", &[&new.id, &traceparent])
                    .await
                    .map_err(|e| s.error(what, e))?;
            }
            tx.execute(&format!("NOTIFY {CHANNEL}"), &[]).await.map_err(|e| s.error(what, e))?;
            tx.commit().await.map_err(|e| s.error(what, e))
        })
        .await
    }

    /// Claims up to `limit` queued runs for `owner` — new ones, unfinished ones whose lease
    /// expired (their worker died or was cut off), and WAITING ones whose signal came or
    /// whose due time passed — highest priority first, then oldest first, restricted to `flows`
    /// when not empty. Rows another worker is claiming at the same moment are skipped, not
    /// waited for, so workers never queue behind each other. A flow's queue limits
    /// (`concurrency`, `rate`) hold across all workers: its runs are claimed only up to the
    /// room left, counted under a lock on the flow's limits (see the `limits` module).
    pub async fn claim(
        &self,
        owner: &Owner,
        ttl: Duration,
        limit: i64,
        flows: &[String],
    ) -> Result<Vec<Claimed>, RunDbError> {
        let (taker, flows) = (owner.clone(), flows.to_vec());
        self.spawn("claiming runs", move |s| async move {
            let what = "claiming runs";
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            let flows: Option<Vec<String>> = (!flows.is_empty()).then_some(flows);
            // Queue limits: flows with `concurrency` or `rate` are left out of the claim below
            // ($7 false) and claimed one by one ($7 true), each up to its room, under their
            // locked limit rows.
            let limited = lock_limits(&tx, &flows).await.map_err(|e| s.error(what, e))?;
            let claim = "WITH picked AS (
                       SELECT id FROM runs
                        WHERE queued AND (state IN ('PENDING', 'RUNNING', 'REVERTING')
                                          OR (resume_requested AND state IN ('SUSPENDING', 'SUSPENDED'))
                                          OR (state = 'WAITING' AND flowhost_wakes(id)))
                          AND (lease_owner IS NULL OR lease_expires < flowhost_now())
                          AND ($2::text[] IS NULL OR flow = ANY($2))
                          AND ($7 OR NOT EXISTS (SELECT 1 FROM flow_limits l WHERE l.flow = runs.flow))
                        ORDER BY priority DESC, seq LIMIT $1 FOR UPDATE SKIP LOCKED)
                     UPDATE runs SET lease_token = runs.lease_token + 1, lease_owner = $3, lease_host = $4, lease_pid = $5,
                            lease_since = flowhost_now(), lease_expires = flowhost_now() + $6,
                            resume_requested = false,
                            claimed_at = COALESCE(runs.claimed_at, flowhost_now())
                       FROM picked WHERE runs.id = picked.id
                     RETURNING runs.id, runs.lease_token,
                               flowhost_now() - extract(epoch FROM runs.created_at::timestamptz)::float8,
                               runs.traceparent";
            let (ttl_s, pid) = (ttl.as_secs_f64(), i64::from(taker.pid));
            let mut rows = tx
                .query(claim, &[&limit, &flows, &taker.id, &taker.host, &pid, &ttl_s, &false])
                .await
                .map_err(|e| s.error(what, e))?;
            for flow in limited.iter().filter(|l| l.room > 0) {
                let n = flow.room.min(limit - rows.len() as i64);
                if n <= 0 {
                    break;
                }
                let only = Some(vec![flow.flow.clone()]);
                rows.extend(
                    tx.query(claim, &[&n, &only, &taker.id, &taker.host, &pid, &ttl_s, &true])
                        .await
                        .map_err(|e| s.error(what, e))?,
                );
            }
            tx.commit().await.map_err(|e| s.error(what, e))?;
            Ok(rows
                .iter()
                .map(|row| Claimed {
                    lease: Lease { run_id: row.get(0), token: row.get(1), owner: taker.clone(), ttl },
                    waited: row.get(2),
                    traceparent: row.get(3),
                })
                .collect())
        })
        .await
    }

    /// Ends unfinished run `lease.run_id` FAILURE with `reason` as its exit reason, without
    /// executing anything, and releases the lease — for a claimed run this worker refuses for
    /// good (its grants are outside the worker's policy, its stored flow or plugin fails its
    /// hash): it fails once, instead of being claimed and refused again at every lease
    /// expiry. Fenced: false, with nothing written, when the lease is no longer the run's.
    pub async fn fail(&self, lease: &Lease, reason: &str) -> Result<bool, RunDbError> {
        let (held, reason) = (lease.clone(), reason.to_owned());
        self.spawn("ending a refused run", move |s| async move {
            let what = "ending a refused run";
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            let row = tx
                .query_opt(
                    "SELECT state FROM runs WHERE id = $1 AND lease_token = $2 AND lease_owner = $3
                       AND state IN ('PENDING', 'RUNNING', 'REVERTING') FOR UPDATE",
                    &[&held.run_id, &held.token, &held.owner.id],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            let Some(row) = row else {
                return Ok(false);
            };
            let from: String = row.get(0);
            tx.execute(
                "UPDATE runs SET state = 'FAILURE', updated_at = flowhost_ts(flowhost_now()),
                   finished_at = flowhost_ts(flowhost_now()), exit_reason = $2,
                   lease_owner = NULL, lease_host = NULL, lease_pid = NULL, lease_since = NULL, lease_expires = NULL
                 WHERE id = $1",
                &[&held.run_id, &reason],
            )
            .await
            .map_err(|e| s.error(what, e))?;
            tx.execute(
                "INSERT INTO transitions (run_id, from_state, to_state, at, duration_ms)
                 VALUES ($1, $2, 'FAILURE', flowhost_ts(flowhost_now()), 0)",
                &[&held.run_id, &from],
            )
            .await
            .map_err(|e| s.error(what, e))?;
            tx.commit().await.map_err(|e| s.error(what, e))?;
            Ok(true)
        })
        .await
    }

    /// The stored bytes of blob `sha256`, if the database has it.
    pub async fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, RunDbError> {
        let hash = sha256.to_owned();
        self.spawn("fetching a plugin", move |s| async move {
            let what = "fetching a plugin";
            let client = s.client(what).await?;
            let row = client
                .query_opt("SELECT bytes FROM blobs WHERE sha256 = $1", &[&hash])
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(row.map(|row| row.get(0)))
        })
        .await
    }

    /// Records a worker starting (or beating: its heartbeat moves to now).
    pub async fn worker_beat(
        &self,
        owner: &Owner,
        concurrency: usize,
        flows: &[String],
    ) -> Result<(), RunDbError> {
        let (me, flows) = (
            owner.clone(),
            serde_json::to_string(flows).unwrap_or_else(|_| "[]".into()),
        );
        self.spawn("recording the worker's heartbeat", move |s| async move {
            let what = "recording the worker's heartbeat";
            let client = s.client(what).await?;
            client
                .execute(
                    "INSERT INTO workers (id, host, pid, started_at, heartbeat, concurrency, flows)
                     VALUES ($1, $2, $3, flowhost_ts(flowhost_now()), flowhost_now(), $4, $5)
                     ON CONFLICT (id) DO UPDATE SET heartbeat = flowhost_now(), stopped_at = NULL",
                    &[
                        &me.id,
                        &me.host,
                        &i64::from(me.pid),
                        &(concurrency.min(i32::MAX as usize) as i32),
                        &flows,
                    ],
                )
                .await
                .map_err(|e| s.error(what, e))
                .map(drop)
        })
        .await
    }

    /// Records that a worker stopped (drained).
    pub async fn worker_stopped(&self, owner: &Owner) -> Result<(), RunDbError> {
        let id = owner.id.clone();
        self.spawn("recording the worker's stop", move |s| async move {
            let what = "recording the worker's stop";
            let client = s.client(what).await?;
            client
                .execute(
                    "UPDATE workers SET stopped_at = flowhost_ts(flowhost_now()) WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(|e| s.error(what, e))
                .map(drop)
        })
        .await
    }

    /// Every worker known, the live ones first, with the runs each holds now. A worker whose
    /// heartbeat is older than `lost_after` is reported `lost`.
    pub fn workers(&self, lost_after: Duration) -> Result<Vec<WorkerRecord>, RunDbError> {
        self.block("listing workers", move |s| async move {
            let what = "listing workers";
            let client = s.client(what).await?;
            let rows = client
                .query(
                    "SELECT w.id, w.host, w.pid, w.started_at, flowhost_ts(w.heartbeat), flowhost_now() - w.heartbeat,
                            (SELECT count(*) FROM runs r WHERE r.lease_owner = w.id AND r.lease_expires > flowhost_now()),
                            w.concurrency, w.flows, w.stopped_at
                       FROM workers w ORDER BY w.stopped_at IS NOT NULL, w.heartbeat DESC",
                    &[],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(rows
                .iter()
                .map(|row| {
                    let age: f64 = row.get(5);
                    let in_flight: i64 = row.get(6);
                    let stopped: Option<String> = row.get(9);
                    let status = match stopped {
                        Some(_) => "stopped",
                        None if age > lost_after.as_secs_f64() && in_flight == 0 => "lost",
                        None => "running",
                    };
                    WorkerRecord {
                        id: row.get(0),
                        host: row.get(1),
                        pid: row.get::<_, i64>(2) as u32,
                        started: row.get(3),
                        heartbeat: row.get(4),
                        heartbeat_age_s: (age * 10.0).round() / 10.0,
                        in_flight,
                        concurrency: row.get::<_, i32>(7).into(),
                        flows: serde_json::from_str(&row.get::<_, String>(8)).unwrap_or_default(),
                        status: status.into(),
                    }
                })
                .collect())
        })
    }

    /// Asks unfinished run `run_id` to stop (its task in flight at once) and revert what ran, and
    /// wakes the workers: the one holding it cancels it on its engine, or the one claiming it
    /// next does. False when there is no such unfinished run.
    pub fn request_cancel(&self, run_id: &str) -> Result<bool, RunDbError> {
        self.update_and_wake(
            "asking a run to cancel",
            "UPDATE runs SET cancel_requested = true
              WHERE id = $1 AND state IN ('PENDING', 'RUNNING', 'REVERTING')",
            run_id,
        )
    }

    /// Of the runs `owner` holds, those asked to cancel.
    pub async fn cancel_requests(&self, owner: &Owner) -> Result<Vec<String>, RunDbError> {
        let holder = owner.id.clone();
        self.spawn("reading cancel requests", move |s| async move {
            let what = "reading cancel requests";
            let client = s.client(what).await?;
            let rows = client
                .query(
                    "SELECT id FROM runs WHERE cancel_requested AND lease_owner = $1
                       AND state IN ('PENDING', 'RUNNING', 'REVERTING')",
                    &[&holder],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
        .await
    }

    /// Hands unfinished run `run_id` (one run with `flowhost run --db`, say) to the workers:
    /// they claim it once no live lease holds it and resume it from its journal (a suspended
    /// one too: it is resumed). False when
    /// there is no such unfinished run, or its flow was never stored in the database (a run
    /// started from a local file: only a host with that file can resume it).
    pub fn requeue(&self, run_id: &str) -> Result<bool, RunDbError> {
        self.update_and_wake(
            "queueing a run",
            "UPDATE runs SET queued = true, resume_requested = state IN ('SUSPENDING', 'SUSPENDED')
              WHERE id = $1 AND state IN ('PENDING', 'RUNNING', 'REVERTING', 'SUSPENDING', 'SUSPENDED')
                AND flow_hash IN (SELECT sha256 FROM blobs)",
            run_id,
        )
    }

    /// Hands suspended run `run_id`, which was submitted to the workers, back to them to be
    /// resumed: the next worker to claim runs takes it and goes on from its record. False
    /// when it is not a queued run that is SUSPENDING or SUSPENDED (resume it where its flow
    /// file is, then).
    pub fn resume_queued(&self, run_id: &str) -> Result<bool, RunDbError> {
        self.update_and_wake(
            "queueing a suspended run",
            "UPDATE runs SET resume_requested = true
              WHERE id = $1 AND queued AND state IN ('SUSPENDING', 'SUSPENDED')",
            run_id,
        )
    }

    /// Runs `update` (of run `$1`) and wakes the workers in one transaction; whether it
    /// changed the run.
    fn update_and_wake(
        &self,
        what: &'static str,
        update: &'static str,
        run_id: &str,
    ) -> Result<bool, RunDbError> {
        let id = run_id.to_owned();
        self.block(what, move |s| async move {
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            let n = tx
                .execute(update, &[&id])
                .await
                .map_err(|e| s.error(what, e))?;
            tx.execute(&format!("NOTIFY {CHANNEL}"), &[])
                .await
                .map_err(|e| s.error(what, e))?;
            tx.commit().await.map_err(|e| s.error(what, e))?;
            Ok(n == 1)
        })
    }

    /// How many queued runs wait for a worker: unfinished, and unleased or with an expired
    /// lease (a dead worker's). The queue depth a service exports as a metric.
    pub fn waiting(&self) -> Result<i64, RunDbError> {
        self.block("counting queued runs", move |s| async move {
            let what = "counting queued runs";
            let client = s.client(what).await?;
            let row = client
                .query_one(
                    "SELECT count(*) FROM runs WHERE queued AND state IN ('PENDING', 'RUNNING', 'REVERTING')
                       AND (lease_owner IS NULL OR lease_expires < flowhost_now())",
                    &[],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(row.get(0))
        })
    }

    /// Whether run `run_id` is queued for workers and unfinished: a worker will claim (or
    /// reclaim) it, so a reader following it should keep waiting even while nobody holds it.
    pub fn awaits_worker(&self, run_id: &str) -> Result<bool, RunDbError> {
        let id = run_id.to_owned();
        self.block("reading a run's queue state", move |s| async move {
            let what = "reading a run's queue state";
            let client = s.reader(what).await?;
            let row = client
                .query_opt(
                    "SELECT queued AND state IN ('PENDING', 'RUNNING', 'REVERTING') FROM runs WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(row.is_some_and(|row| row.get::<_, bool>(0)))
        })
    }

    /// Listens for submissions: `wake` is notified at each, until the connection breaks (then
    /// this returns the error, and the caller listens again after a pause). Runs on the
    /// database runtime.
    pub async fn listen(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Result<(), RunDbError> {
        let config = self.config.clone();
        let shown = self.shared.url.clone();
        let failed = move |e: tokio_postgres::Error| RunDbError::Query {
            path: shown.clone(),
            what: "listening for submissions".into(),
            reason: e.to_string(),
        };
        let listening = async move {
            let (client, mut connection) = config.connect(NoTls).await.map_err(&failed)?;
            let (send, mut messages) = tokio::sync::mpsc::unbounded_channel();
            let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            let pump = tokio::spawn(async move {
                while let Some(message) = stream.next().await {
                    if send.send(message).is_err() {
                        break;
                    }
                }
            });
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .map_err(&failed)?;
            // A wake-up now covers whatever was submitted before LISTEN took effect.
            wake.notify_one();
            let ended = loop {
                match messages.recv().await {
                    Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Err(failed(e)),
                    None => break Ok(()),
                }
            };
            pump.abort();
            drop(client);
            ended
        };
        self.handle.spawn(listening).await.unwrap_or(Ok(()))
    }
}
