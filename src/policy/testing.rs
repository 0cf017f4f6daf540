//! Policy test cases (`*.tests.yaml` beside a policy): a request, who sends it, the facts around
//! it, and the rule and first model expected. Used by `yardmaster test` and by reload, which
//! rejects a policy whose tests fail.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::compile::Program;
use super::eval::Scratch;
use super::eval::{Budget, Context, RequestFacts, StaticHealth};

/// One test case.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The case's name.
    pub name: String,
    /// An OpenAI chat (or embeddings, with `input`) body.
    pub request: serde_json::Value,
    /// The key sending it (its tier and name come from the config).
    #[serde(default)]
    pub key: Option<String>,
    /// The tier, when no key is given.
    #[serde(default)]
    pub tier: Option<String>,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// OpenAI's `user` field (overrides the body's).
    #[serde(default)]
    pub user_id: Option<String>,
    /// `budget.remaining`: `"5%"` or `"$3"`.
    #[serde(default)]
    pub budget_remaining: Option<String>,
    /// Models whose breaker is open.
    #[serde(default)]
    pub down: Vec<String>,
    /// Observed latencies: model -> duration (`"300ms"`).
    #[serde(default)]
    pub latency: BTreeMap<String, String>,
    /// The time: `"wed 13:00"` or an RFC 3339 UTC timestamp.
    #[serde(default)]
    pub time: Option<String>,
    /// The door the request came through (`request.api`): `chat` (default), `responses` or
    /// `messages`. The `request` stays a chat body: the fact is what the case sets.
    #[serde(default)]
    pub api: Option<crate::catalog::Api>,
    /// What should happen.
    pub expect: Expect,
}

/// The expected outcome.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The rule's name (or `default`).
    #[serde(default)]
    pub rule: Option<String>,
    /// The first model that would be taken.
    #[serde(default)]
    pub model: Option<String>,
    /// A refusal with this status.
    #[serde(default)]
    pub deny: Option<u16>,
}

/// A key as tests see it: name and tier, and the budget limit.
#[derive(Clone, Debug, Default)]
pub struct KeyInfo {
    /// Its name.
    pub name: String,
    /// Its tier.
    pub tier: Option<String>,
    /// Its budget in USD.
    pub budget_usd: Option<f64>,
}

/// A case's result.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// `None` when it passed, else why it failed.
    pub failure: Option<String>,
    /// The rule that matched.
    pub rule: Option<usize>,
    /// The models taken in the plan.
    pub taken: Vec<String>,
}

/// The tests file beside a policy: `main.route` -> `main.tests.yaml`.
pub fn tests_path(entry: &std::path::Path) -> std::path::PathBuf {
    let stem = entry.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    entry.with_file_name(format!("{stem}.tests.yaml"))
}

/// Parses a tests file.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, String> {
    serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(l) => format!("line {}, column {}: {e}", l.line(), l.column()),
        None => e.to_string(),
    })
}

/// Parses `"wed 13:00"`, `"13:00"` or an RFC 3339 timestamp into (hour, weekday with 0 = Monday).
pub fn parse_time(s: &str) -> Option<(u8, u8)> {
    use chrono::{Datelike, Timelike};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        let t = t.with_timezone(&chrono::Utc);
        return Some((u8::try_from(t.hour()).ok()?, u8::try_from(t.weekday().num_days_from_monday()).ok()?));
    }
    let mut parts = s.split_whitespace();
    let (day, hm) = match (parts.next(), parts.next()) {
        (Some(d), Some(t)) => (Some(d), t),
        (Some(t), None) => (None, t),
        _ => return None,
    };
    let weekday = match day {
        Some(d) => {
            let d = d.get(..3)?;
            u8::try_from(super::ir::names::WEEKDAYS.iter().position(|w| w.eq_ignore_ascii_case(d))?).ok()?
        }
        None => 0,
    };
    let hour: u8 = hm.split(':').next()?.parse().ok()?;
    (hour < 24).then_some((hour, weekday))
}

/// Parses `"5%"` or `"$3"` into budget facts for a key with `limit` (when known).
pub fn parse_budget(s: &str, limit: Option<f64>) -> Option<Budget> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        let f: f64 = p.trim().parse::<f64>().ok()? / 100.0;
        let limit = limit.unwrap_or(100.0);
        return Some(Budget::from_limit(Some(limit), limit * (1.0 - f)));
    }
    let usd: f64 = s.strip_prefix('$')?.trim().parse().ok()?;
    let limit = limit.unwrap_or(usd.max(1.0) * 10.0);
    Some(Budget::from_limit(Some(limit), (limit - usd).max(0.0)))
}

/// What a case sets up: the request and the facts around it.
#[derive(Clone, Debug)]
pub struct CaseInputs {
    /// The request.
    pub req: RequestFacts,
    /// Down models and latencies.
    pub health: StaticHealth,
    /// The key, when the case names one (or a tier).
    pub key: Option<KeyInfo>,
    /// Budget facts.
    pub budget: Budget,
    /// UTC hour.
    pub hour: u8,
    /// UTC weekday, 0 = Monday.
    pub weekday: u8,
}

impl CaseInputs {
    /// The evaluation context.
    pub fn context(&self) -> Context<'_> {
        Context {
            tier: self.key.as_ref().and_then(|k| k.tier.as_deref()),
            key_name: self.key.as_ref().map(|k| k.name.as_str()).filter(|n| !n.is_empty()),
            budget: self.budget,
            health: &self.health,
            hour: self.hour,
            weekday: self.weekday,
        }
    }
}

/// Builds the request facts and context inputs of a case.
pub fn case_inputs(program: &Program, case: &Case, keys: &[KeyInfo]) -> Result<CaseInputs, String> {
    let req = if case.request.get("input").is_some() && case.request.get("messages").is_none() {
        RequestFacts::from_embeddings(&case.request)
    } else {
        RequestFacts::from_chat(&case.request)
    };
    let mut req = req.map_err(|e| format!("bad request: {e}"))?;
    if let Some(api) = case.api {
        req.api = api;
    }
    req = req.with_headers(case.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(u) = &case.user_id {
        req.user_id = Some(u.clone());
    }
    let catalog = program.catalog();
    let mut health = StaticHealth::default();
    for d in &case.down {
        health.down.push(catalog.id(d).ok_or_else(|| format!("`down` names `{d}`, which is not in the catalog"))?);
    }
    for (m, l) in &case.latency {
        let id = catalog.id(m).ok_or_else(|| format!("`latency` names `{m}`, which is not in the catalog"))?;
        let ms = crate::util::duration::parse_ms(l).ok_or_else(|| format!("`{l}` is not a duration"))?;
        health.latency.push((id, ms as f64));
    }
    let key = case.key.as_ref().map(|k| {
        keys.iter().find(|x| x.name == *k).cloned().unwrap_or(KeyInfo { name: k.clone(), ..KeyInfo::default() })
    });
    let key = match (key, &case.tier) {
        (Some(mut k), Some(t)) => {
            k.tier = Some(t.clone());
            Some(k)
        }
        (None, Some(t)) => Some(KeyInfo { name: String::new(), tier: Some(t.clone()), budget_usd: None }),
        (k, None) => k,
    };
    let limit = key.as_ref().and_then(|k| k.budget_usd);
    let budget = match &case.budget_remaining {
        Some(b) => parse_budget(b, limit).ok_or_else(|| format!("`{b}` is not a budget (try `5%` or `$3`)"))?,
        None => Budget::from_limit(limit, 0.0),
    };
    let time = match &case.time {
        Some(t) => parse_time(t).ok_or_else(|| format!("`{t}` is not a time (try `wed 13:00`)"))?,
        None => (12, 0),
    };
    let (hour, weekday) = time;
    Ok(CaseInputs { req, health, key, budget, hour, weekday })
}

/// Runs cases against a program.
pub fn run(program: &Program, cases: &[Case], keys: &[KeyInfo]) -> Vec<CaseResult> {
    let mut scratch = Scratch::default();
    cases
        .iter()
        .map(|case| {
            let inputs = match case_inputs(program, case, keys) {
                Ok(x) => x,
                Err(e) => {
                    return CaseResult { name: case.name.clone(), failure: Some(e), rule: None, taken: Vec::new() }
                }
            };
            let ctx = inputs.context();
            let req = &inputs.req;
            let routing = program.route(req, &ctx, &mut scratch);
            let rule = routing.rule.to_string();
            let taken: Vec<String> =
                routing.steps.iter().filter(|s| s.taken && s.deny.is_none()).map(|s| s.name.clone()).collect();
            let deny = routing.deny().map(|(st, _)| st);
            let mut problems = Vec::new();
            if let Some(r) = &case.expect.rule {
                if *r != rule {
                    problems.push(format!("expected rule `{r}`, got `{rule}`"));
                }
            }
            if let Some(m) = &case.expect.model {
                match taken.first() {
                    Some(t) if t == m => {}
                    Some(t) => problems.push(format!("expected model `{m}`, got `{t}`")),
                    None => problems.push(format!("expected model `{m}`, but no target would be taken")),
                }
            }
            match (case.expect.deny, deny) {
                (Some(e), Some(g)) if e != g => problems.push(format!("expected deny {e}, got deny {g}")),
                (Some(e), None) => problems.push(format!("expected deny {e}, but the request is routed")),
                (None, Some(g)) if case.expect.model.is_some() => {
                    problems.push(format!("expected a model, but the request is denied ({g})"))
                }
                _ => {}
            }
            if case.expect.rule.is_none() && case.expect.model.is_none() && case.expect.deny.is_none() {
                problems.push("`expect` needs `rule`, `model` or `deny`".into());
            }
            CaseResult {
                name: case.name.clone(),
                failure: (!problems.is_empty()).then(|| problems.join("; ")),
                rule: Some(routing.index),
                taken,
            }
        })
        .collect()
}
