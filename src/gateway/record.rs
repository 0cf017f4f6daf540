//! The one record of a request, filled in as the request moves through the stages (admission
//! names the key, routing the rule, dispatch the model and the attempts, settlement the status,
//! usage and cost). The response headers, the metrics, the ledger row and the request-log line
//! are all derived from it, so they cannot disagree: on a 502, for example, all four name the
//! last model that was called.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::metrics::Metrics;
use crate::accounting::requestlog::{Entry, Facts};
use crate::accounting::{ledger, usage, Usage};
use crate::dispatch::{Attempt, Outcome};
use crate::util::trace::TraceContext;

/// The response headers' names, parsed once.
mod names {
    use axum::http::HeaderName;

    pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const POLICY: HeaderName = HeaderName::from_static("x-yardmaster-policy");
    pub const RULE: HeaderName = HeaderName::from_static("x-yardmaster-rule");
    pub const MODEL: HeaderName = HeaderName::from_static("x-yardmaster-model");
    pub const PROVIDER: HeaderName = HeaderName::from_static("x-yardmaster-provider");
    pub const UPSTREAM_MODEL: HeaderName = HeaderName::from_static("x-yardmaster-upstream-model");
    pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-yardmaster-attempts");
    pub const COST: HeaderName = HeaderName::from_static("x-yardmaster-cost-usd");
    pub const CACHE: HeaderName = HeaderName::from_static("x-yardmaster-cache");
    pub const SIMILARITY: HeaderName = HeaderName::from_static("x-yardmaster-cache-similarity");
    pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
}

/// What the gateway knows about one request.
#[derive(Debug)]
pub struct Record {
    /// `x-request-id`.
    pub id: String,
    /// The policy version that routes it.
    pub policy: String,
    /// When it arrived.
    pub started: Instant,
    /// Whether it goes to the ledger: a chat or embeddings request that passed authentication.
    pub ledgered: bool,
    /// The key's name.
    pub key: Option<String>,
    /// Its account (`Key::account`: a run-time key's id), which spend is summed by.
    pub account: Option<String>,
    /// The rule that routed it.
    pub rule: Option<String>,
    /// The model that answered, or the last one called (or the one that refused the request).
    pub model: Option<String>,
    /// Its provider.
    pub provider: Option<String>,
    /// Its upstream id (only when it answered).
    pub upstream: Option<String>,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// Time to the first byte of the answer.
    pub ttfb: Option<Duration>,
    /// The status the client got (499 when it went away first).
    pub status: u16,
    /// Tokens.
    pub usage: Usage,
    /// Cost, micro-USD, once settled.
    pub cost_micros: Option<u64>,
    /// What `/metrics` counts as a refusal (`rpm`, `tpm`, `budget`).
    pub refusal: Option<&'static str>,
    /// The facts the request log keeps (when it is on).
    pub log: Option<Facts>,
    /// The cache's verdict, for a rule with `cache`: `hit`, `miss` or `bypass`.
    pub cache: Option<&'static str>,
    /// What a cache hit saved: the cost of the stored answer, micro-USD.
    pub saved_micros: u64,
    /// A semantic hit's cosine similarity.
    pub similarity: Option<f32>,
    /// What the semantic cache's embedding call cost (already settled with the state store),
    /// micro-USD: part of the request's cost.
    pub embed_micros: u64,
    /// Time spent on the semantic cache's embedding call (waiting on a provider too).
    pub embed_time: Duration,
    /// When it arrived, by the wall clock (for its span).
    pub wall: SystemTime,
    /// Its trace: the client's `traceparent` continued, or a new one when traces are on.
    pub trace: Option<TraceContext>,
    /// Its span id, when traces are on.
    pub span_id: Option<[u8; 8]>,
    /// The model the client named (kept for its span).
    pub requested: Option<String>,
    /// `chat`, `embeddings` or `moderations` (for its span).
    pub operation: &'static str,
    /// The door it came through (`chat`, `messages`, ...), for the access log.
    pub door: &'static str,
    /// The prompt, for its span (only with `log: { prompts: true }`).
    pub prompt: Option<String>,
    /// Time spent routing: the facts and the policy's decision (`Server-Timing: policy`).
    pub policy_time: Option<Duration>,
    /// When a stream's response head left: the overhead of a stream is measured to there.
    pub head_at: Option<Duration>,
}

/// A unique request id: a random prefix chosen at startup and a counter (no syscall per request).
fn request_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_string());
    let mut id = String::with_capacity(4 + prefix.len() + 16);
    id.push_str("req_");
    id.push_str(prefix);
    let _ = write!(id, "{:016x}", NEXT.fetch_add(1, Ordering::Relaxed));
    id
}

/// `s` as a header value: printable ASCII and spaces as they are, anything else percent-encoded
/// (each character by its low byte). Borrowed when nothing needs encoding, as for most names.
fn header_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let safe = |c: char| c.is_ascii_graphic() || c == ' ';
    if s.chars().all(safe) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if safe(c) {
            out.push(c);
        } else {
            let _ = write!(out, "%{:02X}", c as u32 & 0xff);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl Record {
    /// A new request routed by the policy `policy`.
    pub fn new(policy: &str) -> Record {
        Record {
            id: request_id(),
            policy: policy.to_string(),
            started: Instant::now(),
            ledgered: false,
            key: None,
            account: None,
            rule: None,
            model: None,
            provider: None,
            upstream: None,
            attempts: Vec::new(),
            ttfb: None,
            status: 0,
            usage: Usage::default(),
            cost_micros: None,
            refusal: None,
            log: None,
            cache: None,
            saved_micros: 0,
            similarity: None,
            embed_micros: 0,
            embed_time: Duration::ZERO,
            wall: SystemTime::now(),
            trace: None,
            span_id: None,
            requested: None,
            operation: "chat",
            door: "",
            prompt: None,
            policy_time: None,
            head_at: None,
        }
    }

    /// Learns what its span says of the admitted request: the operation, and, when it has a span,
    /// the model the client named and (with `log: { prompts: true }`) the prompt.
    pub fn admitted(&mut self, inbound: &super::door::Inbound, log_prompts: bool) {
        self.operation = inbound.endpoint.as_str();
        if self.span_id.is_some() {
            self.requested.clone_from(&inbound.facts.model);
            if log_prompts {
                self.prompt = Some(inbound.facts.prompt.clone());
            }
        }
    }

    /// Time spent waiting on providers: every call, to its reply (a stream: its first event).
    pub fn upstream_time(&self) -> Duration {
        self.attempts.iter().filter_map(|a| a.timing).map(|t| t.took).sum::<Duration>() + self.embed_time
    }

    /// The gateway's own time: to the end minus the time spent waiting on providers; for a
    /// stream, to its response head (what the relay adds after that is the upstream's pace).
    pub fn overhead(&self) -> Duration {
        let total = self.head_at.unwrap_or_else(|| self.started.elapsed());
        total.saturating_sub(self.upstream_time())
    }

    /// `Server-Timing`: `policy`, `upstream` (a stream: to the first event) and `total` (not on
    /// a stream, whose end is not known when its headers leave), in milliseconds.
    fn server_timing(&self, streaming: bool) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut v = format!(
            "policy;dur={:.3}, upstream;dur={:.3}",
            ms(self.policy_time.unwrap_or_default()),
            ms(self.upstream_time())
        );
        if !streaming {
            let _ = write!(v, ", total;dur={:.3}", ms(self.started.elapsed()));
        }
        v
    }

    /// The request's spans, as telemetry exports them (its provider kinds named by `kind`).
    pub fn spans(&self, kind: impl Fn(&str) -> &'static str) -> Option<crate::telemetry::RequestSpan> {
        let (trace, span_id) = (self.trace?, self.span_id?);
        let end = SystemTime::now();
        let answered = self.attempts.iter().rposition(|a| a.outcome == Outcome::Answered);
        let attempts = self
            .attempts
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let t = a.timing?;
                Some(crate::telemetry::AttemptSpan {
                    span_id: t.span,
                    start: t.start,
                    end: t.start + t.took,
                    model: a.model.clone(),
                    upstream_model: self
                        .upstream
                        .clone()
                        .filter(|_| Some(i) == answered)
                        .unwrap_or_else(|| a.model.clone()),
                    provider: a.provider.clone(),
                    provider_kind: kind(&a.provider),
                    error: match &a.outcome {
                        Outcome::Answered => None,
                        o => Some(o.describe()),
                    },
                    usage: (Some(i) == answered).then_some((self.usage.input, self.usage.output)),
                })
            })
            .collect();
        Some(crate::telemetry::RequestSpan {
            trace,
            span_id,
            start: self.wall,
            end,
            operation: self.operation,
            request_id: self.id.clone(),
            requested: self.requested.clone(),
            rule: self.rule.clone(),
            policy: self.policy.clone(),
            key: self.key.clone(),
            status: self.status,
            cost_usd: usage::usd(self.cost_micros.unwrap_or(0)),
            cache: self.cache,
            usage: (self.usage.input, self.usage.output),
            prompt: self.prompt.clone(),
            attempts,
        })
    }

    /// The upstream calls made (`x-yardmaster-attempts`).
    pub fn calls(&self) -> usize {
        self.attempts.iter().filter(|a| a.outcome.called()).count()
    }

    /// Takes dispatch's attempts, naming the model that answered or, failing that, the last one
    /// called.
    pub fn attempted(&mut self, attempts: Vec<Attempt>) {
        if let Some(last) = attempts.iter().rev().find(|a| a.outcome.called()) {
            self.model = Some(last.model.clone());
            self.provider = Some(last.provider.clone());
        }
        self.attempts = attempts;
    }

    /// The `x-request-id` and `x-yardmaster-*` headers known so far; the cost only on a
    /// settled 200 (a stream's headers leave before its cost is known).
    pub fn headers(&self, h: &mut HeaderMap) {
        h.reserve(8);
        let mut set = |name: HeaderName, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(name, v);
            }
        };
        set(names::REQUEST_ID, &self.id);
        set(names::POLICY, &self.policy);
        if let Some(r) = &self.rule {
            // Rule names may hold any text; headers carry them percent-encoded when they must.
            set(names::RULE, &header_safe(r));
        }
        if let Some(m) = &self.model {
            set(names::MODEL, m);
        }
        if let Some(p) = &self.provider {
            set(names::PROVIDER, p);
        }
        if let Some(u) = &self.upstream {
            set(names::UPSTREAM_MODEL, u);
        }
        if let (Some(c), 200) = (self.cost_micros, self.status) {
            set(names::COST, &format!("{:.6}", usage::usd(c)));
        }
        if let Some(s) = self.similarity {
            set(names::SIMILARITY, &format!("{s:.3}"));
        }
        h.insert(names::ATTEMPTS, HeaderValue::from(self.calls()));
        if let Some(c) = self.cache {
            h.insert(names::CACHE, HeaderValue::from_static(c));
        }
        if let Ok(v) = HeaderValue::from_str(&self.server_timing(self.head_at.is_some())) {
            h.insert(names::SERVER_TIMING, v);
        }
    }

    /// The ledger row.
    pub fn row(&self, ts_ms: i64) -> ledger::Row {
        ledger::Row {
            id: self.id.clone(),
            ts_ms,
            key: self.key.clone(),
            account: self.account.clone().filter(|a| Some(a) != self.key.as_ref()),
            rule: self.rule.clone(),
            model: self.model.clone(),
            provider: self.provider.clone(),
            input_tokens: self.usage.input,
            output_tokens: self.usage.output,
            cost_micros: self.cost_micros.unwrap_or(0),
            status: self.status,
            latency_ms: self.latency_ms(),
            estimated: self.usage.estimated,
            policy: self.policy.clone(),
            cache: self.cache.map(str::to_string),
            saved_micros: self.saved_micros,
        }
    }

    /// The request-log line (when the log keeps this request's facts). Takes the facts.
    pub fn log_entry(&mut self, time: String) -> Option<Entry> {
        let facts = self.log.take()?;
        Some(Entry {
            time,
            request_id: self.id.clone(),
            key: self.key.clone(),
            policy: self.policy.clone(),
            rule: self.rule.clone(),
            model: self.model.clone(),
            provider: self.provider.clone(),
            status: self.status,
            tokens_in: self.usage.input,
            tokens_out: self.usage.output,
            cost_usd: usage::usd(self.cost_micros.unwrap_or(0)),
            latency_ms: self.latency_ms(),
            cache: self.cache.map(str::to_string),
            cache_similarity: self.similarity.map(|s| (s * 1000.0).round() / 1000.0),
            facts,
        })
    }

    fn latency_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts the request in `/metrics`: by rule, model, provider and status; its latency,
    /// tokens and cost; its time to first byte; retries (a call followed by another call of the
    /// same model) and fallbacks (a failed model followed by another); and a refusal.
    pub fn count(&self, m: &Metrics) {
        fn or_empty(s: &Option<String>) -> &str {
            s.as_deref().unwrap_or("")
        }
        m.request(or_empty(&self.rule), or_empty(&self.model), or_empty(&self.provider), self.status);
        if let (Some(model), true) = (&self.model, self.ledgered) {
            let latency = self.started.elapsed().as_secs_f64();
            m.finished(model, latency, self.usage.input, self.usage.output, self.cost_micros.unwrap_or(0));
            if let Some(t) = self.ttfb {
                m.ttfb(model, t.as_secs_f64());
            }
        }
        if self.ledgered {
            m.overhead(self.overhead().as_secs_f64());
        }
        for a in self.attempts.iter().filter(|a| a.outcome.called()) {
            m.attempt(&a.model, matches!(&a.outcome, Outcome::Failed(e) if !e.is_client_error()));
        }
        for w in self.attempts.windows(2) {
            if let [a, b] = w {
                if a.model == b.model && a.outcome.called() && b.outcome.called() {
                    m.retry(&a.model);
                } else if a.model != b.model && a.outcome != Outcome::Answered {
                    m.fallback(&a.model);
                }
            }
        }
        if let Some(r) = self.refusal {
            m.refused(r);
        }
        if let Some(c) = self.cache {
            m.cache(self.rule.as_deref().unwrap_or(""), c, self.saved_micros);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_borrowed_unless_they_need_encoding() {
        assert!(matches!(header_safe("long documents"), std::borrow::Cow::Borrowed("long documents")));
        // Each other character by its low byte, as before: é is U+00E9, ✓ is U+2713.
        assert_eq!(header_safe("café ✓\n"), "caf%E9 %13%0A");
        assert!(HeaderValue::from_str(&header_safe("café ✓\n")).is_ok());
    }

    #[test]
    fn request_ids_are_unique_and_fixed_length() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        assert_eq!((a.len(), &a[..4]), (36, "req_"));
        assert!(a[4..].chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn a_failed_request_names_the_last_model_called_everywhere() {
        let mut r = Record::new("v1");
        r.ledgered = true;
        let failed = |m: &str| Attempt {
            model: m.into(),
            provider: "p".into(),
            outcome: Outcome::Failed(crate::providers::UpstreamError::Timeout),
            timing: None,
        };
        let skipped = Attempt { model: "c".into(), provider: "q".into(), outcome: Outcome::BreakerOpen, timing: None };
        r.attempted(vec![failed("a"), failed("b"), skipped]);
        r.status = 502;
        r.cost_micros = Some(0);
        let mut h = HeaderMap::new();
        r.headers(&mut h);
        assert_eq!(h["x-yardmaster-model"], "b");
        assert_eq!(h["x-yardmaster-attempts"], "2");
        assert!(h.get("x-yardmaster-cost-usd").is_none());
        assert_eq!(r.row(0).model.as_deref(), Some("b"));
        r.log = Some(Facts::default());
        assert_eq!(r.log_entry(String::new()).and_then(|e| e.model).as_deref(), Some("b"));
        let m = Metrics::default();
        r.count(&m);
        let text = m.render("v1", 0, 0, &[], None);
        assert!(text.contains(r#"yardmaster_requests_total{rule="",model="b",provider="p",status="502"} 1"#), "{text}");
        assert!(text.contains(r#"yardmaster_fallbacks_total{model="a"} 1"#), "{text}");
    }
}
