//! The Anthropic Messages door (SPEC §12) against a real gateway and the fake OpenAI-compatible
//! upstream: what the door sends on (the internal chat body), its reply, and malformed bodies and
//! upstream failures answered in Anthropic's error shape with the right status, never a 500.

use serde_json::{json, Value};

use crate::gateway_support::{gateway, header};

async fn post(g: &crate::gateway_support::Gateway, key: &str, body: &str) -> (u16, String, Value) {
    let r = g
        .http
        .post(format!("{}/v1/messages", g.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = header(&r, "x-should-retry");
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_message_reaches_the_upstream_as_chat_and_comes_back_as_a_message() {
    let g = gateway("ok", false).await;
    let body = json!({"model": "ok-model", "max_tokens": 20, "system": "Be brief.", "stop_sequences": ["END"],
        "messages": [{"role": "user", "content": "hello"}]});
    let (status, _, v) = post(&g, "sk-plain", &body.to_string()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["type"].as_str(), v["role"].as_str(), v["model"].as_str()),
        (Some("message"), Some("assistant"), Some("ok-model"))
    );
    assert_eq!(v["content"][0]["type"], "text");
    assert!(v["usage"]["input_tokens"].as_u64().is_some() && v["stop_reason"] == "end_turn", "{v}");
    let sent = g.up.bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!((sent["max_tokens"].clone(), sent["stop"].clone()), (json!(20), json!(["END"])));
    // A Bearer token works as well as `x-api-key`.
    let r = g.post("/v1/messages", Some("sk-plain")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    g.running.shutdown().await;
}

/// Claude Code puts `role: "system"` messages among the turns and checks the base URL with
/// `HEAD /`: the system text joins the prompt at its place, and `/` answers 200.
#[tokio::test]
async fn system_messages_among_the_turns_keep_their_place_and_head_slash_answers() {
    let g = gateway("ok", false).await;
    let body = json!({"model": "ok-model", "max_tokens": 20, "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": "hello"},
            {"role": "system", "content": [{"type": "text", "text": "Now in French."}]},
            {"role": "user", "content": "again"}]});
    let (status, _, v) = post(&g, "sk-plain", &body.to_string()).await;
    assert_eq!(status, 200, "{v}");
    let sent = g.up.bodies.lock().unwrap().last().cloned().unwrap();
    let roles: Vec<&str> = sent["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "system", "user"], "{sent}");
    assert_eq!(sent["messages"][2]["content"], "Now in French.");
    // Claude Code's `?beta=true` changes nothing.
    let r = g
        .http
        .post(format!("{}/v1/messages?beta=true", g.url))
        .header("x-api-key", "sk-plain")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let head = g.http.head(format!("{}/", g.url)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    g.running.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_and_failures_get_anthropics_error_shape() {
    let g = gateway("ok", false).await;
    let cases = [
        ("{not json", 400, "invalid_request_error"),
        ("[1, 2]", 400, "invalid_request_error"),
        (r#"{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}"#, 400, "invalid_request_error"),
        (r#"{"model": "auto", "max_tokens": 0, "messages": []}"#, 400, "invalid_request_error"),
        (r#"{"model": "auto", "max_tokens": 5, "messages": "hi"}"#, 400, "invalid_request_error"),
        (
            r#"{"model": "auto", "max_tokens": 5, "messages": [{"role": "tool", "content": "hi"}]}"#,
            400,
            "invalid_request_error",
        ),
        (
            r#"{"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}"#,
            400,
            "invalid_request_error",
        ),
        (
            r#"{"model": "auto", "max_tokens": 5, "tool_choice": {"type": "maybe"}, "messages": [{"role": "user", "content": "hi"}]}"#,
            400,
            "invalid_request_error",
        ),
        (
            r#"{"model": "no-such-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}"#,
            404,
            "not_found_error",
        ),
        (r#"{"model": "fail500", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}"#, 502, "api_error"),
    ];
    for (body, status, kind) in cases {
        let (s, retry, v) = post(&g, "sk-plain", body).await;
        assert_eq!(
            (s, v["type"].as_str(), v["error"]["type"].as_str()),
            (status, Some("error"), Some(kind)),
            "{body}: {v}"
        );
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(retry, if status >= 500 { "true" } else { "false" }, "{body}");
    }
    let (s, _, v) = post(&g, "sk-wrong", r#"{"model": "auto", "max_tokens": 5, "messages": []}"#).await;
    assert_eq!((s, v["error"]["type"].as_str()), (401, Some("authentication_error")));
    g.running.shutdown().await;
}

/// Moderations (SPEC §12): routed by `request.endpoint == "moderations"` to models that serve
/// them; an OpenAI-compatible provider passes the request through, and the mock flags its words.
#[tokio::test]
async fn moderations_pass_through_or_are_flagged_by_the_mock() {
    let policy = "rule \"mod\" {\n  when request.endpoint == \"moderations\" and header(\"x-test\") == \"up\"\n  then up-mod\n}\n\
                  rule \"mock mod\" {\n  when request.endpoint == \"moderations\"\n  then mock-mod\n}\n\ndefault { then ok-model }\n";
    let g = crate::gateway_support::gateway_custom(policy, false, |addr| {
        crate::gateway_support::config(addr, "ok")
            .replace("providers:\n", "providers:\n  mocky: { kind: mock, latency: 0ms }\n")
            .replace(
                "models:\n",
                "models:\n  up-mod: { provider: up, id: omni-moderation-latest, endpoint: moderations }\n  \
             mock-mod: { provider: mocky, id: m, endpoint: moderations }\n",
            )
    })
    .await;
    let r = g
        .post("/v1/moderations", Some("sk-plain"))
        .header("x-test", "up")
        .json(&json!({"input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "x-yardmaster-model")), (200, "up-mod".to_string()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["results"][0]["flagged"], false, "{v}");
    let sent = g.up.bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        sent,
        json!({"model": "omni-moderation-latest", "input": "hello"}),
        "the upstream id, the input as sent"
    );
    let r = g
        .post("/v1/moderations", Some("sk-plain"))
        .json(&json!({"input": ["I hate Mondays", "a calm day", "Bomb threat"]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let flagged: Vec<bool> = v["results"].as_array().unwrap().iter().map(|r| r["flagged"].as_bool().unwrap()).collect();
    assert_eq!(flagged, [true, false, true], "{v}");
    assert_eq!(
        (v["results"][0]["categories"]["hate"].as_bool(), v["results"][2]["categories"]["violence"].as_bool()),
        (Some(true), Some(true))
    );
    let r = g.post("/v1/moderations", Some("sk-plain")).json(&json!({"input": ""})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    g.running.shutdown().await;
}

/// Model families (SPEC §12): `up/*` stands for every name with the prefix, reached through
/// `requested`, with the upstream id after the prefix and the family's prices.
#[tokio::test]
async fn a_family_passes_the_rest_of_the_name_upstream_at_its_prices() {
    let g = crate::gateway_support::gateway_custom(crate::gateway_support::POLICY, false, |addr| {
        crate::gateway_support::config(addr, "ok")
            .replace(
                "models:\n",
                "models:\n  up/*: { provider: up, price: { input: 1, output: 2 }, context: 100000 }\n",
            )
            .replace(
                "  - { name: plain,",
                &format!(
                    "  - {{ name: fam, key_sha256: {}, models: [\"up/*\"] }}\n  - {{ name: plain,",
                    crate::gateway_support::sha("sk-fam")
                ),
            )
    })
    .await;
    let ask = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let r = g.post("/v1/chat/completions", Some("sk-plain")).json(&ask("up/premium")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        (header(&r, "x-yardmaster-model"), header(&r, "x-yardmaster-upstream-model")),
        ("up/premium".into(), "premium".into())
    );
    assert!(header(&r, "x-yardmaster-cost-usd").parse::<f64>().unwrap() > 0.0, "priced by the family");
    assert_eq!(g.up.bodies.lock().unwrap().last().unwrap()["model"], "premium");
    assert_eq!(g.up.calls("premium"), 1);
    // A key whose allowlist names the family may use its names, and no others.
    let r = g.post("/v1/chat/completions", Some("sk-fam")).json(&ask("up/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = g.post("/v1/chat/completions", Some("sk-fam")).json(&ask("premium-model")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // A name under no family is still a 404.
    let r = g.post("/v1/chat/completions", Some("sk-plain")).json(&ask("other/x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // /v1/models lists the family once.
    let v: Value =
        g.http.get(format!("{}/v1/models", g.url)).bearer_auth("sk-fam").send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["auto", "up/*"]);
    g.running.shutdown().await;
}

#[test]
fn a_family_with_an_id_or_a_stray_star_is_a_config_error() {
    let base = "providers:\n  up: { kind: mock }\nmodels:\n";
    for (entry, says) in [
        ("  up/*: { provider: up, id: x }\n", "a family has no `id`"),
        ("  up*: { provider: up }\n", "only for a family"),
    ] {
        let e = yardmaster::config::parse(std::path::Path::new("y.yaml"), &format!("{base}{entry}")).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
    let ok = yardmaster::config::parse(std::path::Path::new("y.yaml"), &format!("{base}  up/*: {{ provider: up }}\n"))
        .unwrap();
    assert_eq!(ok.catalog().family_of("up/m1").map(|m| m.upstream_id), Some("m1".to_string()));
    assert!(ok.catalog().by_name("up/*").is_none(), "a family is not a model of its own");
}
