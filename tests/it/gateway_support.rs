//! A fake OpenAI-compatible upstream and a gateway started against it, both on 127.0.0.1 with
//! ephemeral ports. The upstream's behaviour is chosen by the upstream model id.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// What the fake upstream saw.
#[derive(Clone, Default)]
pub struct Upstream {
    pub calls: Arc<Mutex<HashMap<String, usize>>>,
    pub bodies: Arc<Mutex<Vec<Value>>>,
    /// Set when a streamed body was dropped before it finished (the client went away).
    pub cancelled: Arc<AtomicBool>,
    pub auth: Arc<Mutex<Vec<String>>>,
    /// The `traceparent` of each chat call (empty when it had none).
    pub traceparents: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub fn calls(&self, model: &str) -> usize {
        self.calls.lock().unwrap().get(model).copied().unwrap_or(0)
    }
    pub fn total(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }
}

struct CancelGuard(Arc<AtomicBool>, bool);
impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// A reply whose members the gateway must pass on as written (escapes, number formatting,
/// unknown fields, order), except `model` and `usage`.
pub const VERBATIM: &str = r#"{"id":"up-v","object":"chat.completion","created":1,"model":"verbatim","system_fingerprint":"fp_1","choices":[{"index":0,"message":{"role":"assistant","content":"caf\u00e9 1.50"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7},"x_extra":{"score":1.50,"tags":[]}}"#;

fn completion(model: &str) -> Value {
    json!({"id": "up-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("hello from {model}")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
}

fn chunk(model: &str, text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

async fn handle(State(up): State<Upstream>, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = v["model"].as_str().unwrap_or("").to_string();
    let n = {
        let mut c = up.calls.lock().unwrap();
        let e = c.entry(model.clone()).or_default();
        *e += 1;
        *e
    };
    up.bodies.lock().unwrap().push(v.clone());
    if let Some(a) = headers.get("authorization").and_then(|a| a.to_str().ok()) {
        up.auth.lock().unwrap().push(a.to_string());
    }
    let tp = headers.get("traceparent").and_then(|t| t.to_str().ok()).unwrap_or_default();
    up.traceparents.lock().unwrap().push(tp.to_string());
    let echo = headers.get("authorization").and_then(|a| a.to_str().ok()).unwrap_or("").to_string();
    let stream = v["stream"].as_bool().unwrap_or(false);
    let include_usage = v["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    let err = |status: StatusCode, msg: &str| {
        (
            status,
            [("content-type", "application/json")],
            json!({"error": {"message": msg, "type": "upstream_error", "code": null, "param": null}}).to_string(),
        )
            .into_response()
    };
    match model.as_str() {
        "fail500" => err(StatusCode::INTERNAL_SERVER_ERROR, "boom"),
        "wait300" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            axum::Json(completion(&model)).into_response()
        }
        "fail503" => err(StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        "unauthorized" => err(StatusCode::UNAUTHORIZED, "bad upstream key"),
        "r429" => {
            if n % 2 == 1 {
                let mut r = err(StatusCode::TOO_MANY_REQUESTS, "slow down");
                r.headers_mut().insert("retry-after", "0".parse().unwrap());
                r
            } else {
                axum::Json(completion(&model)).into_response()
            }
        }
        "r429huge" => {
            // A `Retry-After` too large for any duration (it once panicked the request's task).
            let mut r = err(StatusCode::TOO_MANY_REQUESTS, "slow down");
            r.headers_mut().insert("retry-after", "99999999999999999999".parse().unwrap());
            r
        }
        "r429long" => {
            let mut r = err(StatusCode::TOO_MANY_REQUESTS, "slow down");
            r.headers_mut().insert("retry-after", "3600".parse().unwrap());
            r
        }
        "bad400" => (StatusCode::BAD_REQUEST, [("content-type", "application/json")], r#"{"error":{"message":"upstream says: bad temperature","type":"invalid_request_error","code":"bad_temp","param":"temperature"}}"#).into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            axum::Json(completion(&model)).into_response()
        }
        "malformed" => (StatusCode::OK, [("content-type", "application/json")], "{not json").into_response(),
        "not-object" => (StatusCode::OK, [("content-type", "application/json")], "[1, 2]").into_response(),
        // A gzip body the gateway never asked for, an HTML error page with a 200, and a reply
        // cut by a connection reset.
        "gzip" => (StatusCode::OK, [("content-type", "application/json"), ("content-encoding", "gzip")],
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\x56\xca\x4c\x51\xb2\x52\x00\x00".to_vec()).into_response(),
        "html" => (StatusCode::OK, [("content-type", "text/html")], "<html><body><h1>502 Bad Gateway</h1></body></html>").into_response(),
        "reset" => {
            let s = futures_util::stream::iter([
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"id\": \"up-1\", \"choices\": [")),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
            ]);
            Response::builder().header("content-type", "application/json").body(Body::from_stream(s)).unwrap()
        }

        // A 200 whose body is an error object, and a reply with a number no f64 holds.
        "error200" => (StatusCode::OK, [("content-type", "application/json")], r#"{"error":{"message":"quota exceeded","type":"insufficient_quota","code":null,"param":null}}"#).into_response(),
        "inf" => (StatusCode::OK, [("content-type", "application/json")], r#"{"id":"up-1","object":"chat.completion","created":1,"model":"inf","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"logprobs":{"x":1e999},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#).into_response(),
        "verbatim" => (StatusCode::OK, [("content-type", "application/json")], VERBATIM).into_response(),
        // Upstreams that echo the request's `Authorization` header back (a provider key must never
        // reach the client), in every place a reply can carry it.
        "echo400" | "echo404" | "echo422" => {
            let status = StatusCode::from_u16(model[4..].parse().unwrap()).unwrap();
            let body = json!({"error": {"message": format!("bad request; you sent {echo}"), "type": "invalid_request_error", "code": null, "param": null}});
            (status, [("content-type", "application/json")], body.to_string()).into_response()
        }
        "echo200" => {
            let mut c = completion(&model);
            c["choices"][0]["message"]["content"] = json!(format!("your header was {echo}"));
            axum::Json(c).into_response()
        }
        // The echo split across two events' text, and JSON-escaped in a reply and an error.
        "echo-split" => {
            let (a, b) = echo.split_at(echo.len() / 2);
            let body = format!("{}{}{}data: [DONE]\n\n", chunk(&model, &format!("you sent {a}")), chunk(&model, &format!("{b} and more")), chunk(&model, "."));
            Response::builder().header("content-type", "text/event-stream").body(Body::from(body)).unwrap()
        }
        "echo-escaped" | "echo-escaped400" => {
            let escaped = echo.replace('-', "\\u002d");
            let status = if model == "echo-escaped" { StatusCode::OK } else { StatusCode::BAD_REQUEST };
            let body = if status == StatusCode::OK {
                format!(r#"{{"id":"up-1","object":"chat.completion","created":1,"model":"x","choices":[{{"index":0,"message":{{"role":"assistant","content":"you sent {escaped}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}}}"#)
            } else {
                format!(r#"{{"error":{{"message":"bad: {escaped}","type":"invalid_request_error","code":null,"param":null}}}}"#)
            };
            (status, [("content-type", "application/json")], body).into_response()
        }
        "echo-first" => {
            let event = json!({"error": {"message": format!("denied: {echo}"), "code": 400}});
            Response::builder().header("content-type", "text/event-stream").body(Body::from(format!("data: {event}\n\n"))).unwrap()
        }
        "echo-mid" => {
            let event = json!({"error": {"message": format!("mid-stream failure for {echo}"), "type": "server_error"}});
            let body = format!("{}data: {event}\n\n", chunk(&model, "hello "));
            Response::builder().header("content-type", "text/event-stream").body(Body::from(body)).unwrap()
        }
        // A body that starts, then stalls: a 200 and a 500.
        "stall-body" | "stall-error" => {
            let status = if model == "stall-body" { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
            let s = futures_util::stream::unfold(0, |i| async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"id\": \"up-1\", \"choi")), i + 1))
            });
            Response::builder().status(status).header("content-type", "application/json").body(Body::from_stream(s)).unwrap()
        }
        // Larger than the gateway's `limits`: a 2 MB reply, and a 2 MB event without a newline.
        "huge" => (StatusCode::OK, [("content-type", "application/json")], format!("{{\"id\": \"{}\"}}", "x".repeat(2 << 20))).into_response(),
        "huge-event" => {
            let body = format!("{}data: {{\"id\": \"{}", chunk(&model, "hello "), "x".repeat(2 << 20));
            Response::builder().header("content-type", "text/event-stream").body(Body::from(body)).unwrap()
        }
        // A reply nested 100,000 deep (it once came back as `choices: null` with a 200).
        "deep" => {
            let body = format!("{{\"id\": \"up-1\", \"choices\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
            (StatusCode::OK, [("content-type", "application/json")], body).into_response()
        }
        // A stream that ends without `[DONE]`.
        "nodone" => {
            let body = format!("{}{}", chunk(&model, "hello "), chunk(&model, "world"));
            Response::builder().header("content-type", "text/event-stream").body(Body::from(body)).unwrap()
        }
        "absurd" => {
            // Usage that no request can have (it once charged millions and overflowed the ledger).
            let mut c = completion(&model);
            c["usage"] = json!({"prompt_tokens": 1_000_000_000_000_000_000u64, "completion_tokens": 1_000_000_000_000_000_000u64,
                "total_tokens": 2_000_000_000_000_000_000u64});
            axum::Json(c).into_response()
        }
        "nousage" => {
            let mut c = completion(&model);
            c.as_object_mut().unwrap().remove("usage");
            axum::Json(c).into_response()
        }
        _ if stream => {
            let (count, gap, end) = match model.as_str() {
                "stream-slow" => (20usize, 50u64, "done"),
                "stream-break" => (3, 10, "break"),
                "stream-stall" => (3, 10, "stall"),
                _ => (5, 0, "done"),
            };
            let guard = CancelGuard(up.cancelled.clone(), false);
            let s = futures_util::stream::unfold((0usize, guard), move |(i, mut guard)| {
                let model = model.clone();
                async move {
                    if i > 0 && gap > 0 {
                        tokio::time::sleep(Duration::from_millis(gap)).await;
                    }
                    if i < count {
                        return Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk(&model, &format!("w{i} ")))), (i + 1, guard)));
                    }
                    match (i == count, end) {
                        (true, "done") => {
                            guard.1 = true;
                            // Usage when asked for (as OpenAI does), except from `stream-nousage`.
                            let mut end = String::new();
                            if include_usage && model != "stream-nousage" {
                                let u = json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": model,
                                    "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": count, "total_tokens": 3 + count}});
                                end.push_str(&format!("data: {u}\n\n"));
                            }
                            end.push_str("data: [DONE]\n\n");
                            Some((Ok(bytes::Bytes::from(end)), (i + 1, guard)))
                        }
                        (true, "break") => {
                            guard.1 = true;
                            Some((Err(std::io::Error::other("reset")), (i + 1, guard)))
                        }
                        (true, _) => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            None
                        }
                        _ => None,
                    }
                }
            });
            Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(s)).unwrap()
        }
        _ => axum::Json(completion(&model)).into_response(),
    }
}

async fn embed(State(up): State<Upstream>, body: axum::body::Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = v["model"].as_str().unwrap_or("").to_string();
    *up.calls.lock().unwrap().entry(model.clone()).or_default() += 1;
    axum::Json(json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}], "model": model, "usage": {"prompt_tokens": 2, "total_tokens": 2}})).into_response()
}

async fn moderate(State(up): State<Upstream>, body: axum::body::Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = v["model"].as_str().unwrap_or("").to_string();
    *up.calls.lock().unwrap().entry(model.clone()).or_default() += 1;
    up.bodies.lock().unwrap().push(v);
    axum::Json(json!({"id": "modr-up", "model": model, "results": [{"flagged": false, "categories": {"hate": false}, "category_scores": {"hate": 0.001}}]}))
        .into_response()
}

/// Starts the fake upstream.
pub async fn upstream() -> (SocketAddr, Upstream) {
    let up = Upstream::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(handle))
        .route("/v1/embeddings", post(embed))
        .route("/v1/moderations", post(moderate))
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, up)
}

pub const POLICY: &str = r#"
rule "deny secrets" {
  when prompt matches /AKIA[0-9A-Z]{16}/
  then deny 403 "the request contains a cloud credential"
}

rule "explicit" {
  when request.model != "auto"
  then requested
}

rule "embeddings" {
  when request.endpoint == "embeddings"
  then embedder
}

rule "premium" {
  when user.tier == "premium"
  then premium-model
}

rule "code" {
  when prompt contains any ["traceback", "fn main"]
  then code-model
}

rule "long" {
  when prompt.tokens > 50
  then long-model
}

rule "fallback" {
  when header("x-test") starts_with "fb-"
  then split { 100%: primary } -> ok-model
}

rule "retry 429" {
  when header("x-test") == "429"
  then r429 -> ok-model
  retries 1
}

rule "429 too long" {
  when header("x-test") == "429long"
  then r429long -> ok-model
  retries 3
}

rule "timeout" {
  when header("x-test") == "timeout"
  then slow -> ok-model
  timeout 300ms
}

rule "breaker" {
  when header("x-test") == "breaker"
  then fail500 -> ok-model
}

rule "capped" {
  when header("x-test") == "capped"
  then ok-model with (max_tokens: 10, temperature: 0.1)
}

default {
  then ok-model
}
"#;

/// The gateway's config for a fake upstream at `addr`; `primary` is the upstream id the
/// "fallback" rule tries first.
pub fn config(addr: SocketAddr, primary: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
policy: main.route
providers:
  up:      {{ kind: openai, base_url: "http://{addr}/v1", api_key_env: YM_TEST_UPSTREAM_KEY }}
  refused: {{ kind: openai, base_url: "http://127.0.0.1:9/v1" }}
models:
  ok-model:      {{ provider: up, id: ok, price: {{ input: 1, output: 2 }}, context: 100000, capabilities: [tools, images] }}
  premium-model: {{ provider: up, id: premium, price: {{ input: 1, output: 2 }}, context: 100000 }}
  code-model:    {{ provider: up, id: code, price: {{ input: 1, output: 2 }}, context: 100000 }}
  long-model:    {{ provider: up, id: long, price: {{ input: 1, output: 2 }}, context: 100000 }}
  primary:       {{ provider: {primary_provider}, id: {primary}, price: {{ input: 1, output: 2 }}, context: 100000 }}
  r429:          {{ provider: up, id: r429, context: 100000 }}
  r429long:      {{ provider: up, id: r429long, context: 100000 }}
  slow:          {{ provider: up, id: slow, context: 100000 }}
  fail500:       {{ provider: up, id: fail500, context: 100000 }}
  streamer:      {{ provider: up, id: stream-slow, context: 100000 }}
  breaker:       {{ provider: up, id: stream-break, context: 100000 }}
  staller:       {{ provider: up, id: stream-stall, context: 100000 }}
  bad:           {{ provider: up, id: bad400, context: 100000 }}
  embedder:      {{ provider: up, id: embed, endpoint: embeddings, price: {{ input: 0.02 }}, context: 8000 }}
keys:
  - {{ name: team-a, key_sha256: {a}, tier: premium }}
  - {{ name: batch, key_sha256: {b}, tier: free, models: [ok-model, embedder] }}
  - {{ name: plain, key_sha256: {c} }}
admin: {{ key_sha256: {admin} }}
reload: {{ debounce: 100ms }}
limits: {{ max_reply_bytes: 1MiB, max_event_bytes: 64KiB }}
"#,
        primary_provider = if primary == "refused" { "refused" } else { "up" },
        primary = if primary == "refused" { "ok" } else { primary },
        a = sha("sk-team-a"),
        b = sha("sk-batch"),
        c = sha("sk-plain"),
        admin = sha("sk-admin"),
    )
}

pub fn sha(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub running: yardmaster::gateway::Running,
    pub url: String,
    pub up: Upstream,
    pub http: reqwest::Client,
}

/// Starts a fake upstream and a gateway in front of it.
pub async fn gateway(primary: &str, watch: bool) -> Gateway {
    gateway_with(primary, watch, POLICY).await
}

pub async fn gateway_with(primary: &str, watch: bool, policy: &str) -> Gateway {
    gateway_custom(policy, watch, |addr| config(addr, primary)).await
}

/// A gateway whose config text is built from the fake upstream's address.
pub async fn gateway_custom(policy: &str, watch: bool, config: impl FnOnce(SocketAddr) -> String) -> Gateway {
    // SAFETY of the environment: every test that starts a gateway sets the same value.
    std::env::set_var("YM_TEST_UPSTREAM_KEY", "sk-upstream-SECRET-7f3a");
    let (addr, up) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("yardmaster.yaml"), config(addr)).unwrap();
    std::fs::write(dir.path().join("main.route"), policy).unwrap();
    let running = start_in(dir.path(), watch).await;
    let url = format!("http://{}", running.addr);
    Gateway { dir, running, url, up, http: reqwest::Client::new() }
}

/// Starts (or restarts) a gateway on the config in `dir`.
pub async fn start_in(dir: &std::path::Path, watch: bool) -> yardmaster::gateway::Running {
    start_with(dir, watch, timeouts()).await
}

/// The tests' timeouts: short, so that cut-offs show quickly.
pub fn timeouts() -> yardmaster::gateway::Timeouts {
    yardmaster::gateway::Timeouts {
        header_read: Duration::from_millis(500),
        body_read: Duration::from_millis(500),
        stream_idle: Duration::from_millis(500),
        breaker_cooldown: Duration::from_millis(300),
        busy_poll: None,
        drain: Duration::from_secs(30),
    }
}

/// Starts a gateway on the config in `dir` with these timeouts.
pub async fn start_with(
    dir: &std::path::Path,
    watch: bool,
    timeouts: yardmaster::gateway::Timeouts,
) -> yardmaster::gateway::Running {
    yardmaster::gateway::start(
        yardmaster::config::load(&dir.join("yardmaster.yaml")).unwrap(),
        "127.0.0.1:0",
        timeouts,
        watch,
    )
    .await
    .unwrap()
}

impl Gateway {
    pub fn post(&self, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let r = self.http.post(format!("{}{path}", self.url));
        match key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// `GET /admin/policy` with the admin key.
    pub async fn admin_policy(&self) -> Value {
        self.http
            .get(format!("{}/admin/policy", self.url))
            .bearer_auth("sk-admin")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn chat(&self, body: Value, key: &str, test: Option<&str>) -> reqwest::Response {
        let mut r = self.post("/v1/chat/completions", Some(key)).json(&body);
        if let Some(t) = test {
            r = r.header("x-test", t);
        }
        r.send().await.unwrap()
    }
}

pub fn msg(text: &str) -> Value {
    json!({"model": "auto", "messages": [{"role": "user", "content": text}]})
}

pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}
