//! `Engine::cancel` in the library: a run asked to stop finishes the task it is in, fails
//! the next one with `cancelled` without calling it, and reverts everything that ran.

use std::sync::{Arc, Mutex};

use flowhost::{CANCELLED, Engine, Event, FlowSpec, FlowState, Listener, TaskState, Transition};
use serde_json::json;

use crate::kit::{Journal, Recorder, report_states, seeded};

/// Cancels the run it hears of as soon as task `at` starts.
struct CancelAt {
    at: &'static str,
    engine: Mutex<Option<Engine>>,
}

impl Listener for CancelAt {
    fn on_event(&self, event: &Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Transition::Task {
            task,
            to: TaskState::Running,
            ..
        } = &event.transition
            && task == self.at
            && let Some(engine) = self.engine.lock().unwrap().as_ref()
        {
            engine.cancel(&event.run_id);
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_cancelled_run_finishes_its_task_then_reverts_without_starting_the_next() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("cancelled")
        .add(journal.probe_reading("a", "seed", json!({})))
        .add(journal.probe_reading("b", "a_out", json!({})))
        .add(journal.probe_reading("c", "b_out", json!({})));
    let canceller = Arc::new(CancelAt {
        at: "b",
        engine: Mutex::new(None),
    });
    let recorder = Arc::new(Recorder::default());
    let mut engine = Engine::new().unwrap();
    engine.listen(canceller.clone());
    engine.listen(recorder.clone());
    *canceller.engine.lock().unwrap() = Some(engine.clone());

    let report = engine.run(&flow, seeded()).await.unwrap();

    assert_eq!(report.state, FlowState::Reverted);
    assert_eq!(
        report_states(&report),
        [TaskState::Reverted, TaskState::Reverted, TaskState::Failure]
    );
    assert_eq!(report.tasks[2].error.as_ref().unwrap().code, CANCELLED);
    assert_eq!(
        journal.lines(),
        ["execute a", "execute b", "revert b", "revert a"],
        "b finished, c never ran"
    );
    assert!(
        !report.store.names().any(|n| n == "a_out" || n == "b_out"),
        "reverted results leave the store"
    );

    let moves = recorder.task_transitions();
    assert!(
        moves.contains(&("c".into(), TaskState::Running, TaskState::Failure)),
        "{moves:?}"
    );
    assert_eq!(
        moves.iter().filter(|(task, _, _)| task == "c").count(),
        2,
        "c was marked, never called: {moves:?}"
    );
}
