//! Workers on one PostgreSQL database: many runs shared out with each task executed once, a
//! worker killed mid-run (its runs taken over and resumed from their journals), a worker
//! paused past its lease (fenced when it wakes), the database restarted under running
//! workers, and workers on hosts of their own (network namespaces) cut off from the database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use flowhost::runs::{PgRunDb, RunDb, RunFilter, RunRecord};
use flowhost::{Engine, FlowSpec, FlowState, Store};
use serde_json::{Value, json};

use crate::kit::{
    Postgres, SHORT_LEASE, Workspace, flowhost_bin, is_root, signal, stdout_json, stop, wait_until,
};

/// Submits one run of the workspace's flow per seed, through the library (as a control plane
/// would), and returns their ids.
fn submit(pg: &Postgres, flow: &Path, seeds: std::ops::Range<u64>) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = PgRunDb::connect(&pg.url()).unwrap();
    let spec = FlowSpec::from_file(flow).unwrap();
    runtime.block_on(async {
        let engine = Engine::new().unwrap();
        let mut ids = Vec::new();
        for seed in seeds {
            let store: Store = [("seed".to_owned(), json!(seed))].into_iter().collect();
            let loaded = engine.load(&spec, store).await.unwrap();
            ids.push(
                flowhost::runs::submit(&db, &loaded, flow, None, None, 0)
                    .await
                    .unwrap(),
            );
        }
        ids
    })
}

/// Writes the workspace's flow `name`: probes `a`, `b` sleeping `ms` milliseconds, `c`.
fn sleeping_in_b(ws: &Workspace, name: &str, ms: u64) -> PathBuf {
    let b = json!({ "mode": "sleep", "ms": ms });
    ws.flow(name, &[("a", json!({})), ("b", b), ("c", json!({}))])
}

/// A `flowhost worker` with its log in `log`.
fn worker(ws: &Workspace, url: &str, log: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["worker", "--db", url, "--plugin-dir"];
    let plugins = ws.path("worker-plugins");
    args.push(plugins.to_str().unwrap());
    args.extend(extra);
    let log = std::fs::File::create(log).unwrap();
    ws.command(&args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn states(pg: &Postgres) -> HashMap<String, FlowState> {
    let db = PgRunDb::connect(&pg.url()).unwrap();
    db.list(&RunFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.state))
        .collect()
}

fn all_succeeded(pg: &Postgres, n: usize) -> bool {
    let states = states(pg);
    states.len() == n && states.values().all(|s| *s == FlowState::Success)
}

/// The seed a probe's journaled arguments were derived from (each probe echoes `value`).
fn seed(args: &Value) -> u64 {
    match &args["value"] {
        Value::Number(n) => n.as_u64().unwrap(),
        nested => seed(nested),
    }
}

/// How often each (task, seed) was executed, from the probes' journal.
fn executions(ws: &Workspace) -> HashMap<(String, u64), usize> {
    let mut counts = HashMap::new();
    for line in ws.journal().entries() {
        if line["call"] == "execute" {
            *counts
                .entry((
                    line["label"].as_str().unwrap().to_owned(),
                    seed(&line["args"]),
                ))
                .or_default() += 1;
        }
    }
    counts
}

fn log_text(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `worker`'s log (`log`) says it lost its lease: it noticed it was fenced.
fn wait_fenced(worker: &str, log: &PathBuf, limit: Duration) {
    wait_until(&format!("{worker} was fenced"), limit, || {
        log_text(log).contains("lost its lease")
    });
}

/// The record of run `id`, which a worker finished after another one, fenced, stopped in
/// `b`: `c` executed once, by the worker that took over, and `b` twice.
fn finished_by_the_second_worker(ws: &Workspace, pg: &Postgres, id: &str) -> RunRecord {
    assert_eq!(
        ws.count("execute", "c"),
        1,
        "the fenced worker never went on to c"
    );
    let db = PgRunDb::connect(&pg.url()).unwrap();
    let record = db.get(id).unwrap().unwrap();
    assert_eq!(record.summary.state, FlowState::Success);
    let tasks: Vec<(&str, u32)> = record
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.executions))
        .collect();
    assert_eq!(tasks, [("a", 1), ("b", 2), ("c", 1)]);
    record
}

#[test]
fn three_workers_share_three_hundred_runs_and_execute_each_task_once() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let flow = ws.flow(
        "shared",
        &[("a", json!({})), ("b", json!({})), ("c", json!({}))],
    );
    submit(&pg, &flow, 0..300);
    let logs: Vec<PathBuf> = (0..3).map(|i| ws.path(&format!("worker{i}.log"))).collect();
    let workers: Vec<Child> = logs
        .iter()
        .map(|log| {
            worker(
                &ws,
                &pg.url(),
                log,
                &["--concurrency", "8", "--lease-ttl", "3s"],
            )
        })
        .collect();
    wait_until("300 runs succeeded", Duration::from_secs(150), || {
        all_succeeded(&pg, 300)
    });
    workers.into_iter().for_each(stop);

    let counts = executions(&ws);
    assert_eq!(counts.len(), 900, "every task of every run executed");
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "each task executed once per run: {repeated:?}"
    );
    for (i, log) in logs.iter().enumerate() {
        let claimed = log_text(log).matches("claimed run").count();
        assert!(claimed > 0, "worker {i} took part:\n{}", log_text(log));
    }
    assert_eq!(
        pg.sql("SELECT count(*) FROM runs WHERE lease_owner IS NOT NULL"),
        "0",
        "every lease released"
    );
}

#[test]
fn a_killed_workers_runs_are_taken_over_and_only_its_tasks_in_flight_run_again() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let flow = sleeping_in_b(&ws, "takeover", 400);
    submit(&pg, &flow, 0..24);
    let opts = [
        "--concurrency",
        "4",
        "--lease-ttl",
        "1s",
        "--heartbeat",
        "250ms",
        "--poll",
        "200ms",
    ];
    let doomed = worker(&ws, &pg.url(), &ws.path("doomed.log"), &opts);
    wait_until(
        "the doomed worker is running runs",
        Duration::from_secs(60),
        || ws.count("execute", "b") >= 2,
    );
    let survivor = worker(&ws, &pg.url(), &ws.path("survivor.log"), &opts);
    wait_until("both workers are busy", Duration::from_secs(60), || {
        ws.count("execute", "b") >= 8
    });
    let mut doomed = doomed;
    signal(&doomed, "-KILL");
    doomed.wait().unwrap();
    wait_until("every run succeeded", Duration::from_secs(120), || {
        all_succeeded(&pg, 24)
    });
    let listed = ws.flowhost_on(&pg.url(), &["workers", "--json", "--lost-after", "1s"]);
    let workers = stdout_json(&listed);
    let status = |pid: u32| {
        workers
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["pid"] == json!(pid))
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status(doomed.id()), "lost", "{workers}");
    assert_eq!(status(survivor.id()), "running", "{workers}");
    stop(survivor);

    let counts = executions(&ws);
    assert_eq!(counts.len(), 72);
    let again: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        again.iter().all(|(_, n)| **n == 2),
        "at most once more: {again:?}"
    );
    assert!(
        again.len() <= 4,
        "only the killed worker's tasks in flight (4 runs at most) ran again: {again:?}"
    );
    let mut per_run: HashMap<u64, usize> = HashMap::new();
    for ((_, seed), _) in &again {
        *per_run.entry(*seed).or_default() += 1;
    }
    assert!(
        per_run.values().all(|n| *n == 1),
        "one task in flight per run: {again:?}"
    );
    let resumed: u64 = pg
        .sql("SELECT coalesce(sum(resumes), 0) FROM runs")
        .parse()
        .unwrap();
    assert!(
        resumed >= 1,
        "the killed worker's runs were taken over and resumed"
    );
    // The record agrees with what the tasks saw.
    let recorded: u64 = pg.sql("SELECT sum(executions) FROM tasks").parse().unwrap();
    assert_eq!(recorded as usize, counts.values().sum::<usize>());
}

#[test]
fn a_worker_paused_past_its_lease_is_fenced_when_it_wakes() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let flow = ws.waiting_flow("paused");
    let id = submit(&pg, &flow, 0..1).remove(0);
    let opts = SHORT_LEASE;
    let paused_log = ws.path("paused.log");
    let paused = worker(&ws, &pg.url(), &paused_log, &opts);
    wait_until("the first worker runs b", Duration::from_secs(60), || {
        ws.count("execute", "b") == 1
    });
    signal(&paused, "-STOP");
    let other = worker(&ws, &pg.url(), &ws.path("other.log"), &opts);
    wait_until(
        "the second worker took over and runs b again",
        Duration::from_secs(60),
        || ws.count("execute", "b") == 2,
    );
    let listed = stdout_json(&ws.flowhost_on(&pg.url(), &["runs", "list", "--json"]));
    assert_eq!(
        listed[0]["lease"]["pid"],
        json!(other.id()),
        "runs list names the worker holding the run: {listed}"
    );
    ws.release();
    wait_until("the run succeeded", Duration::from_secs(60), || {
        all_succeeded(&pg, 1)
    });
    signal(&paused, "-CONT");
    wait_fenced("the paused worker", &paused_log, Duration::from_secs(60));
    stop(paused);
    stop(other);

    let record = finished_by_the_second_worker(&ws, &pg, &id);
    assert_eq!(record.summary.resumes, 1);
    let last = pg.sql(&format!(
        "SELECT to_state FROM transitions WHERE run_id = '{id}' ORDER BY seq DESC LIMIT 1"
    ));
    assert_eq!(last, "SUCCESS", "nothing was written after the run ended");
}

#[test]
fn workers_reconnect_after_the_database_restarts_and_lose_nothing() {
    let mut pg = Postgres::start();
    let ws = Workspace::new();
    let flow = sleeping_in_b(&ws, "restart", 1500);
    submit(&pg, &flow, 0..10);
    let log = ws.path("worker.log");
    let worker = worker(
        &ws,
        &pg.url(),
        &log,
        &[
            "--concurrency",
            "10",
            "--lease-ttl",
            "2s",
            "--poll",
            "200ms",
        ],
    );
    // Every run at `b`: its `a` is committed (a plugin is called only after the transitions
    // before it are), so `a` must never run again.
    wait_until("runs are in flight", Duration::from_secs(60), || {
        ws.count("execute", "b") >= 10
    });
    // Down for longer than the tasks in flight take: their next writes fail, stopping them.
    pg.stop();
    std::thread::sleep(Duration::from_secs(2));
    pg.restart();
    wait_until(
        "every run succeeded after the restart",
        Duration::from_secs(120),
        || all_succeeded(&pg, 10),
    );
    stop(worker);
    assert!(
        log_text(&log).contains("run abandoned"),
        "writes failed while the database was down:\n{}",
        log_text(&log)
    );
    let resumed: u64 = pg.sql("SELECT sum(resumes) FROM runs").parse().unwrap();
    assert!(
        resumed >= 1,
        "the stopped runs were claimed again and resumed from their journals"
    );
    let counts = executions(&ws);
    for seed in 0..10 {
        assert_eq!(
            counts.get(&("a".to_owned(), seed)),
            Some(&1),
            "a committed task never runs again (run {seed})"
        );
        assert!(
            counts.contains_key(&("c".to_owned(), seed)),
            "run {seed} finished"
        );
    }
}

/// A host of its own: a network namespace joined to this one by a veth pair, each end with
/// its own address. Removed on drop.
struct Host {
    ns: String,
    link: String,
    /// This side's address: where the database is reached from the namespace.
    gateway: String,
}

impl Host {
    /// Host `n` of this test process, or why it cannot be made here.
    fn new(n: u32) -> Result<Self, String> {
        let id = std::process::id();
        let net = format!("10.{}.{n}", 50 + id % 200);
        let (ns, link, peer) = (
            format!("fh{id}h{n}"),
            format!("fh{id}h{n}a"),
            format!("fh{id}h{n}b"),
        );
        let host = Host {
            ns: ns.clone(),
            link: link.clone(),
            gateway: format!("{net}.1"),
        };
        for command in [
            format!("netns add {ns}"),
            format!("link add {link} type veth peer name {peer}"),
            format!("link set {peer} netns {ns}"),
            format!("addr add {net}.1/24 dev {link}"),
            format!("link set {link} up"),
            format!("-n {ns} addr add {net}.2/24 dev {peer}"),
            format!("-n {ns} link set {peer} up"),
            format!("-n {ns} link set lo up"),
        ] {
            ip(&command)?;
        }
        Ok(host)
    }

    /// Cuts (or restores) the host's link to the database.
    fn link(&self, up: bool) {
        ip(&format!(
            "link set {} {}",
            self.link,
            if up { "up" } else { "down" }
        ))
        .unwrap();
    }

    /// A `flowhost worker` on this host, with its log in `log`.
    fn worker(&self, ws: &Workspace, url: &str, log: &Path, extra: &[&str]) -> Child {
        let plugins = ws.path(&format!("plugins-{}", self.ns));
        let log = std::fs::File::create(log).unwrap();
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(flowhost_bin())
            .args([
                "worker",
                "--db",
                url,
                "--plugin-dir",
                plugins.to_str().unwrap(),
            ])
            .args(extra)
            .env("HOME", ws.path("home"))
            .env("XDG_DATA_HOME", ws.path("home/.local/share"))
            .current_dir(ws.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = ip(&format!("link del {}", self.link));
        let _ = ip(&format!("netns del {}", self.ns));
    }
}

fn ip(args: &str) -> Result<(), String> {
    let output = std::process::Command::new("ip")
        .args(args.split(' '))
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {args}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[test]
fn a_worker_cut_off_from_the_database_loses_its_run_and_is_fenced_when_its_link_returns() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let hosts = match (Host::new(1), Host::new(2)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(why), _) | (_, Err(why)) => {
            eprintln!("skipped: cannot make network namespaces here: {why}");
            return;
        }
    };
    let (cut, other) = hosts;
    let pg = Postgres::start_on(&format!("127.0.0.1,{},{}", cut.gateway, other.gateway));
    let ws = Workspace::new();
    let flow = ws.waiting_flow("partitioned");
    let id = submit(&pg, &flow, 0..1).remove(0);
    let opts = SHORT_LEASE;
    let cut_log = ws.path("cut.log");
    let mut cut_worker = cut.worker(&ws, &pg.url_at(&cut.gateway), &cut_log, &opts);
    wait_until("the first host runs b", Duration::from_secs(60), || {
        ws.count("execute", "b") == 1
    });
    assert!(
        cut_worker.try_wait().unwrap().is_none(),
        "{}",
        log_text(&cut_log)
    );
    cut.link(false);
    let other_worker = other.worker(
        &ws,
        &pg.url_at(&other.gateway),
        &ws.path("other.log"),
        &opts,
    );
    wait_until(
        "the second host took the run over",
        Duration::from_secs(60),
        || ws.count("execute", "b") == 2,
    );
    cut.link(true);
    ws.release();
    wait_until("the run succeeded", Duration::from_secs(60), || {
        all_succeeded(&pg, 1)
    });
    wait_fenced("the cut-off worker", &cut_log, Duration::from_secs(90));
    stop(cut_worker);
    stop(other_worker);

    finished_by_the_second_worker(&ws, &pg, &id);
}

#[test]
fn serve_on_postgres_queues_runs_for_the_workers_and_a_cancel_stops_their_task_in_flight_even_while_draining()
 {
    let pg = Postgres::start();
    let ws = Workspace::new();
    ws.waiting_flow("queued");
    let server = crate::kit::serving::Served::start_on(&ws, &ws.path(""), &pg.url(), &[]);

    // Started through the API, the run waits in the queue: the service executes nothing.
    let (status, started) = server.post("/v1/flows/flow/runs", r#"{"seed": 7}"#, None);
    assert_eq!(status, 201, "{started}");
    let first = started["run_id"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ws.count("execute", "a"), 0, "no worker yet, so nothing ran");
    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "flowhost_queue_depth 1"),
        "{metrics}"
    );

    // A worker on another process claims it and is told to drain (a first SIGTERM) while `b`
    // waits for a signal that never comes; cancelled through the service, `b` is stopped at
    // once, the run reverts what ran, and the drained worker exits.
    let opts = ["--concurrency", "2", "--poll", "200ms"];
    let mut draining = worker(&ws, &pg.url(), &ws.path("worker.log"), &opts);
    wait_until(
        "`b` is executing on the worker",
        Duration::from_secs(60),
        || ws.count("execute", "b") == 1,
    );
    signal(&draining, "-TERM");
    std::thread::sleep(Duration::from_millis(300));
    let (status, answer) = server.post(&format!("/v1/runs/{first}/cancel"), "", None);
    assert_eq!(status, 202, "{answer}");
    let run = server.wait_finished(&first);
    assert_eq!(run["state"], "REVERTED", "{run}");
    let b = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "b")
        .unwrap();
    assert_eq!(b["error"]["code"], "cancelled", "{run}");
    assert_eq!(
        ws.counts(&[("execute", "c"), ("revert", "b"), ("revert", "a")]),
        [0, 1, 1],
        "the cancelled run stopped `b` and never started `c`; what ran was reverted"
    );
    wait_until("the drained worker exits", Duration::from_secs(30), || {
        draining.try_wait().unwrap().is_some()
    });
    assert!(draining.wait().unwrap().success());

    // Runs started afterwards still go through: the request belonged to that run only.
    let worker = worker(&ws, &pg.url(), &ws.path("worker2.log"), &opts);
    ws.release();
    let (_, started) = server.post("/v1/flows/flow/runs", r#"{"seed": 8}"#, None);
    let second = server.wait_finished(started["run_id"].as_str().unwrap());
    assert_eq!(second["state"], "SUCCESS", "{second}");
    stop(worker);
}
