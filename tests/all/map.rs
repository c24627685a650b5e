//! Map fan-out: a subflow with `flow = { map = { over, as, collect } }` runs its tasks once per
//! element of a store list, up to `max_parallel` iterations at once, and provides the array
//! of what each iteration provided last, in element order. A failure stops new iterations
//! and reverts every iteration that ran, newest first, then what ran before the map. Each
//! element's calls are journaled, so a killed run resumes only the elements not done, and
//! memory stays flat in the number of elements.

use std::path::Path;
use std::time::Duration;

use flowhost::{Engine, Event, FlowSpec, FlowState, Map, Subflow, TaskState, Transition};
use serde_json::{Value, json};

use crate::kit::{
    Journal, Workspace, assert_exit, exit_json, probe_file, run_recorded, store, wait_until,
};

/// `before` (reading `seed`), then map `attach` over `volumes`, each element as `volume`,
/// collected into `attachments`, running `attach_one` (a probe sleeping 50 ms) per element.
fn attach_flow(journal: &Journal, max_parallel: usize) -> FlowSpec {
    FlowSpec::linear("attach-volumes")
        .max_parallel(max_parallel)
        .add(journal.probe_reading("before", "seed", json!({})))
        .add(
            Subflow::linear("attach")
                .map(Map::new("volumes", "volume", "attachments"))
                .add(journal.probe_reading(
                    "attach_one",
                    "volume",
                    json!({"mode": "sleep", "ms": 50}),
                )),
        )
}

/// Most element calls ever in flight at once, from the element transitions heard.
fn most_at_once(events: &[Event]) -> usize {
    let (mut now, mut most) = (0usize, 0usize);
    for event in events {
        if let Transition::Task {
            to,
            element: Some(_),
            ..
        } = &event.transition
        {
            match to {
                TaskState::Running => now += 1,
                TaskState::Success | TaskState::Failure => now -= 1,
                _ => {}
            }
            most = most.max(now);
        }
    }
    most
}

#[tokio::test]
async fn a_map_over_five_volumes_collects_in_element_order_two_at_a_time() {
    let journal = Journal::new();
    let flow = attach_flow(&journal, 2);
    let volumes = json!(["v0", "v1", "v2", "v3", "v4"]);
    let initial = store(&[("seed", json!(1)), ("volumes", volumes.clone())]);
    let (report, recorder) = run_recorded(&Engine::new().unwrap(), &flow, initial).await;
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    let collected: Vec<Value> = report
        .fetch("attachments")
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    let values: Vec<&Value> = collected.iter().map(|c| &c["value"]).collect();
    assert_eq!(
        values,
        volumes.as_array().unwrap().iter().collect::<Vec<_>>()
    );
    assert!(
        report.fetch("attach_one_out").is_none() && report.fetch("volume").is_none(),
        "what an iteration provides stays inside it"
    );
    assert_eq!(journal.count("execute", "attach_one"), 5);
    assert_eq!(
        most_at_once(&recorder.events()),
        2,
        "max_parallel 2 holds iterations to two at once"
    );
    let map = &report.maps[0];
    assert_eq!(
        (map.path.as_str(), map.elements, map.succeeded),
        ("attach", 5, 5)
    );
    assert_eq!(report.tasks[1].state, TaskState::Success);
}

#[tokio::test]
async fn a_failure_in_element_three_reverts_every_iteration_that_ran_newest_first() {
    let journal = Journal::new();
    let flow = FlowSpec::linear("attach-volumes")
        .max_parallel(1)
        .add(journal.probe_reading("before", "seed", json!({})))
        .add(
            Subflow::linear("attach")
                .map(Map::new("volumes", "volume", "attachments"))
                .add(
                    journal
                        .probe_reading("attach_one", "volume", json!({}))
                        .limits(flowhost::Limits {
                            args_kib: Some(1),
                            ..Default::default()
                        }),
                ),
        );
    // Element 3's arguments are over the 1 KiB cap: its call fails.
    let volumes = json!(["v0", "v1", "v2", "x".repeat(2048), "v4"]);
    let initial = store(&[("seed", json!(1)), ("volumes", volumes)]);
    let (report, recorder) = run_recorded(&Engine::new().unwrap(), &flow, initial).await;
    assert_eq!(report.state, FlowState::Reverted, "{:?}", report.tasks);
    assert_eq!(
        journal.values("attach_one"),
        [json!("v0"), json!("v1"), json!("v2")],
        "no iteration starts after the failure"
    );
    let reverted: Vec<(String, Value)> = journal
        .reverts()
        .iter()
        .map(|r| {
            (
                r["label"].as_str().unwrap().to_owned(),
                r["args"]["value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        reverted,
        [
            ("attach_one".to_owned(), json!("v2")),
            ("attach_one".to_owned(), json!("v1")),
            ("attach_one".to_owned(), json!("v0")),
            ("before".to_owned(), json!(1)),
        ],
        "every iteration that ran, newest first, then what ran before the map"
    );
    let error = report.tasks[1]
        .error
        .as_ref()
        .expect("the map's task failed");
    assert_eq!(error.code, "args-too-large");
    assert_eq!(report.maps[0].failed, [3]);
    let failed_element = recorder.events().iter().find_map(|e| match &e.transition {
        Transition::Task {
            to: TaskState::Failure,
            element,
            ..
        } => *element,
        _ => None,
    });
    assert_eq!(
        failed_element,
        Some(3),
        "the failure is journaled with its element"
    );
}

#[tokio::test]
async fn an_empty_list_collects_an_empty_array_and_the_flow_goes_on() {
    let journal = Journal::new();
    let flow =
        attach_flow(&journal, 2).add(journal.probe_reading("report", "attachments", json!({})));
    let initial = store(&[("seed", json!(1)), ("volumes", json!([]))]);
    let (report, _) = run_recorded(&Engine::new().unwrap(), &flow, initial).await;
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    assert_eq!(report.fetch("attachments"), Some(&json!([])));
    assert_eq!(journal.count("execute", "attach_one"), 0);
    assert_eq!(journal.values("report"), [json!([])]);
}

#[tokio::test]
async fn a_list_that_is_not_an_array_fails_the_run_naming_the_map_and_the_key() {
    let journal = Journal::new();
    let flow = attach_flow(&journal, 2);
    let initial = store(&[("seed", json!(1)), ("volumes", json!("v0,v1"))]);
    let (report, _) = run_recorded(&Engine::new().unwrap(), &flow, initial).await;
    assert_eq!(report.state, FlowState::Reverted);
    let error = report.tasks[1].error.as_ref().expect("the map failed");
    assert!(
        error.message.contains("map `attach`")
            && error.message.contains("`volumes` must be an array"),
        "{error}"
    );
    assert!(error.message.contains("a string"), "{error}");
    assert_eq!(journal.count("revert", "before"), 1);
}

#[tokio::test]
async fn validation_names_the_map_and_the_key_at_fault() {
    let journal = Journal::new();
    // `over` nothing provides; `as` shadowing the store's `seed`; `collect` taken.
    let flow = FlowSpec::linear("bad-map")
        .add(journal.probe_reading("before", "seed", json!({})))
        .add(
            Subflow::linear("attach")
                .map(Map::new("disks", "seed", "before_out"))
                .add(journal.probe_reading("attach_one", "seed", json!({}))),
        );
    let error = Engine::new()
        .unwrap()
        .load(&flow, store(&[("seed", json!(1))]))
        .await
        .err()
        .expect("the flow is refused");
    let found: Vec<(Option<String>, Option<String>)> = error
        .problems
        .iter()
        .map(|p| (p.task.clone(), p.field.clone()))
        .collect();
    for field in ["flow.map.over", "flow.map.as", "flow.map.collect"] {
        assert!(
            found.contains(&(Some("attach".into()), Some(field.into()))),
            "no problem at {field}: {error}"
        );
    }
    let text = error.to_string();
    assert!(
        text.contains("`disks`") && text.contains("shadow"),
        "{text}"
    );
}

/// A map of five volumes, one at a time, each call sleeping 300 ms: killed on its third.
const KILLED: &str = r#"name = "attach-volumes"
max_parallel = 1

[store]
volumes = ["v0", "v1", "v2", "v3", "v4"]

[[task]]
name = "attach"
flow = { map = { over = "volumes", as = "volume", collect = "attachments" } }

  [[task.task]]
  name = "attach_one"
  plugin = "PROBE"
  rebind = { value = "volume" }
  provides = ["attached"]
  config = { label = "attach_one", journal = true, mode = "sleep", ms = 300 }
  dirs = [{ host = "journal", guest = "/journal", mode = "rw" }]
"#;

#[test]
fn a_run_killed_mid_map_resumes_only_the_elements_not_done() {
    let ws = Workspace::new();
    probe_file(ws.root(), "flow.toml", KILLED);
    let check = ws.flowhost(&["check", "flow.toml", "--json"]);
    let plan = exit_json(&check, 0);
    assert_eq!(plan["maps"][0]["path"], "attach");
    assert_eq!(
        plan["maps"][0]["map"],
        json!({"over": "volumes", "as": "volume", "collect": "attachments"})
    );
    assert_eq!(plan["maps"][0]["tasks"], json!(["attach/attach_one"]));

    let child = ws.recording(&["run", "flow.toml"]).start();
    let journal = ws.journal();
    kill_at_the_third_element(child, &journal);
    let run = ws.only_run();
    let record = ws.record(&run.id);
    let done: Vec<u32> = record
        .elements
        .iter()
        .filter(|e| e.state == TaskState::Success)
        .map(|e| e.element)
        .collect();
    assert_eq!(done, [0, 1], "two elements were done at the kill");

    let resumed = ws.runs(&["resume", &run.id, "--json"]);
    assert_exit(&resumed, 0);
    assert_eq!(
        journal.values("attach_one"),
        ["v0", "v1", "v2", "v2", "v3", "v4"].map(|v| json!(v)),
        "only the element caught running and those not started ran again"
    );
    let shown = ws.show(&run.id);
    assert_eq!(shown["state"], "SUCCESS");
    let collected: Vec<&Value> = shown["final_store"]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["value"])
        .collect();
    assert_eq!(
        collected,
        ["v0", "v1", "v2", "v3", "v4"]
            .map(|v| json!(v))
            .iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(shown["elements"].as_array().unwrap().len(), 5);
    let human = ws.runs(&["show", &run.id]);
    assert_exit(&human, 0);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("mapped elements: 5 SUCCESS"), "{text}");
}

/// The peak resident memory (VmHWM, KiB) of `flowhost run` over a map of `n` elements,
/// read from `/proc` while it runs. Each iteration provides `true`, so that what is measured
/// is the map's own state per element rather than the size of what it collects (the list,
/// the collected array and its copies in the final store and report grow with `n`, as they
/// must).
fn peak_rss_kib(n: usize) -> u64 {
    let ws = Workspace::new();
    let volumes: Vec<String> = (0..n).map(|i| format!("\"vol-{i:05}\"")).collect();
    let flow = format!(
        r#"name = "wide-map"
max_parallel = 2

[store]
volumes = [{}]

[[task]]
name = "attach"
flow = {{ map = {{ over = "volumes", as = "volume", collect = "attachments" }} }}

  [[task.task]]
  name = "attach_one"
  plugin = "PROBE"
  rebind = {{ value = "volume" }}
  provides = ["attached"]
  instances = "reuse"
  config = {{ raw_result = "true" }}
"#,
        volumes.join(", ")
    );
    probe_file(ws.root(), "flow.toml", &flow);
    let mut child = ws.recording(&["run", "flow.toml"]).start();
    let status = Path::new("/proc")
        .join(child.id().to_string())
        .join("status");
    let mut peak = 0;
    loop {
        if let Some(hwm) = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak = peak.max(hwm);
        }
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "the run of {n} elements failed");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    peak
}

#[test]
fn ten_thousand_elements_run_in_flat_memory() {
    let small = peak_rss_kib(1_000);
    let large = peak_rss_kib(10_000);
    eprintln!("peak RSS: 1,000 elements {small} KiB, 10,000 elements {large} KiB");
    assert!(
        large < 2 * small,
        "10,000 elements peaked at {large} KiB, 1,000 at {small} KiB"
    );
    let per_element = (large.saturating_sub(small) * 1024) / 9_000;
    assert!(
        per_element < 4096,
        "{per_element} bytes per element: more than an element's collected value and record"
    );
}

/// Map `attach` of five volumes: element `v3` (two KiB of `x`) is over its call's 1 KiB cap.
const FAILING: &str = r#"name = "attach-volumes"
max_parallel = 2

[[task]]
name = "attach"
flow = { map = { over = "volumes", as = "volume", collect = "attachments" } }

  [[task.task]]
  name = "attach_one"
  plugin = "PROBE"
  rebind = { value = "volume" }
  provides = ["attached"]
  limits = { args_kib = 1 }
"#;

#[test]
fn the_api_and_the_console_show_each_mapped_element() {
    let ws = Workspace::new();
    probe_file(ws.root(), "attach.toml", FAILING);
    let server = crate::kit::serving::Served::start(&ws, ws.root(), &[]);
    let volumes = json!({ "volumes": ["v0", "v1", "v2", "x".repeat(2048), "v4"] });
    let (status, started) = server.post("/v1/flows/attach/runs", &volumes.to_string(), None);
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    let run = server.wait_finished(&id);
    assert_eq!(run["state"], "REVERTED", "{run}");
    let elements = run["elements"]
        .as_array()
        .expect("the record lists the elements");
    let failed: Vec<&Value> = elements
        .iter()
        .filter(|e| e["state"] == "FAILURE")
        .collect();
    assert_eq!(failed.len(), 1, "{elements:?}");
    assert_eq!(failed[0]["element"], 3);
    assert_eq!(failed[0]["error"]["code"], "args-too-large");
    let history = run["tasks"][0]["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|c| c["element"] == 3 && c["to"] == "FAILURE"),
        "the history names each transition's element"
    );

    let mut browser = crate::kit::cdp::Browser::start(1366, 900);
    browser.open(&format!("{}/runs/{id}", server.base));
    browser.wait_for(
        "document.querySelectorAll('#mapped tr[data-element]').length >= 4",
        "the mapped elements panel",
    );
    let row = browser.eval("document.querySelector('#mapped tr[data-element=\"3\"]').innerText");
    assert!(row.as_str().unwrap().contains("args-too-large"), "{row}");
    let bars = browser.eval("document.querySelectorAll('.bar[data-element]').length");
    assert!(
        bars.as_u64().unwrap() >= 3,
        "a bar per element call: {bars}"
    );
    assert!(
        browser.errors.is_empty(),
        "the console logged errors: {:#?}",
        browser.errors
    );
}

#[test]
fn a_map_on_postgresql_records_each_element_and_resumes_from_them() {
    let pg = crate::kit::Postgres::start();
    let ws = Workspace::new();
    probe_file(ws.root(), "flow.toml", KILLED);
    let child = ws.command(&["run", "flow.toml", "--db", &pg.url()]).start();
    let journal = ws.journal();
    kill_at_the_third_element(child, &journal);
    let id = pg.sql("SELECT id FROM runs");
    assert_eq!(
        pg.sql("SELECT string_agg(element::text, ',' ORDER BY element) FROM elements WHERE state = 'SUCCESS'"),
        "0,1"
    );
    let resumed = ws.flowhost_on(&pg.url(), &["runs", "resume", &id, "--json"]);
    assert_exit(&resumed, 0);
    assert_eq!(
        journal.values("attach_one"),
        ["v0", "v1", "v2", "v2", "v3", "v4"].map(|v| json!(v))
    );
    let shown = ws.flowhost_on(&pg.url(), &["runs", "show", &id, "--json"]);
    let shown = exit_json(&shown, 0);
    assert_eq!(shown["state"], "SUCCESS");
    assert_eq!(shown["elements"].as_array().unwrap().len(), 5);
    assert_eq!(shown["final_store"]["attachments"][4]["value"], "v4");
}

#[tokio::test]
async fn each_iteration_runs_its_tasks_in_order_and_reverts_them_in_reverse() {
    let journal = Journal::new();
    // `verify` reads what `attach_one` provided in the same iteration; its arguments are
    // capped at 1 KiB, which element 3's are not within.
    let flow = FlowSpec::linear("attach-volumes").max_parallel(1).add(
        Subflow::linear("attach")
            .map(Map::new("volumes", "volume", "attachments"))
            .add(journal.probe_reading("attach_one", "volume", json!({})))
            .add(
                journal
                    .probe_reading("verify", "attach_one_out", json!({}))
                    .limits(flowhost::Limits {
                        args_kib: Some(1),
                        ..Default::default()
                    }),
            ),
    );
    let ok = store(&[("volumes", json!(["v0", "v1"]))]);
    let (report, _) = run_recorded(&Engine::new().unwrap(), &flow, ok).await;
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    let collected = report.fetch("attachments").unwrap();
    assert_eq!(
        collected[1]["label"], "verify",
        "the iteration's last task's value"
    );
    assert_eq!(collected[1]["value"]["value"], "v1");

    let journal = Journal::new();
    let flow = FlowSpec::linear("attach-volumes").max_parallel(1).add(
        Subflow::linear("attach")
            .map(Map::new("volumes", "volume", "attachments"))
            .add(journal.probe_reading("attach_one", "volume", json!({})))
            .add(
                journal
                    .probe_reading("verify", "attach_one_out", json!({}))
                    .limits(flowhost::Limits {
                        args_kib: Some(1),
                        ..Default::default()
                    }),
            ),
    );
    let volumes = json!(["v0", "v1", "v2", "x".repeat(2048), "v4"]);
    let (report, _) = run_recorded(
        &Engine::new().unwrap(),
        &flow,
        store(&[("volumes", volumes)]),
    )
    .await;
    assert_eq!(report.state, FlowState::Reverted);
    let reverted: Vec<String> = journal
        .reverts()
        .iter()
        .map(|r| {
            let value = &r["args"]["value"];
            let volume = value["value"]
                .as_str()
                .or(value.as_str())
                .unwrap_or_default();
            format!("{} {}", r["label"].as_str().unwrap(), &volume[..2])
        })
        .collect();
    assert_eq!(
        reverted,
        [
            "attach_one xx",
            "verify v2",
            "attach_one v2",
            "verify v1",
            "attach_one v1",
            "verify v0",
            "attach_one v0"
        ],
        "newest element first, each iteration's tasks in reverse order"
    );
}

/// Kills `child` (kill -9) once its third element's call started, failing the test if the
/// run ended before.
fn kill_at_the_third_element(mut child: std::process::Child, journal: &Journal) {
    wait_until(
        "the third element started",
        Duration::from_secs(300),
        || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before the kill"
            );
            journal.count("execute", "attach_one") >= 3
        },
    );
    crate::kit::kill(child);
}
