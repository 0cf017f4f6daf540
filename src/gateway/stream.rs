//! The streaming relay: upstream events are parsed one by one, `model` is rewritten to the
//! catalog name, and each event is flushed as soon as it is complete. The usage chunk that the
//! gateway asked for is read (and given `usage.cost`), and dropped when the client did not ask for
//! it; when the upstream reports no usage, the tokens are counted. A stream that breaks (an
//! upstream error, a reset, an event over the size limit, no chunk within the idle timeout, or an
//! end without `[DONE]`) ends with an error event and no `[DONE]`, and is recorded as 502. When the client goes away, the body is dropped, and with it the upstream request;
//! the request is then settled with what was streamed so far. The relay owns the request's
//! settle guard, so every way a stream ends settles it exactly once.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::Value;

use super::settle::Settle;
use crate::accounting::{usage, Usage};
use crate::providers::EventStream;

fn frame(data: &str) -> bytes::Bytes {
    bytes::Bytes::from(format!("data: {data}\n\n"))
}

fn error_frame(message: &str) -> bytes::Bytes {
    let e = serde_json::json!({"error": {"message": message, "type": "api_error", "code": "stream_interrupted", "param": null}});
    frame(&e.to_string())
}

/// What a stream has used so far; settles the request exactly once, when the stream ends or is
/// dropped.
pub struct Tally {
    settle: Option<Settle>,
    prompt: String,
    prompt_tokens: Option<u64>,
    client_wants_usage: bool,
    reported: Option<Usage>,
    text: String,
    /// A usage chunk has gone to the client.
    usage_sent: bool,
}

impl Tally {
    /// A tally for one streamed request.
    pub fn new(settle: Settle, prompt: String, prompt_tokens: Option<u64>, client_wants_usage: bool) -> Tally {
        Tally {
            settle: Some(settle),
            prompt,
            prompt_tokens,
            client_wants_usage,
            reported: None,
            text: String::new(),
            usage_sent: false,
        }
    }

    fn usage(&self) -> Usage {
        self.reported.unwrap_or_else(|| Usage {
            input: self.prompt_tokens.unwrap_or_else(|| crate::util::tokens::count(&self.prompt)),
            output: crate::util::tokens::count(&self.text),
            estimated: true,
        })
    }

    fn settle(&mut self, status: u16) -> Option<(Usage, u64)> {
        let mut settle = self.settle.take()?;
        let used = self.usage();
        Some((used, settle.finish(status, used)))
    }

    /// Reads one event; `None` when it is not forwarded.
    fn observe(&mut self, v: &mut Value) -> bool {
        if let Some(u) = usage::reported(v) {
            self.reported = Some(u);
            if usage::is_usage_chunk(v) && !self.client_wants_usage {
                return false;
            }
            let cost = self.settle.as_ref().map_or(0, |s| s.cost_of(u));
            usage::set_cost(v, cost);
            self.usage_sent = true;
        } else {
            usage::completion_text(v, &mut self.text);
        }
        true
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        // The client went away before the end: settle with what was streamed.
        self.settle(499);
    }
}

struct Relay {
    events: EventStream,
    model: String,
    tally: Tally,
    done: bool,
    cut: tokio::sync::watch::Receiver<bool>,
}

impl Relay {
    /// The next frame to send, or `None` at the end.
    async fn next(&mut self, idle: Duration) -> Option<bytes::Bytes> {
        loop {
            if self.done {
                return None;
            }
            let next = tokio::select! {
                biased;
                // A shutdown whose drain timed out: end with an error event, settled.
                _ = self.cut.wait_for(|cut| *cut) => {
                    self.done = true;
                    self.tally.settle(503);
                    return Some(error_frame("the gateway is shutting down"));
                }
                next = tokio::time::timeout(idle, self.events.next()) => next,
            };
            match next {
                Err(_) => return Some(self.broken("the upstream stalled")),
                // Every complete stream ends with `[DONE]` (translated ones included): one that
                // just stops was cut short, and is an error, not a complete answer.
                Ok(None) => return Some(self.broken("the upstream stream ended without [DONE]")),
                Ok(Some(Err(e))) => {
                    return Some(self.broken(&format!("the upstream stream broke: {}", e.describe())));
                }
                Ok(Some(Ok(data))) => {
                    if data.trim() == "[DONE]" {
                        self.done = true;
                        let wanted = self.tally.client_wants_usage && !self.tally.usage_sent;
                        let settled = self.tally.settle(200);
                        let mut out = Vec::new();
                        if let (true, Some((u, cost))) = (wanted, settled) {
                            // The upstream reported no usage: the counted one, as OpenAI shapes it.
                            let chunk = serde_json::json!({"object": "chat.completion.chunk", "model": self.model,
                                "choices": [], "usage": {"prompt_tokens": u.input, "completion_tokens": u.output,
                                "total_tokens": u.input + u.output, "cost": usage::usd(cost)}});
                            out.extend_from_slice(&frame(&chunk.to_string()));
                        }
                        out.extend_from_slice(&frame("[DONE]"));
                        return Some(bytes::Bytes::from(out));
                    }
                    let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
                        return Some(self.broken("the upstream sent an event that is not JSON"));
                    };
                    if !self.tally.observe(&mut v) {
                        continue;
                    }
                    if let Some(obj) = v.as_object_mut() {
                        if obj.contains_key("model") {
                            obj.insert("model".into(), Value::String(self.model.clone()));
                        }
                    }
                    return Some(frame(&v.to_string()));
                }
            }
        }
    }

    fn broken(&mut self, message: &str) -> bytes::Bytes {
        self.done = true;
        self.tally.settle(502);
        error_frame(message)
    }
}

/// Relays `events` to the client as server-sent events, until `cut` is raised.
pub fn relay(
    events: EventStream,
    model: String,
    idle: Duration,
    cut: tokio::sync::watch::Receiver<bool>,
    tally: Tally,
) -> Response {
    let relay = Relay { events, model, tally, done: false, cut };
    let out = futures_util::stream::unfold(relay, move |mut r| async move {
        let frame = r.next(idle).await?;
        Some((Ok::<_, std::io::Error>(frame), r))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(out),
    )
        .into_response()
}
