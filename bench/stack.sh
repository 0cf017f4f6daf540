#!/usr/bin/env bash
# What each layer of the stack costs, on loopback (127.0.0.1 only; every run is bounded).
#
# At concurrency 32 (non-streaming), in alternating rounds: the fake upstream directly, then the
# floor proxy (bench/floor_proxy.rs) with each server (axum, bare hyper) and client (reqwest, bare
# hyper-util), then the gateway with a 100-rule policy. Proxies are pinned to core 0, oha and the
# upstream to core 1, as in bench/load.sh. Prints each run and, per target, the mean RPS as a share
# of the direct runs of the same rounds.
#
# Then, in the same run: the added p99 at concurrency 1 (gateway against the axum + reqwest floor),
# and streaming: the floor relaying the upstream's events unchanged against the gateway, with
# streams of 64 and 500 events sent as fast as the connection takes them. For each it reports
# the CPU the proxy process spent per event (from /proc, all its threads), streams per second at
# concurrency 32, and the time to first byte of 200 streams started 5 ms apart.
#
# Usage: bash bench/stack.sh [ROUNDS]   (default 3; needs `oha`: cargo install oha --locked)
#        LEDGER=off bash bench/stack.sh   the gateway without the spend ledger
#        STREAM=only bash bench/stack.sh  only the streaming part; STREAM=off skips it
#        BIN=path bash bench/stack.sh     another gateway binary
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${1:-3}
requests=${REQUESTS:-50000}

UP=127.0.0.1:18091
GW=127.0.0.1:18090
python3 bench/gateway_config.py config "$work" "$GW" "$UP" "${LEDGER:-on}"

taskset -c 1 target/release/fake-upstream "$UP" --gap-ms 0 &
YARDMASTER_LOG=warn taskset -c 0 "${BIN:-target/release/yardmaster}" serve --config "$work/yardmaster.yaml" &
declare -A pid=([gateway]=$!)
declare -A url=([direct]="http://$UP/v1/chat/completions" [gateway]="http://$GW/v1/chat/completions")
port=18092
for server in axum hyper; do
  for client in reqwest hyper; do
    name="floor-$server-$client"
    taskset -c 0 target/release/floor-proxy "127.0.0.1:$port" "http://$UP/v1/chat/completions" --server "$server" --client "$client" &
    pid[$name]=$!
    url[$name]="http://127.0.0.1:$port/v1/chat/completions"
    port=$((port + 1))
  done
done
names=(direct floor-axum-reqwest floor-axum-hyper floor-hyper-reqwest floor-hyper-hyper gateway)
for _ in $(seq 100); do curl -fs "http://$GW/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

BODY='{"model":"auto","messages":[{"role":"user","content":"Summarise the quarterly report in three bullet points, please."}]}'
run() { # name concurrency requests -> prints "name rps p50_us p99_us non200"
  taskset -c 1 oha --no-tui --output-format json -c "$2" -n "$3" -m POST -H 'content-type: application/json' -d "$BODY" "${url[$1]}" \
    | python3 -c '
import json, sys
r = json.load(sys.stdin); s, p = r["summary"], r["latencyPercentiles"]
bad = sum(n for c, n in r.get("statusCodeDistribution", {}).items() if c != "200")
print(sys.argv[1], round(s["requestsPerSec"]), round(p["p50"] * 1e6), round(p["p99"] * 1e6), bad)' "$1"
}
for n in "${names[@]}"; do run "$n" 4 5000 >/dev/null; done   # warm-up: connections and caches
if [ "${STREAM:-on}" != only ]; then
for r in $(seq "$rounds"); do
  for n in "${names[@]}"; do run "$n" 32 "$requests"; done | sed "s/^/round $r: /" | tee -a "$work/runs"
done
echo "--- mean RPS, and as a share of direct (c=32, $requests requests a run, $rounds rounds)"
python3 - "$work/runs" <<'PY'
import sys, collections
rps = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, _, name, r, *_ = line.split()
    rps[name].append(int(r))
direct = sum(rps["direct"]) / len(rps["direct"])
for name, runs in rps.items():
    mean = sum(runs) / len(runs)
    print(f"{name:<22} {mean:>8.0f} rps  {100 * mean / direct:5.1f}% of direct  runs {runs}")
PY
echo "--- concurrency 1, non-streamed (5,000 requests a run, $rounds rounds): p50 and p99, us"
for r in $(seq "$rounds"); do
  for n in floor-axum-reqwest gateway; do run "$n" 1 5000; done | sed "s/^/round $r: /" | tee -a "$work/c1"
done
python3 - "$work/c1" <<'PY'
import sys, collections, statistics
p50, p99 = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, _, name, _, a, b, _ = line.split()
    p50[name].append(int(a)); p99[name].append(int(b))
f, g = "floor-axum-reqwest", "gateway"
print(f"added p50 {statistics.median(p50[g]) - statistics.median(p50[f]):.0f} us, "
      f"added p99 {statistics.median(p99[g]) - statistics.median(p99[f]):.0f} us (medians over rounds)")
PY
fi
[ "${STREAM:-on}" = off ] && exit 0

ticks() { # pid -> CPU clock ticks (user + system) of every thread of the process
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)
stream_run() { # name events streams -> prints "name events streams/s us_per_event non200"
  local body="{\"model\":\"auto\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":$2,\"messages\":[{\"role\":\"user\",\"content\":\"Write a long story.\"}]}"
  local before after
  before=$(ticks "${pid[$1]}")
  taskset -c 1 oha --no-tui --output-format json -c 32 -n "$3" -m POST -H 'content-type: application/json' -d "$body" "${url[$1]}" > "$work/oha.json"
  after=$(ticks "${pid[$1]}")
  python3 - "$1" "$2" "$3" "$before" "$after" "$hz" "$work/oha.json" <<'PY'
import json, sys
name, events, n, before, after, hz, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
r = json.load(open(path))
bad = sum(c for s, c in r.get("statusCodeDistribution", {}).items() if s != "200")
# Each stream is `events` content chunks, a usage chunk and [DONE].
per_event = (after - before) / hz / (n * (events + 2)) * 1e6
print(name, events, round(r["summary"]["requestsPerSec"]), f"{per_event:.2f}", bad)
PY
}
echo "--- streaming at concurrency 32: streams/s and CPU per event (us), $rounds rounds"
for events in 64 500; do
  streams=$(( events == 64 ? 3000 : 600 ))
  for n in floor-axum-reqwest gateway; do stream_run "$n" "$events" 200 >/dev/null; done   # warm-up
  for r in $(seq "$rounds"); do
    for n in floor-axum-reqwest gateway; do stream_run "$n" "$events" "$streams"; done | sed "s/^/round $r: /" | tee -a "$work/streams"
  done
done
python3 - "$work/streams" <<'PY'
import sys, collections, statistics
rate, cpu = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, _, name, events, rps, us, _ = line.split()
    rate[(name, events)].append(int(rps)); cpu[(name, events)].append(float(us))
for events in ("64", "500"):
    f, g = ("floor-axum-reqwest", events), ("gateway", events)
    print(f"{events:>3} events: streams/s floor {statistics.mean(rate[f]):.0f}, gateway {statistics.mean(rate[g]):.0f} "
          f"({statistics.mean(rate[g]) / statistics.mean(rate[f]):.2f}); CPU per event floor {statistics.mean(cpu[f]):.2f} us, "
          f"gateway {statistics.mean(cpu[g]):.2f} us ({statistics.mean(cpu[g]) - statistics.mean(cpu[f]):+.2f})")
PY
echo "--- time to first byte, 200 streams of 64 events started 5 ms apart (us)"
BODY64='{"model":"auto","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"Write a long story."}]}'
for n in floor-axum-reqwest gateway; do
  addr=${url[$n]#http://}; addr=${addr%%/*}
  taskset -c 1 target/release/ttfb "$addr" /v1/chat/completions "$BODY64" 200 5 | python3 -c '
import sys, statistics
first = sorted(int(l.split()[0]) for l in sys.stdin if l.strip())
print(sys.argv[1], "streams", len(first), "ttfb p50", first[len(first) // 2], "p99", first[int(len(first) * 0.99) - 1])' "$n"
done
