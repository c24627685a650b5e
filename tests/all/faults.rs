//! The fault matrix: a plugin is untrusted code. Whatever it does — trap, panic, spin, eat
//! memory or stack, return too much, reach for files, environment or network it was not
//! granted, import what the host lacks — the host stays up, the run ends in the right state
//! with a reason naming the limit or fault, every task that already ran is reverted, and other
//! runs on the same engine are untouched.
//!
//! A result that is not JSON or misses a provided name is covered in `tests/engine.rs`
//! (`a_result_that_is_not_json_fails_the_task`, `a_result_missing_a_provided_name_fails_the_task_naming_it`).

use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::Output;
use std::sync::Arc;

use flowhost::{
    Access, Engine, EngineConfig, FlowSpec, FlowState, Limits, RunReport, Store, TaskError,
    TaskSpec, TaskState, Transition,
};
use serde_json::{Value, json};

use crate::kit::{
    Journal, Recorder, Workspace, assert_contains, assert_exit, assert_middle_revert_failed,
    assert_starts_with, call, exit_json, line_with, probe_file, repo_root, report_states,
    shared_engine as engine, snapshot, stderr, stdout, stdout_json,
};

fn value(v: Value) -> Store {
    [("value".to_owned(), v)].into_iter().collect()
}

/// Runs `before` (a healthy probe) then `faulty` (configured by `config`), and checks what
/// every row of the matrix shares: the flow is REVERTED, `before` ran and was reverted after
/// the faulty task's revert, and the host carries on. Returns the faulty task's error.
async fn faulty_after_a_healthy_task(
    faulty: impl FnOnce(TaskSpec) -> TaskSpec,
    config: Value,
) -> TaskError {
    let journal = Journal::new();
    let flow = FlowSpec::linear("faults")
        .add(journal.probe("before", json!({})))
        .add(faulty(journal.probe("faulty", config)));
    let report = engine().run(&flow, value(json!(1))).await.unwrap();
    assert_eq!(report.state, FlowState::Reverted, "{report:#?}");
    assert_eq!(
        report_states(&report),
        [TaskState::Reverted, TaskState::Reverted]
    );
    let journal = journal.calls();
    assert_eq!(journal.first(), Some(&call("execute", "before")));
    assert_eq!(
        journal.last(),
        Some(&call("revert", "before")),
        "the earlier task is reverted last"
    );
    assert!(
        report.fetch("before_out").is_none(),
        "a reverted result leaves the store"
    );
    report.tasks[1]
        .error
        .clone()
        .expect("the faulty task failed")
}

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    f(&mut limits);
    limits
}

/// What the faulty task's entry is given: `limits` as `f` sets them.
fn limited(f: impl FnOnce(&mut Limits)) -> impl FnOnce(TaskSpec) -> TaskSpec {
    move |t| t.limits(limits(f))
}

#[tokio::test]
async fn a_trap_in_execute_fails_the_task_and_reverts_the_earlier_one() {
    let error = faulty_after_a_healthy_task(|t| t, json!({"trap": true})).await;
    assert_eq!(error.code, "trap");
    assert_starts_with(&error.message, "trapped: ");
    assert_contains(&error.message, "unreachable");
}

#[tokio::test]
async fn a_loop_in_execute_fails_at_the_deadline_naming_it_and_the_task() {
    let faulty = json!({"mode": "loop"});
    let error = faulty_after_a_healthy_task(limited(|l| l.deadline_ms = Some(200)), faulty).await;
    assert_eq!(error.code, "deadline-exceeded");
    assert_eq!(
        error.message,
        "deadline of 200 ms exceeded by task `faulty` in execute"
    );
}

#[tokio::test]
async fn a_loop_in_revert_is_revert_failure_after_the_deadline_and_the_rest_still_revert() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("stuck-revert")
        .add(journal.probe("first", json!({})))
        .add(
            journal
                .probe("spinner", json!({"mode": "loop", "mode_in": "revert"}))
                .limits(limits(|l| l.deadline_ms = Some(200))),
        )
        .add(journal.probe("failing", json!({"fail": "boom"})));
    let report = engine().run(&flow, value(json!(1))).await.unwrap();

    assert_eq!(report.state, FlowState::Failure);
    assert_eq!(report.state, flowhost::FlowState::Failure);
    assert_middle_revert_failed(&report);
    let error = report.tasks[1].revert_error.clone().unwrap();
    assert_eq!(error.code, "deadline-exceeded");
    assert_eq!(
        error.message,
        "deadline of 200 ms exceeded by task `spinner` in revert"
    );
    assert!(report.tasks[1].error.is_none(), "its execute had succeeded");
    assert_eq!(
        journal.calls(),
        [
            call("execute", "first"),
            call("execute", "spinner"),
            call("execute", "failing"),
            call("revert", "failing"),
            call("revert", "spinner"),
            call("revert", "first"),
        ]
    );
}

#[tokio::test]
async fn unbounded_memory_growth_fails_naming_the_memory_cap() {
    let faulty = json!({"mode": "grow"});
    let error = faulty_after_a_healthy_task(limited(|l| l.memory_mib = Some(32)), faulty).await;
    assert_eq!(error.code, "memory-limit");
    assert_starts_with(&error.message, "memory cap of 32 MiB exceeded");
}

#[tokio::test]
async fn a_stack_overflow_fails_the_task_and_the_host_runs_on() {
    let error = faulty_after_a_healthy_task(|t| t, json!({"mode": "recurse"})).await;
    // A Rust guest's stack lives in linear memory: overflowing it runs off the start of memory.
    assert_eq!(error.code, "trap");
    assert_starts_with(&error.message, "trapped: ");

    let journal = Journal::new();
    let flow = FlowSpec::linear("after").add(journal.probe("healthy", json!({})));
    let report = engine()
        .run(&flow, value(json!("still here")))
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Success);
    assert_eq!(report.fetch("healthy_out").unwrap()["value"], "still here");
}

#[tokio::test]
async fn a_100_mb_result_fails_naming_the_result_cap() {
    let error = faulty_after_a_healthy_task(|t| t, json!({"mode": "huge"})).await;
    assert_eq!(error.code, "result-too-large");
    assert_eq!(
        error.message,
        "result of 104857602 bytes exceeds the result cap of 16384 KiB"
    );
}

#[tokio::test]
async fn a_result_can_never_outgrow_the_memory_cap_so_the_host_copy_is_bounded_by_it() {
    let faulty = json!({"mode": "huge"});
    let error = faulty_after_a_healthy_task(limited(|l| l.memory_mib = Some(64)), faulty).await;
    assert_eq!(
        error.code, "memory-limit",
        "the 100 MB result is stopped inside the sandbox: {error:?}"
    );
    assert_starts_with(&error.message, "memory cap of 64 MiB exceeded");
}

#[tokio::test]
async fn arguments_over_the_cap_fail_the_task_before_the_plugin_sees_them() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("big-args")
        .add(journal.probe("before", json!({})))
        .add(
            journal
                .probe("big", json!({}))
                .limits(limits(|l| l.args_kib = Some(1))),
        );
    let report = engine()
        .run(&flow, value(json!("x".repeat(2048))))
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Reverted);
    let error = report.tasks[1].error.clone().unwrap();
    assert_eq!(error.code, "args-too-large");
    assert_eq!(
        error.message,
        "arguments of 2060 bytes exceed the arguments cap of 1 KiB"
    );
    let journal = journal.calls();
    assert!(
        !journal.contains(&call("execute", "big")),
        "the plugin never got the arguments: {journal:?}"
    );
    assert!(
        !journal.contains(&call("revert", "big")),
        "a task that never ran is not reverted: {journal:?}"
    );
    assert_eq!(journal.last(), Some(&call("revert", "before")));
    assert_eq!(
        report.tasks[1].state,
        TaskState::Failure,
        "it stays FAILURE: nothing was undone"
    );
    assert_eq!(report.tasks[0].state, TaskState::Reverted);
}

#[tokio::test]
async fn a_fuel_budget_stops_a_loop_deterministically_and_needs_a_metered_engine() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("fuel")
        .add(journal.probe("before", json!({})))
        .add(
            journal
                .probe("burner", json!({"mode": "loop"}))
                .limits(limits(|l| l.fuel = Some(5_000_000))),
        );
    let refused = engine()
        .run(&flow, value(json!(1)))
        .await
        .expect_err("no fuel metering on this engine");
    assert!(
        refused
            .to_string()
            .contains("task `burner`: `limits.fuel` needs an engine with fuel metering"),
        "{refused}"
    );

    let metered = Engine::with_config(&EngineConfig::default().fuel(true)).unwrap();
    let report = metered.run(&flow, value(json!(1))).await.unwrap();
    assert_eq!(report.state, FlowState::Reverted);
    let error = report.tasks[1].error.clone().unwrap();
    assert_eq!(error.code, "fuel-exhausted");
    assert_eq!(
        error.message,
        "fuel budget of 5000000 exhausted by task `burner` in execute"
    );
    assert_eq!(report.tasks[1].limits.fuel, Some(5_000_000));
    assert_eq!(
        report.tasks[0].limits.fuel, None,
        "an entry without a budget runs unmetered by a budget"
    );
    assert_eq!(report.tasks[0].state, TaskState::Reverted);
}

#[tokio::test]
async fn files_outside_the_grants_are_unreachable_and_a_read_only_grant_refuses_writes() {
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("hello.txt"), "hi").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep.txt"), "original").unwrap();
    let host_passwd = std::fs::read("/etc/passwd").ok();
    let before = (snapshot(granted.path()), snapshot(outside.path()));

    let attempt = |config: Value, mode: Access| {
        let granted = granted.path().to_path_buf();
        async move {
            let journal = Journal::new();
            let flow = FlowSpec::linear("fs").add(
                journal
                    .probe("fs", config)
                    .grant_dir(granted, "/data", mode),
            );
            engine().run(&flow, value(json!(1))).await.unwrap()
        }
    };
    let read = |path: &str| json!({"mode": "read_file", "path": path});
    let write = |path: &str| json!({"mode": "write_file", "path": path, "content": "pwned"});
    let keep = outside.path().join("keep.txt").display().to_string();

    let report = attempt(read("/data/hello.txt"), Access::ReadOnly).await;
    assert_eq!(
        report.fetch("fs_out"),
        Some(&json!("hi")),
        "a granted directory is readable"
    );

    for (config, mode, what) in [
        (read("/etc/passwd"), Access::ReadWrite, "/etc/passwd"),
        (
            read(&keep),
            Access::ReadWrite,
            "a host path outside the grants",
        ),
        (
            read("/data/../etc/passwd"),
            Access::ReadWrite,
            "a `..` escape from the grant",
        ),
        (
            write("/etc/passwd"),
            Access::ReadWrite,
            "writing /etc/passwd",
        ),
        (
            write(&keep),
            Access::ReadWrite,
            "writing a host file outside the grants",
        ),
        (
            write("/data/../escaped.txt"),
            Access::ReadWrite,
            "writing through a `..` escape",
        ),
        (
            write("/data/hello.txt"),
            Access::ReadOnly,
            "writing into a read-only grant",
        ),
        (
            write("/data/new.txt"),
            Access::ReadOnly,
            "creating a file in a read-only grant",
        ),
    ] {
        let report = attempt(config, mode).await;
        assert_eq!(report.state, FlowState::Reverted, "{what}");
        let error = report.tasks[0].error.clone().unwrap();
        assert_eq!(
            error.code, "io",
            "{what}: the plugin itself saw an I/O error: {error:?}"
        );
    }
    assert_eq!(
        (snapshot(granted.path()), snapshot(outside.path())),
        before,
        "no host file changed"
    );
    assert_eq!(std::fs::read("/etc/passwd").ok(), host_passwd);
    assert!(
        !granted
            .path()
            .parent()
            .unwrap()
            .join("escaped.txt")
            .exists()
    );

    let report = attempt(write("/data/new.txt"), Access::ReadWrite).await;
    assert_eq!(
        report.state,
        FlowState::Success,
        "a read-write grant takes writes"
    );
    assert_eq!(
        std::fs::read_to_string(granted.path().join("new.txt")).unwrap(),
        "pwned"
    );
}

#[tokio::test]
async fn tcp_and_name_lookup_fail_inside_the_plugin_and_nothing_reaches_the_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for addr in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let journal = Journal::new();
        let flow =
            FlowSpec::linear("net").add(journal.probe("net", json!({"mode": "tcp", "addr": addr})));
        let report = engine().run(&flow, value(json!(1))).await.unwrap();
        assert_eq!(report.state, FlowState::Reverted, "{addr}");
        let error = report.tasks[0].error.clone().unwrap();
        assert_eq!(
            error.code, "io",
            "the plugin's own connect failed: {error:?}"
        );
        assert!(error.message.starts_with(&addr), "{}", error.message);
    }
    let accepted = listener.accept();
    assert_eq!(
        accepted.err().map(|e| e.kind()),
        Some(ErrorKind::WouldBlock),
        "the listener saw no connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_run_completes_while_others_spin_and_eat_memory_on_the_same_engine() {
    let recorder = Arc::new(Recorder::default());
    let mut shared = Engine::new().unwrap();
    shared.listen(recorder.clone());
    let journal = Journal::new();
    let spinning = FlowSpec::linear("spinning").add(
        journal
            .probe("spin", json!({"mode": "loop"}))
            .limits(limits(|l| l.deadline_ms = Some(5_000))),
    );
    let eating = FlowSpec::linear("eating").add(
        journal
            .probe("eat", json!({"mode": "grow"}))
            .limits(limits(|l| l.memory_mib = Some(128))),
    );
    let mut healthy = FlowSpec::linear("healthy");
    for step in 0..3 {
        let from = if step == 0 {
            "value".to_owned()
        } else {
            format!("step{}_out", step - 1)
        };
        healthy = healthy.add(
            journal
                .probe(&format!("step{step}"), json!({"mode": "sleep", "ms": 20}))
                .rebind("value", from),
        );
    }

    let start = |flow: FlowSpec| {
        let engine = shared.clone();
        tokio::spawn(async move { engine.run(&flow, value(json!("payload"))).await.unwrap() })
    };
    let spin = start(spinning);
    let eat = start(eating);
    let ok = start(healthy);
    let (spin, eat, ok): (RunReport, RunReport, RunReport) =
        (spin.await.unwrap(), eat.await.unwrap(), ok.await.unwrap());

    assert_eq!(ok.state, FlowState::Success);
    assert_eq!(
        ok.fetch("step2_out").unwrap()["value"]["value"]["value"],
        "payload"
    );
    assert_eq!(
        spin.tasks[0].error.as_ref().unwrap().code,
        "deadline-exceeded"
    );
    assert_eq!(eat.tasks[0].error.as_ref().unwrap().code, "memory-limit");

    let events = recorder.events();
    let position = |run: &str, pred: &dyn Fn(&Transition) -> bool| {
        events
            .iter()
            .position(|e| e.run_id == run && pred(&e.transition))
            .unwrap()
    };
    let ended = |t: &Transition| {
        matches!(
            t,
            Transition::Flow {
                to: FlowState::Success | FlowState::Reverted | FlowState::Failure,
                ..
            }
        )
    };
    let started = |t: &Transition| {
        matches!(
            t,
            Transition::Task {
                to: TaskState::Running,
                ..
            }
        )
    };
    assert!(
        position(&spin.run_id, &started) < position(&ok.run_id, &ended),
        "the loop was already spinning"
    );
    assert!(
        position(&ok.run_id, &ended) < position(&spin.run_id, &ended),
        "the healthy run finished while the other was still stuck in its loop"
    );
}

/// Runs `flowhost ARGS…` in the workspace to the end, with environment `env`.
fn run(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = ws.command(args);
    command.envs(env.iter().copied());
    command.run()
}

/// Writes the workspace's `flow.toml`, `PROBE` standing for the probe plugin.
fn write_flow(ws: &Workspace, body: &str) {
    probe_file(ws.root(), "flow.toml", body);
}

const BEFORE: &str = r#"
[[task]]
name = "before"
plugin = "PROBE"
provides = ["before_out"]
config = { label = "before", journal = true }
dirs = [{ host = "journal", guest = "/journal", mode = "rw" }]
"#;

#[test]
fn a_panic_message_reaches_the_report_and_the_log_tagged_with_the_task() {
    let ws = Workspace::new();
    write_flow(
        &ws,
        &format!(
            "name = \"panicky\"\n[store]\nvalue = 1\n{BEFORE}\n[[task]]\nname = \"boom\"\nplugin = \"PROBE\"\nprovides = [\"boom_out\"]\nconfig = {{ panic = \"disk on fire\" }}\n"
        ),
    );
    let out = run(&ws, &["run", "flow.toml", "--json"], &[]);
    // Reverted.
    let report = exit_json(&out, 1);
    assert_eq!(report["state"], "REVERTED");
    assert_eq!(report["tasks"][0]["state"], "REVERTED");
    let error = &report["tasks"][1]["error"];
    assert_eq!(error["code"], "trap");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("trapped: ") && message.contains("disk on fire"),
        "{message}"
    );

    let log = stderr(&out);
    let panic_line = line_with(&log, "panicked at");
    assert_contains(panic_line, "task=\"boom\"");
    assert_contains(panic_line, "stream=\"stderr\"");
    assert!(
        log.lines()
            .any(|l| l.contains("disk on fire") && l.contains("task=\"boom\"")),
        "{log}"
    );
    assert!(
        log.contains("probe before: execute") && log.contains("task=\"before\""),
        "{log}"
    );
}

#[test]
fn a_deadline_failure_in_the_cli_names_the_task_and_the_limit() {
    let ws = Workspace::new();
    write_flow(
        &ws,
        &format!(
            "name = \"spin\"\n[store]\nvalue = 1\n[limits]\ndeadline_ms = 300\n{BEFORE}\n[[task]]\nname = \"spinner\"\nplugin = \"PROBE\"\nprovides = [\"spin_out\"]\nconfig = {{ mode = \"loop\" }}\n"
        ),
    );
    let out = run(&ws, &["run", "flow.toml"], &[]);
    assert_exit(&out, 1);
    let log = stderr(&out);
    assert_contains(
        &log,
        "flow `spin` REVERTED: task `spinner` failed: deadline-exceeded: deadline of 300 ms exceeded by task `spinner` in execute",
    );
    let journal = ws.calls();
    assert_eq!(
        journal,
        [call("execute", "before"), call("revert", "before")]
    );

    let out = run(&ws, &["run", "flow.toml", "--json"], &[]);
    let report = stdout_json(&out);
    let spinner = &report["tasks"][1];
    assert_eq!(spinner["limits"]["deadline_ms"], 300);
    assert!(
        spinner["duration_ms"].as_f64().unwrap() >= 300.0,
        "it ran until the deadline: {spinner}"
    );
}

#[test]
fn only_granted_environment_variables_are_visible_and_check_names_them_without_values() {
    let ws = Workspace::new();
    let entry = |name: &str, var: &str, extra: &str| {
        format!(
            "[[task]]\nname = \"{name}\"\nplugin = \"PROBE\"\nprovides = [\"{name}\"]\nconfig = {{ mode = \"env\", name = \"{var}\" }}\n{extra}\n"
        )
    };
    write_flow(
        &ws,
        &format!(
            "name = \"env\"\n[store]\nvalue = 1\n{}{}{}{}",
            entry("granted", "REGION", "env = [\"REGION\"]"),
            entry("fixed", "MODE", "env_set = { MODE = \"dry-run\" }"),
            entry("ungranted", "API_TOKEN", "env = [\"REGION\"]"),
            entry("home", "HOME", ""),
        ),
    );
    let vars = [("REGION", "eu-west"), ("API_TOKEN", "s3cret")];
    let out = run(
        &ws,
        &[
            "run",
            "flow.toml",
            "--fetch",
            "granted",
            "--fetch",
            "fixed",
            "--fetch",
            "ungranted",
            "--fetch",
            "home",
        ],
        &vars,
    );
    assert_exit(&out, 0);
    let fetched: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        fetched,
        json!({"granted": "eu-west", "fixed": "dry-run", "ungranted": null, "home": null})
    );

    let out = run(&ws, &["check", "flow.toml"], &vars);
    let plan = stdout(&out);
    assert_contains(&plan, "env:      REGION (from host)");
    assert_contains(&plan, "env:      MODE (set by flow)");
    assert_contains(&plan, "network:  none");
    let out = run(&ws, &["check", "flow.toml", "--json"], &vars);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["tasks"][0]["sandbox"]["env"],
        json!([{"name": "REGION", "source": "host"}])
    );
    assert!(!stdout(&out).contains("eu-west"), "values are not printed");

    let out = run(&ws, &["check", "flow.toml"], &[]);
    assert_exit(&out, 65);
    assert_contains(
        &stderr(&out),
        "task `granted`: `env` grants variable `REGION`, which is not set in flowhost's environment",
    );
}

#[test]
fn check_shows_every_limit_and_grant_and_the_run_report_the_limits_applied() {
    let ws = Workspace::new();
    write_flow(
        &ws,
        "name = \"limits\"\n[store]\nvalue = 1\n[limits]\ndeadline_ms = 4000\nmemory_mib = 48\n\n[[task]]\nname = \"t\"\nplugin = \"PROBE\"\nlimits = { result_kib = 8, args_kib = 2, fuel = 900000000 }\ndirs = [{ host = \"journal\", guest = \"/j\" }]\n",
    );
    let out = run(&ws, &["check", "flow.toml"], &[]);
    assert_exit(&out, 0);
    let plan = stdout(&out);
    assert_contains(
        &plan,
        "limits:   deadline 4000 ms, memory 48 MiB, result 8 KiB, args 2 KiB, fuel 900000000, handles 1024, http_requests 64, http_body_mib 64",
    );
    assert_contains(&plan, "/j (ro, pinned: device ");

    let out = run(&ws, &["run", "flow.toml", "--json"], &[]);
    // A fuel budget makes the CLI meter fuel.
    let report = exit_json(&out, 0);
    assert_eq!(
        report["tasks"][0]["limits"],
        json!({"deadline_ms": 4000, "memory_mib": 48, "result_kib": 8, "args_kib": 2, "fuel": 900000000, "handles": 1024, "http_requests": 64, "http_body_mib": 64})
    );
}

#[test]
fn a_plugin_importing_what_the_host_lacks_is_rejected_at_validation_and_nothing_runs() {
    let ws = Workspace::new();
    let fixture = repo_root().join("tests/fixtures/missing_import.wat");
    write_flow(
        &ws,
        &format!(
            "name = \"imports\"\n[store]\nvalue = 1\n{BEFORE}\n[[task]]\nname = \"alien\"\nplugin = \"{}\"\nprovides = [\"x\"]\n",
            fixture.display()
        ),
    );
    for command in ["check", "run"] {
        let out = run(&ws, &[command, "flow.toml"], &[]);
        assert_exit(&out, 65);
        let stderr = stderr(&out);
        assert_contains(
            &stderr,
            &format!(
                "task `alien`: plugin {} imports `acme:missing/thing@1.0.0`, which the host does not provide",
                fixture.display()
            ),
        );
    }
    assert!(ws.calls().is_empty(), "nothing ran");
}

/// The process's peak resident memory, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

#[cfg(target_os = "linux")]
#[test]
fn a_100_mb_result_keeps_host_memory_within_the_memory_cap() {
    const CAP_MIB: u64 = 128;
    let ws = Workspace::new();
    let journal = ws.path("journal");
    let probe_entry = |name: &str, config: &str| {
        format!(
            "[[task]]\nname = \"{name}\"\nplugin = \"PROBE\"\nprovides = [\"{name}_out\"]\nconfig = {{ label = \"{name}\", journal = true, {config} }}\ndirs = [{{ host = \"journal\", guest = \"/journal\", mode = \"rw\" }}]\n"
        )
    };
    write_flow(
        &ws,
        &format!(
            "name = \"huge\"\n[store]\nvalue = 1\n{}{}{}limits = {{ memory_mib = {CAP_MIB} }}\n",
            probe_entry("gate", "mode = \"wait_file\", path = \"/journal/start\""),
            probe_entry(
                "hold",
                "mode = \"wait_file\", mode_in = \"revert\", path = \"/journal/go\""
            ),
            probe_entry("huge", "mode = \"huge\""),
        ),
    );
    let mut child = ws
        .command(&["run", "flow.toml", "--json", "-q"])
        .start_piped();
    // Paused in `gate`: the plugin is compiled and has run once; this is the host's baseline.
    ws.wait_for(&mut child, "execute", "gate");
    let baseline = peak_rss_mib(child.id());
    std::fs::write(journal.join("start"), "").unwrap();
    // Paused in `hold`'s revert: the 100 MB result has come and gone.
    ws.wait_for(&mut child, "revert", "hold");
    let peak = peak_rss_mib(child.id());
    std::fs::write(journal.join("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();

    let report = exit_json(&out, 1);
    assert_eq!(report["tasks"][2]["error"]["code"], "result-too-large");
    // The guest's memory is at most the cap, and the host's copy of the result is at most what
    // the guest held: no further copies (parsing, logging) of an oversized result.
    assert!(
        peak.saturating_sub(baseline) <= 2 * CAP_MIB + 32,
        "peak {peak} MiB over a baseline of {baseline} MiB for a {CAP_MIB} MiB memory cap"
    );
}
