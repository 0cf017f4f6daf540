//! What hover says about the language's words, read at build time from the tables of
//! `docs/language.md` (facts, operators, targets, rule options), so that the editor and the
//! reference never disagree.

use std::sync::OnceLock;

const LANGUAGE: &str = include_str!("../../docs/language.md");

/// One documented word: the section it is from, and its table row as markdown.
pub struct Entry {
    /// `fact`, `operator`, `target` or `rule option`.
    pub kind: &'static str,
    /// The row's cells after the first, as written.
    pub cells: Vec<String>,
    /// The row's first cell, as written.
    pub syntax: String,
}

/// A row's cells, split on `|` outside backticks.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut code = false;
    for c in row.trim().trim_matches('|').chars() {
        if c == '|' && !code {
            out.push(String::new());
            continue;
        }
        if c == '`' {
            code = !code;
        }
        if let Some(s) = out.last_mut() {
            s.push(c);
        }
    }
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

/// The words a first cell documents: the leading word of each backticked piece, and the
/// symbolic operators in it (`->` of `A -> B -> C`).
fn keys(cell: &str) -> Vec<String> {
    let symbols = cell
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(str::split_whitespace)
        .filter(|t| t.chars().all(|c| matches!(c, '=' | '!' | '<' | '>' | '-')) && *t != "-");
    let symbols: Vec<String> = symbols.map(str::to_string).collect();
    let words: Vec<String> = cell
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| {
            let word: String = code.chars().take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '.')).collect();
            // `metadata.NAME` documents `metadata`: a placeholder part ends the word.
            let word = word.split('.').take_while(|p| !p.chars().any(char::is_uppercase)).collect::<Vec<_>>().join(".");
            let word = if word.is_empty() { code.split_whitespace().next()?.to_string() } else { word };
            (word.chars().any(|c| c.is_lowercase()) || !word.chars().any(char::is_alphanumeric)).then_some(word)
        })
        .collect();
    let mut all = words;
    for s in symbols {
        if !all.contains(&s) {
            all.push(s);
        }
    }
    all
}

fn table() -> &'static Vec<(String, Entry)> {
    static TABLE: OnceLock<Vec<(String, Entry)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut out = Vec::new();
        let mut kind = None;
        for line in LANGUAGE.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                kind = match h.trim() {
                    "Facts" => Some("fact"),
                    "Operators" => Some("operator"),
                    "Targets" => Some("target"),
                    "Rule options" => Some("rule option"),
                    _ => None,
                };
                continue;
            }
            let Some(kind) = kind else { continue };
            if !line.starts_with("| `") {
                continue;
            }
            let row = cells(line);
            let Some((first, rest)) = row.split_first() else { continue };
            for key in keys(first) {
                out.push((key, Entry { kind, cells: rest.to_vec(), syntax: first.clone() }));
            }
        }
        out
    })
}

/// What the reference says about `word`: every row that documents it (a fact is also found by
/// its first part: `metadata.region` by `metadata`).
pub fn lookup(word: &str) -> Vec<&'static Entry> {
    let t = table();
    let find = |w: &str| t.iter().filter(|(k, _)| k == w).map(|(_, e)| e).collect::<Vec<_>>();
    let found = find(word);
    if found.is_empty() {
        word.split('.').next().map(find).unwrap_or_default()
    } else {
        found
    }
}

/// The hover text of a word's rows.
pub fn markdown(word: &str, rows: &[&Entry]) -> String {
    let kind = rows.first().map_or("", |e| e.kind);
    let body: Vec<String> = rows.iter().map(|e| format!("{}: {}", e.syntax, e.cells.join(" · "))).collect();
    format!("**{word}** ({kind})\n\n{}", body.join("\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_tables_are_read() {
        let tokens = lookup("prompt.tokens");
        assert_eq!(tokens[0].kind, "fact");
        assert!(tokens[0].cells[0].starts_with("number") && tokens[0].cells[1].contains("prompt.tokens > 100k"));
        assert_eq!(lookup("metadata.region")[0].kind, "fact");
        assert_eq!(lookup("header")[0].kind, "fact");
        assert_eq!(lookup("starts_with")[0].kind, "operator");
        assert_eq!(lookup("==")[0].kind, "operator");
        assert_eq!(lookup("==").len(), 1);
        assert_eq!(lookup("->")[0].kind, "target");
        assert!(lookup("tagged")[0].cells[0].contains("with the tag"));
        assert_eq!(lookup("cheapest")[0].kind, "target");
        assert_eq!(lookup("cache").len(), 3, "the three rows of `cache`");
        assert!(!lookup("retries").is_empty() && lookup("nonsense").is_empty());
        assert_eq!(cells("| `a | b` | c |"), ["`a | b`", "c"], "a `|` inside backticks stays in its cell");
    }
}
