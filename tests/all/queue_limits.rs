//! Queue limits for workers: a flow's `concurrency` (runs executing at once) and `rate` (starts
//! per period) hold for all the workers of a PostgreSQL database together, because the claim
//! enforces them; `flowhost workers` says what they hold back and why.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use flowhost::runs::{PgRunDb, RunDb, RunFilter};
use flowhost::{Engine, FlowSpec, FlowState, Store};
use serde_json::{Value, json};

use crate::kit::{
    Postgres, Probe, Workspace, assert_contains, assert_exit, stdout, stop, wait_until,
};

/// Queues one run of `flow` per seed, as `flowhost submit` does.
fn submit(pg: &Postgres, flow: &Path, seeds: std::ops::Range<u64>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = PgRunDb::connect(&pg.url()).unwrap();
    let spec = FlowSpec::from_file(flow).unwrap();
    runtime.block_on(async {
        let engine = Engine::new().unwrap();
        for seed in seeds {
            let store: Store = [("seed".to_owned(), json!(seed))].into_iter().collect();
            let loaded = engine.load(&spec, store).await.unwrap();
            flowhost::runs::submit(&db, &loaded, flow, None, None, 0)
                .await
                .unwrap();
        }
    });
}

/// A `flowhost worker` running up to `concurrency` runs, looking for work every 100 ms.
fn worker(ws: &Workspace, url: &str, n: usize, concurrency: &str) -> Child {
    let plugins = ws.path("worker-plugins");
    let log = std::fs::File::create(ws.path(&format!("worker{n}.log"))).unwrap();
    ws.command(&[
        "worker",
        "--db",
        url,
        "--plugin-dir",
        plugins.to_str().unwrap(),
        "--concurrency",
        concurrency,
        "--poll",
        "100ms",
    ])
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .unwrap()
}

/// How many runs of each state the database holds.
fn states(pg: &Postgres) -> HashMap<FlowState, usize> {
    let db = PgRunDb::connect(&pg.url()).unwrap();
    let mut counts = HashMap::new();
    for run in db.list(&RunFilter::default()).unwrap() {
        *counts.entry(run.state).or_default() += 1;
    }
    counts
}

fn succeeded(pg: &Postgres) -> usize {
    states(pg).get(&FlowState::Success).copied().unwrap_or(0)
}

/// The seed a probe's journaled arguments were derived from.
fn seed(args: &Value) -> u64 {
    match &args["value"] {
        Value::Number(n) => n.as_u64().unwrap(),
        nested => seed(nested),
    }
}

/// The most runs between their first task's execute and their last one's, at any moment of
/// the probes' journal (one line per call, in the order they happened).
fn most_at_once(ws: &Workspace, first: &str, last: &str) -> usize {
    let (mut open, mut most) = (std::collections::HashSet::new(), 0);
    for line in ws.journal().entries() {
        if line["call"] != "execute" {
            continue;
        }
        let run = seed(&line["args"]);
        if line["label"] == first {
            open.insert(run);
            most = most.max(open.len());
        } else if line["label"] == last {
            open.remove(&run);
        }
    }
    most
}

#[test]
fn a_concurrency_two_flow_with_three_workers_never_runs_three_at_once() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let flow = ws.write_flow(
        "limited",
        "concurrency = 2",
        &[
            Probe::new("a"),
            Probe::new("b").config(json!({ "mode": "sleep", "ms": 300 })),
            Probe::new("c"),
        ],
    );
    submit(&pg, &flow, 0..8);
    let url = pg.url();
    let workers: Vec<Child> = (0..3).map(|n| worker(&ws, &url, n, "2")).collect();
    wait_until("the eight runs succeeded", Duration::from_secs(120), || {
        succeeded(&pg) == 8
    });
    workers.into_iter().for_each(stop);

    assert_eq!(ws.executions(&["a", "b", "c"]), [8, 8, 8]);
    assert_eq!(
        most_at_once(&ws, "a", "c"),
        2,
        "six slots over three workers, yet at most two runs of the flow at once, and two did run together"
    );
}

#[test]
fn a_rate_limit_holds_starts_to_its_runs_per_period_across_workers() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let flow = ws.write_flow(
        "throttled",
        "rate = { runs = 2, per_ms = 1500 }",
        &[Probe::new("a")],
    );
    submit(&pg, &flow, 0..6);
    let url = pg.url();
    let workers: Vec<Child> = (0..2).map(|n| worker(&ws, &url, n, "4")).collect();
    wait_until("the six runs succeeded", Duration::from_secs(120), || {
        succeeded(&pg) == 6
    });
    workers.into_iter().for_each(stop);

    let starts: Vec<f64> = pg
        .sql("SELECT claimed_at FROM runs ORDER BY claimed_at")
        .lines()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 6);
    for window in starts.windows(3) {
        assert!(
            window[2] - window[0] >= 1.5 - 0.01,
            "no three starts within 1.5 s: {starts:?}"
        );
    }
}

#[test]
fn flowhost_workers_shows_runs_held_back_by_concurrency_and_by_rate() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let waiting = ws.write_flow(
        "one_at_a_time",
        "concurrency = 1",
        &[
            Probe::new("a"),
            Probe::new("b").config(json!({ "mode": "wait_file", "path": "/signal/go" })),
        ],
    );
    let one_at_a_time = ws.path("one_at_a_time.toml");
    std::fs::rename(&waiting, &one_at_a_time).unwrap();
    let per_minute = ws.write_flow(
        "once_a_minute",
        "rate = { runs = 1, per_ms = 60000 }",
        &[Probe::new("m")],
    );
    submit(&pg, &one_at_a_time, 0..3);
    submit(&pg, &per_minute, 10..12);
    let url = pg.url();
    let worker = worker(&ws, &url, 0, "4");
    wait_until(
        "one run of each flow started",
        Duration::from_secs(60),
        || ws.executions(&["b", "m"]) == [1, 1],
    );
    // The rate's run finished; the concurrency's waits in `b`.
    wait_until("the rate's run succeeded", Duration::from_secs(60), || {
        succeeded(&pg) == 1
    });

    let shown = ws.flowhost(&["workers", "--db", &url]);
    assert_exit(&shown, 0);
    let text = stdout(&shown);
    assert_contains(
        &text,
        "one_at_a_time: 1 running (concurrency 1), 2 queued held back",
    );
    assert_contains(
        &text,
        "once_a_minute: 1 started in the last 60000 ms (rate 1 per 60000 ms), 1 queued held back; next start allowed at 20",
    );

    ws.release();
    wait_until(
        "the three runs of one_at_a_time succeeded",
        Duration::from_secs(60),
        || succeeded(&pg) == 4,
    );
    stop(worker);
    assert_eq!(
        ws.executions(&["m"]),
        [1],
        "the rate still holds the second one back"
    );
}

#[test]
fn queue_limits_no_run_could_pass_are_refused_naming_the_key() {
    let ws = Workspace::new();
    let flow = ws.write_flow(
        "stuck",
        "concurrency = 0\nrate = { runs = 0, per_ms = -5 }",
        &[Probe::new("a")],
    );
    let checked = ws.flowhost(&["check", flow.to_str().unwrap(), "--json"]);
    assert_exit(&checked, 65);
    let problems = crate::kit::stdout_json(&checked)["problems"].clone();
    let fields: Vec<&str> = problems
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["concurrency", "rate.runs", "rate.per_ms"],
        "{problems}"
    );
    assert_contains(
        &problems.to_string(),
        "`concurrency` = 0 must be at least 1",
    );
}
