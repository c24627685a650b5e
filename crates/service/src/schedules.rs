//! Schedules: the service starts a run of a served flow at each tick of its `schedule`
//! entries (cron, UTC), through the same [`RunStarter`](super::RunStarter) as the API — run
//! here, or queued for the workers.
//!
//! **Exactly once per tick, however many services share the database.** The run a tick
//! starts carries the idempotency key `schedule:INDEX:TICK`; at most one run of a flow holds a
//! key, so every service may try every tick and one run is recorded — the others' starts
//! answer with its id. No lease decides who ticks: a service paused past a lease could not
//! start a second run anyway, and one that is up never waits for one that is gone.
//!
//! **Missed ticks.** Ticks that passed before this service started and after the schedule's
//! last recorded tick (or since a service first saw it) were missed — no service ran them;
//! the entry's `catch_up` says what to do: `none` starts nothing for them, `one` a run for the
//! latest, `all` one per tick, at most [`MAX_CATCH_UP`]. Every tick after this service
//! started is due and started when it comes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use flowhost_core::flow::{
    Cron, FlowSpec, MAX_CATCH_UP, Schedule, parse_tick, tick_key, tick_text,
};
use flowhost_core::store::Store;
use flowhost_runs::{RunDbError, ScheduleRecord};

use super::AppState;

/// The longest the scheduler sleeps before it reads the flow files again: a schedule
/// added (or changed) in the folder is seen within this.
const RESCAN: Duration = Duration::from_secs(5);

/// A schedule entry of a served flow, as `GET /v1/schedules` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScheduleView {
    /// The flow's name (runs are recorded under it).
    pub flow: String,
    /// The flow file's stem: the name the API serves it under.
    pub served_as: String,
    /// The entry's position in the flow's `schedule`, from 0.
    pub index: usize,
    /// Its cron expression.
    pub cron: String,
    /// Its `catch_up`.
    pub catch_up: &'static str,
    /// The next tick (UTC, RFC 3339); `None` for an expression that never ticks again.
    pub next_tick: Option<String>,
    /// The latest tick that started a run.
    pub last_tick: Option<String>,
    /// The run it started.
    pub last_run: Option<String>,
}

/// Every schedule entry of the served flow files, with where the database says each stands.
pub(crate) fn views(state: &AppState) -> Result<Vec<ScheduleView>, RunDbError> {
    let recorded = state.schedules.schedules()?;
    let now = SystemTime::now();
    let mut views = Vec::new();
    for (_, served_as, spec) in scheduled_flows(state) {
        for (index, schedule) in spec.schedule.iter().enumerate() {
            let record = recorded
                .iter()
                .find(|r| r.flow == spec.name && r.index == index);
            views.push(ScheduleView {
                flow: spec.name.clone(),
                served_as: served_as.clone(),
                index,
                cron: schedule.cron.clone(),
                catch_up: schedule.catch_up.as_str(),
                // A flow file whose cron does not parse is not read at all (FlowSpec::from_file).
                next_tick: Cron::parse(&schedule.cron)
                    .ok()
                    .and_then(|c| c.next_after(now))
                    .map(tick_text),
                last_tick: record.and_then(|r| r.last_tick.clone()),
                last_run: record.and_then(|r| r.last_run.clone()),
            });
        }
    }
    Ok(views)
}

/// The served flow files that have schedules: (file, stem, flow), by stem.
fn scheduled_flows(state: &AppState) -> Vec<(PathBuf, String, FlowSpec)> {
    let mut files = state.served_files();
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let stem = path.file_stem()?.to_str()?.to_owned();
            let spec = FlowSpec::from_file(&path).ok()?;
            (!spec.schedule.is_empty()).then_some((path, stem, spec))
        })
        .collect()
}

/// Ticks the served flows' schedules until `shutdown` turns true.
pub(crate) async fn tick(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut scheduler = Scheduler {
        started: SystemTime::now(),
        tried: HashMap::new(),
    };
    loop {
        let next = scheduler.pass(&state).await;
        let wait = next
            .and_then(|next| next.duration_since(SystemTime::now()).ok())
            .unwrap_or(RESCAN)
            .min(RESCAN);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

struct Scheduler {
    /// When this service started: earlier ticks not recorded were missed.
    started: SystemTime,
    /// The latest tick this service tried to start, per (flow, index): a tick whose start
    /// failed (the flow no longer validates, say) is reported once, not retried at every
    /// pass.
    tried: HashMap<(String, usize), SystemTime>,
}

impl Scheduler {
    /// Starts what is due now in every schedule; returns the earliest next tick.
    async fn pass(&mut self, state: &Arc<AppState>) -> Option<SystemTime> {
        let mut earliest: Option<SystemTime> = None;
        for (path, _, spec) in scheduled_flows(state) {
            for (index, schedule) in spec.schedule.iter().enumerate() {
                let Ok(cron) = Cron::parse(&schedule.cron) else {
                    continue;
                };
                if let Err(error) = self
                    .due(state, &path, &spec.name, index, schedule, &cron)
                    .await
                {
                    tracing::warn!(flow = %spec.name, schedule = index + 1, "schedule: {error}");
                }
                if let Some(next) = cron.next_after(SystemTime::now()) {
                    earliest = Some(earliest.map_or(next, |e| e.min(next)));
                }
            }
        }
        earliest
    }

    /// Starts the runs schedule `index` of `flow` owes now: missed ticks as its `catch_up`
    /// says, then every tick since this service started that no run was started for.
    async fn due(
        &mut self,
        state: &Arc<AppState>,
        path: &Path,
        flow: &str,
        index: usize,
        schedule: &Schedule,
        cron: &Cron,
    ) -> Result<(), RunDbError> {
        let now = SystemTime::now();
        let record = {
            let (db, flow, text) = (
                state.schedules.clone(),
                flow.to_owned(),
                schedule.cron.clone(),
            );
            blocking(move || db.schedule_seen(&flow, index, &text, &tick_text(now))).await?
        };
        let mut from = last_tick(&record);
        if let Some(tried) = self.tried.get(&(flow.to_owned(), index)) {
            from = from.max(*tried);
        }
        let missed = cron.ticks_between(from, self.started, MAX_CATCH_UP);
        let mut ticks = schedule.catch_up.pick(missed);
        ticks.extend(cron.ticks_between(from.max(self.started), now, MAX_CATCH_UP));
        for tick in ticks {
            self.tried.insert((flow.to_owned(), index), tick);
            let mut store = Store::new();
            store.extend(schedule.store.clone().into_iter().collect());
            let key = tick_key(index, tick);
            match state.starter.start(path, store, Some(&key), None, 0).await {
                Ok(started) => {
                    let (at, run) = (tick_text(tick), &started.run_id);
                    if started.existing {
                        tracing::debug!(flow = %flow, schedule = index + 1, tick = %at, run = %run, "schedule: the tick's run was already started (by another serve)");
                    } else {
                        tracing::info!(flow = %flow, schedule = index + 1, tick = %at, run = %run, "schedule started a run");
                    }
                    let (db, flow, run) =
                        (state.schedules.clone(), flow.to_owned(), started.run_id);
                    blocking(move || db.schedule_ticked(&flow, index, &tick_text(tick), &run))
                        .await?;
                }
                Err(error) => tracing::warn!(
                    flow = %flow, schedule = index + 1, tick = %tick_text(tick),
                    "schedule could not start a run: {error}"
                ),
            }
        }
        Ok(())
    }
}

/// Where a schedule's record says it got to: its last tick, else when it was first seen.
fn last_tick(record: &ScheduleRecord) -> SystemTime {
    record
        .last_tick
        .as_deref()
        .and_then(parse_tick)
        .or_else(|| parse_tick(&record.since))
        .unwrap_or_else(SystemTime::now)
}

/// Runs a schedule-database call off the async workers (SQLite calls block).
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, RunDbError> + Send + 'static,
) -> Result<T, RunDbError> {
    tokio::task::spawn_blocking(call).await.unwrap_or_else(|e| {
        Err(RunDbError::Query {
            path: PathBuf::from("schedules"),
            what: "recording a schedule".into(),
            reason: e.to_string(),
        })
    })
}
