//! `net_probe`: a test task that reaches out over the network as its arguments say and reports
//! what happened to each attempt, so the host's network grants can be tested from inside a
//! guest. It speaks the raw WASI 0.2 interfaces (`wasi:http/outgoing-handler`,
//! `wasi:sockets` TCP and `ip-name-lookup`), not a helper, so every error the host gives is
//! reported by its WIT name.
//!
//! Arguments (every name optional): `http`, a list of requests; `tcp`, a list of
//! connections; `env`, a list of variable names to read. The result (provided as `net`) is
//! `{"http": [..], "tcp": [..], "env": {..}}`, one report per item in the order given; one
//! item failing never stops the next. See `plugins/testing/net-probe/README.md` for the exact
//! shapes.

mod tcp;

use flowhost_guest::bindings::exports::flowhost::task::task::{
    FlowFailure, Guest, Outcome, TaskError, TaskInfo,
};
use flowhost_guest::http::{error_code_detail, error_code_name};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

fn error(code: &str, message: impl Into<String>) -> TaskError {
    TaskError {
        code: code.into(),
        message: message.into(),
        details: None,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Args {
    http: Vec<HttpItem>,
    tcp: Vec<tcp::TcpItem>,
    env: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpItem {
    #[serde(default = "get")]
    method: String,
    url: String,
    /// name -> value, or -> list of values sent as repeated fields.
    #[serde(default)]
    headers: Map<String, Value>,
    body: Option<String>,
    /// Put the response body in the report (otherwise only its length).
    #[serde(default = "yes")]
    keep_body: bool,
    /// Hand the request to the host; `false` only builds it and reports its headers.
    #[serde(default = "yes")]
    send: bool,
}

fn get() -> String {
    "GET".into()
}

fn yes() -> bool {
    true
}

/// `scheme://authority/path?query` taken apart for wasi:http, without judging it: the host
/// decides what is allowed.
fn split_url(url: &str) -> Result<(Scheme, String, String), String> {
    let (scheme, rest) = url.split_once("://").ok_or("no `scheme://`")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Ok((scheme, authority.to_owned(), path))
}

fn method(name: &str) -> Method {
    match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other(name.to_owned()),
    }
}

fn header_error_name(e: HeaderError) -> &'static str {
    match e {
        HeaderError::InvalidSyntax => "invalid-syntax",
        HeaderError::Forbidden => "forbidden",
        HeaderError::Immutable => "immutable",
    }
}

/// Fields as an object: names in lowercase, repeated names' values joined with `, `.
fn fields_object(entries: Vec<(String, Vec<u8>)>) -> Value {
    let mut out = Map::new();
    for (name, value) in entries {
        let value = String::from_utf8_lossy(&value).into_owned();
        match out.get_mut(&name.to_ascii_lowercase()) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                out.insert(name.to_ascii_lowercase(), Value::String(value));
            }
        }
    }
    Value::Object(out)
}

fn failed(report: &mut Map<String, Value>, stage: &str, name: &str, detail: Option<String>) {
    report.insert("error".into(), name.into());
    report.insert("detail".into(), detail.map_or(Value::Null, Value::String));
    report.insert("stage".into(), stage.into());
}

fn wasi_failed(report: &mut Map<String, Value>, stage: &str, code: &ErrorCode) {
    failed(
        report,
        stage,
        error_code_name(code),
        error_code_detail(code),
    );
}

fn stream_failed(report: &mut Map<String, Value>, stage: &str, e: StreamError) {
    match e {
        StreamError::Closed => failed(report, stage, "closed", None),
        StreamError::LastOperationFailed(io) => match wasip2::http::types::http_error_code(&io) {
            Some(code) => wasi_failed(report, stage, &code),
            None => failed(report, stage, "stream-error", Some(io.to_debug_string())),
        },
    }
}

/// One request: built, read back (`request`), sent, and its response read to the end.
fn http(item: HttpItem) -> Value {
    let mut report = Map::new();
    report.insert(
        "request".into(),
        json!({ "method": item.method, "url": item.url, "headers": {} }),
    );
    let fields = Fields::new();
    let mut values = Vec::new();
    for (name, value) in &item.headers {
        match value {
            Value::String(v) => values.push((name.clone(), v.clone())),
            Value::Array(vs) => {
                for v in vs {
                    values.push((
                        name.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    ));
                }
            }
            other => values.push((name.clone(), other.to_string())),
        }
    }
    if let Some(body) = &item.body
        && !item
            .headers
            .keys()
            .any(|n| n.eq_ignore_ascii_case("content-length"))
    {
        values.push(("content-length".into(), body.len().to_string()));
    }
    for (name, value) in values {
        if let Err(e) = fields.append(&name, value.as_bytes()) {
            failed(
                &mut report,
                "build",
                header_error_name(e),
                Some(format!("header `{name}`")),
            );
            return Value::Object(report);
        }
    }
    let (scheme, authority, path) = match split_url(&item.url) {
        Ok(parts) => parts,
        Err(why) => {
            failed(&mut report, "build", "invalid-url", Some(why));
            return Value::Object(report);
        }
    };
    let request = OutgoingRequest::new(fields);
    let set = [
        ("method", request.set_method(&method(&item.method))),
        ("scheme", request.set_scheme(Some(&scheme))),
        ("authority", request.set_authority(Some(&authority))),
        ("path", request.set_path_with_query(Some(&path))),
    ];
    if let Some((what, _)) = set.iter().find(|(_, r)| r.is_err()) {
        failed(
            &mut report,
            "build",
            "invalid-url",
            Some(format!("the request refused its {what}")),
        );
        return Value::Object(report);
    }
    // The headers exactly as the guest holds them, read back from the request resource.
    let built = {
        let headers = request.headers();
        let entries = headers.entries();
        drop(headers);
        fields_object(entries)
    };
    report["request"]["headers"] = built;
    if !item.send {
        report.insert("sent".into(), false.into());
        return Value::Object(report);
    }
    let Ok(outgoing) = request.body() else {
        failed(&mut report, "build", "no-body", None);
        return Value::Object(report);
    };
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => {
            wasi_failed(&mut report, "handle", &code);
            return Value::Object(report);
        }
    };
    let mut write_error = None;
    if let Some(body) = &item.body {
        match outgoing.write() {
            Ok(stream) => {
                for chunk in body.as_bytes().chunks(4096) {
                    if let Err(e) = stream.blocking_write_and_flush(chunk) {
                        write_error = Some(e);
                        break;
                    }
                }
            }
            Err(()) => write_error = Some(StreamError::Closed),
        }
    }
    let finished = OutgoingBody::finish(outgoing, None);
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => {
            wasi_failed(&mut report, "response", &code);
            return Value::Object(report);
        }
        Some(Err(())) | None => {
            failed(&mut report, "response", "no-response", None);
            return Value::Object(report);
        }
    };
    if let Some(e) = write_error {
        stream_failed(&mut report, "request-body", e);
        return Value::Object(report);
    }
    if let Err(code) = finished {
        wasi_failed(&mut report, "request-body", &code);
        return Value::Object(report);
    }
    report.insert("status".into(), response.status().into());
    let headers = response.headers();
    report.insert("headers".into(), fields_object(headers.entries()));
    drop(headers);
    let mut body = Vec::new();
    let Ok(incoming) = response.consume() else {
        failed(&mut report, "body", "no-body", None);
        return Value::Object(report);
    };
    let mut body_error = None;
    match incoming.stream() {
        Ok(stream) => loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        },
        Err(()) => body_error = Some(StreamError::Closed),
    }
    report.insert("body_bytes".into(), body.len().into());
    report.insert(
        "body".into(),
        if item.keep_body {
            String::from_utf8_lossy(&body).into_owned().into()
        } else {
            Value::Null
        },
    );
    if let Some(e) = body_error {
        stream_failed(&mut report, "body", e);
        drop(incoming);
    } else {
        let trailers = IncomingBody::finish(incoming);
        trailers.subscribe().block();
        if let Some(Ok(Err(code))) = trailers.get() {
            wasi_failed(&mut report, "body", &code);
        }
    }
    drop(response);
    Value::Object(report)
}

struct NetProbe;

impl Guest for NetProbe {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: "net_probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Sends the HTTP requests and opens the TCP connections it is given; reports each outcome. For testing the host's network grants.".into(),
            requires: vec![],
            optional: vec!["http".into(), "tcp".into(), "env".into()],
            provides: vec!["net".into()],
        }
    }

    fn execute(args: String, config: String) -> Result<String, TaskError> {
        match serde_json::from_str::<Value>(&config) {
            Ok(Value::Object(_)) => {}
            _ => return Err(error("invalid-config", "config must be a JSON object")),
        }
        let args: Args = serde_json::from_str(&args)
            .map_err(|e| error("invalid-args", format!("arguments rejected: {e}")))?;
        let http: Vec<Value> = args.http.into_iter().map(http).collect();
        let tcp: Vec<Value> = args.tcp.into_iter().map(tcp::connect).collect();
        let env: Map<String, Value> = args
            .env
            .into_iter()
            .map(|name| {
                let value = std::env::var(&name).map_or(Value::Null, Value::String);
                (name, value)
            })
            .collect();
        Ok(json!({ "http": http, "tcp": tcp, "env": env }).to_string())
    }

    /// Nothing to undo: the probe keeps no state of its own.
    fn revert(
        _args: String,
        _config: String,
        _outcome: Outcome,
        _failures: Vec<FlowFailure>,
    ) -> Result<Option<String>, TaskError> {
        Ok(None)
    }
}

flowhost_guest::bindings::export!(NetProbe with_types_in flowhost_guest::bindings);
