//! The language server's diagnostics latency after an edit (SPEC §14): a 1,000-rule policy beside
//! the quickstart's catalog, edited 300 times (a character typed into its last comment), each edit
//! parsed, checked against the catalog and turned into the `publishDiagnostics` notification.
//! Prints p50, p99 and max of the timed edits; criterion then measures one edit's mean.
//!
//! Run: `cargo bench --bench lsp`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup fails loudly")]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

/// 1,000 rules over keywords, headers, tiers and token counts, each to a quickstart model.
fn policy() -> String {
    let targets = [
        "gpt-4o-mini",
        "claude-haiku -> gpt-4o-mini",
        "codestral",
        "cheapest(healthy)",
        "fastest(gemini-pro, claude-sonnet)",
    ];
    let mut text = String::from("let words = [\"alpha\", \"beta\"]\n\n");
    for i in 0..1000 {
        let when = match i % 5 {
            0 => format!("prompt contains \"kw{i}\""),
            1 => format!("header(\"x-team\") == \"team{i}\""),
            2 => format!("user.tier == \"tier{i}\" and prompt contains any words"),
            3 => format!("prompt.tokens > {}k", 10 + i),
            _ => format!("prompt matches /id-{i}-[0-9]+/"),
        };
        text.push_str(&format!("rule \"r{i}\" {{\n  when {when}\n  then {}\n}}\n\n", targets[i % targets.len()]));
    }
    text.push_str("default {\n  then gpt-4o-mini\n}\n# typing here: ");
    text
}

fn edits(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("examples/quickstart.yaml", dir.path().join("yardmaster.yaml")).unwrap();
    let uri = format!("file://{}/main.route", dir.path().display());
    let mut text = policy();
    let mut times = Vec::new();
    for i in 0..300 {
        text.push(char::from(b'a' + (i % 26) as u8));
        let t = Instant::now();
        let published = yardmaster::lsp::check_and_publish(&uri, &text);
        times.push(t.elapsed());
        assert!(published.contains("\"diagnostics\""));
    }
    times.sort();
    let at = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "lsp diagnostics after an edit of a 1,000-rule policy: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} edits)",
        at(0.5),
        at(0.99),
        at(1.0),
        times.len()
    );
    c.bench_function("lsp check and publish, 1,000 rules", |b| {
        b.iter(|| yardmaster::lsp::check_and_publish(&uri, &text))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = edits
}
criterion_main!(benches);
