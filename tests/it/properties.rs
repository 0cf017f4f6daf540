//! Property tests over generated policies and requests:
//! - formatting never changes what a policy means (parse, format, parse again: same AST),
//!   formatting twice changes nothing, and no comment is lost or reordered;
//! - the compiled program and the naive AST-walking evaluator always pick the same rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use proptest::prelude::*;
use yardmaster::policy::eval::naive::Naive;
use yardmaster::policy::eval::Scratch;
use yardmaster::policy::eval::{Budget, Context, RequestFacts, StaticHealth};
use yardmaster::policy::{check, compile, fmt, load, syntax, CheckOptions};

const WORDS: &[&str] =
    &["def ", "select", "fn main", "C++", "été", "hello", "key", "AKIA", "Straße", "traceback", "json"];
const MODELS: &[&str] =
    &["gpt-4o-mini", "gpt-4o", "claude-sonnet", "claude-haiku", "gemini-pro", "codestral", "llama-70b"];
const REGEXES: &[&str] = &["AKIA[0-9A-Z]{4}", "\\d{3}", "hel+o", "^sel", "a\\/b", "```\\w*\\n"];

fn q(s: &str) -> String {
    format!("{s:?}")
}

fn leaf() -> impl Strategy<Value = String> {
    let word = prop::sample::select(WORDS).prop_map(q);
    let words = prop::collection::vec(prop::sample::select(WORDS), 1..4)
        .prop_map(|ws| format!("[{}]", ws.iter().map(|w| q(w)).collect::<Vec<_>>().join(", ")));
    let text = prop::sample::select(&["prompt", "prompt.last", "prompt.system"][..]);
    let num = prop::sample::select(&["0", "3", "10", "50", "1k", "2.5k"][..]);
    prop_oneof![
        (text.clone(), word.clone()).prop_map(|(t, w)| format!("{t} contains {w}")),
        (text.clone(), words.clone()).prop_map(|(t, w)| format!("{t} contains any {w}")),
        (text.clone(), words).prop_map(|(t, w)| format!("{t} contains all {w}")),
        (text.clone(), word).prop_map(|(t, w)| format!("{t} starts_with {w}")),
        (text, prop::sample::select(REGEXES), any::<bool>())
            .prop_map(|(t, r, i)| format!("{t} matches /{r}/{}", if i { "i" } else { "" })),
        (prop::sample::select(&[">", "<", ">=", "<=", "==", "!="][..]), num.clone())
            .prop_map(|(o, n)| format!("prompt.tokens {o} {n}")),
        (prop::sample::select(&[">", "<"][..]), num).prop_map(|(o, n)| format!("prompt.chars {o} {n}")),
        prop::sample::select(&["\"free\"", "\"premium\""][..]).prop_map(|t| format!("user.tier == {t}")),
        Just("user.tier in [\"a\", \"premium\"]".to_string()),
        Just("request.stream".to_string()),
        Just("request.tools".to_string()),
        Just("header(\"x-team\") == \"a\"".to_string()),
        Just("header(\"x-team\") != \"a\"".to_string()),
        Just("budget.remaining < 10%".to_string()),
        (0u8..24).prop_map(|h| format!("time.hour >= {h}")),
        prop::sample::select(MODELS).prop_map(|m| format!("healthy({m})")),
    ]
}

fn cond() -> impl Strategy<Value = String> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("{a} or {b}")),
        ]
    })
}

fn model() -> impl Strategy<Value = String> {
    prop::sample::select(MODELS).prop_map(str::to_string)
}

fn target() -> impl Strategy<Value = String> {
    let step = prop_oneof![
        model(),
        model().prop_map(|m| format!("{m} with (max_tokens: 512, temperature: 0.2)")),
        Just("cheapest(healthy)".to_string()),
        (model(), model()).prop_map(|(a, b)| format!("fastest({a}, {b})")),
        (model(), model()).prop_map(|(a, b)| format!("split {{ 50%: {a}, 50%: {b} }}")),
    ];
    prop_oneof![prop::collection::vec(step, 1..4).prop_map(|s| s.join(" -> ")), Just("deny 451 \"no\"".to_string()),]
}

/// A policy as text, with random layout and a comment `# cN` after some lines.
fn policy() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((cond(), target(), prop::option::of(0u32..3)), 1..8),
        target(),
        prop::collection::vec(any::<bool>(), 64),
        any::<bool>(),
    )
        .prop_map(|(rules, default, comment_at, tight)| {
            let mut lines = vec!["let words = [\"hello\", \"json\"]".to_string()];
            for (i, (c, t, retries)) in rules.iter().enumerate() {
                lines.push(format!("rule \"r{i}\" {{"));
                lines.push(format!("  when {c} or prompt contains any words"));
                lines.push(format!("{}then {t}", if tight { "" } else { "      " }));
                if let Some(r) = retries {
                    lines.push(format!("  retries {r}"));
                }
                lines.push("}".into());
            }
            lines.push(format!("default {{ then {default} }}"));
            let mut n = 0;
            let mut out = String::new();
            for (i, l) in lines.iter().enumerate() {
                out.push_str(l);
                if comment_at.get(i).copied().unwrap_or(false) {
                    out.push_str(&format!("   # c{n}"));
                    n += 1;
                }
                out.push('\n');
                if i % 3 == 0 && tight {
                    out.push_str(&format!("# own line c{n}\n"));
                    n += 1;
                }
            }
            out
        })
}

fn comments(text: &str) -> Vec<String> {
    syntax::parse(0, text).unwrap().comments.into_iter().map(|c| c.node).collect()
}

fn request() -> impl Strategy<Value = (serde_json::Value, Option<&'static str>, Vec<usize>, bool)> {
    (
        prop::collection::vec(
            prop::sample::select(
                &[
                    "def main():",
                    "SELECT x",
                    "hello",
                    "été",
                    "key AKIA1234",
                    "json",
                    "a/b 123",
                    "```py\nx",
                    "plain words",
                ][..],
            ),
            0..6,
        ),
        prop::option::of(prop::sample::select(&["free", "premium", "a"][..])),
        prop::collection::vec(0usize..7, 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(parts, tier, down, stream, system)| {
            let mut messages = Vec::new();
            if system {
                messages.push(serde_json::json!({"role": "system", "content": "answer in json"}));
            }
            for (i, p) in parts.iter().enumerate() {
                messages.push(serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": p}));
            }
            (serde_json::json!({"model": "auto", "stream": stream, "messages": messages}), tier, down, stream)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn formatting_keeps_meaning_and_comments(text in policy()) {
        let before = syntax::parse(0, &text).map_err(|d| TestCaseError::fail(format!("{:?}\n{text}", d.first().map(|d| &d.message))))?;
        let once = fmt::format_source(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let after = syntax::parse(0, &once).unwrap();
        prop_assert_eq!(&before.items, &after.items);
        prop_assert_eq!(comments(&text), comments(&once));
        let twice = fmt::format_source(&once).unwrap();
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn compiled_and_naive_agree(text in policy(), reqs in prop::collection::vec(request(), 1..6)) {
        let catalog = crate::common::quickstart();
        let outcome = check(load::load_text(std::path::Path::new("p.route"), &text), Some(&catalog), CheckOptions::default());
        let checked = outcome.checked.ok_or_else(|| TestCaseError::fail(format!("does not check: {:?}\n{text}", outcome.diagnostics.iter().map(|d| d.message.clone()).collect::<Vec<_>>())))?;
        let naive = Naive::new(checked.clone());
        let program = compile(checked);
        let mut scratch = Scratch::default();
        for (body, tier, down, _) in reqs {
            let req = RequestFacts::from_chat(&body).unwrap();
            let health = StaticHealth { down: down.iter().map(|d| *d as u32).collect(), latency: vec![] };
            let ctx = Context { tier, key_name: Some("k"), budget: Budget::from_limit(Some(10.0), 9.5), health: &health, hour: 13, weekday: 2 };
            let fast = program.decide(&req, &ctx, &mut scratch).rule;
            let slow = naive.decide(&req, &ctx);
            prop_assert_eq!(fast, slow, "request {} on\n{}", body, text);
        }
    }
}
