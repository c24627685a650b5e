//! The same task written in Rust, Python, JavaScript, C, Go and C++: each passes `flowhost
//! conform`, and `examples/polyglot` chains all six through the store and reverts across
//! them. All but the Rust component come from `plugins/build-polyglot.sh`.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use crate::kit::{assert_contains, assert_exit, example, polyglot, repo_root, stderr, stdout_json};

const LANGUAGES: [&str; 6] = ["rust", "python", "js", "c", "go", "cpp"];

fn flowhost(args: &[&str]) -> Output {
    crate::kit::flowhost(args).run()
}

#[test]
fn the_kitchen_sink_task_passes_conform_in_every_language() {
    let cases = repo_root().join("plugins/stamp.cases.toml");
    for language in LANGUAGES {
        let plugin = polyglot(language);
        let out = flowhost(&[
            "conform",
            plugin.to_str().unwrap(),
            "--cases",
            cases.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{language}:\n{stdout}\n{}",
            stderr(&out)
        );
        assert!(
            !stdout
                .lines()
                .any(|l| l.starts_with("FAIL") || l.starts_with("skip")),
            "{language}:\n{stdout}"
        );
        assert!(
            stdout.contains("stamp 1.0.0"),
            "{language} describes itself:\n{stdout}"
        );
    }
}

fn run_json(flow: &Path, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["run", flow.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = flowhost(&args);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}); stderr:\n{}", stderr(&out)));
    (out, report)
}

#[test]
fn a_value_passes_through_tasks_in_six_languages() {
    let (_dir, flow) = example("polyglot", "flow.toml");
    let (out, report) = run_json(&flow, &["--store", "note=nightly"]);
    assert_exit(&out, 0);
    assert_eq!(report["state"], "SUCCESS");
    assert_eq!(
        report["store"]["ledger_final"],
        json!([
            "opened",
            "rust (nightly)",
            "python (nightly)",
            "javascript (nightly)",
            "c (nightly)",
            "go (nightly)",
            "cpp (nightly)"
        ])
    );
    let log = stderr(&out);
    for language in ["rust", "python", "javascript", "c", "go", "cpp"] {
        assert!(
            log.contains(&format!("stamp {language} ({language}): ledger of")),
            "{language} logged:\n{log}"
        );
    }
}

#[test]
fn a_failure_in_the_cpp_task_reverts_the_tasks_of_every_language() {
    let (_dir, flow) = example("polyglot", "failing.toml");
    let (out, report) = run_json(&flow, &[]);
    let log = stderr(&out);
    assert_exit(&out, 1);
    assert_eq!(report["state"], "REVERTED");
    let tasks = report["tasks"].as_array().expect("tasks");
    let states: Vec<(&str, &str)> = tasks
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("rust_stamp", "REVERTED"),
            ("python_stamp", "REVERTED"),
            ("js_stamp", "REVERTED"),
            ("c_stamp", "REVERTED"),
            ("go_stamp", "REVERTED"),
            ("cpp_stamp", "REVERTED")
        ]
    );
    assert_eq!(tasks[5]["error"]["code"], "asked-to-fail");
    assert_eq!(tasks[5]["error"]["details"], json!({ "stamp": "cpp" }));
    assert!(
        report["store"].get("after_rust").is_none(),
        "reverted results leave the store"
    );
    for language in ["rust", "python", "javascript", "c", "go"] {
        assert!(
            log.contains(&format!("stamp {language} ({language}): reverted after a result; flow failures: cpp_stamp: asked-to-fail")),
            "{language} reverted:\n{log}"
        );
    }
    assert_contains(&log, "stamp cpp (cpp): reverted after error asked-to-fail");
    // Reverts run newest first.
    let at = |language: &str| {
        log.find(&format!("stamp {language} ({language}): reverted"))
            .unwrap()
    };
    assert!(at("cpp") < at("go") && at("go") < at("c") && at("c") < at("javascript"));
}

/// A flow of one `stamp` in `language` told to crash with an uncaught exception.
fn crashing(language: &str, dir: &Path) -> PathBuf {
    let flow = dir.join(format!("{language}.toml"));
    let text = format!(
        "name = \"crash\"\n[store]\nledger = []\n[[task]]\nname = \"stamp\"\nplugin = {:?}\nconfig = {{ stamp = \"s\", crash = \"bad size 3\" }}\n",
        polyglot(language).display().to_string()
    );
    std::fs::write(&flow, text).expect("write flow");
    flow
}

#[test]
fn an_uncaught_python_javascript_or_go_exception_fails_the_task_naming_it_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (language, exception) in [("python", "ValueError"), ("js", "Error"), ("go", "panic")] {
        let flow = crashing(language, dir.path());
        let db = dir.path().join("runs.db");
        let (out, report) = run_json(&flow, &["-q", "--db", db.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{language}: {}", stderr(&out));
        let error = &report["tasks"][0]["error"];
        assert_eq!(error["code"], "uncaught-exception", "{language}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{exception}: bad size 3 (uncaught ")),
            "{language}: {message}"
        );
        assert_eq!(
            error["details"]["exception"], exception,
            "{language}: {error}"
        );
        assert_eq!(error["details"]["message"], "bad size 3");
        let traceback = error["details"]["traceback"].as_str().unwrap();
        assert!(
            !traceback.is_empty(),
            "{language}: the traceback is in the details"
        );
        assert_eq!(
            report["tasks"][0]["state"], "REVERTED",
            "{language}: its revert still ran"
        );
        assert!(
            stderr(&out).contains(&format!("{exception}: bad size 3")),
            "even with -q: {}",
            stderr(&out)
        );

        let id = report["run_id"].as_str().unwrap();
        let record = stdout_json(&flowhost(&[
            "runs",
            "show",
            id,
            "--json",
            "--db",
            db.to_str().unwrap(),
        ]));
        assert_eq!(
            &record["tasks"][0]["error"], error,
            "{language}: the run database has it too"
        );
    }
    let (_, report) = run_json(&crashing("python", dir.path()), &["--no-db"]);
    let traceback = report["tasks"][0]["error"]["details"]["traceback"]
        .as_str()
        .unwrap();
    assert!(
        traceback.starts_with("Traceback (most recent call last):") && traceback.contains("app.py"),
        "{traceback}"
    );
    let (_, report) = run_json(&crashing("go", dir.path()), &["--no-db"]);
    let error = &report["tasks"][0]["error"];
    let traceback = error["details"]["traceback"].as_str().unwrap();
    assert!(
        traceback.starts_with("goroutine ") && traceback.contains("stamp.go"),
        "the panic's stack names the task's source: {traceback}"
    );
    assert_eq!(error["details"]["language"], "go");
    assert_contains(
        error["message"].as_str().unwrap(),
        "(uncaught Go panic by task `stamp` in execute)",
    );
}
