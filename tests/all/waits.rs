//! Waits: entries without a plugin that hold their run, durably, until a signal comes
//! (`wait = { signal = "approved", timeout_ms = … }`) or a due time passes (`wait = { for_ms
//! = … }`, `wait = { until = … }`). A run with only signal waits left is WAITING and holds no
//! executor: `flowhost run` exits 4, `runs signal` keeps the signal, `runs resume` (or a
//! worker, or `serve`) goes on. Timers are journaled with their due time, so a killed run
//! waits only what is left.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowhost::runs::{PgRunDb, RunDb, RunFilter};
use flowhost::{FlowState, TaskState};
use serde_json::{Value, json};

use crate::kit::cdp::Browser;
use crate::kit::serving::Served;
use crate::kit::{
    Postgres, Probe, Workspace, assert_contains, assert_exit, kill, signal, stderr, stdout,
    stdout_json, wait_until,
};

/// The exit code of a run left WAITING.
const WAITING: i32 = 4;

/// A wait entry, as TOML appended to the probe before it.
fn wait_entry(name: &str, wait: &str, provides: Option<&str>) -> String {
    let provides = provides
        .map(|p| format!("provides = [\"{p}\"]\n"))
        .unwrap_or_default();
    format!("\n[[task]]\nname = \"{name}\"\nwait = {wait}\n{provides}")
}

/// Writes `flow.toml`: probe `a` (configured by `a`), the approval wait `approve` (`wait`,
/// storing `approval`), then probe `c` reading `approval`.
fn approval_flow(ws: &Workspace, a: Value, wait: &str) -> PathBuf {
    ws.write_flow(
        "approval",
        "",
        &[
            Probe::new("a")
                .config(a)
                .toml(&wait_entry("approve", wait, Some("approval"))),
            Probe::new("c").reads("approval"),
        ],
    )
}

/// Unix seconds now.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_signal_sent_while_the_run_waits_goes_into_the_store_and_the_run_succeeds() {
    let ws = Workspace::new();
    approval_flow(
        &ws,
        json!({}),
        r#"{ signal = "approved", timeout_ms = 3600000 }"#,
    );
    let run = ws.recording(&["run", "flow.toml"]).run();
    assert_exit(&run, WAITING);
    assert_contains(
        &stderr(&run),
        "task `approve` waits for signal `approved` until ",
    );
    let id = ws.only_run().id;
    assert_eq!(ws.only_run().state, FlowState::Waiting);
    assert_eq!(ws.executions(&["a", "c"]), [1, 0]);
    let shown = ws.runs(&["show", &id]);
    assert_contains(
        &stdout(&shown),
        "waiting for signal `approved` (timeout 3600000 ms) until ",
    );
    let record = ws.show(&id);
    assert_eq!(record["state"], "WAITING");
    assert_eq!(record["tasks"][1]["state"], "WAITING");
    assert!(record["lease"].is_null(), "a WAITING run holds no executor");

    let sent = ws.runs(&["signal", &id, "approved", "--data", r#"{"by": "ops"}"#]);
    assert_exit(&sent, 0);
    assert_contains(&stdout(&sent), "signal `approved` sent to run");
    let resumed = ws.runs(&["resume", &id, "--json"]);
    assert_exit(&resumed, 0);
    let report = stdout_json(&resumed);
    assert_eq!(report["state"], "SUCCESS");
    assert_eq!(report["store"]["approval"], json!({ "by": "ops" }));
    assert_eq!(report["store"]["c_out"]["value"], json!({ "by": "ops" }));
    assert_eq!(
        ws.executions(&["a", "c"]),
        [1, 1],
        "`a` is not executed again"
    );
    let finished = ws.record(&id);
    assert_eq!(finished.tasks[1].state, TaskState::Success);
    assert_eq!(
        finished.tasks[1].retry_at, None,
        "a wait that ended has no due time"
    );
}

#[test]
fn a_signal_sent_before_the_run_reaches_its_wait_is_kept_for_it() {
    let ws = Workspace::new();
    approval_flow(
        &ws,
        json!({ "mode": "wait_file", "path": "/signal/go" }),
        r#"{ signal = "approved" }"#,
    );
    let mut child = ws.recording(&["run", "flow.toml"]).start();
    ws.wait_for(&mut child, "execute", "a");
    let id = ws.only_run().id;
    let sent = ws.runs(&["signal", &id, "approved", "--data", "42"]);
    assert_exit(&sent, 0);
    assert_contains(&stdout(&sent), "(RUNNING)");
    ws.release();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the run found its signal and never waited"
    );
    let record = ws.record(&id);
    assert_eq!(record.summary.state, FlowState::Success);
    assert_eq!(
        record.final_store.unwrap().fetch("approval"),
        Some(&json!(42))
    );
}

#[test]
fn a_signal_wait_past_its_timeout_fails_signal_timeout_and_reverts_in_reverse_order() {
    let ws = Workspace::new();
    ws.write_flow(
        "approval",
        "",
        &[
            Probe::new("a"),
            Probe::new("b").toml(&wait_entry(
                "approve",
                r#"{ signal = "approved", timeout_ms = 200 }"#,
                Some("approval"),
            )),
            Probe::new("c").reads("approval"),
        ],
    );
    let run = ws.recording(&["run", "flow.toml"]).run();
    assert_exit(&run, WAITING);
    let id = ws.only_run().id;
    let due = ws.record(&id).tasks[2]
        .retry_at
        .expect("a signal wait with a timeout journals when it ends");
    wait_until("the wait's timeout passed", Duration::from_secs(30), || {
        now() > due
    });
    let resumed = ws.runs(&["resume", &id, "--json"]);
    assert_exit(&resumed, 1);
    let report = stdout_json(&resumed);
    assert_eq!(report["state"], "REVERTED");
    assert_eq!(report["tasks"][2]["state"], "FAILURE");
    assert_eq!(report["tasks"][2]["error"]["code"], "signal-timeout");
    assert_eq!(report["tasks"][3]["state"], "PENDING");
    let journal = ws.journal();
    assert!(
        journal.position("revert", "b") < journal.position("revert", "a"),
        "reverted in reverse order: {:?}",
        ws.calls()
    );
    assert_eq!(ws.executions(&["a", "b", "c"]), [1, 1, 0]);
}

#[test]
fn a_run_killed_during_a_wait_takes_its_signal_on_resume_and_executes_nothing_twice() {
    let ws = Workspace::new();
    // A graph: the approval and a 3 s timer wait side by side after `a`; `flowhost run`
    // sleeps out the timer in-process, so it is alive while `approve` waits.
    ws.write_flow(
        "approval",
        "pattern = \"graph\"",
        &[
            Probe::new("a").toml(&format!(
                "{}after = [\"a\"]\n{}after = [\"a\"]\n",
                wait_entry("approve", r#"{ signal = "approved" }"#, Some("approval")),
                wait_entry("nap", "{ for_ms = 3000 }", None),
            )),
            Probe::new("c")
                .reads("approval")
                .toml("after = [\"nap\"]\n"),
        ],
    );
    let mut child = ws.recording(&["run", "flow.toml"]).start();
    ws.wait_for_record(&mut child, "both waits began", |record| {
        (record.tasks[1].state == TaskState::Waiting && record.tasks[2].state == TaskState::Waiting)
            .then_some(())
    });
    kill(child);
    let id = ws.only_run().id;
    assert_eq!(ws.only_run().state, FlowState::Running);
    assert_exit(
        &ws.runs(&["signal", &id, "approved", "--data", "\"yes\""]),
        0,
    );
    let resumed = ws.runs(&["resume", &id, "--json"]);
    assert_exit(&resumed, 0);
    let report = stdout_json(&resumed);
    assert_eq!(report["store"]["approval"], "yes");
    assert_eq!(
        ws.executions(&["a", "c"]),
        [1, 1],
        "nothing is executed twice: `a` succeeded before the kill"
    );
}

#[test]
fn a_run_killed_during_a_timer_waits_only_what_is_left_of_it_on_resume() {
    let ws = Workspace::new();
    ws.write_flow(
        "napping",
        "",
        &[
            Probe::new("a").toml(&wait_entry("nap", "{ for_ms = 2500 }", None)),
            Probe::new("c").reads("a_out"),
        ],
    );
    let mut child = ws.recording(&["run", "flow.toml"]).start();
    let due = ws.wait_for_record(&mut child, "`nap` is WAITING", |record| {
        (record.tasks[1].state == TaskState::Waiting).then(|| record.tasks[1].retry_at.unwrap())
    });
    kill(child);
    let id = ws.only_run().id;
    let resumed = ws.runs(&["resume", &id]);
    assert_exit(&resumed, 0);
    let record = ws.record(&id);
    let nap = &record.tasks[1].history;
    let states: Vec<TaskState> = nap.iter().map(|change| change.to).collect();
    assert_eq!(
        states,
        [TaskState::Waiting, TaskState::Success],
        "the resumed run kept the journaled due time: it did not wait again from the start"
    );
    let ended = iso_seconds(&nap[1].at);
    assert!(
        ended >= due - 0.001,
        "the timer ended at {ended}, before its journaled due time {due}"
    );
    assert_eq!(ws.executions(&["a", "c"]), [1, 1]);
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS.sssZ`.
fn iso_seconds(iso: &str) -> f64 {
    flowhost::parse_rfc3339(iso)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_wait_that_is_not_one_thing_to_wait_for_is_refused_naming_the_entry_and_the_key() {
    let ws = Workspace::new();
    std::fs::write(
        ws.path("flow.toml"),
        r#"name = "bad"
[[task]]
name = "both"
wait = { signal = "go", for_ms = 10 }
[[task]]
name = "timer"
wait = { for_ms = 10, timeout_ms = 5 }
provides = ["x"]
[[task]]
name = "when"
wait = { until = "next tuesday" }
[[task]]
name = "plugged"
plugin = "p.wasm"
wait = { signal = "go" }
"#,
    )
    .unwrap();
    let check = ws.flowhost(&["check", "flow.toml", "--json"]);
    assert_exit(&check, 65);
    let problems: Vec<(String, String)> = stdout_json(&check)["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["task"].as_str().unwrap_or_default().to_owned(),
                p["field"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("both", "wait"),
        ("timer", "wait.timeout_ms"),
        ("timer", "provides"),
        ("when", "wait.until"),
        ("plugged", "plugin"),
    ] {
        assert!(
            problems.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not among {problems:?}"
        );
    }
}

#[test]
fn check_shows_what_each_wait_waits_for() {
    let ws = Workspace::new();
    approval_flow(
        &ws,
        json!({}),
        r#"{ signal = "approved", timeout_ms = 60000 }"#,
    );
    let check = ws.flowhost(&["check", "flow.toml"]);
    assert_exit(&check, 0);
    assert_contains(
        &stdout(&check),
        "2. approve — waits for signal `approved` (timeout 60000 ms)",
    );
    let json = stdout_json(&ws.flowhost(&["check", "flow.toml", "--json"]));
    assert_eq!(
        json["tasks"][1]["wait"],
        json!({ "signal": "approved", "timeout_ms": 60000 })
    );
}

#[test]
fn the_signal_route_needs_the_token_and_serve_goes_on_with_the_waiting_run() {
    let ws = Workspace::new();
    // Served as flow `flow`: its grants are relative to the workspace.
    approval_flow(&ws, json!({}), r#"{ signal = "approved" }"#);
    let flows = ws.root().to_path_buf();
    std::fs::write(ws.path("token"), "a-token-long-enough-for-tests").unwrap();
    let token_file = ws.path("token");
    let served = Served::start(&ws, &flows, &["--token-file", token_file.to_str().unwrap()]);
    let token = Some("a-token-long-enough-for-tests");
    let (status, started) = served.post("/v1/flows/flow/runs", "", token);
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    wait_until("the run is WAITING", Duration::from_secs(60), || {
        served.get(&format!("/v1/runs/{id}"))["state"] == "WAITING"
    });
    let route = format!("/v1/runs/{id}/signals/approved");
    let (status, _) = served.post(&route, r#"{"ok": true}"#, None);
    assert_eq!(status, 401, "the route needs the token");
    let (status, _) = served.post("/v1/runs/no-such-run/signals/approved", "", token);
    assert_eq!(status, 404);
    let (status, answer) = served.post(&route, r#"{"ok": true}"#, token);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["state"], "WAITING");
    assert_eq!(answer["resumed"], true);
    wait_until("the run succeeded", Duration::from_secs(60), || {
        served.get(&format!("/v1/runs/{id}"))["state"] == "SUCCESS"
    });
    let document = served.get(&format!("/v1/runs/{id}"));
    assert_eq!(document["tasks"][1]["state"], "SUCCESS");
    let (status, _) = served.post(&route, "", token);
    assert_eq!(status, 409, "a finished run keeps no signal");
}

/// A `flowhost worker` on `url`, its log in `log`.
fn worker(ws: &Workspace, url: &str, log: &str) -> Child {
    let plugins = ws.path("worker-plugins");
    let log = std::fs::File::create(ws.path(log)).unwrap();
    ws.command(&[
        "worker",
        "--db",
        url,
        "--plugin-dir",
        plugins.to_str().unwrap(),
        "--poll",
        "200ms",
    ])
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .unwrap()
}

/// The state and lease holder of the only run on `pg`.
fn only_pg_run(pg: &Postgres) -> (String, FlowState, bool) {
    let db = PgRunDb::connect(&pg.url()).unwrap();
    let run = db.list(&RunFilter::default()).unwrap().remove(0);
    (run.id, run.state, run.lease.is_some())
}

#[test]
fn on_postgres_a_worker_releases_a_waiting_run_and_another_continues_it_after_the_signal() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    approval_flow(&ws, json!({}), r#"{ signal = "approved" }"#);
    let submitted = ws.flowhost(&["submit", "flow.toml", "--db", &pg.url()]);
    assert_exit(&submitted, 0);
    let mut first = worker(&ws, &pg.url(), "first.log");
    wait_until(
        "the run is WAITING and released",
        Duration::from_secs(120),
        || {
            let (_, state, held) = only_pg_run(&pg);
            state == FlowState::Waiting && !held
        },
    );
    signal(&first, "-TERM");
    assert!(first.wait().unwrap().success());
    let (id, _, _) = only_pg_run(&pg);
    let mut second = worker(&ws, &pg.url(), "second.log");
    let sent = ws.flowhost(&[
        "runs",
        "signal",
        &id,
        "approved",
        "--data",
        "\"ok\"",
        "--db",
        &pg.url(),
    ]);
    assert_exit(&sent, 0);
    wait_until(
        "the second worker finished the run",
        Duration::from_secs(120),
        || only_pg_run(&pg).1 == FlowState::Success,
    );
    signal(&second, "-TERM");
    assert!(second.wait().unwrap().success());
    assert_eq!(ws.executions(&["a", "c"]), [1, 1]);
    let second_log = std::fs::read_to_string(ws.path("second.log")).unwrap();
    assert_contains(&second_log, "resuming from WAITING");
    let record = PgRunDb::connect(&pg.url())
        .unwrap()
        .get(&id)
        .unwrap()
        .unwrap();
    assert_eq!(
        record.final_store.unwrap().fetch("approval"),
        Some(&json!("ok"))
    );
}

#[test]
fn on_postgres_a_sleeping_run_holds_no_worker_and_is_claimed_when_due() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    ws.write_flow(
        "napping",
        "",
        &[
            Probe::new("a").toml(&wait_entry("nap", "{ for_ms = 3000 }", None)),
            Probe::new("c").reads("a_out"),
        ],
    );
    assert_exit(&ws.flowhost(&["submit", "flow.toml", "--db", &pg.url()]), 0);
    let mut one = worker(&ws, &pg.url(), "worker.log");
    wait_until("the run sleeps, released", Duration::from_secs(120), || {
        let (_, state, held) = only_pg_run(&pg);
        state == FlowState::Waiting && !held
    });
    wait_until(
        "the run was claimed when due and finished",
        Duration::from_secs(120),
        || only_pg_run(&pg).1 == FlowState::Success,
    );
    signal(&one, "-TERM");
    assert!(one.wait().unwrap().success());
    assert_eq!(ws.executions(&["a", "c"]), [1, 1]);
}

#[test]
fn the_console_shows_a_waiting_run_and_its_button_sends_the_signal() {
    let ws = Workspace::new();
    approval_flow(
        &ws,
        json!({}),
        r#"{ signal = "approved", timeout_ms = 3600000 }"#,
    );
    let served = Served::start(&ws, ws.root(), &[]);
    let (status, started) = served.post("/v1/flows/flow/runs", "", None);
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    let mut browser = Browser::start(1366, 900);
    browser.open(&format!("{}/runs/{id}", served.base));
    browser.wait_for(
        "document.querySelector('h1 .badge[data-state=WAITING]') && document.querySelector('#waiting button[data-signal=approved]')",
        "the run page shows the wait and its button",
    );
    let said = browser.eval("document.querySelector('#waiting').innerText");
    assert_contains(said.as_str().unwrap(), "waits for signal approved until ");
    let shots = crate::kit::repo_root().join("target/console");
    std::fs::create_dir_all(&shots).unwrap();
    browser.screenshot(&shots.join("waiting.png"));
    browser.eval(
        "(() => { document.querySelector('#waiting textarea').value = '{\"by\": \"console\"}'; \
         document.querySelector('#waiting button[data-signal=approved]').click(); })()",
    );
    browser.wait_for(
        "document.querySelector('h1 .badge[data-state=SUCCESS]')",
        "the run goes on and succeeds",
    );
    assert_eq!(
        served.get(&format!("/v1/runs/{id}"))["final_store"]["approval"],
        json!({ "by": "console" })
    );
}

#[test]
fn serve_resumes_a_waiting_run_at_its_timeout_and_the_flow_reverts() {
    let ws = Workspace::new();
    approval_flow(
        &ws,
        json!({}),
        r#"{ signal = "approved", timeout_ms = 300 }"#,
    );
    let served = Served::start(&ws, ws.root(), &[]);
    let (status, started) = served.post("/v1/flows/flow/runs", "", None);
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    wait_until(
        "the run reverted at its timeout",
        Duration::from_secs(60),
        || served.get(&format!("/v1/runs/{id}"))["state"] == "REVERTED",
    );
    let document = served.get(&format!("/v1/runs/{id}"));
    assert_eq!(document["tasks"][1]["error"]["code"], "signal-timeout");
    assert_eq!(
        ws.counts(&[("execute", "a"), ("revert", "a"), ("execute", "c")]),
        [1, 1, 0]
    );
}

#[test]
fn a_waiting_run_resumed_past_the_flows_deadline_fails_its_wait_run_timeout_and_reverts() {
    let ws = Workspace::new();
    ws.write_flow(
        "approval",
        "timeout_ms = 300",
        &[
            Probe::new("a").toml(&wait_entry(
                "approve",
                r#"{ signal = "approved" }"#,
                Some("approval"),
            )),
            Probe::new("c").reads("approval"),
        ],
    );
    assert_exit(&ws.recording(&["run", "flow.toml"]).run(), WAITING);
    let id = ws.only_run().id;
    std::thread::sleep(Duration::from_millis(400));
    let resumed = ws.runs(&["resume", &id, "--json"]);
    assert_exit(&resumed, 1);
    let report = stdout_json(&resumed);
    assert_eq!(report["tasks"][1]["error"]["code"], "run-timeout");
    assert_eq!(ws.counts(&[("revert", "a"), ("execute", "c")]), [1, 0]);
}

#[test]
fn a_timer_until_a_time_already_past_ends_at_once() {
    let ws = Workspace::new();
    ws.write_flow(
        "late",
        "",
        &[
            Probe::new("a").toml(&wait_entry(
                "long_ago",
                r#"{ until = "2020-01-01T01:00:00+01:00" }"#,
                None,
            )),
            Probe::new("c").reads("a_out"),
        ],
    );
    let run = ws.recording(&["run", "flow.toml"]).run();
    assert_exit(&run, 0);
    assert_contains(
        &stderr(&run),
        "task `long_ago` PENDING -> WAITING (until 2020-01-01T00:00:00.000Z)",
    );
    assert_eq!(ws.executions(&["a", "c"]), [1, 1]);
}
