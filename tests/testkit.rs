//! Where the test plugins and examples are, and small helpers the integration tests share.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flowhost::{Access, Event, Listener, Store, TaskSpec, TaskState, Transition};
use serde_json::{Value, json};

/// The compiled component `name` (e.g. `"probe"`, `"quota_reserve"`), built by this crate's
/// build script.
pub fn plugin(name: &str) -> PathBuf {
    let path = Path::new(env!("FLOWHOST_TEST_PLUGINS")).join(format!("{name}.wasm"));
    assert!(path.is_file(), "test plugin {} was not built", path.display());
    path
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
    let Ok(entries) = std::fs::read_dir(dir) else { return };
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
    let path = repo_root().join("plugins").join(language).join("stamp.wasm");
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
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// A listener that keeps every event, for asserting transition order.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Listener for Recorder {
    fn on_event(&self, event: &Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().expect("recorder poisoned").push(event.clone());
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
                Transition::Flow { .. } => None,
            })
            .collect()
    }
}
