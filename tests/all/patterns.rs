//! Flow patterns: `graph` flows run independent tasks at once and revert in reverse
//! dependency order, `unordered` flows run everything at once, `max_parallel` bounds both,
//! and validation refuses cycles, unreachable requirements and misplaced `after`.

use std::time::Duration;

use flowhost::{Engine, FlowSpec, FlowState, Store, TaskState, ValidationError};
use serde_json::{Value, json};

use crate::kit::{
    Journal, Probe, Recorder, Workspace, assert_contains, assert_exit, exit_json, kill, plugin,
    report_states, run_recorded, seeded, stderr, stdout_json,
};

/// Runs `flow` from the store `seed = 1` on a fresh engine with a [`Recorder`] listening.
async fn run_seeded(flow: &FlowSpec) -> (flowhost::RunReport, std::sync::Arc<Recorder>) {
    run_recorded(&Engine::new().unwrap(), flow, seeded()).await
}

/// Loads `flow` from `initial` on `engine`, which must refuse it (because `why`): the error.
async fn refused(engine: &Engine, flow: &FlowSpec, initial: Store, why: &str) -> ValidationError {
    engine.load(flow, initial).await.err().expect(why)
}

/// The task and the field the first problem names.
fn first_place(error: &ValidationError) -> (Option<&str>, Option<&str>) {
    (
        error.problems[0].task.as_deref(),
        error.problems[0].field.as_deref(),
    )
}

#[tokio::test]
async fn independent_tasks_of_a_graph_run_at_the_same_time() {
    let journal = Journal::new();
    let sleepy = json!({ "mode": "sleep", "ms": 300 });
    let flow = FlowSpec::graph("parallel")
        .max_parallel(4)
        .add(journal.probe_reading("left", "seed", sleepy.clone()))
        .add(journal.probe_reading("right", "seed", sleepy))
        .add(
            journal
                .probe_reading("join", "left_out", json!({}))
                .rebind("extra", "right_out"),
        );
    let (report, recorder) = run_seeded(&flow).await;
    assert_eq!(report.state, FlowState::Success);
    assert_eq!(
        report.fetch("join_out").unwrap()["extra"]["label"],
        "right",
        "join read both results"
    );

    let moves = recorder.task_transitions();
    let at = |task: &str, to: TaskState| recorder.position(task, to);
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
        let (report, recorder) = run_seeded(&flow).await;
        assert_eq!(report.state, FlowState::Success);
        recorder.task_transitions()
    };
    let journal = Journal::new();
    let tasks = |flow: FlowSpec| {
        ["a", "b", "c", "d"].iter().fold(flow, |flow, name| {
            flow.add(journal.probe_reading(name, "seed", json!({})))
        })
    };
    let graph = run(tasks(FlowSpec::graph("one_at_a_time").max_parallel(1))).await;
    let linear = run(tasks(FlowSpec::linear("one_at_a_time"))).await;
    assert_eq!(graph, linear);
    assert_eq!(graph.len(), 8);
}

/// a -> (b, c) -> d, where d fails.
fn diamond(journal: &Journal, pattern: FlowSpec) -> FlowSpec {
    pattern
        .add(journal.probe_reading("a", "seed", json!({})))
        .add(journal.probe_reading("b", "a_out", json!({})))
        .add(journal.probe_reading("c", "a_out", json!({})))
        .add(
            journal
                .probe_reading("d", "b_out", json!({ "fail": "broken" }))
                .rebind("extra", "c_out"),
        )
}

#[tokio::test]
async fn a_failing_diamond_reverts_in_reverse_dependency_order() {
    let journal = Journal::new();
    let flow = diamond(&journal, FlowSpec::graph("diamond").max_parallel(4));
    let (report, recorder) = run_seeded(&flow).await;
    // TaskFlow 6.5's order for this graph (host/benches/taskflow/diamond.py): b and c start
    // before either ends, d is reverted first, b and c start reverting before either is
    // reverted, a is reverted last.
    let moves = recorder.task_transitions();
    let at = |task: &str, to: TaskState| recorder.position(task, to);
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

    let calls = journal.calls();
    let reverted = |label| journal.position("revert", label);
    assert!(
        reverted("d") < reverted("b") && reverted("d") < reverted("c"),
        "{calls:?}"
    );
    assert!(
        reverted("b") < reverted("a") && reverted("c") < reverted("a"),
        "{calls:?}"
    );
    let failures: Vec<Value> = journal
        .reverts()
        .into_iter()
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
    let journal = Journal::new();
    let flow = FlowSpec::graph("branches")
        .max_parallel(4)
        .add(journal.probe_reading("slow", "seed", json!({ "mode": "sleep", "ms": 300 })))
        .add(journal.probe_reading("broken", "seed", json!({ "fail": "broken" })))
        .add(journal.probe_reading("later", "slow_out", json!({})));
    let report = Engine::new().unwrap().run(&flow, seeded()).await.unwrap();
    assert_eq!(report.state, FlowState::Reverted);
    assert_eq!(
        report_states(&report),
        [TaskState::Reverted, TaskState::Reverted, TaskState::Pending],
        "nothing new starts after a failure"
    );
    let calls = journal.calls();
    assert_eq!(calls.iter().filter(|(c, _)| c == "execute").count(), 2);
}

#[tokio::test]
async fn cycles_unreachable_names_and_misplaced_after_are_refused_naming_the_tasks() {
    let journal = Journal::new();
    let engine = Engine::new().unwrap();
    let cyclic = FlowSpec::graph("cyclic")
        .add(journal.probe_reading("a", "seed", json!({})).after(["c"]))
        .add(journal.probe_reading("b", "a_out", json!({})))
        .add(journal.probe_reading("c", "b_out", json!({})));
    let error = refused(&engine, &cyclic, seeded(), "a cycle is refused").await;
    let message = error.to_string();
    assert!(
        message.contains("cycle") && ["`a`", "`b`", "`c`"].iter().all(|t| message.contains(t)),
        "{message}"
    );

    let unreachable =
        FlowSpec::graph("unreachable").add(journal.probe_reading("a", "nowhere", json!({})));
    let error = refused(
        &engine,
        &unreachable,
        Store::new(),
        "nothing provides `nowhere`",
    )
    .await;
    assert_eq!(error.problems[0].task.as_deref(), Some("a"));
    assert!(error.problems[0].message.contains("`nowhere`"), "{error}");

    let linear_after = FlowSpec::linear("after")
        .add(journal.probe_reading("a", "seed", json!({})))
        .add(journal.probe_reading("b", "seed", json!({})).after(["a"]));
    let error = refused(&engine, &linear_after, seeded(), "`after` needs a graph").await;
    assert_eq!(first_place(&error), (Some("b"), Some("after")));

    let unknown = FlowSpec::graph("unknown").add(
        journal
            .probe_reading("a", "seed", json!({}))
            .after(["ghost"]),
    );
    let error = refused(&engine, &unknown, seeded(), "`after` names no entry").await;
    assert!(error.problems[0].message.contains("`ghost`"), "{error}");
}

#[tokio::test]
async fn an_unordered_flow_runs_everything_at_once_and_refuses_data_between_its_tasks() {
    let journal = Journal::new();
    let sleepy = json!({ "mode": "sleep", "ms": 200 });
    let flow = ["x", "y", "z"].iter().fold(
        FlowSpec::unordered("all_at_once").max_parallel(3),
        |flow, name| flow.add(journal.probe_reading(name, "seed", sleepy.clone())),
    );
    let engine = Engine::new().unwrap();
    let (report, recorder) = run_recorded(&engine, &flow, seeded()).await;
    assert_eq!(report.state, FlowState::Success);
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
        .add(journal.probe_reading("x", "seed", json!({})))
        .add(journal.probe_reading("y", "x_out", json!({})));
    let error = refused(&engine, &dependent, seeded(), "y reads x's result").await;
    assert_eq!(first_place(&error), (Some("y"), Some("rebind")));
    assert!(
        error.problems[0].message.contains("task `x` provides"),
        "{error}"
    );
}

#[test]
fn a_graph_flow_file_killed_mid_run_resumes_without_running_succeeded_tasks_again() {
    let ws = Workspace::new();
    ws.write_flow(
        "checks",
        "pattern = \"graph\"\nmax_parallel = 4",
        &[
            Probe::new("quick").reads("seed"),
            Probe::new("blocked")
                .reads("seed")
                .config(json!({ "mode": "wait_file", "path": "/signal/go" })),
            Probe::new("last")
                .reads("quick_out")
                .toml("after = [\"blocked\"]\n"),
        ],
    );
    let mut child = ws.recording(&["run", "flow.toml"]).start();
    ws.wait_for_record(
        &mut child,
        "`quick` succeeded while `blocked` ran",
        |record| {
            let states: Vec<TaskState> = record.tasks.iter().map(|t| t.state).collect();
            (states == [TaskState::Success, TaskState::Running, TaskState::Pending]
                && ws.count("execute", "blocked") == 1)
                .then_some(())
        },
    );
    kill(child);

    assert_eq!(ws.release_and_resume()["state"], "SUCCESS");
    assert_eq!(
        ws.executions(&["quick", "blocked", "last"]),
        [1, 2, 1],
        "`quick` succeeded before the kill: not executed again; `blocked` was caught RUNNING: \
         executed again"
    );
}

#[tokio::test]
async fn a_task_waiting_to_be_retried_does_not_hold_up_independent_tasks() {
    let journal = Journal::new();
    let pause = flowhost::Retry::attempts(2)
        .backoff(Duration::from_millis(400), Duration::from_millis(400));
    let flow = FlowSpec::graph("retry_in_a_graph")
        .max_parallel(2)
        .add(
            journal
                .probe_reading(
                    "flaky",
                    "seed",
                    json!({ "fail": "unavailable", "fail_times": 1 }),
                )
                .retry(pause),
        )
        .add(journal.probe_reading("steady", "seed", json!({ "mode": "sleep", "ms": 50 })))
        .add(journal.probe_reading("after_steady", "steady_out", json!({})));
    let (report, recorder) = run_seeded(&flow).await;
    assert_eq!(report.state, FlowState::Success);
    assert_eq!(report.tasks[0].attempt, 2);
    let moves = recorder.task_transitions();
    let at = |task: &str, from: TaskState, to: TaskState| recorder.position_of(task, from, to);
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
    let plan = exit_json(&check, 0);
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
    assert_exit(&run, 0);
    assert_eq!(
        stdout_json(&run)["second_out"]["value"]["value"],
        1,
        "second got first's echo of the seed"
    );

    std::fs::write(ws.path("flow.toml"), flow("\"graph\"", "0")).unwrap();
    let zero = ws.flowhost(&["check", "flow.toml", "--json"]);
    assert_exit(&zero, 65);
    assert_eq!(stdout_json(&zero)["problems"][0]["field"], "max_parallel");

    std::fs::write(ws.path("flow.toml"), flow("\"tree\"", "2")).unwrap();
    let bogus = ws.flowhost(&["check", "flow.toml"]);
    assert_exit(&bogus, 65);
    assert_contains(&stderr(&bogus), "line 2");
    assert_contains(&stderr(&bogus), "tree");
}

/// `n` probes that each return `1` at once: `t0` reads the seed and `t{i}` reads the result
/// of `t{(i-1)/2}` (a binary tree) in a graph, or of `t{i-1}` in a linear flow.
fn cheap_flow(flow: FlowSpec, n: usize) -> FlowSpec {
    let linear = flow.pattern == flowhost::Pattern::Linear;
    let probe = plugin("probe");
    (0..n).fold(flow, |flow, i| {
        let from = match i {
            0 => "seed".to_owned(),
            i if linear => format!("o{}", i - 1),
            i => format!("o{}", (i - 1) / 2),
        };
        flow.add(
            flowhost::TaskSpec::new(format!("t{i}"), &probe)
                .rebind("value", from)
                .provides([format!("o{i}")])
                .config(json!({ "raw_result": "1" }))
                .instances(flowhost::Instances::Reuse),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_of_100000_tasks_runs_in_at_most_twice_the_time_of_a_linear_flow_of_as_many() {
    const N: usize = 100_000;
    let engine = Engine::new().unwrap();
    let mut took = Vec::new();
    for flow in [
        FlowSpec::linear("wide"),
        FlowSpec::graph("wide").max_parallel(2),
    ] {
        let flow = cheap_flow(flow, N);
        let started = std::time::Instant::now();
        let report = engine.run(&flow, seeded()).await.unwrap();
        took.push(started.elapsed());
        assert_eq!(report.state, FlowState::Success);
        assert_eq!(report.fetch(&format!("o{}", N - 1)), Some(&json!(1)));
    }
    let (linear, graph) = (took[0], took[1]);
    eprintln!("{N} tasks: linear {linear:?}, graph {graph:?}");
    assert!(
        graph.as_secs_f64() <= 2.0 * linear.as_secs_f64() + 1.0,
        "graph {graph:?} against linear {linear:?}: scheduling must stay linear in tasks and edges"
    );
}
