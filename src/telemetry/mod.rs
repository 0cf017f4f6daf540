//! Telemetry: a finished request, described as a [`RequestSpan`] with its [`AttemptSpan`]s ->
//! OpenTelemetry spans, exported over OTLP/HTTP (protobuf) in batches by a task of their own.
//!
//! The request path only hands the description over: [`Telemetry::submit`] is a `try_send` into
//! a bounded queue, and a full queue drops the request's spans and counts them. A collector that
//! is down or slow therefore never slows or fails a request; its batches fail (each export is
//! bounded by a timeout) and their spans are counted as dropped too. The spans follow the GenAI
//! semantic conventions (`gen_ai.*`), plus Yardmaster's own `yardmaster.*` attributes.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
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
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http)
            .with_endpoint(url)
            .with_timeout(settings.timeout)
            .with_headers(settings.headers.iter().cloned().collect())
            .build()
            .map_err(|e| format!("telemetry.otlp: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(settings.service.clone())
            .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
            .build();
        exporter.set_resource(&resource);
        let (queue, rx) = mpsc::channel(QUEUE);
        let (flush, flushes) = mpsc::channel(4);
        let counts = Arc::new(Counts::default());
        tokio::spawn(export(exporter, rx, flushes, counts.clone(), settings.timeout));
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

/// The export task: batches of up to [`BATCH`] spans, sent when full or after [`BATCH_WAIT`].
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<RequestSpan>,
    mut flushes: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
    counts: Arc<Counts>,
    timeout: Duration,
) {
    let scope = InstrumentationScope::builder("yardmaster").with_version(env!("CARGO_PKG_VERSION")).build();
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    loop {
        let mut flushed = None;
        tokio::select! {
            first = rx.recv() => match first {
                Some(r) => batch.extend(spans(r, &scope)),
                None => return,
            },
            f = flushes.recv() => flushed = f,
        }
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH && flushed.is_none() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.extend(spans(r, &scope)),
                _ => break,
            }
        }
        if flushed.is_some() {
            while let Ok(r) = rx.try_recv() {
                batch.extend(spans(r, &scope));
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let sent = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            // The exporter bounds its own call; this bounds it again, in case it does not.
            match tokio::time::timeout(timeout + Duration::from_secs(1), exporter.export(sent)).await {
                Ok(Ok(())) => counts.exported.fetch_add(n, Ordering::Relaxed),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, spans = n, "the trace collector did not take a batch");
                    counts.dropped.fetch_add(n, Ordering::Relaxed)
                }
                Err(_) => counts.dropped.fetch_add(n, Ordering::Relaxed),
            };
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

fn context(trace: &TraceContext, span: [u8; 8], remote: bool) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace.trace_id),
        SpanId::from_bytes(span),
        TraceFlags::new(trace.flags),
        remote,
        TraceState::default(),
    )
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The request's span and its attempts' spans.
fn spans(r: RequestSpan, scope: &InstrumentationScope) -> Vec<SpanData> {
    let mut out = Vec::with_capacity(1 + r.attempts.len());
    let mut attrs = vec![
        KeyValue::new("gen_ai.operation.name", r.operation),
        KeyValue::new("yardmaster.request_id", r.request_id),
        KeyValue::new("yardmaster.policy_version", r.policy),
        KeyValue::new("yardmaster.cost_usd", r.cost_usd),
        KeyValue::new("http.response.status_code", i64::from(r.status)),
        KeyValue::new("gen_ai.usage.input_tokens", clamp(r.usage.0)),
        KeyValue::new("gen_ai.usage.output_tokens", clamp(r.usage.1)),
    ];
    let optional = [
        ("gen_ai.request.model", r.requested),
        ("yardmaster.rule", r.rule),
        ("yardmaster.key", r.key),
        ("yardmaster.cache", r.cache.map(str::to_string)),
        ("yardmaster.prompt", r.prompt),
    ];
    attrs.extend(optional.into_iter().filter_map(|(k, v)| Some(KeyValue::new(k, v?))));
    if let Some(a) = r.attempts.iter().rev().find(|a| a.error.is_none()) {
        attrs.push(KeyValue::new("gen_ai.response.model", a.upstream_model.clone()));
        attrs.push(KeyValue::new("yardmaster.model", a.model.clone()));
    }
    let status = if r.status >= 500 { Status::error(format!("status {}", r.status)) } else { Status::Unset };
    let parent = r.trace.parent.map_or(SpanId::INVALID, SpanId::from_bytes);
    out.push(SpanData {
        span_context: context(&r.trace, r.span_id, false),
        parent_span_id: parent,
        parent_span_is_remote: r.trace.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Borrowed("yardmaster.request"),
        start_time: r.start,
        end_time: r.end,
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    });
    for a in r.attempts {
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", r.operation),
            KeyValue::new("gen_ai.request.model", a.upstream_model.clone()),
            KeyValue::new("gen_ai.provider.name", a.provider_kind),
            KeyValue::new("yardmaster.provider", a.provider),
            KeyValue::new("yardmaster.model", a.model),
        ];
        if let Some((input, output)) = a.usage {
            attrs.push(KeyValue::new("gen_ai.response.model", a.upstream_model.clone()));
            attrs.push(KeyValue::new("gen_ai.usage.input_tokens", clamp(input)));
            attrs.push(KeyValue::new("gen_ai.usage.output_tokens", clamp(output)));
        }
        let status = match &a.error {
            Some(e) => {
                attrs.push(KeyValue::new("error.type", e.clone()));
                Status::error(e.clone())
            }
            None => Status::Ok,
        };
        out.push(SpanData {
            span_context: context(&r.trace, a.span_id, false),
            parent_span_id: SpanId::from_bytes(r.span_id),
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: Cow::Owned(format!("{} {}", r.operation, a.upstream_model)),
            start_time: a.start,
            end_time: a.end,
            attributes: attrs,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        });
    }
    out
}
