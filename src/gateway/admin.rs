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

fn admin(snap: &Snapshot, headers: &HeaderMap) -> Result<(), ApiError> {
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
            Err(e) => Err(ApiError::no_previous_version(e)),
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
            Some(name) => Some(snap.keys.iter().find(|k| k.name == name).ok_or_else(|| ApiError::key_not_found(name))?),
            None => None,
        };
        let standing = standing(&st, key).await?;
        let view = HealthView { state: &st.state, latency: &st.latency, catalog: snap.program.catalog() };
        let trace = snap.program.explain(&facts, &context(key, &view, standing));
        Ok::<_, ApiError>(axum::Json(trace).into_response())
    }
    .await;
    answer(&st, Record::new(snap.version()), result)
}
