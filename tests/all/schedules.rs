//! Schedules: a flow file's `schedule` entries make `flowhost serve` start runs at each cron
//! tick — one run per tick however many serve processes share the database — catch up on ticks
//! missed while no serve ran as each entry's `catch_up` says, and are listed by
//! `GET /v1/schedules` and `flowhost schedules`. A bad cron expression is a validation error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::kit::cdp::Browser;
use crate::kit::serving::Served;
use crate::kit::{
    Postgres, Probe, Workspace, assert_contains, assert_exit, stderr, stdout, stdout_json,
    wait_until,
};

/// Writes flow file `file` in the workspace's folder: flow `name` with the top-level lines
/// `head` (its schedule), the store `seed = 1` and two journaling probes.
fn scheduled_flow(ws: &Workspace, file: &str, name: &str, head: &str) -> PathBuf {
    let written = ws.write_flow(name, head, &[Probe::new("a"), Probe::new("b")]);
    let path = ws.path(file);
    std::fs::rename(written, &path).unwrap();
    path
}

/// The idempotency keys of flow `flow`'s runs in SQLite database `db`, with their run ids,
/// by key.
fn keyed_runs(db: &Path, flow: &str) -> BTreeMap<String, String> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return BTreeMap::new();
    };
    let Ok(mut statement) =
        conn.prepare("SELECT idempotency_key, id FROM runs WHERE flow = ?1 ORDER BY 1")
    else {
        return BTreeMap::new();
    };
    statement
        .query_map([flow], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The tick of a scheduled run's key `schedule:INDEX:TICK`, in unix seconds.
fn tick_of(key: &str) -> u64 {
    let tick = key.splitn(3, ':').nth(2).expect("schedule:INDEX:TICK");
    humantime::parse_rfc3339(tick)
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_schedule_every_second_starts_one_run_per_tick_on_serve_and_is_listed() {
    let ws = Workspace::new();
    scheduled_flow(
        &ws,
        "ticking.toml",
        "ticking",
        r#"schedule = [{ cron = "* * * * * *", store = { seed = 7 } }]"#,
    );
    let server = Served::start(&ws, ws.root(), &[]);
    wait_until(
        "serve started three scheduled runs",
        Duration::from_secs(60),
        || keyed_runs(&ws.db(), "ticking").len() >= 3,
    );

    let runs = keyed_runs(&ws.db(), "ticking");
    let ticks: Vec<u64> = runs.keys().map(|key| tick_of(key)).collect();
    assert!(
        runs.keys().all(|key| key.starts_with("schedule:0:")),
        "{runs:?}"
    );
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "one run per second, none missed: {runs:?}"
        );
    }
    let first = runs.values().next().unwrap();
    let run = server.wait_finished(first);
    assert_eq!(run["state"], "SUCCESS");
    assert_eq!(
        run["initial_store"]["seed"], 7,
        "the schedule's store: {run}"
    );

    let listed = server.get("/v1/schedules");
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let entry = &listed[0];
    assert_eq!(entry["flow"], "ticking");
    assert_eq!(entry["served_as"], "ticking");
    assert_eq!(entry["index"], 0);
    assert_eq!(entry["cron"], "* * * * * *");
    assert_eq!(entry["catch_up"], "one", "the default");
    let last_tick = entry["last_tick"].as_str().unwrap();
    let next_tick = entry["next_tick"].as_str().unwrap();
    assert!(next_tick > last_tick, "{entry}");
    let last_run = entry["last_run"].as_str().unwrap();
    assert_eq!(
        keyed_runs(&ws.db(), "ticking")
            .get(&format!("schedule:0:{last_tick}"))
            .map(String::as_str),
        Some(last_run),
        "the last run is the one its tick started: {entry}"
    );

    let table = ws.flowhost_on(&ws.db_arg(), &["schedules"]);
    assert_exit(&table, 0);
    let text = stdout(&table);
    assert_contains(&text, "NEXT TICK");
    assert_contains(&text, "ticking");
    assert_contains(&text, "* * * * * *");
    let json = stdout_json(&ws.flowhost_on(&ws.db_arg(), &["schedules", "--json"]));
    assert_eq!(json[0]["flow"], "ticking");
    assert!(json[0]["next_tick"].is_string(), "{json}");
    assert!(json[0]["last_run"].is_string(), "{json}");
}

#[test]
fn ticks_missed_while_no_serve_ran_are_caught_up_as_each_schedule_says() {
    let ws = Workspace::new();
    // Daily, twelve hours from now: no tick comes due while the test runs, so every run it
    // sees is a catch-up.
    let hour = (unix_now() / 3600 + 12) % 24;
    let cron = format!("0 0 {hour} * * *");
    for catch_up in ["none", "one", "all"] {
        scheduled_flow(
            &ws,
            &format!("{catch_up}.toml"),
            &format!("daily_{catch_up}"),
            &format!(r#"schedule = [{{ cron = "{cron}", catch_up = "{catch_up}" }}]"#),
        );
    }
    let listed = || stdout_json(&ws.flowhost_on(&ws.db_arg(), &["schedules", "--json"]));
    {
        let _server = Served::start(&ws, ws.root(), &[]);
        wait_until(
            "serve saw the three schedules",
            Duration::from_secs(30),
            || ws.db().exists() && listed().as_array().is_some_and(|l| l.len() == 3),
        );
    }
    // Serve was down for five days: the schedules were first seen then.
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.execute(
        "UPDATE schedules SET since = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-5 days')",
        [],
    )
    .unwrap();

    let server = Served::start(&ws, ws.root(), &[]);
    wait_until(
        "five runs for the missed ticks",
        Duration::from_secs(60),
        || keyed_runs(&ws.db(), "daily_all").len() == 5,
    );
    wait_until("one run for the latest", Duration::from_secs(30), || {
        !keyed_runs(&ws.db(), "daily_one").is_empty()
    });
    // A look later: nothing more was started, for any of them.
    std::thread::sleep(Duration::from_secs(2));
    let all = keyed_runs(&ws.db(), "daily_all");
    let one = keyed_runs(&ws.db(), "daily_one");
    assert_eq!(all.len(), 5, "{all:?}");
    let ticks: Vec<u64> = all.keys().map(|key| tick_of(key)).collect();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1], pair[0] + 86_400, "one run per missed day: {all:?}");
    }
    assert!(
        unix_now() - ticks[4] < 86_400,
        "the latest tick is the last day's"
    );
    assert_eq!(
        one.keys().map(|key| tick_of(key)).collect::<Vec<_>>(),
        [ticks[4]],
        "catch_up = \"one\" starts the latest missed tick only"
    );
    assert!(
        keyed_runs(&ws.db(), "daily_none").is_empty(),
        "catch_up = \"none\" starts nothing"
    );
    for id in all.values().chain(one.values()) {
        assert_eq!(server.wait_finished(id)["state"], "SUCCESS");
    }

    let by_flow: BTreeMap<String, Value> = listed()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["flow"].as_str().unwrap().to_owned(), s.clone()))
        .collect();
    assert_eq!(by_flow["daily_none"]["last_tick"], Value::Null);
    let latest = all.keys().last().unwrap().trim_start_matches("schedule:0:");
    assert_eq!(by_flow["daily_all"]["last_tick"], latest);
    assert_eq!(by_flow["daily_one"]["last_tick"], latest);
}

#[test]
fn two_serve_processes_on_one_postgres_start_exactly_one_run_per_tick() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    scheduled_flow(
        &ws,
        "ticking.toml",
        "ticking",
        r#"schedule = [{ cron = "* * * * * *" }]"#,
    );
    let url = pg.url();
    let first = Served::start_logged(&ws, ws.root(), &url, &["-v"], "first.log");
    let second = Served::start_logged(&ws, ws.root(), &url, &["-v"], "second.log");
    let per_tick = || -> Vec<(u64, u64)> {
        pg.sql("SELECT idempotency_key || ' ' || count(*) FROM runs GROUP BY idempotency_key ORDER BY 1")
            .lines()
            .map(|line| {
                let (key, n) = line.rsplit_once(' ').unwrap();
                (tick_of(key), n.parse().unwrap())
            })
            .collect()
    };
    wait_until("six ticks", Duration::from_secs(60), || {
        per_tick().len() >= 6
    });
    drop(first);
    drop(second);

    let counted = per_tick();
    assert!(
        counted.iter().all(|(_, runs)| *runs == 1),
        "one run per tick: {counted:?}"
    );
    for pair in counted.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "no tick missed: {counted:?}");
    }
    // Both ticked every tick: a tick one of them started the other found started (which one
    // wins is a race, so either may have started all of them); no tick was started twice.
    let logs = [ws.path("first.log"), ws.path("second.log")]
        .map(|log| std::fs::read_to_string(log).unwrap());
    let logged = |log: &str, tick: u64, what: &str| {
        let at = format!("tick={}", tick_text(tick));
        log.lines()
            .filter(|l| l.contains(what) && l.contains(&at))
            .count()
    };
    let started = |log: &str, tick: u64| logged(log, tick, "schedule started a run");
    for (tick, _) in &counted {
        assert!(
            started(&logs[0], *tick) + started(&logs[1], *tick) <= 1,
            "tick {tick} started once:\n{}\n{}",
            logs[0],
            logs[1]
        );
    }
    let found_started = |log: &str, tick: u64| logged(log, tick, "already started");
    for log in &logs {
        assert!(
            counted
                .iter()
                .any(|(tick, _)| started(log, *tick) + found_started(log, *tick) == 1),
            "both serves ticked:\n{log}"
        );
    }
}

/// Unix seconds as the keys write them (`2026-12-07T06:45:00Z`).
fn tick_text(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
        .to_string()
}

#[test]
fn a_bad_cron_expression_is_refused_naming_the_file_the_schedule_and_the_expression() {
    let ws = Workspace::new();
    let flow = scheduled_flow(
        &ws,
        "nightly.toml",
        "nightly",
        r#"schedule = [{ cron = "0 3 * * *" }, { cron = "0 25 * * *" }]"#,
    );
    let checked = ws.flowhost(&["check", flow.to_str().unwrap()]);
    assert_exit(&checked, 65);
    let message = stderr(&checked);
    assert_contains(&message, "nightly.toml");
    assert_contains(&message, "schedule 2 has cron `0 25 * * *`");

    assert_contains(&message, "Number out of bounds");

    // serve reads it the same way: the flow is not served, nothing is scheduled.
    let server = Served::start(&ws, ws.root(), &[]);
    assert_eq!(server.get("/v1/schedules"), serde_json::json!([]));
}

#[test]
fn the_console_lists_the_schedules_with_their_next_tick_and_last_run() {
    let ws = Workspace::new();
    scheduled_flow(
        &ws,
        "ticking.toml",
        "ticking",
        r#"schedule = [{ cron = "* * * * * *" }]"#,
    );
    ws.flow("unscheduled", &[("a", serde_json::json!({}))]);
    let server = Served::start(&ws, ws.root(), &[]);
    let mut browser = Browser::start(1024, 700);
    browser.open(&format!("{}/", server.base));
    browser.wait_for(
        "document.querySelector('#schedules tr[data-flow=\"ticking\"] a[href^=\"/runs/\"]')",
        "the schedule with its last run",
    );
    let row =
        browser.eval("document.querySelector('#schedules tr[data-flow=\"ticking\"]').innerText");
    let row = row.as_str().unwrap();
    assert_contains(row, "* * * * * *");
    assert_contains(row, "Z");
    assert_eq!(
        browser.eval("document.querySelectorAll('#schedules tr').length"),
        1,
        "only the flow with a schedule"
    );
    assert!(
        !browser
            .eval("document.querySelector('#schedules-panel').hidden")
            .as_bool()
            .unwrap()
    );
}
