//! Syntax: text -> AST with spans. `parser.rs` is the only place that sees pest.

pub mod ast;
pub mod parser;
pub mod span;

pub use parser::parse;
