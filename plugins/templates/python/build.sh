#!/usr/bin/env bash
# Builds the task into a WebAssembly component with componentize-py {{componentize_py}}; prints
# its path as the last line. componentize-py is installed once into the shared tool cache
# ($FLOWHOST_TOOLS, default ~/.cache/flowhost/tools); python3 with venv is needed (installed
# with apt when missing and possible).
#
#   ./build.sh          for the world `plugin` (wit/): the task contract, no network import
#   ./build.sh --http   for the world `plugin-http` (wit-http/): the contract plus
#                       wasi:http/outgoing-handler, for a task that calls services with
#                       `flowhost_task.http` (grant the origins in the flow: `net = { http = [...] }`)
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="${FLOWHOST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/flowhost/tools}"
VENV="$TOOLS/componentize-py-{{componentize_py}}"
mkdir -p "$TOOLS"
apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
}
(
    flock 9
    if [ ! -x "$VENV/bin/componentize-py" ]; then
        python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || apt_install python3 python3-venv
        rm -rf "$VENV"
        python3 -m venv "$VENV" >&2
        "$VENV/bin/pip" install --quiet "componentize-py=={{componentize_py}}" >&2
    fi
) 9>"$TOOLS/.componentize-py.lock"
world=(-d wit -w plugin)
if [ "${1:-}" = "--http" ]; then
    world=(-d wit -d wit-http -w flowhost:python-task/plugin-http@0.2.0)
fi
"$VENV/bin/componentize-py" "${world[@]}" componentize app -o {{wasm}} >&2
echo "$PWD/{{wasm}}"
