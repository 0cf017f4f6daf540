"""End to end through the translating providers: the official `openai` client talks to a real
`yardmaster serve` on 127.0.0.1, which talks to a fake Anthropic Messages API, a fake Gemini API
and a fake OpenAI-compatible API (stdlib HTTP servers in this file, on ephemeral ports). Streams
arrive chunk by chunk with tool calls, and the fakes check that each key travels in its own
header. Every front door (chat completions, Responses, Anthropic Messages) meets every one of
these provider kinds, plain and streamed."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest
from gateway import Gateway

KEY = "sk-native-e2e-" + "y" * 16
ANTHROPIC_KEY = "sk-ant-e2e-SECRET"
GEMINI_KEY = "AIza-e2e-SECRET"
SEEN = []


class Fake(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_sse(self, events, done=False):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for kind, data in events:
            frame = (f"event: {kind}\n" if kind else "") + f"data: {json.dumps(data)}\n\n"
            self.wfile.write(frame.encode())
            self.wfile.flush()
            time.sleep(0.05)  # slow enough to see chunks arrive one by one
        if done:
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        self.close_connection = True

    def send_json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        SEEN.append((self.path, dict(self.headers), body))
        if self.path == "/v1/messages":
            return self.anthropic(body)
        if self.path == "/v1/chat/completions":
            return self.openai(body)
        return self.gemini(body)

    def openai(self, body):
        base = {"id": "chatcmpl-e2e", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return self.send_json({**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello from fake GPT."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}})
        events = [("", {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
                  for w in ["Un ", "deux ", "trois."]]
        events.append(("", {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        events.append(("", {**base, "object": "chat.completion.chunk", "choices": [],
                            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}))
        self.send_sse(events, done=True)


    def anthropic(self, body):
        if self.headers.get("x-api-key") != ANTHROPIC_KEY or not self.headers.get("anthropic-version"):
            return self.send_json({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}, 401)
        if not body.get("stream"):
            return self.send_json({"id": "msg_e2e", "type": "message", "role": "assistant", "model": body["model"],
                                   "content": [{"type": "text", "text": "Hello from fake Claude."}],
                                   "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 5}})
        events = [("message_start", {"type": "message_start", "message": {"id": "msg_s", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
                  ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})]
        for word in ["One ", "two ", "three ", "four ", "five."]:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        if body.get("tools"):
            events.append(("content_block_start", {"type": "content_block_start", "index": 1,
                                                   "content_block": {"type": "tool_use", "id": "toolu_e2e", "name": "get_weather", "input": {}}}))
            for part in ['{"city": ', '"Oslo"}']:
                events.append(("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}}))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": 1}))
        stop = "tool_use" if body.get("tools") else "end_turn"
        events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 12}}))
        events.append(("message_stop", {"type": "message_stop"}))
        self.send_sse(events)

    def gemini(self, body):
        if self.headers.get("x-goog-api-key") != GEMINI_KEY or "key=" in self.path:
            return self.send_json({"error": {"code": 403, "message": "bad key", "status": "PERMISSION_DENIED"}}, 403)
        if ":generateContent" in self.path:
            return self.send_json({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello from fake Gemini."}]}, "finishReason": "STOP"}],
                                   "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 4, "totalTokenCount": 12}})
        events = [("", {"candidates": [{"content": {"role": "model", "parts": [{"text": w}]}}]}) for w in ["Eins ", "zwei ", "drei ", "vier."]]
        last = {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 9, "totalTokenCount": 17}}
        if body.get("tools"):
            last["candidates"][0]["content"]["parts"] = [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]
        events.append(("", last))
        self.send_sse(events)


@pytest.fixture(scope="module")
def gateway():
    fake = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    fake_url = f"http://127.0.0.1:{fake.server_address[1]}"
    config = f"""
listen: 127.0.0.1:0
policy: main.route
providers:
  anthropic: {{ kind: anthropic, base_url: "{fake_url}", api_key_env: E2E_ANTHROPIC_KEY }}
  gemini:    {{ kind: gemini,    base_url: "{fake_url}", api_key_env: E2E_GEMINI_KEY }}
  oai:       {{ kind: openai,    base_url: "{fake_url}/v1" }}
models:
  claude: {{ provider: anthropic, id: claude-haiku-4-5, price: {{ input: 1, output: 5 }}, context: 200000, capabilities: [tools] }}
  gemini: {{ provider: gemini,    id: gemini-2.5-flash, price: {{ input: 0.3, output: 2.5 }}, context: 1000000, capabilities: [tools] }}
  gpt:    {{ provider: oai,       id: gpt-fake, price: {{ input: 0.15, output: 0.6 }}, context: 128000 }}
keys:
  - {{ name: e2e, key_env: E2E_KEY }}
storage: {{ sqlite: ":memory:" }}
"""
    policy = 'rule "explicit" {\n  when request.model != "auto"\n  then requested\n}\n\ndefault {\n  then claude -> gemini\n}\n'
    g = Gateway(config, policy, {"E2E_KEY": KEY, "E2E_ANTHROPIC_KEY": ANTHROPIC_KEY, "E2E_GEMINI_KEY": GEMINI_KEY})
    yield g.url, g.log
    g.stop()
    fake.shutdown()


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.mark.parametrize("model", ["claude", "gemini"])
def test_plain_completion_through_each_format(gateway, model):
    url, _ = gateway
    r = client(url).chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
    assert r.model == model
    assert r.choices[0].message.content.startswith("Hello from fake")
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.model_extra["cost"] > 0


@pytest.mark.parametrize("model,words", [("claude", "One two three four five."), ("gemini", "Eins zwei drei vier.")])
def test_streams_arrive_chunk_by_chunk_with_tool_calls(gateway, model, words):
    url, _ = gateway
    stream = client(url).chat.completions.create(
        model=model, stream=True, tools=TOOLS, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}])
    start = time.monotonic()
    arrivals, text, args, finish, usage, call = [], "", "", None, None, None
    for chunk in stream:
        assert chunk.model == model
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if delta.content:
            arrivals.append(time.monotonic() - start)
            text += delta.content
        for tc in delta.tool_calls or []:
            if tc.id:
                call = (tc.id, tc.function.name)
            args += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == words
    # The fake sends a chunk every 50 ms: they reach the client spread out, not in one burst.
    assert arrivals[-1] - arrivals[0] > 0.1, arrivals
    assert call is not None and call[1] == "get_weather"
    assert json.loads(args) == {"city": "Oslo"}
    assert finish == "tool_calls"
    assert usage is not None and usage.completion_tokens > 0 and usage.model_extra["cost"] > 0


def test_keys_travel_in_headers_and_never_reach_the_log(gateway):
    url, log = gateway
    client(url).chat.completions.create(model="gemini", messages=[{"role": "user", "content": "hi"}])
    gemini_calls = [s for s in SEEN if s[0].startswith("/v1beta/")]
    assert gemini_calls and all("key=" not in path for path, _, _ in gemini_calls)
    assert all(h.get("x-goog-api-key") == GEMINI_KEY for _, h, _ in gemini_calls)
    anthropic_calls = [s for s in SEEN if s[0] == "/v1/messages"]
    assert anthropic_calls and all(h.get("x-api-key") == ANTHROPIC_KEY for _, h, _ in anthropic_calls)
    time.sleep(0.2)
    text = log.read_text()
    for secret in [KEY, ANTHROPIC_KEY, GEMINI_KEY]:
        assert secret not in text


WORDS = {"claude": ("Hello from fake Claude.", "One two three four five."),
         "gemini": ("Hello from fake Gemini.", "Eins zwei drei vier."),
         "gpt": ("Hello from fake GPT.", "Un deux trois.")}


@pytest.mark.parametrize("model", ["claude", "gemini", "gpt"])
def test_the_messages_door_meets_every_provider_kind(gateway, model):
    url, _ = gateway
    c = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)
    m = c.messages.create(model=model, max_tokens=50, system="Be brief.", messages=[{"role": "user", "content": "hello"}])
    assert m.model == model and m.content[0].text == WORDS[model][0] and m.usage.output_tokens > 0
    with c.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "hello"}]) as s:
        text = "".join(s.text_stream)
    assert text == WORDS[model][1]


@pytest.mark.parametrize("model", ["claude", "gemini", "gpt"])
def test_the_responses_door_meets_every_provider_kind(gateway, model):
    url, _ = gateway
    c = client(url)
    r = c.responses.create(model=model, instructions="Be brief.", input="hello")
    assert r.model == model and r.output_text == WORDS[model][0]
    events = list(c.responses.create(model=model, input="hello", stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == WORDS[model][1]


def test_chat_meets_the_openai_kind(gateway):
    url, _ = gateway
    r = client(url).chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content == WORDS["gpt"][0]
    stream = client(url).chat.completions.create(model="gpt", stream=True, messages=[{"role": "user", "content": "hello"}])
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == WORDS["gpt"][1]
