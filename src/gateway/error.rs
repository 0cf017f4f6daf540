//! One error type with one status mapping, and a named constructor for every error the gateway
//! answers. The body is OpenAI's `{"error": {"message", "type", "code", "param"}}`, so that
//! clients and SDKs understand it; `x-should-retry` tells the SDKs whether retrying can help.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answered to the client.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for the client (never a secret, a URL with a secret, or prompt text).
    pub message: String,
    /// OpenAI's `code`.
    pub code: Option<&'static str>,
    /// OpenAI's `param`.
    pub param: Option<Box<str>>,
    /// `Retry-After` in seconds.
    pub retry_after: Option<u64>,
    /// A raw upstream body to pass through instead of ours (the upstream's own client errors).
    pub upstream_body: Option<String>,
    /// What `/metrics` counts as a refusal (`rpm`, `tpm`, `budget`).
    pub refusal: Option<&'static str>,
}

/// OpenAI's error `type` for a status (the one mapping lives with the providers, which shape
/// upstream errors with it too).
pub fn error_type(status: StatusCode) -> &'static str {
    crate::providers::error_type(status.as_u16())
}

/// Seconds to put in `Retry-After`: whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

impl ApiError {
    /// An error with the `type` that goes with its status and a `code`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            code: Some(code),
            param: None,
            retry_after: None,
            upstream_body: None,
            refusal: None,
        }
    }

    /// Sets `param`.
    pub fn param(mut self, param: impl Into<Box<str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400: a body that cannot be used.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401: no key was sent.
    pub fn missing_key() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing_api_key", "missing API key: send `Authorization: Bearer KEY`")
    }

    /// 401: the key is not one of the gateway's.
    pub fn invalid_key() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "invalid API key")
    }

    /// 401: a run-time key past its expiry.
    pub fn key_expired() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "expired_api_key", "this API key has expired")
    }

    /// 409: `/admin/keys` would make a second key with a name already in use.
    pub fn key_name_taken(name: &str) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "key_exists", format!("a key named `{name}` exists already")).param("name")
    }

    /// 409: `/admin/keys` cannot change a key that `yardmaster.yaml` defines.
    pub fn key_in_config(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "key_in_config",
            format!("the key `{name}` is defined in the config file: change it there"),
        )
    }

    /// 401: `/admin` without the admin key.
    pub fn missing_admin_key() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing_api_key", "missing admin key")
    }

    /// 401: `/admin` with another key.
    pub fn invalid_admin_key() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "invalid admin key")
    }

    /// 403: `/admin` when no admin key is configured.
    pub fn admin_disabled() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin access is disabled: set `admin: { key_env: ... }`",
        )
    }

    /// 413: the body is over the limit.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 408: the body stalled.
    pub fn body_timeout() -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", "the request body was not received in time")
    }

    /// 403: the key may not name this model.
    pub fn model_not_allowed(model: &str) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "model_not_allowed", format!("this key may not use the model `{model}`"))
            .param("model")
    }

    /// 429 with `Retry-After`: a rate limit (`what`: requests or tokens per minute).
    pub fn rate_limited(wait: Duration, reason: &'static str, what: &str) -> ApiError {
        let secs = retry_after_secs(wait);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!("rate limit exceeded: too many {what} for this key; retry in {secs} s"),
        );
        e.retry_after = Some(secs);
        e.refusal = Some(reason);
        e
    }

    /// The policy's `deny` (403, or the status it gives).
    pub fn denied(status: u16, message: &str) -> ApiError {
        ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), "policy_denied", message)
    }

    /// 404: `requested` names a model outside the catalog; `closest` is the nearest name the
    /// catalog has, if one is near.
    pub fn model_not_found(model: &str, closest: Option<&str>) -> ApiError {
        let hint = match closest {
            Some(c) => format!("; did you mean `{c}`? (or `auto`, to let the policy choose)"),
            None => "; name a model of `GET /v1/models`, or `auto` to let the policy choose".to_string(),
        };
        ApiError::new(StatusCode::NOT_FOUND, "model_not_found", format!("the model `{model}` does not exist{hint}"))
            .param("model")
    }

    /// 402: the key's budget excluded every target (`why`: what it needed and what remains).
    pub fn budget_exceeded(why: &str) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "budget_exceeded",
            format!("the key's budget cannot cover this request: {why}"),
        );
        e.refusal = Some("budget");
        e
    }

    /// 503: no target could be tried (`why`, each target's reason).
    pub fn no_target(why: &str) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_target", format!("no target could be tried: {why}"))
    }

    /// 400: no model of the plan can hold the prompt and `max_tokens` (OpenAI's code).
    pub fn context_length_exceeded(why: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "context_length_exceeded",
            format!("the prompt and `max_tokens` are larger than every target's context: {why}"),
        )
        .param("messages")
    }

    /// 400: no target of the plan can take this request (capabilities, `only`, the key's
    /// allowlist), which no retry changes.
    pub fn no_capable_target(why: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "no_capable_target", format!("no target can take this request: {why}"))
    }

    /// 502: every target failed (`attempts`, each attempt's outcome).
    pub fn upstream_failed(attempts: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "upstream_failed", format!("every target failed: {attempts}"))
    }

    /// The upstream's own refusal of the request (SPEC §9's client errors), passed back as it
    /// came when it is an OpenAI-shaped error.
    pub fn upstream_refused(status: u16, body: String) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            "upstream_refused",
            "the upstream refused the request",
        );
        e.upstream_body = Some(body);
        e
    }

    /// 503: the state store (budgets, limits) cannot be reached.
    pub fn state_unavailable(why: &str) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "state_unavailable", why)
    }

    /// 404: a stored response was asked for, and none are stored.
    pub fn response_not_stored() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "responses are not stored by this gateway, so none can be retrieved",
        )
    }

    /// 404: no such endpoint.
    pub fn no_endpoint(path: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {path}"))
    }

    /// 404: `x-yardmaster-key` names no key.
    pub fn key_not_found(name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "key_not_found", format!("no key is named `{name}`"))
    }

    /// 422: `/admin/reload` rejected the new files.
    pub fn reload_rejected(why: &str) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "reload_rejected", format!("the reload was rejected: {why}"))
    }

    /// 409: `/admin/rollback` with nothing to roll back to.
    pub fn no_previous_version(why: String) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "no_previous_version", why)
    }

    /// Whether retrying could help; SDKs read `x-should-retry`.
    pub fn should_retry(&self) -> bool {
        match self.status.as_u16() {
            // The gateway's own conflicts (a key name taken, a config key, nothing to roll back
            // to) stay until someone changes something; a provider's 409 may be a lock that frees.
            409 => self.upstream_body.is_some(),
            s => matches!(s, 408 | 429 | 500..=599),
        }
    }

    /// OpenAI's `type`.
    pub fn kind(&self) -> &'static str {
        error_type(self.status)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"message": self.message, "type": self.kind(), "code": self.code, "param": self.param}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self.upstream_body {
            Some(b) if serde_json::from_str::<serde_json::Value>(b).is_ok_and(|v| v.get("error").is_some()) => {
                b.clone()
            }
            _ => self.body().to_string(),
        };
        let mut resp = (self.status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
        let h = resp.headers_mut();
        h.insert("x-should-retry", HeaderValue::from_static(if self.should_retry() { "true" } else { "false" }));
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                h.insert("retry-after", v);
            }
        }
        resp.extensions_mut().insert(self);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_openai_types_once() {
        assert_eq!(error_type(StatusCode::NOT_FOUND), "not_found_error");
        assert_eq!(ApiError::budget_exceeded("x").kind(), "insufficient_quota");
        assert_eq!(ApiError::upstream_refused(422, "{}".into()).kind(), "invalid_request_error");
        assert_eq!(ApiError::no_target("x").kind(), "api_error");
        assert!(!ApiError::bad_request("x").should_retry());
        assert!(ApiError::rate_limited(Duration::from_millis(1_500), "rpm", "requests").should_retry());
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        assert_eq!(retry_after_secs(Duration::from_millis(1_500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
