//! The canonical example, driven through the `flowhost` binary as an operator would: a
//! successful volume create, a failing one that must leave nothing behind, and one over quota.

use std::path::{Path, PathBuf};
use std::process::Output;

use flowhost_testkit::{plugin, repo_root, snapshot};
use serde_json::Value;

/// Copies the example into a scratch folder, pointing its plugin paths at the built plugins.
fn example() -> (tempfile::TempDir, PathBuf) {
    example_file("flow.toml")
}

/// Copies one flow file of the example (`flow.toml`, `reschedule.toml`, `graph.toml`) into a
/// scratch folder with an empty `state/`, pointing its plugin paths at the built plugins.
fn example_file(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = dir.path().join(name);
    std::fs::copy(repo_root().join("examples/volume-create").join(name), &flow).expect("copy flow");
    std::fs::create_dir(dir.path().join("state")).expect("state dir");
    let built = plugin("quota_reserve")
        .parent()
        .expect("plugin dir")
        .display()
        .to_string();
    let text = std::fs::read_to_string(&flow).expect("read flow");
    std::fs::write(
        &flow,
        text.replace("../../plugins/target/wasm32-wasip2/release", &built),
    )
    .expect("write flow");
    (dir, flow)
}

fn flowhost(flow: &Path, extra: &[&str]) -> Output {
    let mut command = flowhost_testkit::flowhost(["run"]);
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

fn json_stdout(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read state file"))
        .expect("state file is JSON")
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
    let (dir, flow) = example();
    let out = flowhost(&flow, &["--fetch", "volume"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

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

    let fetched = json_stdout(&out);
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
    let (dir, flow) = example();
    let first = flowhost(&flow, &[]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let state = dir.path().join("state");
    let before = snapshot(&state);

    let out = flowhost(
        &flow,
        &["--store", "raw_availability_zone=az-down", "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report = json_stdout(&out);
    assert_eq!(report["state"], "REVERTED");
    let states: Vec<&str> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["REVERTED"; 5]);
    assert_eq!(report["tasks"][4]["error"]["code"], "zone-unavailable");
    assert!(
        report["store"].get("volume").is_none(),
        "a reverted volume must not be in the final store"
    );

    let reverts: Vec<String> = transitions(&out)
        .into_iter()
        .filter(|t| t.ends_with("-> REVERTED"))
        .collect();
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
    let (dir, flow) = example();
    let state = dir.path().join("state");
    let before = snapshot(&state);
    let out = flowhost(&flow, &["--store", "raw_size=5000", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report = json_stdout(&out);
    assert_eq!(report["tasks"][1]["error"]["code"], "over-quota");
    assert_eq!(
        report["tasks"][2]["state"], "PENDING",
        "nothing after the failed task runs"
    );
    let after: Vec<_> = snapshot(&state)
        .into_iter()
        .filter(|(p, _)| p != Path::new("quota.json"))
        .collect();
    assert_eq!(after, before, "no volume or scheduler file may be left");
}

#[test]
fn fetching_a_name_that_was_reverted_says_so_and_keeps_stdout_json() {
    let (_dir, flow) = example();
    let out = flowhost(
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
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        json_stdout(&out),
        serde_json::json!({ "volume": null, "size": null }),
        "stdout stays machine-readable"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`volume` was reverted: task `entry_create` stored it, then was reverted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`size` was reverted: task `extract_volume_request`"),
        "{stderr}"
    );
}

#[test]
fn a_busy_scheduler_is_retried_with_backoff_until_it_accepts_the_cast() {
    let (dir, flow) = example_file("reschedule.toml");
    let db = dir.path().join("runs.db");
    let out = flowhost(&flow, &["--fetch", "volume", "--db", db.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let casts: Vec<String> = transitions(&out)
        .into_iter()
        .filter(|t| t.starts_with("task `volume_cast`"))
        .collect();
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
    let id = json_stdout(&out)["volume"]["id"]
        .as_str()
        .expect("volume has an id")
        .to_owned();
    assert_eq!(
        read_json(&dir.path().join(format!("state/scheduler/{id}.json")))["volume_id"],
        id.as_str()
    );

    let runs = json_stdout(
        &flowhost_testkit::flowhost(["runs", "list", "--json", "--db", db.to_str().unwrap()]).run(),
    );
    let run = runs[0]["id"].as_str().unwrap();
    let show =
        flowhost_testkit::flowhost(["runs", "show", run, "--json", "--db", db.to_str().unwrap()])
            .run();
    let cast = &json_stdout(&show)["tasks"][4];
    let pauses: Vec<f64> = cast["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["backoff_ms"].as_f64())
        .collect();
    assert_eq!(pauses, [50.0, 100.0], "the backoff doubles from 50 ms");
    assert_eq!(cast["attempts"][1]["error"]["code"], "unavailable");
}

#[test]
fn a_refusing_zone_is_not_retried_and_reverts_everything() {
    let (dir, flow) = example_file("reschedule.toml");
    let state = dir.path().join("state");
    let out = flowhost(
        &flow,
        &["--store", "raw_availability_zone=az-down", "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_stdout(&out);
    assert_eq!(
        report["tasks"][4]["attempt"], 1,
        "`zone-unavailable` is not in the policy's `on`"
    );
    assert_eq!(report["state"], "REVERTED");
    let left: Vec<_> = snapshot(&state)
        .into_iter()
        .filter(|(p, _)| p != Path::new("quota.json"))
        .collect();
    assert!(
        left.is_empty(),
        "no volume, request or busy count is left: {left:?}"
    );
}

#[test]
fn the_graph_variant_reserves_quota_and_creates_the_record_at_once() {
    let (_dir, flow) = example_file("graph.toml");
    let out = flowhost(&flow, &["--fetch", "volume"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert_eq!(json_stdout(&out)["volume"]["status"], "creating");
}

#[test]
fn the_graph_variant_reverts_in_reverse_dependency_order() {
    let (dir, flow) = example_file("graph.toml");
    let state = dir.path().join("state");
    let before = snapshot(&state);
    let out = flowhost(
        &flow,
        &["--store", "raw_availability_zone=az-down", "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reverted: Vec<String> = transitions(&out)
        .into_iter()
        .filter(|t| t.ends_with("REVERTING -> REVERTED"))
        .collect();
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
    let after: Vec<_> = snapshot(&state)
        .into_iter()
        .filter(|(p, _)| p != Path::new("quota.json"))
        .collect();
    assert_eq!(after, before);
}

#[test]
fn a_refusing_zone_makes_the_schedule_subflow_try_the_next_zone() {
    let (dir, flow) = example_file("zones.toml");
    let out = flowhost(&flow, &["--fetch", "volume"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let casts: Vec<String> = transitions(&out)
        .into_iter()
        .filter(|t| t.starts_with("task `schedule/volume_cast`"))
        .collect();
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
    assert!(
        stderr.contains("PENDING -> RUNNING (iteration 2)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("task `entry_create` SUCCESS -> REVERTING"),
        "what precedes the subflow stays: {stderr}"
    );
    let id = json_stdout(&out)["volume"]["id"]
        .as_str()
        .expect("volume has an id")
        .to_owned();
    let cast = read_json(&dir.path().join(format!("state/scheduler/{id}.json")));
    assert_eq!(cast["availability_zone"], "nova", "{cast}");
}
