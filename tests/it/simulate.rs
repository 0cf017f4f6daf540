//! `yardmaster simulate` on the shipped sample log (examples/traffic.jsonl, recorded by
//! examples/record_traffic.py from rules/main.route on the quickstart catalog).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::process::Command;

use serde_json::Value;

fn simulate(traffic: &str, policy: &str, baseline: Option<&str>, format: &str) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_yardmaster"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "simulate",
        "--config",
        "examples/quickstart.yaml",
        "--traffic",
        traffic,
        "--policy",
        policy,
        "--format",
        format,
    ]);
    if let Some(b) = baseline {
        cmd.args(["--baseline", b]);
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap())
}

fn count(column: &Value, section: &str, name: &str) -> u64 {
    column[section][name].as_u64().unwrap_or(0)
}

#[test]
fn the_sample_log_replays_with_the_expected_counts() {
    let (code, out) = simulate("examples/traffic.jsonl", "examples/cost-aware.route", Some("rules/main.route"), "json");
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let cols = v["columns"].as_array().unwrap();
    let (recorded, baseline, new) = (&cols[0], &cols[1], &cols[2]);
    assert_eq!(recorded["label"], "recorded");
    assert_eq!(v["skipped_lines"], serde_json::json!([]));
    for c in cols {
        assert_eq!(c["requests"], 240);
        assert_eq!(c["not_evaluable"], 0);
    }
    // The policy that recorded the log routes it the same way again, at the same cost.
    assert_eq!(baseline["rules"], recorded["rules"]);
    assert_eq!(baseline["models"], recorded["models"]);
    assert_eq!(baseline["cost_micros"], recorded["cost_micros"]);
    // What the generator sent: every 20th request is an embedding, every 30th leaks a credential.
    assert_eq!(count(baseline, "rules", "embeddings"), 12);
    assert_eq!(count(baseline, "rules", "no credentials to providers"), 8);
    assert_eq!(count(baseline, "models", "(refused 403)"), 8);
    assert_eq!(count(baseline, "rules", "code"), 22);
    assert_eq!(count(baseline, "rules", "premium"), 53);
    assert_eq!(count(baseline, "rules", "explicit model"), 26);
    assert_eq!(count(baseline, "rules", "free tier experiment"), 38);
    assert_eq!(count(baseline, "rules", "default"), 81);
    // The cost-aware policy: no deny rule, hard questions go to gpt-4o, the rest to the cheapest.
    assert_eq!(count(new, "rules", "embeddings"), 12);
    assert_eq!(count(new, "rules", "hard questions"), 96);
    assert_eq!(count(new, "models", "gpt-4o"), 96);
    assert_eq!(count(new, "rules", "default"), 132);
    assert_eq!(count(new, "models", "gpt-4o-mini"), 132);
    assert!(new["cost_micros"].as_u64().unwrap() > baseline["cost_micros"].as_u64().unwrap());
    // Human output: side by side, one column per policy.
    let (code, text) =
        simulate("examples/traffic.jsonl", "examples/cost-aware.route", Some("rules/main.route"), "human");
    assert_eq!(code, 0);
    let header = text.lines().next().unwrap();
    assert!(header.contains("recorded") && header.contains("rules/main.route") && header.contains("cost-aware"));
    assert!(text.contains("estimated cost (USD)"));
}

#[test]
fn without_prompt_text_rules_that_search_it_are_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/traffic.jsonl")).unwrap();
    let mut stripped = String::new();
    for line in text.lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        for k in ["prompt", "prompt_last", "prompt_system"] {
            v["facts"].as_object_mut().unwrap().remove(k);
        }
        stripped.push_str(&v.to_string());
        stripped.push('\n');
    }
    stripped.push_str("{\"truncated by a cra\n");
    let path = dir.path().join("t.jsonl");
    std::fs::write(&path, stripped).unwrap();
    let (code, out) = simulate(path.to_str().unwrap(), "examples/cost-aware.route", None, "json");
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let new = &v["columns"][1];
    // Only embeddings are decided before `hard questions`, which reads `prompt.last`.
    assert_eq!(new["not_evaluable"], 228);
    assert_eq!(count(new, "rules", "embeddings"), 12);
    assert_eq!(v["skipped_lines"], serde_json::json!([241]));
    // main.route's first rule searches the prompt: nothing can be replayed without the text.
    let (_, out) = simulate(path.to_str().unwrap(), "rules/main.route", None, "json");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["columns"][1]["not_evaluable"], 240);
}

#[test]
fn a_new_policys_exact_cache_is_replayed_with_what_it_saves() {
    use yardmaster::accounting::requestlog::{Entry, Facts};
    let program = crate::common::program(
        "rule \"faq\" {\n  when user.tier == \"free\"\n  then gpt-4o-mini\n  cache 10m\n}\n\ndefault { then gpt-4o }\n",
    );
    let line = |key: &str, tier: &str, digest: &str, time: &str| Entry {
        time: time.into(),
        request_id: format!("r-{key}-{time}"),
        key: Some(key.into()),
        status: 200,
        tokens_in: 1000,
        tokens_out: 1000,
        facts: Facts { tier: Some(tier.into()), request_sha256: Some(digest.into()), ..Facts::default() },
        ..Entry::default()
    };
    let entries = [
        line("a", "free", "q1", "2026-12-01T10:00:00Z"),
        line("a", "free", "q1", "2026-12-01T10:05:00Z"), // hit
        line("b", "free", "q1", "2026-12-01T10:06:00Z"), // another key: its own entry
        line("a", "free", "q2", "2026-12-01T10:07:00Z"), // another request
        line("a", "free", "q1", "2026-12-01T10:11:00Z"), // the entry of 10:00 expired at 10:10
        line("a", "free", "q1", "2026-12-01T10:12:00Z"), // hit
        line("a", "pro", "q1", "2026-12-01T10:13:00Z"),  // the default: no cache
    ];
    let c = yardmaster::simulate::replay("new", &program, &entries, || {});
    assert_eq!(c.cache_hits, 2);
    // gpt-4o-mini: $0.15 + $0.60 per million tokens, 1,000 of each per request.
    assert_eq!(c.cache_saved_micros, 2 * 750);
    let report = yardmaster::simulate::render(&[c], 0);
    assert!(report.contains("cache hits (exact)") && report.contains("saved by the cache (USD)"), "{report}");
}
