//! Validation before running: every problem is reported at once, naming task, argument and
//! store key, and nothing executes when there is any. Also `flowhost check` and flow-file
//! errors as the CLI shows them.

use std::path::Path;
use std::process::Output;

use flowhost::{Access, Engine, FlowSpec, Store, TaskSpec, ValidationError};
use flowhost_testkit::{journaled_probe, json_lines, plugin};
use serde_json::json;

async fn invalid(flow: &FlowSpec, journal: &Path) -> ValidationError {
    let initial: Store = [("value".to_owned(), json!(1))].into_iter().collect();
    let error = Engine::new()
        .unwrap()
        .load(flow, initial)
        .await
        .err()
        .expect("the flow must be rejected");
    assert!(
        json_lines(&journal.join("calls.jsonl")).is_empty(),
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

#[tokio::test]
async fn a_missing_requirement_names_task_argument_and_store_key() {
    let journal = tempfile::tempdir().unwrap();
    let flow = FlowSpec::linear("missing")
        .add(journaled_probe("first", journal.path(), json!({})))
        .add(journaled_probe("second", journal.path(), json!({})).rebind("value", "raw_value"));
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
    let journal = tempfile::tempdir().unwrap();
    let flow = FlowSpec::linear("order")
        .add(journaled_probe("early", journal.path(), json!({})).rebind("value", "late_out"))
        .add(journaled_probe("late", journal.path(), json!({})));
    let error = invalid(&flow, journal.path()).await;
    assert!(
        messages(&error)[0].contains("task `late` provides it but runs later"),
        "{error}"
    );
}

#[tokio::test]
async fn every_problem_is_reported_at_once() {
    let journal = tempfile::tempdir().unwrap();
    let garbage = journal.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let core_module = journal.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").unwrap();
    let no_contract = journal.path().join("empty-component.wat");
    std::fs::write(&no_contract, "(component)").unwrap();
    let flow = FlowSpec::linear("broken")
        .add(journaled_probe("ok", journal.path(), json!({})))
        .add(journaled_probe("ok", journal.path(), json!({})))
        .add(TaskSpec::new("absent", journal.path().join("nope.wasm")))
        .add(TaskSpec::new("garbage", &garbage))
        .add(TaskSpec::new("no_contract", &no_contract))
        .add(journaled_probe("typo", journal.path(), json!({})).rebind("valeu", "value"));
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
    assert!(
        messages(&error)[0].contains("is a core WebAssembly module"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_granted_directory_is_a_validation_problem() {
    let journal = tempfile::tempdir().unwrap();
    let flow =
        FlowSpec::linear("grant").add(journaled_probe("t", journal.path(), json!({})).grant_dir(
            journal.path().join("no-such-dir"),
            "/data",
            Access::ReadOnly,
        ));
    let error = invalid(&flow, journal.path()).await;
    assert!(
        messages(&error)[0].contains("no-such-dir does not exist"),
        "{error}"
    );
}

fn flowhost(args: &[&str], dir: &Path) -> Output {
    flowhost_testkit::flowhost(args).dir(dir).run()
}

fn write_flow(dir: &Path, body: &str) {
    let probe = plugin("probe").display().to_string();
    std::fs::write(dir.join("flow.toml"), body.replace("PROBE", &probe)).unwrap();
}

#[test]
fn an_unknown_key_in_a_flow_file_is_an_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(
        dir.path(),
        "name = \"f\"\n\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\nrebnd = { value = \"x\" }\n",
    );
    let out = flowhost(&["run", "flow.toml"], dir.path());
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("flow.toml")
            && stderr.contains("line 6")
            && stderr.contains("unknown field `rebnd`"),
        "{stderr}"
    );
}

#[test]
fn check_shows_the_plan_and_run_refuses_an_invalid_flow_with_exit_65() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(
        dir.path(),
        "name = \"f\"\n[store]\nraw = 3\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\nrebind = { value = \"raw\" }\nlimits = { deadline_ms = 250 }\n",
    );
    let out = flowhost(&["check", "flow.toml"], dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("flow `f` is valid"), "{stdout}");
    assert!(stdout.contains("value <- raw"), "{stdout}");
    assert!(stdout.contains("deadline 250 ms"), "{stdout}");

    write_flow(
        dir.path(),
        "name = \"f\"\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\n",
    );
    let out = flowhost(&["run", "flow.toml"], dir.path());
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("task `t`: argument `value` needs store key `value`"),
        "{stderr}"
    );
    assert!(!stderr.contains("RUNNING"), "nothing runs: {stderr}");
}

#[test]
fn the_cli_takes_store_values_as_json_or_strings_and_rejects_bad_usage_with_64() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(
        dir.path(),
        "name = \"f\"\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\n",
    );
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
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fetched: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        fetched,
        json!({"echo": {"value": {"n": 1}, "extra": "plain words", "label": null}})
    );

    let out = flowhost(&["run", "flow.toml", "--store", "novalue"], dir.path());
    assert_eq!(out.status.code(), Some(64));
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
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never stores such a name"));
    let out = flowhost(&["run", "missing.toml"], dir.path());
    assert_eq!(out.status.code(), Some(66));
    let out = flowhost(&["frobnicate"], dir.path());
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn describe_prints_what_a_plugin_declares() {
    let dir = tempfile::tempdir().unwrap();
    let probe = plugin("probe").display().to_string();
    let out = flowhost(&["describe", &probe, "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["name"], "probe");
    assert_eq!(info["requires"], json!(["value"]));
    assert_eq!(info["optional"], json!(["extra"]));
    assert_eq!(info["provides"], json!(["echo"]));
}

#[test]
fn an_invalid_flow_is_machine_readable_with_json_for_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(
        dir.path(),
        "name = \"f\"\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\nrebind = { valeu = \"x\" }\n\n[[task]]\nname = \"u\"\nplugin = \"nope.wasm\"\n",
    );
    for command in ["check", "run"] {
        let out = flowhost(&[command, "flow.toml", "--json"], dir.path());
        assert_eq!(out.status.code(), Some(65), "{command}");
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
        assert!(
            problems[0]["message"].as_str().unwrap().contains("`valeu`"),
            "{doc}"
        );
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
    assert_eq!(out.status.code(), Some(65));
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("JSON for a flow file that does not parse");
    assert_eq!(doc["state"], "INVALID");
    assert!(
        doc["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 3"),
        "{doc}"
    );

    write_flow(
        dir.path(),
        "name = \"f\"\n[store]\nvalue = 1\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\n",
    );
    let out = flowhost(&["check", "flow.toml", "--json"], dir.path());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let problem = &doc["problems"][0];
        assert_eq!(problem["field"], field, "{limits}: {doc}");
        assert!(
            problem["message"].as_str().unwrap().contains(says),
            "{limits}: {doc}"
        );
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
    assert!(
        plan.contains("provides: req_a <- size, req_b <- availability_zone, req_c <- volume_type"),
        "{plan}"
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
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fetched: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`provides` gives 2 names but plugin `extract_volume_request` returns 3"),
        "{stderr}"
    );
}
