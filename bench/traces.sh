#!/usr/bin/env bash
# What tracing costs (SPEC §13), on loopback (127.0.0.1 only; every run is bounded).
#
# Two gateways with the same 100-rule policy in front of the same zero-latency fake upstream: one
# without `telemetry`, one exporting every request's spans (a request span and an attempt span)
# over OTLP/HTTP to a local sink (a second fake-upstream, which answers `/v1/traces`). In
# alternating rounds at concurrency 32 (non-streaming), each is loaded with oha; the script
# prints each run, the mean requests/s of each and their ratio, and the traced gateway's
# exported and dropped span counts (so a ratio bought by dropping spans shows), the CPU each
# gateway spent per request (from /proc, all its threads, over the measured rounds) and the
# CPU the sink spent: the sink shares core 1 with oha and the upstream, so part of the ratio is
# the collector's own work taken from the load generator.
#
# Usage: bash bench/traces.sh [ROUNDS]   (default 3; REQUESTS=N per run, default 30000)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${1:-3}
requests=${REQUESTS:-30000}

UP=127.0.0.1:18191 SINK=127.0.0.1:18192 OFF=127.0.0.1:18193 ON=127.0.0.1:18194
python3 bench/gateway_config.py config "$work/off" "$OFF" "$UP" off
python3 bench/gateway_config.py config "$work/on" "$ON" "$UP" off
echo "telemetry: { otlp: { endpoint: \"http://$SINK\" } }" >>"$work/on/yardmaster.yaml"

taskset -c 1 target/release/fake-upstream "$UP" --gap-ms 0 &
taskset -c 1 target/release/fake-upstream "$SINK" &
sink=$!
YARDMASTER_LOG=warn taskset -c 0 target/release/yardmaster serve --config "$work/off/yardmaster.yaml" &
declare -A pid=([off]=$!)
YARDMASTER_LOG=warn taskset -c 0 target/release/yardmaster serve --config "$work/on/yardmaster.yaml" &
pid[on]=$!
cpu() { # pid -> user+system CPU seconds so far
  python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$1"
}
for gw in "$OFF" "$ON"; do
  for _ in $(seq 100); do curl -fs "http://$gw/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done

BODY='{"model":"auto","messages":[{"role":"user","content":"Summarise the quarterly report in three bullet points, please."}]}'
run() { # name addr concurrency requests -> "name rps p50_us p99_us non200"
  taskset -c 1 oha --no-tui --output-format json -c "$3" -n "$4" -m POST -H 'content-type: application/json' -d "$BODY" "http://$2/v1/chat/completions" \
    | python3 -c '
import json, sys
r = json.load(sys.stdin); s, p = r["summary"], r["latencyPercentiles"]
bad = sum(n for c, n in r.get("statusCodeDistribution", {}).items() if c != "200")
print(sys.argv[1], round(s["requestsPerSec"]), round(p["p50"] * 1e6), round(p["p99"] * 1e6), bad)' "$1"
}
run off "$OFF" 4 3000 >/dev/null
run on "$ON" 4 3000 >/dev/null
declare -A cpu0=([off]=$(cpu "${pid[off]}") [on]=$(cpu "${pid[on]}") [sink]=$(cpu "$sink"))
for r in $(seq "$rounds"); do
  { run off "$OFF" 32 "$requests"; run on "$ON" 32 "$requests"; } | sed "s/^/round $r: /" | tee -a "$work/runs"
done
sleep 1.5   # the last batch leaves within a second
for n in off on; do echo "cpu $n $(cpu "${pid[$n]}") ${cpu0[$n]}" >>"$work/runs"; done
echo "cpu sink $(cpu "$sink") ${cpu0[sink]}" >>"$work/runs"
spans=$(curl -fs "http://$ON/metrics" | grep -E '^yardmaster_trace_spans_(exported|dropped)_total' | tr '\n' ' ')
echo "--- c=32, $requests requests a run, $rounds rounds; traced gateway: $spans"
python3 - "$work/runs" "$requests" <<'PY'
import sys, collections
rps, p99, cpu = collections.defaultdict(list), collections.defaultdict(list), {}
for line in open(sys.argv[1]):
    if line.startswith("cpu "):
        _, name, after, before = line.split()
        cpu[name] = float(after) - float(before)
        continue
    _, _, name, r, _, q, bad = line.split()
    assert bad == "0", line
    rps[name].append(int(r)); p99[name].append(int(q))
mean = {n: sum(v) / len(v) for n, v in rps.items()}
sent = {n: len(v) * int(sys.argv[2]) for n, v in rps.items()}
for n in ("off", "on"):
    per = 1e6 * cpu[n] / sent[n]
    print(f"tracing {n:<3} {mean[n]:>8.0f} rps  p99 {sum(p99[n]) / len(p99[n]):>6.0f} us  CPU {per:5.1f} us/request  runs {rps[n]}")
print(f"the sink: {1e6 * cpu['sink'] / sent['on']:.1f} us of CPU per traced request (on core 1, with oha)")
print(f"ratio on/off: {mean['on'] / mean['off']:.3f} (requests/s), {cpu['on'] / cpu['off']:.3f} (gateway CPU per request)")
PY
