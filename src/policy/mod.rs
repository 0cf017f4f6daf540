//! The routing language: text -> AST (`syntax`) -> checked policy (`check`) -> decision program
//! (`compile`) -> decision (`eval`); `fmt` prints an AST back. This module depends on `catalog`
//! only: it never sees HTTP, providers or accounting, and evaluation does no I/O.

pub mod check;
pub mod compile;
pub mod diagnostic;
pub mod eval;
pub mod fmt;
pub mod ir;
pub mod load;
pub mod syntax;
pub mod testing;

use std::path::Path;

pub use check::{check, Options as CheckOptions, Outcome};
pub use compile::{compile, Program};
pub use diagnostic::{Diagnostic, Severity};

/// Loads, checks and compiles a policy from disk.
pub fn build(
    entry: &Path,
    catalog: Option<&crate::catalog::Catalog>,
) -> (Option<Program>, Vec<Diagnostic>, std::sync::Arc<syntax::span::SourceMap>) {
    build_from(load::load(entry, &load::Fs), catalog)
}

/// Checks and compiles loaded sources.
pub fn build_from(
    source: load::Source,
    catalog: Option<&crate::catalog::Catalog>,
) -> (Option<Program>, Vec<Diagnostic>, std::sync::Arc<syntax::span::SourceMap>) {
    let outcome = check(source, catalog, CheckOptions::default());
    (outcome.checked.map(compile), outcome.diagnostics, outcome.sources)
}
