//! `Engine::cancel` in the library: a run asked to stop stops its task in flight at once —
//! asleep in the host for an hour or computing in wasm — fails it with `cancelled`, reverts
//! it like any failed task and reverts everything that ran; a task waiting out a pause
//! between attempts fails at once too, without being called again.

use std::time::{Duration, Instant};

use flowhost::{CANCELLED, Engine, FlowSpec, FlowState, Limits, Retry, TaskState};
use serde_json::json;

use crate::kit::{Journal, report_states, seeded, until_journaled};

/// `a`, then `b` configured by `b`, then `c`, all journaling into `journal`; `b`'s deadline
/// is two hours, so only a cancel can end it in time.
fn three(journal: &Journal, b: serde_json::Value) -> FlowSpec {
    let two_hours = Limits {
        deadline_ms: Some(2 * 60 * 60 * 1000),
        ..Limits::default()
    };
    FlowSpec::linear("cancelled")
        .add(journal.probe_reading("a", "seed", json!({})))
        .add(
            journal
                .probe_reading("b", "a_out", b)
                .limits(two_hours)
                .retry(
                    Retry::attempts(3).backoff(Duration::from_secs(600), Duration::from_secs(600)),
                ),
        )
        .add(journal.probe_reading("c", "b_out", json!({})))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_task_asleep_for_an_hour_or_looping_in_wasm_at_once_and_reverts_it() {
    for b in [
        json!({ "mode": "sleep", "ms": 3_600_000 }),
        json!({ "mode": "loop" }),
    ] {
        let journal = Journal::new();
        let engine = Engine::new().unwrap();
        let loaded = engine
            .load(&three(&journal, b.clone()), seeded())
            .await
            .unwrap();
        let id = loaded.run_id().to_owned();
        let run = tokio::spawn(loaded.run());
        until_journaled(&journal, "`b` is executing", "execute", "b", 1).await;

        let asked = Instant::now();
        engine.cancel(&id);
        let report = run.await.unwrap().unwrap();
        let took = asked.elapsed();

        assert!(
            took < Duration::from_secs(5),
            "{b}: the cancel took {took:?}"
        );
        assert_eq!(report.state, FlowState::Reverted, "{b}");
        assert_eq!(
            report_states(&report),
            [TaskState::Reverted, TaskState::Reverted, TaskState::Pending],
            "{b}: b was stopped, failed and reverted; c never started"
        );
        let error = report.tasks[1].error.as_ref().unwrap();
        assert_eq!(error.code, CANCELLED, "{b}");
        assert!(
            error.message.contains("while task `b` was executing"),
            "{b}: {error}"
        );
        assert_eq!(report.tasks[1].attempt, 1, "{b}: a cancel is never retried");
        assert_eq!(
            journal.lines(),
            ["execute a", "execute b", "revert b", "revert a"],
            "{b}"
        );
        let revert_b = &journal.reverts()[0];
        assert_eq!(
            revert_b["outcome"]["error"]["code"], CANCELLED,
            "{b}: b's revert is told why it failed: {revert_b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_pause_between_attempts_at_once_and_reverts_the_failed_attempt() {
    let journal = Journal::new();
    let engine = Engine::new().unwrap();
    // b fails its first attempt; the next is due in ten minutes.
    let flow = three(&journal, json!({ "fail": "unavailable" }));
    let loaded = engine.load(&flow, seeded()).await.unwrap();
    let id = loaded.run_id().to_owned();
    let run = tokio::spawn(loaded.run());
    until_journaled(&journal, "`b` failed once", "execute", "b", 1).await;
    // Its RETRYING is committed before the pause: give it the moment to get there.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let asked = Instant::now();
    engine.cancel(&id);
    let report = run.await.unwrap().unwrap();

    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(report.state, FlowState::Reverted);
    assert_eq!(
        report_states(&report),
        [TaskState::Reverted, TaskState::Reverted, TaskState::Pending]
    );
    let error = report.tasks[1].error.as_ref().unwrap();
    assert_eq!(error.code, CANCELLED);
    assert!(error.message.contains("before task `b` started"), "{error}");
    assert_eq!(
        journal.lines(),
        ["execute a", "execute b", "revert b", "revert a"],
        "no second attempt; the failed first one is undone"
    );
}

#[tokio::test]
async fn a_deadline_over_24_hours_is_refused_naming_the_entry_and_the_field() {
    let journal = Journal::new();
    let limits = |ms: u64| Limits {
        deadline_ms: Some(ms),
        ..Limits::default()
    };
    let flow = FlowSpec::linear("forever")
        .add(
            journal
                .probe_reading("a", "seed", json!({}))
                .limits(limits(86_400_000)),
        )
        .add(
            journal
                .probe_reading("b", "a_out", json!({}))
                .limits(limits(1_000_000_000_000)),
        );
    let error = Engine::new()
        .unwrap()
        .load(&flow, seeded())
        .await
        .err()
        .expect("a deadline over 24 h");
    assert_eq!(error.problems.len(), 1, "24 h itself is allowed: {error}");
    let problem = &error.problems[0];
    assert_eq!(
        (problem.task.as_deref(), problem.field.as_deref()),
        (Some("b"), Some("limits.deadline_ms"))
    );
    assert!(problem.message.contains("86400000"), "{}", problem.message);
}
