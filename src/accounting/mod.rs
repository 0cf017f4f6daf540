//! Accounting: tokens and prices, the spend ledger, budgets and rate limits. The gateway asks it
//! three things per request: may this key send now (rate limits), may this attempt spend this
//! much (budget reservations), and what did the request cost (settlement, which also writes the
//! ledger row and the request-log line). It knows nothing of HTTP.

pub mod budget;
pub mod ledger;
pub mod limits;
pub mod requestlog;
pub mod usage;

use std::time::Instant;

pub use budget::{Budgets, Gate};
pub use ledger::{Ledger, Record};
pub use limits::RateLimits;
pub use usage::{Rate, Usage};

/// The accounting state of a running gateway (kept across reloads).
#[derive(Debug, Default)]
pub struct Accounting {
    /// Budgets per key.
    pub budgets: Budgets,
    /// Rate limits per key.
    pub limits: RateLimits,
    /// The ledger (none when `storage: { ledger: false }`).
    pub ledger: Option<Ledger>,
    /// Whether request-log lines are written.
    pub request_log: bool,
    /// Whether they keep the prompt text.
    pub log_prompts: bool,
}

/// What a request holds until it ends: its reservations, and the ledger row being filled in.
#[derive(Debug)]
pub struct Charge {
    /// The ledger row so far (tokens, cost, status and latency are set when it settles).
    pub record: Record,
    /// The answering model's prices.
    pub rate: Rate,
    /// Budget reserved for the attempt that answered, micro-USD.
    pub reserved_micros: u64,
    /// Tokens reserved against the key's `tpm`.
    pub reserved_tokens: u64,
    /// The request-log line so far.
    pub log: Option<requestlog::Entry>,
    /// When the request arrived.
    pub started: Instant,
}

/// What a settled request cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The tokens.
    pub usage: Usage,
    /// The cost, micro-USD.
    pub cost_micros: u64,
}

impl Accounting {
    /// Settles a request: budget and `tpm` reservations are replaced by the real figures, and the
    /// ledger row and request-log line are handed to the writer.
    pub fn settle(&self, charge: Charge, usage: Usage, status: u16) -> Settled {
        let cost = charge.rate.cost_micros(usage.input, usage.output);
        let key = charge.record.key.as_deref().unwrap_or("");
        // Keys without a budget have no account, and keys without `tpm` no bucket: both no-ops.
        self.budgets.settle(key, charge.reserved_micros, cost);
        if charge.reserved_tokens > 0 {
            self.limits.settle_tpm(key, charge.reserved_tokens, usage.input + usage.output);
        }
        let now = chrono::Utc::now();
        let latency_ms = u64::try_from(charge.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = Record {
            ts_ms: now.timestamp_millis(),
            input_tokens: usage.input,
            output_tokens: usage.output,
            cost_micros: cost,
            status,
            latency_ms,
            estimated: usage.estimated,
            ..charge.record
        };
        let line = charge.log.filter(|_| self.request_log).map(|mut e| {
            e.time = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            e.request_id.clone_from(&record.id);
            e.key.clone_from(&record.key);
            e.policy.clone_from(&record.policy);
            e.rule.clone_from(&record.rule);
            e.model.clone_from(&record.model);
            e.provider.clone_from(&record.provider);
            e.status = status;
            e.tokens_in = usage.input;
            e.tokens_out = usage.output;
            e.cost_usd = usage::usd(cost);
            e.latency_ms = latency_ms;
            Box::new(e)
        });
        if let Some(l) = &self.ledger {
            l.record(record, line);
        }
        Settled { usage, cost_micros: cost }
    }
}
