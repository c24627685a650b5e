//! One executor per run: a run's lease keeps a second process from executing it while the
//! first is alive, two resumes of one run race for one lease, and an executor that lost its
//! lease (paused past its expiry while another took over) can never write again.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use flowhost_testkit::{Workspace, stderr, stdout_json};
use serde_json::json;

fn waiting_flow(ws: &Workspace) {
    ws.flow(
        "contested",
        &[
            ("a", json!({})),
            ("b", json!({ "mode": "wait_file", "path": "/signal/go" })),
            ("c", json!({})),
        ],
    );
}

fn spawn(ws: &Workspace, args: &[&str]) -> Child {
    let db = ws.db();
    let mut args = args.to_vec();
    args.extend(["--db", db.to_str().unwrap()]);
    ws.command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

/// Waits until the journal shows `call` of `label` `n` times.
fn wait_for_count(ws: &Workspace, call: &str, label: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while ws.count(call, label) < n {
        assert!(
            Instant::now() < deadline,
            "`{label}` never reached {call} #{n}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn resuming_a_run_that_is_still_running_is_refused_with_exit_75() {
    let ws = Workspace::new();
    waiting_flow(&ws);
    let mut original = spawn(&ws, &["run", "flow.toml"]);
    ws.wait_for(&mut original, "execute", "b");
    let run = ws.only_run();
    let holder = run
        .lease
        .as_ref()
        .expect("runs list shows who holds a live run");
    assert_eq!(holder.pid, original.id());

    let db = ws.db();
    for force in [false, true] {
        let mut args = vec!["runs", "resume", &run.id, "--db", db.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let refused = ws.flowhost(&args);
        assert_eq!(
            refused.status.code(),
            Some(75),
            "force={force}: {}",
            stderr(&refused)
        );
        let message = stderr(&refused);
        assert!(
            message.contains("held by another executor")
                && message.contains(&format!("pid {}", original.id())),
            "names the holder: {message}"
        );
    }
    let listed = String::from_utf8_lossy(
        &ws.flowhost(&["runs", "list", "--db", db.to_str().unwrap()])
            .stdout,
    )
    .into_owned();
    assert!(
        listed.contains(&format!("pid {}", original.id())),
        "{listed}"
    );

    ws.release();
    let finished = original.wait_with_output().unwrap();
    assert!(finished.status.success(), "{}", stderr(&finished));
    for label in ["a", "b", "c"] {
        assert_eq!(ws.count("execute", label), 1, "`{label}` executed once");
    }
    assert!(
        ws.only_run().lease.is_none(),
        "a finished run holds no lease"
    );
}

#[test]
fn of_two_resumes_of_one_interrupted_run_exactly_one_executes() {
    let ws = Workspace::new();
    waiting_flow(&ws);
    let mut original = spawn(&ws, &["run", "flow.toml"]);
    ws.wait_for(&mut original, "execute", "b");
    original.kill().unwrap();
    original.wait().unwrap();
    let id = ws.only_run().id;

    let mut first = spawn(&ws, &["runs", "resume", &id]);
    let mut second = spawn(&ws, &["runs", "resume", &id]);
    // The winner re-executes b and waits in it, holding the lease: the loser gives up alone.
    let deadline = Instant::now() + Duration::from_secs(120);
    while first.try_wait().unwrap().is_none() && second.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "neither resume gave up");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for_count(&ws, "execute", "b", 2);
    ws.release();
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let codes: Vec<Option<i32>> = outputs.iter().map(|o| o.status.code()).collect();
    assert!(
        codes.contains(&Some(0)),
        "one resume finished the run: {codes:?}"
    );
    assert!(
        codes.contains(&Some(75)),
        "the other was refused: {codes:?}"
    );
    let loser = outputs
        .iter()
        .find(|o| o.status.code() == Some(75))
        .unwrap();
    assert!(
        stderr(loser).contains("held by another executor"),
        "{}",
        stderr(loser)
    );
    assert_eq!(ws.count("execute", "a"), 1);
    assert_eq!(
        ws.count("execute", "b"),
        2,
        "b: once before the kill, once by the one resume"
    );
    assert_eq!(
        ws.count("execute", "c"),
        1,
        "c executed by exactly one process"
    );
}

#[test]
fn an_executor_paused_past_its_lease_is_fenced_when_it_wakes() {
    let ws = Workspace::new();
    waiting_flow(&ws);
    let mut stale = spawn(&ws, &["run", "flow.toml", "--json", "--lease-ttl", "1s"]);
    ws.wait_for(&mut stale, "execute", "b");
    let id = ws.only_run().id;
    signal(&stale, "-STOP");
    std::thread::sleep(Duration::from_millis(1800));

    let taker = spawn(&ws, &["runs", "resume", &id, "--json"]);
    wait_for_count(&ws, "execute", "b", 2);
    ws.release();
    let took_over = taker.wait_with_output().unwrap();
    assert!(
        took_over.status.success(),
        "the run was taken over: {}",
        stderr(&took_over)
    );
    assert_eq!(stdout_json(&took_over)["state"], "SUCCESS");
    let finished = ws.only_run();

    signal(&stale, "-CONT");
    let woken = stale.wait_with_output().unwrap();
    let message = stderr(&woken);
    assert_eq!(woken.status.code(), Some(75), "{message}");
    assert!(message.contains("lost its lease"), "{message}");
    assert_eq!(
        ws.count("execute", "c"),
        1,
        "the stale executor executed nothing more"
    );
    let record = ws.only_run();
    assert_eq!(
        record.state, finished.state,
        "the stale executor wrote nothing"
    );
    assert_eq!(
        record.updated_at, finished.updated_at,
        "the stale executor wrote nothing"
    );
    let show = stdout_json(&ws.flowhost(&[
        "runs",
        "show",
        &id,
        "--json",
        "--db",
        ws.db().to_str().unwrap(),
    ]));
    let b_history = show["tasks"][1]["history"].as_array().unwrap();
    assert_eq!(b_history.last().unwrap()["to"], "SUCCESS");
    assert_eq!(show["tasks"][2]["executions"], 1);
}

#[test]
fn prune_never_deletes_a_run_a_live_executor_holds_and_dry_run_deletes_nothing() {
    let ws = Workspace::new();
    waiting_flow(&ws);
    let db = ws.db();
    let db = db.to_str().unwrap();
    let mut running = spawn(&ws, &["run", "flow.toml"]);
    ws.wait_for(&mut running, "execute", "b");
    let id = ws.only_run().id;

    let refused = ws.flowhost(&["runs", "prune", "--state", "RUNNING", "--db", db]);
    let message = stderr(&refused);
    assert_eq!(
        refused.status.code(),
        Some(75),
        "a live run is refused: {message}"
    );
    assert!(
        message.contains(&format!("kept run {id}"))
            && message.contains(&format!("pid {}", running.id())),
        "{message}"
    );
    assert_eq!(ws.only_run().id, id, "the live run is still recorded");

    ws.release();
    assert!(running.wait_with_output().unwrap().status.success());
    let dry = ws.flowhost(&["runs", "prune", "--dry-run", "--json", "--db", db]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert_eq!(
        stdout_json(&dry),
        json!({ "dry_run": true, "deleted": 0, "runs": [id], "kept": [] })
    );
    let dry = ws.flowhost(&["runs", "prune", "--dry-run", "--db", db]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.starts_with("would delete 1 run(s)") && text.contains(&id),
        "{text}"
    );
    assert_eq!(ws.only_run().id, id, "a dry run deletes nothing");

    let pruned = ws.flowhost(&["runs", "prune", "--json", "--db", db]);
    assert_eq!(
        stdout_json(&pruned),
        json!({ "dry_run": false, "deleted": 1, "runs": [id], "kept": [] })
    );
    let listed = stdout_json(&ws.flowhost(&["runs", "list", "--json", "--db", db]));
    assert_eq!(listed, json!([]));
}
