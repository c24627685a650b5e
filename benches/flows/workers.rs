//! The rows of workers on PostgreSQL: runs per second with 1, 2 and 4 workers sharing one
//! database (each worker its own connection pool and engine, as on separate hosts, but all on
//! this machine's cores, with the database beside them), database commits per task (write
//! transactions, counted by the server's transaction ids), and
//! pickup latency — from a submission's commit to the run's first recorded transition, with
//! an idle worker woken by NOTIFY (its polling fallback set to 10 s so it cannot help).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowhost::runs::{Executor, PgRunDb, RunDb, RunFilter, Worker};
use flowhost::{Engine, EngineConfig, FlowSpec, FlowState, Store};
use flowhost_testkit::{Postgres, Workspace};
use serde_json::json;
use tokio::sync::oneshot;

use super::postgres::{next_xid, run_worker};
use super::{median, row};

/// Runs submitted per measurement.
const RUNS: usize = 200;
/// Tasks per run.
const TASKS: usize = 3;

/// Prints the worker rows.
pub async fn worker_rows() {
    let ws = Workspace::new();
    let flow_file = ws.flow(
        "bench_workers",
        &[
            ("a", json!({ "journal": false })),
            ("b", json!({ "journal": false })),
            ("c", json!({ "journal": false })),
        ],
    );
    let spec = FlowSpec::from_file(&flow_file).expect("bench flow");
    let engine = Engine::with_config(&EngineConfig::default().pooling(false)).expect("engine");
    for workers in [1, 2, 4] {
        let pg = Postgres::start();
        let db = Arc::new(PgRunDb::connect(&pg.url()).expect("connect"));
        submit(&db, &engine, &spec, &flow_file, RUNS).await;
        let commits_before = next_xid(&pg);
        let started = Instant::now();
        let stops = start(&pg, &ws, workers, Duration::from_millis(200));
        wait_all(&db, RUNS).await;
        let elapsed = started.elapsed().as_secs_f64();
        let commits = next_xid(&pg) - commits_before;
        for stop in stops {
            let _ = stop.send(());
        }
        row(
            &format!("PostgreSQL, {workers} worker(s) × 8 runs: runs/s ({TASKS}-task runs)"),
            format!("{:.0}", RUNS as f64 / elapsed),
        );
        if workers == 1 {
            row(
                "PostgreSQL: database commits per task (journal writes, lease renewals, claims)",
                format!("{:.2}", commits as f64 / (RUNS * TASKS) as f64),
            );
        }
    }
    let pg = Postgres::start();
    let db = Arc::new(PgRunDb::connect(&pg.url()).expect("connect"));
    let stops = start(&pg, &ws, 1, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pickups = Vec::new();
    for _ in 0..20 {
        let id = submit(&db, &engine, &spec, &flow_file, 1).await.remove(0);
        wait_all(&db, pickups.len() + 1).await;
        let ms = pg.sql(&format!(
            "SELECT 1000 * extract(epoch FROM (min(t.at)::timestamptz - r.created_at::timestamptz))
               FROM runs r JOIN transitions t ON t.run_id = r.id WHERE r.id = '{id}' GROUP BY r.created_at"
        ));
        pickups.push(ms.parse::<f64>().unwrap_or(f64::NAN));
    }
    for stop in stops {
        let _ = stop.send(());
    }
    row(
        "PostgreSQL: pickup latency, submit to first transition (NOTIFY, idle worker)",
        format!("{:.1} ms", median(pickups)),
    );
}

async fn submit(
    db: &PgRunDb,
    engine: &Engine,
    spec: &FlowSpec,
    file: &Path,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for seed in 0..n {
        let store: Store = [("seed".to_owned(), json!(seed))].into_iter().collect();
        let loaded = engine.load(spec, store).await.expect("valid");
        ids.push(
            flowhost::runs::submit(db, &loaded, file, None, None, 0)
                .await
                .expect("submit"),
        );
    }
    ids
}

/// Starts `n` workers, each with its own pool and engine; send to stop one.
fn start(pg: &Postgres, ws: &Workspace, n: usize, poll: Duration) -> Vec<oneshot::Sender<()>> {
    (0..n)
        .map(|i| {
            let db = Arc::new(PgRunDb::connect(&pg.url()).expect("connect"));
            let executor = Executor::new(db.clone()).lease_ttl(Duration::from_secs(30));
            run_worker(
                Worker::new(
                    db,
                    executor,
                    EngineConfig::default().pooling(false),
                    ws.path(&format!("plugins{i}")),
                )
                .concurrency(8)
                .poll(poll),
            )
        })
        .collect()
}

async fn wait_all(db: &Arc<PgRunDb>, n: usize) {
    loop {
        let db = db.clone();
        let done = tokio::task::spawn_blocking(move || {
            let runs = db
                .list(&RunFilter {
                    state: Some(FlowState::Success),
                    ..RunFilter::default()
                })
                .expect("list");
            runs.len()
        })
        .await
        .expect("list");
        if done >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
