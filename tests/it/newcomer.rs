//! What a newcomer meets first, against a real gateway on 127.0.0.1: discovery (`/v1/models` as
//! a key sees it, one model, the paths without `/v1`), readiness when no provider can serve,
//! a rollback to the live version, the 402 that says what was reserved, the validation OpenAI
//! makes, and the mock's tools, choices and embeddings.

use serde_json::{json, Value};

use crate::gateway_support::{gateway, gateway_custom, sha, Gateway, POLICY};

async fn get(g: &Gateway, path: &str, key: &str) -> (u16, Value) {
    let r = g.http.get(format!("{}{path}", g.url)).bearer_auth(key).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn models_are_listed_as_the_key_sees_them_with_and_without_v1() {
    let g = gateway("ok", false).await;
    let ids = |v: &Value| {
        v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    // `batch` may only name two models: the list shows those (and `auto`).
    let (status, v) = get(&g, "/v1/models", "sk-batch").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&v), ["auto", "ok-model", "embedder"]);
    let (_, all) = get(&g, "/models", "sk-plain").await;
    assert!(ids(&all).len() > 10 && ids(&all).contains(&"premium-model".to_string()), "{all}");
    // One model, as the list shows it; one the key may not name is not found.
    let (status, m) = get(&g, "/v1/models/ok-model", "sk-batch").await;
    assert_eq!((status, m["id"].as_str(), m["context_length"].as_u64()), (200, Some("ok-model"), Some(100_000)));
    let (status, e) = get(&g, "/v1/models/premium-model", "sk-batch").await;
    assert_eq!((status, e["error"]["code"].as_str()), (404, Some("model_not_found")));
    assert_eq!(get(&g, "/models/auto", "sk-batch").await.0, 200);
    // Chat and embeddings without the prefix.
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});
    let r = g.post("/chat/completions", Some("sk-plain")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r =
        g.post("/embeddings", Some("sk-batch")).json(&json!({"model": "embedder", "input": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn not_ready_while_no_provider_can_serve() {
    let g = gateway_custom("default { then ok-model }\n", false, |_| {
        "listen: 127.0.0.1:0\npolicy: main.route\nproviders:\n  up: { kind: openai, base_url: \"http://127.0.0.1:9/v1\", api_key_env: YM_TEST_NEVER_SET_KEY }\nmodels:\n  ok-model: { provider: up, context: 1000 }\n".to_string()
    })
    .await;
    let r = g.http.get(format!("{}/readyz", g.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("no provider can serve") && text.contains("YM_TEST_NEVER_SET_KEY is not set"), "{text}");
    // With a provider that can serve, it is ready.
    let ok = gateway("ok", false).await;
    assert_eq!(ok.http.get(format!("{}/readyz", ok.url)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_rollback_to_the_live_version_says_so() {
    let g = gateway("ok", false).await;
    let admin = |path: &str| g.http.post(format!("{}{path}", g.url)).bearer_auth("sk-admin").send();
    let live = g.admin_policy().await["version"].clone();
    assert_eq!(admin("/admin/reload").await.unwrap().status(), 200);
    // The reload kept the same version, so rolling back would change nothing, and says so.
    let r = admin("/admin/rollback").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["rolled_back"], false, "{v}");
    assert_eq!(v["version"], live);
    assert!(v["message"].as_str().unwrap().contains("already live"), "{v}");
    assert_eq!(g.admin_policy().await["version"], live);
}

#[tokio::test]
async fn a_402_says_what_was_reserved_and_how_to_reserve_less() {
    let g = gateway_custom(POLICY, false, |addr| {
        crate::gateway_support::config(addr, "ok").replace(
            "  - { name: plain,",
            &format!(
                "  - {{ name: small, key_sha256: {}, budget: {{ usd: 0.001, per: day }} }}\n  - {{ name: plain,",
                sha("sk-small")
            ),
        )
    })
    .await;
    let r =
        g.chat(json!({"model": "ok-model", "messages": [{"role": "user", "content": "hi"}]}), "sk-small", None).await;
    assert_eq!(r.status(), 402);
    let v: Value = r.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("needs $") && m.contains("remains today") && m.contains("$0.000000 spent"), "{m}");
    assert!(m.contains("setting `max_tokens` lowers it"), "{m}");
    // With a small `max_tokens`, the same request fits.
    let r = g
        .chat(
            json!({"model": "ok-model", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
            "sk-small",
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn bodies_openai_would_refuse_are_400_with_their_param() {
    let g = gateway("ok", false).await;
    for (body, param) in [
        (json!({"model": "auto", "temperature": "hot", "messages": [{"role": "user", "content": "x"}]}), "temperature"),
        (json!({"model": "auto", "messages": []}), "messages"),
        (json!({"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}), "messages[0].role"),
    ] {
        let r = g.chat(body, "sk-plain", None).await;
        assert_eq!((r.status().as_u16(), crate::gateway_support::header(&r, "x-should-retry")), (400, "false".into()));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    assert_eq!(g.up.total(), 0, "nothing invalid reached the upstream");
}

/// A gateway on the built-in mock, with tools and embeddings.
async fn mock_gateway() -> Gateway {
    let policy = "rule \"e\" {\n  when request.endpoint == \"embeddings\"\n  then embed\n}\n\ndefault { then chat }\n";
    gateway_custom(policy, false, |_| {
        "listen: 127.0.0.1:0\npolicy: main.route\nproviders:\n  m: { kind: mock }\nmodels:\n  chat: { provider: m, context: 100000, capabilities: [tools] }\n  embed: { provider: m, endpoint: embeddings, context: 8000 }\n".to_string()
    })
    .await
}

#[tokio::test]
async fn the_mock_calls_tools_gives_n_choices_and_encodes_embeddings() {
    let g = mock_gateway().await;
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["q"]}}}]);
    let body = json!({"model": "auto", "tools": tools, "n": 2, "messages": [{"role": "user", "content": "find it"}]});
    let v: Value = g.chat(body, "", None).await.json().await.unwrap();
    assert_eq!(v["choices"].as_array().unwrap().len(), 2, "{v}");
    let call = &v["choices"][1]["message"]["tool_calls"][0];
    assert_eq!(
        (call["function"]["name"].as_str(), v["choices"][1]["finish_reason"].as_str()),
        (Some("lookup"), Some("tool_calls"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"q": "example"})
    );
    // Streamed: the arguments come as deltas that add up to the same text.
    let body =
        json!({"model": "auto", "tools": tools, "stream": true, "messages": [{"role": "user", "content": "find it"}]});
    let text = g.chat(body, "", None).await.text().await.unwrap();
    let mut args = String::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|l| *l != "[DONE]") {
        let e: Value = serde_json::from_str(line).unwrap();
        if let Some(a) = e.pointer("/choices/0/delta/tool_calls/0/function/arguments").and_then(Value::as_str) {
            args.push_str(a);
        }
    }
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"q": "example"}), "{text}");
    assert!(text.contains("\"finish_reason\":\"tool_calls\""), "{text}");
    // Embeddings: `dimensions`, and base64 when asked (little-endian float32).
    let ask = |format: &str| json!({"model": "auto", "input": ["a", "b"], "dimensions": 5, "encoding_format": format});
    let floats: Value = g.post("/v1/embeddings", None).json(&ask("float")).send().await.unwrap().json().await.unwrap();
    let encoded: Value =
        g.post("/v1/embeddings", None).json(&ask("base64")).send().await.unwrap().json().await.unwrap();
    use base64::Engine;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(encoded["data"][1]["embedding"].as_str().unwrap()).unwrap();
    let decoded: Vec<f64> = bytes.chunks(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect();
    let want: Vec<f64> =
        floats["data"][1]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(decoded.len(), 5);
    assert!(decoded.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "{decoded:?} {want:?}");
}
