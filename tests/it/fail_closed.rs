//! Failing closed (issue 25): run-time keys that cannot be read, or that Redis lost, never open
//! the gateway; SPEC §9's open-gateway rule holds at every change; key names are unique under
//! concurrency; budgets survive Redis restarting empty and stalling; the queue of writes bound for
//! a stalled Redis is bounded.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::gateway_support::{config, gateway_custom, header, start_in, Gateway, POLICY as BASE};
use crate::shared::{ask, instance, key_info, micros, send, shared_config, Redis, POLICY};

/// The config text with `keys: []` in place of its keys.
fn without_keys(text: &str) -> String {
    let start = text.find("keys:\n").unwrap();
    let end = text.find("admin:").unwrap();
    format!("{}keys: []\n{}", &text[..start], &text[end..])
}

/// A config with no config keys (only run-time ones), on Redis.
fn keyless_on_redis(addr: std::net::SocketAddr, env: &str) -> String {
    without_keys(&shared_config(addr, env, "closed"))
}

/// An exposed gateway with config keys: its config file, the same without keys, and a reload.
async fn exposed_with_keys() -> (Gateway, std::path::PathBuf, String, String) {
    let g = exposed(|addr| config(addr, "ok")).await;
    let path = g.dir.path().join("yardmaster.yaml");
    let with_keys = std::fs::read_to_string(&path).unwrap();
    let without = without_keys(&with_keys);
    (g, path, with_keys, without)
}

async fn make_key(g: &Gateway, body: Value) -> reqwest::Response {
    g.post("/admin/keys", Some("sk-admin")).json(&body).send().await.unwrap()
}

async fn keyless(g: &Gateway) -> u16 {
    g.post("/v1/chat/completions", None).json(&ask("anyone there?")).send().await.unwrap().status().as_u16()
}

async fn with_key(g: &Gateway, key: &str) -> u16 {
    g.post("/v1/chat/completions", Some(key)).json(&ask("hello")).send().await.unwrap().status().as_u16()
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn run_time_keys_on_redis_never_open_the_gateway_when_redis_loses_them_or_cannot_be_reached() {
    let mut redis = Redis::start();
    let env = redis.env();
    let e = env.clone();
    let g = gateway_custom(POLICY, false, move |addr| keyless_on_redis(addr, &e)).await;
    // No key anywhere yet, on loopback: open, as SPEC §9 allows, once Redis has answered for a
    // second (503 until then: an emptied Redis is not trusted at once).
    until("open", Duration::from_secs(3), async || keyless(&g).await == 200).await;
    let made: Value = make_key(&g, json!({"name": "only"})).await.json().await.unwrap();
    let secret = made["key"].as_str().unwrap().to_string();
    assert_eq!(keyless(&g).await, 401);
    assert_eq!(with_key(&g, &secret).await, 200);

    // Redis restarts empty: the key is put back from the instance's copy; never open.
    redis.stop();
    redis.restart();
    let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    until("the record is in redis again, for every instance", Duration::from_secs(5), async || {
        redis::cmd("HLEN").arg("t:keys").query_async::<u64>(&mut conn).await.unwrap() == 1
    })
    .await;
    assert_eq!(with_key(&g, &secret).await, 200);
    assert_eq!(keyless(&g).await, 401, "a gateway that had keys stays closed");

    // A second instance that starts while Redis cannot be reached knows no key: every request
    // without a config key gets 503, and /readyz says why.
    redis.stop();
    let e = env.clone();
    let cold = gateway_custom(POLICY, false, move |addr| keyless_on_redis(addr, &e)).await;
    let r = cold.post("/v1/chat/completions", None).json(&ask("let me in")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "x-should-retry"), "true");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "state_unavailable", "{body}");
    assert_eq!(with_key(&cold, &secret).await, 503, "a key it cannot check is not refused as invalid");
    let ready = cold.http.get(format!("{}/readyz", cold.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("not ready"));
    // The first instance still knows the key it read, and still refuses everyone else.
    assert_eq!(keyless(&g).await, 401);

    // Redis back (empty again): the first instance puts the key back, and the cold one reads it.
    redis.restart();
    let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    until("the first instance puts the key back", Duration::from_secs(5), async || {
        redis::cmd("HLEN").arg("t:keys").query_async::<u64>(&mut conn).await.unwrap() == 1
    })
    .await;
    until("the cold instance reads the key", Duration::from_secs(10), async || with_key(&cold, &secret).await == 200)
        .await;
    assert_eq!(keyless(&cold).await, 401);
}

#[tokio::test]
async fn adding_redis_to_a_deployment_whose_keys_were_in_the_ledger_carries_them_over() {
    let redis = Redis::start();
    let env = redis.env();
    let e = env.clone();
    let g = gateway_custom(POLICY, false, move |addr| {
        // The same config, first without `storage.redis` (keys in the ledger).
        let text = keyless_on_redis(addr, &e);
        let at = text.find("storage:").unwrap();
        format!("{}storage: {{ sqlite: yardmaster.db }}\n", &text[..at])
    })
    .await;
    let made: Value = make_key(&g, json!({"name": "old"})).await.json().await.unwrap();
    let secret = made["key"].as_str().unwrap().to_string();
    let dir = g.dir;
    let upstream = g.url.clone();
    g.running.shutdown().await;
    let _ = upstream;
    // Storage moves to Redis.
    let path = dir.path().join("yardmaster.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "storage: { sqlite: yardmaster.db }",
        &format!("storage: {{ sqlite: yardmaster.db, redis: {{ url_env: {env}, prefix: \"t:\" }} }}"),
    );
    std::fs::write(&path, text).unwrap();
    let running = start_in(dir.path(), false).await;
    let url = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let post = |key: Option<&str>| {
        let r = http.post(format!("{url}/v1/chat/completions")).json(&ask("hello"));
        match key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    };
    assert_eq!(post(None).send().await.unwrap().status(), 401, "never open");
    assert_eq!(post(Some(&secret)).send().await.unwrap().status(), 200, "the ledger's key works on redis");
    let listed: Value =
        http.get(format!("{url}/admin/keys")).bearer_auth("sk-admin").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["stored_in"], "redis");
    assert_eq!(listed["data"].as_array().unwrap().iter().filter(|k| k["name"] == "old").count(), 1, "{listed}");
    running.shutdown().await;
}

/// A gateway on 0.0.0.0 (not loopback), reached through 127.0.0.1.
async fn exposed(config: impl FnOnce(std::net::SocketAddr) -> String) -> Gateway {
    let mut g = gateway_custom(BASE, false, config).await;
    g.running.shutdown().await;
    let running = yardmaster::gateway::start(
        yardmaster::config::load(&g.dir.path().join("yardmaster.yaml")).unwrap(),
        "0.0.0.0:0",
        crate::gateway_support::timeouts(),
        false,
    )
    .await
    .unwrap();
    g.url = format!("http://127.0.0.1:{}", running.addr.port());
    g.running = running;
    g
}

#[tokio::test]
async fn the_open_gateway_rule_holds_at_every_reload_rollback_and_revocation() {
    let (g, path, _, without) = exposed_with_keys().await;
    let reload = || g.post("/admin/reload", Some("sk-admin")).send();

    // A reload to `keys: []` with no run-time key would open it: rejected, with the reason.
    std::fs::write(&path, &without).unwrap();
    let r = reload().await.unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("allow_open"), "{body}");
    assert!(g.admin_policy().await["last_error"].as_str().unwrap().contains("would be open"));
    assert_eq!(keyless(&g).await, 401);

    // With a run-time key live, the same reload is fine (the gateway stays closed)...
    let made: Value = make_key(&g, json!({"name": "runtime"})).await.json().await.unwrap();
    let (id, secret) = (made["id"].as_str().unwrap().to_string(), made["key"].as_str().unwrap().to_string());
    assert_eq!(reload().await.unwrap().status(), 200);
    assert_eq!(keyless(&g).await, 401);
    assert_eq!(with_key(&g, &secret).await, 200);
    // ...but revoking that last key is refused.
    let r = g.http.delete(format!("{}/admin/keys/{id}", g.url)).bearer_auth("sk-admin").send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(header(&r, "x-should-retry"), "false");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "last_key", "{body}");
    assert_eq!(with_key(&g, &secret).await, 200, "still live");
    assert_eq!(keyless(&g).await, 401);

    // With `allow_open: true` the operator has said yes: the revocation goes through, and a
    // gateway that had keys still refuses requests without one.
    std::fs::write(&path, format!("{without}allow_open: true\n")).unwrap();
    assert_eq!(reload().await.unwrap().status(), 200);
    let r = g.http.delete(format!("{}/admin/keys/{id}", g.url)).bearer_auth("sk-admin").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(keyless(&g).await, 401);
}

#[tokio::test]
async fn a_rollback_that_would_open_the_gateway_is_refused() {
    let (g, path, with_keys, without) = exposed_with_keys().await;
    let reload = || g.post("/admin/reload", Some("sk-admin")).send();
    // `keys: []` goes live while a run-time key is live; then the config keys come back and the
    // run-time key is revoked (the config keys keep the gateway closed).
    let made: Value = make_key(&g, json!({"name": "runtime"})).await.json().await.unwrap();
    std::fs::write(&path, &without).unwrap();
    assert_eq!(reload().await.unwrap().status(), 200);
    std::fs::write(&path, &with_keys).unwrap();
    // (A rollback goes to the previous policy version: this one must differ.)
    std::fs::write(g.dir.path().join("main.route"), format!("{BASE}\n# edited\n")).unwrap();
    assert_eq!(reload().await.unwrap().status(), 200);
    let id = made["id"].as_str().unwrap();
    let r = g.http.delete(format!("{}/admin/keys/{id}", g.url)).bearer_auth("sk-admin").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Rolling back to `keys: []` now would leave no key at all.
    let r = g.post("/admin/rollback", Some("sk-admin")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("would be open"), "{body}");
    assert_eq!(keyless(&g).await, 401);
    assert_eq!(with_key(&g, "sk-plain").await, 200);
}

async fn concurrent_creates(gateways: &[&Gateway], name: &str) -> (usize, usize) {
    let calls = (0..16).map(|i| make_key(gateways[i % gateways.len()], json!({"name": name})));
    let statuses: Vec<u16> = futures_util::future::join_all(calls).await.iter().map(|r| r.status().as_u16()).collect();
    (statuses.iter().filter(|s| **s == 201).count(), statuses.iter().filter(|s| **s == 409).count())
}

#[tokio::test]
async fn sixteen_concurrent_creates_of_one_name_make_one_key_on_the_ledger_and_across_instances_on_redis() {
    let local = gateway_custom(BASE, false, |addr| config(addr, "ok")).await;
    assert_eq!(concurrent_creates(&[&local], "twin").await, (1, 15));
    let redis = Redis::start();
    let (a, b) = (instance(&redis, "closed").await, instance(&redis, "closed").await);
    assert_eq!(concurrent_creates(&[&a, &b], "twin").await, (1, 15));
    let listed: Value =
        a.http.get(format!("{}/admin/keys", a.url)).bearer_auth("sk-admin").send().await.unwrap().json().await.unwrap();
    let twins = listed["data"].as_array().unwrap().iter().filter(|k| k["name"] == "twin").count();
    assert_eq!(twins, 1, "{listed}");
    // A revoked key's name is free again; a rename onto a live name is refused.
    let other: Value = make_key(&a, json!({"name": "other"})).await.json().await.unwrap();
    let r = a
        .http
        .patch(format!("{}/admin/keys/{}", a.url, other["id"].as_str().unwrap()))
        .bearer_auth("sk-admin")
        .json(&json!({"name": "twin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn run_time_keys_refuse_models_outside_the_catalog_and_zero_limits_and_admin_answers_are_never_cached() {
    let g = gateway_custom(BASE, false, |addr| config(addr, "ok")).await;
    for (body, param) in [
        (json!({"name": "x", "models": ["ok-model", "gpt-9"]}), "models"),
        (json!({"name": "x", "limits": {"rpm": 0}}), "limits"),
        (json!({"name": "x", "limits": {"tpm": 0}}), "limits"),
    ] {
        let r = make_key(&g, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{e}");
    }
    let r = make_key(&g, json!({"name": "fine", "models": ["ok-model"], "limits": {"rpm": 1}})).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "cache-control"), "no-store", "the answer carries a secret");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    for path in ["/admin/keys", "/admin/policy", "/admin/models"] {
        let r = g.http.get(format!("{}{path}", g.url)).bearer_auth("sk-admin").send().await.unwrap();
        assert_eq!(header(&r, "cache-control"), "no-store", "{path}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
    }
}

#[tokio::test]
async fn budgets_are_seeded_again_when_redis_restarts_empty() {
    let mut redis = Redis::start();
    let g = instance(&redis, "closed").await;
    let r = send(&g, "sk-capped", "none", "spend something").await;
    assert_eq!(r.status(), 200);
    let cost = micros(&json!(header(&r, "x-yardmaster-cost-usd").parse::<f64>().unwrap()));
    assert!(cost > 0);
    yardmaster::state::StateStore::flush(&*g.running.state.state, Duration::from_secs(2)).await;
    g.running.state.accounting.ledger.as_ref().unwrap().flush().await;
    redis.stop();
    redis.restart();
    until("redis answers again", Duration::from_secs(10), async || {
        key_info(&g, "sk-capped").await["spend_usd"].is_number()
    })
    .await;
    assert_eq!(micros(&key_info(&g, "sk-capped").await["spend_usd"]), cost, "the spend came back from the ledger");
}

#[tokio::test]
async fn requests_refused_while_redis_stalled_leave_no_reservation_behind() {
    let redis = Redis::start();
    let g = instance(&redis, "closed").await;
    assert_eq!(send(&g, "sk-capped", "none", "warm up").await.status(), 200);
    redis.pause();
    let texts: Vec<String> = (0..40).map(|i| format!("stalled {i}")).collect();
    let calls = texts.iter().map(|t| send(&g, "sk-capped", "none", t));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status(), 503);
    }
    redis.resume();
    // At once, not 15 s later: nothing the stalled scripts reserved is still held.
    until("redis answers again", Duration::from_secs(5), async || {
        send(&g, "sk-capped", "none", "after").await.status() == 200
    })
    .await;
    yardmaster::state::StateStore::flush(&*g.running.state.state, Duration::from_secs(2)).await;
    assert_eq!(micros(&key_info(&g, "sk-capped").await["reserved_usd"]), 0);
}

#[tokio::test]
async fn cache_stores_bound_for_a_stalled_redis_are_bounded_in_bytes_and_counted_when_dropped() {
    let redis = Redis::start();
    let env = redis.env();
    let g = gateway_custom(POLICY, false, move |addr| {
        shared_config(addr, &env, "closed").replace("prefix: \"t:\"", "prefix: \"t:\", max_queued_bytes: 4KiB")
    })
    .await;
    redis.pause();
    // A keyless-budget key is served while Redis stalls; each answer is cached (rule "faq").
    for i in 0..20 {
        let r = send(&g, "sk-plain", "faq", &format!("question number {i} {}", "padding ".repeat(40))).await;
        assert_eq!(r.status(), 200);
    }
    let metrics = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name}: {metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(value("yardmaster_redis_writes_queued_bytes ") <= 4096.0, "{metrics}");
    assert!(value("yardmaster_redis_writes_dropped_total{kind=\"cache\"} ") > 0.0, "{metrics}");
    redis.resume();
}

/// The gateway in front of a chain whose first model answers 200 with something that is not an
/// answer, under a `cache` rule.
const BAD_200: &str = r#"
rule "error in a 200" {
  when header("x-test") == "error200"
  then error-200 -> ok-model
  cache 1h
}
rule "number out of range" {
  when header("x-test") == "inf"
  then inf-number -> ok-model
  cache 1h
}
default { then ok-model }
"#;

#[tokio::test]
async fn a_200_carrying_an_error_or_an_unreadable_number_falls_through_and_is_never_charged_or_cached() {
    let g = gateway_custom(BAD_200, false, |addr| {
        config(addr, "ok").replace(
            "models:\n",
            "models:\n  error-200: { provider: up, id: error200, price: { input: 1, output: 2 }, context: 100000 }\n  inf-number: { provider: up, id: inf, price: { input: 1, output: 2 }, context: 100000 }\n",
        )
    })
    .await;
    for (test, upstream_id) in [("error200", "error200"), ("inf", "inf")] {
        let r = g.chat(crate::gateway_support::msg("hello there"), "sk-plain", Some(test)).await;
        assert_eq!(r.status(), 200, "{test}");
        assert_eq!(header(&r, "x-yardmaster-model"), "ok-model", "{test}: fell through");
        assert_eq!(header(&r, "x-yardmaster-attempts"), "2", "{test}");
        // Charged for the good answer only (3 tokens in at $1/M, 4 out at $2/M).
        assert_eq!(header(&r, "x-yardmaster-cost-usd"), "0.000011", "{test}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "hello from ok", "{body}");
        // What the cache holds is the answer that was good, never the bad 200.
        let again = g.chat(crate::gateway_support::msg("hello there"), "sk-plain", Some(test)).await;
        assert_eq!(header(&again, "x-yardmaster-cache"), "hit", "{test}");
        let body: Value = again.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "hello from ok", "{body}");
        assert_eq!(g.up.calls(upstream_id), 1, "{test}");
    }
}

#[tokio::test]
async fn the_upstream_fuzz_regressions_hold() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/upstream");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let (&size, body) = data.split_first().unwrap();
        let chunk = usize::from(size % 64) + 1;
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
            body.chunks(chunk).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
        let events: Vec<_> = futures_util::StreamExt::collect(yardmaster::providers::native::sse(
            futures_util::stream::iter(chunks),
            256,
        ))
        .await;
        for ev in events.iter().flatten() {
            assert!(ev.1.len() <= 256, "an event over the limit: {}", ev.1.len());
        }
        if let Ok(raw) = yardmaster::providers::native::parse_raw(body) {
            for (_, v) in raw.iter() {
                assert!(serde_json::from_str::<Value>(v.get()).is_ok(), "every member of an accepted reply is a value");
            }
        }
        seen += 1;
    }
    assert!(seen >= 2);
}

#[tokio::test]
async fn the_responses_door_refuses_an_unauthenticated_body_before_reading_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = gateway_custom(BASE, false, |addr| config(addr, "ok")).await;
    // Headers that promise 10 MiB, and no body: without a key, the answer comes at once.
    let mut sock = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
    let head = "POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{";
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_millis(400), sock.read(&mut buf))
        .await
        .expect("answered before the body timeout (500 ms here)")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
}

#[tokio::test]
async fn an_open_loopback_gateway_refuses_other_hosts_and_bodies_that_are_not_json() {
    let g = gateway_custom(BASE, false, |addr| without_keys(&config(addr, "ok")) + "hosts: [gateway.internal]\n").await;
    let body = serde_json::to_string(&ask("hello")).unwrap();
    let send = |ct: Option<&'static str>, host: &'static str| {
        let mut r = g.http.post(format!("{}/v1/chat/completions", g.url)).header("host", host).body(body.clone());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    // What a cross-site form or `fetch` without a preflight can send.
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data"), None] {
        let r = send(ct, "localhost").await.unwrap();
        assert_eq!(r.status(), 415, "{ct:?}");
        assert_eq!(header(&r, "x-should-retry"), "false");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("application/json"), "{e}");
    }
    // A rebinding name is refused; the loopback names and the configured one are served.
    let r = send(Some("application/json"), "attacker.example:8080").await.unwrap();
    assert_eq!(r.status(), 403);
    for host in ["localhost:8080", "127.0.0.1", "[::1]:80", "gateway.internal"] {
        assert_eq!(send(Some("application/json; charset=utf-8"), host).await.unwrap().status(), 200, "{host}");
    }
}

#[tokio::test]
async fn count_tokens_counts_against_the_keys_limits() {
    let g = gateway_custom(BASE, false, |addr| {
        config(addr, "ok")
            .replace(
                "  - { name: plain,",
                "  - { name: slow, key_sha256: SLOW, limits: { rpm: 2 } }\n  - { name: plain,",
            )
            .replace("SLOW", &crate::gateway_support::sha("sk-slow"))
    })
    .await;
    let count = || {
        g.post("/v1/messages/count_tokens", Some("sk-slow"))
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "count me"}]}))
            .send()
    };
    assert_eq!(count().await.unwrap().status(), 200);
    assert_eq!(count().await.unwrap().status(), 200);
    let r = count().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(!header(&r, "retry-after").is_empty());
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error", "in Anthropic's shape: {e}");
}

#[tokio::test]
async fn an_http2_connection_that_only_sends_pings_is_closed_when_idle() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = gateway_custom(BASE, false, |addr| config(addr, "ok")).await;
    let mut sock = tokio::net::TcpStream::connect(g.running.addr).await.unwrap();
    // The preface, an empty SETTINGS frame, then a PING every 100 ms (the idle timeout is 500 ms).
    sock.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let (mut read, mut write) = sock.into_split();
    let pinger = tokio::spawn(async move {
        for i in 0u8..40 {
            let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, i, 0, 0, 0, 0, 0, 0, 0];
            if write.write_all(&ping).await.is_err() {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        40
    });
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the pinging connection was still open after 3 s");
    assert!(started.elapsed() >= Duration::from_millis(400), "closed only once idle: {:?}", started.elapsed());
    pinger.abort();
}

#[test]
fn formatting_a_policy_with_lone_carriage_returns_is_idempotent() {
    // Found by the roundtrip_fmt fuzz target: comments and blank lines made of `\r`.
    let data =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/roundtrip_fmt_lone_cr"))
            .unwrap();
    // A lone `\r` ends a comment, as it ends a line in editors: the text after it is code.
    for text in [std::str::from_utf8(&data).unwrap(), "# a comment\rdefault { then gpt-4o }\r# another\r"] {
        if yardmaster::policy::syntax::parse(0, text).is_err() {
            continue;
        }
        let once = yardmaster::policy::fmt::format_source(text).unwrap();
        let twice = yardmaster::policy::fmt::format_source(&once).unwrap();
        assert_eq!(once, twice);
    }
    let formatted = yardmaster::policy::fmt::format_source("# a comment\rdefault { then gpt-4o }\r").unwrap();
    assert_eq!(formatted, "# a comment\ndefault {\n  then gpt-4o\n}\n");
}
