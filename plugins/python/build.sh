#!/usr/bin/env bash
# Builds the Python kitchen-sink task into plugins/python/stamp.wasm with componentize-py,
# installed (pinned) into plugins/python/.venv when missing.
set -euo pipefail
cd "$(dirname "$0")"
COMPONENTIZE_PY_VERSION=0.25.1
if [ "$(.venv/bin/componentize-py --version 2>/dev/null | awk '{print $2}')" != "$COMPONENTIZE_PY_VERSION" ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
.venv/bin/componentize-py -d ../../wit -w plugin componentize app -o stamp.wasm
