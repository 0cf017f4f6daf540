#!/usr/bin/env bash
# Load benchmark on loopback (127.0.0.1 only; every run is bounded in requests and time).
#
# Measures the fake upstream directly and then through Yardmaster with a 100-rule policy, in the
# same run, with the gateway pinned to core 0 and the load generator and upstream to core 1:
#   1. concurrency 1, non-streaming: added p99 latency (gateway p99 - direct p99)
#   2. concurrency 32, non-streaming: RPS, p50, p99 for both
#   3. streaming (64 chunks, 20 ms apart): time to first byte p99 for both, and 256 concurrent streams
#   4. memory: idle RSS, and RSS after 100,000 requests
# Steps 1 and 2 also measure a floor: `floor-proxy` (bench/floor_proxy.rs), the same server and
# client stack (axum, reqwest, tokio single-threaded, mimalloc) forwarding bytes and nothing else,
# pinned to the gateway's core. What the floor costs is the stack's; the rest is Yardmaster's.
#
# Usage: bash bench/load.sh   (needs `oha`: cargo install oha --locked)
#        LEDGER=off bash bench/load.sh   the same without the spend ledger (`storage: { ledger: false }`)
#        BUSY_POLL=1ms bash bench/load.sh   the gateway started with `serve --busy-poll 1ms`
#        GUEST_HALT_POLL_NS=200000 bash bench/load.sh   (root, a KVM guest with the haltpoll cpuidle
#          driver) lets idle vCPUs poll 200 us before halting for the run, then restores the setting
set -euo pipefail
cd "$(dirname "$0")/.."
command -v oha >/dev/null || { echo "install oha first: cargo install oha --locked" >&2; exit 2; }
cargo build --release --bins --quiet

UP=127.0.0.1:18081
GW=127.0.0.1:18080
work=$(mktemp -d)
haltpoll=/sys/module/haltpoll/parameters/guest_halt_poll_ns
if [ -n "${GUEST_HALT_POLL_NS:-}" ]; then
  was=$(cat "$haltpoll")
  echo "$GUEST_HALT_POLL_NS" > "$haltpoll"
  echo "guest_halt_poll_ns: $was -> $GUEST_HALT_POLL_NS for this run"
fi
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"; [ -n "${was:-}" ] && echo "$was" > "$haltpoll"' EXIT

python3 bench/gateway_config.py config "$work" "$GW" "$UP" "${LEDGER:-on}"

taskset -c 1 target/release/fake-upstream "$UP" &
up_pid=$!
YARDMASTER_LOG=warn taskset -c 0 target/release/yardmaster serve --config "$work/yardmaster.yaml" ${BUSY_POLL:+--busy-poll "$BUSY_POLL"} &
gw_pid=$!
# The floor: a bare axum + reqwest passthrough on the same core (bench/floor_proxy.rs).
FLOOR=127.0.0.1:18082
taskset -c 0 target/release/floor-proxy "$FLOOR" "http://$UP/v1/chat/completions" &
floor_pid=$!
for _ in $(seq 100); do curl -fs "http://$GW/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

BODY='{"model":"auto","messages":[{"role":"user","content":"Summarise the quarterly report in three bullet points, please."}]}'
SBODY='{"model":"auto","stream":true,"messages":[{"role":"user","content":"Summarise the quarterly report in three bullet points, please."}]}'
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$gw_pid/status"; }
echo "idle RSS: $(rss)"

load() { # name url concurrency requests body
  taskset -c 1 oha --no-tui --output-format json -c "$3" -n "$4" -m POST -H 'content-type: application/json' -d "$5" "$2" > "$work/$1.json"
  python3 - "$work/$1.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
print(f"{sys.argv[2]:<22} rps {s['requestsPerSec']:>9.0f}  p50 {p['p50']*1e6:>8.0f} us  p99 {p['p99']*1e6:>8.0f} us  status {codes}")
PY
}

load warmup-direct "http://$UP/v1/chat/completions" 4 5000 "$BODY" >/dev/null
load warmup-gateway "http://$GW/v1/chat/completions" 4 5000 "$BODY" >/dev/null
load warmup-floor "http://$FLOOR/v1/chat/completions" 4 5000 "$BODY" >/dev/null
echo "--- concurrency 1, non-streaming (20,000 requests each; floor = bare axum + reqwest passthrough)"
load c1-direct "http://$UP/v1/chat/completions" 1 20000 "$BODY"
load c1-floor "http://$FLOOR/v1/chat/completions" 1 20000 "$BODY"
load c1-gateway "http://$GW/v1/chat/completions" 1 20000 "$BODY"
echo "--- concurrency 32, non-streaming (50,000 requests each)"
load c32-direct "http://$UP/v1/chat/completions" 32 50000 "$BODY"
load c32-floor "http://$FLOOR/v1/chat/completions" 32 50000 "$BODY"
load c32-gateway "http://$GW/v1/chat/completions" 32 50000 "$BODY"
ttfb() { # name: reads curl's time_starttransfer lines on stdin
  sort -n | awk -v name="$1" '{a[NR]=$1} END {printf "ttfb %-8s n %d  p50 %6.0f us  p99 %6.0f us  max %6.0f us\n", name, NR, a[int(NR*0.5)]*1e6, a[int(NR*0.99)]*1e6, a[NR]*1e6}'
}
echo "--- streaming: time to first byte (${STREAMS:-1000} streams each, one started every 10 ms on a new connection, each read to its end)"
for target in "direct $UP" "gateway $GW"; do
  set -- $target
  taskset -c 1 target/release/ttfb "$2" /v1/chat/completions "$SBODY" "${STREAMS:-1000}" 10 | cut -d' ' -f1 | awk '{printf "%.6f\n", $1/1e6}' | ttfb "$1"
done
echo "--- streaming after a client disconnect (200 sequential streams, each cut after 100 ms: the gateway"
echo "    cancels each upstream stream, so every next one opens a new upstream connection)"
for target in "direct http://$UP" "gateway http://$GW"; do
  set -- $target
  for i in $(seq 200); do
    taskset -c 1 curl -s -o /dev/null --max-time 0.1 -w '%{time_starttransfer}\n' -H 'content-type: application/json' -d "$SBODY" "$2/v1/chat/completions" || true
  done | ttfb "$1"
done
echo "--- 256 concurrent streams (each 64 chunks x 20 ms = 1.28 s)"
load s256-gateway "http://$GW/v1/chat/completions" 256 256 "$SBODY"
echo "--- memory: 100,000 requests"
echo "RSS before: $(rss)"
load mem-gateway "http://$GW/v1/chat/completions" 32 100000 "$BODY" >/dev/null
echo "RSS after 100k: $(rss)"
load mem-gateway2 "http://$GW/v1/chat/completions" 32 100000 "$BODY" >/dev/null
echo "RSS after 200k: $(rss)"
