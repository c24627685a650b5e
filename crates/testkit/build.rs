//! Compiles the guest workspace (`plugins/`) for wasm32-wasip2 before any test builds, the way
//! wasmtime's test-programs do, so `cargo test` alone is enough on a fresh clone.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels below the repository root")
        .to_path_buf();
    let plugins = root.join("plugins");
    for watched in [
        "Cargo.toml",
        "Cargo.lock",
        "rust",
        "volume-create",
        "volume-service",
        "testing",
        ".cargo",
    ] {
        println!("cargo:rerun-if-changed={}", plugins.join(watched).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&plugins)
        .args(["build", "--release", "--locked", "--quiet"])
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"));
    // The outer build's settings are for the host target; the guest build must not see them.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        build.env_remove(var);
    }
    let status = build
        .status()
        .expect("cannot run cargo to build the guest plugins");
    assert!(
        status.success(),
        "building the guest plugins failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
    );
    let out = plugins.join("target/wasm32-wasip2/release");
    println!("cargo:rustc-env=FLOWHOST_TEST_PLUGINS={}", out.display());
    println!("cargo:rustc-env=FLOWHOST_REPO_ROOT={}", root.display());
}
