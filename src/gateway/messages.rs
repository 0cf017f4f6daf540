//! The Anthropic Messages front door (SPEC §12): an Anthropic `POST /v1/messages` body -> the
//! internal (OpenAI chat) body that [`super::door`] parses, and the internal reply, event stream
//! and errors -> Anthropic's message, event types and error shape, at the edge. Everything between
//! (admission, routing, cache, dispatch, settlement) is the chat path's.
//!
//! Kept: system prompts (a string or text blocks), text, image (base64 and URL) and tool blocks,
//! `tools`, `tool_choice`, `max_tokens`, `stop_sequences`, `temperature`, `top_p`,
//! `metadata.user_id`, `stream`. Dropped: `top_k`, cache-control marks and thinking settings
//! (OpenAI's shape has no place for them), and `service_tier`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::error::ApiError;

/// The internal chat body of an Anthropic Messages body.
pub fn to_chat(body: Value) -> Result<Value, ApiError> {
    let Value::Object(m) = body else { return Err(ApiError::bad_request("the request body must be a JSON object")) };
    let mut out = Map::new();
    out.insert("model".into(), m.get("model").cloned().unwrap_or(Value::Null));
    match m.get("max_tokens") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {
            out.insert("max_tokens".into(), Value::Number(n.clone()));
        }
        Some(_) => {
            return Err(ApiError::bad_request("`max_tokens` must be an integer of at least 1").param("max_tokens"))
        }
        None => return Err(ApiError::bad_request("`max_tokens` is required").param("max_tokens")),
    }
    let mut messages = Vec::new();
    match m.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
            messages.push(json!({"role": "system", "content": text.join("\n")}));
        }
        Some(_) => {
            return Err(ApiError::bad_request("`system` must be a string or a list of text blocks").param("system"))
        }
    }
    let Some(list) = m.get("messages").and_then(Value::as_array) else {
        return Err(ApiError::bad_request("`messages` is required and must be a list").param("messages"));
    };
    for (i, msg) in list.iter().enumerate() {
        messages.extend(message(i, msg)?);
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = m.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.get("name").cloned().unwrap_or(Value::Null),
                    "description": t.get("description").cloned().unwrap_or(json!("")),
                    "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
                }})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = m.get("tool_choice") {
        let c = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or(Value::Null)}})
            }
            _ => {
                return Err(
                    ApiError::bad_request("`tool_choice.type` must be auto, any, tool or none").param("tool_choice")
                )
            }
        };
        out.insert("tool_choice".into(), c);
    }
    for (from, to) in
        [("stop_sequences", "stop"), ("temperature", "temperature"), ("top_p", "top_p"), ("stream", "stream")]
    {
        if let Some(v) = m.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    if m.get("stream").and_then(Value::as_bool) == Some(true) {
        // The usage chunk becomes `message_delta`'s usage.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(u) = m.get("metadata").and_then(|md| md.get("user_id")).filter(|v| v.is_string()) {
        out.insert("user".into(), u.clone());
    }
    Ok(Value::Object(out))
}

/// One Anthropic message as internal messages: a user turn's tool results become `tool`
/// messages (before its other content), an assistant turn's tool uses its `tool_calls`.
fn message(i: usize, msg: &Value) -> Result<Vec<Value>, ApiError> {
    let role = match msg.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        Some("system") => {
            // Claude Code puts system messages among the turns: they join the system prompt at
            // their place (SPEC §15).
            let text = match msg.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(blocks)) => {
                    blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "`messages[{i}].content` must be a string or a list of text blocks"
                    ))
                    .param(format!("messages[{i}].content")))
                }
            };
            return Ok(vec![json!({"role": "system", "content": text})]);
        }
        _ => {
            return Err(ApiError::bad_request(format!("`messages[{i}].role` must be user, assistant or system"))
                .param(format!("messages[{i}].role")))
        }
    };
    let blocks = match msg.get("content") {
        Some(Value::String(s)) => return Ok(vec![json!({"role": role, "content": s})]),
        Some(Value::Array(b)) => b,
        _ => {
            return Err(ApiError::bad_request(format!("`messages[{i}].content` must be a string or a list of blocks"))
                .param(format!("messages[{i}].content")))
        }
    };
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or(json!(""))})),
            Some("image") => {
                let src = b.get("source").cloned().unwrap_or(Value::Null);
                let url = match src.get("type").and_then(Value::as_str) {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        src.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
                        src.get("data").and_then(Value::as_str).unwrap_or("")
                    ),
                    Some("url") => src.get("url").and_then(Value::as_str).unwrap_or("").to_string(),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "`messages[{i}]`: an image's source must be base64 or url"
                        ))
                        .param(format!("messages[{i}].content")))
                    }
                };
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Value::Null), "type": "function",
                "function": {"name": b.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": b.get("input").map_or_else(|| "{}".to_string(), Value::to_string)}
            })),
            Some("tool_result") => {
                let content = match b.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(a)) => {
                        a.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
                    }
                    _ => String::new(),
                };
                out.push(json!({"role": "tool", "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::Null), "content": content}));
            }
            // Thinking and other blocks have no place in the internal shape.
            _ => {}
        }
    }
    if !parts.is_empty() || !calls.is_empty() {
        let mut m = json!({"role": role});
        m["content"] = if parts.is_empty() { Value::Null } else { Value::Array(parts) };
        if !calls.is_empty() {
            m["tool_calls"] = Value::Array(calls);
        }
        out.push(m);
    }
    Ok(out)
}

/// OpenAI's finish reason as Anthropic's stop reason.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A chat completion as an Anthropic message.
pub fn to_message(v: &Value) -> Value {
    let choice = &v["choices"][0];
    let m = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = m.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let args = c["function"]["arguments"].as_str().unwrap_or("{}");
        content.push(json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"],
            "input": serde_json::from_str::<Value>(args).unwrap_or(json!({}))}));
    }
    json!({
        "id": message_id(v), "type": "message", "role": "assistant", "model": v["model"], "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str()), "stop_sequence": null,
        "usage": {"input_tokens": v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            "output_tokens": v["usage"]["completion_tokens"].as_u64().unwrap_or(0)},
    })
}

fn message_id(v: &Value) -> String {
    let id = v["id"].as_str().unwrap_or("yardmaster");
    if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{id}")
    }
}

/// Anthropic's error type for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An error in Anthropic's shape, with the status and headers of the internal one.
fn error(status: StatusCode, message: &str, headers: &axum::http::HeaderMap) -> Response {
    let body = json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    for (k, v) in headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            resp.headers_mut().insert(k.clone(), v.clone());
        }
    }
    resp
}

/// The internal response as the Messages door answers it: a message, an Anthropic event
/// stream, or an Anthropic error.
pub async fn answer(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        let message = match parts.extensions.get::<ApiError>() {
            Some(e) => e.message.clone(),
            None => {
                let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                v.pointer("/error/message").and_then(Value::as_str).unwrap_or("the request failed").to_string()
            }
        };
        return error(parts.status, &message, &parts.headers);
    }
    if super::edge::is_stream(&parts) {
        return super::edge::stream_response(&parts, body, Relay::default());
    }
    let (v, headers) = super::edge::whole(&parts, body).await;
    super::edge::json_response(&to_message(&v), headers)
}

/// Where a stream's translation stands.
#[derive(Default)]
pub struct Relay {
    started: bool,
    /// The open content block: its index, and whether it is text (else a tool use).
    open: Option<(usize, bool)>,
    blocks: usize,
    /// The tool call index -> its block, for argument deltas.
    tools: Vec<(u64, usize)>,
    stop: Option<&'static str>,
    output_tokens: u64,
    input_tokens: u64,
    done: bool,
}

fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

impl Relay {
    fn close(&mut self, out: &mut String) {
        if let Some((i, _)) = self.open.take() {
            out.push_str(&sse("content_block_stop", &json!({"type": "content_block_stop", "index": i})));
        }
    }

    fn open(&mut self, text: bool, block: Value, out: &mut String) -> usize {
        self.close(out);
        let i = self.blocks;
        self.blocks += 1;
        self.open = Some((i, text));
        out.push_str(&sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": i, "content_block": block}),
        ));
        i
    }
}

impl super::edge::Events for Relay {
    fn chunk(&mut self, v: &Value, out: &mut String) {
        if let Some(e) = v.get("error") {
            let message = e.get("message").and_then(Value::as_str).unwrap_or("the stream was interrupted");
            out.push_str(&sse("error", &json!({"type": "error", "error": {"type": "api_error", "message": message}})));
            self.done = true;
            return;
        }
        if !self.started {
            self.started = true;
            let message = json!({"id": message_id(v), "type": "message", "role": "assistant", "model": v["model"],
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}});
            out.push_str(&sse("message_start", &json!({"type": "message_start", "message": message})));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.input_tokens = u["prompt_tokens"].as_u64().unwrap_or(self.input_tokens);
            self.output_tokens = u["completion_tokens"].as_u64().unwrap_or(self.output_tokens);
        }
        let Some(c) = v.pointer("/choices/0") else { return };
        let d = &c["delta"];
        if let Some(t) = d.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            let i = match self.open {
                Some((i, true)) => i,
                _ => self.open(true, json!({"type": "text", "text": ""}), out),
            };
            out.push_str(&sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": t}}),
            ));
        }
        for call in d.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let n = call["index"].as_u64().unwrap_or(0);
            let i = match self.tools.iter().find(|(k, _)| *k == n) {
                Some((_, i)) => *i,
                None => {
                    let block =
                        json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}});
                    let i = self.open(false, block, out);
                    self.tools.push((n, i));
                    i
                }
            };
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                out.push_str(&sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
            }
        }
        if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(stop_reason(Some(f)));
        }
    }

    fn finish(&mut self, out: &mut String) {
        self.close(out);
        out.push_str(&sse(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}}),
        ));
        out.push_str(&sse("message_stop", &json!({"type": "message_stop"})));
        self.done = true;
    }

    fn done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_messages_body_becomes_a_chat_body() {
        let body = json!({
            "model": "claude-haiku", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief."}],
            "stop_sequences": ["END"], "temperature": 0.2, "metadata": {"user_id": "u1"}, "top_k": 5,
            "tools": [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}
            ]
        });
        let c = to_chat(body).unwrap();
        assert_eq!(c["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(c["messages"][1]["content"][1]["image_url"]["url"], "data:image/png;base64,AAAA");
        assert_eq!(c["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(c["messages"][3], json!({"role": "tool", "tool_call_id": "t1", "content": "sunny"}));
        assert_eq!(c["tools"][0]["function"]["parameters"]["properties"]["city"]["type"], "string");
        assert_eq!(c["tool_choice"]["function"]["name"], "get_weather");
        assert_eq!(
            (c["stop"].clone(), c["user"].clone(), c["max_tokens"].clone()),
            (json!(["END"]), json!("u1"), json!(100))
        );
        assert!(c.get("top_k").is_none());
        assert!(to_chat(json!({"model": "m", "messages": []})).is_err(), "max_tokens is required");
    }

    #[test]
    fn a_chat_stream_becomes_anthropic_events() {
        let mut r = crate::gateway::edge::Translation::new(Relay::default());
        let mut out = String::new();
        for f in [
            json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}),
            json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "lo"}}]}),
            json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "f", "arguments": "{\"a\""}}]}}]}),
            json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]}),
            json!({"id": "c1", "model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
        ] {
            // Split a frame across two reads, as a network would.
            let text = format!("data: {f}\n\n");
            let (a, b) = text.split_at(7);
            out.push_str(&r.feed(a.as_bytes()));
            out.push_str(&r.feed(b.as_bytes()));
        }
        out.push_str(&r.feed(b"data: [DONE]\n\n"));
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(out.contains("\"stop_reason\":\"tool_use\"") && out.contains("\"output_tokens\":4"), "{out}");
        assert!(out.contains("\"partial_json\":\":1}\""), "{out}");
    }
}
