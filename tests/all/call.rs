//! `flowhost call` as a plugin author uses it: one function of a plugin, no flow, under the
//! sandbox a flow would give it; and a failed production run's task replayed locally.

use std::path::Path;

use flowhost_testkit::{Workspace, flowhost, plugin, stderr, stdout_json};
use serde_json::json;

fn call(args: &[&str]) -> std::process::Output {
    flowhost(["call"].iter().chain(args)).run()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn execute_prints_the_result_as_json_and_describe_the_declaration() {
    let stamp = plugin("stamp");
    let out = call(&[
        path(&stamp),
        "execute",
        "--args",
        r#"{"ledger": ["x"]}"#,
        "--config",
        r#"{"stamp": "y"}"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = stdout_json(&out);
    assert_eq!(shown["result"], json!(["x", "y"]));
    assert_eq!(
        shown["progress"][0]["fraction"], 0.5,
        "progress reports are shown: {shown}"
    );

    let described = stdout_json(&call(&[path(&stamp), "describe"]));
    assert_eq!(described["result"]["provides"], json!(["stamped"]));
    assert_eq!(described["contract"], "0.2");
}

#[test]
fn a_task_error_is_printed_as_json_and_exits_1() {
    let out = call(&[
        path(&plugin("stamp")),
        "execute",
        "--args",
        r#"{"ledger": 3}"#,
        "--config",
        r#"{"stamp": "y"}"#,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["error"]["code"], "invalid-args");

    let trapped = call(&[
        path(&plugin("probe")),
        "execute",
        "--args",
        r#"{"value": 1}"#,
        "--config",
        r#"{"trap": true}"#,
    ]);
    assert_eq!(trapped.status.code(), Some(1));
    assert_eq!(
        stdout_json(&trapped)["error"]["code"],
        "trap",
        "the host's verdict, not a crash"
    );
}

#[test]
fn revert_takes_the_outcome_and_prints_what_it_undid() {
    let stamp = plugin("stamp");
    let common = [
        path(&stamp),
        "revert",
        "--args",
        r#"{"ledger": []}"#,
        "--config",
        r#"{"stamp": "y"}"#,
    ];
    let out = call(&[&common[..], &["--outcome", r#"{"result": ["y"]}"#]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["result"], json!({ "unstamped": "y" }));

    let missing = call(&common);
    assert_eq!(
        missing.status.code(),
        Some(64),
        "revert without an outcome is a usage error"
    );
    assert!(
        stderr(&missing).contains("--outcome"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn dir_and_env_grant_what_a_flow_entry_would_and_nothing_else() {
    let host = tempfile::tempdir().unwrap();
    let grant = format!("{}:/data:rw", host.path().display());
    let probe = plugin("probe");
    let write = r#"{"mode": "write_file", "path": "/data/out.txt", "content": "written"}"#;
    let out = call(&[
        path(&probe),
        "execute",
        "--args",
        r#"{"value": 1}"#,
        "--config",
        write,
        "--dir",
        &grant,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(host.path().join("out.txt")).unwrap(),
        "written"
    );

    let read_only = format!("{}:/data", host.path().display());
    let denied = call(&[
        path(&probe),
        "execute",
        "--args",
        r#"{"value": 1}"#,
        "--config",
        write,
        "--dir",
        &read_only,
    ]);
    assert_eq!(
        denied.status.code(),
        Some(1),
        "a grant is read-only unless :rw"
    );

    let env = r#"{"mode": "env", "name": "REGION"}"#;
    let out = call(&[
        path(&probe),
        "execute",
        "--args",
        r#"{"value": 1}"#,
        "--config",
        env,
        "--env",
        "REGION=eu",
    ]);
    assert_eq!(stdout_json(&out)["result"], "eu");
    let unset = flowhost([
        "call",
        path(&probe),
        "execute",
        "--args",
        r#"{"value": 1}"#,
        "--config",
        env,
    ])
    .env("REGION", "leak")
    .run();
    assert_eq!(
        stdout_json(&unset)["result"],
        json!(null),
        "the host's environment stays out"
    );
}

#[test]
fn a_recorded_task_is_replayed_with_its_arguments_config_and_outcome() {
    let ws = Workspace::new();
    let flow = ws.flow(
        "replayed",
        &[("first", json!({})), ("second", json!({ "fail": "boom" }))],
    );
    let db = ws.db();
    let run = ws.flowhost(&["run", path(&flow), "--db", path(&db), "--json"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let id = stdout_json(&run)["run_id"].as_str().unwrap().to_owned();
    let probe = plugin("probe");

    // The failed task fails again the same way: same arguments, same config.
    let again = ws.flowhost(&[
        "call",
        path(&probe),
        "execute",
        "--from-run",
        &id,
        "--task",
        "second",
        "--db",
        path(&db),
    ]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert_eq!(stdout_json(&again)["error"]["code"], "boom");

    // Fixed config: the same arguments now succeed; the recorded first result is the value.
    let fixed = ws.flowhost(&[
        "call",
        path(&probe),
        "execute",
        "--from-run",
        &id,
        "--task",
        "second",
        "--config",
        r#"{"label": "fixed"}"#,
        "--db",
        path(&db),
    ]);
    assert_eq!(fixed.status.code(), Some(0), "{}", stderr(&fixed));
    assert_eq!(
        stdout_json(&fixed)["result"]["value"]["label"],
        "first",
        "the recorded arguments: {}",
        String::from_utf8_lossy(&fixed.stdout)
    );

    // Revert gets the recorded outcome and the run's failures; the entry's grants hold.
    let before = ws.count("revert", "first");
    let revert = ws.flowhost(&[
        "call",
        path(&probe),
        "revert",
        "--from-run",
        &id,
        "--task",
        "first",
        "--db",
        path(&db),
    ]);
    assert_eq!(revert.status.code(), Some(0), "{}", stderr(&revert));
    assert_eq!(
        ws.count("revert", "first"),
        before + 1,
        "the journal grant of the entry was given"
    );
    let journal = flowhost_testkit::json_lines(&ws.path("journal/calls.jsonl"));
    let last = journal.last().unwrap();
    assert_eq!(last["failures"][0]["task"], "second", "{last}");

    let unknown = ws.flowhost(&[
        "call",
        path(&probe),
        "execute",
        "--from-run",
        &id,
        "--task",
        "third",
        "--db",
        path(&db),
    ]);
    assert_eq!(unknown.status.code(), Some(64));
    assert!(
        stderr(&unknown).contains("first, second"),
        "names the run's tasks: {}",
        stderr(&unknown)
    );
}
