//! What the `probe` test plugin journals: with `journal = true` in its config, every call
//! appends one JSON line to `/journal/calls.jsonl` — the call (`execute`, `revert`), the
//! probe's label, its arguments, outcome and the flow's failures — before it does anything
//! else, so a test sees what ran, in order, even of a run it killed.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

use crate::json_lines;

/// A folder probes journal into: one of its own ([`Journal::new`]) or a workspace's
/// ([`Journal::at`]).
pub struct Journal {
    dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

/// `(call, label)` of one journaled call, as [`Journal::calls`] lists them.
pub fn call(kind: &str, label: &str) -> (String, String) {
    (kind.to_owned(), label.to_owned())
}

impl Journal {
    /// A fresh, empty journal folder, removed on drop: grant it to probes
    /// ([`crate::journaled_probe`]) as `/journal`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a journal folder");
        Self {
            dir: dir.path().to_path_buf(),
            _owned: Some(dir),
        }
    }

    /// The journal folder `dir` (a workspace's `journal/`, a flow file's folder).
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            _owned: None,
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A `probe` entry labelled `name` journaling here ([`crate::journaled_probe`]).
    pub fn probe(&self, name: &str, config: Value) -> flowhost::TaskSpec {
        crate::journaled_probe(name, &self.dir, config)
    }

    /// A `probe` entry labelled `name` journaling here, its `value` read from store key
    /// `key`.
    pub fn probe_reading(&self, name: &str, key: &str, config: Value) -> flowhost::TaskSpec {
        self.probe(name, config).rebind("value", key)
    }

    /// Every journaled call so far, in order, as the probe wrote it.
    pub fn entries(&self) -> Vec<Value> {
        json_lines(&self.dir.join("calls.jsonl"))
    }

    /// Every journaled `revert` so far, in order, as the probe wrote it.
    pub fn reverts(&self) -> Vec<Value> {
        self.entries()
            .into_iter()
            .filter(|c| c["call"] == "revert")
            .collect()
    }

    /// `(call, label)` of every journaled call so far, in order.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.entries()
            .iter()
            .map(|c| {
                call(
                    c["call"].as_str().expect("a journaled call"),
                    c["label"].as_str().expect("a journaled label"),
                )
            })
            .collect()
    }

    /// `call label` of every journaled call so far (`execute a`), in order.
    pub fn lines(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .map(|(call, label)| format!("{call} {label}"))
            .collect()
    }

    /// Just the calls (`execute`, `revert`) so far, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.calls().into_iter().map(|(call, _)| call).collect()
    }

    /// How many `call`s (execute, revert) of `label` the journal shows.
    pub fn count(&self, call: &str, label: &str) -> usize {
        self.calls()
            .iter()
            .filter(|(c, l)| c == call && l == label)
            .count()
    }

    /// The `value` argument of each `execute` of `label`, in order.
    pub fn values(&self, label: &str) -> Vec<Value> {
        self.entries()
            .into_iter()
            .filter(|c| c["call"] == "execute" && c["label"] == label)
            .map(|c| c["args"]["value"].clone())
            .collect()
    }

    /// Where the first `call` of `label` stands in the journal.
    #[track_caller]
    pub fn position(&self, call: &str, label: &str) -> usize {
        let calls = self.calls();
        calls
            .iter()
            .position(|(c, l)| c == call && l == label)
            .unwrap_or_else(|| panic!("no {call} of {label} in {calls:?}"))
    }

    /// Waits until the journal shows `call` of `label` (the probe journals before it blocks),
    /// failing the test when `child` ends first or after five minutes.
    #[track_caller]
    pub fn wait_for(&self, child: &mut Child, call: &str, label: &str) {
        crate::wait_until(
            &format!("`{label}` reached {call}"),
            Duration::from_secs(300),
            || {
                let reached = self.count(call, label) > 0;
                assert!(
                    reached || child.try_wait().unwrap().is_none(),
                    "flowhost ended before `{label}` reached {call}"
                );
                reached
            },
        );
    }
}
