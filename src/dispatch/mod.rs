//! Dispatch: a plan's taken targets -> one upstream reply. Tries targets in order, with retries
//! (exponential backoff and jitter), `Retry-After` honoured up to a cap, per-model breakers and
//! latency averages, and the first-byte timeout. A stream is committed only after its first event,
//! so that every failure before that can still fall through.

pub mod health;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::Rng;
use serde_json::Value;

use crate::accounting::Gate;
use crate::catalog::Endpoint;
use crate::providers::{Call, Provider, Reply, UpstreamError};
pub use health::{HealthView, Registry};

/// Longest `Retry-After` that is waited for; a longer one falls through.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(10);
/// Default time to the first byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One target to try.
pub struct Target<'a> {
    /// Catalog name.
    pub model: &'a str,
    /// Upstream id.
    pub upstream_id: &'a str,
    /// Provider name.
    pub provider_name: &'a str,
    /// The provider.
    pub provider: &'a Provider,
    /// `with (...)` overrides.
    pub with: &'a [(String, Value)],
    /// The attempt's worst-case cost, reserved from the key's budget before the call (micro-USD).
    pub reserve_micros: u64,
}

/// What an attempt skipped for the budget says (a request whose every target says it gets 402).
pub const OVER_BUDGET: &str = "skipped: its worst-case cost does not fit the remaining budget";

/// How to try targets.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Retries per target.
    pub retries: u32,
    /// Time to the first byte, per attempt.
    pub timeout: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
    /// First backoff.
    pub backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retries: 0,
            timeout: DEFAULT_TIMEOUT,
            retry_after_cap: RETRY_AFTER_CAP,
            backoff: Duration::from_millis(100),
        }
    }
}

/// One upstream call (or a target skipped at dispatch time).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attempt {
    /// Catalog name.
    pub model: String,
    /// Provider name.
    pub provider: String,
    /// What happened.
    pub outcome: String,
    /// Whether an upstream call was made.
    pub called: bool,
}

/// A reply that came back.
pub struct Success {
    /// The reply (a stream starts with its first event already received).
    pub reply: Reply,
    /// Catalog name of the model that answered.
    pub model: String,
    /// Its upstream id.
    pub upstream_id: String,
    /// Its provider.
    pub provider: String,
    /// Every attempt, the successful one last.
    pub attempts: Vec<Attempt>,
    /// Time to first byte of the successful attempt.
    pub ttfb: Duration,
    /// Budget reserved for the successful attempt (settled when the response ends).
    pub reserved_micros: u64,
}

/// Why no reply came back.
#[derive(Debug)]
pub enum Failure {
    /// The upstream refused the request itself (400, 404, 409, 413, 422): goes back to the client.
    Client {
        /// Upstream status.
        status: u16,
        /// Upstream body.
        body: String,
        /// Attempts so far.
        attempts: Vec<Attempt>,
        /// The model that refused.
        model: String,
        /// Its provider.
        provider: String,
    },
    /// Every target was tried and failed (502).
    AllFailed(Vec<Attempt>),
    /// No target could even be tried (503).
    NoneTried(Vec<Attempt>),
}

impl Failure {
    /// The attempts made.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            Failure::Client { attempts, .. } | Failure::AllFailed(attempts) | Failure::NoneTried(attempts) => attempts,
        }
    }
}

/// The body that leaves for one target, serialised straight from the client's body (no copy of
/// its messages): `model` set to the upstream id, overrides applied (`max_tokens` caps the
/// client's value; the others replace it). With `include_usage`, a stream asks for its usage
/// (`stream_options.include_usage`), whatever the client asked.
pub fn outgoing_body(client: &Value, upstream_id: &str, with: &[(String, Value)], include_usage: bool) -> bytes::Bytes {
    let bytes = match client.as_object() {
        Some(map) => serde_json::to_vec(&Outgoing { client: map, model: upstream_id, with, include_usage }),
        None => serde_json::to_vec(client),
    };
    bytes::Bytes::from(bytes.unwrap_or_default())
}

fn is_max(k: &str) -> bool {
    k == "max_tokens" || k == "max_completion_tokens"
}

struct Outgoing<'a> {
    client: &'a serde_json::Map<String, Value>,
    model: &'a str,
    with: &'a [(String, Value)],
    include_usage: bool,
}

impl serde::Serialize for Outgoing<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let cap = self.with.iter().find(|(k, _)| is_max(k)).map(|(_, v)| v.as_u64().unwrap_or(u64::MAX));
        let mut m = s.serialize_map(None)?;
        let mut capped = false;
        for (k, v) in self.client {
            if k == "model" {
                m.serialize_entry(k, self.model)?;
            } else if k == "stream_options" && self.include_usage {
                let mut opts = v.as_object().cloned().unwrap_or_default();
                opts.insert("include_usage".into(), Value::Bool(true));
                m.serialize_entry(k, &opts)?;
            } else if is_max(k) && cap.is_some() {
                // A numeric client value is capped in place; anything else gives way to the override.
                if let (Some(c), Some(cur)) = (cap, v.as_u64()) {
                    m.serialize_entry(k, &cur.min(c))?;
                    capped = true;
                }
            } else if !self.with.iter().any(|(w, _)| w == k) {
                m.serialize_entry(k, v)?;
            }
        }
        if !self.client.contains_key("model") {
            m.serialize_entry("model", self.model)?;
        }
        if self.include_usage && !self.client.contains_key("stream_options") {
            m.serialize_entry("stream_options", &serde_json::json!({"include_usage": true}))?;
        }
        for (k, v) in self.with {
            if !(is_max(k) && capped) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(6)).min(Duration::from_secs(2));
    let jitter: f64 = rand::rng().random_range(0.5..1.5);
    exp.mul_f64(jitter)
}

/// Tries the targets in order.
pub async fn run(
    registry: &Registry,
    targets: &[Target<'_>],
    client_body: &Value,
    stream: bool,
    endpoint: Endpoint,
    opts: Options,
    gate: Option<Gate<'_>>,
) -> Result<Success, Failure> {
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut called_any = false;
    for t in targets {
        let mut attempt = 0u32;
        loop {
            if !registry.admit(t.model) {
                attempts.push(Attempt {
                    model: t.model.into(),
                    provider: t.provider_name.into(),
                    outcome: "skipped: breaker open".into(),
                    called: false,
                });
                break;
            }
            if let Provider::Unavailable(why) = t.provider {
                registry.release(t.model);
                attempts.push(Attempt {
                    model: t.model.into(),
                    provider: t.provider_name.into(),
                    outcome: format!("skipped: provider unavailable ({why})"),
                    called: false,
                });
                break;
            }
            if gate.is_some_and(|g| !g.try_reserve(t.reserve_micros)) {
                registry.release(t.model);
                attempts.push(Attempt {
                    model: t.model.into(),
                    provider: t.provider_name.into(),
                    outcome: OVER_BUDGET.into(),
                    called: false,
                });
                break;
            }
            let reserved = if gate.is_some() { t.reserve_micros } else { 0 };
            called_any = true;
            let started = Instant::now();
            let call = Call {
                body: outgoing_body(client_body, t.upstream_id, t.with, stream && t.provider.reports_stream_usage()),
                stream,
                endpoint,
                first_byte_timeout: opts.timeout,
            };
            let result = match t.provider.call(call).await {
                Ok(Reply::Stream(mut s)) => {
                    let left = opts.timeout.saturating_sub(started.elapsed());
                    match tokio::time::timeout(left, s.next()).await {
                        Err(_) => Err(UpstreamError::Timeout),
                        Ok(None) => Err(UpstreamError::Malformed("the stream ended before its first event".into())),
                        Ok(Some(Err(e))) => Err(e),
                        Ok(Some(Ok(first))) => {
                            if let Some(status) = stream_error_status(&first) {
                                Err(UpstreamError::Status { status, body: first, retry_after: None })
                            } else {
                                let rest = futures_util::stream::once(async move { Ok(first) }).chain(s);
                                Ok(Reply::Stream(Box::pin(rest)))
                            }
                        }
                    }
                }
                other => other,
            };
            let ttfb = started.elapsed();
            match result {
                Ok(reply) => {
                    registry.success(t.model, ttfb);
                    attempts.push(Attempt {
                        model: t.model.into(),
                        provider: t.provider_name.into(),
                        outcome: "ok".into(),
                        called: true,
                    });
                    return Ok(Success {
                        reply,
                        model: t.model.into(),
                        upstream_id: t.upstream_id.into(),
                        provider: t.provider_name.into(),
                        attempts,
                        ttfb,
                        reserved_micros: reserved,
                    });
                }
                Err(e) => {
                    if let Some(g) = gate {
                        g.release(reserved);
                    }
                    attempts.push(Attempt {
                        model: t.model.into(),
                        provider: t.provider_name.into(),
                        outcome: e.describe(),
                        called: true,
                    });
                    if let (true, UpstreamError::Status { status, body, .. }) = (e.is_client_error(), &e) {
                        registry.release(t.model);
                        return Err(Failure::Client {
                            status: *status,
                            body: body.clone(),
                            attempts,
                            model: t.model.into(),
                            provider: t.provider_name.into(),
                        });
                    }
                    if e.is_breaker_failure() {
                        registry.failure(t.model);
                    } else {
                        registry.release(t.model);
                    }
                    if attempt >= opts.retries {
                        break;
                    }
                    let wait = match &e {
                        UpstreamError::Status { status: 429, retry_after: Some(ra), .. } => {
                            if *ra > opts.retry_after_cap {
                                break;
                            }
                            *ra
                        }
                        _ => backoff(opts.backoff, attempt),
                    };
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
    if called_any {
        Err(Failure::AllFailed(attempts))
    } else {
        Err(Failure::NoneTried(attempts))
    }
}

/// Some upstreams answer 200 and then send an error as the first event.
fn stream_error_status(first: &str) -> Option<u16> {
    let v: Value = serde_json::from_str(first).ok()?;
    let err = v.get("error")?;
    let code = err.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
    Some(code.filter(|c| (400..600).contains(c)).unwrap_or(502))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build_body(client: &Value, upstream_id: &str, with: &[(String, Value)]) -> Value {
        serde_json::from_slice(&outgoing_body(client, upstream_id, with, false)).unwrap()
    }

    #[test]
    fn overrides_cap_max_tokens_and_replace_the_rest() {
        let client = json!({"model": "auto", "max_tokens": 2000, "temperature": 1.0, "messages": []});
        let b = build_body(&client, "up", &[("max_tokens".into(), json!(512)), ("temperature".into(), json!(0.2))]);
        assert_eq!(b["model"], "up");
        assert_eq!(b["max_tokens"], 512);
        assert_eq!(b["temperature"], 0.2);
        let small = json!({"model": "auto", "max_tokens": 100, "messages": []});
        assert_eq!(build_body(&small, "up", &[("max_tokens".into(), json!(512))])["max_tokens"], 100);
        let none = json!({"model": "auto", "messages": []});
        assert_eq!(build_body(&none, "up", &[("max_tokens".into(), json!(512))])["max_tokens"], 512);
        // The client's `max_completion_tokens` is capped by a `max_tokens` override, not duplicated.
        let mct = json!({"model": "auto", "max_completion_tokens": 900, "messages": []});
        let b = build_body(&mct, "up", &[("max_tokens".into(), json!(512))]);
        assert_eq!((b["max_completion_tokens"].clone(), b.get("max_tokens")), (json!(512), None));
        // Keys are never written twice, and the rest of the body is kept as it was.
        let text =
            String::from_utf8(outgoing_body(&client, "up", &[("temperature".into(), json!(0.2))], false).to_vec())
                .unwrap();
        assert_eq!(text.matches("temperature").count(), 1);
        assert_eq!(text.matches("\"model\"").count(), 1);
        let nomodel = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(build_body(&nomodel, "up", &[])["messages"][0]["content"], "hi");
        assert_eq!(build_body(&nomodel, "up", &[])["model"], "up");
    }

    #[test]
    fn streams_ask_for_usage_and_keep_the_clients_stream_options() {
        let client = json!({"model": "auto", "stream": true, "messages": []});
        let b: Value = serde_json::from_slice(&outgoing_body(&client, "up", &[], true)).unwrap();
        assert_eq!(b["stream_options"], json!({"include_usage": true}));
        let asked = json!({"model": "auto", "stream": true, "stream_options": {"include_usage": false, "x": 1}, "messages": []});
        let b: Value = serde_json::from_slice(&outgoing_body(&asked, "up", &[], true)).unwrap();
        assert_eq!(b["stream_options"], json!({"include_usage": true, "x": 1}));
        let b: Value = serde_json::from_slice(&outgoing_body(&client, "up", &[], false)).unwrap();
        assert_eq!(b.get("stream_options"), None);
    }
}
