#!/usr/bin/env bash
# What the answer cache buys, on loopback (127.0.0.1 only; every run is bounded).
#
# 1. Hits against proxied misses, same gateway, same run: the 100-rule policy of the other
#    benchmarks with one rule in front that caches (`cache 1h`, selected by a header), against
#    the same request sent to a rule without a cache (a proxied call to the zero-latency fake
#    upstream, which is what a miss costs). Alternating rounds at concurrency 32; requests/s and
#    p50 of each, and the ratio.
# 2. Memory: a gateway with `cache: { max_bytes: 8MiB }` is filled with far more distinct answers
#    than that holds; its RSS idle, after the load of part 1 (one entry), after filling, and the
#    bytes the cache reports holding.
#
# Usage: bash bench/cache.sh [ROUNDS]   (default 3; needs `oha`: cargo install oha --locked)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${1:-3}
requests=${REQUESTS:-50000}
fill=${FILL:-20000}

UP=127.0.0.1:18391
GW=127.0.0.1:18390
python3 bench/gateway_config.py config "$work" "$GW" "$UP" on
{ printf 'rule "cached" {\n  when header("x-bench") == "cached"\n  then fast\n  cache 1h\n}\n\n'; cat "$work/policy.route"; } > "$work/p2"
mv "$work/p2" "$work/policy.route"
printf 'cache: { max_bytes: 8MiB }\n' >> "$work/yardmaster.yaml"

taskset -c 1 target/release/fake-upstream "$UP" --gap-ms 0 &
YARDMASTER_LOG=warn taskset -c 0 target/release/yardmaster serve --config "$work/yardmaster.yaml" &
gw=$!
for _ in $(seq 100); do curl -fs "http://$GW/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
rss() { awk '/VmRSS/ { print $2 }' "/proc/$gw/status"; }
idle=$(rss)

BODY='{"model":"auto","messages":[{"role":"user","content":"Summarise the quarterly report in three bullet points, please."}]}'
run() { # label header -> "label rps p50_us p99_us non200"
  taskset -c 1 oha --no-tui --output-format json -c 32 -n "$requests" -m POST -H 'content-type: application/json' \
    -H "x-bench: $2" -d "$BODY" "http://$GW/v1/chat/completions" | python3 -c '
import json, sys
r = json.load(sys.stdin); s, p = r["summary"], r["latencyPercentiles"]
bad = sum(n for c, n in r.get("statusCodeDistribution", {}).items() if c != "200")
print(sys.argv[1], round(s["requestsPerSec"]), round(p["p50"] * 1e6), round(p["p99"] * 1e6), bad)' "$1"
}
curl -fs "http://$GW/v1/chat/completions" -H 'x-bench: cached' -d "$BODY" >/dev/null   # the one miss
run hit cached >/dev/null; run proxied none >/dev/null                                  # warm-up
for r in $(seq "$rounds"); do
  { run hit cached; run proxied none; } | sed "s/^/round $r: /" | tee -a "$work/runs"
done
echo "--- hits against proxied misses (c=32, $requests requests a run, $rounds rounds)"
python3 - "$work/runs" <<'PY'
import sys, collections, statistics
rps, p50 = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, _, name, r, a, _, _ = line.split()
    rps[name].append(int(r)); p50[name].append(int(a))
h, m = statistics.mean(rps["hit"]), statistics.mean(rps["proxied"])
print(f"hit {h:.0f} rps, p50 {statistics.median(p50['hit'])} us; proxied {m:.0f} rps, p50 {statistics.median(p50['proxied'])} us; "
      f"hit/proxied {h / m:.2f}x requests/s")
PY

echo "--- memory: $fill distinct answers into an 8 MiB cache"
loaded=$(rss)
python3 - "$GW" "$fill" <<'PY'
import http.client, json, sys, threading
host, port = sys.argv[1].split(":"); n = int(sys.argv[2])
def worker(start):
    c = http.client.HTTPConnection(host, int(port))
    for i in range(start, n, 8):
        body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": f"distinct question number {i} " + "x" * 200}]})
        c.request("POST", "/v1/chat/completions", body, {"x-bench": "cached", "content-type": "application/json"})
        c.getresponse().read()
ts = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
held=$(curl -fs "http://$GW/metrics" | awk '/^yardmaster_cache_bytes / { print $2 }')
after=$(rss)
echo "RSS idle $((idle / 1024)) MiB, after the load above (one entry) $((loaded / 1024)) MiB, after filling $((after / 1024)) MiB (+$(((after - loaded) / 1024)) MiB over the loaded figure); the cache holds $((held / 1024)) KiB of its 8192 KiB bound"
