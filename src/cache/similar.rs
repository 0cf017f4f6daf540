//! The semantic match (SPEC §10): a request and its last user message's embedding -> the closest
//! stored entry of the same context. The context is everything but the last user message, hashed
//! like the exact key; each context has its own approximate nearest-neighbour index (HNSW, from
//! `hnsw_rs`) over the unit vectors of its entries' last user messages, so a lookup never looks
//! at another context's entries. The index holds each unit vector in 16-bit fixed point: a lookup
//! reads half the memory of 32-bit floats and multiplies integers, and the similarity it reports is
//! within 0.001 of the exact one. Entries leave the index lazily: an entry the cache evicted or
//! expired is skipped when found, and a context's index is rebuilt from its live points once the
//! dead outnumber them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hnsw_rs::anndists::dist::distances::Distance;
use hnsw_rs::hnsw::Hnsw;
use serde_json::Value;
use sha2::Digest;

use super::CacheKey;
use crate::catalog::Endpoint;

/// Neighbours kept per point and layer (HNSW's `M`).
const LINKS: usize = 16;
/// Candidates explored while inserting.
const EF_CONSTRUCTION: usize = 64;
/// Candidates explored while searching.
const EF_SEARCH: usize = 48;
/// Nearest points looked at per lookup: the best live one of them is the answer.
const NEAREST: usize = 4;
/// Below this many dead points a context's index is never rebuilt.
const REBUILD_FLOOR: usize = 64;

/// What a stored point costs the cache's byte bound besides its numbers: its neighbour lists and
/// its bookkeeping in the index (measured by `cargo bench --bench semantic`: about 3.5 KiB).
pub const POINT_OVERHEAD: usize = 3584;

/// The fixed point of [`quantize`]: a unit vector's numbers times 2¹⁴. A dot product of two such
/// vectors is at most 2²⁸ (and so is any part of it), far from overflowing an `i32`.
const SCALE: f32 = 16384.0;

/// `1 - cos` of two unit vectors in fixed point (see [`quantize`]), never below 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cosine;

impl Distance<i16> for Cosine {
    fn eval(&self, a: &[i16], b: &[i16]) -> f32 {
        (1.0 - dot(a, b) as f32 / (SCALE * SCALE)).max(0.0)
    }
}

/// The dot product in sixteen lanes, so that the compiler vectorises it.
fn dot(a: &[i16], b: &[i16]) -> i32 {
    let mut lanes = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            lanes[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    lanes.iter().sum::<i32>() + tail
}

/// A unit vector in 16-bit fixed point ([`SCALE`]).
pub fn quantize(v: &[f32]) -> Vec<i16> {
    v.iter().map(|x| (x * SCALE).round().clamp(-SCALE, SCALE) as i16).collect()
}

/// `v` scaled to length 1 (none when it has no length or is not finite).
pub fn unit(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    for a in &mut v {
        *a /= norm;
    }
    Some(v)
}

/// The last user message's text, and the index of that message: none when the request has no
/// user message, or when its last one holds more than text (an image is part of no embedding,
/// so such a request is cached by its exact key only).
pub fn last_user_text(body: &Value) -> Option<(usize, String)> {
    let messages = body.get("messages")?.as_array()?;
    let (i, m) =
        messages.iter().enumerate().rev().find(|(_, m)| m.get("role").and_then(Value::as_str) == Some("user"))?;
    let text = match m.get("content")? {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let mut text = Vec::with_capacity(parts.len());
            for p in parts {
                if p.get("type").and_then(Value::as_str) != Some("text") {
                    return None;
                }
                text.push(p.get("text")?.as_str()?);
            }
            text.join("\n")
        }
        _ => return None,
    };
    Some((i, text))
}

/// A semantic query: the request's context key and the text to embed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// SHA-256 over the scope, the rule, the endpoint, the embeddings model and the canonical
    /// request without its last user message (nor the fields the exact key leaves out).
    pub key: CacheKey,
    /// The last user message's text.
    pub text: String,
}

/// The context of a chat request, as [`Context`] says; none when it has no last user message of
/// text (see [`last_user_text`]) or is not a chat request.
pub fn context(scope: &str, rule: &str, endpoint: Endpoint, model: &str, body: &Value) -> Option<Context> {
    if endpoint != Endpoint::Chat {
        return None;
    }
    let (i, text) = last_user_text(body)?;
    let mut rest = body.clone();
    if let Some(m) = rest.get_mut("messages").and_then(Value::as_array_mut).and_then(|a| a.get_mut(i)) {
        // The message stays in its place, without its words.
        m["content"] = Value::Null;
    }
    let mut h = sha2::Sha256::new();
    for part in ["similar", scope, rule, endpoint.as_str(), model] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(super::digest(&rest));
    Some(Context { key: h.finalize().into(), text })
}

/// One context's points: the HNSW graph, and per data id the entry's key.
struct Graph {
    hnsw: Hnsw<'static, i16, Cosine>,
    keys: Vec<CacheKey>,
    dims: usize,
}

impl Graph {
    fn new(dims: usize, expected: usize) -> Graph {
        Graph {
            hnsw: Hnsw::new(LINKS, expected.clamp(16, 1 << 20), 16, EF_CONSTRUCTION, Cosine),
            keys: Vec::new(),
            dims,
        }
    }

    fn insert(&mut self, key: CacheKey, v: &[i16]) {
        self.keys.push(key);
        self.hnsw.insert_slice((v, self.keys.len() - 1));
    }

    /// Many points at once, inserted in parallel.
    fn extend(&mut self, points: &[(CacheKey, Vec<i16>)]) {
        let first = self.keys.len();
        self.keys.extend(points.iter().map(|(k, _)| *k));
        let data: Vec<(&[i16], usize)> =
            points.iter().enumerate().map(|(i, (_, v))| (v.as_slice(), first + i)).collect();
        self.hnsw.parallel_insert_slice(&data);
    }
}

/// A context's index and how many of its points are live entries.
struct Points {
    graph: RwLock<Graph>,
    live: AtomicUsize,
}

/// The semantic indexes, one per context.
#[derive(Default)]
pub struct Index {
    contexts: Mutex<HashMap<CacheKey, Arc<Points>>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("contexts", &self.lock().len()).finish()
    }
}

impl Index {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Arc<Points>>> {
        self.contexts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds the entry `key` at unit vector `v` to `context`'s index. `alive` says whether an
    /// entry is still in the cache, for a rebuild.
    pub fn insert(&self, context: &CacheKey, key: CacheKey, v: &[f32], alive: impl Fn(&CacheKey) -> bool) {
        let points = {
            let mut contexts = self.lock();
            let p = contexts.entry(*context).or_insert_with(|| {
                Arc::new(Points { graph: RwLock::new(Graph::new(v.len(), 16)), live: AtomicUsize::new(0) })
            });
            p.live.fetch_add(1, Ordering::Relaxed);
            p.clone()
        };
        let mut g = points.graph.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.dims != v.len() {
            // Another embeddings model of the same name: the old points cannot be compared.
            *g = Graph::new(v.len(), 16);
        }
        let live = points.live.load(Ordering::Relaxed);
        if g.keys.len().saturating_sub(live) > live.max(REBUILD_FLOOR) {
            *g = rebuild(&g, &alive);
        }
        g.insert(key, &quantize(v));
    }

    /// Adds many entries of `context` at once, in parallel (all of `points` of one dimension),
    /// as a rebuild does: for loading and benchmarks.
    pub fn extend(&self, context: &CacheKey, points: &[(CacheKey, Vec<f32>)]) {
        let Some(dims) = points.first().map(|(_, v)| v.len()) else { return };
        let p = self
            .lock()
            .entry(*context)
            .or_insert_with(|| {
                Arc::new(Points { graph: RwLock::new(Graph::new(dims, points.len())), live: AtomicUsize::new(0) })
            })
            .clone();
        p.live.fetch_add(points.len(), Ordering::Relaxed);
        let mut g = p.graph.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.dims != dims {
            *g = Graph::new(dims, points.len());
        }
        let points: Vec<(CacheKey, Vec<i16>)> = points.iter().map(|(k, v)| (*k, quantize(v))).collect();
        g.extend(&points);
    }

    /// An entry of `context` left the cache.
    pub fn forget(&self, context: &CacheKey) {
        let mut contexts = self.lock();
        if let Some(p) = contexts.get(context) {
            if p.live.fetch_sub(1, Ordering::Relaxed) <= 1 {
                contexts.remove(context);
            }
        }
    }

    /// The closest entries of `context` to unit vector `v` (live or not: the caller checks),
    /// closest first, with their cosine similarity.
    pub fn nearest(&self, context: &CacheKey, v: &[f32]) -> Vec<(CacheKey, f32)> {
        let Some(points) = self.lock().get(context).cloned() else { return Vec::new() };
        let g = points.graph.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.dims != v.len() {
            return Vec::new();
        }
        let mut found: Vec<(CacheKey, f32)> = g
            .hnsw
            .search(&quantize(v), NEAREST, EF_SEARCH)
            .into_iter()
            .filter_map(|n| Some((*g.keys.get(n.d_id)?, 1.0 - n.distance)))
            .collect();
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        found
    }

    /// Contexts with an index.
    pub fn contexts(&self) -> usize {
        self.lock().len()
    }
}

/// A graph of the live points of `g`.
fn rebuild(g: &Graph, alive: &impl Fn(&CacheKey) -> bool) -> Graph {
    let points: Vec<(CacheKey, Vec<i16>)> = g
        .hnsw
        .get_point_indexation()
        .into_iter()
        .filter_map(|p| {
            let key = *g.keys.get(p.get_origin_id())?;
            alive(&key).then(|| (key, p.get_v().to_vec()))
        })
        .collect();
    let mut fresh = Graph::new(g.dims, points.len());
    fresh.extend(&points);
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        unit(
            (0..dims)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn the_fixed_point_cosine_is_within_0_001_of_the_exact_one() {
        for seed in 1..200u64 {
            let a = v(seed, 1536);
            let noisy: Vec<f32> =
                a.iter().zip(v(seed + 1000, 1536)).map(|(x, n)| x + n * (seed % 10) as f32 / 10.0).collect();
            let b = unit(noisy).unwrap();
            let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let near = 1.0 - Cosine.eval(&quantize(&a), &quantize(&b));
            assert!((exact - near).abs() < 0.001, "{exact} against {near}");
        }
        let one = quantize(&v(3, 1536));
        assert!(Cosine.eval(&one, &one) < 0.001);
    }

    #[test]
    fn the_context_is_everything_but_the_last_user_message() {
        let body = |q: &str, system: &str| {
            json!({"model": "auto", "stream": false, "messages": [
                {"role": "system", "content": system}, {"role": "user", "content": q}]})
        };
        let c = |b: &Value| context("key:a", "support", Endpoint::Chat, "embed-small", b).unwrap();
        let a = c(&body("How do I reset my password?", "Be brief."));
        assert_eq!(a.text, "How do I reset my password?");
        assert_eq!(a.key, c(&body("Where is the invoice?", "Be brief.")).key);
        assert_ne!(a.key, c(&body("How do I reset my password?", "Be long.")).key);
        assert_ne!(
            a.key,
            context("key:b", "support", Endpoint::Chat, "embed-small", &body("x", "Be brief.")).unwrap().key
        );
        assert_ne!(
            a.key,
            context("key:a", "support", Endpoint::Chat, "embed-large", &body("x", "Be brief.")).unwrap().key
        );
        // Text parts are joined; an image makes the request exact-only.
        let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]});
        assert_eq!(last_user_text(&parts).unwrap().1, "a\nb");
        let image =
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]});
        assert_eq!(last_user_text(&image), None);
        assert_eq!(context("k", "r", Endpoint::Embeddings, "m", &json!({"input": "x"})), None);
    }

    #[test]
    fn the_nearest_live_point_of_the_context_is_found_and_dead_ones_are_rebuilt_away() {
        let index = Index::default();
        let (ctx, other) = ([1u8; 32], [2u8; 32]);
        let key = |i: u64| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&i.to_le_bytes());
            k
        };
        for i in 0..500 {
            index.insert(&ctx, key(i), &v(i + 1, 64), |_| true);
        }
        index.insert(&other, key(9999), &v(7, 64), |_| true);
        for i in [0, 17, 250, 499] {
            let found = index.nearest(&ctx, &v(i + 1, 64));
            assert_eq!(found[0].0, key(i));
            assert!((found[0].1 - 1.0).abs() < 1e-4, "{}", found[0].1);
        }
        // Another context's points are never candidates.
        assert!(index.nearest(&other, &v(18, 64)).iter().all(|(k, _)| *k == key(9999)));
        // Most entries leave the cache: the next insert rebuilds the graph from the live ones.
        for _ in 0..400 {
            index.forget(&ctx);
        }
        index.insert(&ctx, key(1000), &v(1001, 64), |k| u64::from_le_bytes(k[..8].try_into().unwrap()) >= 400);
        let g = index.lock().get(&ctx).unwrap().clone();
        assert_eq!(g.graph.read().unwrap().keys.len(), 101);
        assert_eq!(index.nearest(&ctx, &v(451, 64))[0].0, key(450));
        // The last entry of a context takes its index with it.
        for _ in 0..101 {
            index.forget(&ctx);
        }
        assert_eq!(index.contexts(), 1);
    }
}
