//! The response cache (SPEC §10) against a real gateway and the fake upstream on 127.0.0.1:
//! misses then hits, streamed hits, scopes (key, tier, never across tiers), `Cache-Control`,
//! keys with `cache: false`, errors never stored, expiry, eviction by bytes, identical requests
//! coalesced into one upstream call, what the ledger and `/metrics` record, and semantic hits on
//! the mock's embeddings.

use std::time::Duration;

use serde_json::{json, Value};

use crate::gateway_support::{config, gateway_custom, header, sha, Gateway};

const POLICY: &str = r#"
rule "faq" {
  when header("x-test") == "faq"
  then ok-model
  cache 1h
}

rule "docs" {
  when header("x-test") == "docs"
  then ok-model
  cache 1h shared
}

rule "brief" {
  when header("x-test") == "brief"
  then ok-model
  cache 1s
}

rule "broken" {
  when header("x-test") == "broken"
  then fail500
  cache 1h
}

rule "support" {
  when header("x-test") == "support"
  then ok-model
  cache 1h similar 90% using mock-embed
}

rule "together" {
  when header("x-test") == "together"
  then waiter
  cache 1h
}

default { then ok-model }
"#;

async fn cached_gateway(extra: &str) -> Gateway {
    let extra = extra.to_string();
    gateway_custom(POLICY, false, move |addr| {
        config(addr, "ok")
            .replace("providers:\n", "providers:\n  mocky: { kind: mock, latency: 0ms }\n")
            .replace(
                "models:\n",
                "models:\n  waiter: { provider: up, id: wait300, price: { input: 1, output: 2 }, context: 100000 }\n  \
                 mock-embed: { provider: mocky, id: e, endpoint: embeddings, price: { input: 10 }, context: 8000 }\n",
            )
            .replace(
                "  - { name: plain,",
                &format!(
                    "  - {{ name: team-b, key_sha256: {}, tier: premium }}\n  - {{ name: nocache, key_sha256: {}, cache: false }}\n  - {{ name: plain,",
                    sha("sk-team-b"),
                    sha("sk-nocache")
                ),
            )
            + &extra
    })
    .await
}

fn ask(text: &str) -> Value {
    json!({"model": "auto", "messages": [{"role": "user", "content": text}]})
}

async fn send(g: &Gateway, rule: &str, key: &str, body: &Value, control: Option<&str>) -> reqwest::Response {
    let mut r = g.post("/v1/chat/completions", Some(key)).header("x-test", rule).json(body);
    if let Some(c) = control {
        r = r.header("cache-control", c);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn a_repeated_request_is_answered_from_the_cache_streamed_or_not() {
    let g = cached_gateway("").await;
    let body = ask("What are your opening hours?");
    let first = send(&g, "faq", "sk-team-a", &body, None).await;
    assert_eq!((first.status().as_u16(), header(&first, "x-yardmaster-cache")), (200, "miss".into()));
    let first: Value = first.json().await.unwrap();
    assert_eq!(g.up.calls("ok"), 1);
    let hit = send(&g, "faq", "sk-team-a", &body, None).await;
    assert_eq!(header(&hit, "x-yardmaster-cache"), "hit");
    assert_eq!(header(&hit, "x-yardmaster-attempts"), "0");
    assert_eq!(header(&hit, "x-yardmaster-rule"), "faq");
    assert_eq!(header(&hit, "x-yardmaster-model"), "ok-model");
    assert_eq!(header(&hit, "x-yardmaster-cost-usd"), "0.000000");
    let hit: Value = hit.json().await.unwrap();
    assert_eq!(hit["choices"], first["choices"]);
    assert_eq!(hit["usage"]["cost"], 0.0);
    assert_eq!(g.up.calls("ok"), 1, "the hit did not reach the upstream");
    // Streamed, the same entry is an ordinary event stream.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = send(&g, "faq", "sk-team-a", &streamed, None).await;
    assert_eq!(header(&r, "x-yardmaster-cache"), "hit");
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let mut content = String::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(c) = v.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            content.push_str(c);
        }
    }
    assert_eq!(content, first["choices"][0]["message"]["content"].as_str().unwrap());
    assert!(text.contains("\"finish_reason\":\"stop\"") && text.contains("\"usage\""), "{text}");
    assert_eq!(g.up.calls("ok"), 1);
    // Another question is another entry.
    assert_eq!(header(&send(&g, "faq", "sk-team-a", &ask("Where are you?"), None).await, "x-yardmaster-cache"), "miss");
}

#[tokio::test]
async fn entries_belong_to_the_key_or_with_shared_to_the_tier_and_never_cross_tiers() {
    let g = cached_gateway("").await;
    let body = ask("A question about the docs");
    assert_eq!(header(&send(&g, "faq", "sk-team-a", &body, None).await, "x-yardmaster-cache"), "miss");
    // Another key of the same tier does not see a key's own entries.
    assert_eq!(header(&send(&g, "faq", "sk-team-b", &body, None).await, "x-yardmaster-cache"), "miss");
    // `shared`: the keys of one tier share, another tier does not.
    assert_eq!(header(&send(&g, "docs", "sk-team-a", &body, None).await, "x-yardmaster-cache"), "miss");
    assert_eq!(header(&send(&g, "docs", "sk-team-b", &body, None).await, "x-yardmaster-cache"), "hit");
    assert_eq!(header(&send(&g, "docs", "sk-batch", &body, None).await, "x-yardmaster-cache"), "miss");
    assert_eq!(header(&send(&g, "docs", "sk-plain", &body, None).await, "x-yardmaster-cache"), "miss");
}

#[tokio::test]
async fn clients_and_keys_can_bypass_it_and_errors_are_never_stored() {
    let g = cached_gateway("").await;
    let body = ask("Bypass me");
    // no-store: neither looked up nor stored.
    let r = send(&g, "faq", "sk-team-a", &body, Some("no-store")).await;
    assert_eq!(header(&r, "x-yardmaster-cache"), "bypass");
    assert_eq!(header(&send(&g, "faq", "sk-team-a", &body, None).await, "x-yardmaster-cache"), "miss");
    // no-cache: not looked up, but stored again.
    assert_eq!(header(&send(&g, "faq", "sk-team-a", &body, Some("no-cache")).await, "x-yardmaster-cache"), "miss");
    assert_eq!(header(&send(&g, "faq", "sk-team-a", &body, None).await, "x-yardmaster-cache"), "hit");
    assert_eq!(g.up.calls("ok"), 3);
    // A key with `cache: false` never uses it.
    for _ in 0..2 {
        assert_eq!(header(&send(&g, "faq", "sk-nocache", &body, None).await, "x-yardmaster-cache"), "bypass");
    }
    assert_eq!(g.up.calls("ok"), 5);
    // A failure is not an answer to keep.
    for _ in 0..2 {
        let r = send(&g, "broken", "sk-team-a", &body, None).await;
        assert_eq!((r.status().as_u16(), header(&r, "x-yardmaster-cache")), (502, "miss".into()));
    }
    assert_eq!(g.up.calls("fail500"), 2);
}

#[tokio::test]
async fn entries_expire_with_their_rule_and_the_bytes_are_bounded() {
    let g = cached_gateway("cache: { max_bytes: 4KiB }\n").await;
    let body = ask("Brief");
    assert_eq!(header(&send(&g, "brief", "sk-team-a", &body, None).await, "x-yardmaster-cache"), "miss");
    assert_eq!(header(&send(&g, "brief", "sk-team-a", &body, None).await, "x-yardmaster-cache"), "hit");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(header(&send(&g, "brief", "sk-team-a", &body, None).await, "x-yardmaster-cache"), "miss");
    // Far more answers than 4 KiB hold, in a quick burst: the oldest go, and the bytes stay within
    // the bound from each insert on (a burst once held, and served, more until housekeeping ran).
    for i in 0..40 {
        send(&g, "faq", "sk-team-a", &ask(&format!("question number {i}")), None).await;
    }
    // Asked again, newest first: only what the bound holds is served from the cache.
    let mut hits = 0;
    for i in (0..40).rev() {
        let r = send(&g, "faq", "sk-team-a", &ask(&format!("question number {i}")), None).await;
        hits += usize::from(header(&r, "x-yardmaster-cache") == "hit");
    }
    assert!(hits > 0 && hits <= 4096 / 400, "{hits} hits from entries of at least 400 bytes in 4 KiB");
    let metrics = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    let bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("yardmaster_cache_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(bytes > 0 && bytes <= 4096, "{bytes} bytes held");
}

#[tokio::test]
async fn identical_requests_at_once_make_one_upstream_call() {
    let g = cached_gateway("").await;
    let body = ask("Everyone asks this at once");
    let mut all = Vec::new();
    for _ in 0..32 {
        let (http, url, body) = (g.http.clone(), g.url.clone(), body.clone());
        all.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth("sk-team-a")
                .header("x-test", "together")
                .json(&body)
                .send()
                .await
                .unwrap();
            let verdict = header(&r, "x-yardmaster-cache");
            let v: Value = r.json().await.unwrap();
            (verdict, v["choices"][0]["message"]["content"].as_str().unwrap_or("").to_string())
        }));
    }
    let mut verdicts = Vec::new();
    for t in all {
        let (verdict, content) = t.await.unwrap();
        assert_eq!(content, "hello from wait300");
        verdicts.push(verdict);
    }
    assert_eq!(g.up.calls("wait300"), 1, "{verdicts:?}");
    assert_eq!(verdicts.iter().filter(|v| *v == "miss").count(), 1, "{verdicts:?}");
}

#[tokio::test]
async fn the_ledger_and_metrics_record_hits_and_what_they_saved() {
    let g = cached_gateway("").await;
    let body = ask("Count me");
    let miss = send(&g, "faq", "sk-team-a", &body, None).await;
    let miss_id = header(&miss, "x-request-id");
    let cost: f64 = header(&miss, "x-yardmaster-cost-usd").parse().unwrap();
    assert!(cost > 0.0);
    let hit = send(&g, "faq", "sk-team-a", &body, None).await;
    let hit_id = header(&hit, "x-request-id");
    let db = g.dir.path().join("yardmaster.db");
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = yardmaster::accounting::ledger::read_all(&db).unwrap_or_default();
        if rows.iter().any(|r| r.id == hit_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let row = |id: &str| rows.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no row for {id}"));
    assert_eq!((row(&miss_id).cache.as_deref(), row(&miss_id).saved_micros), (Some("miss"), 0));
    let h = row(&hit_id);
    assert_eq!((h.cache.as_deref(), h.cost_micros, h.status), (Some("hit"), 0, 200));
    assert_eq!(h.saved_micros, row(&miss_id).cost_micros);
    let key: Value =
        g.http.get(format!("{}/v1/key", g.url)).bearer_auth("sk-team-a").send().await.unwrap().json().await.unwrap();
    assert_eq!(key["cache"]["hits"], 1, "{key}");
    assert!((key["cache"]["saved_usd"].as_f64().unwrap() - cost).abs() < 1e-9, "{key}");
    let metrics = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("yardmaster_cache_requests_total{rule=\"faq\",result=\"hit\"} 1"), "{metrics}");
    assert!(metrics.contains("yardmaster_cache_requests_total{rule=\"faq\",result=\"miss\"} 1"), "{metrics}");
    let saved = metrics.lines().find_map(|l| l.strip_prefix("yardmaster_cache_saved_usd_total ")).unwrap();
    assert!((saved.trim().parse::<f64>().unwrap() - cost).abs() < 1e-9, "{saved} against {cost}");
}

#[tokio::test]
async fn a_streamed_miss_is_stored_for_both_kinds_of_request() {
    let g = cached_gateway("").await;
    let body = json!({"model": "auto", "stream": true, "messages": [{"role": "user", "content": "Stream me"}]});
    let r = send(&g, "faq", "sk-team-a", &body, None).await;
    assert_eq!(header(&r, "x-yardmaster-cache"), "miss");
    let first = r.text().await.unwrap();
    assert!(first.trim_end().ends_with("[DONE]"), "{first}");
    assert_eq!(g.up.calls("ok"), 1);
    // The same question, not streamed: the assembled answer.
    let plain = json!({"model": "auto", "messages": [{"role": "user", "content": "Stream me"}]});
    let r = send(&g, "faq", "sk-team-a", &plain, None).await;
    assert_eq!(header(&r, "x-yardmaster-cache"), "hit");
    let v: Value = r.json().await.unwrap();
    let mut streamed = String::new();
    for l in first.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|l| *l != "[DONE]") {
        let e: Value = serde_json::from_str(l).unwrap();
        streamed.push_str(e.pointer("/choices/0/delta/content").and_then(Value::as_str).unwrap_or(""));
    }
    assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some(streamed.as_str()), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(g.up.calls("ok"), 1);
}

#[tokio::test]
async fn admin_explain_shows_the_cache_decision() {
    let g = cached_gateway("").await;
    let r = g.post("/admin/explain", Some("sk-admin")).header("x-test", "docs").json(&ask("hi")).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["rule"], "docs");
    assert_eq!(v["cache"], json!({"kind": "exact", "ttl_s": 3600.0, "scope": "tier"}), "{v}");
    let r = g.post("/admin/explain", Some("sk-admin")).json(&ask("hi")).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(v.get("cache").is_none(), "the default has no cache: {v}");
}

fn with_system(system: &str, text: &str) -> Value {
    json!({"model": "auto", "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]})
}

async fn ledger_row(g: &Gateway, id: &str) -> yardmaster::accounting::ledger::Row {
    let db = g.dir.path().join("yardmaster.db");
    for _ in 0..200 {
        let rows = yardmaster::accounting::ledger::read_all(&db).unwrap_or_default();
        if let Some(r) = rows.into_iter().find(|r| r.id == id) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no ledger row for {id}")
}

#[tokio::test]
async fn a_close_enough_question_of_the_same_context_is_a_semantic_hit_charged_its_embedding() {
    let g = cached_gateway("").await;
    let question = "How do I reset the password of my account?";
    let first = send(&g, "support", "sk-team-a", &with_system("Be brief.", question), None).await;
    assert_eq!(header(&first, "x-yardmaster-cache"), "miss");
    assert_eq!(header(&first, "x-yardmaster-cache-similarity"), "");
    let first_cost: f64 = header(&first, "x-yardmaster-cost-usd").parse().unwrap();
    let first: Value = first.json().await.unwrap();
    assert_eq!(g.up.calls("ok"), 1);

    // One word more of eight: a cosine of 8/sqrt(8*9) = 0.943 on the mock's embeddings.
    let close = with_system("Be brief.", "How do I reset the password of my account please?");
    let hit = send(&g, "support", "sk-team-a", &close, None).await;
    assert_eq!(header(&hit, "x-yardmaster-cache"), "hit");
    let similarity: f64 = header(&hit, "x-yardmaster-cache-similarity").parse().unwrap();
    assert!((0.9..0.99).contains(&similarity), "{similarity}");
    assert_eq!(header(&hit, "x-yardmaster-cache-similarity").len(), 5, "three decimals");
    assert_eq!(header(&hit, "x-yardmaster-attempts"), "0");
    assert_eq!(header(&hit, "x-yardmaster-rule"), "support");
    // The hit costs its embedding call, and nothing else.
    let hit_cost: f64 = header(&hit, "x-yardmaster-cost-usd").parse().unwrap();
    assert!(hit_cost > 0.0 && hit_cost < first_cost, "{hit_cost} against {first_cost}");
    let hit_id = header(&hit, "x-request-id");
    let body: Value = hit.json().await.unwrap();
    assert_eq!(body["choices"], first["choices"]);
    assert!((body["usage"]["cost"].as_f64().unwrap() - hit_cost).abs() < 1e-9, "{body}");
    assert_eq!(g.up.calls("ok"), 1, "the semantic hit did not reach the upstream");
    let row = ledger_row(&g, &hit_id).await;
    assert_eq!((row.cache.as_deref(), row.cost_micros), (Some("hit"), (hit_cost * 1e6).round() as u64));
    assert!(row.saved_micros > 0);

    // Streamed, a close question is an ordinary event stream from the same entry.
    let mut streamed = with_system("Be brief.", "Please, how do I reset the password of my account?");
    streamed["stream"] = json!(true);
    let r = send(&g, "support", "sk-team-a", &streamed, None).await;
    assert_eq!(header(&r, "x-yardmaster-cache"), "hit");
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));

    // An unrelated question, another context, another key, or `no-cache`: misses.
    let unrelated = with_system("Be brief.", "What are your opening hours on Sunday?");
    assert_eq!(header(&send(&g, "support", "sk-team-a", &unrelated, None).await, "x-yardmaster-cache"), "miss");
    let other_context = with_system("Answer at length.", question);
    assert_eq!(header(&send(&g, "support", "sk-team-a", &other_context, None).await, "x-yardmaster-cache"), "miss");
    assert_eq!(header(&send(&g, "support", "sk-plain", &close, None).await, "x-yardmaster-cache"), "miss");
    let again = with_system("Be brief.", "How do I reset the password of my account, please?");
    assert_eq!(header(&send(&g, "support", "sk-team-a", &again, Some("no-cache")).await, "x-yardmaster-cache"), "miss");
    assert_eq!(g.up.calls("ok"), 5);
    // The same question again is the exact key's hit: no embedding, no cost.
    let exact = send(&g, "support", "sk-team-a", &with_system("Be brief.", question), None).await;
    assert_eq!(
        (header(&exact, "x-yardmaster-cache"), header(&exact, "x-yardmaster-cache-similarity")),
        ("hit".into(), "1.000".into())
    );
    assert_eq!(header(&exact, "x-yardmaster-cost-usd"), "0.000000");
}

#[tokio::test]
async fn a_shared_entry_is_never_served_to_a_key_that_may_not_use_the_model_that_answered_it() {
    let g = gateway_custom(POLICY, false, |addr| {
        config(addr, "ok")
            .replace("providers:\n", "providers:\n  mocky: { kind: mock, latency: 0ms }\n")
            .replace(
                "models:\n",
                "models:\n  waiter: { provider: up, id: wait300, context: 100000 }\n  mock-embed: { provider: mocky, id: e, endpoint: embeddings, context: 8000 }\n",
            )
            .replace(
                "  - { name: plain,",
                &format!("  - {{ name: narrow, key_sha256: {}, tier: premium, models: [premium-model] }}\n  - {{ name: plain,", sha("sk-narrow")),
            )
    })
    .await;
    let body = ask("Shared within the tier");
    assert_eq!(header(&send(&g, "docs", "sk-team-a", &body, None).await, "x-yardmaster-cache"), "miss");
    // The same tier, but `ok-model` is not on this key's list: uncached it is refused, and so is
    // the cached answer.
    let uncached = send(&g, "faq", "sk-narrow", &ask("not cached anywhere"), None).await;
    let refused = uncached.status();
    assert!(refused.is_client_error() || refused.is_server_error(), "{refused}");
    let r = send(&g, "docs", "sk-narrow", &body, None).await;
    assert_ne!(header(&r, "x-yardmaster-cache"), "hit");
    assert_eq!(r.status(), refused);
    assert_eq!(g.up.calls("ok"), 1, "nothing else reached the model");
}

#[tokio::test]
async fn a_streamed_answer_that_asked_for_logprobs_is_not_stored_without_them() {
    let g = cached_gateway("").await;
    let mut body = ask("With logprobs, please");
    body["logprobs"] = json!(true);
    body["stream"] = json!(true);
    for _ in 0..2 {
        let r = send(&g, "faq", "sk-team-a", &body, None).await;
        assert_eq!(header(&r, "x-yardmaster-cache"), "miss");
        let _ = r.text().await.unwrap();
    }
    // The same request, not streamed: its answer keeps the logprobs, and is stored.
    body["stream"] = json!(false);
    assert_eq!(header(&send(&g, "faq", "sk-team-a", &body, None).await, "x-yardmaster-cache"), "miss");
    assert_eq!(header(&send(&g, "faq", "sk-team-a", &body, None).await, "x-yardmaster-cache"), "hit");
    assert_eq!(g.up.calls("ok"), 3);
}

#[tokio::test]
async fn a_new_key_that_takes_a_revoked_keys_name_gets_neither_its_cache_nor_its_spend() {
    let g = cached_gateway("").await;
    let make = || async {
        let r = g
            .post("/admin/keys", Some("sk-admin"))
            .json(&json!({"name": "reused", "budget": {"usd": 10}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        (v["id"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string())
    };
    let spend = |secret: String| {
        let r = g.http.get(format!("{}/v1/key", g.url)).bearer_auth(secret).send();
        async move { r.await.unwrap().json::<Value>().await.unwrap()["spend_usd"].as_f64().unwrap() }
    };
    let (id, old) = make().await;
    let body = ask("Only for the first key");
    assert_eq!(header(&send(&g, "faq", &old, &body, None).await, "x-yardmaster-cache"), "miss");
    assert_eq!(header(&send(&g, "faq", &old, &body, None).await, "x-yardmaster-cache"), "hit");
    g.running.state.accounting.ledger.as_ref().unwrap().flush().await;
    assert!(spend(old.clone()).await > 0.0);
    let r = g.http.delete(format!("{}/admin/keys/{id}", g.url)).bearer_auth("sk-admin").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, new) = make().await;
    assert_eq!(spend(new.clone()).await, 0.0, "the new key starts afresh");
    assert_eq!(header(&send(&g, "faq", &new, &body, None).await, "x-yardmaster-cache"), "miss");
    // The revoked key keeps its own spend, apart.
    let listed: Value =
        g.http.get(format!("{}/admin/keys", g.url)).bearer_auth("sk-admin").send().await.unwrap().json().await.unwrap();
    let reused: Vec<&Value> = listed["data"].as_array().unwrap().iter().filter(|k| k["name"] == "reused").collect();
    assert_eq!(reused.len(), 2, "{listed}");
    assert!(reused.iter().any(|k| k["state"] == "revoked" && k["spend_usd"].as_f64().unwrap() > 0.0), "{listed}");
}
