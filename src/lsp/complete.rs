//! Completion: what may come at the cursor, from the text of its line and the catalog.

use lsp_types::{CompletionItem, CompletionItemKind};

use crate::catalog::Catalog;

/// Facts whose values are numbers, and whose values are booleans (the rest are text).
const NUMBER_FACTS: &[&str] = &[
    "prompt.tokens",
    "prompt.chars",
    "prompt.messages",
    "request.max_tokens",
    "budget.remaining",
    "budget.spent",
    "time.hour",
];
const BOOL_FACTS: &[&str] = &["request.stream", "request.tools", "request.images"];
const TEXT_OPS: &[&str] = &["==", "!=", "in", "contains", "contains any", "starts_with", "ends_with", "matches"];
const NUMBER_OPS: &[&str] = &["==", "!=", "<", "<=", ">", ">=", "in"];
const BOOL_OPS: &[&str] = &["==", "!="];
const PICKS: &[&str] = &["healthy", "tagged(\"", "cheapest(", "fastest(", "requested", "deny", "split {"];
const OPTIONS: &[&str] = &["retries", "timeout", "cache", "tag", "only", "with ("];
const WITH_FIELDS: &[&str] =
    &["temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "n", "reasoning_effort"];

fn item(label: &str, kind: CompletionItemKind, detail: &str) -> CompletionItem {
    CompletionItem {
        label: label.to_string(),
        kind: Some(kind),
        detail: Some(detail.to_string()),
        ..CompletionItem::default()
    }
}

/// The completions at the end of `before` (the line's text up to the cursor); `lets` are the
/// policy's `let` names.
pub fn at(before: &str, catalog: Option<&Catalog>, lets: &[String]) -> Vec<CompletionItem> {
    let trimmed = before.trim_end();
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let last =
        if before.ends_with(char::is_whitespace) { words.last().copied() } else { words.iter().rev().nth(1).copied() };
    let facts = || crate::policy::ir::names::FACTS.iter().map(|f| item(f, CompletionItemKind::FIELD, "fact"));
    let let_items = || lets.iter().map(|l| item(l, CompletionItemKind::CONSTANT, "let"));
    if let Some(open) = before.rfind("tagged(\"") {
        if !before[open + 8..].contains('"') {
            let mut tags: Vec<&str> = catalog
                .map(|c| c.models().iter().flat_map(|m| m.tags.iter().map(String::as_str)).collect())
                .unwrap_or_default();
            tags.sort_unstable();
            tags.dedup();
            return tags.into_iter().map(|t| item(t, CompletionItemKind::ENUM_MEMBER, "tag")).collect();
        }
    }
    if before.contains("with (") && !before.contains(')') {
        return WITH_FIELDS.iter().map(|f| item(f, CompletionItemKind::PROPERTY, "with field")).collect();
    }
    match last {
        Some("when" | "and" | "or" | "not") => facts().chain(let_items()).collect(),
        Some("then" | "->") => {
            let models = catalog
                .into_iter()
                .flat_map(|c| c.models().iter().map(|m| item(&m.name, CompletionItemKind::VALUE, "model")));
            models
                .chain(PICKS.iter().map(|p| item(p, CompletionItemKind::KEYWORD, "target")))
                .chain(let_items())
                .collect()
        }
        Some(f) if crate::policy::ir::names::FACTS.contains(&f) => {
            let ops = if NUMBER_FACTS.contains(&f) {
                NUMBER_OPS
            } else if BOOL_FACTS.contains(&f) {
                BOOL_OPS
            } else {
                TEXT_OPS
            };
            ops.iter().map(|o| item(o, CompletionItemKind::OPERATOR, "operator")).collect()
        }
        _ if words.is_empty() || (words.len() == 1 && !before.ends_with(char::is_whitespace)) => {
            // The start of a line inside a rule: its options (and the clauses).
            OPTIONS
                .iter()
                .chain(["when", "then"].iter())
                .map(|o| item(o, CompletionItemKind::KEYWORD, "rule option"))
                .collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(before: &str) -> Vec<String> {
        at(before, None, &["code_words".into()]).into_iter().map(|i| i.label).collect()
    }

    #[test]
    fn completions_fit_the_place() {
        assert!(labels("  when ").contains(&"prompt.tokens".to_string()));
        assert!(labels("  when pr").contains(&"code_words".to_string()));
        assert_eq!(labels("  when prompt.tokens "), NUMBER_OPS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(labels("  when request.model ").contains(&"starts_with".to_string()));
        assert!(labels("  then ").contains(&"healthy".to_string()));
        assert!(labels("  ").contains(&"retries".to_string()));
        assert!(labels("  with (").contains(&"temperature".to_string()));
    }
}
