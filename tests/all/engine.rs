//! The engine's semantics through the library API, with the `probe` test plugin: argument
//! resolution, provides, revert order and payloads, revert failures, bad results, traps, and
//! listeners.

use std::sync::Arc;

use flowhost::{Engine, Event, FlowSpec, FlowState, Listener, RunReport, Store, TaskState};
use serde_json::{Value, json};

use crate::kit::{
    Journal, Recorder, assert_contains, assert_middle_revert_failed, assert_starts_with, exit_json,
    flowhost, probe_file, report_states, run_recorded, stderr, store,
};

/// Runs `flow` from `initial` on a fresh engine.
async fn run(flow: &FlowSpec, initial: Store) -> RunReport {
    Engine::new().unwrap().run(flow, initial).await.unwrap()
}

#[tokio::test]
async fn arguments_are_exactly_the_required_names_after_rebind_and_inject() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("args")
        .add(journal.probe_reading("rebound", "input", json!({})))
        .add(
            journal
                .probe("injected", json!({}))
                .inject("value", json!("fixed"))
                .rebind("extra", "bonus"),
        )
        .add(journal.probe_reading("plain", "input", json!({})));
    let initial = store(&[
        ("input", json!(1)),
        ("bonus", json!({"b": 2})),
        ("unrelated", json!("secret")),
    ]);
    let report = run(&flow, initial).await;
    assert_eq!(report.state, FlowState::Success);

    let calls = journal.entries();
    let args: Vec<&Value> = calls.iter().map(|c| &c["args"]).collect();
    assert_eq!(
        args[0],
        &json!({"value": 1}),
        "optional `extra` absent from the store is not passed"
    );
    assert_eq!(
        args[1],
        &json!({"value": "fixed", "extra": {"b": 2}}),
        "inject wins, rebind reads `bonus`"
    );
    assert_eq!(args[2], &json!({"value": 1}));
    assert_eq!(
        report.fetch("injected_out"),
        Some(&json!({"value": "fixed", "extra": {"b": 2}, "label": "injected"}))
    );
    assert_eq!(report.fetch("unrelated"), Some(&json!("secret")));
}

#[tokio::test]
async fn one_provided_name_stores_the_whole_result_several_split_an_object() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("provides")
        .add(journal.probe_reading("whole", "seed", json!({})))
        .add(
            journal
                .probe("split", json!({}))
                .provides(["value", "label"])
                .rebind("value", "seed"),
        );
    let report = Engine::new()
        .unwrap()
        .run(&flow, store(&[("seed", json!(7)), ("value", json!(0))]))
        .await;
    let error = report.expect_err("`value` is provided by the initial store and by `split`");
    assert!(
        error
            .to_string()
            .contains("provides `value`, which the initial store already provides"),
        "{error}"
    );

    let report = run(&flow, store(&[("seed", json!(7))])).await;
    assert_eq!(report.state, FlowState::Success);
    assert_eq!(
        report.fetch("whole_out"),
        Some(&json!({"value": 7, "label": "whole"}))
    );
    assert_eq!(report.fetch("value"), Some(&json!(7)));
    assert_eq!(report.fetch("label"), Some(&json!("split")));
}

#[tokio::test]
async fn a_failure_reverts_the_failed_task_then_the_others_in_reverse_with_outcomes_and_failures() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("revert")
        .add(journal.probe("a", json!({})))
        .add(journal.probe("b", json!({})))
        .add(journal.probe("c", json!({"fail": "boom"})))
        .add(journal.probe("d", json!({})));
    let (report, recorder) = run_recorded(
        &Engine::new().unwrap(),
        &flow,
        store(&[("value", json!("v"))]),
    )
    .await;

    assert_eq!(report.state, FlowState::Reverted);
    assert_eq!(report.state, flowhost::FlowState::Reverted);
    assert_eq!(
        report_states(&report),
        [
            TaskState::Reverted,
            TaskState::Reverted,
            TaskState::Reverted,
            TaskState::Pending
        ]
    );
    assert_eq!(report.tasks[2].error.as_ref().unwrap().code, "boom");
    assert!(
        report.fetch("a_out").is_none(),
        "reverted results leave the store"
    );

    use TaskState::*;
    let expected: Vec<(String, TaskState, TaskState)> = [
        ("a", Pending, Running),
        ("a", Running, Success),
        ("b", Pending, Running),
        ("b", Running, Success),
        ("c", Pending, Running),
        ("c", Running, Failure),
        ("c", Failure, Reverting),
        ("c", Reverting, Reverted),
        ("b", Success, Reverting),
        ("b", Reverting, Reverted),
        ("a", Success, Reverting),
        ("a", Reverting, Reverted),
    ]
    .into_iter()
    .map(|(t, f, to)| (t.to_owned(), f, to))
    .collect();
    assert_eq!(recorder.task_transitions(), expected);

    let calls = journal.entries();
    assert_eq!(
        journal.lines(),
        [
            "execute a",
            "execute b",
            "execute c",
            "revert c",
            "revert b",
            "revert a"
        ]
    );
    let failures = json!([{"task": "c", "code": "boom", "message": "probe was told to fail"}]);
    assert_eq!(
        calls[3]["outcome"]["error"]["code"], "boom",
        "the failed task's revert gets its error"
    );
    assert_eq!(
        calls[4]["outcome"]["result"],
        json!({"value": "v", "label": "b"}),
        "a done task's revert gets its result"
    );
    assert_eq!(
        calls[4]["args"],
        json!({"value": "v"}),
        "revert gets the arguments execute had"
    );
    for revert in &calls[3..] {
        assert_eq!(revert["failures"], failures);
    }
}

#[tokio::test]
async fn a_failing_revert_is_revert_failure_the_rest_still_revert_and_the_flow_fails() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("revert-failure")
        .add(journal.probe("a", json!({})))
        .add(journal.probe("b", json!({"fail_revert": "stuck"})))
        .add(journal.probe("c", json!({"fail": "boom"})));
    let report = run(&flow, store(&[("value", json!(1))])).await;
    assert_eq!(report.state, FlowState::Failure);
    assert_eq!(report.state, flowhost::FlowState::Failure);
    assert_middle_revert_failed(&report);
    assert_eq!(report.tasks[1].revert_error.as_ref().unwrap().code, "stuck");
    let calls = journal.entries();
    assert_eq!(
        calls.last().unwrap()["label"],
        "a",
        "the task before the stuck one is still reverted"
    );
}

async fn single_failure(config: Value, provides: &[&str]) -> flowhost::TaskError {
    let journal = Journal::new();
    let flow = FlowSpec::linear("faulty")
        .add(journal.probe("before", json!({})))
        .add(
            journal
                .probe("faulty", config)
                .provides(provides.iter().copied()),
        );
    let report = run(&flow, store(&[("value", json!(1))])).await;
    assert_eq!(report.state, FlowState::Reverted);
    assert_eq!(
        report.tasks[0].state,
        TaskState::Reverted,
        "the earlier task is reverted"
    );
    let calls = journal.entries();
    assert_eq!(calls.last().unwrap()["call"], "revert");
    report.tasks[1]
        .error
        .clone()
        .expect("the faulty task failed")
}

#[tokio::test]
async fn a_result_that_is_not_json_fails_the_task() {
    let error = single_failure(json!({"raw_result": "{not json"}), &["out"]).await;
    assert_eq!(error.code, "invalid-result");
    assert_contains(&error.message, "not valid JSON");
}

#[tokio::test]
async fn a_result_missing_a_provided_name_fails_the_task_naming_it() {
    let error = single_failure(json!({}), &["label", "nowhere"]).await;
    assert_eq!(error.code, "missing-provides");
    assert_contains(&error.message, "`nowhere`");
}

#[tokio::test]
async fn a_trap_is_a_task_failure_not_a_host_crash() {
    let error = single_failure(json!({"trap": true}), &["out"]).await;
    assert_eq!(error.code, "trap");
    assert_starts_with(&error.message, "trapped: ");
}

#[tokio::test]
async fn a_panic_message_reaches_the_failure_reason() {
    let error = single_failure(json!({"panic": "disk on fire"}), &["out"]).await;
    assert_eq!(error.code, "trap");
    assert_contains(&error.message, "disk on fire");
}

#[tokio::test]
async fn a_listener_that_panics_or_errors_does_not_break_the_run() {
    struct Panics;
    impl Listener for Panics {
        fn on_event(&self, _: &Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            panic!("listener bug")
        }
    }
    struct Errors;
    impl Listener for Errors {
        fn on_event(&self, _: &Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            Err("listener cannot write".into())
        }
    }
    let journal = Journal::new();
    let recorder = Arc::new(Recorder::default());
    let mut engine = Engine::new().unwrap();
    engine.listen(Arc::new(Panics));
    engine.listen(Arc::new(Errors));
    engine.listen(recorder.clone());
    let flow = FlowSpec::linear("listeners").add(journal.probe("only", json!({})));
    let report = engine
        .run(&flow, store(&[("value", json!(1))]))
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Success);
    assert_eq!(
        recorder.task_transitions().len(),
        2,
        "later listeners still get every event"
    );
}

#[test]
fn the_cli_exits_2_and_names_the_task_when_a_revert_fails() {
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        "flow.toml",
        "name = \"stuck\"\n[store]\nvalue = 1\n\n\
         [[task]]\nname = \"holds_lock\"\nplugin = \"PROBE\"\nprovides = [\"lock\"]\nconfig = { fail_revert = \"lock-stuck\" }\n\n\
         [[task]]\nname = \"breaks\"\nplugin = \"PROBE\"\nprovides = [\"never\"]\nconfig = { fail = \"boom\" }\n",
    );
    let out = flowhost(["run", "flow.toml", "--json"])
        .dir(dir.path())
        .run();
    let report = exit_json(&out, 2);
    assert_eq!(report["state"], "FAILURE");
    assert_eq!(report["tasks"][0]["state"], "REVERT_FAILURE");
    assert_eq!(report["tasks"][0]["revert_error"]["code"], "lock-stuck");
    assert_eq!(report["tasks"][1]["state"], "REVERTED");
    assert_contains(
        &stderr(&out),
        "task `holds_lock` could not be reverted: lock-stuck",
    );
}
