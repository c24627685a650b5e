//! `/metrics`: Prometheus text exposition of what the service's runs do.
//!
//! Families: `flowhost_runs` (recorded runs by flow and state, counted by the run database
//! at each scrape, so it counts runs of every executor sharing the database),
//! `flowhost_runs_finished_total` (runs this service ended, by flow and state),
//! `flowhost_task_duration_seconds` (histogram of each execute and revert, by flow, task and
//! phase), `flowhost_instances_in_flight` (plugin calls going on now: one instance each),
//! `flowhost_runs_in_flight`, `flowhost_task_retries_total` (failed attempts a retry policy
//! tried again, by flow and task) and `flowhost_queue_depth` (runs queued for workers, read
//! from a PostgreSQL run database at each scrape; zero when the service runs flows itself).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use flowhost_core::events::{Event, TaskState, Transition};
use flowhost_runs::{RunDb, RunDbError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    flow: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    flow: String,
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    flow: String,
    task: String,
    phase: String,
}

/// The service's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Gauge>,
    finished: Family<RunLabels, Counter>,
    durations: Family<TaskLabels, Histogram>,
    instances: Gauge,
    in_flight: Gauge,
    retries: Family<RetryLabels, Counter>,
    queue: Gauge,
    /// Serialises scrapes: the run gauge is cleared and refilled for each.
    scrape: Mutex<()>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let runs = Family::<RunLabels, Gauge>::default();
        let finished = Family::<RunLabels, Counter>::default();
        // 0.5 ms to about 2 minutes: a warm Rust task to a long Python one.
        let durations = Family::<TaskLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 4.0, 10))
        });
        let instances = Gauge::default();
        let in_flight = Gauge::default();
        let retries = Family::<RetryLabels, Counter>::default();
        let queue: Gauge = Gauge::default();
        registry.register(
            "flowhost_runs",
            "Recorded runs in the run database, by flow and state",
            runs.clone(),
        );
        registry.register(
            "flowhost_runs_finished",
            "Runs this service ended, by flow and final state",
            finished.clone(),
        );
        registry.register_with_unit(
            "flowhost_task_duration",
            "Duration of each task execute and revert, by flow, task and phase",
            prometheus_client::registry::Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "flowhost_instances_in_flight",
            "Plugin calls (one instance each) going on now",
            instances.clone(),
        );
        registry.register(
            "flowhost_runs_in_flight",
            "Runs this service is executing now",
            in_flight.clone(),
        );
        registry.register(
            "flowhost_task_retries",
            "Failed task attempts a retry policy tried again, by flow and task",
            retries.clone(),
        );
        registry.register(
            "flowhost_queue_depth",
            "Runs queued for workers and not yet claimed (zero when this service runs flows itself)",
            queue.clone(),
        );
        Self {
            registry,
            runs,
            finished,
            durations,
            instances,
            in_flight,
            retries,
            queue,
            scrape: Mutex::new(()),
        }
    }

    /// Counts one transition.
    pub(crate) fn observe(&self, event: &Event) {
        match &event.transition {
            Transition::Flow { to, .. } if to.is_finished() => {
                self.finished
                    .get_or_create(&RunLabels {
                        flow: event.flow.clone(),
                        state: to.to_string(),
                    })
                    .inc();
            }
            Transition::Flow { .. } | Transition::Progress { .. } => {}
            Transition::Task {
                task,
                from,
                to,
                duration,
                ..
            } => {
                if matches!(to, TaskState::Running | TaskState::Reverting) {
                    self.instances.inc();
                }
                if *to == TaskState::Retrying {
                    self.retries
                        .get_or_create(&RetryLabels {
                            flow: event.flow.clone(),
                            task: task.clone(),
                        })
                        .inc();
                }
                let phase = match from {
                    TaskState::Running => "execute",
                    TaskState::Reverting => "revert",
                    _ => return,
                };
                self.instances.dec();
                let labels = TaskLabels {
                    flow: event.flow.clone(),
                    task: task.clone(),
                    phase: phase.to_owned(),
                };
                self.durations
                    .get_or_create(&labels)
                    .observe(duration.as_secs_f64());
            }
        }
    }

    /// Notes how many runs the service executes now.
    pub(crate) fn runs_in_flight(&self, n: usize) {
        self.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The exposition text, with the run counts read from `db` now, and the queue's depth
    /// when runs go to workers.
    pub(crate) fn render(
        &self,
        db: &dyn RunDb,
        queue_depth: Option<i64>,
    ) -> Result<String, RunDbError> {
        let counts = db.count()?;
        self.queue.set(queue_depth.unwrap_or(0));
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.runs.clear();
        for count in counts {
            self.runs
                .get_or_create(&RunLabels {
                    flow: count.flow,
                    state: count.state.to_string(),
                })
                .set(i64::try_from(count.runs).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        Ok(text)
    }
}
