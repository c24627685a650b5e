#!/usr/bin/env bash
# Runs the volume-create example end to end from a fresh clone: builds the task plugins for
# wasm32-wasip2 (rust-toolchain.toml installs the target when missing), builds flowhost, and
# runs the flow. Extra arguments go to `flowhost run`, e.g.:
#   ./examples/volume-create/run.sh --store raw_availability_zone=az-down
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
(cd plugins && cargo build --quiet --release --locked)   # plugins/.cargo/config.toml sets the wasm target
cargo build --quiet --locked -p flowhost --bin flowhost
exec target/debug/flowhost run examples/volume-create/flow.toml --fetch volume "$@"
