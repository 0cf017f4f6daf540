//! Malformed and hostile input gets a diagnostic, never a panic or a stack overflow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

use yardmaster::policy::diagnostic::codes::Code;
use yardmaster::policy::load::{self, Memory};
use yardmaster::policy::{check, CheckOptions};

fn codes(text: &str) -> Vec<Code> {
    let cat = crate::common::quickstart();
    let outcome = check(load::load_text(Path::new("big.route"), text), Some(&cat), CheckOptions::default());
    outcome.diagnostics.iter().map(|d| d.code).collect()
}

#[test]
fn a_one_megabyte_policy_loads() {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 1 << 20 {
        text.push_str(&format!("rule \"r{i}\" {{\n  when user.tier == \"t{i}\" and prompt contains any [\"kw{i}\", \"other{i}\"]\n  then gpt-4o -> claude-haiku\n}}\n"));
        i += 1;
    }
    text.push_str("default { then gpt-4o-mini }\n");
    let found = codes(&text);
    assert!(!found.iter().any(|c| c.severity() == yardmaster::policy::Severity::Error), "{found:?}");
}

#[test]
fn a_one_megabyte_garbage_file_gets_a_syntax_error() {
    let text: String = (0..1 << 20).map(|i| (b'!' + (i % 90) as u8) as char).collect();
    assert_eq!(codes(&text), vec![Code::SyntaxError]);
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!(
        "rule \"x\" {{ when {}request.stream{} then gpt-4o }}\ndefault {{ then gpt-4o }}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    assert_eq!(codes(&deep), vec![Code::TooComplex]);
    let lists = format!("let x = {}1{}\ndefault {{ then gpt-4o }}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(codes(&lists), vec![Code::TooComplex]);
    let nots = format!(
        "rule \"x\" {{ when {}request.stream then gpt-4o }}\ndefault {{ then gpt-4o }}",
        "not ".repeat(100_000)
    );
    assert_eq!(codes(&nots), vec![Code::TooComplex]);
}

#[test]
fn long_flat_chains_are_fine() {
    let cond = vec!["request.stream"; 50_000].join(" and ");
    let text = format!("rule \"x\" {{ when {cond} then gpt-4o }}\ndefault {{ then gpt-4o-mini }}");
    assert!(!codes(&text).iter().any(|c| c.severity() == yardmaster::policy::Severity::Error));
    let chain = vec!["gpt-4o"; 20_000].join(" -> ");
    let text = format!("default {{ then {chain} }}");
    assert!(codes(&text).contains(&Code::RepeatedModel));
}

#[test]
fn invalid_utf8_names_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.route");
    std::fs::write(&path, b"default { then gpt-4o }\n# caf\xe9\n").unwrap();
    let outcome = check(load::load(&path, &load::Fs), None, CheckOptions::default());
    let d = outcome.diagnostics.first().expect("a diagnostic");
    assert_eq!(d.code, Code::UnreadableFile);
    let j = d.to_json(&outcome.sources);
    assert_eq!((j.line, j.column), (2, 6));
}

#[test]
fn include_cycles_are_reported() {
    let files = Memory(vec![
        (PathBuf::from("p/a.route"), "include \"b.route\"\ndefault { then gpt-4o }".into()),
        (PathBuf::from("p/b.route"), "include \"sub/../a.route\"".into()),
    ]);
    let outcome = check(load::load(Path::new("p/a.route"), &files), None, CheckOptions::default());
    let cycle = outcome.diagnostics.iter().find(|d| d.code == Code::IncludeCycle).expect("a cycle diagnostic");
    assert!(cycle.help.as_deref().unwrap().contains("p/a.route -> p/b.route -> p/a.route"), "{:?}", cycle.help);
}

#[test]
fn includes_splice_in_place() {
    let files = Memory(vec![
        (
            PathBuf::from("p/a.route"),
            "rule \"first\" { when user.tier == \"a\" then gpt-4o }\ninclude \"b.route\"\ndefault { then gpt-4o }"
                .into(),
        ),
        (PathBuf::from("p/b.route"), "rule \"second\" { when user.tier == \"b\" then gpt-4o }".into()),
    ]);
    let outcome = check(load::load(Path::new("p/a.route"), &files), None, CheckOptions::default());
    let names: Vec<String> = outcome.checked.unwrap().rules.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["first", "second", "default"]);
}

#[test]
fn versions_hash_every_file() {
    let a = |b: &str| {
        let files = Memory(vec![
            (PathBuf::from("a.route"), "include \"b.route\"\ndefault { then gpt-4o }".into()),
            (PathBuf::from("b.route"), b.into()),
        ]);
        load::load(Path::new("a.route"), &files).version
    };
    assert_eq!(a("# one").len(), 12);
    assert_ne!(a("# one"), a("# two"));
    assert_eq!(a("# one"), a("# one"));
}
