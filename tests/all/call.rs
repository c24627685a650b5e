//! `flowhost call` as a plugin author uses it: one function of a plugin, no flow, under the
//! sandbox a flow would give it; and a failed production run's task replayed locally.

use std::path::Path;
use std::process::Output;

use serde_json::json;

use crate::kit::{
    Flowhost, Workspace, assert_contains, assert_exit, exit_json, flowhost, plugin, stderr,
    stdout_json,
};

fn call(args: &[&str]) -> Output {
    flowhost(["call"].iter().chain(args)).run()
}

/// `flowhost call PLUGIN FUNCTION --args ARGS --config CONFIG EXTRA…`, to adjust and run.
fn calling(plugin: &Path, function: &str, args: &str, config: &str, extra: &[&str]) -> Flowhost {
    let mut command = flowhost(["call"]);
    command
        .arg(plugin)
        .args([function, "--args", args, "--config", config])
        .args(extra);
    command
}

/// The probe's `execute` of `{"value": 1}` with `config`, and `extra` arguments.
fn probe_execute(config: &str, extra: &[&str]) -> Flowhost {
    calling(
        &plugin("probe"),
        "execute",
        r#"{"value": 1}"#,
        config,
        extra,
    )
}

/// `flowhost call probe FUNCTION --from-run ID --task TASK EXTRA…` on the workspace's
/// database: the recorded call replayed.
fn replay(ws: &Workspace, function: &str, id: &str, task: &str, extra: &[&str]) -> Output {
    let probe = plugin("probe");
    let mut args = vec![
        "call",
        probe.to_str().unwrap(),
        function,
        "--from-run",
        id,
        "--task",
        task,
    ];
    args.extend_from_slice(extra);
    ws.flowhost_on(&ws.db_arg(), &args)
}

#[test]
fn execute_prints_the_result_as_json_and_describe_the_declaration() {
    let stamp = plugin("stamp");
    let out = calling(
        &stamp,
        "execute",
        r#"{"ledger": ["x"]}"#,
        r#"{"stamp": "y"}"#,
        &[],
    )
    .run();
    let shown = exit_json(&out, 0);
    assert_eq!(shown["result"], json!(["x", "y"]));
    assert_eq!(
        shown["progress"][0]["fraction"], 0.5,
        "progress reports are shown: {shown}"
    );

    let described = stdout_json(&call(&[stamp.to_str().unwrap(), "describe"]));
    assert_eq!(described["result"]["provides"], json!(["stamped"]));
    assert_eq!(described["contract"], "0.2");
}

#[test]
fn a_task_error_is_printed_as_json_and_exits_1() {
    let out = calling(
        &plugin("stamp"),
        "execute",
        r#"{"ledger": 3}"#,
        r#"{"stamp": "y"}"#,
        &[],
    )
    .run();
    assert_exit(&out, 1);
    assert_eq!(stdout_json(&out)["error"]["code"], "invalid-args");

    let trapped = probe_execute(r#"{"trap": true}"#, &[]).run();
    assert_exit(&trapped, 1);
    assert_eq!(
        stdout_json(&trapped)["error"]["code"],
        "trap",
        "the host's verdict, not a crash"
    );
}

#[test]
fn revert_takes_the_outcome_and_prints_what_it_undid() {
    let stamp = plugin("stamp");
    let revert = |extra: &[&str]| {
        calling(
            &stamp,
            "revert",
            r#"{"ledger": []}"#,
            r#"{"stamp": "y"}"#,
            extra,
        )
        .run()
    };
    let out = revert(&["--outcome", r#"{"result": ["y"]}"#]);
    assert_exit(&out, 0);
    assert_eq!(stdout_json(&out)["result"], json!({ "unstamped": "y" }));

    // Revert without an outcome is a usage error.
    let missing = revert(&[]);
    assert_exit(&missing, 64);
    assert_contains(&stderr(&missing), "--outcome");
}

#[test]
fn dir_and_env_grant_what_a_flow_entry_would_and_nothing_else() {
    let host = tempfile::tempdir().unwrap();
    let grant = format!("{}:/data:rw", host.path().display());
    let write = r#"{"mode": "write_file", "path": "/data/out.txt", "content": "written"}"#;
    let out = probe_execute(write, &["--dir", &grant]).run();
    assert_exit(&out, 0);
    assert_eq!(
        std::fs::read_to_string(host.path().join("out.txt")).unwrap(),
        "written"
    );

    // A grant is read-only unless :rw.
    let read_only = format!("{}:/data", host.path().display());
    let denied = probe_execute(write, &["--dir", &read_only]).run();
    assert_exit(&denied, 1);

    let env = r#"{"mode": "env", "name": "REGION"}"#;
    let out = probe_execute(env, &["--env", "REGION=eu"]).run();
    assert_eq!(stdout_json(&out)["result"], "eu");
    let unset = probe_execute(env, &[]).env("REGION", "leak").run();
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
    let run = ws.flowhost_on(&ws.db_arg(), &["run", flow.to_str().unwrap(), "--json"]);
    assert_exit(&run, 1);
    let id = stdout_json(&run)["run_id"].as_str().unwrap().to_owned();

    // The failed task fails again the same way: same arguments, same config.
    let again = replay(&ws, "execute", &id, "second", &[]);
    assert_exit(&again, 1);
    assert_eq!(stdout_json(&again)["error"]["code"], "boom");

    // Fixed config: the same arguments now succeed; the recorded first result is the value.
    let fixed = replay(
        &ws,
        "execute",
        &id,
        "second",
        &["--config", r#"{"label": "fixed"}"#],
    );
    assert_exit(&fixed, 0);
    assert_eq!(
        stdout_json(&fixed)["result"]["value"]["label"],
        "first",
        "the recorded arguments: {}",
        String::from_utf8_lossy(&fixed.stdout)
    );

    // Revert gets the recorded outcome and the run's failures; the entry's grants hold.
    let before = ws.count("revert", "first");
    let revert = replay(&ws, "revert", &id, "first", &[]);
    assert_exit(&revert, 0);
    assert_eq!(
        ws.count("revert", "first"),
        before + 1,
        "the journal grant of the entry was given"
    );
    let journal = ws.journal().entries();
    let last = journal.last().unwrap();
    assert_eq!(last["failures"][0]["task"], "second", "{last}");

    // The message names the run's tasks.
    let unknown = replay(&ws, "execute", &id, "third", &[]);
    assert_exit(&unknown, 64);
    assert_contains(&stderr(&unknown), "first, second");
}
