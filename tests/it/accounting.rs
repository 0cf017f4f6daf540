//! Accounting against a real gateway and a fake upstream on 127.0.0.1: cost arithmetic for
//! plain and streamed replies (reported and counted usage), the ledger's rows, budgets under
//! concurrency with 402 and a restart, rate limits (rpm and tpm) with 429 and recovery, and the
//! request log replayed by `simulate`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::net::SocketAddr;
use std::time::Duration;

use crate::gateway_support::{gateway_custom, header, msg, sha, start_in};
use futures_util::StreamExt;
use serde_json::{json, Value};
use yardmaster::accounting::ledger;

const POLICY: &str = r#"
rule "out of money" {
  when header("x-test") == "broke" and budget.remaining < 10%
  then free-model
}

rule "streams" {
  when request.stream and header("x-test") == "nousage"
  then nousage
}

rule "slow streams" {
  when request.stream and header("x-test") == "slow"
  then slow-stream
}

rule "code" {
  when prompt contains "fn main"
  then code-model
}

rule "all down" {
  when header("x-test") == "fail"
  then fail-a -> fail-b
}

rule "slow" {
  when header("x-test") == "hang"
  then hang-model
}

rule "slow, priced" {
  when header("x-test") == "hang-priced"
  then hang-priced
}

rule "absurd" {
  when header("x-test") == "absurd"
  then absurd-model
}

default {
  then ok-model
}
"#;

fn config(addr: SocketAddr) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
policy: main.route
providers:
  up: {{ kind: openai, base_url: "http://{addr}/v1" }}
models:
  ok-model:    {{ provider: up, id: ok, price: {{ input: 1, output: 2 }}, context: 100000 }}
  code-model:  {{ provider: up, id: code, price: {{ input: 3, output: 15 }}, context: 100000 }}
  nousage:     {{ provider: up, id: stream-nousage, price: {{ input: 1, output: 2 }}, context: 100000 }}
  slow-stream: {{ provider: up, id: stream-slow, price: {{ input: 1, output: 2 }}, context: 100000 }}
  free-model:  {{ provider: up, id: free, context: 100000 }}
  fail-a:      {{ provider: up, id: fail500, price: {{ input: 1, output: 2 }}, context: 100000 }}
  fail-b:      {{ provider: up, id: fail503, price: {{ input: 1, output: 2 }}, context: 100000 }}
  hang-model:  {{ provider: up, id: slow, price: {{ input: 0.01, output: 0.01 }}, context: 100000 }}
  hang-priced: {{ provider: up, id: slow, price: {{ input: 1, output: 2 }}, context: 100000 }}
  absurd-model: {{ provider: up, id: absurd, price: {{ input: 1, output: 2 }}, context: 100000 }}
keys:
  - {{ name: open-ended, key_sha256: {plain} }}
  - {{ name: capped, key_sha256: {capped}, budget: {{ usd: 0.0005, per: day }} }}
  - {{ name: limited, key_sha256: {limited}, limits: {{ rpm: 60 }} }}
  - {{ name: tokens, key_sha256: {tokens}, limits: {{ tpm: 1000 }} }}
  - {{ name: rich, key_sha256: {rich}, budget: {{ usd: 1000, per: month }} }}
log: {{ requests: requests.jsonl, prompts: true }}
"#,
        plain = sha("sk-plain"),
        capped = sha("sk-capped"),
        limited = sha("sk-limited"),
        tokens = sha("sk-tokens"),
        rich = sha("sk-rich"),
    )
}

async fn rows(g: &crate::gateway_support::Gateway) -> Vec<ledger::Row> {
    if let Some(l) = &g.running.state.accounting.ledger {
        l.flush().await;
    }
    ledger::read_all(&g.dir.path().join("yardmaster.db")).unwrap()
}

fn row<'r>(rows: &'r [ledger::Row], id: &str) -> &'r ledger::Row {
    rows.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no ledger row for {id}"))
}

async fn sse(r: reqwest::Response) -> Vec<String> {
    let mut body = r.bytes_stream();
    let mut text = String::new();
    while let Some(b) = body.next().await {
        text.push_str(std::str::from_utf8(&b.unwrap()).unwrap());
    }
    text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
}

#[tokio::test]
async fn cost_is_tokens_times_prices_for_plain_and_streamed_replies() {
    let g = gateway_custom(POLICY, false, config).await;
    // The fake upstream reports 3 tokens in and 4 out: 3 × $1 + 4 × $2 per million = 11 micro-USD.
    let r = g.chat(msg("hello"), "sk-plain", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-yardmaster-cost-usd"), "0.000011");
    let id = header(&r, "x-request-id");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["cost"], json!(0.000011));
    // code-model: $3 / $15: 3 × 3 + 4 × 15 = 69 micro-USD.
    let r = g.chat(msg("fn main() {}"), "sk-plain", None).await;
    assert_eq!(header(&r, "x-yardmaster-cost-usd"), "0.000069");
    let code_id = header(&r, "x-request-id");

    // A stream whose client asked for usage: the upstream's usage chunk (3 in, 5 out) comes
    // through with its cost, 3 + 10 = 13 micro-USD.
    let mut body = msg("hello");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = g.chat(body.clone(), "sk-plain", None).await;
    let asked_id = header(&r, "x-request-id");
    let events = sse(r).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert_eq!(usage["usage"]["cost"], json!(0.000013));
    assert_eq!(usage["model"], "ok-model");

    // The client did not ask: the gateway still asked upstream, and drops the usage chunk.
    body.as_object_mut().unwrap().remove("stream_options");
    let r = g.chat(body.clone(), "sk-plain", None).await;
    let unasked_id = header(&r, "x-request-id");
    let events = sse(r).await;
    assert!(events.iter().all(|e| !e.contains("\"usage\"")), "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(g
        .up
        .bodies
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b["stream"] == true)
        .all(|b| b["stream_options"]["include_usage"] == true));

    // An upstream that ignores `include_usage`: the tokens are counted (o200k) and marked so.
    let mut asked = body.clone();
    asked["stream_options"] = json!({"include_usage": true});
    let r = g.chat(asked, "sk-plain", Some("nousage")).await;
    let counted_id = header(&r, "x-request-id");
    let events = sse(r).await;
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    let (input, output) = (yardmaster::util::tokens::count("hello"), yardmaster::util::tokens::count(&text));
    assert_eq!(usage["usage"]["prompt_tokens"], input);
    assert_eq!(usage["usage"]["completion_tokens"], output);
    assert_eq!(usage["usage"]["cost"], json!(yardmaster::accounting::usage::usd(input + 2 * output)));

    let rows = rows(&g).await;
    assert_eq!((row(&rows, &id).input_tokens, row(&rows, &id).output_tokens, row(&rows, &id).cost_micros), (3, 4, 11));
    assert_eq!(row(&rows, &id).key.as_deref(), Some("open-ended"));
    assert_eq!(row(&rows, &id).rule.as_deref(), Some("default"));
    assert_eq!(row(&rows, &code_id).cost_micros, 69);
    assert_eq!(row(&rows, &asked_id).cost_micros, 13);
    assert_eq!(row(&rows, &unasked_id).cost_micros, 13);
    assert!(row(&rows, &counted_id).estimated);
    assert_eq!(row(&rows, &counted_id).cost_micros, input + 2 * output);
    g.running.shutdown().await;
}

/// A client that goes away mid-stream is charged what the provider bills, which the gateway
/// never learns (the usage comes at the end): the prompt, and the most output the answer could
/// have had (without `max_tokens`, the reservation's 4,096 tokens).
#[tokio::test]
async fn a_stream_cut_by_its_client_is_charged_the_most_the_answer_could_have_used() {
    let g = gateway_custom(POLICY, false, config).await;
    let mut body = msg("hello");
    body["stream"] = json!(true);
    let r = g.chat(body, "sk-plain", Some("slow")).await;
    let id = header(&r, "x-request-id");
    let mut stream = r.bytes_stream();
    // Read a few chunks (the slow stream sends one every 50 ms), then go away.
    let mut got = String::new();
    while got.matches("data: ").count() < 3 {
        got.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
    }
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = rows(&g).await;
    let r = row(&rows, &id);
    assert_eq!(r.status, 499);
    assert!(r.estimated, "the upstream sent no usage before the cut");
    assert_eq!(r.output_tokens, 4_096, "{r:?}");
    assert_eq!(r.cost_micros, r.input_tokens + 2 * r.output_tokens);
    g.running.shutdown().await;
}

/// A client that goes away while the upstream call is in flight is charged the call's worst
/// case (its reservation): the provider bills the call regardless.
#[tokio::test]
async fn a_client_that_goes_away_during_the_call_is_charged_the_calls_worst_case() {
    let g = gateway_custom(POLICY, false, config).await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let sent = impatient
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth("sk-rich")
        .header("x-test", "hang-priced")
        .json(&msg("hello"))
        .send()
        .await;
    assert!(sent.is_err(), "the upstream takes 5 s; the client gives up first");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gone: Vec<_> = rows(&g).await.into_iter().filter(|r| r.key.as_deref() == Some("rich")).collect();
    assert_eq!(gone.len(), 1);
    // "hello" is 5 bytes (the worst case's input tokens), and 4,096 output tokens at $2 per million.
    assert_eq!((gone[0].status, gone[0].cost_micros), (499, 5 + 2 * 4_096), "{gone:?}");
    let info = key_info(&g, "sk-rich").await;
    assert_eq!(info["reserved_usd"], json!(0.0), "{info}");
    assert_eq!(info["spend_usd"], json!(0.008197), "{info}");
    g.running.shutdown().await;
}

/// The one record of a request: on a 502 the response headers, `/metrics`, the ledger row and the
/// request-log line all name the last model that was called (they used to disagree: the ledger
/// named it, the headers and metrics named none).
#[tokio::test]
async fn a_502_names_the_last_model_tried_everywhere() {
    let g = gateway_custom(POLICY, false, config).await;
    let r = g.chat(msg("hello"), "sk-plain", Some("fail")).await;
    assert_eq!(r.status(), 502);
    let id = header(&r, "x-request-id");
    assert_eq!(header(&r, "x-yardmaster-model"), "fail-b");
    assert_eq!(header(&r, "x-yardmaster-provider"), "up");
    assert_eq!(header(&r, "x-yardmaster-rule"), "all down");
    assert_eq!(header(&r, "x-yardmaster-attempts"), "2");
    let metrics = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"yardmaster_requests_total{rule="all down",model="fail-b",provider="up",status="502"} 1"#),
        "{metrics}"
    );
    let rows = rows(&g).await;
    let row = row(&rows, &id);
    assert_eq!((row.model.as_deref(), row.provider.as_deref(), row.status), (Some("fail-b"), Some("up"), 502));
    let dir = g.dir.path().to_path_buf();
    g.running.shutdown().await;
    let log =
        yardmaster::simulate::read(std::fs::read(dir.join("requests.jsonl")).unwrap().as_slice(), |_| {}).unwrap();
    let line = log.entries.iter().find(|e| e.request_id == id).unwrap();
    assert_eq!((line.model.as_deref(), line.rule.as_deref(), line.status), (Some("fail-b"), Some("all down"), 502));
}

/// A client that gives up before the answer leaves no reservation behind, and a ledger row (499)
/// for every request that reached the provider. (Four such requests on a small budget used to
/// hold it until a restart.)
#[tokio::test]
async fn a_client_that_gives_up_before_the_answer_leaves_nothing_reserved() {
    let g = gateway_custom(POLICY, false, config).await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    for i in 0..4 {
        // Two plain requests, and two streamed ones that give up before the first event.
        let mut body = msg("hello");
        body["stream"] = json!(i >= 2);
        let sent = impatient
            .post(format!("{}/v1/chat/completions", g.url))
            .bearer_auth("sk-capped")
            .header("x-test", "hang")
            .json(&body)
            .send()
            .await;
        assert!(sent.is_err(), "the upstream takes 5 s; the client gives up first");
    }
    // Well before the upstream would have answered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = key_info(&g, "sk-capped").await;
    assert_eq!(info["reserved_usd"], json!(0.0), "{info}");
    let gone: Vec<_> = rows(&g).await.into_iter().filter(|r| r.key.as_deref() == Some("capped")).collect();
    assert_eq!(gone.len(), 4, "{gone:?}");
    assert!(gone.iter().all(|r| r.status == 499 && r.model.is_none() && r.rule.as_deref() == Some("slow")), "{gone:?}");
    // The key is not locked out.
    let mut small = msg("hello");
    small["max_tokens"] = json!(10);
    assert_eq!(g.chat(small, "sk-capped", None).await.status(), 200);
    g.running.shutdown().await;
}

/// An upstream that reports 10^18 tokens is charged for what the request's reservation allowed
/// (its body's bytes as input tokens, and without `max_tokens` 4,096 output tokens), never more,
/// logged and counted; the spend reads back the same after a restart (10^18 tokens once charged
/// millions of dollars, stored a row at `i64::MAX`, and the sum then overflowed and read as 0).
#[tokio::test]
async fn absurd_usage_is_charged_at_most_what_the_reservation_allowed() {
    let mut g = gateway_custom(POLICY, false, config).await;
    let body_bytes = serde_json::to_vec(&msg("hello")).unwrap().len() as u64;
    // Input at $1 per million tokens, output at $2.
    let expected = body_bytes + 2 * 4_096;
    for _ in 0..3 {
        let r = g.chat(msg("hello"), "sk-rich", Some("absurd")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-yardmaster-cost-usd"), format!("{:.6}", expected as f64 / 1e6));
    }
    // With `max_tokens`, output is charged up to it.
    let mut capped = msg("hello");
    capped["max_tokens"] = json!(10);
    let r = g.chat(capped.clone(), "sk-rich", Some("absurd")).await;
    let with_max = serde_json::to_vec(&capped).unwrap().len() as u64 + 2 * 10;
    assert_eq!(header(&r, "x-yardmaster-cost-usd"), format!("{:.6}", with_max as f64 / 1e6));
    let metrics = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("yardmaster_usage_capped_total 4"), "{metrics}");
    let rows = rows(&g).await;
    let mine: Vec<_> = rows.iter().filter(|r| r.model.as_deref() == Some("absurd-model")).collect();
    assert_eq!(mine.len(), 4);
    assert!(mine[..3].iter().all(|r| r.input_tokens == body_bytes && r.cost_micros == expected), "{mine:?}");
    let spent = 3 * expected + with_max;
    let usd = |v: &Value| (v.as_f64().unwrap() * 1e6).round() as u64;
    assert_eq!(usd(&key_info(&g, "sk-rich").await["spend_usd"]), spent);
    g.running.shutdown().await;
    g.running = start_in(g.dir.path(), false).await;
    g.url = format!("http://{}", g.running.addr);
    assert_eq!(usd(&key_info(&g, "sk-rich").await["spend_usd"]), spent);
    g.running.shutdown().await;
}

/// A request that no retry can fix is a 4xx that says why, with `x-should-retry: false`: a
/// `max_tokens` larger than every model's context (it was a retryable 503, or with a budget a
/// 402), `u64::MAX` included.
#[tokio::test]
async fn a_request_no_model_can_hold_is_a_permanent_400() {
    let g = gateway_custom(POLICY, false, config).await;
    for max_tokens in [json!(200_000), json!(u64::MAX)] {
        for key in ["sk-plain", "sk-rich"] {
            let mut body = msg("hello");
            body["max_tokens"] = max_tokens.clone();
            let r = g.chat(body, key, None).await;
            let status = (r.status().as_u16(), header(&r, "x-should-retry"));
            let v: Value = r.json().await.unwrap();
            assert_eq!(status, (400, "false".to_string()), "{key} {max_tokens} {v}");
            assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
            assert!(v["error"]["message"].as_str().unwrap().contains("context of 100000 tokens"), "{v}");
        }
    }
    // Tools offered, and no model of the plan takes them: permanent too.
    let mut body = msg("hello");
    body["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let r = g.chat(body, "sk-plain", None).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-should-retry")), (400, "false".to_string()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "no_capable_target", "{v}");
    g.running.shutdown().await;
}

async fn key_info(g: &crate::gateway_support::Gateway, key: &str) -> Value {
    g.http.get(format!("{}/v1/key", g.url)).bearer_auth(key).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_budget_is_never_overspent_under_concurrency_and_survives_a_restart() {
    let mut g = gateway_custom(POLICY, false, config).await;
    // $0.0005 = 500 micro-USD. Each request reserves its worst case (5 prompt bytes × $1 + 10
    // max_tokens × $2 = 25) and really costs 11.
    let mut body = msg("hello");
    body["max_tokens"] = json!(10);
    // 16 clients at once, each sending until it is refused; then one more, alone, until refused
    // (a refusal under concurrency can be another request's reservation in flight).
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers = (0..16).map(|_| {
        let (http, url, body, statuses) = (g.http.clone(), g.url.clone(), body.clone(), statuses.clone());
        async move {
            for _ in 0..100 {
                let r = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth("sk-capped")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                if status == 402 {
                    assert_eq!(header(&r, "x-should-retry"), "false");
                    let v: Value = r.json().await.unwrap();
                    assert_eq!(v["error"]["code"], "budget_exceeded");
                    assert_eq!(v["error"]["type"], "insufficient_quota");
                }
                statuses.lock().unwrap().push(status);
                if status != 200 {
                    break;
                }
            }
        }
    });
    futures_util::future::join_all(workers).await;
    for _ in 0..100 {
        let status = g.chat(body.clone(), "sk-capped", None).await.status().as_u16();
        statuses.lock().unwrap().push(status);
        if status != 200 {
            break;
        }
    }
    let statuses = statuses.lock().unwrap().clone();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 402), "{statuses:?}");
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    let refused = statuses.len() as u64 - ok;
    let spent = ok * 11;
    assert!(spent <= 500, "spent {spent} micro-USD of a 500 budget");
    assert!(spent + 25 > 500, "stopped early: {spent} spent, yet a 25 reservation still fits");
    let info = key_info(&g, "sk-capped").await;
    assert_eq!(info["spend_usd"], json!(yardmaster::accounting::usage::usd(spent)));
    assert_eq!(info["budget"]["per"], "day");
    assert_eq!(info["reserved_usd"], json!(0.0));
    // Spent: 402, unless a rule routes it elsewhere (a free model here).
    assert_eq!(g.chat(body.clone(), "sk-capped", None).await.status(), 402);
    let r = g.chat(body.clone(), "sk-capped", Some("broke")).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-yardmaster-model")), (200, "free-model".to_string()));
    let before: u64 = rows(&g).await.iter().filter(|r| r.key.as_deref() == Some("capped")).map(|r| r.cost_micros).sum();
    assert_eq!(before, spent);

    // A graceful restart loses nothing and counts nothing twice.
    g.running.shutdown().await;
    g.running = start_in(g.dir.path(), false).await;
    g.url = format!("http://{}", g.running.addr);
    let info = key_info(&g, "sk-capped").await;
    assert_eq!(info["spend_usd"], json!(yardmaster::accounting::usage::usd(spent)));
    assert_eq!(g.chat(body.clone(), "sk-capped", None).await.status(), 402);
    let all = rows(&g).await;
    let capped: Vec<_> = all.iter().filter(|r| r.key.as_deref() == Some("capped")).collect();
    assert_eq!(capped.iter().filter(|r| r.status == 200).count() as u64, ok + 1);
    assert_eq!(capped.iter().filter(|r| r.status == 402).count() as u64, refused + 2);
    let ids: std::collections::HashSet<_> = all.iter().map(|r| &r.id).collect();
    assert_eq!(ids.len(), all.len());
    g.running.shutdown().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_recover() {
    let g = gateway_custom(POLICY, false, config).await;
    // rpm 60: a burst of 60, then one a second.
    for i in 0..60 {
        let r = g.chat(msg("hi"), "sk-limited", None).await;
        assert_eq!(r.status(), 200, "request {i}");
    }
    let r = g.chat(msg("hi"), "sk-limited", None).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert_eq!(header(&r, "x-should-retry"), "true");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
        (Some("rate_limit_error"), Some("rate_limit_exceeded"))
    );
    // Other keys are not affected.
    assert_eq!(g.chat(msg("hi"), "sk-plain", None).await.status(), 200);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(g.chat(msg("hi"), "sk-limited", None).await.status(), 200);

    // tpm 1000: a slow stream holds a 905-token reservation (5 bytes + 900 max_tokens) while it
    // runs, so a second one is refused; once it settles with its real usage, tokens come back.
    let mut body = msg("hello");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(900);
    let first = g.chat(body.clone(), "sk-tokens", Some("slow")).await;
    assert_eq!(first.status(), 200);
    let second = g.chat(body.clone(), "sk-tokens", Some("slow")).await;
    assert_eq!(second.status(), 429);
    assert!(header(&second, "retry-after").parse::<u64>().unwrap() >= 1);
    let events = sse(first).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let third = g.chat(body.clone(), "sk-tokens", Some("slow")).await;
    assert_eq!(third.status(), 200);
    drop(third);
    g.running.shutdown().await;
}

#[tokio::test]
async fn the_request_log_replays_through_simulate() {
    let g = gateway_custom(POLICY, false, config).await;
    for text in ["hello", "fn main() {}", "fn main() { x }", "plain words"] {
        assert_eq!(g.chat(msg(text), "sk-plain", None).await.status(), 200);
    }
    let mut broke = msg("x");
    broke["max_tokens"] = json!(10);
    assert_eq!(g.chat(broke, "sk-plain", Some("broke")).await.status(), 200);
    let dir = g.dir.path().to_path_buf();
    g.running.shutdown().await;
    let text = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap();
    let traffic = yardmaster::simulate::read(text.as_bytes(), |_| {}).unwrap();
    assert_eq!(traffic.entries.len(), 5);
    assert!(traffic.skipped.is_empty());
    let e = &traffic.entries[1];
    assert_eq!((e.rule.as_deref(), e.model.as_deref(), e.status), (Some("code"), Some("code-model"), 200));
    assert_eq!(e.facts.prompt.as_deref(), Some("fn main() {}"));
    assert_eq!(e.facts.headers_read, vec!["x-test".to_string()]);
    assert_eq!(e.facts.prompt_tokens, Some(yardmaster::util::tokens::count("fn main() {}")));
    assert!((e.cost_usd - 0.000069).abs() < 1e-12);
    assert!(!text.contains("sk-plain"), "a gateway key reached the request log");

    // Replaying the policy that routed them gives back what was recorded.
    let loaded = yardmaster::config::load(&dir.join("yardmaster.yaml")).unwrap();
    let catalog = loaded.catalog();
    let (program, _, _) = yardmaster::policy::build(&dir.join("main.route"), Some(&catalog));
    let program = program.unwrap();
    let recorded = yardmaster::simulate::recorded(&traffic.entries);
    let replayed = yardmaster::simulate::replay("same", &program, &traffic.entries, || {});
    assert_eq!(replayed.rules, recorded.rules);
    assert_eq!(replayed.models, recorded.models);
    assert_eq!(replayed.cost_micros, recorded.cost_micros);
    assert_eq!(recorded.rules.get("code"), Some(&2));
    assert_eq!(recorded.rules.get("out of money"), None, "`plain` has no budget, so `budget.remaining` is none");
}
