//! `flowhost new` as a plugin author meets it: in an empty folder outside this repository,
//! `flowhost new demo --lang L && cd demo && ./build.sh` gives a component (its path the
//! script's last line) that passes `flowhost conform` with the project's cases file,
//! unchanged. The build scripts install missing tools once per user (~/.cache/flowhost/tools),
//! so only the first run of these tests on a machine downloads anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kit::{assert_contains, assert_exit, flowhost, stderr, stdout};

/// Creates `demo` in `lang` in a fresh folder, builds it, and returns the folder (kept alive)
/// and the component's path.
fn new_and_build(lang: &str) -> (tempfile::TempDir, PathBuf) {
    new_and_build_with(lang, &[])
}

/// The same, `build.sh` given `args`.
fn new_and_build_with(lang: &str, args: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let created = flowhost(["new", "demo", "--lang", lang])
        .dir(dir.path())
        .run();
    assert_exit(&created, 0);
    let project = dir.path().join("demo");
    let mut build = Command::new(project.join("build.sh"));
    build.args(args).current_dir(&project);
    // The test's own cargo settings are for the host; a plugin author's shell has none.
    for var in [
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
    ] {
        build.env_remove(var);
    }
    // Rust builds share one target folder across runs, so that dependencies compile once.
    build.env(
        "CARGO_TARGET_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("flowhost-new-rust"),
    );
    let built = build.output().expect("run build.sh");
    let out = String::from_utf8_lossy(&built.stdout);
    assert!(
        built.status.success(),
        "{lang} build failed:\n{out}\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = PathBuf::from(
        out.lines()
            .last()
            .expect("build.sh prints the component's path last"),
    );
    assert!(
        wasm.is_file(),
        "{lang}: {} is not the component",
        wasm.display()
    );
    (dir, wasm)
}

fn assert_conforms(lang: &str) {
    let (dir, wasm) = new_and_build(lang);
    let cases = dir.path().join("demo/cases.toml");
    let out = flowhost([
        "conform",
        wasm.to_str().unwrap(),
        "--cases",
        cases.to_str().unwrap(),
    ])
    .run();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_exit(&out, 0);
    assert_contains(&report, "0 failed, 0 skipped");
    let called = flowhost([
        "call",
        wasm.to_str().unwrap(),
        "execute",
        "--args",
        r#"{"name": "Ada"}"#,
    ])
    .run();
    assert_contains(&stdout(&called), "Hello, Ada!");
}

#[test]
fn a_new_rust_project_builds_alone_and_conforms() {
    assert_conforms("rust");
}

#[test]
fn a_new_python_project_builds_alone_and_conforms() {
    assert_conforms("python");
}

#[test]
fn a_new_javascript_project_builds_alone_and_conforms() {
    assert_conforms("js");
}

#[test]
fn a_new_c_project_builds_alone_and_conforms() {
    assert_conforms("c");
}

#[test]
fn a_new_go_project_builds_alone_and_conforms() {
    assert_conforms("go");
}

#[test]
fn a_new_cpp_project_builds_alone_and_conforms() {
    assert_conforms("cpp");
}

#[test]
fn a_new_python_project_built_with_http_imports_wasi_http_and_still_conforms() {
    let (dir, wasm) = new_and_build_with("python", &["--http"]);
    let project = dir.path().join("demo");
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert_contains(&readme, "net = { http = [\"https://api.example.org/v3/\"]");
    assert_contains(
        &std::fs::read_to_string(project.join("app.py")).unwrap(),
        "http.secret(\"api_token\")",
    );
    let cases = project.join("cases.toml");
    let out = flowhost([
        "conform",
        wasm.to_str().unwrap(),
        "--cases",
        cases.to_str().unwrap(),
    ])
    .run();
    assert_exit(&out, 0);
    let report = stdout(&out);
    assert_contains(&report, "0 failed, 0 skipped");
    assert_contains(&report, "`wasi:http/outgoing-handler@0.2.12`");
}

#[test]
fn new_refuses_an_existing_folder_and_a_bad_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let taken = flowhost(["new", "taken", "--lang", "python"])
        .dir(dir.path())
        .run();
    assert_exit(&taken, 64);
    assert_contains(&stderr(&taken), "already exists");
    let bad = flowhost(["new", "../escape", "--lang", "c"])
        .dir(dir.path())
        .run();
    assert_exit(&bad, 64);
    let unknown = flowhost(["new", "demo", "--lang", "cobol"])
        .dir(dir.path())
        .run();
    assert_exit(&unknown, 64);
}
