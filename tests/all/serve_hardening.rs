//! `flowhost serve` against callers that cost it: half-sent requests and slow bodies on raw
//! sockets, hundreds of event streams on one run, a database of 200,000 runs read without
//! the token, a request with two `Host`s, and what a caller without the token can read of
//! what plugins produced. Load is compared as a ratio to the same measure unloaded, never to
//! a wall-clock limit. Everything on loopback.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::kit::serving::{Served, read_events};
use crate::kit::{Postgres, Workspace, assert_contains};

/// `127.0.0.1:PORT` of a server.
fn addr(server: &Served) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// The median of `n` timings of `f`.
fn median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// `loaded` against `unloaded`, the latter taken as at least `floor`: a baseline of a
/// millisecond or two would make any ratio noise. Also the plain ratio, for the record.
fn ratio(loaded: Duration, unloaded: Duration, floor: Duration) -> (f64, f64) {
    (
        loaded.as_secs_f64() / unloaded.max(floor).as_secs_f64(),
        loaded.as_secs_f64() / unloaded.as_secs_f64(),
    )
}

/// Waits until every socket of `sockets` is closed by the server (EOF or reset), or
/// `within` passed; returns how long each took, `None` for those still open.
fn closed_within(sockets: &mut [TcpStream], within: Duration) -> Vec<Option<Duration>> {
    let started = Instant::now();
    let mut closed = vec![None; sockets.len()];
    for socket in sockets.iter() {
        socket.set_nonblocking(true).unwrap();
    }
    while closed.iter().any(Option::is_none) && started.elapsed() < within {
        for (socket, closed) in sockets.iter_mut().zip(closed.iter_mut()) {
            if closed.is_some() {
                continue;
            }
            let mut buffer = [0u8; 4096];
            match socket.read(&mut buffer) {
                Ok(0) => *closed = Some(started.elapsed()),
                // An answer (408, 400) before the close: read on.
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(started.elapsed()),
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    closed
}

/// The flows folder: `flow` (probes a, b, c) and `quick` (one probe), in the workspace.
fn two_flows(ws: &Workspace) -> std::path::PathBuf {
    ws.flow("quick", &[("q", json!({}))]);
    std::fs::rename(ws.path("flow.toml"), ws.path("quick.toml")).unwrap();
    ws.waiting_flow("slow_probes");
    ws.root().to_path_buf()
}

#[test]
fn half_sent_requests_are_closed_at_the_header_timeout_and_past_the_cap_healthz_still_answers() {
    let ws = Workspace::new();
    let flows = two_flows(&ws);
    let server = Served::start(
        &ws,
        &flows,
        &["--header-timeout", "2s", "--max-connections", "40"],
    );
    let addr = addr(&server);

    // Sixty sockets, each with half a request: more than the cap of forty.
    let opened = Instant::now();
    let mut sockets: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut socket = TcpStream::connect(&addr).unwrap();
            socket
                .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: 1").as_bytes())
                .unwrap();
            socket
        })
        .collect();

    // A normal client is answered at once: the oldest half-open sockets make room.
    let asked = Instant::now();
    let answer = ureq::get(&server.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .call()
        .expect("/healthz answers past the cap");
    assert_eq!(answer.into_string().unwrap(), "ok\n");
    let answered_in = asked.elapsed();

    // Every half-sent request is closed: the evicted at once, the others at the timeout.
    let closed = closed_within(&mut sockets, Duration::from_secs(10));
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} half-sent requests still open after 10 s");
    let last = closed.iter().flatten().max().copied().unwrap();
    let at_timeout = closed
        .iter()
        .flatten()
        .filter(|c| **c + asked.duration_since(opened) >= Duration::from_millis(1500))
        .count();
    assert!(
        at_timeout > 0,
        "some sockets lived until the header timeout (else the test proves nothing): {closed:?}"
    );
    eprintln!(
        "slowloris: /healthz answered in {answered_in:?} past the cap; the last of 60 half-sent requests closed after {last:?} ({at_timeout} at the 2 s timeout)"
    );

    // And the server still serves.
    assert_eq!(server.get("/v1/flows").as_array().unwrap().len(), 2);
}

#[test]
fn a_body_sent_too_slowly_is_cut_at_the_idle_timeout() {
    let ws = Workspace::new();
    let flows = two_flows(&ws);
    let server = Served::start(
        &ws,
        &flows,
        &["--header-timeout", "30s", "--idle-timeout", "2s"],
    );
    let addr = addr(&server);
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(
        format!(
            "POST /v1/flows/quick/runs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .unwrap();
    let closed = closed_within(std::slice::from_mut(&mut slow), Duration::from_secs(10));
    let after = closed[0].expect("a body that stops arriving is cut");
    assert!(
        after >= Duration::from_millis(1500),
        "cut by the idle timeout, not at once: {after:?}"
    );
    eprintln!("slow body: cut after {after:?} (idle timeout 2 s)");
    // Nothing was started from the half body.
    assert_eq!(server.get("/v1/runs").as_array().unwrap().len(), 0);
}

#[test]
fn a_request_with_two_host_headers_is_refused() {
    let ws = Workspace::new();
    let flows = two_flows(&ws);
    let server = Served::start(&ws, &flows, &[]);
    let addr = addr(&server);
    let status = |head: &str| {
        let mut socket = TcpStream::connect(&addr).unwrap();
        socket.write_all(head.as_bytes()).unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).unwrap();
        answer
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        status(&format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )),
        "200"
    );
    assert_eq!(
        status(&format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        )),
        "400"
    );
    assert_eq!(
        status(&format!(
            "GET /v1/runs HTTP/1.1\r\nHost: evil.example\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )),
        "400"
    );
}

/// Starts `quick` over HTTP: resolves when the run is recorded and under way.
fn start_quick(server: &Served) {
    let (status, body) = server.post("/v1/flows/quick/runs", "{}", None);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn three_hundred_event_streams_on_a_run_share_one_reader_and_a_run_start_beside_them_stays_quick() {
    const STREAMS: usize = 300;
    let ws = Workspace::new();
    let flows = two_flows(&ws);
    // A 4 MiB initial store: a stream that re-read the record would read it every time.
    let flow = std::fs::read_to_string(ws.path("flow.toml")).unwrap();
    let big = "x".repeat(4 * 1024 * 1024);
    std::fs::write(
        ws.path("flow.toml"),
        flow.replacen("seed = 1\n", &format!("seed = 1\nblob = \"{big}\"\n"), 1),
    )
    .unwrap();
    let server = Served::start(&ws, &flows, &["--max-event-streams", &STREAMS.to_string()]);

    // A run executed elsewhere: `flowhost run` on the same database, waiting in b.
    let mut elsewhere = ws
        .recording(&["run", "flow.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ws.wait_for(&mut elsewhere, "execute", "b");
    let id = ws.only_run().id;

    start_quick(&server);
    let unloaded = median(9, || start_quick(&server));

    // The streams, each in a thread, reading to the run's end.
    let (subscribed, ready) = mpsc::channel();
    let readers: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (url, subscribed) = (
                server.url(&format!("/v1/runs/{id}/events")),
                subscribed.clone(),
            );
            std::thread::spawn(move || {
                let response = ureq::get(&url).call().unwrap();
                subscribed.send(()).unwrap();
                read_events(response.into_reader())
            })
        })
        .collect();
    for _ in 0..STREAMS {
        ready
            .recv_timeout(Duration::from_secs(60))
            .expect("every stream is answered");
    }
    // One more is refused while they are open.
    match ureq::get(&server.url(&format!("/v1/runs/{id}/events"))).call() {
        Err(ureq::Error::Status(503, response)) => {
            assert_contains(&response.into_string().unwrap(), "event streams are open")
        }
        other => panic!("stream {} beyond the cap: {other:?}", STREAMS + 1),
    }
    // Let the streams' reader run a few rounds, then time starts beside them.
    std::thread::sleep(Duration::from_secs(1));
    let loaded = median(9, || start_quick(&server));
    let (slowdown, plain) = ratio(loaded, unloaded, Duration::from_millis(20));
    eprintln!(
        "{STREAMS} event streams on a run with a 4 MiB store: a run start {unloaded:?} unloaded, {loaded:?} beside them ({plain:.1}x)"
    );
    assert!(
        slowdown < 5.0,
        "a run start beside {STREAMS} streams: {loaded:?} against {unloaded:?} alone"
    );

    // Every stream gets every event, in order, and the end.
    ws.release();
    assert!(elsewhere.wait().unwrap().success());
    let streams: Vec<Vec<(String, Value)>> =
        readers.into_iter().map(|r| r.join().unwrap()).collect();
    let first = &streams[0];
    let (last, end) = first.last().unwrap();
    assert_eq!((last.as_str(), &end["state"]), ("end", &json!("SUCCESS")));
    let tasks = first.iter().filter(|(name, _)| name == "task").count();
    assert_eq!(tasks, 6, "a, b and c each RUNNING then SUCCESS: {first:?}");
    for stream in &streams {
        assert_eq!(stream, first, "every stream saw the same events");
    }
    // Once they are gone, a stream may open again.
    assert_eq!(server.events(&id).last().unwrap().1["state"], "SUCCESS");
}

#[test]
fn listing_one_run_and_the_metrics_of_200000_runs_cost_about_what_they_cost_for_ten() {
    let ws = Workspace::new();
    let flows = two_flows(&ws);
    let server = Served::start(&ws, &flows, &[]);
    let db = rusqlite::Connection::open(ws.db()).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    // Runs of three flows, alternately SUCCESS and FAILURE, one second apart.
    let insert = |from: u64, to: u64| {
        db.execute_batch(&format!(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {to})
             INSERT INTO runs (id, flow, plugins, initial_store, state, created_at, updated_at)
             SELECT printf('bulk-%06d', i), CASE i % 3 WHEN 0 THEN 'alpha' WHEN 1 THEN 'beta' ELSE 'gamma' END,
                    '[]', '{{}}', CASE i % 2 WHEN 0 THEN 'SUCCESS' ELSE 'FAILURE' END,
                    strftime('%Y-%m-%dT%H:%M:%fZ', 1700000000 + i, 'unixepoch'),
                    strftime('%Y-%m-%dT%H:%M:%fZ', 1700000000 + i, 'unixepoch')
             FROM n;
             COMMIT;"
        ))
        .unwrap();
    };
    let list_one = || {
        let runs = server.get("/v1/runs?limit=1");
        assert_eq!(runs.as_array().unwrap().len(), 1);
        runs[0]["id"].as_str().unwrap().to_owned()
    };
    let metrics = || {
        ureq::get(&server.url("/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    };

    insert(1, 10);
    assert_eq!(list_one(), "bulk-000010");
    let (list_small, metrics_small) = (
        median(11, || drop(list_one())),
        median(11, || drop(metrics())),
    );

    insert(11, 200_000);
    assert_eq!(list_one(), "bulk-200000", "the newest run");
    let text = metrics();
    // 200,000 / 6 runs of each (flow, state) pair, give or take one.
    assert_contains(
        &text,
        "flowhost_runs{flow=\"alpha\",state=\"SUCCESS\"} 33333",
    );
    assert_contains(
        &text,
        "flowhost_runs{flow=\"beta\",state=\"FAILURE\"} 33334",
    );
    let (list_large, metrics_large) = (
        median(11, || drop(list_one())),
        median(11, || drop(metrics())),
    );

    let floor = Duration::from_millis(10);
    let ((list_ratio, list_plain), (metrics_ratio, metrics_plain)) = (
        ratio(list_large, list_small, floor),
        ratio(metrics_large, metrics_small, floor),
    );
    eprintln!(
        "GET /v1/runs?limit=1: {list_small:?} with 10 runs, {list_large:?} with 200,000 ({list_plain:.1}x); /metrics: {metrics_small:?}, {metrics_large:?} ({metrics_plain:.1}x)"
    );
    assert!(
        list_ratio < 5.0,
        "listing one run of 200,000: {list_large:?} against {list_small:?} of 10"
    );
    assert!(
        metrics_ratio < 8.0,
        "/metrics of 200,000 runs: {metrics_large:?} against {metrics_small:?} of 10"
    );
}

#[test]
fn without_the_token_nothing_a_plugin_produced_or_was_given_can_be_read() {
    let ws = Workspace::new();
    // a reports progress (details) and reverts with a result; b fails with details.
    ws.flow(
        "leaky",
        &[
            (
                "a",
                json!({ "progress": [0.5], "revert_result": { "undo": "secret-undo" } }),
            ),
            (
                "b",
                json!({ "fail": "boom-code", "message": "b was told to fail" }),
            ),
        ],
    );
    std::fs::write(ws.path("token"), "s3cret-token-0123456789abcdef").unwrap();
    let token = "s3cret-token-0123456789abcdef";
    let token_file = ws.path("token");
    let server = Served::start(
        &ws,
        ws.root(),
        &["--token-file", token_file.to_str().unwrap()],
    );
    let (status, started) = server.post(
        "/v1/flows/flow/runs",
        r#"{"password": "hunter2-in-the-store"}"#,
        Some(token),
    );
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    let run = server.wait_finished(&id);
    assert_eq!(run["state"], "REVERTED");

    // What only a token holder sees: the test would pass vacuously without it.
    let full: Value = ureq::get(&server.url(&format!("/v1/runs/{id}")))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let full_text = full.to_string();
    for produced in [
        "hunter2-in-the-store",
        "secret-undo",
        "\"step\"",
        "\"details\"",
    ] {
        assert_contains(&full_text, produced);
    }

    // Every route a caller without the token can read.
    let document = server.get(&format!("/v1/runs/{id}"));
    assert_eq!(document["redacted"], true);
    let b = &document["tasks"][1];
    assert_eq!(b["error"]["code"], "boom-code", "code and message stay");
    assert_eq!(b["error"]["message"], "b was told to fail");
    assert_eq!(document["tasks"][0]["progress"], Value::Null);
    assert_eq!(document["tasks"][0]["revert_result"], Value::Null);
    let texts = [
        ("GET /v1/runs/{id}", document.to_string()),
        ("GET /v1/runs", server.get("/v1/runs").to_string()),
        (
            "GET /v1/runs?state=REVERTED&limit=1",
            server.get("/v1/runs?state=REVERTED&limit=1").to_string(),
        ),
        (
            "GET /v1/runs/{id}/events",
            serde_json::to_string(&server.events(&id)).unwrap(),
        ),
        (
            "GET /metrics",
            ureq::get(&server.url("/metrics"))
                .call()
                .unwrap()
                .into_string()
                .unwrap(),
        ),
        ("GET /v1/flows", server.get("/v1/flows").to_string()),
    ];
    for (route, text) in &texts {
        for produced in [
            "hunter2-in-the-store",
            "secret-undo",
            "\"step\"",
            "\"details\"",
        ] {
            assert!(
                !text.contains(produced),
                "{route} shows {produced} without the token:\n{text}"
            );
        }
    }
    assert_contains(&texts[3].1, "boom-code");
    match ureq::get(&server.url(&format!("/v1/runs/{id}/store/password"))).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("a store value without the token: {other:?}"),
    }
}

#[test]
fn a_queued_runs_event_stream_stays_open_until_a_worker_ends_the_run() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let flows = two_flows(&ws);
    let server = Served::start_on(&ws, &flows, &pg.url(), &[]);
    let (status, started) = server.post("/v1/flows/quick/runs", "{}", None);
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    assert_eq!(server.get(&format!("/v1/runs/{id}"))["state"], "PENDING");

    // The stream, opened while the run waits in the queue: it must not end PENDING.
    let url = server.url(&format!("/v1/runs/{id}/events"));
    let stream =
        std::thread::spawn(move || read_events(ureq::get(&url).call().unwrap().into_reader()));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !stream.is_finished(),
        "the stream of a queued run ended before any worker took it"
    );

    let plugins = ws.path("worker-plugins");
    let log = std::fs::File::create(ws.path("worker.log")).unwrap();
    let mut worker = ws
        .command(&[
            "worker",
            "--db",
            &pg.url(),
            "--plugin-dir",
            plugins.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let events = stream.join().unwrap();
    let _ = worker.kill();
    let _ = worker.wait();
    let (last, end) = events.last().unwrap();
    assert_eq!(
        (last.as_str(), &end["state"]),
        ("end", &json!("SUCCESS")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(name, e)| name == "task" && e["task"] == "q" && e["to"] == "SUCCESS"),
        "the worker's transitions reached the stream: {events:?}"
    );
}

#[test]
fn a_run_document_leaves_values_over_a_mebibyte_out_and_says_how_long_they_are() {
    let ws = Workspace::new();
    let flows = two_flows(&ws);
    let flow = std::fs::read_to_string(ws.path("quick.toml")).unwrap();
    let big = "x".repeat(2 * 1024 * 1024);
    std::fs::write(
        ws.path("quick.toml"),
        flow.replacen("seed = 1\n", &format!("seed = 1\nblob = \"{big}\"\n"), 1),
    )
    .unwrap();
    let server = Served::start(&ws, &flows, &[]);
    let (status, started) = server.post("/v1/flows/quick/runs", "{}", None);
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    server.wait_finished(&id);

    let document = server.get(&format!("/v1/runs/{id}"));
    assert_eq!(document["state"], "SUCCESS");
    assert_eq!(document["initial_store"], Value::Null);
    assert_eq!(document["final_store"], Value::Null);
    let omitted = document["omitted"]
        .as_array()
        .expect("omitted values listed");
    let names: Vec<&str> = omitted
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["initial_store", "final_store"]);
    assert!(
        omitted
            .iter()
            .all(|o| o["bytes"].as_u64().unwrap() > 2 * 1024 * 1024)
    );
    // The task's own values are small and shown.
    assert_ne!(document["tasks"][0]["result"], Value::Null, "{document}");
    // One value of the final store is still there to read.
    assert_eq!(
        server
            .get(&format!("/v1/runs/{id}/store/blob"))
            .as_str()
            .unwrap()
            .len(),
        big.len()
    );
}
