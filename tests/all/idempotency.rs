//! Idempotency keys: a start repeated with the key of a run of the same flow starts nothing and
//! answers with that run — through the API (`Idempotency-Key`), `flowhost run --key` and
//! `flowhost submit --key` — however many starts race on the key.

use std::path::Path;
use std::sync::Barrier;

use flowhost::runs::{PgRunDb, RunDb, RunDbError, RunFilter, WorkerError};
use flowhost::{Engine, FlowSpec};
use serde_json::{Value, json};

use crate::kit::serving::{Served, answer};
use crate::kit::{Postgres, Workspace, assert_contains, assert_exit, stderr, stdout, stdout_json};

/// `POST /v1/flows/flow/runs` with `Idempotency-Key: key`: status, body and Location.
fn start_with_key(server: &Served, key: &str) -> (u16, Value, Option<String>) {
    let answered = ureq::post(&server.url("/v1/flows/flow/runs"))
        .set("Content-Type", "application/json")
        .set("Idempotency-Key", key)
        .send_string("{}");
    let location = match &answered {
        Ok(response) => response.header("Location").map(str::to_owned),
        Err(_) => None,
    };
    let (status, body) = answer(answered);
    (status, body, location)
}

/// Sixteen starts of `keyed` with Idempotency-Key `key`, let go at the same moment: each
/// one's status, body and Location.
fn race_on_key(server: &Served, key: &str) -> Vec<(u16, Value, Option<String>)> {
    let barrier = Barrier::new(16);
    std::thread::scope(|scope| {
        let starts: Vec<_> = (0..16)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    start_with_key(server, key)
                })
            })
            .collect();
        starts.into_iter().map(|s| s.join().unwrap()).collect()
    })
}

#[test]
fn sixteen_api_starts_racing_on_one_key_start_exactly_one_run_and_all_get_its_id() {
    let ws = Workspace::new();
    ws.flow("keyed", &[("a", json!({})), ("b", json!({}))]);
    let server = Served::start(&ws, ws.root(), &[]);

    let answers = race_on_key(&server, "order-1042");
    let created: Vec<&(u16, Value, Option<String>)> = answers
        .iter()
        .filter(|(status, ..)| *status == 201)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "exactly one start is created: {answers:?}"
    );
    let id = created[0].1["run_id"].as_str().unwrap().to_owned();
    for (status, body, location) in &answers {
        assert!([200, 201].contains(status), "{status} {body}");
        assert_eq!(
            body["run_id"],
            id.as_str(),
            "every answer names the one run"
        );
        assert_eq!(location.as_deref(), Some(format!("/v1/runs/{id}").as_str()));
        if *status == 200 {
            assert_eq!(body["already_started"], true, "{body}");
        }
    }

    let run = server.wait_finished(&id);
    assert_eq!(run["state"], "SUCCESS");
    assert_eq!(run["idempotency_key"], "order-1042", "{run}");
    assert_eq!(ws.show(&id)["idempotency_key"], "order-1042");
    assert_eq!(ws.count("execute", "a"), 1, "the flow ran once");
    let listed = server.get("/v1/runs");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    let (status, again, _) = start_with_key(&server, "order-1042");
    assert_eq!(
        (status, &again["run_id"]),
        (200, &json!(id)),
        "a finished run keeps its key"
    );
    let (status, other, _) = start_with_key(&server, "order-1043");
    assert_eq!(status, 201, "another key starts another run: {other}");
    assert_ne!(other["run_id"], json!(id));
    server.wait_finished(other["run_id"].as_str().unwrap());
    assert_eq!(ws.count("execute", "a"), 2);

    let (status, refused) = server.post("/v1/flows/flow/runs", "{}", None);
    assert_eq!(
        status, 201,
        "a start without a key is never matched: {refused}"
    );
}

#[test]
fn api_starts_racing_on_one_key_queue_exactly_one_run_on_postgresql() {
    let ws = Workspace::new();
    ws.flow("keyed", &[("a", json!({}))]);
    let pg = Postgres::start();
    let server = Served::start_on(&ws, ws.root(), &pg.url(), &[]);
    let answers = race_on_key(&server, "queued-1");
    let statuses: Vec<u16> = answers.iter().map(|(status, ..)| *status).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "exactly one run is queued: {answers:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        15,
        "{answers:?}"
    );
    let ids: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|(_, body, _)| body["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the one run: {answers:?}");
    let runs = PgRunDb::connect(&pg.url())
        .unwrap()
        .list(&RunFilter::default())
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].idempotency_key.as_deref(), Some("queued-1"));
}

#[test]
fn an_empty_idempotency_key_is_refused_and_starts_nothing() {
    let ws = Workspace::new();
    ws.flow("keyed", &[("a", json!({}))]);
    let server = Served::start(&ws, ws.root(), &[]);
    let (status, body, _) = start_with_key(&server, "");
    assert_eq!(status, 400, "{body}");
    assert_contains(
        body["error"].as_str().unwrap_or(&body.to_string()),
        "Idempotency-Key",
    );
    assert_eq!(server.get("/v1/runs"), json!([]));
}

#[test]
fn run_with_a_key_a_second_time_runs_nothing_and_prints_the_first_run() {
    let ws = Workspace::new();
    ws.flow("keyed", &[("a", json!({}))]);
    let first = ws
        .recording(&["run", "flow.toml", "--key", "nightly-2026-12-07", "--json"])
        .run();
    assert_exit(&first, 0);
    let id = stdout_json(&first)["run_id"].as_str().unwrap().to_owned();

    let second = ws
        .recording(&["run", "flow.toml", "--key", "nightly-2026-12-07"])
        .run();
    assert_exit(&second, 0);
    assert_eq!(stdout(&second).trim(), id, "the first run's id is printed");
    assert_contains(
        &stderr(&second),
        "already started with idempotency key `nightly-2026-12-07`",
    );
    assert_contains(&stderr(&second), "nothing was started");
    let json = ws
        .recording(&["run", "flow.toml", "--key", "nightly-2026-12-07", "--json"])
        .run();
    assert_exit(&json, 0);
    assert_eq!(
        stdout_json(&json),
        json!({ "flow": "keyed", "run_id": id, "already_started": true })
    );
    assert_eq!(ws.count("execute", "a"), 1, "the flow ran once");
    assert_eq!(ws.show(&id)["idempotency_key"], "nightly-2026-12-07");
    let listed = ws.runs(&["list", "--json"]);
    assert_eq!(stdout_json(&listed).as_array().unwrap().len(), 1);

    let no_db = ws.flowhost(&["run", "flow.toml", "--key", "k", "--no-db"]);
    assert_exit(&no_db, 64);
}

/// Submits `flow` with idempotency key `key` through the library, as a control plane would.
async fn submit_keyed(db: &PgRunDb, flow: &Path, key: &str) -> Result<String, WorkerError> {
    let spec = FlowSpec::from_file(flow).unwrap();
    let loaded = Engine::new()
        .unwrap()
        .load(&spec, Default::default())
        .await
        .unwrap();
    flowhost::runs::submit(db, &loaded, flow, Some(key), None, 0).await
}

#[test]
fn sixteen_submits_racing_on_one_key_on_postgresql_queue_exactly_one_run() {
    let ws = Workspace::new();
    let flow = ws.flow("keyed", &[("a", json!({}))]);
    let pg = Postgres::start();
    let db = std::sync::Arc::new(PgRunDb::connect(&pg.url()).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcomes: Vec<Result<String, WorkerError>> = runtime.block_on(async {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        let racers: Vec<_> = (0..16)
            .map(|_| {
                let (db, flow, barrier) = (db.clone(), flow.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    submit_keyed(&db, &flow, "invoice-7").await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.unwrap());
        }
        outcomes
    });
    let queued: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(queued.len(), 1, "exactly one run is queued: {outcomes:?}");
    for outcome in &outcomes {
        match outcome {
            Ok(_) => {}
            Err(WorkerError::Db(RunDbError::Exists { run, key, .. })) => {
                assert_eq!((run, key.as_str()), (queued[0], "invoice-7"))
            }
            Err(other) => panic!("a submit failed otherwise: {other}"),
        }
    }
    let runs = db.list(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].idempotency_key.as_deref(), Some("invoice-7"));

    // The command line answers a repeated submit with the queued run.
    let url = pg.url();
    let again = ws.flowhost_on(&url, &["submit", "flow.toml", "--key", "invoice-7"]);
    assert_exit(&again, 0);
    assert_eq!(stdout(&again).trim(), queued[0].as_str());
    assert_contains(
        &stderr(&again),
        "already started with idempotency key `invoice-7`",
    );
    let fresh = ws.flowhost_on(
        &url,
        &["submit", "flow.toml", "--key", "invoice-8", "--json"],
    );
    assert_exit(&fresh, 0);
    assert_ne!(stdout_json(&fresh)["run_id"], json!(queued[0]));
    assert_eq!(db.list(&RunFilter::default()).unwrap().len(), 2);
}
