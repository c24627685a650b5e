#!/usr/bin/env bash
# Builds the kitchen-sink `stamp` task in all six languages, installing only the tools
# that are missing, each at a pinned version:
#   rust    plugins/target/wasm32-wasip2/release/stamp.wasm   (cargo, rust-toolchain.toml)
#   python  plugins/python/stamp.wasm   (componentize-py 0.25.1 from PyPI, in plugins/python/.venv)
#   js      plugins/js/stamp.wasm       (componentize-js 0.23.0 from npm, plugins/js/package-lock.json)
#   c       plugins/c/stamp.wasm        (Debian clang 14 + wasi-libc, the Rust toolchain's wasm-component-ld)
#   go      plugins/go/stamp.wasm       (Go 1.27.3 from PyPI, wasm-tools 1.262.0 from crates.io, the
#                                        preview1 adapter of wasmtime 48.0.8, in the shared tool
#                                        cache $FLOWHOST_TOOLS, default ~/.cache/flowhost/tools)
#   cpp     plugins/cpp/stamp.wasm      (Debian clang 19 + libc++, the Rust toolchain's wasm-component-ld)
# and the tasks of other languages the tests call services with:
#   python  plugins/python/fetch.wasm   (flowhost_task.http, the world `plugin-http`)
#   js      plugins/volume-service/js/{entry_create,volume_cast}.wasm   (examples/volume-service)
# Then check each with `flowhost conform`:
#   for l in python js c go cpp; do target/debug/flowhost conform plugins/$l/stamp.wasm --cases plugins/stamp.cases.toml; done
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
started=$SECONDS
step() {
    local begun=$SECONDS
    "$@"
    echo "build-polyglot: $1 took $((SECONDS - begun)) s" >&2
}
step cargo build --quiet --release --locked -p kitchen-sink
step python/build.sh
step js/build.sh
step c/build.sh
step go/build.sh >/dev/null
step cpp/build.sh >/dev/null
step volume-service/js/build.sh
echo "build-polyglot: all built in $((SECONDS - started)) s" >&2
