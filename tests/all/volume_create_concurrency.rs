//! The volume-create example under concurrency, driven through the `flowhost` binary as an
//! operator would: sixteen requests at once (`run --batch --concurrency 16`) against one
//! state directory whose quota holds ten volumes. The tasks change the quota ledger only
//! under its lock (`plugins/volume-create/cinder-state/src/lock.rs`), so exactly ten runs
//! succeed, the other six are refused by `quota_reserve`, and the ledger agrees with the
//! volume records left behind. Without the lock, concurrent read-modify-writes of
//! `state/quota.json` lost reservations (`unknown-reservation` at `quota_commit`) and left
//! half-written ledgers.
//!
//! Needs the plugins built: `cd plugins && cargo build --release --locked`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::kit::{assert_exit, example, flowhost, read_json, stderr, stdout_json_lines};

const RUNS: usize = 16;
/// `volumes = 10` in `quota_reserve`'s config in `examples/volume-create/flow.toml`.
const QUOTA: usize = 10;

/// The code of a run line's error: `"code: message"` (or an object with a `code`).
fn error_code(report: &Value) -> Option<&str> {
    match &report["error"] {
        Value::String(text) => text.split(": ").next(),
        error => error["code"].as_str(),
    }
}

/// The ids of the `<id>.json` files in `dir` (none if it does not exist).
fn ids_in(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| {
            let name = e.expect("directory entry").file_name();
            let name = name.to_string_lossy();
            name.strip_suffix(".json")
                .unwrap_or_else(|| panic!("unexpected file {name} in {}", dir.display()))
                .to_owned()
        })
        .collect()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path, prefix: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read state dir") {
        let entry = entry.expect("directory entry");
        let rel = prefix.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            files_under(&entry.path(), &rel, out);
        } else {
            out.push(rel);
        }
    }
}

#[test]
fn sixteen_creates_at_once_take_exactly_the_ten_volumes_of_the_quota() {
    // A copy of the example with an empty state/ and its plugin paths at the built plugins.
    let (dir, flow) = example("volume-create", "flow.toml");
    let state = dir.path().join("state");
    let batch = dir.path().join("in.jsonl");
    let lines: String = (1..=RUNS)
        .map(|i| format!("{{\"display_name\": \"vol-{i}\"}}\n"))
        .collect();
    std::fs::write(&batch, lines).expect("write the batch file");

    let concurrency = RUNS.to_string();
    let mut command = flowhost(["-q", "run"]).dir(dir.path()).home(dir.path());
    command
        .arg(&flow)
        .arg("--batch")
        .arg(&batch)
        .args(["--concurrency", &concurrency, "--db"])
        .arg(dir.path().join("runs.db"));
    let out = command.run();
    // Some runs are reverted, none fails.
    assert_exit(&out, 1);
    let stderr = stderr(&out);

    // One JSON line per run on stdout.
    let reports = stdout_json_lines(&out);
    assert_eq!(
        reports.len(),
        RUNS,
        "one report per line; stderr:\n{stderr}"
    );
    let succeeded: Vec<&Value> = reports.iter().filter(|r| r["state"] == "SUCCESS").collect();
    let refused: Vec<&Value> = reports
        .iter()
        .filter(|r| {
            r["state"] == "REVERTED"
                && r["failed_task"] == "quota_reserve"
                && error_code(r) == Some("over-quota")
        })
        .collect();
    assert_eq!(
        (succeeded.len(), refused.len()),
        (QUOTA, RUNS - QUOTA),
        "exactly the quota's volumes are made, every other request is refused at \
         quota_reserve; reports:\n{reports:#?}"
    );

    // The ledger is whole and agrees with what the successful runs left.
    let ledger = read_json(&state.join("quota.json"));
    assert_eq!(ledger["reserved"], serde_json::json!({}), "nothing pending");
    let committed: BTreeSet<String> = ledger["committed"]
        .as_object()
        .expect("committed reservations")
        .keys()
        .cloned()
        .collect();
    let reservations: BTreeSet<String> = succeeded
        .iter()
        .map(|r| {
            r["store"]["reservations"]["id"]
                .as_str()
                .expect("reservation id")
                .to_owned()
        })
        .collect();
    assert_eq!(
        committed, reservations,
        "every committed reservation is a successful run's"
    );
    let volume_ids: BTreeSet<String> = succeeded
        .iter()
        .map(|r| {
            r["store"]["volume_id"]
                .as_str()
                .expect("volume id")
                .to_owned()
        })
        .collect();
    assert_eq!(volume_ids.len(), QUOTA);
    assert_eq!(
        ids_in(&state.join("volumes")),
        volume_ids,
        "one record per successful run"
    );
    assert_eq!(
        ids_in(&state.join("scheduler")),
        volume_ids,
        "one request per volume"
    );
    assert_eq!(ledger["in_use"]["volumes"], QUOTA);
    let sizes: u64 = volume_ids
        .iter()
        .map(|id| {
            read_json(&state.join(format!("volumes/{id}.json")))["size"]
                .as_u64()
                .expect("size")
        })
        .sum();
    let committed_gigabytes: u64 = ledger["committed"]
        .as_object()
        .unwrap()
        .values()
        .map(|u| u["gigabytes"].as_u64().expect("gigabytes"))
        .sum();
    assert_eq!(ledger["in_use"]["gigabytes"], sizes);
    assert_eq!(committed_gigabytes, sizes);

    // No lock, break marker or temporary file is left behind.
    let mut left = Vec::new();
    files_under(&state, Path::new(""), &mut left);
    left.retain(|p| {
        p != Path::new("quota.json") && !p.starts_with("volumes") && !p.starts_with("scheduler")
    });
    assert!(left.is_empty(), "stray files in state/: {left:?}");
}
