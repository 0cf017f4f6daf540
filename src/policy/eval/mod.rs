//! Evaluation: the semantics shared by the compiled program and the naive reference evaluator,
//! the facts that come from outside the request (key, budget, health, time), and the expansion of
//! a matched rule's target into the plan of models to try. Pure: no I/O, no clock.

pub mod naive;
pub mod plan;
pub mod request;

use crate::catalog::ModelId;
use crate::policy::check::ir::{Fact, Lit, Rel};
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

/// A fact's value at run time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum V<'a> {
    /// Absent.
    None,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(&'a str),
}

impl V<'_> {
    /// For `explain`.
    pub fn display(&self) -> String {
        match self {
            V::None => "none".into(),
            V::Bool(b) => b.to_string(),
            V::Num(n) => {
                if n.fract() == 0.0 && n.abs() < 1e15 {
                    format!("{}", *n as i64)
                } else {
                    format!("{n}")
                }
            }
            V::Str(s) => format!("{s:?}"),
        }
    }
}

/// The value of a literal.
pub fn lit_value(l: &Lit) -> V<'_> {
    match l {
        Lit::None => V::None,
        Lit::Bool(b) => V::Bool(*b),
        Lit::Num(n) => V::Num(*n),
        Lit::Str(s) => V::Str(s),
    }
}

/// `a REL b` on run-time values. `none` equals only `none`; ordering involving `none` is false.
pub fn compare(a: V<'_>, rel: Rel, b: V<'_>) -> bool {
    let eq = match (a, b) {
        (V::None, V::None) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Num(x), V::Num(y)) => x == y,
        (V::Str(x), V::Str(y)) => x == y,
        _ => false,
    };
    match rel {
        Rel::Eq => eq,
        Rel::Ne => !eq,
        _ => match (a, b) {
            (V::Num(x), V::Num(y)) => match rel {
                Rel::Lt => x < y,
                Rel::Le => x <= y,
                Rel::Gt => x > y,
                _ => x >= y,
            },
            _ => false,
        },
    }
}

/// `a REL b` on literals (constant folding).
pub fn compare_lits(a: &Lit, rel: Rel, b: &Lit) -> bool {
    compare(lit_value(a), rel, lit_value(b))
}

/// Case-insensitive literal search. ASCII needles fold ASCII case; others use simple Unicode
/// case folding through a regex built by the caller (see [`needs_regex`]).
pub fn contains_ascii_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Case-insensitive ASCII prefix test.
pub fn starts_with_ascii_ci(hay: &str, needle: &str) -> bool {
    hay.as_bytes().get(..needle.len()).is_some_and(|p| p.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Whether a keyword needs the regex path (it has letters beyond ASCII).
pub fn needs_regex(needle: &str) -> bool {
    !needle.is_ascii()
}

/// The regex for a non-ASCII keyword: a case-insensitive literal, anchored for `starts_with`.
pub fn keyword_regex(needle: &str, anchored: bool) -> String {
    format!("(?i){}{}", if anchored { "^" } else { "" }, regex::escape(needle))
}

/// `prompt.tokens REL n` decided from the byte length alone, when it can be: a text of `b` bytes
/// has between `min(b, 1)` and `b` tokens.
pub fn tokens_by_length(bytes: usize, rel: Rel, n: f64) -> Option<bool> {
    let hi = bytes as f64;
    let lo = if bytes > 0 { 1.0 } else { 0.0 };
    match rel {
        Rel::Eq | Rel::Ne => {
            if n < lo || n > hi || n.fract() != 0.0 {
                Some(rel == Rel::Ne)
            } else {
                None
            }
        }
        _ => {
            let a = compare(V::Num(lo), rel, V::Num(n));
            let b = compare(V::Num(hi), rel, V::Num(n));
            (a == b).then_some(a)
        }
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
            V::Str(crate::policy::check::names::WEEKDAYS.get(ctx.weekday as usize).copied().unwrap_or("mon"))
        }
    }
}

/// FNV-1a: a stable hash for sticky splits (the same user lands on the same arm across restarts
/// and versions of Rust).
pub fn sticky_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // Finalise (splitmix64) so that the high bits depend on every input byte.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The arm of a split that a sticky key lands on.
pub fn split_arm(weights: impl Iterator<Item = f64>, key: &str, rule: &str) -> usize {
    let h = sticky_hash(&[rule, key]);
    let x = (h >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        acc += w;
        last = i;
        if x < acc {
            return i;
        }
    }
    last
}

/// The key a split is sticky by: `user.id`, else the key's name.
pub fn sticky_key<'a>(req: &'a RequestFacts, ctx: &Context<'a>) -> &'a str {
    req.user_id.as_deref().or(ctx.key_name).unwrap_or("")
}
