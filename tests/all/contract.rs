//! Contract 0.2 as a plugin author relies on it — a revert says what it undid, progress and
//! structured logs reach the operator, the task knows its run and attempt — and contract 0.1
//! plugins, built before it, still run and revert.

use std::process::Output;

use serde_json::{Value, json};

use crate::kit::{
    Workspace, assert_contains, assert_exit, exit_json, flowhost, plugin, stderr, stdout,
    stdout_json,
};

/// Runs, recorded in the workspace's database, a flow whose first probe reports progress,
/// logs, echoes its invocation and says what its revert undid, and whose second probe fails
/// so that the first is reverted.
fn run_reverted_flow(ws: &Workspace) -> Output {
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
    );
    ws.recording(&["run", "flow.toml", "--json"]).run()
}

#[test]
fn a_revert_result_is_kept_in_the_report_and_the_run_database() {
    let ws = Workspace::new();
    let out = run_reverted_flow(&ws);
    // The flow fails and is reverted.
    let report = exit_json(&out, 1);
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
    let shown = ws.show(id);
    assert_eq!(
        shown["tasks"][0]["revert_result"],
        json!({ "undone": "first", "files": 2 })
    );
    assert_eq!(
        shown["tasks"][0]["result"]["value"], 1,
        "the execute result is kept beside it: {shown}"
    );

    let text = stdout(&ws.runs(&["show", id]));
    assert_contains(&text, r#"revert result {"files":2,"undone":"first"}"#);
}

#[test]
fn progress_is_recorded_and_shown_and_structured_logs_reach_the_log() {
    let ws = Workspace::new();
    let out = run_reverted_flow(&ws);
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
    assert_contains(&log, "label=first call=revert");

    let id = report["run_id"].as_str().unwrap();
    let shown = stdout(&ws.runs(&["show", id]));
    assert_contains(&shown, r#"progress 100% {"call":"revert","step":1}"#);
}

#[test]
fn a_task_knows_its_run_id_entry_name_and_attempt() {
    let ws = Workspace::new();
    let flow = ws.flow("knowing", &[("knower", json!({ "invocation": true }))]);
    let out = ws.flowhost(&["run", flow.to_str().unwrap(), "--no-db", "--json"]);
    let report = exit_json(&out, 0);
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
    let run = |fail: bool| {
        let flow = legacy_flow(dir.path(), fail);
        flowhost(["run", flow.to_str().unwrap(), "--no-db", "--json"]).run()
    };
    let ok = run(false);
    assert_exit(&ok, 0);
    assert_eq!(stdout_json(&ok)["store"]["doubled"], 42);

    let failed = run(true);
    let report = exit_json(&failed, 1);
    assert_eq!(report["tasks"][0]["state"], "REVERTED");
    assert_eq!(report["tasks"][0].get("revert_result"), None::<&Value>);
    assert_contains(&stderr(&failed), "double_v01: reverted");
}

#[test]
fn conform_passes_a_0_1_plugin_and_says_which_contract_it_speaks() {
    let old = flowhost(["conform", plugin("contract_0_1").to_str().unwrap()]).run();
    assert_exit(&old, 0);
    let text = stdout(&old);
    assert_contains(&text, "contract 0.1, which this host still accepts");

    let new = flowhost(["conform", plugin("stamp").to_str().unwrap()]).run();
    let text = stdout(&new);
    assert_contains(
        &text,
        "flowhost:task/task@0.2.0` (contract 0.2, the current one)",
    );
}

#[test]
fn the_rust_helper_carries_the_contract_as_it_is_in_wit() {
    let root = crate::kit::repo_root();
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
    // The task still succeeds.
    let report = exit_json(&out, 0);
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
    assert_contains(&log, "further progress reports of this call dropped");
}
