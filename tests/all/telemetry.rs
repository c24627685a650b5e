//! OpenTelemetry traces, read back by a real OTLP/HTTP receiver on loopback: a failed run's
//! trace (the run, each attempt, each revert in order, one trace id, no store value in any
//! attribute), a `traceparent` given to serve's start route, and a worker's spans joining
//! the trace of `flowhost submit --traceparent`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::kit::otlp::{Collector, ReceivedSpan};
use crate::kit::serving::Served;
use crate::kit::{Postgres, Probe, Workspace, assert_exit, exit_json, signal, stop, wait_until};

/// A store value no span may show: the run's seed, echoed into every probe's result.
const SECRET: &str = "s3cret-store-value-41f9";

/// The caller's span, as an upstream service would send it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN}-01")
}

/// Probes `a` and `b`, then `c`, which fails with code `volume-full` (its message quoting
/// the store's secret) on both of its two attempts.
fn failing_flow(ws: &Workspace) -> std::path::PathBuf {
    ws.write_flow(
        "traced",
        "",
        &[
            Probe::new("a"),
            Probe::new("b"),
            Probe::new("c")
                .config(
                    json!({ "fail": "volume-full", "message": format!("no room for {SECRET}") }),
                )
                .toml("retry = { attempts = 2, backoff_ms = 1 }\n"),
        ],
    )
}

/// The spans of the run `run_id`, once its run span arrived with `expected` spans in all.
fn trace_of(collector: &Collector, run_id: &str, expected: usize) -> Vec<ReceivedSpan> {
    collector
        .wait_for(|spans| {
            spans
                .iter()
                .filter(|s| s.attribute("flowhost.run_id") == Some(run_id))
                .count()
                >= expected
        })
        .into_iter()
        .filter(|s| s.attribute("flowhost.run_id") == Some(run_id))
        .collect()
}

fn names(spans: &[ReceivedSpan]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

fn run_span(spans: &[ReceivedSpan]) -> &ReceivedSpan {
    spans
        .iter()
        .find(|s| s.name.starts_with("run "))
        .expect("a run span")
}

#[test]
fn a_failed_runs_trace_shows_the_run_each_attempt_and_each_revert_in_order_and_no_store_value() {
    let collector = Collector::start();
    let ws = Workspace::new();
    let flow = failing_flow(&ws);
    let seed = format!("seed=\"{SECRET}\"");
    let out = ws
        .recording(&["run", flow.to_str().unwrap(), "--store", &seed, "--json"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .run();
    let report = exit_json(&out, 1);
    assert_eq!(report["state"], "REVERTED");
    let run_id = report["run_id"].as_str().unwrap();

    // Exported by the time the process exited (the queue is flushed at exit).
    let spans = trace_of(&collector, run_id, 8);
    assert_eq!(
        names(&spans),
        [
            "run traced",
            "execute a",
            "execute b",
            "execute c",
            "execute c",
            "revert c",
            "revert b",
            "revert a"
        ],
        "by start time: the run, each attempt, the reverts in reverse order"
    );
    let run = run_span(&spans);
    assert_eq!(
        run.parent_span_id, "",
        "a run started without a traceparent opens a trace"
    );
    assert_eq!(run.service, "flowhost");
    assert_eq!(run.attribute("flowhost.flow"), Some("traced"));
    assert_eq!(run.attribute("flowhost.state"), Some("REVERTED"));
    assert_eq!(run.status, 2, "a reverted run is an error");
    for span in &spans {
        assert_eq!(span.trace_id, run.trace_id, "one trace: {span:?}");
        assert!(span.start <= span.end && span.start >= run.start && span.end <= run.end);
        if span.span_id != run.span_id {
            assert_eq!(span.parent_span_id, run.span_id, "under the run: {span:?}");
            assert_eq!(span.attribute("flowhost.run_id"), Some(run_id));
        }
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(SECRET) && !value.contains("no room"),
                "attribute {key} of {} shows a store value or an error message: {value}",
                span.name
            );
        }
    }
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "execute c")
        .map(|s| {
            (
                s.attribute("flowhost.task"),
                s.attribute("flowhost.attempt"),
                s.attribute("flowhost.state"),
                s.attribute("flowhost.error.code"),
                s.status,
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (
                Some("c"),
                Some("1"),
                Some("RETRYING"),
                Some("volume-full"),
                2
            ),
            (
                Some("c"),
                Some("2"),
                Some("FAILURE"),
                Some("volume-full"),
                2
            ),
        ]
    );
    let b = spans.iter().find(|s| s.name == "execute b").unwrap();
    assert_eq!(b.attribute("flowhost.state"), Some("SUCCESS"));
    assert_eq!(b.attribute("flowhost.error.code"), None);
    for revert in spans.iter().filter(|s| s.name.starts_with("revert ")) {
        assert_eq!(revert.attribute("flowhost.state"), Some("REVERTED"));
        assert_eq!(revert.status, 0, "{revert:?}");
    }
}

#[test]
fn a_traceparent_given_to_serves_start_route_becomes_the_run_spans_parent() {
    let collector = Collector::start();
    let ws = Workspace::new();
    failing_flow(&ws);
    let endpoint = collector.endpoint();
    let server = Served::start(&ws, ws.root(), &["--otlp-endpoint", &endpoint]);

    let start = |traceparent: Option<&str>| {
        let mut request = ureq::post(&server.url("/v1/flows/traced/runs"));
        if let Some(traceparent) = traceparent {
            request = request.set("traceparent", traceparent);
        }
        let answer: serde_json::Value = request.send_string("{}").unwrap().into_json().unwrap();
        let id = answer["run_id"].as_str().unwrap().to_owned();
        assert_eq!(server.wait_finished(&id)["state"], "REVERTED");
        id
    };
    let joined = start(Some(&traceparent()));
    // A malformed traceparent is ignored, as trace-context says: the run opens a trace.
    let malformed = start(Some("00-not-a-trace-01"));

    // Batches leave on a timer, or when the service stops.
    signal(&server.child, "-TERM");
    let spans = trace_of(&collector, &joined, 8);
    let run = run_span(&spans);
    assert_eq!(run.trace_id, TRACE_ID);
    assert_eq!(
        run.parent_span_id, PARENT_SPAN,
        "the caller's span is the parent"
    );
    assert!(spans.iter().all(|s| s.trace_id == TRACE_ID), "{spans:#?}");

    let other = trace_of(&collector, &malformed, 8);
    let run = run_span(&other);
    assert_eq!(run.parent_span_id, "");
    assert_ne!(run.trace_id, TRACE_ID);
}

#[test]
fn a_workers_spans_join_the_trace_of_submit_traceparent() {
    let pg = Postgres::start();
    let collector = Collector::start();
    let ws = Workspace::new();
    let flow = failing_flow(&ws);
    let flow = flow.to_str().unwrap();

    let refused = ws.flowhost(&["submit", flow, "--db", &pg.url(), "--traceparent", "00-abc"]);
    assert_exit(&refused, 64);

    let submitted = ws.flowhost(&[
        "submit",
        flow,
        "--db",
        &pg.url(),
        "--traceparent",
        &traceparent(),
    ]);
    assert_exit(&submitted, 0);
    let id = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_owned();

    let plugins = ws.path("worker-plugins");
    let worker = ws
        .command(&[
            "worker",
            "--db",
            &pg.url(),
            "--plugin-dir",
            plugins.to_str().unwrap(),
            "--poll",
            "200ms",
        ])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the worker finished the run",
        Duration::from_secs(60),
        || pg.sql(&format!("SELECT state FROM runs WHERE id = '{id}'")) == "REVERTED",
    );
    stop(worker);

    let spans = trace_of(&collector, &id, 8);
    let run = run_span(&spans);
    assert_eq!(run.trace_id, TRACE_ID);
    assert_eq!(run.parent_span_id, PARENT_SPAN);
    assert!(spans.iter().all(|s| s.trace_id == TRACE_ID), "{spans:#?}");
    assert_eq!(
        pg.sql(&format!("SELECT traceparent FROM runs WHERE id = '{id}'")),
        traceparent(),
        "kept with the queued run"
    );
}
