//! The language server (SPEC §14): LSP messages over stdio -> diagnostics (as `lint` gives them,
//! against the catalog of the nearest `yardmaster.yaml` up the tree), hover on models and facts,
//! document symbols and formatting (as `fmt` gives it) for `.route` files. Positions are UTF-16,
//! as LSP requires. Built so far: full-document sync, diagnostics on open and change, hover,
//! completion, go to definition (`let` names, `include`d files), symbols, formatting, and code
//! actions for the diagnostics that say "did you mean"; included files are read as the editor has
//! them and their diagnostics published for them, and an included file is checked through the
//! policy that includes it.

mod complete;
mod position;
mod reference;
mod transport;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lsp_server::{Message, Notification, Request, Response};
use lsp_types::{
    Diagnostic, DiagnosticSeverity, DocumentSymbol, Hover, HoverContents, MarkupContent, MarkupKind, NumberOrString,
    ServerCapabilities, SymbolKind, TextDocumentSyncCapability, TextDocumentSyncKind, TextEdit, Uri,
};
use serde_json::Value;

use crate::catalog::Catalog;
use crate::policy::syntax::ast::Item;
use crate::policy::{check, load, CheckOptions};
use position::Lines;

/// Serves the protocol on stdin and stdout until the client says `exit`.
pub fn run() -> Result<(), String> {
    let (conn, io) = transport::stdio();
    let caps = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(lsp_types::HoverProviderCapability::Simple(true)),
        document_symbol_provider: Some(lsp_types::OneOf::Left(true)),
        document_formatting_provider: Some(lsp_types::OneOf::Left(true)),
        completion_provider: Some(lsp_types::CompletionOptions {
            trigger_characters: Some(vec![" ".into(), "\"".into(), "(".into()]),
            ..lsp_types::CompletionOptions::default()
        }),
        definition_provider: Some(lsp_types::OneOf::Left(true)),
        code_action_provider: Some(lsp_types::CodeActionProviderCapability::Simple(true)),
        ..ServerCapabilities::default()
    };
    let caps = serde_json::to_value(caps).map_err(|e| e.to_string())?;
    conn.initialize(caps).map_err(|e| e.to_string())?;
    let mut server = Server::default();
    loop {
        // Changes are checked once the typing pauses: a change that comes within the debounce
        // replaces the one before it unchecked.
        let msg = if server.pending.is_empty() {
            match conn.receiver.recv() {
                Ok(m) => m,
                Err(_) => break,
            }
        } else {
            match conn.receiver.recv_timeout(DEBOUNCE) {
                Ok(m) => m,
                Err(e) if e.is_timeout() => {
                    for out in server.flush() {
                        conn.sender.send(Message::Notification(out)).map_err(|e| e.to_string())?;
                    }
                    continue;
                }
                Err(_) => break,
            }
        };
        match msg {
            Message::Request(req) => {
                if conn.handle_shutdown(&req).map_err(|e| e.to_string())? {
                    break;
                }
                let resp = server.request(req);
                conn.sender.send(Message::Response(resp)).map_err(|e| e.to_string())?;
            }
            Message::Notification(n) => {
                for out in server.notification(n) {
                    conn.sender.send(Message::Notification(out)).map_err(|e| e.to_string())?;
                }
            }
            Message::Response(_) => {}
        }
    }
    drop(conn);
    io.join()
}

/// How long the typing must pause before a changed document is checked.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(150);

/// The open documents, and those changed since they were last checked.
#[derive(Default)]
struct Server {
    docs: HashMap<String, String>,
    pending: std::collections::BTreeSet<String>,
}

/// The path of a `file://` URI.
fn path_of(uri: &Uri) -> PathBuf {
    let s = uri.as_str();
    let p = s.strip_prefix("file://").unwrap_or(s);
    PathBuf::from(percent_decode(p))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            if let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The catalog of the nearest `yardmaster.yaml` up the tree from `file` (none without one, or
/// when it does not load: then the policy is checked without a catalog, as `lint` does).
fn catalog_for(file: &Path) -> Option<Catalog> {
    let mut dir = file.parent();
    while let Some(d) = dir {
        let cfg = d.join("yardmaster.yaml");
        if cfg.is_file() {
            return crate::config::load(&cfg).ok().map(|l| l.catalog());
        }
        dir = d.parent();
    }
    None
}

impl Server {
    fn notification(&mut self, n: Notification) -> Vec<Notification> {
        let uri = n.params.pointer("/textDocument/uri").and_then(Value::as_str).map(str::to_string);
        let Some(uri) = uri else { return Vec::new() };
        match n.method.as_str() {
            "textDocument/didOpen" => {
                let text = n.params.pointer("/textDocument/text").and_then(Value::as_str).unwrap_or("").to_string();
                self.docs.insert(uri.clone(), text);
            }
            "textDocument/didChange" => {
                // Full sync: the last change holds the whole text.
                let changes = n.params.get("contentChanges").and_then(Value::as_array);
                if let Some(text) = changes.and_then(|c| c.last()).and_then(|c| c.get("text")).and_then(Value::as_str) {
                    self.docs.insert(uri.clone(), text.to_string());
                }
            }
            "textDocument/didClose" => {
                self.docs.remove(&uri);
                self.pending.remove(&uri);
                return vec![publish(&uri, Vec::new())];
            }
            _ => return Vec::new(),
        }
        self.pending.insert(uri);
        Vec::new()
    }

    /// Checks the documents changed since their last check.
    fn flush(&mut self) -> Vec<Notification> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .flat_map(|uri| diagnostics(&uri, &self.docs))
            .map(|(uri, found)| publish(&uri, found))
            .collect()
    }

    fn request(&self, req: Request) -> Response {
        let uri = req.params.pointer("/textDocument/uri").and_then(Value::as_str).unwrap_or("");
        let Some(text) = self.docs.get(uri) else {
            return Response::new_ok(req.id, Value::Null);
        };
        let line = req.params.pointer("/position/line").and_then(Value::as_u64).unwrap_or(0) as u32;
        let character = req.params.pointer("/position/character").and_then(Value::as_u64).unwrap_or(0) as u32;
        let path = uri.parse::<Uri>().ok().map(|u| path_of(&u));
        let result = match req.method.as_str() {
            "textDocument/completion" => {
                let lines = Lines::new(text);
                let before = lines.offset(line, character).map_or("", |o| {
                    let start = text[..o].rfind('\n').map_or(0, |i| i + 1);
                    &text[start..o]
                });
                let lets = let_names(text);
                let catalog = path.as_deref().and_then(catalog_for);
                serde_json::to_value(complete::at(before, catalog.as_ref(), &lets)).unwrap_or(Value::Null)
            }
            "textDocument/definition" => definition(text, path.as_deref(), line, character),
            "textDocument/codeAction" => code_actions(uri, &req.params),
            "textDocument/formatting" => formatting(text),
            "textDocument/documentSymbol" => symbols(text),
            "textDocument/hover" => {
                let found = diagnostics(uri, &self.docs).into_iter().next().map(|(_, d)| d).unwrap_or_default();
                with_diagnostics(hover(text, path.as_deref(), line, character), &found, line, character)
            }
            _ => {
                return Response::new_err(
                    req.id,
                    lsp_server::ErrorCode::MethodNotFound as i32,
                    format!("{} is not served", req.method),
                )
            }
        };
        Response::new_ok(req.id, result)
    }
}

/// What the server publishes for `text` as the document `uri` (a `file://` URI): parse, check
/// against the nearest catalog, and the notification's JSON. For benchmarks.
pub fn check_and_publish(uri: &str, text: &str) -> String {
    let open = HashMap::from([(uri.to_string(), text.to_string())]);
    let (uri, found) = diagnostics(uri, &open).swap_remove(0);
    serde_json::to_string(&publish(&uri, found).params).unwrap_or_default()
}

fn publish(uri: &str, diagnostics: Vec<Diagnostic>) -> Notification {
    let params = serde_json::json!({"uri": uri, "diagnostics": diagnostics});
    Notification::new("textDocument/publishDiagnostics".into(), params)
}

/// Reads the open documents as the editor has them, and other files from disk.
struct Editor<'a> {
    open: &'a HashMap<String, String>,
}

impl load::Reader for Editor<'_> {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let open = self.open.iter().find(|(uri, _)| uri.parse::<Uri>().is_ok_and(|u| path_of(&u) == path));
        match open {
            Some((_, text)) => Ok(text.clone().into_bytes()),
            None => std::fs::read(path),
        }
    }
}

fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The policy file that includes `path`, among the `.route` files under the nearest
/// `yardmaster.yaml`'s directory (or `path`'s own), three levels deep at most.
fn entry_for(path: &Path, open: &HashMap<String, String>) -> Option<PathBuf> {
    let mut root = path.parent()?;
    let mut up = Some(root);
    while let Some(d) = up {
        if d.join("yardmaster.yaml").is_file() {
            root = d;
            break;
        }
        up = d.parent();
    }
    let mut dirs = vec![(root.to_path_buf(), 0)];
    let mut seen = 0;
    while let Some((dir, depth)) = dirs.pop() {
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 3 {
                dirs.push((p, depth + 1));
            } else if p.extension().is_some_and(|x| x == "route") && p != path {
                seen += 1;
                if seen > 500 {
                    return None;
                }
                let Ok(bytes) = load::Reader::read(&Editor { open }, &p) else { continue };
                let text = String::from_utf8_lossy(&bytes);
                let includes = text
                    .lines()
                    .filter_map(|l| l.trim_start().strip_prefix("include "))
                    .map(|r| r.trim().trim_matches('"'));
                let here = p.parent().unwrap_or(root);
                if includes.into_iter().any(|inc| same_file(&here.join(inc), path)) {
                    return Some(p);
                }
            }
        }
    }
    None
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The diagnostics of the document `uri` and of the files it includes, as `lint` gives them, per
/// file URI (the document's own first), in UTF-16 ranges. An included file is checked through the
/// policy that includes it; without one, a file with no `default` is checked as a part (no
/// missing-`default` error).
fn diagnostics(uri: &str, open: &HashMap<String, String>) -> Vec<(String, Vec<Diagnostic>)> {
    let path = uri.parse::<Uri>().map(|u| path_of(&u)).unwrap_or_else(|_| PathBuf::from("policy.route"));
    let entry = entry_for(&path, open);
    let root = entry.clone().unwrap_or_else(|| path.clone());
    let catalog = catalog_for(&root);
    let outcome = check(load::load(&root, &Editor { open }), catalog.as_ref(), CheckOptions::default());
    let files = outcome.sources.files();
    let mut out: Vec<(String, Vec<Diagnostic>)> = (0..files.len())
        .map(|id| {
            let f = &files[id];
            let mine = same_file(&f.path, &path);
            let lines = Lines::new(&f.text);
            let found = outcome
                .diagnostics
                .iter()
                .filter(|d| d.primary.span.file as usize == id)
                .filter(|d| !(mine && entry.is_none() && d.code.as_str() == "E0403"))
                .map(|d| to_lsp(d, &lines))
                .collect();
            (if mine { uri.to_string() } else { file_uri(&f.path) }, found)
        })
        .collect();
    // The document's own first.
    out.sort_by_key(|(u, _)| u != uri);
    if out.first().is_none_or(|(u, _)| u != uri) {
        out.insert(0, (uri.to_string(), Vec::new()));
    }
    out
}

/// One diagnostic as LSP has it (the help after the message).
fn to_lsp(d: &crate::policy::diagnostic::Diagnostic, lines: &Lines<'_>) -> Diagnostic {
    let mut message = d.message.clone();
    if let Some(h) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(h);
    }
    Diagnostic {
        range: lines.range(d.primary.span.start, d.primary.span.end),
        severity: Some(if d.is_error() { DiagnosticSeverity::ERROR } else { DiagnosticSeverity::WARNING }),
        code: Some(NumberOrString::String(d.code.as_str().to_string())),
        source: Some("yardmaster".into()),
        message,
        ..Diagnostic::default()
    }
}

/// One edit that replaces the document with its formatted text (none when it does not parse).
fn formatting(text: &str) -> Value {
    let Ok(formatted) = crate::policy::fmt::format_source(text) else { return Value::Null };
    let lines = Lines::new(text);
    let edit = TextEdit { range: lines.range(0, u32::try_from(text.len()).unwrap_or(u32::MAX)), new_text: formatted };
    serde_json::to_value(vec![edit]).unwrap_or(Value::Null)
}

/// The rules, `let`s and the default.
fn symbols(text: &str) -> Value {
    let Ok(file) = crate::policy::syntax::parse(0, text) else { return serde_json::json!([]) };
    let lines = Lines::new(text);
    let symbol = |name: String,
                  kind: SymbolKind,
                  whole: crate::policy::syntax::span::Span,
                  at: crate::policy::syntax::span::Span| {
        #[allow(deprecated, reason = "`deprecated` is a required field of the type")]
        DocumentSymbol {
            name,
            detail: None,
            kind,
            tags: None,
            deprecated: None,
            range: lines.range(whole.start, whole.end),
            selection_range: lines.range(at.start, at.end),
            children: None,
        }
    };
    let out: Vec<DocumentSymbol> = file
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Rule(r) => Some(symbol(r.node.name.node.clone(), SymbolKind::FUNCTION, r.span, r.node.name.span)),
            Item::Let(l) => Some(symbol(l.node.name.node.clone(), SymbolKind::CONSTANT, l.span, l.node.name.span)),
            Item::Default(d) => Some(symbol("default".into(), SymbolKind::FUNCTION, d.span, d.span)),
            Item::Include(_) => None,
        })
        .collect();
    serde_json::to_value(out).unwrap_or(Value::Null)
}

/// A hover with the diagnostics at the position before it (their code, message and help).
fn with_diagnostics(hover: Value, found: &[Diagnostic], line: u32, character: u32) -> Value {
    let at = lsp_types::Position { line, character };
    let here: Vec<String> = found
        .iter()
        .filter(|d| d.range.start <= at && at <= d.range.end)
        .map(|d| {
            let code = match &d.code {
                Some(NumberOrString::String(c)) => c.clone(),
                _ => String::new(),
            };
            format!("**{code}** {}", d.message.replace("\nhelp: ", "\n\nhelp: "))
        })
        .collect();
    if here.is_empty() {
        return hover;
    }
    let rest =
        hover.pointer("/contents/value").and_then(Value::as_str).map(|v| format!("\n\n---\n\n{v}")).unwrap_or_default();
    let h = Hover {
        contents: HoverContents::Markup(MarkupContent { kind: MarkupKind::Markdown, value: here.join("\n\n") + &rest }),
        range: None,
    };
    serde_json::to_value(h).unwrap_or(Value::Null)
}

/// A `let`'s value as written, from its line.
fn let_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("let ")?.trim_start().strip_prefix(name)?;
        Some(rest.trim_start().strip_prefix('=')?.trim())
    })
}

/// What a model, a fact, an operator, a target, a rule option or a `let` under the cursor is
/// (the reference's words from docs/language.md).
fn hover(text: &str, path: Option<&Path>, line: u32, character: u32) -> Value {
    let lines = Lines::new(text);
    let Some(word) = lines.operator_at(line, character).or_else(|| lines.word_at(line, character)) else {
        return Value::Null;
    };
    let markdown = if let Some(m) = path.and_then(catalog_for).and_then(|c| c.by_name(word).cloned()) {
        let price = m
            .price
            .map_or("unpriced".to_string(), |p| format!("${} in, ${} out per million tokens", p.input, p.output));
        let caps: Vec<String> = m.capabilities.iter().map(|c| format!("{c:?}").to_lowercase()).collect();
        format!(
            "**{}** (model)\n\nprovider `{}`, upstream id `{}`, serves {}\n\n{}; context {}\n\ntags: {}; capabilities: {}",
            m.name,
            m.provider,
            m.upstream_id,
            m.endpoint.as_str(),
            price,
            m.context.map_or("unknown".into(), |c| format!("{c} tokens")),
            if m.tags.is_empty() { "none".into() } else { m.tags.join(", ") },
            if caps.is_empty() { "none".into() } else { caps.join(", ") },
        )
    } else if !reference::lookup(word).is_empty() {
        reference::markdown(word, &reference::lookup(word))
    } else if let Some(value) = let_value(text, word) {
        format!("**{word}** (let)\n\n```route\nlet {word} = {value}\n```")
    } else {
        return Value::Null;
    };
    let h = Hover {
        contents: HoverContents::Markup(MarkupContent { kind: MarkupKind::Markdown, value: markdown }),
        range: None,
    };
    serde_json::to_value(h).unwrap_or(Value::Null)
}

/// The policy's `let` names: read from its lines, since the text being typed rarely parses.
fn let_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("let "))
        .filter_map(|rest| {
            rest.split(|c: char| c.is_whitespace() || c == '=').find(|w| !w.is_empty()).map(str::to_string)
        })
        .collect()
}

/// Where the `let` name or the `include`d file under the cursor is. Read from the lines, since the
/// text being typed rarely parses.
fn definition(text: &str, path: Option<&Path>, line: u32, character: u32) -> Value {
    let lines = Lines::new(text);
    let file_uri = |p: &Path| format!("file://{}", p.display());
    let here = text.lines().nth(line as usize).unwrap_or("");
    if let Some(rest) = here.trim_start().strip_prefix("include ") {
        let name = rest.trim().trim_matches('"');
        let Some(dir) = path.and_then(Path::parent) else { return Value::Null };
        return serde_json::json!({"uri": file_uri(&dir.join(name)),
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}}});
    }
    let Some(word) = lines.word_at(line, character) else { return Value::Null };
    let mut offset = 0;
    for l in text.split_inclusive('\n') {
        if let Some(rest) = l.trim_start().strip_prefix("let ") {
            let name_at = l.len() - l.trim_start().len() + 4 + (rest.len() - rest.trim_start().len());
            if rest.trim_start().split(|c: char| c.is_whitespace() || c == '=').next() == Some(word) {
                let start = u32::try_from(offset + name_at).unwrap_or(u32::MAX);
                let end = start + u32::try_from(word.len()).unwrap_or(0);
                let uri = path.map_or_else(String::new, file_uri);
                return serde_json::json!({"uri": uri, "range": lines.range(start, end)});
            }
        }
        offset += l.len();
    }
    Value::Null
}

/// A quick fix for each diagnostic in the request whose message or help says "did you mean `X`":
/// X in place of the diagnostic's range.
fn code_actions(uri: &str, params: &Value) -> Value {
    let diags = params.pointer("/context/diagnostics").and_then(Value::as_array).cloned().unwrap_or_default();
    let actions: Vec<Value> = diags
        .iter()
        .filter_map(|d| {
            let text = d.get("message").and_then(Value::as_str)?;
            let (_, rest) = text.split_once("did you mean `")?;
            let (fix, _) = rest.split_once('`')?;
            let edit = serde_json::json!({"changes": {uri: [{"range": d["range"], "newText": fix}]}});
            Some(serde_json::json!({"title": format!("Replace with `{fix}`"), "kind": "quickfix", "diagnostics": [d], "edit": edit, "isPreferred": true}))
        })
        .collect();
    Value::Array(actions)
}
