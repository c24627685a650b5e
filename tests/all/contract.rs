//! Contract 0.2 as a plugin author relies on it — a revert says what it undid, progress and
//! structured logs reach the operator, the task knows its run and attempt — and contract 0.1
//! plugins, built before it, still run and revert.

use flowhost_testkit::{Workspace, flowhost, plugin, stderr, stdout_json};
use serde_json::{Value, json};

/// A flow whose first probe reports progress, logs, echoes its invocation and says what its
/// revert undid, and whose second probe fails so that the first is reverted.
fn reverted_flow(ws: &Workspace) -> std::path::PathBuf {
    ws.flow(
        "reporting",
        &[
            (
                "first",
                json!({
                    "progress": [0.25, 1.0],
                    "log": "halfway there",
                    "invocation": true,
                    "revert_result": { "undone": "first", "files": 2 },
                }),
            ),
            ("second", json!({ "fail": "boom" })),
        ],
    )
}

#[test]
fn a_revert_result_is_kept_in_the_report_and_the_run_database() {
    let ws = Workspace::new();
    let flow = reverted_flow(&ws);
    let db = ws.db();
    let out = ws.flowhost(&[
        "run",
        flow.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the flow fails and is reverted: {}",
        stderr(&out)
    );
    let report = stdout_json(&out);
    assert_eq!(report["state"], "REVERTED");
    assert_eq!(report["tasks"][0]["state"], "REVERTED");
    assert_eq!(
        report["tasks"][0]["revert_result"],
        json!({ "undone": "first", "files": 2 })
    );
    assert!(
        report["tasks"][1].get("revert_result").is_none(),
        "a revert without a result has none: {report}"
    );

    let id = report["run_id"].as_str().unwrap();
    let shown =
        stdout_json(&ws.flowhost(&["runs", "show", id, "--json", "--db", db.to_str().unwrap()]));
    assert_eq!(
        shown["tasks"][0]["revert_result"],
        json!({ "undone": "first", "files": 2 })
    );
    assert_eq!(
        shown["tasks"][0]["result"]["value"], 1,
        "the execute result is kept beside it: {shown}"
    );

    let text = ws.flowhost(&["runs", "show", id, "--db", db.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(r#"revert result {"files":2,"undone":"first"}"#),
        "{text}"
    );
}

#[test]
fn progress_is_recorded_and_shown_and_structured_logs_reach_the_log() {
    let ws = Workspace::new();
    let flow = reverted_flow(&ws);
    let db = ws.db();
    let out = ws.flowhost(&[
        "run",
        flow.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    let report = stdout_json(&out);
    // The revert reported again: the last report of the task's last call is what stays.
    assert_eq!(
        report["tasks"][0]["progress"],
        json!({ "fraction": 1.0, "details": { "step": 1, "call": "revert" } })
    );
    let log = stderr(&out);
    assert!(
        log.contains("task `first` progress 25%"),
        "listeners hear every report:\n{log}"
    );
    assert!(
        log.contains("halfway there") && log.contains("label=first call=execute"),
        "{log}"
    );
    assert!(log.contains("label=first call=revert"), "{log}");

    let id = report["run_id"].as_str().unwrap();
    let shown = ws.flowhost(&["runs", "show", id, "--db", db.to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(r#"progress 100% {"call":"revert","step":1}"#),
        "{shown}"
    );
}

#[test]
fn a_task_knows_its_run_id_entry_name_and_attempt() {
    let ws = Workspace::new();
    let flow = ws.flow("knowing", &[("knower", json!({ "invocation": true }))]);
    let out = ws.flowhost(&["run", flow.to_str().unwrap(), "--no-db", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = stdout_json(&out);
    let invocation = &report["store"]["knower_out"]["invocation"];
    assert_eq!(invocation["run_id"], report["run_id"]);
    assert_eq!(invocation["task"], "knower");
    assert_eq!(invocation["attempt"], 1);
}

/// A flow of the 0.1 plugin doubling `n`, then a probe that fails when asked to.
fn legacy_flow(dir: &std::path::Path, fail: bool) -> std::path::PathBuf {
    let text = format!(
        "name = \"legacy\"\n[store]\nn = 21\n\n[[task]]\nname = \"double\"\nplugin = {:?}\n\n[[task]]\nname = \"after\"\nplugin = {:?}\nrebind = {{ value = \"doubled\" }}\nconfig = {}\n",
        plugin("contract_0_1"),
        plugin("probe"),
        if fail { "{ fail = \"boom\" }" } else { "{}" }
    );
    let path = dir.join("legacy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_plugin_built_against_contract_0_1_still_runs_and_reverts() {
    let dir = tempfile::tempdir().unwrap();
    let ok = flowhost([
        "run",
        legacy_flow(dir.path(), false).to_str().unwrap(),
        "--no-db",
        "--json",
    ])
    .run();
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(stdout_json(&ok)["store"]["doubled"], 42);

    let failed = flowhost([
        "run",
        legacy_flow(dir.path(), true).to_str().unwrap(),
        "--no-db",
        "--json",
    ])
    .run();
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let report = stdout_json(&failed);
    assert_eq!(report["tasks"][0]["state"], "REVERTED");
    assert_eq!(report["tasks"][0].get("revert_result"), None::<&Value>);
    assert!(
        stderr(&failed).contains("double_v01: reverted"),
        "{}",
        stderr(&failed)
    );
}

#[test]
fn conform_passes_a_0_1_plugin_and_says_which_contract_it_speaks() {
    let old = flowhost(["conform", plugin("contract_0_1").to_str().unwrap()]).run();
    assert_eq!(
        old.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&old.stdout)
    );
    let text = String::from_utf8_lossy(&old.stdout);
    assert!(
        text.contains("contract 0.1, which this host still accepts"),
        "{text}"
    );

    let new = flowhost(["conform", plugin("stamp").to_str().unwrap()]).run();
    let text = String::from_utf8_lossy(&new.stdout);
    assert!(
        text.contains("flowhost:task/task@0.2.0` (contract 0.2, the current one)"),
        "{text}"
    );
}

#[test]
fn the_rust_helper_carries_the_contract_as_it_is_in_wit() {
    let root = flowhost_testkit::repo_root();
    let embedded =
        std::fs::read_to_string(root.join("plugins/rust/flowhost-guest/wit/task.wit")).unwrap();
    let contract = std::fs::read_to_string(root.join("wit/task.wit")).unwrap();
    assert!(
        embedded == contract,
        "plugins/rust/flowhost-guest/wit/task.wit differs from wit/task.wit: copy it over"
    );
}

#[test]
fn a_task_flooding_progress_is_heard_256_times_per_call_and_goes_on() {
    let ws = Workspace::new();
    let mut fractions = vec![0.5; 299];
    fractions.push(1.0);
    let flow = ws.flow("flooding", &[("chatty", json!({ "progress": fractions }))]);
    let out = ws.flowhost(&["run", flow.to_str().unwrap(), "--no-db", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the task still succeeds: {}",
        stderr(&out)
    );
    let report = stdout_json(&out);
    assert_eq!(
        report["tasks"][0]["progress"]["fraction"], 0.5,
        "the last report heard is kept, not the 300th"
    );
    let log = stderr(&out);
    assert_eq!(
        log.matches("task `chatty` progress 50%").count(),
        256,
        "listeners heard 256"
    );
    assert!(
        log.contains("further progress reports of this call dropped"),
        "{log}"
    );
}
