#!/usr/bin/env bash
# Builds the task into a WebAssembly component; prints its path as the last line.
# Needs Rust with the wasm32-wasip2 target: a missing target is added with rustup, and
# without cargo at all, rustup and Rust {{rust_version}} are installed into the shared tool
# cache ($FLOWHOST_TOOLS, default ~/.cache/flowhost/tools).
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="${FLOWHOST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/flowhost/tools}"
if ! command -v cargo >/dev/null; then
    export RUSTUP_HOME="$TOOLS/rustup" CARGO_HOME="$TOOLS/cargo"
    if [ ! -x "$CARGO_HOME/bin/cargo" ]; then
        mkdir -p "$TOOLS"
        echo "installing Rust {{rust_version}} into $TOOLS" >&2
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y -q --no-modify-path --profile minimal --default-toolchain {{rust_version}} --target wasm32-wasip2 >&2
    fi
    export PATH="$CARGO_HOME/bin:$PATH"
fi
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2 >&2
fi
cargo build --release --target wasm32-wasip2 >&2
target_dir="${CARGO_TARGET_DIR:-target}"
echo "$(cd "$target_dir" && pwd)/wasm32-wasip2/release/{{lib}}.wasm"
