//! Suspend and its neighbours, as an operator uses them: `flowhost runs suspend` lets the task
//! in flight finish and starts nothing new (a pause before a retry ends at once), the run goes
//! `RUNNING -> SUSPENDING -> SUSPENDED` and releases its executor, and `runs resume` goes on
//! with nothing executed twice — also after a kill -9 while SUSPENDING, and for a run a
//! PostgreSQL worker holds. `on_failure = "suspend"` stops a run at its failure with nothing
//! reverted, for `runs resume` (the task tried again) or `runs revert` (reverted as the failure
//! would have). `runs restart --from TASK` starts a new run with the tasks before TASK copied.
//! The API routes and their token.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowhost::runs::{PgRunDb, RunDb};
use flowhost::{Engine, FlowSpec, FlowState, TaskState, Transition};
use serde_json::{Value, json};

use crate::kit::cdp::Browser;
use crate::kit::serving::Served;
use crate::kit::until_journaled;
use crate::kit::{
    Journal, Postgres, Probe, Recorder, Workspace, assert_contains, assert_exit, kill, seeded,
    stderr, stdout, stdout_json, stop, wait_until,
};

/// The task states of run `id`, in flow order.
fn task_states(ws: &Workspace, id: &str) -> Vec<TaskState> {
    ws.record(id).tasks.iter().map(|t| t.state).collect()
}

/// Starts `flowhost run flow.toml` on the workspace's database, waits until `b` executes
/// (it waits for `/signal/go`), asks the run to suspend and waits until SUSPENDING is
/// recorded: the process, and the run's id.
fn suspending_in_b(ws: &Workspace) -> (std::process::Child, String) {
    let mut child = ws.recording(&["run", "flow.toml"]).start();
    ws.wait_for(&mut child, "execute", "b");
    let id = ws.only_run().id;
    let asked = ws.runs(&["suspend", &id]);
    assert_exit(&asked, 0);
    assert_contains(&stdout(&asked), "asked run");
    ws.wait_for_record(&mut child, "the run is SUSPENDING", |record| {
        (record.summary.state == FlowState::Suspending).then_some(())
    });
    (child, id)
}

#[test]
fn a_suspended_run_finishes_its_task_in_flight_starts_nothing_new_and_resumes_without_repeating_a_task()
 {
    let ws = Workspace::new();
    ws.waiting_flow("suspended");
    let (mut child, id) = suspending_in_b(&ws);

    ws.release();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "a suspended run exits 3");
    let record = ws.record(&id);
    assert_eq!(record.summary.state, FlowState::Suspended);
    assert!(record.summary.lease.is_none(), "the lease is released");
    assert_eq!(
        task_states(&ws, &id),
        [TaskState::Success, TaskState::Success, TaskState::Pending],
        "b finished; c never started"
    );
    assert_eq!(ws.journal().lines(), ["execute a", "execute b"]);
    let listed = ws.runs(&["list", "--state", "SUSPENDED"]);
    assert_exit(&listed, 0);
    assert_contains(&stdout(&listed), &id);
    let shown = ws.runs(&["show", &id]);
    assert_contains(&stdout(&shown), "SUSPENDED");
    assert_contains(&stdout(&shown), &format!("flowhost runs resume {id}"));

    let resumed = ws.runs(&["resume", &id, "--json"]);
    assert_exit(&resumed, 0);
    assert_eq!(stdout_json(&resumed)["state"], "SUCCESS");
    assert_eq!(
        ws.journal().lines(),
        ["execute a", "execute b", "execute c"],
        "nothing executed twice"
    );
    let again = ws.runs(&["suspend", &id]);
    assert_exit(&again, 64);
    assert_contains(
        &stderr(&again),
        "only a PENDING or RUNNING run can be suspended",
    );
}

#[test]
fn a_suspend_during_a_pause_before_a_retry_ends_the_pause_at_once_and_resume_makes_the_attempt() {
    let ws = Workspace::new();
    ws.write_flow(
        "paused",
        "",
        &[
            Probe::new("a"),
            Probe::new("b")
                .config(json!({ "fail": "unavailable", "fail_times": 1 }))
                .toml("retry = { attempts = 2, backoff_ms = 6000 }"),
            Probe::new("c"),
        ],
    );
    let mut child = ws.recording(&["run", "flow.toml"]).start();
    ws.wait_for_record(&mut child, "b waits to be retried", |record| {
        (record.tasks[1].state == TaskState::Retrying).then_some(())
    });
    let id = ws.only_run().id;

    let asked = Instant::now();
    let suspended = ws.runs(&["suspend", &id, "--wait"]);
    assert_exit(&suspended, 0);
    assert_contains(&stdout(&suspended), "is SUSPENDED");
    assert_eq!(child.wait().unwrap().code(), Some(3));
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "the 6 s pause ended at once: {:?}",
        asked.elapsed()
    );
    assert_eq!(
        task_states(&ws, &id),
        [TaskState::Success, TaskState::Retrying, TaskState::Pending],
        "b keeps its due attempt"
    );
    assert_eq!(ws.executions(&["a", "b", "c"]), [1, 1, 0]);

    let resumed = ws.runs(&["resume", &id, "--json"]);
    assert_exit(&resumed, 0);
    assert_eq!(ws.executions(&["a", "b", "c"]), [1, 2, 1]);
    assert_eq!(ws.record(&id).tasks[1].attempt, 2);
}

#[test]
fn a_run_killed_while_suspending_is_resumed_to_its_end_executing_only_its_task_in_flight_again() {
    let ws = Workspace::new();
    ws.waiting_flow("killed");
    let (child, id) = suspending_in_b(&ws);
    kill(child);
    assert_eq!(ws.record(&id).summary.state, FlowState::Suspending);

    ws.release();
    let resumed = ws.runs(&["resume", &id, "--json"]);
    assert_exit(&resumed, 0);
    assert_eq!(stdout_json(&resumed)["state"], "SUCCESS");
    assert_eq!(
        ws.executions(&["a", "b", "c"]),
        [1, 2, 1],
        "b, caught running, runs again; a does not"
    );
}

/// `a`, `b` failing `boom` once, `c`; the flow says `on_failure = "suspend"`.
fn failing_once_in_b(ws: &Workspace) {
    ws.write_flow(
        "pausing",
        "on_failure = \"suspend\"",
        &[
            Probe::new("a"),
            Probe::new("b").config(json!({ "fail": "boom", "fail_times": 1 })),
            Probe::new("c"),
        ],
    );
}

#[test]
fn on_failure_suspend_keeps_what_ran_and_resume_tries_the_failed_task_again() {
    let ws = Workspace::new();
    failing_once_in_b(&ws);
    let run = ws.recording(&["run", "flow.toml"]).run();
    assert_exit(&run, 3);
    let id = ws.only_run().id;
    let record = ws.record(&id);
    assert_eq!(record.summary.state, FlowState::Suspended);
    assert!(record.summary.lease.is_none(), "holds no executor");
    assert_eq!(record.tasks[1].state, TaskState::Failure);
    assert_eq!(record.tasks[1].error.as_ref().unwrap().code, "boom");
    assert_eq!(
        ws.journal().lines(),
        ["execute a", "execute b"],
        "nothing reverted"
    );
    let shown = stdout(&ws.runs(&["show", &id]));
    assert_contains(&shown, "suspended on the failure of task `b`");
    assert_eq!(ws.show(&id)["state"], "SUSPENDED");

    let resumed = ws.runs(&["resume", &id, "--json"]);
    assert_exit(&resumed, 0);
    assert_eq!(stdout_json(&resumed)["state"], "SUCCESS");
    assert_eq!(
        ws.journal().lines(),
        ["execute a", "execute b", "execute b", "execute c"]
    );
    assert_eq!(ws.record(&id).tasks[1].attempt, 2, "a new attempt");
}

#[test]
fn revert_of_a_run_suspended_on_a_failure_reverts_what_ran_in_reverse_order() {
    let ws = Workspace::new();
    ws.write_flow(
        "pausing",
        "",
        &[
            Probe::new("a"),
            Probe::new("b"),
            Probe::new("c")
                .config(json!({ "fail": "boom" }))
                .toml("on_failure = \"suspend\""),
        ],
    );
    assert_exit(&ws.recording(&["run", "flow.toml"]).run(), 3);
    let id = ws.only_run().id;

    let reverted = ws.runs(&["revert", &id, "--json"]);
    assert_exit(&reverted, 1);
    assert_eq!(stdout_json(&reverted)["state"], "REVERTED");
    assert_eq!(
        ws.journal().lines(),
        [
            "execute a",
            "execute b",
            "execute c",
            "revert c",
            "revert b",
            "revert a"
        ]
    );
    let revert_c = &ws.journal().reverts()[0];
    assert_eq!(revert_c["outcome"]["error"]["code"], "boom", "{revert_c}");
    let again = ws.runs(&["revert", &id]);
    assert_exit(&again, 64);
}

#[test]
fn an_unknown_on_failure_is_refused_naming_the_entry() {
    let ws = Workspace::new();
    ws.write_flow(
        "unknown",
        "",
        &[
            Probe::new("a"),
            Probe::new("b").toml("on_failure = \"pause\""),
        ],
    );
    let checked = ws.flowhost(&["check", "flow.toml"]);
    assert_exit(&checked, 65);
    let text = stderr(&checked) + &stdout(&checked);
    assert_contains(&text, "`b`");
    assert_contains(&text, "`on_failure` = \"pause\" is not known");
}

#[test]
fn restart_from_a_task_copies_the_tasks_before_it_and_executes_only_from_it() {
    let ws = Workspace::new();
    ws.flow(
        "restarted",
        &[("a", json!({})), ("b", json!({})), ("c", json!({}))],
    );
    assert_exit(&ws.recording(&["run", "flow.toml"]).run(), 0);
    let original = ws.only_run().id;

    let restarted = ws.runs(&["restart", &original, "--from", "b", "--json"]);
    assert_exit(&restarted, 0);
    let report = stdout_json(&restarted);
    assert_eq!(report["state"], "SUCCESS");
    let new = report["run_id"].as_str().unwrap().to_owned();
    assert_ne!(new, original);
    assert_eq!(
        ws.executions(&["a", "b", "c"]),
        [1, 2, 2],
        "a is copied, not executed again"
    );
    let copy = ws.record(&new);
    assert_eq!(
        copy.tasks.iter().map(|t| t.state).collect::<Vec<_>>(),
        [TaskState::Success; 3]
    );
    assert_eq!(copy.tasks[0].result, ws.record(&original).tasks[0].result);
    assert_eq!(copy.final_store, ws.record(&original).final_store);
    assert_eq!(ws.show(&new)["restarted_from"], original.as_str());
    assert_eq!(ws.show(&original)["restarts"], json!([new]));
    assert_contains(
        &stdout(&ws.runs(&["show", &original])),
        &format!("restarted as run(s) {new}"),
    );

    let unknown = ws.runs(&["restart", &original, "--from", "nope"]);
    assert_ne!(unknown.status.code(), Some(0));
    assert_contains(&stderr(&unknown), "has no task `nope`");
    assert_eq!(ws.executions(&["a", "b", "c"]), [1, 2, 2]);
}

/// Submits one run of `flow` to the workers, as a control plane would: its id.
fn submit(pg: &Postgres, flow: &Path) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = PgRunDb::connect(&pg.url()).unwrap();
    let spec = FlowSpec::from_file(flow).unwrap();
    runtime.block_on(async {
        let engine = Engine::new().unwrap();
        let loaded = engine.load(&spec, Default::default()).await.unwrap();
        flowhost::runs::submit(&db, &loaded, flow, None, None, 0)
            .await
            .unwrap()
    })
}

#[test]
fn a_run_a_postgres_worker_holds_is_suspended_from_another_process_and_resumed_by_a_worker() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    let flow = ws.waiting_flow("held");
    let id = submit(&pg, &flow);
    let log = std::fs::File::create(ws.path("worker.log")).unwrap();
    let plugins = ws.path("worker-plugins");
    let mut worker = ws
        .command(&[
            "worker",
            "--db",
            &pg.url(),
            "--plugin-dir",
            plugins.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    ws.wait_for(&mut worker, "execute", "b");

    let asked = ws.flowhost_on(&pg.url(), &["runs", "suspend", &id]);
    assert_exit(&asked, 0);
    let db = PgRunDb::connect(&pg.url()).unwrap();
    let state = |db: &PgRunDb| db.get(&id).unwrap().unwrap().summary.state;
    wait_until(
        "the worker is suspending the run",
        Duration::from_secs(30),
        || state(&db) == FlowState::Suspending,
    );
    ws.release();
    wait_until("the run is SUSPENDED", Duration::from_secs(30), || {
        state(&db) == FlowState::Suspended
    });
    assert!(db.get(&id).unwrap().unwrap().summary.lease.is_none());
    assert_eq!(ws.executions(&["a", "b", "c"]), [1, 1, 0]);

    let resumed = ws.flowhost_on(&pg.url(), &["runs", "resume", &id]);
    assert_exit(&resumed, 0);
    assert_contains(&stdout(&resumed), "a worker resumes it");
    wait_until("a worker finished the run", Duration::from_secs(60), || {
        state(&db) == FlowState::Success
    });
    assert_eq!(
        ws.executions(&["a", "b", "c"]),
        [1, 1, 1],
        "nothing executed twice"
    );
    stop(worker);
}

#[test]
fn the_api_suspends_resumes_reverts_and_restarts_only_with_the_token() {
    let ws = Workspace::new();
    ws.write_flow(
        "served",
        "on_failure = \"suspend\"",
        &[
            Probe::new("a"),
            Probe::new("b").config(json!({ "mode": "wait_file", "path": "/signal/go" })),
            Probe::new("c").config(json!({ "fail": "boom", "fail_times": 1 })),
        ],
    );
    let token = "s3cret-token-0123456789";
    std::fs::write(ws.path("token"), format!("{token}\n")).unwrap();
    let mut server = Served::start(
        &ws,
        ws.root(),
        &["--token-file", ws.path("token").to_str().unwrap()],
    );
    let (status, started) = server.post("/v1/flows/flow/runs", "{}", Some(token));
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    ws.wait_for(&mut server.child, "execute", "b");
    let state = |server: &Served| -> String {
        let run = server.get(&format!("/v1/runs/{id}"));
        run["state"].as_str().unwrap().to_owned()
    };

    for route in ["suspend", "resume", "revert", "restart"] {
        let (status, _) = server.post(&format!("/v1/runs/{id}/{route}"), "{}", None);
        assert_eq!(status, 401, "{route} without the token");
    }
    let (status, answer) = server.post(&format!("/v1/runs/{id}/suspend"), "", Some(token));
    assert_eq!(status, 202, "{answer}");
    wait_until("SUSPENDING", Duration::from_secs(30), || {
        state(&server) == "SUSPENDING"
    });
    ws.release();
    wait_until("SUSPENDED", Duration::from_secs(30), || {
        state(&server) == "SUSPENDED"
    });
    let (status, answer) = server.post(&format!("/v1/runs/{id}/suspend"), "", Some(token));
    assert_eq!(status, 409, "{answer}");

    // Resumed, c fails once: on_failure = "suspend" suspends the run again.
    let (status, answer) = server.post(&format!("/v1/runs/{id}/resume"), "", Some(token));
    assert_eq!(status, 202, "{answer}");
    wait_until("suspended on c's failure", Duration::from_secs(30), || {
        let run: Value = server.get(&format!("/v1/runs/{id}"));
        run["state"] == "SUSPENDED" && run["tasks"][2]["state"] == "FAILURE"
    });
    assert_eq!(ws.executions(&["a", "b", "c"]), [1, 1, 1]);

    let (status, answer) = server.post(
        &format!("/v1/runs/{id}/restart"),
        r#"{"from": "nope"}"#,
        Some(token),
    );
    assert_eq!(status, 404, "{answer}");
    assert_contains(answer["error"].as_str().unwrap(), "no task `nope`");
    let (status, answer) = server.post(
        &format!("/v1/runs/{id}/restart"),
        r#"{"from": "c"}"#,
        Some(token),
    );
    assert_eq!(status, 202, "{answer}");
    let new = answer["run_id"].as_str().unwrap().to_owned();
    let restarted = server.wait_finished(&new);
    assert_eq!(
        restarted["state"], "SUCCESS",
        "c succeeds on its second call"
    );
    assert_eq!(restarted["restarted_from"], id.as_str());
    assert_eq!(ws.executions(&["a", "b", "c"]), [1, 1, 2]);

    let (status, answer) = server.post(&format!("/v1/runs/{id}/revert"), "", Some(token));
    assert_eq!(status, 202, "{answer}");
    let reverted = server.wait_finished(&id);
    assert_eq!(reverted["state"], "REVERTED");
    assert_eq!(reverted["restarts"], json!([new]));
    assert_eq!(
        ws.journal().lines()[4..],
        ["revert c", "revert b", "revert a"]
    );
}

#[test]
fn the_console_suspends_restarts_and_resumes_a_run_with_its_buttons() {
    let ws = Workspace::new();
    ws.waiting_flow("console");
    let mut server = Served::start(&ws, ws.root(), &[]);
    let (status, started) = server.post("/v1/flows/flow/runs", "{}", None);
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    ws.wait_for(&mut server.child, "execute", "b");

    let mut browser = Browser::start(1366, 900);
    browser.open(&format!("{}/runs/{id}", server.base));
    browser.wait_for(
        "document.querySelector('#suspend') && !document.querySelector('#suspend').disabled",
        "Suspend is offered for a running run",
    );
    browser.eval("document.querySelector('#suspend').click()");
    browser.wait_for(
        "document.querySelector('#action-result [data-done=suspend]')",
        "the suspend is acknowledged",
    );
    ws.release();
    browser.wait_for(
        "document.querySelector('h1 .badge').dataset.state === 'SUSPENDED'",
        "the run page shows SUSPENDED",
    );
    assert_eq!(
        browser.eval("[document.querySelector('#revert').disabled, document.querySelector('#suspend').disabled]"),
        json!([false, true])
    );

    browser.eval(
        "(() => { document.querySelector('#restart-from').value = 'b'; document.querySelector('#restart').click(); })()",
    );
    browser.wait_for(
        "document.querySelector('#action-result [data-done=restart] a')",
        "the restart names the new run",
    );
    let new =
        browser.eval("document.querySelector('#action-result [data-done=restart] a').textContent");
    let new = new.as_str().unwrap().to_owned();
    assert_eq!(server.wait_finished(&new)["state"], "SUCCESS");

    browser.eval("document.querySelector('#resume').click()");
    browser.wait_for(
        "document.querySelector('h1 .badge').dataset.state === 'SUCCESS'",
        "the resumed run succeeds",
    );
    browser.wait_for(
        "document.querySelector('#restarts a')",
        "the original links to its restart",
    );
    assert_eq!(
        ws.executions(&["a", "b", "c"]),
        [1, 2, 2],
        "the restart copied a; the resume repeated nothing"
    );
    assert!(
        browser.errors.is_empty(),
        "the console logged errors: {:#?}",
        browser.errors
    );
}

/// What a listener heard, in order: `flow FROM -> TO` and `TASK FROM -> TO`.
fn moves(recorder: &Recorder) -> Vec<String> {
    recorder
        .events()
        .iter()
        .filter_map(|e| match &e.transition {
            Transition::Flow { from, to, .. } => Some(format!("flow {from} -> {to}")),
            Transition::Task { task, from, to, .. } => Some(format!("{task} {from} -> {to}")),
            Transition::Progress { .. } => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_suspend_makes_the_transitions_taskflow_makes() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("suspended")
        .add(journal.probe_reading("a", "seed", json!({})))
        .add(journal.probe_reading("b", "a_out", json!({ "mode": "sleep", "ms": 300 })))
        .add(journal.probe_reading("c", "b_out", json!({})));
    let engine = Engine::new().unwrap();
    let recorder = Arc::new(Recorder::default());
    let mut loaded = engine.load(&flow, seeded()).await.unwrap();
    loaded.listen(recorder.clone());
    let id = loaded.run_id().to_owned();
    let run = tokio::spawn(loaded.run());
    until_journaled(&journal, "`b` is executing", "execute", "b", 1).await;

    engine.suspend(&id);
    let report = run.await.unwrap().unwrap();

    assert_eq!(report.state, FlowState::Suspended);
    // TaskFlow 6.5 (benches/taskflow/suspend.py): flow RUNNING / a RUNNING / a SUCCESS /
    // b RUNNING / flow SUSPENDING / b SUCCESS / flow SUSPENDED.
    assert_eq!(
        moves(&recorder),
        [
            "flow PENDING -> RUNNING",
            "a PENDING -> RUNNING",
            "a RUNNING -> SUCCESS",
            "b PENDING -> RUNNING",
            "flow RUNNING -> SUSPENDING",
            "b RUNNING -> SUCCESS",
            "flow SUSPENDING -> SUSPENDED",
        ]
    );
    assert_eq!(journal.lines(), ["execute a", "execute b"]);
}
