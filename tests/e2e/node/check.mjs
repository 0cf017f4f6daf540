// What the openai npm package gets from the gateway: run as `node check.mjs URL KEY`; prints one
// JSON object with what it saw, which tests/e2e/test_node.py checks.
import OpenAI from "openai";

const [url, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 });

// The SDK asks for base64 embeddings by default and decodes them to numbers.
const byDefault = await client.embeddings.create({ model: "auto", input: ["hello", "world"], dimensions: 16 });
const asFloats = await client.embeddings.create({
  model: "auto", input: ["hello", "world"], dimensions: 16, encoding_format: "float",
});

const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];
const messages = [{ role: "user", content: "What is the weather in Paris?" }];
const called = await client.chat.completions.create({ model: "auto", messages, tools });

// Streamed: the SDK's helper gathers the argument deltas into the final message.
const stream = client.chat.completions.stream({ model: "auto", messages, tools });
const streamed = await stream.finalChatCompletion();

console.log(JSON.stringify({
  base64: byDefault.data.map((d) => d.embedding),
  floats: asFloats.data.map((d) => d.embedding),
  call: called.choices[0].message.tool_calls?.[0] ?? null,
  finish: called.choices[0].finish_reason,
  streamed_call: streamed.choices[0].message.tool_calls?.[0] ?? null,
}));
