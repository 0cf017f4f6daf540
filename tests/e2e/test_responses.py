"""OpenAI's Responses API as a front door (SPEC §12) with the official `openai` Python SDK against a
real `yardmaster serve`: plain and streamed responses, a function tool round trip, and what is not
supported answered with a 400 that says so; and moderations through the same SDK."""

import json

import openai
import pytest

from gateway import Gateway

KEY = "sk-e2e-responses-key"

CONFIG = """
listen: 127.0.0.1:0
policy: main.route
providers:
  fast: { kind: mock, latency: 5ms }
models:
  gpt-4o-mini: { provider: fast, price: { input: 0.15, output: 0.6 }, context: 128000, capabilities: [tools, images] }
  gpt-4o:      { provider: fast, price: { input: 2.5, output: 10 }, context: 128000, capabilities: [tools, images] }
  moderation:  { provider: fast, id: omni-moderation-latest, endpoint: moderations }
keys:
  - { name: e2e, key_env: E2E_KEY }
"""

POLICY = """
rule "moderations" {
  when request.endpoint == "moderations"
  then moderation
}

rule "agents" {
  when request.api == "responses"
  then gpt-4o
}

default {
  then gpt-4o-mini
}
"""

TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(scope="module")
def gateway():
    g = Gateway(CONFIG, POLICY, {"E2E_KEY": KEY})
    yield g.url
    g.stop()


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)


def test_a_response_is_routed_as_responses(gateway):
    raw = client(gateway).responses.with_raw_response.create(
        model="auto", instructions="Be brief.", input="hello", max_output_tokens=50, metadata={"team": "a"})
    assert raw.headers["x-yardmaster-rule"] == "agents"
    r = raw.parse()
    assert r.object == "response" and r.status == "completed" and r.model == "gpt-4o"
    assert r.output_text.startswith("This is a mock reply")
    assert r.usage.output_tokens > 0 and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.metadata == {"team": "a"} and r.instructions == "Be brief."


def test_a_streamed_response_has_the_event_sequence(gateway):
    events = list(client(gateway).responses.create(model="auto", input="stream please", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.content_part.added" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("This is a mock reply")
    done = events[-1].response
    assert done.output_text == text and done.usage.output_tokens > 0
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_a_function_tool_round_trip_plain_and_streamed(gateway):
    c = client(gateway)
    first = c.responses.create(model="auto", input="What is the weather in Oslo?", tools=TOOLS,
                               tool_choice={"type": "function", "name": "get_weather"})
    call = next(o for o in first.output if o.type == "function_call")
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)
    second = c.responses.create(model="auto", tools=TOOLS, input=[
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 20 C"},
    ])
    assert second.status == "completed" and second.output_text
    # Streamed, with the SDK's helper that assembles the final response.
    with c.responses.stream(model="auto", input="Weather in Oslo?", tools=TOOLS, tool_choice="required") as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert any(o.type == "function_call" and "city" in json.loads(o.arguments) for o in final.output)


def test_what_is_not_supported_is_a_400_that_says_so(gateway):
    c = client(gateway)
    for extra in [{"previous_response_id": "resp_1"}, {"store": True}, {"tools": [{"type": "web_search"}]}]:
        with pytest.raises(openai.BadRequestError) as e:
            c.responses.create(model="auto", input="hi", **extra)
        assert "not supported" in e.value.message
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve("resp_123")


def test_moderations_through_the_sdk(gateway):
    r = client(gateway).moderations.create(input=["how to build a bomb", "what a lovely day"])
    assert [x.flagged for x in r.results] == [True, False]
    assert r.results[0].categories.violence is True
