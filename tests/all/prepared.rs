//! Prepare once, run many: a flow is validated, its plugins loaded, described and bound
//! once, and every run of a batch, every POST of a known flow to `serve`, starts from that
//! prepared flow — each run still checked against its own store, with its own pinned
//! grants. A changed flow is prepared again.

use flowhost::{Batch, BatchError, BatchInput, Engine, FlowSpec, Map, Subflow, TaskSpec, Wait};
use serde_json::json;

use crate::kit::serving::Served;
use crate::kit::{Journal, Workspace, plugin, probe_file, store};

/// Two probes: `first` echoes the store's `value` into `a`, `second` echoes `a` into `b`.
fn relay() -> FlowSpec {
    FlowSpec::linear("relay")
        .add(TaskSpec::new("first", plugin("probe")).provides(["a"]))
        .add(
            TaskSpec::new("second", plugin("probe"))
                .rebind("value", "a")
                .provides(["b"]),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_prepares_its_flow_once_and_still_checks_each_runs_store() {
    let engine = Engine::new().unwrap();
    let inputs = (1..=40).map(|line| BatchInput {
        line,
        // Line 7 lacks the name `first` reads: that run alone is invalid.
        store: Ok(if line == 7 {
            store(&[("other", json!(line))])
        } else {
            store(&[("value", json!(line))])
        }),
    });
    let mut invalid = Vec::new();
    let mut stores = Vec::new();
    let summary = Batch::new(&engine, &relay())
        .concurrency(8)
        .run(inputs, |outcome| match &outcome.result {
            Ok(report) => stores.push((outcome.line, report.store.fetch("b").cloned())),
            Err(BatchError::Invalid(error)) => invalid.push((outcome.line, error.to_string())),
            Err(other) => panic!("line {}: {other}", outcome.line),
        })
        .await;
    assert_eq!((summary.succeeded, summary.failed), (39, 1));
    assert_eq!(engine.preparations(), 1, "40 runs, one preparation");
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0].0, 7);
    assert!(
        invalid[0].1.contains("store key `value`"),
        "the run's own store is checked: {}",
        invalid[0].1
    );
    for (line, b) in stores {
        assert_eq!(b.unwrap()["value"]["value"], json!(line), "line {line}");
    }

    // The same flow again (another batch, a single run) is the same prepared flow.
    let again = Batch::new(&engine, &relay())
        .run(
            [BatchInput {
                line: 1,
                store: Ok(store(&[("value", json!(1))])),
            }],
            |_| {},
        )
        .await;
    assert_eq!(again.succeeded, 1);
    let report = engine
        .run(&relay(), store(&[("value", json!(2))]))
        .await
        .unwrap();
    assert!(report.succeeded());
    assert_eq!(engine.preparations(), 1);

    // A changed flow is another flow.
    let changed = relay().add(
        TaskSpec::new("third", plugin("probe"))
            .rebind("value", "b")
            .provides(["c"]),
    );
    let report = engine
        .run(&changed, store(&[("value", json!(3))]))
        .await
        .unwrap();
    assert_eq!(
        report.store.fetch("c").unwrap()["value"]["value"]["value"],
        json!(3)
    );
    assert_eq!(engine.preparations(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_of_a_prepared_flow_pins_its_own_granted_directory() {
    let engine = Engine::new().unwrap();
    let journal = Journal::new();
    let flow = FlowSpec::linear("pinned").add(journal.probe("only", json!({})));
    let prepared = engine.prepare(&flow).await;
    let first = engine
        .load_prepared(&prepared, store(&[("value", json!("first"))]))
        .unwrap();
    // The granted path now names another directory: the first run keeps the one it pinned,
    // a run loaded now pins the new one.
    let moved = journal.path().with_extension("moved");
    std::fs::rename(journal.path(), &moved).unwrap();
    std::fs::create_dir(journal.path()).unwrap();
    let second = engine
        .load_prepared(&prepared, store(&[("value", json!("second"))]))
        .unwrap();
    assert!(first.run().await.unwrap().succeeded());
    assert!(second.run().await.unwrap().succeeded());
    let values = |dir: &std::path::Path| -> Vec<serde_json::Value> {
        Journal::at(dir)
            .entries()
            .iter()
            .map(|e| e["args"]["value"].clone())
            .collect()
    };
    assert_eq!(values(&moved), [json!("first")]);
    assert_eq!(values(journal.path()), [json!("second")]);
    std::fs::remove_dir_all(&moved).unwrap();
    assert_eq!(engine.preparations(), 1);
}

#[test]
fn a_flow_file_changed_between_two_posts_is_prepared_again() {
    let ws = Workspace::new();
    let flows = ws.path("flows");
    std::fs::create_dir(&flows).unwrap();
    let write = |value: &str| {
        probe_file(
            &flows,
            "flow.toml",
            &format!(
                "name = \"changing\"\n[[task]]\nname = \"only\"\nplugin = \"PROBE\"\ninject = {{ value = \"{value}\" }}\nprovides = [\"out\"]\n"
            ),
        )
    };
    write("before");
    let server = Served::start(&ws, &flows, &[]);
    let run = |expected: &str| {
        let (status, started) = server.post("/v1/flows/flow/runs", "{}", None);
        assert_eq!(status, 201, "{started}");
        let run = server.wait_finished(started["run_id"].as_str().unwrap());
        assert_eq!(run["state"], "SUCCESS", "{run}");
        assert_eq!(run["final_store"]["out"]["value"], json!(expected), "{run}");
    };
    run("before");
    run("before");
    write("after");
    run("after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_map_and_wait_flow_checks_each_runs_store_against_the_map() {
    let engine = Engine::new().unwrap();
    // A short timer, then map `attach` over `volumes`, each as `volume`, into `attachments`.
    let flow = FlowSpec::linear("attach-after-a-nap")
        .add(TaskSpec::wait("nap", Wait::for_ms(1)))
        .add(
            Subflow::linear("attach")
                .map(Map::new("volumes", "volume", "attachments"))
                .add(
                    TaskSpec::new("attach_one", plugin("probe"))
                        .rebind("value", "volume")
                        .provides(["attached"]),
                ),
        );
    let report = engine
        .run(&flow, store(&[("volumes", json!(["v0", "v1"]))]))
        .await
        .unwrap();
    assert!(report.succeeded(), "{report:?}");
    let attachments = report.store.fetch("attachments").cloned().unwrap();
    assert_eq!(attachments[1]["value"], json!("v1"), "{attachments}");

    // The same prepared flow: what each map reads, gives and collects is checked against
    // each run's own store.
    let refused = |found: Result<_, flowhost::ValidationError>, field: &str| {
        let error = found.expect_err("the run is refused");
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.task.as_deref() == Some("attach") && p.field.as_deref() == Some(field)),
            "no problem at {field}: {error}"
        );
    };
    let prepared = engine.prepare(&flow).await;
    refused(
        engine
            .load_prepared(&prepared, store(&[("disks", json!([]))]))
            .map(|_| ()),
        "flow.map.over",
    );
    refused(
        engine
            .load_prepared(
                &prepared,
                store(&[("volumes", json!([])), ("volume", json!("v9"))]),
            )
            .map(|_| ()),
        "flow.map.as",
    );
    refused(
        engine
            .load_prepared(
                &prepared,
                store(&[("volumes", json!([])), ("attachments", json!([]))]),
            )
            .map(|_| ()),
        "flow.map.collect",
    );
    let loaded = engine
        .load_prepared(&prepared, store(&[("volumes", json!(["v2"]))]))
        .unwrap();
    assert!(loaded.will_provide("attachments"));
    assert!(
        !loaded.will_provide("attached") && !loaded.will_provide("volume"),
        "what a map's iterations provide stays inside them"
    );
    assert!(loaded.run().await.unwrap().succeeded());
    // The wait entry binds no plugin, so the prepared flow stays current: one preparation.
    assert_eq!(engine.preparations(), 1);
}
