//! The gateway in front of a fake Anthropic and a fake Gemini (and the fake OpenAI-compatible
//! upstream), all on 127.0.0.1: replies and streams translated with tool calls, the keys in
//! their headers and never in a URL, embeddings through Gemini, safety blocks, broken streams,
//! and examples/failover.route failing over across the three formats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::gateway_support::{gateway_custom, header, sha};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};

const ANTHROPIC_KEY: &str = "sk-ant-SECRET-11aa";
const GEMINI_KEY: &str = "AIza-SECRET-22bb";

/// What a fake saw: (path and query, key header, body).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String, Value)>>>);

fn sse(events: Vec<(&'static str, Value)>, cut: bool) -> Response {
    let mut frames: Vec<Result<Bytes, std::io::Error>> = events
        .into_iter()
        .map(|(kind, data)| {
            let ev = if kind.is_empty() { String::new() } else { format!("event: {kind}\n") };
            Ok(Bytes::from(format!("{ev}data: {data}\n\n")))
        })
        .collect();
    if cut {
        frames.push(Err(std::io::Error::other("reset")));
    }
    let stream = futures_util::stream::iter(frames).then(|f| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        f
    });
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(stream)).unwrap()
}

async fn anthropic(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap();
    let key = headers.get("x-api-key").and_then(|k| k.to_str().ok()).unwrap_or("").to_string();
    let version = headers.get("anthropic-version").and_then(|k| k.to_str().ok()).unwrap_or("");
    seen.0.lock().unwrap().push((format!("/v1/messages version={version}"), key, v.clone()));
    let model = v["model"].as_str().unwrap_or("");
    if model == "claude-overloaded" {
        let e = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        return (StatusCode::from_u16(529).unwrap(), axum::Json(e)).into_response();
    }
    let tools = v.get("tools").is_some();
    if model == "claude-nousage" {
        return axum::Json(json!({"id": "msg_0", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "No usage block here."}], "stop_reason": "end_turn"}))
        .into_response();
    }
    if v["stream"] != true {
        return axum::Json(json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Bonjour from Claude."}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 1000, "output_tokens": 100}}))
        .into_response();
    }
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_2", "model": model, "usage": {"input_tokens": 1000, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking"}}),
        ),
    ];
    if model == "claude-truncated" {
        return sse(events, true);
    }
    events.push(("surprise", json!({"type": "a_future_event_type"})));
    events.push((
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " now."}}),
    ));
    events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    if tools {
        events.push(("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}})));
        for part in ["{\"city\"", ": \"Oslo\"}"] {
            events.push(("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}})));
        }
        events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 1})));
    }
    let stop = if tools { "tool_use" } else { "end_turn" };
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 100}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    sse(events, false)
}

async fn gemini(
    State(seen): State<Seen>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap();
    let key = headers.get("x-goog-api-key").and_then(|k| k.to_str().ok()).unwrap_or("").to_string();
    seen.0.lock().unwrap().push((format!("/v1beta/models/{rest}?{}", query.unwrap_or_default()), key, v.clone()));
    let (model, method) = rest.split_once(':').unwrap();
    let usage = json!({"promptTokenCount": 2000, "candidatesTokenCount": 400, "totalTokenCount": 2400});
    match method {
        "batchEmbedContents" => {
            let n = v["requests"].as_array().unwrap().len();
            axum::Json(json!({"embeddings": vec![json!({"values": [0.5, 0.25]}); n]})).into_response()
        }
        "generateContent" if model == "gemini-safety" => axum::Json(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "SAFETY"}], "usageMetadata": usage})).into_response(),
        "generateContent" => axum::Json(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hallo from Gemini."}]}, "finishReason": "STOP"}], "usageMetadata": usage, "responseId": "g-1"})).into_response(),
        _ => {
            let mut events = vec![
                ("", json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hal"}]}}], "responseId": "g-2"})),
                ("", json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo."}]}}], "responseId": "g-2"})),
            ];
            let last = if v.get("tools").is_some() {
                json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}, "finishReason": "STOP"}], "usageMetadata": usage, "responseId": "g-2"})
            } else {
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}], "usageMetadata": usage, "responseId": "g-2"})
            };
            events.push(("", last));
            sse(events, false)
        }
    }
}

async fn fakes() -> (SocketAddr, Seen, SocketAddr, Seen) {
    let (sa, sg) = (Seen::default(), Seen::default());
    let a = Router::new().route("/v1/messages", post(anthropic)).with_state(sa.clone());
    let g = Router::new().route("/v1beta/models/{*rest}", post(gemini)).with_state(sg.clone());
    let mut addrs = Vec::new();
    for app in [a, g] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    }
    (addrs[0], sa, addrs[1], sg)
}

fn config(openai: SocketAddr, anthropic: SocketAddr, gemini: SocketAddr, ids: (&str, &str)) -> String {
    let (gpt_id, claude_id) = ids;
    format!(
        r#"
listen: 127.0.0.1:0
policy: main.route
providers:
  openai:    {{ kind: openai,    base_url: "http://{openai}/v1", api_key_env: YM_TEST_UPSTREAM_KEY }}
  anthropic: {{ kind: anthropic, base_url: "http://{anthropic}", api_key_env: YM_TEST_ANTHROPIC_KEY }}
  gemini:    {{ kind: gemini,    base_url: "http://{gemini}", api_key_env: YM_TEST_GEMINI_KEY }}
models:
  gpt-4o-mini:            {{ provider: openai,    id: {gpt_id}, price: {{ input: 0.15, output: 0.60 }}, context: 128000, capabilities: [tools, images] }}
  claude-haiku:           {{ provider: anthropic, id: {claude_id}, price: {{ input: 1, output: 5 }}, context: 200000, capabilities: [tools, images] }}
  gemini-flash:           {{ provider: gemini,    id: gemini-ok, price: {{ input: 0.30, output: 2.50 }}, context: 1048576, capabilities: [tools, images] }}
  text-embedding-3-small: {{ provider: openai,    id: embed, endpoint: embeddings, price: {{ input: 0.02 }}, context: 8191 }}
  gemini-embedding:       {{ provider: gemini,    id: gemini-embedding-001, endpoint: embeddings, price: {{ input: 0.15 }}, context: 2048 }}
  claude-overloaded:      {{ provider: anthropic, id: claude-overloaded, context: 200000 }}
  claude-truncated:       {{ provider: anthropic, id: claude-truncated, context: 200000 }}
  claude-nousage:         {{ provider: anthropic, id: claude-nousage, price: {{ input: 1, output: 5 }}, context: 200000 }}
  gemini-safety:          {{ provider: gemini,    id: gemini-safety, context: 100000 }}
keys:
  - {{ name: k, key_sha256: {k} }}
storage: {{ sqlite: ":memory:" }}
reload: {{ require_tests: false }}
"#,
        k = sha("sk-native")
    )
}

async fn start(ids: (&'static str, &'static str)) -> (crate::gateway_support::Gateway, Seen, Seen) {
    std::env::set_var("YM_TEST_ANTHROPIC_KEY", ANTHROPIC_KEY);
    std::env::set_var("YM_TEST_GEMINI_KEY", GEMINI_KEY);
    let (a, sa, g, sg) = fakes().await;
    let policy = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/failover.route")).unwrap();
    let gw = gateway_custom(&policy, false, move |openai| config(openai, a, g, ids)).await;
    (gw, sa, sg)
}

fn body(model: &str, stream: bool, tools: bool) -> Value {
    // Long enough that the fixtures' reported usage (up to 2,000 input tokens) is within what the
    // request's reservation allows (its body's bytes), so that it is charged as reported.
    let question = format!("Weather in Oslo? {}", "Answer in one short line, please. ".repeat(70));
    let mut b = json!({"model": model, "stream": stream, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]});
    if tools {
        b["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    }
    if stream {
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

async fn events(r: reqwest::Response) -> Vec<String> {
    let text = tokio::time::timeout(Duration::from_secs(5), r.text()).await.expect("the stream hung").unwrap();
    text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
}

/// Content and tool calls assembled from chunks, as an SDK would.
fn assemble(events: &[String]) -> (String, String, String, Option<Value>) {
    let (mut text, mut args, mut finish, mut usage) = (String::new(), String::new(), String::new(), None);
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
        if let Some(a) = v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str() {
            args.push_str(a);
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = f.to_string();
        }
        if v["usage"].is_object() {
            usage = Some(v["usage"].clone());
        }
    }
    (text, args, finish, usage)
}

#[tokio::test]
async fn anthropic_replies_and_streams_translate_with_tool_calls() {
    let (g, seen, _) = start(("ok", "claude-ok")).await;
    let r = g.chat(body("claude-haiku", false, false), "sk-native", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-yardmaster-provider"), "anthropic");
    // 1,000 in × $1 + 100 out × $5 per million = 1,500 micro-USD.
    assert_eq!(header(&r, "x-yardmaster-cost-usd"), "0.001500");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour from Claude.");
    assert_eq!(v["model"], "claude-haiku");
    assert_eq!(v["usage"]["prompt_tokens"], 1000);
    let (path, key, sent) = seen.0.lock().unwrap()[0].clone();
    assert_eq!((path.as_str(), key.as_str()), ("/v1/messages version=2023-06-01", ANTHROPIC_KEY));
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 4096);

    let r = g.chat(body("claude-haiku", true, true), "sk-native", None).await;
    assert_eq!(r.status(), 200);
    let ev = events(r).await;
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let (text, args, finish, usage) = assemble(&ev);
    assert_eq!(text, "Checking now.");
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Oslo"}));
    assert_eq!(finish, "tool_calls");
    let usage = usage.unwrap();
    assert_eq!((usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()), (Some(1000), Some(100)));
    assert_eq!(usage["cost"], json!(0.0015));
    assert!(ev.iter().filter(|e| *e != "[DONE]").all(|e| e.contains("\"model\":\"claude-haiku\"")));
    // A reply without a usage block: the gateway counts the tokens (o200k) and prices them.
    let r = g.chat(body("claude-nousage", false, false), "sk-native", None).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let text_tokens = yardmaster::util::tokens::count("No usage block here.");
    assert_eq!(v["usage"]["completion_tokens"], text_tokens);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(v["usage"]["cost"].as_f64().unwrap() > 0.0);
    g.running.shutdown().await;
}

#[tokio::test]
async fn gemini_keeps_its_key_in_a_header_and_translates_streams_tools_embeddings_and_safety() {
    let (g, _, seen) = start(("ok", "claude-ok")).await;
    let r = g.chat(body("gemini-flash", false, false), "sk-native", None).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hallo from Gemini.");
    // 2,000 in × $0.30 + 400 out × $2.50 per million = 600 + 1,000 micro-USD.
    assert_eq!(v["usage"]["cost"], json!(0.0016));
    let r = g.chat(body("gemini-flash", true, true), "sk-native", None).await;
    let ev = events(r).await;
    let (text, args, finish, usage) = assemble(&ev);
    assert_eq!((text.as_str(), finish.as_str()), ("Hallo.", "tool_calls"));
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Oslo"}));
    assert_eq!(usage.unwrap()["total_tokens"], 2400);
    let r = g
        .post("/v1/embeddings", Some("sk-native"))
        .json(&json!({"model": "gemini-embedding", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"], json!([0.5, 0.25]));
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "usage is counted when Gemini reports none");
    let r = g.chat(body("gemini-safety", false, false), "sk-native", None).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    for (path, key, _) in seen.0.lock().unwrap().iter() {
        assert_eq!(key, GEMINI_KEY);
        assert!(!path.contains("key=") && !path.contains(GEMINI_KEY), "a key in the URL: {path}");
    }
    let paths: Vec<String> = seen.0.lock().unwrap().iter().map(|s| s.0.clone()).collect();
    assert!(paths.contains(&"/v1beta/models/gemini-ok:streamGenerateContent?alt=sse".to_string()), "{paths:?}");
    assert!(paths.contains(&"/v1beta/models/gemini-embedding-001:batchEmbedContents?".to_string()), "{paths:?}");
    g.running.shutdown().await;
}

#[tokio::test]
async fn the_failover_example_crosses_three_formats() {
    // OpenAI answers 503 and Anthropic 529 (overloaded): Gemini answers.
    let (g, sa, sg) = start(("fail503", "claude-overloaded")).await;
    let r = g.chat(body("auto", false, false), "sk-native", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-yardmaster-rule"), "default");
    assert_eq!(header(&r, "x-yardmaster-model"), "gemini-flash");
    // retries 1: two calls to each of the first two, one to Gemini.
    assert_eq!(header(&r, "x-yardmaster-attempts"), "5");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hallo from Gemini.");
    assert_eq!(g.up.calls("fail503"), 2);
    assert_eq!(sa.0.lock().unwrap().len(), 2);
    assert!(sa.0.lock().unwrap().iter().all(|(_, _, b)| b["model"] == "claude-overloaded"));
    assert!(sg.0.lock().unwrap().len() == 1);
    // The same, streamed: the stream is Gemini's, translated.
    let r = g.chat(body("auto", true, false), "sk-native", None).await;
    assert_eq!(header(&r, "x-yardmaster-model"), "gemini-flash");
    let (text, _, finish, _) = assemble(&events(r).await);
    assert_eq!((text.as_str(), finish.as_str()), ("Hallo.", "stop"));
    let metrics = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("yardmaster_fallbacks_total{model=\"gpt-4o-mini\"}"), "{metrics}");
    g.running.shutdown().await;
}

#[tokio::test]
async fn an_overloaded_or_broken_anthropic_stream_fails_cleanly() {
    let (g, _, _) = start(("ok", "claude-ok")).await;
    // 529 with nothing to fall back to: 502, the attempt listed, in OpenAI's shape.
    let r = g.chat(body("claude-overloaded", false, false), "sk-native", None).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("upstream answered 529"), "{v}");
    assert!(!v.to_string().contains(ANTHROPIC_KEY));
    // A stream cut before message_stop: an error event, no [DONE], and no hang.
    let r = g.chat(body("claude-truncated", true, false), "sk-native", None).await;
    assert_eq!(r.status(), 200);
    let ev = events(r).await;
    assert!(ev.iter().all(|e| e != "[DONE]"), "{ev:?}");
    assert!(ev.last().unwrap().contains("stream_interrupted"), "{ev:?}");
    g.running.shutdown().await;
}
