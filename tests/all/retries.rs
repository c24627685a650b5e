//! Retries: a failed task entry is executed again by its retry policy (or the flow's) before
//! the flow reverts; every attempt, its error and the pause before the next are journaled,
//! so `runs show` lists them and a run killed during a pause resumes it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowhost::runs::{Durability, RunDb, SqliteRunDb};
use flowhost::{Engine, FlowSpec, FlowState, Retry, TaskState};
use flowhost_testkit::{Recorder, Workspace, journaled_probe, plugin, stderr, stdout_json, store};
use serde_json::{Value, json};

/// Writes `flow.toml` in the workspace: `head` text (top-level keys and tables), then a probe
/// `a` that succeeds and a probe `b` configured by `config` with `retry` as its entry's
/// policy (when given). Both journal into `journal/`.
fn two_steps(ws: &Workspace, head: &str, config: &str, retry: Option<&str>) -> PathBuf {
    let probe = plugin("probe");
    let dirs = r#"dirs = [{ host = "journal", guest = "/journal", mode = "rw" }]"#;
    let retry = retry.map(|r| format!("retry = {r}\n")).unwrap_or_default();
    let config = if config.is_empty() {
        String::new()
    } else {
        format!(", {config}")
    };
    let text = format!(
        r#"name = "retried"
{head}
[store]
seed = 1

[[task]]
name = "a"
plugin = {probe:?}
rebind = {{ value = "seed" }}
provides = ["a_out"]
config = {{ label = "a", journal = true }}
{dirs}

[[task]]
name = "b"
plugin = {probe:?}
rebind = {{ value = "a_out" }}
provides = ["b_out"]
config = {{ label = "b", journal = true{config} }}
{dirs}
{retry}"#
    );
    let path = ws.path("flow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `runs show ID --json` of the workspace's only run.
fn shown(ws: &Workspace) -> Value {
    let run = ws.only_run();
    let db = ws.db();
    let show = ws.flowhost(&[
        "runs",
        "show",
        &run.id,
        "--json",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(show.status.success(), "{}", stderr(&show));
    stdout_json(&show)
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

fn backoffs(record: &Value, index: usize) -> Vec<f64> {
    record["tasks"][index]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["backoff_ms"].as_f64())
        .collect()
}

#[test]
fn a_task_failing_twice_succeeds_on_its_third_attempt_and_the_flow_succeeds() {
    let ws = Workspace::new();
    two_steps(
        &ws,
        "",
        r#"fail = "unavailable", fail_times = 2"#,
        Some("{ attempts = 4, backoff_ms = 10 }"),
    );
    let db = ws.db();
    let run = ws.flowhost(&[
        "run",
        "flow.toml",
        "--db",
        db.to_str().unwrap(),
        "--fetch",
        "b_out",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout_json(&run)["b_out"]["label"], "b");
    assert_eq!(
        ws.count("execute", "b"),
        3,
        "two failed attempts, then the one that succeeded"
    );
    assert_eq!(
        ws.count("revert", "b"),
        0,
        "nothing is reverted: the flow succeeded"
    );
    let log = stderr(&run);
    assert!(log.contains("task `b` RUNNING -> RETRYING"), "{log}");
    assert!(
        log.contains("attempt 1 failed; attempt 2 in 10.0 ms"),
        "{log}"
    );

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

    let human = ws.flowhost(&[
        "runs",
        "show",
        &ws.only_run().id,
        "--db",
        db.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(
        text.contains("attempt 1") && text.contains("attempt 3"),
        "{text}"
    );
    assert!(
        text.contains("next attempt after 20 ms"),
        "the second pause is doubled: {text}"
    );
}

#[test]
fn exhausted_retries_revert_the_flow_and_the_failed_task_once() {
    let ws = Workspace::new();
    two_steps(
        &ws,
        "",
        r#"fail = "unavailable", message = "scheduler down""#,
        Some("{ attempts = 3, backoff_ms = 1 }"),
    );
    let db = ws.db();
    let run = ws.flowhost(&["run", "flow.toml", "--db", db.to_str().unwrap(), "--json"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let report = stdout_json(&run);
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
            r#"fail = "over-quota""#,
            r#"{ attempts = 3, backoff_ms = 1, on = ["unavailable"] }"#,
            1,
        ),
        (
            r#"fail = "unavailable""#,
            r#"{ attempts = 3, backoff_ms = 1, on = ["unavailable"] }"#,
            3,
        ),
        (
            r#"fail = "invalid-args""#,
            r#"{ attempts = 3, backoff_ms = 1 }"#,
            1,
        ),
        (
            r#"fail = "invalid-args""#,
            r#"{ attempts = 3, backoff_ms = 1, on = ["invalid-args"] }"#,
            3,
        ),
        (
            r#"fail = "over-quota""#,
            r#"{ attempts = 3, backoff_ms = 1, except = ["over-quota"] }"#,
            1,
        ),
        (
            r#"fail = "unavailable""#,
            r#"{ attempts = 3, backoff_ms = 1, except = ["over-quota"] }"#,
            3,
        ),
    ] {
        let ws = Workspace::new();
        two_steps(&ws, "", config, Some(retry));
        let run = ws.flowhost(&["run", "flow.toml", "--no-db"]);
        assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
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
        r#"fail = "unavailable""#,
        Some("{ attempts = 2 }"),
    );
    let run = ws.flowhost(&["run", "flow.toml", "--no-db"]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        ws.count("execute", "b"),
        2,
        "the entry's `attempts` wins over the flow's"
    );

    let ws = Workspace::new();
    two_steps(
        &ws,
        "retry = { attempts = 4, backoff_ms = 1 }",
        r#"fail = "unavailable""#,
        None,
    );
    let run = ws.flowhost(&["run", "flow.toml", "--no-db"]);
    assert_eq!(run.status.code(), Some(1));
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
    two_steps(
        &ws,
        "",
        r#"fail = "unavailable", fail_times = 4"#,
        Some(retry),
    );
    let db = ws.db();
    let run = ws.flowhost(&["run", "flow.toml", "--db", db.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(backoffs(&shown(&ws), 1), [20.0, 60.0, 100.0, 100.0]);
}

#[test]
fn a_run_killed_during_a_backoff_resumes_the_wait_and_loses_no_attempt() {
    let ws = Workspace::new();
    two_steps(
        &ws,
        "",
        r#"fail = "unavailable", fail_times = 1"#,
        Some("{ attempts = 3, backoff_ms = 1500 }"),
    );
    let db = ws.db();
    let mut child = ws
        .command(&["run", "flow.toml", "--db", db.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once RETRYING is committed: the run then waits out its pause.
    let deadline = Instant::now() + Duration::from_secs(300);
    let due = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "flowhost ended before `b` was retrying"
        );
        assert!(Instant::now() < deadline, "`b` never reached RETRYING");
        let record = SqliteRunDb::open(&db, false, Durability::Normal)
            .ok()
            .and_then(|db| {
                db.list(&Default::default())
                    .ok()?
                    .first()
                    .and_then(|run| db.get(&run.id).ok().flatten())
            });
        if let Some(record) = record
            && record.tasks[1].state == TaskState::Retrying
        {
            break record.tasks[1]
                .retry_at
                .expect("RETRYING carries the next attempt's due time");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ws.count("execute", "b"), 1);

    let run = ws.only_run();
    assert_eq!(run.state, FlowState::Running);
    let resumed = ws.flowhost(&["runs", "resume", &run.id, "--db", db.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(ws.count("execute", "a"), 1, "`a` succeeded before the kill");
    assert_eq!(
        ws.count("execute", "b"),
        2,
        "the failed attempt is not repeated; the second one ran once"
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

#[tokio::test]
async fn revert_between_undoes_each_failed_attempt_before_the_next() {
    let journal = tempfile::tempdir().unwrap();
    let flow = FlowSpec::linear("between").add(
        journaled_probe(
            "flaky",
            journal.path(),
            json!({ "fail": "unavailable", "fail_times": 2 }),
        )
        .rebind("value", "seed")
        .retry(
            Retry::attempts(3)
                .backoff(Duration::from_millis(1), Duration::from_millis(1))
                .revert_between(true),
        ),
    );
    let recorder = Arc::new(Recorder::default());
    let mut loaded = Engine::new()
        .unwrap()
        .load(&flow, store(&[("seed", json!(1))]))
        .await
        .unwrap();
    loaded.listen(recorder.clone());
    let report = loaded.run().await.unwrap();
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
    let calls: Vec<String> = flowhost_testkit::json_lines(&journal.path().join("calls.jsonl"))
        .iter()
        .map(|c| c["call"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(calls, ["execute", "revert", "execute", "revert", "execute"]);
}

#[tokio::test]
async fn without_a_policy_a_task_runs_once() {
    let journal = tempfile::tempdir().unwrap();
    let flow = FlowSpec::linear("once").add(
        journaled_probe("flaky", journal.path(), json!({ "fail": "unavailable" }))
            .rebind("value", "seed"),
    );
    let report = Engine::new()
        .unwrap()
        .run(&flow, store(&[("seed", json!(1))]))
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Reverted);
    assert_eq!(report.tasks[0].attempt, 1);
}

#[test]
fn a_policy_that_cannot_work_is_refused_naming_its_field() {
    let ws = Workspace::new();
    two_steps(
        &ws,
        "retry = { attempts = 0 }",
        "",
        Some(
            r#"{ backoff_ms = 500, max_backoff_ms = 100, multiplier = 0.5, on = ["a"], except = ["b"] }"#,
        ),
    );
    let check = ws.flowhost(&["check", "flow.toml", "--json"]);
    assert_eq!(check.status.code(), Some(65), "{}", stderr(&check));
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
        &two_steps(&ws, "", "", Some("{ tries = 3 }")).to_string_lossy(),
    ]);
    assert_eq!(unknown.status.code(), Some(65));
    assert!(stderr(&unknown).contains("tries"), "{}", stderr(&unknown));
}

#[tokio::test]
async fn a_run_resumed_while_reverting_a_failed_attempt_reverts_it_again_then_retries() {
    let journal = tempfile::tempdir().unwrap();
    // The first attempt happened before the interruption: the probe's call count says so.
    std::fs::write(journal.path().join("flaky.calls"), "1").unwrap();
    let flow = FlowSpec::linear("interrupted").add(
        journaled_probe(
            "flaky",
            journal.path(),
            json!({ "fail": "unavailable", "fail_times": 1 }),
        )
        .rebind("value", "seed")
        .retry(
            Retry::attempts(3)
                .backoff(Duration::from_millis(1), Duration::from_millis(1))
                .revert_between(true),
        ),
    );
    let error = flowhost::TaskError {
        code: "unavailable".into(),
        message: "busy".into(),
        details: None,
    };
    let checkpoint = flowhost::Checkpoint {
        state: FlowState::Running,
        tasks: vec![flowhost::TaskCheckpoint {
            name: "flaky".into(),
            state: TaskState::Reverting,
            args: Some(r#"{"value":1}"#.into()),
            outcome: Some(flowhost::Outcome::Error(error.clone())),
            error: Some(error),
            revert_error: None,
            duration: Duration::from_millis(1),
            attempt: 1,
            retry_at: Some(std::time::SystemTime::now()),
            iterations: Vec::new(),
        }],
    };
    let loaded = Engine::new()
        .unwrap()
        .load(&flow, store(&[("seed", json!(1))]))
        .await
        .unwrap();
    let report = loaded.resume(checkpoint).await.unwrap();
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    assert_eq!(
        report.tasks[0].attempt, 2,
        "the interrupted attempt 1 is followed by attempt 2"
    );
    let calls: Vec<String> = flowhost_testkit::json_lines(&journal.path().join("calls.jsonl"))
        .iter()
        .map(|c| c["call"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        calls,
        ["revert", "execute"],
        "the revert caught REVERTING runs again, then the next attempt"
    );
}
