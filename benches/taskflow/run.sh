#!/usr/bin/env bash
# TaskFlow side by side: creates (once) a virtualenv with TaskFlow 6.5.0 from PyPI under
# target/taskflow-venv and runs the twin benchmark, which prints one JSON object on stdout.
# `cargo bench -p flowhost --bench flows` calls this; it can also be run by hand.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TASKFLOW_VENV:-$here/../../target/taskflow-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import taskflow' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'taskflow==6.5.0' >&2
fi
exec "$venv/bin/python" "$here/twin.py" "$@"
