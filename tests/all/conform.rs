//! The conformance suite as a plugin author meets it: a plugin that honours the contract
//! passes, and each deliberately broken plugin is caught by the check that names its fault,
//! through the library (as from `cargo test`) and through `flowhost conform`.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::kit::{
    assert_contains, assert_exit, assert_starts_with, exit_json, flowhost, line_with, plugin,
    repo_root, stderr, stdout,
};
use flowhost::Engine;
use flowhost::conform::{Cases, ConformReport, Status, conform};

fn fixture_cases(name: &str) -> PathBuf {
    repo_root()
        .join("tests/fixtures/conform")
        .join(format!("{name}.cases.toml"))
}

fn stamp_cases() -> PathBuf {
    repo_root().join("plugins/stamp.cases.toml")
}

async fn suite(plugin: &Path, cases: Option<&Path>) -> ConformReport {
    let cases = cases.map(|path| Cases::from_file(path).expect("cases file"));
    conform(&Engine::new().expect("engine"), plugin, cases.as_ref()).await
}

/// The suite run on test plugin `plugin` with fixture cases file `cases`.
async fn fixture_suite(plugin_name: &str, cases: &str) -> ConformReport {
    suite(&plugin(plugin_name), Some(&fixture_cases(cases))).await
}

/// Asserts that check `id` failed and that its reason mentions each of `words`.
fn assert_fails(report: &ConformReport, id: &str, words: &[&str]) {
    let check = report
        .check(id)
        .unwrap_or_else(|| panic!("no check `{id}` in:\n{report}"));
    assert_eq!(
        check.status,
        Status::Fail,
        "check `{id}` should fail:\n{report}"
    );
    for word in words {
        assert!(
            check.reason.contains(word),
            "check `{id}` reason lacks `{word}`: {}",
            check.reason
        );
    }
    assert!(!report.passed());
}

/// Asserts that check `id` ended `status`.
#[track_caller]
fn assert_check(report: &ConformReport, id: &str, status: Status) {
    assert_eq!(
        report.check(id).map(|c| c.status),
        Some(status),
        "`{id}`:\n{report}"
    );
}

fn flowhost_conform(args: &[&str]) -> Output {
    let mut command = flowhost(["conform"]);
    command.args(args);
    command.run()
}

#[tokio::test]
async fn a_plugin_that_honours_the_contract_passes_every_check() {
    let report = suite(&plugin("stamp"), Some(&stamp_cases())).await;
    assert!(report.passed(), "{report}");
    let skipped: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Skip)
        .collect();
    assert!(
        skipped.is_empty(),
        "with cases nothing is skipped: {skipped:?}"
    );
    for id in [
        "component",
        "contract",
        "imports",
        "describe",
        "input.args-not-json",
        "input.missing-required",
        "input.wrong-type",
        "input.config-not-object",
        "case.appends-the-stamp",
        "repeat.appends-the-stamp",
        "revert.appends-the-stamp",
        "case.fails-on-request",
        "revert.fails-on-request",
        "limits",
    ] {
        assert_check(&report, id, Status::Pass);
    }
}

#[tokio::test]
async fn without_a_cases_file_the_checks_needing_a_valid_input_are_skipped_with_the_reason() {
    let report = suite(&plugin("stamp"), None).await;
    assert!(report.passed(), "{report}");
    for id in ["input.wrong-type", "cases", "revert"] {
        let check = report.check(id).expect(id);
        assert_eq!(check.status, Status::Skip, "{report}");
        assert_contains(&check.reason, "cases file");
    }
    assert_check(&report, "input.args-not-json", Status::Pass);
}

#[tokio::test]
async fn a_plugin_that_traps_on_bad_input_is_caught_and_its_panic_quoted() {
    let report = fixture_suite("nonconform_trap", "trap").await;
    assert_fails(
        &report,
        "input.args-not-json",
        &["args that are not JSON", "trapped", "panicked"],
    );
    assert_fails(
        &report,
        "input.missing-required",
        &["args without `n`", "n must be a number"],
    );
    assert_fails(&report, "input.wrong-type", &["`n`", "trap"]);
    assert_check(&report, "case.doubles", Status::Pass);
}

#[tokio::test]
async fn a_revert_that_fails_the_second_time_is_caught_as_not_idempotent() {
    let report = fixture_suite("nonconform_revert", "revert").await;
    assert_fails(
        &report,
        "revert.creates-a-marker",
        &["second revert", "idempotent", "/scratch/vol-1"],
    );
    assert_check(&report, "case.creates-a-marker", Status::Pass);
    assert_eq!(
        report.failures().count(),
        1,
        "only the revert is at fault:\n{report}"
    );
}

#[tokio::test]
async fn a_result_missing_a_provided_name_is_caught_naming_the_name() {
    let report = suite(
        &plugin("nonconform_provides"),
        Some(&fixture_cases("provides")),
    )
    .await;
    assert_fails(&report, "case.reserves", &["`reservation`"]);
    assert!(
        !report
            .check("case.reserves")
            .unwrap()
            .reason
            .contains("`volume`")
    );
}

#[tokio::test]
async fn every_import_the_host_does_not_provide_is_named() {
    let report = suite(&plugin("nonconform_import"), None).await;
    assert_fails(
        &report,
        "imports",
        &[
            "fixture:nonconform-import/vault",
            "fixture:nonconform-import/telemetry",
        ],
    );
    assert_check(&report, "component", Status::Pass);
    assert_check(&report, "contract", Status::Pass);
    assert_check(&report, "describe", Status::Skip);
}

#[tokio::test]
async fn a_plugin_built_against_another_contract_version_is_caught_naming_both_versions() {
    let report = suite(&plugin("nonconform_version"), None).await;
    assert_fails(
        &report,
        "contract",
        &[
            "flowhost:task/task@1.0.0",
            "flowhost:task/task@0.1.x",
            "flowhost:task/task@0.2.x",
        ],
    );
    assert_check(&report, "imports", Status::Pass);
}

#[tokio::test]
async fn a_file_that_is_not_a_component_fails_the_first_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"#!/bin/sh\necho not wasm\n").expect("write");
    let report = suite(&bogus, None).await;
    assert_fails(
        &report,
        "component",
        &["bogus.wasm", "not a WebAssembly binary"],
    );
}

#[test]
fn the_command_prints_one_line_per_check_and_exits_1_when_one_fails() {
    let trap = plugin("nonconform_trap");
    let cases = fixture_cases("trap");
    let out = flowhost_conform(&[trap.to_str().unwrap(), "--cases", cases.to_str().unwrap()]);
    assert_exit(&out, 1);
    let stdout = stdout(&out);
    assert_starts_with(line_with(&stdout, "input.args-not-json"), "FAIL");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("pass") && l.contains("case.doubles")),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("skipped"),
        "a closing count line:\n{stdout}"
    );

    let good = plugin("stamp");
    let stamp = stamp_cases();
    let out = flowhost_conform(&[
        good.to_str().unwrap(),
        "--cases",
        stamp.to_str().unwrap(),
        "--json",
    ]);
    let report = exit_json(&out, 0);
    let checks = report["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["status"] == "pass"), "{report:#}");
}

#[test]
fn a_bad_cases_file_is_an_input_error_naming_the_file() {
    let good = plugin("stamp");
    let contradiction = fixture_cases("contradiction");
    let out = flowhost_conform(&[
        good.to_str().unwrap(),
        "--cases",
        contradiction.to_str().unwrap(),
    ]);
    assert_exit(&out, 65);
    assert_contains(&stderr(&out), "contradiction.cases.toml");
    assert_contains(&stderr(&out), "both `expect` and `expect_error`");

    let out = flowhost_conform(&[good.to_str().unwrap(), "--cases", "no/such/cases.toml"]);
    assert_exit(&out, 66);
}

#[tokio::test]
async fn numbers_are_compared_by_value_so_1_and_1_0_are_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = dir.path().join("numbers.cases.toml");
    std::fs::write(
        &cases,
        r#"
[[case]]
name = "integer-returned-float-expected"
args = { value = 1 }
config = { label = "n" }
expect = { value = 1.0, label = "n" }

[[case]]
name = "float-returned-integer-expected"
args = { value = [2.0, { deep = 3.0 }] }
config = { label = "n" }
expect = { value = [2, { deep = 3 }], label = "n" }

[[case]]
name = "another-number"
args = { value = 1 }
config = { label = "n" }
expect = { value = 1.5, label = "n" }
"#,
    )
    .expect("write cases");
    let report = suite(&plugin("probe"), Some(&cases)).await;
    for id in [
        "case.integer-returned-float-expected",
        "case.float-returned-integer-expected",
    ] {
        assert_check(&report, id, Status::Pass);
    }
    assert_fails(&report, "case.another-number", &["expected", "1.5"]);
}
