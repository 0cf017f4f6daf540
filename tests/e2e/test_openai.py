"""End to end with the official `openai` Python package against a real `yardmaster serve` on
127.0.0.1 (an ephemeral port), routed to the built-in mock provider."""

import json
import time
import urllib.request

import openai
import pytest
from gateway import Gateway
import sqlite3
from prometheus_client.parser import text_string_to_metric_families

KEY = "sk-e2e-" + "x" * 20

CONFIG = """
listen: 127.0.0.1:0
policy: main.route
providers:
  fast: { kind: mock, latency: 5ms }
  slow: { kind: mock, latency: 5ms, tokens_per_second: 20 }
models:
  gpt-4o-mini: { provider: fast, price: { input: 0.15, output: 0.6 }, context: 128000 }
  streamer:    { provider: slow, price: { input: 0.15, output: 0.6 }, context: 128000 }
  embedder:    { provider: fast, endpoint: embeddings, price: { input: 0.02 }, context: 8000 }
keys:
  - { name: e2e, key_env: E2E_KEY, tier: free }
"""

POLICY = """
rule "no secrets" {
  when prompt contains "password"
  then deny 403 "no passwords, please"
}

rule "explicit" {
  when request.model != "auto"
  then requested
}

default {
  then gpt-4o-mini
}
"""


@pytest.fixture(scope="module")
def gateway():
    g = Gateway(CONFIG, POLICY, {"E2E_KEY": KEY})
    yield g.url, g.log, g.dir
    g.stop()


def client(url, key=KEY):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def test_plain_completion(gateway):
    url = gateway[0]
    r = client(url).chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}])
    assert r.model == "gpt-4o-mini"
    assert r.choices[0].message.content.startswith("This is a mock reply")
    assert r.usage.completion_tokens > 0


def test_streamed_chunks_arrive_one_by_one(gateway):
    url = gateway[0]
    stream = client(url).chat.completions.create(
        model="streamer", messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    arrivals = []
    text = ""
    start = time.monotonic()
    for chunk in stream:
        assert chunk.model == "streamer"
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
            text += chunk.choices[0].delta.content
    assert len(arrivals) >= 10
    # 20 tokens/s: the upstream is still sending when the first chunks reach the client.
    assert arrivals[-1] - arrivals[0] > 0.5, arrivals
    assert arrivals[0] < arrivals[-1] / 2, arrivals
    assert text.startswith("This is a mock reply")


def test_errors_are_the_sdks_own_exceptions(gateway):
    url = gateway[0]
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(url).chat.completions.create(model="auto", messages=[{"role": "user", "content": "my password is x"}])
    assert e.value.status_code == 403
    assert "no passwords" in str(e.value)
    with pytest.raises(openai.AuthenticationError):
        client(url, key="sk-wrong").chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        client(url).chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client(url).chat.completions.create(model="auto", messages="not a list")


def test_models_lists_auto_and_the_catalog(gateway):
    url = gateway[0]
    ids = [m.id for m in client(url).models.list()]
    assert ids[0] == "auto" and "gpt-4o-mini" in ids


def test_no_key_or_prompt_in_the_log(gateway):
    url, log = gateway[0], gateway[1]
    client(url).chat.completions.create(model="auto", messages=[{"role": "user", "content": "tell me a SECRET-PROMPT-42"}])
    time.sleep(0.2)
    text = log.read_text()
    assert KEY not in text
    assert "SECRET-PROMPT-42" not in text
    assert "yardmaster is listening" in text


def test_sigterm_drains_requests_in_flight():
    g = Gateway(CONFIG, POLICY, {"E2E_KEY": KEY})
    url = g.url
    stream = client(url).chat.completions.create(
        model="streamer", messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    chunks = iter(stream)
    first = next(chunks)
    g.proc.terminate()  # SIGTERM while the stream is in flight
    rest = list(chunks)
    assert first.model == "streamer"
    assert len(rest) >= 10, "the stream in flight finished after SIGTERM"
    assert g.proc.wait(timeout=35) == 0
    with pytest.raises(openai.APIConnectionError):
        client(url).chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])


def test_busy_poll_serves_and_sleeps_when_idle():
    g = Gateway(CONFIG, POLICY, {"E2E_KEY": KEY}, args=["--busy-poll", "2ms"])
    try:
        c = client(g.url)
        for _ in range(20):
            r = c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}])
            assert r.choices[0].message.content.startswith("This is a mock reply")
        chunks = list(c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], stream=True))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text.startswith("This is a mock reply")
        # Past the window the pollers sleep: an idle second costs next to no CPU (a spinning
        # runtime would use the whole second).
        time.sleep(0.1)
        before = g.cpu_seconds()
        time.sleep(1.0)
        assert g.cpu_seconds() - before < 0.2
    finally:
        assert g.stop() == 0


def test_streamed_usage_carries_its_cost(gateway):
    url = gateway[0]
    stream = client(url).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    # $0.15 in and $0.60 out per million tokens, in USD.
    expected = (usage.prompt_tokens * 0.15 + usage.completion_tokens * 0.6) / 1e6
    assert abs(usage.model_extra["cost"] - expected) < 1e-6
    raw = client(url).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    r = raw.parse()
    assert float(raw.headers["x-yardmaster-cost-usd"]) == pytest.approx(r.usage.model_extra["cost"], abs=1e-6)


def test_metrics_parse_as_prometheus_text(gateway):
    url = gateway[0]
    for _ in range(3):
        client(url).chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}])
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["yardmaster_request_duration_seconds"].type == "histogram"
    assert families["yardmaster_upstream_ttfb_seconds"].type == "histogram"
    requests = families["yardmaster_requests"]
    assert requests.type == "counter"
    ok = sum(s.value for s in requests.samples
             if s.name == "yardmaster_requests_total" and s.labels["status"] == "200" and s.labels["model"] == "gpt-4o-mini")
    assert ok >= 3
    count = [s.value for s in families["yardmaster_request_duration_seconds"].samples
             if s.name.endswith("_count") and s.labels["model"] == "gpt-4o-mini"]
    assert count and count[0] >= 3
    tokens = {s.labels["direction"]: s.value for s in families["yardmaster_tokens"].samples
              if s.labels.get("model") == "gpt-4o-mini"}
    assert tokens["in"] > 0 and tokens["out"] > 0
    cost = [s.value for s in families["yardmaster_cost_usd"].samples if s.labels.get("model") == "gpt-4o-mini"]
    assert cost and cost[0] > 0
    for name in ["yardmaster_fallbacks", "yardmaster_retries", "yardmaster_breaker_state",
                 "yardmaster_policy_reloads", "yardmaster_policy_info", "yardmaster_ledger_records"]:
        assert name in families, name
    assert families["yardmaster_policy_info"].samples[0].labels["version"]


def test_sigterm_commits_every_request_to_the_ledger():
    g = Gateway(CONFIG, POLICY, {"E2E_KEY": KEY})
    url = g.url
    ids = set()
    for i in range(25):
        raw = client(url).chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": f"hello {i}"}]
        )
        ids.add(raw.headers["x-request-id"])
    assert g.stop() == 0
    db = sqlite3.connect(g.dir / "yardmaster.db")
    rows = db.execute("SELECT id, key, status, cost_micros FROM requests").fetchall()
    assert {r[0] for r in rows} == ids
    assert all(r[1] == "e2e" and r[2] == 200 and r[3] > 0 for r in rows)


CACHED_POLICY = """
rule "faq" {
  when prompt.last starts_with "FAQ:"
  then gpt-4o-mini
  cache 10m
}

rule "support" {
  when header("x-app") == "support"
  then gpt-4o-mini
  cache 1h similar 90% using embedder
}

default {
  then gpt-4o-mini
}
"""


def test_a_cached_answer_is_read_by_the_sdk_streamed_and_not():
    g = Gateway(CONFIG, CACHED_POLICY, {"E2E_KEY": KEY})
    try:
        c = client(g.url)
        ask = [{"role": "user", "content": "FAQ: how do refunds work?"}]
        first = c.chat.completions.with_raw_response.create(model="auto", messages=ask)
        assert first.headers["x-yardmaster-cache"] == "miss"
        answer = first.parse().choices[0].message.content
        again = c.chat.completions.with_raw_response.create(model="auto", messages=ask)
        assert again.headers["x-yardmaster-cache"] == "hit"
        assert again.headers["x-yardmaster-attempts"] == "0"
        assert again.parse().choices[0].message.content == answer
        # Streamed, the hit is an event stream the SDK reads as any other.
        stream = c.chat.completions.create(model="auto", messages=ask, stream=True,
                                           stream_options={"include_usage": True})
        text, usage = "", None
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
        assert text == answer
        assert usage is not None and usage.completion_tokens > 0
    finally:
        g.stop()


def test_a_close_enough_question_is_a_semantic_hit_read_by_the_sdk():
    g = Gateway(CONFIG, CACHED_POLICY, {"E2E_KEY": KEY})
    try:
        c = client(g.url).with_options(default_headers={"x-app": "support"})
        first = c.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "How do I reset my password?"}])
        assert first.headers["x-yardmaster-cache"] == "miss"
        answer = first.parse().choices[0].message.content
        close = c.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "How do I reset my password please?"}])
        assert close.headers["x-yardmaster-cache"] == "hit"
        assert 0.9 <= float(close.headers["x-yardmaster-cache-similarity"]) < 1.0
        assert close.parse().choices[0].message.content == answer
        far = c.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "What are your opening hours?"}])
        assert far.headers["x-yardmaster-cache"] == "miss"
    finally:
        g.stop()


def test_structured_output_parses_with_the_sdks_parse_helper(gateway):
    """The mock answers a JSON schema with JSON that validates against it (SPEC §15), so
    `chat.completions.parse` works offline, nested models and lists included."""
    from typing import List, Literal

    import pydantic

    class Step(pydantic.BaseModel):
        explanation: str
        output: str

    class Solution(pydantic.BaseModel):
        steps: List[Step]
        final_answer: str
        confidence: Literal["low", "high"]
        attempts: int

    url = gateway[0]
    r = client(url).chat.completions.parse(
        model="auto", messages=[{"role": "user", "content": "solve 8x + 7 = -23"}], response_format=Solution
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Solution)
    assert parsed.steps and parsed.confidence == "low"
    # `json_object` gets a JSON object.
    r = client(url).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "answer in JSON"}], response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)
