//! Where the test plugins and examples are, and small helpers the integration tests share.

use std::ffi::OsStr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use std::process::Child;
use std::time::{Duration, Instant};

use flowhost::runs::{Durability, RunDb, RunFilter, RunSummary, SqliteRunDb};
use flowhost::{Access, Event, Listener, Store, TaskSpec, TaskState, Transition};
use serde_json::{Value, json};

pub mod cdp;
mod postgres;
pub mod serving;
pub use postgres::Postgres;

/// The compiled component `name` (e.g. `"probe"`, `"quota_reserve"`), built by this crate's
/// build script.
pub fn plugin(name: &str) -> PathBuf {
    let path = Path::new(env!("FLOWHOST_TEST_PLUGINS")).join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "test plugin {} was not built",
        path.display()
    );
    path
}

/// The `flowhost` binary cargo built beside the running test (`target/<profile>/flowhost`).
pub fn flowhost_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join(format!("flowhost{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

/// The `flowhost` command as a user would type it in a clean shell: none of flowhost's own
/// environment variables set (but the test suite's shared plugin cache), standard input
/// closed, a home directory of its own (so the default run database, in the user data
/// directory, is never the real user's) and — unless [`Flowhost::dir`] says otherwise — a
/// fresh empty working directory of its own, so a test never writes into the source tree.
/// Derefs to the [`Command`] for anything else (pipes, `spawn`).
pub struct Flowhost {
    command: Command,
    /// The default working directory, removed when the command is dropped.
    _scratch: Option<tempfile::TempDir>,
    /// The default home directory, removed when the command is dropped.
    _home: Option<tempfile::TempDir>,
}

/// `flowhost ARGS…`, ready to run.
pub fn flowhost<I, S>(args: I) -> Flowhost
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let home = tempfile::tempdir().expect("a home directory");
    let mut command = Command::new(flowhost_bin());
    command
        .args(args)
        .current_dir(scratch.path())
        .stdin(Stdio::null());
    for var in [
        "FLOWHOST_LOG",
        "FLOWHOST_DB",
        "FLOWHOST_LEASE_TTL",
        "NO_COLOR",
    ] {
        command.env_remove(var);
    }
    let mut flowhost = Flowhost {
        command,
        _scratch: Some(scratch),
        _home: None,
    };
    flowhost = flowhost.home(home.path());
    flowhost._home = Some(home);
    flowhost
}

impl Flowhost {
    /// Uses `home` as the home directory (`HOME`, and `XDG_DATA_HOME` below it): where the
    /// default run database goes. Commands given the same home share it.
    pub fn home(mut self, home: &Path) -> Self {
        self.command
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join(".local/share"));
        self._home = None;
        self
    }

    /// The default run database of this command's home.
    pub fn default_db(&self) -> PathBuf {
        let data = self
            .command
            .get_envs()
            .find(|(name, _)| *name == "XDG_DATA_HOME")
            .and_then(|(_, value)| value);
        PathBuf::from(data.expect("XDG_DATA_HOME is set")).join("flowhost/runs.db")
    }

    /// Runs in `dir` instead of a scratch directory.
    pub fn dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self._scratch = None;
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(name, value);
        self
    }

    /// Runs to the end and returns what it printed.
    pub fn run(mut self) -> Output {
        self.command.output().expect("run flowhost")
    }
}

impl Deref for Flowhost {
    type Target = Command;
    fn deref(&self) -> &Command {
        &self.command
    }
}

impl DerefMut for Flowhost {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.command
    }
}

/// What a finished `flowhost` printed on stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What a finished `flowhost` printed on stdout, parsed as JSON (panics with both streams
/// when it is not).
pub fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            stderr(output)
        )
    })
}

/// The repository root, for reaching `examples/`.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("FLOWHOST_REPO_ROOT"))
}

/// Reads every file below `dir` into (relative path, bytes), sorted: a snapshot to compare
/// a directory before and after a run.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files);
    files.sort();
    files
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path.strip_prefix(root).expect("below root").to_path_buf();
            files.push((rel, std::fs::read(&path).expect("read file")));
        }
    }
}

/// Parses JSON lines (e.g. a probe's journal) into values.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("journal line is JSON"))
        .collect()
}

/// The kitchen-sink `stamp` task built in `language` (`rust`, `python`, `js`, `c`). The Rust
/// one is built with the other test plugins; the rest by `plugins/build-polyglot.sh`, which
/// CI runs before the tests.
pub fn polyglot(language: &str) -> PathBuf {
    if language == "rust" {
        return plugin("stamp");
    }
    let path = repo_root()
        .join("plugins")
        .join(language)
        .join("stamp.wasm");
    assert!(
        path.is_file(),
        "{} is missing: build the polyglot plugins first with `plugins/build-polyglot.sh`",
        path.display()
    );
    path
}

/// A `probe` entry labelled `name` that journals every call into `journal` (granted
/// read-write as `/journal`), its result stored under `<name>_out`.
pub fn journaled_probe(name: &str, journal: &Path, mut config: Value) -> TaskSpec {
    config["label"] = json!(name);
    config["journal"] = json!(true);
    TaskSpec::new(name, plugin("probe"))
        .provides([format!("{name}_out")])
        .config(config)
        .grant_dir(journal, "/journal", Access::ReadWrite)
}

/// An initial store from name/value pairs.
pub fn store(pairs: &[(&str, Value)]) -> Store {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A listener that keeps every event, for asserting transition order.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Listener for Recorder {
    fn on_event(&self, event: &Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0
            .lock()
            .expect("recorder poisoned")
            .push(event.clone());
        Ok(())
    }
}

impl Recorder {
    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("recorder poisoned").clone()
    }

    /// `(task, from, to)` of every task transition so far, in order.
    pub fn task_transitions(&self) -> Vec<(String, TaskState, TaskState)> {
        self.events()
            .iter()
            .filter_map(|e| match &e.transition {
                Transition::Task { task, from, to, .. } => Some((task.clone(), *from, *to)),
                Transition::Flow { .. } | Transition::Progress { .. } => None,
            })
            .collect()
    }
}

/// A folder holding a flow file of journaling probes, their journal, a signal folder and the
/// run database: the stage for a durable run that is interrupted, resumed or contested.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Workspace {
    /// An empty workspace with `journal/` and `signal/` folders.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("journal")).unwrap();
        std::fs::create_dir(dir.path().join("signal")).unwrap();
        Self { dir }
    }

    /// A path inside the workspace.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The run database's path (it exists once a run recorded into it).
    pub fn db(&self) -> PathBuf {
        self.path("runs.db")
    }

    /// Writes `flow.toml`: probes named by `tasks` (name, extra config), each journaling and
    /// passing the previous one's result on.
    pub fn flow(&self, name: &str, tasks: &[(&str, Value)]) -> PathBuf {
        let mut text = format!("name = \"{name}\"\n[store]\nseed = 1\n");
        let mut from = "seed".to_owned();
        for (task, extra) in tasks {
            let mut config = json!({ "label": task, "journal": true });
            config
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
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
    pub fn calls(&self) -> Vec<(String, String)> {
        json_lines(&self.path("journal/calls.jsonl"))
            .iter()
            .map(|c| {
                (
                    c["call"].as_str().unwrap().to_owned(),
                    c["label"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// How many `call`s (execute, revert) of `label` the journal shows.
    pub fn count(&self, call: &str, label: &str) -> usize {
        self.calls()
            .iter()
            .filter(|(c, l)| c == call && l == label)
            .count()
    }

    /// Waits until the journal shows `call` of `label` (the probe journals before blocking).
    pub fn wait_for(&self, child: &mut Child, call: &str, label: &str) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.count(call, label) == 0 {
            assert!(
                child.try_wait().unwrap().is_none(),
                "flowhost ended before `{label}` reached {call}"
            );
            assert!(Instant::now() < deadline, "`{label}` never reached {call}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets every probe waiting on `/signal/go` go on.
    pub fn release(&self) {
        std::fs::write(self.path("signal/go"), "go").unwrap();
    }

    /// Runs `flowhost ARGS…` in the workspace to the end.
    pub fn flowhost(&self, args: &[&str]) -> Output {
        self.command(args).run()
    }

    /// `flowhost ARGS…` in the workspace, to spawn or adjust; its home is the workspace's
    /// `home/`, shared by every command of the workspace.
    pub fn command(&self, args: &[&str]) -> Flowhost {
        flowhost(args).dir(self.dir.path()).home(&self.path("home"))
    }

    /// The workspace folder.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The one run recorded so far.
    pub fn only_run(&self) -> RunSummary {
        let output = self.flowhost(&[
            "runs",
            "list",
            "--json",
            "--db",
            self.db().to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let list: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        let db = SqliteRunDb::open(&self.db(), false, Durability::Normal).unwrap();
        db.list(&RunFilter::default()).unwrap().remove(0)
    }
}

fn toml_inline(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_inline(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        other => other.to_string(),
    }
}
