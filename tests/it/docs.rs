//! Every example in `docs/language.md` (and the README's policy) lints without errors against
//! the quickstart catalog, so the reference cannot drift from the language.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::path::Path;

use yardmaster::policy::{check, load, CheckOptions};

fn blocks(md: &str, tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim() == format!("```{tag}") => cur = Some(String::new()),
            Some(b) if line.trim() == "```" => {
                out.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

fn errors(text: &str) -> Vec<String> {
    let cat = crate::common::quickstart();
    let outcome = check(load::load_text(Path::new("doc.route"), text), Some(&cat), CheckOptions::default());
    outcome.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.one_line(&outcome.sources)).collect()
}

#[test]
fn language_reference_examples_lint() {
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/language.md")).unwrap();
    let (routes, conds, targets) = (blocks(&md, "route"), blocks(&md, "cond"), blocks(&md, "target"));
    assert!(routes.len() >= 4 && conds.len() >= 8 && targets.len() >= 6, "examples went missing");
    for r in routes {
        assert_eq!(errors(&r), Vec::<String>::new(), "{r}");
    }
    for c in conds {
        let text =
            format!("rule \"example\" {{\n  when {}\n  then gpt-4o\n}}\ndefault {{ then gpt-4o-mini }}\n", c.trim());
        assert_eq!(errors(&text), Vec::<String>::new(), "{c}");
    }
    for t in targets {
        let text = format!("default {{ then {} }}\n", t.trim());
        assert_eq!(errors(&text), Vec::<String>::new(), "{t}");
    }
}

#[test]
fn every_fact_is_documented() {
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/language.md")).unwrap();
    for fact in yardmaster::policy::ir::names::FACTS
        .iter()
        .chain(yardmaster::policy::ir::names::FUNCTIONS)
        .chain(yardmaster::policy::ir::names::OPTIONS)
    {
        assert!(md.contains(&format!("`{fact}")), "docs/language.md does not document `{fact}`");
    }
    for (field, _) in yardmaster::policy::ir::names::FIELDS {
        assert!(md.contains(&format!("`{field}`")), "docs/language.md does not list the field `{field}`");
    }
}

#[test]
fn readme_policy_lints() {
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let routes = blocks(&md, "route");
    assert!(!routes.is_empty(), "the README shows a policy");
    for r in routes {
        assert_eq!(errors(&r), Vec::<String>::new(), "{r}");
    }
}

#[test]
fn the_readmes_lint_output_is_what_lint_prints() {
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shown = md.split("examples/mistakes/typo.route --config examples/quickstart.yaml` prints:").nth(1).unwrap();
    let shown = shown.split("```text\n").nth(1).unwrap().split("```").next().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_yardmaster"))
        .args(["lint", "examples/mistakes/typo.route", "--config", "examples/quickstart.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), shown.trim_end());
    // Every file the README's commands name is in the repo.
    for word in md.split(|c: char| c.is_whitespace() || c == '`' || c == '(' || c == ')' || c == '[' || c == ']') {
        let path = word.split(':').next().unwrap_or_default().trim_end_matches([',', '.', ';']);
        let local = (path.starts_with("examples/") || path.starts_with("rules/") || path.starts_with("docs/"))
            && path.rsplit('/').next().is_some_and(|f| f.contains('.'));
        if local {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(path).exists(),
                "the README names {path}, which is missing"
            );
        }
    }
}
