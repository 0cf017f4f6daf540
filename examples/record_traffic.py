#!/usr/bin/env python3
"""Records examples/traffic.jsonl, the sample request log for `yardmaster simulate`.

Starts `yardmaster serve` on the quickstart catalog (mock providers, no keys needed) with three
demo keys and the request log on (prompt text kept), sends a fixed mix of 240 requests, stops the
gateway with SIGTERM (which commits the last records) and copies the log here. Stdlib only.

    cargo build && python3 examples/record_traffic.py
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "target" / "debug" / "yardmaster"
KEYS = {"premium": "sk-demo-premium", "free": "sk-demo-free", "standard": "sk-demo-standard"}


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def config(d):
    quick = (ROOT / "examples" / "quickstart.yaml").read_text()
    quick = quick.replace("policy: ../rules/main.route", f"policy: {ROOT / 'rules' / 'main.route'}")
    # Fast mocks: the log is about routing, not latency.
    for ms in ("20ms", "40ms", "30ms", "10ms"):
        quick = quick.replace(f"latency: {ms}", "latency: 1ms")
    return quick + f"""
keys:
  - {{ name: team-premium, key_sha256: {sha(KEYS['premium'])}, tier: premium, budget: {{ usd: 50, per: month }} }}
  - {{ name: team-free, key_sha256: {sha(KEYS['free'])}, tier: free }}
  - {{ name: team-standard, key_sha256: {sha(KEYS['standard'])} }}
log: {{ requests: requests.jsonl, prompts: true }}
storage: {{ sqlite: ":memory:" }}
reload: {{ require_tests: false }}
"""


def requests():
    """A fixed mix: plain questions, code, explicit models, embeddings, a leaked credential."""
    plain = ["What is the capital of France?", "Summarise this paragraph for me.", "Write a haiku about trains.",
             "Explain the trade-off between latency and throughput.", "Prove that the square root of 2 is irrational, step by step."]
    code = ["Why does this fail?\nTraceback (most recent call last):\n  File \"x.py\"", "```rust\nfn main() { println!(\"hi\"); }\n```",
            "SELECT name FROM users WHERE id = 1; is slow", "#include <stdio.h> gives a warning"]
    out = []
    for i in range(240):
        tier = ["standard", "free", "premium", "standard"][i % 4]
        user = f"user-{i % 17}"
        if i % 20 == 7:
            out.append((tier, "embeddings", {"model": "auto", "input": f"document {i}"}))
        elif i % 30 == 11:
            out.append((tier, "chat", {"model": "auto", "messages": [{"role": "user", "content": "my key is AKIAABCDEFGHIJKLMNOP"}]}))
        elif i % 9 == 4:
            model = ["gpt-4o", "claude-haiku", "llama-70b"][i % 3]
            out.append((tier, "chat", {"model": model, "messages": [{"role": "user", "content": plain[i % len(plain)]}]}))
        elif i % 5 == 2:
            out.append((tier, "chat", {"model": "auto", "user": user, "messages": [{"role": "user", "content": code[i % len(code)]}]}))
        else:
            msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": plain[i % len(plain)]}]
            body = {"model": "auto", "user": user, "messages": msgs}
            if i % 3 == 0:
                body["max_tokens"] = 256
            out.append((tier, "chat", body))
    return out


def main():
    d = Path(tempfile.mkdtemp())
    (d / "yardmaster.yaml").write_text(config(d))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(BINARY), "serve", "--config", str(d / "yardmaster.yaml"), "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/readyz", timeout=1)
            break
        except Exception:
            time.sleep(0.05)
    for tier, endpoint, body in requests():
        path = "/v1/embeddings" if endpoint == "embeddings" else "/v1/chat/completions"
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {KEYS[tier]}", "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=10).read()
        except urllib.error.HTTPError as e:
            e.read()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=35)
    shutil.copy(d / "requests.jsonl", ROOT / "examples" / "traffic.jsonl")
    print(f"wrote examples/traffic.jsonl ({sum(1 for _ in open(d / 'requests.jsonl'))} requests)")


if __name__ == "__main__":
    main()
