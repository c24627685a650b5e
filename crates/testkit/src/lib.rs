//! One set of helpers for every flowhost test: where the test plugins and examples are, the
//! `flowhost` binary run as a user would ([`flowhost`], named by [`binary_under_test!`]) and
//! what a test checks of its output, the probes' journal ([`Journal`]), a [`Workspace`] for
//! recorded runs, helpers for the library ([`journaled_probe`], [`Recorder`]…), a throwaway
//! PostgreSQL server ([`Postgres`]), a served `flowhost serve` ([`serving`]), headless
//! Chromium ([`cdp`]), the run database contract's backends ([`rundb`]) and an OTLP/HTTP
//! trace receiver ([`otlp`]).

use std::path::{Path, PathBuf};

pub mod cdp;
mod command;
mod journal;
mod library;
pub mod net;
pub mod otlp;
mod postgres;
pub mod rundb;
pub mod serving;
mod workspace;

pub use command::{
    Flowhost, assert_contains, assert_exit, assert_starts_with, exit_json, flowhost, flowhost_bin,
    is_root, kill, line_with, signal, stderr, stdout, stdout_json, stdout_json_lines, stop,
    use_binary, wait_until,
};
pub use journal::{Journal, call};
pub use library::{
    Recorder, assert_middle_revert_failed, backoffs, document_states, failed_attempt,
    journaled_probe, relay, report_states, resume_from, run_recorded, seeded, shared_engine,
    stopped_running, store,
};
pub use postgres::{Postgres, SHORT_LEASE};
pub use workspace::{Probe, Workspace};

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

/// The repository root, for reaching `examples/`.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("FLOWHOST_REPO_ROOT"))
}

/// The kitchen-sink `stamp` task built in `language` (`rust`, `python`, `js`, `c`, `go`,
/// `cpp`). The Rust
/// one is built with the other test plugins; the rest by `plugins/build-polyglot.sh`, which
/// CI runs before the tests.
pub fn polyglot(language: &str) -> PathBuf {
    if language == "rust" {
        return plugin("stamp");
    }
    polyglot_built(&format!("{language}/stamp.wasm"))
}

/// A component that `plugins/build-polyglot.sh` builds below `plugins/` with a language's own
/// tools (e.g. `python/fetch.wasm`, `volume-service/js/entry_create.wasm`); CI runs it
/// before the tests.
pub fn polyglot_built(path: &str) -> PathBuf {
    let path = repo_root().join("plugins").join(path);
    assert!(
        path.is_file(),
        "{} is missing: build the polyglot plugins first with `plugins/build-polyglot.sh`",
        path.display()
    );
    path
}

/// Flow file `file` of `examples/<example>/`, its plugin paths pointing at the plugins the
/// tests built (and, for `examples/polyglot`, at the polyglot builds).
pub fn example_text(example: &str, file: &str) -> String {
    let path = repo_root().join("examples").join(example).join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let built = plugin("probe")
        .parent()
        .expect("plugin dir")
        .display()
        .to_string();
    let mut text = text.replace("../../plugins/target/wasm32-wasip2/release", &built);
    for language in ["python", "js", "c", "go", "cpp"] {
        let stamp = format!("../../plugins/{language}/stamp.wasm");
        if text.contains(&stamp) {
            text = text.replace(&stamp, &polyglot(language).display().to_string());
        }
    }
    text
}

/// A copy of flow file `file` of `examples/<example>/` ([`example_text`]) in a scratch folder
/// with an empty `state/`: the folder, kept while the test holds it, and the flow file.
pub fn example(example: &str, file: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = dir.path().join(file);
    std::fs::write(&flow, example_text(example, file)).expect("write flow");
    std::fs::create_dir(dir.path().join("state")).expect("state dir");
    (dir, flow)
}

/// Writes `text` as file `name` in `dir`, every `PROBE` in it replaced by the `probe`
/// plugin's path: a flow file of probes written out in full.
pub fn probe_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        text.replace("PROBE", &plugin("probe").display().to_string()),
    )
    .unwrap();
    path
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

/// Reads a JSON file (a plugin's state file, a ledger), naming the file when it cannot.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()))
}

/// Parses JSON lines (e.g. a probe's journal) into values; a missing file has none.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("journal line is JSON"))
        .collect()
}
