//! PostgreSQL's grouped commits: the journal writes of runs going on at once are committed
//! together, yet each run is fenced on its own — a stale executor's write fails alone while
//! the writes beside it land — and a run's start (its row, its tasks and its first
//! transitions) is one commit.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use flowhost::runs::{Lease, PgRunDb, RunDb, RunDbError};
use flowhost::{FlowState, TaskState};
use serde_json::json;

use crate::kit::Postgres;
use crate::kit::rundb::{TaskMove, elsewhere, flow_move, new_run};

const LONG: Duration = Duration::from_secs(600);

/// The server's next transaction id: it moves by one for each transaction that wrote.
fn next_xid(pg: &Postgres) -> i64 {
    pg.sql("SELECT pg_snapshot_xmax(pg_current_snapshot())")
        .parse()
        .expect("a transaction id")
}

fn started(db: &PgRunDb, id: &str, ttl: Duration) -> Lease {
    let lease = Lease::first(id, &elsewhere("a"), ttl);
    db.record_new(
        &new_run(id, &["a"]),
        &lease,
        &[flow_move(id, FlowState::Pending, FlowState::Running, None)],
    )
    .expect("start the run");
    lease
}

#[test]
fn a_run_starts_in_one_commit_with_its_row_its_tasks_and_its_first_transitions() {
    let pg = Postgres::start();
    let db = PgRunDb::connect(&pg.url()).expect("connect");
    let before = next_xid(&pg);
    started(&db, "one-commit", LONG);
    assert_eq!(next_xid(&pg) - before, 1, "one write transaction");
    let record = db.get("one-commit").unwrap().expect("the run exists");
    assert_eq!(record.summary.state, FlowState::Running);
    assert_eq!(record.tasks.len(), 1);
    assert_eq!(record.tasks[0].state, TaskState::Pending);
}

#[test]
fn a_stale_executor_fails_alone_among_runs_committed_at_the_same_moment() {
    let pg = Postgres::start();
    let db = Arc::new(PgRunDb::connect(&pg.url()).expect("connect"));
    const RUNS: usize = 24;
    let ids: Vec<String> = (0..RUNS).map(|i| format!("group-{i}")).collect();
    // Run 7's lease expires at once, and another executor takes it over.
    let leases: Vec<Lease> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| started(&db, id, if i == 7 { Duration::ZERO } else { LONG }))
        .collect();
    let taken = db
        .acquire("group-7", &elsewhere("b"), LONG)
        .expect("take the expired lease");
    assert_eq!(taken.token, leases[7].token + 1);

    // Every run writes its task's start at the same moment, the stale one among them.
    let barrier = Arc::new(Barrier::new(RUNS));
    let writers: Vec<_> = ids
        .iter()
        .zip(leases)
        .map(|(id, lease)| {
            let (db, barrier, id) = (db.clone(), barrier.clone(), id.clone());
            std::thread::spawn(move || {
                let start = TaskMove::new(&id, 0, "a", TaskState::Pending, TaskState::Running)
                    .args(r#"{"value":1}"#)
                    .event();
                let end = TaskMove::new(&id, 0, "a", TaskState::Running, TaskState::Success)
                    .result(json!(2))
                    .event();
                barrier.wait();
                db.record(&[start, end], &lease)
            })
        })
        .collect();
    for (i, writer) in writers.into_iter().enumerate() {
        let written = writer.join().expect("writer thread");
        let record = db.get(&ids[i]).unwrap().expect("the run exists");
        if i == 7 {
            match written {
                Err(RunDbError::Fenced { run, holder, .. }) => {
                    assert_eq!(run, "group-7");
                    assert_eq!(holder.map(|h| h.owner), Some("b@elsewhere".into()));
                }
                other => panic!("the stale write is fenced: {other:?}"),
            }
            assert_eq!(
                record.tasks[0].state,
                TaskState::Pending,
                "it wrote nothing"
            );
            assert!(
                record.tasks[0].history.is_empty(),
                "{:?}",
                record.tasks[0].history
            );
        } else {
            written.unwrap_or_else(|e| panic!("run {i}'s write lands: {e}"));
            assert_eq!(record.tasks[0].state, TaskState::Success);
            assert_eq!(record.tasks[0].executions, 1);
            assert_eq!(
                record.tasks[0].history.len(),
                2,
                "{:?}",
                record.tasks[0].history
            );
        }
    }
    // The new holder writes on.
    db.record(
        &[TaskMove::new("group-7", 0, "a", TaskState::Pending, TaskState::Running).event()],
        &taken,
    )
    .expect("the new holder's write lands");
}

#[test]
fn runs_created_at_once_under_shared_keys_in_opposite_orders_all_commit_one_run_per_key() {
    // Groups inserting the same keys in opposite orders would each wait for the other's
    // insert: the server breaks such a deadlock after a second by failing one group.
    let pg = Postgres::start();
    let dbs: Vec<PgRunDb> = (0..2)
        .map(|_| PgRunDb::connect(&pg.url()).expect("connect"))
        .collect();
    const KEYS: usize = 12;
    const RACERS: usize = 16;
    for round in 0..12 {
        let barrier = Barrier::new(RACERS);
        let outcomes: Vec<(String, usize, Result<Lease, RunDbError>)> =
            std::thread::scope(|scope| {
                let racers: Vec<_> = (0..RACERS)
                    .map(|n| {
                        let (db, barrier) = (&dbs[n % 2], &barrier);
                        scope.spawn(move || {
                            barrier.wait();
                            // Half the racers take the keys upwards, half downwards, each
                            // from a point of its own.
                            (0..KEYS)
                                .map(|i| {
                                    let step = if n % 2 == 0 { i } else { KEYS - i };
                                    let key = (step + n / 2) % KEYS;
                                    let id = format!("r{round}-{n}-{key}");
                                    let run = flowhost::runs::NewRun {
                                        key: Some(format!("key-{round}-{key}")),
                                        ..new_run(&id, &["a"])
                                    };
                                    let created = db.create(&run, &elsewhere("a"), LONG);
                                    (id, key, created)
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                racers.into_iter().flat_map(|r| r.join().unwrap()).collect()
            });
        for key in 0..KEYS {
            let racers: Vec<_> = outcomes.iter().filter(|(_, k, _)| *k == key).collect();
            let winners: Vec<&str> = racers
                .iter()
                .filter(|(_, _, created)| created.is_ok())
                .map(|(id, _, _)| id.as_str())
                .collect();
            assert_eq!(winners.len(), 1, "one run per key: {racers:?}");
            for (id, _, created) in racers {
                match created {
                    Ok(_) => {}
                    Err(RunDbError::Exists { run, .. }) => assert_eq!(run, winners[0], "{id}"),
                    Err(other) => panic!("{id} failed otherwise: {other}"),
                }
            }
        }
    }
}
