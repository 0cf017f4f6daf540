//! Yardmaster: an LLM gateway whose routing is a policy written in its own language.
//!
//! The pipeline, one module per stage (see README, "Architecture"):
//! `policy` (text -> program -> decision), `catalog` and `config` (yardmaster.yaml), and the CLI in
//! `main.rs` and `cli`.

pub mod accounting;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod policy;

/// Re-exported for tools (fuzz targets, benches) that build request bodies.
pub use serde_json as json;
pub mod dispatch;
pub mod gateway;
pub mod lsp;
pub mod providers;
pub mod reload;
pub mod simulate;
pub mod state;
pub mod telemetry;
pub mod util;
