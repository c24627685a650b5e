#!/usr/bin/env bash
# Runs the volume-service example end to end: builds the task plugins (Rust for wasm32-wasip2,
# JavaScript with componentize-js) and flowhost, starts the volume API (service.py) on a free
# loopback port with a fresh database and a random token, writes a copy of flow.toml granting
# that port, runs the flow, prints the API's ledger, and stops the service.
#
#   examples/volume-service/run.sh [FLOWHOST RUN ARGS...]    one run, e.g. --store raw_size=20
#   examples/volume-service/run.sh --many [N]                N runs at once (default 64)
#
# --many sends N volume-create requests through one `flowhost run --batch` with
# `--concurrency N` against a quota of 10 volumes: min(N, 10) runs must succeed and every
# other be REVERTED by `quota_reserve` (`over-quota`), and the service's ledger must agree with
# its records and with the runs' results; it prints the counts and exits 0 when all of that
# holds. KEEP=1 keeps the scratch folder (service database, log, runs); FLOWHOST names
# another flowhost binary; NO_BUILD=1 skips the builds. Needs python3 (3.10 or later) and,
# when the JavaScript tasks are not built yet, npm.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
flowhost="${FLOWHOST:-$root/target/debug/flowhost}"

many=""
if [ "${1:-}" = "--many" ]; then
    many="${2:-64}"
    [[ "$many" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --many takes a count, not \`$many\`" >&2; exit 2; }
fi

if [ -z "${NO_BUILD:-}" ]; then
    cd "$root"
    rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
    (cd plugins && cargo build --quiet --release --locked)   # plugins/.cargo/config.toml sets the wasm target
    plugins/volume-service/js/build.sh
    cargo build --quiet --locked -p flowhost --bin flowhost
fi

work="$(mktemp -d)"
service=""
cleanup() {
    if [ -n "$service" ]; then
        kill "$service" 2>/dev/null || true
        wait "$service" 2>/dev/null || true
    fi
    if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The API's token: the service checks it, flowhost reads it for the flow's secret
# `volume_token` ([secrets] in flow.toml) and fills it into the tasks' requests.
VOLUME_API_TOKEN="${VOLUME_API_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}"
export VOLUME_API_TOKEN

quiet=(--quiet)
[ -n "$many" ] || quiet=()
python3 "$here/service.py" --port 0 --port-file "$work/port" --db "$work/volumes.db" \
    --volumes 10 --gigabytes 1000 --unavailable-zone az-down "${quiet[@]}" \
    >"$work/service.log" 2>&1 &
service=$!
for _ in $(seq 1 100); do
    [ -s "$work/port" ] && break
    kill -0 "$service" 2>/dev/null || { cat "$work/service.log" >&2; exit 1; }
    sleep 0.1
done
[ -s "$work/port" ] || { echo "run.sh: the volume API did not start" >&2; cat "$work/service.log" >&2; exit 1; }
port="$(cat "$work/port")"
api="http://127.0.0.1:$port/v3"
echo "volume API on $api (log: $work/service.log)" >&2

# flow.toml for this port, with the plugins' paths made absolute.
sed -e "s#127\.0\.0\.1:8776#127.0.0.1:$port#g" -e "s#\"\.\./\.\./plugins/#\"$root/plugins/#g" \
    "$here/flow.toml" >"$work/flow.toml"

ledger() {
    python3 - "$api" <<'EOF'
import json, os, sys, urllib.request
request = urllib.request.Request(sys.argv[1] + "/ledger", headers={"Authorization": "Bearer " + os.environ["VOLUME_API_TOKEN"]})
print(json.dumps(json.load(urllib.request.urlopen(request)), indent=2))
EOF
}

if [ -z "$many" ]; then
    set +e
    "$flowhost" run "$work/flow.toml" --fetch volume "$@"
    code=$?
    set -e
    echo "the API's ledger after the run:" >&2
    ledger >&2
    exit "$code"
fi

for i in $(seq 1 "$many"); do printf '{"display_name": "vol-%d"}\n' "$i"; done >"$work/in.jsonl"
start=$(date +%s.%N)
set +e
"$flowhost" -q run "$work/flow.toml" --batch "$work/in.jsonl" --concurrency "$many" \
    --db "$work/runs.db" >"$work/out.jsonl" 2>"$work/err.log"
code=$?
set -e
end=$(date +%s.%N)
ledger >"$work/ledger.json"
set +e
python3 - "$work" "$many" "$code" "$api" <<'EOF'
import json, os, sys, urllib.request
from collections import Counter

work, n, code, api = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
quota = 10
runs = [json.loads(line) for line in open(os.path.join(work, "out.jsonl")) if line.strip()]
ledger = json.load(open(os.path.join(work, "ledger.json")))

def get(path):
    request = urllib.request.Request(api + path, headers={"Authorization": "Bearer " + os.environ["VOLUME_API_TOKEN"]})
    return json.load(urllib.request.urlopen(request))

def code_of(run):
    error = run.get("error")
    if isinstance(error, dict):
        return error.get("code")
    return error.split(": ")[0] if isinstance(error, str) else None

ok_runs = [r for r in runs if r.get("state") == "SUCCESS"]
refused = [r for r in runs if r.get("state") == "REVERTED" and r.get("failed_task") == "quota_reserve" and code_of(r) == "over-quota"]
outcomes = Counter(
    "SUCCESS" if r.get("state") == "SUCCESS" else f"{r.get('state')} at {r.get('failed_task') or '-'}: {code_of(r)}"
    for r in runs
)
volumes = {v["id"] for v in get("/volumes")["volumes"]}
scheduled = {q["volume_id"] for q in get("/scheduler/requests")["requests"]}
committed = {r["id"] for r in get("/quota/reservations")["reservations"] if r["state"] == "committed"}
run_volumes = {r["store"]["volume_id"] for r in ok_runs}
run_reservations = {r["store"]["reservations"]["id"] for r in ok_runs}
want = min(n, quota)
summary = {
    "runs": len(runs),
    "exit_code": code,
    "outcomes": dict(outcomes),
    "success": len(ok_runs),
    "refused_by_quota": len(refused),
    "ledger_consistent": ledger["consistent"],
    "ledger_problems": ledger["problems"],
    "quota": ledger["quota"],
    "reservations": ledger["reservations"],
    "volume_records": len(volumes),
    "scheduler_requests": len(scheduled),
    "records_match_runs": volumes == run_volumes == scheduled and committed == run_reservations,
}
summary["ok"] = (
    summary["runs"] == n
    and summary["success"] == want
    and summary["refused_by_quota"] == n - want
    and summary["ledger_consistent"]
    and summary["records_match_runs"]
    and ledger["quota"]["volumes"]["in_use"] == want
    and ledger["reservations"]["reserved"] == 0
)
print(json.dumps(summary, indent=2))
sys.exit(0 if summary["ok"] else 1)
EOF
status=$?
set -e
echo "$many runs in $(python3 -c "print(f'{$end - $start:.2f}')") s" >&2
exit "$status"
