//! Leaf helpers that several stages share: fuzzy name matching (the "did you mean" of
//! diagnostics and config errors), duration parsing (`250ms`, `20s`), o200k token counting and
//! background threads' priority.
//! Nothing here imports another module of the crate, so every stage may import it.

pub mod duration;
pub mod fuzzy;
pub mod size;
pub mod thread;
pub mod tokens;
pub mod trace;
