//! Network grants, tried against real servers on loopback: each grant form reaches its
//! server, each near miss is refused before any connection, the deadline and the limits
//! hold while a call waits on the network, private CAs are trusted only when given, and a
//! secret's value is never seen by the task nor recorded or shown anywhere.

use std::path::Path;

use flowhost_testkit::net::{Behaviour, Server, TestCa};
use flowhost_testkit::serving::Served;
use serde_json::{Value, json};

use crate::kit::{
    Postgres, Workspace, assert_exit, flowhost, plugin, polyglot, polyglot_built, repo_root,
    stderr, stdout, stdout_json,
};

/// A one-task flow running net-probe with `entry` (TOML lines) added to the task, and
/// `top` (TOML lines) before it.
fn net_flow(dir: &Path, top: &str, entry: &str) -> std::path::PathBuf {
    let path = dir.join("flow.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"net\"\n{top}\n[[task]]\nname = \"probe\"\nplugin = {:?}\n{entry}\n",
            plugin("net_probe")
        ),
    )
    .unwrap();
    path
}

/// Runs the flow with `args` as the probe's arguments; returns the probe's report.
fn probe(flow: &Path, args: Value, extra: &[&str]) -> (Value, std::process::Output) {
    let mut argv: Vec<String> = vec![
        "run".into(),
        flow.display().to_string(),
        "--no-db".into(),
        "--json".into(),
    ];
    for (name, value) in args.as_object().unwrap() {
        argv.push("--store".into());
        argv.push(format!("{name}={value}"));
    }
    argv.extend(extra.iter().map(|s| s.to_string()));
    let output = flowhost(&argv).run();
    let report = stdout_json(&output);
    (report, output)
}

fn http(urls: &[String]) -> Value {
    json!({ "http": urls.iter().map(|u| json!({ "url": u })).collect::<Vec<_>>() })
}

#[test]
fn an_http_grant_reaches_its_origin_and_every_near_miss_is_refused_before_connecting() {
    let server = Server::start(Behaviour::Echo);
    let other = Server::start(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let port = server.port();
    let flow = net_flow(
        dir.path(),
        "",
        &format!("net = {{ http = [\"http://127.0.0.1:{port}/v3/\"] }}"),
    );
    let urls = [
        format!("http://127.0.0.1:{port}/v3/volumes"),
        format!("http://127.0.0.1:{}/v3/volumes", other.port()),
        format!("https://127.0.0.1:{port}/v3/volumes"),
        format!("http://127.0.0.1:{port}/v2/volumes"),
        format!("http://127.0.0.1:{port}/v3/../admin"),
        format!("http://localhost:{port}/v3/volumes"),
        format!("http://127.0.0.2:{port}/v3/volumes"),
    ];
    let (report, output) = probe(&flow, http(&urls), &[]);
    assert_exit(&output, 0);
    let results = report["store"]["net"]["http"].as_array().unwrap().clone();
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(
        serde_json::from_str::<Value>(results[0]["body"].as_str().unwrap()).unwrap()["path"],
        "/v3/volumes"
    );
    for (url, result) in urls.iter().zip(&results).skip(1) {
        assert_eq!(result["error"], "HTTP-request-denied", "{url}: {result}");
    }
    assert_eq!(
        server.accepted(),
        1,
        "only the granted request reached the server"
    );
    assert_eq!(other.accepted(), 0, "the other port was never connected to");
    let log = stderr(&output);
    assert!(
        log.contains("HTTP request denied: GET http://localhost:")
            && log.contains(&format!("[http://127.0.0.1:{port}/v3/]")),
        "one warning names task, method, URL and grants: {log}"
    );
}

#[test]
fn a_task_without_a_grant_reaches_nothing_and_a_flow_level_grant_serves_every_entry() {
    let server = Server::start(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/x", server.port());
    let flow = net_flow(dir.path(), "", "");
    let (report, _) = probe(&flow, http(std::slice::from_ref(&url)), &[]);
    assert_eq!(
        report["store"]["net"]["http"][0]["error"],
        "HTTP-request-denied"
    );
    let flow = net_flow(
        dir.path(),
        &format!(
            "net = {{ http = [\"http://127.0.0.1:{}\"] }}",
            server.port()
        ),
        "",
    );
    let (report, _) = probe(&flow, http(&[url]), &[]);
    assert_eq!(report["store"]["net"]["http"][0]["status"], 200);
    assert_eq!(server.accepted(), 1);
}

#[test]
fn a_server_that_never_answers_ends_the_call_at_its_deadline() {
    let server = Server::start(Behaviour::Silent);
    let dir = tempfile::tempdir().unwrap();
    let flow = net_flow(
        dir.path(),
        "",
        &format!(
            "net = {{ http = [\"http://127.0.0.1:{}\"] }}\nlimits = {{ deadline_ms = 800 }}",
            server.port()
        ),
    );
    let started = std::time::Instant::now();
    let (report, output) = probe(
        &flow,
        http(&[format!("http://127.0.0.1:{}/", server.port())]),
        &[],
    );
    assert_exit(&output, 1);
    assert_eq!(
        report["tasks"][0]["error"]["code"], "deadline-exceeded",
        "{report}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the run ended"
    );
}

#[test]
fn a_huge_response_stops_at_the_body_limit_and_the_call_fails_naming_it() {
    let server = Server::start(Behaviour::Endless { limit: 1 << 30 });
    let dir = tempfile::tempdir().unwrap();
    let flow = net_flow(
        dir.path(),
        "",
        &format!(
            "net = {{ http = [\"http://127.0.0.1:{}\"] }}\nlimits = {{ http_body_mib = 4 }}",
            server.port()
        ),
    );
    let (report, output) = probe(
        &flow,
        json!({ "http": [{ "url": format!("http://127.0.0.1:{}/", server.port()), "keep_body": false }] }),
        &[],
    );
    assert_exit(&output, 1);
    let error = &report["tasks"][0]["error"];
    assert_eq!(error["code"], "http-body-limit", "{report}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("limits.http_body_mib")
    );
}

#[test]
fn requests_past_the_request_limit_are_refused_and_the_call_fails_naming_it() {
    let server = Server::start(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let port = server.port();
    let flow = net_flow(
        dir.path(),
        "",
        &format!(
            "net = {{ http = [\"http://127.0.0.1:{port}\"] }}\nlimits = {{ http_requests = 2 }}"
        ),
    );
    let url = format!("http://127.0.0.1:{port}/");
    let (report, output) = probe(&flow, http(&[url.clone(), url.clone(), url]), &[]);
    assert_exit(&output, 1);
    assert_eq!(
        report["tasks"][0]["error"]["code"], "http-request-limit",
        "{report}"
    );
    assert_eq!(server.accepted(), 2, "the third request never left");
}

#[test]
fn https_to_a_private_ca_needs_the_ca_file() {
    let ca = TestCa::new();
    let server = Server::start_tls(Behaviour::Echo, &ca);
    let dir = tempfile::tempdir().unwrap();
    let port = server.port();
    let flow = net_flow(
        dir.path(),
        "",
        &format!("net = {{ http = [\"https://localhost:{port}\"] }}"),
    );
    let url = format!("https://localhost:{port}/tls");
    let (report, _) = probe(&flow, http(std::slice::from_ref(&url)), &[]);
    let refused = &report["store"]["net"]["http"][0];
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("TLS")),
        "{refused}"
    );
    let ca_file = ca.ca_file().display().to_string();
    let (report, _) = probe(
        &flow,
        http(std::slice::from_ref(&url)),
        &["--ca-file", &ca_file],
    );
    assert_eq!(report["store"]["net"]["http"][0]["status"], 200, "{report}");
    let output = flowhost([
        "run",
        &flow.display().to_string(),
        "--no-db",
        "--json",
        "--store",
    ])
    .env("FLOWHOST_CA_FILE", &ca_file)
    .run();
    assert_exit(&output, 64);
    let (report, _) = {
        let mut argv = vec![
            "run".to_string(),
            flow.display().to_string(),
            "--no-db".into(),
            "--json".into(),
        ];
        argv.push("--store".into());
        argv.push(format!("http={}", http(&[url])["http"]));
        let output = flowhost(&argv).env("FLOWHOST_CA_FILE", &ca_file).run();
        (stdout_json(&output), output)
    };
    assert_eq!(
        report["store"]["net"]["http"][0]["status"], 200,
        "FLOWHOST_CA_FILE: {report}"
    );
}

#[test]
fn a_secret_reaches_the_granted_server_but_never_the_task_the_record_or_the_log() {
    const SECRET: &str = "s3cr3t-quota-token-value";
    let server = Server::start(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let port = server.port();
    let flow = net_flow(
        dir.path(),
        "[secrets]\nquota_token = { env = \"QUOTA_TOKEN\" }\nfile_token = { file = \"token.txt\" }",
        &format!(
            "net = {{ http = [\"http://127.0.0.1:{port}\"] }}\nsecrets = [\"quota_token\", \"file_token\"]"
        ),
    );
    std::fs::write(dir.path().join("token.txt"), "file-secret-value-42\n").unwrap();
    let db = dir.path().join("runs.db");
    let args = json!([{
        "url": format!("http://127.0.0.1:{port}/echo"),
        "headers": { "authorization": "Bearer {{secret:quota_token}}", "x-file": "{{secret:file_token}}" }
    }]);
    let output = flowhost([
        "-vv",
        "run",
        &flow.display().to_string(),
        "--db",
        &db.display().to_string(),
        "--json",
        "--store",
        &format!("http={args}"),
    ])
    .env("QUOTA_TOKEN", SECRET)
    .run();
    assert_exit(&output, 0);
    let report = stdout_json(&output);
    let seen = &report["store"]["net"]["http"][0];
    assert_eq!(
        seen["request"]["headers"]["authorization"], "Bearer {{secret:quota_token}}",
        "the task only ever holds the placeholder"
    );
    let echoed: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        echoed["headers"]["authorization"], "Bearer [secret quota_token]",
        "the server got the value; what the task returned of it is redacted"
    );
    assert_eq!(echoed["headers"]["x-file"], "[secret file_token]");
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let shown = flowhost([
        "runs",
        "show",
        &run_id,
        "--json",
        "--db",
        &db.display().to_string(),
    ])
    .run();
    assert_exit(&shown, 0);
    for (place, text) in [
        ("--json", stdout(&output)),
        ("the -vv log", stderr(&output)),
        ("runs show", stdout(&shown)),
    ] {
        assert!(!text.contains(SECRET), "{place} holds the secret");
        assert!(
            !text.contains("file-secret-value-42"),
            "{place} holds the file secret"
        );
    }
    for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        if name.starts_with("runs.db") {
            let bytes = std::fs::read(file.path()).unwrap();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{name} holds the secret"
            );
        }
    }
}

#[test]
fn a_secret_that_is_missing_or_too_short_is_refused_at_validation_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let flow = net_flow(
        dir.path(),
        "[secrets]\ntoken = { env = \"FLOWHOST_TEST_UNSET_TOKEN\" }\nshort = { env = \"SHORT\" }",
        "net = { http = [\"http://127.0.0.1:1\"] }\nsecrets = [\"token\", \"short\", \"nope\"]",
    );
    let output = flowhost(["check", &flow.display().to_string()])
        .env("SHORT", "abc")
        .run();
    assert_exit(&output, 65);
    let text = stderr(&output);
    for part in [
        "secret `token`",
        "FLOWHOST_TEST_UNSET_TOKEN",
        "secret `short` is shorter",
        "`nope`",
    ] {
        assert!(text.contains(part), "names {part}: {text}");
    }
    assert!(!text.contains("abc"), "never the value: {text}");
}

#[test]
fn tcp_reaches_granted_endpoints_only_and_name_lookup_answers_granted_names_only() {
    let echo = Server::start(Behaviour::TcpEcho);
    let other = Server::start(Behaviour::TcpEcho);
    let dir = tempfile::tempdir().unwrap();
    let port = echo.port();
    let flow = net_flow(
        dir.path(),
        "",
        &format!("net = {{ tcp = [\"127.0.0.1:{port}\", \"localhost:{port}\"] }}"),
    );
    let args = json!({ "tcp": [
        { "host": "127.0.0.1", "port": port, "send": "ping" },
        { "host": "localhost", "port": port, "send": "ping" },
        { "host": "127.0.0.1", "port": other.port(), "send": "ping" },
        { "host": "localhost", "port": other.port(), "send": "ping" },
        { "host": "example.invalid", "port": port, "send": "ping" },
    ]});
    let (report, output) = probe(&flow, args, &[]);
    assert_exit(&output, 0);
    let tcp = report["store"]["net"]["tcp"].as_array().unwrap();
    assert_eq!(tcp[0]["reply"], "echo:ping", "{tcp:?}");
    assert_eq!(tcp[1]["reply"], "echo:ping", "a granted name: {tcp:?}");
    for (i, what) in [
        (2, "another port"),
        (3, "another port of a granted name"),
        (4, "an unlisted name"),
    ] {
        assert_ne!(tcp[i]["connected"], true, "{what}: {}", tcp[i]);
    }
    assert_eq!(other.accepted(), 0, "nothing reached the other port");
}

#[test]
fn check_shows_the_grants_and_warns_of_every_port_of_a_local_address() {
    let dir = tempfile::tempdir().unwrap();
    let flow = net_flow(
        dir.path(),
        "",
        "net = { http = [\"https://quota.example.org/v3/\", \"http://127.0.0.1:*\"], tcp = [\"db.internal:5432\"] }\nlimits = { http_requests = 5 }",
    );
    let output = flowhost(["check", &flow.display().to_string(), "--json"]).run();
    assert_exit(&output, 0);
    let doc = stdout_json(&output);
    let net = &doc["tasks"][0]["sandbox"]["net"];
    assert_eq!(
        net["http"],
        json!(["https://quota.example.org/v3/", "http://127.0.0.1:*"])
    );
    assert_eq!(net["tcp"], json!(["db.internal:5432"]));
    assert_eq!(doc["tasks"][0]["sandbox"]["limits"]["http_requests"], 5);
    assert_eq!(doc["tasks"][0]["sandbox"]["limits"]["http_body_mib"], 64);
    assert!(
        doc["warnings"][0]
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:*"),
        "{doc}"
    );
    let output = flowhost(["check", &flow.display().to_string()]).run();
    assert!(stdout(&output).contains("http:     https://quota.example.org/v3/"));
    assert!(stderr(&output).contains("every port of a local address"));
}

#[test]
fn conform_passes_a_plugin_that_imports_the_network_and_names_its_interfaces() {
    let output = flowhost(["conform", &plugin("net_probe").display().to_string()]).run();
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("network interfaces: `wasi:http/types@0.2")
            && text.contains("`wasi:sockets/tcp@0.2")
            && text.contains("net` grants"),
        "{text}"
    );
    // Rust's standard library for wasm32-wasip2 imports wasi:sockets whether a task uses it
    // or not: conform names those interfaces, and wasi:http only where it is imported.
    let output = flowhost(["conform", &plugin("probe").display().to_string()]).run();
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("network interfaces: `wasi:sockets/") && !text.contains("wasi:http"),
        "{text}"
    );
}

/// A one-task flow running the Python `fetch` task (`plugins/python/fetch.py`, one call of
/// `flowhost_task.http.request`) with `entry` (TOML lines) added to the task and `top`
/// before it.
fn python_flow(dir: &Path, top: &str, entry: &str) -> std::path::PathBuf {
    let path = dir.join("flow.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"python-net\"\n{top}\n[[task]]\nname = \"fetch\"\nplugin = {:?}\n{entry}\n",
            polyglot_built("python/fetch.wasm")
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_python_task_calls_a_granted_service_in_one_line_and_a_denied_origin_fails_as_a_task_error() {
    const SECRET: &str = "py-s3cr3t-token-value";
    let server = Server::start(Behaviour::Echo);
    let other = Server::start(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let port = server.port();
    let flow = python_flow(
        dir.path(),
        "[secrets]\napi_token = { env = \"API_TOKEN\" }",
        &format!("net = {{ http = [\"http://127.0.0.1:{port}/v3/\"] }}\nsecrets = [\"api_token\"]"),
    );
    let run = |request: Value| {
        flowhost([
            "run",
            &flow.display().to_string(),
            "--no-db",
            "--json",
            "--store",
            &format!("request={request}"),
        ])
        .env("API_TOKEN", SECRET)
        .run()
    };

    let output = run(json!({
        "method": "POST",
        "url": format!("http://127.0.0.1:{port}/v3/volumes?zone=nova"),
        "headers": { "authorization": "Bearer {{secret:api_token}}" },
        "json": { "size": 10 },
    }));
    assert_exit(&output, 0);
    let report = stdout_json(&output);
    let response = &report["store"]["response"];
    assert_eq!(response["status"], 200, "{report}");
    assert_eq!(response["headers"]["content-type"], "application/json");
    let echoed: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["path"], "/v3/volumes?zone=nova");
    assert_eq!(
        echoed["headers"]["authorization"], "Bearer [secret api_token]",
        "what the task returned of the secret is redacted"
    );
    let received = server.requests();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["method"], "POST");
    assert_eq!(
        received[0]["headers"]["authorization"],
        format!("Bearer {SECRET}"),
        "the server got the value the host filled in"
    );
    assert_eq!(received[0]["headers"]["content-type"], "application/json");
    assert_eq!(received[0]["headers"]["content-length"], "12");
    assert_eq!(received[0]["body"], r#"{"size": 10}"#);
    assert!(!stdout(&output).contains(SECRET) && !stderr(&output).contains(SECRET));

    // A POST with a body to a port the entry does not grant: refused before connecting,
    // and the task sees a TaskError it could catch, not a trap.
    let output = run(json!({
        "method": "POST",
        "url": format!("http://127.0.0.1:{}/v3/volumes", other.port()),
        "json": { "size": 10 },
    }));
    assert_exit(&output, 1);
    let report = stdout_json(&output);
    let error = &report["tasks"][0]["error"];
    assert_eq!(error["code"], "http-denied", "{report}");
    assert_eq!(error["details"]["wasi_error"], "HTTP-request-denied");
    assert_eq!(error["details"]["method"], "POST");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("does not grant this origin"),
        "{error}"
    );
    assert_eq!(
        other.accepted(),
        0,
        "the denied origin was never connected to"
    );

    // A path outside the granted prefix, on the granted port: the same refusal.
    let output = run(json!({ "url": format!("http://127.0.0.1:{port}/admin") }));
    assert_exit(&output, 1);
    assert_eq!(
        stdout_json(&output)["tasks"][0]["error"]["code"],
        "http-denied"
    );
    assert_eq!(server.accepted(), 1, "only the granted request reached it");
}

#[test]
fn only_python_tasks_built_for_http_import_it_so_the_kitchen_sink_needs_no_grant() {
    let output = flowhost([
        "conform",
        &polyglot_built("python/fetch.wasm").display().to_string(),
    ])
    .run();
    let text = stdout(&output);
    assert!(
        text.contains("`wasi:http/types@0.2") && text.contains("`wasi:http/outgoing-handler@0.2"),
        "{text}"
    );
    // componentize-py's runtime imports wasi:sockets in every component; wasi:http only the
    // components built for `plugin-http`.
    let output = flowhost([
        "conform",
        &polyglot("python").display().to_string(),
        "--cases",
        &repo_root()
            .join("plugins/stamp.cases.toml")
            .display()
            .to_string(),
    ])
    .run();
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("0 failed") && !text.contains("wasi:http"),
        "{text}"
    );
}

/// The secret a task's request carries in these tests, and a flow granting `server` that
/// reads it from `source` (`env = "QUOTA_TOKEN"`, `file = "…"`): net-probe sends
/// `Authorization: Bearer {{secret:quota_token}}` to the server and returns the echo (the
/// server's copy of the header, redacted by the host).
const SECRET: &str = "s3cr3t-quota-token-value";

fn secret_flow(dir: &Path, server: &Server, source: &str) -> std::path::PathBuf {
    net_flow(
        dir,
        &format!(
            "[secrets]\nquota_token = {{ {source} }}\n[store]\nhttp = [{{ url = \"http://127.0.0.1:{}/echo\", headers = {{ authorization = \"Bearer {{{{secret:quota_token}}}}\" }} }}]",
            server.port()
        ),
        &format!(
            "net = {{ http = [\"http://127.0.0.1:{}\"] }}\nsecrets = [\"quota_token\"]",
            server.port()
        ),
    )
}

/// Whether `bytes` hold the secret's bytes anywhere.
fn holds_secret(bytes: &[u8]) -> bool {
    bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())
}

#[test]
fn a_postgresql_dump_of_the_run_database_never_holds_the_secret() {
    let pg = Postgres::start();
    let server = Server::start(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let flow = secret_flow(dir.path(), &server, "env = \"QUOTA_TOKEN\"");
    let output = flowhost([
        "-vv",
        "run",
        &flow.display().to_string(),
        "--db",
        &pg.url(),
        "--json",
    ])
    .env("QUOTA_TOKEN", SECRET)
    .run();
    assert_exit(&output, 0);
    assert_eq!(
        server.requests()[0]["headers"]["authorization"],
        format!("Bearer {SECRET}"),
        "the request carried the value"
    );
    let dump = pg.dump();
    let run_id = stdout_json(&output)["run_id"].as_str().unwrap().to_owned();
    assert!(
        dump.contains(&run_id) && dump.contains("[secret quota_token]"),
        "the dump holds the run, the echo redacted: {}",
        &dump[..dump.len().min(2000)]
    );
    assert!(!holds_secret(dump.as_bytes()), "the dump holds the secret");
    assert!(!holds_secret(&output.stdout) && !holds_secret(&output.stderr));
}

#[test]
fn no_serve_route_shows_the_secret_with_or_without_the_token() {
    let server = Server::start(Behaviour::Echo);
    let ws = Workspace::new();
    let flows = ws.path("flows");
    std::fs::create_dir_all(&flows).unwrap();
    // A file secret: serve reads it when a run starts, from beside the flow file.
    std::fs::write(flows.join("quota_token.txt"), format!("{SECRET}\n")).unwrap();
    let flow = secret_flow(&flows, &server, "file = \"quota_token.txt\"");
    std::fs::rename(&flow, flows.join("net.toml")).unwrap();
    let token = "serve-api-token-0123456789";
    std::fs::write(ws.path("token"), format!("{token}\n")).unwrap();
    let served = Served::start(
        &ws,
        &flows,
        &["--token-file", ws.path("token").to_str().unwrap()],
    );
    let (status, started) = served.post("/v1/flows/net/runs", "{}", Some(token));
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    let run = served.wait_finished(&id);
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(
        server.requests()[0]["headers"]["authorization"],
        format!("Bearer {SECRET}"),
        "the request carried the value"
    );

    let get = |path: &str, token: Option<&str>| {
        let mut request = ureq::get(&served.url(path));
        if let Some(token) = token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        match request.call() {
            Ok(response) => (response.status(), response.into_string().unwrap()),
            Err(ureq::Error::Status(status, response)) => {
                (status, response.into_string().unwrap_or_default())
            }
            Err(error) => panic!("GET {path}: {error}"),
        }
    };
    let routes = [
        "/v1/runs".to_owned(),
        format!("/v1/runs/{id}"),
        format!("/v1/runs/{id}/store/net"),
        format!("/v1/runs/{id}/store/http"),
        format!("/v1/runs/{id}/events"),
        "/v1/flows".to_owned(),
        "/v1/flows/net".to_owned(),
        "/metrics".to_owned(),
    ];
    let mut redacted_seen = false;
    for presented in [None, Some(token)] {
        for route in &routes {
            let (status, body) = get(route, presented);
            assert!(
                !holds_secret(body.as_bytes()),
                "{route} (token {presented:?}, {status}) shows the secret"
            );
            if presented.is_some() {
                assert_eq!(status, 200, "{route}: {body}");
                redacted_seen |= body.contains("[secret quota_token]");
            }
        }
    }
    assert!(
        redacted_seen,
        "with the token the run's values are shown, the echoed secret redacted"
    );
    let log = std::fs::read(ws.path("serve.log")).unwrap();
    assert!(!holds_secret(&log), "serve's log holds the secret");
}

#[test]
fn a_replay_reads_the_secret_afresh_from_the_environment_never_from_the_record() {
    let server = Server::start(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let flow = secret_flow(dir.path(), &server, "env = \"QUOTA_TOKEN\"");
    let db = dir.path().join("runs.db").display().to_string();
    let output = flowhost(["run", &flow.display().to_string(), "--db", &db, "--json"])
        .env("QUOTA_TOKEN", SECRET)
        .run();
    assert_exit(&output, 0);
    let run_id = stdout_json(&output)["run_id"].as_str().unwrap().to_owned();
    let probe = plugin("net_probe").display().to_string();
    let replay = |env: Option<&str>| {
        let mut command = flowhost([
            "call",
            &probe,
            "execute",
            "--from-run",
            &run_id,
            "--task",
            "probe",
            "--db",
            &db,
        ]);
        if let Some(value) = env {
            command = command.env("QUOTA_TOKEN", value);
        }
        command.run()
    };

    let refused = replay(None);
    assert_exit(&refused, 64);
    assert!(
        stderr(&refused).contains("secret `quota_token`")
            && stderr(&refused).contains("QUOTA_TOKEN"),
        "without the variable there is no value to send: {}",
        stderr(&refused)
    );
    assert_eq!(server.accepted(), 1, "the refused replay sent nothing");

    const ROTATED: &str = "rotated-quota-token-value-2";
    let replayed = replay(Some(ROTATED));
    assert_exit(&replayed, 0);
    let received = server.requests();
    assert_eq!(
        received.last().unwrap()["headers"]["authorization"],
        format!("Bearer {ROTATED}"),
        "the replay sent the value the environment holds now"
    );
    let shown = stdout(&replayed);
    assert!(
        shown.contains("Bearer [secret quota_token]") && !shown.contains(ROTATED),
        "{shown}"
    );
    assert!(!holds_secret(&replayed.stdout) && !holds_secret(&replayed.stderr));
}
