//! Helpers for the tests that drive the library: probe entries built in code, initial stores,
//! an engine shared by tests, a listener recording every transition, and what the tests read
//! of a report.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use flowhost::{
    Access, Checkpoint, Engine, Event, FlowSpec, FlowState, Listener, Outcome, RunReport, Store,
    TaskCheckpoint, TaskError, TaskSpec, TaskState, Transition,
};
use serde_json::{Value, json};

use crate::plugin;

/// A `probe` entry labelled `name` that journals every call into `journal` (granted
/// read-write as `/journal`), its result stored under `<name>_out`.
pub fn journaled_probe(name: &str, journal: &Path, mut config: Value) -> TaskSpec {
    config["label"] = json!(name);
    config["journal"] = json!(true);
    TaskSpec::new(name, plugin("probe"))
        .provides([format!("{name}_out")])
        .config(config)
        .grant_dir(journal, "/journal", Access::ReadWrite)
}

/// A linear flow of `steps` probes `step0`, `step1`…, each given `config` (and its name as
/// label), `step0` reading the store's `value` and each later one the result of the one
/// before, stored as `out0`, `out1`…: every value passes through them all.
pub fn relay(name: &str, steps: usize, config: Value) -> FlowSpec {
    (0..steps).fold(FlowSpec::linear(name), |flow, step| {
        let from = match step {
            0 => "value".to_owned(),
            _ => format!("out{}", step - 1),
        };
        let mut config = config.clone();
        config["label"] = json!(format!("step{step}"));
        flow.add(
            TaskSpec::new(format!("step{step}"), plugin("probe"))
                .rebind("value", from)
                .provides([format!("out{step}")])
                .config(config),
        )
    })
}

/// The initial store `seed = 1`, which the first probe of a flow usually reads.
pub fn seeded() -> Store {
    store(&[("seed", json!(1))])
}

/// An initial store from name/value pairs.
pub fn store(pairs: &[(&str, Value)]) -> Store {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// One engine for the tests of a module, as a service would hold: a fault in one test's run
/// must not disturb the others sharing it.
pub fn shared_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new().expect("engine starts"))
}

/// Each task's state in a report, in flow order.
pub fn report_states(report: &RunReport) -> Vec<TaskState> {
    report.tasks.iter().map(|t| t.state).collect()
}

/// Asserts that `report` is of three tasks, the middle one REVERT_FAILURE and the others
/// REVERTED: a revert failed, and the tasks around it were still reverted.
#[track_caller]
pub fn assert_middle_revert_failed(report: &RunReport) {
    assert_eq!(
        report_states(report),
        [
            TaskState::Reverted,
            TaskState::RevertFailure,
            TaskState::Reverted
        ]
    );
}

/// Each task's `state` in a JSON document of a run (`--json` report, `runs show --json`, the
/// API's run), in flow order.
pub fn document_states(document: &Value) -> Vec<&str> {
    document["tasks"]
        .as_array()
        .expect("a document with tasks")
        .iter()
        .map(|t| t["state"].as_str().expect("a task state"))
        .collect()
}

/// The pause before each next attempt of `task` (a task of a run's JSON document, with its
/// `attempts`), in milliseconds, in order.
pub fn backoffs(task: &Value) -> Vec<f64> {
    task["attempts"]
        .as_array()
        .expect("a task with attempts")
        .iter()
        .filter_map(|a| a["backoff_ms"].as_f64())
        .collect()
}

/// A listener that keeps every event, for asserting transition order.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Listener for Recorder {
    fn on_event(&self, event: &Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0
            .lock()
            .expect("recorder poisoned")
            .push(event.clone());
        Ok(())
    }
}

impl Recorder {
    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("recorder poisoned").clone()
    }

    /// `(task, from, to)` of every task transition so far, in order.
    pub fn task_transitions(&self) -> Vec<(String, TaskState, TaskState)> {
        self.events()
            .iter()
            .filter_map(|e| match &e.transition {
                Transition::Task { task, from, to, .. } => Some((task.clone(), *from, *to)),
                Transition::Flow { .. } | Transition::Progress { .. } => None,
            })
            .collect()
    }

    /// Where the first transition of `task` to `to` stands among the task transitions.
    #[track_caller]
    pub fn position(&self, task: &str, to: TaskState) -> usize {
        let moves = self.task_transitions();
        moves
            .iter()
            .position(|(t, _, s)| t == task && *s == to)
            .unwrap_or_else(|| panic!("`{task}` never went to {to}: {moves:?}"))
    }

    /// Where the first transition of `task` from `from` to `to` stands among the task
    /// transitions.
    #[track_caller]
    pub fn position_of(&self, task: &str, from: TaskState, to: TaskState) -> usize {
        let moves = self.task_transitions();
        moves
            .iter()
            .position(|m| m.0 == task && m.1 == from && m.2 == to)
            .unwrap_or_else(|| panic!("`{task}` never went {from} -> {to}: {moves:?}"))
    }
}

/// Loads `flow` from `initial` on `engine` and runs it with a [`Recorder`] listening: the
/// report, and everything the recorder heard.
pub async fn run_recorded(
    engine: &Engine,
    flow: &FlowSpec,
    initial: Store,
) -> (RunReport, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let mut loaded = engine.load(flow, initial).await.expect("a valid flow");
    loaded.listen(recorder.clone());
    let report = loaded.run().await.expect("the run ends");
    (report, recorder)
}

/// Loads `flow` from `initial` on a fresh engine and resumes it from `checkpoint`: the
/// resumed run's report.
pub async fn resume_from(flow: &FlowSpec, initial: Store, checkpoint: Checkpoint) -> RunReport {
    let engine = Engine::new().expect("engine starts");
    let loaded = engine.load(flow, initial).await.expect("a valid flow");
    loaded.resume(checkpoint).await.expect("the run ends")
}

/// Task `name` of a stopped run, in `state` after its first attempt failed `unavailable:
/// busy` on arguments `{"value": 1}`, as a run's record would give it back to resume.
pub fn failed_attempt(name: &str, state: TaskState) -> TaskCheckpoint {
    let error = TaskError {
        code: "unavailable".into(),
        message: "busy".into(),
        details: None,
    };
    TaskCheckpoint {
        name: name.into(),
        state,
        args: Some(r#"{"value":1}"#.into()),
        outcome: Some(Outcome::Error(error.clone())),
        error: Some(error),
        revert_error: None,
        duration: Duration::from_millis(1),
        attempt: 1,
        retry_at: None,
        iterations: Vec::new(),
    }
}

/// Where a run stopped while RUNNING, its tasks as given.
pub fn stopped_running(tasks: Vec<TaskCheckpoint>) -> Checkpoint {
    Checkpoint {
        state: FlowState::Running,
        tasks,
        created_at: None,
        elements: Vec::new(),
    }
}
