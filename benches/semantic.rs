//! The semantic cache's lookup (SPEC §10: at most 2 ms at p99 over 100,000 entries of 1,536
//! dimensions, not counting the embedding call): one context's index holds `YM_SEMANTIC_N`
//! entries (100,000 by default) of 1,536 dimensions, grouped around 2,000 topics as embeddings of
//! real questions are; queries are stored vectors with a little noise added. It prints the build
//! time, the memory the index took (RSS before and after), the recall of the nearest entry, and
//! the p50, p99 and max of 10,000 timed lookups; criterion then measures a lookup's mean.
//!
//! Run: `cargo bench --bench semantic` (the build takes about a minute on 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup fails loudly")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use yardmaster::cache::similar::{unit, Index};

const DIMS: usize = 1536;
const TOPICS: usize = 2000;

/// xorshift numbers in -0.5..0.5.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..DIMS).map(|_| self.next()).collect()
    }
}

fn key(i: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64).to_le_bytes());
    k
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn lookup(c: &mut Criterion) {
    let n: usize = std::env::var("YM_SEMANTIC_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let mut noise = Noise(0x2545_f491_4f6c_dd1d);
    let topics: Vec<Vec<f32>> = (0..TOPICS).map(|_| noise.vector()).collect();
    let points: Vec<([u8; 32], Vec<f32>)> = (0..n)
        .map(|i| {
            let t = &topics[i % TOPICS];
            let v = t.iter().map(|x| x + 0.6 * noise.next()).collect();
            (key(i), unit(v).unwrap())
        })
        .collect();
    let context = [7u8; 32];
    let index = Index::default();
    let before = rss_kib();
    let started = Instant::now();
    // In parts, so that the 16-bit copies made on the way do not count as the index's memory.
    for part in points.chunks(5_000) {
        index.extend(&context, part);
    }
    let built = started.elapsed();
    let index_kib = rss_kib().saturating_sub(before);
    let vectors_kib = (n * DIMS * 2 / 1024) as u64;
    println!(
        "semantic index: {n} entries x {DIMS} dims built in {:.1} s; RSS +{:.0} MiB ({:.0} MiB of it the vectors in 16 bits, {:.0} bytes a point besides)",
        built.as_secs_f64(),
        index_kib as f64 / 1024.0,
        vectors_kib as f64 / 1024.0,
        (index_kib - vectors_kib.min(index_kib)) as f64 * 1024.0 / n as f64
    );

    let queries: Vec<(usize, Vec<f32>)> = (0..10_000)
        .map(|q| {
            let i = (q * 7919) % n;
            let v = points[i].1.iter().map(|x| x + 0.01 * noise.next()).collect();
            (i, unit(v).unwrap())
        })
        .collect();
    let mut times: Vec<Duration> = Vec::with_capacity(queries.len());
    let mut found = 0;
    for (i, q) in &queries {
        let t = Instant::now();
        let near = index.nearest(&context, q);
        times.push(t.elapsed());
        if near.first().map(|(k, _)| *k) == Some(key(*i)) {
            found += 1;
        }
    }
    times.sort();
    let at = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "semantic lookup over {n}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; recall@1 {:.3} ({found} of {})",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
        found as f64 / queries.len() as f64,
        queries.len()
    );

    let mut q = queries.iter().cycle();
    c.bench_function(&format!("semantic lookup, {n} x {DIMS}"), |b| {
        b.iter(|| black_box(index.nearest(&context, &q.next().unwrap().1)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = lookup
}
criterion_main!(benches);
