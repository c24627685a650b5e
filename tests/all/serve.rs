//! `flowhost serve` over real HTTP: a client starts runs, follows their events, is refused
//! without the token, cancels a run half-way and reads the metrics — against the binary on a
//! free loopback port.

use std::io::Read;
use std::time::Duration;

use serde_json::{Value, json};

use crate::kit::serving::{Served, answer, read_events};
use crate::kit::{
    Workspace, assert_contains, assert_exit, document_states, exit_json, signal, stderr,
};

/// The task transitions of an event list: (task, from, to).
fn task_moves(events: &[(String, Value)]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter(|(name, _)| name == "task")
        .map(|(_, e)| {
            (
                e["task"].as_str().unwrap().to_owned(),
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn moves(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(t, f, to)| (t.to_string(), f.to_string(), to.to_string()))
        .collect()
}

fn three_steps(ws: &Workspace, b: Value) -> std::path::PathBuf {
    ws.flow(
        "three_steps",
        &[("a", json!({})), ("b", b), ("c", json!({}))],
    );
    ws.root().to_path_buf()
}

/// Serves the workspace's three steps.
fn serve_three_steps(ws: &Workspace) -> Served {
    let flows = three_steps(ws, json!({}));
    Served::start(ws, &flows, &[])
}

/// Serves the workspace's three steps, `b` waiting for `/signal/go`, and starts a run over
/// HTTP: the server, and the run's id once `b` is executing.
fn serve_a_waiting_run(ws: &Workspace) -> (Served, String) {
    let flows = three_steps(ws, json!({ "mode": "wait_file", "path": "/signal/go" }));
    let mut server = Served::start(ws, &flows, &[]);
    let (_, started) = server.post("/v1/flows/flow/runs", "{}", None);
    let id = started["run_id"].as_str().unwrap().to_owned();
    ws.wait_for(&mut server.child, "execute", "b");
    (server, id)
}

#[test]
fn a_run_started_over_http_is_recorded_and_its_events_arrive_in_order() {
    let ws = Workspace::new();
    let server = serve_three_steps(&ws);

    let flows_listed = server.get("/v1/flows");
    assert_eq!(flows_listed[0]["name"], "flow");
    assert_eq!(flows_listed[0]["flow"], "three_steps");
    assert_eq!(
        flows_listed[0]["tasks"][1]["requires"],
        json!(["a_out"]),
        "b reads a's result through its rebind"
    );
    assert_eq!(flows_listed[0]["tasks"][1]["provides"], json!(["b_out"]));

    let (status, started) = server.post("/v1/flows/flow/runs", r#"{"seed": 41}"#, None);
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap();
    let run = server.wait_finished(id);
    assert_eq!(run["state"], "SUCCESS");
    assert_eq!(run["final_store"]["seed"], 41);
    assert_eq!(
        run["final_store"]["c_out"]["value"]["value"]["value"], 41,
        "each probe wraps the previous result"
    );

    // The API's document is `flowhost runs show --json`'s.
    assert_eq!(ws.show(id), run);

    let events = server.events(id);
    assert_eq!(
        task_moves(&events),
        moves(&[
            ("a", "PENDING", "RUNNING"),
            ("a", "RUNNING", "SUCCESS"),
            ("b", "PENDING", "RUNNING"),
            ("b", "RUNNING", "SUCCESS"),
            ("c", "PENDING", "RUNNING"),
            ("c", "RUNNING", "SUCCESS"),
        ])
    );
    let (last, end) = events.last().unwrap();
    assert_eq!((last.as_str(), &end["state"]), ("end", &json!("SUCCESS")));
    assert!(
        events
            .iter()
            .all(|(_, e)| e.get("result").is_none() && e.get("args").is_none()),
        "no store values in the stream"
    );

    let listed = server.get("/v1/runs?state=success&flow=three_steps&limit=5");
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(server.get("/v1/runs?state=REVERTED"), json!([]));
    assert_eq!(
        server.get("/v1/runs?flow=flow")[0]["id"],
        id,
        "the served name finds the flow's runs too"
    );
    assert_eq!(server.get("/v1/runs?flow=other"), json!([]));
    assert_eq!(server.get(&format!("/v1/runs/{id}/store/seed")), json!(41));
}

#[test]
fn a_stream_opened_mid_run_replays_what_happened_then_follows_without_gaps() {
    let ws = Workspace::new();
    let flows = three_steps(&ws, json!({ "mode": "wait_file", "path": "/signal/go" }));
    let mut server = Served::start(&ws, &flows, &[]);
    let (status, started) = server.post("/v1/flows/flow/runs", "", None);
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    ws.wait_for(&mut server.child, "execute", "b");

    let stream = ureq::get(&server.url(&format!("/v1/runs/{id}/events")))
        .call()
        .unwrap();
    let reader = std::thread::spawn(move || read_events(stream.into_reader()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !reader.is_finished(),
        "the stream stays open while the run goes on"
    );
    ws.release();
    let events = reader.join().unwrap();

    assert_eq!(
        events[0].0, "flow",
        "the stream starts at the run's start: {events:?}"
    );
    assert_eq!(
        (events[0].1["from"].as_str(), events[0].1["to"].as_str()),
        (Some("PENDING"), Some("RUNNING"))
    );
    assert_eq!(
        task_moves(&events).len(),
        6,
        "every transition once: {events:?}"
    );
    assert_eq!(
        task_moves(&events)[3],
        ("b".into(), "RUNNING".into(), "SUCCESS".into())
    );
    assert_eq!(events.last().unwrap().1["state"], "SUCCESS");

    // Once the run is over, the stream is read back from the run database: the same moves.
    let replayed = server.events(&id);
    assert_eq!(task_moves(&replayed), task_moves(&events));
    // A client reconnecting after event 2 gets the rest, each once.
    let rest = ureq::get(&server.url(&format!("/v1/runs/{id}/events")))
        .set("Last-Event-ID", "2")
        .call()
        .unwrap();
    let mut lines = String::new();
    rest.into_reader().read_to_string(&mut lines).unwrap();
    assert!(lines.starts_with("event: task\nid: 3\n"), "{lines}");
    assert_eq!(
        lines.matches("\nid: ").count(),
        replayed.len() - 1 - 3,
        "{lines}"
    );
}

#[test]
fn an_invalid_store_is_422_with_the_problems_check_json_reports() {
    let ws = Workspace::new();
    let server = serve_three_steps(&ws);

    // `a_out` is provided by task a: an initial store may not hold it (names are written once).
    let (status, invalid) = server.post("/v1/flows/flow/runs", r#"{"a_out": 5}"#, None);
    assert_eq!(status, 422, "{invalid}");
    let check = ws.flowhost(&["check", "flow.toml", "--json", "--store", "a_out=5"]);
    let expected = exit_json(&check, 65);
    assert_eq!(invalid["state"], "INVALID");
    assert_eq!(invalid["flow"], expected["flow"]);
    assert_eq!(invalid["problems"], expected["problems"]);
    assert_eq!(invalid["problems"][0]["task"], "a");

    for (body, why) in [("[1, 2]", "not an object"), ("{\"seed\": ", "not JSON")] {
        let (status, error) = server.post("/v1/flows/flow/runs", body, None);
        assert_eq!(status, 400, "{why}: {error}");
    }
    let (status, by_name) = server.post("/v1/flows/three_steps/runs", r#"{"a_out": 5}"#, None);
    assert_eq!(
        (status, &by_name["problems"]),
        (422, &expected["problems"]),
        "the flow's own name serves it too"
    );
    let (status, _) = server.post("/v1/flows/nope/runs", "{}", None);
    assert_eq!(status, 404);
    let (status, _) = server.post("/v1/flows/..%2Fflow/runs", "{}", None);
    assert_eq!(status, 404, "a flow name is never a path");
    assert_eq!(server.get("/v1/runs"), json!([]), "nothing was recorded");
    assert!(ws.calls().is_empty(), "nothing ran");
}

/// Sends `head` (a request line and headers) and then `body` — from another thread, ignoring
/// write errors, since the server may answer and close before reading it all — and returns
/// the answer's status code.
fn raw_request(server: &Served, head: &str, body: Vec<u8>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .write_all(head.replace('\n', "\r\n").as_bytes())
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status).unwrap();
    drop(sender);
    status.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_body_over_one_mebibyte_is_refused_with_413() {
    let ws = Workspace::new();
    let server = serve_three_steps(&ws);
    let big = format!("{{\"seed\": \"{}\"}}", "x".repeat(1024 * 1024 + 1));

    // Announced by its length: refused before a byte of it is read.
    let head = format!(
        "POST /v1/flows/flow/runs HTTP/1.1\nHost: {}\nContent-Type: application/json\nContent-Length: {}\n\n",
        &server.base[7..],
        big.len()
    );
    assert_eq!(raw_request(&server, &head, big.clone().into_bytes()), 413);
    // Sent in chunks of unknown total: refused once it passes the cap.
    let head = format!(
        "POST /v1/flows/flow/runs HTTP/1.1\nHost: {}\nTransfer-Encoding: chunked\n\n",
        &server.base[7..]
    );
    let mut chunked = Vec::new();
    for chunk in big.as_bytes().chunks(64 * 1024) {
        chunked.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        chunked.extend(chunk);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    assert_eq!(raw_request(&server, &head, chunked), 413);
    assert_eq!(server.get("/v1/runs"), json!([]), "nothing was started");

    let small = format!("{{\"seed\": \"{}\"}}", "x".repeat(1000));
    let (status, started) = server.post("/v1/flows/flow/runs", &small, None);
    assert_eq!(status, 201, "a body under the cap is fine: {started}");
}

#[test]
fn with_a_token_changes_and_store_values_need_it() {
    let ws = Workspace::new();
    let flows = three_steps(&ws, json!({}));
    let token = "s3cret-token-0123456789";
    std::fs::write(ws.path("token"), format!("{token}\n")).unwrap();
    let server = Served::start(
        &ws,
        &flows,
        &["--token-file", ws.path("token").to_str().unwrap()],
    );

    for presented in [
        None,
        Some("wrong-token-0123456789"),
        Some("s3cret-token-012345678"),
    ] {
        let (status, refused) = server.post("/v1/flows/flow/runs", "{}", presented);
        assert_eq!(status, 401, "{presented:?}: {refused}");
    }
    assert_eq!(
        server.get("/v1/runs"),
        json!([]),
        "a refused request starts nothing"
    );

    let (status, started) = server.post("/v1/flows/flow/runs", r#"{"seed": 7}"#, Some(token));
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap();
    let run = server.wait_finished(id);
    assert_eq!(run["redacted"], true, "no token: values hidden");
    assert_eq!(
        (&run["final_store"], &run["initial_store"]),
        (&Value::Null, &Value::Null)
    );
    assert!(
        run["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["result"].is_null() && t["args"].is_null())
    );
    assert_eq!(run["state"], "SUCCESS", "states and names stay visible");

    let with_token = |path: &str| {
        answer(
            ureq::get(&server.url(path))
                .set("Authorization", &format!("Bearer {token}"))
                .call(),
        )
    };
    let (_, full) = with_token(&format!("/v1/runs/{id}"));
    assert_eq!(full["final_store"]["seed"], 7);
    assert!(full.get("redacted").is_none());
    assert_eq!(
        answer(ureq::get(&server.url(&format!("/v1/runs/{id}/store/seed"))).call()).0,
        401
    );
    assert_eq!(
        with_token(&format!("/v1/runs/{id}/store/seed")),
        (200, json!(7))
    );
    let (status, _) = server.post(&format!("/v1/runs/{id}/cancel"), "", None);
    assert_eq!(status, 401);
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused() {
    let ws = Workspace::new();
    let flows = three_steps(&ws, json!({}));
    let flows = flows.to_str().unwrap();
    let serve = |flows: &str, extra: &[&str]| {
        let mut args = vec!["serve", "--flows", flows];
        args.extend_from_slice(extra);
        ws.flowhost(&args)
    };
    let output = serve(flows, &["--listen", "0.0.0.0:0"]);
    assert_exit(&output, 64);
    assert_contains(&stderr(&output), "--token-file");

    std::fs::write(ws.path("token"), " \n").unwrap();
    let token = ws.path("token");
    let output = serve(flows, &["--token-file", token.to_str().unwrap()]);
    assert_exit(&output, 66);
    assert_contains(&stderr(&output), "is empty");

    let missing = ws.path("no-such-folder");
    let output = serve(missing.to_str().unwrap(), &["--listen", "127.0.0.1:0"]);
    assert_exit(&output, 66);
    assert_contains(&stderr(&output), "no-such-folder");
    // An unreachable PostgreSQL database, named.
    let unreachable = "postgres://flowhost@127.0.0.1:1/flowhost";
    let output = serve(flows, &["--db", unreachable, "--listen", "127.0.0.1:0"]);
    assert_exit(&output, 66);
    assert_contains(&stderr(&output), "127.0.0.1:1");
}

#[test]
fn cancel_stops_the_task_in_flight_at_once_and_reverts_what_ran() {
    let ws = Workspace::new();
    let (server, id) = serve_a_waiting_run(&ws);

    let (status, refused) = server.post(&format!("/v1/runs/{id}/resume"), "", None);
    assert_eq!(
        status, 409,
        "a run going on is not resumed beside itself: {refused}"
    );
    let (status, cancelling) = server.post(&format!("/v1/runs/{id}/cancel"), "", None);
    assert_eq!(status, 202, "{cancelling}");
    // `b` is never released: only the cancel ends its wait.
    let run = server.wait_finished(&id);

    assert_eq!(run["state"], "REVERTED", "{run}");
    assert_eq!(document_states(&run), ["REVERTED", "REVERTED", "PENDING"]);
    assert_eq!(run["tasks"][1]["error"]["code"], "cancelled", "{run}");
    assert_eq!(
        ws.counts(&[("execute", "c"), ("revert", "b"), ("revert", "a")]),
        [0, 1, 1],
        "b was stopped and reverted, the task after it never ran"
    );

    let (status, refused) = server.post(&format!("/v1/runs/{id}/cancel"), "", None);
    assert_eq!(status, 409, "a finished run cannot be cancelled: {refused}");
    assert_eq!(server.post("/v1/runs/nope/cancel", "", None).0, 404);
}

#[test]
fn an_interrupted_run_is_resumed_over_http() {
    let ws = Workspace::new();
    let flows = three_steps(&ws, json!({ "mode": "wait_file", "path": "/signal/go" }));
    let id = ws.run_and_kill("execute", "b").id;

    let server = Served::start(&ws, &flows, &[]);
    assert_eq!(server.get(&format!("/v1/runs/{id}"))["state"], "RUNNING");
    ws.release();
    let (status, resumed) = server.post(&format!("/v1/runs/{id}/resume"), "", None);
    assert_eq!(status, 202, "{resumed}");
    let run = server.wait_finished(&id);
    assert_eq!(run["state"], "SUCCESS");
    assert_eq!(
        ws.executions(&["a", "c"]),
        [1, 1],
        "a succeeded before the kill: not executed again"
    );
    let (status, _) = server.post(&format!("/v1/runs/{id}/resume"), "", None);
    assert_eq!(status, 409, "a finished run is not resumed");
}

#[test]
fn every_route_is_in_the_openapi_document_and_metrics_count_runs() {
    let ws = Workspace::new();
    let server = serve_three_steps(&ws);
    let document = server.get("/v1/openapi.json");
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let routes = [
        ("/v1/flows", "get"),
        ("/v1/flows/{name}", "get"),
        ("/v1/flows/{name}/runs", "post"),
        ("/v1/runs", "get"),
        ("/v1/runs/{id}", "get"),
        ("/v1/runs/{id}/store/{name}", "get"),
        ("/v1/runs/{id}/events", "get"),
        ("/v1/runs/{id}/resume", "post"),
        ("/v1/runs/{id}/cancel", "post"),
        ("/v1/runs/{id}/suspend", "post"),
        ("/v1/runs/{id}/revert", "post"),
        ("/v1/runs/{id}/restart", "post"),
        ("/v1/runs/{id}/signals/{name}", "post"),
        ("/v1/schedules", "get"),
        ("/v1/openapi.json", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
    ];
    for (path, method) in routes {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(
        document["paths"].as_object().unwrap().len(),
        routes.len(),
        "every documented path is served"
    );

    let mut health = String::new();
    ureq::get(&server.url("/healthz"))
        .call()
        .unwrap()
        .into_reader()
        .read_to_string(&mut health)
        .unwrap();
    assert_eq!(health.trim(), "ok");

    let (_, started) = server.post("/v1/flows/flow/runs", "{}", None);
    server.wait_finished(started["run_id"].as_str().unwrap());
    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for line in [
        "flowhost_runs{flow=\"three_steps\",state=\"SUCCESS\"} 1",
        "flowhost_runs_finished_total{flow=\"three_steps\",state=\"SUCCESS\"} 1",
        "flowhost_task_duration_seconds_count{flow=\"three_steps\",task=\"b\",phase=\"execute\"} 1",
        "flowhost_instances_in_flight 0",
        "flowhost_queue_depth 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
}

#[test]
fn sigterm_stops_accepting_and_lets_the_run_in_flight_finish() {
    let ws = Workspace::new();
    let (mut server, id) = serve_a_waiting_run(&ws);

    let stream = ureq::get(&server.url(&format!("/v1/runs/{id}/events")))
        .call()
        .unwrap();
    let follower = std::thread::spawn(move || read_events(stream.into_reader()));

    signal(&server.child, "-TERM");
    // The listener closes: new connections are refused while the run goes on.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ureq::get(&server.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .call()
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "serve waits for the run in flight"
    );
    let followed = follower.join().unwrap();
    assert!(
        followed.iter().all(|(name, _)| name != "end"),
        "open streams close at shutdown, before the run ends: {followed:?}"
    );
    ws.release();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");

    assert_eq!(
        ws.show(&id)["state"],
        "SUCCESS",
        "the run in flight finished"
    );
    assert_eq!(ws.count("execute", "c"), 1);
}

#[test]
fn a_web_page_elsewhere_can_neither_start_runs_nor_read_through_a_rebound_name() {
    let ws = Workspace::new();
    let server = serve_three_steps(&ws);
    let start = |origin: &str| {
        answer(
            ureq::post(&server.url("/v1/flows/flow/runs"))
                .set("Origin", origin)
                .set("Content-Type", "text/plain")
                .send_string("{}"),
        )
    };
    // A form or fetch from another site (cross-site request forgery).
    assert_eq!(start("http://evil.example").0, 403);
    assert_eq!(start("null").0, 403);
    let (_, refused) = answer(
        ureq::post(&server.url("/v1/flows/flow/runs"))
            .set("Sec-Fetch-Site", "cross-site")
            .send_string("{}"),
    );
    assert_contains(refused["error"].as_str().unwrap(), "cross-origin");
    // DNS rebinding: a site's name resolving to 127.0.0.1 reaches the port, but not the API.
    let (status, _) = answer(
        ureq::get(&server.url("/v1/runs"))
            .set("Host", "evil.example")
            .call(),
    );
    assert_eq!(status, 403);
    assert_eq!(server.get("/v1/runs"), json!([]), "nothing was started");

    // The console itself (same origin) may.
    let (status, started) = start(&server.base);
    assert_eq!(status, 201, "{started}");
    let port = server.base.rsplit(':').next().unwrap();
    let by_name = ureq::get(&server.url("/healthz"))
        .set("Host", &format!("localhost:{port}"))
        .call();
    assert_eq!(
        answer(by_name).0,
        200,
        "localhost is this service's own name"
    );
}
