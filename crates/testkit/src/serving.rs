//! A `flowhost serve` on a free loopback port, for the HTTP and browser tests: spawned as a
//! user would run it, its address read from the line it prints, stopped when dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::Workspace;
use serde_json::Value;

/// A running server.
pub struct Served {
    /// The `flowhost serve` process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Served {
    /// `flowhost serve --flows FLOWS --db <workspace db> --listen 127.0.0.1:0 EXTRA…` in `ws`.
    pub fn start(ws: &Workspace, flows: &Path, extra: &[&str]) -> Self {
        Self::start_on(ws, flows, ws.db().to_str().unwrap(), extra)
    }

    /// The same on run database `db` (a SQLite path or a PostgreSQL URL).
    pub fn start_on(ws: &Workspace, flows: &Path, db: &str, extra: &[&str]) -> Self {
        Self::start_logged(ws, flows, db, extra, "serve.log")
    }

    /// The same, its log in the workspace's file `log`: for several servers in one workspace.
    pub fn start_logged(ws: &Workspace, flows: &Path, db: &str, extra: &[&str], log: &str) -> Self {
        let mut args = vec![
            "serve",
            "--flows",
            flows.to_str().unwrap(),
            "--db",
            db,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let log_path = ws.path(log);
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = ws
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .split_whitespace()
            .last()
            .filter(|url| url.starts_with("http://"))
            .unwrap_or_else(|| {
                panic!(
                    "serve printed {line:?}; its log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )
            });
        Self {
            base: base.to_owned(),
            child,
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path` as JSON (panics on an error status).
    pub fn get(&self, path: &str) -> Value {
        ureq::get(&self.url(path))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .into_json()
            .unwrap()
    }

    /// POST `body` to `path` with an optional token: the status and the JSON answer.
    pub fn post(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = ureq::post(&self.url(path)).set("Content-Type", "application/json");
        if let Some(token) = token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        answer(request.send_string(body))
    }

    /// Polls run `id` until it has finished, and returns its record.
    pub fn wait_finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let run = self.get(&format!("/v1/runs/{id}"));
            if ["SUCCESS", "REVERTED", "FAILURE"].contains(&run["state"].as_str().unwrap()) {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} never finished: {run}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every event of run `id`'s stream up to its `end`: (event name, data).
    pub fn events(&self, id: &str) -> Vec<(String, Value)> {
        let response = ureq::get(&self.url(&format!("/v1/runs/{id}/events")))
            .call()
            .unwrap();
        assert_eq!(response.content_type(), "text/event-stream");
        read_events(response.into_reader())
    }
}

/// The status and JSON body of an answer, error statuses included.
pub fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match result {
        Ok(response) => (
            response.status(),
            response.into_json().unwrap_or(Value::Null),
        ),
        Err(ureq::Error::Status(status, response)) => {
            (status, response.into_json().unwrap_or(Value::Null))
        }
        Err(error) => panic!("request failed: {error}"),
    }
}

/// Reads Server-Sent Events up to and including `end`: (event name, data), checking that the
/// `id:`s count up from 0 without a gap.
pub fn read_events(reader: impl Read) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let (mut name, mut data, mut id) = (String::new(), String::new(), None::<usize>);
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap();
        if let Some(value) = line.strip_prefix("event: ") {
            name = value.to_owned();
        } else if let Some(value) = line.strip_prefix("data: ") {
            data += value;
        } else if let Some(value) = line.strip_prefix("id: ") {
            id = Some(value.parse().unwrap());
        } else if line.is_empty() && !data.is_empty() {
            if name != "end" {
                assert_eq!(
                    id,
                    Some(events.len()),
                    "event ids must count up without gaps"
                );
            }
            let value: Value = serde_json::from_str(&data).unwrap();
            let end = name == "end";
            events.push((std::mem::take(&mut name), value));
            data.clear();
            if end {
                break;
            }
        }
    }
    events
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
