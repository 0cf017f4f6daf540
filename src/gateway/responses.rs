//! OpenAI's Responses front door (SPEC §12): a `POST /v1/responses` body -> the internal (chat)
//! body that [`super::door`] parses, and the internal reply and event stream -> a Response object
//! and the Responses event sequence, at the edge. Errors keep OpenAI's shape, which this API
//! shares with chat.
//!
//! Kept: `input` as a string or items (messages with text and image parts, function calls and
//! their outputs), `instructions`, function `tools`, `tool_choice`, `max_output_tokens`,
//! `temperature`, `top_p`, `user`, `metadata` (echoed back, not sent on), `stream`. Refused with a
//! 400 that says so: `previous_response_id`, `store: true` (nothing is stored: `store` absent or
//! false is accepted), `background`, and built-in tools (web search, file search, ...).

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::error::ApiError;

fn unsupported(what: &str, param: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{what} is not supported by this gateway: it stores no responses and runs no built-in tools"
    ))
    .param(param)
}

/// The internal chat body of a Responses body.
pub fn to_chat(body: Value) -> Result<Value, ApiError> {
    let Value::Object(m) = body else { return Err(ApiError::bad_request("the request body must be a JSON object")) };
    if m.get("previous_response_id").is_some_and(|v| !v.is_null()) {
        return Err(unsupported("`previous_response_id`", "previous_response_id"));
    }
    if m.get("store").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported("`store: true`", "store"));
    }
    if m.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported("`background: true`", "background"));
    }
    let mut out = Map::new();
    out.insert("model".into(), m.get("model").cloned().unwrap_or(Value::Null));
    let mut messages = Vec::new();
    if let Some(i) = m.get("instructions").filter(|v| !v.is_null()) {
        let Some(text) = i.as_str() else {
            return Err(ApiError::bad_request("`instructions` must be a string").param("instructions"));
        };
        messages.push(json!({"role": "system", "content": text}));
    }
    match m.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(i, item, &mut messages)?;
            }
        }
        _ => return Err(ApiError::bad_request("`input` is required: a string or a list of items").param("input")),
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = m.get("tools").and_then(Value::as_array) {
        let mut list = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            match t.get("type").and_then(Value::as_str) {
                Some("function") => list.push(json!({"type": "function", "function": {
                    "name": t.get("name").cloned().unwrap_or(Value::Null),
                    "description": t.get("description").cloned().unwrap_or(json!("")),
                    "parameters": t.get("parameters").cloned().unwrap_or(json!({"type": "object"})),
                }})),
                Some(other) => {
                    return Err(unsupported(&format!("the built-in tool `{other}`"), &format!("tools[{i}].type")))
                }
                None => {
                    return Err(ApiError::bad_request(format!("`tools[{i}].type` is required"))
                        .param(format!("tools[{i}].type")))
                }
            }
        }
        out.insert("tools".into(), Value::Array(list));
    }
    if let Some(c) = m.get("tool_choice").filter(|v| !v.is_null()) {
        let c = match c {
            Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => c.clone(),
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or(Value::Null)}})
            }
            _ => {
                return Err(ApiError::bad_request("`tool_choice` must be auto, none, required or a function")
                    .param("tool_choice"))
            }
        };
        out.insert("tool_choice".into(), c);
    }
    for (from, to) in [
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("user", "user"),
        ("stream", "stream"),
        ("parallel_tool_calls", "parallel_tool_calls"),
    ] {
        if let Some(v) = m.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    if m.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// One input item as internal messages (a function call joins the assistant message before it
/// when that one has calls already).
fn input_item(i: usize, item: &Value, messages: &mut Vec<Value>) -> Result<(), ApiError> {
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
    match kind {
        "message" => {
            let role = match item.get("role").and_then(Value::as_str) {
                Some("developer") => "system",
                Some(r @ ("user" | "assistant" | "system")) => r,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "`input[{i}].role` must be user, assistant, system or developer"
                    ))
                    .param(format!("input[{i}].role")))
                }
            };
            let content = match item.get("content") {
                Some(Value::String(s)) => json!(s),
                Some(Value::Array(parts)) => {
                    let mut out = Vec::new();
                    for p in parts {
                        match p.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text" | "text") => {
                                out.push(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(json!(""))}));
                            }
                            Some("input_image") => {
                                let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                                    return Err(unsupported("an image by `file_id`", &format!("input[{i}].content")));
                                };
                                out.push(json!({"type": "image_url", "image_url": {"url": url, "detail": p.get("detail").cloned().unwrap_or(json!("auto"))}}));
                            }
                            Some(other) => {
                                return Err(unsupported(
                                    &format!("the content part `{other}`"),
                                    &format!("input[{i}].content"),
                                ))
                            }
                            None => {}
                        }
                    }
                    if role == "assistant" {
                        // Chat's assistant messages take text, not parts.
                        let text: Vec<&str> = out.iter().filter_map(|p| p["text"].as_str()).collect();
                        json!(text.join(""))
                    } else {
                        Value::Array(out)
                    }
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "`input[{i}].content` must be a string or a list of parts"
                    ))
                    .param(format!("input[{i}].content")))
                }
            };
            messages.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let call = json!({"id": item.get("call_id").cloned().unwrap_or(Value::Null), "type": "function",
                "function": {"name": item.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": item.get("arguments").cloned().unwrap_or(json!("{}"))}});
            match messages.last_mut() {
                Some(last) if last["role"] == "assistant" && last.get("tool_calls").is_some() => {
                    if let Some(a) = last["tool_calls"].as_array_mut() {
                        a.push(call);
                    }
                }
                _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            messages.push(json!({"role": "tool", "tool_call_id": item.get("call_id").cloned().unwrap_or(Value::Null), "content": output}));
        }
        // Reasoning items carry nothing the internal shape can send on.
        "reasoning" => {}
        other => return Err(unsupported(&format!("the input item `{other}`"), &format!("input[{i}].type"))),
    }
    Ok(())
}

fn usage(u: &Value) -> Value {
    let (i, o) = (u["prompt_tokens"].as_u64().unwrap_or(0), u["completion_tokens"].as_u64().unwrap_or(0));
    json!({"input_tokens": i, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": o,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": i + o})
}

/// The request's own settings, as a Response object echoes them.
#[derive(Clone, Debug, Default)]
pub struct Echo {
    fields: Map<String, Value>,
}

impl Echo {
    /// What a Responses body asked for.
    pub fn of(body: &Value) -> Echo {
        let mut fields = Map::new();
        for (k, default) in [
            ("instructions", Value::Null),
            ("max_output_tokens", Value::Null),
            ("metadata", json!({})),
            ("parallel_tool_calls", json!(true)),
            ("temperature", Value::Null),
            ("tool_choice", json!("auto")),
            ("tools", json!([])),
            ("top_p", Value::Null),
            ("user", Value::Null),
        ] {
            fields.insert(k.into(), body.get(k).filter(|v| !v.is_null()).cloned().unwrap_or(default));
        }
        Echo { fields }
    }

    fn response(
        &self,
        id: &str,
        created: &Value,
        model: &Value,
        status: &str,
        output: Vec<Value>,
        usage: Value,
    ) -> Value {
        let mut r = json!({"id": id, "object": "response", "created_at": created, "status": status, "model": model,
            "output": output, "usage": usage, "error": null, "incomplete_details": null,
            "text": {"format": {"type": "text"}}, "store": false});
        if let Some(o) = r.as_object_mut() {
            o.extend(self.fields.clone());
        }
        r
    }
}

fn response_id(v: &Value) -> String {
    format!("resp_{}", v["id"].as_str().unwrap_or("yardmaster").trim_start_matches("chatcmpl-"))
}

/// A chat completion as a Response object.
pub fn to_response(v: &Value, echo: &Echo) -> Value {
    let id = response_id(v);
    let choice = &v["choices"][0];
    let m = &choice["message"];
    let mut output = Vec::new();
    if let Some(t) = m.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        output.push(json!({"type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": t, "annotations": []}]}));
    }
    for (n, c) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        output.push(json!({"type": "function_call", "id": format!("fc_{id}_{n}"), "call_id": c["id"],
            "name": c["function"]["name"], "arguments": c["function"]["arguments"], "status": "completed"}));
    }
    let cut = choice["finish_reason"] == "length";
    let mut r = echo.response(
        &id,
        &v["created"],
        &v["model"],
        if cut { "incomplete" } else { "completed" },
        output,
        usage(&v["usage"]),
    );
    if cut {
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    r
}

/// The internal response as the Responses door answers it. Errors pass as they are (OpenAI's
/// shape).
pub async fn answer(resp: Response, echo: Echo) -> Response {
    if !resp.status().is_success() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    if super::edge::is_stream(&parts) {
        return super::edge::stream_response(&parts, body, Relay { echo, ..Relay::default() });
    }
    let (v, headers) = super::edge::whole(&parts, body).await;
    super::edge::json_response(&to_response(&v, &echo), headers)
}

/// An output item being streamed: a message's text, or a function call's arguments.
struct Item {
    id: String,
    text: bool,
    /// The chat tool call index (function calls).
    call: u64,
    call_id: Value,
    name: Value,
    acc: String,
}

/// Where a stream's translation stands.
#[derive(Default)]
pub struct Relay {
    echo: Echo,
    seq: u64,
    id: String,
    created: Value,
    model: Value,
    started: bool,
    items: Vec<Item>,
    /// The item being streamed (index into `items`).
    open: Option<usize>,
    usage: Value,
    cut: bool,
    done: bool,
}

impl Relay {
    fn emit(&mut self, out: &mut String, mut data: Value) {
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        let kind = data["type"].as_str().unwrap_or("").to_string();
        out.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
    }

    fn item_json(&self, it: &Item, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        if it.text {
            let content =
                if done { json!([{"type": "output_text", "text": it.acc, "annotations": []}]) } else { json!([]) };
            json!({"type": "message", "id": it.id, "status": status, "role": "assistant", "content": content})
        } else {
            json!({"type": "function_call", "id": it.id, "call_id": it.call_id, "name": it.name,
                "arguments": if done { it.acc.as_str() } else { "" }, "status": status})
        }
    }

    fn close(&mut self, out: &mut String) {
        let Some(n) = self.open.take() else { return };
        let (id, text, acc) = (self.items[n].id.clone(), self.items[n].text, self.items[n].acc.clone());
        if text {
            self.emit(out, json!({"type": "response.output_text.done", "item_id": id, "output_index": n, "content_index": 0, "text": acc, "logprobs": []}));
            self.emit(
                out,
                json!({"type": "response.content_part.done", "item_id": id, "output_index": n, "content_index": 0,
                "part": {"type": "output_text", "text": acc, "annotations": []}}),
            );
        } else {
            self.emit(out, json!({"type": "response.function_call_arguments.done", "item_id": id, "output_index": n, "arguments": acc}));
        }
        let item = self.item_json(&self.items[n], true);
        self.emit(out, json!({"type": "response.output_item.done", "output_index": n, "item": item}));
    }

    fn open(&mut self, out: &mut String, item: Item) -> usize {
        self.close(out);
        let n = self.items.len();
        let json = self.item_json(&item, false);
        let (id, text) = (item.id.clone(), item.text);
        self.items.push(item);
        self.open = Some(n);
        self.emit(out, json!({"type": "response.output_item.added", "output_index": n, "item": json}));
        if text {
            self.emit(
                out,
                json!({"type": "response.content_part.added", "item_id": id, "output_index": n, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
        }
        n
    }

    fn snapshot(&self, status: &str, usage: Value) -> Value {
        let output: Vec<Value> = self.items.iter().map(|it| self.item_json(it, status != "in_progress")).collect();
        self.echo.response(&self.id, &self.created, &self.model, status, output, usage)
    }
}

impl Relay {
    /// A translation that echoes `echo`'s settings in its Response objects.
    pub fn new(echo: Echo) -> Relay {
        Relay { echo, ..Relay::default() }
    }
}

impl super::edge::Events for Relay {
    fn chunk(&mut self, v: &Value, out: &mut String) {
        if let Some(e) = v.get("error") {
            let message = e.get("message").and_then(Value::as_str).unwrap_or("the stream was interrupted");
            self.emit(out, json!({"type": "error", "code": "stream_interrupted", "message": message, "param": null}));
            self.done = true;
            return;
        }
        if !self.started {
            self.started = true;
            self.id = response_id(v);
            self.created = v["created"].clone();
            self.model = v["model"].clone();
            let r = self.snapshot("in_progress", Value::Null);
            self.emit(out, json!({"type": "response.created", "response": r.clone()}));
            self.emit(out, json!({"type": "response.in_progress", "response": r}));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = u.clone();
        }
        let Some(c) = v.pointer("/choices/0") else { return };
        let d = &c["delta"];
        if let Some(t) = d.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            let n = match self.open {
                Some(n) if self.items[n].text => n,
                _ => {
                    let id = format!("msg_{}", self.id);
                    self.open(
                        out,
                        Item { id, text: true, call: 0, call_id: Value::Null, name: Value::Null, acc: String::new() },
                    )
                }
            };
            self.items[n].acc.push_str(t);
            let id = self.items[n].id.clone();
            self.emit(out, json!({"type": "response.output_text.delta", "item_id": id, "output_index": n, "content_index": 0, "delta": t, "logprobs": []}));
        }
        for call in d.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let k = call["index"].as_u64().unwrap_or(0);
            let n = match self.items.iter().position(|it| !it.text && it.call == k) {
                Some(n) => n,
                None => {
                    let id = format!("fc_{}_{k}", self.id);
                    let item = Item {
                        id,
                        text: false,
                        call: k,
                        call_id: call["id"].clone(),
                        name: call["function"]["name"].clone(),
                        acc: String::new(),
                    };
                    self.open(out, item)
                }
            };
            if let Some(a) = call.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                self.items[n].acc.push_str(a);
                let id = self.items[n].id.clone();
                self.emit(out, json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": n, "delta": a}));
            }
        }
        if c.get("finish_reason").and_then(Value::as_str) == Some("length") {
            self.cut = true;
        }
    }

    fn finish(&mut self, out: &mut String) {
        self.close(out);
        let status = if self.cut { "incomplete" } else { "completed" };
        let mut r = self.snapshot(status, usage(&self.usage));
        if self.cut {
            r["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        let kind = if self.cut { "response.incomplete" } else { "response.completed" };
        self.emit(out, json!({"type": kind, "response": r}));
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
    fn a_responses_body_becomes_a_chat_body_and_what_is_not_supported_is_a_400() {
        let c = to_chat(json!({"model": "auto", "instructions": "Be brief.", "max_output_tokens": 50, "metadata": {"a": "b"},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}], "tool_choice": {"type": "function", "name": "f"},
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"}
            ]}))
        .unwrap();
        assert_eq!(c["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(c["messages"][1]["content"][1]["image_url"]["url"], "data:image/png;base64,AA");
        assert_eq!(c["messages"][2]["tool_calls"][0]["id"], "c1");
        assert_eq!(c["messages"][3], json!({"role": "tool", "tool_call_id": "c1", "content": "42"}));
        assert_eq!((c["max_tokens"].clone(), c["tool_choice"]["function"]["name"].clone()), (json!(50), json!("f")));
        assert!(c.get("metadata").is_none());
        for bad in [
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
            json!({"model": "m", "input": "x", "store": true}),
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            json!({"model": "m"}),
        ] {
            let e = to_chat(bad.clone()).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{bad}");
        }
        assert!(to_chat(json!({"model": "m", "input": "x", "store": false})).is_ok());
    }

    #[test]
    fn a_chat_stream_becomes_the_responses_event_sequence() {
        let mut r = crate::gateway::edge::Translation::new(Relay { echo: Echo::of(&json!({})), ..Relay::default() });
        let mut out = String::new();
        for f in [
            json!({"id": "chatcmpl-1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}),
            json!({"id": "chatcmpl-1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}),
            json!({"id": "chatcmpl-1", "created": 1, "model": "m", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}),
        ] {
            out.push_str(&r.feed(format!("data: {f}\n\n").as_bytes()));
        }
        out.push_str(&r.feed(b"data: [DONE]\n\n"));
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert!(out.contains("\"total_tokens\":5") && out.contains("\"sequence_number\":12"), "{out}");
    }
}
