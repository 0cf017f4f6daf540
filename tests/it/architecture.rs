//! The architecture's rules, kept by a test: every module path that a file of `src/` names
//! (`use crate::…`, `super::…`, and `crate::…` inside code) must be allowed by the table in the
//! README's "Architecture" section, and no two files may import each other, directly or round a
//! cycle. A parent module declaring and re-exporting its own children does not count as an
//! import; a child reaching back to its parent does. Test modules at the bottom of a file
//! (`#[cfg(test)] mod tests`) are left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The README's table: unit -> the units it may import.
fn rules() -> BTreeMap<String, Vec<String>> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("## Architecture").expect("the README has an Architecture section")..];
    let table = &section[section.find("| module | may import |").expect("the dependency table")..];
    let mut out = BTreeMap::new();
    for line in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let unit = cells[1].trim_matches('`').to_string();
        let allowed = cells[2]
            .split(',')
            .map(|c| c.trim().trim_matches('`').to_string())
            .filter(|c| !c.is_empty() && c != "nothing")
            .collect();
        out.insert(unit, allowed);
    }
    out
}

/// Every `.rs` file under `src/`, with its module path (`policy::eval::decide`; `mod.rs` is its
/// directory's module; `lib.rs` is the crate root, ``).
fn files() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(&src).unwrap().with_extension("");
                let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    parts.pop();
                }
                // The binary and the crate root only declare and start the modules.
                if rel != Path::new("main") && rel != Path::new("lib") {
                    out.push((p, parts.join("::")));
                }
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its comments, string literals and bottom test module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => strip(&text[..at]),
        None => strip(&text),
    }
}

/// Code without comments and string literals.
fn strip(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut in_str = false;
        let mut prev = ' ';
        for c in line.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The module paths a file's code names, absolute (`policy::ir`, `accounting::usage`, …): each
/// path's lowercase segments after `crate::` or `super::`, with `{…}` groups of `use` expanded.
fn imports(code: &str, module: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 7)].iter().collect();
        let boundary = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if boundary && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let (path, end) = read_path(&chars, i);
            for p in expand(&path) {
                if let Some(abs) = absolute(&p, module) {
                    out.insert(abs);
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// The path starting at `i` (segments, `::` and brace groups), and where it ends.
fn read_path(chars: &[char], mut i: usize) -> (String, usize) {
    let mut s = String::new();
    let mut depth = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => break,
            _ => {}
        }
        s.push(c);
        i += 1;
    }
    (s, i)
}

/// `a::{b, c::{d}}` -> `a::b`, `a::c::d`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else { return vec![path.to_string()] };
    let prefix = &path[..open];
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).flat_map(|p| expand(&format!("{prefix}{p}"))).collect()
}

/// A path's module part, made absolute: only its leading lowercase segments (`self` is the
/// module itself); `None` for the crate root alone.
fn absolute(path: &str, module: &str) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = if segs.first() == Some(&"crate") {
        segs.remove(0);
        Vec::new()
    } else {
        // `super` from `a/b.rs` and from `a/b/mod.rs` (both the module a::b) is `a`.
        let mut b: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        while segs.first() == Some(&"super") {
            segs.remove(0);
            b.pop();
        }
        b
    };
    for s in segs {
        if s == "self" {
            continue;
        }
        if !s.chars().next().is_some_and(|c| c.is_ascii_lowercase()) || s.chars().any(|c| c.is_ascii_uppercase()) {
            break;
        }
        base.push(s);
    }
    (!base.is_empty()).then(|| base.join("::"))
}

/// The unit of a module path: the longest row of the table that is it or contains it.
fn unit<'a>(path: &str, rules: &'a BTreeMap<String, Vec<String>>) -> Option<&'a str> {
    rules
        .keys()
        .filter(|u| path == u.as_str() || path.starts_with(&format!("{u}::")))
        .max_by_key(|u| u.len())
        .map(String::as_str)
}

fn within(path: &str, unit: &str) -> bool {
    path == unit || path.starts_with(&format!("{unit}::"))
}

#[test]
fn every_import_is_allowed_by_the_readme() {
    let rules = rules();
    assert!(rules.contains_key("gateway") && rules.contains_key("policy::ir"), "{rules:?}");
    let mut bad = Vec::new();
    for (path, module) in files() {
        let Some(from) = unit(&module, &rules) else {
            bad.push(format!("{}: the module `{module}` has no row in the README's table", path.display()));
            continue;
        };
        for import in imports(&code(&path), &module) {
            if within(&import, from) || within(&import, &module) {
                continue;
            }
            let Some(to) = unit(&import, &rules) else {
                bad.push(format!("{}: `{import}` has no row in the README's table", path.display()));
                continue;
            };
            if !rules[from].iter().any(|a| within(to, a)) {
                bad.push(format!("{}: `{from}` may not import `{to}` (`{import}`)", path.display()));
            }
        }
    }
    assert!(bad.is_empty(), "imports the README's architecture does not allow:\n{}", bad.join("\n"));
}

#[test]
fn no_two_files_import_each_other() {
    let files = files();
    let by_module: BTreeMap<&str, &Path> = files.iter().map(|(p, m)| (m.as_str(), p.as_path())).collect();
    // file -> the files it imports (the longest module path that is a file), parents' imports of
    // their own children left out.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (path, module) in &files {
        let mut to = BTreeSet::new();
        for import in imports(&code(path), module) {
            let target = by_module
                .keys()
                .filter(|m| within(&import, m))
                .max_by_key(|m| m.len())
                .copied()
                .filter(|t| *t != module.as_str() && !(t.starts_with(&format!("{module}::")) || module.is_empty()));
            if let Some(t) = target {
                to.insert(t);
            }
        }
        edges.insert(module.as_str(), to);
    }
    // Depth-first search for a cycle.
    fn visit<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|s| *s == n).unwrap_or(0);
                let mut cycle = stack[at..].to_vec();
                cycle.push(n);
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n, 1);
        stack.push(n);
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if let Some(cycle) = visit(n, &edges, &mut state, &mut Vec::new()) {
            panic!("files that import each other: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_scanner_reads_paths_as_rust_does() {
    // Lowercase items (functions) stay on the path; the longest known module is what counts.
    let code = "use super::admit::{authenticate, Admitted};\nuse crate::policy::{self, load, Program};\n\
                let x = crate::util::tokens::count(\"crate::not::this\"); // crate::nor::this\n\
                use super::{Checker, types::Ty};\n";
    let found = imports(&strip(code), "gateway::info");
    let want = ["gateway::admit::authenticate", "gateway::admit", "policy", "policy::load", "util::tokens::count"];
    let want: BTreeSet<String> = want.iter().chain(&["gateway", "gateway::types"]).map(|s| s.to_string()).collect();
    assert_eq!(found, want);
    assert_eq!(imports("use super::super::Settle;", "gateway::settle::x"), BTreeSet::from(["gateway".to_string()]));
    assert_eq!(unit("policy::eval::decide", &rules()), Some("policy::eval"));
}
