//! What the translating front doors ([`super::messages`], [`super::responses`]) share at the
//! edge: the internal event stream's frames (`data: ...` payloads, however the bytes were cut),
//! and a body stream mapped through a translator.

use futures_util::StreamExt;

/// The `data:` payloads of an event stream, from bytes cut anywhere.
#[derive(Default)]
pub struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    /// Takes bytes; returns the payloads of the frames they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&frame);
            out.extend(text.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.trim().to_string()));
        }
        out
    }
}

/// A door's translation of the internal stream: each chunk, then the end (`[DONE]`), as its own
/// events appended to `out`.
pub trait Events {
    /// One internal chunk.
    fn chunk(&mut self, v: &serde_json::Value, out: &mut String);
    /// The internal stream ended.
    fn finish(&mut self, out: &mut String);
    /// Nothing more is to be sent (an error, or the end).
    fn done(&self) -> bool;
}

/// A translation in progress: the frames seen so far and the door's events.
pub struct Translation<T> {
    frames: Frames,
    /// The door's translator.
    pub events: T,
}

impl<T: Events> Translation<T> {
    /// A translation by `events`.
    pub fn new(events: T) -> Translation<T> {
        Translation { frames: Frames::default(), events }
    }

    /// Takes bytes of the internal stream; returns the door's events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> String {
        let mut out = String::new();
        for data in self.frames.feed(bytes) {
            if self.events.done() {
                continue;
            }
            if data == "[DONE]" {
                self.events.finish(&mut out);
            } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
                self.events.chunk(&v, &mut out);
            }
        }
        out
    }
}

/// `body` translated by `events` (pieces that complete no event are left out).
pub fn translate<S, T>(body: S, events: T) -> impl futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send + 'static,
    T: Events + Send + 'static,
{
    let mut t = Translation::new(events);
    body.map(move |chunk| chunk.map(|b| bytes::Bytes::from(t.feed(&b))))
        .filter(|b| std::future::ready(b.as_ref().map_or(true, |b| !b.is_empty())))
}

/// A whole (non-streamed) internal reply's JSON, with the headers to answer it with
/// (`Content-Length` dropped: the translated body has its own).
pub async fn whole(
    parts: &axum::http::response::Parts,
    body: axum::body::Body,
) -> (serde_json::Value, axum::http::HeaderMap) {
    let mut headers = parts.headers.clone();
    headers.remove(axum::http::header::CONTENT_LENGTH);
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    (serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null), headers)
}

/// Whether an internal response is an event stream.
pub fn is_stream(parts: &axum::http::response::Parts) -> bool {
    parts.headers.get(axum::http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// A translated JSON body with the internal response's headers.
pub fn json_response(v: &serde_json::Value, mut headers: axum::http::HeaderMap) -> axum::response::Response {
    headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    let mut resp = axum::response::Response::new(axum::body::Body::from(v.to_string()));
    *resp.headers_mut() = headers;
    resp
}

/// A translated event stream with the internal response's headers.
pub fn stream_response<T: Events + Send + 'static>(
    parts: &axum::http::response::Parts,
    body: axum::body::Body,
    events: T,
) -> axum::response::Response {
    let mut headers = parts.headers.clone();
    headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut resp =
        axum::response::Response::new(axum::body::Body::from_stream(translate(body.into_data_stream(), events)));
    *resp.headers_mut() = headers;
    resp
}
