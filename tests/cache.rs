//! The compiled-component cache, as an operator meets it: `flowhost compile` fills it, later
//! commands load from it instead of compiling, a damaged entry is rebuilt rather than
//! trusted, processes racing on one cache all succeed, and `--no-cache` leaves it alone.

use std::path::{Path, PathBuf};
use std::process::Output;

use flowhost::{Engine, EngineConfig};
use flowhost_testkit::plugin;

/// Runs `flowhost` with debug logs (which say where compiled code came from).
fn flowhost(args: &[&str], cache: &Path) -> Output {
    let mut command = flowhost_testkit::flowhost(args);
    command.arg("--cache-dir").arg(cache);
    command.env("FLOWHOST_LOG", "flowhost=debug").run()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
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
    let out = flowhost(&["compile", &probe(), &plugin("quota_reserve").display().to_string()], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("stored compiled component in the cache"), "{}", stderr(&out));
    let filled = entries(cache.path());
    assert_eq!(filled.len(), 2, "one entry per plugin: {filled:?}");
    assert!(filled.iter().all(|p| p.extension().is_some_and(|e| e == "cwasm")));

    let out = flowhost(&["describe", &probe()], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("probe "));
    assert!(stderr(&out).contains("loaded compiled component from the cache"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("stored compiled component"), "nothing is compiled again");
    assert_eq!(entries(cache.path()), filled);
}

#[test]
fn a_corrupt_or_truncated_entry_is_rebuilt_not_trusted() {
    let cache = tempfile::tempdir().unwrap();
    assert!(flowhost(&["compile", &probe()], cache.path()).status.success());
    let [entry] = entries(cache.path()).try_into().expect("one entry");
    let good = std::fs::read(&entry).unwrap();

    // Bits flipped in the middle of the machine code.
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle..middle + 64].iter_mut().for_each(|b| *b ^= 0xa5);
    std::fs::write(&entry, &flipped).unwrap();
    let out = flowhost(&["describe", &probe()], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("checksum mismatch"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&entry).unwrap().len(), good.len(), "the entry was rebuilt");

    // Cut short, as by a full disk.
    std::fs::write(&entry, &good[..good.len() / 3]).unwrap();
    let out = flowhost(&["describe", &probe()], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));

    // Not a cache entry at all.
    std::fs::write(&entry, b"garbage").unwrap();
    let out = flowhost(&["describe", &probe()], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a flowhost cache entry"), "{}", stderr(&out));

    // After the rebuild the entry serves again.
    let out = flowhost(&["describe", &probe()], cache.path());
    assert!(stderr(&out).contains("loaded compiled component from the cache"), "{}", stderr(&out));
    assert_eq!(entries(cache.path()).len(), 1);
}

#[test]
fn processes_racing_to_fill_one_cache_all_succeed_and_leave_one_whole_entry() {
    let cache = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            flowhost_testkit::flowhost(["compile", &probe(), "--cache-dir"])
                .dir(cache.path())
                .arg(cache.path())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn flowhost")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let files = entries(cache.path());
    assert_eq!(files.len(), 1, "no temporary files left behind: {files:?}");
    let out = flowhost(&["describe", &probe()], cache.path());
    assert!(stderr(&out).contains("loaded compiled component from the cache"), "{}", stderr(&out));
}

#[test]
fn no_cache_neither_reads_nor_writes_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let out = flowhost(&["describe", &probe(), "--no-cache"], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(entries(cache.path()).is_empty());

    assert!(flowhost(&["compile", &probe()], cache.path()).status.success());
    let [entry] = entries(cache.path()).try_into().expect("one entry");
    std::fs::write(&entry, b"garbage").unwrap();
    let out = flowhost(&["describe", &probe(), "--no-cache"], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("cache entry"), "the cache is not even read: {}", stderr(&out));
    assert_eq!(std::fs::read(&entry).unwrap(), b"garbage");

    let out = flowhost(&["compile", &probe(), "--no-cache"], cache.path());
    assert_eq!(out.status.code(), Some(64), "compile without a cache is a usage error");
    assert!(stderr(&out).contains("--no-cache"), "{}", stderr(&out));
}

#[test]
fn the_cache_directory_comes_from_the_environment_when_no_flag_is_given() {
    let cache = tempfile::tempdir().unwrap();
    let out = flowhost_testkit::flowhost(["compile", &probe()])
        .env("FLOWHOST_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
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
    assert_eq!(uncached.plugin(&plugin("probe")).await.unwrap().info(), &info);
}
