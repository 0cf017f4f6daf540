//! Providers: one OpenAI-shaped call -> one upstream call. A trait for the behaviour, a closed enum
//! for dispatch; every OpenAI-compatible API shares one variant and differs by base URL and key.
//! Providers never see policies.

pub mod anthropic;
pub mod gemini;
pub mod mock;
pub mod native;
pub mod openai;
pub mod scrub;

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::catalog::Endpoint;
use crate::config::{ProviderConfig, ProviderKind};

/// One call to make.
#[derive(Clone, Debug)]
pub struct Call {
    /// The request body as it leaves (JSON), with `model` already set to the upstream id.
    pub body: bytes::Bytes,
    /// Whether to stream.
    pub stream: bool,
    /// Chat or embeddings.
    pub endpoint: Endpoint,
    /// Time allowed until the first byte of the reply.
    pub first_byte_timeout: Duration,
    /// How long a read of the reply's body may wait, and how large the reply may be.
    pub limits: Limits,
    /// The W3C `traceparent` to send upstream, when the request is traced.
    pub traceparent: Option<String>,
}

/// What an upstream's reply may take (SPEC §6a's timeouts; `limits` in `yardmaster.yaml`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a read of a body may wait for its next bytes (a body that stalls past it fails).
    pub read_timeout: Duration,
    /// The largest whole reply, in bytes.
    pub max_reply_bytes: usize,
    /// The largest stream event, in bytes.
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { read_timeout: Duration::from_secs(60), max_reply_bytes: 32 << 20, max_event_bytes: 1 << 20 }
    }
}

/// Server-sent event payloads (`data:` of each event), in order.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<String, UpstreamError>> + Send>>;

/// What came back.
pub enum Reply {
    /// A whole JSON reply.
    Json(serde_json::Value),
    /// A whole JSON object reply in OpenAI's shape, its members still raw (OpenAI-compatible
    /// upstreams: only `usage` is read, and `model` replaced).
    Raw(native::RawObject),
    /// A stream of events.
    Stream(EventStream),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Json(v) => f.debug_tuple("Json").field(v).finish(),
            Reply::Raw(o) => f.debug_tuple("Raw").field(&o.iter().map(|(k, _)| k).collect::<Vec<_>>()).finish(),
            Reply::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// Why an upstream call failed.
#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamError {
    /// The connection failed or was reset.
    Connect(String),
    /// No first byte in time.
    Timeout,
    /// The body stalled: no bytes within the read timeout.
    Stalled,
    /// The upstream answered an error status.
    Status {
        /// The status.
        status: u16,
        /// The body (an OpenAI-shaped error, usually).
        body: String,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The reply could not be parsed.
    Malformed(String),
    /// The provider cannot be used (its key is not set).
    Unavailable(String),
}

/// OpenAI's error `type` for a status (SPEC §9): the one mapping, for the gateway's own errors
/// and for the errors that translating providers turn into OpenAI's shape.
pub fn error_type(status: u16) -> &'static str {
    match status {
        404 => "not_found_error",
        400 | 409 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

impl UpstreamError {
    /// Errors that go back to the client instead of falling through (SPEC §9): the one list.
    pub fn is_client_error(&self) -> bool {
        matches!(self, UpstreamError::Status { status: 400 | 404 | 409 | 413 | 422, .. })
    }

    /// Whether the failure counts against the model's breaker.
    pub fn is_breaker_failure(&self) -> bool {
        !self.is_client_error() && !matches!(self, UpstreamError::Unavailable(_))
    }

    /// A short description for error messages and logs (never a URL or a key).
    pub fn describe(&self) -> String {
        match self {
            UpstreamError::Connect(e) => format!("connection failed ({e})"),
            UpstreamError::Timeout => "timed out before the first byte".into(),
            UpstreamError::Stalled => "the reply's body stalled".into(),
            UpstreamError::Status { status, .. } => format!("upstream answered {status}"),
            UpstreamError::Malformed(e) => format!("malformed reply ({e})"),
            UpstreamError::Unavailable(e) => format!("unavailable ({e})"),
        }
    }
}

/// The behaviour every provider has.
pub trait ProviderApi {
    /// Makes one call.
    fn call(&self, call: Call) -> impl std::future::Future<Output = Result<Reply, UpstreamError>> + Send;
}

/// A configured provider.
#[derive(Clone, Debug)]
pub enum Provider {
    /// Any OpenAI-compatible API.
    OpenAi(openai::OpenAi),
    /// Anthropic's Messages API.
    Anthropic(anthropic::Anthropic),
    /// Google's Gemini API.
    Gemini(gemini::Gemini),
    /// The built-in mock.
    Mock(mock::Mock),
    /// A provider that cannot be used, and why (kind not built yet, key not set).
    Unavailable(String),
}

/// The host (and port) a provider's config reaches, as `/v1/providers` shows it: never a user,
/// password, path or query string. `None` for the mock (no network) and for a URL that does not
/// parse.
pub fn host_of(cfg: &ProviderConfig) -> Option<String> {
    let url = match (cfg.kind, cfg.base_url.as_deref()) {
        (ProviderKind::Mock, _) => return None,
        (_, Some(u)) => u,
        (ProviderKind::Anthropic, None) => "https://api.anthropic.com",
        (ProviderKind::Gemini, None) => "https://generativelanguage.googleapis.com",
        (ProviderKind::Openai, None) => return None,
    };
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

impl Provider {
    /// Builds a provider from its config. Secrets come from the environment.
    pub fn from_config(name: &str, cfg: &ProviderConfig, http: &reqwest::Client) -> Provider {
        let key = match &cfg.api_key_env {
            Some(env) => match std::env::var(env) {
                Ok(k) if !k.is_empty() => Some(k),
                _ => return Provider::Unavailable(format!("${env} is not set")),
            },
            None => None,
        };
        match cfg.kind {
            ProviderKind::Mock => Provider::Mock(mock::Mock::new(name, cfg)),
            ProviderKind::Openai => match &cfg.base_url {
                Some(url) => Provider::OpenAi(openai::OpenAi::new(url, key, cfg.headers.clone(), http.clone())),
                None => Provider::Unavailable("no base_url".into()),
            },
            ProviderKind::Anthropic => Provider::Anthropic(anthropic::Anthropic::new(
                cfg.base_url.as_deref().unwrap_or("https://api.anthropic.com"),
                key,
                cfg.headers.clone(),
                http.clone(),
            )),
            ProviderKind::Gemini => Provider::Gemini(gemini::Gemini::new(
                cfg.base_url.as_deref().unwrap_or("https://generativelanguage.googleapis.com"),
                key,
                cfg.headers.clone(),
                http.clone(),
            )),
        }
    }

    /// Whether the provider reports a stream's usage when asked (`stream_options.include_usage`).
    /// Every OpenAI-compatible API takes the field (those that ignore it get their tokens
    /// counted); Anthropic and Gemini report usage in their own events, which are translated.
    pub fn reports_stream_usage(&self) -> bool {
        !matches!(self, Provider::Unavailable(_))
    }

    /// Makes one call.
    pub async fn call(&self, call: Call) -> Result<Reply, UpstreamError> {
        match self {
            Provider::OpenAi(p) => p.call(call).await,
            Provider::Anthropic(p) => p.call(call).await,
            Provider::Gemini(p) => p.call(call).await,
            Provider::Mock(p) => p.call(call).await,
            Provider::Unavailable(why) => Err(UpstreamError::Unavailable(why.clone())),
        }
    }
}

/// Parses a `Retry-After` value: seconds, or an HTTP date (treated as unknown).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    // `try_from`: a value too large for a `Duration` (`99999999999999999999`) is unknown, never a panic.
    v.trim().parse::<f64>().ok().and_then(|s| Duration::try_from_secs_f64(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_parsed_defensively() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        for bad in ["99999999999999999999", "1e300", "-1", "NaN", "inf", "Wed, 21 Oct 2015 07:28:00 GMT", ""] {
            assert_eq!(parse_retry_after(bad), None, "{bad}");
        }
    }
}
