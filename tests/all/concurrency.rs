//! "Start asynchronously, run in order": one engine shared by many tokio tasks runs several
//! flows at once, each flow's tasks strictly in sequence, and the runs' stores never mix.

use std::collections::HashMap;
use std::sync::Arc;

use flowhost::{Engine, FlowState, Store, TaskState, Transition};
use serde_json::json;

use crate::kit::{Recorder, relay};

const RUNS: usize = 16;
const STEPS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_flows_on_one_engine_run_at_once_each_in_order_with_its_own_store() {
    let recorder = Arc::new(Recorder::default());
    let mut engine = Engine::new().unwrap();
    engine.listen(recorder.clone());
    // Each step sleeps inside the guest (an async WASI wait), then passes the value on.
    let flow = relay("relay", STEPS, json!({"mode": "sleep", "ms": 20}));

    let handles: Vec<_> = (0..RUNS)
        .map(|n| {
            let engine = engine.clone();
            let flow = flow.clone();
            tokio::spawn(async move {
                let initial: Store = [("value".to_owned(), json!(n))].into_iter().collect();
                (n, engine.run(&flow, initial).await.unwrap())
            })
        })
        .collect();
    let mut run_of = HashMap::new();
    for handle in handles {
        let (n, report) = handle.await.unwrap();
        assert_eq!(report.state, FlowState::Success);
        // Each step wraps the previous value; the innermost value is this run's own input.
        let mut value = report.fetch(&format!("out{}", STEPS - 1)).unwrap().clone();
        for _ in 0..STEPS - 1 {
            value = value["value"].clone();
        }
        assert_eq!(value["value"], json!(n), "run {n} saw another run's store");
        run_of.insert(report.run_id.clone(), n);
    }

    let events = recorder.events();
    let mut per_run: HashMap<&str, Vec<(String, TaskState, TaskState)>> = HashMap::new();
    for event in &events {
        if let Transition::Task { task, from, to, .. } = &event.transition {
            per_run
                .entry(&event.run_id)
                .or_default()
                .push((task.clone(), *from, *to));
        }
    }
    assert_eq!(per_run.len(), RUNS);
    let expected: Vec<(String, TaskState, TaskState)> = (0..STEPS)
        .flat_map(|s| {
            [
                (format!("step{s}"), TaskState::Pending, TaskState::Running),
                (format!("step{s}"), TaskState::Running, TaskState::Success),
            ]
        })
        .collect();
    for (run, transitions) in &per_run {
        assert_eq!(
            transitions, &expected,
            "run {} ran out of order",
            run_of[*run]
        );
    }

    // Asynchronous start: some run began before another had finished.
    let position = |run: &str, to: FlowState| {
        events.iter().position(|e| {
            e.run_id == run && matches!(e.transition, Transition::Flow { to: t, .. } if t == to)
        })
    };
    let overlapping = per_run.keys().any(|a| {
        per_run.keys().any(|b| {
            a != b
                && position(a, FlowState::Running) < position(b, FlowState::Success)
                && position(b, FlowState::Running) < position(a, FlowState::Success)
        })
    });
    assert!(
        overlapping,
        "runs must interleave, not queue behind each other"
    );
}
