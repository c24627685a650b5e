//! The PostgreSQL run database, driven through the CLI as an operator would: `--db
//! postgres://…` records runs there, every `runs` verb reads and changes them, an interrupted
//! run resumes from its journal, and a submitted run is executed by a worker that has nothing
//! but the database URL — even once the plugin files it was submitted with are gone.

use std::process::Child;
use std::time::Duration;

use serde_json::{Value, json};

use crate::kit::{
    Postgres, Probe, Workspace, assert_contains, assert_exit, exit_json, plugin, signal, stderr,
    stdout, stdout_json,
};

fn runs(ws: &Workspace, pg: &Postgres, args: &[&str]) -> std::process::Output {
    ws.flowhost_on(&pg.url(), args)
}

fn list(ws: &Workspace, pg: &Postgres) -> Vec<Value> {
    let output = runs(ws, pg, &["runs", "list", "--json"]);
    assert_exit(&output, 0);
    serde_json::from_slice(&output.stdout).unwrap()
}

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    crate::kit::wait_until(what, Duration::from_secs(120), done);
}

/// A `flowhost worker` on `pg` with `extra` options, its plugins fetched into `plugins`.
fn worker(ws: &Workspace, pg: &Postgres, plugins: &str, extra: &[&str]) -> Child {
    let url = pg.url();
    let mut args = vec!["worker", "--db", &url, "--plugin-dir", plugins];
    args.extend_from_slice(extra);
    ws.command(&args).start_piped()
}

#[test]
fn every_runs_verb_works_on_a_postgres_run_database() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let flow = ws.flow("pg_verbs", &[("a", json!({})), ("b", json!({}))]);
    let flow = flow.to_str().unwrap();

    let output = runs(
        &ws,
        &pg,
        &["run", flow, "--store", "seed=7", "--fetch", "b_out"],
    );
    assert_exit(&output, 0);
    assert_eq!(stdout_json(&output)["b_out"]["value"]["value"], json!(7));

    let listed = list(&ws, &pg);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["state"], "SUCCESS");
    assert_eq!(listed[0]["flow"], "pg_verbs");

    let text = stdout(&runs(&ws, &pg, &["runs", "list"]));
    assert_contains(&text, "run database: postgres://flowhost@127.0.0.1");
    assert_contains(&text, &id);

    let shown = runs(&ws, &pg, &["runs", "show", &id, "--json"]);
    let record = exit_json(&shown, 0);
    let tasks = record["tasks"].as_array().unwrap();
    assert_eq!(
        tasks
            .iter()
            .map(|t| (
                t["name"].as_str().unwrap(),
                t["state"].as_str().unwrap(),
                t["executions"].as_u64().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("a", "SUCCESS", 1), ("b", "SUCCESS", 1)]
    );
    assert_eq!(
        tasks[0]["history"].as_array().unwrap().len(),
        2,
        "PENDING -> RUNNING -> SUCCESS"
    );
    assert_eq!(record["initial_store"]["seed"], json!(7));
    assert_contains(
        &stdout(&runs(&ws, &pg, &["runs", "show", &id])),
        "final store:",
    );

    let fetched = runs(&ws, &pg, &["runs", "fetch", &id, "a_out"]);
    assert_exit(&fetched, 0);
    assert_eq!(stdout_json(&fetched)["label"], "a");
    let unknown = runs(&ws, &pg, &["runs", "fetch", "no-such-run", "a_out"]);
    assert_exit(&unknown, 64);

    // A run killed mid-flow stays RUNNING, is held while its lease lives, and resumes.
    let waiting = ws.waiting_flow("pg_verbs");
    let url = pg.url();
    let child = ws
        .command(&[
            "run",
            waiting.to_str().unwrap(),
            "--db",
            &url,
            "--lease-ttl",
            "1s",
        ])
        .start_piped();
    wait_until("the second run's b started", || {
        ws.count("execute", "b") == 2
    });
    crate::kit::kill(child);
    let interrupted = runs(&ws, &pg, &["runs", "list", "--state", "RUNNING", "--json"]);
    let interrupted: Vec<Value> = serde_json::from_slice(&interrupted.stdout).unwrap();
    assert_eq!(interrupted.len(), 1, "{interrupted:?}");
    let second = interrupted[0]["id"].as_str().unwrap().to_owned();
    ws.release();
    let resumed = runs(&ws, &pg, &["runs", "resume", &second, "--json"]);
    assert_exit(&resumed, 0);
    assert_eq!(stdout_json(&resumed)["state"], "SUCCESS");
    assert_eq!(
        ws.executions(&["a", "b"]),
        [2, 3],
        "a once per run, never again on resume; b: the first run's, and the interrupted one \
         executed again"
    );
    let again = runs(&ws, &pg, &["runs", "resume", &second]);
    // A finished run is not resumed.
    assert_exit(&again, 64);

    let dry = runs(&ws, &pg, &["runs", "prune", "--dry-run", "--json"]);
    assert_exit(&dry, 0);
    assert_eq!(stdout_json(&dry)["runs"].as_array().unwrap().len(), 2);
    assert_eq!(list(&ws, &pg).len(), 2, "a dry run deletes nothing");
    let pruned = runs(&ws, &pg, &["runs", "prune", "--json"]);
    assert_eq!(stdout_json(&pruned)["deleted"], json!(2));
    assert!(list(&ws, &pg).is_empty());
    assert_eq!(
        pg.sql("SELECT count(*) FROM tasks"),
        "0",
        "a pruned run's tasks go with it"
    );
}

#[test]
fn a_worker_runs_submitted_flows_whose_plugin_files_are_gone() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    std::fs::create_dir(ws.path("plugins")).unwrap();
    std::fs::copy(plugin("probe"), ws.path("plugins/probe.wasm")).unwrap();
    let flow = ws.write_flow(
        "submitted",
        "",
        &[
            Probe::new("first").plugin("plugins/probe.wasm"),
            Probe::new("second").plugin("plugins/probe.wasm"),
        ],
    );
    let mut ids = Vec::new();
    for seed in 0..3 {
        let store = format!("seed={seed}");
        let output = runs(
            &ws,
            &pg,
            &["submit", flow.to_str().unwrap(), "--store", &store],
        );
        assert_exit(&output, 0);
        ids.push(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    assert_eq!(
        pg.sql("SELECT count(*) FROM blobs"),
        "2",
        "the flow file and one plugin, stored once for three runs"
    );
    assert_eq!(
        list(&ws, &pg)
            .iter()
            .filter(|r| r["state"] == "PENDING")
            .count(),
        3,
        "queued, not run"
    );
    let queue = runs(&ws, &pg, &["workers"]);
    assert_contains(&stdout(&queue), "queue: 3 run(s) waiting");
    std::fs::remove_dir_all(ws.path("plugins")).unwrap();

    let not_postgres = ws.flowhost_on(&ws.db_arg(), &["submit", flow.to_str().unwrap()]);
    assert_exit(&not_postgres, 64);
    let invalid = runs(&ws, &pg, &["submit", flow.to_str().unwrap()]);
    // Validated before queueing.
    assert_exit(&invalid, 65);

    let plugin_dir = ws.path("worker-plugins");
    let worker = worker(
        &ws,
        &pg,
        plugin_dir.to_str().unwrap(),
        &["--concurrency", "2"],
    );
    wait_until("every submitted run succeeded", || {
        list(&ws, &pg).iter().all(|r| r["state"] == "SUCCESS")
    });
    for (seed, id) in ids.iter().enumerate() {
        let fetched = runs(&ws, &pg, &["runs", "fetch", id, "second_out"]);
        assert_eq!(
            stdout_json(&fetched)["value"]["value"],
            json!(seed),
            "{}",
            stderr(&fetched)
        );
    }
    assert_eq!(ws.executions(&["first", "second"]), [3, 3]);
    assert_eq!(
        std::fs::read_dir(&plugin_dir).unwrap().count(),
        1,
        "fetched once into the worker's plugin folder"
    );

    let listed = runs(&ws, &pg, &["workers", "--json"]);
    let workers = stdout_json(&listed);
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers}");
    assert_eq!(workers[0]["status"], "running");
    assert_eq!(workers[0]["pid"], json!(worker.id()));

    signal(&worker, "-TERM");
    // A worker drains and exits 0 on SIGTERM.
    assert_exit(&worker.wait_with_output().unwrap(), 0);
    let workers = stdout_json(&runs(&ws, &pg, &["workers", "--json"]));
    assert_eq!(workers[0]["status"], "stopped");
}

#[test]
fn a_worker_claims_only_its_flows_and_drains_on_sigterm() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let slow = ws.flow("slow", &[("s", json!({ "mode": "sleep", "ms": 1500 }))]);
    let slow_copy = ws.path("slow.toml");
    std::fs::rename(&slow, &slow_copy).unwrap();
    let other = ws.flow("other", &[("o", json!({}))]);
    for flow in [&slow_copy, &other] {
        let output = runs(&ws, &pg, &["submit", flow.to_str().unwrap(), "--json"]);
        assert_exit(&output, 0);
        assert!(stdout_json(&output)["run_id"].is_string());
    }
    let worker = worker(
        &ws,
        &pg,
        ws.path("wp").to_str().unwrap(),
        &["--flow", "slow"],
    );
    wait_until("the slow run is in flight", || {
        ws.count("execute", "s") == 1
    });
    signal(&worker, "-TERM");
    let output = worker.wait_with_output().unwrap();
    assert_exit(&output, 0);
    let states: Vec<(String, String)> = list(&ws, &pg)
        .iter()
        .map(|r| {
            (
                r["flow"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        states.contains(&("slow".into(), "SUCCESS".into())),
        "the run in flight was finished: {states:?}"
    );
    assert!(
        states.contains(&("other".into(), "PENDING".into())),
        "another flow's run is left queued: {states:?}"
    );
    assert_eq!(ws.count("execute", "o"), 0);
}

#[test]
fn a_second_sigterm_hands_the_runs_in_flight_back_to_other_workers() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let url = pg.url();
    let flow = ws.waiting_flow("handed");
    let output = runs(&ws, &pg, &["submit", flow.to_str().unwrap()]);
    assert_exit(&output, 0);
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let spawn = |name: &str| {
        let log = ws.path(&format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = ws
            .command(&[
                "worker",
                "--db",
                &url,
                "--lease-ttl",
                "10m",
                "--plugin-dir",
                ws.path("wp").to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        (child, log)
    };
    let (first, first_log) = spawn("first");
    wait_until("the first worker runs b", || ws.count("execute", "b") == 1);
    signal(&first, "-TERM");
    wait_until("it drains", || {
        std::fs::read_to_string(&first_log)
            .unwrap()
            .contains("draining")
    });
    signal(&first, "-TERM");
    let mut first = first;
    assert!(
        first.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&first_log).unwrap()
    );

    let run = list(&ws, &pg).remove(0);
    assert_eq!(run["state"], "RUNNING", "{run}");
    assert!(
        run.get("lease").is_none(),
        "its lease was released, not left to expire in 10 minutes: {run}"
    );
    let (second, _) = spawn("second");
    wait_until("the second worker resumed b", || {
        ws.count("execute", "b") == 2
    });
    ws.release();
    wait_until("the run succeeded", || {
        list(&ws, &pg)[0]["state"] == "SUCCESS"
    });
    signal(&second, "-TERM");
    let mut second = second;
    assert!(second.wait().unwrap().success());
    let record = stdout_json(&runs(&ws, &pg, &["runs", "show", &id, "--json"]));
    let executions: Vec<u64> = record["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["executions"].as_u64().unwrap())
        .collect();
    assert_eq!(executions, [1, 2, 1], "only the task in flight ran again");
}

#[test]
fn a_database_migrated_by_a_newer_flowhost_is_refused_and_a_bad_url_named() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    // The schema is created on first use, and found in place the next time.
    assert_exit(&runs(&ws, &pg, &["runs", "list"]), 0);
    assert_exit(&runs(&ws, &pg, &["runs", "list"]), 0);
    assert_eq!(pg.sql("SELECT version FROM flowhost_schema"), "10");
    pg.sql("UPDATE flowhost_schema SET version = 99");
    let newer = runs(&ws, &pg, &["runs", "list"]);
    assert_exit(&newer, 66);
    assert_contains(
        &stderr(&newer),
        "schema version 99, newer than this flowhost's 10",
    );

    let closed = "postgres://flowhost:secret@127.0.0.1:1/postgres".to_owned();
    let unreachable = ws.flowhost_on(&closed, &["runs", "list"]);
    assert_exit(&unreachable, 66);
    assert_contains(&stderr(&unreachable), "postgres://flowhost:***@127.0.0.1");
    assert!(
        !stderr(&unreachable).contains("secret"),
        "the password is never printed"
    );
}
