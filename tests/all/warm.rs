//! Warm instances: a task entry with `instances = "reuse"` serves calls, across runs, from
//! instances kept warm; one that trapped or hit a limit is thrown away; deadlines and caps
//! still apply; entries that did not opt in keep getting a fresh instance per call.

use flowhost::{Engine, FlowSpec, FlowState, Instances, Limits, Store, TaskSpec};
use serde_json::{Value, json};

use crate::kit::plugin;

fn probe(name: &str, instances: Instances, config: Value) -> FlowSpec {
    FlowSpec::linear(name).add(
        TaskSpec::new("probe", plugin("probe"))
            .instances(instances)
            .config(config),
    )
}

fn initial(value: Value) -> Store {
    [("value".to_owned(), value)].into_iter().collect()
}

/// How many calls the instance that served this run had served (1 = a fresh instance).
async fn calls(engine: &Engine, flow: &FlowSpec, value: i64) -> u64 {
    let report = engine.run(flow, initial(json!(value))).await.unwrap();
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);
    let echo = report.fetch("echo").unwrap();
    assert_eq!(
        echo["value"],
        json!(value),
        "each run gets its own arguments back"
    );
    echo["calls"].as_u64().unwrap()
}

/// Runs `flow`, whose task fails, from `value = 0`: how the run ended and the task's error
/// code.
async fn failure(engine: &Engine, flow: &FlowSpec) -> (FlowState, String) {
    let report = engine.run(flow, initial(json!(0))).await.unwrap();
    let code = report.tasks[0]
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("the task did not fail: {:?}", report.tasks))
        .code
        .clone();
    (report.state, code)
}

#[tokio::test]
async fn reuse_serves_later_runs_from_the_same_warm_instance() {
    let engine = Engine::new().unwrap();
    let flow = probe("warm", Instances::Reuse, json!({"calls": true}));
    let seen: Vec<u64> = [
        calls(&engine, &flow, 1).await,
        calls(&engine, &flow, 2).await,
        calls(&engine, &flow, 3).await,
    ]
    .to_vec();
    assert_eq!(seen, [1, 2, 3]);
}

#[tokio::test]
async fn fresh_is_the_default_and_never_reuses() {
    let engine = Engine::new().unwrap();
    let flow = probe("fresh", Instances::default(), json!({"calls": true}));
    for value in 0..3 {
        assert_eq!(calls(&engine, &flow, value).await, 1);
    }
}

#[tokio::test]
async fn an_instance_that_trapped_is_discarded() {
    let engine = Engine::new().unwrap();
    let good = probe("warm", Instances::Reuse, json!({"calls": true}));
    let trapping = probe("warm", Instances::Reuse, json!({"trap": true}));
    assert_eq!(calls(&engine, &good, 1).await, 1);
    assert_eq!(calls(&engine, &good, 2).await, 2);

    // The warm instance serves the trapping run and traps.
    assert_eq!(
        failure(&engine, &trapping).await,
        (FlowState::Reverted, "trap".to_owned())
    );

    assert_eq!(
        calls(&engine, &good, 3).await,
        1,
        "the trapped instance must not come back"
    );
}

#[tokio::test]
async fn deadlines_and_memory_caps_still_apply_to_reused_instances_which_are_then_discarded() {
    let engine = Engine::new().unwrap();
    // One sandbox for all three, so they share one warm pool. The deadline leaves the
    // growing probe ample time to reach its memory cap first, even on a loaded machine.
    let limits = Limits {
        deadline_ms: Some(2000),
        memory_mib: Some(32),
        ..Limits::default()
    };
    let good = probe("warm", Instances::Reuse, json!({"calls": true})).limits(limits);
    let looping = probe("warm", Instances::Reuse, json!({"mode": "loop"})).limits(limits);
    let growing = probe("warm", Instances::Reuse, json!({"mode": "grow"})).limits(limits);

    assert_eq!(calls(&engine, &good, 1).await, 1);
    assert_eq!(failure(&engine, &looping).await.1, "deadline-exceeded");
    assert_eq!(calls(&engine, &good, 2).await, 1);

    assert_eq!(failure(&engine, &growing).await.1, "memory-limit");
    assert_eq!(calls(&engine, &good, 3).await, 1);
}

#[tokio::test]
async fn a_task_error_keeps_the_instance_warm() {
    let engine = Engine::new().unwrap();
    let good = probe("warm", Instances::Reuse, json!({"calls": true}));
    let failing = probe("warm", Instances::Reuse, json!({"fail": "refused"}));
    assert_eq!(calls(&engine, &good, 1).await, 1);
    assert_eq!(
        failure(&engine, &failing).await,
        (FlowState::Reverted, "refused".to_owned())
    );
    // The failed execute and its revert both ran on the warm instance, which returned normally.
    assert_eq!(calls(&engine, &good, 2).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_runs_at_once_on_warm_instances_each_get_their_own_result() {
    let engine = Engine::new().unwrap();
    let flow = FlowSpec::linear("warm")
        .add(
            TaskSpec::new("first", plugin("probe"))
                .instances(Instances::Reuse)
                .provides(["a"]),
        )
        .add(
            TaskSpec::new("second", plugin("probe"))
                .instances(Instances::Reuse)
                .rebind("value", "a")
                .provides(["b"]),
        );
    let runs: Vec<_> = (0..200)
        .map(|n| {
            let engine = engine.clone();
            let flow = flow.clone();
            tokio::spawn(async move { (n, engine.run(&flow, initial(json!(n))).await.unwrap()) })
        })
        .collect();
    for run in runs {
        let (n, report) = run.await.unwrap();
        assert_eq!(report.state, FlowState::Success);
        assert_eq!(report.fetch("b").unwrap()["value"]["value"], json!(n));
    }
}

#[test]
fn flow_files_declare_reuse_and_reject_anything_else() {
    let flow = FlowSpec::from_toml(
        "name = \"f\"\n[[task]]\nname = \"a\"\nplugin = \"a.wasm\"\ninstances = \"reuse\"\n[[task]]\nname = \"b\"\nplugin = \"b.wasm\"\n",
    )
    .unwrap();
    assert_eq!(flow.task_specs()[0].instances, Instances::Reuse);
    assert_eq!(flow.task_specs()[1].instances, Instances::Fresh);
    let error = FlowSpec::from_toml(
        "name = \"f\"\n[[task]]\nname = \"a\"\nplugin = \"a.wasm\"\ninstances = \"warm\"\n",
    )
    .unwrap_err();
    assert!(
        error.contains("instances") || error.contains("fresh"),
        "{error}"
    );
}
