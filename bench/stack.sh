#!/usr/bin/env bash
# What each layer of the stack costs, on loopback (127.0.0.1 only; every run is bounded).
#
# At concurrency 32 (non-streaming), in alternating rounds: the fake upstream directly, then the
# floor proxy (bench/floor_proxy.rs) with each server (axum, bare hyper) and client (reqwest, bare
# hyper-util), then the gateway with a 100-rule policy. Proxies are pinned to core 0, oha and the
# upstream to core 1, as in bench/load.sh. Prints each run and, per target, the mean RPS as a share
# of the direct runs of the same rounds.
#
# Usage: bash bench/stack.sh [ROUNDS]   (default 3; needs `oha`: cargo install oha --locked)
#        LEDGER=off bash bench/stack.sh   the gateway without the spend ledger
set -euo pipefail
cd "$(dirname "$0")/.."
command -v oha >/dev/null || { echo "install oha first: cargo install oha --locked" >&2; exit 2; }
cargo build --release --bins --quiet
rounds=${1:-3}
requests=${REQUESTS:-50000}

UP=127.0.0.1:18091
GW=127.0.0.1:18090
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 bench/gateway_config.py config "$work" "$GW" "$UP" "${LEDGER:-on}"

taskset -c 1 target/release/fake-upstream "$UP" &
YARDMASTER_LOG=warn taskset -c 0 target/release/yardmaster serve --config "$work/yardmaster.yaml" &
declare -A url=([direct]="http://$UP/v1/chat/completions" [gateway]="http://$GW/v1/chat/completions")
port=18092
for server in axum hyper; do
  for client in reqwest hyper; do
    name="floor-$server-$client"
    taskset -c 0 target/release/floor-proxy "127.0.0.1:$port" "http://$UP/v1/chat/completions" --server "$server" --client "$client" &
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
