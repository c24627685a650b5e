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
use std::process::{Command, Stdio};

use serde_json::Value;

const RUNS: usize = 16;
/// `volumes = 10` in `quota_reserve`'s config in `examples/volume-create/flow.toml`.
const QUOTA: usize = 10;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()))
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
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let plugins = root.join("plugins/target/wasm32-wasip2/release");
    assert!(
        plugins.join("quota_reserve.wasm").is_file(),
        "build the plugins first: cd plugins && cargo build --release --locked"
    );

    // A copy of the example with an empty state/ and its plugin paths at the built plugins.
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = dir.path().join("flow.toml");
    let text = std::fs::read_to_string(root.join("examples/volume-create/flow.toml"))
        .expect("read the example's flow.toml")
        .replace(
            "../../plugins/target/wasm32-wasip2/release",
            &plugins.display().to_string(),
        );
    std::fs::write(&flow, text).expect("write flow.toml");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let batch = dir.path().join("in.jsonl");
    let lines: String = (1..=RUNS)
        .map(|i| format!("{{\"display_name\": \"vol-{i}\"}}\n"))
        .collect();
    std::fs::write(&batch, lines).expect("write the batch file");

    let concurrency = RUNS.to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowhost"));
    command
        .args(["-q", "run"])
        .arg(&flow)
        .arg("--batch")
        .arg(&batch)
        .args(["--concurrency", &concurrency, "--db"])
        .arg(dir.path().join("runs.db"))
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join(".local/share"))
        .stdin(Stdio::null());
    for var in [
        "FLOWHOST_LOG",
        "FLOWHOST_DB",
        "FLOWHOST_LEASE_TTL",
        "NO_COLOR",
    ] {
        command.env_remove(var);
    }
    let out = command.output().expect("run flowhost");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "some runs are reverted, none fails; stderr:\n{stderr}"
    );

    // One JSON line per run on stdout.
    let reports: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
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
                && r["error"]["code"] == "over-quota"
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
