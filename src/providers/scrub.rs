//! Scrubbing: what an upstream sends back -> the same, with every secret that the provider is
//! sent (its key, its config's header values) replaced by `[redacted]`. An upstream that echoes
//! its request's headers (in an error, an event or a reply) must not hand its key to the client.
//! An upstream only ever learns what it is sent: the client's own key never goes upstream, nor do
//! other providers'.
//!
//! Three ways a secret can come back, and how each is caught:
//! - **As written**: a byte search (Aho-Corasick) over the reply, the error body or the event.
//! - **JSON-escaped** (`sk\u002d...`): a JSON text with an escape in it is parsed and its decoded
//!   strings searched; one that held a secret is written out again.
//! - **Split across events** (`"sk-up"`, then `"stream-SECRET"`): an event whose string ends with
//!   the start of a secret is held back until the next event; when the two strings at the same
//!   place (`choices/0/delta/content`) join into a secret, the secret is cut from both. A held
//!   event goes out with the next one, or when the stream ends, so nothing is lost or reordered.

use std::collections::VecDeque;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use futures_util::StreamExt;
use serde_json::Value;

/// A stream of server-sent events (`event` and `data`), as `native::sse` makes them.
type SseStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<(String, String), super::UpstreamError>> + Send>>;

/// What a scrubbed secret becomes.
const REDACTED: &str = "[redacted]";
/// Secrets shorter than this are left alone: they are not keys.
const MIN_SECRET: usize = 8;
/// An event is held back when one of its strings ends with at least this much of a secret (less
/// gives nothing away).
const MIN_HELD: usize = 4;

/// The scrubber of one provider's secrets.
#[derive(Clone, Debug, Default)]
pub struct Scrubber(Option<Arc<Secrets>>);

#[derive(Debug)]
struct Secrets {
    search: AhoCorasick,
    /// The secrets' first [`MIN_HELD`] bytes: an event without any of them (and without an
    /// escape) cannot hold a secret's start, and is passed on without being parsed.
    starts: AhoCorasick,
    all: Vec<String>,
}

impl Scrubber {
    /// A scrubber of `secrets` (values shorter than 8 bytes are left alone: they are not keys).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Scrubber {
        let mut all: Vec<String> = secrets.into_iter().filter(|s| s.len() >= MIN_SECRET).map(str::to_string).collect();
        all.sort_by_key(|p| std::cmp::Reverse(p.len()));
        all.dedup();
        let starts: Vec<&str> = all.iter().map(|s| s.get(..MIN_HELD).unwrap_or(s)).collect();
        let (Ok(search), Ok(starts)) = (AhoCorasick::new(&all), AhoCorasick::new(starts)) else {
            return Scrubber(None);
        };
        Scrubber((!all.is_empty()).then(|| Arc::new(Secrets { search, starts, all })))
    }

    /// The bytes with every secret replaced, as written or JSON-escaped (the same bytes when
    /// none is there).
    pub fn bytes(&self, b: bytes::Bytes) -> bytes::Bytes {
        let Some(s) = &self.0 else { return b };
        let b = if s.search.is_match(&b[..]) {
            bytes::Bytes::from(s.search.replace_all_bytes(&b, &vec![REDACTED.as_bytes(); s.search.patterns_len()]))
        } else {
            b
        };
        if memchr::memmem::find(&b, b"\\u").is_none() {
            return b;
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(&b) else { return b };
        if s.decoded(&mut v) {
            return bytes::Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        }
        b
    }

    /// The text with every secret replaced, as written or JSON-escaped.
    pub fn text(&self, t: String) -> String {
        let Some(s) = &self.0 else { return t };
        let t =
            if s.search.is_match(&t) { s.search.replace_all(&t, &vec![REDACTED; s.search.patterns_len()]) } else { t };
        if !t.contains("\\u") {
            return t;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&t) else { return t };
        if s.decoded(&mut v) {
            return serde_json::to_string(&v).unwrap_or(t);
        }
        t
    }

    /// An event stream with every secret replaced: in each event's text, in its decoded strings,
    /// and across two events (see the module header).
    pub fn events(&self, events: SseStream) -> SseStream {
        let Some(secrets) = self.0.clone() else { return events };
        let state = (events, Relay { secrets, held: None, out: VecDeque::new() }, false);
        Box::pin(futures_util::stream::unfold(state, |(mut events, mut relay, mut ended)| async move {
            loop {
                if let Some(item) = relay.out.pop_front() {
                    return Some((item, (events, relay, ended)));
                }
                if ended {
                    return None;
                }
                match events.next().await {
                    Some(Ok((name, data))) => relay.event(name, data),
                    Some(Err(e)) => {
                        relay.release();
                        relay.out.push_back(Err(e));
                    }
                    None => {
                        relay.release();
                        ended = true;
                    }
                }
            }
        }))
    }
}

impl Secrets {
    /// Replaces the secrets in every string of `v`; whether any was there.
    fn decoded(&self, v: &mut Value) -> bool {
        let mut changed = false;
        strings(v, &mut String::new(), &mut |_, s| {
            if self.search.is_match(s.as_str()) {
                *s = self.search.replace_all(s, &vec![REDACTED; self.search.patterns_len()]);
                changed = true;
            }
        });
        changed
    }

    /// The length of the longest end of `s` that begins a secret (and is not a whole one).
    fn tail(&self, s: &str) -> usize {
        let mut best = 0;
        for secret in &self.all {
            for n in (MIN_HELD..secret.len()).rev() {
                if n <= best {
                    break;
                }
                if s.len() >= n && s.is_char_boundary(s.len() - n) && s.ends_with(&secret[..n]) {
                    best = n;
                    break;
                }
            }
        }
        best
    }

    /// The secret that `a`'s end and `b`'s start make together: where it starts in `a`, and
    /// where it ends in `b`.
    fn across(&self, a: &str, b: &str) -> Option<(usize, usize)> {
        for secret in &self.all {
            for n in (1..secret.len()).rev() {
                let (head, rest) = secret.split_at(n);
                if a.ends_with(head) && b.starts_with(rest) {
                    return Some((a.len() - n, rest.len()));
                }
            }
        }
        None
    }
}

/// One event on its way: its name, its text, and its value when it is JSON.
struct Held {
    name: String,
    data: String,
    value: Option<Value>,
    changed: bool,
}

struct Relay {
    secrets: Arc<Secrets>,
    held: Option<Held>,
    out: VecDeque<Result<(String, String), super::UpstreamError>>,
}

impl Relay {
    fn event(&mut self, name: String, data: String) {
        let mut data = data;
        let mut changed = false;
        if self.secrets.search.is_match(&data) {
            data = self.secrets.search.replace_all(&data, &vec![REDACTED; self.secrets.search.patterns_len()]);
        }
        if self.held.is_none() && !data.contains("\\u") && !self.secrets.starts.is_match(&data) {
            // Nothing a secret could start with: as it is, unparsed.
            self.out.push_back(Ok((name, data)));
            return;
        }
        let mut value = serde_json::from_str::<Value>(&data).ok();
        if let Some(v) = &mut value {
            changed |= self.secrets.decoded(v);
        }
        let mut next = Held { name, data, value, changed };
        if let Some(mut held) = self.held.take() {
            self.join(&mut held, &mut next);
            self.send(held);
        }
        // Held back when a string ends with the start of a secret.
        let ends_in_secret = next.value.as_mut().is_some_and(|v| {
            let mut any = false;
            strings(v, &mut String::new(), &mut |_, s| any |= self.secrets.tail(s) > 0);
            any
        });
        if ends_in_secret {
            self.held = Some(next);
        } else {
            self.send(next);
        }
    }

    /// Cuts a secret that `held` and `next` make together at the same place.
    fn join(&self, held: &mut Held, next: &mut Held) {
        let (Some(a), Some(b)) = (&mut held.value, &mut next.value) else { return };
        let mut ends: Vec<(String, String)> = Vec::new();
        strings(a, &mut String::new(), &mut |path, s| ends.push((path.to_string(), s.clone())));
        let mut cut_from_b: Vec<(String, usize)> = Vec::new();
        strings(b, &mut String::new(), &mut |path, s| {
            let Some((_, end_of_a)) = ends.iter().find(|(p, _)| p == path) else { return };
            if let Some((start, len)) = self.secrets.across(end_of_a, s) {
                cut_from_b.push((path.to_string(), start));
                *s = s[len..].to_string();
            }
        });
        if cut_from_b.is_empty() {
            return;
        }
        strings(a, &mut String::new(), &mut |path, s| {
            if let Some((_, start)) = cut_from_b.iter().find(|(p, _)| p == path) {
                s.truncate(*start);
                s.push_str(REDACTED);
            }
        });
        held.changed = true;
        next.changed = true;
    }

    fn send(&mut self, e: Held) {
        let data = match (&e.value, e.changed) {
            (Some(v), true) => serde_json::to_string(v).unwrap_or(e.data),
            _ => e.data,
        };
        self.out.push_back(Ok((e.name, data)));
    }

    /// The stream ended (or broke): a held event goes out as it is.
    fn release(&mut self) {
        if let Some(held) = self.held.take() {
            self.send(held);
        }
    }
}

/// Calls `f` with the path (`a/0/b`) and the value of every string in `v`.
fn strings(v: &mut Value, path: &mut String, f: &mut impl FnMut(&str, &mut String)) {
    match v {
        Value::String(s) => f(path, s),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                strings(item, path, f);
                path.truncate(len);
            }
        }
        Value::Object(members) => {
            for (k, item) in members.iter_mut() {
                let len = path.len();
                path.push('/');
                path.push_str(k);
                strings(item, path, f);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-upstream-SECRET-7f3a";

    async fn through(events: &[&str]) -> Vec<String> {
        let items: Vec<Result<(String, String), super::super::UpstreamError>> =
            events.iter().map(|e| Ok((String::new(), (*e).to_string()))).collect();
        let out = Scrubber::new([KEY]).events(Box::pin(futures_util::stream::iter(items)));
        out.map(|e| e.unwrap().1).collect().await
    }

    #[tokio::test]
    async fn a_key_split_across_two_events_is_cut_from_both_and_nothing_else_is_lost() {
        let chunk = |t: &str| serde_json::json!({"choices": [{"delta": {"content": t}}]}).to_string();
        let out = through(&[&chunk("your key is sk-upstr"), &chunk("eam-SECRET-7f3a, ok"), "[DONE]"]).await;
        assert_eq!(out.len(), 3);
        let text: String = out[..2]
            .iter()
            .map(|e| {
                serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(text, "your key is [redacted], ok");
        assert_eq!(out[2], "[DONE]");
        assert!(out.iter().all(|e| !e.contains("SECRET")));
    }

    #[tokio::test]
    async fn an_escaped_key_is_found_in_the_decoded_text() {
        let out = through(&[r#"{"text": "sk\u002dupstream\u002dSECRET\u002d7f3a"}"#]).await;
        assert_eq!(out, [r#"{"text":"[redacted]"}"#]);
        let b = Scrubber::new([KEY]).bytes(bytes::Bytes::from_static(br#"{"e": "sk\u002dupstream-SECRET-7f3a"}"#));
        assert_eq!(&b[..], br#"{"e":"[redacted]"}"#);
    }

    #[tokio::test]
    async fn an_event_that_only_looks_like_a_key_begins_goes_out_unchanged_with_the_next() {
        let out = through(&[r#"{"t": "sk-up"}"#, r#"{"t": "date"}"#]).await;
        assert_eq!(out, [r#"{"t": "sk-up"}"#, r#"{"t": "date"}"#]);
        let out = through(&[r#"{"t": "sk-ups"}"#]).await;
        assert_eq!(out, [r#"{"t": "sk-ups"}"#], "a held event is sent when the stream ends");
    }
}
