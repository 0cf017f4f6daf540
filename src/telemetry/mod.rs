//! Telemetry: a finished request, described as a [`RequestSpan`] with its [`AttemptSpan`]s ->
//! OpenTelemetry spans, exported over OTLP/HTTP (protobuf) in batches by a task of their own.
//!
//! The request path only hands the description over: [`Telemetry::submit`] is a `try_send` into
//! a bounded queue, and a full queue drops the request's spans and counts them. A collector that
//! is down or slow therefore never slows or fails a request; its batches fail (each export is
//! bounded by a timeout) and their spans are counted as dropped too. The spans follow the GenAI
//! semantic conventions (`gen_ai.*`), plus Yardmaster's own `yardmaster.*` attributes.
//!
//! The spans are built as OTLP's own messages (`opentelemetry-proto`) and encoded with prost:
//! every span of a batch has the same resource and scope, so the SDK's span model, which the
//! OTLP exporter copies and regroups by resource and scope on every export, would only add work.
//! The export is a plain `POST {endpoint}/v1/traces` on the gateway's reqwest client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message as _;
use tokio::sync::mpsc;

use crate::util::trace::TraceContext;

/// Requests whose spans may wait for export; more are dropped (and counted).
pub const QUEUE: usize = 2048;
/// Spans per export call, at most.
pub const BATCH: usize = 512;
/// How long spans wait for a batch to fill before it is sent anyway.
pub const BATCH_WAIT: Duration = Duration::from_secs(1);

/// Where spans go: `telemetry.otlp` of `yardmaster.yaml`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The collector's base URL (`/v1/traces` is appended).
    pub endpoint: String,
    /// Headers sent with every export (an API key for a hosted collector, say).
    pub headers: Vec<(String, String)>,
    /// Each export's time limit.
    pub timeout: Duration,
    /// `service.name`.
    pub service: String,
}

/// One finished request, as its spans say it.
#[derive(Debug)]
pub struct RequestSpan {
    /// The trace (continued from the client's `traceparent`, or new).
    pub trace: TraceContext,
    /// This request's span id.
    pub span_id: [u8; 8],
    /// When it arrived and when it ended.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// `gen_ai.operation.name`: `chat`, `embeddings` or `moderations`.
    pub operation: &'static str,
    /// `x-request-id`.
    pub request_id: String,
    /// The model the client named (`gen_ai.request.model`).
    pub requested: Option<String>,
    /// The rule that routed it.
    pub rule: Option<String>,
    /// The policy version.
    pub policy: String,
    /// The key's name.
    pub key: Option<String>,
    /// The status the client got.
    pub status: u16,
    /// Cost, USD.
    pub cost_usd: f64,
    /// The cache's verdict (`hit`, `miss`, `bypass`).
    pub cache: Option<&'static str>,
    /// Tokens in and out.
    pub usage: (u64, u64),
    /// The prompt, only with `log: { prompts: true }`.
    pub prompt: Option<String>,
    /// The upstream calls.
    pub attempts: Vec<AttemptSpan>,
}

/// One upstream call.
#[derive(Debug)]
pub struct AttemptSpan {
    /// Its span id (the one its `traceparent` named upstream).
    pub span_id: [u8; 8],
    /// When it was sent.
    pub start: SystemTime,
    /// When it ended (the first byte of a stream: the rest belongs to the request).
    pub end: SystemTime,
    /// Catalog name.
    pub model: String,
    /// The id sent upstream (`gen_ai.request.model`).
    pub upstream_model: String,
    /// The configured provider's name (`yardmaster.provider`).
    pub provider: String,
    /// The convention's name for the provider's kind (`gen_ai.provider.name`).
    pub provider_kind: &'static str,
    /// Why it failed; `None` when it answered.
    pub error: Option<String>,
    /// Tokens in and out, for the attempt that answered.
    pub usage: Option<(u64, u64)>,
}

/// The exporter's handle: the queue and its counters.
pub struct Telemetry {
    queue: mpsc::Sender<RequestSpan>,
    flush: mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    counts: Arc<Counts>,
}

/// Spans exported and dropped.
#[derive(Debug, Default)]
pub struct Counts {
    /// Sent to the collector and accepted.
    pub exported: AtomicU64,
    /// Dropped: the queue was full, or the collector failed or timed out.
    pub dropped: AtomicU64,
}

impl Telemetry {
    /// Starts the export task (on the current tokio runtime).
    pub fn start(settings: &Settings, http: reqwest::Client) -> Result<Telemetry, String> {
        let url = format!("{}/v1/traces", settings.endpoint.trim_end_matches('/'));
        reqwest::Url::parse(&url).map_err(|e| format!("telemetry.otlp.endpoint: `{}`: {e}", settings.endpoint))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &settings.headers {
            let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("telemetry.otlp.headers_env: `{name}` is not a header name"))?;
            let v = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("telemetry.otlp.headers_env: the value of `{name}` is not a header value"))?;
            headers.insert(n, v);
        }
        headers
            .insert(reqwest::header::CONTENT_TYPE, reqwest::header::HeaderValue::from_static("application/x-protobuf"));
        let exporter = Exporter {
            http,
            url,
            headers,
            timeout: settings.timeout,
            resource: Resource {
                attributes: vec![
                    text("service.name", settings.service.clone()),
                    text("service.version", env!("CARGO_PKG_VERSION").to_string()),
                ],
                ..Default::default()
            },
            scope: InstrumentationScope {
                name: "yardmaster".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            },
        };
        let (queue, rx) = mpsc::channel(QUEUE);
        let (flush, flushes) = mpsc::channel(4);
        let counts = Arc::new(Counts::default());
        tokio::spawn(export(exporter, rx, flushes, counts.clone()));
        Ok(Telemetry { queue, flush, counts })
    }

    /// Hands a finished request's spans to the export task; drops them (counted) when its queue
    /// is full. Never waits.
    pub fn submit(&self, span: RequestSpan) {
        let n = 1 + span.attempts.len() as u64;
        if self.queue.try_send(span).is_err() {
            self.counts.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Spans exported and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.counts.exported.load(Ordering::Relaxed), self.counts.dropped.load(Ordering::Relaxed))
    }

    /// Exports what is queued now (at shutdown), waiting at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.flush.try_send(tx).is_ok() {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }
}

/// Where and how batches go.
struct Exporter {
    http: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
    resource: Resource,
    scope: InstrumentationScope,
}

impl Exporter {
    /// Sends one batch: the spans the collector accepted, or why it took none.
    async fn send(&self, spans: Vec<Span>) -> Result<u64, String> {
        let n = spans.len() as u64;
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans { scope: Some(self.scope.clone()), spans, schema_url: String::new() }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec();
        let call = self.http.post(&self.url).headers(self.headers.clone()).timeout(self.timeout).body(body).send();
        let r = call.await.map_err(|e| format!("the collector cannot be reached: {}", e.without_url()))?;
        if !r.status().is_success() {
            return Err(format!("the collector answered {}", r.status()));
        }
        // A partial success names the spans it rejected; an empty body is a full success.
        let reply = r.bytes().await.unwrap_or_default();
        let rejected = ExportTraceServiceResponse::decode(reply)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0));
        Ok(n.saturating_sub(rejected))
    }
}

/// The export task: batches of up to [`BATCH`] spans, sent when full or after [`BATCH_WAIT`].
async fn export(
    exporter: Exporter,
    mut rx: mpsc::Receiver<RequestSpan>,
    mut flushes: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
    counts: Arc<Counts>,
) {
    let mut batch: Vec<Span> = Vec::with_capacity(BATCH);
    loop {
        let mut flushed = None;
        tokio::select! {
            first = rx.recv() => match first {
                Some(r) => spans(r, &mut batch),
                None => return,
            },
            f = flushes.recv() => flushed = f,
        }
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH && flushed.is_none() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => spans(r, &mut batch),
                _ => break,
            }
        }
        if flushed.is_some() {
            while let Ok(r) = rx.try_recv() {
                spans(r, &mut batch);
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let sent = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            // reqwest bounds the call; this bounds it again, reading the reply included.
            match tokio::time::timeout(exporter.timeout + Duration::from_secs(1), exporter.send(sent)).await {
                Ok(Ok(accepted)) => {
                    counts.exported.fetch_add(accepted, Ordering::Relaxed);
                    counts.dropped.fetch_add(n - accepted, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, spans = n, "the trace collector did not take a batch");
                    counts.dropped.fetch_add(n, Ordering::Relaxed);
                }
                Err(_) => {
                    counts.dropped.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

fn text(key: &str, value: String) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }) }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

fn float(key: &str, value: f64) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(any_value::Value::DoubleValue(value)) }) }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The span a description makes: its ids, kind, times, attributes and status.
struct Shape<'a> {
    trace: &'a TraceContext,
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    kind: SpanKind,
    name: String,
    times: (SystemTime, SystemTime),
    attributes: Vec<KeyValue>,
    error: Option<String>,
}

fn span(s: Shape<'_>) -> Span {
    let status = match s.error {
        Some(message) => Status { message, code: StatusCode::Error as i32 },
        None => Status::default(),
    };
    Span {
        trace_id: s.trace.trace_id.to_vec(),
        span_id: s.id.to_vec(),
        parent_span_id: s.parent.map_or_else(Vec::new, |p| p.to_vec()),
        flags: u32::from(s.trace.flags) | if s.parent.is_some() && s.kind == SpanKind::Server { 0x300 } else { 0x100 },
        name: s.name,
        kind: s.kind as i32,
        start_time_unix_nano: nanos(s.times.0),
        end_time_unix_nano: nanos(s.times.1),
        attributes: s.attributes,
        status: Some(status),
        ..Default::default()
    }
}

/// Appends the request's span and its attempts' spans to `out`.
fn spans(r: RequestSpan, out: &mut Vec<Span>) {
    let mut attrs = vec![
        text("gen_ai.operation.name", r.operation.to_string()),
        text("yardmaster.request_id", r.request_id),
        text("yardmaster.policy_version", r.policy),
        float("yardmaster.cost_usd", r.cost_usd),
        int("http.response.status_code", i64::from(r.status)),
        int("gen_ai.usage.input_tokens", clamp(r.usage.0)),
        int("gen_ai.usage.output_tokens", clamp(r.usage.1)),
    ];
    let optional = [
        ("gen_ai.request.model", r.requested),
        ("yardmaster.rule", r.rule),
        ("yardmaster.key", r.key),
        ("yardmaster.cache", r.cache.map(str::to_string)),
        ("yardmaster.prompt", r.prompt),
    ];
    attrs.extend(optional.into_iter().filter_map(|(k, v)| Some(text(k, v?))));
    if let Some(a) = r.attempts.iter().rev().find(|a| a.error.is_none()) {
        attrs.push(text("gen_ai.response.model", a.upstream_model.clone()));
        attrs.push(text("yardmaster.model", a.model.clone()));
    }
    out.push(span(Shape {
        trace: &r.trace,
        id: r.span_id,
        parent: r.trace.parent,
        kind: SpanKind::Server,
        name: "yardmaster.request".into(),
        times: (r.start, r.end),
        attributes: attrs,
        error: (r.status >= 500).then(|| format!("status {}", r.status)),
    }));
    for a in r.attempts {
        let mut attrs = vec![
            text("gen_ai.operation.name", r.operation.to_string()),
            text("gen_ai.request.model", a.upstream_model.clone()),
            text("gen_ai.provider.name", a.provider_kind.to_string()),
            text("yardmaster.provider", a.provider),
            text("yardmaster.model", a.model),
        ];
        if let Some((input, output)) = a.usage {
            attrs.push(text("gen_ai.response.model", a.upstream_model.clone()));
            attrs.push(int("gen_ai.usage.input_tokens", clamp(input)));
            attrs.push(int("gen_ai.usage.output_tokens", clamp(output)));
        }
        if let Some(e) = &a.error {
            attrs.push(text("error.type", e.clone()));
        }
        out.push(span(Shape {
            trace: &r.trace,
            id: a.span_id,
            parent: Some(r.span_id),
            kind: SpanKind::Client,
            name: format!("{} {}", r.operation, a.upstream_model),
            times: (a.start, a.end),
            attributes: attrs,
            error: a.error,
        }));
    }
}
