//! The run database contract's backends, each fresh for one test — SQLite in a temporary
//! folder, PostgreSQL on a server of the test's own ([`Postgres`]) — behind one type, so that
//! one test of the [`RunDb`] contract runs against both; and the runs, owners and
//! transitions such a test writes through the API.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flowhost::runs::{
    Durability, NewRun, Origin, Owner, PgRunDb, PruneFilter, Pruned, RunDb, RunDbError, SqliteRunDb,
};
use flowhost::{Event, FlowState, Outcome, Store, TaskError, TaskState, Transition};
use serde_json::{Value, json};

use crate::{Postgres, store};

/// Which backend a [`ContractDb`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// [`SqliteRunDb`], one file.
    Sqlite,
    /// [`PgRunDb`], on a server of the test's own.
    Postgres,
}

/// The backend itself, for what is not in the trait (a dry run of prune).
enum Concrete {
    Sqlite(Arc<SqliteRunDb>),
    Postgres(Arc<PgRunDb>),
}

/// An empty run database of one backend, removed (its server stopped) on drop. Derefs to
/// the [`RunDb`] under test.
pub struct ContractDb {
    db: Arc<dyn RunDb>,
    concrete: Concrete,
    _dir: Option<tempfile::TempDir>,
    _server: Option<Postgres>,
}

impl ContractDb {
    /// A fresh SQLite run database in a temporary folder.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a folder for the database");
        let db = Arc::new(
            SqliteRunDb::open(&dir.path().join("runs.db"), true, Durability::Normal)
                .expect("open the SQLite run database"),
        );
        Self {
            db: db.clone(),
            concrete: Concrete::Sqlite(db),
            _dir: Some(dir),
            _server: None,
        }
    }

    /// A fresh PostgreSQL run database, on a server started for it.
    pub fn postgres() -> Self {
        let server = Postgres::start();
        let db = Arc::new(PgRunDb::connect(&server.url()).expect("connect to PostgreSQL"));
        Self {
            db: db.clone(),
            concrete: Concrete::Postgres(db),
            _dir: None,
            _server: Some(server),
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.concrete {
            Concrete::Sqlite(_) => Backend::Sqlite,
            Concrete::Postgres(_) => Backend::Postgres,
        }
    }

    /// The database, to hand to an [`flowhost::runs::Executor`].
    pub fn shared(&self) -> Arc<dyn RunDb> {
        self.db.clone()
    }

    /// What pruning `filter` matches: with `dry_run`, nothing is deleted (`prune_runs` of
    /// either backend).
    pub fn prune_runs(&self, filter: &PruneFilter, dry_run: bool) -> Result<Pruned, RunDbError> {
        match &self.concrete {
            Concrete::Sqlite(db) => db.prune_runs(filter, dry_run),
            Concrete::Postgres(db) => db.prune_runs(filter, dry_run),
        }
    }
}

impl Deref for ContractDb {
    type Target = dyn RunDb;
    fn deref(&self) -> &(dyn RunDb + 'static) {
        self.db.as_ref()
    }
}

/// Run `id` of flow `contract`, about to start with `tasks` PENDING, from the store
/// `seed = 1`; built in code, so without a flow file or plugins.
pub fn new_run(id: &str, tasks: &[&str]) -> NewRun {
    NewRun {
        id: id.to_owned(),
        flow: "contract".to_owned(),
        origin: Origin {
            flow_path: None,
            flow_hash: None,
            plugins: Vec::new(),
        },
        initial_store: store(&[("seed", json!(1))]),
        tasks: tasks.iter().map(|t| (*t).to_owned()).collect(),
        key: None,
        priority: 0,
    }
}

/// An executor on another host: its lease counts as live until it expires, whatever becomes
/// of processes here.
pub fn elsewhere(name: &str) -> Owner {
    Owner {
        id: format!("{name}@elsewhere"),
        host: "elsewhere".to_owned(),
        pid: 1,
    }
}

/// Run `id`'s flow moving `from` → `to` now; a finished run carries its final store.
pub fn flow_move(id: &str, from: FlowState, to: FlowState, store: Option<Store>) -> Event {
    Event {
        run_id: id.to_owned(),
        flow: "contract".to_owned(),
        at: SystemTime::now(),
        transition: Transition::Flow {
            from,
            to,
            elapsed: Duration::from_millis(3),
            store,
        },
    }
}

/// The transitions of a run of one task `a` that succeeds with `result`, from start to end.
pub fn succeeding_run(id: &str, result: Value) -> Vec<Event> {
    let end = store(&[("seed", json!(1)), ("a_out", result.clone())]);
    vec![
        flow_move(id, FlowState::Pending, FlowState::Running, None),
        TaskMove::new(id, 0, "a", TaskState::Pending, TaskState::Running)
            .args(r#"{"value":1}"#)
            .event(),
        TaskMove::new(id, 0, "a", TaskState::Running, TaskState::Success)
            .result(result)
            .event(),
        flow_move(id, FlowState::Running, FlowState::Success, Some(end)),
    ]
}

/// A task transition of a run, built field by field; attempt 1 and no payload unless set.
pub struct TaskMove {
    event: Event,
}

impl TaskMove {
    /// Task `task` (at `index` in the flow) of run `id` moving `from` → `to` now.
    pub fn new(id: &str, index: usize, task: &str, from: TaskState, to: TaskState) -> Self {
        Self {
            event: Event {
                run_id: id.to_owned(),
                flow: "contract".to_owned(),
                at: SystemTime::now(),
                transition: Transition::Task {
                    task: task.to_owned(),
                    index,
                    from,
                    to,
                    duration: Duration::from_millis(2),
                    result: None,
                    error: None,
                    args: None,
                    outcome: None,
                    attempt: 1,
                    retry_at: None,
                    iterations: Vec::new(),
                    element: None,
                },
            },
        }
    }

    fn fields(&mut self) -> TaskFields<'_> {
        match &mut self.event.transition {
            Transition::Task {
                result,
                error,
                args,
                outcome,
                attempt,
                retry_at,
                iterations,
                ..
            } => TaskFields {
                result,
                error,
                args,
                outcome,
                attempt,
                retry_at,
                iterations,
            },
            Transition::Flow { .. } | Transition::Progress { .. } => {
                unreachable!("a TaskMove holds a task transition")
            }
        }
    }

    /// When it happens.
    pub fn at(mut self, at: SystemTime) -> Self {
        self.event.at = at;
        self
    }

    /// The attempt it belongs to.
    pub fn attempt(mut self, n: u32) -> Self {
        *self.fields().attempt = n;
        self
    }

    /// The arguments (JSON text) it executes with (on RUNNING).
    pub fn args(mut self, args: &str) -> Self {
        *self.fields().args = Some(args.to_owned());
        self
    }

    /// Its result (on SUCCESS; on REVERTED what the revert returned), which is also what a
    /// revert gets as outcome.
    pub fn result(mut self, result: Value) -> Self {
        let fields = self.fields();
        *fields.outcome = Some(Outcome::Result(result.to_string()));
        *fields.result = Some(result);
        self
    }

    /// Its error `code: message` (on FAILURE, RETRYING, REVERT_FAILURE).
    pub fn error(mut self, code: &str, message: &str) -> Self {
        *self.fields().error = Some(TaskError {
            code: code.to_owned(),
            message: message.to_owned(),
            details: None,
        });
        self
    }

    /// When its next attempt is due (on RETRYING).
    pub fn retry_at(mut self, due: SystemTime) -> Self {
        *self.fields().retry_at = Some(due);
        self
    }

    /// The subflow controllers' iterations it belongs to, outermost first.
    pub fn iterations(mut self, iterations: &[u32]) -> Self {
        *self.fields().iterations = iterations.to_vec();
        self
    }

    /// The event.
    pub fn event(self) -> Event {
        self.event
    }
}

/// The fields of a task transition a [`TaskMove`] sets.
struct TaskFields<'a> {
    result: &'a mut Option<Value>,
    error: &'a mut Option<TaskError>,
    args: &'a mut Option<String>,
    outcome: &'a mut Option<Outcome>,
    attempt: &'a mut u32,
    retry_at: &'a mut Option<SystemTime>,
    iterations: &'a mut Vec<u32>,
}
