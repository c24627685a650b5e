//! The compiled-component cache, as an operator meets it: `flowhost compile` fills it, later
//! commands load from it instead of compiling, a damaged entry is rebuilt rather than
//! trusted, processes racing on one cache all succeed, and `--no-cache` leaves it alone.

use std::path::{Path, PathBuf};
use std::process::Output;

use flowhost::{Engine, EngineConfig};

use crate::kit::{assert_contains, assert_exit, flowhost, plugin, stderr, stdout, stdout_json};

/// Runs `flowhost ARGS… --cache-dir CACHE` with debug logs (which say where compiled code
/// came from).
fn cached(args: &[&str], cache: &Path) -> Output {
    let mut command = flowhost(args);
    command.arg("--cache-dir").arg(cache);
    command.env("FLOWHOST_LOG", "flowhost=debug").run()
}

/// Compiles `plugin` into `cache` (`flowhost compile`), which must succeed.
fn compile(plugin: &str, cache: &Path) {
    assert_exit(&cached(&["compile", plugin], cache), 0);
}

/// Compiles the probe into the empty `cache`: its one entry, and what the entry holds.
fn probe_entry(cache: &Path) -> (PathBuf, Vec<u8>) {
    compile(&probe(), cache);
    let [entry] = entries(cache).try_into().expect("one entry");
    let bytes = std::fs::read(&entry).unwrap();
    (entry, bytes)
}

/// The cache's files, sorted.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(cache) {
        Ok(dir) => dir.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn probe() -> String {
    plugin("probe").display().to_string()
}

#[test]
fn compile_fills_the_cache_and_later_commands_load_from_it() {
    let cache = tempfile::tempdir().unwrap();
    let out = cached(
        &[
            "compile",
            &probe(),
            &plugin("quota_reserve").display().to_string(),
        ],
        cache.path(),
    );
    assert_exit(&out, 0);
    assert_contains(&stderr(&out), "stored compiled component in the cache");
    let filled = entries(cache.path());
    assert_eq!(filled.len(), 2, "one entry per plugin: {filled:?}");
    assert!(
        filled
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "cwasm"))
    );

    let out = cached(&["describe", &probe()], cache.path());
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("probe "));
    assert_contains(&stderr(&out), "loaded compiled component from the cache");
    assert!(
        !stderr(&out).contains("stored compiled component"),
        "nothing is compiled again"
    );
    assert_eq!(entries(cache.path()), filled);
}

#[test]
fn a_corrupt_or_truncated_entry_is_rebuilt_not_trusted() {
    let cache = tempfile::tempdir().unwrap();
    let (entry, good) = probe_entry(cache.path());

    // Bits flipped in the middle of the machine code.
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle..middle + 64]
        .iter_mut()
        .for_each(|b| *b ^= 0xa5);
    std::fs::write(&entry, &flipped).unwrap();
    let out = cached(&["describe", &probe()], cache.path());
    assert_exit(&out, 0);
    assert_contains(&stderr(&out), "integrity tag mismatch");
    assert_eq!(
        std::fs::read(&entry).unwrap().len(),
        good.len(),
        "the entry was rebuilt"
    );

    // Cut short, as by a full disk.
    std::fs::write(&entry, &good[..good.len() / 3]).unwrap();
    let out = cached(&["describe", &probe()], cache.path());
    assert_exit(&out, 0);
    assert_contains(&stderr(&out), "truncated");

    // Not a cache entry at all.
    std::fs::write(&entry, b"garbage").unwrap();
    let out = cached(&["describe", &probe()], cache.path());
    assert_exit(&out, 0);
    assert_contains(&stderr(&out), "not a flowhost cache entry");

    // After the rebuild the entry serves again.
    let out = cached(&["describe", &probe()], cache.path());
    assert_contains(&stderr(&out), "loaded compiled component from the cache");
    assert_eq!(entries(cache.path()).len(), 1);
}

#[test]
fn processes_racing_to_fill_one_cache_all_succeed_and_leave_one_whole_entry() {
    let cache = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            flowhost(["compile", &probe(), "--cache-dir"])
                .dir(cache.path())
                .arg(cache.path())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn flowhost")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 0);
    }
    let files = entries(cache.path());
    assert_eq!(files.len(), 1, "no temporary files left behind: {files:?}");
    let out = cached(&["describe", &probe()], cache.path());
    assert_contains(&stderr(&out), "loaded compiled component from the cache");
}

#[test]
fn no_cache_neither_reads_nor_writes_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let out = cached(&["describe", &probe(), "--no-cache"], cache.path());
    assert_exit(&out, 0);
    assert!(entries(cache.path()).is_empty());

    let (entry, _) = probe_entry(cache.path());
    std::fs::write(&entry, b"garbage").unwrap();
    let out = cached(&["describe", &probe(), "--no-cache"], cache.path());
    assert_exit(&out, 0);
    assert!(
        !stderr(&out).contains("cache entry"),
        "the cache is not even read: {}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&entry).unwrap(), b"garbage");

    let out = cached(&["compile", &probe(), "--no-cache"], cache.path());
    // Compile without a cache is a usage error.
    assert_exit(&out, 64);
    assert_contains(&stderr(&out), "--no-cache");
}

#[test]
fn the_cache_directory_comes_from_the_environment_when_no_flag_is_given() {
    let cache = tempfile::tempdir().unwrap();
    let out = flowhost(["compile", &probe()])
        .env("FLOWHOST_CACHE_DIR", cache.path())
        .run();
    assert_exit(&out, 0);
    assert_eq!(entries(cache.path()).len(), 1);
}

#[tokio::test]
async fn engines_configured_with_one_cache_share_compiled_plugins() {
    let cache = tempfile::tempdir().unwrap();
    let config = EngineConfig::default().cache_dir(cache.path());
    let first = Engine::with_config(&config).unwrap();
    assert_eq!(first.cache_dir(), Some(cache.path()));
    let info = first.plugin(&plugin("probe")).await.unwrap().info().clone();
    let filled = entries(cache.path());
    assert_eq!(filled.len(), 1);

    let second = Engine::with_config(&config).unwrap();
    assert_eq!(second.plugin(&plugin("probe")).await.unwrap().info(), &info);
    assert_eq!(entries(cache.path()), filled);

    let uncached = Engine::with_config(&EngineConfig::default().no_cache()).unwrap();
    assert_eq!(uncached.cache_dir(), None);
    assert_eq!(
        uncached.plugin(&plugin("probe")).await.unwrap().info(),
        &info
    );
}

/// The entry's header: magic (8 bytes), payload length (8), tag (32); then the payload.
const HEADER: usize = 8 + 8 + 32;

#[test]
fn a_forged_entry_with_its_checksum_recomputed_is_rejected_and_rebuilt() {
    use sha2::{Digest, Sha256};
    let cache = tempfile::tempdir().unwrap();
    let (entry, good) = probe_entry(cache.path());
    // Patched machine code, with the header's digest recomputed as a forger would.
    let mut forged = good.clone();
    let middle = HEADER + (forged.len() - HEADER) / 2;
    forged[middle..middle + 16]
        .iter_mut()
        .for_each(|b| *b ^= 0x5a);
    let digest = Sha256::digest(&forged[HEADER..]);
    forged[16..HEADER].copy_from_slice(&digest);
    std::fs::write(&entry, &forged).unwrap();

    let out = cached(&["describe", &probe()], cache.path());
    assert_exit(&out, 0);
    assert_contains(&stderr(&out), "integrity tag mismatch");
    // Compiled again.
    assert_contains(&stderr(&out), "stored compiled component in the cache");
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        good,
        "the rebuilt entry is the genuine one"
    );
}

#[test]
fn an_entry_copied_under_another_plugins_key_is_rejected_and_the_run_records_the_right_hash() {
    use sha2::{Digest, Sha256};
    let cache = tempfile::tempdir().unwrap();
    let other = plugin("quota_reserve").display().to_string();
    compile(&other, cache.path());
    let [other_entry] = entries(cache.path()).try_into().expect("one entry");
    compile(&probe(), cache.path());
    let probe_entry = entries(cache.path())
        .into_iter()
        .find(|e| *e != other_entry)
        .unwrap();
    std::fs::copy(&other_entry, &probe_entry).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flow.toml"),
        format!("name = \"swapped\"\n[store]\nvalue = 7\n\n[[task]]\nname = \"echo\"\nplugin = \"{}\"\n", probe()),
    )
    .unwrap();
    let db = dir.path().join("runs.db");
    let db = db.to_str().unwrap();
    let mut command = flowhost(["run", "flow.toml", "--db", db])
        .dir(dir.path())
        .env("FLOWHOST_LOG", "flowhost=debug");
    command.arg("--cache-dir").arg(cache.path());
    let out = command.run();
    assert_exit(&out, 0);
    assert_contains(&stderr(&out), "integrity tag mismatch");
    let store = stdout_json(&out);
    assert_eq!(
        store["echo"]["value"], 7,
        "the probe ran, not the entry's plugin: {store}"
    );
    let runs = stdout_json(&flowhost(["runs", "list", "--json", "--db", db]).run());
    let id = runs[0]["id"].as_str().unwrap();
    let show = flowhost(["runs", "show", id, "--json", "--db", db]).run();
    let probe_sha = format!(
        "{:x}",
        Sha256::digest(std::fs::read(plugin("probe")).unwrap())
    );
    assert!(
        stdout(&show).contains(&probe_sha),
        "the record keeps the probe's own hash"
    );
}

#[test]
fn a_cache_directory_others_may_write_is_refused_with_a_clear_message_and_no_cache_still_works() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let cache = parent.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = cached(&["describe", &probe()], &cache);
    assert_exit(&out, 0);
    assert_contains(
        &stderr(&out),
        &format!(
            "refusing cache directory {}: others may write to it (mode 777)",
            cache.display()
        ),
    );
    assert!(entries(&cache).is_empty(), "nothing was written to it");
    let out = cached(&["describe", &probe(), "--no-cache"], &cache);
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("refusing"), "{}", stderr(&out));

    // Owned by another user (only root can give a directory away).
    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
        let out = cached(&["describe", &probe()], &cache);
        assert_contains(
            &stderr(&out),
            "it is owned by uid 65534, not by the user running flowhost",
        );
        assert!(entries(&cache).is_empty());
    }
}

#[test]
fn a_grant_covering_the_cache_its_key_or_the_run_database_is_refused_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("state/cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(dir.path().join("db")).unwrap();
    let entry = |name: &str, host: &str| {
        format!(
            "\n[[task]]\nname = \"{name}\"\nplugin = \"{}\"\ndirs = [{{ host = \"{host}\", guest = \"/g\", mode = \"rw\" }}]\n",
            probe()
        )
    };
    std::fs::write(
        dir.path().join("flow.toml"),
        format!(
            "name = \"covering\"\n[store]\nvalue = 1\n{}{}{}",
            entry("cache_parent", "state"),
            entry("cache_inside", "state/cache"),
            entry("db", "db")
        ),
    )
    .unwrap();
    let flow = dir.path().join("flow.toml").display().to_string();
    let db = dir.path().join("db/runs.db");
    let mut command = flowhost(["run", &flow, "--db", &db.display().to_string()]).dir(dir.path());
    command.arg("--cache-dir").arg(&cache);
    let out = command.run();
    assert_exit(&out, 65);
    let log = stderr(&out);
    for (task, host, reached) in [
        ("cache_parent", dir.path().join("state"), cache.clone()),
        ("cache_inside", cache.clone(), cache.clone()),
        ("db", dir.path().join("db"), db.clone()),
    ] {
        assert!(
            log.contains(&format!(
                "task `{task}`: granted directory {} reaches {}, which flowhost protects",
                host.display(),
                reached.display()
            )),
            "{task}: {log}"
        );
    }
}
