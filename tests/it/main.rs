//! The integration tests, one binary (one link) for all of them; `tests/alloc.rs` is the one
//! binary of its own, because it installs a counting allocator. Each module tests one stage or
//! one surface: the policy stages by corpus (`eval_corpus`, `fmt_corpus`, `compile_corpus` and
//! `lint` over `tests/{eval,fmt,compile,lint}/`), the CLI, the gateway against fake upstreams,
//! accounting, the providers' contracts, and the architecture's own rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod accounting;
mod admin;
mod architecture;
mod cache;
mod cli;
mod common;
mod compile_corpus;
mod deploy;
mod docs;
mod doors;
mod eval;
mod eval_corpus;
mod fail_closed;
mod fmt_corpus;
mod front_door;
mod gateway;
mod gateway_support;
mod lint;
mod lsp;
mod malformed;
mod messages;
mod native;
mod newcomer;
mod presets;
mod properties;
mod providers;
mod reload;
mod secrets;
pub mod shared;
mod simulate;
mod telemetry;
