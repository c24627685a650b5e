//! The sandbox against hostile plugins, one test per hole found by attacking it: a task that
//! swaps a later task's grant for a symlink, waits in the host past its deadline, opens
//! files without end, floods its output, calls `exit`, or writes escape sequences for the
//! operator's terminal; and plugin paths that are not plugin files. Cache attacks are in
//! `tests/cache.rs`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use flowhost::{
    Access, Engine, EngineConfig, FlowSpec, FlowState, Limits, RunReport, Store, TaskError,
    TaskSpec, TaskState,
};
use serde_json::{Value, json};

use crate::kit::{
    assert_contains, assert_exit, flowhost, flowhost_bin, plugin, probe_file as write,
    shared_engine as engine, stderr, stdout, stdout_json,
};

fn value(v: Value) -> Store {
    [("value".to_owned(), v)].into_iter().collect()
}

fn deadline(ms: u64) -> Limits {
    Limits {
        deadline_ms: Some(ms),
        ..Limits::default()
    }
}

/// A probe entry named `name` doing `config`, its result stored under `<name>_out`.
fn probe(name: &str, config: Value) -> TaskSpec {
    TaskSpec::new(name, plugin("probe"))
        .provides([format!("{name}_out")])
        .config(config)
}

/// Runs a one-task flow of `task` and returns the report and its one error.
async fn run_one(task: TaskSpec) -> (RunReport, Option<TaskError>) {
    let flow = FlowSpec::linear("hostile").add(task);
    let report = engine()
        .run(&flow, value(json!(1)))
        .await
        .expect("the flow is valid");
    let error = report.tasks[0].error.clone();
    (report, error)
}

/// Runs a one-task flow of `task`, which must fail and be reverted: its error.
async fn run_one_reverted(task: TaskSpec) -> TaskError {
    let (report, error) = run_one(task).await;
    assert_eq!(report.state, FlowState::Reverted);
    error.expect("the task failed")
}

/// Creates a FIFO at `path`.
fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
}

/// Runs `flowhost ARGS…` in `dir`, failing the test if it is still running after `limit`.
fn flowhost_within(args: &[&str], dir: &Path, limit: Duration) -> Output {
    let started = Instant::now();
    let mut child = flowhost(args).dir(dir).start_piped();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!(
                "flowhost {args:?} still running after {limit:?}: {}",
                stderr(&child.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

// ---- grants: pinned once per run, never re-resolved ------------------------------------

#[tokio::test]
async fn a_task_swapping_a_later_tasks_grant_for_a_symlink_cannot_widen_it_and_the_next_run_refuses_it()
 {
    let root = tempfile::tempdir().unwrap();
    let st = root.path().join("st");
    std::fs::create_dir_all(st.join("pub")).unwrap();
    std::fs::write(st.join("pub/hello.txt"), "public").unwrap();
    // From st/, `../../..` climbs out of the temporary directory to the host's root.
    let flow = FlowSpec::linear("swap")
        .add(
            probe(
                "swapper",
                json!({"mode": "symlink", "path": "/st/pub", "content": "../../.."}),
            )
            .grant_dir(&st, "/st", Access::ReadWrite),
        )
        .add(
            probe(
                "reader",
                json!({"mode": "read_file", "path": "/pub/etc/passwd"}),
            )
            .rebind("value", "swapper_out")
            .grant_dir(st.join("pub"), "/pub", Access::ReadOnly),
        );
    let report = engine().run(&flow, value(json!(1))).await.unwrap();
    assert!(
        std::fs::symlink_metadata(st.join("pub"))
            .unwrap()
            .is_symlink(),
        "the swap itself happened"
    );
    assert_eq!(report.tasks[0].state, TaskState::Reverted, "{report:#?}");
    let error = report.tasks[1]
        .error
        .clone()
        .expect("the reader found no /etc through its pinned grant");
    assert_eq!(error.code, "io", "{error:?}");
    assert!(report.fetch("reader_out").is_none());

    let refused = engine()
        .run(&flow, value(json!(1)))
        .await
        .expect_err("the next run refuses the symlink");
    let text = refused.to_string();
    assert_contains(
        &text,
        &format!(
            "task `reader`: granted directory {}: {} is a symlink",
            st.join("pub").display(),
            st.join("pub").display()
        ),
    );
}

#[test]
fn check_shows_grants_pinned_and_refuses_a_symlinked_grant_a_file_and_two_grants_at_one_guest_path()
{
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("real/data")).unwrap();
    std::fs::write(dir.path().join("file.txt"), "x").unwrap();
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
    let entry = |name: &str, dirs: &str| {
        format!(
            "\n[[task]]\nname = \"{name}\"\nplugin = \"PROBE\"\nprovides = [\"{name}_out\"]\ndirs = [{dirs}]\n"
        )
    };
    write(
        dir.path(),
        "ok.toml",
        &format!(
            "name = \"ok\"\n[store]\nvalue = 1\n{}",
            entry("t", r#"{ host = "real/data", guest = "/data" }"#)
        ),
    );
    let out = flowhost(["check", "ok.toml"]).dir(dir.path()).run();
    assert_exit(&out, 0);
    let plan = stdout(&out);
    assert_contains(&plan, "real/data -> /data (ro, pinned: device ");
    let out = flowhost(["check", "ok.toml", "--json"])
        .dir(dir.path())
        .run();
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        plan["tasks"][0]["sandbox"]["dirs"][0]["pinned"]["inode"]
            .as_u64()
            .is_some(),
        "{plan}"
    );

    write(
        dir.path(),
        "bad.toml",
        &format!(
            "name = \"bad\"\n[store]\nvalue = 1\n{}{}{}",
            entry("through_link", r#"{ host = "link/data", guest = "/data" }"#),
            entry("a_file", r#"{ host = "file.txt", guest = "/data" }"#),
            entry(
                "twice",
                r#"{ host = "real", guest = "/data" }, { host = "real/data", guest = "/data/" }"#
            ),
        ),
    );
    let out = flowhost(["check", "bad.toml"]).dir(dir.path()).run();
    assert_exit(&out, 65);
    let log = stderr(&out);
    assert_contains(
        &log,
        "task `through_link`: granted directory link/data: link is a symlink",
    );
    assert!(
        log.contains("task `a_file`: granted directory")
            && log.contains("file.txt is a file, not a directory"),
        "{log}"
    );
    assert_contains(&log, "task `twice`: two grants at guest path `/data/`");
}

// ---- deadlines that end host waits --------------------------------------------------------

#[tokio::test]
async fn an_hour_long_sleep_in_the_host_ends_at_a_200_ms_deadline_in_execute_and_in_revert() {
    let started = Instant::now();
    let error = run_one_reverted(
        probe("sleeper", json!({"mode": "sleep", "ms": 3_600_000})).limits(deadline(200)),
    )
    .await;
    assert_eq!(error.code, "deadline-exceeded");
    assert_eq!(
        error.message,
        "deadline of 200 ms exceeded by task `sleeper` in execute"
    );

    let flow = FlowSpec::linear("slow-revert")
        .add(
            probe(
                "sleeper",
                json!({"mode": "sleep", "ms": 3_600_000, "mode_in": "revert"}),
            )
            .limits(deadline(200)),
        )
        .add(probe("failing", json!({"fail": "boom"})).rebind("value", "sleeper_out"));
    let report = engine().run(&flow, value(json!(1))).await.unwrap();
    assert_eq!(report.state, FlowState::Failure);
    let error = report.tasks[0].revert_error.clone().unwrap();
    assert_eq!(
        error.message,
        "deadline of 200 ms exceeded by task `sleeper` in revert"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "both runs ended: {:?}",
        started.elapsed()
    );
}

#[test]
fn reading_a_fifo_in_a_grant_ends_at_the_deadline_and_flowhost_exits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    mkfifo(&dir.path().join("data/fifo"));
    write(
        dir.path(),
        "flow.toml",
        "name = \"fifo\"\n[store]\nvalue = 1\n\n[[task]]\nname = \"reader\"\nplugin = \"PROBE\"\nconfig = { mode = \"read_file\", path = \"/data/fifo\" }\ndirs = [{ host = \"data\", guest = \"/data\" }]\nlimits = { deadline_ms = 200 }\n",
    );
    let out = flowhost_within(
        &["run", "flow.toml", "--no-db"],
        dir.path(),
        Duration::from_secs(20),
    );
    assert_exit(&out, 1);
    assert_contains(
        &stderr(&out),
        "task `reader` failed: deadline-exceeded: deadline of 200 ms exceeded by task `reader` in execute",
    );
}

#[tokio::test]
async fn a_describe_blocking_in_the_host_fails_at_its_deadline_in_validation_and_in_conform() {
    let engine =
        Engine::with_config(&EngineConfig::default().describe_deadline(Duration::from_millis(200)))
            .unwrap();
    let sleeper = plugin("describe_sleep");
    let started = Instant::now();
    let flow = FlowSpec::linear("slow-describe").add(TaskSpec::new("sleeper", &sleeper));
    let refused = engine
        .load(&flow, Store::new())
        .await
        .err()
        .expect("describe never answered");
    let text = refused.to_string();
    assert_contains(
        &text,
        "failed in describe(): deadline of 200 ms exceeded in describe()",
    );
    assert!(!refused.host_unavailable);

    let report = flowhost::conform::conform(&engine, &plugin("describe_sleep"), None).await;
    assert!(!report.passed());
    assert!(
        report.to_string().contains("deadline of 200 ms exceeded"),
        "{report}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

// ---- resources ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_100k_files_fails_the_task_at_the_handle_cap_and_other_runs_go_on() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("f"), "x").unwrap();
    let greedy = probe(
        "greedy",
        json!({"mode": "open_many", "path": "/data/f", "n": 100_000}),
    )
    .grant_dir(data.path(), "/data", Access::ReadOnly);
    let healthy = FlowSpec::linear("healthy").add(
        probe("reader", json!({"mode": "read_file", "path": "/data/f"})).grant_dir(
            data.path(),
            "/data",
            Access::ReadOnly,
        ),
    );
    let (greedy, healthy) = tokio::join!(run_one(greedy), engine().run(&healthy, value(json!(1))));
    let error = greedy.1.unwrap();
    assert_eq!(error.code, "handle-limit", "{error:?}");
    assert!(
        error
            .message
            .starts_with("handle cap of 1024 exceeded by task `greedy` in execute"),
        "{}",
        error.message
    );
    assert_eq!(healthy.unwrap().fetch("reader_out"), Some(&json!("x")));

    let few = probe(
        "few",
        json!({"mode": "open_many", "path": "/data/f", "n": 50}),
    )
    .grant_dir(data.path(), "/data", Access::ReadOnly)
    .limits(Limits {
        handles: Some(40),
        ..Limits::default()
    });
    assert_eq!(
        run_one(few).await.1.unwrap().message.split(" by ").next(),
        Some("handle cap of 40 exceeded")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pooling_many_concurrent_runs_all_succeed() {
    let engine = Engine::with_config(&EngineConfig::default().pooling(false)).unwrap();
    assert!(!engine.is_pooling());
    let flow = FlowSpec::linear("many").add(probe("echo", json!({"mode": "sleep", "ms": 50})));
    let runs: Vec<_> = (0..80)
        .map(|i| {
            let (engine, flow) = (engine.clone(), flow.clone());
            tokio::spawn(async move { engine.run(&flow, value(json!(i))).await.unwrap() })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let report = run.await.unwrap();
        assert_eq!(report.state, FlowState::Success, "run {i}: {report:#?}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn under_a_small_address_space_a_flow_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "flow.toml",
        "name = \"small\"\n[store]\nvalue = 1\n\n[[task]]\nname = \"echo\"\nplugin = \"PROBE\"\n",
    );
    let bin = flowhost_bin();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 3000000 && exec '{}' run flow.toml --no-db",
            bin.display()
        ))
        .current_dir(dir.path())
        .env_remove("FLOWHOST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&out, 0);
}

// ---- output, exit status, escaping ---------------------------------------------------------

#[test]
fn sixty_four_mib_of_output_is_cut_with_a_marker_and_the_task_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "flow.toml",
        "name = \"flood\"\n[store]\nvalue = 1\n\n[[task]]\nname = \"chatty\"\nplugin = \"PROBE\"\nconfig = { mode = \"flood\", n = 67108864 }\n",
    );
    let out = flowhost(["run", "flow.toml", "--no-db"])
        .dir(dir.path())
        .run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        &stderr(&out)[..2000.min(stderr(&out).len())]
    );
    let log = stderr(&out);
    // 65536 lines of 1024 bytes on stdout, of which the first 64 KiB are kept; stderr gets
    // the same after the probe's own line.
    let marker = |stream: &str| {
        log.lines()
            .find(|l| {
                l.contains("bytes of output dropped") && l.contains(&format!("stream=\"{stream}\""))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no marker for {stream}: {}",
                    &log[log.len().saturating_sub(2000)..]
                )
            })
            .to_owned()
    };
    assert!(marker("stdout").contains(&format!(
        "… {} bytes of output dropped",
        64 * 1024 * 1024 - 64 * 1024
    )));
    assert!(marker("stderr").contains("bytes of output dropped"));
    assert!(
        log.len() < 1 << 20,
        "the log holds the capture, not the flood: {} bytes",
        log.len()
    );
}

#[tokio::test]
async fn a_task_calling_exit_3_fails_saying_it_exited_with_status_3() {
    let error = run_one_reverted(probe("quitter", json!({"mode": "exit", "n": 3}))).await;
    assert_eq!(error.code, "exited");
    assert_eq!(
        error.message,
        "exited with status 3 by task `quitter` in execute"
    );
}

const FORGED: &str = "\u{1b}[2J\nFAKE LOG LINE";

/// Neither an escape character nor a forged line start reached the output.
fn assert_escaped(shown: &str) {
    assert!(
        !shown.contains('\u{1b}'),
        "a raw escape sequence got through:\n{shown}"
    );
    assert!(
        !shown.lines().any(|l| l.starts_with("FAKE LOG LINE")),
        "a forged line got through:\n{shown}"
    );
    assert!(
        shown.contains("\\u{1b}[2J\\nFAKE LOG LINE"),
        "the text is shown, escaped:\n{shown}"
    );
}

#[test]
fn escape_sequences_and_newlines_from_a_plugin_are_shown_escaped_in_the_log_and_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let toml_forged = "\\u001b[2J\\nFAKE LOG LINE";
    write(
        dir.path(),
        "flow.toml",
        &format!(
            "name = \"forge\"\n[store]\nvalue = 1\n\n[[task]]\nname = \"printer\"\nplugin = \"PROBE\"\nconfig = {{ mode = \"print\", content = \"{toml_forged}\", fail = \"x{toml_forged}\", message = \"m{toml_forged}\" }}\n"
        ),
    );
    let out = flowhost(["run", "flow.toml", "--no-db"])
        .dir(dir.path())
        .run();
    assert_exit(&out, 1);
    let log = stderr(&out);
    assert_escaped(&log);
    assert!(
        log.contains(
            "task `printer` failed: x\\u{1b}[2J\\nFAKE LOG LINE: m\\u{1b}[2J\\nFAKE LOG LINE"
        ),
        "{log}"
    );

    let forger = plugin("describe_escape").display().to_string();
    let out = flowhost(["describe", &forger]).run();
    assert_exit(&out, 0);
    assert_escaped(&stdout(&out));

    write(
        dir.path(),
        "forger.toml",
        &format!("name = \"forger\"\n\n[[task]]\nname = \"forger\"\nplugin = \"{forger}\"\n"),
    );
    let out = flowhost(["check", "forger.toml"]).dir(dir.path()).run();
    assert_exit(&out, 0);
    assert_escaped(&stdout(&out));
    let out = flowhost(["run", "forger.toml", "--no-db"])
        .dir(dir.path())
        .run();
    assert_exit(&out, 1);
    assert_escaped(&stderr(&out));
    let report_json = flowhost(["run", "forger.toml", "--no-db", "--json"])
        .dir(dir.path())
        .run();
    let report = stdout_json(&report_json);
    assert_eq!(
        report["tasks"][0]["error"]["message"],
        format!("failed{FORGED}"),
        "JSON keeps the raw text"
    );
}

#[test]
fn flow_and_task_names_outside_the_allowed_characters_are_validation_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "flow.toml",
        "name = \"my flow\"\n[store]\nvalue = 1\n\n[[task]]\nname = \"a\\u001b[2Jb\"\nplugin = \"PROBE\"\n",
    );
    let out = flowhost(["check", "flow.toml"]).dir(dir.path()).run();
    assert_exit(&out, 65);
    let log = stderr(&out);
    assert_contains(&log, "flow name `my flow` is not allowed");
    assert_contains(&log, "task name `a\\u{1b}[2Jb` is not allowed");
    assert!(!log.contains('\u{1b}'), "{log}");
}

// ---- plugin files --------------------------------------------------------------------------

#[test]
fn dev_zero_a_fifo_and_a_huge_sparse_file_as_plugin_fail_fast_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("plugin.wasm");
    mkfifo(&fifo);
    let sparse = dir.path().join("huge.wasm");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    for (path, says) in [
        (
            PathBuf::from("/dev/zero"),
            "it is a character device, not a regular file".to_owned(),
        ),
        (
            fifo,
            "it is a FIFO (named pipe), not a regular file".to_owned(),
        ),
        (
            sparse,
            format!(
                "it is {} bytes, over the 512 MiB cap on plugin files",
                3u64 << 30
            ),
        ),
    ] {
        let path = path.display().to_string();
        let out = flowhost_within(&["describe", &path], dir.path(), Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(65), "{path}: {}", stderr(&out));
        assert_contains(&stderr(&out), &format!("plugin {path} refused: {says}"));
    }
}
