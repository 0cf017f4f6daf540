//! Evaluation: every fact, operator, literal and target kind, against the quickstart catalog.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use crate::common::{chat, program, route, Setup};
use serde_json::json;
use yardmaster::policy::eval::Budget;

/// One rule named "hit" with `cond`, routing to gpt-4o; the default goes to gpt-4o-mini.
fn holds(cond: &str, body: &serde_json::Value, s: &Setup) -> bool {
    let p = program(&format!("rule \"hit\" {{\n  when {cond}\n  then gpt-4o\n}}\ndefault {{ then gpt-4o-mini }}\n"));
    route(&p, body, s).0 == "hit"
}

fn s() -> Setup {
    Setup::default()
}

#[test]
fn prompt_texts() {
    let body = json!({"model": "auto", "messages": [
        {"role": "system", "content": "You answer in JSON."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "Second Question about C++"}
    ]});
    assert!(holds("prompt contains \"first answer\"", &body, &s()));
    assert!(holds("prompt.last contains \"c++\"", &body, &s()));
    assert!(!holds("prompt.last contains \"first\"", &body, &s()));
    assert!(holds("prompt.system contains \"json\"", &body, &s()));
    assert!(!holds("prompt.system contains \"question\"", &body, &s()));
    assert!(holds("prompt.messages == 4", &body, &s()));
    assert!(holds("prompt.chars == 73", &body, &s()));
    assert!(holds("prompt.last starts_with \"second\"", &body, &s()));
    assert!(!holds("prompt starts_with \"second\"", &body, &s()));
}

#[test]
fn keywords_are_case_insensitive_and_literal() {
    assert!(holds("prompt contains \"SELECT \"", &chat("please select * from t"), &s()));
    assert!(holds("prompt contains any [\"C#\", \".NET\"]", &chat("I write c# on .net"), &s()));
    assert!(!holds("prompt contains \".NET\"", &chat("I write xnet"), &s()));
    assert!(holds("prompt contains all [\"alpha\", \"beta\"]", &chat("BETA then Alpha"), &s()));
    assert!(!holds("prompt contains all [\"alpha\", \"beta\"]", &chat("alpha only"), &s()));
    // Keywords inside other keywords are found (overlapping scan).
    assert!(holds("prompt contains \"main\" and prompt contains \"fn main\"", &chat("fn main() {}"), &s()));
    // Non-ASCII keywords fold case too.
    assert!(holds("prompt contains \"ÉTÉ\"", &chat("un été chaud"), &s()));
    assert!(holds("prompt contains \"straße\"", &chat("STRASSE oder Straße"), &s()));
}

#[test]
fn regexes() {
    assert!(holds("prompt matches /AKIA[0-9A-Z]{16}/", &chat("key AKIAABCDEFGHIJKLMNOP"), &s()));
    assert!(!holds("prompt matches /akia[0-9a-z]{16}/", &chat("key AKIAABCDEFGHIJKLMNOP"), &s()));
    assert!(holds("prompt matches /akia[0-9a-z]{16}/i", &chat("key AKIAABCDEFGHIJKLMNOP"), &s()));
    assert!(holds("prompt matches /a\\/b/", &chat("path a/b"), &s()));
    assert!(holds("prompt.last matches /^hello$/", &chat("hello"), &s()));
    assert!(holds("request.model matches /^gpt-/", &json!({"model": "gpt-4o", "messages": []}), &s()));
}

#[test]
fn request_facts() {
    let body = json!({"model": "gpt-4o", "stream": true, "max_tokens": 300, "user": "u-1",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "metadata": {"team": "search"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:x"}}]}]});
    assert!(holds("request.model == \"gpt-4o\"", &body, &s()));
    assert!(holds("request.stream", &body, &s()));
    assert!(holds("request.stream == true", &body, &s()));
    assert!(holds("request.tools and request.images", &body, &s()));
    assert!(holds("request.max_tokens > 256", &body, &s()));
    assert!(holds("request.endpoint == \"chat\"", &body, &s()));
    assert!(holds("user.id == \"u-1\"", &body, &s()));
    assert!(holds("metadata.team == \"search\"", &body, &s()));
    assert!(holds("metadata.other == none", &body, &s()));
    assert!(!holds("request.stream", &chat("x"), &s()));
    assert!(holds("request.max_tokens == none", &chat("x"), &s()));
}

#[test]
fn none_semantics() {
    let b = chat("x");
    // An absent header is `none`: it differs from every string, and ordering or text ops on it are false.
    assert!(holds("header(\"x-team\") != \"a\"", &b, &s()));
    assert!(!holds("header(\"x-team\") == \"a\"", &b, &s()));
    assert!(holds("header(\"x-team\") == none", &b, &s()));
    assert!(!holds("header(\"x-team\") contains \"a\"", &b, &s()));
    assert!(!holds("header(\"x-team\") starts_with \"a\"", &b, &s()));
    assert!(!holds("header(\"x-team\") matches /a/", &b, &s()));
    assert!(!holds("header(\"x-team\") in [\"a\", \"b\"]", &b, &s()));
    assert!(!holds("request.max_tokens > 0", &b, &s()));
    assert!(!holds("request.max_tokens <= 0", &b, &s()));
    let with = Setup { headers: vec![("X-Team", "a")], ..s() };
    assert!(holds("header(\"x-team\") == \"a\"", &b, &with));
    assert!(holds("header(\"X-TEAM\") in [\"a\", \"b\"]", &b, &with));
}

#[test]
fn user_and_key_facts() {
    let st = Setup { tier: Some("premium"), key: Some("team-a"), ..s() };
    assert!(holds("user.tier == \"premium\"", &chat("x"), &st));
    assert!(!holds("user.tier == \"Premium\"", &chat("x"), &st), "== on strings is case-sensitive");
    assert!(holds("user.name == \"team-a\"", &chat("x"), &st));
    assert!(holds("user.tier in [\"gold\", \"premium\"]", &chat("x"), &st));
    assert!(holds("user.tier not in [\"gold\"]", &chat("x"), &st));
    let p = program("let staff = [\"staff\", \"premium\"]\nrule \"hit\" { when user.tier in staff then gpt-4o }\ndefault { then gpt-4o-mini }");
    assert_eq!(route(&p, &chat("x"), &st).0, "hit");
}

#[test]
fn budget_facts() {
    let low = Setup { budget: Budget::from_limit(Some(100.0), 95.0), ..s() };
    assert!(holds("budget.remaining < 10%", &chat("x"), &low));
    assert!(holds("budget.remaining < $6", &chat("x"), &low));
    assert!(holds("budget.spent > $90", &chat("x"), &low));
    assert!(holds("budget.spent >= 95%", &chat("x"), &low));
    let none = s();
    assert!(!holds("budget.remaining < 10%", &chat("x"), &none), "no budget: remaining is none");
    assert!(holds("budget.remaining == none", &chat("x"), &none));
}

#[test]
fn health_latency_and_time() {
    let st = Setup { down: vec!["gpt-4o"], latency: vec![("claude-sonnet", 2500.0)], hour: 23, weekday: 5, ..s() };
    assert!(holds("not healthy(gpt-4o)", &chat("x"), &st));
    assert!(holds("healthy(claude-sonnet)", &chat("x"), &st));
    assert!(holds("latency(claude-sonnet) > 2s", &chat("x"), &st));
    assert!(!holds("latency(gpt-4o) > 0ms", &chat("x"), &st), "no samples: latency is none");
    assert!(holds("time.hour >= 22 and time.weekday == \"sat\"", &chat("x"), &st));
    assert!(holds("time.weekday in [\"sat\", \"sun\"]", &chat("x"), &st));
}

#[test]
fn tokens_are_counted_lazily() {
    let p = program("rule \"long\" { when prompt.tokens > 3 then gpt-4o }\ndefault { then gpt-4o-mini }");
    let mut scratch = yardmaster::policy::eval::Scratch::default();
    let health = yardmaster::policy::eval::StaticHealth::default();
    let ctx = yardmaster::policy::eval::Context::anonymous(&health);
    // Three bytes cannot hold more than three tokens: decided without counting.
    let short = yardmaster::policy::eval::RequestFacts::from_chat(&chat("abc")).unwrap();
    let d = p.decide(&short, &ctx, &mut scratch);
    assert_eq!((p.rule(d.rule).unwrap().name.as_str(), d.tokens), ("default", None));
    let long = yardmaster::policy::eval::RequestFacts::from_chat(&chat("one two three four five six")).unwrap();
    let d = p.decide(&long, &ctx, &mut scratch);
    assert_eq!((p.rule(d.rule).unwrap().name.as_str(), d.tokens), ("long", Some(6)));
    // A policy that never reads tokens never counts them.
    assert!(!program("default { then gpt-4o-mini }").info.reads_tokens);
    assert!(p.info.reads_tokens);
}

#[test]
fn logic_and_precedence() {
    let b = chat("hello");
    assert!(holds("true or false and false", &b, &s()), "and binds tighter than or");
    assert!(!holds("(true or false) and false", &b, &s()));
    assert!(holds("not false and true", &b, &s()));
    assert!(!holds("not (false or true)", &b, &s()));
    let p = program("let greet = prompt contains \"hello\"\nrule \"hit\" { when greet and not request.stream then gpt-4o }\ndefault { then gpt-4o-mini }");
    assert_eq!(route(&p, &b, &s()).0, "hit");
}

#[test]
fn literals() {
    let b = json!({"model": "auto", "max_tokens": 1500000, "messages": []});
    assert!(holds("request.max_tokens == 1.5M", &b, &s()));
    assert!(holds("request.max_tokens > 1k", &b, &s()));
    assert!(holds("request.max_tokens < 2M", &b, &s()));
    let st = Setup { latency: vec![("gpt-4o", 300_000.0)], ..s() };
    assert!(holds("latency(gpt-4o) == 5m", &chat("x"), &st));
    assert!(holds("latency(gpt-4o) < 1h and latency(gpt-4o) > 250ms and latency(gpt-4o) >= 300s", &chat("x"), &st));
}

#[test]
fn targets_chains_and_deny() {
    let p = program("rule \"no\" { when prompt contains \"bad\" then deny 451 \"no\" }\nrule \"quiet\" { when prompt contains \"psst\" then deny \"shh\" }\ndefault { then gpt-4o -> claude-sonnet -> gpt-4o-mini }");
    assert_eq!(route(&p, &chat("bad"), &s()), ("no".into(), "deny 451".into()));
    assert_eq!(route(&p, &chat("psst"), &s()), ("quiet".into(), "deny 403".into()));
    assert_eq!(route(&p, &chat("x"), &s()).1, "gpt-4o");
    assert_eq!(route(&p, &chat("x"), &Setup { down: vec!["gpt-4o"], ..s() }).1, "claude-sonnet");
    assert_eq!(route(&p, &chat("x"), &Setup { down: vec!["gpt-4o", "claude-sonnet"], ..s() }).1, "gpt-4o-mini");
    assert_eq!(route(&p, &chat("x"), &Setup { down: vec!["gpt-4o", "claude-sonnet", "gpt-4o-mini"], ..s() }).1, "none");
}

#[test]
fn requested_and_overrides() {
    let p = program("rule \"explicit\" { when request.model != \"auto\" then requested with (max_tokens: 100) }\ndefault { then gpt-4o-mini with (temperature: 0.2) }");
    assert_eq!(
        route(&p, &json!({"model": "claude-haiku", "messages": []}), &s()),
        ("explicit".into(), "claude-haiku".into())
    );
    assert_eq!(route(&p, &json!({"model": "nope", "messages": []}), &s()), ("explicit".into(), "none".into()));
    let rule = p.rule(0).unwrap();
    match &rule.target {
        yardmaster::policy::ir::TargetIr::Requested { with } => {
            assert_eq!(with, &vec![("max_tokens".to_string(), json!(100))])
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cheapest_and_fastest_with_down_models() {
    let p = program("rule \"c\" { when user.tier == \"c\" then cheapest(healthy) }\nrule \"f\" { when user.tier == \"f\" then fastest(gpt-4o, claude-sonnet, gemini-pro) }\nrule \"t\" { when user.tier == \"t\" then cheapest(tagged(\"cheap\")) }\ndefault { then gpt-4o-mini }");
    let c = Setup { tier: Some("c"), ..s() };
    assert_eq!(route(&p, &chat("x"), &c).1, "gpt-4o-mini");
    assert_eq!(route(&p, &chat("x"), &Setup { down: vec!["gpt-4o-mini"], ..c.clone() }).1, "codestral");
    assert_eq!(route(&p, &chat("x"), &Setup { down: vec!["gpt-4o-mini", "codestral"], ..c }).1, "llama-70b");
    let f = Setup { tier: Some("f"), latency: vec![("claude-sonnet", 120.0), ("gemini-pro", 80.0)], ..s() };
    assert_eq!(route(&p, &chat("x"), &f).1, "gemini-pro");
    assert_eq!(route(&p, &chat("x"), &Setup { down: vec!["gemini-pro"], ..f.clone() }).1, "claude-sonnet");
    // Unsampled models come last, in the order written.
    assert_eq!(route(&p, &chat("x"), &Setup { down: vec!["gemini-pro", "claude-sonnet"], ..f }).1, "gpt-4o");
    let nolat = Setup { tier: Some("f"), ..s() };
    assert_eq!(route(&p, &chat("x"), &nolat).1, "gpt-4o");
    let t = Setup { tier: Some("t"), ..s() };
    assert_eq!(route(&p, &chat("x"), &t).1, "gpt-4o-mini");
    // `healthy` never sends a chat request to an embedding model, even when it is cheapest.
    assert_eq!(
        route(
            &p,
            &chat("x"),
            &Setup {
                down: vec![
                    "gpt-4o-mini",
                    "codestral",
                    "llama-70b",
                    "claude-haiku",
                    "gemini-pro",
                    "gpt-4o",
                    "claude-sonnet"
                ],
                tier: Some("c"),
                ..s()
            }
        )
        .1,
        "none"
    );
}

#[test]
fn splits_are_weighted_and_sticky() {
    let p = program("default { then split { 70%: gpt-4o-mini, 30%: claude-haiku } }");
    let mut counts = std::collections::HashMap::new();
    for i in 0..2000 {
        let body = json!({"model": "auto", "user": format!("user-{i}"), "messages": []});
        let m = route(&p, &body, &s()).1;
        // Sticky: the same user always lands on the same arm.
        assert_eq!(route(&p, &body, &s()).1, m);
        *counts.entry(m).or_insert(0) += 1;
    }
    let small = counts["claude-haiku"];
    assert!((500..700).contains(&small), "30% of 2000 should be about 600, got {small}");
    // Without a user id, the key's name is the sticky key.
    let a = route(&p, &chat("x"), &Setup { key: Some("team-a"), ..s() }).1;
    for _ in 0..5 {
        assert_eq!(route(&p, &chat("x"), &Setup { key: Some("team-a"), ..s() }).1, a);
    }
    // When the chosen arm is down, the other arms are tried.
    let body = json!({"model": "auto", "user": "user-1", "messages": []});
    let first = route(&p, &body, &s()).1;
    let other = if first == "gpt-4o-mini" { "claude-haiku" } else { "gpt-4o-mini" };
    let down: &'static str = if first == "gpt-4o-mini" { "gpt-4o-mini" } else { "claude-haiku" };
    assert_eq!(route(&p, &body, &Setup { down: vec![down], ..s() }).1, other);
}

#[test]
fn context_and_capabilities_skip_targets() {
    let p = program("default { then llama-70b -> gpt-4o }");
    let tools =
        json!({"model": "auto", "tools": [{"type": "function"}], "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(route(&p, &tools, &s()).1, "gpt-4o", "llama-70b has no tools");
    let big = json!({"model": "auto", "max_tokens": 127999, "messages": [{"role": "user", "content": "hello there my friend how are you"}]});
    assert_eq!(route(&p, &big, &s()).1, "none", "neither context holds the prompt plus max_tokens");
    let p = program("default { then gpt-4o-mini -> gemini-pro }");
    assert_eq!(route(&p, &big, &s()).1, "gemini-pro");
}

#[test]
fn only_filters_picks() {
    let p = program("rule \"eu\" { when header(\"x-region\") == \"eu\" then cheapest(healthy) only [claude-haiku, claude-sonnet] }\ndefault { then gpt-4o-mini }");
    let st = Setup { headers: vec![("x-region", "eu")], ..s() };
    assert_eq!(route(&p, &chat("x"), &st).1, "claude-haiku");
}

#[test]
fn embeddings_requests() {
    let p = program(
        "rule \"emb\" { when request.endpoint == \"embeddings\" then embed-small }\ndefault { then gpt-4o-mini }",
    );
    assert_eq!(route(&p, &json!({"model": "auto", "input": ["a", "b"]}), &s()), ("emb".into(), "embed-small".into()));
}

#[test]
fn the_spec_example_routes_as_documented() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/main.route")).unwrap();
    let p = program(&text);
    assert_eq!(route(&p, &chat("AKIAABCDEFGHIJKLMNOP"), &s()).1, "deny 403");
    let long = "word ".repeat(110_000);
    assert_eq!(route(&p, &chat(&long), &s()), ("long documents".into(), "gemini-pro".into()));
    assert_eq!(
        route(&p, &chat(&long), &Setup { latency: vec![("claude-sonnet", 50.0), ("gemini-pro", 90.0)], ..s() }).1,
        "claude-sonnet"
    );
}

#[test]
fn the_client_api_is_a_fact() {
    // Chat completions (the only door of `route`'s bodies) reads as "chat".
    assert!(holds("request.api == \"chat\"", &chat("hi"), &s()));
    assert!(!holds("request.api == \"messages\"", &chat("hi"), &s()));
    assert!(holds("request.api in [\"chat\", \"responses\"]", &chat("hi"), &s()));
}
