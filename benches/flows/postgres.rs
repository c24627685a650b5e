//! The rows of the PostgreSQL run database against in-memory runs, on a throwaway server on
//! this machine's cores (`FLOWHOST_BENCH_ONLY=postgres`): µs per task of a ten-task flow one
//! run at a time, ten-task runs per second at concurrency 64 through the batch API, round
//! trips and commits per task, and one worker draining submitted runs against the in-process
//! batch.
//!
//! Round trips are counted by a loopback proxy between flowhost and the server: a round trip
//! is each time a connection's client speaks again after the server answered, which is what a
//! caller waits for, however the driver splits or pipelines its messages — so the count holds
//! for any version of the backend. Commits are write transactions: the server's next
//! transaction id moves by one for each transaction that wrote (`pg_stat_database`'s counters
//! cannot be used: backends publish them at most once a second, and they count reads too).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flowhost::runs::{self, Executor, PgRunDb, RunDb, Worker};
use flowhost::{Batch, BatchInput, Engine, EngineConfig, FlowSpec, FlowState};
use flowhost_testkit::{Postgres, plugin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::{engine, initial, median, per_task_alone, row};

/// Tasks per run.
const N: usize = 10;

/// Prints the PostgreSQL rows.
pub async fn postgres_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flow_file = chain_file(dir.path());
    let flow = FlowSpec::from_file(&flow_file).expect("bench flow");
    let engine = engine();
    let pg = Postgres::start();
    let db: Arc<dyn RunDb> = Arc::new(PgRunDb::connect(&pg.url()).expect("connect"));

    // One run at a time.
    let mut costs = Vec::new();
    for executor in [None, Some(Executor::new(db.clone()))] {
        costs.push(per_task_alone(&engine, &flow, executor.as_ref(), 200).await);
    }
    row(
        &format!("PostgreSQL: µs/task, N={N}, one run at a time (in memory / PostgreSQL)"),
        format!(
            "{:.1} / {:.1} ({:.2}× in memory)",
            costs[0],
            costs[1],
            costs[1] / costs[0]
        ),
    );

    // Throughput through the batch API, where concurrent runs may share commits.
    let mut batch_rate = 0.0;
    for concurrency in [1, 64] {
        let runs = if concurrency == 1 { 300 } else { 2000 };
        let mut rates = Vec::new();
        for durable in [false, true] {
            let rate = batch(
                &engine,
                &flow,
                concurrency,
                runs,
                3,
                durable.then(|| db.clone()),
            )
            .await;
            rates.push(rate);
        }
        if concurrency == 64 {
            batch_rate = rates[1];
        }
        row(
            &format!(
                "PostgreSQL: ten-task runs/s, concurrency {concurrency}: in memory / PostgreSQL"
            ),
            format!(
                "{:.0} / {:.0} ({:.2}× in memory)",
                rates[0],
                rates[1],
                rates[1] / rates[0]
            ),
        );
    }

    // Round trips and commits per task, through the counting proxy.
    let proxy = Proxy::start(pg.port()).await;
    let counted: Arc<dyn RunDb> = Arc::new(
        PgRunDb::connect(&format!(
            "postgres://flowhost@127.0.0.1:{}/postgres",
            proxy.port
        ))
        .expect("connect through the proxy"),
    );
    for (concurrency, runs) in [(1, 100), (64, 1000)] {
        let (trips, xid) = (proxy.round_trips(), next_xid(&pg));
        batch(&engine, &flow, concurrency, runs, 1, Some(counted.clone())).await;
        let tasks = (runs * N) as f64;
        row(
            &format!("PostgreSQL: round trips / commits per task, concurrency {concurrency}"),
            format!(
                "{:.2} / {:.2}",
                (proxy.round_trips() - trips) as f64 / tasks,
                (next_xid(&pg) - xid) as f64 / tasks
            ),
        );
    }
    drop(counted);

    // One worker draining submitted runs, against the in-process batch at the same concurrency.
    let pg = Postgres::start();
    let db = Arc::new(PgRunDb::connect(&pg.url()).expect("connect"));
    const DRAINED: usize = 1000;
    for seed in 0..DRAINED {
        let mut store = initial();
        store.insert("seed".to_owned(), serde_json::json!(seed));
        let loaded = engine.load(&flow, store).await.expect("valid");
        runs::submit(&db, &loaded, &flow_file, None, None, 0)
            .await
            .expect("submit");
    }
    let started = Instant::now();
    let stop = start_worker(&pg, dir.path(), 64);
    wait_all(&db, DRAINED).await;
    let rate = DRAINED as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    row(
        "PostgreSQL: one worker × 64 draining submitted ten-task runs: runs/s",
        format!(
            "{rate:.0} ({:.2}× the in-process batch at 64)",
            rate / batch_rate
        ),
    );
}

/// The median runs/s of `reps` batches of `runs` ten-task runs, recorded in `db` when given.
async fn batch(
    engine: &Engine,
    flow: &FlowSpec,
    concurrency: usize,
    runs: usize,
    reps: usize,
    db: Option<Arc<dyn RunDb>>,
) -> f64 {
    let inputs = || {
        (1..=runs).map(|line| BatchInput {
            line,
            store: Ok(initial()),
        })
    };
    let mut batch = Batch::new(engine, flow).concurrency(concurrency);
    if let Some(db) = db {
        let executor = Executor::new(db);
        batch = batch.prepare_each(move |loaded| Ok(runs::record(&executor, loaded, None, None)?));
    }
    let mut rates = Vec::new();
    for _ in 0..reps {
        let summary = batch.run(inputs(), |_| {}).await;
        assert_eq!(summary.succeeded, runs);
        rates.push(summary.runs_per_second());
    }
    median(rates)
}

/// The ten-task chain of probes as a flow file (a worker needs one to submit).
fn chain_file(dir: &Path) -> PathBuf {
    let mut text = format!("name = \"chain{N}\"\n");
    for i in 0..N {
        text.push_str(&format!(
            "\n[[task]]\nname = \"t{i}\"\nplugin = {:?}\nprovides = [\"o{i}\"]\n",
            plugin("probe").display().to_string()
        ));
    }
    let file = dir.join("chain.toml");
    std::fs::write(&file, text).expect("write the bench flow");
    file
}

/// Starts a worker executing `concurrency` runs at once; send to stop it.
fn start_worker(pg: &Postgres, dir: &Path, concurrency: usize) -> oneshot::Sender<()> {
    let db = Arc::new(PgRunDb::connect(&pg.url()).expect("connect"));
    let executor = Executor::new(db.clone()).lease_ttl(Duration::from_secs(30));
    run_worker(
        Worker::new(db, executor, EngineConfig::default(), dir.join("plugins"))
            .concurrency(concurrency)
            .poll(Duration::from_millis(200)),
    )
}

/// Runs `worker` in the background until the returned sender sends or is dropped.
pub fn run_worker(worker: Worker) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(worker.run(
        async move {
            let _ = stopped.await;
        },
        std::future::pending(),
    ));
    stop
}

/// Waits until `n` runs succeeded, counting them (not listing them: the drain measured
/// should not share the server with reading a thousand rows every few milliseconds).
async fn wait_all(db: &Arc<PgRunDb>, n: usize) {
    loop {
        let db = db.clone();
        let done: u64 = tokio::task::spawn_blocking(move || {
            db.count()
                .expect("count")
                .iter()
                .filter(|c| c.state == FlowState::Success)
                .map(|c| c.runs)
                .sum()
        })
        .await
        .expect("count");
        if done >= n as u64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server's next transaction id: it moves by one for each transaction that wrote.
pub fn next_xid(pg: &Postgres) -> i64 {
    pg.sql("SELECT pg_snapshot_xmax(pg_current_snapshot())")
        .parse()
        .unwrap_or(0)
}

/// A loopback proxy to the server that counts round trips.
struct Proxy {
    port: u16,
    trips: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(server: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let trips = Arc::new(AtomicU64::new(0));
        let counted = trips.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(("127.0.0.1", server))
                    .await
                    .expect("connect to the server");
                client.set_nodelay(true).ok();
                server.set_nodelay(true).ok();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                // Whether the server spoke last: the client's next bytes start a round trip.
                let answered = Arc::new(AtomicBool::new(true));
                tokio::spawn(pump(
                    client_read,
                    server_write,
                    answered.clone(),
                    Some(counted.clone()),
                ));
                tokio::spawn(pump(server_read, client_write, answered, None));
            }
        });
        Self { port, trips }
    }

    fn round_trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }
}

/// Copies one direction; `trips` (on the client's direction) counts each flight that follows
/// an answer.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    answered: Arc<AtomicBool>,
    trips: Option<Arc<AtomicU64>>,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match &trips {
            Some(trips) => {
                if answered.swap(false, Ordering::AcqRel) {
                    trips.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => answered.store(true, Ordering::Release),
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
