#!/usr/bin/env bash
# What each front door adds over chat completions (SPEC §12), on loopback (127.0.0.1 only; every
# run is bounded): one gateway with the 100-rule policy in front of the zero-latency fake upstream,
# the same question through `/v1/chat/completions`, `/v1/responses` and `/v1/messages`, in
# alternating rounds at concurrency 32. Non-streamed: requests/s of each door and its ratio to
# chat. Streamed (64 events a stream): streams/s and the gateway's CPU per event (from /proc).
#
# Usage: bash bench/doors.sh [ROUNDS]   (default 3; needs `oha`: cargo install oha --locked)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
GW=127.0.0.1:18490
start_gateway 127.0.0.1:18491 "$GW" on

python3 - "$GW" "$gw" "${1:-3}" "${REQUESTS:-30000}" <<'PY'
import json, os, statistics, subprocess, sys
gw, pid, rounds, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
q = "Summarise the quarterly report in three bullet points, please."
def bodies(stream, tokens):
    extra = {"stream": True} if stream else {}
    return {
        "chat": ("/v1/chat/completions", {"model": "auto", "max_tokens": tokens, "messages": [{"role": "user", "content": q}], **extra,
                                          **({"stream_options": {"include_usage": True}} if stream else {})}),
        "responses": ("/v1/responses", {"model": "auto", "max_output_tokens": tokens, "input": q, **extra}),
        "messages": ("/v1/messages", {"model": "auto", "max_tokens": tokens, "messages": [{"role": "user", "content": q}], **extra}),
    }
def ticks():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
def run(path, body, count):
    t0 = ticks()
    out = subprocess.run(["taskset", "-c", "1", "oha", "--no-tui", "--output-format", "json", "-c", "32", "-n", str(count), "-m", "POST",
                          "-H", "content-type: application/json", "-d", json.dumps(body), f"http://{gw}{path}"], capture_output=True, check=True).stdout
    r = json.loads(out)
    bad = sum(c for s, c in r.get("statusCodeDistribution", {}).items() if s != "200")
    assert bad == 0, f"{path}: {bad} answers were not 200"
    return r["summary"]["requestsPerSec"], (ticks() - t0) / os.sysconf("SC_CLK_TCK")
for label, stream, count in [("non-streamed", False, n), ("streamed, 64 events", True, n // 10)]:
    rps, cpu = {k: [] for k in ("chat", "responses", "messages")}, {k: [] for k in ("chat", "responses", "messages")}
    for door, (path, body) in bodies(stream, 64).items():
        run(path, body, 1000 if not stream else 200)  # warm-up
    for r in range(rounds):
        for door, (path, body) in bodies(stream, 64).items():
            x, c = run(path, body, count)
            rps[door].append(x); cpu[door].append(c)
            print(f"round {r + 1}: {label} {door} {x:.0f} rps")
    base = statistics.mean(rps["chat"])
    for door in rps:
        m = statistics.mean(rps[door])
        line = f"{label}: {door} {m:.0f} rps ({m / base:.2f}x chat)"
        if stream:
            # 64 content events, plus the usage chunk and [DONE], per stream.
            per_event = statistics.mean(cpu[door]) / (count * 66) * 1e6
            line += f", gateway CPU {per_event:.2f} us per event"
        print(line)
PY
