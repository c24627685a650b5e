#!/usr/bin/env bash
# Runs the Python client's tests against a real `flowhost serve`: creates the virtualenv
# clients/python/.venv when missing (pinned pytest), installs the client into it (editable)
# and runs pytest. Arguments go to pytest.
#
#   FLOWHOST_BIN      the flowhost binary (default: <repo>/target/debug/flowhost)
#   FLOWHOST_PLUGINS  the built plugins (default: <repo>/plugins/target/wasm32-wasip2/release;
#                     built here with `cargo build --release --locked` in plugins/ when absent)
#   PYTHON            the interpreter to make the virtualenv with (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
pytest_version="8.3.4"

export FLOWHOST_BIN="${FLOWHOST_BIN:-$root/target/debug/flowhost}"
if [[ ! -x "$FLOWHOST_BIN" ]]; then
    echo "run-tests.sh: no flowhost binary at $FLOWHOST_BIN (cargo build, or set FLOWHOST_BIN)" >&2
    exit 1
fi
if [[ -z "${FLOWHOST_PLUGINS:-}" && ! -f "$root/plugins/target/wasm32-wasip2/release/probe.wasm" ]]; then
    echo "run-tests.sh: building the test plugins (plugins/)" >&2
    (cd "$root/plugins" && cargo build --release --locked)
fi

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import pytest, sys; sys.exit(pytest.__version__ != sys.argv[1])' "$pytest_version" 2>/dev/null; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pytest==$pytest_version"
fi
# The client, editable, once: later runs see the source as it is.
if ! "$venv/bin/python" -c 'import flowhost_client, sys; sys.exit(not flowhost_client.__file__.startswith(sys.argv[1]))' "$here/src/" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here"
fi

cd "$here"
exec "$venv/bin/python" -m pytest "$@"
