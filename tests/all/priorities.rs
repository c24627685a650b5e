//! Run priorities: `flowhost submit --priority N` queues a run that workers claim before runs
//! of lower priority, then in submission order; `runs show` shows it.

use std::process::Stdio;
use std::time::Duration;

use flowhost::FlowState;
use flowhost::runs::{PgRunDb, RunDb, RunFilter};
use serde_json::json;

use crate::kit::{Postgres, Workspace, exit_json, stop, wait_until};

#[test]
fn one_worker_claims_queued_runs_by_priority_then_submission_order() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let flow = ws.flow("prioritised", &[("a", json!({}))]);
    let flow = flow.to_str().unwrap();
    // Submitted while no worker runs: priorities 0, 5, 1 and 1 again, each run seeded with
    // its place in the submission order.
    let mut ids = Vec::new();
    for (seed, priority) in ["0", "5", "1", "1"].into_iter().enumerate() {
        let store = format!("seed={seed}");
        let submitted = ws.flowhost_on(
            &pg.url(),
            &[
                "submit",
                flow,
                "--store",
                &store,
                "--priority",
                priority,
                "--json",
            ],
        );
        ids.push(
            exit_json(&submitted, 0)["run_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let shown = ws.flowhost_on(&pg.url(), &["runs", "show", &ids[1], "--json"]);
    assert_eq!(exit_json(&shown, 0)["priority"], 5);

    let plugins = ws.path("worker-plugins");
    let log = std::fs::File::create(ws.path("worker.log")).unwrap();
    let url = pg.url();
    let worker = ws
        .command(&[
            "worker",
            "--db",
            &url,
            "--plugin-dir",
            plugins.to_str().unwrap(),
            "--concurrency",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let db = PgRunDb::connect(&pg.url()).unwrap();
    wait_until("the four runs succeeded", Duration::from_secs(120), || {
        let runs = db.list(&RunFilter::default()).unwrap();
        runs.len() == 4 && runs.iter().all(|r| r.state == FlowState::Success)
    });
    stop(worker);
    assert_eq!(
        ws.journal().values("a"),
        [json!(1), json!(2), json!(3), json!(0)],
        "claimed by priority, highest first, then in submission order"
    );
}

#[test]
fn the_api_queues_a_run_with_the_priority_of_its_start() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    ws.flow("prioritised", &[("a", json!({}))]);
    let server = crate::kit::serving::Served::start_on(&ws, ws.root(), &pg.url(), &[]);
    let (status, started) = server.post("/v1/flows/flow/runs?priority=7", "{}", None);
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap();
    let run = server.get(&format!("/v1/runs/{id}"));
    assert_eq!(
        (run["state"].as_str(), run["priority"].as_i64()),
        (Some("PENDING"), Some(7)),
        "{run}"
    );
    let (status, _) = server.post("/v1/flows/flow/runs", "{}", None);
    assert_eq!(status, 201);
    let ids = pg.sql("SELECT string_agg(id, ',' ORDER BY priority DESC, seq) FROM runs");
    assert!(
        ids.starts_with(id),
        "the run of priority 7 is first in line: {ids}"
    );
}
