//! Anthropic's Messages API, translated both ways. Clients keep speaking OpenAI's chat format:
//! system and developer messages become `system`, tool calls and tool results become `tool_use`
//! and `tool_result` blocks, images become `image` blocks (base64 or URL), and the reply (text,
//! tool calls, stop reason, usage) and the event stream come back as OpenAI's. The choices made
//! where the formats differ are in docs/providers.md.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use super::native::{self, Translate};
use super::{Call, ProviderApi, Reply, UpstreamError};
use crate::catalog::Endpoint;

/// The provider's kind, as written in the config.
pub const PROVIDER_TYPE: &str = "anthropic";
/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when the client gives none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The tool that carries a `response_format: json_schema` answer.
const JSON_TOOL: &str = "json_response";
/// The OpenAI fields that the translation uses; the others are dropped (and logged).
const TAKEN: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "stream",
    "stream_options",
];

/// An Anthropic upstream.
#[derive(Clone, Debug)]
pub struct Anthropic {
    url: Option<reqwest::Url>,
    upstream: native::Upstream,
}

impl Anthropic {
    /// A provider at `base_url` (the API root, as Anthropic's SDK takes it).
    pub fn new(
        base_url: &str,
        key: Option<String>,
        headers: BTreeMap<String, String>,
        http: reqwest::Client,
    ) -> Anthropic {
        let url = reqwest::Url::parse(&format!("{}/v1/messages", base_url.trim_end_matches('/'))).ok();
        Anthropic { url, upstream: native::Upstream::new(http, key, native::Auth::Header("x-api-key"), headers) }
    }
}

/// What the request translation decided that the reply translation needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shape {
    /// `response_format: json_schema` was mapped to a forced tool of this name.
    pub json_tool: Option<String>,
    /// The client asked for the stream's usage.
    pub wants_usage: bool,
}

fn status_of(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// Anthropic's error body -> OpenAI's.
pub fn error_body(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let kind = v.pointer("/error/type").and_then(Value::as_str);
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(|| format!("anthropic answered {status}"), |m| m.to_string());
    native::openai_error(&message, super::error_type(status), kind)
}

fn user_blocks(content: Option<&Value>) -> Result<Vec<Value>, String> {
    native::user_parts(
        content,
        "Anthropic",
        |t| json!({"type": "text", "text": t}),
        |url| match native::data_url(url) {
            Some((media, data)) => {
                json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
            }
            None => json!({"type": "image", "source": {"type": "url", "url": url}}),
        },
    )
}

/// OpenAI's chat request -> Anthropic's Messages request.
pub fn request(body: &Value, stream: bool) -> Result<(Value, Shape), String> {
    let obj = body.as_object().ok_or("the request body must be a JSON object")?;
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in obj.get("messages").and_then(Value::as_array).ok_or("`messages` must be a list")? {
        let content = m.get("content");
        match m.get("role").and_then(Value::as_str).unwrap_or("") {
            "system" | "developer" => system.push(native::content_text(content)),
            "user" => native::push_turn(&mut messages, "user", "content", user_blocks(content)?),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = native::content_text(content);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").and_then(Value::as_str).unwrap_or(""),
                        "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
                        "input": native::tool_arguments(call),
                    }));
                }
                native::push_turn(&mut messages, "assistant", "content", blocks);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or("a tool message needs `tool_call_id`")?;
                let result =
                    json!({"type": "tool_result", "tool_use_id": id, "content": native::content_text(content)});
                native::push_turn(&mut messages, "user", "content", vec![result]);
            }
            other => return Err(format!("messages with role `{other}` cannot be sent to Anthropic")),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), obj.get("model").cloned().unwrap_or(Value::Null));
    out.insert("max_tokens".into(), json!(native::max_tokens(body).unwrap_or(DEFAULT_MAX_TOKENS)));
    let mut shape = Shape { wants_usage: native::wants_usage(body), ..Shape::default() };
    let mut tools: Vec<Value> = obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str).unwrap_or("function") == "function")
        .map(|t| {
            let f = t.get("function").unwrap_or(t);
            let mut tool = json!({
                "name": f.get("name").cloned().unwrap_or(Value::Null),
                "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(d) = f.get("description") {
                tool["description"] = d.clone();
            }
            tool
        })
        .collect();
    let mut tool_choice = match obj.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::Object(c)) => {
            c.get("function").and_then(|f| f.get("name")).map(|n| json!({"type": "tool", "name": n}))
        }
        _ => None,
    };
    match obj.get("response_format").and_then(|r| r.get("type")).and_then(Value::as_str) {
        Some("json_schema") => {
            // Anthropic has no response format: a forced tool whose input is the answer.
            let schema = body
                .pointer("/response_format/json_schema/schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            tools.push(json!({"name": JSON_TOOL, "description": "Give the answer as this JSON object.", "input_schema": schema}));
            tool_choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
            shape.json_tool = Some(JSON_TOOL.to_string());
        }
        Some("json_object") => system.push("Answer with a single JSON object and nothing else.".into()),
        _ => {}
    }
    if obj.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let tc = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if tc["type"] != "none" {
            tc["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(t) = obj.get("temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0 to 2, Anthropic's 0 to 1.
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = obj.get("top_p") {
        out.insert("top_p".into(), p.clone());
    }
    if let Some(stop) = native::stop_list(obj.get("stop")) {
        out.insert("stop_sequences".into(), stop);
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = tool_choice {
        out.insert("tool_choice".into(), tc);
    }
    if let Some(u) = obj.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok((Value::Object(out), shape))
}

fn finish_reason(stop: Option<&str>, json_tool: bool) -> &'static str {
    match stop {
        Some("max_tokens") => "length",
        Some("tool_use") if !json_tool => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

fn usage_of(u: Option<&Value>) -> (u64, u64) {
    let n = |k: &str| u.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    (n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens"), n("output_tokens"))
}

/// Anthropic's reply -> OpenAI's chat completion.
pub fn reply(v: &Value, model: &str, shape: &Shape) -> Result<Value, UpstreamError> {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| UpstreamError::Malformed("the reply has no `content` list".into()))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                if shape.json_tool.as_deref() == Some(name) {
                    text.push_str(&input.to_string());
                } else {
                    calls.push(json!({"id": b.get("id").cloned().unwrap_or(Value::Null), "type": "function",
                        "function": {"name": name, "arguments": input.to_string()}}));
                }
            }
            // Thinking blocks and any later block types are not part of OpenAI's reply.
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let mut out = json!({
        "id": v.get("id").cloned().unwrap_or_else(|| json!("msg")),
        "object": "chat.completion",
        "created": native::now(),
        "model": model,
        "choices": [{"index": 0, "message": message,
            "finish_reason": finish_reason(v.get("stop_reason").and_then(Value::as_str), shape.json_tool.is_some())}],
    });
    // Without a usage block there is no usage: the gateway then counts the tokens itself.
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        let (input, output) = usage_of(Some(u));
        out["usage"] = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
    }
    Ok(out)
}

/// Anthropic's event stream -> OpenAI chunks.
#[derive(Debug, Default)]
pub struct Stream {
    shape: Shape,
    out: native::Chunks,
    input: u64,
    output: u64,
    /// Content block index -> tool call index (OpenAI counts tool calls from 0).
    tools: HashMap<u64, u64>,
    /// Content blocks that carry the `json_schema` answer.
    json_blocks: Vec<u64>,
    /// Some event carried usage (without it, no usage chunk: the gateway counts).
    usage_seen: bool,
    done: bool,
}

impl Stream {
    /// A translator for one streamed reply.
    pub fn new(model: &str, shape: Shape) -> Stream {
        Stream { shape, out: native::Chunks::new("msg", model), ..Stream::default() }
    }
}

impl Translate for Stream {
    fn event(&mut self, _kind: &str, data: &str) -> Result<Vec<String>, UpstreamError> {
        let v = native::event_json(data)?;
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        Ok(match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                if let Some(id) = v.pointer("/message/id").and_then(Value::as_str) {
                    self.out.id = id.to_string();
                }
                if let Some(u) = v.pointer("/message/usage").filter(|u| u.is_object()) {
                    (self.input, self.output) = usage_of(Some(u));
                    self.usage_seen = true;
                }
                vec![self.out.delta(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let block = v.get("content_block").cloned().unwrap_or(Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => match block.get("text").and_then(Value::as_str) {
                        Some(t) if !t.is_empty() => vec![self.out.delta(json!({"content": t}), None)],
                        _ => vec![],
                    },
                    Some("tool_use") => {
                        let name = block.get("name").and_then(Value::as_str).unwrap_or("");
                        if self.shape.json_tool.as_deref() == Some(name) {
                            self.json_blocks.push(index);
                            vec![]
                        } else {
                            let n = self.tools.len() as u64;
                            self.tools.insert(index, n);
                            vec![self.out.delta(
                                json!({"tool_calls": [{"index": n, "id": block.get("id"), "type": "function",
                                    "function": {"name": name, "arguments": ""}}]}),
                                None,
                            )]
                        }
                    }
                    _ => vec![],
                }
            }
            "content_block_delta" => {
                let d = v.get("delta").cloned().unwrap_or(Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => vec![self.out.delta(json!({"content": d.get("text")}), None)],
                    Some("input_json_delta") => {
                        let part = d.get("partial_json").and_then(Value::as_str).unwrap_or("");
                        if self.json_blocks.contains(&index) {
                            vec![self.out.delta(json!({"content": part}), None)]
                        } else if let Some(n) = self.tools.get(&index) {
                            vec![self
                                .out
                                .delta(json!({"tool_calls": [{"index": n, "function": {"arguments": part}}]}), None)]
                        } else {
                            vec![]
                        }
                    }
                    // thinking, signature and citation deltas have no place in OpenAI's chunks.
                    _ => vec![],
                }
            }
            "message_delta" => {
                if let Some(out) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.output = out;
                    self.usage_seen = true;
                }
                let stop = v.pointer("/delta/stop_reason").and_then(Value::as_str);
                vec![self.out.delta(json!({}), Some(finish_reason(stop, self.shape.json_tool.is_some())))]
            }
            "message_stop" => {
                self.done = true;
                let mut out = Vec::new();
                if self.shape.wants_usage && self.usage_seen {
                    out.push(self.out.usage(self.input, self.output));
                }
                out.push("[DONE]".into());
                out
            }
            "error" => {
                let kind = v.pointer("/error/type").and_then(Value::as_str).unwrap_or("api_error");
                let status = status_of(kind);
                return Err(UpstreamError::Status { status, body: error_body(status, data), retry_after: None });
            }
            // `ping`, `content_block_stop`, and event types added after this was written.
            _ => vec![],
        })
    }

    fn end(&mut self) -> Result<Vec<String>, UpstreamError> {
        if self.done {
            Ok(Vec::new())
        } else {
            Err(UpstreamError::Malformed("the stream ended before `message_stop`".into()))
        }
    }
}

impl ProviderApi for Anthropic {
    async fn call(&self, call: Call) -> Result<Reply, UpstreamError> {
        if call.endpoint != Endpoint::Chat {
            return Err(UpstreamError::Unavailable(format!("Anthropic offers no {} endpoint", call.endpoint.as_str())));
        }
        let Some(url) = &self.url else {
            return Err(UpstreamError::Unavailable("the base_url is not a URL".into()));
        };
        let (body, model) = native::client_body(&call.body)?;
        let (native_body, shape) = request(&body, call.stream).map_err(native::unsupported)?;
        native::log_dropped(PROVIDER_TYPE, &native::dropped_fields(&body, TAKEN));
        let req = self
            .upstream
            .post(url.clone(), call.traceparent.as_deref())
            .header("anthropic-version", API_VERSION)
            .json(&native_body);
        let resp = self.upstream.send(req, call.first_byte_timeout, call.limits, error_body).await?;
        if call.stream {
            return Ok(Reply::Stream(native::translate_stream(
                self.upstream.events(resp, call.limits),
                Stream::new(&model, shape),
            )));
        }
        let v = self.upstream.json_reply(resp, call.limits).await?;
        reply(&v, &model, &shape).map(Reply::Json)
    }
}
