#!/usr/bin/env bash
# The cost of accounting: the same load through two gateways, one with the SQLite ledger and the
# request log on, one with `storage: { ledger: false }` (metrics are on in both), run alternately
# so that the machine's noise falls on both. Afterwards the ledger's rows are counted against the
# requests sent. 127.0.0.1 only; bounded in requests; stops by itself.
#
# Usage: bash bench/ledger.sh [ROUNDS]   (REQUEST_LOG=1 also writes the request log on the ledger side)   (needs `oha`: cargo install oha --locked)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}
N=50000

UP=127.0.0.1:18091

for mode in on off; do
  mkdir -p "$work/$mode"
  storage='storage: { sqlite: ledger.db }'
  [ -n "${REQUEST_LOG:-}" ] && storage="$storage
log: { requests: requests.jsonl }"
  [ "$mode" = off ] && storage='storage: { ledger: false }'
  cat > "$work/$mode/yardmaster.yaml" <<YAML
policy: policy.route
providers:
  up: { kind: openai, base_url: "http://$UP/v1" }
models:
  fast: { provider: up, id: fast, price: { input: 1, output: 1 }, context: 128000 }
keys:
  - { name: bench, key_sha256: $(printf 'sk-bench' | sha256sum | cut -d' ' -f1), budget: { usd: 1000000, per: month }, limits: { rpm: 100000000 } }
$storage
YAML
  python3 bench/gateway_config.py policy "$work/$mode/policy.route"
done

taskset -c 1 target/release/fake-upstream "$UP" &
YARDMASTER_LOG=warn taskset -c 0 target/release/yardmaster serve --config "$work/on/yardmaster.yaml" --listen 127.0.0.1:18092 &
on_pid=$!
YARDMASTER_LOG=warn taskset -c 0 target/release/yardmaster serve --config "$work/off/yardmaster.yaml" --listen 127.0.0.1:18093 &
for port in 18092 18093; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done

BODY='{"model":"auto","messages":[{"role":"user","content":"Summarise the quarterly report in three bullet points, please."}]}'
sent=0
load() { # label port
  taskset -c 1 oha --no-tui --output-format json -c 32 -n "$N" -m POST -H 'content-type: application/json' \
    -H 'authorization: Bearer sk-bench' -d "$BODY" "http://127.0.0.1:$2/v1/chat/completions" > "$work/r.json"
  python3 - "$work/r.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
print(f"{sys.argv[2]:<12} rps {s['requestsPerSec']:>8.0f}  p50 {p['p50']*1e6:>6.0f} us  p99 {p['p99']*1e6:>6.0f} us  status {r.get('statusCodeDistribution', {})}")
PY
}
load warmup-on 18092 >/dev/null; sent=$((sent + N))
load warmup-off 18093 >/dev/null
echo "--- concurrency 32, $N requests per run, 100-rule policy, a key with a budget and an rpm limit"
for r in $(seq "$ROUNDS"); do
  load "ledger on" 18092; sent=$((sent + N))
  load "ledger off" 18093
done
kill -TERM "$on_pid"; wait "$on_pid" || true
rows=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from requests').fetchone()[0])" "$work/on/ledger.db")
lines=0
if [ -f "$work/on/requests.jsonl" ]; then lines=$(wc -l < "$work/on/requests.jsonl"); fi
echo "sent $sent requests to the ledger-on gateway; ledger rows: $rows; request-log lines: $lines"
