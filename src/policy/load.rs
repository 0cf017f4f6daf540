//! Loading: an entry file -> every file it includes, parsed, with `include` spliced in place.
//! Detects include cycles, unreadable files and invalid UTF-8, and computes the policy version
//! (the first 12 hex digits of a SHA-256 over the files in include order).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::diagnostic::codes::Code;
use super::diagnostic::Diagnostic;
use super::syntax::ast::Item;
use super::syntax::span::{SourceMap, Span, Spanned};

/// A policy read from disk (or memory), not yet checked.
#[derive(Debug, Default)]
pub struct Source {
    /// Every file read, in include order.
    pub sources: SourceMap,
    /// The declarations with includes spliced in place.
    pub items: Vec<Item>,
    /// Parse and load diagnostics.
    pub diagnostics: Vec<Diagnostic>,
    /// The policy version.
    pub version: String,
    /// The entry file itself could not be read (a file that is there but not UTF-8 is a
    /// diagnostic like any other, not this).
    pub unreadable: bool,
}

/// How files are read (the filesystem, or a map in tests).
pub trait Reader {
    /// Reads the bytes of a file.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// Reads from the filesystem.
pub struct Fs;

impl Reader for Fs {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// Reads from memory: `(path, text)` pairs.
pub struct Memory(pub Vec<(PathBuf, String)>);

impl Reader for Memory {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.clone().into_bytes())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    }
}

/// Loads an entry file and everything it includes.
pub fn load(entry: &Path, reader: &dyn Reader) -> Source {
    let mut out = Source::default();
    let mut hasher = Sha256::new();
    let mut stack = Vec::new();
    out.items = load_file(entry, None, reader, &mut out, &mut hasher, &mut stack);
    out.version = hex::encode(hasher.finalize()).chars().take(12).collect();
    out
}

/// Loads policy text given in memory (includes are read from `reader`, relative to `name`).
pub fn load_text(name: &Path, text: &str) -> Source {
    load(name, &Memory(vec![(name.to_path_buf(), text.to_string())]))
}

fn load_file(
    path: &Path,
    from: Option<Span>,
    reader: &dyn Reader,
    out: &mut Source,
    hasher: &mut Sha256,
    stack: &mut Vec<PathBuf>,
) -> Vec<Item> {
    let key = normalize(path);
    let at = from.unwrap_or_default();
    if let Some(pos) = stack.iter().position(|p| *p == key) {
        let chain: Vec<String> =
            stack.get(pos..).unwrap_or(&[]).iter().chain([&key]).map(|p| p.display().to_string()).collect();
        out.diagnostics.push(
            Diagnostic::new(Code::IncludeCycle, at, format!("`{}` includes itself", path.display()))
                .label("this include closes the cycle")
                .help(format!("the cycle is {}", chain.join(" -> "))),
        );
        return Vec::new();
    }
    let bytes = match reader.read(path) {
        Ok(b) => b,
        Err(e) => {
            let id = out.sources.add(path, "");
            out.unreadable |= from.is_none();
            let span = if from.is_some() { at } else { Span::new(id, 0, 0) };
            out.diagnostics.push(
                Diagnostic::new(Code::UnreadableFile, span, format!("cannot read `{}`: {e}", path.display()))
                    .label("this file")
                    .help("paths in `include` are relative to the file that includes them"),
            );
            return Vec::new();
        }
    };
    hasher.update(&bytes);
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let id = out.sources.add(path, lossy.as_str());
            let offset = String::from_utf8_lossy(e.as_bytes().get(..valid).unwrap_or(&[])).len();
            out.diagnostics.push(
                Diagnostic::new(Code::UnreadableFile, Span::new(id, offset, offset + 1), "the file is not valid UTF-8")
                    .label("invalid byte here")
                    .help("policy files are UTF-8 text"),
            );
            return Vec::new();
        }
    };
    let id = out.sources.add(path, text.as_str());
    let file = match super::syntax::parse(id, &text) {
        Ok(f) => f,
        Err(ds) => {
            out.diagnostics.extend(ds);
            return Vec::new();
        }
    };
    stack.push(key);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut items = Vec::new();
    for item in &file.items {
        match item {
            Item::Include(Spanned { node, span }) => {
                let child = dir.join(node);
                items.extend(load_file(&child, Some(*span), reader, out, hasher, stack));
            }
            other => items.push(other.clone()),
        }
    }
    stack.pop();
    items
}

/// `a/./b/../c` -> `a/c`, without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The `.route` files under `dir` that no other file there includes (each is an entry).
pub fn entries_in_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut routes = Vec::new();
    collect_routes(dir, &mut routes)?;
    routes.sort();
    let mut included = std::collections::HashSet::new();
    for r in &routes {
        let Ok(text) = std::fs::read_to_string(r) else {
            continue;
        };
        let Ok(file) = super::syntax::parse(0, &text) else {
            continue;
        };
        let d = r.parent().map(Path::to_path_buf).unwrap_or_default();
        for item in &file.items {
            if let Item::Include(i) = item {
                included.insert(normalize(&d.join(&i.node)));
            }
        }
    }
    Ok(routes.into_iter().filter(|r| !included.contains(&normalize(r))).collect())
}

fn collect_routes(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect_routes(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "route") {
            out.push(p);
        }
    }
    Ok(())
}
