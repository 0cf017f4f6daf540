//! Request handlers. Checks run in the order SPEC §9 gives: auth (401), body limit (413),
//! parsing (400), the key's model allowlist (403), rate limits (429), the policy (403 for `deny`,
//! 404 for an unknown requested model), the budget (402 when it excludes every target), then
//! dispatch (502/503 when every target failed or none could be tried). Every chat and embeddings
//! request that passes auth is settled exactly once: its reservations are replaced by the real
//! cost, and its ledger row (and request-log line) is written.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Timelike};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::accounting::requestlog::{Entry, Facts};
use crate::accounting::{budget, usage, Charge, Rate, Record, Usage};
use crate::catalog::Endpoint;
use crate::dispatch::{self, Failure, HealthView, Target};
use crate::policy::eval::Scratch;
use crate::policy::eval::{Budget, Context, RequestFacts};
use crate::providers::Reply;
use crate::reload::{Key, Snapshot};

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// What the `x-yardmaster-*` headers say, filled in as the request goes.
#[derive(Default)]
struct Route {
    id: String,
    policy: String,
    rule: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    upstream: Option<String>,
    attempts: usize,
    cost_micros: Option<u64>,
    /// The request's charge, until it is settled (or handed to a stream).
    charge: Option<Charge>,
    started: Option<std::time::Instant>,
}

impl Route {
    fn new(snap: &Snapshot) -> Route {
        Route {
            id: request_id(),
            policy: snap.version().to_string(),
            started: Some(std::time::Instant::now()),
            ..Route::default()
        }
    }

    fn apply(&self, resp: &mut Response) {
        let h = resp.headers_mut();
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
        if let Some(c) = self.cost_micros {
            set(names::COST, &format!("{:.6}", usage::usd(c)));
        }
        h.insert(names::ATTEMPTS, HeaderValue::from(self.attempts));
    }
}

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
}

/// A unique request id: a random prefix chosen at startup and a counter (no syscall per request).
fn request_id() -> String {
    use std::sync::atomic::AtomicU64;
    use std::sync::OnceLock;
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let v = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))?;
    Some(v.trim())
}

/// Auth: the calling key, `None` for an open gateway.
fn authenticate<'s>(snap: &'s Snapshot, headers: &HeaderMap) -> Result<Option<&'s Key>, ApiError> {
    if snap.config.config.keys.is_empty() {
        return Ok(None);
    }
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing API key: send `Authorization: Bearer KEY`")
            .code("missing_api_key")
    })?;
    snap.key(token)
        .map(Some)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key").code("invalid_api_key"))
}

async fn read_body(st: &AppState, snap: &Snapshot, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limit = snap.config.config.limits.max_body_bytes;
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(st.timeouts.body_read, limited.collect()).await {
        Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request body was not received in time")
            .code("body_timeout")),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {limit} bytes"))
                .code("body_too_large"))
        }
        Ok(Err(_)) => Err(ApiError::bad_request("the request body could not be read")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(v)
}

/// Budget facts: `spent` is settled spend; `remaining` also leaves out what requests in flight
/// have reserved.
fn budget_facts(limit_usd: Option<f64>, standing: budget::Standing) -> Budget {
    let mut b = Budget::from_limit(limit_usd, usage::usd(standing.spent));
    if let (Some(limit), Some(_)) = (limit_usd, b.remaining_usd) {
        let left = (limit - usage::usd(standing.spent + standing.reserved)).max(0.0);
        b.remaining_usd = Some(left);
        b.remaining_fraction = Some(if limit > 0.0 { left / limit } else { 0.0 });
    }
    b
}

/// The key's budget standing (loaded from the ledger the first time the key is seen).
async fn standing(st: &AppState, key: Option<&Key>) -> budget::Standing {
    match key.and_then(|k| k.budget.map(|b| (k, b))) {
        Some((k, b)) => st.accounting.budgets.standing(&k.name, b.per, st.accounting.ledger.as_ref()).await,
        None => budget::Standing::default(),
    }
}

fn context<'a>(key: Option<&'a Key>, health: &'a HealthView<'a>, standing: budget::Standing) -> Context<'a> {
    let now = chrono::Utc::now();
    Context {
        tier: key.and_then(|k| k.tier.as_deref()),
        key_name: key.map(|k| k.name.as_str()),
        budget: budget_facts(key.and_then(|k| k.budget.map(|b| b.usd)), standing),
        health,
        hour: u8::try_from(now.hour()).unwrap_or(0),
        weekday: u8::try_from(now.weekday().num_days_from_monday()).unwrap_or(0),
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    if let Some(b) = &st.busy {
        b.touch();
    }
    // The request's own headers, not a copy of them (as axum's `HeaderMap` extractor makes).
    let (parts, body) = req.into_parts();
    let snap = st.reloader.snapshot();
    let mut route = Route::new(&snap);
    let result = complete(&st, &snap, &parts.headers, body, Endpoint::Chat, &mut route).await;
    finish(&st, route, result)
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    if let Some(b) = &st.busy {
        b.touch();
    }
    // The request's own headers, not a copy of them (as axum's `HeaderMap` extractor makes).
    let (parts, body) = req.into_parts();
    let snap = st.reloader.snapshot();
    let mut route = Route::new(&snap);
    let result = complete(&st, &snap, &parts.headers, body, Endpoint::Embeddings, &mut route).await;
    finish(&st, route, result)
}

fn finish(st: &AppState, mut route: Route, result: Result<Response, ApiError>) -> Response {
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(request_id = %route.id, status = e.status.as_u16(), error = %e.message, "request failed");
            } else {
                tracing::debug!(request_id = %route.id, status = e.status.as_u16(), error = %e.message, "request refused");
            }
            e.into_response()
        }
    };
    if let Some(charge) = route.charge.take() {
        // Refused or failed before any reply: nothing was spent, and the row says why.
        settle(st, charge, Usage::default(), resp.status().as_u16());
    }
    route.apply(&mut resp);
    st.metrics.request(
        route.rule.as_deref().unwrap_or(""),
        route.model.as_deref().unwrap_or(""),
        route.provider.as_deref().unwrap_or(""),
        resp.status().as_u16(),
    );
    resp
}

/// Settles a charge and counts it in `/metrics`.
pub(super) fn settle(st: &AppState, charge: Charge, usage: Usage, status: u16) -> u64 {
    let model = charge.record.model.clone();
    let latency = charge.started.elapsed().as_secs_f64();
    let s = st.accounting.settle(charge, usage, status);
    if let Some(m) = model {
        st.metrics.finished(&m, latency, s.usage.input, s.usage.output, s.cost_micros);
    }
    s.cost_micros
}

fn rate_limited(wait: std::time::Duration, what: &str) -> ApiError {
    let secs = crate::accounting::limits::retry_after_secs(wait);
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("rate limit exceeded: too many {what} for this key; retry in {secs} s"),
    )
    .code("rate_limit_exceeded");
    e.retry_after = Some(secs);
    e
}

/// Counts retries and fallbacks from the attempts: a call followed by another call of the same
/// model is a retry; a failed model followed by another is a fallback.
fn count_attempts(st: &AppState, attempts: &[dispatch::Attempt]) {
    for w in attempts.windows(2) {
        if let [a, b] = w {
            if a.model == b.model && a.called && b.called {
                st.metrics.retry(&a.model);
            } else if a.model != b.model {
                st.metrics.fallback(&a.model);
            }
        }
    }
}

/// A whole JSON reply: usage from the reply (or counted), settled, `model` set to the catalog name,
/// `usage` (with its cost) added when missing.
fn json_reply(st: &AppState, route: &mut Route, charge: Charge, mut v: Value, model: &str, prompt: &str) -> Response {
    let used = usage::reported(&v).unwrap_or_else(|| {
        let mut text = String::new();
        usage::completion_text(&v, &mut text);
        Usage { input: crate::util::tokens::count(prompt), output: crate::util::tokens::count(&text), estimated: true }
    });
    let cost = settle(st, charge, used, 200);
    route.cost_micros = Some(cost);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("model".into(), Value::String(model.to_string()));
        if !obj.contains_key("usage") {
            obj.insert(
                "usage".into(),
                json!({"prompt_tokens": used.input, "completion_tokens": used.output, "total_tokens": used.input + used.output}),
            );
        }
    }
    usage::set_cost(&mut v, cost);
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// A raw OpenAI reply as it goes back: every member as it came, but `model` (the catalog name)
/// and `usage` (with its cost).
struct RawOut<'a> {
    raw: &'a crate::providers::native::RawObject,
    model: &'a str,
    usage: &'a Value,
}

impl serde::Serialize for RawOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.raw.iter() {
            match k {
                "model" => m.serialize_entry(k, self.model)?,
                "usage" => m.serialize_entry(k, self.usage)?,
                _ => m.serialize_entry(k, v)?,
            }
        }
        if !self.raw.contains_key("model") {
            m.serialize_entry("model", self.model)?;
        }
        m.end()
    }
}

async fn complete(
    st: &Arc<AppState>,
    snap: &Arc<Snapshot>,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
    route: &mut Route,
) -> Result<Response, ApiError> {
    let key = authenticate(snap, headers)?;
    route.charge = Some(Charge {
        record: Record {
            id: route.id.clone(),
            key: key.map(|k| k.name.clone()),
            policy: route.policy.clone(),
            ..Record::default()
        },
        rate: Rate::default(),
        reserved_micros: 0,
        reserved_tokens: 0,
        log: None,
        started: route.started.unwrap_or_else(std::time::Instant::now),
    });
    let bytes = read_body(st, snap, body).await?;
    let json = parse_json(&bytes)?;
    let facts = match endpoint {
        Endpoint::Chat => RequestFacts::from_chat(&json),
        Endpoint::Embeddings => RequestFacts::from_embeddings(&json),
    }
    .map_err(|e| {
        let param = if endpoint == Endpoint::Chat { "messages" } else { "input" };
        ApiError::bad_request(e.to_string()).param(param)
    })?;
    let Some(requested) = facts.model.clone() else {
        return Err(ApiError::bad_request("`model` is required (use \"auto\" to let the policy choose)").param("model"));
    };
    let facts = if snap.program.info.reads_headers {
        facts.with_headers(headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))))
    } else {
        facts
    };
    let allowed = key.and_then(|k| k.models.as_ref());
    if let Some(list) = allowed {
        if requested != "auto" && !list.contains(&requested) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, format!("this key may not use the model `{requested}`"))
                .code("model_not_allowed")
                .param("model"));
        }
    }
    let prompt_bytes = facts.prompt.len() as u64;
    if let Some(k) = key {
        let limits = k.limits.unwrap_or_default();
        if let Some(rpm) = limits.rpm {
            if let Err(wait) = st.accounting.limits.check_rpm(&k.name, rpm) {
                st.metrics.refused("rpm");
                return Err(rate_limited(wait, "requests per minute"));
            }
        }
        if let Some(tpm) = limits.tpm {
            // Admitted against the worst case; settled with the real usage.
            let tokens = prompt_bytes + facts.max_tokens.unwrap_or(4096);
            if let Err(wait) = st.accounting.limits.reserve_tpm(&k.name, tpm, tokens) {
                st.metrics.refused("tpm");
                return Err(rate_limited(wait, "tokens per minute"));
            }
            if let Some(c) = route.charge.as_mut() {
                c.reserved_tokens = tokens;
            }
        }
    }
    let standing = standing(st, key).await;
    let catalog = snap.program.catalog();
    let (routing, (budget_facts, hour, weekday)) = {
        // The context borrows the (non-Send) health view: keep it out of the awaits below.
        let view = HealthView { registry: &st.health, catalog };
        let ctx = context(key, &view, standing);
        let r = SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            snap.program.route(&facts, &ctx, &mut s)
        });
        (r, (ctx.budget, ctx.hour, ctx.weekday))
    };
    let plan = &routing.steps;
    route.rule = Some(routing.rule.to_string());
    if let Some(c) = route.charge.as_mut() {
        c.record.rule.clone_from(&route.rule);
    }
    if st.accounting.request_log {
        let mut f = log_facts(&facts, &snap.program.info.headers, st.accounting.log_prompts);
        if routing.tokens.is_some() {
            f.prompt_tokens = routing.tokens;
        }
        f.tier = key.and_then(|k| k.tier.clone());
        f.budget_usd = key.and_then(|k| k.budget.map(|b| b.usd));
        f.budget_spent_usd = budget_facts.spent_usd;
        (f.hour, f.weekday) = (hour, weekday);
        if let Some(c) = route.charge.as_mut() {
            c.log = Some(Entry { facts: f, ..Entry::default() });
        }
    }
    if let Some((status, message)) = plan.iter().find_map(|s| s.deny) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        return Err(ApiError::new(status, message.to_string()).code("policy_denied"));
    }
    if routing.unknown_requested.is_some() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("the model `{requested}` does not exist"))
            .code("model_not_found")
            .param("model"));
    }
    let mut skipped: Vec<String> =
        plan.iter().filter(|s| !s.taken).map(|s| format!("{}: {}", s.name, s.reason)).collect();
    let mut targets = Vec::new();
    for step in plan.iter().filter(|s| s.taken) {
        let Some(model) = step.model.and_then(|m| catalog.get(m)) else { continue };
        if allowed.is_some_and(|l| !l.contains(&model.name)) {
            skipped.push(format!("{}: skipped: not allowed for this key", model.name));
            continue;
        }
        let Some(provider) = snap.providers.get(&model.provider) else { continue };
        let max_tokens = crate::policy::eval::plan::max_tokens(facts.max_tokens, step.with);
        let (input, output) = budget::worst_case_tokens(prompt_bytes, max_tokens, model.context);
        targets.push(Target {
            model: &model.name,
            upstream_id: &model.upstream_id,
            provider_name: &model.provider,
            provider,
            with: step.with,
            reserve_micros: Rate::of(model.price).cost_micros(input, output),
        });
    }
    if targets.is_empty() {
        let why = if skipped.is_empty() { "the rule has no target".to_string() } else { skipped.join("; ") };
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("no target could be tried ({why})"))
            .code("no_target"));
    }
    let opts = dispatch::Options {
        retries: routing.retries,
        timeout: routing.timeout_ms.map_or(dispatch::DEFAULT_TIMEOUT, std::time::Duration::from_millis),
        ..dispatch::Options::default()
    };
    let stream = endpoint == Endpoint::Chat && facts.stream;
    let limit = key.and_then(|k| k.budget.map(|b| (k, crate::accounting::usage::micros(b.usd))));
    let gate = limit.map(|(k, limit)| crate::accounting::Gate { budgets: &st.accounting.budgets, key: &k.name, limit });
    match dispatch::run(&st.health, &targets, &json, stream, endpoint, opts, gate).await {
        Ok(ok) => {
            route.attempts = ok.attempts.iter().filter(|a| a.called).count();
            route.model = Some(ok.model.clone());
            route.provider = Some(ok.provider.clone());
            route.upstream = Some(ok.upstream_id.clone());
            count_attempts(st, &ok.attempts);
            st.metrics.ttfb(&ok.model, ok.ttfb.as_secs_f64());
            let rate = Rate::of(catalog.by_name(&ok.model).and_then(|m| m.price));
            let Some(mut charge) = route.charge.take() else {
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the request lost its charge"));
            };
            charge.rate = rate;
            charge.reserved_micros = ok.reserved_micros;
            charge.record.model = Some(ok.model.clone());
            charge.record.provider = Some(ok.provider.clone());
            match ok.reply {
                Reply::Json(v) => Ok(json_reply(st, route, charge, v, &ok.model, &facts.prompt)),
                Reply::Raw(raw) => {
                    let usage = raw.get("usage").and_then(|u| serde_json::from_str::<Value>(u.get()).ok());
                    match usage.as_ref().and_then(usage::reported_usage).zip(usage) {
                        Some((used, mut usage)) => {
                            let cost = settle(st, charge, used, 200);
                            route.cost_micros = Some(cost);
                            if let Some(u) = usage.as_object_mut() {
                                u.insert("cost".into(), json!(usage::usd(cost)));
                            }
                            let body = serde_json::to_vec(&RawOut { raw: &raw, model: &ok.model, usage: &usage });
                            let json =
                                [(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
                            Ok((StatusCode::OK, json, body.unwrap_or_default()).into_response())
                        }
                        // Without a usable usage block: counted, as any other reply.
                        None => {
                            let v =
                                raw.into_iter().map(|(k, v)| (k, serde_json::from_str(v.get()).unwrap_or(Value::Null)));
                            Ok(json_reply(st, route, charge, Value::Object(v.collect()), &ok.model, &facts.prompt))
                        }
                    }
                }
                Reply::Stream(events) => {
                    let client_wants_usage =
                        json.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
                    let tally = super::stream::Tally::new(st.clone(), charge, facts.prompt, client_wants_usage);
                    Ok(super::stream::relay(events, ok.model, st.timeouts.stream_idle, tally))
                }
            }
        }
        Err(f) => {
            route.attempts = f.attempts().iter().filter(|a| a.called).count();
            count_attempts(st, f.attempts());
            if let Some(c) = route.charge.as_mut() {
                c.record.model = f.attempts().last().map(|a| a.model.clone());
                c.record.provider = f.attempts().last().map(|a| a.provider.clone());
            }
            if let Failure::NoneTried(a) = &f {
                if !a.is_empty() && a.iter().all(|a| a.outcome == dispatch::OVER_BUDGET) {
                    st.metrics.refused("budget");
                    return Err(ApiError::new(
                        StatusCode::PAYMENT_REQUIRED,
                        "the key's budget for this period is spent: no target's worst-case cost fits what remains",
                    )
                    .code("budget_exceeded"));
                }
            }
            let list = f
                .attempts()
                .iter()
                .map(|a| format!("{} via {}: {}", a.model, a.provider, a.outcome))
                .collect::<Vec<_>>()
                .join("; ");
            Err(match f {
                Failure::Client { status, body, model, provider, .. } => {
                    route.model = Some(model);
                    route.provider = Some(provider);
                    let mut e = ApiError::new(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                        "the upstream refused the request",
                    );
                    e.upstream_body = Some(body);
                    e
                }
                Failure::AllFailed(_) => ApiError::new(StatusCode::BAD_GATEWAY, format!("every target failed: {list}"))
                    .code("upstream_failed"),
                Failure::NoneTried(_) => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("no target could be tried: {list}"))
                        .code("no_target")
                }
            })
        }
    }
}

/// `GET /v1/models`: `auto` and the catalog.
pub async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let route = Route::new(&snap);
    let result = authenticate(&snap, &headers).map(|_| {
        let mut data = vec![json!({"id": "auto", "object": "model", "created": 0, "owned_by": "yardmaster"})];
        for m in snap.program.catalog().models() {
            data.push(json!({
                "id": m.name, "object": "model", "created": 0, "owned_by": m.provider,
                "context_length": m.context, "endpoint": m.endpoint.as_str(), "tags": m.tags,
                "pricing": m.price.map(|p| json!({"input": p.input, "output": p.output, "unit": "USD per million tokens"})),
            }));
        }
        axum::Json(json!({"object": "list", "data": data})).into_response()
    });
    finish(&st, route, result)
}

/// `GET /v1/key`: the calling key.
pub async fn key(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let route = Route::new(&snap);
    let result = match authenticate(&snap, &headers) {
        Err(e) => Err(e),
        Ok(None) => Ok(axum::Json(
            json!({"name": null, "tier": null, "open": true, "spend_usd": null, "budget": null, "limits": null}),
        )
        .into_response()),
        Ok(Some(k)) => {
            let s = standing(&st, Some(k)).await;
            let b = budget_facts(k.budget.map(|b| b.usd), s);
            let period_start = k.budget.map(|b| {
                let ms = budget::period_start(b.per, chrono::Utc::now().timestamp_millis());
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default()
            });
            Ok(axum::Json(json!({
                "name": k.name, "tier": k.tier, "open": false,
                "spend_usd": usage::usd(s.spent),
                "reserved_usd": usage::usd(s.reserved),
                "budget": k.budget.map(|bc| json!({
                    "usd": bc.usd, "per": bc.per, "period_start": period_start,
                    "spent_usd": usage::usd(s.spent), "remaining_usd": b.remaining_usd,
                })),
                "limits": k.limits,
                "models": k.models,
            }))
            .into_response())
        }
    };
    finish(&st, route, result)
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 once a policy is loaded and the listener is up.
pub async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if st.ready.load(Ordering::SeqCst) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let snap = st.reloader.snapshot();
    let breakers: Vec<(String, u8)> = st
        .health
        .states()
        .into_iter()
        .map(|(m, s)| {
            let n = match s {
                dispatch::health::BreakerState::Closed => 0,
                dispatch::health::BreakerState::HalfOpen => 1,
                dispatch::health::BreakerState::Open => 2,
            };
            (m, n)
        })
        .collect();
    let ledger = st.accounting.ledger.as_ref().map(|l| super::metrics::LedgerFigures {
        written: l.stats.written.load(Ordering::Relaxed),
        write_failures: l.stats.write_failures.load(Ordering::Relaxed),
        pending: l.stats.pending.load(Ordering::Relaxed),
        dropped: l.stats.dropped.load(Ordering::Relaxed),
    });
    let text = st.metrics.render(
        snap.version(),
        st.reloader.reloads_ok.load(Ordering::Relaxed),
        st.reloader.reloads_failed.load(Ordering::Relaxed),
        &breakers,
        ledger,
    );
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn admin(snap: &Snapshot, headers: &HeaderMap) -> Result<(), ApiError> {
    if snap.admin.is_none() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "admin access is disabled: set `admin: { key_env: ... }`")
            .code("admin_disabled"));
    }
    match bearer(headers) {
        Some(t) if snap.is_admin(t) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid admin key").code("invalid_api_key")),
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing admin key").code("missing_api_key")),
    }
}

/// `GET /admin/policy`.
pub async fn admin_policy(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let route = Route::new(&snap);
    let result = admin(&snap, &headers).map(|()| axum::Json(st.reloader.status()).into_response());
    finish(&st, route, result)
}

/// `POST /admin/reload`.
pub async fn admin_reload(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let route = Route::new(&snap);
    let result = match admin(&snap, &headers) {
        Err(e) => Err(e),
        Ok(()) => match st.reloader.reload().await {
            Ok(v) => Ok(axum::Json(json!({"reloaded": true, "version": v})).into_response()),
            Err(e) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("the reload was rejected: {e}"))
                .code("reload_rejected")),
        },
    };
    finish(&st, route, result)
}

/// `POST /admin/rollback`.
pub async fn admin_rollback(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let route = Route::new(&snap);
    let result = match admin(&snap, &headers) {
        Err(e) => Err(e),
        Ok(()) => match st.reloader.rollback().await {
            Ok(v) => Ok(axum::Json(json!({"rolled_back": true, "version": v})).into_response()),
            Err(e) => Err(ApiError::new(StatusCode::CONFLICT, e).code("no_previous_version")),
        },
    };
    finish(&st, route, result)
}

/// `POST /admin/explain`: the trace for a chat request against the live policy, health and
/// budgets, without calling a provider. `x-yardmaster-key` names the key to evaluate as.
pub async fn admin_explain(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let snap = st.reloader.snapshot();
    let route = Route::new(&snap);
    let result = async {
        admin(&snap, &headers)?;
        let bytes = read_body(&st, &snap, body).await?;
        let json = parse_json(&bytes)?;
        let facts = RequestFacts::from_chat(&json).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let facts = facts.with_headers(headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))));
        let key = match headers.get("x-yardmaster-key").and_then(|v| v.to_str().ok()) {
            Some(name) => Some(snap.keys.iter().find(|k| k.name == name).ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("no key is named `{name}`")).code("key_not_found")
            })?),
            None => None,
        };
        let standing = standing(&st, key).await;
        let view = HealthView { registry: &st.health, catalog: snap.program.catalog() };
        let ctx = context(key, &view, standing);
        let trace = snap.program.explain(&facts, &ctx);
        Ok::<_, ApiError>(axum::Json(trace).into_response())
    }
    .await;
    finish(&st, route, result)
}

/// Anything else: 404 in OpenAI's shape.
pub async fn not_found(State(st): State<Arc<AppState>>, uri: axum::http::Uri) -> Response {
    let snap = st.reloader.snapshot();
    let route = Route::new(&snap);
    finish(
        &st,
        route,
        Err(ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: {}", uri.path())).code("not_found")),
    )
}

/// The facts of a request. `headers` are the ones the policy reads; `prompts` keeps the text.
fn log_facts(req: &RequestFacts, headers: &[String], prompts: bool) -> Facts {
    Facts {
        endpoint: req.endpoint,
        model: req.model.clone(),
        stream: req.stream,
        tools: req.tools,
        images: req.images,
        max_tokens: req.max_tokens,
        messages: req.messages,
        prompt_chars: req.prompt.chars().count() as u64,
        prompt_bytes: req.prompt.len() as u64,
        // Counted later, by the writer (see `count_tokens`).
        prompt_tokens: None,
        uncounted: (!prompts).then(|| req.prompt.clone()),
        user_id: req.user_id.clone(),
        headers: req
            .headers
            .iter()
            .filter(|(k, _)| k != "authorization" && headers.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        headers_read: headers.iter().filter(|h| *h != "authorization").cloned().collect(),
        metadata: req.metadata.iter().cloned().collect(),
        prompt: prompts.then(|| req.prompt.clone()),
        prompt_last: prompts.then(|| req.prompt_last().to_string()),
        prompt_system: prompts.then(|| req.prompt_system().to_string()),
        ..Facts::default()
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
}
