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
