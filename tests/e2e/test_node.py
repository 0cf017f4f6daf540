"""End to end with the official `openai` npm package (tests/e2e/node/check.mjs) against a real
`yardmaster serve` on the built-in mock: embeddings in the SDK's default base64 encoding, and
tool calls, whole and streamed. `.ci/run` installs the package with `npm ci`."""

import json
import shutil
import subprocess
from pathlib import Path

import openai
import pytest
from gateway import Gateway

NODE_DIR = Path(__file__).resolve().parent / "node"
KEY = "sk-e2e-node-" + "y" * 16

CONFIG = """
listen: 127.0.0.1:0
policy: main.route
providers:
  mock: { kind: mock }
models:
  chat-model:  { provider: mock, price: { input: 0.15, output: 0.6 }, context: 128000, capabilities: [tools] }
  embed-model: { provider: mock, endpoint: embeddings, price: { input: 0.02 }, context: 8191 }
keys:
  - { name: node, key_env: E2E_NODE_KEY }
"""

POLICY = """
rule "embeddings" {
  when request.endpoint == "embeddings"
  then embed-model
}

default {
  then chat-model
}
"""


@pytest.fixture(scope="module")
def gateway():
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "openai").exists():
        pytest.fail("node and tests/e2e/node's packages are needed: cd tests/e2e/node && npm ci")
    g = Gateway(CONFIG, POLICY, {"E2E_NODE_KEY": KEY})
    yield g.url
    g.stop()


def test_the_npm_sdk_decodes_embeddings_and_sees_tool_calls(gateway):
    out = subprocess.run(["node", "check.mjs", gateway, KEY], cwd=NODE_DIR, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    # The SDK asked for base64 and decoded it: the same vectors as asking for floats.
    assert len(seen["base64"]) == 2 and len(seen["base64"][0]) == 16
    for got, want in zip(seen["base64"], seen["floats"]):
        assert got == pytest.approx(want, abs=1e-6)
    assert seen["base64"][0] != pytest.approx(seen["base64"][1], abs=1e-6)
    # The Python SDK's vectors are the same as the npm package's.
    py = openai.OpenAI(base_url=gateway + "/v1", api_key=KEY, max_retries=0)
    again = py.embeddings.create(model="auto", input=["hello", "world"], dimensions=16)
    assert again.data[0].embedding == pytest.approx(seen["floats"][0], abs=1e-6)
    # Tools offered on the mock: a call whose arguments fit the schema, whole and streamed.
    assert seen["finish"] == "tool_calls"
    for call in (seen["call"], seen["streamed_call"]):
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "example"}
