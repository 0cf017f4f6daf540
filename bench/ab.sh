#!/usr/bin/env bash
# A/B two gateway binaries side by side, on loopback (127.0.0.1 only; every run is bounded).
#
# Both serve the same 100-rule policy (bench/gateway_config.py) from directories of their own, with the
# ledger on, pinned to core 0; oha and the fake upstream run on core 1. Rounds alternate A and B so
# that the machine's drift hits both, and each round measures concurrency 32 (RPS) and concurrency 1
# (p50 and p99). The summary gives B as a ratio of A, and the noise of the same rounds: each
# binary's round-to-round coefficient of variation and the spread of the per-round ratios.
#
# Usage: bash bench/ab.sh A_BINARY B_BINARY [ROUNDS]   (default 4; needs `oha`)
#        TRACES=1 bash bench/ab.sh A B   both export traces to a local OTLP sink (a fake-upstream)
#   e.g.  git stash; cargo build --release; cp target/release/yardmaster /tmp/a
#         git stash pop; cargo build --release; bash bench/ab.sh /tmp/a target/release/yardmaster
set -euo pipefail
cd "$(dirname "$0")/.."
command -v oha >/dev/null || { echo "install oha first: cargo install oha --locked" >&2; exit 2; }
[ $# -ge 2 ] || { echo "usage: bash bench/ab.sh A_BINARY B_BINARY [ROUNDS]" >&2; exit 2; }
a=$1 b=$2 rounds=${3:-4}
cargo build --release --bin fake-upstream --quiet

UP=127.0.0.1:18711
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 bench/gateway_config.py config "$work/a" 127.0.0.1:18712 "$UP"
python3 bench/gateway_config.py config "$work/b" 127.0.0.1:18713 "$UP"
taskset -c 1 target/release/fake-upstream "$UP" &
if [ -n "${TRACES:-}" ]; then
  taskset -c 1 target/release/fake-upstream 127.0.0.1:18714 &
  for side in a b; do echo 'telemetry: { otlp: { endpoint: "http://127.0.0.1:18714" } }' >>"$work/$side/yardmaster.yaml"; done
fi
YARDMASTER_LOG=warn taskset -c 0 "$a" serve --config "$work/a/yardmaster.yaml" &
YARDMASTER_LOG=warn taskset -c 0 "$b" serve --config "$work/b/yardmaster.yaml" &
declare -A url=([a]="http://127.0.0.1:18712/v1/chat/completions" [b]="http://127.0.0.1:18713/v1/chat/completions")
for side in a b; do
  for _ in $(seq 100); do curl -fs "${url[$side]%/v1/*}/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done

BODY='{"model":"auto","messages":[{"role":"user","content":"Summarise the quarterly report in three bullet points, please."}]}'
run() { # side concurrency requests -> "rps p50_us p99_us non200"
  taskset -c 1 oha --no-tui --output-format json -c "$2" -n "$3" -m POST -H 'content-type: application/json' -d "$BODY" "${url[$1]}" \
    | python3 -c '
import json, sys
r = json.load(sys.stdin); s, p = r["summary"], r["latencyPercentiles"]
bad = sum(n for c, n in r.get("statusCodeDistribution", {}).items() if c != "200")
print(round(s["requestsPerSec"]), round(p["p50"] * 1e6), round(p["p99"] * 1e6), bad)'
}
for side in a b; do run "$side" 4 5000 >/dev/null; done   # warm-up
for r in $(seq "$rounds"); do
  for side in a b; do
    echo "round $r $side c32 $(run "$side" 32 "${REQUESTS:-40000}") c1 $(run "$side" 1 10000)"
  done
done | tee "$work/runs"
python3 - "$work/runs" <<'PY'
import sys, statistics as st
rows = {"a": [], "b": []}
for line in open(sys.argv[1]):
    f = line.split()
    rows[f[2]].append((int(f[4]), int(f[10]), int(f[11]), int(f[7]) + int(f[12])))
def summary(side):
    r = rows[side]
    return st.mean(x[0] for x in r), st.median(x[1] for x in r), st.median(x[2] for x in r), sum(x[3] for x in r)
a, b = summary("a"), summary("b")
for name, s in (("A", a), ("B", b)):
    print(f"{name}: c=32 {s[0]:8.0f} rps (mean)   c=1 p50 {s[1]:5.0f} us  p99 {s[2]:5.0f} us (medians)   non-200: {s[3]}")
print(f"B/A: c=32 RPS {b[0] / a[0]:.3f}   c=1 p50 {b[1] / a[1]:.3f}   c=1 p99 {b[2] / a[2]:.3f}")
# Noise, from the same rounds: how much one binary moves between its own rounds (coefficient of
# variation), and the spread of the round-by-round ratios. A ratio inside that spread is noise.
def cv(xs):
    return st.pstdev(xs) / st.mean(xs) if len(xs) > 1 else 0.0
per_round = [(y[0] / x[0], y[2] / x[2]) for x, y in zip(rows["a"], rows["b"])]
print(f"noise: c=32 RPS round-to-round CV A {cv([x[0] for x in rows['a']]):.3f} B {cv([x[0] for x in rows['b']]):.3f}; "
      f"c=1 p99 CV A {cv([x[2] for x in rows['a']]):.3f} B {cv([x[2] for x in rows['b']]):.3f}")
print(f"noise: per-round B/A c=32 RPS {min(r[0] for r in per_round):.3f}..{max(r[0] for r in per_round):.3f}   "
      f"c=1 p99 {min(r[1] for r in per_round):.3f}..{max(r[1] for r in per_round):.3f}")
PY
