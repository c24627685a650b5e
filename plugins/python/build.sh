#!/usr/bin/env bash
# Builds the Python tasks with componentize-py, installed (pinned) into plugins/python/.venv
# when missing:
#   stamp.wasm  the kitchen-sink task (app.py) for the world `plugin` of ../../wit: the task
#               contract alone, no wasi:http import
#   fetch.wasm  a task calling a service (fetch.py, flowhost_task.http) for the world
#               `plugin-http` of wit-http/: the contract plus wasi:http/outgoing-handler
#               (wit-http/deps holds WASI 0.2.12's WIT, the version componentize-py 0.25.1
#               and wasmtime-wasi-http 48 speak)
set -euo pipefail
cd "$(dirname "$0")"
COMPONENTIZE_PY_VERSION=0.25.1
if [ "$(.venv/bin/componentize-py --version 2>/dev/null | awk '{print $2}')" != "$COMPONENTIZE_PY_VERSION" ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
.venv/bin/componentize-py -d ../../wit -w plugin componentize app -o stamp.wasm
.venv/bin/componentize-py -d ../../wit -d wit-http -w flowhost:python-task/plugin-http@0.2.0 \
    componentize fetch -o fetch.wasm
