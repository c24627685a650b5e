//! Flow patterns: `graph` flows run independent tasks at once and revert in reverse
//! dependency order, `unordered` flows run everything at once, `max_parallel` bounds both,
//! and validation refuses cycles, unreachable requirements and misplaced `after`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowhost::runs::{Durability, RunDb, SqliteRunDb};
use flowhost::{Engine, FlowSpec, FlowState, TaskState};
use flowhost_testkit::{
    Recorder, Workspace, journaled_probe, json_lines, plugin, stderr, stdout_json, store,
};
use serde_json::{Value, json};

/// `(call, label)` of every probe call in `journal`, in order.
fn calls(journal: &std::path::Path) -> Vec<(String, String)> {
    json_lines(&journal.join("calls.jsonl"))
        .iter()
        .map(|c| {
            (
                c["call"].as_str().unwrap().to_owned(),
                c["label"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn position(calls: &[(String, String)], call: &str, label: &str) -> usize {
    calls
        .iter()
        .position(|(c, l)| c == call && l == label)
        .unwrap_or_else(|| panic!("no {call} of {label} in {calls:?}"))
}

#[tokio::test]
async fn independent_tasks_of_a_graph_run_at_the_same_time() {
    let journal = tempfile::tempdir().unwrap();
    let sleepy = json!({ "mode": "sleep", "ms": 300 });
    let flow = FlowSpec::graph("parallel")
        .max_parallel(4)
        .add(journaled_probe("left", journal.path(), sleepy.clone()).rebind("value", "seed"))
        .add(journaled_probe("right", journal.path(), sleepy).rebind("value", "seed"))
        .add(
            journaled_probe("join", journal.path(), json!({}))
                .rebind("value", "left_out")
                .rebind("extra", "right_out"),
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
    assert_eq!(
        report.fetch("join_out").unwrap()["extra"]["label"],
        "right",
        "join read both results"
    );

    let moves = recorder.task_transitions();
    let at = |task: &str, to: TaskState| {
        moves
            .iter()
            .position(|(t, _, s)| t == task && *s == to)
            .unwrap()
    };
    let first_success = at("left", TaskState::Success).min(at("right", TaskState::Success));
    assert!(
        at("left", TaskState::Running) < first_success
            && at("right", TaskState::Running) < first_success,
        "{moves:?}"
    );
    assert!(
        at("join", TaskState::Running)
            > at("left", TaskState::Success).max(at("right", TaskState::Success))
    );
}

#[tokio::test]
async fn max_parallel_one_runs_a_graph_in_file_order_like_a_linear_flow() {
    let run = |flow: FlowSpec| async move {
        let recorder = Arc::new(Recorder::default());
        let mut loaded = Engine::new()
            .unwrap()
            .load(&flow, store(&[("seed", json!(1))]))
            .await
            .unwrap();
        loaded.listen(recorder.clone());
        assert_eq!(loaded.run().await.unwrap().state, FlowState::Success);
        recorder.task_transitions()
    };
    let journal = tempfile::tempdir().unwrap();
    let tasks = |flow: FlowSpec| {
        ["a", "b", "c", "d"].iter().fold(flow, |flow, name| {
            flow.add(journaled_probe(name, journal.path(), json!({})).rebind("value", "seed"))
        })
    };
    let graph = run(tasks(FlowSpec::graph("one_at_a_time").max_parallel(1))).await;
    let linear = run(tasks(FlowSpec::linear("one_at_a_time"))).await;
    assert_eq!(graph, linear);
    assert_eq!(graph.len(), 8);
}

/// a -> (b, c) -> d, where d fails.
fn diamond(journal: &std::path::Path, pattern: FlowSpec) -> FlowSpec {
    pattern
        .add(journaled_probe("a", journal, json!({})).rebind("value", "seed"))
        .add(journaled_probe("b", journal, json!({})).rebind("value", "a_out"))
        .add(journaled_probe("c", journal, json!({})).rebind("value", "a_out"))
        .add(
            journaled_probe("d", journal, json!({ "fail": "broken" }))
                .rebind("value", "b_out")
                .rebind("extra", "c_out"),
        )
}

#[tokio::test]
async fn a_failing_diamond_reverts_in_reverse_dependency_order() {
    let journal = tempfile::tempdir().unwrap();
    let flow = diamond(journal.path(), FlowSpec::graph("diamond").max_parallel(4));
    let recorder = Arc::new(Recorder::default());
    let mut loaded = Engine::new()
        .unwrap()
        .load(&flow, store(&[("seed", json!(1))]))
        .await
        .unwrap();
    loaded.listen(recorder.clone());
    let report = loaded.run().await.unwrap();
    // TaskFlow 6.5's order for this graph (host/benches/taskflow/diamond.py): b and c start
    // before either ends, d is reverted first, b and c start reverting before either is
    // reverted, a is reverted last.
    let moves = recorder.task_transitions();
    let at = |task: &str, to: TaskState| {
        moves
            .iter()
            .position(|(t, _, s)| t == task && *s == to)
            .unwrap()
    };
    use TaskState::{Reverted, Reverting, Running, Success};
    assert!(
        at("b", Running).max(at("c", Running)) < at("b", Success).min(at("c", Success)),
        "{moves:?}"
    );
    assert!(
        at("d", Reverted) < at("b", Reverting).min(at("c", Reverting)),
        "{moves:?}"
    );
    assert!(
        at("b", Reverting).max(at("c", Reverting)) < at("b", Reverted).min(at("c", Reverted)),
        "{moves:?}"
    );
    assert!(
        at("b", Reverted).max(at("c", Reverted)) < at("a", Reverting),
        "{moves:?}"
    );
    assert_eq!(report.state, FlowState::Reverted);
    assert!(
        report.tasks.iter().all(|t| t.state == TaskState::Reverted),
        "{:?}",
        report.tasks
    );
    assert_eq!(
        report.store.fetch("a_out"),
        None,
        "reverted results leave the store"
    );

    let calls = calls(journal.path());
    let reverted = |label| position(&calls, "revert", label);
    assert!(
        reverted("d") < reverted("b") && reverted("d") < reverted("c"),
        "{calls:?}"
    );
    assert!(
        reverted("b") < reverted("a") && reverted("c") < reverted("a"),
        "{calls:?}"
    );
    let failures: Vec<Value> = json_lines(&journal.path().join("calls.jsonl"))
        .iter()
        .filter(|c| c["call"] == "revert")
        .map(|c| c["failures"].clone())
        .collect();
    assert_eq!(failures.len(), 4);
    assert!(
        failures
            .iter()
            .all(|f| f.as_array().unwrap().len() == 1 && f[0]["task"] == "d"),
        "{failures:?}"
    );
}

#[tokio::test]
async fn when_one_branch_fails_the_running_branch_finishes_and_both_are_reverted() {
    let journal = tempfile::tempdir().unwrap();
    let flow = FlowSpec::graph("branches")
        .max_parallel(4)
        .add(
            journaled_probe(
                "slow",
                journal.path(),
                json!({ "mode": "sleep", "ms": 300 }),
            )
            .rebind("value", "seed"),
        )
        .add(
            journaled_probe("broken", journal.path(), json!({ "fail": "broken" }))
                .rebind("value", "seed"),
        )
        .add(journaled_probe("later", journal.path(), json!({})).rebind("value", "slow_out"));
    let report = Engine::new()
        .unwrap()
        .run(&flow, store(&[("seed", json!(1))]))
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Reverted);
    let states: Vec<TaskState> = report.tasks.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [TaskState::Reverted, TaskState::Reverted, TaskState::Pending],
        "nothing new starts after a failure"
    );
    let calls = calls(journal.path());
    assert_eq!(calls.iter().filter(|(c, _)| c == "execute").count(), 2);
}

#[tokio::test]
async fn cycles_unreachable_names_and_misplaced_after_are_refused_naming_the_tasks() {
    let journal = tempfile::tempdir().unwrap();
    let engine = Engine::new().unwrap();
    let cyclic = FlowSpec::graph("cyclic")
        .add(
            journaled_probe("a", journal.path(), json!({}))
                .rebind("value", "seed")
                .after(["c"]),
        )
        .add(journaled_probe("b", journal.path(), json!({})).rebind("value", "a_out"))
        .add(journaled_probe("c", journal.path(), json!({})).rebind("value", "b_out"));
    let error = engine
        .load(&cyclic, store(&[("seed", json!(1))]))
        .await
        .err()
        .expect("a cycle is refused");
    let message = error.to_string();
    assert!(
        message.contains("cycle") && ["`a`", "`b`", "`c`"].iter().all(|t| message.contains(t)),
        "{message}"
    );

    let unreachable = FlowSpec::graph("unreachable")
        .add(journaled_probe("a", journal.path(), json!({})).rebind("value", "nowhere"));
    let error = engine
        .load(&unreachable, Default::default())
        .await
        .err()
        .expect("nothing provides `nowhere`");
    assert_eq!(error.problems[0].task.as_deref(), Some("a"));
    assert!(error.problems[0].message.contains("`nowhere`"), "{error}");

    let linear_after = FlowSpec::linear("after")
        .add(journaled_probe("a", journal.path(), json!({})).rebind("value", "seed"))
        .add(
            journaled_probe("b", journal.path(), json!({}))
                .rebind("value", "seed")
                .after(["a"]),
        );
    let error = engine
        .load(&linear_after, store(&[("seed", json!(1))]))
        .await
        .err()
        .expect("`after` needs a graph");
    assert_eq!(
        (
            error.problems[0].task.as_deref(),
            error.problems[0].field.as_deref()
        ),
        (Some("b"), Some("after"))
    );

    let unknown = FlowSpec::graph("unknown").add(
        journaled_probe("a", journal.path(), json!({}))
            .rebind("value", "seed")
            .after(["ghost"]),
    );
    let error = engine
        .load(&unknown, store(&[("seed", json!(1))]))
        .await
        .err()
        .expect("`after` names no entry");
    assert!(error.problems[0].message.contains("`ghost`"), "{error}");
}

#[tokio::test]
async fn an_unordered_flow_runs_everything_at_once_and_refuses_data_between_its_tasks() {
    let journal = tempfile::tempdir().unwrap();
    let sleepy = json!({ "mode": "sleep", "ms": 200 });
    let flow = ["x", "y", "z"].iter().fold(
        FlowSpec::unordered("all_at_once").max_parallel(3),
        |flow, name| {
            flow.add(journaled_probe(name, journal.path(), sleepy.clone()).rebind("value", "seed"))
        },
    );
    let recorder = Arc::new(Recorder::default());
    let engine = Engine::new().unwrap();
    let mut loaded = engine
        .load(&flow, store(&[("seed", json!(1))]))
        .await
        .unwrap();
    loaded.listen(recorder.clone());
    assert_eq!(loaded.run().await.unwrap().state, FlowState::Success);
    let moves: Vec<TaskState> = recorder
        .task_transitions()
        .into_iter()
        .map(|(_, _, to)| to)
        .collect();
    assert_eq!(
        &moves[..3],
        [TaskState::Running; 3],
        "all three start before any ends: {moves:?}"
    );

    let dependent = FlowSpec::unordered("dependent")
        .add(journaled_probe("x", journal.path(), json!({})).rebind("value", "seed"))
        .add(journaled_probe("y", journal.path(), json!({})).rebind("value", "x_out"));
    let error = engine
        .load(&dependent, store(&[("seed", json!(1))]))
        .await
        .err()
        .expect("y reads x's result");
    assert_eq!(
        (
            error.problems[0].task.as_deref(),
            error.problems[0].field.as_deref()
        ),
        (Some("y"), Some("rebind"))
    );
    assert!(
        error.problems[0].message.contains("task `x` provides"),
        "{error}"
    );
}

#[test]
fn a_graph_flow_file_killed_mid_run_resumes_without_running_succeeded_tasks_again() {
    let ws = Workspace::new();
    let probe = plugin("probe");
    let dirs = r#"dirs = [{ host = "journal", guest = "/journal", mode = "rw" }, { host = "signal", guest = "/signal" }]"#;
    let text = format!(
        r#"name = "checks"
pattern = "graph"
max_parallel = 4

[store]
seed = 1

[[task]]
name = "quick"
plugin = {probe:?}
rebind = {{ value = "seed" }}
provides = ["quick_out"]
config = {{ label = "quick", journal = true }}
{dirs}

[[task]]
name = "blocked"
plugin = {probe:?}
rebind = {{ value = "seed" }}
provides = ["blocked_out"]
config = {{ label = "blocked", journal = true, mode = "wait_file", path = "/signal/go" }}
{dirs}

[[task]]
name = "last"
plugin = {probe:?}
rebind = {{ value = "quick_out" }}
provides = ["last_out"]
config = {{ label = "last", journal = true }}
after = ["blocked"]
{dirs}
"#
    );
    std::fs::write(ws.path("flow.toml"), text).unwrap();
    let db = ws.db();
    let mut child = ws
        .command(&["run", "flow.toml", "--db", db.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "flowhost ended before the kill"
        );
        assert!(
            Instant::now() < deadline,
            "`quick` never succeeded while `blocked` ran"
        );
        let states = SqliteRunDb::open(&db, false, Durability::Normal)
            .ok()
            .and_then(|db| {
                let run = db.list(&Default::default()).ok()?.into_iter().next()?;
                Some(
                    db.get(&run.id)
                        .ok()??
                        .tasks
                        .iter()
                        .map(|t| t.state)
                        .collect::<Vec<_>>(),
                )
            });
        if states
            == Some(vec![
                TaskState::Success,
                TaskState::Running,
                TaskState::Pending,
            ])
            && ws.count("execute", "blocked") == 1
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    ws.release();
    let run = ws.only_run();
    let resumed = ws.flowhost(&[
        "runs",
        "resume",
        &run.id,
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(stdout_json(&resumed)["state"], "SUCCESS");
    assert_eq!(
        ws.count("execute", "quick"),
        1,
        "succeeded before the kill: not executed again"
    );
    assert_eq!(
        ws.count("execute", "blocked"),
        2,
        "caught RUNNING: executed again"
    );
    assert_eq!(ws.count("execute", "last"), 1);
}

#[tokio::test]
async fn a_task_waiting_to_be_retried_does_not_hold_up_independent_tasks() {
    let journal = tempfile::tempdir().unwrap();
    let pause = flowhost::Retry::attempts(2)
        .backoff(Duration::from_millis(400), Duration::from_millis(400));
    let flow = FlowSpec::graph("retry_in_a_graph")
        .max_parallel(2)
        .add(
            journaled_probe(
                "flaky",
                journal.path(),
                json!({ "fail": "unavailable", "fail_times": 1 }),
            )
            .rebind("value", "seed")
            .retry(pause),
        )
        .add(
            journaled_probe(
                "steady",
                journal.path(),
                json!({ "mode": "sleep", "ms": 50 }),
            )
            .rebind("value", "seed"),
        )
        .add(
            journaled_probe("after_steady", journal.path(), json!({}))
                .rebind("value", "steady_out"),
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
    assert_eq!(report.tasks[0].attempt, 2);
    let moves = recorder.task_transitions();
    let at = |task: &str, from: TaskState, to: TaskState| {
        moves
            .iter()
            .position(|m| m.0 == task && m.1 == from && m.2 == to)
            .unwrap_or_else(|| panic!("{moves:?}"))
    };
    let retried = at("flaky", TaskState::Retrying, TaskState::Running);
    assert!(
        at("after_steady", TaskState::Running, TaskState::Success) < retried,
        "{moves:?}"
    );
}

#[test]
fn check_shows_each_tasks_dependencies_and_flow_file_mistakes_name_their_place() {
    let ws = Workspace::new();
    let probe = plugin("probe");
    let flow = |pattern: &str, max_parallel: &str| {
        format!(
            "name = \"deps\"\npattern = {pattern}\nmax_parallel = {max_parallel}\n[store]\nseed = 1\n\n\
             [[task]]\nname = \"second\"\nplugin = {probe:?}\nrebind = {{ value = \"first_out\" }}\nprovides = [\"second_out\"]\n\n\
             [[task]]\nname = \"first\"\nplugin = {probe:?}\nrebind = {{ value = \"seed\" }}\nprovides = [\"first_out\"]\n"
        )
    };
    std::fs::write(ws.path("flow.toml"), flow("\"graph\"", "2")).unwrap();
    let check = ws.flowhost(&["check", "flow.toml", "--json"]);
    assert!(check.status.success(), "{}", stderr(&check));
    let plan = stdout_json(&check);
    assert_eq!(
        plan["tasks"][0]["depends_on"],
        json!(["first"]),
        "second reads first's result, listed later in the file"
    );
    assert_eq!(plan["tasks"][1]["depends_on"], json!([]));
    assert_eq!(
        plan["tasks"][0]["retry"]["attempts"], 1,
        "no policy: one attempt"
    );
    let run = ws.flowhost(&["run", "flow.toml", "--no-db", "--fetch", "second_out"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        stdout_json(&run)["second_out"]["value"]["value"],
        1,
        "second got first's echo of the seed"
    );

    std::fs::write(ws.path("flow.toml"), flow("\"graph\"", "0")).unwrap();
    let zero = ws.flowhost(&["check", "flow.toml", "--json"]);
    assert_eq!(zero.status.code(), Some(65));
    assert_eq!(stdout_json(&zero)["problems"][0]["field"], "max_parallel");

    std::fs::write(ws.path("flow.toml"), flow("\"tree\"", "2")).unwrap();
    let bogus = ws.flowhost(&["check", "flow.toml"]);
    assert_eq!(bogus.status.code(), Some(65));
    assert!(
        stderr(&bogus).contains("line 2") && stderr(&bogus).contains("tree"),
        "{}",
        stderr(&bogus)
    );
}
