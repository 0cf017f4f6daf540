//! The answer cache (SPEC §10): a routed request's cache query -> an entry ([`Lookup::Hit`]), or a
//! [`Ticket`] with which the gateway's reply stage stores the answer that dispatch gets. Entries are the assembled, successful answers,
//! keyed by SHA-256 over the scope (the key, or the tier with `shared`), the rule, the endpoint
//! and the canonical JSON of the request without the fields that cannot change the answer. They
//! live in memory, bounded by bytes (least recently used first out), until their rule's lifetime
//! ends. Identical requests that miss at the same time make one upstream call: the first
//! dispatches, the others wait for its answer (bounded by the rule's timeout) and dispatch on
//! their own if it fails. A rule with `similar` also finds the closest entry of the same context
//! by the embedding of the last user message ([`similar`]): the gateway embeds it, this module
//! matches and stores it.

pub mod similar;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::Digest;

use crate::accounting::Usage;
use crate::catalog::Endpoint;
use crate::policy::ir::CacheIr;

/// An entry's key: SHA-256 of what identifies the request.
pub type CacheKey = [u8; 32];

/// A stored answer.
#[derive(Debug)]
pub struct Entry {
    /// The answer as a hit gives it, serialized (`model` the catalog name, `usage` with what was
    /// used and a cost of 0): kept as text, so that an entry weighs what it holds.
    pub body: bytes::Bytes,
    /// The catalog model that answered.
    pub model: String,
    /// Its provider.
    pub provider: Option<String>,
    /// The rule whose entry it is.
    pub rule: String,
    /// What the answer used.
    pub usage: Usage,
    /// What it cost when it was asked.
    pub cost_micros: u64,
    /// Its semantic context, when it is in a context's index.
    context: Option<CacheKey>,
    /// How long it lives.
    ttl: Duration,
    /// Its size, for the byte bound.
    bytes: u32,
}

struct Lifetime;

impl moka::Expiry<CacheKey, Arc<Entry>> for Lifetime {
    fn expire_after_create(&self, _: &CacheKey, e: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(e.ttl)
    }
}

/// Identical requests in flight: the first one's sender, dropped when it ends.
type Flights = Arc<Mutex<HashMap<CacheKey, tokio::sync::watch::Receiver<()>>>>;

/// The in-memory cache.
pub struct ResponseCache {
    entries: moka::sync::Cache<CacheKey, Arc<Entry>>,
    flights: Flights,
    similar: Arc<similar::Index>,
    /// Where stored entries are shared too (a store of several instances), when set.
    sink: std::sync::OnceLock<Sink>,
}

/// Receives every stored entry, encoded ([`Entry::encode`]), with its lifetime.
pub type Sink = Box<dyn Fn(&CacheKey, Vec<u8>, Duration) + Send + Sync>;

/// An entry as a shared store keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Shared {
    body: String,
    model: String,
    provider: Option<String>,
    rule: String,
    usage: Usage,
    cost_micros: u64,
}

impl Entry {
    /// The entry as bytes, for a shared store.
    pub fn encode(&self) -> Vec<u8> {
        let s = Shared {
            body: String::from_utf8_lossy(&self.body).into_owned(),
            model: self.model.clone(),
            provider: self.provider.clone(),
            rule: self.rule.clone(),
            usage: self.usage,
            cost_micros: self.cost_micros,
        };
        serde_json::to_vec(&s).unwrap_or_default()
    }

    /// An entry from [`Entry::encode`]'s bytes, living `ttl` more.
    fn decode(bytes: &[u8], ttl: Duration) -> Option<Entry> {
        let s: Shared = serde_json::from_slice(bytes).ok()?;
        let bytes = u32::try_from(s.body.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX);
        Some(Entry {
            body: bytes::Bytes::from(s.body),
            model: s.model,
            provider: s.provider,
            rule: s.rule,
            usage: s.usage,
            cost_micros: s.cost_micros,
            context: None,
            ttl,
            bytes,
        })
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache").field("entries", &self.entries.entry_count()).finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// A cache holding at most `max_bytes` of answers.
    pub fn new(max_bytes: usize) -> ResponseCache {
        let similar = Arc::new(similar::Index::default());
        let index = similar.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes as u64)
            .weigher(|_: &CacheKey, e: &Arc<Entry>| e.bytes)
            .expire_after(Lifetime)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(move |_, e: Arc<Entry>, _| {
                // An entry that leaves (evicted, expired or replaced) leaves its context's index.
                if let Some(c) = &e.context {
                    index.forget(c);
                }
            })
            .build();
        ResponseCache { entries, flights: Arc::default(), similar, sink: std::sync::OnceLock::new() }
    }

    /// Shares every entry stored from now on with `sink` (set once).
    pub fn share_with(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    fn get(&self, k: &CacheKey) -> Option<Arc<Entry>> {
        self.entries.get(k)
    }

    /// Applies `max_bytes` now, after an insert: moka evicts in batches, so a burst of inserts
    /// would otherwise hold (and serve) more than the bound until its next housekeeping.
    fn bound(&self) {
        self.entries.run_pending_tasks();
    }
}

/// Bytes an entry takes besides its text: the entry, its key, the map's and the eviction order's
/// nodes, and the strings of model, provider and rule.
const ENTRY_OVERHEAD: usize = 512;

/// What the cache stage decided.
#[derive(Debug)]
pub enum Lookup {
    /// The rule has no cache.
    Off,
    /// `Cache-Control: no-store`, or a key with `cache: false`: neither looked up nor stored.
    Bypass,
    /// An answer from the cache.
    Hit(Hit),
    /// Not found (or not looked up: `no-cache`): the answer is to be stored with the ticket.
    Miss(Ticket),
}

/// An entry that answers a request.
#[derive(Debug)]
pub struct Hit {
    /// The entry.
    pub entry: Arc<Entry>,
    /// The cosine similarity of its last user message to the request's, for a semantic match
    /// (`1.0` when a `similar` rule's request matched the exact key).
    pub similarity: Option<f32>,
}

/// The right to store the answer of a miss. The first of identical requests in flight holds the
/// flight: when the ticket is dropped (stored or not), the others look again.
#[derive(Debug)]
pub struct Ticket {
    key: CacheKey,
    ttl: Duration,
    rule: String,
    /// The semantic context and the last user message's unit vector, for a `similar` rule.
    semantic: Option<(CacheKey, Vec<f32>)>,
    /// `Cache-Control: no-cache`: the answer is stored without a lookup (semantic ones included).
    pub no_lookup: bool,
    _flight: Option<Flight>,
}

impl Ticket {
    /// Stores the answer in `context`'s semantic index too, at unit vector `v`.
    pub fn remember(&mut self, context: CacheKey, v: Vec<f32>) {
        self.semantic = Some((context, v));
    }
}

#[derive(Debug)]
struct Flight {
    key: CacheKey,
    flights: Flights,
    _done: tokio::sync::watch::Sender<()>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.key);
    }
}

/// The fields that cannot change an answer, left out of the key.
const NOT_IN_KEY: &[&str] = &["stream", "stream_options", "user", "metadata"];

/// Canonical JSON: keys sorted at every level, numbers as serde_json writes them.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String((*k).clone()).to_string().as_bytes());
                out.push(b':');
                if let Some(x) = m.get(*k) {
                    canonical(x, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// The canonical request without [`NOT_IN_KEY`].
fn canonical_request(body: &Value, out: &mut Vec<u8>) {
    match body {
        Value::Object(m) => {
            let kept: serde_json::Map<String, Value> = m
                .iter()
                .filter(|(k, _)| !NOT_IN_KEY.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            canonical(&Value::Object(kept), out);
        }
        other => canonical(other, out),
    }
}

/// SHA-256 of the canonical request without [`NOT_IN_KEY`]: computed once per request, it makes
/// the exact key and is what the request log keeps (as hex) so that `simulate` can tell identical
/// requests apart without their text.
pub fn digest(body: &Value) -> [u8; 32] {
    let mut text = Vec::with_capacity(256);
    canonical_request(body, &mut text);
    sha2::Sha256::digest(&text).into()
}

/// The exact key: SHA-256 over the scope, the rule, the endpoint and the request's [`digest`].
pub fn key(scope: &str, rule: &str, endpoint: Endpoint, digest: &[u8; 32]) -> CacheKey {
    let mut h = sha2::Sha256::new();
    for part in [scope, rule, endpoint.as_str()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(digest);
    h.finalize().into()
}

/// The scope of a replayed request's entries, as [`lookup`] would have used.
pub fn scope_of(c: &CacheIr, key: Option<&str>, tier: Option<&str>) -> String {
    scope(c, Caller { key, tier, uses_cache: true })
}

/// Whose entries a request sees: the calling key's own, or with `shared` its tier's.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The key's name (none for an open gateway).
    pub key: Option<&'a str>,
    /// Its tier.
    pub tier: Option<&'a str>,
    /// Whether the key uses the cache at all (`cache: false` in the config).
    pub uses_cache: bool,
}

/// The scope of a caller's entries: its key, or with `shared` its tier (a key without a tier
/// shares with no one). Nothing crosses tiers.
fn scope(c: &CacheIr, who: Caller<'_>) -> String {
    match (who.key, who.tier, c.shared) {
        (None, _, _) => "open".into(),
        (Some(_), Some(t), true) => format!("tier:{t}"),
        (Some(k), _, _) => format!("key:{k}"),
    }
}

/// What `Cache-Control` asks: (skip the lookup, skip the store).
fn client_control(cache_control: &str) -> (bool, bool) {
    let v = cache_control.to_ascii_lowercase();
    let has = |d: &str| v.split(',').any(|p| p.trim() == d);
    (has("no-cache") || has("no-store"), has("no-store"))
}

/// What the cache stage reads of a routed request.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The matched rule's `cache`.
    pub rule_cache: Option<&'a CacheIr>,
    /// The matched rule.
    pub rule: &'a str,
    /// Who asks.
    pub caller: Caller<'a>,
    /// Chat or embeddings.
    pub endpoint: Endpoint,
    /// The request's [`digest`].
    pub digest: &'a [u8; 32],
}

/// Looks a routed request up; `cache_control` is the request's `Cache-Control` header. `wait`
/// bounds how long an identical request in flight is waited for.
pub async fn lookup(cache: &ResponseCache, q: Query<'_>, cache_control: &str, wait: Duration) -> Lookup {
    let Query { rule_cache, rule, caller, endpoint, digest } = q;
    let Some(c) = rule_cache else { return Lookup::Off };
    let (skip_lookup, skip_store) = client_control(cache_control);
    if skip_store || !caller.uses_cache {
        return Lookup::Bypass;
    }
    let k = self::key(&scope(c, caller), rule, endpoint, digest);
    let ticket = |flight| Ticket {
        key: k,
        ttl: Duration::from_millis(c.ttl_ms),
        rule: rule.to_string(),
        semantic: None,
        no_lookup: skip_lookup,
        _flight: flight,
    };
    let hit = |entry| Lookup::Hit(Hit { entry, similarity: c.similar.as_ref().map(|_| 1.0) });
    if skip_lookup {
        return Lookup::Miss(ticket(None));
    }
    if let Some(e) = cache.get(&k) {
        return hit(e);
    }
    let waiting = {
        let mut flights = cache.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match flights.get(&k) {
            Some(rx) => Some(rx.clone()),
            None => {
                let (tx, rx) = tokio::sync::watch::channel(());
                flights.insert(k, rx);
                return Lookup::Miss(ticket(Some(Flight { key: k, flights: cache.flights.clone(), _done: tx })));
            }
        }
    };
    if let Some(mut rx) = waiting {
        // The first request's answer, once it has one (its sender is dropped when it ends).
        let _ = tokio::time::timeout(wait, rx.changed()).await;
        if let Some(e) = cache.get(&k) {
            return hit(e);
        }
    }
    Lookup::Miss(ticket(None))
}

/// An entry found in a shared store for the ticket's key (the bytes of [`Entry::encode`], living
/// `ttl` more): kept here too, and the ticket ends (requests waiting for it find the entry).
pub fn adopt(cache: &ResponseCache, ticket: Ticket, bytes: &[u8], ttl: Duration) -> Option<Arc<Entry>> {
    let entry = Arc::new(Entry::decode(bytes, ttl.max(Duration::from_millis(1)))?);
    cache.entries.insert(ticket.key, entry.clone());
    cache.bound();
    drop(ticket);
    Some(entry)
}

impl Ticket {
    /// The entry's key, as a shared store names it (hex).
    pub fn hex_key(&self) -> String {
        hex::encode(self.key)
    }
}

/// The closest entry of `context` to unit vector `v` whose similarity is at least `threshold`.
pub fn nearest(cache: &ResponseCache, context: &CacheKey, v: &[f32], threshold: f64) -> Option<Hit> {
    cache
        .similar
        .nearest(context, v)
        .into_iter()
        .take_while(|(_, s)| f64::from(*s) >= threshold)
        .find_map(|(k, s)| Some(Hit { entry: cache.get(&k)?, similarity: Some(s.min(1.0)) }))
}

/// Stores a successful answer (`body` as the client got it), with what it used and cost.
pub fn store(cache: &ResponseCache, ticket: Ticket, body: &Value, answered: Answered) {
    let mut body = body.clone();
    if let Some(u) = body.get_mut("usage").and_then(Value::as_object_mut) {
        // A hit costs nothing.
        u.insert("cost".into(), serde_json::json!(0.0));
    }
    let body = bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    // The text, and about what the entry, its key and the cache's bookkeeping take besides (and
    // its point in a semantic index).
    let mut bytes = body.len() + ENTRY_OVERHEAD;
    let mut context = None;
    if let Some((c, v)) = &ticket.semantic {
        cache.similar.insert(c, ticket.key, v, |k| cache.entries.contains_key(k));
        bytes += v.len() * 2 + similar::POINT_OVERHEAD;
        context = Some(*c);
    }
    let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
    let entry = Entry {
        body,
        model: answered.model,
        provider: answered.provider,
        rule: ticket.rule.clone(),
        usage: answered.usage,
        cost_micros: answered.cost_micros,
        context,
        ttl: ticket.ttl,
        bytes,
    };
    if let Some(share) = cache.sink.get() {
        share(&ticket.key, entry.encode(), ticket.ttl);
    }
    cache.entries.insert(ticket.key, Arc::new(entry));
    cache.bound();
    // The ticket (and its flight) ends here: requests waiting for it find the entry.
    drop(ticket);
}

/// Who answered a request, and what it used and cost.
#[derive(Clone, Debug)]
pub struct Answered {
    /// The catalog model.
    pub model: String,
    /// Its provider.
    pub provider: Option<String>,
    /// What it used.
    pub usage: Usage,
    /// What it cost, micro-USD.
    pub cost_micros: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_ignores_what_cannot_change_the_answer_and_nothing_else() {
        use serde_json::json;
        let k = |body: Value| key("key:a", "faq", Endpoint::Chat, &digest(&body));
        let base = json!({"model": "auto", "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]});
        let same = json!({"messages": [{"content": "hi", "role": "user"}], "temperature": 0.5, "model": "auto",
            "stream": true, "stream_options": {"include_usage": true}, "user": "u1", "metadata": {"a": "b"}});
        assert_eq!(k(base.clone()), k(same));
        for other in [
            json!({"model": "auto", "temperature": 0.7, "messages": [{"role": "user", "content": "hi"}]}),
            json!({"model": "auto", "temperature": 0.5, "messages": [{"role": "user", "content": "hi!"}]}),
            json!({"model": "gpt-4o", "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]}),
            json!({"model": "auto", "temperature": 0.5, "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}),
        ] {
            assert_ne!(k(base.clone()), k(other));
        }
        // Numbers stay as written: 1 and 1.0 are two keys.
        assert_ne!(k(json!({"n": 1})), k(json!({"n": 1.0})));
        // The scope, the rule and the endpoint are part of it.
        let base = digest(&base);
        assert_ne!(key("key:a", "faq", Endpoint::Chat, &base), key("key:b", "faq", Endpoint::Chat, &base));
        assert_ne!(key("key:a", "faq", Endpoint::Chat, &base), key("key:a", "other", Endpoint::Chat, &base));
        assert_ne!(key("key:a", "faq", Endpoint::Chat, &base), key("key:a", "faq", Endpoint::Embeddings, &base));
    }
}
