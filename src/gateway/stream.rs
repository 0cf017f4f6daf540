//! The streaming relay: upstream events are read one by one, `model` is rewritten to the
//! catalog name, and each event is flushed as soon as it is complete (events that are ready
//! together go out in one write: the upstream is read ahead by a task of its own, up to
//! `READ_AHEAD` frames). An event without usage is not parsed into a value: the members
//! the relay needs are borrowed from its text and `model` is spliced in place, so the rest passes
//! on byte for byte. The usage chunk that the
//! gateway asked for is read (and given `usage.cost`), and dropped when the client did not ask for
//! it; when the upstream reports no usage, the tokens are counted. A stream that breaks (an
//! upstream error, a reset, an event over the size limit, no chunk within the idle timeout, or an
//! end without `[DONE]`) ends with an error event and no `[DONE]`, and is recorded as 502. When
//! the client goes away, the body is dropped, and with it the upstream request; the request is
//! then settled with the provider's reported usage if it came, else with the prompt and the most
//! output the answer could have had (the provider bills what it generated, which is never
//! reported). The relay owns the request's
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
    /// The answer being assembled for the cache, when the rule caches and the lookup missed.
    caching: Option<Caching>,
}

/// A streamed answer assembled for the cache: one choice of text (an answer with tool calls or
/// several choices is not stored).
struct Caching {
    cache: std::sync::Arc<crate::cache::ResponseCache>,
    ticket: crate::cache::Ticket,
    model: String,
    content: String,
    finish: Option<String>,
    storable: bool,
}

impl Caching {
    fn see(&mut self, index: u64, content: Option<&str>, tool_calls: bool, finish: Option<&str>) {
        self.storable &= index == 0 && !tool_calls;
        self.content.push_str(content.unwrap_or(""));
        if let Some(f) = finish {
            self.finish = Some(f.to_string());
        }
    }

    /// The whole answer, as a non-streamed request would have had it.
    fn body(&self, used: Usage) -> Option<Value> {
        if !self.storable {
            return None;
        }
        // A stream that ended with `[DONE]` but named no finish ended as a stop.
        let finish = self.finish.as_deref().unwrap_or("stop");
        Some(serde_json::json!({
            "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()), "object": "chat.completion",
            "created": chrono::Utc::now().timestamp(), "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": used.input, "completion_tokens": used.output, "total_tokens": used.input + used.output},
        }))
    }
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
            caching: None,
        }
    }

    /// Stores the answer in the cache when the stream ends with `[DONE]`.
    pub fn cache_with(
        &mut self,
        cache: std::sync::Arc<crate::cache::ResponseCache>,
        ticket: crate::cache::Ticket,
        model: &str,
    ) {
        self.caching = Some(Caching {
            cache,
            ticket,
            model: model.to_string(),
            content: String::new(),
            finish: None,
            storable: true,
        });
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
        let mut used = self.usage();
        if status == 499 && self.reported.is_none() {
            // The client went away mid-answer: the upstream stream is dropped, but the provider
            // bills what it generated, which is never reported. The output is charged at the
            // most the answer could have had (`max_tokens`, or the reservation's bound).
            if let Some(cap) = settle.cap {
                used.output = used.output.max(cap.output);
            }
        }
        let cost = settle.finish(status, used);
        if let (200, Some(c)) = (status, self.caching.take()) {
            if let Some(body) = c.body(used) {
                crate::cache::store(&c.cache, c.ticket, &body, super::cache::answered(&settle));
            }
        }
        Some((used, cost))
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
        if let Some(c) = &mut self.caching {
            for ch in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
                let d = ch.get("delta");
                c.see(
                    ch.get("index").and_then(Value::as_u64).unwrap_or(0),
                    d.and_then(|d| d.get("content")).and_then(Value::as_str),
                    d.and_then(|d| d.get("tool_calls")).is_some_and(|t| !t.is_null()),
                    ch.get("finish_reason").and_then(Value::as_str),
                );
            }
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

/// The members of a chunk that the relay reads, borrowed from the event's text. Everything else
/// is skipped (and passed on as written).
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
}

#[derive(serde::Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    message: Option<Delta<'a>>,
}

#[derive(serde::Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(serde::Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(serde::Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

/// An event without usage, relayed without building a value: its text is gathered from the
/// borrowed members and `model` is spliced in place. `None` when the event needs the full parse
/// (it carries usage, or a member has a shape the borrowed types do not take).
fn fast_frame(data: &str, model_json: &str, text: &mut String, caching: Option<&mut Caching>) -> Option<bytes::Bytes> {
    let peek: Peek = serde_json::from_str(data).ok()?;
    if peek.usage.is_some_and(|u| u.get() != "null") {
        return None;
    }
    if let Some(cache) = caching {
        for c in peek.choices.iter().flatten() {
            let d = c.delta.as_ref();
            cache.see(
                c.index.unwrap_or(0),
                d.and_then(|d| d.content.as_deref()),
                d.is_some_and(|d| d.tool_calls.is_some()),
                c.finish_reason.as_deref(),
            );
        }
    }
    for c in peek.choices.iter().flatten() {
        for part in [&c.delta, &c.message].into_iter().flatten() {
            text.push_str(part.content.as_deref().unwrap_or(""));
            for call in part.tool_calls.iter().flatten() {
                text.push_str(call.function.as_ref().and_then(|f| f.arguments.as_deref()).unwrap_or(""));
            }
        }
    }
    let mut out = Vec::with_capacity(data.len() + model_json.len() + 8);
    out.extend_from_slice(b"data: ");
    match peek.model {
        Some(m) => {
            // `m` borrows from `data`, so its place in the text is where its bytes are.
            let at = (m.get().as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
            let (before, after) = (data.get(..at)?, data.get(at + m.get().len()..)?);
            out.extend_from_slice(before.as_bytes());
            out.extend_from_slice(model_json.as_bytes());
            out.extend_from_slice(after.as_bytes());
        }
        None => out.extend_from_slice(data.as_bytes()),
    }
    out.extend_from_slice(b"\n\n");
    Some(bytes::Bytes::from(out))
}

/// Frames queued together are sent together, up to about this many bytes in one write.
const COALESCE_BYTES: usize = 32 << 10;

struct Relay {
    events: EventStream,
    model: String,
    /// `model` as a JSON string, spliced into each event.
    model_json: String,
    tally: Tally,
    done: bool,
    cut: tokio::sync::watch::Receiver<bool>,
    idle: Duration,
    /// When the last event came; the stall timer below is moved only when it fires, so an event
    /// costs a clock read rather than a timer.
    last: tokio::time::Instant,
    /// The last event came within `BURST` of the one before it.
    burst: bool,
    stall: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Relay {
    fn new(
        events: EventStream,
        model: String,
        idle: Duration,
        cut: tokio::sync::watch::Receiver<bool>,
        tally: Tally,
    ) -> Relay {
        let now = tokio::time::Instant::now();
        let model_json = Value::String(model.clone()).to_string();
        Relay {
            events,
            model,
            model_json,
            tally,
            done: false,
            cut,
            idle,
            last: now,
            burst: false,
            stall: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    /// The next frame to send, or `None` at the end.
    async fn next(&mut self) -> Option<bytes::Bytes> {
        loop {
            if self.done {
                return None;
            }
            // `None`: the shutdown cut the stream; `Some(None)`: the stall timer fired. An event
            // that is ready is taken before the other two are polled (each poll of them registers
            // a waker), so the cut is also read here, which a stream that never waits would miss.
            let next = if *self.cut.borrow() {
                None
            } else {
                tokio::select! {
                    biased;
                    next = self.events.next() => Some(Some(next)),
                    // A shutdown whose drain timed out: end with an error event, settled.
                    _ = self.cut.wait_for(|cut| *cut) => None,
                    () = &mut self.stall => Some(None),
                }
            };
            let next = match next {
                None => {
                    self.done = true;
                    self.tally.settle(503);
                    return Some(error_frame("the gateway is shutting down"));
                }
                Some(None) => {
                    let deadline = self.last + self.idle;
                    if tokio::time::Instant::now() >= deadline {
                        return Some(self.broken("the upstream stalled"));
                    }
                    self.stall.as_mut().reset(deadline);
                    continue;
                }
                Some(Some(next)) => next,
            };
            let now = tokio::time::Instant::now();
            self.burst = now.duration_since(self.last) < BURST;
            self.last = now;
            match next {
                // Every complete stream ends with `[DONE]` (translated ones included): one that
                // just stops was cut short, and is an error, not a complete answer.
                None => return Some(self.broken("the upstream stream ended without [DONE]")),
                Some(Err(e)) => {
                    return Some(self.broken(&format!("the upstream stream broke: {}", e.describe())));
                }
                Some(Ok(data)) => {
                    if data.trim() == "[DONE]" {
                        return Some(self.finish());
                    }
                    let tally = &mut self.tally;
                    if let Some(frame) = fast_frame(&data, &self.model_json, &mut tally.text, tally.caching.as_mut()) {
                        return Some(frame);
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

    /// `[DONE]`: settled as a success, with the counted usage chunk first when the client asked
    /// for usage and the upstream reported none.
    fn finish(&mut self) -> bytes::Bytes {
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
        bytes::Bytes::from(out)
    }

    fn broken(&mut self, message: &str) -> bytes::Bytes {
        self.done = true;
        self.tally.settle(502);
        error_frame(message)
    }
}

/// `first` and the frames queued after it, up to `COALESCE_BYTES`: those already queued, and in a
/// burst those that come within `GATHER_TURNS` turns of the scheduler.
async fn gather(
    rx: &mut tokio::sync::mpsc::Receiver<(bytes::Bytes, bool)>,
    first: bytes::Bytes,
    burst: bool,
) -> bytes::Bytes {
    use tokio::sync::mpsc::error::TryRecvError;
    let mut out: Option<bytes::BytesMut> = None;
    let mut turns = if burst { GATHER_TURNS } else { 0 };
    loop {
        let len = out.as_ref().map_or(first.len(), bytes::BytesMut::len);
        if len >= COALESCE_BYTES {
            break;
        }
        match rx.try_recv() {
            Ok((more, _)) => out.get_or_insert_with(|| bytes::BytesMut::from(&first[..])).extend_from_slice(&more),
            Err(TryRecvError::Empty) if turns > 0 => {
                turns -= 1;
                tokio::task::yield_now().await;
            }
            Err(_) => break,
        }
    }
    out.map_or(first, bytes::BytesMut::freeze)
}

/// Frames read ahead of the client: the reader waits when this many are queued (a slow client
/// slows the upstream down, as it would without the queue).
const READ_AHEAD: usize = 32;

/// Events closer together than this are a burst (an upstream that sends faster than it
/// generates: a cached or replayed answer, a fast local model), worth gathering into one write.
/// A model generating tokens sends them milliseconds apart, and each goes out at once.
const BURST: Duration = Duration::from_millis(1);

/// How many turns of the scheduler a write in a burst waits for more frames.
const GATHER_TURNS: usize = 8;

/// Relays `events` to the client as server-sent events, until `cut` is raised.
///
/// The upstream is read by a task of its own, which queues the frames it makes. The HTTP client
/// hands a body over one chunk (one event) per turn of its connection task, so the events of one
/// read from the upstream are queued a few turns apart: in a burst, the response body waits up to
/// `GATHER_TURNS` turns and sends what has been queued in one write, instead of one write per
/// event. When the client goes away, the queue closes and the reader stops, dropping the upstream
/// request and settling what was streamed.
pub fn relay(
    events: EventStream,
    model: String,
    idle: Duration,
    cut: tokio::sync::watch::Receiver<bool>,
    tally: Tally,
) -> Response {
    let mut relay = Relay::new(events, model, idle, cut, tally);
    let (tx, rx) = tokio::sync::mpsc::channel::<(bytes::Bytes, bool)>(READ_AHEAD);
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                biased;
                frame = relay.next() => frame,
                () = tx.closed() => None,
            };
            let Some(frame) = frame else { break };
            if tx.send((frame, relay.burst)).await.is_err() {
                break;
            }
        }
    });
    let out = futures_util::stream::unfold(rx, |mut rx| async move {
        let (first, burst) = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(gather(&mut rx, first, burst).await), rx))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the full parse makes of an event: its text, and the frame with `model` replaced.
    fn slow(data: &str, model: &str) -> (String, Value) {
        let mut v: Value = serde_json::from_str(data).unwrap();
        let mut text = String::new();
        usage::completion_text(&v, &mut text);
        if let Some(obj) = v.as_object_mut().filter(|o| o.contains_key("model")) {
            obj.insert("model".into(), Value::String(model.into()));
        }
        (text, v)
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_parse_and_keeps_the_bytes() {
        let model_json = Value::String("gpt \"4o\"".into()).to_string();
        let events = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"up-x","choices":[{"index":0,"delta":{"content":"Hel\nlo \u00e9"},"finish_reason":null}],"usage":null}"#,
            r#"{"model" : "up", "choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}}], "x": 1.50}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":null}}],"system_fingerprint":"fp"}"#,
            r#"{"choices":[],"model":"m","mod\u0065l2":3}"#,
        ];
        for data in events {
            let mut text = String::new();
            let frame = fast_frame(data, &model_json, &mut text, None).expect(data);
            let frame = std::str::from_utf8(&frame).unwrap();
            let body = frame.strip_prefix("data: ").and_then(|f| f.strip_suffix("\n\n")).unwrap();
            let (want_text, want) = slow(data, "gpt \"4o\"");
            assert_eq!(text, want_text, "{data}");
            assert_eq!(serde_json::from_str::<Value>(body).unwrap(), want, "{data}");
            // Only `model` changed: the rest is byte for byte what the upstream sent.
            let from = data.find("\"model\"").map_or(data.len(), |i| i);
            assert!(body.starts_with(&data[..from]), "{body}");
        }
        assert!(fast_frame(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#, &model_json, &mut String::new(), None)
            .is_none());
        assert!(fast_frame(r#"{"choices":[{"delta":{"content":["odd"]}}]}"#, &model_json, &mut String::new(), None)
            .is_none());
        assert!(fast_frame(r#"{"model":"a","model":"b"}"#, &model_json, &mut String::new(), None).is_none());
        assert!(fast_frame("not json", &model_json, &mut String::new(), None).is_none());
    }

    /// A reader that queues `n` frames, each a few scheduler turns after the last, as the HTTP
    /// client's chunk-by-chunk hand-over does.
    fn reader(n: usize, turns: usize) -> tokio::sync::mpsc::Receiver<(bytes::Bytes, bool)> {
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        tokio::spawn(async move {
            for i in 0..n {
                for _ in 0..turns {
                    tokio::task::yield_now().await;
                }
                let _ = tx.send((bytes::Bytes::from(format!("<{i}>")), true)).await;
            }
        });
        rx
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_goes_out_in_one_write_and_a_lone_event_at_once() {
        // In a burst, the frames that come within the gathering turns join the first.
        let mut rx = reader(5, 1);
        let (first, _) = rx.recv().await.unwrap();
        let out = gather(&mut rx, first, true).await;
        assert_eq!(&out[..], b"<0><1><2><3><4>");
        assert!(rx.recv().await.is_none());

        // Not in a burst: only what is queued already, without waiting for the rest.
        let mut rx = reader(3, 1);
        let (first, _) = rx.recv().await.unwrap();
        assert_eq!(&gather(&mut rx, first, false).await[..], b"<0>");
        let (next, _) = rx.recv().await.unwrap();
        assert_eq!(&next[..], b"<1>");

        // A burst whose next event is further away than the gathering turns is not held for it.
        let mut rx = reader(2, GATHER_TURNS * 4);
        let (first, _) = rx.recv().await.unwrap();
        assert_eq!(&gather(&mut rx, first, true).await[..], b"<0>");

        // A write stops growing at the size limit.
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        for _ in 0..READ_AHEAD {
            tx.send((bytes::Bytes::from(vec![b'x'; 4 << 10]), true)).await.unwrap();
        }
        let (first, _) = rx.recv().await.unwrap();
        let out = gather(&mut rx, first, true).await;
        assert_eq!(out.len(), COALESCE_BYTES);
    }
}
