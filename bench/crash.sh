#!/usr/bin/env bash
# What a crash under heavy load loses: 8 clients send 120 KB prompts through a gateway with the
# ledger and the request log on; after KILL_AT seconds the gateway is killed with SIGKILL. The
# 200 answers the clients received are then counted against the ledger's rows (each answer's row
# was handed to the writer before the answer left). Also reported: the rows waiting and the
# gateway's memory just before the kill. 127.0.0.1 only; bounded in time; stops by itself.
#
# Usage: bash bench/crash.sh   (DURATION=30 KILL_AT=20 PROMPT_KB=120 CLIENTS=8 BIN=target/release/yardmaster)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
BIN=${BIN:-target/release/yardmaster}
DURATION=${DURATION:-30} KILL_AT=${KILL_AT:-20} PROMPT_KB=${PROMPT_KB:-120} CLIENTS=${CLIENTS:-8}
UP=127.0.0.1:18191 GW=127.0.0.1:18192

python3 bench/gateway_config.py config "$work" "$GW" "$UP"
printf 'log: { requests: requests.jsonl }\n' >> "$work/yardmaster.yaml"
python3 - "$work/body.json" "$PROMPT_KB" <<'PY'
import json, sys
words = "the quarterly report shows revenue growth across every region and segment "
text = (words * (int(sys.argv[2]) * 1024 // len(words) + 1))[: int(sys.argv[2]) * 1024]
json.dump({"model": "auto", "messages": [{"role": "user", "content": text}]}, open(sys.argv[1], "w"))
PY

taskset -c 1 target/release/fake-upstream "$UP" &
YARDMASTER_LOG=warn "$BIN" serve --config "$work/yardmaster.yaml" &
gw=$!
for _ in $(seq 100); do curl -fs "http://$GW/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

oha --no-tui --output-format json -c "$CLIENTS" -z "${DURATION}s" -m POST -H 'content-type: application/json' \
  -D "$work/body.json" "http://$GW/v1/chat/completions" > "$work/oha.json" &
load=$!
sleep "$KILL_AT"
pending=$(curl -fs "http://$GW/metrics" | awk '/^yardmaster_ledger_pending/ {print $2}')
rss=$(awk '/VmRSS/ {print $2 / 1024 " MB"}' "/proc/$gw/status")
kill -9 "$gw"
wait "$load" || true
python3 - "$work/oha.json" "$work/yardmaster.db" "$work/requests.jsonl" "$pending" "$rss" "$KILL_AT" <<'PY'
import json, os, sqlite3, sys
r = json.load(open(sys.argv[1]))
ok = int(r.get("statusCodeDistribution", {}).get("200", 0))
rows = sqlite3.connect(sys.argv[2]).execute("select count(*) from requests").fetchone()[0]
lines = sum(1 for _ in open(sys.argv[3])) if os.path.exists(sys.argv[3]) else 0
rate = ok / float(sys.argv[6])
print(f"answers received (200): {ok}   ledger rows after kill -9: {rows}   lost: {ok - rows}")
print(f"that is {rate:.0f} answers/s: the rows lost are {1000 * (ok - rows) / rate:.0f} ms of answers (the writer commits 10 ms after the first row of a batch)")
print(f"just before the kill: {sys.argv[4]} rows waiting, gateway RSS {sys.argv[5]}; request-log lines written: {lines}")
PY
