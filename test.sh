#!/usr/bin/env bash
# Every test, from a fresh clone, on a machine with only rustup: installs what the suite needs
# when it is missing, then runs the Rust suite and the Python client's tests.
#
#   Debian packages  postgresql (the PostgreSQL tests start throwaway servers from its
#                    binaries), iproute2 (workers in network namespaces of their own),
#                    chromium (the web console in a headless browser)
#   rustup           the wasm32-wasip2 target (the test plugins)
#   plugins/build-polyglot.sh  the Python, JavaScript, C, Go and C++ plugins, installing its
#                    own pinned tools (Debian's clang 14 + wasi-libc and clang 19 + libc++,
#                    componentize-py 0.25.1, componentize-js 0.23.0, Go 1.27.3 from PyPI,
#                    wasm-tools 1.262.0 from crates.io, the last three once per user in
#                    ~/.cache/flowhost/tools or $FLOWHOST_TOOLS)
#   clients/python/run-tests.sh  a virtualenv with pinned pytest for the Python client
#
# Arguments go to `cargo test` (e.g. `./test.sh -- serve::`); the Python tests run only when
# the Rust suite passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v ip >/dev/null || missing+=(iproute2)
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
    echo "test.sh: installing ${missing[*]} (Debian packages)" >&2
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

plugins/build-polyglot.sh
cargo test --workspace --locked "$@"
# The bench is not run here (it wants a release build and a quiet machine), but it must build.
[[ $# -gt 0 ]] || cargo test --workspace --locked --benches --no-run
FLOWHOST_BIN="$PWD/target/debug/flowhost" clients/python/run-tests.sh -q
