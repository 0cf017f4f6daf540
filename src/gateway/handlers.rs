//! Request handlers. Checks run in the order SPEC §9 gives: auth (401), body limit (413),
//! parsing (400), the key's model allowlist (403), the policy (403 for `deny`, 404 for an unknown
//! requested model), then dispatch (502/503 when every target failed or none could be tried).

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Timelike};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::catalog::Endpoint;
use crate::dispatch::{self, Failure, HealthView, Target};
use crate::policy::compile::Scratch;
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
}

impl Route {
    fn new(snap: &Snapshot) -> Route {
        Route { id: request_id(), policy: snap.version().to_string(), ..Route::default() }
    }

    fn apply(&self, resp: &mut Response) {
        let h = resp.headers_mut();
        let mut set = |name: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(name, v);
            }
        };
        set("x-request-id", &self.id);
        set("x-yardmaster-policy", &self.policy);
        if let Some(r) = &self.rule {
            // Rule names may hold any text; headers carry them percent-encoded when they must.
            set("x-yardmaster-rule", &header_safe(r));
        }
        if let Some(m) = &self.model {
            set("x-yardmaster-model", m);
        }
        if let Some(p) = &self.provider {
            set("x-yardmaster-provider", p);
        }
        if let Some(u) = &self.upstream {
            set("x-yardmaster-upstream-model", u);
        }
        set("x-yardmaster-attempts", &self.attempts.to_string());
    }
}

/// A unique request id: a random prefix chosen at startup and a counter (no syscall per request).
fn request_id() -> String {
    use std::sync::atomic::AtomicU64;
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_string());
    format!("req_{prefix}{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c.to_string() } else { format!("%{:02X}", c as u32 & 0xff) })
        .collect()
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

fn context<'a>(key: Option<&'a Key>, health: &'a HealthView<'a>) -> Context<'a> {
    let now = chrono::Utc::now();
    Context {
        tier: key.and_then(|k| k.tier.as_deref()),
        key_name: key.map(|k| k.name.as_str()),
        budget: Budget::from_limit(key.and_then(|k| k.budget.map(|b| b.usd)), 0.0),
        health,
        hour: u8::try_from(now.hour()).unwrap_or(0),
        weekday: u8::try_from(now.weekday().num_days_from_monday()).unwrap_or(0),
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let snap = st.reloader.snapshot();
    let mut route = Route::new(&snap);
    let result = complete(&st, &snap, &headers, body, Endpoint::Chat, &mut route).await;
    finish(&st, route, result)
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let snap = st.reloader.snapshot();
    let mut route = Route::new(&snap);
    let result = complete(&st, &snap, &headers, body, Endpoint::Embeddings, &mut route).await;
    finish(&st, route, result)
}

fn finish(st: &AppState, route: Route, result: Result<Response, ApiError>) -> Response {
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
    route.apply(&mut resp);
    st.metrics.request(
        route.rule.as_deref().unwrap_or(""),
        route.model.as_deref().unwrap_or(""),
        route.provider.as_deref().unwrap_or(""),
        resp.status().as_u16(),
    );
    resp
}

async fn complete(
    st: &AppState,
    snap: &Arc<Snapshot>,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
    route: &mut Route,
) -> Result<Response, ApiError> {
    let key = authenticate(snap, headers)?;
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
    let catalog = snap.program.catalog();
    let (decision, plan) = {
        // The context borrows the (non-Send) health view: keep it out of the awaits below.
        let view = HealthView { registry: &st.health, catalog };
        let ctx = context(key, &view);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            snap.program.route(&facts, &ctx, &mut s)
        })
    };
    let Some(rule) = snap.program.rule(decision.rule) else {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the policy matched no rule"));
    };
    route.rule = Some(rule.name.clone());
    if let Some((status, message)) = plan.iter().find_map(|s| s.deny) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        return Err(ApiError::new(status, message.to_string()).code("policy_denied"));
    }
    if matches!(rule.target, crate::policy::check::ir::TargetIr::Requested { .. }) && catalog.id(&requested).is_none() {
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
        targets.push(Target {
            model: &model.name,
            upstream_id: &model.upstream_id,
            provider_name: &model.provider,
            provider,
            with: step.with,
        });
    }
    if targets.is_empty() {
        let why = if skipped.is_empty() { "the rule has no target".to_string() } else { skipped.join("; ") };
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("no target could be tried ({why})"))
            .code("no_target"));
    }
    let opts = dispatch::Options {
        retries: rule.options.retries,
        timeout: rule.options.timeout_ms.map_or(dispatch::DEFAULT_TIMEOUT, std::time::Duration::from_millis),
        ..dispatch::Options::default()
    };
    let stream = endpoint == Endpoint::Chat && facts.stream;
    match dispatch::run(&st.health, &targets, &json, stream, endpoint, opts).await {
        Ok(ok) => {
            route.attempts = ok.attempts.iter().filter(|a| a.called).count();
            route.model = Some(ok.model.clone());
            route.provider = Some(ok.provider.clone());
            route.upstream = Some(ok.upstream_id.clone());
            match ok.reply {
                Reply::Json(mut v) => {
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("model".into(), Value::String(ok.model.clone()));
                    }
                    Ok((StatusCode::OK, axum::Json(v)).into_response())
                }
                Reply::Stream(events) => Ok(super::stream::relay(events, ok.model, st.timeouts.stream_idle)),
            }
        }
        Err(f) => {
            route.attempts = f.attempts().iter().filter(|a| a.called).count();
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
pub async fn models(State(st): State<AppState>, headers: HeaderMap) -> Response {
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
pub async fn key(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let route = Route::new(&snap);
    let result = authenticate(&snap, &headers).map(|k| {
        let body = match k {
            None => json!({"name": null, "tier": null, "open": true, "spend_usd": 0.0, "budget": null, "limits": null}),
            Some(k) => json!({
                "name": k.name, "tier": k.tier, "open": false,
                "spend_usd": 0.0,
                "budget": k.budget.map(|b| json!({"usd": b.usd, "per": b.per, "remaining_usd": b.usd})),
                "limits": k.limits,
                "models": k.models,
            }),
        };
        axum::Json(body).into_response()
    });
    finish(&st, route, result)
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 once a policy is loaded and the listener is up.
pub async fn readyz(State(st): State<AppState>) -> Response {
    if st.ready.load(Ordering::SeqCst) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<AppState>) -> Response {
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
    let text = st.metrics.render(
        snap.version(),
        st.reloader.reloads_ok.load(Ordering::Relaxed),
        st.reloader.reloads_failed.load(Ordering::Relaxed),
        &breakers,
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
pub async fn admin_policy(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let route = Route::new(&snap);
    let result = admin(&snap, &headers).map(|()| axum::Json(st.reloader.status()).into_response());
    finish(&st, route, result)
}

/// `POST /admin/reload`.
pub async fn admin_reload(State(st): State<AppState>, headers: HeaderMap) -> Response {
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
pub async fn admin_rollback(State(st): State<AppState>, headers: HeaderMap) -> Response {
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
pub async fn admin_explain(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
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
        let view = HealthView { registry: &st.health, catalog: snap.program.catalog() };
        let ctx = context(key, &view);
        let trace = snap.program.explain(&facts, &ctx);
        Ok::<_, ApiError>(axum::Json(trace).into_response())
    }
    .await;
    finish(&st, route, result)
}

/// Anything else: 404 in OpenAI's shape.
pub async fn not_found(State(st): State<AppState>, uri: axum::http::Uri) -> Response {
    let snap = st.reloader.snapshot();
    let route = Route::new(&snap);
    finish(
        &st,
        route,
        Err(ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: {}", uri.path())).code("not_found")),
    )
}
