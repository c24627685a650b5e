//! Durable runs: every run is recorded in the run database, a run killed mid-flow (or
//! mid-revert) is resumed with `flowhost runs resume` without executing succeeded tasks
//! again, and the database stays whole under many concurrent runs and processes.

use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;

use flowhost::runs::{self, Durability, Executor, RunDb, RunFilter, SqliteRunDb};
use flowhost::{Engine, FlowState, Store, TaskState};
use serde_json::{Value, json};

use crate::kit::{
    Probe, Workspace, assert_contains, assert_exit, document_states, exit_json, relay, stderr,
    stdout, stdout_json,
};

/// Writes the workspace's flow `name`: `a`, then `b`, whose revert waits for `/signal/go`,
/// then `c`.
fn waiting_in_bs_revert(ws: &Workspace, name: &str, c: Probe) -> PathBuf {
    let b = json!({ "mode": "wait_file", "mode_in": "revert", "path": "/signal/go" });
    ws.write_flow(name, "", &[Probe::new("a"), Probe::new("b").config(b), c])
}

/// Kills the workspace's run in `b`'s revert, lets `b` go on and resumes the run: the
/// resumed run's report, the run having been reverted.
fn resume_killed_revert(ws: &Workspace) -> Value {
    let run = ws.run_and_kill("revert", "b");
    assert_eq!(run.state, FlowState::Reverting);

    ws.release();
    let resumed = ws.runs(&["resume", &run.id, "--json"]);
    assert_exit(&resumed, 1);
    stdout_json(&resumed)
}

fn four_steps(ws: &Workspace) -> PathBuf {
    ws.flow(
        "four_steps",
        &[
            ("a", json!({})),
            ("b", json!({})),
            ("c", json!({ "mode": "wait_file", "path": "/signal/go" })),
            ("d", json!({})),
        ],
    )
}

#[test]
fn a_run_killed_mid_flow_resumes_without_running_succeeded_tasks_again() {
    let ws = Workspace::new();
    four_steps(&ws);
    let run = ws.run_and_kill("execute", "c");
    assert_eq!(
        run.state,
        FlowState::Running,
        "the killed run is recorded as interrupted"
    );

    ws.release();
    let resumed = ws.runs(&["resume", &run.id]);
    assert_exit(&resumed, 0);
    assert_eq!(
        ws.executions(&["a", "b", "c", "d"]),
        [1, 1, 2, 1],
        "a and b succeeded before the crash: not executed again; c was caught RUNNING: \
         executed again (at least once)"
    );

    let uninterrupted = ws.flowhost(&["run", "flow.toml", "--no-db"]);
    assert_exit(&uninterrupted, 0);
    assert_eq!(
        stdout_json(&resumed),
        stdout_json(&uninterrupted),
        "final store equals an uninterrupted run's"
    );

    let record = ws.show(&run.id);
    assert_eq!(record["state"], "SUCCESS");
    assert_eq!(record["resumes"], 1);
    let executions: Vec<&Value> = record["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["executions"])
        .collect();
    assert_eq!(executions, [&json!(1), &json!(1), &json!(2), &json!(1)]);
    assert_eq!(record["final_store"], stdout_json(&uninterrupted));

    let fetched = ws.runs(&["fetch", &run.id, "d_out"]);
    assert_exit(&fetched, 0);
    assert_eq!(stdout_json(&fetched), stdout_json(&uninterrupted)["d_out"]);

    let executed = ws.calls().len();
    let again = ws.runs(&["resume", &run.id]);
    // Resuming a finished run is a usage error.
    assert_exit(&again, 64);
    assert_contains(&stderr(&again), "already finished (SUCCESS)");
    assert_eq!(ws.calls().len(), executed, "nothing ran");
}

#[test]
fn a_run_killed_mid_revert_resumes_the_revert() {
    let ws = Workspace::new();
    waiting_in_bs_revert(
        &ws,
        "revert_crash",
        Probe::new("c").config(json!({ "fail": "boom" })),
    );
    let report = resume_killed_revert(&ws);
    assert_eq!(report["state"], "REVERTED");
    assert_eq!(
        report["store"],
        json!({ "seed": 1 }),
        "every result left the store"
    );

    let calls = ws.journal().entries();
    let order: Vec<(String, String)> = ws.calls();
    let expected: Vec<(String, String)> = [
        ("execute", "a"),
        ("execute", "b"),
        ("execute", "c"),
        ("revert", "c"),
        ("revert", "b"),
        ("revert", "b"),
        ("revert", "a"),
    ]
    .iter()
    .map(|(c, l)| ((*c).to_owned(), (*l).to_owned()))
    .collect();
    assert_eq!(
        order, expected,
        "c is not reverted twice; b's revert is repeated; a is reverted after"
    );
    // After the restart, b's revert gets exactly what it got before: its arguments, its own
    // result as outcome, and the flow's failure.
    let (before, after) = (&calls[4], &calls[5]);
    assert_eq!(before["args"], after["args"]);
    assert_eq!(
        after["outcome"],
        json!({ "result": { "value": { "value": 1, "label": "a" }, "label": "b" } })
    );
    assert_eq!(before["failures"], after["failures"]);
    assert_eq!(calls[6]["failures"][0]["task"], "c");
    assert_eq!(
        calls[6]["outcome"],
        json!({ "result": { "value": 1, "label": "a" } })
    );
}

#[test]
fn resume_refuses_a_changed_flow_file_unless_forced() {
    let ws = Workspace::new();
    let flow = four_steps(&ws);
    let run = ws.run_and_kill("execute", "c");
    let text = std::fs::read_to_string(&flow).unwrap();
    std::fs::write(&flow, format!("# edited after the crash\n{text}")).unwrap();
    ws.release();

    let refused = ws.runs(&["resume", &run.id]);
    assert_exit(&refused, 65);
    let message = stderr(&refused);
    assert!(
        message.contains("flow file") && message.contains("changed") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(ws.count("execute", "d"), 0, "nothing ran");

    let forced = ws.runs(&["resume", &run.id, "--force"]);
    assert_exit(&forced, 0);
    assert_eq!(ws.count("execute", "a"), 1);
    assert_eq!(ws.count("execute", "d"), 1);
}

#[test]
fn a_corrupt_or_foreign_database_is_a_clear_error() {
    let ws = Workspace::new();
    ws.flow("one", &[("a", json!({}))]);
    let garbage = ws.path("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let foreign = ws.path("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
            .unwrap();
    }
    for (db, expected) in [
        (&garbage, "file is not a database"),
        (&foreign, "another application's SQLite database"),
    ] {
        for args in [vec!["run", "flow.toml"], vec!["runs", "list"]] {
            let mut args = args.clone();
            args.extend(["--db", db.to_str().unwrap()]);
            let output = ws.flowhost(&args);
            let message = stderr(&output);
            assert_exit(&output, 66);
            assert!(
                message.contains("is not a flowhost run database") && message.contains(expected),
                "{message}"
            );
            assert!(!message.contains("panicked"), "{message}");
        }
    }
    assert_eq!(
        ws.count("execute", "a"),
        0,
        "nothing ran without a database to record in"
    );
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        vec![0x5a; 8192],
        "the file was left alone"
    );
}

#[test]
fn a_read_only_database_location_is_a_clear_error() {
    let ws = Workspace::new();
    ws.flow("one", &[("a", json!({}))]);
    let locked = ws.path("locked");
    std::fs::create_dir(&locked).unwrap();
    let mut permissions = std::fs::metadata(&locked).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o555);
    std::fs::set_permissions(&locked, permissions).unwrap();
    // A privileged user writes through permission bits; /proc refuses everyone.
    let writable = std::fs::write(locked.join("probe"), "").is_ok();
    let db = if writable {
        PathBuf::from("/proc/flowhost/runs.db")
    } else {
        locked.join("runs.db")
    };

    let output = ws.flowhost(&["run", "flow.toml", "--db", db.to_str().unwrap()]);
    let message = stderr(&output);
    assert_exit(&output, 66);
    assert_contains(
        &message,
        &format!("cannot open run database {}", db.display()),
    );
    assert!(message.contains("--no-db"), "says how to go on: {message}");
    assert_eq!(ws.count("execute", "a"), 0);

    let in_memory = ws.flowhost(&["run", "flow.toml", "--no-db"]);
    assert_exit(&in_memory, 0);
}

fn assert_every_task_recorded_once(db: &dyn RunDb, ids: &[String], tasks: usize) {
    let listed = db.list(&RunFilter::default()).unwrap();
    assert_eq!(listed.len(), ids.len(), "every run recorded");
    for id in ids {
        let run = db
            .get(id)
            .unwrap()
            .unwrap_or_else(|| panic!("run {id} recorded"));
        assert_eq!(run.summary.state, FlowState::Success, "run {id}");
        assert_eq!(run.tasks.len(), tasks);
        for task in &run.tasks {
            assert_eq!(task.executions, 1, "run {id} task {}", task.name);
            let states: Vec<(TaskState, TaskState)> =
                task.history.iter().map(|c| (c.from, c.to)).collect();
            assert_eq!(
                states,
                [
                    (TaskState::Pending, TaskState::Running),
                    (TaskState::Running, TaskState::Success)
                ]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_runs_in_one_process_are_all_recorded() {
    const RUNS: usize = 200;
    const TASKS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<dyn RunDb> =
        Arc::new(SqliteRunDb::open(&dir.path().join("runs.db"), true, Durability::Normal).unwrap());
    let engine = Engine::new().unwrap();
    let flow = relay("trivial", TASKS, json!({}));
    let handles: Vec<_> = (0..RUNS)
        .map(|n| {
            let (engine, flow, executor) =
                (engine.clone(), flow.clone(), Executor::new(db.clone()));
            tokio::spawn(async move {
                let store: Store = [("value".to_owned(), json!(n))].into_iter().collect();
                let mut loaded = engine.load(&flow, store).await.unwrap();
                runs::record(&executor, &mut loaded, None, None).unwrap();
                let report = loaded.run().await.unwrap();
                assert_eq!(report.state, FlowState::Success);
                report.run_id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for handle in handles {
        ids.push(handle.await.unwrap());
    }
    assert_every_task_recorded_once(db.as_ref(), &ids, TASKS);
}

#[test]
fn processes_sharing_one_database_do_not_lose_records() {
    const PROCESSES: usize = 6;
    let ws = Workspace::new();
    ws.flow(
        "shared",
        &[("a", json!({})), ("b", json!({})), ("c", json!({}))],
    );
    let children: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            ws.recording(&["run", "flow.toml", "--json", "-q"])
                .start_piped()
        })
        .collect();
    let mut ids = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_exit(&output, 0);
        assert!(!stderr(&output).contains("locked"), "{}", stderr(&output));
        ids.push(stdout_json(&output)["run_id"].as_str().unwrap().to_owned());
    }
    let db = SqliteRunDb::open(&ws.db(), false, Durability::Normal).unwrap();
    assert_every_task_recorded_once(&db, &ids, 3);
    assert_eq!(ws.count("execute", "a"), PROCESSES);
}

#[test]
fn processes_creating_one_fresh_database_together_all_start() {
    const PROCESSES: usize = 16;
    const ROUNDS: usize = 12;
    let ws = Workspace::new();
    ws.flow("fresh", &[("a", json!({}))]);
    for round in 0..ROUNDS {
        let db = ws.path(&format!("round{round}/runs.db"));
        let children: Vec<Child> = (0..PROCESSES)
            .map(|_| {
                ws.command(&["run", "flow.toml", "-q", "--db", db.to_str().unwrap()])
                    .start_piped()
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "round {round}: {}",
                stderr(&output)
            );
        }
        let db = SqliteRunDb::open(&db, false, Durability::Normal).unwrap();
        assert_eq!(
            db.list(&RunFilter::default()).unwrap().len(),
            PROCESSES,
            "round {round}: every run recorded"
        );
    }
}

#[test]
fn a_task_whose_arguments_are_over_the_cap_never_runs_and_is_not_reverted_in_the_record() {
    let ws = Workspace::new();
    let flow = ws.flow("capped", &[("a", json!({})), ("b", json!({}))]);
    let text = std::fs::read_to_string(&flow).unwrap().replace(
        "name = \"b\"\n",
        "name = \"b\"\nlimits = { args_kib = 1 }\n",
    );
    std::fs::write(&flow, text).unwrap();
    let seed = format!("seed=\"{}\"", "x".repeat(2048));
    let out = ws
        .recording(&["run", "flow.toml", "--store", &seed, "--json"])
        .run();
    let report = exit_json(&out, 1);
    assert_eq!(report["state"], "REVERTED");
    assert_eq!(report["tasks"][1]["state"], "FAILURE");
    assert_eq!(report["tasks"][1]["error"]["code"], "args-too-large");
    assert_eq!(ws.count("execute", "b"), 0);
    assert_eq!(ws.count("revert", "b"), 0, "nothing to undo");
    assert_eq!(ws.count("revert", "a"), 1);

    let id = report["run_id"].as_str().unwrap();
    let record = ws.show(id);
    let b = &record["tasks"][1];
    assert_eq!(
        (b["state"].as_str(), b["reverts"].as_u64(), &b["args"]),
        (Some("FAILURE"), Some(0), &Value::Null),
        "{b}"
    );
    assert_eq!(record["tasks"][0]["state"], "REVERTED");

    let text = stdout(&ws.runs(&["show", id]));
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("REVERTED") || l.contains("FAILURE"))
        .collect();
    assert!(
        rows.iter()
            .any(|r| r.starts_with("1 ") && r.contains(" a ")),
        "tasks are numbered from 1, as in `check`:\n{text}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("2 ") && r.contains(" b ")),
        "{text}"
    );
}

#[test]
fn a_revert_interrupted_after_a_task_that_was_never_called_resumes() {
    let ws = Workspace::new();
    let flow = waiting_in_bs_revert(
        &ws,
        "uncalled",
        Probe::new("c").toml("limits = { args_kib = 1 }\n"),
    );
    let text = std::fs::read_to_string(&flow)
        .unwrap()
        .replace("seed = 1", &format!("seed = \"{}\"", "x".repeat(2048)));
    std::fs::write(&flow, text).unwrap();
    let report = resume_killed_revert(&ws);
    assert_eq!(
        document_states(&report),
        ["REVERTED", "REVERTED", "FAILURE"],
        "{report}"
    );
    assert_eq!(report["tasks"][2]["error"]["code"], "args-too-large");
    assert_eq!(
        (ws.count("execute", "c"), ws.count("revert", "c")),
        (0, 0),
        "c was never called"
    );
    assert_eq!(ws.count("revert", "a"), 1);
}
