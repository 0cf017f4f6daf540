//! What the HTTP providers share: one POST with its status handling, the reply's body read with
//! a timeout on every read and a size limit, server-sent events parsed with a limit on each
//! event, and every byte that comes back scrubbed of the secrets this provider sends (all
//! three); and for the translating ones (Anthropic, Gemini) the adapter that turns a native event
//! stream into OpenAI chunk payloads and small conversions (turns, images, tool arguments,
//! OpenAI-shaped error bodies).

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};

use super::{parse_retry_after, EventStream, Limits, UpstreamError};

/// An error body is read up to this size; the rest is left unread.
const ERROR_BODY_MAX: usize = 64 << 10;

/// How a provider's key travels.
#[derive(Clone, Copy, Debug)]
pub enum Auth {
    /// `Authorization: Bearer KEY`.
    Bearer,
    /// A header of its own (`x-api-key`, `x-goog-api-key`).
    Header(&'static str),
}

/// What every HTTP provider holds: the pooled client, the key (never printed, never in a URL),
/// the extra headers of its config, and the scrubber of what it sends.
#[derive(Clone)]
pub struct Upstream {
    http: reqwest::Client,
    key: Option<String>,
    auth: Auth,
    headers: BTreeMap<String, String>,
    scrub: Scrubber,
}

pub use super::scrub::Scrubber;

impl std::fmt::Debug for Upstream {
    // INVARIANT: the key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("key", &self.key.as_ref().map(|_| "<set>")).finish()
    }
}

impl Upstream {
    /// Sends a request; a status of 400 or more becomes `UpstreamError::Status` with the body
    /// (read up to 64 KiB, within the read timeout, scrubbed) rewritten by `error_body` into
    /// OpenAI's error shape.
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        first_byte_timeout: Duration,
        limits: Limits,
        error_body: fn(u16, &str) -> String,
    ) -> Result<reqwest::Response, UpstreamError> {
        let resp = tokio::time::timeout(first_byte_timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| transport_error(&e))?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let retry_after =
                resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
            // A body that stalls or runs long still makes an error: with what came in time.
            let body = match read_body(resp, Limits { max_reply_bytes: ERROR_BODY_MAX, ..limits }).await {
                Ok(b) | Err(Cut::TooLarge(b) | Cut::Stalled(b) | Cut::Broke(b)) => self.scrub.bytes(b),
            };
            let body = String::from_utf8_lossy(&body);
            return Err(UpstreamError::Status { status, body: error_body(status, &body), retry_after });
        }
        Ok(resp)
    }

    /// The whole reply's body, within its limits, scrubbed.
    pub async fn body(&self, resp: reqwest::Response, limits: Limits) -> Result<bytes::Bytes, UpstreamError> {
        match read_body(resp, limits).await {
            Ok(b) => Ok(self.scrub.bytes(b)),
            Err(Cut::TooLarge(_)) => Err(UpstreamError::Malformed(format!(
                "the reply is larger than {} bytes (`limits: {{ max_reply_bytes }}`)",
                limits.max_reply_bytes
            ))),
            Err(Cut::Stalled(_)) => Err(UpstreamError::Stalled),
            Err(Cut::Broke(_)) => Err(UpstreamError::Connect("body".into())),
        }
    }

    /// Reads a whole JSON object reply without building its values. A reply nested deeper than
    /// serde_json parses values ([`MAX_DEPTH`]) is malformed here, where the attempt can still fall
    /// through (raw members skip that limit, and one of them would later fail to become a value).
    pub async fn raw_reply(&self, resp: reqwest::Response, limits: Limits) -> Result<RawObject, UpstreamError> {
        parse_raw(&self.body(resp, limits).await?)
    }

    /// Reads a whole JSON reply.
    pub async fn json_reply(&self, resp: reqwest::Response, limits: Limits) -> Result<Value, UpstreamError> {
        let bytes = self.body(resp, limits).await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        if !v.is_object() {
            return Err(UpstreamError::Malformed("the reply is not a JSON object".into()));
        }
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return Err(error_with_200());
        }
        Ok(v)
    }

    /// The reply's server-sent events (`event` and `data` of each), each within the event size
    /// limit, scrubbed.
    pub fn events(&self, resp: reqwest::Response, limits: Limits) -> SseStream {
        self.scrub.events(Box::pin(sse(resp.bytes_stream(), limits.max_event_bytes)))
    }

    /// An upstream whose key travels as `auth` says.
    pub fn new(http: reqwest::Client, key: Option<String>, auth: Auth, headers: BTreeMap<String, String>) -> Upstream {
        let scrub = Scrubber::new(key.iter().map(String::as_str).chain(headers.values().map(String::as_str)));
        Upstream { http, key, auth, headers, scrub }
    }

    /// A POST to `url` with the key, the extra headers and the call's `traceparent`.
    pub fn post(&self, url: reqwest::Url, traceparent: Option<&str>) -> reqwest::RequestBuilder {
        let mut req = self.http.post(url);
        if let Some(t) = traceparent {
            req = req.header("traceparent", t);
        }
        if let Some(k) = &self.key {
            req = match self.auth {
                Auth::Bearer => req.bearer_auth(k),
                Auth::Header(name) => req.header(name, k),
            };
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        req
    }
}

/// A reply's bytes as a [`RawObject`]: one JSON object, nested at most [`MAX_DEPTH`] levels.
pub fn parse_raw(bytes: &[u8]) -> Result<RawObject, UpstreamError> {
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return Err(UpstreamError::Malformed("the reply is not a JSON object".into()));
    }
    if nesting(bytes) > MAX_DEPTH {
        return Err(UpstreamError::Malformed(format!("the reply is nested deeper than {MAX_DEPTH} levels")));
    }
    // Every number must be one that a value can hold (`1e999` cannot): a raw member is not
    // parsed here, and would later turn into `null`, a blanked field in a 200.
    serde_json::from_slice::<Checked>(bytes).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
    let raw: RawObject = serde_json::from_slice(bytes).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
    if raw.get("error").is_some_and(|e| e.get() != "null") {
        return Err(error_with_200());
    }
    Ok(raw)
}

/// A 200 whose body is an error object: a failed attempt (it falls through like a 5xx, and is
/// neither charged nor cached). Its message is not repeated (it may echo what the upstream got).
fn error_with_200() -> UpstreamError {
    UpstreamError::Malformed("the reply is an error object, with a 200 status".into())
}

/// A JSON text parsed for its validity only: every number within f64's range, nothing built.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Checked, E> {
        if v.is_finite() {
            Ok(Checked)
        } else {
            Err(E::custom("a number is out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// The deepest nesting that serde_json builds values for.
pub const MAX_DEPTH: usize = 127;

/// The deepest nesting of arrays and objects in a JSON text (strings skipped).
fn nesting(json: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Why a body was cut short, with what had come.
enum Cut {
    /// Past the size limit.
    TooLarge(bytes::Bytes),
    /// No bytes within the read timeout.
    Stalled(bytes::Bytes),
    /// The connection broke.
    Broke(bytes::Bytes),
}

/// Reads a body chunk by chunk, each read within the read timeout, up to the size limit.
async fn read_body(mut resp: reqwest::Response, limits: Limits) -> Result<bytes::Bytes, Cut> {
    let mut out = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(limits.read_timeout, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                if out.len() + chunk.len() > limits.max_reply_bytes {
                    let room = limits.max_reply_bytes - out.len();
                    out.extend_from_slice(chunk.get(..room).unwrap_or(&[]));
                    return Err(Cut::TooLarge(out.freeze()));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => return Ok(out.freeze()),
            Ok(Err(_)) => return Err(Cut::Broke(out.freeze())),
            Err(_) => return Err(Cut::Stalled(out.freeze())),
        }
    }
}

/// Server-sent events: `(event, data)`.
pub type SseStream = Pin<Box<dyn Stream<Item = Result<(String, String), UpstreamError>> + Send>>;

/// Parses server-sent events from a byte stream (`event:` and `data:` lines; an empty line ends
/// an event; comments and other fields are skipped). An event (or a line without its end) larger
/// than `max_event` bytes fails the stream instead of growing without bound.
pub fn sse<S, E>(body: S, max_event: usize) -> impl Stream<Item = Result<(String, String), UpstreamError>> + Send
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    struct Parser {
        buf: Vec<u8>,
        /// Where the unread part of `buf` starts (lines before it are consumed).
        pos: usize,
        event: String,
        data: String,
        has_data: bool,
        /// The event size limit, checked on the decoded data (an invalid byte decodes to three).
        max: usize,
        /// The event in the making went over `max`.
        over: bool,
    }
    impl Parser {
        /// The next complete event in the buffer.
        fn next_event(&mut self) -> Option<(String, String)> {
            while let Some(off) = memchr::memchr(b'\n', &self.buf[self.pos..]) {
                let mut line = &self.buf[self.pos..self.pos + off];
                self.pos += off + 1;
                if let [rest @ .., b'\r'] = line {
                    line = rest;
                }
                if line.is_empty() {
                    if self.has_data {
                        self.has_data = false;
                        return Some((std::mem::take(&mut self.event), std::mem::take(&mut self.data)));
                    }
                    self.event.clear();
                    continue;
                }
                let line = String::from_utf8_lossy(line);
                let (field, value) =
                    line.split_once(':').map_or((&*line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
                match field {
                    "data" => {
                        if self.has_data {
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                        self.has_data = true;
                        if self.data.len() > self.max {
                            self.over = true;
                            return None;
                        }
                    }
                    "event" => value.clone_into(&mut self.event),
                    _ => {}
                }
            }
            // Everything before `pos` is read: keep only the unfinished line.
            self.buf.drain(..self.pos);
            self.pos = 0;
            None
        }
        fn waiting(&self) -> usize {
            self.buf.len() - self.pos + self.data.len()
        }
    }
    let body = Box::pin(body);
    let parser = Parser {
        buf: Vec::new(),
        pos: 0,
        event: String::new(),
        data: String::new(),
        has_data: false,
        max: max_event,
        over: false,
    };
    let state = (body, parser, false);
    futures_util::stream::unfold(state, move |(mut body, mut p, done)| async move {
        if done {
            return None;
        }
        loop {
            if let Some(ev) = p.next_event() {
                return Some((Ok(ev), (body, p, false)));
            }
            if p.over || p.waiting() > max_event {
                let e = UpstreamError::Malformed(format!(
                    "an event larger than {max_event} bytes (`limits: {{ max_event_bytes }}`)"
                ));
                return Some((Err(e), (body, p, true)));
            }
            match body.next().await {
                Some(Ok(chunk)) => p.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Some((Err(UpstreamError::Connect(format!("stream: {e}"))), (body, p, true))),
                None => {
                    // The body ended: an event without its closing empty line still counts.
                    p.buf.extend_from_slice(b"\n\n");
                    let last = p.next_event();
                    return last.map(|ev| (Ok(ev), (body, p, true)));
                }
            }
        }
    })
}

/// A transport error, described without its URL (a URL may carry a secret).
pub fn transport_error(e: &reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout
    } else {
        let kind = if e.is_connect() {
            "connect"
        } else if e.is_body() || e.is_decode() {
            "body"
        } else {
            "request"
        };
        UpstreamError::Connect(kind.to_string())
    }
}

/// A JSON object reply kept as its members' raw text, in order: what the gateway passes through
/// untouched (choices, embedding vectors) is checked to be JSON but never built into values.
/// Members are kept in a list, as written: a reply has a handful, so a lookup scans them rather
/// than hashing every key. A key written twice is passed through twice, and [`RawObject::get`]
/// takes its last value, as a JSON parser would.
#[derive(Debug, Default)]
pub struct RawObject(Vec<(String, Box<serde_json::value::RawValue>)>);

impl RawObject {
    /// The raw value of the member `key` (the last one, if it is written twice).
    pub fn get(&self, key: &str) -> Option<&serde_json::value::RawValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// Whether the object has a member `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// The members, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &serde_json::value::RawValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), &**v))
    }

    /// The object built into a value (for the replies that must be changed member by member).
    pub fn into_value(self) -> serde_json::Value {
        let members =
            self.0.into_iter().map(|(k, v)| (k, serde_json::from_str(v.get()).unwrap_or(serde_json::Value::Null)));
        serde_json::Value::Object(members.collect())
    }
}

impl IntoIterator for RawObject {
    type Item = (String, Box<serde_json::value::RawValue>);
    type IntoIter = std::vec::IntoIter<Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'de> serde::Deserialize<'de> for RawObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = RawObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(RawObject(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// The client's request body as JSON, and the upstream model id it names.
pub fn client_body(bytes: &[u8]) -> Result<(Value, String), UpstreamError> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| UpstreamError::Malformed(format!("request: {e}")))?;
    let model = body.get("model").and_then(Value::as_str).unwrap_or("").to_string();
    Ok((body, model))
}

/// A request that this provider cannot take: a 400 back to the client, before any call.
pub fn unsupported(message: String) -> UpstreamError {
    UpstreamError::Status {
        status: 400,
        body: openai_error(&message, "invalid_request_error", Some("unsupported_for_provider")),
        retry_after: None,
    }
}

/// One native stream event's JSON.
pub fn event_json(data: &str) -> Result<Value, UpstreamError> {
    serde_json::from_str(data).map_err(|e| UpstreamError::Malformed(format!("event: {e}")))
}

/// An OpenAI-shaped error body.
pub fn openai_error(message: &str, kind: &str, code: Option<&str>) -> String {
    json!({"error": {"message": message, "type": kind, "code": code, "param": null}}).to_string()
}

/// A native stream, translated event by event.
pub trait Translate: Send + 'static {
    /// One native event (`kind` is the SSE `event:` field, often empty) -> OpenAI payloads.
    fn event(&mut self, kind: &str, data: &str) -> Result<Vec<String>, UpstreamError>;
    /// The native stream ended -> the last payloads, or an error if it ended too early.
    fn end(&mut self) -> Result<Vec<String>, UpstreamError>;
}

/// Turns a native SSE stream into a stream of OpenAI chunk payloads (ending with `[DONE]`).
pub fn translate_stream(events: SseStream, translator: impl Translate) -> EventStream {
    let state = (events, translator, VecDeque::<String>::new(), false);
    Box::pin(futures_util::stream::unfold(state, |(mut events, mut t, mut queue, mut ended)| async move {
        loop {
            if let Some(next) = queue.pop_front() {
                return Some((Ok(next), (events, t, queue, ended)));
            }
            if ended {
                return None;
            }
            let out = match events.next().await {
                Some(Ok((event, data))) => t.event(&event, &data),
                Some(Err(e)) => Err(e),
                None => {
                    ended = true;
                    t.end()
                }
            };
            match out {
                Ok(items) => queue.extend(items),
                Err(e) => return Some((Err(e), (events, t, queue, true))),
            }
        }
    }))
}

/// The OpenAI chunks of one stream: every chunk repeats the same id, model and creation time.
#[derive(Debug, Default)]
pub struct Chunks {
    /// The stream's id (the upstream's message or response id, once known).
    pub id: String,
    model: String,
    created: i64,
}

impl Chunks {
    /// Chunks for `model`, with a provisional `id`.
    pub fn new(id: &str, model: &str) -> Chunks {
        Chunks { id: id.to_string(), model: model.to_string(), created: now() }
    }

    /// A chunk with one choice's `delta`.
    pub fn delta(&self, delta: Value, finish: Option<&str>) -> String {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    }

    /// The usage chunk that `stream_options.include_usage` asks for.
    pub fn usage(&self, input: u64, output: u64) -> String {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}})
        .to_string()
    }
}

/// Whether the OpenAI request asked for the stream's usage.
pub fn wants_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false)
}

/// Appends a turn `{"role": role, key: items}` to `turns`, merging it into the previous turn when
/// the role repeats (both native APIs want user and model turns to alternate). Empty turns are
/// left out.
pub fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut() {
        if last["role"] == role {
            if let Some(list) = last[key].as_array_mut() {
                list.extend(items);
                return;
            }
        }
    }
    turns.push(json!({"role": role, key: items}));
}

/// A user message's `content` as native parts: `text` for each text part (or the whole string)
/// and `image` for each image URL; other part types cannot be sent to `provider`.
pub fn user_parts(
    content: Option<&Value>,
    provider: &str,
    text: impl Fn(&str) -> Value,
    image: impl Fn(&str) -> Value,
) -> Result<Vec<Value>, String> {
    match content {
        Some(Value::String(s)) => Ok(vec![text(s)]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(text(p.get("text").and_then(Value::as_str).unwrap_or(""))),
                Some("image_url") => image_url(p).map(&image),
                Some(other) => Err(format!("content parts of type `{other}` cannot be sent to {provider}")),
                None => Err("a content part has no type".to_string()),
            })
            .collect(),
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err("`content` must be a string or a list of parts".into()),
    }
}

/// The URL of an `image_url` content part (`{"image_url": {"url"}}`, or the older bare string).
pub fn image_url(part: &Value) -> Result<&str, String> {
    part.pointer("/image_url/url")
        .or_else(|| part.get("image_url"))
        .and_then(Value::as_str)
        .ok_or_else(|| "an image_url part has no url".to_string())
}

/// A `data:` URL split into media type and base64 data.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((if media.is_empty() { "application/octet-stream" } else { media }, data))
}

/// A media type guessed from a URL's extension (for image URLs given without one).
pub fn media_type_of(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or("").to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".gif") {
        "image/gif"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else {
        "image/jpeg"
    }
}

/// A tool call's `arguments` (a JSON string in OpenAI's format) as a JSON object.
pub fn tool_arguments(call: &Value) -> Value {
    match call.pointer("/function/arguments") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!({})),
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    }
}

/// The text of a message's `content` (a string, or the text parts of a list).
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// `stop` as a list.
pub fn stop_list(stop: Option<&Value>) -> Option<Value> {
    match stop? {
        Value::String(s) => Some(json!([s])),
        Value::Array(a) if !a.is_empty() => Some(Value::Array(a.clone())),
        _ => None,
    }
}

/// `max_completion_tokens`, else `max_tokens`.
pub fn max_tokens(body: &Value) -> Option<u64> {
    body.get("max_completion_tokens").and_then(Value::as_u64).or_else(|| body.get("max_tokens").and_then(Value::as_u64))
}

/// The top-level fields of `body` that are not in `taken`, to be logged as dropped (SPEC §9).
pub fn dropped_fields(body: &Value, taken: &[&str]) -> Vec<String> {
    body.as_object().map(|o| o.keys().filter(|k| !taken.contains(&k.as_str())).cloned().collect()).unwrap_or_default()
}

/// Logs the fields a provider could not take (names only, never values).
pub fn log_dropped(provider: &str, fields: &[String]) {
    if !fields.is_empty() {
        tracing::info!(provider, fields = ?fields, "dropped request fields the provider cannot take");
    }
}

/// Now, in Unix seconds (OpenAI's `created`).
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_conversions() {
        assert_eq!(data_url("data:image/png;base64,AAAA"), Some(("image/png", "AAAA")));
        assert_eq!(data_url("https://x/y.png"), None);
        assert_eq!(media_type_of("https://x/cat.PNG?s=1"), "image/png");
        assert_eq!(media_type_of("https://x/cat"), "image/jpeg");
        assert_eq!(tool_arguments(&json!({"function": {"arguments": "{\"a\":1}"}})), json!({"a": 1}));
        assert_eq!(tool_arguments(&json!({"function": {"arguments": "not json"}})), json!({}));
        assert_eq!(
            content_text(Some(
                &json!([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}])
            )),
            "a\nb"
        );
        assert_eq!(stop_list(Some(&json!("END"))), Some(json!(["END"])));
        assert_eq!(max_tokens(&json!({"max_tokens": 5, "max_completion_tokens": 7})), Some(7));
        assert_eq!(dropped_fields(&json!({"model": "m", "n": 2, "logprobs": true}), &["model"]), ["n", "logprobs"]);
    }

    #[test]
    fn raw_objects_keep_their_members_as_written() {
        let text = r#"{"id":"x","usage":{"a":1},"model":"m","n":1.50,"usage":{"b":2}}"#;
        let raw: RawObject = serde_json::from_str(text).unwrap();
        let keys: Vec<_> = raw.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["id", "usage", "model", "n", "usage"]);
        assert_eq!(raw.get("n").map(|v| v.get()), Some("1.50"));
        // A member written twice: a lookup takes the last, as a JSON parser would.
        assert_eq!(raw.get("usage").map(|v| v.get()), Some(r#"{"b":2}"#));
        assert!(raw.contains_key("model") && !raw.contains_key("choices"));
        assert!(serde_json::from_str::<RawObject>("[1, 2]").is_err());
        assert!(serde_json::from_str::<RawObject>(r#"{"a": tru}"#).is_err());
    }
}
