//! A folder holding flow files of journaling probes, their journal, a signal folder and the
//! run database: the stage for a run that is recorded, interrupted, resumed or contested.

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::Duration;

use flowhost::runs::{Durability, RunDb, RunFilter, RunRecord, RunSummary, SqliteRunDb};
use serde_json::{Value, json};

use crate::{Flowhost, Journal, assert_exit, flowhost, plugin, stdout_json};

/// A workspace: `journal/` (where its probes journal), `signal/` (what they wait on), `home/`
/// (the home of every command run in it) and `runs.db`.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// One journaling `probe` entry of a flow file written by [`Workspace::write_flow`]: named
/// and labelled `name`, its result stored under `<name>_out`, granted the workspace's
/// `journal/` (read-write) and `signal/` (read-only).
#[derive(Debug, Clone)]
pub struct Probe {
    name: String,
    plugin: Option<String>,
    config: Value,
    reads: Option<String>,
    toml: String,
}

impl Probe {
    /// A probe echoing the previous probe's result (the first one: the store's `seed`).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            plugin: None,
            config: json!({}),
            reads: None,
            toml: String::new(),
        }
    }

    /// What the probe is told to do (`{"fail": "boom"}`, `{"mode": "wait_file", …}`), beside
    /// its label and `journal = true`.
    pub fn config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    /// Reads its `value` from store key `key` instead of the previous probe's result.
    pub fn reads(mut self, key: &str) -> Self {
        self.reads = Some(key.to_owned());
        self
    }

    /// Names the plugin file as `path` (relative to the flow file) instead of the probe's
    /// absolute path.
    pub fn plugin(mut self, path: &str) -> Self {
        self.plugin = Some(path.to_owned());
        self
    }

    /// More keys of the entry, as TOML lines (`retry = { attempts = 3 }`, `after = ["a"]`).
    pub fn toml(mut self, lines: &str) -> Self {
        self.toml = lines.to_owned();
        self
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

    /// The workspace folder.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The run database's path (it exists once a run recorded into it).
    pub fn db(&self) -> PathBuf {
        self.path("runs.db")
    }

    /// The run database's path, as an argument.
    pub fn db_arg(&self) -> String {
        self.db().to_str().expect("a UTF-8 path").to_owned()
    }

    /// Writes `flow.toml`: flow `name` with top-level keys `head` (TOML lines, e.g.
    /// `pattern = "graph"`), the store `seed = 1`, and `probes` in order.
    pub fn write_flow(&self, name: &str, head: &str, probes: &[Probe]) -> PathBuf {
        let mut text = format!("name = \"{name}\"\n{head}\n[store]\nseed = 1\n");
        let mut previous = "seed".to_owned();
        for probe in probes {
            let mut config = json!({ "label": probe.name, "journal": true });
            config
                .as_object_mut()
                .unwrap()
                .extend(probe.config.as_object().expect("a config object").clone());
            let reads = probe.reads.as_deref().unwrap_or(&previous);
            text += &format!(
                "\n[[task]]\nname = \"{task}\"\nplugin = {plugin:?}\nrebind = {{ value = \"{reads}\" }}\nprovides = [\"{task}_out\"]\nconfig = {config}\ndirs = [{{ host = \"journal\", guest = \"/journal\", mode = \"rw\" }}, {{ host = \"signal\", guest = \"/signal\" }}]\n{extra}",
                task = probe.name,
                plugin = probe
                    .plugin
                    .as_ref()
                    .map_or_else(|| plugin("probe"), PathBuf::from),
                config = toml_inline(&config),
                extra = probe.toml,
            );
            previous = format!("{}_out", probe.name);
        }
        let path = self.path("flow.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes `flow.toml`: probes named by `tasks` (name, extra config), each journaling and
    /// passing the previous one's result on.
    pub fn flow(&self, name: &str, tasks: &[(&str, Value)]) -> PathBuf {
        let probes: Vec<Probe> = tasks
            .iter()
            .map(|(task, config)| Probe::new(task).config(config.clone()))
            .collect();
        self.write_flow(name, "", &probes)
    }

    /// Writes `flow.toml`: probes `a`, `b` and `c`, where `b` waits for `/signal/go`
    /// ([`Self::release`]) — a run that stops in its middle until the test lets it go on.
    pub fn waiting_flow(&self, name: &str) -> PathBuf {
        self.flow(
            name,
            &[
                ("a", json!({})),
                ("b", json!({ "mode": "wait_file", "path": "/signal/go" })),
                ("c", json!({})),
            ],
        )
    }

    /// The probes' journal.
    pub fn journal(&self) -> Journal {
        Journal::at(&self.path("journal"))
    }

    /// Every probe call so far: (call, label).
    pub fn calls(&self) -> Vec<(String, String)> {
        self.journal().calls()
    }

    /// How many `call`s (execute, revert) of `label` the journal shows.
    pub fn count(&self, call: &str, label: &str) -> usize {
        self.journal().count(call, label)
    }

    /// How many times the journal shows each of `calls` — `(call, label)`, e.g. `("revert",
    /// "a")` — in order.
    pub fn counts(&self, calls: &[(&str, &str)]) -> Vec<usize> {
        let journal = self.journal();
        calls.iter().map(|(c, l)| journal.count(c, l)).collect()
    }

    /// How often each of `labels` was executed, in order.
    pub fn executions(&self, labels: &[&str]) -> Vec<usize> {
        let journal = self.journal();
        labels.iter().map(|l| journal.count("execute", l)).collect()
    }

    /// Waits until the journal shows `call` of `label` (the probe journals before blocking).
    #[track_caller]
    pub fn wait_for(&self, child: &mut Child, call: &str, label: &str) {
        self.journal().wait_for(child, call, label);
    }

    /// Lets every probe waiting on `/signal/go` go on.
    pub fn release(&self) {
        std::fs::write(self.path("signal/go"), "go").unwrap();
    }

    /// `flowhost ARGS…` in the workspace, to spawn or adjust; its home is the workspace's
    /// `home/`, shared by every command of the workspace.
    pub fn command(&self, args: &[&str]) -> Flowhost {
        flowhost(args).dir(self.dir.path()).home(&self.path("home"))
    }

    /// Runs `flowhost ARGS…` in the workspace to the end.
    pub fn flowhost(&self, args: &[&str]) -> Output {
        self.command(args).run()
    }

    /// Runs `flowhost ARGS… --db DB` in the workspace to the end: on run database `db` (a
    /// SQLite path or a PostgreSQL URL).
    pub fn flowhost_on(&self, db: &str, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--db", db]);
        self.flowhost(&all)
    }

    /// `flowhost ARGS… --db <the workspace's database>` in the workspace, to spawn or adjust.
    pub fn recording(&self, args: &[&str]) -> Flowhost {
        let db = self.db_arg();
        let mut all = args.to_vec();
        all.extend(["--db", &db]);
        self.command(&all)
    }

    /// Runs `flowhost runs ARGS… --db <the workspace's database>` to the end.
    pub fn runs(&self, args: &[&str]) -> Output {
        let mut all = vec!["runs"];
        all.extend_from_slice(args);
        self.flowhost_on(&self.db_arg(), &all)
    }

    /// `runs show ID --json` on the workspace's database: the run's document.
    #[track_caller]
    pub fn show(&self, id: &str) -> Value {
        let show = self.runs(&["show", id, "--json"]);
        assert_exit(&show, 0);
        stdout_json(&show)
    }

    /// Starts `flowhost run flow.toml` recording into the workspace's database, kills it
    /// (SIGKILL) once `label` reached `call`, and returns the interrupted run.
    #[track_caller]
    pub fn run_and_kill(&self, call: &str, label: &str) -> RunSummary {
        let mut child = self.recording(&["run", "flow.toml"]).start();
        self.wait_for(&mut child, call, label);
        crate::kill(child);
        self.only_run()
    }

    /// The one run recorded so far.
    #[track_caller]
    pub fn only_run(&self) -> RunSummary {
        let output = self.runs(&["list", "--json"]);
        assert_exit(&output, 0);
        let list: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        self.sqlite().list(&RunFilter::default()).unwrap().remove(0)
    }

    /// Releases the probes and resumes the workspace's one run (`runs resume ID --json`),
    /// which must end with exit 0: its report.
    #[track_caller]
    pub fn release_and_resume(&self) -> Value {
        self.release();
        let run = self.only_run();
        let resumed = self.runs(&["resume", &run.id, "--json"]);
        assert_exit(&resumed, 0);
        stdout_json(&resumed)
    }

    /// Run `id`'s record, read from the workspace's database.
    #[track_caller]
    pub fn record(&self, id: &str) -> RunRecord {
        self.sqlite()
            .get(id)
            .unwrap()
            .unwrap_or_else(|| panic!("no run {id} recorded"))
    }

    /// Polls the record of the first run `child` records until `done` finds what it waits
    /// for, failing the test naming `what` when `child` ends first or after five minutes.
    #[track_caller]
    pub fn wait_for_record<T>(
        &self,
        child: &mut Child,
        what: &str,
        mut done: impl FnMut(&RunRecord) -> Option<T>,
    ) -> T {
        let mut found = None;
        crate::wait_until(what, Duration::from_secs(300), || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "flowhost ended before {what}"
            );
            let record = SqliteRunDb::open(&self.db(), false, Durability::Normal)
                .ok()
                .and_then(|db| {
                    let run = db.list(&RunFilter::default()).ok()?.into_iter().next()?;
                    db.get(&run.id).ok().flatten()
                });
            found = record.as_ref().and_then(&mut done);
            found.is_some()
        });
        found.expect("found")
    }

    fn sqlite(&self) -> SqliteRunDb {
        SqliteRunDb::open(&self.db(), false, Durability::Normal).unwrap()
    }
}

/// `value` as TOML inline text (objects as inline tables, the rest as JSON reads in TOML).
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
