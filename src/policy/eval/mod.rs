//! Step four: the compiled [`Program`](crate::policy::Program) x [`RequestFacts`] x [`Context`]
//! -> a decision and its plan (`decide`), or the whole `explain` trace (`explain`). This module
//! holds the facts that come from outside the request (key, budget, health, time), the facts
//! read from it (`request`), the expansion of a matched rule's target into the models to try
//! (`plan`) and the naive reference evaluator (`naive`). Pure: no I/O, no clock, and it cannot
//! fail for a program that compiled.

pub mod decide;
pub mod explain;
pub mod naive;
pub mod plan;
pub mod request;

use crate::catalog::ModelId;
use crate::policy::ir::value::{split_arm, V};
use crate::policy::ir::Fact;
pub use decide::{Decision, Routing, Scratch};
pub use explain::Trace;
pub use request::RequestFacts;

/// Health and latency of models, as dispatch observes them.
pub trait Health {
    /// False while the model's breaker is open.
    fn healthy(&self, m: ModelId) -> bool;
    /// Moving average of time to first byte, in ms; `None` without samples.
    fn latency_ms(&self, m: ModelId) -> Option<f64>;
}

/// Health given as values (for `explain`, `test` and tests).
#[derive(Clone, Debug, Default)]
pub struct StaticHealth {
    /// Models whose breaker is open.
    pub down: Vec<ModelId>,
    /// Observed latencies.
    pub latency: Vec<(ModelId, f64)>,
}

impl Health for StaticHealth {
    fn healthy(&self, m: ModelId) -> bool {
        !self.down.contains(&m)
    }
    fn latency_ms(&self, m: ModelId) -> Option<f64> {
        self.latency.iter().find(|(x, _)| *x == m).map(|(_, l)| *l)
    }
}

/// Budget facts of the calling key.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budget {
    /// Remaining USD (`None` without a budget).
    pub remaining_usd: Option<f64>,
    /// Remaining as a fraction of the budget (`None` without a budget).
    pub remaining_fraction: Option<f64>,
    /// Spent this period, USD.
    pub spent_usd: f64,
    /// Spent as a fraction of the budget (`None` without a budget).
    pub spent_fraction: Option<f64>,
}

impl Budget {
    /// Budget facts from a limit and the spend so far.
    pub fn from_limit(limit_usd: Option<f64>, spent_usd: f64) -> Budget {
        match limit_usd {
            Some(l) if l > 0.0 => Budget {
                remaining_usd: Some((l - spent_usd).max(0.0)),
                remaining_fraction: Some(((l - spent_usd) / l).max(0.0)),
                spent_usd,
                spent_fraction: Some(spent_usd / l),
            },
            Some(_) => {
                Budget { remaining_usd: Some(0.0), remaining_fraction: Some(0.0), spent_usd, spent_fraction: Some(1.0) }
            }
            None => Budget { spent_usd, ..Budget::default() },
        }
    }
}

/// Facts from outside the request body.
pub struct Context<'a> {
    /// The key's tier.
    pub tier: Option<&'a str>,
    /// The key's name.
    pub key_name: Option<&'a str>,
    /// Budget facts.
    pub budget: Budget,
    /// Model health and latency.
    pub health: &'a dyn Health,
    /// UTC hour.
    pub hour: u8,
    /// UTC weekday, 0 = Monday.
    pub weekday: u8,
}

impl<'a> Context<'a> {
    /// A context with no key, no budget, every model healthy, Monday 12:00 UTC.
    pub fn anonymous(health: &'a dyn Health) -> Context<'a> {
        Context { tier: None, key_name: None, budget: Budget::default(), health, hour: 12, weekday: 0 }
    }
}

/// Simple facts: everything but the prompt texts' keyword and regex scans and the token count.
pub fn simple_fact<'a>(fact: &Fact, req: &'a RequestFacts, ctx: &Context<'a>, chars: &mut Option<u64>) -> V<'a> {
    let opt = |s: Option<&'a str>| s.map_or(V::None, V::Str);
    match fact {
        Fact::Prompt => V::Str(&req.prompt),
        Fact::PromptLast => V::Str(req.prompt_last()),
        Fact::PromptSystem => V::Str(req.prompt_system()),
        Fact::PromptTokens => V::None,
        Fact::PromptChars => V::Num(*chars.get_or_insert_with(|| req.prompt.chars().count() as u64) as f64),
        Fact::PromptMessages => V::Num(req.messages as f64),
        Fact::RequestModel => opt(req.model.as_deref()),
        Fact::RequestStream => V::Bool(req.stream),
        Fact::RequestTools => V::Bool(req.tools),
        Fact::RequestImages => V::Bool(req.images),
        Fact::RequestMaxTokens => req.max_tokens.map_or(V::None, |n| V::Num(n as f64)),
        Fact::RequestEndpoint => V::Str(req.endpoint.as_str()),
        Fact::RequestApi => V::Str(req.api.as_str()),
        Fact::UserTier => opt(ctx.tier),
        Fact::UserName => opt(ctx.key_name),
        Fact::UserId => opt(req.user_id.as_deref()),
        Fact::Header(h) => opt(req.headers.iter().find(|(k, _)| k == h).map(|(_, v)| v.as_str())),
        Fact::Metadata(m) => opt(req.metadata.iter().find(|(k, _)| k == m).map(|(_, v)| v.as_str())),
        Fact::BudgetRemainingFraction => ctx.budget.remaining_fraction.map_or(V::None, V::Num),
        Fact::BudgetRemainingUsd => ctx.budget.remaining_usd.map_or(V::None, V::Num),
        Fact::BudgetSpentUsd => V::Num(ctx.budget.spent_usd),
        Fact::BudgetSpentFraction => ctx.budget.spent_fraction.map_or(V::None, V::Num),
        Fact::Healthy(m) => V::Bool(ctx.health.healthy(*m)),
        Fact::Latency(m) => ctx.health.latency_ms(*m).map_or(V::None, V::Num),
        Fact::TimeHour => V::Num(f64::from(ctx.hour)),
        Fact::TimeWeekday => {
            V::Str(crate::policy::ir::names::WEEKDAYS.get(ctx.weekday as usize).copied().unwrap_or("mon"))
        }
    }
}

/// The key a split is sticky by: `user.id`, else the key's name.
pub fn sticky_key<'a>(req: &'a RequestFacts, ctx: &Context<'a>) -> &'a str {
    req.user_id.as_deref().or(ctx.key_name).unwrap_or("")
}
