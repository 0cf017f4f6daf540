//! The cache stage's calls and replies (SPEC §10): a semantic query's text -> its embedding,
//! through dispatch and charged to the key; an entry of [`crate::cache`] -> the client's response
//! (the stored answer, or for a streamed request an ordinary event stream), at no cost but the
//! embedding's; and a settled answer -> what the cache stores with it.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::settle::Settle;
use super::AppState;
use crate::accounting::{usage, Rate};
use crate::cache::{Answered, Hit};
use crate::catalog::{Endpoint, ModelId};
use crate::dispatch::{self, Dispatcher};
use crate::providers::Reply;
use crate::reload::Snapshot;
use crate::state::{Budget, Holds, StateStore};

/// The unit vector of `text` from the embeddings model `model`, through dispatch like any request:
/// one call (its breaker and latency counted), its worst case reserved from `budget` first and its
/// cost settled when it comes back; the cost goes on the request's record. None when no vector can
/// be had (the model cannot be called, the budget does not fit it, or the reply has no vector): the
/// request is then looked up and stored by its exact key only.
pub async fn embed(
    st: &AppState,
    snap: &Snapshot,
    model: ModelId,
    text: &str,
    budget: Option<(&str, Budget)>,
    settle: &mut Settle,
) -> Option<Vec<f32>> {
    let catalog = snap.program.catalog();
    let m = catalog.get(model)?;
    let target = dispatch::targets::one(m, &snap.providers, text.len() as u64)?;
    let body = json!({"model": m.name, "input": text});
    let request = dispatch::Request {
        body: &body,
        stream: false,
        endpoint: Endpoint::Embeddings,
        opts: dispatch::Options::default(),
        budget,
        trace: None,
    };
    let mut holds = Holds::default();
    let waited = std::time::Instant::now();
    let d = Dispatcher { state: &st.state, latency: &st.latency };
    let result = dispatch::run(d, std::slice::from_ref(&target), request, &mut holds).await;
    settle.record.embed_time += waited.elapsed();
    let reply = match result {
        Ok(s) => match s.reply {
            Reply::Json(v) => v,
            Reply::Raw(raw) => raw.into_value(),
            Reply::Stream(_) => Value::Null,
        },
        Err(f) => {
            tracing::debug!(request_id = %settle.record.id, model = %m.name, attempts = f.attempts().len(),
                "the semantic cache's embedding call failed; looked up by the exact key only");
            Value::Null
        }
    };
    // A failed call costs nothing; one that answered costs its reported tokens (or counted ones).
    let tokens = match usage::reported(&reply) {
        _ if reply.is_null() => 0,
        Some(u) => u.input,
        None => crate::util::tokens::count(text),
    };
    let cost = Rate::of(m.price).cost_micros(tokens, 0);
    if let Some(r) = holds.budget.take() {
        st.state.settle(r, cost);
    }
    settle.record.embed_micros = settle.record.embed_micros.saturating_add(cost);
    let v = reply.pointer("/data/0/embedding")?.as_array()?;
    let v: Option<Vec<f32>> = v.iter().map(|x| x.as_f64().map(|x| x as f32)).collect();
    crate::cache::similar::unit(v?)
}

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
/// cost but a semantic lookup's embedding call, with `x-yardmaster-attempts: 0`, the rule, model
/// and saving of the entry, and a semantic hit's similarity.
pub fn answer(hit: &Hit, stream: bool, wants_usage: bool, mut settle: Settle) -> Response {
    let entry = &hit.entry;
    let r = &mut settle.record;
    r.rule = Some(entry.rule.clone());
    r.model = Some(entry.model.clone());
    r.provider.clone_from(&entry.provider);
    r.cache = Some("hit");
    r.similarity = hit.similarity;
    r.saved_micros = entry.cost_micros;
    // Nothing was reserved and the rate is unset, so the hit costs what its embedding did.
    let cost = settle.finish(200, entry.usage);
    let mut resp = if stream || cost > 0 {
        let mut body: Value = serde_json::from_slice(&entry.body).unwrap_or(Value::Null);
        if cost > 0 {
            usage::set_cost(&mut body, cost);
        }
        if stream {
            events(&body, wants_usage)
        } else {
            let json = [(header::CONTENT_TYPE, "application/json")];
            (StatusCode::OK, json, body.to_string()).into_response()
        }
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
