//! Replies: a [`Dispatched`] request -> the client's response. A whole JSON reply gets its usage
//! (reported, or counted when the upstream sent none), is settled, and goes back with `model`
//! set to the catalog name and `usage.cost`; an OpenAI-compatible reply passes through member for
//! member as the upstream wrote it, but for those two. A stream goes to the relay
//! ([`super::stream`]), which settles when it ends.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::settle::Settle;
use super::stream::{relay, Tally};
use super::AppState;
use crate::accounting::{usage, Usage};
use crate::dispatch::Success;
use crate::providers::native::RawObject;
use crate::providers::Reply;

/// What came back, with what the reply needs from the request.
pub struct Dispatched {
    /// The answer.
    pub success: Success,
    /// The prompt text, to count tokens when the upstream reports none.
    pub prompt: String,
    /// Its tokens, when routing counted them.
    pub prompt_tokens: Option<u64>,
    /// Whether a streaming client asked for the usage chunk.
    pub wants_usage: bool,
    /// Embeddings asked for as base64 (`encoding_format: "base64"`, the `openai` npm package's
    /// default): vectors that came back as numbers are encoded here.
    pub base64: bool,
    /// The cache's ticket, when the rule caches and the lookup missed: a whole successful answer
    /// is stored with it.
    pub ticket: Option<crate::cache::Ticket>,
}

/// The response to a dispatched request.
pub fn reply(st: &AppState, d: Dispatched, mut settle: Settle) -> Response {
    let model = d.success.model;
    let ticket = d.ticket;
    let caching = ticket.is_some();
    let stored = |settle: &mut Settle, (resp, v): (Response, Value), ticket: Option<crate::cache::Ticket>| {
        if let Some(t) = ticket {
            crate::cache::store(&st.cache, t, &v, super::cache::answered(settle));
        }
        resp
    };
    match d.success.reply {
        Reply::Json(mut v) => {
            if d.base64 {
                embeddings_as_base64(&mut v);
            }
            let out = json_reply(&mut settle, v, &model, &d.prompt, d.prompt_tokens);
            stored(&mut settle, out, ticket)
        }
        Reply::Raw(raw) if d.base64 || caching => {
            // An OpenAI-compatible server that ignored `encoding_format` sent numbers; a reply to
            // be cached is kept as a value.
            let mut v = raw.into_value();
            if d.base64 {
                embeddings_as_base64(&mut v);
            }
            let out = json_reply(&mut settle, v, &model, &d.prompt, d.prompt_tokens);
            stored(&mut settle, out, ticket)
        }
        Reply::Raw(raw) => raw_reply(&mut settle, raw, &model, &d.prompt, d.prompt_tokens),
        Reply::Stream(events) => {
            let mut resp_headers = axum::http::HeaderMap::new();
            settle.record.status = 200;
            settle.record.head_at = Some(settle.record.started.elapsed());
            settle.record.headers(&mut resp_headers);
            let mut tally = Tally::new(settle, d.prompt, d.prompt_tokens, d.wants_usage);
            if let Some(t) = ticket {
                tally.cache_with(st.cache.clone(), t, &model);
            }
            let mut resp = relay(events, model, st.timeouts.stream_idle, st.cut.clone(), tally);
            resp.headers_mut().extend(resp_headers);
            resp
        }
    }
}

/// Each `data[].embedding` that is a list of numbers becomes OpenAI's base64 form: the vector as
/// little-endian `float32`, base64-encoded. Vectors already in that form are left as they are.
pub fn embeddings_as_base64(v: &mut Value) {
    use base64::Engine;
    for item in v.get_mut("data").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some(e) = item.get_mut("embedding") else { continue };
        let Some(numbers) = e.as_array() else { continue };
        let mut bytes = Vec::with_capacity(numbers.len() * 4);
        for n in numbers {
            bytes.extend_from_slice(&(n.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
        }
        *e = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
}

/// A whole JSON reply: usage from the reply (or counted), settled, `model` set to the catalog
/// name, `usage` (with its cost) added when missing.
fn json_reply(
    settle: &mut Settle,
    mut v: Value,
    model: &str,
    prompt: &str,
    prompt_tokens: Option<u64>,
) -> (Response, Value) {
    let used = usage::reported(&v).unwrap_or_else(|| {
        let mut text = String::new();
        usage::completion_text(&v, &mut text);
        let input = prompt_tokens.unwrap_or_else(|| crate::util::tokens::count(prompt));
        Usage { input, output: crate::util::tokens::count(&text), estimated: true }
    });
    let cost = settle.finish(200, used);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("model".into(), Value::String(model.to_string()));
        if !obj.contains_key("usage") {
            obj.insert(
                "usage".into(),
                json!({"prompt_tokens": used.input, "completion_tokens": used.output, "total_tokens": used.input + used.output}),
            );
        }
    }
    usage::set_cost(&mut v, cost);
    let mut resp = (StatusCode::OK, axum::Json(&v)).into_response();
    settle.record.headers(resp.headers_mut());
    (resp, v)
}

/// A raw OpenAI reply, its members as they came, but `model` and `usage` (with its cost). One
/// without a usable usage block is counted, as any other reply.
fn raw_reply(settle: &mut Settle, raw: RawObject, model: &str, prompt: &str, prompt_tokens: Option<u64>) -> Response {
    let reported = raw.get("usage").and_then(|u| serde_json::from_str::<Value>(u.get()).ok());
    let Some((used, mut usage)) = reported.as_ref().and_then(usage::reported_usage).zip(reported) else {
        return json_reply(settle, raw.into_value(), model, prompt, prompt_tokens).0;
    };
    let cost = settle.finish(200, used);
    if let Some(u) = usage.as_object_mut() {
        u.insert("cost".into(), json!(usage::usd(cost)));
    }
    let body = serde_json::to_vec(&RawOut { raw: &raw, model, usage: &usage });
    let json = [(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    let mut resp = (StatusCode::OK, json, body.unwrap_or_default()).into_response();
    settle.record.headers(resp.headers_mut());
    resp
}

/// A raw OpenAI reply as it goes back: every member as it came, but `model` (the catalog name)
/// and `usage` (with its cost).
struct RawOut<'a> {
    raw: &'a RawObject,
    model: &'a str,
    usage: &'a Value,
}

impl serde::Serialize for RawOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.raw.iter() {
            match k {
                "model" => m.serialize_entry(k, self.model)?,
                "usage" => m.serialize_entry(k, self.usage)?,
                _ => m.serialize_entry(k, v)?,
            }
        }
        if !self.raw.contains_key("model") {
            m.serialize_entry("model", self.model)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_become_little_endian_float32_in_base64() {
        use base64::Engine;
        let mut v = json!({"data": [{"embedding": [1.0, -0.5]}, {"embedding": "AACAPw=="}]});
        embeddings_as_base64(&mut v);
        let first = v["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(first).unwrap();
        let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(floats, [1.0, -0.5]);
        // Already encoded: unchanged.
        assert_eq!(v["data"][1]["embedding"], "AACAPw==");
    }
}
