//! Queue limits and schedules, the two things a flow file asks of every host at once.
//!
//! **Queue limits.** A flow's `concurrency` (runs executing at once) and `rate` (starts per
//! period) hold for all workers together, so they are decided where runs are claimed, in the
//! claiming transaction: it leaves every flow with limits out of its main statement, locks
//! the `flow_limits` rows of those it may take that have runs waiting ([`lock_limits`],
//! `FOR UPDATE`), then counts — in a statement of its own, whose snapshot
//! sees every claim committed before the lock was granted — what each limited flow may still
//! start. Two workers claiming a limited flow at the same moment are thus counted one after
//! the other, and never together exceed it; flows without limits are claimed as before.
//!
//! **Schedules.** [`ScheduleDb`] for PostgreSQL: where each schedule stands, for every
//! `serve` sharing the database.

use flowhost_core::flow::Rate;
use flowhost_runs::{RunDbError, ScheduleDb, ScheduleRecord};
use serde::Serialize;

use crate::PgRunDb;

/// What a limited flow may still start in a claim: `None` when nothing limits it.
pub(crate) struct Room {
    pub(crate) flow: String,
    pub(crate) room: i64,
}

/// Locks the `flow_limits` rows of the flows a claim may take (`flows`; every flow when
/// `None`) that have runs waiting, until the claim commits, then says how many runs each may
/// still start. A limited flow with nothing waiting is left unlocked, so it never holds up
/// other claims; its runs submitted meanwhile wait for the next claim (the claim's main
/// statement leaves out every flow with limits).
pub(crate) async fn lock_limits(
    tx: &tokio_postgres::Transaction<'_>,
    flows: &Option<Vec<String>>,
) -> Result<Vec<Room>, tokio_postgres::Error> {
    let locked: Vec<String> = tx
        .query(
            "SELECT l.flow FROM flow_limits l WHERE ($1::text[] IS NULL OR l.flow = ANY($1))
                AND EXISTS (SELECT 1 FROM runs r WHERE r.flow = l.flow AND r.queued
                              AND r.state IN ('PENDING', 'RUNNING', 'REVERTING')
                              AND (r.lease_owner IS NULL OR r.lease_expires < flowhost_now()))
              ORDER BY l.flow FOR UPDATE OF l",
            &[flows],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if locked.is_empty() {
        return Ok(Vec::new());
    }
    // A new statement, so a new snapshot: it sees the claims committed while we waited.
    let rows = tx
        .query(
            "SELECT l.flow,
                    l.concurrency - (SELECT count(*) FROM runs r WHERE r.flow = l.flow
                                        AND r.state IN ('PENDING', 'RUNNING', 'REVERTING')
                                        AND r.lease_owner IS NOT NULL AND r.lease_expires >= flowhost_now()),
                    l.rate_runs - (SELECT count(*) FROM runs r WHERE r.flow = l.flow
                                      AND r.claimed_at > flowhost_now() - l.rate_per_ms / 1000.0)
               FROM flow_limits l WHERE l.flow = ANY($1)",
            &[&locked],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let concurrency: Option<i64> = row.get(1);
            let rate: Option<i64> = row.get(2);
            Room {
                flow: row.get(0),
                room: concurrency
                    .into_iter()
                    .chain(rate)
                    .min()
                    .unwrap_or(0)
                    .max(0),
            }
        })
        .collect())
}

/// A limited flow as `flowhost workers` shows it: its limits, what counts against them now,
/// and how many of its queued runs they hold back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowLimitState {
    /// The flow's name.
    pub flow: String,
    /// Its `concurrency`, if set.
    pub concurrency: Option<i64>,
    /// Its `rate`, if set.
    pub rate: Option<Rate>,
    /// Runs of it executing now (a live lease).
    pub running: i64,
    /// Runs of it started within the last rate period.
    pub started_in_period: i64,
    /// Queued runs of it waiting to be claimed.
    pub waiting: i64,
    /// Queued runs the limits hold back now: all those waiting when it has no room, else
    /// those beyond its room.
    pub held_back: i64,
    /// When the rate lets the next run start, while the period is full (UTC, ISO 8601).
    pub next_start_at: Option<String>,
}

impl PgRunDb {
    /// Records flow `flow`'s queue limits as its latest submission declares them: with
    /// neither, the flow has none (any earlier are forgotten).
    pub async fn set_flow_limits(
        &self,
        flow: &str,
        concurrency: Option<i64>,
        rate: Option<Rate>,
    ) -> Result<(), RunDbError> {
        let flow = flow.to_owned();
        self.spawn("recording the flow's queue limits", move |s| async move {
            let what = "recording the flow's queue limits";
            let client = s.client(what).await?;
            if concurrency.is_none() && rate.is_none() {
                client
                    .execute("DELETE FROM flow_limits WHERE flow = $1", &[&flow])
                    .await
                    .map_err(|e| s.error(what, e))?;
                return Ok(());
            }
            let concurrency = concurrency.map(|n| n.clamp(0, i32::MAX.into()) as i32);
            let runs = rate.map(|r| r.runs.clamp(0, i32::MAX.into()) as i32);
            let per_ms = rate.map(|r| r.per_ms);
            client
                .execute(
                    "INSERT INTO flow_limits (flow, concurrency, rate_runs, rate_per_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (flow) DO UPDATE SET concurrency = excluded.concurrency,
                        rate_runs = excluded.rate_runs, rate_per_ms = excluded.rate_per_ms",
                    &[&flow, &concurrency, &runs, &per_ms],
                )
                .await
                .map_err(|e| s.error(what, e))
                .map(drop)
        })
        .await
    }

    /// Every flow with queue limits, with what counts against them now and what they hold
    /// back.
    pub fn flow_limits(&self) -> Result<Vec<FlowLimitState>, RunDbError> {
        self.block("reading queue limits", move |s| async move {
            let what = "reading queue limits";
            let client = s.reader(what).await?;
            let rows = client
                .query(
                    "SELECT l.flow, l.concurrency, l.rate_runs, l.rate_per_ms,
                            (SELECT count(*) FROM runs r WHERE r.flow = l.flow
                                AND r.state IN ('PENDING', 'RUNNING', 'REVERTING')
                                AND r.lease_owner IS NOT NULL AND r.lease_expires >= flowhost_now()),
                            (SELECT count(*) FROM runs r WHERE r.flow = l.flow
                                AND r.claimed_at > flowhost_now() - l.rate_per_ms / 1000.0),
                            (SELECT count(*) FROM runs r WHERE r.flow = l.flow AND r.queued
                                AND r.state IN ('PENDING', 'RUNNING', 'REVERTING')
                                AND (r.lease_owner IS NULL OR r.lease_expires < flowhost_now())),
                            (SELECT flowhost_ts(r.claimed_at + l.rate_per_ms / 1000.0) FROM runs r
                              WHERE r.flow = l.flow AND r.claimed_at > flowhost_now() - l.rate_per_ms / 1000.0
                              ORDER BY r.claimed_at
                              OFFSET GREATEST((SELECT count(*) FROM runs r2 WHERE r2.flow = l.flow
                                        AND r2.claimed_at > flowhost_now() - l.rate_per_ms / 1000.0) - l.rate_runs, 0)
                              LIMIT 1)
                       FROM flow_limits l ORDER BY l.flow",
                    &[],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(rows
                .iter()
                .map(|row| {
                    let concurrency: Option<i32> = row.get(1);
                    let rate_runs: Option<i32> = row.get(2);
                    let per_ms: Option<i64> = row.get(3);
                    let (running, started, waiting): (i64, i64, i64) =
                        (row.get(4), row.get(5), row.get(6));
                    let rate = rate_runs.zip(per_ms).map(|(runs, per_ms)| Rate {
                        runs: runs.into(),
                        per_ms,
                    });
                    let rate_full = rate.is_some_and(|r| started >= r.runs);
                    let room = concurrency
                        .map(|n| i64::from(n) - running)
                        .into_iter()
                        .chain(rate.map(|r| r.runs - started))
                        .min()
                        .unwrap_or(i64::MAX)
                        .max(0);
                    FlowLimitState {
                        flow: row.get(0),
                        concurrency: concurrency.map(i64::from),
                        rate,
                        running,
                        started_in_period: started,
                        waiting,
                        held_back: (waiting - room).max(0),
                        next_start_at: if rate_full { row.get(7) } else { None },
                    }
                })
                .collect())
        })
    }
}

impl ScheduleDb for PgRunDb {
    fn schedule_seen(
        &self,
        flow: &str,
        index: usize,
        cron: &str,
        now: &str,
    ) -> Result<ScheduleRecord, RunDbError> {
        let (flow, cron, now) = (flow.to_owned(), cron.to_owned(), now.to_owned());
        let index = index as i32;
        self.block("recording a schedule", move |s| async move {
            let what = "recording a schedule";
            let client = s.client(what).await?;
            client
                .execute(
                    "INSERT INTO schedules (flow, idx, cron, since) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (flow, idx) DO UPDATE SET cron = excluded.cron
                      WHERE schedules.cron <> excluded.cron",
                    &[&flow, &index, &cron, &now],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            let row = client
                .query_one(
                    "SELECT flow, idx, cron, since, last_tick, last_run FROM schedules WHERE flow = $1 AND idx = $2",
                    &[&flow, &index],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(schedule_row(&row))
        })
    }

    fn schedule_ticked(
        &self,
        flow: &str,
        index: usize,
        tick: &str,
        run_id: &str,
    ) -> Result<(), RunDbError> {
        let (flow, tick, run) = (flow.to_owned(), tick.to_owned(), run_id.to_owned());
        let index = index as i32;
        self.block("recording a schedule's tick", move |s| async move {
            let what = "recording a schedule's tick";
            let client = s.client(what).await?;
            client
                .execute(
                    "UPDATE schedules SET last_tick = $3, last_run = $4
                      WHERE flow = $1 AND idx = $2 AND (last_tick IS NULL OR last_tick < $3 COLLATE \"C\")",
                    &[&flow, &index, &tick, &run],
                )
                .await
                .map_err(|e| s.error(what, e))
                .map(drop)
        })
    }

    fn schedules(&self) -> Result<Vec<ScheduleRecord>, RunDbError> {
        self.block("listing schedules", move |s| async move {
            let what = "listing schedules";
            let client = s.reader(what).await?;
            let rows = client
                .query(
                    "SELECT flow, idx, cron, since, last_tick, last_run FROM schedules ORDER BY flow, idx",
                    &[],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            Ok(rows.iter().map(schedule_row).collect())
        })
    }
}

fn schedule_row(row: &tokio_postgres::Row) -> ScheduleRecord {
    ScheduleRecord {
        flow: row.get(0),
        index: row.get::<_, i32>(1) as usize,
        cron: row.get(2),
        since: row.get(3),
        last_tick: row.get(4),
        last_run: row.get(5),
    }
}
