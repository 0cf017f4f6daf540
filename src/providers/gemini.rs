//! Google's Gemini API (`generateContent`, `streamGenerateContent`, `batchEmbedContents`),
//! translated both ways. System messages become `systemInstruction`, tools become
//! `functionDeclarations`, tool calls and results become `functionCall` and `functionResponse`
//! parts, and safety blocks come back as `finish_reason: "content_filter"`. The key travels in
//! the `x-goog-api-key` header, never in the URL. The choices made where the formats differ are
//! in docs/providers.md.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use super::native::{self, Translate};
use super::{Call, ProviderApi, Reply, UpstreamError};
use crate::catalog::Endpoint;

/// The provider's kind, as written in the config.
pub const PROVIDER_TYPE: &str = "gemini";
/// The OpenAI chat fields that the translation uses; the others are dropped (and logged).
const TAKEN: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "response_format",
    "stream",
    "stream_options",
];
/// The OpenAI embeddings fields that the translation uses (`encoding_format` is honoured by the
/// gateway's reply stage, which encodes the vectors as base64 when asked).
const TAKEN_EMBEDDINGS: &[&str] = &["model", "input", "dimensions", "encoding_format"];

/// A Gemini upstream.
#[derive(Clone, Debug)]
pub struct Gemini {
    base: String,
    upstream: native::Upstream,
}

impl Gemini {
    /// A provider at `base_url` (the API root, `https://generativelanguage.googleapis.com`).
    pub fn new(
        base_url: &str,
        key: Option<String>,
        headers: BTreeMap<String, String>,
        http: reqwest::Client,
    ) -> Gemini {
        let upstream = native::Upstream::new(http, key, native::Auth::Header("x-goog-api-key"), headers);
        Gemini { base: base_url.trim_end_matches('/').to_string(), upstream }
    }

    fn url(&self, model: &str, method: &str) -> Result<reqwest::Url, UpstreamError> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        if model.is_empty() || model.contains(['/', '?', '#']) {
            return Err(UpstreamError::Unavailable(format!("`{model}` is not a Gemini model id")));
        }
        let sse = if method == "streamGenerateContent" { "?alt=sse" } else { "" };
        reqwest::Url::parse(&format!("{}/v1beta/models/{model}:{method}{sse}", self.base))
            .map_err(|_| UpstreamError::Unavailable("the base_url is not a URL".into()))
    }
}

/// What the reply translation needs from the request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shape {
    /// The client asked for the stream's usage.
    pub wants_usage: bool,
}

/// Gemini's error body -> OpenAI's.
pub fn error_body(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v.pointer("/error/status").and_then(Value::as_str);
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(|| format!("gemini answered {status}"), str::to_string);
    native::openai_error(&message, super::error_type(status), code)
}

fn user_parts(content: Option<&Value>) -> Result<Vec<Value>, String> {
    native::user_parts(
        content,
        "Gemini",
        |t| json!({"text": t}),
        |url| match native::data_url(url) {
            Some((media, data)) => json!({"inlineData": {"mimeType": media, "data": data}}),
            None => json!({"fileData": {"mimeType": native::media_type_of(url), "fileUri": url}}),
        },
    )
}

/// OpenAI's chat request -> Gemini's `generateContent` request.
pub fn request(body: &Value) -> Result<(Value, Shape), String> {
    let obj = body.as_object().ok_or("the request body must be a JSON object")?;
    let mut system: Vec<String> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Gemini's function responses name the function; OpenAI's tool messages name the call.
    let mut names: HashMap<String, String> = HashMap::new();
    for m in obj.get("messages").and_then(Value::as_array).ok_or("`messages` must be a list")? {
        let content = m.get("content");
        match m.get("role").and_then(Value::as_str).unwrap_or("") {
            "system" | "developer" => system.push(native::content_text(content)),
            "user" => native::push_turn(&mut contents, "user", "parts", user_parts(content)?),
            "assistant" => {
                let mut parts = Vec::new();
                let text = native::content_text(content);
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or("");
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        names.insert(id.to_string(), name.to_string());
                    }
                    parts.push(json!({"functionCall": {"name": name, "args": native::tool_arguments(call)}}));
                }
                native::push_turn(&mut contents, "model", "parts", parts);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or("a tool message needs `tool_call_id`")?;
                let name = names.get(id).cloned().ok_or_else(|| format!("no earlier tool call has the id `{id}`"))?;
                let text = native::content_text(content);
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": text}),
                };
                native::push_turn(
                    &mut contents,
                    "user",
                    "parts",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
            other => return Err(format!("messages with role `{other}` cannot be sent to Gemini")),
        }
    }
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": [{"text": system.join("\n\n")}]}));
    }
    let mut config = Map::new();
    if let Some(t) = obj.get("temperature") {
        config.insert("temperature".into(), t.clone());
    }
    if let Some(p) = obj.get("top_p") {
        config.insert("topP".into(), p.clone());
    }
    if let Some(n) = native::max_tokens(body) {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(stop) = native::stop_list(obj.get("stop")) {
        config.insert("stopSequences".into(), stop);
    }
    if let Some(seed) = obj.get("seed") {
        config.insert("seed".into(), seed.clone());
    }
    match obj.get("response_format").and_then(|r| r.get("type")).and_then(Value::as_str) {
        Some("json_schema") => {
            config.insert("responseMimeType".into(), json!("application/json"));
            if let Some(schema) = body.pointer("/response_format/json_schema/schema") {
                config.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        Some("json_object") => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        _ => {}
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    let declarations: Vec<Value> = obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str).unwrap_or("function") == "function")
        .map(|t| {
            let f = t.get("function").unwrap_or(t);
            let mut d = json!({"name": f.get("name").cloned().unwrap_or(Value::Null)});
            if let Some(desc) = f.get("description") {
                d["description"] = desc.clone();
            }
            if let Some(p) = f.get("parameters") {
                d["parametersJsonSchema"] = p.clone();
            }
            d
        })
        .collect();
    if !declarations.is_empty() {
        out.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
    }
    let calling = match obj.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(json!({"mode": "AUTO"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"mode": "NONE"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"mode": "ANY"})),
        Some(Value::Object(c)) => {
            c.get("function").and_then(|f| f.get("name")).map(|n| json!({"mode": "ANY", "allowedFunctionNames": [n]}))
        }
        _ => None,
    };
    if let Some(c) = calling {
        out.insert("toolConfig".into(), json!({"functionCallingConfig": c}));
    }
    Ok((Value::Object(out), Shape { wants_usage: native::wants_usage(body) }))
}

/// Gemini's finish reason -> OpenAI's.
fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" | "LANGUAGE" => {
            "content_filter"
        }
        _ if called => "tool_calls",
        _ => "stop",
    }
}

fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let u = v.get("usageMetadata")?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    // Thinking tokens are billed as output.
    Some((n("promptTokenCount"), n("candidatesTokenCount") + n("thoughtsTokenCount")))
}

/// The text and function calls of a candidate's parts (thoughts left out).
fn parts_of(candidate: &Value, next_call: &mut u64) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(fc) = p.get("functionCall") {
            let id = fc.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{next_call}"), str::to_string);
            calls.push(json!({"index": *next_call, "id": id, "type": "function", "function": {
                "name": fc.get("name").cloned().unwrap_or(Value::Null),
                "arguments": fc.get("args").cloned().unwrap_or_else(|| json!({})).to_string(),
            }}));
            *next_call += 1;
        }
    }
    (text, calls)
}

/// Gemini's reply -> OpenAI's chat completion.
pub fn reply(v: &Value, model: &str) -> Result<Value, UpstreamError> {
    // Without usageMetadata there is no usage: the gateway then counts the tokens itself.
    let usage = usage_of(v).map(
        |(input, output)| json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}),
    );
    let id = v.get("responseId").and_then(Value::as_str).unwrap_or("gemini").to_string();
    let Some(candidate) = v.get("candidates").and_then(Value::as_array).and_then(|c| c.first()) else {
        // The prompt itself was blocked: no candidate, and a reason.
        if v.pointer("/promptFeedback/blockReason").is_some() {
            let mut out = json!({"id": id, "object": "chat.completion", "created": native::now(), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null}, "finish_reason": "content_filter"}]});
            if let Some(u) = usage {
                out["usage"] = u;
            }
            return Ok(out);
        }
        return Err(UpstreamError::Malformed("the reply has no candidates".into()));
    };
    let (text, calls) = parts_of(candidate, &mut 0);
    let reason = candidate.get("finishReason").and_then(Value::as_str).unwrap_or("STOP");
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        let calls: Vec<Value> = calls
            .into_iter()
            .map(|mut c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("index");
                }
                c
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    let finish = finish_reason(reason, message.get("tool_calls").is_some());
    let mut out = json!({"id": id, "object": "chat.completion", "created": native::now(), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}]});
    if let Some(u) = usage {
        out["usage"] = u;
    }
    Ok(out)
}

/// Gemini's `streamGenerateContent` (SSE) -> OpenAI chunks.
#[derive(Debug, Default)]
pub struct Stream {
    shape: Shape,
    out: native::Chunks,
    usage: Option<(u64, u64)>,
    calls: u64,
    started: bool,
    finished: bool,
}

impl Stream {
    /// A translator for one streamed reply.
    pub fn new(model: &str, shape: Shape) -> Stream {
        Stream { shape, out: native::Chunks::new("gemini", model), ..Stream::default() }
    }
}

impl Translate for Stream {
    fn event(&mut self, _kind: &str, data: &str) -> Result<Vec<String>, UpstreamError> {
        let v = native::event_json(data)?;
        if v.get("error").is_some() {
            let status = v
                .pointer("/error/code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or(502);
            return Err(UpstreamError::Status { status, body: error_body(status, data), retry_after: None });
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            if let Some(id) = v.get("responseId").and_then(Value::as_str) {
                self.out.id = id.to_string();
            }
            out.push(self.out.delta(json!({"role": "assistant", "content": ""}), None));
        }
        if let Some(u) = usage_of(&v) {
            self.usage = Some(u);
        }
        let Some(candidate) = v.get("candidates").and_then(Value::as_array).and_then(|c| c.first()) else {
            if v.pointer("/promptFeedback/blockReason").is_some() {
                self.finished = true;
                out.push(self.out.delta(json!({}), Some("content_filter")));
            }
            return Ok(out);
        };
        let (text, calls) = parts_of(candidate, &mut self.calls);
        if !text.is_empty() {
            out.push(self.out.delta(json!({"content": text}), None));
        }
        if !calls.is_empty() {
            out.push(self.out.delta(json!({"tool_calls": calls}), None));
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finished = true;
            out.push(self.out.delta(json!({}), Some(finish_reason(reason, self.calls > 0))));
        }
        Ok(out)
    }

    fn end(&mut self) -> Result<Vec<String>, UpstreamError> {
        if !self.finished {
            return Err(UpstreamError::Malformed("the stream ended without a finish reason".into()));
        }
        let mut out = Vec::new();
        if let (true, Some((input, output))) = (self.shape.wants_usage, self.usage) {
            out.push(self.out.usage(input, output));
        }
        out.push("[DONE]".into());
        Ok(out)
    }
}

/// OpenAI's embeddings request -> Gemini's `batchEmbedContents`.
pub fn embed_request(body: &Value, model: &str) -> Result<Value, String> {
    let texts: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().ok_or("Gemini embeds text only (not token arrays)"))
            .collect::<Result<_, _>>()?,
        _ => return Err("`input` must be a string or a list of strings".into()),
    };
    let model = format!("models/{}", model.strip_prefix("models/").unwrap_or(model));
    let requests: Vec<Value> = texts
        .iter()
        .map(|t| {
            let mut r = json!({"model": model, "content": {"parts": [{"text": t}]}});
            if let Some(d) = body.get("dimensions") {
                r["outputDimensionality"] = d.clone();
            }
            r
        })
        .collect();
    Ok(json!({"requests": requests}))
}

/// Gemini's embeddings -> OpenAI's (without usage: Gemini reports none, so the gateway counts).
pub fn embed_reply(v: &Value, model: &str) -> Result<Value, UpstreamError> {
    let list = v
        .get("embeddings")
        .and_then(Value::as_array)
        .ok_or_else(|| UpstreamError::Malformed("the reply has no `embeddings`".into()))?;
    let data: Vec<Value> = list
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e.get("values").cloned().unwrap_or(json!([]))}))
        .collect();
    Ok(json!({"object": "list", "data": data, "model": model}))
}

impl ProviderApi for Gemini {
    async fn call(&self, call: Call) -> Result<Reply, UpstreamError> {
        if call.endpoint == Endpoint::Moderations {
            return Err(UpstreamError::Unavailable("Gemini offers no moderations endpoint".into()));
        }
        let (body, model) = native::client_body(&call.body)?;
        let taken = if call.endpoint == Endpoint::Embeddings { TAKEN_EMBEDDINGS } else { TAKEN };
        native::log_dropped(PROVIDER_TYPE, &native::dropped_fields(&body, taken));
        let (method, native_body, shape) = if call.endpoint == Endpoint::Embeddings {
            ("batchEmbedContents", embed_request(&body, &model).map_err(native::unsupported)?, Shape::default())
        } else {
            let (b, shape) = request(&body).map_err(native::unsupported)?;
            (if call.stream { "streamGenerateContent" } else { "generateContent" }, b, shape)
        };
        let req = self.upstream.post(self.url(&model, method)?, call.traceparent.as_deref()).json(&native_body);
        let resp = self.upstream.send(req, call.first_byte_timeout, call.limits, error_body).await?;
        if call.stream && call.endpoint == Endpoint::Chat {
            return Ok(Reply::Stream(native::translate_stream(
                self.upstream.events(resp, call.limits),
                Stream::new(&model, shape),
            )));
        }
        let v = self.upstream.json_reply(resp, call.limits).await?;
        match call.endpoint {
            Endpoint::Embeddings => embed_reply(&v, &model).map(Reply::Json),
            Endpoint::Chat | Endpoint::Moderations => reply(&v, &model).map(Reply::Json),
        }
    }
}
