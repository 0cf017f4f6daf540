//! The built-in mock provider: answers in OpenAI's format without any network. Its latency,
//! failure rate and streaming speed come from its config, so the quickstart runs with no keys and
//! policies can be tried against slow or failing models.

use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;

use super::{Call, ProviderApi, Reply, UpstreamError};
use crate::catalog::Endpoint;
use crate::config::ProviderConfig;

/// The provider's kind, as written in the config.
pub const PROVIDER_TYPE: &str = "mock";

/// The mock.
#[derive(Clone, Debug)]
pub struct Mock {
    name: String,
    latency: Duration,
    fail_rate: f64,
    tokens_per_second: f64,
}

const WORDS: &[&str] = &[
    "This",
    "is",
    "a",
    "mock",
    "reply",
    "from",
    "Yardmaster.",
    "It",
    "streams",
    "one",
    "word",
    "at",
    "a",
    "time,",
    "as",
    "fast",
    "as",
    "its",
    "config",
    "says.",
];

impl Mock {
    /// A mock from its config.
    pub fn new(name: &str, cfg: &ProviderConfig) -> Mock {
        Mock {
            name: name.to_string(),
            latency: Duration::from_millis(cfg.latency.unwrap_or(0)),
            fail_rate: cfg.fail_rate.unwrap_or(0.0),
            tokens_per_second: cfg.tokens_per_second.unwrap_or(0.0),
        }
    }

    fn fails(&self) -> bool {
        self.fail_rate > 0.0 && rand::rng().random::<f64>() < self.fail_rate
    }
}

/// o200k tokens of the messages' text, as a real provider would report (a large text on a
/// blocking thread).
async fn prompt_tokens(body: &serde_json::Value) -> u64 {
    let mut text = String::new();
    for m in body.get("messages").and_then(serde_json::Value::as_array).into_iter().flatten() {
        match m.get("content") {
            Some(serde_json::Value::String(s)) => text.push_str(s),
            Some(serde_json::Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(serde_json::Value::as_str) {
                        text.push_str(t);
                    }
                }
            }
            _ => {}
        }
        text.push('\n');
    }
    crate::util::tokens::count_off_thread(text.into()).await
}

impl ProviderApi for Mock {
    async fn call(&self, call: Call) -> Result<Reply, UpstreamError> {
        if !self.latency.is_zero() {
            if self.latency > call.first_byte_timeout {
                tokio::time::sleep(call.first_byte_timeout).await;
                return Err(UpstreamError::Timeout);
            }
            tokio::time::sleep(self.latency).await;
        }
        if self.fails() {
            return Err(UpstreamError::Status {
                status: 500,
                body: r#"{"error":{"message":"mock failure","type":"api_error","code":null,"param":null}}"#.into(),
                retry_after: None,
            });
        }
        let body: serde_json::Value =
            serde_json::from_slice(&call.body).map_err(|e| UpstreamError::Malformed(format!("request: {e}")))?;
        let model = body.get("model").and_then(|m| m.as_str()).unwrap_or("mock").to_string();
        let id = format!("mock-{}", uuid::Uuid::new_v4().simple());
        let created = chrono::Utc::now().timestamp();
        if call.endpoint == Endpoint::Embeddings {
            return embeddings(&body, &model).map(Reply::Json);
        }
        if call.endpoint == Endpoint::Moderations {
            return Ok(Reply::Json(moderations(&body, &model, &id)));
        }
        let max = body.get("max_completion_tokens").or_else(|| body.get("max_tokens")).and_then(|m| m.as_u64());
        let n = max.map_or(WORDS.len(), |m| (m as usize).min(WORDS.len()).max(1));
        let words: Vec<&str> = WORDS.iter().copied().take(n).collect();
        let choices = body.get("n").and_then(serde_json::Value::as_u64).unwrap_or(1).clamp(1, 16) as usize;
        let input = prompt_tokens(&body).await;
        let answer = match (tool_call(&body), structured(&body)) {
            (Some(call), _) => Answer::Tool(call),
            (None, Some(json)) => Answer::Json(json),
            (None, None) => Answer::Text {
                words,
                finish: if max.is_some_and(|m| (m as usize) < WORDS.len()) { "length" } else { "stop" },
            },
        };
        let output = answer.tokens() * choices as u64;
        let usage =
            serde_json::json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
        if !call.stream {
            let choices: Vec<serde_json::Value> = (0..choices)
                .map(|i| serde_json::json!({"index": i, "message": answer.message(), "finish_reason": answer.finish()}))
                .collect();
            return Ok(Reply::Json(serde_json::json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": choices,
                "usage": usage,
                "system_fingerprint": format!("yardmaster-mock-{}", self.name),
            })));
        }
        let include_usage =
            body.pointer("/stream_options/include_usage").and_then(serde_json::Value::as_bool).unwrap_or(false);
        let pause = if self.tokens_per_second > 0.0 {
            Duration::from_secs_f64(1.0 / self.tokens_per_second)
        } else {
            Duration::ZERO
        };
        let chunk = move |index: usize, delta: serde_json::Value, finish: Option<&str>| {
            serde_json::json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})
        };
        let mut events: Vec<String> = Vec::new();
        // Each delta goes out once per choice, the choices interleaved as OpenAI sends them.
        for delta in answer.deltas() {
            events.extend((0..choices).map(|i| chunk(i, delta.clone(), None).to_string()));
        }
        let mut lasts: Vec<serde_json::Value> =
            (0..choices).map(|i| chunk(i, serde_json::json!({}), Some(answer.finish()))).collect();
        if include_usage {
            let first = &lasts[0];
            let usage_chunk = serde_json::json!({"id": first["id"], "object": "chat.completion.chunk",
                "created": created, "model": first["model"], "choices": [], "usage": usage});
            lasts.push(usage_chunk);
        }
        events.extend(lasts.iter().map(serde_json::Value::to_string));
        events.push("[DONE]".into());
        let stream = futures_util::stream::iter(events.into_iter().enumerate()).then(move |(i, e)| async move {
            if i > 0 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            Ok(e)
        });
        Ok(Reply::Stream(Box::pin(stream)))
    }
}

/// What the mock answers: its words, JSON in the format the request asked for, or a call of one
/// of the request's tools.
enum Answer<'a> {
    Text { words: Vec<&'a str>, finish: &'static str },
    Json(String),
    Tool(ToolCall),
}

/// A tool call the mock makes.
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

impl Answer<'_> {
    fn finish(&self) -> &'static str {
        match self {
            Answer::Text { finish, .. } => finish,
            Answer::Json(_) => "stop",
            Answer::Tool(_) => "tool_calls",
        }
    }

    /// Completion tokens of one choice: a word each, or the arguments' o200k tokens.
    fn tokens(&self) -> u64 {
        match self {
            Answer::Text { words, .. } => words.len() as u64,
            Answer::Json(text) => crate::util::tokens::count(text).max(1),
            Answer::Tool(call) => crate::util::tokens::count(&call.arguments).max(1),
        }
    }

    fn message(&self) -> serde_json::Value {
        match self {
            Answer::Text { words, .. } => serde_json::json!({"role": "assistant", "content": words.join(" ")}),
            Answer::Json(text) => serde_json::json!({"role": "assistant", "content": text}),
            Answer::Tool(call) => serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]}),
        }
    }

    /// The stream's deltas: the role, then a word at a time, or the call and its arguments in
    /// pieces.
    fn deltas(&self) -> Vec<serde_json::Value> {
        match self {
            Answer::Text { words, .. } => {
                let mut out = vec![serde_json::json!({"role": "assistant", "content": ""})];
                for (i, w) in words.iter().enumerate() {
                    let text = if i == 0 { (*w).to_string() } else { format!(" {w}") };
                    out.push(serde_json::json!({"content": text}));
                }
                out
            }
            Answer::Json(text) => {
                let mut out = vec![serde_json::json!({"role": "assistant", "content": ""})];
                let chars: Vec<char> = text.chars().collect();
                for piece in chars.chunks(8) {
                    out.push(serde_json::json!({"content": piece.iter().collect::<String>()}));
                }
                out
            }
            Answer::Tool(call) => {
                let mut out = vec![serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
                    {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}]})];
                let chars: Vec<char> = call.arguments.chars().collect();
                for piece in chars.chunks(8) {
                    let piece: String = piece.iter().collect();
                    out.push(serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}));
                }
                out
            }
        }
    }
}

/// The tool call the mock makes, if any: when the request offers tools and `tool_choice` allows
/// one (`required` or a named function always; `auto`, or none given, unless the conversation
/// already holds a tool's result, which the mock answers in words so that an agent's loop ends). The call is to
/// the named function or the first tool, with arguments made from its parameters' schema.
fn tool_call(body: &serde_json::Value) -> Option<ToolCall> {
    let tools = body.get("tools")?.as_array().filter(|t| !t.is_empty())?;
    let choice = body.get("tool_choice");
    let named = choice.and_then(|c| c.pointer("/function/name")).and_then(serde_json::Value::as_str);
    match choice.and_then(serde_json::Value::as_str) {
        Some("none") => return None,
        Some("required") => {}
        _ if named.is_some() => {}
        _ => {
            // Under `auto`, one call a conversation: once a tool's result is in it, the mock
            // answers in words, so that an agent's loop ends (an agent such as Claude Code sends
            // its own text after a tool's result, so the last message alone cannot tell).
            let messages = body.get("messages").and_then(serde_json::Value::as_array);
            if messages.into_iter().flatten().any(|m| m.get("role").and_then(serde_json::Value::as_str) == Some("tool"))
            {
                return None;
            }
        }
    }
    let function = |t: &serde_json::Value| t.get("function").cloned();
    let f = match named {
        Some(name) => {
            tools.iter().filter_map(function).find(|f| f.get("name").and_then(|n| n.as_str()) == Some(name))?
        }
        None => tools.iter().find_map(function)?,
    };
    let name = f.get("name")?.as_str()?.to_string();
    let arguments = example(f.get("parameters").unwrap_or(&serde_json::json!({"type": "object"}))).to_string();
    let id = format!("call_{:016x}", fnv(format!("{name}{arguments}").as_bytes()));
    Some(ToolCall { id, name, arguments })
}

/// The JSON the request's `response_format` asks for, as text: a value of its `json_schema`'s
/// schema, or for `json_object` an object. `None` for text (or no format).
fn structured(body: &serde_json::Value) -> Option<String> {
    let format = body.get("response_format")?;
    match format.get("type").and_then(serde_json::Value::as_str)? {
        "json_schema" => {
            let schema =
                format.pointer("/json_schema/schema").cloned().unwrap_or(serde_json::json!({"type": "object"}));
            Some(example_in(&schema, &schema, 0).to_string())
        }
        "json_object" => Some(serde_json::json!({"answer": WORDS.join(" ")}).to_string()),
        _ => None,
    }
}

/// A value that fits a JSON schema (see [`example_in`]).
fn example(schema: &serde_json::Value) -> serde_json::Value {
    example_in(schema, schema, 0)
}

/// A value that fits `schema`, whose `$ref`s point into `root` (`#/$defs/...`,
/// `#/definitions/...`): the first of an `enum`, `const`, `anyOf` or `oneOf`; every `allOf`
/// part merged; a string of at least `minLength`, the least number the bounds allow, true, an
/// array of `minItems` (at least one) items; an object with its required properties (all of
/// them when none are listed). Recursion stops at 16 levels.
fn example_in(schema: &serde_json::Value, root: &serde_json::Value, depth: usize) -> serde_json::Value {
    use serde_json::{json, Value};
    if depth > 16 {
        return Value::Null;
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r.strip_prefix('#').and_then(|p| root.pointer(p)).unwrap_or(&Value::Null);
        return example_in(target, root, depth + 1);
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = serde_json::Map::new();
        for p in parts {
            if let Value::Object(o) = example_in(p, root, depth + 1) {
                merged.extend(o);
            }
        }
        return Value::Object(merged);
    }
    if let Some(v) = schema.get("const") {
        return v.clone();
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(first) = schema.get(key).and_then(Value::as_array).and_then(|e| e.first()) {
            return example_in(first, root, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let props = schema.get("properties").and_then(Value::as_object);
            let required: Option<Vec<&str>> =
                schema.get("required").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_str).collect());
            let mut out = serde_json::Map::new();
            for (k, v) in props.into_iter().flatten() {
                if required.as_ref().is_none_or(|r| r.contains(&k.as_str())) {
                    out.insert(k.clone(), example_in(v, root, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1).clamp(1, 16) as usize;
            let item = schema.get("items").map_or(json!("example"), |i| example_in(i, root, depth + 1));
            Value::Array(vec![item; n])
        }
        "integer" | "number" => {
            let least = schema.get("minimum").and_then(Value::as_f64).unwrap_or(1.0);
            let least = match schema.get("exclusiveMinimum").and_then(Value::as_f64) {
                Some(x) if x >= least => x + 1.0,
                _ => least,
            };
            let v = schema.get("maximum").and_then(Value::as_f64).map_or(least, |m| least.min(m));
            if kind == "integer" {
                json!(v.ceil() as i64)
            } else {
                json!(v)
            }
        }
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            json!(format!("example{}", "x".repeat(min.saturating_sub(7))))
        }
    }
}

/// The words the mock's moderations flag, and the category each flags (SPEC §12).
pub const FLAGGED: &[(&str, &str)] = &[
    ("kill", "violence"),
    ("bomb", "violence"),
    ("attack", "violence"),
    ("weapon", "violence"),
    ("hate", "hate"),
    ("suicide", "self-harm"),
];

/// The categories of OpenAI's moderation results.
const CATEGORIES: &[&str] = &[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// Moderations: one result per input, flagged when the text holds a word of [`FLAGGED`] (whole
/// words, any case), with that word's category at a score of 0.99 and the others at 0.01.
fn moderations(body: &serde_json::Value, model: &str, id: &str) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.get("text").and_then(Value::as_str).unwrap_or("").to_string(),
            })
            .collect(),
        _ => vec![String::new()],
    };
    let results: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let lower = text.to_lowercase();
            let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric() && c != '-').collect();
            let hit: Vec<&str> = FLAGGED.iter().filter(|(w, _)| words.contains(w)).map(|(_, c)| *c).collect();
            let (mut categories, mut scores) = (Map::new(), Map::new());
            for c in CATEGORIES {
                categories.insert((*c).into(), json!(hit.contains(c)));
                scores.insert((*c).into(), json!(if hit.contains(c) { 0.99 } else { 0.01 }));
            }
            json!({"flagged": !hit.is_empty(), "categories": categories, "category_scores": scores})
        })
        .collect();
    json!({"id": format!("modr-{id}"), "model": model, "results": results})
}

/// FNV-1a: a stable seed from text.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Embeddings: one unit vector per input, the same for the same text, of `dimensions` numbers
/// (256 when not given; 1 to 8,192).
fn embeddings(body: &serde_json::Value, model: &str) -> Result<serde_json::Value, UpstreamError> {
    use serde_json::Value;
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => vec![Value::Array(a.clone()).to_string()],
        Some(Value::Array(a)) => a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect(),
        Some(v) => vec![v.to_string()],
        None => vec![String::new()],
    };
    let dims = match body.get("dimensions") {
        None | Some(Value::Null) => 256,
        Some(d) => match d.as_u64().filter(|d| (1..=8192).contains(d)) {
            Some(d) => d as usize,
            None => {
                return Err(UpstreamError::Status {
                    status: 400,
                    body: r#"{"error":{"message":"dimensions must be an integer from 1 to 8192","type":"invalid_request_error","code":"invalid_value","param":"dimensions"}}"#.into(),
                    retry_after: None,
                })
            }
        },
    };
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens += crate::util::tokens::count(text).max(1);
            serde_json::json!({"object": "embedding", "index": i, "embedding": vector(text, dims)})
        })
        .collect();
    Ok(serde_json::json!({
        "object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
}

/// Numbers in -1..1 seeded by `seed` (xorshift).
fn noise(seed: u64, dims: usize) -> impl Iterator<Item = f32> {
    let mut x = seed | 1;
    (0..dims).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    })
}

/// A unit vector of `dims` numbers for `text`: the sum of one seeded vector per word (lower
/// case, letters and digits), so that texts sharing most of their words point the same way (one
/// word changed in thirty keeps a cosine above 0.9) and unrelated texts are nearly orthogonal.
/// A text without words gets a vector seeded by the whole text.
fn vector(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0f32; dims];
    let mut words = 0;
    for w in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        words += 1;
        for (a, n) in v.iter_mut().zip(noise(fnv(w.to_lowercase().as_bytes()), dims)) {
            *a += n;
        }
    }
    if words == 0 {
        v = noise(fnv(text.as_bytes()), dims).collect();
    }
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_json_schema_is_answered_with_a_value_that_fits_it() {
        let schema = serde_json::json!({
            "type": "object", "required": ["steps", "level", "count", "ratio"], "additionalProperties": false,
            "$defs": {"Step": {"type": "object", "properties": {"text": {"type": "string", "minLength": 12}}, "required": ["text"]}},
            "properties": {
                "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}, "minItems": 2},
                "level": {"enum": ["low", "high"]},
                "count": {"type": "integer", "minimum": 3, "maximum": 9},
                "ratio": {"type": "number", "exclusiveMinimum": 0.5},
                "note": {"type": "string"}
            }
        });
        let body = serde_json::json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}});
        let v: serde_json::Value = serde_json::from_str(&super::structured(&body).unwrap()).unwrap();
        assert_eq!(v["steps"].as_array().unwrap().len(), 2);
        assert!(v["steps"][0]["text"].as_str().unwrap().len() >= 12, "{v}");
        assert_eq!((v["level"].clone(), v["count"].clone()), (serde_json::json!("low"), serde_json::json!(3)));
        assert!(v["ratio"].as_f64().unwrap() > 0.5);
        assert!(v.get("note").is_none(), "only the required properties: {v}");
        let object = serde_json::json!({"response_format": {"type": "json_object"}});
        assert!(serde_json::from_str::<serde_json::Value>(&super::structured(&object).unwrap()).unwrap().is_object());
        assert!(super::structured(&serde_json::json!({"response_format": {"type": "text"}})).is_none());
    }

    #[test]
    fn tool_calls_fit_the_schema_and_follow_tool_choice() {
        let weather = json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1}, "note": {"type": "string"}}, "required": ["city", "unit", "days"]}}});
        let other = json!({"type": "function", "function": {"name": "other"}});
        let user = json!([{"role": "user", "content": "weather?"}]);
        let call = tool_call(&json!({"messages": user, "tools": [weather, other]})).unwrap();
        assert_eq!(call.name, "get_weather");
        let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args, json!({"city": "example", "unit": "c", "days": 1}));
        // Named, none, and a tool's result to answer.
        let named = json!({"type": "function", "function": {"name": "other"}});
        assert_eq!(
            tool_call(&json!({"messages": user, "tools": [weather, other], "tool_choice": named})).unwrap().name,
            "other"
        );
        assert!(tool_call(&json!({"messages": user, "tools": [weather], "tool_choice": "none"})).is_none());
        let answered =
            json!([{"role": "user", "content": "w"}, {"role": "tool", "tool_call_id": "x", "content": "sunny"}]);
        assert!(tool_call(&json!({"messages": answered, "tools": [weather]})).is_none());
        assert!(tool_call(&json!({"messages": answered, "tools": [weather], "tool_choice": "required"})).is_some());
        assert!(tool_call(&json!({"messages": user})).is_none());
    }

    #[test]
    fn embeddings_have_their_dimensions_and_depend_on_the_text() {
        let v = embeddings(&json!({"input": ["a", "b", "a"], "dimensions": 3}), "m").unwrap();
        let e: Vec<&serde_json::Value> = v["data"].as_array().unwrap().iter().map(|d| &d["embedding"]).collect();
        assert_eq!(e[0].as_array().unwrap().len(), 3);
        assert_eq!(e[0], e[2]);
        assert_ne!(e[0], e[1]);
        let norm: f64 = e[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        assert!(embeddings(&json!({"input": "a", "dimensions": 0}), "m").is_err());
        assert_eq!(
            embeddings(&json!({"input": "a"}), "m").unwrap()["data"][0]["embedding"].as_array().unwrap().len(),
            256
        );
    }

    #[test]
    fn texts_that_share_most_words_are_close_and_unrelated_ones_are_not() {
        let cos = |a: &str, b: &str| -> f32 { vector(a, 256).iter().zip(vector(b, 256)).map(|(x, y)| x * y).sum() };
        let base = "how do I reset my password for the account I opened last year on the mobile app when the email \
                    link has expired and support is closed for the weekend";
        assert_eq!(base.split_whitespace().count(), 30);
        let one_word = base.replace("weekend", "holidays");
        assert!(cos(base, &one_word) >= 0.9, "{}", cos(base, &one_word));
        let unrelated = "which regions does the batch embedding endpoint serve and what are its rate limits per minute";
        assert!(cos(base, unrelated).abs() < 0.5, "{}", cos(base, unrelated));
        assert!((cos(base, base) - 1.0).abs() < 1e-5);
    }
}
