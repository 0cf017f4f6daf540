//! Accounting: tokens and prices (`usage`), the spend ledger (`ledger`, SQLite written off the
//! request path), the request log's lines (`requestlog`) and budget arithmetic (`budget`). Input:
//! replies and finished requests; output: usage, costs, ledger rows and log lines. It knows
//! nothing of HTTP, and it holds no per-key state: accounts and limiters live behind
//! `crate::state`.

pub mod budget;
pub mod ledger;
pub mod requestlog;
pub mod usage;

pub use ledger::{Ledger, Row};
pub use usage::{Rate, Usage};

/// The accounting of a running gateway (kept across reloads).
#[derive(Debug, Default)]
pub struct Accounting {
    /// The ledger (none when `storage: { ledger: false }`).
    pub ledger: Option<Ledger>,
    /// Whether request-log lines are written.
    pub request_log: bool,
    /// Whether they keep the prompt text.
    pub log_prompts: bool,
    /// The headers whose values they may keep (lowercased), when the config lists them.
    pub log_headers: Option<Vec<String>>,
    /// Whether each request gets an access-log line at info level (`log.access`).
    pub access_log: bool,
}
