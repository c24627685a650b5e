//! The volume-service example under concurrency, as its README runs it:
//! `examples/volume-service/run.sh --many 64` starts the volume API (`service.py`, SQLite,
//! quota of 10 volumes) on a free loopback port and sends 64 volume-create requests through
//! one `flowhost run --batch --concurrency 64`. The quota is reserved, committed and rolled
//! back in the service's transactions, so exactly ten runs succeed, the other 54 are
//! REVERTED by `quota_reserve` (`over-quota`), and the service's ledger agrees with its
//! volume records, its scheduler queue and the runs' results. The API token is a secret of
//! the flow: it is in no file the runs leave behind.
//!
//! Needs the Rust plugins (built with the tests) and the JavaScript tasks
//! (`plugins/volume-service/js/build.sh`, run by `plugins/build-polyglot.sh`).

use std::process::Command;

use serde_json::Value;

use crate::kit::{flowhost_bin, plugin, polyglot_built, repo_root};

const RUNS: u64 = 64;
/// `--volumes 10`, the quota `run.sh` starts the service with.
const QUOTA: u64 = 10;
const TOKEN: &str = "volume-api-token-for-the-test-0123";

#[test]
fn sixty_four_volume_creates_at_once_end_ten_success_and_fifty_four_refused_by_quota_reserve() {
    // Everything run.sh would build, checked here so a missing build is named.
    for name in [
        "extract_volume_request",
        "service_quota_reserve",
        "service_quota_commit",
    ] {
        plugin(name);
    }
    for task in ["entry_create", "volume_cast"] {
        polyglot_built(&format!("volume-service/js/{task}.wasm"));
    }
    let scratch = tempfile::tempdir().unwrap();
    let output = Command::new(repo_root().join("examples/volume-service/run.sh"))
        .args(["--many", &RUNS.to_string()])
        .env("NO_BUILD", "1")
        .env("FLOWHOST", flowhost_bin())
        .env("VOLUME_API_TOKEN", TOKEN)
        .env("KEEP", "1")
        .env("TMPDIR", scratch.path())
        .env_remove("FLOWHOST_DB")
        .env_remove("FLOWHOST_LOG")
        .output()
        .expect("run examples/volume-service/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("run.sh printed no summary ({e}):\n{stdout}\n{stderr}"));
    let context = format!("{summary:#}\n{stderr}");
    assert_eq!(summary["runs"], RUNS, "{context}");
    assert_eq!(summary["success"], QUOTA, "{context}");
    assert_eq!(summary["refused_by_quota"], RUNS - QUOTA, "{context}");
    assert_eq!(
        summary["outcomes"],
        serde_json::json!({
            "SUCCESS": QUOTA,
            "REVERTED at quota_reserve: over-quota": RUNS - QUOTA,
        }),
        "no other outcome: {context}"
    );
    assert_eq!(summary["ledger_consistent"], true, "{context}");
    assert_eq!(
        summary["ledger_problems"],
        serde_json::json!([]),
        "{context}"
    );
    assert_eq!(summary["quota"]["volumes"]["in_use"], QUOTA, "{context}");
    assert_eq!(summary["reservations"]["reserved"], 0, "{context}");
    assert_eq!(summary["volume_records"], QUOTA, "{context}");
    assert_eq!(summary["scheduler_requests"], QUOTA, "{context}");
    assert_eq!(
        summary["records_match_runs"], true,
        "the service's volumes, queue and committed reservations are the successful runs': {context}"
    );
    assert_eq!(summary["ok"], true, "{context}");
    assert!(output.status.success(), "run.sh exits 0: {context}");

    // KEEP=1 kept the scratch folder: the runs' database and output never hold the token.
    let kept: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("runs.db").exists())
        .collect();
    assert_eq!(kept.len(), 1, "one kept folder: {stderr}");
    let mut scanned = 0;
    for file in std::fs::read_dir(kept[0].path()).unwrap().flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        if name.starts_with("runs.db") || name == "out.jsonl" || name == "err.log" {
            let bytes = std::fs::read(file.path()).unwrap();
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "{name} holds the API token"
            );
            scanned += 1;
        }
    }
    assert!(
        scanned >= 3,
        "the database and the batch's output were read"
    );
}
