#!/usr/bin/env bash
# What sharing the state through Redis costs (SPEC §11), on loopback (127.0.0.1 only; every run
# is bounded). A key with a budget and an rpm limit (both too large to refuse anything) sends the
# 100-rule policy's request to the zero-latency fake upstream.
#
# 1. One instance, c=32: in-process state against Redis state, alternating rounds of the same run;
#    requests/s and p99 of each, and the ratio; for the Redis runs, the round trips per request
#    (the gateway's yardmaster_redis_round_trips_total) and the scripts Redis ran (INFO
#    commandstats).
# 2. One instance against two on one Redis (each driven at c=16): total requests/s.
#
# Usage: bash bench/redis.sh [ROUNDS]   (default 3; needs `oha` (cargo install oha --locked) and
# redis-server)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v redis-server >/dev/null || { echo "install redis-server first (apt-get install redis-server)" >&2; exit 2; }
rounds=${1:-3}
requests=${REQUESTS:-20000}

UP=127.0.0.1:18391
REDIS_PORT=18393

KEY=sk-bench-key
SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
setup() { # dir listen shared?
  python3 bench/gateway_config.py config "$1" "$2" "$UP" on
  printf 'keys:\n  - { name: bench, key_sha256: %s, budget: { usd: 1000000, per: month }, limits: { rpm: 2000000000 } }\n' "$SHA" >> "$1/yardmaster.yaml"
  if [ "$3" = shared ]; then
    printf 'storage: { sqlite: yardmaster.db, redis: { url_env: YM_BENCH_REDIS } }\n' >> "$1/yardmaster.yaml"
  fi
}
setup "$work/local" 127.0.0.1:18390 local
setup "$work/shared" 127.0.0.1:18394 shared
setup "$work/second" 127.0.0.1:18395 shared
export YM_BENCH_REDIS="redis://127.0.0.1:$REDIS_PORT/"

taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
taskset -c 1 target/release/fake-upstream "$UP" --gap-ms 0 &
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

serve() { # dir core -> pid
  YARDMASTER_LOG=warn taskset -c "$2" target/release/yardmaster serve --config "$1/yardmaster.yaml" >"$1/log" 2>&1 &
  local pid=$! addr
  addr=$(awk '/^listen:/ { print $2 }' "$1/yardmaster.yaml")
  for _ in $(seq 100); do curl -fs "http://$addr/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "$pid"
}
BODY='{"model":"auto","max_tokens":50,"messages":[{"role":"user","content":"Summarise the quarterly report in three bullet points, please."}]}'
load() { # addr concurrency n -> "rps p99_us non200"
  taskset -c 1 oha --no-tui --output-format json -c "$2" -n "$3" -m POST -H 'content-type: application/json' \
    -H "authorization: Bearer $KEY" -d "$BODY" "http://$1/v1/chat/completions" | python3 -c '
import json, sys
r = json.load(sys.stdin); s, p = r["summary"], r["latencyPercentiles"]
bad = sum(n for c, n in r.get("statusCodeDistribution", {}).items() if c != "200")
print(round(s["requestsPerSec"]), round(p["p99"] * 1e6), bad)'
}
trips() { curl -fs "http://$1/metrics" | awk '/^yardmaster_redis_round_trips_total / { print $2 }'; }
scripts() { redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,:]' '/^cmdstat_(evalsha|eval):/ { s += $3 } END { print s + 0 }'; }

echo "--- one instance, c=32, $requests requests a run: in-process state against Redis state"
for r in $(seq "$rounds"); do
  for kind in local shared; do
    pid=$(serve "$work/$kind" 0)
    addr=$(awk '/^listen:/ { print $2 }' "$work/$kind/yardmaster.yaml")
    load "$addr" 32 2000 >/dev/null   # warm-up
    t0=$(trips "$addr"); s0=$(scripts)
    out=$(load "$addr" 32 "$requests")
    t1=$(trips "$addr"); s1=$(scripts)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "round $r: $kind $out $(( ${t1:-0} - ${t0:-0} )) $(( s1 - s0 ))" | tee -a "$work/runs"
  done
done
python3 - "$work/runs" "$requests" <<'PY'
import sys, collections, statistics
rps, p99, trips, scripts = collections.defaultdict(list), collections.defaultdict(list), [], []
n = int(sys.argv[2])
for line in open(sys.argv[1]):
    _, _, kind, r, p, bad, t, sc = line.split()
    rps[kind].append(int(r)); p99[kind].append(int(p))
    if kind == "shared": trips.append(int(t) / n); scripts.append(int(sc) / n)
l, s = statistics.mean(rps["local"]), statistics.mean(rps["shared"])
print(f"in-process {l:.0f} rps, p99 {statistics.median(p99['local'])} us; redis {s:.0f} rps, p99 {statistics.median(p99['shared'])} us; "
      f"redis/in-process {s / l:.2f}x requests/s, p99 {statistics.median(p99['shared']) / statistics.median(p99['local']):.2f}x; "
      f"per request: {statistics.mean(trips):.2f} round trips to redis (incl. the 1-a-second ping), {statistics.mean(scripts):.2f} scripts run")
PY

echo "--- one instance against two on one Redis (c=16 each), $requests requests each"
a=$(serve "$work/shared" 0)
one=$(load 127.0.0.1:18394 16 "$requests")
b=$(serve "$work/second" 1)
load 127.0.0.1:18394 16 "$requests" > "$work/a" &
p1=$!
load 127.0.0.1:18395 16 "$requests" > "$work/b" &
p2=$!
wait "$p1" "$p2"
sleep 1
kill "$a" "$b"; wait "$a" "$b" 2>/dev/null || true
python3 - "$one" "$(cat "$work/a")" "$(cat "$work/b")" <<'PY'
import sys
one = int(sys.argv[1].split()[0]); a = int(sys.argv[2].split()[0]); b = int(sys.argv[3].split()[0])
print(f"one instance {one} rps; two instances {a} + {b} = {a + b} rps ({(a + b) / one:.2f}x) on 2 vCPUs shared with oha, the upstream and Redis")
PY
