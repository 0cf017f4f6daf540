//! `/metrics` in the Prometheus text format (0.0.4): requests by rule, model, provider and
//! status; latency and time-to-first-byte histograms, tokens, cost, fallbacks and retries per
//! model; rate-limit and budget refusals; the ledger's writer; breakers; reloads and the policy
//! version. Written by hand: a few maps behind mutexes, no allocation once a label set is known.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// rule -> model -> provider -> status -> count; nested so that counting allocates only the
    /// first time a label set is seen.
    requests: Mutex<Requests>,
    models: Mutex<BTreeMap<String, ModelStats>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// rule -> result -> count, and the money hits saved.
    cache: Mutex<CacheCounts>,
    /// The gateway's own time per request (`yardmaster_overhead_seconds`).
    overhead: Mutex<Overhead>,
    /// Replies whose reported usage was more than their request could use.
    usage_capped: std::sync::atomic::AtomicU64,
}

/// A rule's requests per minute over the last hour: slot `m % 60` holds minute `m`.
#[derive(Debug, Clone)]
struct Minutes {
    last: u64,
    counts: [u32; 60],
}

impl Default for Minutes {
    fn default() -> Self {
        Minutes { last: 0, counts: [0; 60] }
    }
}

impl Minutes {
    /// Empties the slots of the minutes between the last one counted and `now`.
    fn advance(&mut self, now: u64) {
        if now > self.last {
            for m in (self.last + 1)..=now.min(self.last + 60) {
                self.counts[(m % 60) as usize] = 0;
            }
            self.last = now;
        }
    }

    /// The last 60 minutes, oldest first, ending with `now`.
    fn series(&self, now: u64) -> Vec<u32> {
        let mut s = self.clone();
        s.advance(now);
        ((now + 1)..=(now + 60)).map(|m| s.counts[(m % 60) as usize]).collect()
    }
}

/// A rule's figures for the admin page.
#[derive(Debug, serde::Serialize)]
pub struct RuleFigures {
    /// Requests it matched since the start.
    pub hits: u64,
    /// Of those, answered with a status of 400 or more.
    pub errors: u64,
    /// Requests per minute over the last five minutes.
    pub per_minute: f64,
    /// Requests in each of the last 60 minutes, oldest first.
    pub last_hour: Vec<u32>,
}

/// A model's figures for the admin page.
#[derive(Debug, Default, serde::Serialize)]
pub struct ModelFigures {
    /// Upstream calls made to it (each attempt, a fallback's failed first attempt included).
    pub requests: u64,
    /// Of those, the ones that failed (timeouts, resets, 429s, 5xx, malformed replies; not the
    /// client's own errors).
    pub errors: u64,
    /// Mean latency, in milliseconds.
    pub mean_latency_ms: Option<f64>,
    /// Mean time to first byte, in milliseconds.
    pub mean_ttfb_ms: Option<f64>,
}

fn minute_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

/// A histogram with the overhead's finer bounds.
#[derive(Debug, Clone)]
struct Overhead(Histogram);

impl Default for Overhead {
    fn default() -> Self {
        Overhead(Histogram { bounds: &OVERHEAD_BUCKETS, ..Histogram::default() })
    }
}

/// The cache's verdicts by rule and result, and the micro-USD that hits saved.
type CacheCounts = (BTreeMap<String, BTreeMap<&'static str, u64>>, u64);

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// The overhead histogram's bounds, in seconds: the gateway's own time is counted in
/// microseconds to milliseconds.
const OVERHEAD_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64; 14],
    counts: [u64; 14],
    count: u64,
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { bounds: &BUCKETS, counts: [0; 14], count: 0, sum: 0.0 }
    }
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if secs <= *b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, label: &str) {
        let sep = if label.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{label}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{label}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = |s: &str| if s.is_empty() { String::new() } else { format!("{{{s}}}") };
        let _ = writeln!(out, "{name}_sum{} {}", braces(label), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(label), self.count);
    }
}

/// What `/metrics` shows per model.
#[derive(Debug, Default, Clone)]
struct ModelStats {
    latency: Histogram,
    ttfb: Histogram,
    tokens_in: u64,
    tokens_out: u64,
    cost_micros: u64,
    fallbacks: u64,
    retries: u64,
    /// Upstream calls made to it, and those that failed (a client error is not its failure).
    calls: u64,
    failed_calls: u64,
}

/// Appends the connections' figures: open now, refused at the cap, closed idle.
pub fn render_connections(out: &mut String, open: u64, refused: u64, idle_closed: u64) {
    out.push_str("# HELP yardmaster_connections Client connections open.\n# TYPE yardmaster_connections gauge\n");
    let _ = writeln!(out, "yardmaster_connections {open}");
    out.push_str("# HELP yardmaster_connections_refused_total Connections closed at once because `limits.max_connections` were open.\n# TYPE yardmaster_connections_refused_total counter\n");
    let _ = writeln!(out, "yardmaster_connections_refused_total {refused}");
    out.push_str("# HELP yardmaster_connections_idle_closed_total Connections closed after sending nothing for the header timeout.\n# TYPE yardmaster_connections_idle_closed_total counter\n");
    let _ = writeln!(out, "yardmaster_connections_idle_closed_total {idle_closed}");
}

/// Appends the trace exporter's figures: spans exported, and spans dropped (queue full, or the
/// collector down or slow).
pub fn render_traces(out: &mut String, exported: u64, dropped: u64) {
    out.push_str("# HELP yardmaster_trace_spans_exported_total Spans the trace collector accepted.\n# TYPE yardmaster_trace_spans_exported_total counter\n");
    let _ = writeln!(out, "yardmaster_trace_spans_exported_total {exported}");
    out.push_str("# HELP yardmaster_trace_spans_dropped_total Spans dropped: the export queue was full, or the collector failed or timed out.\n# TYPE yardmaster_trace_spans_dropped_total counter\n");
    let _ = writeln!(out, "yardmaster_trace_spans_dropped_total {dropped}");
}

/// Appends each budgeted key's spend this period and its budget (name, spent USD, budget USD).
pub fn render_budgets(out: &mut String, keys: &[(String, f64, f64)]) {
    out.push_str("# HELP yardmaster_key_spend_usd Spend this budget period per key (settled; reservations excluded).\n# TYPE yardmaster_key_spend_usd gauge\n");
    for (k, spent, _) in keys {
        let _ = writeln!(out, "yardmaster_key_spend_usd{{key=\"{}\"}} {spent}", esc(k));
    }
    out.push_str(
        "# HELP yardmaster_key_budget_usd Budget per period per key.\n# TYPE yardmaster_key_budget_usd gauge\n",
    );
    for (k, _, budget) in keys {
        let _ = writeln!(out, "yardmaster_key_budget_usd{{key=\"{}\"}} {budget}", esc(k));
    }
}

/// Appends the shared store's figures: whether Redis answers, the calls that failed, and the
/// round trips.
pub fn render_redis(out: &mut String, h: &crate::state::shared::Health) {
    let (up, errors, round_trips) = (h.up(), h.errors(), h.round_trips());
    out.push_str("# HELP yardmaster_redis_up Whether Redis (storage.redis) answered the last ping.\n# TYPE yardmaster_redis_up gauge\n");
    let _ = writeln!(out, "yardmaster_redis_up {}", u8::from(up));
    out.push_str("# HELP yardmaster_redis_errors_total Calls to Redis that failed or timed out.\n# TYPE yardmaster_redis_errors_total counter\n");
    let _ = writeln!(out, "yardmaster_redis_errors_total {errors}");
    out.push_str("# HELP yardmaster_redis_round_trips_total Round trips to Redis (a call, or a pipeline of them).\n# TYPE yardmaster_redis_round_trips_total counter\n");
    let _ = writeln!(out, "yardmaster_redis_round_trips_total {round_trips}");
    let (queued, cache_bytes) = h.queued();
    out.push_str("# HELP yardmaster_redis_writes_queued Writes waiting for Redis (settlements, limits, breaker openings, cache stores).\n# TYPE yardmaster_redis_writes_queued gauge\n");
    let _ = writeln!(out, "yardmaster_redis_writes_queued {queued}");
    out.push_str("# HELP yardmaster_redis_writes_queued_bytes Bytes of cache entries waiting for Redis.\n# TYPE yardmaster_redis_writes_queued_bytes gauge\n");
    let _ = writeln!(out, "yardmaster_redis_writes_queued_bytes {cache_bytes}");
    let (cache, state) = h.dropped();
    out.push_str("# HELP yardmaster_redis_writes_dropped_total Writes for Redis dropped because the queue was at its bound.\n# TYPE yardmaster_redis_writes_dropped_total counter\n");
    let _ = writeln!(out, "yardmaster_redis_writes_dropped_total{{kind=\"cache\"}} {cache}");
    let _ = writeln!(out, "yardmaster_redis_writes_dropped_total{{kind=\"state\"}} {state}");
}

/// The ledger writer's counters, read when rendering.
#[derive(Debug, Default, Clone, Copy)]
pub struct LedgerFigures {
    /// Rows committed.
    pub written: u64,
    /// Failed commits.
    pub write_failures: u64,
    /// Rows waiting.
    pub pending: u64,
    /// Rows dropped.
    pub dropped: u64,
    /// Requests that waited for the writer (its queue full).
    pub backpressure: u64,
    /// Request-log lines written.
    pub log_written: u64,
    /// Request-log lines dropped (over the waiting lines' budget, or the file failed).
    pub log_dropped: u64,
}

type Requests = BTreeMap<String, RuleCounts>;

/// One rule's requests: model -> provider -> status -> count, and its last hour by the minute
/// (the admin page's plot), counted under the same lock.
#[derive(Debug, Default)]
struct RuleCounts {
    models: BTreeMap<String, BTreeMap<String, BTreeMap<u16, u64>>>,
    minutes: Minutes,
}

fn slot<'m, V: Default>(m: &'m mut BTreeMap<String, V>, k: &str) -> &'m mut V {
    if !m.contains_key(k) {
        m.insert(k.to_string(), V::default());
    }
    match m.get_mut(k) {
        Some(v) => v,
        // INVARIANT: the key was inserted just above.
        None => unreachable!("metrics slot vanished"),
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Counts a request.
    pub fn request(&self, rule: &str, model: &str, provider: &str, status: u16) {
        let now = minute_now();
        let mut m = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = slot(&mut m, rule);
        *slot(slot(&mut r.models, model), provider).entry(status).or_default() += 1;
        r.minutes.advance(now);
        r.minutes.counts[(now % 60) as usize] += 1;
    }

    /// Every rule that matched a request: hits, errors, and its last hour minute by minute.
    pub fn rules(&self) -> BTreeMap<String, RuleFigures> {
        let now = minute_now();
        let requests = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        requests
            .iter()
            .map(|(rule, counts)| {
                let statuses = counts.models.values().flat_map(BTreeMap::values).flat_map(BTreeMap::iter);
                let (hits, errors) =
                    statuses.fold((0, 0), |(h, e), (s, n)| (h + n, e + if *s >= 400 { n } else { &0 }));
                let last_hour = counts.minutes.series(now);
                let per_minute = f64::from(last_hour[55..].iter().sum::<u32>()) / 5.0;
                (rule.clone(), RuleFigures { hits, errors, per_minute, last_hour })
            })
            .collect()
    }

    /// Every model that was called: calls, failed calls and mean latencies. Counted per attempt,
    /// so that a model whose first attempt always fails shows those failures even when another
    /// model answered the request.
    pub fn models(&self) -> BTreeMap<String, ModelFigures> {
        let mut out: BTreeMap<String, ModelFigures> = BTreeMap::new();
        let models = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mean = |h: &Histogram| (h.count > 0).then(|| h.sum * 1000.0 / h.count as f64);
        for (model, s) in models.iter() {
            let f = out.entry(model.clone()).or_default();
            f.requests = s.calls;
            f.errors = s.failed_calls;
            f.mean_latency_ms = mean(&s.latency);
            f.mean_ttfb_ms = mean(&s.ttfb);
        }
        out
    }

    fn model<R>(&self, model: &str, f: impl FnOnce(&mut ModelStats) -> R) -> R {
        let mut m = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(slot(&mut m, model))
    }

    /// Records a finished request to `model`: its latency, tokens and cost.
    pub fn finished(&self, model: &str, latency_secs: f64, tokens_in: u64, tokens_out: u64, cost_micros: u64) {
        self.model(model, |s| {
            s.latency.observe(latency_secs);
            s.tokens_in += tokens_in;
            s.tokens_out += tokens_out;
            s.cost_micros += cost_micros;
        });
    }

    /// Counts a reply whose reported usage was cut to what its request could use.
    pub fn usage_capped(&self) {
        self.usage_capped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records one upstream call to `model`, and whether it failed.
    pub fn attempt(&self, model: &str, failed: bool) {
        self.model(model, |s| {
            s.calls += 1;
            s.failed_calls += u64::from(failed);
        });
    }

    /// Records the time to first byte of a successful attempt.
    pub fn ttfb(&self, model: &str, secs: f64) {
        self.model(model, |s| s.ttfb.observe(secs));
    }

    /// Records a request's overhead: its time minus the time spent waiting on providers.
    pub fn overhead(&self, secs: f64) {
        self.overhead.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.observe(secs);
    }

    /// Counts a retry of `model` (the same target again).
    pub fn retry(&self, model: &str) {
        self.model(model, |s| s.retries += 1);
    }

    /// Counts a fallback away from `model` (the chain moved on after it failed).
    pub fn fallback(&self, model: &str) {
        self.model(model, |s| s.fallbacks += 1);
    }

    /// Counts a refusal: `rpm`, `tpm` or `budget`.
    pub fn refused(&self, why: &'static str) {
        *self.refusals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(why).or_default() += 1;
    }

    /// Counts a cache verdict for `rule` (`hit`, `miss`, `bypass`) and what a hit saved.
    pub fn cache(&self, rule: &str, result: &'static str, saved_micros: u64) {
        let mut c = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot(&mut c.0, rule).entry(result).or_default() += 1;
        c.1 = c.1.saturating_add(saved_micros);
    }

    /// Renders the cache's families: requests by rule and result, the money saved, the bytes held.
    pub fn render_cache(&self, out: &mut String, bytes: u64) {
        let c = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        out.push_str("# HELP yardmaster_cache_requests_total Requests to rules with a cache, by rule and result (hit, miss, bypass).\n# TYPE yardmaster_cache_requests_total counter\n");
        for (rule, results) in &c.0 {
            for (result, n) in results {
                let _ =
                    writeln!(out, "yardmaster_cache_requests_total{{rule=\"{}\",result=\"{result}\"}} {n}", esc(rule));
            }
        }
        out.push_str("# HELP yardmaster_cache_saved_usd_total What cache hits saved: the cost of the answers they replayed.\n# TYPE yardmaster_cache_saved_usd_total counter\n");
        let _ = writeln!(out, "yardmaster_cache_saved_usd_total {}", crate::accounting::usage::usd(c.1));
        out.push_str(
            "# HELP yardmaster_cache_bytes Bytes of answers the cache holds.\n# TYPE yardmaster_cache_bytes gauge\n",
        );
        let _ = writeln!(out, "yardmaster_cache_bytes {bytes}");
    }

    /// Renders every metric.
    pub fn render(
        &self,
        version: &str,
        reloads_ok: u64,
        reloads_failed: u64,
        breakers: &[(String, u8)],
        ledger: Option<LedgerFigures>,
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP yardmaster_requests_total Requests by rule, model, provider and status.\n# TYPE yardmaster_requests_total counter\n");
        let m = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (rule, counts) in m.iter() {
            for (model, providers) in &counts.models {
                for (provider, statuses) in providers {
                    for (status, n) in statuses {
                        let _ = writeln!(
                            out,
                            "yardmaster_requests_total{{rule=\"{}\",model=\"{}\",provider=\"{}\",status=\"{status}\"}} {n}",
                            esc(rule),
                            esc(model),
                            esc(provider)
                        );
                    }
                }
            }
        }
        out.push_str("# HELP yardmaster_policy_reloads_total Policy reloads by result.\n# TYPE yardmaster_policy_reloads_total counter\n");
        let _ = writeln!(out, "yardmaster_policy_reloads_total{{result=\"ok\"}} {reloads_ok}");
        let _ = writeln!(out, "yardmaster_policy_reloads_total{{result=\"failed\"}} {reloads_failed}");
        out.push_str("# HELP yardmaster_policy_info The live policy version.\n# TYPE yardmaster_policy_info gauge\n");
        let _ = writeln!(out, "yardmaster_policy_info{{version=\"{}\"}} 1", esc(version));
        out.push_str("# HELP yardmaster_breaker_state Breaker state per model: 0 closed, 1 half-open, 2 open.\n# TYPE yardmaster_breaker_state gauge\n");
        for (model, state) in breakers {
            let _ = writeln!(out, "yardmaster_breaker_state{{model=\"{}\"}} {state}", esc(model));
        }
        let models = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        out.push_str("# HELP yardmaster_request_duration_seconds Time from a request's arrival to its end, by the model that answered.\n# TYPE yardmaster_request_duration_seconds histogram\n");
        for (m, s) in &models {
            s.latency.render(&mut out, "yardmaster_request_duration_seconds", &format!("model=\"{}\"", esc(m)));
        }
        out.push_str("# HELP yardmaster_upstream_ttfb_seconds Time to the upstream's first byte, by model.\n# TYPE yardmaster_upstream_ttfb_seconds histogram\n");
        for (m, s) in &models {
            s.ttfb.render(&mut out, "yardmaster_upstream_ttfb_seconds", &format!("model=\"{}\"", esc(m)));
        }
        out.push_str("# HELP yardmaster_overhead_seconds The gateway's own time per request: its total time minus the time spent waiting on providers (a stream: to its response head).\n# TYPE yardmaster_overhead_seconds histogram\n");
        let overhead = self.overhead.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone();
        overhead.render(&mut out, "yardmaster_overhead_seconds", "");
        out.push_str(
            "# HELP yardmaster_tokens_total Tokens by model and direction.\n# TYPE yardmaster_tokens_total counter\n",
        );
        for (m, s) in &models {
            let _ = writeln!(out, "yardmaster_tokens_total{{model=\"{}\",direction=\"in\"}} {}", esc(m), s.tokens_in);
            let _ = writeln!(out, "yardmaster_tokens_total{{model=\"{}\",direction=\"out\"}} {}", esc(m), s.tokens_out);
        }
        out.push_str(
            "# HELP yardmaster_cost_usd_total Spend by model, USD.\n# TYPE yardmaster_cost_usd_total counter\n",
        );
        for (m, s) in &models {
            let _ = writeln!(
                out,
                "yardmaster_cost_usd_total{{model=\"{}\"}} {}",
                esc(m),
                crate::accounting::usage::usd(s.cost_micros)
            );
        }
        out.push_str("# HELP yardmaster_fallbacks_total Times a chain moved on after the model failed.\n# TYPE yardmaster_fallbacks_total counter\n");
        for (m, s) in &models {
            let _ = writeln!(out, "yardmaster_fallbacks_total{{model=\"{}\"}} {}", esc(m), s.fallbacks);
        }
        out.push_str(
            "# HELP yardmaster_retries_total Retries of the same model.\n# TYPE yardmaster_retries_total counter\n",
        );
        for (m, s) in &models {
            let _ = writeln!(out, "yardmaster_retries_total{{model=\"{}\"}} {}", esc(m), s.retries);
        }
        out.push_str("# HELP yardmaster_refused_total Requests refused by a rate limit or budget.\n# TYPE yardmaster_refused_total counter\n");
        let refusals = self.refusals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for why in ["rpm", "tpm", "budget"] {
            let _ = writeln!(
                out,
                "yardmaster_refused_total{{reason=\"{why}\"}} {}",
                refusals.get(why).copied().unwrap_or(0)
            );
        }
        out.push_str("# HELP yardmaster_usage_capped_total Replies whose reported usage was more than their request could use, charged at the cap.\n# TYPE yardmaster_usage_capped_total counter\n");
        let _ = writeln!(
            out,
            "yardmaster_usage_capped_total {}",
            self.usage_capped.load(std::sync::atomic::Ordering::Relaxed)
        );
        if let Some(l) = ledger {
            out.push_str("# HELP yardmaster_ledger_records_total Ledger rows committed.\n# TYPE yardmaster_ledger_records_total counter\n");
            let _ = writeln!(out, "yardmaster_ledger_records_total {}", l.written);
            out.push_str("# HELP yardmaster_ledger_write_failures_total Ledger commits that failed and were retried.\n# TYPE yardmaster_ledger_write_failures_total counter\n");
            let _ = writeln!(out, "yardmaster_ledger_write_failures_total {}", l.write_failures);
            out.push_str("# HELP yardmaster_ledger_dropped_total Ledger rows dropped after the disk failed for too long.\n# TYPE yardmaster_ledger_dropped_total counter\n");
            let _ = writeln!(out, "yardmaster_ledger_dropped_total {}", l.dropped);
            out.push_str("# HELP yardmaster_ledger_pending Ledger rows waiting to be committed.\n# TYPE yardmaster_ledger_pending gauge\n");
            let _ = writeln!(out, "yardmaster_ledger_pending {}", l.pending);
            out.push_str("# HELP yardmaster_ledger_backpressure_total Requests that waited because the ledger's queue was full.\n# TYPE yardmaster_ledger_backpressure_total counter\n");
            let _ = writeln!(out, "yardmaster_ledger_backpressure_total {}", l.backpressure);
            out.push_str("# HELP yardmaster_request_log_lines_total Request-log lines written.\n# TYPE yardmaster_request_log_lines_total counter\n");
            let _ = writeln!(out, "yardmaster_request_log_lines_total {}", l.log_written);
            out.push_str("# HELP yardmaster_request_log_dropped_total Request-log lines dropped (the waiting lines over their budget, or the file failed).\n# TYPE yardmaster_request_log_dropped_total counter\n");
            let _ = writeln!(out, "yardmaster_request_log_dropped_total {}", l.log_dropped);
        }
        out
    }
}
