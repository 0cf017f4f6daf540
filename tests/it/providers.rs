//! Contract tests for the translating providers, on fixtures written from Anthropic's Messages
//! API reference and Google's Gemini API reference (`tests/providers/{anthropic,gemini}/*.json`).
//! Each fixture checks both directions: the native request that leaves for an OpenAI request,
//! and the OpenAI reply (or chunks) that comes back for a native reply (or event stream).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::path::Path;

use serde_json::Value;
use yardmaster::providers::native::Translate;
use yardmaster::providers::{anthropic, gemini, UpstreamError};

fn fixtures(provider: &str) -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/providers").join(provider);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 7, "too few {provider} fixtures");
    out
}

/// `created` is the time of translation; everything else must match.
fn without_created(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("created");
    }
    v
}

fn run_stream(t: &mut impl Translate, events: &Value) -> Result<Vec<Value>, UpstreamError> {
    let mut out = Vec::new();
    for e in events.as_array().unwrap() {
        let (kind, data) = (e[0].as_str().unwrap(), e[1].to_string());
        out.extend(t.event(kind, &data)?);
    }
    out.extend(t.end()?);
    Ok(out
        .into_iter()
        .map(|s| if s == "[DONE]" { Value::String(s) } else { without_created(serde_json::from_str(&s).unwrap()) })
        .collect())
}

fn check_errors(name: &str, f: &Value, error_body: fn(u16, &str) -> String) {
    for e in f["http_errors"].as_array().into_iter().flatten() {
        let status = u16::try_from(e["status"].as_u64().unwrap()).unwrap();
        let body = match &e["native_body"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let translated: Value = serde_json::from_str(&error_body(status, &body)).unwrap();
        assert_eq!(translated, e["openai_body"], "{name}: error body for {status}");
        let err = UpstreamError::Status { status, body, retry_after: None };
        assert_eq!(!err.is_client_error(), e["falls_through"].as_bool().unwrap(), "{name}: fall-through of {status}");
    }
}

#[test]
fn anthropic_fixtures() {
    for (name, f) in fixtures("anthropic") {
        check_errors(&name, &f, anthropic::error_body);
        let model = f["openai_request"]["model"].as_str().unwrap_or("m").to_string();
        let mut shape = anthropic::Shape::default();
        if f.get("openai_request").is_some() {
            let stream = f["openai_request"]["stream"].as_bool().unwrap_or(false);
            let (native, s) = anthropic::request(&f["openai_request"], stream).unwrap();
            assert_eq!(native, f["native_request"], "{name}: the request that leaves");
            shape = s;
        }
        if let Some(resp) = f.get("native_response") {
            let got = without_created(anthropic::reply(resp, &model, &shape).unwrap());
            assert_eq!(got, f["openai_response"], "{name}: the reply that returns");
        }
        if let Some(events) = f.get("native_events") {
            let got = run_stream(&mut anthropic::Stream::new(&model, shape.clone()), events).unwrap();
            assert_eq!(Value::Array(got), f["openai_chunks"], "{name}: the chunks that return");
        }
        if let Some(s) = f.get("stream_error") {
            match run_stream(&mut anthropic::Stream::new("m", shape.clone()), &s["events"]) {
                Err(UpstreamError::Status { status, body, .. }) => {
                    assert_eq!(u64::from(status), s["status"].as_u64().unwrap(), "{name}");
                    assert!(body.contains("\"error\""), "{name}: {body}");
                }
                other => panic!("{name}: an error event must end the stream with an error, got {other:?}"),
            }
        }
        if let Some(s) = f.get("stream_truncated") {
            let r = run_stream(&mut anthropic::Stream::new("m", shape.clone()), &s["events"]);
            assert!(
                matches!(r, Err(UpstreamError::Malformed(_))),
                "{name}: a truncated stream must be an error: {r:?}"
            );
        }
    }
}

#[test]
fn gemini_fixtures() {
    for (name, f) in fixtures("gemini") {
        check_errors(&name, &f, gemini::error_body);
        let model = f["openai_request"]["model"].as_str().unwrap_or("m").to_string();
        let embeddings = f["openai_request"].get("input").is_some();
        let mut shape = gemini::Shape::default();
        if f.get("openai_request").is_some() {
            let native = if embeddings {
                gemini::embed_request(&f["openai_request"], &model).unwrap()
            } else {
                let (n, s) = gemini::request(&f["openai_request"]).unwrap();
                shape = s;
                n
            };
            assert_eq!(native, f["native_request"], "{name}: the request that leaves");
        }
        if let Some(resp) = f.get("native_response") {
            let got = if embeddings {
                gemini::embed_reply(resp, &model).unwrap()
            } else {
                without_created(gemini::reply(resp, &model).unwrap())
            };
            assert_eq!(got, f["openai_response"], "{name}: the reply that returns");
        }
        if let Some(resp) = f.get("blocked_prompt_response") {
            let got = without_created(gemini::reply(resp, &model).unwrap());
            assert_eq!(got, f["blocked_prompt_openai"], "{name}: a blocked prompt");
        }
        if let Some(events) = f.get("native_events") {
            let got = run_stream(&mut gemini::Stream::new(&model, shape.clone()), events).unwrap();
            assert_eq!(Value::Array(got), f["openai_chunks"], "{name}: the chunks that return");
        }
        if let Some(s) = f.get("stream_error") {
            match run_stream(&mut gemini::Stream::new("m", shape.clone()), &s["events"]) {
                Err(UpstreamError::Status { status, .. }) => {
                    assert_eq!(u64::from(status), s["status"].as_u64().unwrap())
                }
                other => panic!("{name}: an error object must end the stream with an error, got {other:?}"),
            }
        }
        if let Some(s) = f.get("stream_truncated") {
            let r = run_stream(&mut gemini::Stream::new("m", shape.clone()), &s["events"]);
            assert!(
                matches!(r, Err(UpstreamError::Malformed(_))),
                "{name}: a truncated stream must be an error: {r:?}"
            );
        }
    }
}

#[test]
fn unexpected_provider_output_is_an_error_never_a_panic() {
    let shape = anthropic::Shape::default();
    for bad in [r#"{}"#, r#"{"content": "text"}"#, r#"{"content": [{"type": "mystery"}]}"#, "[]", "null"] {
        let v: Value = serde_json::from_str(bad).unwrap();
        // Either a clear error or a reply; never a panic.
        let _ = anthropic::reply(&v, "m", &shape);
        let _ = gemini::reply(&v, "m");
        let _ = gemini::embed_reply(&v, "m");
    }
    assert!(matches!(anthropic::reply(&serde_json::json!({}), "m", &shape), Err(UpstreamError::Malformed(_))));
    assert!(matches!(gemini::reply(&serde_json::json!({}), "m"), Err(UpstreamError::Malformed(_))));
    // No usage block: no usage in the reply or the stream (the gateway then counts the tokens).
    let no_usage =
        serde_json::json!({"id": "m", "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn"});
    assert_eq!(anthropic::reply(&no_usage, "m", &shape).unwrap().get("usage"), None);
    let g = serde_json::json!({"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}]});
    assert_eq!(gemini::reply(&g, "m").unwrap().get("usage"), None);
    let asks = anthropic::Shape { wants_usage: true, ..anthropic::Shape::default() };
    let mut a = anthropic::Stream::new("m", asks);
    a.event("message_start", r#"{"type": "message_start", "message": {"id": "x"}}"#).unwrap();
    a.event("message_delta", r#"{"type": "message_delta", "delta": {"stop_reason": "end_turn"}}"#).unwrap();
    assert_eq!(a.event("message_stop", r#"{"type": "message_stop"}"#).unwrap(), ["[DONE]"]);
    let mut gs = gemini::Stream::new("m", gemini::Shape { wants_usage: true });
    gs.event("", &g.to_string()).unwrap();
    assert_eq!(gs.end().unwrap(), ["[DONE]"]);
    // Events that are not JSON, or JSON of the wrong shape.
    let mut a = anthropic::Stream::new("m", shape);
    assert!(matches!(a.event("message_start", "{not json"), Err(UpstreamError::Malformed(_))));
    assert!(a.event("content_block_delta", r#"{"type": "content_block_delta", "delta": 5}"#).unwrap().is_empty());
    assert!(a.event("x", r#"{"type": "message_delta"}"#).is_ok());
    let mut g = gemini::Stream::new("m", gemini::Shape::default());
    assert!(matches!(g.event("", "{not json"), Err(UpstreamError::Malformed(_))));
    assert!(g.event("", r#"{"candidates": "x"}"#).is_ok());
    assert!(matches!(g.end(), Err(UpstreamError::Malformed(_))));
    // Requests that cannot be translated are refused with a reason (they become a 400).
    assert!(anthropic::request(
        &serde_json::json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
        false
    )
    .is_err());
    assert!(gemini::request(
        &serde_json::json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]})
    )
    .is_err());
}
