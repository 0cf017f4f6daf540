//! The cache stage's replies (SPEC §10): an entry of [`crate::cache`] -> the client's response
//! (the stored answer, or for a streamed request an ordinary event stream), at no cost; and a
//! settled answer -> what the cache stores with it.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::settle::Settle;
use crate::cache::{Answered, Entry};

/// Who answered a settled request, and what it used and cost, for the cache.
pub fn answered(settle: &Settle) -> Answered {
    let r = &settle.record;
    Answered {
        model: r.model.clone().unwrap_or_default(),
        provider: r.provider.clone(),
        usage: r.usage,
        cost_micros: r.cost_micros.unwrap_or(0),
    }
}

/// Answers from an entry: the stored answer (or, streamed, as an ordinary event stream), at no
/// cost, with `x-yardmaster-attempts: 0` and the rule, model and saving of the entry.
pub fn answer(entry: &Entry, stream: bool, wants_usage: bool, mut settle: Settle) -> Response {
    let r = &mut settle.record;
    r.rule = Some(entry.rule.clone());
    r.model = Some(entry.model.clone());
    r.provider.clone_from(&entry.provider);
    r.cache = Some("hit");
    r.saved_micros = entry.cost_micros;
    // Nothing was reserved and the rate is unset, so the hit costs nothing.
    let cost = settle.finish(200, entry.usage);
    debug_assert_eq!(cost, 0);
    let mut resp = if stream {
        let body: Value = serde_json::from_slice(&entry.body).unwrap_or(Value::Null);
        events(&body, wants_usage)
    } else {
        let json = [(header::CONTENT_TYPE, "application/json")];
        (StatusCode::OK, json, entry.body.clone()).into_response()
    };
    settle.record.headers(resp.headers_mut());
    resp
}

/// A stored completion as the event stream a streamed request gets: per choice its role and
/// content (and tool calls), its finish, the usage chunk when asked for, and `[DONE]`.
fn events(body: &Value, wants_usage: bool) -> Response {
    let base = |choices: Value| {
        json!({"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
            "model": body["model"], "choices": choices})
    };
    let mut frames: Vec<String> = Vec::new();
    let choices = body.get("choices").and_then(Value::as_array).cloned().unwrap_or_default();
    for c in &choices {
        let index = c.get("index").cloned().unwrap_or(json!(0));
        let m = c.get("message").cloned().unwrap_or(json!({}));
        let mut delta = json!({"role": "assistant", "content": m.get("content").cloned().unwrap_or(Value::Null)});
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut t = t.clone();
                    if let Some(o) = t.as_object_mut() {
                        o.insert("index".into(), json!(i));
                    }
                    t
                })
                .collect();
            delta["tool_calls"] = Value::Array(calls);
        }
        frames.push(base(json!([{"index": index, "delta": delta, "finish_reason": null}])).to_string());
        let finish = c.get("finish_reason").cloned().unwrap_or(json!("stop"));
        frames.push(base(json!([{"index": index, "delta": {}, "finish_reason": finish}])).to_string());
    }
    if wants_usage {
        let mut u = base(json!([]));
        u["usage"] = body.get("usage").cloned().unwrap_or(Value::Null);
        frames.push(u.to_string());
    }
    frames.push("[DONE]".into());
    let chunks = frames.into_iter().map(|f| Ok::<_, std::io::Error>(bytes::Bytes::from(format!("data: {f}\n\n"))));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}
