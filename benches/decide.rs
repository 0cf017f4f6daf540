//! Decision time: the compiled program against the naive evaluator that walks the checked policy
//! rule by rule, side by side, on policies of 10, 100 and 1,000 rules (keyword, regex, tier and
//! length rules mixed) and prompts of 1 KB and 32 KB that match no rule (the worst case: every
//! rule is evaluated). Also: parse + check + compile of a 1,000-rule policy.
//!
//! Run: `cargo bench --bench decide`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup fails loudly")]

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use yardmaster::catalog::Catalog;
use yardmaster::policy::eval::naive::Naive;
use yardmaster::policy::eval::Scratch;
use yardmaster::policy::eval::{Context, RequestFacts, StaticHealth};
use yardmaster::policy::{check, compile, load, CheckOptions};

fn catalog() -> Catalog {
    yardmaster::config::load(Path::new("examples/quickstart.yaml")).unwrap().catalog()
}

/// A policy of `n` rules: keyword, regex, tier and length rules in turn.
pub fn policy(n: usize) -> String {
    let models = ["gpt-4o-mini", "gpt-4o", "claude-sonnet", "claude-haiku", "codestral", "llama-70b"];
    let mut s = String::new();
    for i in 0..n {
        let m = models[i % models.len()];
        let cond = match i % 4 {
            0 => format!("prompt contains any [\"kw{i}alpha\", \"kw{i}beta\", \"kw{i} gamma\"]"),
            1 => format!("prompt matches /err{i}-[0-9]+/"),
            2 => format!("user.tier == \"tier{i}\""),
            _ => format!("prompt.tokens > {}k", 100 + i),
        };
        s.push_str(&format!("rule \"r{i}\" {{\n  when {cond}\n  then {m} -> gpt-4o-mini\n}}\n"));
    }
    s.push_str("default { then gpt-4o-mini }\n");
    s
}

fn prompt(bytes: usize) -> String {
    let words =
        ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "routing", "requests", "gateway"];
    let mut s = String::new();
    let mut i = 0usize;
    while s.len() < bytes {
        s.push_str(words[(i * 7 + i / 3) % words.len()]);
        s.push(' ');
        i += 1;
    }
    s.truncate(bytes);
    s
}

fn decide(c: &mut Criterion) {
    let cat = catalog();
    let health = StaticHealth::default();
    let ctx = Context { tier: Some("free"), key_name: Some("bench"), ..Context::anonymous(&health) };
    for size in [1024usize, 32 * 1024] {
        let req = RequestFacts::from_chat(
            &yardmaster::json::json!({"model": "auto", "messages": [{"role": "user", "content": prompt(size)}]}),
        )
        .unwrap();
        let mut group = c.benchmark_group(format!("decide/{}KB", size / 1024));
        for n in [10usize, 100, 1000] {
            let checked =
                check(load::load_text(Path::new("bench.route"), &policy(n)), Some(&cat), CheckOptions::default())
                    .checked
                    .unwrap();
            let naive = Naive::new(checked.clone());
            let program = compile(checked);
            let mut scratch = Scratch::default();
            assert_eq!(program.decide(&req, &ctx, &mut scratch).rule, n, "the prompt must match no rule");
            assert_eq!(naive.decide(&req, &ctx), n);
            group.bench_with_input(BenchmarkId::new("compiled", n), &n, |b, _| {
                b.iter(|| black_box(program.decide(black_box(&req), &ctx, &mut scratch)))
            });
            group.bench_with_input(BenchmarkId::new("naive", n), &n, |b, _| {
                b.iter(|| black_box(naive.decide(black_box(&req), &ctx)))
            });
        }
        group.finish();
    }
}

fn build(c: &mut Criterion) {
    let cat = catalog();
    let text = policy(1000);
    c.bench_function("build/1000 rules (parse+check+compile)", |b| {
        b.iter(|| {
            let outcome =
                check(load::load_text(Path::new("bench.route"), black_box(&text)), Some(&cat), CheckOptions::default());
            black_box(compile(outcome.checked.unwrap()))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = decide, build
}
criterion_main!(benches);
