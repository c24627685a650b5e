//! The read side of the row code: a run's rows, fetched by each backend in its own dialect,
//! turned into [`RunSummary`], [`RunRecord`] (its tasks with their history) and
//! [`LeaseHolder`]. Separate from the write side because it is what `list`, `get`, `prune`,
//! the lease checks and the fence messages share, and because the only thing that differs
//! between the backends here is how a value comes out of a row, never what it means.
//!
//! A backend runs its queries over the column lists here ([`task_columns`], …), hands each
//! row over through [`Columns`], and calls [`RunRows::record`] or [`SummaryColumns::summary`]:
//! which column is where is known once, in the `read` functions, and what is stored as JSON
//! or as a state name is parsed once, with the same [`RowError`] for a damaged value in
//! either backend. Reading happens in two steps, fetch then build, so that a backend's own
//! errors (a value of the wrong type) and a damaged row stay apart.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    ElementRecord, LeaseHolder, Omitted, Origin, RunDbError, RunRecord, RunSummary, StateChange,
    TaskRecord, holder_may_be_alive,
};

/// A column holding what no flowhost writes: a damaged or hand-edited run database.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// A JSON column that does not parse as what it records.
    #[error("damaged JSON column `{column}`: {source}")]
    Json {
        /// The column, `table.column`.
        column: &'static str,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A state column naming no state.
    #[error("unknown state `{text}` in column `{column}`")]
    State {
        /// The column, `table.column`.
        column: &'static str,
        /// What it holds.
        text: String,
    },
}

impl RowError {
    /// The run database's error for a damaged row met while doing `what` with the database
    /// at `path`: a failed query, as both backends report one.
    pub fn query(self, path: &Path, what: &str) -> RunDbError {
        RunDbError::Query {
            path: path.to_path_buf(),
            what: what.to_owned(),
            reason: self.to_string(),
        }
    }
}

/// The select-list text reading value column `column` only when its text is at most `bound`
/// bytes (a bind parameter, such as `?2` or `$2::bigint`; NULL reads it whatever its
/// length), followed by its length: two columns, read by [`Bounded::read`]. `octet_length` is
/// answered from the row's header in SQLite and from the TOAST pointer in PostgreSQL, so a
/// value left out is never read.
fn bounded(column: &str, bound: &str) -> String {
    format!(
        "CASE WHEN {bound} IS NULL OR octet_length({column}) <= {bound} THEN {column} END, \
         CAST(octet_length({column}) AS BIGINT)"
    )
}

/// The columns a run's record reads besides its summary, in order, after the summary's; its
/// stores bounded by parameter `bound` (see [`bounded`]).
pub fn origin_columns(bound: &str) -> String {
    format!(
        "flow_path, flow_hash, plugins, {}, {}",
        bounded("initial_store", bound),
        bounded("final_store", bound)
    )
}

/// The columns [`TransitionColumns`] is read from, in order: a task's row of `transitions`.
pub const TRANSITION_COLUMNS: &str = "task_idx, from_state, to_state, at, duration_ms, attempt, error, backoff_ms, iterations, element";

/// The columns [`ElementColumns`] is read from, in order: a row of `elements`.
pub const ELEMENT_COLUMNS: &str = "idx, element, state, args, outcome, result, error";

/// The columns [`TaskColumns`] is read from, in order: a row of `tasks`, what the plugin was
/// given and produced bounded by parameter `bound` (see [`bounded`]).
pub fn task_columns(bound: &str) -> String {
    format!(
        "idx, name, state, {}, {}, {}, error, revert_error, duration_ms, revert_duration_ms, \
         executions, reverts, attempt, retry_at, iterations, {}, {}",
        bounded("args", bound),
        bounded("outcome", bound),
        bounded("result", bound),
        bounded("revert_result", bound),
        bounded("progress", bound),
    )
}

/// One fetched row as its backend hands over its values, by position: the only thing about
/// reading a row that differs between the dialects (integer widths, and whether a value of
/// the wrong type is an error or a bug). The readers below know which column is where, once
/// for both backends, in the order of the column lists they fetch.
pub trait Columns {
    /// The backend's error for a value it cannot convert.
    type Error;
    /// A text column.
    fn text(&self, at: usize) -> Result<String, Self::Error>;
    /// A text column that may be NULL.
    fn maybe_text(&self, at: usize) -> Result<Option<String>, Self::Error>;
    /// A floating-point column (times in seconds, durations in milliseconds).
    fn real(&self, at: usize) -> Result<f64, Self::Error>;
    /// A floating-point column that may be NULL.
    fn maybe_real(&self, at: usize) -> Result<Option<f64>, Self::Error>;
    /// A position in the flow (`idx`, `task_idx`).
    fn index(&self, at: usize) -> Result<usize, Self::Error>;
    /// A count or attempt number.
    fn count(&self, at: usize) -> Result<u32, Self::Error>;
    /// A count or attempt number that may be NULL.
    fn maybe_count(&self, at: usize) -> Result<Option<u32>, Self::Error>;
    /// A process id (`lease_pid`), which may be NULL.
    fn pid(&self, at: usize) -> Result<Option<u32>, Self::Error>;
    /// A fencing token (`lease_token`).
    fn token(&self, at: usize) -> Result<i64, Self::Error>;
    /// A length in bytes (`octet_length`), NULL for a NULL value.
    fn maybe_bytes(&self, at: usize) -> Result<Option<i64>, Self::Error>;
}

/// A value column read through [`bounded`]: its text, unless it was longer than the bound,
/// and its length.
pub struct Bounded {
    text: Option<String>,
    bytes: Option<i64>,
}

impl Bounded {
    /// The two columns from `at`: the bounded text and the length.
    fn read<R: Columns>(row: &R, at: usize) -> Result<Self, R::Error> {
        Ok(Self {
            text: row.maybe_text(at)?,
            bytes: row.maybe_bytes(at + 1)?,
        })
    }

    /// The text, or `None` — noted in `omitted` as `name` when the value exists but was
    /// longer than the bound.
    fn take(self, name: impl FnOnce() -> String, omitted: &mut Vec<Omitted>) -> Option<String> {
        if self.text.is_none()
            && let Some(bytes) = self.bytes
        {
            omitted.push(Omitted {
                value: name(),
                bytes: u64::try_from(bytes).unwrap_or_default(),
            });
        }
        self.text
    }
}

/// A run row's lease columns while somebody holds the lease (`lease_owner` is set); the
/// others may be NULL in a database written by hand.
pub struct LeaseColumns {
    owner: String,
    host: Option<String>,
    pid: Option<u32>,
    /// `lease_since` as UTC ISO 8601 text.
    since: Option<String>,
    /// `lease_expires` as UTC ISO 8601 text.
    expires: Option<String>,
    token: i64,
    /// `lease_expires` in unix seconds.
    expires_at: Option<f64>,
}

/// Who holds a run's lease, and until when (unix seconds).
pub struct Held {
    /// The holder, as messages and listings show it.
    pub holder: LeaseHolder,
    /// When the lease expires unless renewed.
    pub expires: f64,
}

impl LeaseColumns {
    /// The lease columns starting at `at`: `lease_owner, lease_host, lease_pid, lease_since`
    /// and `lease_expires` as text, `lease_token, lease_expires` in seconds. `None` when
    /// nobody holds the lease.
    pub fn read<R: Columns>(row: &R, at: usize) -> Result<Option<Self>, R::Error> {
        let Some(owner) = row.maybe_text(at)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            expires_at: row.maybe_real(at + 6)?,
            owner,
            host: row.maybe_text(at + 1)?,
            pid: row.pid(at + 2)?,
            since: row.maybe_text(at + 3)?,
            expires: row.maybe_text(at + 4)?,
            token: row.token(at + 5)?,
        }))
    }

    /// The holder these columns record; a missing value reads as empty (an expiry as 0:
    /// long expired).
    pub fn held(self) -> Held {
        Held {
            expires: self.expires_at.unwrap_or_default(),
            holder: LeaseHolder {
                owner: self.owner,
                host: self.host.unwrap_or_default(),
                pid: self.pid.unwrap_or_default(),
                since: self.since.unwrap_or_default(),
                expires: self.expires.unwrap_or_default(),
                token: self.token,
            },
        }
    }
}

impl Held {
    /// Whether the lease is live at `now` (unix seconds on the clock the backend judges
    /// leases by): unexpired, and its holder not known to be dead.
    pub fn live(&self, now: f64) -> bool {
        self.expires > now && holder_may_be_alive(&self.holder.host, self.holder.pid)
    }
}

/// How many columns a run's summary takes, first in its row: `id, flow, state, created_at,
/// updated_at, finished_at, exit_reason, resumes`, then the lease's seven, then
/// `idempotency_key`.
pub const SUMMARY_WIDTH: usize = 17;

/// A run row's summary columns.
pub struct SummaryColumns {
    id: String,
    flow: String,
    state: String,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
    exit_reason: Option<String>,
    resumes: u32,
    lease: Option<LeaseColumns>,
    idempotency_key: Option<String>,
    priority: i64,
    /// The time the lease is judged at.
    now: f64,
}

impl SummaryColumns {
    /// The summary's [`SUMMARY_WIDTH`] columns, first in `row`; its lease is judged at `now`:
    /// the database's clock (PostgreSQL, read in the same row) or this host's (SQLite).
    pub fn read<R: Columns>(row: &R, now: f64) -> Result<Self, R::Error> {
        Ok(Self {
            lease: LeaseColumns::read(row, 8)?,
            id: row.text(0)?,
            flow: row.text(1)?,
            state: row.text(2)?,
            created_at: row.text(3)?,
            updated_at: row.text(4)?,
            finished_at: row.maybe_text(5)?,
            exit_reason: row.maybe_text(6)?,
            resumes: row.count(7)?,
            idempotency_key: row.maybe_text(15)?,
            priority: row.token(16)?,
            now,
        })
    }

    /// The run as a listing shows it, its lease only while live.
    pub fn summary(self) -> Result<RunSummary, RowError> {
        let now = self.now;
        Ok(RunSummary {
            state: state("runs.state", self.state)?,
            id: self.id,
            flow: self.flow,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            exit_reason: self.exit_reason,
            resumes: self.resumes,
            idempotency_key: self.idempotency_key,
            priority: i32::try_from(self.priority).unwrap_or(if self.priority < 0 {
                i32::MIN
            } else {
                i32::MAX
            }),
            lease: self
                .lease
                .map(LeaseColumns::held)
                .filter(|held| held.live(now))
                .map(|held| held.holder),
        })
    }
}

/// A run row's columns for its full record: the summary's, then [`origin_columns`].
pub struct RunColumns {
    summary: SummaryColumns,
    flow_path: Option<String>,
    flow_hash: Option<String>,
    plugins: Option<String>,
    initial_store: Bounded,
    final_store: Bounded,
}

impl RunColumns {
    /// The summary (judged at `now`, see [`SummaryColumns::read`]), then [`origin_columns`]
    /// from `origin`, where the backend's row places them.
    pub fn read<R: Columns>(row: &R, now: f64, origin: usize) -> Result<Self, R::Error> {
        Ok(Self {
            summary: SummaryColumns::read(row, now)?,
            flow_path: row.maybe_text(origin)?,
            flow_hash: row.maybe_text(origin + 1)?,
            plugins: row.maybe_text(origin + 2)?,
            initial_store: Bounded::read(row, origin + 3)?,
            final_store: Bounded::read(row, origin + 5)?,
        })
    }
}

/// A task's row of `transitions`, [`TRANSITION_COLUMNS`].
pub struct TransitionColumns {
    task: usize,
    from: String,
    to: String,
    at: String,
    duration_ms: f64,
    attempt: Option<u32>,
    error: Option<String>,
    backoff_ms: Option<f64>,
    iterations: Option<String>,
    element: Option<i64>,
}

impl TransitionColumns {
    /// A row fetched with [`TRANSITION_COLUMNS`].
    pub fn read<R: Columns>(row: &R) -> Result<Self, R::Error> {
        Ok(Self {
            task: row.index(0)?,
            from: row.text(1)?,
            to: row.text(2)?,
            at: row.text(3)?,
            duration_ms: row.real(4)?,
            attempt: row.maybe_count(5)?,
            error: row.maybe_text(6)?,
            backoff_ms: row.maybe_real(7)?,
            iterations: row.maybe_text(8)?,
            element: row.maybe_bytes(9)?,
        })
    }
}

/// A row of `tasks`, [`task_columns`].
pub struct TaskColumns {
    index: usize,
    name: String,
    state: String,
    args: Bounded,
    outcome: Bounded,
    result: Bounded,
    error: Option<String>,
    revert_error: Option<String>,
    duration_ms: Option<f64>,
    revert_duration_ms: Option<f64>,
    executions: u32,
    reverts: u32,
    attempt: u32,
    retry_at: Option<f64>,
    iterations: Option<String>,
    revert_result: Bounded,
    progress: Bounded,
}

impl TaskColumns {
    /// A row fetched with [`task_columns`].
    pub fn read<R: Columns>(row: &R) -> Result<Self, R::Error> {
        Ok(Self {
            index: row.index(0)?,
            name: row.text(1)?,
            state: row.text(2)?,
            args: Bounded::read(row, 3)?,
            outcome: Bounded::read(row, 5)?,
            result: Bounded::read(row, 7)?,
            error: row.maybe_text(9)?,
            revert_error: row.maybe_text(10)?,
            duration_ms: row.maybe_real(11)?,
            revert_duration_ms: row.maybe_real(12)?,
            executions: row.count(13)?,
            reverts: row.count(14)?,
            attempt: row.count(15)?,
            retry_at: row.maybe_real(16)?,
            iterations: row.maybe_text(17)?,
            revert_result: Bounded::read(row, 18)?,
            progress: Bounded::read(row, 20)?,
        })
    }
}

/// A row of `elements`, [`ELEMENT_COLUMNS`]: one element's call of a map's task.
pub struct ElementColumns {
    index: usize,
    element: i64,
    state: String,
    args: Option<String>,
    outcome: Option<String>,
    result: Option<String>,
    error: Option<String>,
}

impl ElementColumns {
    /// A row fetched with [`ELEMENT_COLUMNS`].
    pub fn read<R: Columns>(row: &R) -> Result<Self, R::Error> {
        Ok(Self {
            index: row.index(0)?,
            element: row.token(1)?,
            state: row.text(2)?,
            args: row.maybe_text(3)?,
            outcome: row.maybe_text(4)?,
            result: row.maybe_text(5)?,
            error: row.maybe_text(6)?,
        })
    }

    fn record(self) -> Result<ElementRecord, RowError> {
        Ok(ElementRecord {
            index: self.index,
            element: u32::try_from(self.element).unwrap_or(u32::MAX),
            state: state("elements.state", self.state)?,
            args: self.args,
            outcome: parse("elements.outcome", self.outcome)?,
            result: parse("elements.result", self.result)?,
            error: parse("elements.error", self.error)?,
        })
    }
}

/// Every row of one run, as fetched: its `runs` row, its tasks' transitions in the order
/// they were recorded, and its tasks in flow order.
pub struct RunRows {
    /// The `runs` row.
    pub run: RunColumns,
    /// Its tasks' transitions, oldest first.
    pub transitions: Vec<TransitionColumns>,
    /// Its tasks, by index.
    pub tasks: Vec<TaskColumns>,
    /// Its map elements' calls, by task and element.
    pub elements: Vec<ElementColumns>,
}

impl RunRows {
    /// The run's full record, each task with its own transitions as its history, the values
    /// the bound left out named in [`RunRecord::omitted`]. Columns are parsed in the order
    /// they were fetched, so the first damaged one is the one named.
    pub fn record(self) -> Result<RunRecord, RowError> {
        let mut omitted = Vec::new();
        let RunColumns {
            summary,
            flow_path,
            flow_hash,
            plugins,
            initial_store,
            final_store,
        } = self.run;
        let summary = summary.summary()?;
        let origin = Origin {
            flow_path: flow_path.map(PathBuf::from),
            flow_hash,
            plugins: parse("runs.plugins", plugins)?.unwrap_or_default(),
        };
        let initial_store = initial_store.take(|| "initial_store".into(), &mut omitted);
        let initial_store = parse("runs.initial_store", initial_store)?.unwrap_or_default();
        let final_store = final_store.take(|| "final_store".into(), &mut omitted);
        let final_store = parse("runs.final_store", final_store)?;
        let changes = self
            .transitions
            .into_iter()
            .map(|t| t.change())
            .collect::<Result<Vec<_>, _>>()?;
        let tasks = self
            .tasks
            .into_iter()
            .map(|task| {
                let history = changes
                    .iter()
                    .filter(|(i, _)| *i == task.index)
                    .map(|(_, c)| c.clone())
                    .collect();
                task.record(history, &mut omitted)
            })
            .collect::<Result<_, _>>()?;
        let elements = self
            .elements
            .into_iter()
            .map(ElementColumns::record)
            .collect::<Result<_, _>>()?;
        Ok(RunRecord {
            summary,
            origin,
            initial_store,
            final_store,
            tasks,
            elements,
            omitted,
        })
    }
}

impl TransitionColumns {
    /// The state change, with the index of the task it belongs to.
    fn change(self) -> Result<(usize, StateChange), RowError> {
        Ok((
            self.task,
            StateChange {
                from: state("transitions.from_state", self.from)?,
                to: state("transitions.to_state", self.to)?,
                at: self.at,
                duration_ms: self.duration_ms,
                attempt: self.attempt,
                error: parse("transitions.error", self.error)?,
                backoff_ms: self.backoff_ms,
                iterations: parse("transitions.iterations", self.iterations)?.unwrap_or_default(),
                element: self.element.and_then(|e| u32::try_from(e).ok()),
            },
        ))
    }
}

impl TaskColumns {
    /// The task's record with `history`, its state changes oldest first; the values the
    /// bound left out are added to `omitted`.
    fn record(
        self,
        history: Vec<StateChange>,
        omitted: &mut Vec<Omitted>,
    ) -> Result<TaskRecord, RowError> {
        let index = self.index;
        let mut take =
            |value: Bounded, name: &str| value.take(|| format!("tasks[{index}].{name}"), omitted);
        let args = take(self.args, "args");
        let outcome = take(self.outcome, "outcome");
        let result = take(self.result, "result");
        let revert_result = take(self.revert_result, "revert_result");
        let progress = take(self.progress, "progress");
        Ok(TaskRecord {
            index,
            name: self.name,
            state: state("tasks.state", self.state)?,
            args,
            outcome: parse("tasks.outcome", outcome)?,
            result: parse("tasks.result", result)?,
            error: parse("tasks.error", self.error)?,
            revert_error: parse("tasks.revert_error", self.revert_error)?,
            duration_ms: self.duration_ms,
            revert_duration_ms: self.revert_duration_ms,
            executions: self.executions,
            reverts: self.reverts,
            attempt: self.attempt,
            retry_at: self.retry_at,
            iterations: parse("tasks.iterations", self.iterations)?.unwrap_or_default(),
            revert_result: parse("tasks.revert_result", revert_result)?,
            progress: parse("tasks.progress", progress)?,
            history,
        })
    }
}

/// A JSON column's value; NULL is `None`.
fn parse<T: DeserializeOwned>(
    column: &'static str,
    text: Option<String>,
) -> Result<Option<T>, RowError> {
    text.map(|t| serde_json::from_str(&t).map_err(|source| RowError::Json { column, source }))
        .transpose()
}

/// A state column's value (a flow's or a task's state, by its name).
pub fn state<T: DeserializeOwned>(column: &'static str, text: String) -> Result<T, RowError> {
    serde_json::from_value(Value::String(text.clone()))
        .map_err(|_| RowError::State { column, text })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use flowhost_core::events::{FlowState, TaskState};
    use serde_json::json;

    use super::*;

    /// A row fetched with a column list, its values given by column name (absent: NULL), so
    /// the tests also check that each reader's positions match the list it names.
    struct Named {
        names: Vec<&'static str>,
        values: BTreeMap<&'static str, Value>,
    }

    impl Named {
        /// `columns` as the backends select them; a bounded value's two columns are named
        /// `value` and `value.bytes`.
        fn new(columns: &str, values: &[(&'static str, Value)]) -> Self {
            let names: Vec<&'static str> = columns
                .split(',')
                .map(str::trim)
                .map(|column| {
                    let name = if let Some(rest) = column.strip_prefix("CAST(octet_length(") {
                        format!("{}.bytes", &rest[..rest.find(')').unwrap()])
                    } else if let Some(then) = column.find(" THEN ") {
                        column[then + 6..column.len() - 4].to_owned()
                    } else {
                        column.to_owned()
                    };
                    &*name.leak()
                })
                .collect();
            for (name, _) in values {
                assert!(names.contains(name), "{name} is not in {columns}");
            }
            Self {
                names,
                values: values.iter().cloned().collect(),
            }
        }

        fn value(&self, at: usize) -> Value {
            self.values
                .get(self.names[at])
                .cloned()
                .unwrap_or(Value::Null)
        }
    }

    impl Columns for Named {
        type Error = String;
        fn text(&self, at: usize) -> Result<String, String> {
            self.maybe_text(at)?
                .ok_or_else(|| format!("{} is NULL", self.names[at]))
        }
        fn maybe_text(&self, at: usize) -> Result<Option<String>, String> {
            Ok(self.value(at).as_str().map(str::to_owned))
        }
        fn real(&self, at: usize) -> Result<f64, String> {
            Ok(self.maybe_real(at)?.unwrap_or_default())
        }
        fn maybe_real(&self, at: usize) -> Result<Option<f64>, String> {
            Ok(self.value(at).as_f64())
        }
        fn index(&self, at: usize) -> Result<usize, String> {
            Ok(self.count(at)? as usize)
        }
        fn count(&self, at: usize) -> Result<u32, String> {
            Ok(self.maybe_count(at)?.unwrap_or_default())
        }
        fn maybe_count(&self, at: usize) -> Result<Option<u32>, String> {
            Ok(self.value(at).as_u64().map(|n| n as u32))
        }
        fn pid(&self, at: usize) -> Result<Option<u32>, String> {
            self.maybe_count(at)
        }
        fn token(&self, at: usize) -> Result<i64, String> {
            Ok(self.value(at).as_i64().unwrap_or_default())
        }
        fn maybe_bytes(&self, at: usize) -> Result<Option<i64>, String> {
            Ok(self.value(at).as_i64())
        }
    }

    /// The summary's columns as the backends list them (their SQL formats the times).
    const SUMMARY: &str = "id, flow, state, created_at, updated_at, finished_at, exit_reason, \
        resumes, lease_owner, lease_host, lease_pid, lease_since, lease_expires_text, \
        lease_token, lease_expires, idempotency_key, priority";

    fn run(state: &str, lease: &[(&'static str, Value)], plugins: &str) -> RunColumns {
        let columns = format!("{SUMMARY}, {}", origin_columns("?2"));
        let mut values = vec![
            ("id", json!("r")),
            ("flow", json!("f")),
            ("state", json!(state)),
            ("created_at", json!("c")),
            ("updated_at", json!("u")),
            ("resumes", json!(2)),
            ("flow_path", json!("/f.toml")),
            ("plugins", json!(plugins)),
            ("initial_store", json!("{\"seed\": 1}")),
        ];
        values.extend_from_slice(lease);
        let row = Named::new(&columns, &values);
        assert_eq!(row.names.len(), SUMMARY_WIDTH + 7);
        RunColumns::read(&row, 100.0, SUMMARY_WIDTH).unwrap()
    }

    fn transition(task: u32, from: &str, to: &str) -> TransitionColumns {
        let row = Named::new(
            TRANSITION_COLUMNS,
            &[
                ("task_idx", json!(task)),
                ("from_state", json!(from)),
                ("to_state", json!(to)),
                ("at", json!("t")),
                ("duration_ms", json!(1.5)),
                ("attempt", json!(1)),
                ("iterations", json!("[2, 1]")),
            ],
        );
        TransitionColumns::read(&row).unwrap()
    }

    fn task(index: u32, state: &str) -> TaskColumns {
        let row = Named::new(
            &task_columns("?2"),
            &[
                ("idx", json!(index)),
                ("name", json!(format!("t{index}"))),
                ("state", json!(state)),
                ("result", json!("{\"a\": 1}")),
                ("executions", json!(1)),
                ("reverts", json!(0)),
                ("attempt", json!(3)),
                ("retry_at", json!(7.0)),
                ("iterations", json!("[2, 1]")),
                ("progress", json!("{\"fraction\": 0.5}")),
            ],
        );
        TaskColumns::read(&row).unwrap()
    }

    #[test]
    fn each_task_gets_its_own_transitions_in_order_and_its_columns_parsed() {
        let record = RunRows {
            run: run("RUNNING", &[], "[]"),
            transitions: vec![
                transition(0, "PENDING", "RUNNING"),
                transition(1, "PENDING", "RUNNING"),
                transition(0, "RUNNING", "SUCCESS"),
            ],
            tasks: vec![task(0, "SUCCESS"), task(1, "RUNNING")],
            elements: vec![],
        }
        .record()
        .unwrap();
        assert_eq!(record.summary.state, FlowState::Running);
        assert_eq!(record.summary.resumes, 2);
        assert_eq!(record.origin.flow_path, Some(PathBuf::from("/f.toml")));
        assert_eq!(record.initial_store.fetch("seed"), Some(&json!(1)));
        let first = &record.tasks[0];
        assert_eq!(
            first
                .history
                .iter()
                .map(|c| (c.from, c.to, c.attempt))
                .collect::<Vec<_>>(),
            [
                (TaskState::Pending, TaskState::Running, Some(1)),
                (TaskState::Running, TaskState::Success, Some(1))
            ]
        );
        assert_eq!(first.history[0].iterations, [2, 1]);
        assert_eq!(first.result, Some(json!({"a": 1})));
        assert_eq!((first.attempt, first.retry_at), (3, Some(7.0)));
        assert_eq!(first.iterations, [2, 1]);
        assert_eq!(first.progress.as_ref().map(|p| p.fraction), Some(0.5));
        assert_eq!(record.tasks[1].name, "t1");
        assert_eq!(record.tasks[1].history.len(), 1);
    }

    #[test]
    fn a_value_longer_than_the_bound_reads_as_null_and_is_named_with_its_length() {
        let row = Named::new(
            &task_columns("?2"),
            &[
                ("idx", json!(1)),
                ("name", json!("t1")),
                ("state", json!("SUCCESS")),
                ("args", json!("{}")),
                ("args.bytes", json!(2)),
                ("result.bytes", json!(5000)),
            ],
        );
        let record = RunRows {
            run: run("SUCCESS", &[], "[]"),
            transitions: vec![],
            tasks: vec![TaskColumns::read(&row).unwrap()],
            elements: vec![],
        }
        .record()
        .unwrap();
        assert_eq!(record.tasks[0].args.as_deref(), Some("{}"));
        assert_eq!(record.tasks[0].result, None);
        assert_eq!(
            record.omitted,
            [Omitted {
                value: "tasks[1].result".into(),
                bytes: 5000
            }]
        );
    }

    #[test]
    fn a_damaged_column_is_named() {
        let rows = |run| RunRows {
            run,
            transitions: vec![],
            tasks: vec![],
            elements: vec![],
        };
        let error = rows(run("RUNNING", &[], "[not json")).record().unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("damaged JSON column `runs.plugins`: "),
            "{error}"
        );
        let error = rows(run("DANCING", &[], "[]")).record().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown state `DANCING` in column `runs.state`"
        );
    }

    #[test]
    fn only_a_live_lease_is_listed() {
        let listed = |expires: Option<f64>| {
            let mut lease = vec![
                ("lease_owner", json!("o")),
                ("lease_host", json!(crate::host_name())),
                ("lease_pid", json!(std::process::id())),
                ("lease_token", json!(2)),
            ];
            lease.extend(expires.map(|at| ("lease_expires", json!(at))));
            run("RUNNING", &lease, "[]")
                .summary
                .summary()
                .unwrap()
                .lease
        };
        assert_eq!(listed(Some(200.0)).map(|h| h.token), Some(2));
        assert_eq!(listed(Some(50.0)), None, "expired");
        assert_eq!(listed(None), None, "no expiry reads as expired");
        let unheld = run("RUNNING", &[], "[]").summary.summary().unwrap();
        assert_eq!(unheld.lease, None);
    }
}
