#!/usr/bin/env bash
# Builds the JavaScript kitchen-sink task into plugins/js/stamp.wasm with componentize-js,
# installed from package-lock.json (pinned) when missing. componentize-js 0.23.0 imports
# @bytecodealliance/preview2-shim at run time but lists it only as a dev dependency, so
# package.json pins it too. `-d http -d fetch-event` keeps
# wasi:http out of the component's imports: the task calls no service, so it needs no
# `fetch` (a task that does is built with `-d fetch-event` alone, see plugins/README.md).
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/componentize-js ] || npm ci --no-audit --no-fund
npm run --silent build
