//! Validation before running: every problem is reported at once, naming task, argument and
//! store key, and nothing executes when there is any. Also `flowhost check` and flow-file
//! errors as the CLI shows them.

use std::path::Path;
use std::process::Output;

use flowhost::{Access, Engine, FlowSpec, Store, TaskSpec, ValidationError};
use serde_json::json;

use crate::kit::{
    Journal, assert_contains, assert_exit, exit_json, plugin, probe_file, stderr, stdout,
    stdout_json,
};

async fn invalid(flow: &FlowSpec, journal: &Path) -> ValidationError {
    let initial: Store = [("value".to_owned(), json!(1))].into_iter().collect();
    let error = Engine::new()
        .unwrap()
        .load(flow, initial)
        .await
        .err()
        .expect("the flow must be rejected");
    assert!(
        Journal::at(journal).entries().is_empty(),
        "nothing may execute when validation fails"
    );
    error
}

fn messages(error: &ValidationError) -> Vec<String> {
    error
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.task.as_deref().unwrap_or("-"), p.message))
        .collect()
}

/// Asserts that the first problem's message (`task: message`) contains `part`.
#[track_caller]
fn assert_first_problem_says(error: &ValidationError, part: &str) {
    assert!(messages(error)[0].contains(part), "{error}");
}

#[tokio::test]
async fn a_missing_requirement_names_task_argument_and_store_key() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("missing")
        .add(journal.probe("first", json!({})))
        .add(journal.probe_reading("second", "raw_value", json!({})));
    let error = invalid(&flow, journal.path()).await;
    assert_eq!(
        messages(&error),
        [
            "second: argument `value` needs store key `raw_value` (rebound from `value`), which neither the initial store nor an earlier task provides"
        ]
    );
}

#[tokio::test]
async fn a_requirement_provided_only_by_a_later_task_is_reported_with_a_hint() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("order")
        .add(journal.probe_reading("early", "late_out", json!({})))
        .add(journal.probe("late", json!({})));
    let error = invalid(&flow, journal.path()).await;
    assert_first_problem_says(&error, "task `late` provides it but runs later");
}

#[tokio::test]
async fn every_problem_is_reported_at_once() {
    let journal = Journal::new();
    let garbage = journal.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let core_module = journal.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").unwrap();
    let no_contract = journal.path().join("empty-component.wat");
    std::fs::write(&no_contract, "(component)").unwrap();
    let flow = FlowSpec::linear("broken")
        .add(journal.probe("ok", json!({})))
        .add(journal.probe("ok", json!({})))
        .add(TaskSpec::new("absent", journal.path().join("nope.wasm")))
        .add(TaskSpec::new("garbage", &garbage))
        .add(TaskSpec::new("no_contract", &no_contract))
        .add(journal.probe("typo", json!({})).rebind("valeu", "value"));
    let error = invalid(&flow, journal.path()).await;
    let all = messages(&error);
    assert_eq!(all.len(), 6, "{error}");
    assert!(all[0].starts_with("ok: duplicate task name"), "{error}");
    assert!(
        all[1].contains("provides `ok_out`, which task `ok` already provides"),
        "{error}"
    );
    assert!(
        all[2].starts_with("absent: cannot read plugin") && all[2].contains("nope.wasm"),
        "{error}"
    );
    assert!(
        all[3].starts_with("garbage: plugin") && all[3].contains("not a WebAssembly binary"),
        "{error}"
    );
    assert!(
        all[4].starts_with("no_contract: plugin")
            && all[4].contains("does not export the flowhost task contract"),
        "{error}"
    );
    assert!(
        all[5].contains(
            "`rebind` names argument `valeu`, which plugin `probe` neither requires nor accepts"
        ),
        "{error}"
    );

    let flow = FlowSpec::linear("core").add(TaskSpec::new("core", &core_module));
    let error = invalid(&flow, journal.path()).await;
    assert_first_problem_says(&error, "is a core WebAssembly module");
}

#[tokio::test]
async fn a_missing_granted_directory_is_a_validation_problem() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("grant").add(journal.probe("t", json!({})).grant_dir(
        journal.path().join("no-such-dir"),
        "/data",
        Access::ReadOnly,
    ));
    let error = invalid(&flow, journal.path()).await;
    assert_first_problem_says(&error, "no-such-dir does not exist");
}

fn flowhost(args: &[&str], dir: &Path) -> Output {
    crate::kit::flowhost(args).dir(dir).run()
}

/// Writes `flow.toml` in `dir`, `PROBE` standing for the probe plugin.
fn write_flow(dir: &Path, body: &str) {
    probe_file(dir, "flow.toml", body);
}

/// A scratch folder holding `flow.toml` written from `body` ([`write_flow`]).
fn flow_dir(body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_flow(dir.path(), body);
    dir
}

#[test]
fn an_unknown_key_in_a_flow_file_is_an_error_with_its_line() {
    let dir = flow_dir(
        "name = \"f\"\n\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\nrebnd = { value = \"x\" }\n",
    );
    let out = flowhost(&["run", "flow.toml"], dir.path());
    assert_exit(&out, 65);
    let stderr = stderr(&out);
    assert!(
        stderr.contains("flow.toml")
            && stderr.contains("line 6")
            && stderr.contains("unknown field `rebnd`"),
        "{stderr}"
    );
}

#[test]
fn check_shows_the_plan_and_run_refuses_an_invalid_flow_with_exit_65() {
    let dir = flow_dir(
        "name = \"f\"\n[store]\nraw = 3\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\nrebind = { value = \"raw\" }\nlimits = { deadline_ms = 250 }\n",
    );
    let out = flowhost(&["check", "flow.toml"], dir.path());
    assert_exit(&out, 0);
    let stdout = stdout(&out);
    assert_contains(&stdout, "flow `f` is valid");
    assert_contains(&stdout, "value <- raw");
    assert_contains(&stdout, "deadline 250 ms");

    write_flow(
        dir.path(),
        "name = \"f\"\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\n",
    );
    let out = flowhost(&["run", "flow.toml"], dir.path());
    assert_exit(&out, 65);
    let stderr = stderr(&out);
    assert_contains(
        &stderr,
        "task `t`: argument `value` needs store key `value`",
    );
    assert!(!stderr.contains("RUNNING"), "nothing runs: {stderr}");
}

#[test]
fn the_cli_takes_store_values_as_json_or_strings_and_rejects_bad_usage_with_64() {
    let dir = flow_dir("name = \"f\"\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\n");
    let out = flowhost(
        &[
            "run",
            "flow.toml",
            "--store",
            "value={\"n\":1}",
            "--store",
            "extra=plain words",
            "--fetch",
            "echo",
        ],
        dir.path(),
    );
    let fetched = exit_json(&out, 0);
    assert_eq!(
        fetched,
        json!({"echo": {"value": {"n": 1}, "extra": "plain words", "label": null}})
    );

    let out = flowhost(&["run", "flow.toml", "--store", "novalue"], dir.path());
    assert_exit(&out, 64);
    let out = flowhost(
        &[
            "run",
            "flow.toml",
            "--store",
            "value=1",
            "--fetch",
            "nothing",
        ],
        dir.path(),
    );
    assert_exit(&out, 64);
    assert!(String::from_utf8_lossy(&out.stderr).contains("never stores such a name"));
    let out = flowhost(&["run", "missing.toml"], dir.path());
    assert_exit(&out, 66);
    let out = flowhost(&["frobnicate"], dir.path());
    assert_exit(&out, 64);
}

#[test]
fn describe_prints_what_a_plugin_declares() {
    let dir = tempfile::tempdir().unwrap();
    let probe = plugin("probe").display().to_string();
    let out = flowhost(&["describe", &probe, "--json"], dir.path());
    let info = exit_json(&out, 0);
    assert_eq!(info["name"], "probe");
    assert_eq!(info["requires"], json!(["value"]));
    assert_eq!(info["optional"], json!(["extra"]));
    assert_eq!(info["provides"], json!(["echo"]));
}

#[test]
fn an_invalid_flow_is_machine_readable_with_json_for_check_and_run() {
    let dir = flow_dir(
        "name = \"f\"\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\nrebind = { valeu = \"x\" }\n\n[[task]]\nname = \"u\"\nplugin = \"nope.wasm\"\n",
    );
    for command in ["check", "run"] {
        let out = flowhost(&[command, "flow.toml", "--json"], dir.path());
        assert_exit(&out, 65);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{command} --json prints JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(doc["state"], "INVALID", "{doc}");
        assert_eq!(doc["flow"], "f");
        let problems = doc["problems"].as_array().expect("problems");
        let shape: Vec<(&str, Option<&str>)> = problems
            .iter()
            .map(|p| (p["task"].as_str().unwrap(), p["field"].as_str()))
            .collect();
        assert_eq!(
            shape,
            [("t", Some("rebind")), ("t", None), ("u", Some("plugin"))],
            "{doc}"
        );
        assert_contains(problems[0]["message"].as_str().unwrap(), "`valeu`");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is invalid"),
            "stderr still says it"
        );
    }
    std::fs::write(
        dir.path().join("flow.toml"),
        "name = \"f\"\n[[task]]\nname = 3\n",
    )
    .unwrap();
    let out = flowhost(&["check", "flow.toml", "--json"], dir.path());
    assert_exit(&out, 65);
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("JSON for a flow file that does not parse");
    assert_eq!(doc["state"], "INVALID");
    assert_contains(doc["problems"][0]["message"].as_str().unwrap(), "line 3");

    write_flow(
        dir.path(),
        "name = \"f\"\n[store]\nvalue = 1\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\n",
    );
    let out = flowhost(&["check", "flow.toml", "--json"], dir.path());
    let doc = stdout_json(&out);
    assert_eq!(
        (doc["state"].as_str(), doc["valid"].as_bool()),
        (Some("VALID"), Some(true))
    );
}

#[test]
fn limits_under_which_every_call_fails_are_refused_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    for (limits, field, says) in [
        ("memory_mib = 0", "limits.memory_mib", "allows no MiB"),
        (
            "memory_mib = 1",
            "limits.memory_mib",
            "linear memory plugin `probe` starts with",
        ),
        ("fuel = 0", "limits.fuel", "not a single instruction"),
        ("deadline_ms = 3", "limits.deadline_ms", "below 10 ms"),
        ("args_kib = 0", "limits.args_kib", "allows no KiB"),
    ] {
        write_flow(
            dir.path(),
            &format!(
                "name = \"f\"\n[store]\nvalue = 1\n[limits]\n{limits}\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\n"
            ),
        );
        let out = flowhost(&["check", "flow.toml", "--json"], dir.path());
        assert_eq!(
            out.status.code(),
            Some(65),
            "{limits}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc = stdout_json(&out);
        let problem = &doc["problems"][0];
        assert_eq!(problem["field"], field, "{limits}: {doc}");
        assert_contains(problem["message"].as_str().unwrap(), says);
    }
    write_flow(
        dir.path(),
        "name = \"f\"\n[store]\nvalue = 1\n[limits]\nmemory_mib = 2\ndeadline_ms = 10\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\n",
    );
    let out = flowhost(&["run", "flow.toml", "--no-db"], dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "the smallest workable limits run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_entry_renaming_a_plugins_several_results_stores_them_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let extract = plugin("extract_volume_request").display().to_string();
    let flow = format!(
        "name = \"f\"\n[store]\nsize = 10\navailability_zone = \"nova\"\nvolume_type = \"ssd\"\n\
         [[task]]\nname = \"extract_volume_request\"\nplugin = {extract:?}\nprovides = [\"req_a\", \"req_b\", \"req_c\"]\n\
         config = {{ availability_zones = [\"nova\"], volume_types = [\"ssd\"] }}\n"
    );
    std::fs::write(dir.path().join("flow.toml"), &flow).unwrap();
    let out = flowhost(&["check", "flow.toml"], dir.path());
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_contains(
        &plan,
        "provides: req_a <- size, req_b <- availability_zone, req_c <- volume_type",
    );
    let out = flowhost(
        &[
            "run",
            "flow.toml",
            "--no-db",
            "--fetch",
            "req_a",
            "--fetch",
            "req_b",
            "--fetch",
            "req_c",
        ],
        dir.path(),
    );
    let fetched = exit_json(&out, 0);
    assert_eq!(
        fetched,
        json!({"req_a": 10, "req_b": "nova", "req_c": "ssd"})
    );

    std::fs::write(
        dir.path().join("flow.toml"),
        flow.replace(", \"req_c\"", ""),
    )
    .unwrap();
    let out = flowhost(&["check", "flow.toml"], dir.path());
    assert_exit(&out, 65);
    let stderr = stderr(&out);
    assert_contains(
        &stderr,
        "`provides` gives 2 names but plugin `extract_volume_request` returns 3",
    );
}
