//! The gateway against a fake OpenAI-compatible upstream, both on 127.0.0.1 (ephemeral ports):
//! routing, deny, fallbacks on every failure kind, breakers, upstream 4xx pass-through, streaming,
//! client disconnects, error shapes and statuses, timeouts, and admin endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::time::{Duration, Instant};

use crate::gateway_support::{gateway, header, msg};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: &str = "sk-team-a";
const B: &str = "sk-batch";
const P: &str = "sk-plain";

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

fn assert_error_shape(v: &Value) {
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "not OpenAI's error shape: {v}");
    assert!(e.get("code").is_some() && e.get("param").is_some(), "not OpenAI's error shape: {v}");
}

#[tokio::test]
async fn routes_by_tier_keyword_tokens_and_requested_model() {
    let g = gateway("ok", false).await;
    let r = g.chat(msg("hello"), A, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        (header(&r, "x-yardmaster-rule"), header(&r, "x-yardmaster-model")),
        ("premium".into(), "premium-model".into())
    );
    assert_eq!(header(&r, "x-yardmaster-provider"), "up");
    assert_eq!(header(&r, "x-yardmaster-upstream-model"), "premium");
    assert_eq!(header(&r, "x-yardmaster-attempts"), "1");
    assert!(header(&r, "x-request-id").starts_with("req_"));
    assert_eq!(header(&r, "x-yardmaster-policy").len(), 12);
    let body = json_of(r).await;
    assert_eq!(body["model"], "premium-model", "the response names the catalog model");
    let r = g.chat(msg("Traceback (most recent call last)"), P, None).await;
    assert_eq!(header(&r, "x-yardmaster-rule"), "code");
    assert_eq!(header(&r, "x-yardmaster-model"), "code-model");
    let long = "many words here ".repeat(40);
    let r = g.chat(msg(&long), P, None).await;
    assert_eq!(header(&r, "x-yardmaster-rule"), "long");
    let r = g.chat(json!({"model": "code-model", "messages": [{"role": "user", "content": "x"}]}), P, None).await;
    assert_eq!(
        (header(&r, "x-yardmaster-rule"), header(&r, "x-yardmaster-model")),
        ("explicit".into(), "code-model".into())
    );
    let r = g.chat(json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}), P, None).await;
    assert_eq!(r.status(), 404);
    let v = json_of(r).await;
    assert_error_shape(&v);
    assert_eq!(v["error"]["code"], "model_not_found");
    let r = g.chat(msg("plain"), P, None).await;
    assert_eq!(
        (header(&r, "x-yardmaster-rule"), header(&r, "x-yardmaster-model")),
        ("default".into(), "ok-model".into())
    );
    // The upstream got its own id, and the provider key from the environment.
    assert!(g.up.bodies.lock().unwrap().iter().any(|b| b["model"] == "code"));
    assert!(g.up.auth.lock().unwrap().iter().all(|a| a == "Bearer sk-upstream-SECRET-7f3a"));
    g.running.shutdown().await;
}

#[tokio::test]
async fn deny_answers_403_in_openai_shape() {
    let g = gateway("ok", false).await;
    let r = g.chat(msg("key AKIAABCDEFGHIJKLMNOP"), P, None).await;
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "x-yardmaster-rule"), "deny secrets");
    assert_eq!(header(&r, "x-should-retry"), "false");
    let v = json_of(r).await;
    assert_error_shape(&v);
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(v["error"]["code"], "policy_denied");
    assert_eq!(g.up.total(), 0, "a denied request never reaches a provider");
    g.running.shutdown().await;
}

async fn falls_back(primary: &str, test: &str) {
    let g = gateway(primary, false).await;
    let r = g.chat(msg("hi"), P, Some(test)).await;
    assert_eq!(r.status(), 200, "primary {primary}");
    assert_eq!(header(&r, "x-yardmaster-model"), "ok-model", "primary {primary}");
    assert_eq!(header(&r, "x-yardmaster-attempts"), "2", "primary {primary}: one failed call, then ok-model");
    g.running.shutdown().await;
}

#[tokio::test]
async fn falls_through_on_500_503_auth_errors_refused_connections_and_malformed_json() {
    let junk = ["malformed", "not-object", "gzip", "html", "reset", "deep"];
    for primary in ["fail500", "fail503", "unauthorized", "refused", "r429huge"].into_iter().chain(junk) {
        falls_back(primary, "fb-x").await;
    }
}

#[tokio::test]
async fn a_reply_passes_through_as_written_but_for_model_and_usage() {
    let g = gateway("verbatim", false).await;
    let r = g.chat(msg("hi"), P, Some("fb-x")).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    // Escapes, number formatting, unknown members and their order are the upstream's.
    let expected_order = [
        r#""id":"up-v""#,
        r#""object":"chat.completion""#,
        r#""model":"primary""#,
        r#""system_fingerprint":"fp_1""#,
        r#""content":"caf\u00e9 1.50""#,
        r#""usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"cost":"#,
        r#""x_extra":{"score":1.50,"tags":[]}"#,
    ];
    let mut at = 0;
    for part in expected_order {
        let found = text[at..].find(part).unwrap_or_else(|| panic!("{part} (in order) in {text}"));
        at += found + part.len();
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    // 3 input tokens at $1/M and 4 output at $2/M: 11 micro-USD.
    assert!((v["usage"]["cost"].as_f64().unwrap() - 0.000011).abs() < 1e-12, "{text}");
    assert!(!text.contains("verbatim"), "model replaced: {text}");
    g.running.shutdown().await;

    // Without a usage block the tokens are counted and a usage block is added.
    let g = gateway("nousage", false).await;
    let v: Value = g.chat(msg("hi"), P, Some("fb-x")).await.json().await.unwrap();
    assert_eq!(v["model"], "primary");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    assert!(v["usage"]["cost"].as_f64().unwrap() > 0.0, "{v}");
    g.running.shutdown().await;
}

#[tokio::test]
async fn retries_a_429_after_retry_after_and_falls_through_when_it_is_too_long() {
    let g = gateway("ok", false).await;
    let r = g.chat(msg("hi"), P, Some("429")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-yardmaster-model"), "r429", "the retry of the same target succeeded");
    assert_eq!(header(&r, "x-yardmaster-attempts"), "2");
    let t = Instant::now();
    let r = g.chat(msg("hi"), P, Some("429long")).await;
    assert_eq!(header(&r, "x-yardmaster-model"), "ok-model");
    assert!(t.elapsed() < Duration::from_secs(3), "a Retry-After above the cap falls through at once");
    assert_eq!(g.up.calls("r429long"), 1);
    g.running.shutdown().await;
}

#[tokio::test]
async fn a_timeout_falls_through() {
    let g = gateway("ok", false).await;
    let t = Instant::now();
    let r = g.chat(msg("hi"), P, Some("timeout")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-yardmaster-model"), "ok-model");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    g.running.shutdown().await;
}

#[tokio::test]
async fn the_breaker_opens_after_five_failures_and_recovers() {
    let g = gateway("ok", false).await;
    for _ in 0..5 {
        let r = g.chat(msg("hi"), P, Some("breaker")).await;
        assert_eq!(header(&r, "x-yardmaster-model"), "ok-model");
    }
    assert_eq!(g.up.calls("fail500"), 5);
    let r = g.chat(msg("hi"), P, Some("breaker")).await;
    assert_eq!(header(&r, "x-yardmaster-attempts"), "1", "the open breaker skips fail500");
    assert_eq!(g.up.calls("fail500"), 5);
    let metrics = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("yardmaster_breaker_state{model=\"fail500\"} 2"), "{metrics}");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let _ = g.chat(msg("hi"), P, Some("breaker")).await;
    assert_eq!(g.up.calls("fail500"), 6, "after the cooldown one probe goes through");
    g.running.shutdown().await;
}

#[tokio::test]
async fn an_upstream_400_reaches_the_client_unchanged() {
    let g = gateway("ok", false).await;
    let r = g.chat(json!({"model": "bad", "messages": [{"role": "user", "content": "x"}]}), P, None).await;
    assert_eq!(r.status(), 400);
    assert_eq!(header(&r, "x-yardmaster-model"), "bad");
    let v = json_of(r).await;
    assert_eq!(
        v,
        json!({"error":{"message":"upstream says: bad temperature","type":"invalid_request_error","code":"bad_temp","param":"temperature"}})
    );
    g.running.shutdown().await;
}

#[tokio::test]
async fn auth_body_limit_and_parsing_errors() {
    let g = gateway("ok", false).await;
    let r = g.post("/v1/chat/completions", None).json(&msg("x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_error_shape(&json_of(r).await);
    let r = g.post("/v1/chat/completions", Some("sk-wrong")).json(&msg("x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json_of(r).await["error"]["type"], "authentication_error");
    let big = "x".repeat(11 * 1024 * 1024);
    let r = g.post("/v1/chat/completions", Some(P)).body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(json_of(r).await["error"]["code"], "body_too_large");
    let r = g.post("/v1/chat/completions", Some(P)).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_error_shape(&json_of(r).await);
    let r = g.post("/v1/chat/completions", Some(P)).json(&json!({"model": "auto"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json_of(r).await["error"]["param"], "messages");
    let r =
        g.post("/v1/chat/completions", Some(P)).json(&json!({"model": "auto", "messages": "hi"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = g.post("/v1/chat/completions", Some(P)).json(&json!({"messages": []})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json_of(r).await["error"]["param"], "model");
    // The key's allowlist: 403.
    let r = g.chat(json!({"model": "code-model", "messages": [{"role": "user", "content": "x"}]}), B, None).await;
    assert_eq!(r.status(), 403);
    assert_eq!(json_of(r).await["error"]["code"], "model_not_allowed");
    let r = g.http.get(format!("{}/v1/nope", g.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(!header(&r, "x-request-id").is_empty());
    assert_error_shape(&json_of(r).await);
    assert_eq!(g.up.total(), 0);
    g.running.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_invalid_keys_never_reach_the_upstream() {
    let g = gateway("ok", false).await;
    let statuses: Vec<u16> = futures_util::stream::iter(0..10_000)
        .map(|i| {
            let req = g.post("/v1/chat/completions", Some(&format!("sk-invalid-{i}"))).json(&msg("hi"));
            async move { req.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 401));
    assert_eq!(statuses.len(), 10_000);
    assert_eq!(g.up.total(), 0);
    g.running.shutdown().await;
}

#[tokio::test]
async fn overrides_reach_the_upstream() {
    let g = gateway("ok", false).await;
    let r = g
        .chat(
            json!({"model": "auto", "max_tokens": 500, "messages": [{"role": "user", "content": "x"}]}),
            P,
            Some("capped"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let sent = g.up.bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!((sent["max_tokens"].clone(), sent["temperature"].clone()), (json!(10), json!(0.1)));
    g.running.shutdown().await;
}

#[tokio::test]
async fn embeddings_models_key_and_probes() {
    let g = gateway("ok", false).await;
    let r = g.post("/v1/embeddings", Some(P)).json(&json!({"model": "auto", "input": "hello"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-yardmaster-model"), "embedder");
    assert_eq!(json_of(r).await["model"], "embedder");
    let v = json_of(g.http.get(format!("{}/v1/models", g.url)).bearer_auth(P).send().await.unwrap()).await;
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"auto") && ids.contains(&"ok-model"));
    let v = json_of(g.http.get(format!("{}/v1/key", g.url)).bearer_auth(A).send().await.unwrap()).await;
    assert_eq!((v["name"].clone(), v["tier"].clone()), (json!("team-a"), json!("premium")));
    assert_eq!(g.http.get(format!("{}/healthz", g.url)).send().await.unwrap().status(), 200);
    assert_eq!(g.http.get(format!("{}/readyz", g.url)).send().await.unwrap().status(), 200);
    g.running.shutdown().await;
}

#[tokio::test]
async fn providers_are_listed_with_their_host_and_models_never_a_key_or_query_string() {
    let g = crate::gateway_support::gateway_custom(crate::gateway_support::POLICY, false, |addr| {
        crate::gateway_support::config(addr, "ok").replace(
            "providers:\n",
            "providers:\n  leaky: { kind: openai, base_url: \"https://user:pw-SECRET@example.com:8443/v1?api_key=QUERY-SECRET\" }\n",
        )
    })
    .await;
    let url = format!("{}/v1/providers", g.url);
    assert_eq!(g.http.get(&url).send().await.unwrap().status(), 401, "a gateway key is needed");
    let r = g.http.get(&url).bearer_auth(P).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for secret in ["SECRET", "pw-", "api_key", "/v1", "sk-upstream"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = v["data"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["leaky", "refused", "up"]);
    let leaky = &v["data"][0];
    assert_eq!((leaky["kind"].as_str(), leaky["host"].as_str()), (Some("openai"), Some("example.com:8443")));
    let up = &v["data"][2];
    assert_eq!(up["available"], true);
    assert!(up["host"].as_str().unwrap().starts_with("127.0.0.1:"));
    let ok = up["models"].as_array().unwrap().iter().find(|m| m["id"] == "ok-model").unwrap();
    assert_eq!(
        (ok["upstream_id"].as_str(), ok["healthy"].as_bool(), ok["breaker"].as_str()),
        (Some("ok"), Some(true), Some("closed"))
    );
    // A key with an allowlist sees only its models.
    let v = json_of(g.http.get(&url).bearer_auth("sk-batch").send().await.unwrap()).await;
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["models"].as_array().unwrap())
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"ok-model") && ids.contains(&"embedder"));
    g.running.shutdown().await;
}

async fn sse_events(r: reqwest::Response) -> Vec<(Duration, String)> {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut s = r.bytes_stream();
    while let Some(Ok(b)) = s.next().await {
        buf.push_str(&String::from_utf8_lossy(&b));
        while let Some(i) = buf.find("\n\n") {
            let ev = buf[..i].trim_start_matches("data: ").to_string();
            buf = buf[i + 2..].to_string();
            out.push((t.elapsed(), ev));
        }
    }
    out
}

#[tokio::test]
async fn streams_are_relayed_event_by_event() {
    let g = gateway("ok", false).await;
    let body = json!({"model": "streamer", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let r = g.chat(body, P, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    let events = sse_events(r).await;
    assert_eq!(events.len(), 21);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let first: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(first["model"], "streamer", "model rewritten in every chunk");
    // 20 chunks 50 ms apart: they arrive spread out, not in one buffered burst.
    let spread = events[19].0 - events[0].0;
    assert!(spread > Duration::from_millis(700), "chunks arrived together: {spread:?}");
    g.running.shutdown().await;
}

#[tokio::test]
async fn a_broken_or_stalled_stream_ends_with_an_error_event_and_no_done() {
    let g = gateway("ok", false).await;
    for model in ["breaker", "staller"] {
        let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let r = g.chat(body, P, None).await;
        assert_eq!(r.status(), 200);
        let events =
            tokio::time::timeout(Duration::from_secs(5), sse_events(r)).await.expect("the stream ends by itself");
        let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
        assert_eq!(last["error"]["code"], "stream_interrupted", "{model}");
        assert!(events.iter().all(|(_, e)| e != "[DONE]"), "{model}");
    }
    g.running.shutdown().await;
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_stream() {
    let g = gateway("ok", false).await;
    let body = json!({"model": "streamer", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let r = g.chat(body, P, None).await;
    let mut s = r.bytes_stream();
    let _ = s.next().await;
    drop(s);
    let t = Instant::now();
    while !g.up.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(t.elapsed() < Duration::from_secs(3), "the upstream stream was not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    g.running.shutdown().await;
}

#[tokio::test]
async fn slow_headers_and_stalled_bodies_are_cut_off() {
    let g = gateway("ok", false).await;
    let mut sock = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
    sock.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let t = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf))
        .await
        .expect("the server closes the connection");
    assert!(n.is_ok());
    assert!(t.elapsed() < Duration::from_secs(3));
    let mut sock = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {P}\r\nContent-Length: 100\r\n\r\n{{\"model\"");
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf)).await.expect("the server answers");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    g.running.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_key() {
    let g = gateway("ok", false).await;
    let r = g.http.get(format!("{}/admin/policy", g.url)).bearer_auth(P).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v = json_of(g.http.get(format!("{}/admin/policy", g.url)).bearer_auth("sk-admin").send().await.unwrap()).await;
    assert_eq!(v["version"].as_str().unwrap().len(), 12);
    assert!(v["last_error"].is_null());
    assert!(v["files"][0].as_str().unwrap().ends_with("main.route"));
    assert!(!v.to_string().contains("SECRET"), "no secret in /admin/policy");
    let r = g
        .post("/admin/explain", Some("sk-admin"))
        .header("x-yardmaster-key", "team-a")
        .json(&msg("hi"))
        .send()
        .await
        .unwrap();
    let v = json_of(r).await;
    assert_eq!(v["rule"], "premium");
    assert_eq!(v["plan"][0]["model"], "premium-model");
    assert_eq!(g.up.total(), 0, "explain calls no provider");
    // A broken policy is rejected and shown; the live one stays.
    let before = g.admin_policy().await;
    std::fs::write(g.dir.path().join("main.route"), "rule \"x\" { when then }").unwrap();
    let r = g.post("/admin/reload", Some("sk-admin")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let after = g.admin_policy().await;
    assert_eq!(after["version"], before["version"]);
    assert!(after["last_error"].as_str().unwrap().contains("E0101"), "{after}");
    let metrics = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("yardmaster_policy_reloads_total{result=\"failed\"} 1"), "{metrics}");
    // A good policy loads; rollback brings the first one back.
    std::fs::write(g.dir.path().join("main.route"), "default { then code-model }\n").unwrap();
    let v = json_of(g.post("/admin/reload", Some("sk-admin")).send().await.unwrap()).await;
    let new_version = v["version"].as_str().unwrap().to_string();
    assert_ne!(new_version, before["version"].as_str().unwrap());
    let r = g.chat(msg("hi"), A, None).await;
    assert_eq!(
        (header(&r, "x-yardmaster-policy"), header(&r, "x-yardmaster-model")),
        (new_version.clone(), "code-model".into())
    );
    let v = json_of(g.post("/admin/rollback", Some("sk-admin")).send().await.unwrap()).await;
    assert_eq!(v["version"], before["version"]);
    let r = g.chat(msg("hi"), A, None).await;
    assert_eq!(header(&r, "x-yardmaster-model"), "premium-model");
    g.running.shutdown().await;
}

/// An upstream that sends part of a body and stalls (a 200 or a 500), or more than the reply
/// limit, fails its attempt like any other failure and the chain falls through, at once. (A
/// stalled body used to hold the client past 200 s; a 100 MB reply took 400 MB of memory.)
#[tokio::test]
async fn an_upstream_that_stalls_or_sends_too_much_falls_through() {
    for primary in ["stall-body", "stall-error", "huge"] {
        let t = Instant::now();
        falls_back(primary, "fb-x").await;
        assert!(t.elapsed() < Duration::from_secs(3), "{primary} took {:?}", t.elapsed());
    }
}

/// A stream that ends without `[DONE]`, or sends an event over the size limit, ends with an
/// error event and no `[DONE]`, and its ledger row says 502 (it used to be relayed as a complete
/// answer and recorded as 200).
#[tokio::test]
async fn a_stream_cut_short_or_too_large_is_an_error() {
    for primary in ["nodone", "huge-event"] {
        let g = gateway(primary, false).await;
        let mut body = msg("hi");
        body["stream"] = json!(true);
        let r = g.chat(body, P, Some("fb-x")).await;
        assert_eq!((r.status().as_u16(), header(&r, "x-yardmaster-model")), (200, "primary".to_string()), "{primary}");
        let id = header(&r, "x-request-id");
        let events: Vec<String> = sse_events(r).await.into_iter().map(|(_, e)| e).collect();
        assert!(events.first().is_some_and(|e| e.contains("hello")), "{primary}: {events:?}");
        assert!(events.last().is_some_and(|e| e.contains("stream_interrupted")), "{primary}: {events:?}");
        assert!(!events.iter().any(|e| e == "[DONE]"), "{primary}: {events:?}");
        if let Some(l) = &g.running.state.accounting.ledger {
            l.flush().await;
        }
        let rows = yardmaster::accounting::ledger::read_all(&g.dir.path().join("yardmaster.db")).unwrap();
        assert_eq!(rows.iter().find(|r| r.id == id).map(|r| r.status), Some(502), "{primary}");
        g.running.shutdown().await;
    }
}

/// Reads until the server closes the connection; how long that took (`None` past `limit`).
async fn closed_within(sock: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t.elapsed()), sock.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Connections that send nothing (a TCP connection that never sends a byte; an HTTP/2 one that
/// sends its preface and goes quiet; an HTTP/1 one idle after a request) are closed after the
/// header timeout (500 ms here). They used to be held for as long as the client liked.
#[tokio::test]
async fn connections_that_send_nothing_are_closed() {
    let g = gateway("ok", false).await;
    let mut silent = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
    let mut h2 = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing.
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    for (what, sock) in [
        ("a silent connection", &mut silent),
        ("a quiet HTTP/2 connection", &mut h2),
        ("an idle keep-alive", &mut idle),
    ] {
        let took = closed_within(sock, Duration::from_secs(5)).await;
        assert!(took.is_some_and(|t| t < Duration::from_secs(3)), "{what}: {took:?}");
    }
    let metrics = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("yardmaster_connections_idle_closed_total 3"), "{metrics}");
    g.running.shutdown().await;
}

/// The number of connections is capped (`limits.max_connections`, 8 here): past it a new
/// connection is closed at once and counted, and the others are served.
#[tokio::test]
async fn the_number_of_connections_is_capped() {
    let g = crate::gateway_support::gateway_custom(crate::gateway_support::POLICY, false, |addr| {
        crate::gateway_support::config(addr, "ok")
            .replace("max_event_bytes: 64KiB", "max_event_bytes: 64KiB, max_connections: 8")
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let s = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
    let took = closed_within(&mut extra, Duration::from_secs(2)).await;
    assert!(took.is_some_and(|t| t < Duration::from_millis(400)), "{took:?}");
    drop(held);
    // Once they are gone, connections are served again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("yardmaster_connections_refused_total 1"), "{metrics}");
    assert!(metrics.contains("yardmaster_connections 1\n"), "{metrics}");
    g.running.shutdown().await;
}

/// An answer sent before the request's body was read (401, 404, 405, 413, the admin 401) says
/// `Connection: close`, so that a client that sends its headers and body in two writes knows the
/// connection ends; an answer after the body was read keeps the connection.
#[tokio::test]
async fn early_answers_say_connection_close() {
    let g = gateway("ok", false).await;
    let body = "{\"model\": \"auto\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    let cases = [
        ("POST /v1/chat/completions", "Bearer sk-wrong", 401, true),
        ("POST /v1/nowhere", "Bearer sk-wrong", 404, true),
        ("PUT /v1/chat/completions", "Bearer sk-wrong", 405, true),
        ("POST /admin/reload", "Bearer sk-wrong", 401, true),
        ("POST /v1/chat/completions", "Bearer sk-plain", 200, false),
    ];
    for (line, auth, status, close) in cases {
        let mut sock = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
        let head = format!("{line} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
        sock.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = sock.write_all(body.as_bytes()).await;
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(3), sock.read(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(text.starts_with(&format!("http/1.1 {status}")), "{line}: {text}");
        assert_eq!(text.contains("connection: close"), close, "{line}: {text}");
    }
    // 413: the body is larger than the limit and is not read to its end.
    let mut sock = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-plain\r\nContent-Length: 20000000\r\n\r\n";
    sock.write_all(head.as_bytes()).await.unwrap();
    let _ = sock.write_all(&vec![b'x'; 11 << 20]).await;
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 413") && text.contains("connection: close"), "{text}");
    g.running.shutdown().await;
}

/// A shutdown whose drain times out ends the streams still running with an error event, and
/// settles them: a ledger row with what was streamed (they used to get a protocol error and no
/// row).
#[tokio::test]
async fn shutdown_settles_the_streams_it_cuts() {
    let g = gateway("ok", false).await;
    g.running.shutdown().await;
    let timeouts =
        yardmaster::gateway::Timeouts { drain: Duration::from_millis(300), ..crate::gateway_support::timeouts() };
    let running = crate::gateway_support::start_with(g.dir.path(), false, timeouts).await;
    let url = format!("http://{}", running.addr);
    // The slow stream sends 20 chunks, one every 50 ms: it is still running when the drain ends.
    let body = json!({"model": "streamer", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let r = g.http.post(format!("{url}/v1/chat/completions")).bearer_auth(P).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = header(&r, "x-request-id");
    let reader = tokio::spawn(sse_events(r));
    tokio::time::sleep(Duration::from_millis(120)).await;
    let ledger = running.state.accounting.ledger.clone();
    running.shutdown().await;
    let events: Vec<String> = reader.await.unwrap().into_iter().map(|(_, e)| e).collect();
    assert!(events.last().is_some_and(|e| e.contains("shutting down")), "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    drop(ledger);
    let rows = yardmaster::accounting::ledger::read_all(&g.dir.path().join("yardmaster.db")).unwrap();
    let row = rows.iter().find(|r| r.id == id).expect("the cut stream has its ledger row");
    assert_eq!(row.status, 503);
    assert!(row.output_tokens > 0, "{row:?}");
}

/// A large prompt's tokens are counted off the threads that serve requests: while a 2 MB prompt
/// is counted (for a `prompt.tokens` rule and by the mock provider), a small request on the same
/// single-threaded runtime is answered. (Two clients looping 9 MiB prompts once raised a small
/// request's p99 from 5 to 212 ms.)
#[tokio::test]
async fn a_large_prompt_is_counted_off_the_request_threads() {
    let policy = "rule \"long\" {\n  when prompt.tokens > 5M\n  then big\n}\n\ndefault {\n  then big\n}\n";
    let g = crate::gateway_support::gateway_custom(policy, false, |_| {
        "policy: main.route\nproviders:\n  m: { kind: mock }\nmodels:\n  big: { provider: m, context: 10000000 }\n"
            .to_string()
    })
    .await;
    let (http, url) = (g.http.clone(), g.url.clone());
    let text = "many different words in a long document about tokens ".repeat(40_000);
    let big = tokio::spawn(async move {
        let body = json!({"model": "auto", "messages": [{"role": "user", "content": text}]});
        http.post(format!("{url}/v1/chat/completions")).json(&body).send().await.unwrap().status()
    });
    // Let the large body arrive and its counting start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let small = g.chat(msg("hi"), P, None).await;
    assert_eq!(small.status(), 200);
    assert!(!big.is_finished(), "the small request waited for the large one's counting");
    assert_eq!(big.await.unwrap(), 200);
    g.running.shutdown().await;
}

/// What hyper rejects by itself (headers too large: 431; a request line that is not HTTP: 400)
/// comes back in OpenAI's error shape, not with an empty body.
#[tokio::test]
async fn rejections_by_the_http_layer_have_an_error_body() {
    let g = gateway("ok", false).await;
    let big = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(500_000));
    for (request, status) in [(big.as_str(), 431), ("GARBAGE\r\n\r\n", 400)] {
        let mut sock = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
        let _ = sock.write_all(request.as_bytes()).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), sock.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["error"]["type"], "invalid_request_error", "{text}");
    }
    g.running.shutdown().await;
}

#[tokio::test]
async fn a_vendors_name_is_an_alias_and_an_unknown_name_gets_the_closest_one() {
    let g = crate::gateway_support::gateway_custom(crate::gateway_support::POLICY, false, |addr| {
        crate::gateway_support::config(addr, "ok").replace(
            "  ok-model:      { provider: up, id: ok,",
            "  ok-model:      { provider: up, id: ok, aliases: [gpt-3.5-turbo, ok-model-2026],",
        )
    })
    .await;
    let ask = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    // `batch` may use only ok-model and embedder: an alias of ok-model is ok-model.
    let r = g.chat(ask("gpt-3.5-turbo"), "sk-batch", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-yardmaster-model"), "ok-model");
    let r = g.chat(ask("ok-modle"), "sk-plain", None).await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("did you mean `ok-model`") && m.contains("auto"), "{m}");
    let models: Value =
        g.http.get(format!("{}/v1/models", g.url)).bearer_auth("sk-plain").send().await.unwrap().json().await.unwrap();
    let ok = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "ok-model").unwrap().clone();
    assert_eq!(ok["aliases"], json!(["gpt-3.5-turbo", "ok-model-2026"]));
    let one: Value = g
        .http
        .get(format!("{}/v1/models/ok-model-2026", g.url))
        .bearer_auth("sk-plain")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "ok-model");
}

#[test]
fn an_alias_that_is_a_models_name_or_anothers_alias_is_a_config_error() {
    let text = "policy: p.route\nproviders:\n  m: { kind: mock }\nmodels:\n  a: { provider: m, aliases: [b, x] }\n  b: { provider: m, aliases: [x] }\n";
    let e = yardmaster::config::parse(std::path::Path::new("y.yaml"), text).unwrap_err().to_string();
    assert!(e.contains("alias `b` is the name of a model"), "{e}");
    assert!(e.contains("alias `x` is also an alias of `a`"), "{e}");
}
