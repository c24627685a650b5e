//! The canonical example, driven through the `flowhost` binary as an operator would: a
//! successful volume create, a failing one that must leave nothing behind, and one over quota.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::kit::{
    assert_contains, assert_exit, backoffs, document_states, example, exit_json, flowhost,
    read_json, snapshot, stdout_json,
};

/// `flowhost run FLOW EXTRA…`, to the end.
fn run(flow: &Path, extra: &[&str]) -> Output {
    let mut command = flowhost(["run"]);
    command.arg(flow).args(extra);
    command.run()
}

/// The `task `name` FROM -> TO` transitions logged on stderr, in order.
fn transitions(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line[line.find("task `")?..]
                .split_whitespace()
                .take(5)
                .collect();
            Some(words.join(" ").trim_end_matches(':').to_owned())
        })
        .collect()
}

/// The logged transitions of task `task`, in order.
fn transitions_of(output: &Output, task: &str) -> Vec<String> {
    let prefix = format!("task `{task}`");
    transitions(output)
        .into_iter()
        .filter(|t| t.starts_with(&prefix))
        .collect()
}

/// The logged transitions ending in `end` (`REVERTING -> REVERTED`), in order.
fn transitions_ending(output: &Output, end: &str) -> Vec<String> {
    transitions(output)
        .into_iter()
        .filter(|t| t.ends_with(end))
        .collect()
}

/// Runs `flow` for the zone that refuses volumes (`az-down`), reporting in JSON: the run
/// fails and is reverted (exit 1).
fn run_in_the_refusing_zone(flow: &Path) -> Output {
    let out = run(
        flow,
        &["--store", "raw_availability_zone=az-down", "--json"],
    );
    assert_exit(&out, 1);
    out
}

/// Every file below `state` but the quota ledger: the volume records and scheduler requests.
fn records(state: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    snapshot(state)
        .into_iter()
        .filter(|(p, _)| p != Path::new("quota.json"))
        .collect()
}

const TASKS: [&str; 5] = [
    "extract_volume_request",
    "quota_reserve",
    "entry_create",
    "quota_commit",
    "volume_cast",
];

#[test]
fn creating_a_volume_runs_every_task_in_order_and_prints_the_volume() {
    let (dir, flow) = example("volume-create", "flow.toml");
    let out = run(&flow, &["--fetch", "volume"]);
    assert_exit(&out, 0);

    let expected: Vec<String> = TASKS
        .iter()
        .flat_map(|t| {
            [
                format!("task `{t}` PENDING -> RUNNING"),
                format!("task `{t}` RUNNING -> SUCCESS"),
            ]
        })
        .collect();
    assert_eq!(transitions(&out), expected);

    let fetched = stdout_json(&out);
    let volume = &fetched["volume"];
    assert_eq!(volume["size"], 10);
    assert_eq!(volume["availability_zone"], "nova");
    assert_eq!(volume["volume_type"], "standard");
    assert_eq!(volume["display_name"], "db-data");
    assert_eq!(volume["status"], "creating");
    let id = volume["id"].as_str().expect("volume has an id");

    let state = dir.path().join("state");
    assert_eq!(
        read_json(&state.join(format!("volumes/{id}.json")))["size"],
        10
    );
    let request = read_json(&state.join(format!("scheduler/{id}.json")));
    assert_eq!(request["volume_id"], id);
    let ledger = read_json(&state.join("quota.json"));
    assert_eq!(ledger["in_use"]["gigabytes"], 10);
    assert_eq!(ledger["in_use"]["volumes"], 1);
    assert_eq!(ledger["reserved"], serde_json::json!({}));
}

#[test]
fn a_refusing_zone_reverts_every_task_in_reverse_and_restores_the_files() {
    let (dir, flow) = example("volume-create", "flow.toml");
    let first = run(&flow, &[]);
    assert_exit(&first, 0);
    let state = dir.path().join("state");
    let before = snapshot(&state);

    let out = run_in_the_refusing_zone(&flow);

    let report = stdout_json(&out);
    assert_eq!(report["state"], "REVERTED");
    assert_eq!(document_states(&report), ["REVERTED"; 5]);
    assert_eq!(report["tasks"][4]["error"]["code"], "zone-unavailable");
    assert!(
        report["store"].get("volume").is_none(),
        "a reverted volume must not be in the final store"
    );

    let reverts = transitions_ending(&out, "-> REVERTED");
    let expected: Vec<String> = TASKS
        .iter()
        .rev()
        .map(|t| format!("task `{t}` REVERTING -> REVERTED"))
        .collect();
    assert_eq!(reverts, expected);
    assert_eq!(
        snapshot(&state),
        before,
        "a reverted run must leave the ledger and volume files as they were"
    );
}

#[test]
fn a_size_over_quota_fails_at_the_reservation_and_changes_nothing() {
    let (dir, flow) = example("volume-create", "flow.toml");
    let state = dir.path().join("state");
    let before = snapshot(&state);
    let out = run(&flow, &["--store", "raw_size=5000", "--json"]);
    let report = exit_json(&out, 1);
    assert_eq!(report["tasks"][1]["error"]["code"], "over-quota");
    assert_eq!(
        report["tasks"][2]["state"], "PENDING",
        "nothing after the failed task runs"
    );
    assert_eq!(
        records(&state),
        before,
        "no volume or scheduler file may be left"
    );
}

#[test]
fn fetching_a_name_that_was_reverted_says_so_and_keeps_stdout_json() {
    let (_dir, flow) = example("volume-create", "flow.toml");
    let out = run(
        &flow,
        &[
            "--store",
            "raw_availability_zone=az-down",
            "--fetch",
            "volume",
            "--fetch",
            "size",
        ],
    );
    assert_exit(&out, 1);
    assert_eq!(
        stdout_json(&out),
        serde_json::json!({ "volume": null, "size": null }),
        "stdout stays machine-readable"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_contains(
        &stderr,
        "`volume` was reverted: task `entry_create` stored it, then was reverted",
    );
    assert_contains(
        &stderr,
        "`size` was reverted: task `extract_volume_request`",
    );
}

#[test]
fn a_busy_scheduler_is_retried_with_backoff_until_it_accepts_the_cast() {
    let (dir, flow) = example("volume-create", "reschedule.toml");
    let db = dir.path().join("runs.db");
    let out = run(&flow, &["--fetch", "volume", "--db", db.to_str().unwrap()]);
    assert_exit(&out, 0);
    let casts = transitions_of(&out, "volume_cast");
    assert_eq!(
        casts,
        [
            "task `volume_cast` PENDING -> RUNNING",
            "task `volume_cast` RUNNING -> RETRYING",
            "task `volume_cast` RETRYING -> RUNNING",
            "task `volume_cast` RUNNING -> RETRYING",
            "task `volume_cast` RETRYING -> RUNNING",
            "task `volume_cast` RUNNING -> SUCCESS",
        ]
    );
    let id = stdout_json(&out)["volume"]["id"]
        .as_str()
        .expect("volume has an id")
        .to_owned();
    assert_eq!(
        read_json(&dir.path().join(format!("state/scheduler/{id}.json")))["volume_id"],
        id.as_str()
    );

    let db = db.to_str().unwrap();
    let runs = stdout_json(&flowhost(["runs", "list", "--json", "--db", db]).run());
    let run = runs[0]["id"].as_str().unwrap();
    let show = flowhost(["runs", "show", run, "--json", "--db", db]).run();
    let cast = &stdout_json(&show)["tasks"][4];
    assert_eq!(
        backoffs(cast),
        [50.0, 100.0],
        "the backoff doubles from 50 ms"
    );
    assert_eq!(cast["attempts"][1]["error"]["code"], "unavailable");
}

#[test]
fn a_refusing_zone_is_not_retried_and_reverts_everything() {
    let (dir, flow) = example("volume-create", "reschedule.toml");
    let state = dir.path().join("state");
    let out = run_in_the_refusing_zone(&flow);
    let report = stdout_json(&out);
    assert_eq!(
        report["tasks"][4]["attempt"], 1,
        "`zone-unavailable` is not in the policy's `on`"
    );
    assert_eq!(report["state"], "REVERTED");
    let left = records(&state);
    assert!(
        left.is_empty(),
        "no volume, request or busy count is left: {left:?}"
    );
}

#[test]
fn the_graph_variant_reserves_quota_and_creates_the_record_at_once() {
    let (_dir, flow) = example("volume-create", "graph.toml");
    let out = run(&flow, &["--fetch", "volume"]);
    assert_exit(&out, 0);
    let moves = transitions(&out);
    let at = |t: &str| {
        moves
            .iter()
            .position(|m| m == t)
            .unwrap_or_else(|| panic!("no {t} in {moves:?}"))
    };
    let both_started = at("task `quota_reserve` PENDING -> RUNNING")
        .max(at("task `entry_create` PENDING -> RUNNING"));
    let first_done = at("task `quota_reserve` RUNNING -> SUCCESS")
        .min(at("task `entry_create` RUNNING -> SUCCESS"));
    assert!(both_started < first_done, "both run at once: {moves:?}");
    assert!(
        at("task `extract_volume_request` RUNNING -> SUCCESS")
            < at("task `quota_reserve` PENDING -> RUNNING")
    );
    assert!(
        at("task `quota_commit` RUNNING -> SUCCESS") < at("task `volume_cast` PENDING -> RUNNING"),
        "`after` holds"
    );
    assert_eq!(stdout_json(&out)["volume"]["status"], "creating");
}

#[test]
fn the_graph_variant_reverts_in_reverse_dependency_order() {
    let (dir, flow) = example("volume-create", "graph.toml");
    let state = dir.path().join("state");
    let before = snapshot(&state);
    let out = run_in_the_refusing_zone(&flow);
    let reverted = transitions_ending(&out, "REVERTING -> REVERTED");
    let at = |t: &str| {
        reverted
            .iter()
            .position(|m| m.contains(&format!("`{t}`")))
            .unwrap()
    };
    assert_eq!(reverted.len(), 5);
    assert!(at("volume_cast") < at("quota_commit") && at("quota_commit") < at("entry_create"));
    assert!(at("quota_commit") < at("quota_reserve"));
    assert_eq!(at("extract_volume_request"), 4, "the root is reverted last");
    assert_eq!(records(&state), before);
}

#[test]
fn a_refusing_zone_makes_the_schedule_subflow_try_the_next_zone() {
    let (dir, flow) = example("volume-create", "zones.toml");
    let out = run(&flow, &["--fetch", "volume"]);
    assert_exit(&out, 0);
    let casts = transitions_of(&out, "schedule/volume_cast");
    assert_eq!(
        casts,
        [
            "task `schedule/volume_cast` PENDING -> RUNNING",
            "task `schedule/volume_cast` RUNNING -> FAILURE",
            "task `schedule/volume_cast` FAILURE -> REVERTING",
            "task `schedule/volume_cast` REVERTING -> REVERTED",
            "task `schedule/volume_cast` REVERTED -> PENDING",
            "task `schedule/volume_cast` PENDING -> RUNNING",
            "task `schedule/volume_cast` RUNNING -> SUCCESS",
        ]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_contains(&stderr, "PENDING -> RUNNING (iteration 2)");
    assert!(
        !stderr.contains("task `entry_create` SUCCESS -> REVERTING"),
        "what precedes the subflow stays: {stderr}"
    );
    let id = stdout_json(&out)["volume"]["id"]
        .as_str()
        .expect("volume has an id")
        .to_owned();
    let cast = read_json(&dir.path().join(format!("state/scheduler/{id}.json")));
    assert_eq!(cast["availability_zone"], "nova", "{cast}");
}
