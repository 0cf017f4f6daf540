//! Golden tests for the checker: every `tests/lint/CODE_name[_variant].route` is linted against
//! `tests/lint/catalog.yaml`, and its rendered report (miette, unicode without colour, width 80)
//! plus its JSON form are snapshotted. There is one golden file per diagnostic *message*: every
//! place in `src/policy` that builds a diagnostic has a file of its own (checked by counting those
//! places), and each file must produce its code. `tests/lint/ok/`, `rules/` and `examples/` must
//! lint clean.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

use yardmaster::catalog::Catalog;
use yardmaster::policy::diagnostic::codes::Code;
use yardmaster::policy::{check, load, CheckOptions};

fn catalog(path: &str) -> Catalog {
    yardmaster::config::load(Path::new(path)).expect("the test catalog loads").catalog()
}

fn lint(path: &Path, catalog: &Catalog, costs: bool) -> (String, Vec<String>) {
    let rel = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path).to_path_buf();
    let r = report(load::load(&rel, &load::Fs), catalog, costs);
    (r.text, r.codes)
}

/// What linting a policy gave.
struct Report {
    /// Every diagnostic, rendered and as JSON.
    text: String,
    /// Their codes.
    codes: Vec<String>,
    /// (code, message) of each.
    messages: Vec<(String, String)>,
}

/// The report of a loaded policy.
fn report(source: load::Source, catalog: &Catalog, costs: bool) -> Report {
    let name = source.sources.files().first().map(|f| f.path.display().to_string()).unwrap_or_default();
    let name = name.rsplit('/').next().unwrap_or_default().to_string();
    let outcome = check(source, Some(catalog), CheckOptions { costs });
    let mut report = String::new();
    let mut codes = Vec::new();
    let mut messages = Vec::new();
    for d in &outcome.diagnostics {
        // The unused-model lint fires for most small policies; only its own golden file shows it.
        if d.code == Code::UnusedModel && !name.starts_with("W0102") {
            continue;
        }
        codes.push(d.code.as_str().to_string());
        messages.push((d.code.as_str().to_string(), d.message.clone()));
        report.push_str(&d.render(&outcome.sources, 80, false));
        report.push('\n');
        report.push_str(&serde_json::to_string(&d.to_json(&outcome.sources)).unwrap());
        report.push_str("\n\n");
    }
    Report { text: report, codes, messages }
}

/// Golden cases too large to keep as files: a policy over the 8 MiB limit.
fn generated() -> Vec<(&'static str, String)> {
    let padding = "# a comment line to pass the size limit\n";
    let big = padding.repeat(yardmaster::policy::syntax::parser::MAX_FILE_BYTES / padding.len() + 1);
    vec![("E0103_too_complex_size.route", big)]
}

#[test]
fn generated_golden_diagnostics() {
    let cat = catalog(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lint/catalog.yaml"));
    for (name, text) in generated() {
        let r = report(load::load_text(Path::new(name), &text), &cat, false);
        let code = name.split('_').next().unwrap();
        assert!(r.codes.iter().any(|c| c == code), "{name} should report {code}, got {:?}", r.codes);
        insta::assert_snapshot!(name, r.text);
    }
}

/// The distinct messages that `src/policy` builds diagnostics with, per code: the message
/// argument of each `Diagnostic::new(Code::X, span, message)` as written (two places that write
/// the same message are one message), less those no policy text can reach (the parser's
/// internal errors).
fn message_sites() -> std::collections::BTreeMap<String, usize> {
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src/policy")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            for (i, _) in code.match_indices("Diagnostic::new(") {
                let args = call_args(&code[i + "Diagnostic::new(".len()..]);
                let [variant, _span, message, ..] = args.as_slice() else { continue };
                let Some(variant) = variant.strip_prefix("Code::") else { continue };
                if message.contains("internal error") || message == "\"empty parse\"" {
                    continue;
                }
                let c = Code::ALL.iter().find(|c| format!("{c:?}") == variant).unwrap_or_else(|| panic!("{variant}"));
                out.entry(c.as_str().to_string()).or_default().insert(message.clone());
            }
        }
    }
    out.into_iter().map(|(c, m)| (c, m.len())).collect()
}

/// The top-level arguments of a call, from just after its `(` (whitespace folded).
fn call_args(text: &str) -> Vec<String> {
    let (mut args, mut cur, mut depth, mut in_str, mut prev) = (Vec::new(), String::new(), 0, false, ' ');
    for c in text.chars() {
        if in_str {
            in_str = !(c == '"' && prev != '\\');
        } else if c == '"' {
            in_str = true;
        } else if matches!(c, '(' | '[' | '{') {
            depth += 1;
        } else if matches!(c, ')' | ']' | '}') {
            if depth == 0 {
                break;
            }
            depth -= 1;
        } else if c == ',' && depth == 0 {
            args.push(cur.split_whitespace().collect::<Vec<_>>().join(" "));
            cur.clear();
            prev = c;
            continue;
        }
        cur.push(c);
        prev = c;
    }
    args.push(cur.split_whitespace().collect::<Vec<_>>().join(" "));
    args
}

#[test]
fn every_diagnostic_message_has_a_golden_file() {
    let cat = catalog(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lint/catalog.yaml"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // code -> the distinct messages its golden cases give.
    let mut seen: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    std::env::set_current_dir(root).unwrap();
    let mut cases: Vec<(String, load::Source)> = std::fs::read_dir(root.join("tests/lint"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "route"))
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
            (p.file_name().unwrap().to_string_lossy().into_owned(), load::load(&rel, &load::Fs))
        })
        .collect();
    cases.extend(generated().into_iter().map(|(n, t)| (n.to_string(), load::load_text(Path::new(n), &t))));
    for (name, source) in cases {
        let code = name.split('_').next().unwrap().to_string();
        let r = report(source, &cat, code.starts_with('A'));
        if let Some((_, m)) = r.messages.iter().find(|(c, _)| *c == code) {
            seen.entry(code).or_default().insert(m.clone());
        }
    }
    let mut missing = Vec::new();
    for (code, sites) in message_sites() {
        let have = seen.get(&code).map_or(0, std::collections::BTreeSet::len);
        if have < sites {
            missing.push(format!("{code}: {sites} messages in src/policy, {have} distinct in its golden files"));
        }
    }
    assert!(missing.is_empty(), "diagnostic messages without a golden file:\n{}", missing.join("\n"));
}

#[test]
fn golden_diagnostics() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    let cat = catalog("tests/lint/catalog.yaml");
    insta::glob!("../lint", "*.route", |path| {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let code = name.split('_').next().unwrap().to_string();
        let (report, codes) = lint(path, &cat, code.starts_with('A'));
        assert!(codes.contains(&code), "{name} should report {code}, got {codes:?}\n{report}");
        insta::assert_snapshot!(report);
    });
}

#[test]
fn every_code_has_a_golden_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lint");
    let mut missing = Vec::new();
    for c in Code::ALL {
        let file = dir.join(format!("{}_{}.route", c.as_str(), c.slug()));
        if !file.exists() {
            missing.push(file.display().to_string());
        }
    }
    assert!(missing.is_empty(), "diagnostic codes without a golden file: {missing:?}");
}

#[test]
fn every_code_is_documented_with_a_bad_and_a_fixed_example() {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/diagnostics.md")).unwrap();
    for c in Code::ALL {
        let heading = format!("## {}", c.as_str());
        let start =
            docs.find(&heading).unwrap_or_else(|| panic!("docs/diagnostics.md has no section for {}", c.as_str()));
        let section = &docs[start..];
        let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
        let section = &section[..end];
        if c.severity() == yardmaster::policy::Severity::Advice {
            continue;
        }
        assert!(
            section.contains("Bad:") && section.contains("Fixed:"),
            "{} needs a bad and a fixed example",
            c.as_str()
        );
    }
}

fn routes(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    load::entries_in_dir(&dir).unwrap()
}

#[test]
fn valid_policies_lint_clean() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    let test_catalog = catalog("tests/lint/catalog.yaml");
    for path in routes("tests/lint/ok") {
        let (report, codes) = lint(&path, &test_catalog, false);
        assert!(codes.is_empty(), "{} should lint clean:\n{report}", path.display());
    }
    let quickstart = catalog("examples/quickstart.yaml");
    let mut all = routes("rules");
    all.extend(routes("examples"));
    // The example of SPEC §2, exactly as written there.
    all.extend(routes("tests/spec"));
    assert!(!all.is_empty());
    // examples/mistakes/ holds the README's deliberate mistakes (checked by the docs tests).
    all.retain(|p| !p.components().any(|c| c.as_os_str() == "mistakes"));
    for path in all {
        // A policy with a config of its own beside it (examples/failover.*) is checked against
        // that config's catalog; the others against the quickstart's.
        let own = path.with_extension("yaml");
        let cat = if own.exists() { catalog(own.to_str().unwrap()) } else { quickstart.clone() };
        let source = load::load(&path, &load::Fs);
        let outcome = check(source, Some(&cat), CheckOptions::default());
        let shown: Vec<String> = outcome.diagnostics.iter().map(|d| d.one_line(&outcome.sources)).collect();
        assert!(shown.is_empty(), "{} should lint clean against its catalog: {shown:#?}", path.display());
    }
}

#[test]
fn the_shipped_policy_is_the_spec_example_formatted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("tests/spec/main.route")).unwrap();
    let shipped = std::fs::read_to_string(root.join("rules/main.route")).unwrap();
    // The shipped policy is the spec's example, formatted, with five rules more: the
    // quickstart's cached FAQ and its semantically cached support questions (SPEC §10) after the
    // credentials rule, the two for the Claude names Claude Code sends (SPEC §15) before the
    // explicit model's, and moderations (SPEC §12) after the embeddings rule.
    let a = yardmaster::policy::syntax::parse(0, &spec).unwrap();
    let b = yardmaster::policy::syntax::parse(0, &shipped).unwrap();
    let added = |i: &yardmaster::policy::syntax::ast::Item| matches!(i, yardmaster::policy::syntax::ast::Item::Rule(r) if ["faq", "support", "moderations", "claude haiku names", "claude names"].contains(&r.node.name.node.as_str()));
    assert_eq!(b.items.iter().filter(|i| added(i)).count(), 5);
    let without: Vec<_> = b.items.iter().filter(|i| !added(i)).cloned().collect();
    assert_eq!(a.items.len(), without.len());
    assert_eq!(yardmaster::policy::fmt::format_source(&shipped).unwrap(), shipped, "rules/main.route is formatted");
    let spec_text = yardmaster::policy::fmt::format_source(&spec).unwrap();
    let faq_text = "rule \"faq\" {\n  when prompt.last starts_with \"FAQ:\"\n  then gpt-4o-mini\n  cache 10m  # the same question within 10 minutes is answered from the cache\n}\n\n";
    let support_text = "rule \"support\" {\n  when prompt.last starts_with \"Support:\"\n  then claude-haiku -> gpt-4o-mini\n  cache 24h similar 90% using embed-small  # a close enough question is answered from the cache\n}\n\n";
    let moderations_text =
        "rule \"moderations\" {\n  when request.endpoint == \"moderations\"\n  then moderation\n}\n\n";
    let claude_start = shipped.find("rule \"claude haiku names\"").unwrap();
    let claude_end = shipped.find("rule \"explicit model\"").unwrap();
    let claude_text = &shipped[claude_start..claude_end];
    assert!(claude_text.matches("rule ").count() == 2, "{claude_text}");
    assert_eq!(
        shipped.replacen(faq_text, "", 1).replacen(support_text, "", 1).replacen(moderations_text, "", 1).replacen(
            claude_text,
            "",
            1
        ),
        spec_text
    );
}

/// E0406 and E0408 are the checker's errors, reported together with every other error of the
/// policy (they used to be lints, which run only once a policy has no error).
#[test]
fn target_errors_are_reported_with_the_other_errors() {
    let cat = catalog(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lint/catalog.yaml"));
    let text = "rule \"eu\" {\n  when header(\"x-region\") == \"eu\"\n  then claude-sonnet -> gpt-4o\n  only tagged(\"eu\")\n}\n\
                rule \"embed\" {\n  when request.endpoint == \"embeddings\"\n  then gpt-4o-mini\n}\n\
                rule \"typo\" {\n  when prompt contains \"x\"\n  then gpt-4oo\n}\n\
                default { then gpt-4o-mini }\n";
    let outcome = check(load::load_text(Path::new("mixed.route"), text), Some(&cat), CheckOptions::default());
    let codes: Vec<&str> = outcome.diagnostics.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["E0406", "E0408", "E0201"]);
}

#[test]
fn a_default_whose_target_has_an_error_is_not_reported_missing() {
    let cat = catalog(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lint/catalog.yaml"));
    let policy = "default { then gpt-4o-mini -> nosuch }\n";
    let r = report(load::load_text(Path::new("p.route"), policy), &cat, false);
    assert_eq!(r.codes, ["E0201"], "{}", r.text);
}

#[test]
fn every_fixed_example_in_the_diagnostics_docs_lints_clean() {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/diagnostics.md")).unwrap();
    let quickstart = catalog(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml"));
    let mut checked = 0;
    let mut dirty = Vec::new();
    for section in docs.split("\n## ").skip(1) {
        let code = section.lines().next().unwrap_or_default().trim().to_string();
        let Some(fixed) = section.split("\nFixed:").nth(1) else { continue };
        let Some(block) = fixed.split("```").nth(1) else { continue };
        let text = block.trim_start_matches(|c: char| c.is_alphanumeric()).trim_start_matches('\n');
        // An include names files of its own; those examples are shown, not linted.
        if text.contains("include ") {
            continue;
        }
        let r = report(load::load_text(Path::new("fixed.route"), text), &quickstart, false);
        checked += 1;
        if !r.codes.is_empty() {
            dirty.push(format!("{code}: {:?}\n{}", r.codes, r.text));
        }
    }
    assert!(checked >= 30, "only {checked} fixed examples found");
    assert!(
        dirty.is_empty(),
        "fixed examples that do not lint clean against the quickstart catalog:\n{}",
        dirty.join("\n")
    );
}

/// The corpus of realistic mistakes (`tests/lint/mistakes/`): each file says what lint should
/// report (`# expect: CODE -- what the author got wrong`), or `none` for a mistake no static check
/// can see. Every expected code must be reported, nothing may be reported for the others, and the
/// share caught is printed (`cargo test mistakes -- --nocapture`).
#[test]
fn the_corpus_of_realistic_mistakes_is_caught() {
    let cat = catalog(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lint/catalog.yaml"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lint/mistakes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let (mut caught, mut beyond, mut wrong) = (0, Vec::new(), Vec::new());
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let header = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("an `# expect:` line");
        let (code, why) = header.split_once(" -- ").unwrap_or((header, ""));
        let r = report(load::load_text(path, &text), &cat, false);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match code {
            "none" if r.codes.is_empty() => beyond.push(format!("{name}: {why}")),
            "none" => wrong.push(format!("{name}: expected nothing, got {:?}", r.codes)),
            _ if r.codes.iter().any(|c| c == code) => caught += 1,
            _ => wrong.push(format!("{name}: expected {code}, got {:?}\n{}", r.codes, r.text)),
        }
    }
    assert!(files.len() >= 30, "the corpus has {} mistakes", files.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    println!(
        "lint catches {caught} of {} realistic mistakes ({:.0}%); beyond a static check:\n  {}",
        files.len(),
        100.0 * f64::from(caught) / files.len() as f64,
        beyond.join("\n  ")
    );
}

/// `request.api` has three values; a comparison with another never holds (W0105), as for
/// `request.endpoint`.
#[test]
fn request_api_is_checked_against_its_values() {
    let cat = catalog(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml"));
    let lint = |cond: &str| {
        let text = format!("rule \"door\" {{\n  when {cond}\n  then gpt-4o\n}}\ndefault {{ then gpt-4o-mini }}\n");
        report(load::load_text(Path::new("api.route"), &text), &cat, false).codes
    };
    for ok in ["request.api == \"messages\"", "request.api in [\"chat\", \"responses\"]", "request.api != \"chat\""] {
        assert_eq!(lint(ok), Vec::<String>::new(), "{ok}");
    }
    assert_eq!(lint("request.api == \"anthropic\""), ["W0105"]);
}
