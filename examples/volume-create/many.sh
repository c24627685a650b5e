#!/usr/bin/env bash
# Sends N volume-create requests at once (default 16) through one `flowhost run --batch`
# with `--concurrency N`, against a fresh, empty copy of state/, then checks the outcome:
# with the flow's quota of 10 volumes, min(N, 10) runs succeed and every other run is
# refused by `quota_reserve` (REVERTED, `over-quota`), and the quota ledger agrees with the
# volume records and scheduler requests the successful runs left. Exit 0 when all of that
# holds. Needs jq. Usage, from anywhere, after ./run.sh (or the builds it does):
#   examples/volume-create/many.sh [N]
# FLOWHOST (default target/debug/flowhost) and PLUGINS (default
# plugins/target/wasm32-wasip2/release) say which binary and plugins to use; KEEP=1 keeps
# the scratch folder.
set -euo pipefail
n="${1:-16}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
flowhost="${FLOWHOST:-$root/target/debug/flowhost}"
plugins="$(cd "${PLUGINS:-$root/plugins/target/wasm32-wasip2/release}" && pwd)"
quota=10

work="$(mktemp -d)"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
sed "s#\.\./\.\./plugins/target/wasm32-wasip2/release#$plugins#" "$here/flow.toml" >"$work/flow.toml"
mkdir "$work/state"
for i in $(seq 1 "$n"); do printf '{"display_name": "vol-%d"}\n' "$i"; done >"$work/in.jsonl"

start=$(date +%s.%N)
set +e
"$flowhost" -q run "$work/flow.toml" --batch "$work/in.jsonl" --concurrency "$n" \
    --db "$work/runs.db" >"$work/out.jsonl" 2>"$work/err.log"
code=$?
set -e
end=$(date +%s.%N)

state="$work/state"
ledger='null'
if [ -f "$state/quota.json" ]; then
    ledger="$(jq -cs 'if length == 1 then .[0] else "unreadable" end' "$state/quota.json" 2>/dev/null)" ||
        ledger='"unreadable"'   # e.g. a half-written ledger: trailing characters
fi
ids() { if [ -d "$state/$1" ]; then ls "$state/$1" | sed 's/\.json$//' | sort | jq -R . | jq -sc .; else echo '[]'; fi; }
left="$(cd "$state" && find . -type f ! -name quota.json ! -path './volumes/*' ! -path './scheduler/*' | jq -R . | jq -sc .)"

jq -s --argjson ledger "$ledger" --argjson volumes "$(ids volumes)" \
    --argjson scheduler "$(ids scheduler)" --argjson left "$left" \
    --argjson n "$n" --argjson quota "$quota" --argjson code "$code" '
  def count(f): map(select(f)) | length;
  # A run line`s error is "code: message".
  def code: .error | if type == "string" then split(": ")[0] else .code? end;
  (map(select(.state == "SUCCESS"))) as $ok
  | ($ok | map(.store.reservations.id) | sort) as $reserved_ids
  | ($ok | map(.store.volume_id) | sort) as $volume_ids
  | ([$n, $quota] | min) as $want
  | {
      runs: length,
      exit_code: $code,
      success: count(.state == "SUCCESS"),
      refused_by_quota: count(.state == "REVERTED" and .failed_task == "quota_reserve"
                              and code == "over-quota"),
      other: count(.state != "SUCCESS" and (.state != "REVERTED"
                   or .failed_task != "quota_reserve" or code != "over-quota")),
      errors: (map(select(.state != "SUCCESS")
                   | "\(.state) at \(.failed_task // "-"): \(code)")
               | group_by(.) | map({(.[0]): length}) | add // {}),
      ledger_readable: ($ledger | type == "object"),
      ledger_matches_records: (($ledger | type == "object")
        and ($ledger.reserved == {})
        and ($ledger.committed | keys) == $reserved_ids
        and $volume_ids == $volumes and $volumes == $scheduler
        and $ledger.in_use.volumes == ($volumes | length)
        and $ledger.in_use.gigabytes == ([$ledger.committed[].gigabytes] | add // 0)),
      in_use: (if ($ledger | type == "object") then $ledger.in_use else null end),
      pending: (if ($ledger | type == "object") then ($ledger.reserved | length) else null end),
      volume_records: ($volumes | length),
      files_left: $left
    }
  | .ok = (.runs == $n and .success == $want and .refused_by_quota == $n - $want
           and .other == 0 and .ledger_matches_records and .files_left == [])
' "$work/out.jsonl" | tee "$work/summary.json"
echo "$n runs in $(awk "BEGIN { printf \"%.2f\", $end - $start }") s${KEEP:+; kept $work}" >&2
jq -e .ok "$work/summary.json" >/dev/null
