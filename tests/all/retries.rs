//! Retries: a failed task entry is executed again by its retry policy (or the flow's) before
//! the flow reverts; every attempt, its error and the pause before the next are journaled,
//! so `runs show` lists them and a run killed during a pause resumes it.

use std::path::PathBuf;
use std::time::Duration;

use flowhost::{Engine, FlowSpec, FlowState, Retry, TaskState};
use serde_json::{Value, json};

use crate::kit::{
    Journal, Probe, Workspace, assert_contains, assert_exit, backoffs, exit_json, failed_attempt,
    kill, resume_from, run_recorded, seeded, stderr, stdout, stdout_json, stopped_running,
};

/// Writes `flow.toml` in the workspace: `head` text (top-level keys and tables), then a probe
/// `a` that succeeds and a probe `b` configured by `config` with `retry` as its entry's
/// policy (when given). Both journal into `journal/`.
fn two_steps(ws: &Workspace, head: &str, config: Value, retry: Option<&str>) -> PathBuf {
    let retry = retry.map(|r| format!("retry = {r}\n")).unwrap_or_default();
    ws.write_flow(
        "retried",
        head,
        &[Probe::new("a"), Probe::new("b").config(config).toml(&retry)],
    )
}

/// [`two_steps`] without top-level keys, `b` under policy `retry`.
fn retried(ws: &Workspace, config: Value, retry: &str) -> PathBuf {
    two_steps(ws, "", config, Some(retry))
}

/// A probe's config: fail `unavailable` the first `times` calls.
fn unavailable_times(times: u64) -> Value {
    json!({ "fail": "unavailable", "fail_times": times })
}

/// `runs show ID --json` of the workspace's only run.
fn shown(ws: &Workspace) -> Value {
    ws.show(&ws.only_run().id)
}

/// `(attempt, state, error code)` of each attempt of task `index` in a `runs show --json`.
fn attempts(record: &Value, index: usize) -> Vec<(u64, String, Option<String>)> {
    record["tasks"][index]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["state"].as_str().unwrap().to_owned(),
                a["error"]["code"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn a_task_failing_twice_succeeds_on_its_third_attempt_and_the_flow_succeeds() {
    let ws = Workspace::new();
    retried(
        &ws,
        unavailable_times(2),
        "{ attempts = 4, backoff_ms = 10 }",
    );
    let run = ws
        .recording(&["run", "flow.toml", "--fetch", "b_out"])
        .run();
    assert_exit(&run, 0);
    assert_eq!(stdout_json(&run)["b_out"]["label"], "b");
    assert_eq!(
        (ws.count("execute", "b"), ws.count("revert", "b")),
        (3, 0),
        "two failed attempts, then the one that succeeded; nothing is reverted: the flow \
         succeeded"
    );
    let log = stderr(&run);
    assert_contains(&log, "task `b` RUNNING -> RETRYING");
    assert_contains(&log, "attempt 1 failed; attempt 2 in 10.0 ms");

    let record = shown(&ws);
    assert_eq!(record["state"], "SUCCESS");
    let unavailable = Some("unavailable".to_owned());
    assert_eq!(
        attempts(&record, 1),
        [
            (1, "RETRYING".into(), unavailable.clone()),
            (2, "RETRYING".into(), unavailable),
            (3, "SUCCESS".into(), None)
        ]
    );
    assert_eq!(record["tasks"][1]["attempt"], 3);
    assert_eq!(record["tasks"][1]["executions"], 3);
    assert_eq!(
        record["tasks"][1]["error"],
        Value::Null,
        "the task succeeded: earlier attempts' errors are history"
    );
    assert_eq!(
        attempts(&record, 0),
        [(1, "SUCCESS".into(), None)],
        "`a` has no policy and ran once"
    );

    let text = stdout(&ws.runs(&["show", &ws.only_run().id]));
    assert_contains(&text, "attempt 1");
    assert_contains(&text, "attempt 3");
    // The second pause is doubled.
    assert_contains(&text, "next attempt after 20 ms");
}

#[test]
fn exhausted_retries_revert_the_flow_and_the_failed_task_once() {
    let ws = Workspace::new();
    retried(
        &ws,
        json!({ "fail": "unavailable", "message": "scheduler down" }),
        "{ attempts = 3, backoff_ms = 1 }",
    );
    let run = ws.recording(&["run", "flow.toml", "--json"]).run();
    let report = exit_json(&run, 1);
    assert_eq!(report["state"], "REVERTED");
    assert_eq!(report["tasks"][1]["attempt"], 3);
    assert_eq!(report["tasks"][1]["error"]["message"], "scheduler down");
    assert_eq!(ws.count("execute", "b"), 3);
    assert_eq!(
        ws.count("revert", "b"),
        1,
        "reverted once, with its last attempt's outcome"
    );
    assert_eq!(ws.count("revert", "a"), 1);
    let calls: Vec<(String, String)> = ws.calls().into_iter().skip(4).collect();
    assert_eq!(
        calls,
        [("revert".into(), "b".into()), ("revert".into(), "a".into())],
        "reverse order after the last attempt"
    );

    let record = shown(&ws);
    assert_eq!(record["state"], "REVERTED");
    let states: Vec<String> = attempts(&record, 1)
        .into_iter()
        .map(|(_, state, _)| state)
        .collect();
    assert_eq!(states, ["RETRYING", "RETRYING", "FAILURE"]);
    assert_eq!(record["tasks"][1]["state"], "REVERTED");
}

#[test]
fn only_the_codes_a_policy_selects_are_retried_and_input_errors_never_by_default() {
    for (config, retry, executions) in [
        (
            json!({ "fail": "over-quota" }),
            r#"{ attempts = 3, backoff_ms = 1, on = ["unavailable"] }"#,
            1,
        ),
        (
            json!({ "fail": "unavailable" }),
            r#"{ attempts = 3, backoff_ms = 1, on = ["unavailable"] }"#,
            3,
        ),
        (
            json!({ "fail": "invalid-args" }),
            r#"{ attempts = 3, backoff_ms = 1 }"#,
            1,
        ),
        (
            json!({ "fail": "invalid-args" }),
            r#"{ attempts = 3, backoff_ms = 1, on = ["invalid-args"] }"#,
            3,
        ),
        (
            json!({ "fail": "over-quota" }),
            r#"{ attempts = 3, backoff_ms = 1, except = ["over-quota"] }"#,
            1,
        ),
        (
            json!({ "fail": "unavailable" }),
            r#"{ attempts = 3, backoff_ms = 1, except = ["over-quota"] }"#,
            3,
        ),
    ] {
        let ws = Workspace::new();
        retried(&ws, config.clone(), retry);
        let run = ws.flowhost(&["run", "flow.toml", "--no-db"]);
        assert_exit(&run, 1);
        assert_eq!(
            ws.count("execute", "b"),
            executions,
            "{config} under {retry}"
        );
    }
}

#[test]
fn the_flow_default_applies_to_every_entry_and_an_entry_overrides_it_field_by_field() {
    let ws = Workspace::new();
    two_steps(
        &ws,
        "retry = { attempts = 5, backoff_ms = 1 }",
        json!({ "fail": "unavailable" }),
        Some("{ attempts = 2 }"),
    );
    let run = ws.flowhost(&["run", "flow.toml", "--no-db"]);
    assert_exit(&run, 1);
    assert_eq!(
        ws.count("execute", "b"),
        2,
        "the entry's `attempts` wins over the flow's"
    );

    let ws = Workspace::new();
    two_steps(
        &ws,
        "retry = { attempts = 4, backoff_ms = 1 }",
        json!({ "fail": "unavailable" }),
        None,
    );
    let run = ws.flowhost(&["run", "flow.toml", "--no-db"]);
    assert_exit(&run, 1);
    assert_eq!(
        ws.count("execute", "b"),
        4,
        "the flow's policy applies to an entry without one"
    );
}

#[test]
fn the_backoff_schedule_grows_by_the_multiplier_up_to_the_cap_as_journaled() {
    let ws = Workspace::new();
    let retry = "{ attempts = 5, backoff_ms = 20, multiplier = 3.0, max_backoff_ms = 100 }";
    retried(&ws, unavailable_times(4), retry);
    let run = ws.recording(&["run", "flow.toml"]).run();
    assert_exit(&run, 0);
    assert_eq!(
        backoffs(&shown(&ws)["tasks"][1]),
        [20.0, 60.0, 100.0, 100.0]
    );
}

#[test]
fn a_run_killed_during_a_backoff_resumes_the_wait_and_loses_no_attempt() {
    let ws = Workspace::new();
    retried(
        &ws,
        unavailable_times(1),
        "{ attempts = 3, backoff_ms = 1500 }",
    );
    let mut child = ws.recording(&["run", "flow.toml"]).start();
    // Kill it once RETRYING is committed: the run then waits out its pause.
    let due = ws.wait_for_record(&mut child, "`b` reached RETRYING", |record| {
        (record.tasks[1].state == TaskState::Retrying).then(|| {
            record.tasks[1]
                .retry_at
                .expect("RETRYING carries the next attempt's due time")
        })
    });
    kill(child);
    assert_eq!(ws.count("execute", "b"), 1);

    let run = ws.only_run();
    assert_eq!(run.state, FlowState::Running);
    let resumed = ws.runs(&["resume", &run.id]);
    assert_exit(&resumed, 0);
    assert_eq!(
        ws.executions(&["a", "b"]),
        [1, 2],
        "`a` succeeded before the kill; the failed attempt of `b` is not repeated, the second \
         one ran once"
    );

    let record = shown(&ws);
    assert_eq!(record["state"], "SUCCESS");
    assert_eq!(
        attempts(&record, 1),
        [
            (1, "RETRYING".into(), Some("unavailable".into())),
            (2, "SUCCESS".into(), None)
        ]
    );
    let second_started: &str = record["tasks"][1]["attempts"][1]["started_at"]
        .as_str()
        .unwrap();
    let (due_whole, due_ms) = (due as i64, ((due.fract()) * 1000.0) as i64);
    let started = iso_to_unix_ms(second_started);
    assert!(
        started >= due_whole * 1000 + due_ms,
        "attempt 2 started at {second_started}, before its due time {due}"
    );
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.sssZ`.
fn iso_to_unix_ms(iso: &str) -> i64 {
    let n = |range: std::ops::Range<usize>| iso[range].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23)
}

/// A linear flow `name` of one probe, `flaky`, failing `unavailable` its first `fail_times`
/// calls, tried up to three times 1 ms apart and reverted between attempts.
fn flaky_reverted_between(name: &str, journal: &Journal, fail_times: u64) -> FlowSpec {
    FlowSpec::linear(name).add(
        journal
            .probe_reading(
                "flaky",
                "seed",
                json!({ "fail": "unavailable", "fail_times": fail_times }),
            )
            .retry(
                Retry::attempts(3)
                    .backoff(Duration::from_millis(1), Duration::from_millis(1))
                    .revert_between(true),
            ),
    )
}

#[tokio::test]
async fn revert_between_undoes_each_failed_attempt_before_the_next() {
    let journal = Journal::new();
    let flow = flaky_reverted_between("between", &journal, 2);
    let (report, recorder) = run_recorded(&Engine::new().unwrap(), &flow, seeded()).await;
    assert_eq!(report.state, FlowState::Success);
    assert_eq!(report.tasks[0].attempt, 3);
    use TaskState::*;
    let moves: Vec<(TaskState, TaskState)> = recorder
        .task_transitions()
        .into_iter()
        .map(|(_, from, to)| (from, to))
        .collect();
    assert_eq!(
        moves,
        [
            (Pending, Running),
            (Running, Retrying),
            (Retrying, Reverting),
            (Reverting, Reverted),
            (Reverted, Running),
            (Running, Retrying),
            (Retrying, Reverting),
            (Reverting, Reverted),
            (Reverted, Running),
            (Running, Success),
        ]
    );
    assert_eq!(
        journal.kinds(),
        ["execute", "revert", "execute", "revert", "execute"]
    );
}

#[tokio::test]
async fn without_a_policy_a_task_runs_once() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("once").add(journal.probe_reading(
        "flaky",
        "seed",
        json!({ "fail": "unavailable" }),
    ));
    let report = Engine::new().unwrap().run(&flow, seeded()).await.unwrap();
    assert_eq!(report.state, FlowState::Reverted);
    assert_eq!(report.tasks[0].attempt, 1);
}

#[test]
fn a_policy_that_cannot_work_is_refused_naming_its_field() {
    let ws = Workspace::new();
    two_steps(
        &ws,
        "retry = { attempts = 0 }",
        json!({}),
        Some(
            r#"{ backoff_ms = 500, max_backoff_ms = 100, multiplier = 0.5, on = ["a"], except = ["b"] }"#,
        ),
    );
    let check = ws.flowhost(&["check", "flow.toml", "--json"]);
    assert_exit(&check, 65);
    let problems: Vec<(Value, Value)> = stdout_json(&check)["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["task"].clone(), p["field"].clone()))
        .collect();
    assert_eq!(
        problems,
        [
            (Value::Null, json!("retry.attempts")),
            (json!("b"), json!("retry.multiplier")),
            (json!("b"), json!("retry.backoff_ms")),
            (json!("b"), json!("retry.on")),
        ]
    );
    let unknown = ws.flowhost(&[
        "check",
        &retried(&ws, json!({}), "{ tries = 3 }").to_string_lossy(),
    ]);
    assert_exit(&unknown, 65);
    assert_contains(&stderr(&unknown), "tries");
}

#[tokio::test]
async fn a_run_resumed_while_reverting_a_failed_attempt_reverts_it_again_then_retries() {
    let journal = Journal::new();
    // The first attempt happened before the interruption: the probe's call count says so.
    std::fs::write(journal.path().join("flaky.calls"), "1").unwrap();
    let flow = flaky_reverted_between("interrupted", &journal, 1);
    let checkpoint = stopped_running(vec![flowhost::TaskCheckpoint {
        retry_at: Some(std::time::SystemTime::now()),
        ..failed_attempt("flaky", TaskState::Reverting)
    }]);
    let report = resume_from(&flow, seeded(), checkpoint).await;
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    assert_eq!(
        report.tasks[0].attempt, 2,
        "the interrupted attempt 1 is followed by attempt 2"
    );
    assert_eq!(
        journal.kinds(),
        ["revert", "execute"],
        "the revert caught REVERTING runs again, then the next attempt"
    );
}
