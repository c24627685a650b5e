//! Subflows and their retry controllers: a failed iteration reverts only the subflow's tasks
//! and starts it again (`times`, `for_each`, `parameterized_for_each`); once out of
//! iterations, `revert` hands the failure to the enclosing controller and `revert_all`
//! reverts the whole flow; the iteration is journaled, so a killed run resumes in it.

use flowhost::{Controller, Engine, FlowSpec, FlowState, RunReport, Strategy, Subflow, TaskState};
use serde_json::{Value, json};

use crate::kit::{
    Journal, Workspace, assert_contains, assert_exit, exit_json, failed_attempt, plugin,
    probe_file, resume_from, run_recorded, seeded, stdout, stopped_running, store,
};

/// Runs `flow` from the store `seed = 1` on a fresh engine.
async fn run_seeded(flow: &FlowSpec) -> RunReport {
    Engine::new().unwrap().run(flow, seeded()).await.unwrap()
}

/// `before`, then subflow `schedule` (`pick`, then `cast` failing its first `fail_times`
/// calls) under `controller`, then `after` reading `cast`'s result.
fn schedule_flow(journal: &Journal, controller: Controller, fail_times: u64) -> FlowSpec {
    let failing = json!({ "fail": "unavailable", "fail_times": fail_times });
    FlowSpec::linear("scheduled")
        .add(journal.probe_reading("before", "seed", json!({})))
        .add(
            Subflow::linear("schedule")
                .retry(controller)
                .add(journal.probe_reading("pick", "before_out", json!({})))
                .add(journal.probe_reading("cast", "pick_out", failing)),
        )
        .add(journal.probe_reading("after", "cast_out", json!({})))
}

#[tokio::test]
async fn times_runs_the_subflow_again_until_an_iteration_succeeds() {
    let journal = Journal::new();
    let flow = schedule_flow(&journal, Controller::times(3), 2);
    let report = run_seeded(&flow).await;
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    let names: Vec<&str> = report.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["before", "schedule/pick", "schedule/cast", "after"]);
    assert_eq!(
        [
            journal.count("execute", "before"),
            journal.count("execute", "pick"),
            journal.count("execute", "cast")
        ],
        [1, 3, 3],
        "the third iteration succeeded; what precedes the subflow ran once"
    );
    assert_eq!(report.tasks[2].iterations, [3]);
    assert!(report.tasks[0].iterations.is_empty() && report.tasks[3].iterations.is_empty());
    assert_eq!(
        (
            report.subflows[0].path.as_str(),
            report.subflows[0].iteration
        ),
        ("schedule", 3)
    );

    // Two iterations are not enough: the subflow reverts, and with no enclosing controller
    // so does the whole flow.
    let journal = Journal::new();
    let flow = schedule_flow(&journal, Controller::times(2), 2);
    let report = run_seeded(&flow).await;
    assert_eq!(report.state, FlowState::Reverted);
    assert_eq!(journal.count("execute", "cast"), 2);
    assert_eq!(journal.count("execute", "after"), 0);
}

#[tokio::test]
async fn a_failed_iteration_reverts_only_the_subflow_before_the_next() {
    let journal = Journal::new();
    let flow = schedule_flow(&journal, Controller::times(2), 1);
    let (report, recorder) = run_recorded(&Engine::new().unwrap(), &flow, seeded()).await;
    assert_eq!(report.state, FlowState::Success);
    let moves: Vec<(String, TaskState)> = recorder
        .task_transitions()
        .into_iter()
        .map(|(t, _, to)| (t, to))
        .collect();
    let from_failure = moves
        .iter()
        .position(|(t, s)| t == "schedule/cast" && *s == TaskState::Failure)
        .unwrap();
    let next: Vec<(&str, TaskState)> = moves[from_failure..from_failure + 8]
        .iter()
        .map(|(t, s)| (t.as_str(), *s))
        .collect();
    use TaskState::*;
    assert_eq!(
        next,
        [
            ("schedule/cast", Failure),
            ("schedule/cast", Reverting),
            ("schedule/cast", Reverted),
            ("schedule/pick", Reverting),
            ("schedule/pick", Reverted),
            ("schedule/pick", Pending),
            ("schedule/cast", Pending),
            ("schedule/pick", Running),
        ],
        "{moves:?}"
    );
    assert!(
        !moves.iter().any(|(t, s)| t == "before" && *s == Reverting),
        "`before` is outside the subflow: {moves:?}"
    );
    let reverts: Vec<Value> = journal
        .reverts()
        .into_iter()
        .map(|c| c["label"].clone())
        .collect();
    assert_eq!(reverts, ["cast", "pick"]);
}

#[tokio::test]
async fn for_each_gives_each_iteration_the_next_value() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("hosts").add(
        Subflow::linear("schedule")
            .retry(Controller::for_each(
                [json!("h1"), json!("h2"), json!("h3")],
                "host",
            ))
            .add(journal.probe_reading(
                "cast",
                "host",
                json!({ "fail": "unavailable", "fail_times": 2 }),
            )),
    );
    let report = Engine::new().unwrap().run(&flow, store(&[])).await.unwrap();
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    assert_eq!(
        journal.values("cast"),
        [json!("h1"), json!("h2"), json!("h3")]
    );
    assert_eq!(report.fetch("cast_out").unwrap()["value"], "h3");
}

#[tokio::test]
async fn parameterized_for_each_reads_its_list_from_the_store() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("hosts").add(
        Subflow::linear("schedule")
            .retry(Controller::parameterized_for_each("hosts_list", "host"))
            .add(journal.probe_reading(
                "cast",
                "host",
                json!({ "fail": "unavailable", "fail_times": 1 }),
            )),
    );
    let initial = store(&[("hosts_list", json!(["b1", "b2"]))]);
    let report = Engine::new().unwrap().run(&flow, initial).await.unwrap();
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    assert_eq!(journal.values("cast"), [json!("b1"), json!("b2")]);

    // A list the store lacks is refused before anything runs, naming the field.
    let error = Engine::new()
        .unwrap()
        .load(&flow, store(&[]))
        .await
        .err()
        .unwrap();
    let problem = &error.problems[0];
    assert_eq!(
        (problem.task.as_deref(), problem.field.as_deref()),
        (
            Some("schedule"),
            Some("flow.retry.parameterized_for_each.from")
        )
    );
}

/// Outer subflow (`o`, then an inner subflow whose `i` always fails), each controller
/// `times = 2`; the inner one exhausts with `strategy`.
fn nested(journal: &Journal, strategy: Strategy) -> FlowSpec {
    let inner = Subflow::linear("inner")
        .retry(Controller::times(2).strategy(strategy))
        .add(journal.probe_reading("i", "o_out", json!({ "fail": "broken" })));
    FlowSpec::linear("nested")
        .add(journal.probe_reading("first", "seed", json!({})))
        .add(
            Subflow::linear("outer")
                .retry(Controller::times(2))
                .add(journal.probe_reading("o", "first_out", json!({})))
                .add(inner),
        )
}

/// Runs [`nested`] with `strategy`; the whole flow must end reverted: the report, and how
/// often `o` and `i` were executed.
async fn run_nested(strategy: Strategy) -> (RunReport, (usize, usize)) {
    let journal = Journal::new();
    let report = run_seeded(&nested(&journal, strategy)).await;
    assert_eq!(report.state, FlowState::Reverted);
    assert!(
        report.tasks.iter().all(|t| t.state == TaskState::Reverted),
        "{:?}",
        report.tasks
    );
    let executions = (journal.count("execute", "o"), journal.count("execute", "i"));
    (report, executions)
}

#[tokio::test]
async fn revert_hands_the_failure_to_the_enclosing_controller_and_revert_all_does_not() {
    let (report, executions) = run_nested(Strategy::Revert).await;
    assert_eq!(
        executions,
        (2, 4),
        "the outer subflow ran twice, each time with two inner iterations"
    );
    assert_eq!(report.tasks[2].name, "outer/inner/i");
    assert_eq!(report.tasks[2].iterations, [2, 2]);

    let (report, executions) = run_nested(Strategy::RevertAll).await;
    assert_eq!(
        executions,
        (1, 2),
        "the inner subflow gave up for the whole flow: the outer one got no second iteration"
    );
    assert_eq!(report.tasks[2].iterations, [1, 2]);
}

/// A flow file: subflow `schedule` over hosts `x`, `y`: `a` fails once, `b` waits for
/// `/signal/go`.
const RESUMED: &str = r#"name = "resumed"

[[task]]
name = "schedule"
flow = { pattern = "linear", retry = { for_each = { values = ["x", "y"], provides = "host" } } }

  [[task.task]]
  name = "a"
  plugin = "PROBE"
  rebind = { value = "host" }
  provides = ["a_out"]
  config = { label = "a", journal = true, fail = "unavailable", fail_times = 1 }
  dirs = [{ host = "journal", guest = "/journal", mode = "rw" }]

  [[task.task]]
  name = "b"
  plugin = "PROBE"
  rebind = { value = "host" }
  provides = ["b_out"]
  config = { label = "b", journal = true, mode = "wait_file", path = "/signal/go" }
  dirs = [{ host = "journal", guest = "/journal", mode = "rw" }, { host = "signal", guest = "/signal" }]
"#;

#[test]
fn a_run_killed_mid_iteration_resumes_in_that_iteration() {
    let ws = Workspace::new();
    probe_file(ws.root(), "flow.toml", RESUMED);
    let check = ws.flowhost(&["check", "flow.toml", "--json"]);
    let plan = exit_json(&check, 0);
    assert_eq!(plan["tasks"][1]["name"], "schedule/b");
    assert_eq!(plan["tasks"][1]["depends_on"], json!(["schedule/a"]));
    assert_eq!(plan["subflows"][0]["path"], "schedule");
    assert_eq!(
        plan["subflows"][0]["retry"]["for_each"]["values"],
        json!(["x", "y"])
    );
    assert_eq!(
        plan["subflows"][0]["tasks"],
        json!(["schedule/a", "schedule/b"])
    );

    let run = ws.run_and_kill("execute", "b");
    let record = ws.record(&run.id);
    assert_eq!(record.tasks[1].state, TaskState::Running);
    assert_eq!(
        record.tasks[1].iterations,
        [2],
        "killed in the second iteration"
    );

    ws.release();
    let resumed = ws.runs(&["resume", &run.id]);
    assert_exit(&resumed, 0);
    assert_eq!(
        ws.journal().values("a"),
        [json!("x"), json!("y")],
        "`a` succeeded in iteration 2 before the kill"
    );
    assert_eq!(
        ws.journal().values("b"),
        [json!("y"), json!("y")],
        "`b` ran again with iteration 2's value"
    );

    let shown = ws.show(&run.id);
    assert_eq!(shown["state"], "SUCCESS");
    assert_eq!(shown["tasks"][0]["name"], "schedule/a");
    assert_eq!(shown["tasks"][0]["iterations"], json!([2]));
    let a_attempts: Vec<(u64, Value)> = shown["tasks"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["attempt"].as_u64().unwrap(), a["iterations"].clone()))
        .collect();
    assert_eq!(
        a_attempts,
        [(1, json!([1])), (1, json!([2]))],
        "each iteration's attempts count from 1"
    );
    assert_contains(
        &stdout(&ws.runs(&["show", &run.id])),
        "in iteration 2 of its subflow's retry controller",
    );
}

#[tokio::test]
async fn controllers_are_validated_naming_the_field() {
    let probe = format!("{:?}", plugin("probe"));
    let file = |retry: &str| {
        format!(
            "name = \"f\"\n[store]\nseed = 1\n[[task]]\nname = \"s\"\nflow = {{ retry = {retry} }}\n[[task.task]]\nname = \"t\"\nplugin = {probe}\nrebind = {{ value = \"seed\" }}\n"
        )
    };
    let parse_error = |retry: &str| FlowSpec::from_toml(&file(retry)).unwrap_err();
    // Parse errors point at the line and name the key or value at fault.
    let error = parse_error(r#"{ times = 2, strategy = "retry_all" }"#);
    assert!(
        error.contains("line 6") && error.contains("`retry_all`") && error.contains("`revert_all`"),
        "{error}"
    );
    let error = parse_error("{ tims = 2 }");
    assert!(
        error.contains("line 6") && error.contains("unknown field `tims`"),
        "{error}"
    );
    let error =
        FlowSpec::from_toml(&file("{ times = 2 }").replace("plugin =", "plugn =")).unwrap_err();
    assert!(
        error.contains("line 9") && error.contains("unknown field `plugn`"),
        "{error}"
    );
    let error = FlowSpec::from_toml(
        &file("{ times = 2 }").replace("flow = {", "inject = { a = 1 }\nflow = {"),
    )
    .unwrap_err();
    assert_contains(&error, "subflow `s`: `inject` belongs to a task entry");

    let engine = Engine::new().unwrap();
    let engine = &engine;
    let invalid = |retry: &str, extra: &str| {
        let flow = FlowSpec::from_toml(&(file(retry) + extra)).unwrap();
        async move {
            engine
                .load(&flow, store(&[]))
                .await
                .err()
                .expect("invalid")
                .problems
        }
    };
    let fields = |problems: Vec<flowhost::Problem>| -> Vec<(Option<String>, Option<String>)> {
        problems.into_iter().map(|p| (p.task, p.field)).collect()
    };
    let s = Some("s".to_owned());
    assert_eq!(
        fields(invalid("{ times = 0 }", "").await),
        [(s.clone(), Some("flow.retry.times".into()))]
    );
    assert_eq!(
        fields(invalid(r#"{ for_each = { values = [], provides = "host" } }"#, "").await),
        [(s.clone(), Some("flow.retry.for_each.values".into()))]
    );
    assert_eq!(
        fields(
            invalid(
                r#"{ times = 1, for_each = { values = [1], provides = "host" } }"#,
                ""
            )
            .await
        ),
        [(s.clone(), Some("flow.retry".into()))]
    );
    assert_eq!(
        fields(
            invalid(
                r#"{ parameterized_for_each = { from = "nowhere", provides = "host" } }"#,
                ""
            )
            .await
        ),
        [(
            s.clone(),
            Some("flow.retry.parameterized_for_each.from".into())
        )]
    );
    let duplicate = format!(
        "[[task]]\nname = \"s\"\nplugin = {probe}\nrebind = {{ value = \"seed\" }}\nprovides = [\"x\"]\n"
    );
    assert_eq!(
        fields(invalid("{ times = 1 }", &duplicate).await),
        [(s, Some("name".into()))]
    );
}

#[tokio::test]
async fn a_graph_flow_runs_a_subflow_after_what_it_reads() {
    // `late` is first in the file but reads the subflow's result, so it waits for all of it.
    let journal = Journal::new();
    let flow = FlowSpec::graph("g")
        .add(journal.probe_reading("late", "two_out", json!({})))
        .add(
            Subflow::linear("sub")
                .add(journal.probe_reading("one", "seed", json!({})))
                .add(journal.probe_reading("two", "one_out", json!({}))),
        );
    let loaded = Engine::new().unwrap().load(&flow, seeded()).await.unwrap();
    let deps: Vec<(&str, Vec<&str>)> = loaded.plan().map(|p| (p.name, p.depends_on)).collect();
    assert_eq!(
        deps,
        [
            ("late", vec!["sub/one", "sub/two"]),
            ("sub/one", vec![]),
            ("sub/two", vec!["sub/one"])
        ]
    );
    assert_eq!(loaded.run().await.unwrap().state, FlowState::Success);
}

#[tokio::test]
async fn a_run_stopped_between_a_failed_iteration_and_the_next_reverts_then_starts_it() {
    // The record: `s/t` failed in iteration 1, and the run stopped before the subflow was
    // reverted. Resuming reverts it, then runs iteration 2.
    let journal = Journal::new();
    let flow = FlowSpec::linear("stopped").add(
        Subflow::linear("s")
            .retry(Controller::times(2))
            .add(journal.probe_reading("t", "seed", json!({}))),
    );
    let checkpoint = stopped_running(vec![flowhost::TaskCheckpoint {
        iterations: vec![1],
        ..failed_attempt("s/t", TaskState::Failure)
    }]);
    let report = resume_from(&flow, seeded(), checkpoint).await;
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    assert_eq!(journal.kinds(), ["revert", "execute"]);
    assert_eq!(
        (
            report.tasks[0].iterations.as_slice(),
            report.tasks[0].attempt
        ),
        ([2].as_slice(), 1)
    );
}

#[tokio::test]
async fn a_subflow_starts_its_next_iteration_while_independent_tasks_still_run() {
    // `slow` waits for a file only the subflow's second iteration writes: were the restart
    // to wait for every running task, the run would never end.
    let journal = Journal::new();
    let signal = tempfile::tempdir().unwrap();
    let flow = FlowSpec::graph("independent")
        .max_parallel(4)
        .add(
            journal
                .probe_reading(
                    "slow",
                    "seed",
                    json!({ "mode": "wait_file", "path": "/signal/go" }),
                )
                .grant_dir(signal.path(), "/signal", flowhost::Access::ReadOnly),
        )
        .add(
            Subflow::linear("s")
                .retry(Controller::times(2))
                .add(journal.probe_reading(
                    "a",
                    "seed",
                    json!({ "fail": "unavailable", "fail_times": 1 }),
                ))
                .add(
                    journal
                        .probe_reading(
                            "b",
                            "a_out",
                            json!({ "mode": "write_file", "path": "/signal/go", "content": "go" }),
                        )
                        .grant_dir(signal.path(), "/signal", flowhost::Access::ReadWrite),
                ),
        );
    let engine = Engine::new().unwrap();
    let (report, recorder) = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        run_recorded(&engine, &flow, seeded()),
    )
    .await
    .expect("the run ends");
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    let moves = recorder.task_transitions();
    let at = |task: &str, to: TaskState| recorder.position(task, to);
    assert!(
        at("s/a", TaskState::Pending) < at("slow", TaskState::Success),
        "{moves:?}"
    );
    assert!(
        !moves
            .iter()
            .any(|(t, _, s)| t == "slow" && *s == TaskState::Reverting),
        "{moves:?}"
    );
    assert_eq!(journal.count("execute", "slow"), 1);
}
