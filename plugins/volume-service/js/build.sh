#!/usr/bin/env bash
# Builds the volume-service example's JavaScript tasks (entry_create.js, volume_cast.js) into
# components beside them, with componentize-js 0.23.0 installed from plugins/js's pinned lock
# file when missing. Without `-d http`: the tasks call the volume API with `fetch`, so the
# components import wasi:http/outgoing-handler (the host offers it to entries with a
# `net.http` grant). `-d fetch-event` leaves out the incoming-request handler nobody calls.
# componentize-js resolves imports only below its working directory, so it runs from plugins/
# (the tasks import ../../js/flowhost-task.js).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=volume-service/js
[ -x js/node_modules/.bin/componentize-js ] || (cd js && npm ci --no-audit --no-fund --silent)
for task in entry_create volume_cast; do
    out="$here/$task.wasm"
    if [ "$out" -nt "$here/$task.js" ] && [ "$out" -nt "$here/service-api.js" ] && [ "$out" -nt js/flowhost-task.js ]; then
        continue  # up to date
    fi
    js/node_modules/.bin/componentize-js --wit ../wit --world-name plugin -d fetch-event \
        --out "$out" "$here/$task.js" >&2
done
