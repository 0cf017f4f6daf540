//! One error type with one status mapping. The body is OpenAI's
//! `{"error": {"message", "type", "code", "param"}}`, so that clients and SDKs understand it.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answered to the client.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for the client (never a secret, a URL with a secret, or prompt text).
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// OpenAI's `code`.
    pub code: Option<&'static str>,
    /// OpenAI's `param`.
    pub param: Option<&'static str>,
    /// `Retry-After` in seconds.
    pub retry_after: Option<u64>,
    /// A raw upstream body to pass through instead of ours (upstream 4xx).
    pub upstream_body: Option<String>,
}

impl ApiError {
    /// An error with the `type` that goes with its status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        let kind = match status.as_u16() {
            400 | 404 | 409 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            402 => "insufficient_quota",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "api_error",
        };
        let kind = if status == StatusCode::NOT_FOUND { "not_found_error" } else { kind };
        ApiError {
            status,
            message: message.into(),
            kind,
            code: None,
            param: None,
            retry_after: None,
            upstream_body: None,
        }
    }

    /// Sets `code`.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// Sets `param`.
    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// 400 for a body that cannot be used.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message).code("invalid_request")
    }

    /// Whether retrying could help; SDKs read `x-should-retry`.
    pub fn should_retry(&self) -> bool {
        matches!(self.status.as_u16(), 408 | 409 | 429 | 500..=599)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"message": self.message, "type": self.kind, "code": self.code, "param": self.param}})
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
