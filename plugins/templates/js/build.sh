#!/usr/bin/env bash
# Builds the task into a WebAssembly component with componentize-js {{componentize_js}}; prints
# its path as the last line. componentize-js is installed once, from the pinned lock file
# tools/package-lock.json, into the shared tool cache ($FLOWHOST_TOOLS, default
# ~/.cache/flowhost/tools); Node.js with npm is needed (installed with apt when missing and
# possible). `-d http -d fetch-event` keeps wasi:http out of the imports; to call services
# with `fetch`, drop `-d http` and grant the origins in the flow entry (`net = { http = [...] }`).
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="${FLOWHOST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/flowhost/tools}"
JS="$TOOLS/componentize-js-{{componentize_js}}"
mkdir -p "$TOOLS"
(
    flock 9
    if [ ! -x "$JS/node_modules/.bin/componentize-js" ]; then
        if ! command -v npm >/dev/null; then
            sudo=""
            [ "$(id -u)" -eq 0 ] || sudo=sudo
            $sudo apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm >&2
        fi
        mkdir -p "$JS"
        cp tools/package.json tools/package-lock.json "$JS/"
        (cd "$JS" && npm ci --no-audit --no-fund --silent >&2)
    fi
) 9>"$TOOLS/.componentize-js.lock"
"$JS/node_modules/.bin/componentize-js" --wit wit --world-name plugin -d http -d fetch-event --out {{wasm}} task.js >&2
echo "$PWD/{{wasm}}"
