"""The Anthropic Messages front door (SPEC §12) with the official `anthropic` Python SDK against a
real `yardmaster serve`: plain and streamed messages, a system prompt, an image, a tool round
trip, count_tokens, and errors in Anthropic's shape."""

import json
import urllib.error
import urllib.request

import anthropic
import pytest

from gateway import Gateway

KEY = "sk-e2e-anthropic-key"

CONFIG = """
listen: 127.0.0.1:0
policy: main.route
providers:
  fast: { kind: mock, latency: 5ms }
models:
  gpt-4o-mini:  { provider: fast, price: { input: 0.15, output: 0.6 }, context: 128000, capabilities: [tools, images] }
  claude-haiku: { provider: fast, price: { input: 1, output: 5 }, context: 200000, capabilities: [tools, images] }
keys:
  - { name: e2e, key_env: E2E_KEY, tier: free }
"""

POLICY = """
rule "claude code" {
  when request.api == "messages"
  then claude-haiku
}

default {
  then gpt-4o-mini
}
"""

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def gateway():
    g = Gateway(CONFIG, POLICY, {"E2E_KEY": KEY})
    yield g.url
    g.stop()


def post(url, headers, data):
    """A raw POST: (status, headers, JSON body)."""
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json", **headers}, method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def client(url, key=KEY):
    # The one change a user makes: the base URL (the SDK appends /v1/messages).
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)


def test_a_message_with_a_system_prompt_is_routed_as_messages(gateway):
    raw = client(gateway).messages.with_raw_response.create(
        model="auto", max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "hello"}])
    assert raw.headers["x-yardmaster-rule"] == "claude code"
    m = raw.parse()
    assert m.type == "message" and m.role == "assistant" and m.model == "claude-haiku"
    assert m.content[0].type == "text" and m.content[0].text.startswith("This is a mock reply")
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


def test_a_streamed_message_is_read_by_the_sdk(gateway):
    with client(gateway).messages.stream(model="auto", max_tokens=100,
                                         messages=[{"role": "user", "content": "stream please"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.startswith("This is a mock reply")
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_an_image_and_a_tool_round_trip(gateway):
    c = client(gateway)
    tools = [{"name": "get_weather", "description": "The weather in a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    first = c.messages.create(
        model="auto", max_tokens=100, tools=tools, tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "text", "text": "What is the weather where this photo was taken?"}]}])
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input, dict) and "city" in use.input
    second = c.messages.create(
        model="auto", max_tokens=100, tools=tools,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"},
                  {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 20 C"}]}])
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    # Streamed, the tool use arrives as input_json_delta events.
    with c.messages.stream(model="auto", max_tokens=100, tools=tools, tool_choice={"type": "any"},
                           messages=[{"role": "user", "content": "Weather in Oslo?"}]) as s:
        final = s.get_final_message()
    assert any(b.type == "tool_use" and "city" in b.input for b in final.content)


def test_count_tokens(gateway):
    n = client(gateway).messages.count_tokens(model="auto", system="Be brief.",
                                              messages=[{"role": "user", "content": "hello there, how are you?"}])
    assert n.input_tokens > 3


def test_errors_have_anthropics_shape(gateway):
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(gateway, key="sk-wrong").messages.create(model="auto", max_tokens=10,
                                                        messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    # A body the SDK would not send: the door's own 400, never a 500.
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode()
    status, headers, v = post(gateway + "/v1/messages", {"x-api-key": KEY, "anthropic-version": "2023-06-01"}, body)
    assert status == 400 and headers["x-should-retry"] == "false"
    assert v["type"] == "error" and v["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in v["error"]["message"]
    status, _, v = post(gateway + "/v1/messages", {"x-api-key": KEY}, b"{not json")
    assert status == 400 and v["error"]["type"] == "invalid_request_error"
