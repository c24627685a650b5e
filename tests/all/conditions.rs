//! Conditional tasks (`when`, a CEL expression over store names) and priorities: a false
//! condition leaves a task IGNORE — never executed, never reverted, its results absent —
//! and every task needing its results IGNORE too, unless it reads them as optional; the flow
//! still ends SUCCESS. Validation names the entry, the position and the name of a bad
//! condition; a run killed beside an ignored task resumes without executing it; `priority`
//! orders ready tasks that `max_parallel` holds back.

use flowhost::{CONDITION_FAILED, Engine, FlowSpec, FlowState, TaskState};
use serde_json::json;

use crate::kit::{
    Journal, Probe, Workspace, assert_contains, assert_exit, exit_json, kill, report_states,
    run_recorded, seeded, stdout, stdout_json,
};

/// `gate`, `skipped` (when `seed > 5`: false for seed 1), `needs` (requires `skipped`'s
/// result), `optional` (reads it only as optional) and `taken` (when `gate`'s echo says so).
fn branching(journal: &Journal, flow: FlowSpec) -> FlowSpec {
    flow.add(journal.probe_reading("gate", "seed", json!({})))
        .add(
            journal
                .probe_reading("skipped", "seed", json!({}))
                .when("seed > 5"),
        )
        .add(journal.probe_reading("needs", "skipped_out", json!({})))
        .add(
            journal
                .probe_reading("optional", "gate_out", json!({}))
                .rebind("extra", "skipped_out"),
        )
        .add(
            journal
                .probe_reading("taken", "seed", json!({}))
                .when("seed == 1 && gate_out.label == 'gate'"),
        )
}

#[tokio::test]
async fn a_false_condition_ignores_its_task_and_what_needs_it_but_not_what_reads_it_as_optional() {
    for flow in [
        FlowSpec::linear("branching"),
        FlowSpec::graph("branching").max_parallel(4),
    ] {
        let journal = Journal::new();
        let flow = branching(&journal, flow);
        let (report, recorder) = run_recorded(&Engine::new().unwrap(), &flow, seeded()).await;

        assert_eq!(
            report.state,
            FlowState::Success,
            "executed or ignored: SUCCESS"
        );
        use TaskState::{Ignore, Success};
        assert_eq!(
            report_states(&report),
            [Success, Ignore, Ignore, Success, Success]
        );
        let mut executed = journal.lines();
        executed.sort();
        assert_eq!(
            executed,
            ["execute gate", "execute optional", "execute taken"]
        );
        assert!(
            report.fetch("skipped_out").is_none() && report.fetch("needs_out").is_none(),
            "an ignored task's results are absent"
        );
        assert_eq!(
            report.fetch("optional_out").unwrap().get("extra"),
            None,
            "the optional name was simply absent"
        );
        let moves = recorder.task_transitions();
        for task in ["skipped", "needs"] {
            let own: Vec<_> = moves.iter().filter(|(t, _, _)| t == task).collect();
            assert_eq!(
                own,
                [&(task.to_owned(), TaskState::Pending, Ignore)],
                "{task}: PENDING -> IGNORE only"
            );
        }
    }
}

#[tokio::test]
async fn ignored_tasks_are_not_reverted_and_a_condition_that_cannot_decide_fails_its_task() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("ignored_then_failing")
        .add(journal.probe_reading("a", "seed", json!({})))
        .add(
            journal
                .probe_reading("skipped", "a_out", json!({}))
                .when("seed > 5"),
        )
        .add(journal.probe_reading("c", "a_out", json!({ "fail": "broken" })));
    let (report, _) = run_recorded(&Engine::new().unwrap(), &flow, seeded()).await;
    assert_eq!(report.state, FlowState::Reverted);
    use TaskState::{Failure, Ignore, Reverted};
    assert_eq!(report_states(&report), [Reverted, Ignore, Reverted]);
    assert_eq!(
        journal.lines(),
        ["execute a", "execute c", "revert c", "revert a"],
        "the ignored task is neither executed nor reverted"
    );

    // A label is a string: comparing it with a number decides nothing.
    let journal = Journal::new();
    let flow = FlowSpec::linear("undecided")
        .add(journal.probe_reading("a", "seed", json!({})))
        .add(
            journal
                .probe_reading("b", "a_out", json!({}))
                .when("a_out.label > 3"),
        );
    let (report, _) = run_recorded(&Engine::new().unwrap(), &flow, seeded()).await;
    assert_eq!(report.state, FlowState::Reverted);
    assert_eq!(report_states(&report), [Reverted, Failure]);
    let error = report.tasks[1].error.as_ref().unwrap();
    assert_eq!(error.code, CONDITION_FAILED);
    assert_contains(&error.message, "a_out.label > 3");
    assert_eq!(
        journal.lines(),
        ["execute a", "revert a"],
        "b was never called"
    );
}

#[tokio::test]
async fn a_condition_that_does_not_parse_or_reads_an_unknown_name_is_refused_naming_entry_position_and_name()
 {
    let engine = Engine::new().unwrap();
    let journal = Journal::new();
    for (flow, known_where) in [
        (
            FlowSpec::linear("bad_conditions"),
            "an earlier task provides",
        ),
        (FlowSpec::graph("bad_conditions"), "any other task provides"),
    ] {
        let flow = flow
            .add(journal.probe_reading("a", "seed", json!({})).when("seed >"))
            .add(
                journal
                    .probe_reading("b", "seed", json!({}))
                    .when("seed > 1 &&\n  nowhere == 2"),
            );
        let error = engine.load(&flow, seeded()).await.err().unwrap();
        let problems: Vec<_> = error
            .problems
            .iter()
            .map(|p| (p.task.as_deref(), p.field.as_deref()))
            .collect();
        assert_eq!(
            problems,
            [(Some("a"), Some("when")), (Some("b"), Some("when"))]
        );
        assert_contains(
            &error.problems[0].message,
            "does not parse at line 1, column",
        );
        assert_contains(
            &error.problems[1].message,
            "reads `nowhere` at line 2, column 3",
        );
        assert_contains(&error.problems[1].message, known_where);
    }
    // A name read by a condition, provided only later in a linear flow, is refused too.
    let flow = FlowSpec::linear("too_early")
        .add(
            journal
                .probe_reading("a", "seed", json!({}))
                .when("b_out.value == 1"),
        )
        .add(journal.probe_reading("b", "seed", json!({})));
    let error = engine.load(&flow, seeded()).await.err().unwrap();
    assert_contains(
        &error.problems[0].message,
        "reads `b_out` at line 1, column 1",
    );
    // In a graph, the name read is a dependency: `a` waits for `b`.
    let flow = FlowSpec::graph("waits")
        .add(
            journal
                .probe_reading("a", "seed", json!({}))
                .when("b_out.value == 1"),
        )
        .add(journal.probe_reading("b", "seed", json!({})));
    let loaded = engine.load(&flow, seeded()).await.unwrap();
    let plan: Vec<_> = loaded.plan().map(|t| (t.name, t.depends_on)).collect();
    assert_eq!(plan, [("a", vec!["b"]), ("b", vec![])]);
    // A subflow entry holds no `when`.
    let subflow = "name = \"f\"\n[[task]]\nname = \"s\"\nwhen = \"true\"\nflow = {}\n  [[task.task]]\n  name = \"t\"\n  plugin = \"t.wasm\"\n";
    assert_contains(
        &FlowSpec::from_toml(subflow).unwrap_err(),
        "subflow `s`: `when` belongs to a task entry",
    );
}

#[test]
fn a_run_killed_beside_an_ignored_task_resumes_without_executing_it_and_shows_why() {
    let ws = Workspace::new();
    ws.write_flow(
        "conditional",
        "pattern = \"graph\"\nmax_parallel = 4",
        &[
            Probe::new("skipped")
                .reads("seed")
                .toml("when = \"seed > 5\"\n"),
            Probe::new("blocked")
                .reads("seed")
                .config(json!({ "mode": "wait_file", "path": "/signal/go" })),
            Probe::new("needs").reads("skipped_out"),
            Probe::new("last")
                .reads("blocked_out")
                .toml("when = \"blocked_out.value == 1\"\n"),
        ],
    );
    let check = ws.flowhost(&["check", "flow.toml"]);
    assert_exit(&check, 0);
    assert_contains(
        &stdout(&check),
        "when:     seed > 5 (reads seed; false: IGNORE)",
    );
    let plan = exit_json(&ws.flowhost(&["check", "flow.toml", "--json"]), 0);
    assert_eq!(plan["tasks"][3]["when"], "blocked_out.value == 1");
    assert_eq!(plan["tasks"][3]["when_reads"], json!(["blocked_out"]));

    let mut child = ws.recording(&["run", "flow.toml"]).start();
    ws.wait_for_record(
        &mut child,
        "`skipped` and `needs` ignored while `blocked` runs",
        |record| {
            let states: Vec<TaskState> = record.tasks.iter().map(|t| t.state).collect();
            use TaskState::{Ignore, Pending, Running};
            (states == [Ignore, Running, Ignore, Pending] && ws.count("execute", "blocked") == 1)
                .then_some(())
        },
    );
    kill(child);

    let report = ws.release_and_resume();
    let run = ws.only_run();
    assert_eq!(report["state"], "SUCCESS");
    assert_eq!(
        ws.executions(&["skipped", "blocked", "needs", "last"]),
        [0, 2, 0, 1],
        "ignored before the kill, ignored after it; `blocked` was caught RUNNING"
    );

    let shown = ws.runs(&["show", &run.id]);
    assert_exit(&shown, 0);
    let text = stdout(&shown);
    assert_contains(&text, "IGNORE");
    assert_contains(&text, "ignored: when `seed > 5` was false");
    assert_contains(&text, "ignored: it needs task `skipped`, which was ignored");
    let document = stdout_json(&ws.runs(&["show", &run.id, "--json"]));
    assert_eq!(document["tasks"][0]["state"], "IGNORE");
    assert_eq!(
        document["tasks"][0]["result"],
        json!({ "when": "seed > 5" })
    );
    assert_eq!(
        document["tasks"][2]["history"][0]["to"], "IGNORE",
        "journaled as a transition"
    );
}

#[tokio::test]
async fn max_parallel_starts_the_ready_tasks_by_priority_then_file_order() {
    let journal = Journal::new();
    let flow = ["low", "plain", "high", "middle"]
        .iter()
        .zip([-1, 0, 10, 5])
        .fold(
            FlowSpec::graph("priorities").max_parallel(1),
            |flow, (name, priority)| {
                flow.add(
                    journal
                        .probe_reading(name, "seed", json!({}))
                        .priority(priority),
                )
            },
        );
    let (report, _) = run_recorded(&Engine::new().unwrap(), &flow, seeded()).await;
    assert_eq!(report.state, FlowState::Success);
    assert_eq!(
        journal.lines(),
        [
            "execute high",
            "execute middle",
            "execute plain",
            "execute low"
        ]
    );
}

#[test]
fn ignored_tasks_are_journaled_in_postgresql_as_in_sqlite() {
    let pg = crate::kit::Postgres::start();
    let ws = Workspace::new();
    ws.write_flow(
        "conditional",
        "",
        &[
            Probe::new("a"),
            Probe::new("skipped").toml("when = \"a_out.value > 5\"\n"),
            Probe::new("needs"),
            Probe::new("last").reads("a_out"),
        ],
    );
    let url = pg.url();
    let run = ws.flowhost(&["run", "flow.toml", "--db", &url, "--json"]);
    let report = exit_json(&run, 0);
    assert_eq!(report["state"], "SUCCESS");
    let id = report["run_id"].as_str().unwrap();
    let document = stdout_json(&ws.flowhost(&["runs", "show", id, "--db", &url, "--json"]));
    let states: Vec<&str> = document["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["SUCCESS", "IGNORE", "IGNORE", "SUCCESS"]);
    assert_eq!(
        document["tasks"][2]["result"],
        json!({ "ignored_with": "skipped" })
    );
    assert_eq!(
        ws.executions(&["a", "skipped", "needs", "last"]),
        [1, 0, 0, 1]
    );
}
