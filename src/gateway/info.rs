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

/// `GET /v1/models`: `auto` and the catalog.
pub async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let record = Record::new(snap.version());
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
    answer(&st, record, result)
}

/// `GET /v1/key`: the calling key.
pub async fn key(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snap = st.reloader.snapshot();
    let record = Record::new(snap.version());
    let result = match authenticate(&snap, &headers) {
        Err(e) => Err(e),
        Ok(None) => Ok(axum::Json(
            json!({"name": null, "tier": null, "open": true, "spend_usd": null, "budget": null, "limits": null}),
        )
        .into_response()),
        Ok(Some(k)) => key_standing(&st, k).await,
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
    let c = &st.conns;
    super::metrics::render_connections(
        &mut text,
        c.open.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.idle_closed.load(Ordering::Relaxed),
    );
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Anything else: 404 in OpenAI's shape.
pub async fn not_found(State(st): State<Arc<AppState>>, uri: axum::http::Uri) -> Response {
    let record = Record::new(st.reloader.snapshot().version());
    answer(&st, record, Err(ApiError::no_endpoint(uri.path())))
}
