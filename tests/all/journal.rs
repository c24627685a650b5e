//! The journal fails closed: when the run database cannot record a transition — a full disk,
//! a lock that timed out — the run stops at once, nothing executes or reverts past what is
//! recorded, `flowhost` exits 75, and once the database works again `runs resume` finishes the
//! run as if nothing had happened, without executing a succeeded task twice.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flowhost::runs::{
    self, Durability, Executor, Lease, NewRun, Origin, Owner, PruneFilter, RunCount, RunDb,
    RunDbError, RunFilter, RunRecord, RunSummary, SqliteRunDb,
};
use flowhost::{Engine, Event, FlowSpec, RunReport, Store, TaskState};
use serde_json::json;

use crate::kit::{Workspace, assert_contains, assert_exit, stderr, stdout_json};

/// The SQLite run database with a disk that fills up: from the `k`-th write on (creating the
/// run, recording a transition, noting a resume), every write fails until [`Self::recover`].
struct FillingDisk {
    inner: SqliteRunDb,
    writes: AtomicUsize,
    fail_from: AtomicUsize,
}

impl FillingDisk {
    fn open(path: &Path, fail_from: usize) -> Self {
        let inner = SqliteRunDb::open(path, true, Durability::Normal).unwrap();
        Self {
            inner,
            writes: AtomicUsize::new(0),
            fail_from: AtomicUsize::new(fail_from),
        }
    }

    fn write(&self) -> Result<(), RunDbError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n < self.fail_from.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(RunDbError::Query {
            path: self.inner.path().to_path_buf(),
            what: "writing".into(),
            reason: "database or disk is full".into(),
        })
    }

    fn recover(&self) {
        self.fail_from.store(usize::MAX, Ordering::SeqCst);
    }
}

impl RunDb for FillingDisk {
    fn create(&self, run: &NewRun, owner: &Owner, ttl: Duration) -> Result<Lease, RunDbError> {
        self.write()?;
        self.inner.create(run, owner, ttl)
    }
    fn acquire(&self, run_id: &str, owner: &Owner, ttl: Duration) -> Result<Lease, RunDbError> {
        self.inner.acquire(run_id, owner, ttl)
    }
    fn renew(&self, lease: &Lease) -> Result<(), RunDbError> {
        self.inner.renew(lease)
    }
    fn release(&self, lease: &Lease) -> Result<(), RunDbError> {
        self.inner.release(lease)
    }
    fn record(&self, events: &[Event], lease: &Lease) -> Result<(), RunDbError> {
        self.write()?;
        self.inner.record(events, lease)
    }
    fn resumed(&self, lease: &Lease, origin: &Origin) -> Result<(), RunDbError> {
        self.write()?;
        self.inner.resumed(lease, origin)
    }
    fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, RunDbError> {
        self.inner.list(filter)
    }
    fn signal(
        &self,
        run_id: &str,
        name: &str,
        data: &serde_json::Value,
    ) -> Result<Option<flowhost::FlowState>, RunDbError> {
        self.inner.signal(run_id, name, data)
    }
    fn take_signal(
        &self,
        run_id: &str,
        task: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, RunDbError> {
        self.inner.take_signal(run_id, task, name)
    }
    fn read(&self, id: &str, max: Option<usize>) -> Result<Option<RunRecord>, RunDbError> {
        self.inner.read(id, max)
    }
    fn count(&self) -> Result<Vec<RunCount>, RunDbError> {
        self.inner.count()
    }
    fn prune(&self, filter: &PruneFilter) -> Result<usize, RunDbError> {
        self.inner.prune(filter)
    }
    fn request_suspend(&self, run_id: &str) -> Result<bool, RunDbError> {
        self.inner.request_suspend(run_id)
    }
    fn suspend_requested(&self, run_id: &str) -> Result<bool, RunDbError> {
        self.inner.suspend_requested(run_id)
    }
    fn link_restart(&self, lease: &Lease, from: &str) -> Result<(), RunDbError> {
        self.write()?;
        self.inner.link_restart(lease, from)
    }
    fn restart_links(&self, run_id: &str) -> Result<flowhost::runs::RestartLinks, RunDbError> {
        self.inner.restart_links(run_id)
    }
}

const LABELS: [&str; 3] = ["a", "b", "c"];

fn three_tasks(ws: &Workspace, c_fails: bool) -> PathBuf {
    let c = if c_fails {
        json!({ "fail": "boom" })
    } else {
        json!({})
    };
    ws.flow("three", &[("a", json!({})), ("b", json!({})), ("c", c)])
}

/// Records and runs the workspace's flow into a database failing from write `fail_from`.
async fn run_once(
    engine: &Engine,
    ws: &Workspace,
    flow: &Path,
    fail_from: usize,
) -> (Arc<FillingDisk>, Executor, Result<RunReport, String>) {
    let disk = Arc::new(FillingDisk::open(&ws.db(), fail_from));
    let executor = Executor::new(disk.clone());
    let spec = FlowSpec::from_file(flow).unwrap();
    let mut loaded = engine.load(&spec, Store::new()).await.unwrap();
    let outcome = match runs::record(&executor, &mut loaded, Some(flow), None) {
        Ok(()) => loaded.run().await.map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    (disk, executor, outcome)
}

/// For every k, a run whose k-th write fails stops there; then resumes to the same end.
async fn every_failed_write_stops_the_run_and_resume_finishes_it(c_fails: bool) {
    let engine = Engine::new().unwrap();
    let clean = Workspace::new();
    let flow = three_tasks(&clean, c_fails);
    let (disk, _, uninterrupted) = run_once(&engine, &clean, &flow, usize::MAX).await;
    let uninterrupted = uninterrupted.unwrap();
    let writes = disk.writes.load(Ordering::SeqCst);
    // Creating the run, then one commit per task and one at the end at least.
    assert!(
        writes >= 5,
        "a three-task run writes at least 5 times, wrote {writes}"
    );

    for k in 1..=writes {
        let ws = Workspace::new();
        let flow = three_tasks(&ws, c_fails);
        let (disk, executor, stopped) = run_once(&engine, &ws, &flow, k).await;
        let message = stopped.expect_err("a failed write stops the run");
        assert!(
            message.contains(&ws.db().display().to_string()),
            "k={k}: the error names the database: {message}"
        );
        assert!(
            message.contains("database or disk is full"),
            "k={k}: {message}"
        );
        let runs = disk.list(&RunFilter::default()).unwrap();
        if k == 1 {
            assert!(
                runs.is_empty() && ws.calls().is_empty(),
                "k=1: the run was never created, nothing ran"
            );
            continue;
        }
        let id = runs[0].id.clone();
        let at_stop = disk.get(&id).unwrap().unwrap();
        for (task, label) in at_stop.tasks.iter().zip(LABELS) {
            assert_eq!(
                ws.count("execute", label) as u32,
                task.executions,
                "k={k}: `{label}` executed only as recorded"
            );
            assert_eq!(
                ws.count("revert", label) as u32,
                task.reverts,
                "k={k}: `{label}` reverted only as recorded"
            );
        }
        let before = ws.calls();

        disk.recover();
        let resumed = runs::resume(&executor, &engine, &id, false)
            .await
            .unwrap_or_else(|e| panic!("k={k}: {e}"));
        assert_eq!(resumed.state, uninterrupted.state, "k={k}");
        assert_eq!(resumed.store, uninterrupted.store, "k={k}");
        for (task, label) in at_stop.tasks.iter().zip(LABELS) {
            if task.state == TaskState::Success {
                let again = ws.count("execute", label)
                    - before
                        .iter()
                        .filter(|(c, l)| c == "execute" && l == label)
                        .count();
                assert_eq!(
                    again, 0,
                    "k={k}: `{label}` succeeded before the failure and is not executed again"
                );
            }
        }
        let record = disk.get(&id).unwrap().unwrap();
        assert_eq!(
            record.summary.state, uninterrupted.state,
            "k={k}: the record ends as the run did"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_on_the_success_path_stops_the_run_and_resume_finishes_it() {
    every_failed_write_stops_the_run_and_resume_finishes_it(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_on_the_revert_path_stops_the_run_and_resume_finishes_it() {
    every_failed_write_stops_the_run_and_resume_finishes_it(true).await;
}

/// A small tmpfs for the run database, unmounted when dropped; `None` where this user may not
/// mount one.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: PathBuf) -> Option<Self> {
        std::fs::create_dir_all(&at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Self(at))
    }

    /// Fills the disk: writes until the file system says it is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_with_exit_75_and_resume_finishes_it_once_space_returns() {
    let ws = Workspace::new();
    let Some(disk) = SmallDisk::mount(ws.path("disk")) else {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the injected-failure tests cover the same path"
        );
        return;
    };
    ws.waiting_flow("disk");
    let db = ws.path("disk/runs.db");
    let db = db.to_str().unwrap();
    let mut run = ws.command(&["run", "flow.toml", "--db", db]).start_piped();
    ws.wait_for(&mut run, "execute", "b");
    let filler = disk.fill();
    ws.release();
    let stopped = run.wait_with_output().unwrap();
    assert_exit(&stopped, 75);
    let message = stderr(&stopped);
    assert!(
        message.contains(db) && message.contains("full"),
        "names the database and why: {message}"
    );
    // It says how to go on.
    assert_contains(&message, "flowhost runs resume");
    assert_eq!(
        ws.count("execute", "c"),
        0,
        "nothing ran past the failed write"
    );

    std::fs::remove_file(filler).unwrap();
    let listed = stdout_json(&ws.flowhost_on(db, &["runs", "list", "--json"]));
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        listed[0]["state"], "RUNNING",
        "the record stops where the run did"
    );
    let resumed = ws.flowhost_on(db, &["runs", "resume", &id]);
    assert_exit(&resumed, 0);
    assert_eq!(
        ws.count("execute", "a"),
        1,
        "a succeeded before the disk filled up"
    );
    assert_eq!(ws.count("execute", "c"), 1);
    let uninterrupted = ws.flowhost(&["run", "flow.toml", "--no-db"]);
    assert_eq!(stdout_json(&resumed), stdout_json(&uninterrupted));
    let record = stdout_json(&ws.flowhost_on(db, &["runs", "show", &id, "--json"]));
    assert_eq!(record["state"], "SUCCESS");
    assert_eq!(
        record["tasks"][1]["executions"], 2,
        "b was caught RUNNING and executed again"
    );
}
