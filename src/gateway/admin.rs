//! The admin endpoints, behind the admin key: `GET /admin/policy` (version, load time, files,
//! last error), `POST /admin/reload`, `POST /admin/rollback`, and `POST /admin/explain` (the
//! `explain` trace of a chat request against the live policy, health and budgets, without calling
//! a provider or spending anything; `x-yardmaster-key` names the key to evaluate as).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::admit::{bearer, read_body};
use super::error::ApiError;
use super::record::Record;
use super::route::{context, standing};
use super::settle::answer;
use super::AppState;
use crate::dispatch::HealthView;
use crate::policy::eval::RequestFacts;
use crate::reload::Snapshot;

pub(super) fn admin(snap: &Snapshot, headers: &HeaderMap) -> Result<(), ApiError> {
    if snap.admin.is_none() {
        return Err(ApiError::admin_disabled());
    }
    match bearer(headers) {
        Some(t) if snap.is_admin(t) => Ok(()),
        Some(_) => Err(ApiError::invalid_admin_key()),
        None => Err(ApiError::missing_admin_key()),
    }
}

/// `GET /admin/policy`.
pub async fn policy(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let result = admin(&snap, &headers).map(|()| axum::Json(st.reloader.status()).into_response());
    answer(&st, Record::new(snap.version()), result)
}

/// `POST /admin/reload`.
pub async fn reload(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let result = match admin(&snap, &headers) {
        Err(e) => Err(e),
        Ok(()) => match st.reloader.reload().await {
            Ok(v) => Ok(axum::Json(json!({"reloaded": true, "version": v})).into_response()),
            Err(e) => Err(ApiError::reload_rejected(&e)),
        },
    };
    answer(&st, Record::new(snap.version()), result)
}

/// `POST /admin/rollback`.
pub async fn rollback(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let result = match admin(&snap, &headers) {
        Err(e) => Err(e),
        Ok(()) => match st.reloader.rollback().await {
            Ok((v, false)) => Ok(axum::Json(json!({"rolled_back": true, "version": v})).into_response()),
            Ok((v, true)) => Ok(axum::Json(json!({"rolled_back": false, "version": v,
                "message": format!("the previous version is {v}, the one already live: nothing changed")}))
            .into_response()),
            Err(e @ crate::reload::RollbackError::Nothing) => Err(ApiError::no_previous_version(e.to_string())),
            Err(crate::reload::RollbackError::Refused(why)) => Err(ApiError::reload_rejected(&why)),
        },
    };
    answer(&st, Record::new(snap.version()), result)
}

/// `POST /admin/explain`.
pub async fn explain(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let snap = st.reloader.snapshot();
    let result = async {
        admin(&snap, &headers)?;
        let bytes = read_body(&st, &snap, body).await?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
        let facts = RequestFacts::from_chat(&json).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let facts = facts.with_headers(headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))));
        let key = match headers.get("x-yardmaster-key").and_then(|v| v.to_str().ok()) {
            Some(name) => Some(
                snap.keys
                    .iter()
                    .find(|k| k.name == name)
                    .cloned()
                    .or_else(|| st.keys.named(name))
                    .ok_or_else(|| ApiError::key_not_found(name))?,
            ),
            None => None,
        };
        let standing = standing(&st, key.as_deref()).await?;
        let view = HealthView { state: &st.state, latency: &st.latency, catalog: snap.program.catalog() };
        let trace = snap.program.explain(&facts, &context(key.as_deref(), &view, standing));
        Ok::<_, ApiError>(axum::Json(trace).into_response())
    }
    .await;
    answer(&st, Record::new(snap.version()), result)
}

/// `GET /admin/rules`: the live policy's files and every rule with the requests it matched on
/// this instance (hits, errors, the rate over the last five minutes and the last hour minute by
/// minute); `retired` holds rules that matched requests but are not in the live version.
pub async fn rules(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let result = admin(&snap, &headers).map(|()| {
        let mut figures = st.metrics.rules();
        let sources = &snap.program.checked.sources;
        let rules: Vec<serde_json::Value> = snap
            .program
            .checked
            .rules
            .iter()
            .map(|r| {
                let (line, _) = sources.line_col(r.span.file, r.span.start as usize);
                let path = sources.get(r.span.file).map(|f| f.path.display().to_string());
                let f = figures.remove(&r.name);
                json!({"name": r.name, "default": r.is_default, "file": path, "line": line,
                    "hits": f.as_ref().map_or(0, |f| f.hits), "errors": f.as_ref().map_or(0, |f| f.errors),
                    "per_minute": f.as_ref().map_or(0.0, |f| f.per_minute),
                    "last_hour": f.map_or_else(|| vec![0; 60], |f| f.last_hour)})
            })
            .collect();
        let files: Vec<serde_json::Value> =
            sources.files().iter().map(|f| json!({"path": f.path.display().to_string(), "text": &*f.text})).collect();
        let status = st.reloader.status();
        axum::Json(json!({"version": status.version, "loaded_at": status.loaded_at, "last_error": status.last_error,
            "files": files, "rules": rules, "retired": figures}))
        .into_response()
    });
    answer(&st, Record::new(snap.version()), result)
}

/// `GET /admin/models`: every catalog model with its health and breaker, its latency (the
/// moving average that `fastest` reads, and the means since start) and its error rate.
pub async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    use crate::state::{BreakerState, StateStore};
    let snap = st.reloader.snapshot();
    let result = admin(&snap, &headers).map(|()| {
        let breakers = st.state.breakers();
        let mut figures = st.metrics.models();
        let data: Vec<serde_json::Value> = snap
            .program
            .catalog()
            .models()
            .iter()
            .map(|m| {
                let breaker = BreakerState::of(&breakers, &m.name).as_str();
                let f = figures.remove(&m.name).unwrap_or_default();
                let rate = if f.requests == 0 { 0.0 } else { f.errors as f64 / f.requests as f64 };
                json!({"name": m.name, "provider": m.provider, "upstream_id": m.upstream_id,
                    "healthy": st.state.healthy(&m.name), "breaker": breaker,
                    "ttfb_ms": st.latency.ms(&m.name), "mean_latency_ms": f.mean_latency_ms,
                    "mean_ttfb_ms": f.mean_ttfb_ms, "requests": f.requests, "errors": f.errors,
                    "error_rate": rate})
            })
            .collect();
        axum::Json(json!({"object": "list", "data": data})).into_response()
    });
    answer(&st, Record::new(snap.version()), result)
}

/// `GET /admin/reloads`: the last 50 reloads and rollbacks, newest first.
pub async fn reloads(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let result = admin(&snap, &headers)
        .map(|()| axum::Json(json!({"object": "list", "data": st.reloader.history()})).into_response());
    answer(&st, Record::new(snap.version()), result)
}
