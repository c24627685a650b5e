//! Durable runs: every run is recorded in the run database, a run killed mid-flow (or
//! mid-revert) is resumed with `flowhost runs resume` without executing succeeded tasks
//! again, and the database stays whole under many concurrent runs and processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowhost::runs::{self, RunDb, RunFilter, SqliteRunDb, Sync};
use flowhost::{Engine, Flow, FlowState, Store, TaskSpec, TaskState};
use flowhost_testkit::{json_lines, plugin};
use serde_json::{Value, json};

/// A folder holding a flow file, the probes' journal, a signal folder and the run database.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("journal")).unwrap();
        std::fs::create_dir(dir.path().join("signal")).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db(&self) -> PathBuf {
        self.path("runs.db")
    }

    /// Writes `flow.toml`: probes named by `tasks` (name, extra config), each journaling and
    /// passing the previous one's result on.
    fn flow(&self, name: &str, tasks: &[(&str, Value)]) -> PathBuf {
        let mut text = format!("name = \"{name}\"\n[store]\nseed = 1\n");
        let mut from = "seed".to_owned();
        for (task, extra) in tasks {
            let mut config = json!({ "label": task, "journal": true });
            config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            text += &format!(
                "\n[[task]]\nname = \"{task}\"\nplugin = {plugin:?}\nrebind = {{ value = \"{from}\" }}\nprovides = [\"{task}_out\"]\nconfig = {config}\ndirs = [{{ host = \"journal\", guest = \"/journal\", mode = \"rw\" }}, {{ host = \"signal\", guest = \"/signal\" }}]\n",
                plugin = plugin("probe"),
                config = toml_inline(&config),
            );
            from = format!("{task}_out");
        }
        let path = self.path("flow.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Every probe call so far: (call, label).
    fn calls(&self) -> Vec<(String, String)> {
        json_lines(&self.path("journal/calls.jsonl"))
            .iter()
            .map(|c| (c["call"].as_str().unwrap().to_owned(), c["label"].as_str().unwrap().to_owned()))
            .collect()
    }

    fn count(&self, call: &str, label: &str) -> usize {
        self.calls().iter().filter(|(c, l)| c == call && l == label).count()
    }

    /// Waits until the journal shows `call` of `label` (the probe journals before blocking).
    fn wait_for(&self, child: &mut Child, call: &str, label: &str) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.count(call, label) == 0 {
            assert!(child.try_wait().unwrap().is_none(), "flowhost ended before `{label}` reached {call}");
            assert!(Instant::now() < deadline, "`{label}` never reached {call}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn release(&self) {
        std::fs::write(self.path("signal/go"), "go").unwrap();
    }

    fn flowhost(&self, args: &[&str]) -> Output {
        flowhost(self.dir.path(), args).output().unwrap()
    }

    /// The one run recorded so far.
    fn only_run(&self) -> runs::RunSummary {
        let output = self.flowhost(&["runs", "list", "--json", "--db", self.db().to_str().unwrap()]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let list: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        let db = SqliteRunDb::open(&self.db(), false, Sync::Normal).unwrap();
        db.list(&RunFilter::default()).unwrap().remove(0)
    }
}

fn toml_inline(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("{k} = {}", toml_inline(v))).collect();
            format!("{{ {} }}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

fn flowhost(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowhost"));
    command.current_dir(dir).args(args).env_remove("FLOWHOST_DB").stdin(Stdio::null());
    command
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Starts `flowhost run flow.toml` recording into the workspace's database, kills it with
/// SIGKILL once `label` reached `call`, and returns the interrupted run.
fn run_and_kill(ws: &Workspace, call: &str, label: &str) -> runs::RunSummary {
    let db = ws.db();
    let mut child = flowhost(ws.dir.path(), &["run", "flow.toml", "--db", db.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ws.wait_for(&mut child, call, label);
    child.kill().unwrap();
    child.wait().unwrap();
    ws.only_run()
}

fn four_steps(ws: &Workspace) -> PathBuf {
    ws.flow(
        "four_steps",
        &[
            ("a", json!({})),
            ("b", json!({})),
            ("c", json!({ "mode": "wait_file", "path": "/signal/go" })),
            ("d", json!({})),
        ],
    )
}

#[test]
fn a_run_killed_mid_flow_resumes_without_running_succeeded_tasks_again() {
    let ws = Workspace::new();
    four_steps(&ws);
    let run = run_and_kill(&ws, "execute", "c");
    assert_eq!(run.state, FlowState::Running, "the killed run is recorded as interrupted");

    ws.release();
    let db = ws.db();
    let resumed = ws.flowhost(&["runs", "resume", &run.id, "--db", db.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(ws.count("execute", "a"), 1, "a succeeded before the crash: not executed again");
    assert_eq!(ws.count("execute", "b"), 1, "b succeeded before the crash: not executed again");
    assert_eq!(ws.count("execute", "c"), 2, "c was caught RUNNING: executed again (at least once)");
    assert_eq!(ws.count("execute", "d"), 1);

    let uninterrupted = ws.flowhost(&["run", "flow.toml", "--no-db"]);
    assert!(uninterrupted.status.success(), "{}", stderr(&uninterrupted));
    assert_eq!(stdout_json(&resumed), stdout_json(&uninterrupted), "final store equals an uninterrupted run's");

    let show = ws.flowhost(&["runs", "show", &run.id, "--json", "--db", db.to_str().unwrap()]);
    let record = stdout_json(&show);
    assert_eq!(record["state"], "SUCCESS");
    assert_eq!(record["resumes"], 1);
    let executions: Vec<&Value> = record["tasks"].as_array().unwrap().iter().map(|t| &t["executions"]).collect();
    assert_eq!(executions, [&json!(1), &json!(1), &json!(2), &json!(1)]);
    assert_eq!(record["final_store"], stdout_json(&uninterrupted));

    let fetched = ws.flowhost(&["runs", "fetch", &run.id, "d_out", "--db", db.to_str().unwrap()]);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert_eq!(stdout_json(&fetched), stdout_json(&uninterrupted)["d_out"]);

    let executed = ws.calls().len();
    let again = ws.flowhost(&["runs", "resume", &run.id, "--db", db.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(64), "resuming a finished run is a usage error");
    assert!(stderr(&again).contains("already finished (SUCCESS)"), "{}", stderr(&again));
    assert_eq!(ws.calls().len(), executed, "nothing ran");
}

#[test]
fn a_run_killed_mid_revert_resumes_the_revert() {
    let ws = Workspace::new();
    ws.flow(
        "revert_crash",
        &[
            ("a", json!({})),
            ("b", json!({ "mode": "wait_file", "mode_in": "revert", "path": "/signal/go" })),
            ("c", json!({ "fail": "boom" })),
        ],
    );
    let run = run_and_kill(&ws, "revert", "b");
    assert_eq!(run.state, FlowState::Reverting);

    ws.release();
    let db = ws.db();
    let resumed = ws.flowhost(&["runs", "resume", &run.id, "--json", "--db", db.to_str().unwrap()]);
    assert_eq!(resumed.status.code(), Some(1), "reverted: {}", stderr(&resumed));
    let report = stdout_json(&resumed);
    assert_eq!(report["state"], "REVERTED");
    assert_eq!(report["store"], json!({ "seed": 1 }), "every result left the store");

    let calls = json_lines(&ws.path("journal/calls.jsonl"));
    let order: Vec<(String, String)> = ws.calls();
    let expected: Vec<(String, String)> = [
        ("execute", "a"),
        ("execute", "b"),
        ("execute", "c"),
        ("revert", "c"),
        ("revert", "b"),
        ("revert", "b"),
        ("revert", "a"),
    ]
    .iter()
    .map(|(c, l)| ((*c).to_owned(), (*l).to_owned()))
    .collect();
    assert_eq!(order, expected, "c is not reverted twice; b's revert is repeated; a is reverted after");
    // After the restart, b's revert gets exactly what it got before: its arguments, its own
    // result as outcome, and the flow's failure.
    let (before, after) = (&calls[4], &calls[5]);
    assert_eq!(before["args"], after["args"]);
    assert_eq!(after["outcome"], json!({ "result": { "value": { "value": 1, "label": "a" }, "label": "b" } }));
    assert_eq!(before["failures"], after["failures"]);
    assert_eq!(calls[6]["failures"][0]["task"], "c");
    assert_eq!(calls[6]["outcome"], json!({ "result": { "value": 1, "label": "a" } }));
}

#[test]
fn resume_refuses_a_changed_flow_file_unless_forced() {
    let ws = Workspace::new();
    let flow = four_steps(&ws);
    let run = run_and_kill(&ws, "execute", "c");
    let text = std::fs::read_to_string(&flow).unwrap();
    std::fs::write(&flow, format!("# edited after the crash\n{text}")).unwrap();
    ws.release();

    let db = ws.db();
    let refused = ws.flowhost(&["runs", "resume", &run.id, "--db", db.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(65));
    let message = stderr(&refused);
    assert!(message.contains("flow file") && message.contains("changed") && message.contains("--force"), "{message}");
    assert_eq!(ws.count("execute", "d"), 0, "nothing ran");

    let forced = ws.flowhost(&["runs", "resume", &run.id, "--force", "--db", db.to_str().unwrap()]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(ws.count("execute", "a"), 1);
    assert_eq!(ws.count("execute", "d"), 1);
}

#[test]
fn a_corrupt_or_foreign_database_is_a_clear_error() {
    let ws = Workspace::new();
    ws.flow("one", &[("a", json!({}))]);
    let garbage = ws.path("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let foreign = ws.path("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)").unwrap();
    }
    for (db, expected) in [(&garbage, "file is not a database"), (&foreign, "another application's SQLite database")] {
        for args in [vec!["run", "flow.toml"], vec!["runs", "list"]] {
            let mut args = args.clone();
            args.extend(["--db", db.to_str().unwrap()]);
            let output = ws.flowhost(&args);
            let message = stderr(&output);
            assert_eq!(output.status.code(), Some(66), "{args:?}: {message}");
            assert!(message.contains("is not a flowhost run database") && message.contains(expected), "{message}");
            assert!(!message.contains("panicked"), "{message}");
        }
    }
    assert_eq!(ws.count("execute", "a"), 0, "nothing ran without a database to record in");
    assert_eq!(std::fs::read(&garbage).unwrap(), vec![0x5a; 8192], "the file was left alone");
}

#[test]
fn a_read_only_database_location_is_a_clear_error() {
    let ws = Workspace::new();
    ws.flow("one", &[("a", json!({}))]);
    let locked = ws.path("locked");
    std::fs::create_dir(&locked).unwrap();
    let mut permissions = std::fs::metadata(&locked).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o555);
    std::fs::set_permissions(&locked, permissions).unwrap();
    // A privileged user writes through permission bits; /proc refuses everyone.
    let writable = std::fs::write(locked.join("probe"), "").is_ok();
    let db = if writable { PathBuf::from("/proc/flowhost/runs.db") } else { locked.join("runs.db") };

    let output = ws.flowhost(&["run", "flow.toml", "--db", db.to_str().unwrap()]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(66), "{message}");
    assert!(message.contains(&format!("cannot open run database {}", db.display())), "{message}");
    assert!(message.contains("--no-db"), "says how to go on: {message}");
    assert_eq!(ws.count("execute", "a"), 0);

    let in_memory = ws.flowhost(&["run", "flow.toml", "--no-db"]);
    assert!(in_memory.status.success(), "{}", stderr(&in_memory));
}

fn trivial_flow(tasks: usize) -> Flow {
    let mut flow = Flow::linear("trivial");
    for step in 0..tasks {
        let from = if step == 0 { "value".to_owned() } else { format!("out{}", step - 1) };
        flow = flow.add(
            TaskSpec::new(format!("step{step}"), plugin("probe"))
                .rebind("value", from)
                .provides([format!("out{step}")]),
        );
    }
    flow
}

fn assert_every_task_recorded_once(db: &dyn RunDb, ids: &[String], tasks: usize) {
    let listed = db.list(&RunFilter::default()).unwrap();
    assert_eq!(listed.len(), ids.len(), "every run recorded");
    for id in ids {
        let run = db.get(id).unwrap().unwrap_or_else(|| panic!("run {id} recorded"));
        assert_eq!(run.summary.state, FlowState::Success, "run {id}");
        assert_eq!(run.tasks.len(), tasks);
        for task in &run.tasks {
            assert_eq!(task.executions, 1, "run {id} task {}", task.name);
            let states: Vec<(TaskState, TaskState)> = task.history.iter().map(|c| (c.from, c.to)).collect();
            assert_eq!(states, [(TaskState::Pending, TaskState::Running), (TaskState::Running, TaskState::Success)]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_runs_in_one_process_are_all_recorded() {
    const RUNS: usize = 200;
    const TASKS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<dyn RunDb> = Arc::new(SqliteRunDb::open(&dir.path().join("runs.db"), true, Sync::Normal).unwrap());
    let engine = Engine::new().unwrap();
    let flow = trivial_flow(TASKS);
    let handles: Vec<_> = (0..RUNS)
        .map(|n| {
            let (engine, flow, db) = (engine.clone(), flow.clone(), db.clone());
            tokio::spawn(async move {
                let store: Store = [("value".to_owned(), json!(n))].into_iter().collect();
                let mut loaded = engine.load(&flow, store).await.unwrap();
                runs::record(&mut loaded, db, None).unwrap();
                let report = loaded.run().await;
                assert_eq!(report.state, FlowState::Success);
                report.run_id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for handle in handles {
        ids.push(handle.await.unwrap());
    }
    assert_every_task_recorded_once(db.as_ref(), &ids, TASKS);
}

#[test]
fn processes_sharing_one_database_do_not_lose_records() {
    const PROCESSES: usize = 6;
    let ws = Workspace::new();
    ws.flow("shared", &[("a", json!({})), ("b", json!({})), ("c", json!({}))]);
    let db = ws.db();
    let children: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            flowhost(ws.dir.path(), &["run", "flow.toml", "--json", "-q", "--db", db.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(!stderr(&output).contains("locked"), "{}", stderr(&output));
        ids.push(stdout_json(&output)["run_id"].as_str().unwrap().to_owned());
    }
    let db = SqliteRunDb::open(&db, false, Sync::Normal).unwrap();
    assert_every_task_recorded_once(&db, &ids, 3);
    assert_eq!(ws.count("execute", "a"), PROCESSES);
}

#[test]
fn processes_creating_one_fresh_database_together_all_start() {
    const PROCESSES: usize = 16;
    const ROUNDS: usize = 12;
    let ws = Workspace::new();
    ws.flow("fresh", &[("a", json!({}))]);
    for round in 0..ROUNDS {
        let db = ws.path(&format!("round{round}/runs.db"));
        let children: Vec<Child> = (0..PROCESSES)
            .map(|_| {
                flowhost(ws.dir.path(), &["run", "flow.toml", "-q", "--db", db.to_str().unwrap()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "round {round}: {}", stderr(&output));
        }
        let db = SqliteRunDb::open(&db, false, Sync::Normal).unwrap();
        assert_eq!(db.list(&RunFilter::default()).unwrap().len(), PROCESSES, "round {round}: every run recorded");
    }
}

/// Per-task cost of recording: `cargo test --release -p flowhost --test durable -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test: run explicitly"]
async fn measure_durable_vs_in_memory_per_task() {
    const TASKS: usize = 50;
    const ROUNDS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new().unwrap();
    let flow = trivial_flow(TASKS);
    let store: Store = [("value".to_owned(), json!(0))].into_iter().collect();
    for sync in [Sync::Normal, Sync::Full] {
        let db: Arc<dyn RunDb> = Arc::new(SqliteRunDb::open(&dir.path().join(format!("{sync:?}.db")), true, sync).unwrap());
        let (mut memory, mut durable) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS + 2 {
            let loaded = engine.load(&flow, store.clone()).await.unwrap();
            let started = Instant::now();
            loaded.run().await;
            let in_memory = started.elapsed();
            let mut loaded = engine.load(&flow, store.clone()).await.unwrap();
            let started = Instant::now();
            runs::record(&mut loaded, db.clone(), None).unwrap();
            loaded.run().await;
            if round >= 2 {
                memory.push(in_memory.as_secs_f64() * 1e6 / TASKS as f64);
                durable.push(started.elapsed().as_secs_f64() * 1e6 / TASKS as f64);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (m, d) = (median(&mut memory), median(&mut durable));
        println!("synchronous={sync:?}: in-memory {m:.1} µs/task, durable {d:.1} µs/task, ratio {:.2}", d / m);
        let id = "commit-cost".to_owned();
        let new = runs::NewRun {
            id: id.clone(),
            flow: "commits".into(),
            origin: runs::Origin { flow_path: None, flow_hash: None, plugins: Vec::new() },
            initial_store: Store::new(),
            tasks: vec!["t".into()],
        };
        db.create(&new).unwrap();
        let started = Instant::now();
        for n in 0..2000 {
            let (from, to) = if n % 2 == 0 { (TaskState::Pending, TaskState::Running) } else { (TaskState::Running, TaskState::Pending) };
            let transition = flowhost::Transition::Task {
                task: "t".into(), index: 0, from, to, duration: Duration::ZERO,
                result: None, error: None, args: Some("{}".into()), outcome: None,
            };
            db.record(&flowhost::Event { run_id: id.clone(), flow: "commits".into(), at: std::time::SystemTime::now(), transition }).unwrap();
        }
        println!("synchronous={sync:?}: {:.1} µs per recorded transition", started.elapsed().as_secs_f64() * 1e6 / 2000.0);
    }
}
