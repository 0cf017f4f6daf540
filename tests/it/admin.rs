//! The admin endpoints behind the page (SPEC §13): per-rule hits, model health, recent reloads,
//! and keys made at run time: create (the secret shown once, only its SHA-256 stored), use,
//! update, expire and revoke; config keys listed but immutable; run-time keys kept in the
//! ledger across a restart; and every admin endpoint refusing a request without the admin key.

use std::time::Duration;

use serde_json::{json, Value};

use crate::gateway_support::{gateway, msg, start_in, Gateway};

async fn get(g: &Gateway, path: &str) -> Value {
    let r = g.http.get(format!("{}{path}", g.url)).bearer_auth("sk-admin").send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn create(g: &Gateway, body: Value) -> reqwest::Response {
    g.post("/admin/keys", Some("sk-admin")).json(&body).send().await.unwrap()
}

async fn chat_status(g: &Gateway, key: &str, body: Value) -> u16 {
    g.post("/v1/chat/completions", Some(key)).json(&body).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_admin_endpoint_refuses_a_request_without_the_admin_key_and_the_page_holds_no_data() {
    let g = gateway("ok", false).await;
    let gets = ["/admin/policy", "/admin/rules", "/admin/models", "/admin/keys", "/admin/reloads"];
    for path in gets {
        for key in [None, Some("sk-team-a"), Some("wrong")] {
            let mut r = g.http.get(format!("{}{path}", g.url));
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with {key:?}");
            assert_eq!(r.headers()["x-should-retry"], "false");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["type"], "authentication_error", "{path}: {v}");
        }
    }
    let posts = ["/admin/reload", "/admin/rollback", "/admin/explain", "/admin/keys"];
    for path in posts {
        let r = g.post(path, Some("sk-team-a")).json(&json!({"name": "x"})).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    for (method, path) in
        [(reqwest::Method::PATCH, "/admin/keys/key_x"), (reqwest::Method::DELETE, "/admin/keys/key_x")]
    {
        let r = g.http.request(method, format!("{}{path}", g.url)).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    // The page is public, and has nothing in it but the page: no rule, key or version.
    let r = g.http.get(format!("{}/admin/", g.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert_eq!(
        csp,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    );
    let html = r.text().await.unwrap();
    let version = g.admin_policy().await["version"].as_str().unwrap().to_string();
    for secret in [version.as_str(), "team-a", "premium", "sk-admin"] {
        assert!(!html.contains(secret), "the page shows `{secret}`");
    }
    assert!(!html.contains("<script>") && !html.contains(" style="), "no inline script or style");
    for asset in ["app.js", "app.css"] {
        let r = g.http.get(format!("{}/admin/assets/{asset}", g.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(r.headers().contains_key("content-security-policy"));
    }
    let r = g.http.get(format!("{}/admin/assets/other.js", g.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn rules_models_and_reloads_show_what_the_traffic_did() {
    let g = gateway("ok", false).await;
    for _ in 0..3 {
        assert_eq!(g.chat(msg("hello"), "sk-plain", None).await.status(), 200);
    }
    for _ in 0..6 {
        assert_eq!(g.chat(msg("hello"), "sk-plain", Some("breaker")).await.status(), 200);
    }
    let rules = get(&g, "/admin/rules").await;
    let rule = |name: &str| rules["rules"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap().clone();
    let default = rule("default");
    assert_eq!(default["hits"], 3, "{default}");
    assert_eq!(default["last_hour"].as_array().unwrap().len(), 60);
    assert_eq!(default["last_hour"][59], 3, "this minute's hits are the last slot");
    assert_eq!(rule("breaker")["hits"], 6);
    assert_eq!(rule("premium")["hits"], 0);
    assert!(rule("breaker")["line"].as_u64().unwrap() > 1);
    assert!(rules["files"][0]["text"].as_str().unwrap().contains("rule \"breaker\""));
    assert_eq!(rules["version"], g.admin_policy().await["version"]);

    // fail500 failed six times: its breaker opened (the chain went on to ok-model).
    let models = get(&g, "/admin/models").await;
    let model = |name: &str| models["data"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap().clone();
    assert_eq!(model("fail500")["breaker"], "open", "{models}");
    assert_eq!(model("fail500")["healthy"], false);
    assert_eq!(model("ok-model")["healthy"], true);
    assert_eq!(model("ok-model")["requests"], 9);
    assert_eq!(model("ok-model")["errors"], 0);
    assert!(model("ok-model")["mean_latency_ms"].as_f64().unwrap() > 0.0);
    // Counted per attempt: fail500 only ever failed first (ok-model answered each request), and
    // its five calls before the breaker opened are five errors, not zero.
    assert_eq!(model("fail500")["requests"], 5, "{models}");
    assert_eq!(model("fail500")["errors"], 5);
    assert_eq!(model("fail500")["error_rate"], 1.0);

    assert_eq!(get(&g, "/admin/reloads").await["data"], json!([]));
    let r = g.post("/admin/reload", Some("sk-admin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    std::fs::write(g.dir.path().join("main.route"), "rule {").unwrap();
    let r = g.post("/admin/reload", Some("sk-admin")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let reloads = get(&g, "/admin/reloads").await["data"].clone();
    assert_eq!(reloads.as_array().unwrap().len(), 2, "{reloads}");
    assert_eq!(reloads[0]["ok"], false, "newest first: {reloads}");
    assert!(reloads[0]["error"].as_str().unwrap().contains("does not load"));
    assert_eq!(reloads[1]["ok"], true);
}

#[tokio::test]
async fn a_key_made_at_run_time_works_at_once_and_a_revoked_one_never_again() {
    let g = gateway("ok", false).await;
    let r = create(
        &g,
        json!({"name": "carol", "tier": "premium", "budget": {"usd": 5, "per": "day"},
        "limits": {"rpm": 100}, "models": ["ok-model", "premium-model"]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    let secret = made["key"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("ym-") && secret.len() > 40, "{secret}");
    assert_eq!(made["prefix"], &secret[..7]);

    // It works, with its tier (the premium rule) and its allowlist.
    let r = g.chat(msg("hello"), &secret, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-yardmaster-rule"], "premium");
    assert_eq!(
        chat_status(&g, &secret, json!({"model": "code-model", "messages": [{"role": "user", "content": "x"}]})).await,
        403
    );
    let me: Value =
        g.http.get(format!("{}/v1/key", g.url)).bearer_auth(&secret).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["name"], "carol");
    assert!(me["spend_usd"].as_f64().unwrap() > 0.0);

    // The list shows it with its spend, never its secret; the config's keys are listed too.
    let list = get(&g, "/admin/keys").await;
    assert!(!list.to_string().contains(&secret), "the secret is shown once only");
    let carol = list["data"].as_array().unwrap().iter().find(|k| k["name"] == "carol").unwrap().clone();
    assert_eq!(carol["source"], "runtime");
    assert_eq!(carol["state"], "active");
    assert!(carol["spend_usd"].as_f64().unwrap() > 0.0);
    let team_a = list["data"].as_array().unwrap().iter().find(|k| k["name"] == "team-a").unwrap().clone();
    assert_eq!(team_a["source"], "config");

    // An update takes effect on the next request: a tier change moves it off the premium rule.
    let r = g
        .http
        .patch(format!("{}/admin/keys/{id}", g.url))
        .bearer_auth("sk-admin")
        .json(&json!({"tier": null, "models": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = g.chat(msg("hello"), &secret, None).await;
    assert_eq!(r.headers()["x-yardmaster-rule"], "default");

    // Revoked: 401 at once, and it stays listed as revoked.
    let r = g.http.delete(format!("{}/admin/keys/{id}", g.url)).bearer_auth("sk-admin").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = g.chat(msg("hello"), &secret, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let list = get(&g, "/admin/keys").await;
    let carol = list["data"].as_array().unwrap().iter().find(|k| k["name"] == "carol").unwrap().clone();
    assert_eq!(carol["state"], "revoked");
    assert!(carol["revoked_at"].is_string());
}

#[tokio::test]
async fn config_keys_cannot_be_changed_and_bad_bodies_are_refused_with_the_field_named() {
    let g = gateway("ok", false).await;
    let r = create(&g, json!({"name": "team-a"})).await;
    assert_eq!(r.status(), 409, "a config key's name is taken");
    assert_eq!(r.headers()["x-should-retry"], "false", "retrying cannot free the name");
    let r = g.http.delete(format!("{}/admin/keys/team-a", g.url)).bearer_auth("sk-admin").send().await.unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "key_in_config", "{v}");
    let r = g
        .http
        .patch(format!("{}/admin/keys/team-a", g.url))
        .bearer_auth("sk-admin")
        .json(&json!({"tier": "free"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(g.chat(msg("hello"), "sk-team-a", None).await.headers()["x-yardmaster-rule"], "premium");
    let r = g.http.delete(format!("{}/admin/keys/key_nope", g.url)).bearer_auth("sk-admin").send().await.unwrap();
    assert_eq!(r.status(), 404);

    for (body, param) in [
        (json!({"tier": "x"}), "name"),
        (json!({"name": "d", "budget": {"usd": -1}}), "budget"),
        (json!({"name": "d", "budget": {"dollars": 1}}), "budget"),
        (json!({"name": "d", "expires_at": "tomorrow"}), "expires_at"),
        (json!({"name": "d", "owner": "me"}), "owner"),
        (json!({"name": ""}), "name"),
    ] {
        let r = create(&g, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    let made: Value = create(&g, json!({"name": "dave"})).await.json().await.unwrap();
    let r = create(&g, json!({"name": "dave"})).await;
    assert_eq!(r.status(), 409, "two live keys never share a name (their spend is kept by name)");
    assert!(made["key"].is_string());
}

#[tokio::test]
async fn an_expired_key_is_refused_and_run_time_keys_outlive_a_restart_in_the_ledger() {
    let g = gateway("ok", false).await;
    let past: Value =
        create(&g, json!({"name": "old", "expires_at": "2020-01-01T00:00:00Z"})).await.json().await.unwrap();
    let r = g.chat(msg("hello"), past["key"].as_str().unwrap(), None).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "expired_api_key");
    let soon = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let kept: Value = create(&g, json!({"name": "kept", "expires_at": soon})).await.json().await.unwrap();
    let secret = kept["key"].as_str().unwrap().to_string();
    assert_eq!(g.chat(msg("hello"), &secret, None).await.status(), 200);

    let Gateway { dir, running, http, .. } = g;
    running.shutdown().await;
    let db = std::fs::read(dir.path().join("yardmaster.db")).unwrap();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret itself is never stored");
    let again = start_in(dir.path(), false).await;
    let url = format!("http://{}", again.addr);
    let r =
        http.post(format!("{url}/v1/chat/completions")).bearer_auth(&secret).json(&msg("hello")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the key is back after the restart");
    again.shutdown().await;
}

#[tokio::test]
async fn the_first_run_time_key_closes_an_open_gateway() {
    let g = crate::gateway_support::gateway_custom(crate::gateway_support::POLICY, false, |addr| {
        let c = crate::gateway_support::config(addr, "ok");
        let start = c.find("keys:\n").unwrap();
        let end = c.find("admin:").unwrap();
        format!("{}{}", &c[..start], &c[end..])
    })
    .await;
    assert_eq!(g.post("/v1/chat/completions", None).json(&msg("hi")).send().await.unwrap().status(), 200);
    let made: Value = create(&g, json!({"name": "first"})).await.json().await.unwrap();
    assert_eq!(g.post("/v1/chat/completions", None).json(&msg("hi")).send().await.unwrap().status(), 401);
    let k = made["key"].as_str().unwrap();
    assert_eq!(g.post("/v1/chat/completions", Some(k)).json(&msg("hi")).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
