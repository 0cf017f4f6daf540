//! The endpoints that describe rather than route: `GET /v1/models` (`auto` and the catalog),
//! `GET /v1/key` (the calling key's spend, budget and limits), `GET /metrics`, `GET /healthz`,
//! `GET /readyz`, and the 404 for anything else. Each answers from the live snapshot and the
//! state store, and is counted in `/metrics` through its record.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::admit::authenticate;
use super::error::ApiError;
use super::metrics::LedgerFigures;
use super::record::Record;
use super::route::{budget_facts, standing};
use super::settle::answer;
use super::AppState;
use crate::accounting::{budget, usage};
use crate::reload::Key;
use crate::state::{BreakerState, StateStore};

/// One catalog model as `/v1/models` lists it, with its aliases.
fn model_entry(catalog: &crate::catalog::Catalog, m: &crate::catalog::Model) -> serde_json::Value {
    let aliases = catalog.id(&m.name).map(|id| catalog.aliases_of(id)).unwrap_or_default();
    json!({
        "id": m.name, "object": "model", "created": 0, "owned_by": m.provider,
        "context_length": m.context, "endpoint": m.endpoint.as_str(), "tags": m.tags, "aliases": aliases,
        "pricing": m.price.map(|p| json!({"input": p.input, "output": p.output, "unit": "USD per million tokens"})),
    })
}

/// `auto` as a model.
fn auto_entry() -> serde_json::Value {
    json!({"id": "auto", "object": "model", "created": 0, "owned_by": "yardmaster"})
}

/// The catalog models a key may name (all of them for a key without `models`, or when open).
fn visible<'a>(
    snap: &'a crate::reload::Snapshot,
    key: Option<&Key>,
) -> impl Iterator<Item = &'a crate::catalog::Model> {
    let allowed = key.and_then(|k| k.models.clone());
    snap.program.catalog().models().iter().filter(move |m| allowed.as_ref().is_none_or(|a| a.contains(&m.name)))
}

/// `GET /v1/models`: `auto` and the catalog models the calling key may name.
pub async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let record = Record::new(snap.version());
    let result = authenticate(&st, &snap, &headers).map(|key| {
        let allowed = key.as_ref().and_then(|k| k.models.clone());
        // A family is one entry, named as the catalog names it (`openai/*`).
        let families =
            snap.program.catalog().families().iter().filter(|f| allowed.as_ref().is_none_or(|a| a.contains(&f.name)));
        let catalog = snap.program.catalog();
        let data: Vec<serde_json::Value> = std::iter::once(auto_entry())
            .chain(visible(&snap, key.as_deref()).map(|m| model_entry(catalog, m)))
            .chain(families.map(|m| model_entry(catalog, m)))
            .collect();
        axum::Json(json!({"object": "list", "data": data})).into_response()
    });
    answer(&st, record, result)
}

/// `GET /v1/models/{id}`: one model, as the list shows it (404 for one the key may not name).
pub async fn model(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let snap = st.reloader.snapshot();
    let record = Record::new(snap.version());
    let result = authenticate(&st, &snap, &headers).and_then(|key| {
        let catalog = snap.program.catalog();
        // An alias answers as the model it names.
        let name = catalog.by_name(&id).map_or(id.as_str(), |m| m.name.as_str());
        let entry = if id == "auto" {
            Some(auto_entry())
        } else {
            visible(&snap, key.as_deref()).find(|m| m.name == name).map(|m| model_entry(catalog, m))
        };
        entry
            .map(|e| axum::Json(e).into_response())
            .ok_or_else(|| ApiError::model_not_found(&id, crate::util::fuzzy::did_you_mean(&id, catalog.names())))
    });
    answer(&st, record, result)
}

/// `GET /v1/providers`: each provider's name, kind, host (never a key, a user or a query string),
/// whether it can be called (and why not), and the models of it that the calling key may name,
/// with their health.
pub async fn providers(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let record = Record::new(snap.version());
    let result = authenticate(&st, &snap, &headers).map(|key| {
        let mut names: Vec<&String> = snap.config.config.providers.keys().collect();
        names.sort();
        let breakers = st.state.breakers();
        let data: Vec<serde_json::Value> = names
            .into_iter()
            .map(|name| {
                let cfg = &snap.config.config.providers[name];
                let (available, reason) = match snap.providers.get(name) {
                    Some(crate::providers::Provider::Unavailable(why)) => (false, Some(why.clone())),
                    Some(_) => (true, None),
                    None => (false, Some("not built".to_string())),
                };
                let models: Vec<serde_json::Value> = visible(&snap, key.as_deref())
                    .filter(|m| &m.provider == name)
                    .map(|m| {
                        let breaker = BreakerState::of(&breakers, &m.name).as_str();
                        json!({"id": m.name, "upstream_id": m.upstream_id, "endpoint": m.endpoint.as_str(),
                            "healthy": available && st.state.healthy(&m.name), "breaker": breaker})
                    })
                    .collect();
                json!({"name": name, "kind": cfg.kind, "host": crate::providers::host_of(cfg),
                    "available": available, "unavailable_reason": reason, "models": models})
            })
            .collect();
        axum::Json(json!({"object": "list", "data": data})).into_response()
    });
    answer(&st, record, result)
}

/// `GET /v1/key`: the calling key.
pub async fn key(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let record = Record::new(snap.version());
    let result = match authenticate(&st, &snap, &headers) {
        Err(e) => Err(e),
        Ok(None) => Ok(axum::Json(
            json!({"name": null, "tier": null, "open": true, "spend_usd": null, "budget": null, "limits": null}),
        )
        .into_response()),
        Ok(Some(k)) => key_standing(&st, &k).await,
    };
    answer(&st, record, result)
}

async fn key_standing(st: &AppState, k: &Key) -> Result<Response, ApiError> {
    let s = standing(st, Some(k)).await?;
    let b = budget_facts(k.budget.map(|b| b.usd), s);
    let period_start = k.budget.map(|b| {
        let ms = budget::period_start(b.per, chrono::Utc::now().timestamp_millis());
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    });
    // Cache hits this budget period (all time without a budget), from the ledger.
    let since = k.budget.map_or(0, |b| budget::period_start(b.per, chrono::Utc::now().timestamp_millis()));
    let cache = match &st.accounting.ledger {
        Some(l) => l
            .saved_since(&k.account, since)
            .await
            .ok()
            .map(|(hits, saved)| json!({"hits": hits, "saved_usd": usage::usd(saved)})),
        None => None,
    };
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
        "cache": cache,
    }))
    .into_response())
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 once a policy is loaded, the listener is up, the shared state answers
/// (with `storage.redis`, unless `on_error: open`) and at least one model's provider can be
/// called; 503 otherwise, saying why (a provider whose key variable is unset cannot serve
/// anything).
pub async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if !st.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    }
    if let Err(why) = st.state.ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response();
    }
    // Without config keys, only run-time keys can let a request in.
    if let Some(why) = st.keys.unready().filter(|_| st.reloader.snapshot().config.config.keys.is_empty()) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response();
    }
    let snap = st.reloader.snapshot();
    let mut why: Vec<String> = Vec::new();
    for m in snap.program.catalog().models() {
        match snap.providers.get(&m.provider) {
            Some(crate::providers::Provider::Unavailable(reason)) => {
                let line = format!("{}: {reason}", m.provider);
                if !why.contains(&line) {
                    why.push(line);
                }
            }
            Some(_) => return "ready\n".into_response(),
            None => {}
        }
    }
    let why = if why.is_empty() { "the catalog has no models".to_string() } else { why.join("; ") };
    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: no provider can serve a model ({why})\n")).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let snap = st.reloader.snapshot();
    let breakers: Vec<(String, u8)> = st
        .state
        .breakers()
        .into_iter()
        .map(|(m, s)| {
            let n = match s {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            (m, n)
        })
        .collect();
    let ledger = st.accounting.ledger.as_ref().map(|l| LedgerFigures {
        written: l.stats.written.load(Ordering::Relaxed),
        write_failures: l.stats.write_failures.load(Ordering::Relaxed),
        pending: l.stats.pending.load(Ordering::Relaxed),
        dropped: l.stats.dropped.load(Ordering::Relaxed),
        backpressure: l.stats.backpressure.load(Ordering::Relaxed),
        log_written: l.log_stats().map_or(0, |s| s.written.load(Ordering::Relaxed)),
        log_dropped: l.log_stats().map_or(0, |s| s.dropped.load(Ordering::Relaxed)),
    });
    let mut text = st.metrics.render(
        snap.version(),
        st.reloader.reloads_ok.load(Ordering::Relaxed),
        st.reloader.reloads_failed.load(Ordering::Relaxed),
        &breakers,
        ledger,
    );
    st.metrics.render_cache(&mut text, st.cache.bytes());
    let c = &st.conns;
    super::metrics::render_connections(
        &mut text,
        c.open.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.idle_closed.load(Ordering::Relaxed),
    );
    if let Some(t) = &st.telemetry {
        let (exported, dropped) = t.counts();
        super::metrics::render_traces(&mut text, exported, dropped);
    }
    let mut budgets = Vec::new();
    for k in snap.keys.iter().cloned().chain(st.keys.all()) {
        if let Some(b) = k.budget {
            // A store that cannot be read leaves the key out rather than showing a spend of 0.
            if let Ok(s) = st.state.standing(&k.account, b.per).await {
                budgets.push((k.name.clone(), crate::accounting::usage::usd(s.spent), b.usd));
            }
        }
    }
    super::metrics::render_budgets(&mut text, &budgets);
    if let Some(h) = st.state.shared_health() {
        super::metrics::render_redis(&mut text, h);
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Anything else: 404 in OpenAI's shape.
pub async fn not_found(State(st): State<Arc<AppState>>, uri: axum::http::Uri) -> Response {
    let record = Record::new(st.reloader.snapshot().version());
    answer(&st, record, Err(ApiError::no_endpoint(uri.path())))
}
