//! Batches: `flowhost run FLOW --batch INPUTS.jsonl` runs the flow once per input line on one
//! engine, prints one JSON line per run and a summary; a bad line fails that run alone. The
//! same through the library's `Batch`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use flowhost::{Batch, BatchInput, Engine, FlowSpec, FlowState, TaskSpec};

use crate::kit::{
    Flowhost, assert_contains, assert_exit, flowhost, plugin, probe_file, stderr, stdout_json,
    stdout_json_lines,
};
use serde_json::{Value, json};

/// A scratch folder with a two-task flow: `first` echoes the input's `value` into `a`,
/// `second` echoes `a` into `b`.
fn relay_flow() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let flow = probe_file(
        dir.path(),
        "flow.toml",
        r#"name = "relay"
[[task]]
name = "first"
plugin = "PROBE"
provides = ["a"]

[[task]]
name = "second"
plugin = "PROBE"
rebind = { value = "a" }
provides = ["b"]
"#,
    );
    (dir, flow)
}

/// `flowhost run FLOW --batch INPUTS`, to adjust and run.
fn batch_of(flow: &Path, inputs: impl AsRef<OsStr>) -> Flowhost {
    let mut command = flowhost(["run"]);
    command.arg(flow).arg("--batch").arg(inputs);
    command
}

/// Runs the batch of `inputs` (JSON lines, written beside `flow`) with `extra` arguments.
fn batch(flow: &Path, inputs: &str, extra: &[&str]) -> Output {
    let file = flow.with_file_name("inputs.jsonl");
    std::fs::write(&file, inputs).unwrap();
    let mut command = batch_of(flow, &file);
    command.args(extra);
    command.run()
}

/// The JSON lines on stdout, by input line number.
fn results(output: &Output) -> BTreeMap<u64, Value> {
    stdout_json_lines(output)
        .into_iter()
        .map(|v| (v["line"].as_u64().expect("line number"), v))
        .collect()
}

#[test]
fn every_input_line_is_one_run_with_its_own_result_line() {
    let (_dir, flow) = relay_flow();
    let inputs: String = (0..50).map(|n| format!("{{\"value\": {n}}}\n")).collect();
    let out = batch(&flow, &inputs, &["--concurrency", "8", "--fetch", "b"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_exit(&out, 0);
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
    assert_contains(&stderr, "50 runs: 50 succeeded, 0 reverted, 0 failed");
    assert_contains(&stderr, "runs/s");
}

#[test]
fn a_bad_line_fails_alone_and_the_rest_still_run() {
    let (_dir, flow) = relay_flow();
    let inputs = "{\"value\": 1}\nnot json\n\n[1, 2]\n{\"other\": 3}\n{\"value\": 5}\n";
    let out = batch(&flow, inputs, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_exit(&out, 1);
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
    assert_contains(
        results[&2]["error"].as_str().unwrap(),
        "input line 2: not valid JSON",
    );
    assert_contains(
        results[&4]["error"].as_str().unwrap(),
        "expected a JSON object",
    );
    // Validation names the missing key.
    assert_contains(results[&5]["error"].as_str().unwrap(), "`value`");
    assert_contains(&stderr, "5 runs: 2 succeeded, 0 reverted, 3 failed");
}

#[test]
fn a_run_that_reverts_reports_its_failed_task() {
    let (_dir, flow) = relay_flow();
    // The second task is told to fail: the first is reverted, for every input.
    let text = std::fs::read_to_string(&flow).unwrap().replace(
        "provides = [\"b\"]",
        "provides = [\"b\"]\nconfig = { fail = \"refused\" }",
    );
    std::fs::write(&flow, text).unwrap();
    let out = batch(&flow, "{\"value\": 1}\n{\"value\": 2}\n", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_exit(&out, 1);
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
    assert_contains(&stderr, "2 runs: 0 succeeded, 2 reverted, 0 failed");
}

#[test]
fn an_unreadable_inputs_file_is_exit_66() {
    let (_dir, flow) = relay_flow();
    let out = batch_of(&flow, "/nonexistent/inputs.jsonl").run();
    assert_exit(&out, 66);
    assert_contains(&stderr(&out), "/nonexistent/inputs.jsonl");
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
    let (dir, flow) = relay_flow();
    let db = dir.path().join("runs.db");
    let db = db.to_str().unwrap();
    let out = batch(
        &flow,
        "{\"value\": 1}\n{\"value\": 2}\n{\"value\": 3}\n",
        &["--db", db],
    );
    assert_exit(&out, 0);
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
    let (dir, flow) = relay_flow();
    let inputs = dir.path().join("inputs.jsonl");
    std::fs::write(&inputs, "{\"value\": 1}\n").unwrap();
    let mut command = batch_of(&flow, &inputs).dir(dir.path());
    command.arg("--no-db");
    let out = command.run();
    assert_exit(&out, 0);
    assert!(
        !dir.path().join(".flowhost").exists(),
        "--no-db created a run database"
    );
}

#[test]
fn an_unknown_fetch_is_refused_before_any_run_and_a_name_an_input_holds_is_known() {
    let (dir, flow) = relay_flow();
    let db = dir.path().join("runs.db");
    let out = batch(
        &flow,
        "{\"value\": 1}\n",
        &["--fetch", "nothing", "--db", db.to_str().unwrap()],
    );
    assert_exit(&out, 64);
    assert_contains(&stderr(&out), "never stores such a name");
    assert!(out.stdout.is_empty() && !db.exists(), "nothing ran");

    let out = batch(
        &flow,
        "{\"value\": 1, \"tag\": \"x\"}\n{\"value\": 2}\n",
        &["--fetch", "tag", "--fetch", "b"],
    );
    assert_exit(&out, 0);
    let results = results(&out);
    assert_eq!(results[&1]["fetched"]["tag"], "x");
    assert_eq!(results[&2]["fetched"]["tag"], Value::Null);
}

#[test]
fn a_line_that_is_not_utf8_fails_alone() {
    let (dir, flow) = relay_flow();
    let inputs = dir.path().join("inputs.jsonl");
    std::fs::write(
        &inputs,
        b"{\"value\": 1}\n{\"value\": \"caf\xe9\"}\n{\"value\": 3}\n",
    )
    .unwrap();
    let out = batch_of(&flow, &inputs).run();
    assert_exit(&out, 1);
    let results = results(&out);
    assert_eq!(results[&1]["state"], "SUCCESS");
    assert_eq!(results[&3]["state"], "SUCCESS");
    assert_eq!(results[&2]["state"], "INVALID");
    assert_contains(
        results[&2]["error"].as_str().unwrap(),
        "input line 2: not UTF-8",
    );
}

#[test]
fn batch_inputs_can_come_from_standard_input() {
    let (_dir, flow) = relay_flow();
    let mut command = batch_of(&flow, "-");
    command
        .args(["--fetch", "b"])
        .stdin(std::process::Stdio::piped());
    let mut child = command.start_piped();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"{\"value\": 7}\n{\"value\": 8}\n",
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0);
    let results = results(&out);
    assert_eq!(results[&1]["fetched"]["b"]["value"]["value"], 7);
    assert_eq!(results[&2]["fetched"]["b"]["value"]["value"], 8);
}

#[test]
fn an_input_the_flow_rejects_reports_its_problems() {
    let (_dir, flow) = relay_flow();
    let out = batch(&flow, "{\"other\": 1}\n", &[]);
    let line = &results(&out)[&1];
    assert_eq!(line["state"], "INVALID");
    assert_eq!(line["problems"][0]["task"], "first", "{line}");
    assert_contains(line["problems"][0]["message"].as_str().unwrap(), "`value`");
}
