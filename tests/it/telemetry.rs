//! Traces: a real OTLP/HTTP receiver started by the test gets the request's span and its
//! attempts' spans, with the GenAI and `yardmaster.*` attributes, the client's `traceparent` as
//! their parent, and the fake upstream sees the attempt's `traceparent`. A collector that hangs
//! neither fails nor holds up requests. `Server-Timing` and the overhead histogram.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

use super::gateway_support::*;

type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP (protobuf) receiver on 127.0.0.1: every span it is sent.
async fn receiver() -> (SocketAddr, Spans) {
    let spans: Spans = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                for rs in req.resource_spans {
                    // Every batch names its service (a failed check answers 500: the spans count as dropped).
                    let service = rs.resource.iter().flat_map(|r| &r.attributes).find(|kv| kv.key == "service.name");
                    let service = service.and_then(|kv| kv.value.clone()).and_then(|v| v.value);
                    assert_eq!(service, Some(Any::StringValue("yardmaster".into())));
                    for ss in rs.scope_spans {
                        kept.lock().unwrap().extend(ss.spans);
                    }
                }
                ([("content-type", "application/x-protobuf")], ExportTraceServiceResponse::default().encode_to_vec())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, spans)
}

fn attr(s: &Span, key: &str) -> Option<Any> {
    s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
}

fn text(s: &Span, key: &str) -> String {
    match attr(s, key) {
        Some(Any::StringValue(v)) => v,
        other => panic!("{key}: {other:?} in {s:?}"),
    }
}

fn int(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(Any::IntValue(v)) => v,
        other => panic!("{key}: {other:?}"),
    }
}

async fn spans_of(spans: &Spans, n: usize) -> Vec<Span> {
    let until = Instant::now() + Duration::from_secs(10);
    while spans.lock().unwrap().len() < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    spans.lock().unwrap().clone()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_request_and_its_attempt_are_spans_of_the_clients_trace() {
    let (collector, spans) = receiver().await;
    let gw = gateway_custom(POLICY, false, |addr| {
        format!("{}telemetry: {{ otlp: {{ endpoint: \"http://{collector}\" }} }}\n", config(addr, "ok"))
    })
    .await;
    let r = gw
        .post("/v1/chat/completions", Some("sk-team-a"))
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "ok-model", "messages": [{"role": "user", "content": "the secret prompt text"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let timing = header(&r, "server-timing");
    for part in ["policy;dur=", "upstream;dur=", "total;dur="] {
        assert!(timing.contains(part), "{timing}");
    }

    let got = spans_of(&spans, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let req = got.iter().find(|s| s.name == "yardmaster.request").expect("the request span");
    let attempt = got.iter().find(|s| s.name == "chat ok").expect("the attempt span, named `chat {upstream model}`");
    assert_eq!(hex::encode(&req.trace_id), TRACE);
    assert_eq!(hex::encode(&req.parent_span_id), CLIENT_SPAN, "continued from the client's traceparent");
    assert_eq!(attempt.trace_id, req.trace_id);
    assert_eq!(attempt.parent_span_id, req.span_id);
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    assert_eq!((req.kind, attempt.kind), (SpanKind::Server as i32, SpanKind::Client as i32));
    assert_eq!(req.flags, 0x301, "sampled, with a remote parent");
    assert_eq!(attempt.flags, 0x101, "sampled, with a local parent");
    assert!(req.start_time_unix_nano <= attempt.start_time_unix_nano);
    assert!(attempt.end_time_unix_nano <= req.end_time_unix_nano && attempt.start_time_unix_nano > 0);
    assert_ne!(attempt.status.as_ref().map(|s| s.code), Some(2), "the attempt succeeded");

    assert_eq!(text(req, "yardmaster.rule"), "explicit");
    assert_eq!(text(req, "yardmaster.policy_version"), header(&r, "x-yardmaster-policy"));
    assert_eq!(text(req, "gen_ai.request.model"), "ok-model");
    assert_eq!(text(req, "gen_ai.operation.name"), "chat");
    assert_eq!(int(req, "http.response.status_code"), 200);
    let cost: f64 = header(&r, "x-yardmaster-cost-usd").parse().unwrap();
    assert!(matches!(attr(req, "yardmaster.cost_usd"), Some(Any::DoubleValue(c)) if (c - cost).abs() < 1e-9));

    assert_eq!(text(attempt, "gen_ai.provider.name"), "openai");
    assert_eq!(text(attempt, "yardmaster.provider"), "up");
    assert_eq!(text(attempt, "gen_ai.request.model"), "ok");
    assert_eq!(text(attempt, "gen_ai.response.model"), "ok");
    assert_eq!((int(attempt, "gen_ai.usage.input_tokens"), int(attempt, "gen_ai.usage.output_tokens")), (3, 4));

    let seen = gw.up.traceparents.lock().unwrap().clone();
    assert_eq!(
        seen,
        [format!("00-{TRACE}-{}-01", hex::encode(&attempt.span_id))],
        "the provider is the attempt's child"
    );

    // No prompt text in any span without `log: { prompts: true }`.
    let dump = format!("{got:?}");
    assert!(!dump.contains("secret prompt"), "{dump}");

    let metrics = gw.http.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("yardmaster_overhead_seconds_count 1"), "{metrics}");
    assert!(metrics.contains("yardmaster_trace_spans_exported_total 2"), "{metrics}");
    assert!(metrics.contains("yardmaster_trace_spans_dropped_total 0"), "{metrics}");
    gw.running.shutdown().await;
}

#[tokio::test]
async fn a_collector_that_hangs_neither_fails_nor_holds_up_requests() {
    // Accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let gw = gateway_custom(POLICY, false, |addr| {
        format!("{}telemetry: {{ otlp: {{ endpoint: \"http://{collector}\", timeout: 30s }} }}\n", config(addr, "ok"))
    })
    .await;
    let started = Instant::now();
    let sends = (0..200).map(|i| gw.chat(msg(&format!("hello {i}")), "sk-plain", None));
    for r in futures_util::future::join_all(sends).await {
        assert_eq!(r.status(), 200);
        assert!(header(&r, "server-timing").contains("total;dur="));
    }
    // The first export hangs for 30 s: requests that waited for it would take that long.
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    gw.running.shutdown().await;
}

#[tokio::test]
async fn without_traces_the_clients_traceparent_is_passed_on_unchanged() {
    let gw = gateway("ok", false).await;
    let tp = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let r = gw
        .post("/v1/chat/completions", Some("sk-plain"))
        .header("traceparent", &tp)
        .json(&msg("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw.chat(msg("no trace"), "sk-plain", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(gw.up.traceparents.lock().unwrap().clone(), [tp, String::new()]);
    gw.running.shutdown().await;
}
