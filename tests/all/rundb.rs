//! The run database contract (`flowhost::runs::RunDb`), property by property, on both
//! backends: each property is one function over a [`ContractDb`], run by one test on SQLite
//! and one on PostgreSQL (`rundb::<property>::on_sqlite`, `rundb::<property>::on_postgres`),
//! the way Obelisk runs each database test on both of its backends. Runs are written through
//! the API — created, their transitions recorded under their lease — or driven by the engine
//! with the test plugins and recorded by `flowhost::runs::record`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowhost::runs::{
    self, Executor, FIRST_TOKEN, Lease, Origin, Owner, PluginHash, PruneFilter, RunDbError,
    RunFilter, RunSummary, StateChange, TaskRecord,
};
use flowhost::{
    Controller, Engine, FlowSpec, FlowState, Progress, RunReport, Subflow, TaskState, escape,
};
use serde_json::{Value, json};

use crate::kit::rundb::{ContractDb, TaskMove, elsewhere, flow_move, new_run, succeeding_run};
use crate::kit::{Journal, seeded, store};

/// One test per backend for each property: `rundb::<property>::on_sqlite` and
/// `rundb::<property>::on_postgres`.
macro_rules! on_both_backends {
    ($($property:ident),* $(,)?) => {$(
        mod $property {
            use crate::kit::rundb::ContractDb;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$property(&ContractDb::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$property(&ContractDb::postgres()).await;
            }
        }
    )*};
}

on_both_backends!(
    a_recorded_run_is_read_back_with_its_state_store_tasks_and_attempts,
    runs_are_listed_newest_first_and_filtered_by_state_and_flow,
    the_creator_holds_the_first_lease_and_another_owner_is_refused_until_it_expires,
    a_write_with_a_stale_token_is_fenced_and_writes_nothing,
    the_transitions_of_64_concurrent_runs_are_all_committed_and_none_is_lost,
    prune_deletes_finished_runs_older_than_the_cutoff_never_a_live_held_one_and_a_dry_run_nothing,
    a_retried_task_keeps_its_due_time_while_retrying_and_each_attempt_with_its_pause,
    each_iteration_of_a_subflow_is_recorded_with_its_attempts,
    a_revert_result_and_the_last_progress_are_kept_beside_the_execute_result,
    a_resume_is_counted_with_the_origin_it_resumed_from,
    a_failure_whose_message_holds_any_character_is_recorded_and_read_back,
    an_idempotency_key_is_held_by_one_run_of_a_flow_until_it_is_pruned,
    of_16_creates_racing_on_one_key_exactly_one_records_a_run,
);

/// A lease long enough for any test.
const LONG: Duration = Duration::from_secs(600);

/// Loads `flow` from the store `seed = 1` and runs it, recorded in `db` by this process.
async fn run_recorded_in(db: &ContractDb, flow: &FlowSpec) -> RunReport {
    let executor = Executor::new(db.shared());
    let mut loaded = Engine::new()
        .unwrap()
        .load(flow, seeded())
        .await
        .expect("a valid flow");
    runs::record(&executor, &mut loaded, None, None).expect("the run is created");
    loaded.run().await.expect("the run ends")
}

/// Run `id`'s record.
#[track_caller]
fn record_of(db: &ContractDb, id: &str) -> runs::RunRecord {
    db.get(id).unwrap().unwrap_or_else(|| panic!("no run {id}"))
}

/// The ids of `runs`, in order.
fn ids(runs: &[RunSummary]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

/// The ids of the runs `filter` lists, in order.
fn listed(db: &ContractDb, filter: RunFilter) -> Vec<String> {
    db.list(&filter)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// `(from, to)` of each recorded state change of `task`.
fn moves(task: &TaskRecord) -> Vec<(TaskState, TaskState)> {
    task.history.iter().map(|c| (c.from, c.to)).collect()
}

/// Who the listing says holds run `id`'s lease: `(owner, token)`.
fn holder(db: &ContractDb, id: &str) -> Option<(String, i64)> {
    let run = db.list(&RunFilter::default()).unwrap();
    let run = run.iter().find(|r| r.id == id).expect("listed");
    run.lease.as_ref().map(|l| (l.owner.clone(), l.token))
}

/// An executor on this host whose process is gone.
fn gone() -> Owner {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    Owner {
        id: format!("gone/{pid}"),
        host: runs::host_name(),
        pid,
    }
}

/// Unix seconds, as the run database keeps due times.
fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

async fn a_recorded_run_is_read_back_with_its_state_store_tasks_and_attempts(db: &ContractDb) {
    let journal = Journal::new();
    let flow = FlowSpec::linear("recorded")
        .add(journal.probe_reading("a", "seed", json!({})))
        .add(journal.probe_reading("b", "a_out", json!({})));
    let report = run_recorded_in(db, &flow).await;
    assert_eq!(report.state, FlowState::Success);

    let record = record_of(db, &report.run_id);
    let summary = &record.summary;
    assert_eq!(
        (summary.flow.as_str(), summary.state, summary.resumes),
        ("recorded", FlowState::Success, 0)
    );
    assert_eq!(summary.exit_reason.as_deref(), Some("every task succeeded"));
    assert!(summary.finished_at.is_some(), "{summary:?}");
    assert_eq!(summary.lease, None, "a finished run holds no lease");
    let a_out = json!({ "value": 1, "label": "a" });
    let b_out = json!({ "value": a_out, "label": "b" });
    assert_eq!(record.initial_store, seeded());
    assert_eq!(
        record.final_store,
        Some(store(&[
            ("seed", json!(1)),
            ("a_out", a_out.clone()),
            ("b_out", b_out.clone())
        ]))
    );

    let tasks = &record.tasks;
    let names: Vec<(usize, &str)> = tasks.iter().map(|t| (t.index, t.name.as_str())).collect();
    assert_eq!(names, [(0, "a"), (1, "b")]);
    for (task, (args, result)) in tasks.iter().zip([
        (json!({ "value": 1 }), a_out),
        (json!({ "value": { "value": 1, "label": "a" } }), b_out),
    ]) {
        let name = &task.name;
        assert_eq!(task.state, TaskState::Success, "{name}");
        assert_eq!(
            (task.executions, task.reverts, task.attempt),
            (1, 0, 1),
            "{name}"
        );
        let recorded: Value = serde_json::from_str(task.args.as_deref().unwrap()).unwrap();
        assert_eq!(recorded, args, "{name}: the arguments it executed with");
        assert_eq!(task.result, Some(result), "{name}");
        assert_eq!(task.error, None, "{name}");
        assert!(task.duration_ms.is_some_and(|ms| ms >= 0.0), "{name}");
        assert_eq!(
            moves(task),
            [
                (TaskState::Pending, TaskState::Running),
                (TaskState::Running, TaskState::Success)
            ],
            "{name}"
        );
        assert!(task.history.iter().all(|c| c.attempt == Some(1)), "{name}");
        let attempts = task.attempts();
        assert_eq!(attempts.len(), 1, "{name}: {attempts:?}");
        assert_eq!(
            (attempts[0].attempt, attempts[0].state, &attempts[0].error),
            (1, TaskState::Success, &None),
            "{name}"
        );
        assert_eq!(attempts[0].backoff_ms, None, "{name}");
    }

    assert_eq!(
        db.list(&RunFilter::default()).unwrap(),
        std::slice::from_ref(&record.summary)
    );
    assert!(db.get("no-such-run").unwrap().is_none());
}

async fn runs_are_listed_newest_first_and_filtered_by_state_and_flow(db: &ContractDb) {
    let owner = Owner::this_process();
    let done = db.create(&new_run("done", &["a"]), &owner, LONG).unwrap();
    db.record(&succeeding_run("done", json!(1)), &done).unwrap();
    let mut other = new_run("queued", &["a"]);
    other.flow = "other".into();
    db.create(&other, &owner, LONG).unwrap();
    let going = db.create(&new_run("going", &["a"]), &owner, LONG).unwrap();
    db.record(
        &[flow_move(
            "going",
            FlowState::Pending,
            FlowState::Running,
            None,
        )],
        &going,
    )
    .unwrap();

    let by = |state: Option<FlowState>, flow: Option<&str>| {
        listed(
            db,
            RunFilter {
                state,
                flows: flow.into_iter().map(str::to_owned).collect(),
                limit: None,
            },
        )
    };
    assert_eq!(by(None, None), ["going", "queued", "done"], "newest first");
    assert_eq!(by(Some(FlowState::Success), None), ["done"]);
    assert_eq!(by(Some(FlowState::Pending), None), ["queued"]);
    assert_eq!(by(Some(FlowState::Running), None), ["going"]);
    assert_eq!(by(Some(FlowState::Reverted), None), Vec::<String>::new());
    assert_eq!(by(None, Some("other")), ["queued"]);
    assert_eq!(by(None, Some("contract")), ["going", "done"]);
    assert_eq!(
        by(Some(FlowState::Pending), Some("contract")),
        Vec::<String>::new()
    );
}

async fn the_creator_holds_the_first_lease_and_another_owner_is_refused_until_it_expires(
    db: &ContractDb,
) {
    let (a, b) = (elsewhere("a"), elsewhere("b"));
    let ttl = Duration::from_millis(800);
    let first = db.create(&new_run("leased", &["a"]), &a, ttl).unwrap();
    assert_eq!(
        (first.run_id.as_str(), first.token, &first.owner),
        ("leased", FIRST_TOKEN, &a)
    );
    let listing = db.list(&RunFilter::default()).unwrap();
    let live = listing[0].lease.as_ref().expect("the new run is held");
    assert_eq!(
        (
            live.owner.as_str(),
            live.host.as_str(),
            live.pid,
            live.token
        ),
        ("a@elsewhere", "elsewhere", 1, FIRST_TOKEN)
    );

    match db.acquire("leased", &b, ttl) {
        Err(RunDbError::Held { run, holder }) => {
            assert_eq!(
                (run.as_str(), holder.owner.as_str()),
                ("leased", "a@elsewhere")
            );
            assert_eq!(holder.token, FIRST_TOKEN);
        }
        other => panic!("a live lease is refused to another owner: {other:?}"),
    }
    assert_eq!(holder(db, "leased"), Some(("a@elsewhere".into(), 1)));

    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    assert_eq!(holder(db, "leased"), None, "an expired lease is no one's");
    let taken = db.acquire("leased", &b, ttl).unwrap();
    assert_eq!((taken.token, &taken.owner), (FIRST_TOKEN + 1, &b));
    assert_eq!(holder(db, "leased"), Some(("b@elsewhere".into(), 2)));
    match db.renew(&first) {
        Err(RunDbError::Fenced { token, holder, .. }) => {
            assert_eq!(token, FIRST_TOKEN);
            assert_eq!(holder.map(|h| h.owner), Some("b@elsewhere".into()));
        }
        other => panic!("the first holder is fenced: {other:?}"),
    }
    db.release(&first).unwrap();
    assert_eq!(
        holder(db, "leased"),
        Some(("b@elsewhere".into(), 2)),
        "a stale release leaves the new holder's lease alone"
    );
    db.release(&taken).unwrap();
    assert_eq!(holder(db, "leased"), None);
    let third = db.acquire("leased", &elsewhere("c"), ttl).unwrap();
    assert_eq!(
        third.token, 3,
        "a released lease is taken at once, fencing both before"
    );

    // A holder on this host whose process is gone is dead at once, long before its expiry.
    db.create(&new_run("orphaned", &["a"]), &gone(), LONG)
        .unwrap();
    assert_eq!(holder(db, "orphaned"), None);
    let adopted = db.acquire("orphaned", &b, ttl).unwrap();
    assert_eq!(adopted.token, 2);

    assert!(
        matches!(
            db.acquire("no-such-run", &b, ttl),
            Err(RunDbError::Query { .. })
        ),
        "there is no such run to take"
    );
}

async fn a_write_with_a_stale_token_is_fenced_and_writes_nothing(db: &ContractDb) {
    let ttl = Duration::from_millis(600);
    let stale = db
        .create(&new_run("fenced", &["a"]), &elsewhere("a"), ttl)
        .unwrap();
    db.record(
        &[flow_move(
            "fenced",
            FlowState::Pending,
            FlowState::Running,
            None,
        )],
        &stale,
    )
    .unwrap();
    let before = record_of(db, "fenced");
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    let fresh = db.acquire("fenced", &elsewhere("b"), LONG).unwrap();

    let start = [
        TaskMove::new("fenced", 0, "a", TaskState::Pending, TaskState::Running)
            .args(r#"{"value":1}"#)
            .event(),
    ];
    match db.record(&start, &stale) {
        Err(RunDbError::Fenced { run, token, holder }) => {
            assert_eq!((run.as_str(), token), ("fenced", FIRST_TOKEN));
            assert_eq!(holder.map(|h| h.owner), Some("b@elsewhere".into()));
        }
        other => panic!("a write under the taken lease is fenced: {other:?}"),
    }
    let origin = before.origin.clone();
    assert!(matches!(
        db.resumed(&stale, &origin),
        Err(RunDbError::Fenced { token: 1, .. })
    ));
    let after = record_of(db, "fenced");
    assert_eq!(after.tasks, before.tasks, "the fenced write wrote nothing");
    assert_eq!(
        (
            after.summary.state,
            &after.summary.updated_at,
            after.summary.resumes
        ),
        (FlowState::Running, &before.summary.updated_at, 0)
    );

    db.record(&start, &fresh).unwrap();
    let task = &record_of(db, "fenced").tasks[0];
    assert_eq!((task.state, task.executions), (TaskState::Running, 1));

    db.release(&fresh).unwrap();
    let end = [
        TaskMove::new("fenced", 0, "a", TaskState::Running, TaskState::Success)
            .result(json!(1))
            .event(),
    ];
    match db.record(&end, &fresh) {
        Err(RunDbError::Fenced { token, holder, .. }) => {
            assert_eq!((token, holder), (2, None), "a released lease has no holder");
        }
        other => panic!("a released lease writes nothing: {other:?}"),
    }
    assert_eq!(record_of(db, "fenced").tasks[0].state, TaskState::Running);
}

async fn the_transitions_of_64_concurrent_runs_are_all_committed_and_none_is_lost(db: &ContractDb) {
    const RUNS: usize = 64;
    let owner = Owner::this_process();
    let leases: Vec<Lease> = (0..RUNS)
        .map(|n| {
            db.create(&new_run(&format!("run{n}"), &["a"]), &owner, LONG)
                .unwrap()
        })
        .collect();
    // One more whose lease is gone: its writes, among theirs, are refused alone.
    let stale = db.create(&new_run("stale", &["a"]), &owner, LONG).unwrap();
    db.release(&stale).unwrap();

    let shared = db.shared();
    let start = std::sync::Barrier::new(RUNS + 1);
    std::thread::scope(|threads| {
        for (n, lease) in leases.iter().enumerate() {
            let (db, start) = (shared.clone(), &start);
            threads.spawn(move || {
                start.wait();
                for event in succeeding_run(&lease.run_id, json!(n)) {
                    db.record(&[event], lease).unwrap();
                }
            });
        }
        let (db, start, stale) = (shared.clone(), &start, &stale);
        threads.spawn(move || {
            start.wait();
            for event in succeeding_run("stale", json!(-1)) {
                assert!(matches!(
                    db.record(&[event], stale),
                    Err(RunDbError::Fenced { .. })
                ));
            }
        });
    });

    for n in 0..RUNS {
        let record = record_of(db, &format!("run{n}"));
        assert_eq!(record.summary.state, FlowState::Success, "run{n}");
        let task = &record.tasks[0];
        assert_eq!(
            (task.state, task.result.clone(), moves(task).len()),
            (TaskState::Success, Some(json!(n)), 2),
            "run{n}"
        );
        assert_eq!(
            record.final_store.unwrap().fetch("a_out"),
            Some(&json!(n)),
            "run{n} ended with its own store"
        );
    }
    let stale = record_of(db, "stale");
    assert_eq!(stale.summary.state, FlowState::Pending);
    assert_eq!(
        (stale.tasks[0].state, stale.tasks[0].history.len()),
        (TaskState::Pending, 0)
    );
    let succeeded = RunFilter {
        state: Some(FlowState::Success),
        ..RunFilter::default()
    };
    assert_eq!(listed(db, succeeded).len(), RUNS);
}

async fn prune_deletes_finished_runs_older_than_the_cutoff_never_a_live_held_one_and_a_dry_run_nothing(
    db: &ContractDb,
) {
    let owner = Owner::this_process();
    let finish = |id: &str| {
        let lease = db.create(&new_run(id, &["a"]), &owner, LONG).unwrap();
        db.record(&succeeding_run(id, json!(1)), &lease).unwrap();
        db.release(&lease).unwrap();
    };
    finish("old");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    finish("recent");
    let held = db.create(&new_run("held", &["a"]), &owner, LONG).unwrap();
    db.record(
        &[flow_move(
            "held",
            FlowState::Pending,
            FlowState::Running,
            None,
        )],
        &held,
    )
    .unwrap();
    let all = || listed(db, RunFilter::default());

    let older = PruneFilter {
        older_than: Some(Duration::from_secs(1)),
        state: None,
    };
    let dry = db.prune_runs(&older, true).unwrap();
    assert_eq!((ids(&dry.runs), ids(&dry.held)), (vec!["old"], vec![]));
    assert_eq!(
        all(),
        ["held", "recent", "old"],
        "a dry run deletes nothing"
    );
    assert_eq!(db.prune(&older).unwrap(), 1);
    assert_eq!(all(), ["held", "recent"]);
    assert!(db.get("old").unwrap().is_none());

    let running = PruneFilter {
        older_than: None,
        state: Some(FlowState::Running),
    };
    let kept = db.prune_runs(&running, false).unwrap();
    assert_eq!(
        (ids(&kept.runs), ids(&kept.held)),
        (vec![], vec!["held"]),
        "a live lease is never pruned"
    );
    assert_eq!(all(), ["held", "recent"]);

    assert_eq!(db.prune(&PruneFilter::default()).unwrap(), 1);
    assert_eq!(all(), ["held"], "by default only finished runs go");
    db.release(&held).unwrap();
    assert_eq!(
        db.prune(&PruneFilter::default()).unwrap(),
        0,
        "a RUNNING run is not finished, held or not"
    );
    assert_eq!(db.prune(&running).unwrap(), 1);
    assert_eq!(all(), Vec::<String>::new());
    assert!(db.get("held").unwrap().is_none());
}

async fn a_retried_task_keeps_its_due_time_while_retrying_and_each_attempt_with_its_pause(
    db: &ContractDb,
) {
    let lease = db
        .create(&new_run("retried", &["a"]), &Owner::this_process(), LONG)
        .unwrap();
    let mut events = vec![
        flow_move("retried", FlowState::Pending, FlowState::Running, None),
        TaskMove::new("retried", 0, "a", TaskState::Pending, TaskState::Running)
            .args(r#"{"value":1}"#)
            .event(),
    ];
    let failed = SystemTime::now();
    let due = failed + Duration::from_millis(1500);
    events.push(
        TaskMove::new("retried", 0, "a", TaskState::Running, TaskState::Retrying)
            .error("unavailable", "busy")
            .retry_at(due)
            .at(failed)
            .event(),
    );
    db.record(&events, &lease).unwrap();
    let waiting = &record_of(db, "retried").tasks[0];
    assert_eq!(
        (waiting.state, waiting.attempt, waiting.executions),
        (TaskState::Retrying, 1, 1)
    );
    let recorded_due = waiting.retry_at.expect("RETRYING keeps its due time");
    assert!(
        (recorded_due - unix(due)).abs() < 1e-3,
        "due at {recorded_due}, recorded as {}",
        unix(due)
    );
    assert_eq!(
        waiting.error.as_ref().map(|e| e.code.as_str()),
        Some("unavailable")
    );

    let end = store(&[("seed", json!(1)), ("a_out", json!("done"))]);
    db.record(
        &[
            TaskMove::new("retried", 0, "a", TaskState::Retrying, TaskState::Running)
                .attempt(2)
                .event(),
            TaskMove::new("retried", 0, "a", TaskState::Running, TaskState::Success)
                .attempt(2)
                .result(json!("done"))
                .event(),
            flow_move("retried", FlowState::Running, FlowState::Success, Some(end)),
        ],
        &lease,
    )
    .unwrap();
    let task = &record_of(db, "retried").tasks[0];
    assert_eq!(
        (task.state, task.attempt, task.executions),
        (TaskState::Success, 2, 2)
    );
    assert_eq!(
        (task.retry_at, &task.error),
        (None, &None),
        "a new attempt starts clean: the last one's due time and error are history"
    );
    let attempts: Vec<(u32, TaskState, Option<String>, Option<f64>)> = task
        .attempts()
        .into_iter()
        .map(|a| (a.attempt, a.state, a.error.map(|e| e.code), a.backoff_ms))
        .collect();
    assert_eq!(
        attempts,
        [
            (
                1,
                TaskState::Retrying,
                Some("unavailable".into()),
                Some(1500.0)
            ),
            (2, TaskState::Success, None, None)
        ]
    );
    let history: Vec<(TaskState, Option<u32>)> =
        task.history.iter().map(|c| (c.to, c.attempt)).collect();
    assert_eq!(
        history,
        [
            (TaskState::Running, Some(1)),
            (TaskState::Retrying, Some(1)),
            (TaskState::Running, Some(2)),
            (TaskState::Success, Some(2))
        ]
    );
}

async fn each_iteration_of_a_subflow_is_recorded_with_its_attempts(db: &ContractDb) {
    let journal = Journal::new();
    let failing_once = json!({ "fail": "unavailable", "fail_times": 1 });
    let flow = FlowSpec::linear("iterated").add(
        Subflow::linear("s")
            .retry(Controller::times(2))
            .add(journal.probe_reading("t", "seed", failing_once)),
    );
    let report = run_recorded_in(db, &flow).await;
    assert_eq!(report.state, FlowState::Success, "{:?}", report.tasks);

    let record = record_of(db, &report.run_id);
    let task = &record.tasks[0];
    assert_eq!(
        (task.name.as_str(), task.state),
        ("s/t", TaskState::Success)
    );
    assert_eq!(task.iterations, [2], "the iteration it succeeded in");
    assert_eq!((task.executions, task.reverts), (2, 1));
    use TaskState::*;
    assert_eq!(
        moves(task),
        [
            (Pending, Running),
            (Running, Failure),
            (Failure, Reverting),
            (Reverting, Reverted),
            (Reverted, Pending),
            (Pending, Running),
            (Running, Success)
        ]
    );
    let iteration = |change: Option<&StateChange>| change.map(|c| c.iterations.clone());
    assert_eq!(iteration(task.history.first()), Some(vec![1]));
    assert_eq!(iteration(task.history.last()), Some(vec![2]));
    let attempts: Vec<(u32, TaskState, Vec<u32>, Option<String>)> = task
        .attempts()
        .into_iter()
        .map(|a| (a.attempt, a.state, a.iterations, a.error.map(|e| e.code)))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, Failure, vec![1], Some("unavailable".into())),
            (1, Success, vec![2], None)
        ],
        "each iteration's attempts count from 1"
    );
}

async fn a_revert_result_and_the_last_progress_are_kept_beside_the_execute_result(db: &ContractDb) {
    let journal = Journal::new();
    let reporting = json!({
        "progress": [0.25, 1.0],
        "revert_result": { "undone": "first", "files": 2 },
    });
    let flow = FlowSpec::linear("reverted")
        .add(journal.probe_reading("first", "seed", reporting))
        .add(journal.probe_reading("second", "first_out", json!({ "fail": "boom" })));
    let report = run_recorded_in(db, &flow).await;
    assert_eq!(report.state, FlowState::Reverted);

    let record = record_of(db, &report.run_id);
    assert_eq!(record.summary.state, FlowState::Reverted);
    let reason = record.summary.exit_reason.clone().unwrap_or_default();
    assert!(reason.contains("task `second` failed: boom"), "{reason}");
    assert_eq!(
        record.final_store,
        Some(seeded()),
        "reverted results leave the store"
    );

    let (first, second) = (&record.tasks[0], &record.tasks[1]);
    assert_eq!(
        (first.state, first.executions, first.reverts),
        (TaskState::Reverted, 1, 1)
    );
    assert_eq!(
        first.result,
        Some(json!({ "value": 1, "label": "first" })),
        "the execute result is kept"
    );
    assert_eq!(
        first.revert_result,
        Some(json!({ "undone": "first", "files": 2 }))
    );
    assert_eq!(
        first.progress,
        Some(Progress {
            fraction: 1.0,
            details: Some(json!({ "step": 1, "call": "revert" })),
        }),
        "the last report of the last call stays"
    );
    assert!(first.revert_duration_ms.is_some());
    use TaskState::*;
    assert_eq!(
        moves(first),
        [
            (Pending, Running),
            (Running, Success),
            (Success, Reverting),
            (Reverting, Reverted)
        ]
    );

    assert_eq!(second.state, Reverted);
    let error = second.error.clone().expect("its execute failed");
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("boom", "probe was told to fail")
    );
    assert_eq!(
        (&second.revert_result, &second.result),
        (&None, &None),
        "a revert without a result has none"
    );
}

async fn a_resume_is_counted_with_the_origin_it_resumed_from(db: &ContractDb) {
    let first = db
        .create(&new_run("resumed", &["a"]), &elsewhere("a"), LONG)
        .unwrap();
    db.record(
        &[flow_move(
            "resumed",
            FlowState::Pending,
            FlowState::Running,
            None,
        )],
        &first,
    )
    .unwrap();
    db.release(&first).unwrap();
    let lease = db.acquire("resumed", &Owner::this_process(), LONG).unwrap();
    assert_eq!(lease.token, 2);
    let origin = Origin {
        flow_path: None,
        flow_hash: Some("f10e".into()),
        plugins: vec![PluginHash {
            task: "a".into(),
            path: "/plugins/a.wasm".into(),
            sha256: "a5a5".into(),
        }],
    };
    db.resumed(&lease, &origin).unwrap();
    let record = record_of(db, "resumed");
    assert_eq!(record.summary.resumes, 1);
    assert_eq!(
        record.origin, origin,
        "resumed with this flow file and plugins"
    );
    assert!(matches!(
        db.resumed(&first, &origin),
        Err(RunDbError::Fenced { .. })
    ));
    assert_eq!(
        record_of(db, "resumed").summary.resumes,
        1,
        "a fenced resume is not counted"
    );
}

async fn a_failure_whose_message_holds_any_character_is_recorded_and_read_back(db: &ContractDb) {
    let lease = db
        .create(&new_run("odd", &["a"]), &Owner::this_process(), LONG)
        .unwrap();
    let message = "nul \u{0} escape \u{1b}[2J newline \n quote \" unicode ünï 🦀";
    db.record(
        &[
            flow_move("odd", FlowState::Pending, FlowState::Running, None),
            TaskMove::new("odd", 0, "a", TaskState::Pending, TaskState::Running).event(),
            TaskMove::new("odd", 0, "a", TaskState::Running, TaskState::Failure)
                .error("odd\u{0}code", message)
                .event(),
        ],
        &lease,
    )
    .unwrap();
    let record = record_of(db, "odd");
    let error = record.tasks[0]
        .error
        .clone()
        .expect("the failure is recorded");
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("odd\u{0}code", message)
    );
    assert_eq!(
        record.summary.exit_reason.as_deref(),
        Some(
            format!(
                "task `a` failed: {}: {}",
                escape("odd\u{0}code"),
                escape(message)
            )
            .as_str()
        ),
        "the exit reason holds the message escaped, NUL included, on both backends"
    );
}

/// Run `id` of flow `flow` started with idempotency key `key`.
fn keyed_run(id: &str, flow: &str, key: Option<&str>) -> runs::NewRun {
    runs::NewRun {
        flow: flow.to_owned(),
        key: key.map(str::to_owned),
        ..new_run(id, &["a"])
    }
}

async fn an_idempotency_key_is_held_by_one_run_of_a_flow_until_it_is_pruned(db: &ContractDb) {
    let owner = Owner::this_process();
    let first = db
        .create(
            &keyed_run("first", "contract", Some("order-1")),
            &owner,
            LONG,
        )
        .unwrap();
    match db.create(
        &keyed_run("second", "contract", Some("order-1")),
        &owner,
        LONG,
    ) {
        Err(RunDbError::Exists { flow, key, run }) => {
            assert_eq!(
                (flow.as_str(), key.as_str(), run.as_str()),
                ("contract", "order-1", "first")
            )
        }
        other => panic!("a second run with the key is refused, naming the first: {other:?}"),
    }
    assert!(
        db.get("second").unwrap().is_none(),
        "the refused run is not recorded"
    );
    db.create(
        &keyed_run("elsewhere", "other", Some("order-1")),
        &owner,
        LONG,
    )
    .expect("another flow's run may hold the same key");
    for id in ["plain-1", "plain-2"] {
        db.create(&keyed_run(id, "contract", None), &owner, LONG)
            .expect("runs without a key never collide");
    }
    assert_eq!(
        record_of(db, "first").summary.idempotency_key.as_deref(),
        Some("order-1")
    );
    let document = record_of(db, "first").document().unwrap();
    assert_eq!(document["idempotency_key"], "order-1");
    assert!(
        record_of(db, "plain-1")
            .document()
            .unwrap()
            .get("idempotency_key")
            .is_none(),
        "a run without a key has none in its document"
    );
    let listed = db.list(&RunFilter::default()).unwrap();
    let first_listed = listed.iter().find(|r| r.id == "first").unwrap();
    assert_eq!(first_listed.idempotency_key.as_deref(), Some("order-1"));

    db.record(&succeeding_run("first", json!(1)), &first)
        .unwrap();
    db.release(&first).unwrap();
    assert!(db.prune(&PruneFilter::default()).unwrap() >= 1);
    assert!(db.get("first").unwrap().is_none());
    db.create(
        &keyed_run("after", "contract", Some("order-1")),
        &owner,
        LONG,
    )
    .expect("a pruned run's key is free again");
}

async fn of_16_creates_racing_on_one_key_exactly_one_records_a_run(db: &ContractDb) {
    let shared = db.shared();
    let barrier = std::sync::Barrier::new(16);
    let outcomes: Vec<(String, Result<Lease, RunDbError>)> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..16)
            .map(|n| {
                let (db, barrier) = (shared.clone(), &barrier);
                scope.spawn(move || {
                    let id = format!("racer-{n}");
                    barrier.wait();
                    let created = db.create(
                        &keyed_run(&id, "contract", Some("race")),
                        &Owner::this_process(),
                        LONG,
                    );
                    (id, created)
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let winners: Vec<&str> = outcomes
        .iter()
        .filter(|(_, created)| created.is_ok())
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(winners.len(), 1, "exactly one run is created: {outcomes:?}");
    for (id, created) in &outcomes {
        match created {
            Ok(_) => {}
            Err(RunDbError::Exists { run, .. }) => assert_eq!(run, winners[0], "{id}"),
            Err(other) => panic!("{id} failed otherwise: {other}"),
        }
    }
    let recorded = db.list(&RunFilter::default()).unwrap();
    assert_eq!(ids(&recorded), winners, "one run is recorded");
}
