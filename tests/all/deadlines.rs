//! Run deadlines (the flow's `timeout_ms`): when one passes, nothing new starts, the task in
//! flight is stopped and fails `run-timeout`, and what ran is reverted; a resumed run keeps the
//! deadline counted from its creation; validation refuses a deadline that cannot be kept.

use std::time::{Duration, Instant};

use flowhost::{Engine, FlowSpec, RUN_TIMEOUT};
use serde_json::json;

use crate::kit::{Journal, Probe, Workspace, assert_exit, kill, stdout_json, store};

/// Writes `flow.toml` with `timeout_ms` = `timeout`: probes `a`, `b` (with `b_config`), `c`.
fn flow_with_deadline(ws: &Workspace, timeout: u64, b_config: serde_json::Value) {
    ws.write_flow(
        "deadline",
        &format!("timeout_ms = {timeout}"),
        &[
            Probe::new("a"),
            Probe::new("b").config(b_config),
            Probe::new("c"),
        ],
    );
}

#[test]
fn a_task_still_running_at_the_run_deadline_is_stopped_with_run_timeout_and_what_ran_is_reverted() {
    let ws = Workspace::new();
    flow_with_deadline(&ws, 1_500, json!({ "mode": "sleep", "ms": 60_000 }));
    let started = Instant::now();
    let run = ws.recording(&["run", "flow.toml", "--json"]).run();
    let took = started.elapsed();
    assert_exit(&run, 1);
    assert!(
        took < Duration::from_secs(20),
        "b's 60 s sleep was cut short at the deadline (took {took:?})"
    );
    let report = stdout_json(&run);
    assert_eq!(report["state"], "REVERTED");
    let tasks = report["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["state"], "REVERTED", "a ran, so a is reverted");
    assert_eq!(
        tasks[1]["state"], "REVERTED",
        "b was stopped in flight, then reverted"
    );
    assert_eq!(tasks[1]["error"]["code"], RUN_TIMEOUT);
    assert_eq!(tasks[2]["state"], "PENDING", "nothing new starts: {report}");
    assert_eq!(
        ws.counts(&[("execute", "a"), ("revert", "a"), ("execute", "c")]),
        [1, 1, 0]
    );

    // The record says the same: the stop is journaled as usual.
    let id = report["run_id"].as_str().unwrap();
    let shown = ws.show(id);
    assert_eq!(shown["state"], "REVERTED");
    assert_eq!(shown["tasks"][1]["error"]["code"], RUN_TIMEOUT);
}

#[test]
fn a_run_finishing_before_its_deadline_is_unaffected() {
    let ws = Workspace::new();
    flow_with_deadline(&ws, 60_000, json!({ "mode": "sleep", "ms": 50 }));
    let run = ws.recording(&["run", "flow.toml", "--json"]).run();
    assert_exit(&run, 0);
    let report = stdout_json(&run);
    assert_eq!(report["state"], "SUCCESS");
    assert_eq!(ws.counts(&[("execute", "c"), ("revert", "a")]), [1, 0]);
}

#[test]
fn a_resumed_run_keeps_the_deadline_counted_from_its_creation() {
    let ws = Workspace::new();
    flow_with_deadline(
        &ws,
        5_000,
        json!({ "mode": "wait_file", "path": "/signal/go" }),
    );
    let created = Instant::now();
    let mut child = ws.recording(&["run", "flow.toml"]).start();
    ws.wait_for(&mut child, "execute", "b");
    kill(child);
    let interrupted = ws.only_run();
    std::thread::sleep(Duration::from_millis(5_500).saturating_sub(created.elapsed()));

    // Past the deadline: the resumed run stops at once rather than granting b 5 s more.
    let started = Instant::now();
    let resumed = ws.runs(&["resume", &interrupted.id]);
    let took = started.elapsed();
    assert_exit(&resumed, 1);
    assert!(
        took < Duration::from_millis(4_500),
        "the deadline counts from the run's creation, not the resumption (took {took:?})"
    );
    let record = ws.show(&interrupted.id);
    assert_eq!(record["state"], "REVERTED");
    assert_eq!(record["tasks"][1]["error"]["code"], RUN_TIMEOUT, "{record}");
    assert_eq!(record["tasks"][0]["state"], "REVERTED");
    assert_eq!(ws.counts(&[("revert", "a"), ("execute", "c")]), [1, 0]);
}

#[tokio::test]
async fn a_deadline_of_zero_a_negative_one_or_one_over_24_hours_is_refused_naming_timeout_ms() {
    let journal = Journal::new();
    for timeout in [0, -5, 24 * 60 * 60 * 1000 + 1] {
        let flow = FlowSpec {
            timeout_ms: Some(timeout),
            ..FlowSpec::linear("deadline").add(journal.probe("a", json!({})))
        };
        let error = Engine::new()
            .unwrap()
            .load(&flow, store(&[("value", json!(1))]))
            .await
            .err()
            .unwrap_or_else(|| panic!("timeout_ms = {timeout} must be refused"));
        assert_eq!(error.problems.len(), 1, "{error}");
        assert_eq!(error.problems[0].field.as_deref(), Some("timeout_ms"));
        assert!(
            error.problems[0]
                .message
                .contains(&format!("`timeout_ms` = {timeout}")),
            "{error}"
        );
    }
    assert!(journal.entries().is_empty(), "nothing ran");
    let fine = FlowSpec {
        timeout_ms: Some(24 * 60 * 60 * 1000),
        ..FlowSpec::linear("deadline").add(journal.probe("a", json!({})))
    };
    Engine::new()
        .unwrap()
        .load(&fine, store(&[("value", json!(1))]))
        .await
        .expect("24 h exactly is allowed");
}
