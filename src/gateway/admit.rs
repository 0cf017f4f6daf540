//! Admission: an HTTP request -> an [`Admitted`] request, or the error that refuses it, in the
//! order of SPEC §9: the key (401), the body limit (413, and 408 for a stalled body), the body
//! through its front door (400), the key's model allowlist (403), then its rate limits (429 with
//! `Retry-After`; the `tpm` admission is held by the settle guard until the request ends).

use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderMap;
use http_body_util::BodyExt;

use super::door::{Door, Inbound};
use super::error::ApiError;
use super::settle::Settle;
use super::AppState;
use crate::reload::{Key, Snapshot};
use crate::state::{StateStore, Store};

/// A request that may go on to routing.
#[derive(Debug)]
pub struct Admitted {
    /// The calling key (none when the gateway is open).
    pub key: Option<Arc<Key>>,
    /// The request, in the internal shape.
    pub inbound: Inbound,
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let Some(v) = headers.get("authorization") else {
        // Anthropic's SDKs send the key as `x-api-key`.
        return headers.get("x-api-key")?.to_str().ok().map(str::trim);
    };
    let (scheme, token) = v.to_str().ok()?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The calling key: `None` when the gateway is open (no keys in the config, and a run-time key
/// store that can be read and has never held a key; keys whose variable is unset still close
/// it). It fails closed: while the run-time keys cannot be read, a request with no key known
/// from before gets 503 `state_unavailable` rather than a 401 or, worse, a 200. A run-time key
/// past its expiry is refused.
pub fn authenticate(st: &AppState, snap: &Snapshot, headers: &HeaderMap) -> Result<Option<Arc<Key>>, ApiError> {
    let unreadable = || ApiError::state_unavailable("the run-time keys cannot be read; try again shortly");
    if snap.config.config.keys.is_empty() && st.keys.open() {
        open_request(st, snap, headers)?;
        return Ok(None);
    }
    let Some(token) = bearer(headers) else {
        return Err(if snap.config.config.keys.is_empty() && st.keys.unsure() {
            unreadable()
        } else {
            ApiError::missing_key()
        });
    };
    let hash = crate::reload::sha256(token);
    if let Some(k) = snap.key(&hash) {
        return Ok(Some(k.clone()));
    }
    let k =
        st.keys.find(&hash).ok_or_else(|| if st.keys.readable() { ApiError::invalid_key() } else { unreadable() })?;
    if k.expires_at_ms.is_some_and(|t| t <= chrono::Utc::now().timestamp_millis()) {
        return Err(ApiError::key_expired());
    }
    Ok(Some(k))
}

/// What an open gateway (no key stands between it and any web page its operator visits) still
/// asks of a request: on loopback, a `Host` that names it (DNS rebinding points another name at
/// 127.0.0.1); and a body, if any, sent as `application/json`, which no cross-site form or
/// simple request can send without the browser asking first.
fn open_request(st: &AppState, snap: &Snapshot, headers: &HeaderMap) -> Result<(), ApiError> {
    if st.listen.ip().is_loopback() {
        let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let name =
            host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(n, _)| n);
        let ours = ["localhost", "127.0.0.1", "[::1]"].contains(&name.to_ascii_lowercase().as_str())
            || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || snap.config.config.hosts.iter().any(|h| h.eq_ignore_ascii_case(name));
        if !ours {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!("this open gateway answers to localhost and the names in `hosts`, not to `{name}`"),
            ));
        }
    }
    let has_body = headers.get(axum::http::header::CONTENT_LENGTH).is_some_and(|l| l != "0")
        || headers.contains_key(axum::http::header::TRANSFER_ENCODING);
    if has_body {
        let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|c| c.to_str().ok()).unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("an open gateway takes bodies sent as `Content-Type: application/json`, not `{ct}` (with curl: -H 'content-type: application/json')"),
            ));
        }
    }
    Ok(())
}

/// The body, within the size limit and the body timeout.
pub async fn read_body(st: &AppState, snap: &Snapshot, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limit = snap.config.config.limits.max_body_bytes;
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(st.timeouts.body_read, limited.collect()).await {
        Err(_) => Err(ApiError::body_timeout()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::body_too_large(limit))
        }
        Ok(Err(_)) => Err(ApiError::bad_request("the request body could not be read")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Admits a request. `settle` learns the key (so that the request is ledgered from here on) and
/// takes the `tpm` admission.
pub async fn admit(
    st: &AppState,
    snap: &Snapshot,
    door: Door,
    headers: &HeaderMap,
    body: Body,
    settle: &mut Settle,
) -> Result<Admitted, ApiError> {
    let key = authenticate(st, snap, headers)?;
    settle.record.ledgered = true;
    settle.record.key = key.as_ref().map(|k| k.name.clone());
    settle.record.account = key.as_ref().map(|k| k.account.clone());
    let bytes = read_body(st, snap, body).await?;
    let mut inbound = door.parse(&bytes)?;
    if snap.program.info.reads_headers {
        let facts = std::mem::take(&mut inbound.facts);
        inbound.facts = facts.with_headers(headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))));
    }
    let Some(k) = key.as_deref() else { return Ok(Admitted { key, inbound }) };
    // An alias is checked as the model it names.
    let requested = snap.program.catalog().by_name(&inbound.requested).map_or(inbound.requested.as_str(), |m| &m.name);
    if requested != "auto" && !k.may_use(requested) {
        return Err(ApiError::model_not_allowed(&inbound.requested));
    }
    limits(&st.state, k, &inbound, settle).await?;
    Ok(Admitted { key, inbound })
}

/// The key's `rpm` and `tpm` for a request that calls no model (`count_tokens`): it counts
/// against `rpm`, and is refused while `tpm` has no room for its `tokens` (which it then gives
/// back), so that a key at its limits cannot make the gateway count for it either.
pub async fn within_limits(state: &Store, k: &Key, tokens: u64) -> Result<(), ApiError> {
    if let Some(hold) = rate_limits(state, k, tokens).await? {
        state.settle_tpm(hold, 0);
    }
    Ok(())
}

/// The key's `rpm` and `tpm`. `tpm` is admitted against the worst case (the prompt's bytes plus
/// `max_tokens`, or 4,096) and settled with the real usage.
async fn limits(state: &Store, k: &Key, inbound: &Inbound, settle: &mut Settle) -> Result<(), ApiError> {
    let tokens = (inbound.facts.prompt.len() as u64).saturating_add(inbound.facts.max_tokens.unwrap_or(4096));
    settle.holds.tokens = rate_limits(state, k, tokens).await?;
    Ok(())
}

/// Counts one request against `rpm` and admits `tokens` against `tpm`: the token hold, if any.
async fn rate_limits(state: &Store, k: &Key, tokens: u64) -> Result<Option<crate::state::TokenHold>, ApiError> {
    let unavailable = |e: crate::state::StateError| ApiError::state_unavailable(&e.to_string());
    let limits = k.limits.unwrap_or_default();
    if let Some(rpm) = limits.rpm {
        if let Err(wait) = state.check_rpm(&k.account, rpm).await.map_err(unavailable)? {
            return Err(ApiError::rate_limited(wait, "rpm", "requests per minute"));
        }
    }
    let Some(tpm) = limits.tpm else { return Ok(None) };
    match state.reserve_tpm(&k.account, tpm, tokens).await.map_err(unavailable)? {
        Ok(hold) => Ok(Some(hold)),
        Err(wait) => Err(ApiError::rate_limited(wait, "tpm", "tokens per minute")),
    }
}
