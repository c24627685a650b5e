//! Batches: `flowhost run FLOW --batch INPUTS.jsonl` runs the flow once per input line on one
//! engine, prints one JSON line per run and a summary; a bad line fails that run alone. The
//! same through the library's `Batch`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use flowhost::{Batch, BatchInput, Engine, FlowSpec, FlowState, TaskSpec};
use flowhost_testkit::{flowhost, plugin, stdout_json};
use serde_json::{Value, json};

/// A two-task flow: `first` echoes the input's `value` into `a`, `second` echoes `a` into `b`.
fn flow_file(dir: &Path) -> std::path::PathBuf {
    let probe = plugin("probe").display().to_string();
    let text = format!(
        r#"name = "relay"
[[task]]
name = "first"
plugin = "{probe}"
provides = ["a"]

[[task]]
name = "second"
plugin = "{probe}"
rebind = {{ value = "a" }}
provides = ["b"]
"#
    );
    let path = dir.join("flow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn batch(flow: &Path, inputs: &str, extra: &[&str]) -> Output {
    let file = flow.with_file_name("inputs.jsonl");
    std::fs::write(&file, inputs).unwrap();
    let mut command = flowhost(["run"]);
    command.arg(flow).arg("--batch").arg(&file).args(extra);
    command.run()
}

/// The JSON lines on stdout, by input line number.
fn results(output: &Output) -> BTreeMap<u64, Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .map(|v| (v["line"].as_u64().expect("line number"), v))
        .collect()
}

#[test]
fn every_input_line_is_one_run_with_its_own_result_line() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_file(dir.path());
    let inputs: String = (0..50).map(|n| format!("{{\"value\": {n}}}\n")).collect();
    let out = batch(&flow, &inputs, &["--concurrency", "8", "--fetch", "b"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let results = results(&out);
    assert_eq!(results.len(), 50);
    for (line, result) in &results {
        assert_eq!(result["state"], "SUCCESS");
        assert_eq!(
            result["fetched"]["b"]["value"]["value"],
            json!(line - 1),
            "line {line} got another run's store"
        );
    }
    assert!(
        stderr.contains("50 runs: 50 succeeded, 0 reverted, 0 failed"),
        "{stderr}"
    );
    assert!(stderr.contains("runs/s"), "{stderr}");
}

#[test]
fn a_bad_line_fails_alone_and_the_rest_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_file(dir.path());
    let inputs = "{\"value\": 1}\nnot json\n\n[1, 2]\n{\"other\": 3}\n{\"value\": 5}\n";
    let out = batch(&flow, inputs, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "some runs could not run: {stderr}"
    );
    let results = results(&out);
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        [1, 2, 4, 5, 6],
        "blank lines are skipped"
    );
    assert_eq!(results[&1]["state"], "SUCCESS");
    assert_eq!(results[&1]["store"]["b"]["value"]["value"], json!(1));
    assert_eq!(results[&6]["state"], "SUCCESS");
    assert_eq!(results[&2]["state"], "INVALID");
    assert!(
        results[&2]["error"]
            .as_str()
            .unwrap()
            .contains("input line 2: not valid JSON"),
        "{}",
        results[&2]
    );
    assert!(
        results[&4]["error"]
            .as_str()
            .unwrap()
            .contains("expected a JSON object"),
        "{}",
        results[&4]
    );
    assert!(
        results[&5]["error"].as_str().unwrap().contains("`value`"),
        "validation names the missing key: {}",
        results[&5]
    );
    assert!(
        stderr.contains("5 runs: 2 succeeded, 0 reverted, 3 failed"),
        "{stderr}"
    );
}

#[test]
fn a_run_that_reverts_reports_its_failed_task() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_file(dir.path());
    // The second task is told to fail: the first is reverted, for every input.
    let text = std::fs::read_to_string(&flow).unwrap().replace(
        "provides = [\"b\"]",
        "provides = [\"b\"]\nconfig = { fail = \"refused\" }",
    );
    std::fs::write(&flow, text).unwrap();
    let out = batch(&flow, "{\"value\": 1}\n{\"value\": 2}\n", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for result in results(&out).values() {
        assert_eq!(result["state"], "REVERTED");
        assert_eq!(result["failed_task"], "second");
        assert!(
            result["error"].as_str().unwrap().starts_with("refused"),
            "{result}"
        );
        assert_eq!(
            result["store"],
            json!({"value": result["line"]}),
            "reverted results leave the store"
        );
    }
    assert!(
        stderr.contains("2 runs: 0 succeeded, 2 reverted, 0 failed"),
        "{stderr}"
    );
}

#[test]
fn an_unreadable_inputs_file_is_exit_66() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_file(dir.path());
    let mut command = flowhost(["run"]);
    command
        .arg(&flow)
        .args(["--batch", "/nonexistent/inputs.jsonl"]);
    let out = command.run();
    assert_eq!(out.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/inputs.jsonl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_runs_a_batch_and_counts_its_outcomes() {
    let engine = Engine::new().unwrap();
    let flow = FlowSpec::linear("relay").add(TaskSpec::new("first", plugin("probe")));
    let inputs = BatchInput::parse_lines("{\"value\": 1}\n{\"value\": 2}\n42\n{\"value\": 4}\n");
    let mut seen = BTreeMap::new();
    let summary = Batch::new(&engine, &flow)
        .concurrency(3)
        .run(inputs, |outcome| {
            let state = outcome
                .result
                .as_ref()
                .map(|r| r.state)
                .map_err(ToString::to_string);
            seen.insert(outcome.line, state);
        })
        .await;
    assert_eq!(
        (summary.succeeded, summary.reverted, summary.failed),
        (3, 0, 1)
    );
    assert_eq!(seen[&1], Ok(FlowState::Success));
    assert_eq!(seen[&4], Ok(FlowState::Success));
    assert_eq!(
        seen[&3],
        Err("input line 3: expected a JSON object (an initial store), found a number".into())
    );
}

#[test]
fn every_run_of_a_recorded_batch_can_be_shown_by_its_printed_id() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_file(dir.path());
    let db = dir.path().join("runs.db");
    let db = db.to_str().unwrap();
    let out = batch(
        &flow,
        "{\"value\": 1}\n{\"value\": 2}\n{\"value\": 3}\n",
        &["--db", db],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = results(&out);
    assert_eq!(lines.len(), 3);
    for (line, result) in &lines {
        let id = result["run_id"].as_str().expect("a run id");
        let shown = flowhost(["runs", "show", id, "--json", "--db", db]).run();
        assert!(
            shown.status.success(),
            "run {id} of line {line}: {}",
            String::from_utf8_lossy(&shown.stderr)
        );
        let record = stdout_json(&shown);
        assert_eq!(record["state"], "SUCCESS");
        assert_eq!(record["initial_store"], json!({"value": line}));
        assert_eq!(
            record["final_store"]["b"]["value"]["value"],
            json!(line),
            "{record}"
        );
    }
    let listed = stdout_json(&flowhost(["runs", "list", "--json", "--db", db]).run());
    assert_eq!(listed.as_array().unwrap().len(), 3);
}

#[test]
fn a_batch_run_with_no_db_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_file(dir.path());
    let mut command = flowhost(["run"]);
    let inputs = dir.path().join("inputs.jsonl");
    std::fs::write(&inputs, "{\"value\": 1}\n").unwrap();
    command
        .arg(&flow)
        .arg("--batch")
        .arg(&inputs)
        .arg("--no-db");
    let out = command.dir(dir.path()).run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join(".flowhost").exists(),
        "--no-db created a run database"
    );
}

#[test]
fn an_unknown_fetch_is_refused_before_any_run_and_a_name_an_input_holds_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_file(dir.path());
    let db = dir.path().join("runs.db");
    let out = batch(
        &flow,
        "{\"value\": 1}\n",
        &["--fetch", "nothing", "--db", db.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("never stores such a name"));
    assert!(out.stdout.is_empty() && !db.exists(), "nothing ran");

    let out = batch(
        &flow,
        "{\"value\": 1, \"tag\": \"x\"}\n{\"value\": 2}\n",
        &["--fetch", "tag", "--fetch", "b"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = results(&out);
    assert_eq!(results[&1]["fetched"]["tag"], "x");
    assert_eq!(results[&2]["fetched"]["tag"], Value::Null);
}

#[test]
fn a_line_that_is_not_utf8_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_file(dir.path());
    let inputs = dir.path().join("inputs.jsonl");
    std::fs::write(
        &inputs,
        b"{\"value\": 1}\n{\"value\": \"caf\xe9\"}\n{\"value\": 3}\n",
    )
    .unwrap();
    let mut command = flowhost(["run"]);
    command.arg(&flow).arg("--batch").arg(&inputs);
    let out = command.run();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = results(&out);
    assert_eq!(results[&1]["state"], "SUCCESS");
    assert_eq!(results[&3]["state"], "SUCCESS");
    assert_eq!(results[&2]["state"], "INVALID");
    assert!(
        results[&2]["error"]
            .as_str()
            .unwrap()
            .contains("input line 2: not UTF-8"),
        "{}",
        results[&2]
    );
}

#[test]
fn batch_inputs_can_come_from_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_file(dir.path());
    let mut command = flowhost(["run"]);
    command
        .arg(&flow)
        .args(["--batch", "-", "--fetch", "b"])
        .stdin(std::process::Stdio::piped());
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"{\"value\": 7}\n{\"value\": 8}\n",
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = results(&out);
    assert_eq!(results[&1]["fetched"]["b"]["value"]["value"], 7);
    assert_eq!(results[&2]["fetched"]["b"]["value"]["value"], 8);
}

#[test]
fn an_input_the_flow_rejects_reports_its_problems() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow_file(dir.path());
    let out = batch(&flow, "{\"other\": 1}\n", &[]);
    let line = &results(&out)[&1];
    assert_eq!(line["state"], "INVALID");
    assert_eq!(line["problems"][0]["task"], "first", "{line}");
    assert!(
        line["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`value`"),
        "{line}"
    );
}
