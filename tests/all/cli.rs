//! The command line's conventions, as an operator meets them: pipes that close early,
//! `--version`, completions, examples in `--help`, the log (`-v`, `FLOWHOST_LOG`,
//! `--log-format json`, colour, run ids on plugin lines, results kept out of INFO), where the
//! run database lives, `--store` values that would silently change, unreadable plugins.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::{Value, json};

use crate::kit::{
    Flowhost, assert_contains, assert_exit, flowhost, line_with, plugin, stderr, stdout_json,
};

/// `flow.toml` in `dir`: one probe echoing `value`, labelled `t`, with `extra` TOML lines.
fn probe_flow(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "name = \"f\"\n[[task]]\nname = \"t\"\nplugin = {:?}\nconfig = {{ label = \"t\" }}\n{extra}",
        plugin("probe").display().to_string()
    );
    let path = dir.join("flow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(dir: &Path, args: &[&str]) -> Output {
    flowhost(args).dir(dir).run()
}

/// `flowhost run flow.toml --no-db --store STORE EXTRA…` in `dir`, to adjust and run.
fn run_probe(dir: &Path, store: &str, extra: &[&str]) -> Flowhost {
    let args = ["run", "flow.toml", "--no-db", "--store", store];
    flowhost(args.iter().chain(extra)).dir(dir)
}

/// Runs `args` with stdout piped, reads one line of it, closes the pipe and waits.
fn read_one_line_then_close(dir: &Path, args: &[&str]) -> (String, Output) {
    let mut child = flowhost(args)
        .dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (first, output)
}

#[test]
fn a_reader_that_closes_stdout_early_is_no_crash_and_the_run_still_ends_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    probe_flow(dir.path(), "");
    // A final store far larger than a pipe's buffer: flowhost is still writing when the
    // reader goes away.
    std::fs::write(
        dir.path().join("big.json"),
        json!({ "value": "x".repeat(1 << 20) }).to_string(),
    )
    .unwrap();
    let db = dir.path().join("runs.db");
    let db = db.to_str().unwrap();
    let (first, out) = read_one_line_then_close(
        dir.path(),
        &["run", "flow.toml", "--store-file", "big.json", "--db", db],
    );
    assert_eq!(first, "{\n");
    // The run's own exit code.
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    let listed = stdout_json(&run(dir.path(), &["runs", "list", "--json", "--db", db]));
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["state"], "SUCCESS");
    for args in [
        vec!["runs", "show", &id, "--db", db],
        vec!["runs", "list", "--db", db],
        vec!["completions", "bash"],
    ] {
        let (first, out) = read_one_line_then_close(dir.path(), &args);
        assert!(!first.is_empty(), "{args:?}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn version_names_the_accepted_contract_versions_and_wasmtime() {
    let out = flowhost(["--version"]).run();
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("flowhost {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert_contains(&text, "flowhost:task/task@0.1.x, flowhost:task/task@0.2.x");
    assert_contains(&text, &format!("wasmtime: {}", flowhost::WASMTIME_VERSION));
    assert!(
        flowhost::WASMTIME_VERSION.starts_with("48."),
        "read from Cargo.lock: {}",
        flowhost::WASMTIME_VERSION
    );
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = flowhost(["completions", shell]).run();
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["flowhost", "runs", "conform", "fetch", "dry-run"] {
            assert!(script.contains(word), "{shell} completes `{word}`");
        }
    }
    assert_eq!(
        flowhost(["completions", "tcsh"]).run().status.code(),
        Some(64)
    );
}

#[test]
fn the_help_of_run_check_and_runs_shows_examples() {
    for command in ["run", "check", "runs"] {
        let out = flowhost([command, "--help"]).run();
        assert_exit(&out, 0);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Examples:") && help.contains(&format!("flowhost {command} ")),
            "{command}:\n{help}"
        );
    }
}

#[test]
fn results_stay_out_of_the_default_log_and_show_with_v_without_wasmtime_internals() {
    let dir = tempfile::tempdir().unwrap();
    probe_flow(dir.path(), "");
    let out = run_probe(dir.path(), "value=s3cr3t", &[]).run();
    assert_exit(&out, 0);
    let log = stderr(&out);
    assert_contains(&log, "task `t` RUNNING -> SUCCESS");
    assert!(
        !log.contains("s3cr3t"),
        "a result may hold secrets: DEBUG only\n{log}"
    );

    let out = run_probe(dir.path(), "value=s3cr3t", &["-v"]).run();
    let log = stderr(&out);
    assert!(
        log.contains("DEBUG") && log.contains("task `t` result:") && log.contains("s3cr3t"),
        "{log}"
    );
    assert!(
        !log.contains("cranelift") && !log.contains("memory pool") && !log.contains("CLIF"),
        "{log}"
    );
}

#[test]
fn a_failure_shows_its_details_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let flow = probe_flow(dir.path(), "");
    let text = std::fs::read_to_string(&flow)
        .unwrap()
        .replace("label = \"t\"", "label = \"t\", fail = \"refused\"");
    std::fs::write(&flow, text).unwrap();
    let out = run_probe(dir.path(), "value=1", &[]).run();
    assert_exit(&out, 1);
    let log = stderr(&out);
    let line = line_with(&log, "RUNNING -> FAILURE");
    assert_contains(line, "refused: probe was told to fail");
    assert_contains(line, r#"details: {"label":"t"}"#);
}

#[test]
fn an_invalid_flowhost_log_is_a_usage_error_and_a_valid_one_replaces_the_default() {
    let dir = tempfile::tempdir().unwrap();
    probe_flow(dir.path(), "");
    let out = run_probe(dir.path(), "value=1", &[])
        .env("FLOWHOST_LOG", "flowhost=loud")
        .run();
    assert_exit(&out, 64);
    assert_contains(
        &stderr(&out),
        "FLOWHOST_LOG=`flowhost=loud` is not a log filter",
    );
    let out = run_probe(dir.path(), "value=1", &[])
        .env("FLOWHOST_LOG", "warn")
        .run();
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("RUNNING"), "{}", stderr(&out));
}

#[test]
fn plugin_output_lines_carry_the_run_id_in_text_and_in_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    probe_flow(dir.path(), "");
    let out = run_probe(dir.path(), "value=1", &["--json"]).run();
    let id = stdout_json(&out)["run_id"].as_str().unwrap().to_owned();
    let log = stderr(&out);
    let line = line_with(&log, "probe t: execute");
    assert_contains(line, &id);
    assert_contains(line, "task=\"t\"");

    let out = run_probe(dir.path(), "value=1", &["--json", "--log-format", "json"]).run();
    let id = stdout_json(&out)["run_id"].as_str().unwrap().to_owned();
    let lines: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    let plugin_line = lines
        .iter()
        .find(|l| l["message"] == "probe t: execute")
        .expect("the probe's own line");
    assert_eq!(plugin_line["span"]["id"], id.as_str(), "{plugin_line}");
    assert_eq!(plugin_line["task"], "t");
    assert_eq!(plugin_line["level"], "INFO");
    let transition = lines.iter().find(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("task `t` RUNNING -> SUCCESS"))
    });
    assert_eq!(
        transition.expect("the transition")["span"]["id"],
        id.as_str()
    );
}

#[test]
fn colour_follows_the_color_flag_and_no_color() {
    let dir = tempfile::tempdir().unwrap();
    probe_flow(dir.path(), "");
    let coloured = |extra: &[&str], no_color: bool| {
        let mut command = run_probe(dir.path(), "value=1", extra);
        if no_color {
            command = command.env("NO_COLOR", "1");
        }
        let out = command.run();
        assert_exit(&out, 0);
        stderr(&out).contains('\u{1b}')
    };
    assert!(!coloured(&[], false), "auto: not a terminal");
    assert!(coloured(&["--color", "always"], false));
    assert!(
        coloured(&["--color=always"], true),
        "an explicit flag wins over NO_COLOR"
    );
    assert!(!coloured(&["--color", "never"], false));
    assert!(!coloured(&["--color", "auto"], true));
    assert_eq!(
        flowhost(["--color", "purple", "check", "x"])
            .run()
            .status
            .code(),
        Some(64)
    );
}

#[test]
fn runs_go_to_the_user_data_directory_whatever_the_working_directory() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    probe_flow(work.path(), "");
    let first = flowhost(["run", "flow.toml", "--store", "value=1"])
        .dir(work.path())
        .home(home.path());
    let db = first.default_db();
    let out = first.run();
    assert_exit(&out, 0);
    assert!(db.is_file(), "the default database is {}", db.display());
    assert!(
        !work.path().join(".flowhost").exists(),
        "nothing in the working directory"
    );

    let elsewhere = tempfile::tempdir().unwrap();
    let listed = flowhost(["runs", "list"])
        .dir(elsewhere.path())
        .home(home.path())
        .run();
    assert_exit(&listed, 0);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains(&format!("run database: {}", db.display())),
        "names the database:\n{text}"
    );
    assert_contains(&text, "SUCCESS");
    let env = flowhost(["runs", "list", "--json"])
        .dir(elsewhere.path())
        .home(elsewhere.path())
        .env("FLOWHOST_DB", &db)
        .run();
    assert_eq!(
        stdout_json(&env).as_array().map(Vec::len),
        Some(1),
        "FLOWHOST_DB chooses the database"
    );
}

#[test]
fn store_values_that_would_silently_change_are_refused_with_64() {
    let dir = tempfile::tempdir().unwrap();
    probe_flow(dir.path(), "");
    let deep = format!("value={}{}", "[".repeat(200), "]".repeat(200));
    for (value, says) in [
        ("value=010", "looks like a number but is not a JSON number"),
        (deep.as_str(), "nested deeper than 128 levels"),
        ("value=18446744073709551616", "does not fit in 64 bits"),
        (
            "value={\"n\": -9223372036854775809}",
            "does not fit in 64 bits",
        ),
    ] {
        let out = run_probe(dir.path(), value, &[]).run();
        assert_eq!(out.status.code(), Some(64), "{value}: {}", stderr(&out));
        assert_contains(&stderr(&out), says);
    }
    let out = run_probe(dir.path(), "value=\"010\"", &["--fetch", "echo"]).run();
    assert_eq!(
        stdout_json(&out)["echo"]["value"],
        "010",
        "a quoted value is the string"
    );
    let out = run_probe(dir.path(), "value=1.2.3", &["--fetch", "echo"]).run();
    assert_eq!(
        stdout_json(&out)["echo"]["value"],
        "1.2.3",
        "text that is no number stays a string"
    );
}

#[test]
fn an_unreadable_plugin_is_exit_66_and_the_os_error_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wasm");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["describe", missing],
        vec!["compile", missing],
        vec!["conform", missing],
    ] {
        let out = run(dir.path(), &args);
        let message = stderr(&out);
        assert_exit(&out, 66);
        assert_contains(&message, &format!("cannot read plugin {missing}"));
        assert_eq!(
            message.matches("No such file or directory").count(),
            1,
            "said once: {message}"
        );
    }
    let out = run(dir.path(), &["run", "nowhere.toml"]);
    assert_eq!(
        stderr(&out).matches("No such file or directory").count(),
        1,
        "{}",
        stderr(&out)
    );
}

#[test]
fn compiling_a_plugin_says_so_in_the_log_when_stderr_is_not_a_terminal() {
    let cache = tempfile::tempdir().unwrap();
    let probe = plugin("probe");
    let compile = || {
        let args = ["compile", probe.to_str().unwrap(), "--cache-dir"];
        let mut command = flowhost(args);
        command.arg(cache.path());
        command.run()
    };
    let out = compile();
    assert_exit(&out, 0);
    let log = stderr(&out);
    let line = line_with(&log, "compiling plugin");
    assert_contains(line, &probe.display().to_string());
    assert_contains(line, "MB");
    let again = compile();
    assert!(
        !stderr(&again).contains("compiling plugin"),
        "a cached plugin is not compiled: {}",
        stderr(&again)
    );
}

#[test]
fn log_lines_and_errors_name_plugin_paths_without_dot_dot() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows/deep")).unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::copy(plugin("probe"), dir.path().join("plugins/probe.wasm")).unwrap();
    let flow = |name: &str, plugin: &str| {
        std::fs::write(
            dir.path().join("flows/deep").join(name),
            format!("name = \"f\"\n[[task]]\nname = \"t\"\nplugin = {plugin:?}\nconfig = {{ label = \"t\" }}\n"),
        )
        .unwrap();
    };
    flow("ok.toml", "../../plugins/./probe.wasm");
    flow("missing.toml", "../../plugins/missing.wasm");
    let cache = tempfile::tempdir().unwrap();

    let out = run(
        dir.path(),
        &[
            "run",
            "flows/deep/ok.toml",
            "--no-db",
            "--store",
            "value=1",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
    );
    assert_exit(&out, 0);
    let log = stderr(&out);
    assert_contains(
        line_with(&log, "compiling plugin"),
        "compiling plugin plugins/probe.wasm",
    );
    assert!(!log.contains("/../") && !log.contains("/./"), "{log}");

    let out = run(dir.path(), &["run", "flows/deep/missing.toml", "--no-db"]);
    let log = stderr(&out);
    assert_contains(&log, "plugins/missing.wasm");
    assert!(!log.contains("/../"), "{log}");
}
