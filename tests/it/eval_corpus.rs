//! The evaluation corpus: every `tests/eval/*.route` is a policy whose cases sit in its header
//! comments (`# request:`, `# with:`, `# expect:`; see `tests/eval/README.md`). Each case is
//! routed against the quickstart catalog and its outcome, written as `rule "NAME" -> MODEL`,
//! `-> deny STATUS` or `-> none`, must be the one the file expects.

use serde_json::{json, Value};
use yardmaster::policy::eval::Scratch;
use yardmaster::policy::testing::{case_inputs, Case, KeyInfo};

fn keys() -> Vec<KeyInfo> {
    vec![
        KeyInfo { name: "team-a".into(), tier: Some("premium".into()), budget_usd: Some(100.0) },
        KeyInfo { name: "batch".into(), tier: Some("free".into()), budget_usd: None },
    ]
}

/// The cases of a file: (line, case, expected outcome).
fn cases(text: &str) -> Vec<(usize, Case, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, Value)> = None;
    for (i, line) in text.lines().enumerate() {
        let Some(comment) = line.strip_prefix("# ") else { continue };
        if let Some(body) = comment.strip_prefix("request: ") {
            let request: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
            current = Some((i + 1, json!({"name": format!("line {}", i + 1), "request": request})));
        } else if let Some(with) = comment.strip_prefix("with: ") {
            let (_, case) = current.as_mut().unwrap_or_else(|| panic!("line {}: `with` before `request`", i + 1));
            let with: Value = serde_json::from_str(with).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
            for (k, v) in with.as_object().unwrap() {
                case[k] = v.clone();
            }
        } else if let Some(expect) = comment.strip_prefix("expect: ") {
            let (at, mut case) = current.take().unwrap_or_else(|| panic!("line {}: `expect` before `request`", i + 1));
            case["expect"] = json!({});
            let case: Case = serde_json::from_value(case).unwrap_or_else(|e| panic!("line {at}: {e}"));
            out.push((at, case, expect.trim().to_string()));
        }
    }
    out
}

#[test]
fn every_case_of_the_corpus_routes_as_it_expects() {
    let mut seen = 0;
    insta::glob!("../eval", "*.route", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let program = crate::common::program_named(&name, &text);
        let cases = cases(&text);
        assert!(!cases.is_empty(), "{name} has no cases");
        let mut scratch = Scratch::default();
        for (line, case, expected) in cases {
            let inputs = case_inputs(&program, &case, &keys()).unwrap_or_else(|e| panic!("{name}:{line}: {e}"));
            let routing = program.route(&inputs.req, &inputs.context(), &mut scratch);
            let target = match (routing.deny(), routing.steps.iter().find(|s| s.taken)) {
                (Some((status, _)), _) => format!("deny {status}"),
                (None, Some(step)) => step.name.clone(),
                (None, None) => "none".to_string(),
            };
            let got = format!("rule {:?} -> {target}", routing.rule);
            assert_eq!(got, expected, "{name}:{line}");
            seen += 1;
        }
    });
    assert!(seen >= 40, "only {seen} cases in tests/eval");
}
