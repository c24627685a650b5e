//! One executor per run: a run's lease keeps a second process from executing it while the
//! first is alive, two resumes of one run race for one lease, and an executor that lost its
//! lease (paused past its expiry while another took over) can never write again.

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::kit::{
    Workspace, assert_contains, assert_exit, signal, stderr, stdout, stdout_json, wait_until,
};

/// Waits until the journal shows `call` of `label` `n` times.
fn wait_for_count(ws: &Workspace, call: &str, label: &str, n: usize) {
    wait_until(
        &format!("`{label}` reached {call} #{n}"),
        Duration::from_secs(120),
        || ws.count(call, label) >= n,
    );
}

/// Writes the workspace's flow (`b` waits for `/signal/go`) and starts `flowhost ARGS…`
/// recording into the workspace's database: the process, once `b` is executing.
fn running_in_b(ws: &Workspace, args: &[&str]) -> Child {
    ws.waiting_flow("contested");
    let mut child = ws.recording(args).start_piped();
    ws.wait_for(&mut child, "execute", "b");
    child
}

#[test]
fn resuming_a_run_that_is_still_running_is_refused_with_exit_75() {
    let ws = Workspace::new();
    let original = running_in_b(&ws, &["run", "flow.toml"]);
    let run = ws.only_run();
    let holder = run
        .lease
        .as_ref()
        .expect("runs list shows who holds a live run");
    assert_eq!(holder.pid, original.id());

    for force in [false, true] {
        let mut args = vec!["resume", run.id.as_str()];
        if force {
            args.push("--force");
        }
        let refused = ws.runs(&args);
        assert_eq!(
            refused.status.code(),
            Some(75),
            "force={force}: {}",
            stderr(&refused)
        );
        // It names the holder.
        let message = stderr(&refused);
        assert_contains(&message, "held by another executor");
        assert_contains(&message, &format!("pid {}", original.id()));
    }
    let listed = stdout(&ws.runs(&["list"]));
    assert_contains(&listed, &format!("pid {}", original.id()));

    ws.release();
    let finished = original.wait_with_output().unwrap();
    assert_exit(&finished, 0);
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
    let mut original = running_in_b(&ws, &["run", "flow.toml"]);
    original.kill().unwrap();
    original.wait().unwrap();
    let id = ws.only_run().id;

    let mut first = ws.recording(&["runs", "resume", &id]).start_piped();
    let mut second = ws.recording(&["runs", "resume", &id]).start_piped();
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
    assert_eq!(
        ws.executions(&["a", "b", "c"]),
        [1, 2, 1],
        "b: once before the kill, once by the one resume; c by exactly one process"
    );
}

#[test]
fn an_executor_paused_past_its_lease_is_fenced_when_it_wakes() {
    let ws = Workspace::new();
    let stale = running_in_b(&ws, &["run", "flow.toml", "--json", "--lease-ttl", "1s"]);
    let id = ws.only_run().id;
    signal(&stale, "-STOP");
    std::thread::sleep(Duration::from_millis(1800));

    let taker = ws
        .recording(&["runs", "resume", &id, "--json"])
        .start_piped();
    wait_for_count(&ws, "execute", "b", 2);
    ws.release();
    let took_over = taker.wait_with_output().unwrap();
    // The run was taken over.
    assert_exit(&took_over, 0);
    assert_eq!(stdout_json(&took_over)["state"], "SUCCESS");
    let finished = ws.only_run();

    signal(&stale, "-CONT");
    let woken = stale.wait_with_output().unwrap();
    let message = stderr(&woken);
    assert_exit(&woken, 75);
    assert_contains(&message, "lost its lease");
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
    let show = ws.show(&id);
    let b_history = show["tasks"][1]["history"].as_array().unwrap();
    assert_eq!(b_history.last().unwrap()["to"], "SUCCESS");
    assert_eq!(show["tasks"][2]["executions"], 1);
}

#[test]
fn prune_never_deletes_a_run_a_live_executor_holds_and_dry_run_deletes_nothing() {
    let ws = Workspace::new();
    let running = running_in_b(&ws, &["run", "flow.toml"]);
    let id = ws.only_run().id;

    let refused = ws.runs(&["prune", "--state", "RUNNING"]);
    let message = stderr(&refused);
    assert_exit(&refused, 75);
    assert_contains(&message, &format!("kept run {id}"));
    assert_contains(&message, &format!("pid {}", running.id()));
    assert_eq!(ws.only_run().id, id, "the live run is still recorded");

    ws.release();
    assert_exit(&running.wait_with_output().unwrap(), 0);
    let dry = ws.runs(&["prune", "--dry-run", "--json"]);
    assert_exit(&dry, 0);
    assert_eq!(
        stdout_json(&dry),
        json!({ "dry_run": true, "deleted": 0, "runs": [id], "kept": [] })
    );
    let text = stdout(&ws.runs(&["prune", "--dry-run"]));
    assert!(
        text.starts_with("would delete 1 run(s)") && text.contains(&id),
        "{text}"
    );
    assert_eq!(ws.only_run().id, id, "a dry run deletes nothing");

    let pruned = ws.runs(&["prune", "--json"]);
    assert_eq!(
        stdout_json(&pruned),
        json!({ "dry_run": false, "deleted": 1, "runs": [id], "kept": [] })
    );
    let listed = stdout_json(&ws.runs(&["list", "--json"]));
    assert_eq!(listed, json!([]));
}
